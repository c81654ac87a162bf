"""Provider presets in presets.toml: create, update, remove, (de)activate, checks, and the implicit preset."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from actors.provider.offer import linear_coeffs, offer_properties
from node.presets import (
    IMPLICIT_PRESET,
    Preset,
    PresetError,
    PresetStore,
    effective_presets,
    preset_settings,
)
from node.settings import load_settings

__all__: list[str] = []


def wasm(name: str = "wasm", **kw: object) -> Preset:
    values = {"runtime": "wasmtime", "start_fee": 0.0, "env_per_hour": 0.01, "cpu_per_hour": 0.1, **kw}
    return Preset(name=name, **values)  # type: ignore[arg-type]


def test_with_no_presets_the_provider_settings_are_one_implicit_preset(tmp_path: Path) -> None:
    cfg = load_settings(tmp_path, {"provider.runtime": "vm", "provider.cpu_per_hour": 0.5}, environ={}).provider
    [preset], implicit = effective_presets(tmp_path, cfg)
    assert implicit is True
    assert (preset.name, preset.runtime, preset.cpu_per_hour, preset.active) == (IMPLICIT_PRESET, "vm", 0.5, True)
    assert preset_settings(cfg, preset) == cfg


def test_created_presets_replace_the_implicit_one_and_round_trip_through_the_file(tmp_path: Path) -> None:
    store = PresetStore(tmp_path)
    store.create(wasm("a", cores=2, memory_gib=1.5))
    store.create(Preset("b", "vm", 1, 0.02, 0.2, active=False))
    presets, implicit = effective_presets(tmp_path, load_settings(tmp_path, environ={}).provider)
    assert implicit is False
    assert presets == [
        Preset("a", "wasmtime", 0.0, 0.01, 0.1, cores=2, memory_gib=1.5),
        Preset("b", "vm", 1.0, 0.02, 0.2, active=False),
    ]
    assert type(presets[1].start_fee) is float  # an integer price is stored as GLM, a float
    data = tomllib.loads(store.path.read_text())
    assert data["presets"]["a"] == {
        "runtime": "wasmtime", "start_fee": 0.0, "env_per_hour": 0.01, "cpu_per_hour": 0.1,
        "cores": 2, "memory_gib": 1.5, "active": True,
    }


def test_update_activate_deactivate_and_remove(tmp_path: Path) -> None:
    store = PresetStore(tmp_path)
    store.create(wasm("a"))
    assert store.update("a", cpu_per_hour=0.3, runtime=None).cpu_per_hour == 0.3
    assert store.get("a").env_per_hour == 0.01  # None keeps a value
    assert store.set_active("a", False).active is False
    assert store.set_active("a", True).active is True
    store.remove("a")
    assert store.list() == []


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        (wasm(runtime="docker"), "runtime 'docker' is not one a provider runs (wasmtime or vm)"),
        (wasm(cpu_per_hour=-1.0), "cpu_per_hour = -1.0 must be a price in GLM of 0 or more"),
        (wasm(start_fee=float("nan")), "start_fee = nan must be a price"),
        (wasm(cores=0), "cores = 0 must be a whole number of at least 1"),
        (wasm(memory_gib=0.0), "memory_gib = 0.0 must be a positive number of GiB"),
        (wasm(name="no spaces"), "preset name 'no spaces' must be 1-64 letters"),
        (wasm(name=""), "preset name '' must be"),
    ],
)
def test_bad_values_are_refused_with_the_reason_and_nothing_is_written(tmp_path: Path, preset: Preset, message: str) -> None:
    store = PresetStore(tmp_path)
    store.create(wasm("keep"))
    before = store.path.read_text()
    with pytest.raises(PresetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        store.create(preset)
    assert store.path.read_text() == before


def test_duplicate_and_missing_names_say_so(tmp_path: Path) -> None:
    store = PresetStore(tmp_path)
    with pytest.raises(PresetError, match="no preset named 'default' is stored: the implicit one is the \\[provider\\] settings"):
        store.update("default", cpu_per_hour=1.0)
    store.create(wasm("a"))
    with pytest.raises(PresetError, match="a preset named 'a' already exists"):
        store.create(wasm("a"))
    with pytest.raises(PresetError, match="no preset named 'b'; the presets are: a"):
        store.remove("b")
    with pytest.raises(PresetError, match="no preset named 'b'"):
        store.set_active("b", True)
    with pytest.raises(PresetError, match="cpu_per_hour = 'x' must be a price"):
        store.update("a", cpu_per_hour="x")
    assert store.get("a").cpu_per_hour == 0.1


def test_a_hand_edited_file_with_mistakes_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "presets.toml"
    path.write_text('[presets.a]\nruntime = "wasmtime"\nstart_fee = 0\nenv_per_hour = 0\ncpu_per_hour = 0\ncolour = "red"\n')
    with pytest.raises(PresetError, match=f"{path}: preset 'a': unknown key 'colour'"):
        PresetStore(tmp_path).list()
    path.write_text('[presets.a]\nruntime = "wasmtime"\n')
    with pytest.raises(PresetError, match="preset 'a' has no start_fee"):
        PresetStore(tmp_path).list()
    path.write_text("[presets.a\n")
    with pytest.raises(PresetError, match="is not valid TOML"):
        PresetStore(tmp_path).list()


def test_a_preset_offer_has_its_runtime_and_prices_and_resources_within_the_limits(tmp_path: Path) -> None:
    cfg = load_settings(tmp_path, {"provider.cores": 4, "provider.memory_gib": 8.0}, environ={}).provider
    small = preset_settings(cfg, Preset("s", "vm", 0.5, 0.036, 0.072, cores=2, memory_gib=16.0))
    assert (small.runtime, small.cores, small.memory_gib, small.storage_gib) == ("vm", 2, 8.0, cfg.storage_gib)
    assert linear_coeffs(small) == pytest.approx([0.072 / 3600, 0.036 / 3600, 0.5])
    props = offer_properties(small, "0x" + "ab" * 20, "n", "public")
    assert props["golem.runtime.name"] == "vm"
    assert props["golem.inf.mem.gib"] == 8.0
    assert props["golem.com.pricing.model.linear.coeffs"] == linear_coeffs(small)
