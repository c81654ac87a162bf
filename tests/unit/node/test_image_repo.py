"""The image repository answers /v1/image/info like Golem's public one, from a folder of GVMI files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from node.image_repo import ImageFolder, make_app


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The repository on a free port, serving tmp_path/images: (base url, folder)."""
    folder = tmp_path / "images"
    folder.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(ImageFolder(folder)))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", folder
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers.get("Content-Type", "").startswith("application/json") else body
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_an_image_resolves_by_hash_and_by_tag_and_its_file_downloads(repo: tuple[str, Path]) -> None:
    base, folder = repo
    data = b"squashfs..." * 1000
    (folder / "busybox.gvmi").write_bytes(data)
    (folder / "app:1.2.gvmi").write_bytes(b"other")
    sha3 = hashlib.sha3_224(data).hexdigest()
    status, info = _get(f"{base}/v1/image/info?hash={sha3}&count=true")
    assert status == 200
    assert (info["sha3"], info["tag"], info["size"], info["downloads"]) == (sha3, "busybox:latest", len(data), 1)
    assert _get(f"{base}/v1/image/info?hash={sha3}&count=true")[1]["downloads"] == 2
    assert _get(f"{base}/v1/image/info?hash={sha3}")[1]["downloads"] == 2  # without count: not counted
    status, body = _get(info["http"])
    assert status == 200 and body == data  # the link the requestor puts in its demand works
    assert _get(f"{base}/v1/image/info?tag=busybox")[1]["sha3"] == sha3
    assert _get(f"{base}/v1/image/info?tag=app:1.2")[1]["sha3"] == hashlib.sha3_224(b"other").hexdigest()
    assert {i["tag"] for i in _get(f"{base}/v1/images")[1]} == {"busybox:latest", "app:1.2"}


def test_new_files_are_seen_without_a_restart(repo: tuple[str, Path]) -> None:
    base, folder = repo
    assert _get(f"{base}/v1/images")[1] == []
    (folder / "late.gvmi").write_bytes(b"late")
    assert _get(f"{base}/v1/image/info?tag=late:latest")[0] == 200


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("hash=" + "0" * 56, 404, "not found"),
        ("hash=xyz", 400, "not a sha3-224 digest"),
        ("tag=nope", 404, "not found"),
        ("tag=bad%20tag%21", 400, "not name[:version]"),
        ("", 400, "give one of"),
        ("hash=" + "0" * 56 + "&tag=a", 400, "give one of"),
    ],
)
def test_bad_or_unknown_queries_get_a_clear_error(repo: tuple[str, Path], query: str, status: int, words: str) -> None:
    base, _ = repo
    got, body = _get(f"{base}/v1/image/info?{query}")
    assert got == status and words in body["message"]
