"""Writing the node's small TOML files (loam.toml, presets.toml): a minimal emitter, atomic replace, a lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

from protocol.errors import SettingsError

__all__ = ["dumps", "read_toml", "write_atomic", "locked"]

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SettingsError(f"{where} = {value!r} cannot be written: it is not a finite number")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise SettingsError(f"{where}: cannot write a {type(value).__name__} to TOML")


def dumps(data: dict[str, Any], header: str = "") -> str:
    """TOML text for nested dicts of str, bool, int, float and lists of those.

    >>> dumps({"provider": {"cores": 2, "runtime": "vm"}})
    '[provider]\\ncores = 2\\nruntime = "vm"\\n'
    """
    lines: list[str] = [f"# {line}".rstrip() for line in header.splitlines()]

    def table(path: list[str], values: dict[str, Any]) -> None:
        scalars = [(k, v) for k, v in values.items() if not isinstance(v, dict)]
        tables = [(k, v) for k, v in values.items() if isinstance(v, dict)]
        if path and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_key(p) for p in path) + "]")
        for k, v in scalars:
            lines.append(f"{_key(k)} = {_value(v, '.'.join([*path, k]))}")
        for k, v in tables:
            table([*path, k], v)

    table([], data)
    return "\n".join(lines) + "\n"


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's contents; {} when it does not exist.

    Raises:
        SettingsError: it cannot be read or is not TOML.
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{path} cannot be read: {exc}") from None


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's contents at once (readers see the old file or the new one, never half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SettingsError(f"cannot write {path}: {exc}") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside path, so two commands editing it do not lose each other's change."""
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        fh = open(lock_path, "a")
    except OSError as exc:
        raise SettingsError(f"cannot lock {path}: {exc}") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()
