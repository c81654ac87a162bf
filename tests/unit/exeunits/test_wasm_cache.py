"""The compiled-module cache: keyed by wasmtime version, engine settings and wasm hash; reused across runners."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from exeunits.wasm import EngineSettings, WasmRunner
from exeunits.wasm import cache as cache_module

__all__: list[str] = []


def _run_hello(runner: WasmRunner, wasm: Path, tmp_path: Path) -> tuple[bool, float]:
    outcome = runner.run(wasm, ["hello"], {}, {}, tmp_path / "out", tmp_path / "err")
    assert outcome.ok, outcome
    return outcome.cache_hit, outcome.load_s


def test_second_run_loads_the_compiled_module_from_the_cache(wasm_build: Path, tmp_path: Path) -> None:
    wasm = wasm_build / "hello.wasm"
    runner = WasmRunner(tmp_path / "cache")
    cached = runner.cache.path_for(hashlib.sha256(wasm.read_bytes()).hexdigest())
    assert not cached.exists()

    hit, compile_s = _run_hello(runner, wasm, tmp_path)
    assert not hit
    assert cached.is_file()
    assert (runner.cache.stats.compiles, runner.cache.stats.hits) == (1, 0)

    hit, _ = _run_hello(runner, wasm, tmp_path)
    assert hit
    assert (runner.cache.stats.compiles, runner.cache.stats.hits) == (1, 1)

    # Another runner (as in a new exe-unit process) finds it on disk, and loading is
    # far cheaper than compiling.
    other = WasmRunner(tmp_path / "cache")
    hit, load_s = _run_hello(other, wasm, tmp_path)
    assert hit
    assert (other.cache.stats.compiles, other.cache.stats.hits) == (0, 1)
    assert load_s < compile_s


def test_prepare_compiles_ahead_of_the_first_run(wasm_build: Path, tmp_path: Path) -> None:
    runner = WasmRunner(tmp_path / "cache")
    assert runner.prepare(wasm_build / "hello.wasm") is False
    assert runner.prepare(wasm_build / "hello.wasm") is True
    hit, _ = _run_hello(runner, wasm_build / "hello.wasm", tmp_path)
    assert hit


def test_other_engine_settings_use_another_cache_file(wasm_build: Path, tmp_path: Path) -> None:
    wasm = wasm_build / "hello.wasm"
    sha = hashlib.sha256(wasm.read_bytes()).hexdigest()
    fuel = WasmRunner(tmp_path / "cache")
    no_fuel = WasmRunner(tmp_path / "cache", settings=EngineSettings(consume_fuel=False))
    assert fuel.cache.path_for(sha) != no_fuel.cache.path_for(sha)
    _run_hello(fuel, wasm, tmp_path)
    hit, _ = _run_hello(no_fuel, wasm, tmp_path)
    assert not hit
    assert len(list((tmp_path / "cache").glob(f"{sha}.*.cwasm"))) == 2


def test_another_wasmtime_version_gets_another_key(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = EngineSettings()
    before = settings.digest()
    monkeypatch.setattr(cache_module, "WASMTIME_VERSION", "0.0.1")
    assert settings.digest() != before


def test_a_corrupt_cache_file_is_replaced(wasm_build: Path, tmp_path: Path) -> None:
    wasm = wasm_build / "hello.wasm"
    runner = WasmRunner(tmp_path / "cache")
    _run_hello(runner, wasm, tmp_path)
    cached = runner.cache.path_for(hashlib.sha256(wasm.read_bytes()).hexdigest())
    cached.write_bytes(b"not a compiled module")

    fresh = WasmRunner(tmp_path / "cache")
    hit, _ = _run_hello(fresh, wasm, tmp_path)
    assert not hit
    assert (fresh.cache.stats.rejected, fresh.cache.stats.compiles) == (1, 1)
    assert cached.read_bytes() != b"not a compiled module"


def test_cache_folder_is_private(tmp_path: Path) -> None:
    runner = WasmRunner(tmp_path / "cache")
    assert stat.S_IMODE(runner.cache.cache_dir.stat().st_mode) == 0o700
