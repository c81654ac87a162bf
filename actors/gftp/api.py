"""The gftp methods the control channel offers (target "gftp"), with plain-data arguments and results.

Each method blocks the calling control thread until the work is done (the control server
answers other requests meanwhile on its other threads), so a caller's control timeout
must be longer than the `timeout_s` it passes. Paths must be absolute. Publications and
upload slots live in the node's memory: they end when the node stops.
"""

from __future__ import annotations

from typing import Any, Callable

from actors.gftp.errors import TransferError
from actors.gftp.transfer import fetch_blocking, publish_blocking, upload_blocking

__all__ = ["control_methods", "DEFAULT_MAX_BYTES", "DEFAULT_TIMEOUT_S"]

DEFAULT_MAX_BYTES = 64 * 2**30  # what fetch and open_upload accept when the caller names no limit
DEFAULT_TIMEOUT_S = 300.0


def _int(name: str, value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TransferError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _seconds(name: str, value: Any) -> float:
    if type(value) not in (int, float) or not value > 0:
        raise TransferError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _peers(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise TransferError("allowed_peers must be a list of node ids, or null for any node")
    return tuple(value)


def control_methods(gftp: Any, ask_timeout_s: float) -> dict[str, Callable[..., Any]]:
    """Method name -> callable for ControlApi's "gftp" target, over a GftpActor proxy."""

    def publish(path: str, allowed_peers: list[str] | None = None, timeout_s: float = 600.0) -> dict[str, Any]:
        done = publish_blocking(gftp, path, _peers(allowed_peers), _seconds("timeout_s", timeout_s), ask_timeout_s)
        return {"url": done.url, "hash": done.hash_hex, "size": done.size, "path": done.path}

    def close(hash_or_url: str) -> dict[str, Any]:
        return {"closed": bool(gftp.close(hash_or_url).get(timeout=ask_timeout_s))}

    def open_upload(
        dest_path: str, max_bytes: int = DEFAULT_MAX_BYTES, allowed_peers: list[str] | None = None
    ) -> dict[str, Any]:
        limit = _int("max_bytes", max_bytes)
        return {"url": gftp.open_upload(dest_path, _peers(allowed_peers), limit).get(timeout=ask_timeout_s)}

    def fetch(
        url: str, dest_path: str, max_bytes: int = DEFAULT_MAX_BYTES, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> dict[str, Any]:
        done = fetch_blocking(
            gftp, url, dest_path, _int("max_bytes", max_bytes), _seconds("timeout_s", timeout_s), ask_timeout_s
        )
        return {"path": done.path, "size": done.size, "hash": done.hash_hex, "url": done.url}

    def upload(path: str, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        done = upload_blocking(gftp, path, url, _seconds("timeout_s", timeout_s), ask_timeout_s)
        return {"url": done.url, "size": done.size, "hash": done.hash_hex}

    return {
        "publish": publish,
        "close": close,
        "open_upload": open_upload,
        "fetch": fetch,
        "upload": upload,
        "published": lambda: gftp.published().get(timeout=ask_timeout_s),
        "upload_slots": lambda: gftp.upload_slots().get(timeout=ask_timeout_s),
        "stats": lambda: gftp.stats().get(timeout=ask_timeout_s),
    }
