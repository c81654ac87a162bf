"""Fixtures of the exe-unit tests: the WASI test programs, built once per session, a shared runner, and
for the vm tests the Docker engine and a file server with the test images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from exeunits.wasm import Limits, MountMode, RunOutcome, WasmRunner
from tests.wasm_programs import build_wasm_programs

if TYPE_CHECKING:
    import docker

    from tests.images.support import FileServer

__all__: list[str] = []


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    """The Docker engine (the vm tests skip, or fail under CI, without one)."""
    from tests.images.support import engine

    return engine()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """Serves a copy of the test images and a small text file, plus whatever a test writes into its root."""
    from tests.images.support import DOCKER_ARCHIVE_NAME, GVMI_NAME, FileServer, build_images, engine, forget_images

    root = tmp_path_factory.mktemp("served")
    build = build_images()
    for name in (GVMI_NAME, DOCKER_ARCHIVE_NAME):
        (root / name).write_bytes((build / name).read_bytes())
    (root / "words.txt").write_text("one two three\nfour five\n")
    with FileServer(root) as srv:
        yield srv
    forget_images(engine(), root)



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
