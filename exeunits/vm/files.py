"""Moving files in and out of a vm activity: container paths, safe opens inside volume folders, capped copies.

A volume folder on the host is written by the workload as well: it can plant symlinks
and fifos there and swap them at any time. ``open_beneath`` therefore walks such a folder
one ``openat(O_NOFOLLOW)`` at a time and opens only regular files::

    parts = container_parts("container:/golem/work/in/data.csv")   # ['golem', 'work', 'in', 'data.csv']
    fd = open_beneath(volume_dir, parts[2:], url, writing=True)
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from exeunits.output import OUTPUT_CAP_BYTES, tail
from protocol.errors import ExeUnitError

__all__ = [
    "OUTPUT_CAP_BYTES",
    "HTTP_TIMEOUT_S",
    "container_parts",
    "open_beneath",
    "copy_capped",
    "download_to",
    "ChunkReader",
    "drain",
    "tail",
]

HTTP_TIMEOUT_S = 60.0
_COPY_CHUNK = 1 << 16


def container_parts(url: str) -> list[str]:
    """The components of ``container:/a/b``, refusing relative paths, ``.``, ``..`` and control characters."""
    path = urllib.parse.unquote(urllib.parse.urlparse(url).path)
    parts = [p for p in path.split("/") if p]
    if not path.startswith("/") or not parts:
        raise ExeUnitError(f"{url}: not an absolute path inside the container")
    if any(p in (".", "..") for p in parts):
        raise ExeUnitError(f"{url}: '.' and '..' are not allowed in container paths")
    if any(ord(c) < 0x20 for c in path):
        raise ExeUnitError(f"{url}: control characters are not allowed in container paths")
    return parts


def open_beneath(root: Path, parts: list[str], url: str, *, writing: bool) -> int:
    """An fd of ``root/parts...``, walking folder by folder without following any symlink.

    The workload can create symlinks and fifos in its volumes, and swap them at any time;
    each step is therefore an ``openat`` with O_NOFOLLOW relative to the folder before.
    """
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | nofollow)
    try:
        for part in parts[:-1]:
            if writing:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=dir_fd)
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=dir_fd)
            except FileNotFoundError:
                raise ExeUnitError(f"{url}: no such file") from None
            except OSError as exc:
                raise ExeUnitError(f"{url}: {part} is a symlink or not a folder") from exc
            os.close(dir_fd)
            dir_fd = next_fd
        flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC) if writing else os.O_RDONLY
        try:
            # O_NONBLOCK: a fifo planted by the workload must not hang the exe-unit.
            fd = os.open(parts[-1], flags | nofollow | os.O_NONBLOCK, 0o644, dir_fd=dir_fd)
        except FileNotFoundError:
            raise ExeUnitError(f"{url}: no such file") from None
        except OSError as exc:
            raise ExeUnitError(f"{url}: not a regular file ({exc.strerror})") from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ExeUnitError(f"{url}: not a regular file")
        os.set_blocking(fd, True)
        return fd
    finally:
        os.close(dir_fd)


def copy_capped(src: IO[bytes], dst: IO[bytes], max_bytes: int, url: str) -> int:
    written = 0
    while chunk := src.read(_COPY_CHUNK):
        written += len(chunk)
        if written > max_bytes:
            raise ExeUnitError(f"{url} is larger than the limit of {max_bytes} bytes")
        dst.write(chunk)
    return written


def download_to(url: str, dest: IO[bytes], max_bytes: int) -> int:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            return copy_capped(response, dest, max_bytes, url)
    except ExeUnitError:
        raise
    except (OSError, ValueError) as exc:
        raise ExeUnitError(f"cannot download {url}: {exc}") from None


class ChunkReader(io.RawIOBase):
    """A file over the chunks of a docker SDK byte stream (get_archive), for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def drain(stream: Iterator[bytes]) -> None:
    for _ in stream:
        pass
