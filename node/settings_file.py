"""Changing settings in `<data dir>/loam.toml`: every change is checked with the real loader before the file is replaced."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

from node.settings import CONFIG_FILE_NAME, Settings, load_settings
from node.tomlfile import dumps, locked, read_toml, write_atomic
from protocol.errors import SettingsError

__all__ = ["update_settings_file", "file_settings"]

_HEADER = (
    "This node's settings (same sections and keys as config/node.toml, which documents them).\n"
    "Written by `loam provider settings set`; edit by hand as you like."
)


def file_settings(data_dir: Path) -> dict[str, Any]:
    """What loam.toml sets, as nested tables.

    Raises:
        SettingsError: the file is not TOML.
    """
    return read_toml(Path(data_dir) / CONFIG_FILE_NAME)


def update_settings_file(data_dir: Path, changes: Mapping[str, Any]) -> Settings:
    """Set dotted keys ("provider.cores": 4) in loam.toml and return the settings the file now gives.

    The candidate file is loaded by `load_settings` (with no environment) before it
    replaces the old one, so a bad value is refused with the loader's message and nothing
    is written.

    Raises:
        SettingsError: an unknown key, a bad value, or a file that cannot be read or written.
    """
    data_dir = Path(data_dir)
    path = data_dir / CONFIG_FILE_NAME
    with locked(path):
        data = read_toml(path)
        for dotted, value in changes.items():
            section, dot, key = dotted.partition(".")
            if not dot:
                raise SettingsError(f"{dotted!r} is not a dotted key such as provider.cores")
            table = data.setdefault(section, {})
            if not isinstance(table, dict):
                raise SettingsError(f"{path}: {section} is a value, not a table [{section}]")
            table[key] = list(value) if isinstance(value, tuple) else value
        text = dumps(data, header=_HEADER)
        settings = _check(data_dir, path, data)
        write_atomic(path, text)
    return settings


def _check(data_dir: Path, path: Path, data: dict[str, Any]) -> Settings:
    """Load the candidate settings from a scratch copy of the data dir's files."""
    scratch_data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    payment = scratch_data.get("payment")
    if isinstance(payment, dict) and isinstance(payment.get("networks_file"), str) and payment["networks_file"]:
        # A networks file relative to the data dir is still found from the scratch copy.
        payment["networks_file"] = str((data_dir / payment["networks_file"]).absolute())
    with tempfile.TemporaryDirectory(prefix="loam-settings-") as tmp:
        scratch = Path(tmp)
        (scratch / CONFIG_FILE_NAME).write_text(dumps(scratch_data), encoding="utf-8")
        # The node's own payment networks count when the payment network is checked.
        for extra in data_dir.glob("networks*.toml"):
            shutil.copy(extra, scratch / extra.name)
        try:
            settings = load_settings(scratch, environ={})
        except SettingsError as exc:
            raise SettingsError(str(exc).replace(str(scratch / CONFIG_FILE_NAME), str(path)).replace(str(scratch), str(data_dir))) from None
    return dataclasses.replace(settings, data_dir=data_dir)
