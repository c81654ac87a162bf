"""vm task packages against the real Docker engine: hash checked first, both formats, cached by hash."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path

import docker
import pytest

from exeunits.vm.image import detect_format, image_tag, prepare_image
from protocol.errors import ExeUnitError, PackageError
from tests.images.support import DOCKER_ARCHIVE_NAME, GVMI_NAME, FileServer, sha3_224

__all__: list[str] = []

MAX_BYTES = 64 * 1024 * 1024


def _forget(client: docker.DockerClient, name: str, root: Path) -> str:
    """Remove the cached image of the served file ``name`` so the next prepare imports it; returns its tag."""
    tag = image_tag(sha3_224(root / name))
    try:
        client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass
    return tag


def _image_ids(client: docker.DockerClient) -> set[str]:
    return {image.id for image in client.images.list(all=True)}


def test_hash_mismatch_is_refused_before_anything_is_imported(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    tag = _forget(client, GVMI_NAME, server.root)
    before = _image_ids(client)
    wrong = "0" * 56
    with pytest.raises(ExeUnitError, match="hash mismatch"):
        prepare_image(client, server.package(GVMI_NAME, digest=wrong), tmp_path, max_package_bytes=MAX_BYTES)
    assert _image_ids(client) == before
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(tag)
    assert list(tmp_path.iterdir()) == [], "the refused download is left on disk"


def test_gvmi_package_is_imported_then_served_from_the_cache(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    tag = _forget(client, GVMI_NAME, server.root)
    package = server.package(GVMI_NAME)
    image = prepare_image(client, package, tmp_path, max_package_bytes=MAX_BYTES, lock_dir=tmp_path / "locks")
    assert not image.cached
    assert image.tag == tag
    assert client.images.get(tag).id == image.id
    assert image.config["Volumes"] == ["/golem/work"]
    assert "LOAM_TEST_IMAGE=busybox" in image.config["Env"]
    assert image.config["WorkingDir"] == "/golem/work"
    gets = len(server.gets)
    started = time.monotonic()
    again = prepare_image(client, package, tmp_path, max_package_bytes=MAX_BYTES, lock_dir=tmp_path / "locks")
    assert again.cached and again.id == image.id
    assert time.monotonic() - started < 0.5
    assert len(server.gets) == gets, "a cached image was downloaded again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locks"]


def test_docker_save_package_is_loaded_and_tagged(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    tag = _forget(client, DOCKER_ARCHIVE_NAME, server.root)
    image = prepare_image(client, server.package(DOCKER_ARCHIVE_NAME), tmp_path, max_package_bytes=MAX_BYTES)
    assert not image.cached
    assert client.images.get(tag).id == image.id
    assert image.config["Volumes"] == ["/golem/work"]
    assert list(tmp_path.iterdir()) == []


def test_tags_inside_a_docker_archive_are_not_applied(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    name = "retagged.docker.tar"
    _rewrite_manifest(server.root / DOCKER_ARCHIVE_NAME, server.root / name, lambda m: [{**m[0], "RepoTags": ["loam-test/hijack:latest"]}])
    _forget(client, name, server.root)
    prepare_image(client, server.package(name), tmp_path, max_package_bytes=MAX_BYTES)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("loam-test/hijack:latest")


def test_docker_archive_with_two_images_is_refused(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    name = "two.docker.tar"
    _rewrite_manifest(server.root / DOCKER_ARCHIVE_NAME, server.root / name, lambda m: m + m)
    with pytest.raises(PackageError, match="exactly one"):
        prepare_image(client, server.package(name), tmp_path, max_package_bytes=MAX_BYTES)


def test_file_of_another_format_is_refused(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    (server.root / "random.bin").write_bytes(os.urandom(4096))
    with pytest.raises(PackageError, match="neither a GVMI image"):
        prepare_image(client, server.package("random.bin"), tmp_path, max_package_bytes=MAX_BYTES)
    assert list(tmp_path.iterdir()) == []


def test_package_over_the_size_limit_is_refused(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    _forget(client, GVMI_NAME, server.root)
    with pytest.raises(ExeUnitError, match="larger than the limit"):
        prepare_image(client, server.package(GVMI_NAME), tmp_path / "w", max_package_bytes=1000)


def test_malformed_package_strings_are_refused(client: docker.DockerClient, tmp_path: Path) -> None:
    for spec in ("http://x/y", "hash:sha3:abc:http://x/y", f"hash:sha3:{'0' * 56}:ftp://x/y"):
        with pytest.raises(ExeUnitError, match="task package"):
            prepare_image(client, spec, tmp_path, max_package_bytes=MAX_BYTES)


def test_formats_are_detected(server: FileServer) -> None:
    assert detect_format(server.root / GVMI_NAME) == "gvmi"
    assert detect_format(server.root / DOCKER_ARCHIVE_NAME) == "docker-archive"


def _rewrite_manifest(src: Path, dst: Path, change: object) -> None:
    """Copy a docker save archive, passing its manifest.json through ``change``."""
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w") as tar_out:
        for member in tar_in.getmembers():
            if member.name == "manifest.json":
                manifest = json.loads(tar_in.extractfile(member).read())  # type: ignore[union-attr]
                data = json.dumps(change(manifest)).encode()  # type: ignore[operator]
                info = tarfile.TarInfo("manifest.json")
                info.size = len(data)
                tar_out.addfile(info, io.BytesIO(data))
            else:
                tar_out.addfile(member, tar_in.extractfile(member) if member.isfile() else None)


def test_gzipped_docker_save_package_is_loaded(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    import gzip

    name = "busybox.docker.tar.gz"
    (server.root / name).write_bytes(gzip.compress((server.root / DOCKER_ARCHIVE_NAME).read_bytes(), compresslevel=1))
    _forget(client, name, server.root)
    assert detect_format(server.root / name) == "docker-archive"
    image = prepare_image(client, server.package(name), tmp_path, max_package_bytes=MAX_BYTES)
    assert image.config["Volumes"] == ["/golem/work"]


def test_docker_archive_that_unpacks_too_big_is_refused(client: docker.DockerClient, server: FileServer, tmp_path: Path) -> None:
    _forget(client, DOCKER_ARCHIVE_NAME, server.root)
    with pytest.raises(PackageError, match="unpacks to more than"):
        prepare_image(client, server.package(DOCKER_ARCHIVE_NAME), tmp_path, max_package_bytes=MAX_BYTES, max_unpacked_bytes=100_000)
    assert list(tmp_path.iterdir()) == []
