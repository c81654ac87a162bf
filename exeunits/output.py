"""Command output as results carry it: all of it, its head, its tail or both ends, capped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["OUTPUT_CAP_BYTES", "tail", "captured"]

OUTPUT_CAP_BYTES = 64 * 1024  # stdout/stderr kept in a result (the tail when longer)


def tail(path: Path, limit: int = OUTPUT_CAP_BYTES) -> str:
    """The last `limit` bytes of a file as text ("" when it cannot be read)."""
    return _read(path, "tail", limit)


def captured(path: Path, capture: Any, stream: str) -> str | None:
    """A stream's output as the run's `capture` asks (Golem's atEnd part head/tail/headTail).

    No capture spec, or one without limits: the tail, up to OUTPUT_CAP_BYTES. A stream that
    is only streamed (no atEnd): None, as the original leaves it out of the result.
    """
    spec = capture.get(stream) if isinstance(capture, dict) else None
    if not isinstance(spec, dict):
        return tail(path)
    at_end = spec.get("atEnd")
    if not isinstance(at_end, dict):
        return None if "stream" in spec else tail(path)
    part = at_end.get("part")
    if isinstance(part, dict) and len(part) == 1:
        (mode, limit), = part.items()
        if mode in ("head", "tail", "headTail") and isinstance(limit, int) and limit >= 0:
            return _read(path, mode, min(limit, OUTPUT_CAP_BYTES))
    return tail(path)


def _read(path: Path, mode: str, limit: int) -> str:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size <= limit:
                data = f.read()
            elif mode == "head":
                data = f.read(limit)
            elif mode == "tail":
                f.seek(size - limit)
                data = f.read()
            else:  # headTail: half from each end
                head = f.read(limit // 2)
                f.seek(size - (limit - limit // 2))
                data = head + f.read()
        return data.decode("utf-8", "replace")
    except OSError:
        return ""
