"""An exe-unit child process: runs one activity's exe-script batches, apart from the node.

    python -m exeunits.child --runtime wasmtime --workdir DIR --cache-dir DIR --package PKG [limits]

It reads ChildRunBatch / ChildShutdown frames on stdin and writes ChildEvent, ChildResult and
ChildUsage frames on stdout. A stuck or crashing workload takes only this process down; the
node kills it when it stops answering or overruns its wall-clock limit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import resource
import shutil
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from exeunits.framing import FrameWriter, read_frame
from exeunits.output import captured
from protocol.activity import (
    COMMANDS, ChildEvent, ChildPackets, ChildResult, ChildRunBatch, ChildShutdown, ChildUsage, ExeResult,
)
from protocol.errors import ExeUnitError, NodeError

__all__ = ["main", "parse_task_package", "WasmExeUnit"]



def _now_ms() -> int:
    return int(time.time() * 1000)


def parse_task_package(spec: str) -> tuple[str, str]:
    """Split `hash:sha3:<sha3-224 hex>:<url>` into (hex digest, url).

    Raises:
        ExeUnitError: not of that form.
    """
    parts = spec.split(":", 3)
    if len(parts) != 4 or parts[0] != "hash" or parts[1] not in ("sha3", "sha3_224"):
        raise ExeUnitError(f"task package {spec[:100]!r} is not hash:sha3:<sha3-224 hex>:<url>")
    digest, url = parts[2].lower(), parts[3]
    if len(digest) != 56 or any(c not in "0123456789abcdef" for c in digest):
        raise ExeUnitError(f"task package hash {digest[:80]!r} is not a sha3-224 hex digest")
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise ExeUnitError(f"task package url {url[:100]!r} is not http(s)")
    return digest, url


def download(url: str, dest: Path, max_bytes: int, timeout_s: float = 60.0) -> str:
    """Fetch url into dest (at most max_bytes); returns the sha3-224 hex digest of what was written.

    Raises:
        ExeUnitError: the transfer failed or was too large.
    """
    digest = hashlib.sha3_224()
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(dest, "wb") as out:
            while chunk := response.read(1 << 16):
                written += len(chunk)
                if written > max_bytes:
                    raise ExeUnitError(f"{url} is larger than the limit of {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
    except ExeUnitError:
        dest.unlink(missing_ok=True)
        raise
    except (OSError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        raise ExeUnitError(f"cannot download {url}: {exc}") from None
    return digest.hexdigest()


_GFTP_TIMEOUT_S = 600.0


def gftp_fetch(node_data_dir: str | None, url: str, dest: Path, max_bytes: int) -> None:
    """Fetch a gftp:// file through the local node (which speaks to the other node).

    Raises:
        ExeUnitError: no node to ask, or the transfer failed.
    """
    _gftp_call(node_data_dir, "fetch", {"url": url, "dest_path": str(dest.absolute()), "max_bytes": max_bytes,
                                        "timeout_s": _GFTP_TIMEOUT_S})


def gftp_upload(node_data_dir: str | None, path: Path, url: str) -> None:
    """Send a file to a gftp:// upload slot through the local node.

    Raises:
        ExeUnitError: no node to ask, or the transfer failed.
    """
    _gftp_call(node_data_dir, "upload", {"path": str(path.absolute()), "url": url, "timeout_s": _GFTP_TIMEOUT_S})


def _gftp_call(node_data_dir: str | None, method: str, args: dict[str, Any]) -> None:
    from node.control import ControlClient
    from protocol.control import ControlCall

    if not node_data_dir:
        raise ExeUnitError("gftp transfers need the node (this exe-unit was started without --node-data-dir)")
    try:
        ControlClient(Path(node_data_dir)).call(ControlCall("gftp", method, args), timeout_s=_GFTP_TIMEOUT_S + 30)
    except NodeError as exc:
        raise ExeUnitError(f"gftp {method} of {args.get('url')}: {exc}") from None


class WasmExeUnit:
    """Runs exe-script commands for one activity with the wasmtime runtime."""

    def __init__(self, args: argparse.Namespace, out: FrameWriter) -> None:
        from exeunits.wasm.runtime import WasmRunner

        self._args = args
        self._out = out
        self.workdir = Path(args.workdir)
        self.state = "Initialized"
        self._runner = WasmRunner(args.cache_dir)
        self._package: Any = None
        self._mounts: dict[str, tuple[Path, str]] = {}
        self._env: dict[str, str] = {}

    # -- commands -----------------------------------------------------------------------

    def deploy(self, params: dict[str, Any]) -> str:
        from exeunits.wasm.package import extract, load_package, prepare_mounts

        if self.state != "Initialized":
            raise ExeUnitError(f"deploy needs state Initialized, the activity is {self.state}")
        expected, url = parse_task_package(self._args.package)
        zip_path = self.workdir / "package.zip"
        got = download(url, zip_path, self._args.max_package_bytes)
        if got != expected:
            raise ExeUnitError(f"package hash mismatch: expected sha3-224 {expected}, downloaded {got}")
        self._package = load_package(zip_path, self._args.max_package_bytes)
        extract(self._package, self.workdir / "package")
        self._mounts = {k: (Path(v[0]), v[1]) for k, v in prepare_mounts(self._package, self.workdir / "fs").items()}
        for entry in self._package.entry_points:
            self._runner.prepare(self.workdir / "package" / entry.wasm_path)
        env = params.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ExeUnitError("deploy env must be a map of strings")
        self._env = dict(env)
        self.state = "Deployed"
        return f"deployed package {self._package.id} ({len(self._package.entry_points)} entry points)"

    def terminate(self, params: dict[str, Any] | None = None) -> str:
        """End the activity (the node removes its work dir)."""
        self.state = "Terminated"
        return "terminated"

    def usage(self) -> tuple[float, int] | None:
        """(cpu seconds, peak memory bytes) of the workload, or None when this process's own usage is it."""
        return None

    def close(self) -> None:
        """Nothing to clean up: the workload lives in this process."""

    def start(self, params: dict[str, Any]) -> str:
        if self.state != "Deployed":
            raise ExeUnitError(f"start needs state Deployed, the activity is {self.state}")
        self.state = "Ready"
        return "started"

    def run(self, batch_id: str, index: int, params: dict[str, Any]) -> tuple[str | None, str | None, str]:
        from exeunits.wasm.runtime import Limits

        if self.state != "Ready":
            raise ExeUnitError(f"run needs state Ready (deploy and start first), the activity is {self.state}")
        entry = params.get("entry_point")
        args = params.get("args", [])
        if not isinstance(entry, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise ExeUnitError("run needs entry_point (a string) and args (a list of strings)")
        wasm = self.workdir / "package" / self._package.entry_point(entry).wasm_path
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        out_path, err_path = logs / f"{batch_id}-{index}.out", logs / f"{batch_id}-{index}.err"
        capture = params.get("capture") or {}
        streaming = isinstance(capture, dict) and any(
            isinstance(v, dict) and "stream" in v for v in capture.values()
        )
        stop_follow = threading.Event()
        follower = None
        if streaming:
            follower = threading.Thread(
                target=self._follow, args=(batch_id, index, out_path, err_path, stop_follow), daemon=True
            )
        self._out.write(ChildEvent(batch_id, index, "started", entry, None, None))
        limits = Limits(cpu_s=self._args.cpu_s, memory_bytes=self._args.memory_bytes, wall_s=self._args.wall_s)
        out_path.touch()
        err_path.touch()
        if follower is not None:
            follower.start()
        try:
            outcome = self._runner.run(wasm, [entry, *args], self._env, self._mounts, out_path, err_path, limits)
        finally:
            stop_follow.set()
            if follower is not None:
                follower.join(2)
        stdout, stderr = captured(out_path, capture, "stdout"), captured(err_path, capture, "stderr")
        code = outcome.exit_code if outcome.exit_code is not None else -1
        message = None if outcome.ok else (outcome.error or f"{entry} exited with code {code}")
        self._out.write(ChildEvent(batch_id, index, "finished", "", code, message))
        if not outcome.ok:
            raise _CommandFailed(f"run {entry}: {message}", stdout, stderr)
        return stdout, stderr, ""

    def _follow(self, batch_id: str, index: int, out_path: Path, err_path: Path, stop: threading.Event) -> None:
        offsets = {"stdout": 0, "stderr": 0}
        paths = {"stdout": out_path, "stderr": err_path}
        while True:
            done = stop.wait(0.05)
            for kind, path in paths.items():
                try:
                    with open(path, "rb") as f:
                        f.seek(offsets[kind])
                        chunk = f.read(1 << 16)
                except OSError:
                    continue
                if chunk:
                    offsets[kind] += len(chunk)
                    self._out.write(ChildEvent(batch_id, index, kind, chunk.decode("utf-8", "replace"), None, None))
            if done:
                return

    def transfer(self, params: dict[str, Any]) -> str:
        src, dst = params.get("from"), params.get("to")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise ExeUnitError("transfer needs from and to")
        if self.state not in ("Deployed", "Ready"):
            raise ExeUnitError(f"transfer needs a deployed activity, the activity is {self.state}")
        src_scheme, dst_scheme = urllib.parse.urlparse(src).scheme, urllib.parse.urlparse(dst).scheme
        if src_scheme in ("http", "https") and dst_scheme == "container":
            target = self._container_path(dst, writing=True)
            download(src, target, self._storage_left())
            return f"fetched {src} to {dst}"
        if src_scheme == "gftp" and dst_scheme == "container":
            gftp_fetch(self._args.node_data_dir, src, self._container_path(dst, writing=True), self._storage_left())
            return f"fetched {src} to {dst}"
        if src_scheme == "container" and dst_scheme == "gftp":
            gftp_upload(self._args.node_data_dir, self._container_path(src, writing=False), dst)
            return f"uploaded {src} to {dst}"
        if src_scheme == "container" and dst_scheme == "container":
            shutil.copyfile(self._container_path(src, writing=False), self._container_path(dst, writing=True))
            return f"copied {src} to {dst}"
        if src_scheme == "container" and dst_scheme in ("http", "https"):
            data = self._container_path(src, writing=False).read_bytes()
            request = urllib.request.Request(dst, data=data, method="PUT")
            try:
                with urllib.request.urlopen(request, timeout=60):
                    pass
            except OSError as exc:
                raise ExeUnitError(f"cannot upload to {dst}: {exc}") from None
            return f"uploaded {src} to {dst}"
        raise ExeUnitError(f"transfer from {src_scheme or src!r} to {dst_scheme or dst!r} is not supported by this exe-unit")

    def _storage_left(self) -> int:
        """Bytes the activity may still write (the provider's disk limit less what its files use)."""
        limit = self._args.storage_bytes
        if limit is None:
            return self._args.max_package_bytes
        used = sum(f.stat().st_size for f in self.workdir.rglob("*") if f.is_file() and not f.is_symlink())
        return max(0, limit - used)

    def check_storage(self) -> None:
        """Raises ExeUnitError when the activity's files outgrew the disk limit."""
        if self._args.storage_bytes is not None and self._storage_left() <= 0:
            raise ExeUnitError(f"the activity's files exceed the storage limit of {self._args.storage_bytes} bytes")

    def _container_path(self, url: str, *, writing: bool) -> Path:
        """The host file behind container:/mount/path, refusing anything outside a mount."""
        path = urllib.parse.urlparse(url).path
        parts = [p for p in path.split("/") if p]
        if not parts or any(p in ("..", ".") for p in parts):
            raise ExeUnitError(f"{url}: not a path inside the container")
        for guest, (host, _mode) in self._mounts.items():
            guest_parts = [p for p in guest.split("/") if p]
            if parts[: len(guest_parts)] == guest_parts and len(parts) > len(guest_parts):
                # "ro" binds the module, not the requestor: transfers may fill input folders.
                target = host.joinpath(*parts[len(guest_parts):])
                resolved = target.resolve()
                if not resolved.is_relative_to(host.resolve()):
                    raise ExeUnitError(f"{url}: leads outside the mount {guest}")
                if writing:
                    target.parent.mkdir(parents=True, exist_ok=True)
                elif not target.is_file():
                    raise ExeUnitError(f"{url}: no such file")
                return target
        raise ExeUnitError(f"{url}: not inside a mount point of the package ({', '.join(self._mounts) or 'none'})")

    # -- batches ------------------------------------------------------------------------

    def run_batch(self, batch: ChildRunBatch) -> None:
        """Run commands in order; the first failure ends the batch with an Error result naming the command."""
        total = len(batch.commands)
        done: list[ExeResult] = []
        for index, command in enumerate(batch.commands):
            last = index == total - 1
            stdout = stderr = None
            try:
                name, params = _split_command(command)
                if name == "deploy":
                    message = self.deploy(params)
                elif name == "start":
                    message = self.start(params)
                elif name == "run":
                    stdout, stderr, message = self.run(batch.batch_id, index, params)
                elif name == "transfer":
                    message = self.transfer(params)
                elif name == "terminate":
                    message = self.terminate({})
                    self.state = "Terminated"
                else:  # sign: the digest of the batch's results so far; the node adds its signature
                    stdout = json.dumps({"digest": results_digest(done)})
                    message = "signed"
                if name in ("run", "transfer"):
                    self.check_storage()
            except (NodeError, OSError) as exc:
                if isinstance(exc, _CommandFailed):
                    stdout, stderr = exc.stdout, exc.stderr
                result = ExeResult(index, _now_ms(), "Error", stdout, stderr, f"command {index} ({_name(command)}) failed: {exc}", True)
                self._out.write(ChildResult(batch.batch_id, result, self.state))
                return
            result = ExeResult(index, _now_ms(), "Ok", stdout, stderr, message or None, last)
            done.append(result)
            self._out.write(ChildResult(batch.batch_id, result, self.state))


def results_digest(results: list[ExeResult]) -> str:
    """sha3-256 hex of command results (index, result, stdout, stderr, message), canonically as JSON."""
    rows = [[r.index, r.result, r.stdout, r.stderr, r.message] for r in results]
    return hashlib.sha3_256(json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


class _CommandFailed(ExeUnitError):
    def __init__(self, message: str, stdout: str, stderr: str) -> None:
        super().__init__(message)
        self.stdout, self.stderr = stdout, stderr


def _name(command: Any) -> str:
    return next(iter(command), "?") if isinstance(command, dict) and command else "?"


def _split_command(command: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(command, dict) or len(command) != 1:
        raise ExeUnitError(f"a command is a map with one key (one of {', '.join(COMMANDS)})")
    name, params = next(iter(command.items()))
    if name not in COMMANDS:
        raise ExeUnitError(f"unknown command {name!r} (known: {', '.join(COMMANDS)})")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ExeUnitError(f"the arguments of {name} must be a map")
    return name, params


def _usage_loop(unit: Any, out: FrameWriter, started: float, stop: threading.Event) -> None:
    # The first report goes out at once: it tells the node the exe-unit is up and ready.
    first = True
    while first or not stop.wait(1.0):
        first = False
        workload = unit.usage()
        if workload is None:  # the workload runs in this process
            own = resource.getrusage(resource.RUSAGE_SELF)
            workload = (own.ru_utime + own.ru_stime, own.ru_maxrss * 1024)
        try:
            out.write(ChildUsage(workload[0], time.monotonic() - started, workload[1]))
        except OSError:
            return


def _die_with_parent(sig: int) -> None:
    """Ask Linux to send sig to this process when its parent dies (prctl PR_SET_PDEATHSIG); a no-op elsewhere."""
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def main(argv: list[str] | None = None) -> int:
    """Run the child until told to shut down or stdin closes."""
    parser = argparse.ArgumentParser(description="Loam exe-unit child process")
    parser.add_argument("--runtime", choices=["wasmtime", "vm"], required=True)
    parser.add_argument("--cpus", type=float, default=None, help="(vm) cpu cores the container may use")
    parser.add_argument("--allow-network", action="store_true", help="(vm) give the container a network")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--package", required=True, help="hash:sha3:<sha3-224 hex>:<url>")
    parser.add_argument("--cpu-s", type=float, default=None)
    parser.add_argument("--memory-bytes", type=int, default=None)
    parser.add_argument("--wall-s", type=float, default=None)
    parser.add_argument("--max-package-bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--storage-bytes", type=int, default=None, help="disk the activity's files may use")
    parser.add_argument("--node-data-dir", default=None, help="the node's data dir, for gftp transfers through it")
    args = parser.parse_args(argv)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # Nothing but frames may reach stdout: anything printed goes to stderr.
    sys.stdout = sys.stderr
    out = FrameWriter(stdout)
    os.makedirs(args.workdir, exist_ok=True)
    started = time.monotonic()
    stop = threading.Event()
    if args.runtime == "vm":
        from exeunits.vm.unit import VmExeUnit

        unit: Any = VmExeUnit(args, out)
    else:
        unit = WasmExeUnit(args, out)
    # The node stops a child with a shutdown frame or, failing that, a signal; either way
    # the container (for vm) must go, and atexit does not run on SIGTERM by itself.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # A node that dies (SIGKILL) takes its children along: a vm child gets SIGTERM and removes
    # its container; a wasmtime child gets SIGKILL (a running module never returns to Python
    # to see a SIGTERM).
    _die_with_parent(signal.SIGTERM if args.runtime == "vm" else signal.SIGKILL)
    threading.Thread(target=_usage_loop, args=(unit, out, started, stop), daemon=True).start()
    inbox: queue.Queue[Any] = queue.Queue()

    def read() -> None:
        while True:
            try:
                msg = read_frame(stdin)
            except NodeError:
                msg = None
            if isinstance(msg, ChildPackets):  # VPN packets go straight in, even while a batch runs
                if hasattr(unit, "vpn_send"):
                    unit.vpn_send(msg.network_id, msg.packets)
                continue
            inbox.put(msg)
            if msg is None:
                return

    threading.Thread(target=read, daemon=True).start()
    try:
        while True:
            msg = inbox.get()
            if msg is None or isinstance(msg, ChildShutdown):
                break
            if isinstance(msg, ChildRunBatch):
                unit.run_batch(msg)
                if unit.state == "Terminated":
                    break
    finally:
        stop.set()
        unit.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
