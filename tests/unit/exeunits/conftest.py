"""Fixtures of the exe-unit tests: the WASI test programs, built once per session, and a shared runner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from exeunits.wasm import Limits, MountMode, RunOutcome, WasmRunner
from tests.wasm_programs import build_wasm_programs

__all__: list[str] = []



@pytest.fixture(scope="session")
def wasm_build() -> Path:
    """tests/wasm/build, with every test program compiled (incrementally)."""
    return build_wasm_programs()


@pytest.fixture(scope="session")
def runner(tmp_path_factory: pytest.TempPathFactory) -> WasmRunner:
    """One runner for the session, so each program is compiled once."""
    return WasmRunner(tmp_path_factory.mktemp("wasm-cache"))


RunProgram = Callable[..., tuple[RunOutcome, str, str]]


@pytest.fixture
def run_program(wasm_build: Path, runner: WasmRunner, tmp_path: Path) -> RunProgram:
    """run_program(name, *args, env=, mounts=, limits=) -> (outcome, stdout, stderr) of a test program."""

    def run(
        name: str,
        *args: str,
        env: dict[str, str] | None = None,
        mounts: dict[str, tuple[Path, MountMode]] | None = None,
        limits: Limits = Limits(),
        use: WasmRunner | None = None,
    ) -> tuple[RunOutcome, str, str]:
        stdout, stderr = tmp_path / f"{name}.stdout", tmp_path / f"{name}.stderr"
        outcome = (use or runner).run(
            wasm_build / f"{name}.wasm", [name, *args], env or {}, mounts or {}, stdout, stderr, limits
        )
        return outcome, stdout.read_text(), stderr.read_text()

    return run
