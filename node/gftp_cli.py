"""The `gftp` command: Golem's file transfer tool, served by the local Loam node.

    gftp server                      JSON-RPC 2.0 over stdio, one object per line (for yapapi, golem-js)
    gftp publish FILE...             serve files until Ctrl-C (--keep: leave them served and exit)
    gftp receive FILE                open an upload slot writing FILE, until Ctrl-C (or --keep)
    gftp download URL DEST           fetch a published file
    gftp upload FILE URL             send a file to an upload slot
    gftp close URL...                stop serving / close slots
    gftp version

The client libraries start `gftp server` themselves and speak to it on stdin/stdout:
methods `version`, `publish {files}`, `receive {output_file}`, `upload {file, url}`,
`download {url, output_file}`, `close {urls}` and `shutdown`, with the parameter and result
shapes of golemfactory's gftp. The files are served by the node on the data dir of
`--data-dir`, else $LOAM_DATA_DIR, else the default data dir; what a server published or
opened is closed when it shuts down or its stdin ends.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TextIO

from actors.gftp.api import DEFAULT_MAX_BYTES
from node.control import ControlClient
from node.settings import default_data_dir
from protocol.control import ControlCall, ControlResult
from protocol.errors import ControlError, NodeError

__all__ = ["main", "RpcServer", "NodeGftp", "GFTP_VERSION", "version_string"]

# The version of golemfactory's gftp whose protocol this speaks. yapapi reads the first
# word of `version` and only sends `close` to a gftp of 0.7.3 or later.
GFTP_VERSION = "0.7.3"
TRANSFER_TIMEOUT_S = 3600.0
_CONTROL_MARGIN_S = 30.0

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # the request was fine, the operation failed (as golemfactory's gftp)


def version_string() -> str:
    """What `gftp version` answers: the gftp protocol version, then Loam's."""
    try:
        from importlib.metadata import version

        loam = version("loam")
    except Exception:  # noqa: BLE001 - not installed, e.g. run from a checkout
        loam = "unknown"
    return f"{GFTP_VERSION} (loam {loam})"


class NodeGftp:
    """The "gftp" control target of the node running on a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._client = ControlClient(data_dir)

    def call(self, method: str, wait_s: float = 30.0, **args: Any) -> Any:
        """Call a gftp method of the node, waiting up to wait_s for its plain-data result.

        Raises:
            ControlError: no node runs there, or the method failed (the message says why).
        """
        reply = self._client.call(ControlCall("gftp", method, args), wait_s)
        if not isinstance(reply, ControlResult):
            raise ControlError(f"unexpected answer {type(reply).__name__} from the node")
        return reply.value


class RpcError(Exception):
    """A JSON-RPC error answer (code and message)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _abs(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RpcError(INVALID_PARAMS, f"{name} must be a non-empty string")
    return str(Path(value).expanduser().absolute())


def _str(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RpcError(INVALID_PARAMS, f"{name} must be a non-empty string")
    return value


class RpcServer:
    """`gftp server`: answers JSON-RPC requests read from a stream, one line each, in order.

    Requests are answered one at a time, as both client libraries send the next one only
    after the answer to the last.
    """

    def __init__(self, node: NodeGftp, out: TextIO, transfer_timeout_s: float = TRANSFER_TIMEOUT_S) -> None:
        self._node = node
        self._out = out
        self._timeout_s = transfer_timeout_s
        self._lock = threading.Lock()
        self._urls: list[str] = []  # published or opened through this server, once per publish
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "version": lambda params: version_string(),
            "publish": self._publish,
            "receive": self._receive,
            "upload": self._upload,
            "download": self._download,
            "close": self._close,
            "shutdown": lambda params: "ok",
        }

    def serve(self, inp: TextIO) -> int:
        """Answer requests until `shutdown` or the end of input; close what was opened; returns 0."""
        try:
            while True:
                line = inp.readline()
                if not line:
                    break
                if line.strip() and self.handle_line(line):
                    break
        finally:
            self.release()
        return 0

    def handle_line(self, line: str) -> bool:
        """Answer one request line; True when it was a successful `shutdown`."""
        try:
            msg = json.loads(line)
        except ValueError as exc:
            error = {"code": PARSE_ERROR, "message": f"parse error: {exc}"}
            self._write({"jsonrpc": "2.0", "id": None, "error": error})
            return False
        rid = msg.get("id") if isinstance(msg, dict) else None
        if not (rid is None or isinstance(rid, (str, int, float))) or isinstance(rid, bool):
            rid = None
        try:
            name, params = self._check_request(msg)
            result = self._methods[name](params)
        except RpcError as exc:
            self._answer(msg, rid, error={"code": exc.code, "message": str(exc)})
            return False
        except NodeError as exc:
            self._answer(msg, rid, error={"code": SERVER_ERROR, "message": str(exc)})
            return False
        except Exception as exc:  # noqa: BLE001 - a client must get an answer, never a dead server
            print(f"gftp: internal error: {exc!r}", file=sys.stderr)
            self._answer(msg, rid, error={"code": INTERNAL_ERROR, "message": f"internal error: {exc}"})
            return False
        self._answer(msg, rid, result=result)
        return name == "shutdown"

    def release(self) -> None:
        """Close everything this server published or opened (the node may be gone: errors are ignored)."""
        while self._urls:
            url = self._urls.pop()
            try:
                self._node.call("close", hash_or_url=url)
            except NodeError:
                pass

    # -- protocol -------------------------------------------------------------------------

    def _check_request(self, msg: Any) -> tuple[str, dict[str, Any]]:
        if isinstance(msg, list):
            raise RpcError(INVALID_REQUEST, "batch requests are not supported")
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            raise RpcError(INVALID_REQUEST, 'a request is an object with "jsonrpc": "2.0"')
        name = msg.get("method")
        if not isinstance(name, str):
            raise RpcError(INVALID_REQUEST, "the request has no method name")
        if name not in self._methods:
            raise RpcError(METHOD_NOT_FOUND, f"no method {name[:100]!r} (known: {', '.join(self._methods)})")
        params = msg.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RpcError(INVALID_PARAMS, "params must be an object of named parameters")
        return name, params

    def _answer(self, msg: Any, rid: Any, *, result: Any = None, error: dict[str, Any] | None = None) -> None:
        if isinstance(msg, dict) and "id" not in msg and "method" in msg:
            return  # a notification gets no answer
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            body["error"] = error
        else:
            body["result"] = result
        self._write(body)

    def _write(self, body: dict[str, Any]) -> None:
        # One write and a flush per answer: clients read one line per request.
        with self._lock:
            self._out.write(json.dumps(body, separators=(",", ":")) + "\n")
            self._out.flush()

    # -- methods ----------------------------------------------------------------------------

    def _publish(self, params: dict[str, Any]) -> list[dict[str, str]]:
        files = params.get("files")
        if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
            raise RpcError(INVALID_PARAMS, "publish takes files: a list of paths")
        if not files:
            raise RpcError(INVALID_PARAMS, "empty file list provided")
        links: list[dict[str, str]] = []
        try:
            for file in files:
                done = self._node.call(
                    "publish", self._timeout_s + _CONTROL_MARGIN_S, path=_abs(file, "file"), timeout_s=self._timeout_s
                )
                self._urls.append(done["url"])
                links.append({"url": done["url"], "file": file})
        except NodeError:
            for link in links:  # all or nothing
                self._forget(link["url"])
            raise
        return links

    def _receive(self, params: dict[str, Any]) -> dict[str, str]:
        output_file = params.get("output_file")
        dest = _abs(output_file, "output_file")
        done = self._node.call("open_upload", dest_path=dest, max_bytes=DEFAULT_MAX_BYTES)
        self._urls.append(done["url"])
        return {"url": done["url"], "file": output_file}

    def _upload(self, params: dict[str, Any]) -> dict[str, str]:
        file, url = params.get("file"), _str(params.get("url"), "url")
        self._node.call(
            "upload", self._timeout_s + _CONTROL_MARGIN_S, path=_abs(file, "file"), url=url, timeout_s=self._timeout_s
        )
        return {"url": url, "file": file}

    def _download(self, params: dict[str, Any]) -> dict[str, str]:
        url, output_file = _str(params.get("url"), "url"), params.get("output_file")
        self._node.call(
            "fetch", self._timeout_s + _CONTROL_MARGIN_S, url=url, dest_path=_abs(output_file, "output_file"),
            max_bytes=DEFAULT_MAX_BYTES, timeout_s=self._timeout_s,
        )
        return {"url": url, "file": output_file}

    def _close(self, params: dict[str, Any]) -> list[str]:
        urls = params.get("urls")
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise RpcError(INVALID_PARAMS, "close takes urls: a non-empty list of gftp URLs")
        return ["ok" if self._forget(url) else "error" for url in urls]

    def _forget(self, url: str) -> bool:
        """Close one publication or slot this server opened; False if it opened no such URL."""
        if url not in self._urls:
            return False
        self._urls.remove(url)
        return bool(self._node.call("close", hash_or_url=url)["closed"])


# -- one-shot commands ------------------------------------------------------------------------


def _print(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def _hold(node: NodeGftp, urls: list[str], keep: bool) -> int:
    """Keep urls open until Ctrl-C or SIGTERM, then close them (unless keep)."""
    if keep:
        return 0
    print("serving; press Ctrl-C to stop", file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    for url in urls:
        try:
            node.call("close", hash_or_url=url)
        except NodeError as exc:
            print(f"gftp: cannot close {url}: {exc}", file=sys.stderr)
    return 0


def _cmd_publish(node: NodeGftp, args: argparse.Namespace) -> int:
    urls = []
    for file in args.files:
        done = node.call(
            "publish", TRANSFER_TIMEOUT_S + _CONTROL_MARGIN_S, path=str(Path(file).absolute()),
            allowed_peers=args.allow or None, timeout_s=TRANSFER_TIMEOUT_S,
        )
        urls.append(done["url"])
        _print({"file": file, "url": done["url"], "hash": done["hash"], "size": done["size"]})
    return _hold(node, urls, args.keep)


def _cmd_receive(node: NodeGftp, args: argparse.Namespace) -> int:
    done = node.call(
        "open_upload", dest_path=str(Path(args.file).absolute()), max_bytes=args.max_bytes,
        allowed_peers=args.allow or None,
    )
    _print({"file": args.file, "url": done["url"]})
    return _hold(node, [done["url"]], args.keep)


def _cmd_download(node: NodeGftp, args: argparse.Namespace) -> int:
    done = node.call(
        "fetch", args.timeout + _CONTROL_MARGIN_S, url=args.url, dest_path=str(Path(args.dest).absolute()),
        max_bytes=args.max_bytes, timeout_s=args.timeout,
    )
    _print({"file": done["path"], "url": args.url, "hash": done["hash"], "size": done["size"]})
    return 0


def _cmd_upload(node: NodeGftp, args: argparse.Namespace) -> int:
    done = node.call(
        "upload", args.timeout + _CONTROL_MARGIN_S, path=str(Path(args.file).absolute()), url=args.url,
        timeout_s=args.timeout,
    )
    _print({"file": args.file, "url": args.url, "hash": done["hash"], "size": done["size"]})
    return 0


def _cmd_close(node: NodeGftp, args: argparse.Namespace) -> int:
    failed = 0
    for url in args.urls:
        closed = node.call("close", hash_or_url=url)["closed"]
        _print({"url": url, "status": "ok" if closed else "error"})
        failed += not closed
    return 1 if failed else 0


def _cmd_server(node: NodeGftp, args: argparse.Namespace) -> int:
    # SIGTERM ends the server like the end of input: what it opened is closed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return RpcServer(node, sys.stdout).serve(sys.stdin)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gftp", description="Golem file transfer (gftp) through the local Loam node."
    )
    parser.add_argument("--data-dir", help="the node's data dir (default: $LOAM_DATA_DIR or ~/.local/share/loam)")
    parser.add_argument("-V", "--version", action="version", version=f"gftp {version_string()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("server", help="JSON-RPC 2.0 over stdin/stdout, for the Golem client libraries")
    sub.add_parser("version", help="print the version")

    p = sub.add_parser("publish", help="serve files; prints one JSON line with the URL per file")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--allow", action="append", metavar="NODE_ID", help="serve only to this node (repeatable)")
    p.add_argument("--keep", action="store_true", help="leave the files served and exit (close them later)")

    p = sub.add_parser("receive", help="open an upload slot writing FILE; prints its URL")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    p.add_argument("--allow", action="append", metavar="NODE_ID", help="accept only this node (repeatable)")
    p.add_argument("--keep", action="store_true", help="leave the slot open and exit")

    p = sub.add_parser("download", help="fetch a gftp URL into DEST (resumes a DEST.part)")
    p.add_argument("url", metavar="URL")
    p.add_argument("dest", metavar="DEST")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    p.add_argument("--timeout", type=float, default=TRANSFER_TIMEOUT_S, metavar="SECONDS")

    p = sub.add_parser("upload", help="send FILE to an upload slot URL")
    p.add_argument("file", metavar="FILE")
    p.add_argument("url", metavar="URL")
    p.add_argument("--timeout", type=float, default=TRANSFER_TIMEOUT_S, metavar="SECONDS")

    p = sub.add_parser("close", help="stop serving files / close upload slots")
    p.add_argument("urls", nargs="+", metavar="URL")
    return parser


_COMMANDS: dict[str, Callable[[NodeGftp, argparse.Namespace], int]] = {
    "server": _cmd_server,
    "publish": _cmd_publish,
    "receive": _cmd_receive,
    "download": _cmd_download,
    "upload": _cmd_upload,
    "close": _cmd_close,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `gftp` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(version_string())
        return 0
    node = NodeGftp(Path(args.data_dir).expanduser() if args.data_dir else default_data_dir())
    try:
        return _COMMANDS[args.command](node, args)
    except NodeError as exc:
        print(f"gftp: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
