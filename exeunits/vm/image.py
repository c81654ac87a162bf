"""Task packages of the vm runtime: download, verify and import a container image, once per hash.

A vm task package is ``hash:sha3:<sha3-224 hex>:<url>``. The file at the URL is either a
GVMI image (gvmkit-build's squashfs + config, see ``gvmi.py``) or a ``docker save``
archive (a tar with ``manifest.json``). The download is capped in size and its sha3-224
is checked before the file is even looked at; only then is it imported into the Docker
engine, tagged ``loam/<first 16 hex digits of the hash>``, so the next activity with the
same package starts from the engine's copy::

    image = prepare_image(client, "hash:sha3:ab12...:http://repo/app.gvmi", work_dir,
                          max_package_bytes=2**30, lock_dir=cache_dir)
    image.id, image.config["Volumes"]          # 'sha256:...', ['/golem/work']

A ``docker save`` archive is loaded without the tags written in it: a requestor's archive
must not be able to re-point a provider's tags (``loam/...`` included).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from exeunits.vm.gvmi import SQUASHFS_MAGIC, check_config, import_gvmi
from protocol.errors import ExeUnitError, PackageError

if TYPE_CHECKING:
    import docker

__all__ = [
    "IMAGE_REPOSITORY",
    "UNPACKED_RATIO",
    "ImageFormat",
    "VmImage",
    "image_tag",
    "detect_format",
    "prepare_image",
    "load_docker_archive",
]

IMAGE_REPOSITORY = "loam"
# Without an explicit cap, an image may unpack to this many times the package's size
# limit. Root filesystems compress 2-4x; a squashfs bomb a thousand times.
UNPACKED_RATIO = 8
_MAX_MANIFEST_BYTES = 1024 * 1024
_MAX_MEMBERS = 100_000

ImageFormat = Literal["gvmi", "docker-archive"]


@dataclass(frozen=True, slots=True)
class VmImage:
    """An image in the Docker engine, ready for containers: id, Loam's tag, checked config, and whether it was cached."""

    id: str
    tag: str
    config: dict[str, Any]
    cached: bool


def image_tag(digest: str) -> str:
    """The engine tag of the image of the package with sha3-224 ``digest``: ``loam/<16 hex>:latest``."""
    return f"{IMAGE_REPOSITORY}/{digest[:16]}:latest"


def detect_format(path: str | os.PathLike[str]) -> ImageFormat:
    """Whether the file at ``path`` is a GVMI image or a ``docker save`` archive.

    Raises:
        PackageError: neither.
    """
    label = f"image {Path(path).name}"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise PackageError(f"{label}: cannot read it: {exc.strerror or exc}") from exc
    if head == SQUASHFS_MAGIC:
        return "gvmi"
    try:
        # "r:*": `docker save | gzip` (or bzip2, xz) is common, and `docker load` takes it.
        with tarfile.open(path, "r:*") as tar:
            for _ in range(_MAX_MEMBERS):
                member = tar.next()
                if member is None:
                    break
                if member.name.lstrip("./") == "manifest.json":
                    return "docker-archive"
    except (tarfile.TarError, OSError):
        pass
    raise PackageError(f"{label}: neither a GVMI image (squashfs + config) nor a docker save archive (tar with manifest.json)")


def prepare_image(
    client: docker.DockerClient,
    package: str,
    work_dir: str | os.PathLike[str],
    *,
    max_package_bytes: int,
    max_unpacked_bytes: int | None = None,
    lock_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 600.0,
) -> VmImage:
    """The engine image of task package ``package``, downloaded, verified and imported unless cached.

    Files go to ``work_dir`` and are removed afterwards. With ``lock_dir``, activities
    preparing the same package at once wait for each other instead of importing twice.

    Raises:
        ExeUnitError: a malformed package string, a failed or oversized download, a hash
            mismatch (nothing is imported then), or an engine that refuses the image.
        PackageError: a file that is no valid image.
    """
    import docker.errors

    from exeunits.child import download, parse_task_package

    digest, url = parse_task_package(package)
    tag = image_tag(digest)
    cap = max_unpacked_bytes if max_unpacked_bytes is not None else UNPACKED_RATIO * max_package_bytes
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with _locked(lock_dir, digest):
        cached = _inspect(client, tag)
        if cached is not None:
            return VmImage(cached["Id"], tag, check_config(cached.get("Config"), f"image {tag}", for_import=False), True)
        path = work / f"package-{digest[:16]}.img"
        try:
            got = download(url, path, max_package_bytes, timeout_s)
            if got != digest:
                raise ExeUnitError(f"package hash mismatch: expected sha3-224 {digest}, downloaded {got}")
            fmt = detect_format(path)
            if fmt == "gvmi":
                image_id = import_gvmi(client, path, tag, max_unpacked_bytes=cap, tmp_dir=work)
            else:
                image_id = load_docker_archive(client, path, tag, max_unpacked_bytes=cap, tmp_dir=work)
        finally:
            path.unlink(missing_ok=True)
        try:
            attrs = client.api.inspect_image(image_id)
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"image {tag} vanished right after its import: {exc}") from exc
        return VmImage(image_id, tag, check_config(attrs.get("Config"), f"image {tag}", for_import=False), False)


def load_docker_archive(
    client: docker.DockerClient,
    path: str | os.PathLike[str],
    tag: str,
    *,
    max_unpacked_bytes: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Load the one image of the ``docker save`` archive at ``path`` as ``tag``; returns its id.

    The archive (plain or gzip, bzip2, xz compressed) is copied, uncompressed and without
    its tags (``RepoTags`` in manifest.json, the legacy ``repositories`` file, image names
    in index.json), before the engine sees it.

    Raises:
        PackageError: not such an archive, one holding other than exactly one image, or
            one whose members add up to more than ``max_unpacked_bytes``.
        ExeUnitError: the engine refuses it.
    """
    import docker.errors
    from docker.utils import parse_repository_tag

    label = f"docker archive {Path(path).name}"
    clean = Path(tmp_dir or Path(path).parent) / f".{Path(path).name}.untagged.tar"
    try:
        _untag_archive(Path(path), clean, label, max_unpacked_bytes)
        try:
            with open(clean, "rb") as f:
                images = client.images.load(f)
        except docker.errors.DockerException as exc:
            raise ExeUnitError(f"the Docker engine refused {label}: {exc}") from exc
    finally:
        clean.unlink(missing_ok=True)
    ids = {image.id for image in images}
    if len(ids) != 1:
        raise PackageError(f"{label}: holds {len(ids)} images, a task package must hold exactly one")
    (image_id,) = ids
    repository, tag_name = parse_repository_tag(tag)
    try:
        client.api.tag(image_id, repository, tag_name or "latest", force=True)
    except docker.errors.DockerException as exc:
        raise ExeUnitError(f"cannot tag image {image_id} as {tag}: {exc}") from exc
    return str(image_id)


# --- internals ---------------------------------------------------------------------


def _inspect(client: docker.DockerClient, ref: str) -> dict[str, Any] | None:
    import docker.errors

    try:
        return client.api.inspect_image(ref)  # type: ignore[no-any-return]
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.DockerException as exc:
        raise ExeUnitError(f"the Docker engine does not answer: {exc}") from exc


@contextlib.contextmanager
def _locked(lock_dir: str | os.PathLike[str] | None, digest: str) -> Iterator[None]:
    if lock_dir is None:
        yield
        return
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(lock_dir) / f"vm-{digest[:16]}.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _untag_archive(src: Path, dst: Path, label: str, max_unpacked_bytes: int | None) -> None:
    """Copy the tar ``src`` to ``dst`` with every tag removed; check manifest.json on the way."""
    try:
        with tarfile.open(src, "r:*") as tar_in, tarfile.open(dst, "w:", format=tarfile.PAX_FORMAT) as tar_out:
            members = []
            total = 0
            for member in tar_in:
                members.append(member)
                total += member.size
                if len(members) > _MAX_MEMBERS:
                    raise PackageError(f"{label}: more than {_MAX_MEMBERS} members")
                if max_unpacked_bytes is not None and total > max_unpacked_bytes:
                    raise PackageError(f"{label}: unpacks to more than {max_unpacked_bytes} bytes")
            names = {m.name.lstrip("./"): m for m in members}
            manifest_member = names.get("manifest.json")
            if manifest_member is None or not manifest_member.isfile():
                raise PackageError(f"{label}: no manifest.json, not a docker save archive")
            for member in members:
                name = member.name.lstrip("./")
                if name == "repositories":
                    continue
                if name in ("manifest.json", "index.json") and member.isfile():
                    data = _untagged_json(tar_in, member, label)
                    info = tarfile.TarInfo(member.name)
                    info.size, info.mode, info.mtime = len(data), member.mode, member.mtime
                    tar_out.addfile(info, io.BytesIO(data))
                elif member.isfile():
                    tar_out.addfile(member, tar_in.extractfile(member))
                else:
                    tar_out.addfile(member)
    except (tarfile.TarError, EOFError) as exc:
        raise PackageError(f"{label}: not a valid tar archive: {exc}") from exc
    except OSError as exc:
        raise ExeUnitError(f"{label}: cannot copy it: {exc.strerror or exc}") from exc


def _untagged_json(tar: tarfile.TarFile, member: tarfile.TarInfo, label: str) -> bytes:
    if member.size > _MAX_MANIFEST_BYTES:
        raise PackageError(f"{label}: {member.name} is {member.size} bytes, over {_MAX_MANIFEST_BYTES}")
    f = tar.extractfile(member)
    try:
        doc = json.loads(f.read() if f is not None else b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{label}: {member.name} is not JSON: {exc}") from exc
    if member.name.lstrip("./") == "manifest.json":
        if not isinstance(doc, list) or not all(isinstance(e, dict) and isinstance(e.get("Config"), str) for e in doc):
            raise PackageError(f"{label}: manifest.json is not a list of images with a Config")
        if len(doc) != 1:
            raise PackageError(f"{label}: holds {len(doc)} images, a task package must hold exactly one")
        for entry in doc:
            entry["RepoTags"] = None
    elif isinstance(doc, dict):
        # OCI layout (index.json): names ride in the annotations of each manifest.
        for entry in doc.get("manifests") or []:
            if isinstance(entry, dict):
                entry.pop("annotations", None)
    return json.dumps(doc).encode()
