"""The small TOML writer behind presets.toml and loam.toml edits: what it writes reads back the same."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from node.tomlfile import dumps, read_toml, write_atomic
from protocol.errors import SettingsError

__all__: list[str] = []


def test_nested_tables_and_every_value_kind_round_trip() -> None:
    data = {
        "node": {"name": 'a "quoted" name\twith\\ escapes and ünïcode', "log_json": False},
        "provider": {"cores": 4, "memory_gib": 1.5, "tiny": 1e-12, "block_requestors": ["0xab", "0xcd"], "empty": []},
        "presets": {"with space": {"runtime": "vm", "active": True}, "plain": {"cpu_per_hour": 0.0}},
    }
    text = dumps(data, header="line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    assert tomllib.loads(text) == data


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), object()])
def test_values_toml_cannot_hold_are_refused(bad: object) -> None:
    with pytest.raises(SettingsError, match="provider.x"):
        dumps({"provider": {"x": bad}})


def test_write_atomic_replaces_the_file_and_leaves_no_scratch(tmp_path: Path) -> None:
    path = tmp_path / "loam.toml"
    write_atomic(path, "[node]\nname = \"a\"\n")
    write_atomic(path, "[node]\nname = \"b\"\n")
    assert read_toml(path) == {"node": {"name": "b"}}
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["loam.toml"]
    assert read_toml(tmp_path / "missing.toml") == {}
