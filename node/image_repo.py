"""A small image repository: GVMI files from a folder, answering Golem's `GET /v1/image/info` like the public one.

Requestor libraries resolve a vm payload through a repository (`yapapi`'s `vm.repo(image_hash=…)`,
golem-core's `VmPayload`): they ask `/v1/image/info?hash=<sha3-224>&count=true` (or `?tag=name:version`)
and put `hash:sha3:<sha3>:<http>` from the answer into the demand. This server answers that from
the GVMI files of one folder, and serves the files themselves, so a testnet resolves images with
no internet::

    loam image-repo --dir images/ --port 7697
    curl 'http://127.0.0.1:7697/v1/image/info?hash=<sha3-224>&count=true'
    {"sha3": "…", "tag": "busybox:latest", "http": "http://127.0.0.1:7697/v1/image/download?hash=…", "size": 1234, "downloads": 1}

A file's tag is its name without `.gvmi` (`busybox.gvmi` → `busybox:latest`, `app:1.2.gvmi` → `app:1.2`).
The folder is read again when it changes; hashes are cached by size and modification time.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = ["Image", "ImageFolder", "make_app", "serve"]

_HASH_RE = re.compile(r"[0-9a-f]{56}")
_TAG_RE = re.compile(r"[A-Za-z0-9._/-]{1,128}(:[A-Za-z0-9._-]{1,128})?")


@dataclass(frozen=True, slots=True)
class Image:
    """One GVMI file of the repository."""

    sha3: str
    tag: str
    path: Path
    size_bytes: int


def _sha3_224(path: Path) -> str:
    digest = hashlib.sha3_224()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _tag_of(path: Path) -> str:
    stem = path.name[: -len(".gvmi")]
    return stem if ":" in stem else f"{stem}:latest"


class ImageFolder:
    """The GVMI files of a folder by hash and by tag (thread-safe; re-scanned when the folder changes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._hashes: dict[tuple[str, int, int], str] = {}  # (name, size, mtime_ns) -> sha3
        self._images: dict[str, Image] = {}
        self._downloads: dict[str, int] = {}
        self._seen: tuple[int, ...] | None = None

    def images(self) -> list[Image]:
        """Every image, by tag."""
        with self._lock:
            self._rescan()
            return sorted(self._images.values(), key=lambda i: i.tag)

    def find(self, *, sha3: str | None = None, tag: str | None = None) -> Image | None:
        """The image with this hash or tag, or None."""
        with self._lock:
            self._rescan()
            if sha3 is not None:
                return self._images.get(sha3)
            wanted = tag if tag is None or ":" in tag else f"{tag}:latest"
            return next((i for i in self._images.values() if i.tag == wanted), None)

    def count(self, sha3: str) -> int:
        """Count one more pull of an image; the pulls so far."""
        with self._lock:
            self._downloads[sha3] = self._downloads.get(sha3, 0) + 1
            return self._downloads[sha3]

    def downloads(self, sha3: str) -> int:
        """Pulls of an image so far."""
        with self._lock:
            return self._downloads.get(sha3, 0)

    def _rescan(self) -> None:
        files = sorted(self.folder.glob("*.gvmi")) if self.folder.is_dir() else []
        stats = [(f, f.stat()) for f in files if f.is_file()]
        key = tuple(x for f, st in stats for x in (hash(f.name), st.st_size, st.st_mtime_ns))
        if key == self._seen:
            return
        images: dict[str, Image] = {}
        for f, st in stats:
            cache_key = (f.name, st.st_size, st.st_mtime_ns)
            sha3 = self._hashes.get(cache_key)
            if sha3 is None:
                sha3 = self._hashes[cache_key] = _sha3_224(f)
            images[sha3] = Image(sha3, _tag_of(f), f, st.st_size)
        self._images, self._seen = images, key


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _info(image: Image, origin: str, downloads: int) -> dict[str, Any]:
    return {
        "sha3": image.sha3, "tag": image.tag, "size": image.size_bytes, "downloads": downloads,
        "http": f"{origin}/v1/image/download?hash={image.sha3}", "https": None,
    }  # fmt: skip


def make_app(folder: ImageFolder) -> web.Application:
    """The repository's aiohttp application."""

    def lookup(request: web.Request) -> Image | web.Response:
        sha3, tag = request.query.get("hash"), request.query.get("tag")
        if (sha3 is None) == (tag is None):
            return _error(400, "give one of hash=<sha3-224 hex> or tag=<name[:version]>")
        if sha3 is not None:
            sha3 = sha3.lower()
            if not _HASH_RE.fullmatch(sha3):
                return _error(400, f"hash {sha3!r} is not a sha3-224 digest (56 hex digits)")
            image = folder.find(sha3=sha3)
        else:
            assert tag is not None
            if not _TAG_RE.fullmatch(tag):
                return _error(400, f"tag {tag!r} is not name[:version]")
            image = folder.find(tag=tag)
        if image is None:
            return _error(404, f"image {sha3 or tag} not found in this repository")
        return image

    async def info(request: web.Request) -> web.Response:
        found = lookup(request)
        if isinstance(found, web.Response):
            return found
        count = request.query.get("count", "false").lower() == "true"
        downloads = folder.count(found.sha3) if count else folder.downloads(found.sha3)
        return web.json_response(_info(found, str(request.url.origin()), downloads))

    async def download(request: web.Request) -> web.StreamResponse:
        found = lookup(request)
        if isinstance(found, web.Response):
            return found
        return web.FileResponse(found.path, headers={"Content-Type": "application/octet-stream"})

    async def listing(request: web.Request) -> web.Response:
        origin = str(request.url.origin())
        return web.json_response([_info(i, origin, folder.downloads(i.sha3)) for i in folder.images()])

    app = web.Application()
    app.router.add_get("/v1/image/info", info)
    app.router.add_get("/v1/image/download", download)
    app.router.add_get("/v1/images", listing)
    return app


def serve(folder: Path, host: str, port: int) -> None:
    """Serve a folder's images until interrupted."""
    web.run_app(make_app(ImageFolder(folder)), host=host, port=port, print=None, access_log=None)
