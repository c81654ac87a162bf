"""Command output as results carry it: the tail of an output file, capped."""

from __future__ import annotations

from pathlib import Path

__all__ = ["OUTPUT_CAP_BYTES", "tail"]

OUTPUT_CAP_BYTES = 64 * 1024  # stdout/stderr kept in a result (the tail when longer)


def tail(path: Path) -> str:
    """The last OUTPUT_CAP_BYTES of a file as text ("" when it cannot be read)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size > OUTPUT_CAP_BYTES:
                f.seek(size - OUTPUT_CAP_BYTES)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""
