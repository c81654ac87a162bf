"""The WASI test programs in tests/wasm, built once with clang (for unit and integration tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["build_wasm_programs", "PROGRAMS"]

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "tests" / "wasm" / "build.sh"
PROGRAMS = ("wc", "hello", "spin", "hog", "forever", "trap", "exitcode")


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; under CI the toolchain is installed, so its absence is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs the WASI toolchain)", pytrace=False)
    pytest.skip(f"{reason}; install it with `scripts/setup.sh wasi`")


def build_wasm_programs() -> Path:
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
