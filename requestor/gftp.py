"""Files to and from activities through Loam's `gftp` command (JSON-RPC 2.0 over its stdin and stdout).

As Golem's client libraries do: one `gftp server` process per session; `publish` serves a
local file at a gftp:// URL the provider fetches, `receive` opens an upload slot that writes
a local file when the provider sends it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from requestor.errors import ConfigurationError, RequestorError

__all__ = ["GftpServer", "GftpError", "gftp_command"]

_CALL_S = 120.0


class GftpError(RequestorError):
    """The gftp process failed, answered an error, or is not running."""


def gftp_command() -> list[str]:
    """How to start gftp: $GFTP_BIN, the `gftp` beside this Python, or the one on PATH."""
    explicit = os.environ.get("GFTP_BIN")
    if explicit:
        return [explicit]
    beside = Path(sys.executable).parent / "gftp"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("gftp")
    if found:
        return [found]
    return [sys.executable, "-m", "node.gftp_cli"]


class GftpServer:
    """A `gftp server` child process, started on first use and shut down with close()."""

    def __init__(self, data_dir: Path | str | None = None) -> None:
        self._data_dir = Path(data_dir) if data_dir else None
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    async def _start(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        data_dir = self._data_dir or (Path(os.environ["LOAM_DATA_DIR"]) if os.environ.get("LOAM_DATA_DIR") else None)
        cmd = gftp_command()
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        cmd.append("server")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        except OSError as exc:
            raise ConfigurationError(f"cannot start gftp ({' '.join(cmd)}): {exc}") from exc
        return self._proc

    async def call(self, method: str, **params: Any) -> Any:
        """One request; its result.

        Raises:
            GftpError: an error answer, or the process ended.
        """
        async with self._lock:  # the server answers one request at a time, in order
            proc = await self._start()
            assert proc.stdin is not None and proc.stdout is not None
            rid = next(self._ids)
            line = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}) + "\n"
            try:
                proc.stdin.write(line.encode())
                await proc.stdin.drain()
                answer = await asyncio.wait_for(proc.stdout.readline(), _CALL_S)
            except (OSError, TimeoutError) as exc:
                raise GftpError(f"gftp {method}: no answer from the gftp process ({exc!r})") from exc
            if not answer:
                raise GftpError(f"gftp {method}: the gftp process ended (is the node running on its data dir?)")
            msg = json.loads(answer)
            if "error" in msg:
                raise GftpError(f"gftp {method} failed: {msg['error'].get('message')}")
            return msg.get("result")

    async def publish(self, path: Path) -> str:
        """Serve a local file; its gftp:// URL."""
        links = await self.call("publish", files=[str(path)])
        return str(links[0]["url"])

    async def receive(self, path: Path) -> str:
        """An upload slot that writes path; its gftp:// URL."""
        return str((await self.call("receive", output_file=str(path)))["url"])

    async def close_urls(self, urls: list[str]) -> None:
        """Stop serving these URLs (errors ignored: the batch is over either way)."""
        if urls:
            try:
                await self.call("close", urls=urls)
            except GftpError:
                pass

    async def close(self) -> None:
        """Shut the process down."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.write(b'{"jsonrpc":"2.0","id":0,"method":"shutdown"}\n')
            await proc.stdin.drain()
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 10)
        except (OSError, TimeoutError):
            proc.kill()
            await proc.wait()
