"""Fixtures of the exe-unit tests: the WASI test programs, built once per session, and a shared runner."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from exeunits.wasm import Limits, MountMode, RunOutcome, WasmRunner

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO / "tests" / "wasm" / "build.sh"
PROGRAMS = ("wc", "hello", "spin", "hog", "forever", "trap", "exitcode")


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; under CI the toolchain is installed, so its absence is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs the WASI toolchain)", pytrace=False)
    pytest.skip(f"{reason}; install it with `scripts/setup.sh wasi`")


@pytest.fixture(scope="session")
def wasm_build() -> Path:
    """tests/wasm/build, with every test program compiled by tests/wasm/build.sh (incrementally)."""
    if shutil.which(os.environ.get("CC", "clang")) is None:
        _unavailable("clang is not installed, so the WASI test programs cannot be built")
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        _unavailable(f"tests/wasm/build.sh failed:\n{proc.stdout}{proc.stderr}")
    build = BUILD_SCRIPT.parent / "build"
    missing = [p for p in PROGRAMS if not (build / f"{p}.wasm").is_file()]
    assert not missing, f"build.sh did not produce {missing}"
    return build


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
