"""Provider presets: a runtime, the resources it may use and its prices; each active one is an offer.

Presets live in `<data dir>/presets.toml`, one `[presets.<name>]` table each, not in the
database. They are configuration a person writes, like `loam.toml` beside them: a file can
be read and edited by hand, backed up and copied to another machine together with the
settings, and a node reads it again whenever it is told to reload. They are few and change
rarely, so nothing is gained from transactions, and the schema migrations (shared by every
subsystem) stay for state the node itself produces. Edits go through `PresetStore`, which
checks every value, holds a file lock and replaces the file atomically.

With no preset stored, a node sells what its `[provider]` settings describe, as one
implicit preset named "default".
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.tomlfile import dumps, locked, read_toml, write_atomic
from protocol.errors import SettingsError

if TYPE_CHECKING:
    from node.settings import ProviderSettings

__all__ = [
    "Preset",
    "PresetStore",
    "PresetError",
    "PRESETS_FILE_NAME",
    "IMPLICIT_PRESET",
    "RUNTIMES",
    "implicit_preset",
    "effective_presets",
    "preset_settings",
    "validate_preset",
]

PRESETS_FILE_NAME = "presets.toml"
IMPLICIT_PRESET = "default"
RUNTIMES = ("wasmtime", "vm")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PRICE_KEYS = ("start_fee", "env_per_hour", "cpu_per_hour")
_RESOURCE_KEYS = ("cores", "memory_gib", "storage_gib")
_KEYS = ("runtime", *_PRICE_KEYS, *_RESOURCE_KEYS, "active")


class PresetError(SettingsError):
    """A preset that does not exist, already exists, or has a bad value."""


@dataclass(frozen=True, slots=True)
class Preset:
    """What one offer sells: a runtime, resources (None = the provider's whole limit) and prices in GLM."""

    name: str
    runtime: str
    start_fee: float
    env_per_hour: float
    cpu_per_hour: float
    cores: int | None = None
    memory_gib: float | None = None
    storage_gib: float | None = None
    active: bool = True

    def to_toml(self) -> dict[str, Any]:
        """The preset's table in presets.toml (unset resources are left out)."""
        data = {k: getattr(self, k) for k in _KEYS}
        return {k: v for k, v in data.items() if v is not None}


def validate_preset(preset: Preset, where: str = "") -> Preset:
    """Check a preset's values; returns it with numbers as their proper types.

    Raises:
        PresetError: the message names the preset, the value and what is allowed.
    """
    what = where or f"preset {preset.name!r}"
    if not isinstance(preset.name, str) or not _NAME_RE.match(preset.name):
        raise PresetError(f"preset name {preset.name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if preset.runtime not in RUNTIMES:
        raise PresetError(f"{what}: runtime {preset.runtime!r} is not one a provider runs (wasmtime or vm)")
    values: dict[str, Any] = {}
    for key in _PRICE_KEYS:
        value = getattr(preset, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise PresetError(f"{what}: {key} = {value!r} must be a price in GLM of 0 or more")
        values[key] = float(value)
    if preset.cores is not None and (isinstance(preset.cores, bool) or not isinstance(preset.cores, int) or preset.cores < 1):
        raise PresetError(f"{what}: cores = {preset.cores!r} must be a whole number of at least 1")
    for key in ("memory_gib", "storage_gib"):
        value = getattr(preset, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise PresetError(f"{what}: {key} = {value!r} must be a positive number of GiB")
        values[key] = float(value)
    if not isinstance(preset.active, bool):
        raise PresetError(f"{what}: active = {preset.active!r} must be true or false")
    return dataclasses.replace(preset, **values)


def implicit_preset(cfg: ProviderSettings) -> Preset:
    """The one preset of a node that stores none: its [provider] settings."""
    return Preset(IMPLICIT_PRESET, cfg.runtime, cfg.start_fee, cfg.env_per_hour, cfg.cpu_per_hour)


def effective_presets(data_dir: Path, cfg: ProviderSettings) -> tuple[list[Preset], bool]:
    """(the presets the node sells by, whether they are the implicit one).

    Raises:
        PresetError: presets.toml is malformed.
    """
    stored = PresetStore(data_dir).list()
    if not stored:
        return [implicit_preset(cfg)], True
    return stored, False


def preset_settings(cfg: ProviderSettings, preset: Preset) -> ProviderSettings:
    """The provider settings an offer of this preset is made from: its runtime and prices, and its
    resources within the provider's limits."""
    return dataclasses.replace(
        cfg,
        runtime=preset.runtime,
        start_fee=preset.start_fee,
        env_per_hour=preset.env_per_hour,
        cpu_per_hour=preset.cpu_per_hour,
        cores=min(cfg.cores, preset.cores) if preset.cores is not None else cfg.cores,
        memory_gib=min(cfg.memory_gib, preset.memory_gib) if preset.memory_gib is not None else cfg.memory_gib,
        storage_gib=min(cfg.storage_gib, preset.storage_gib) if preset.storage_gib is not None else cfg.storage_gib,
    )


class PresetStore:
    """The presets of one data directory, read from and written to presets.toml."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / PRESETS_FILE_NAME

    def list(self) -> list[Preset]:
        """Every stored preset, in file order.

        Raises:
            PresetError: the file is not TOML or holds a bad preset.
        """
        try:
            data = read_toml(self.path)
        except SettingsError as exc:
            raise PresetError(str(exc)) from None
        unknown = set(data) - {"presets"}
        if unknown:
            raise PresetError(f"{self.path}: unknown section [{sorted(unknown)[0]}]; presets are [presets.<name>] tables")
        table = data.get("presets", {})
        if not isinstance(table, dict):
            raise PresetError(f"{self.path}: presets must be [presets.<name>] tables")
        presets = []
        for name, entry in table.items():
            where = f"{self.path}: preset {name!r}"
            if not isinstance(entry, dict):
                raise PresetError(f"{where} must be a table")
            bad = set(entry) - set(_KEYS)
            if bad:
                raise PresetError(f"{where}: unknown key {sorted(bad)[0]!r} (keys: {', '.join(_KEYS)})")
            missing = [k for k in ("runtime", *_PRICE_KEYS) if k not in entry]
            if missing:
                raise PresetError(f"{where} has no {missing[0]}")
            presets.append(validate_preset(Preset(name=name, **entry), where))
        return presets

    def get(self, name: str) -> Preset:
        """One preset by name.

        Raises:
            PresetError: no such preset.
        """
        for preset in self.list():
            if preset.name == name:
                return preset
        raise self._not_found(name)

    def create(self, preset: Preset) -> Preset:
        """Store a new preset.

        Raises:
            PresetError: the name is taken or a value is bad.
        """
        preset = validate_preset(preset)
        with locked(self.path):
            presets = self.list()
            if any(p.name == preset.name for p in presets):
                raise PresetError(f"a preset named {preset.name!r} already exists; change it with `loam provider preset update`")
            self._save([*presets, preset])
        return preset

    def update(self, name: str, **changes: Any) -> Preset:
        """Change some values of a preset (None = keep).

        Raises:
            PresetError: no such preset, an unknown key or a bad value.
        """
        bad = set(changes) - set(_KEYS)
        if bad:
            raise PresetError(f"a preset has no {sorted(bad)[0]!r} (keys: {', '.join(_KEYS)})")
        with locked(self.path):
            presets = self.list()
            for i, preset in enumerate(presets):
                if preset.name == name:
                    updated = validate_preset(
                        dataclasses.replace(preset, **{k: v for k, v in changes.items() if v is not None})
                    )
                    presets[i] = updated
                    self._save(presets)
                    return updated
        raise self._not_found(name)

    def remove(self, name: str) -> None:
        """Delete a preset.

        Raises:
            PresetError: no such preset.
        """
        with locked(self.path):
            presets = self.list()
            kept = [p for p in presets if p.name != name]
            if len(kept) == len(presets):
                raise self._not_found(name)
            self._save(kept)

    def set_active(self, name: str, active: bool) -> Preset:
        """Activate or deactivate a preset."""
        return self.update(name, active=active)

    def _save(self, presets: list[Preset]) -> None:
        text = dumps(
            {"presets": {p.name: p.to_toml() for p in presets}},
            header="Provider presets: each active one is published as an offer.\n"
            "Edited by `loam provider preset ...`; prices in GLM (start fee, per hour of activity, per hour of cpu).",
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, text)

    def _not_found(self, name: str) -> PresetError:
        names = [p.name for p in self.list()]
        if name == IMPLICIT_PRESET and not names:
            return PresetError(
                f"no preset named {name!r} is stored: the implicit one is the [provider] settings; "
                "change it with `loam provider settings set`, or create presets with `loam provider preset create`"
            )
        known = f"the presets are: {', '.join(names)}" if names else "there are no presets yet"
        return PresetError(f"no preset named {name!r}; {known}")
