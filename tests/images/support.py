"""The vm exe-unit's test images, a Docker engine and a local file server, for unit and integration tests.

    client = engine()                     # a live engine (started with scripts/dockerd.sh if need be)
    build = build_images()                # tests/images/build: rootfs/, busybox.gvmi, busybox.docker.tar
    with FileServer(build) as server:     # GET serves the folder, PUT is kept in server.uploads
        package = server.package("busybox.gvmi")   # hash:sha3:<sha3-224>:http://127.0.0.1:<port>/busybox.gvmi

Without an engine or the tools to build the images the tests are skipped on a developer's
machine; under CI (``CI=true``), where .ci/run installs and starts them, that is a failure.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    import docker

__all__ = [
    "REPO",
    "BUILD_DIR",
    "GVMI_NAME",
    "DOCKER_ARCHIVE_NAME",
    "IMAGE_ENV",
    "unavailable",
    "engine",
    "build_images",
    "sha3_224",
    "forget_images",
    "FileServer",
]

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tests" / "images" / "build.sh"
BUILD_DIR = BUILD_SCRIPT.parent / "build"
GVMI_NAME = "busybox.gvmi"
DOCKER_ARCHIVE_NAME = "busybox.docker.tar"
# What build.sh puts in the images' config, besides PATH.
IMAGE_ENV = {"LOAM_TEST_IMAGE": "busybox"}


def unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine; under CI the engine and tools are installed, so their absence is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs and starts the Docker engine)", pytrace=False)
    pytest.skip(f"{reason}; `scripts/setup.sh docker` installs and starts it")


@functools.cache
def _client() -> docker.DockerClient | str:
    """A client of an engine that answers, or why there is none (cached: asked once per session)."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed"
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        if os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock") != "unix:///var/run/docker.sock":
            # scripts/dockerd.sh starts an engine on the default socket, not there.
            return f"the Docker engine at DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer: {exc}"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "dockerd.sh"), "start"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        return f"no Docker engine answers, and scripts/dockerd.sh start failed: {(proc.stderr or proc.stdout).strip()[-500:]}"
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except docker.errors.DockerException as exc:
        return f"the Docker engine started but does not answer: {exc}"


def engine() -> docker.DockerClient:
    """A client of the local Docker engine, starting one (scripts/dockerd.sh) when none answers."""
    client = _client()
    if isinstance(client, str):
        unavailable(client)
    return client


@functools.cache
def _build(with_docker: bool) -> Path | str:
    for tool in ("mksquashfs", "unsquashfs"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: squashfs-tools)"
    argv = ["bash", str(BUILD_SCRIPT)] + ([] if with_docker else ["--no-docker"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return f"tests/images/build.sh failed:\n{proc.stdout}{proc.stderr}"
    return BUILD_DIR


def build_images(*, with_docker: bool = True) -> Path:
    """tests/images/build with the test images built (incrementally); the docker archive needs an engine."""
    if with_docker:
        engine()
    built = _build(with_docker)
    if isinstance(built, str):
        unavailable(built)
    return built


def sha3_224(path: Path) -> str:
    """The sha3-224 hex digest of a file, as task packages name it."""
    digest = hashlib.sha3_224()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def forget_images(client: docker.DockerClient, folder: Path) -> None:
    """Remove the engine's cached image (``loam/<hash>``) of every file in ``folder``, so tests leave none behind."""
    import docker.errors

    from exeunits.vm.image import image_tag

    for path in folder.iterdir():
        if path.is_file():
            try:
                client.images.remove(image_tag(sha3_224(path)), force=True)
            except docker.errors.ImageNotFound:
                pass


class FileServer:
    """An HTTP server on 127.0.0.1 in a thread: GET serves ``root``, PUT bodies land in ``uploads`` (path -> bytes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads: dict[str, bytes] = {}
        self.gets: list[str] = []
        handler = functools.partial(_Handler, self, directory=str(root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def package(self, name: str, digest: str | None = None) -> str:
        """The task package ``hash:sha3:<digest>:<url of name>`` (``digest`` defaults to the file's)."""
        return f"hash:sha3:{digest or sha3_224(self.root / name)}:{self.url}/{name}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, server_state: FileServer, *args: Any, **kwargs: Any) -> None:
        self._state = server_state
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:  # noqa: N802 - the http.server naming
        self._state.gets.append(self.path)
        super().do_GET()

    def do_PUT(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self._state.uploads[self.path] = self.rfile.read(length)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
        pass
