"""GftpActors talking through an in-process switch (no sockets): publish, serve, fetch, resume, upload.

The switch stands in for the NetActor: it delivers each message as `Received(sender, msg)`
to the recipient's actor and can drop messages, to show that lost chunks are asked for again.
"""

from __future__ import annotations

import hashlib
import os
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import pykka
import pytest

import actors.gftp.actor as gftp_actor
from actors.gftp.actor import GftpActor, fetch_blocking, publish_blocking, upload_blocking
from actors.gftp.errors import (
    BadUrlError,
    FileTooLargeError,
    SourceUnavailableError,
    TransferError,
    TransferRefusedError,
    TransferTimeoutError,
    UnknownFileError,
)
from actors.net.actor import Received
from protocol.codec import Message
from protocol.errors import ProtocolError
from protocol.gftp import GftpChunk, GftpUploadAck, parse_gftp_url
from protocol.identity import Identity

CHUNK = 4096
SETTINGS = types.SimpleNamespace(actors=types.SimpleNamespace(ask_timeout_s=5.0))
ALICE, BOB, CAROL = (Identity(bytes([i]) * 32) for i in (1, 2, 3))
WAIT_S = 10.0


def _done(value: Any) -> pykka.Future:
    future = pykka.ThreadingFuture()
    future.set(value)
    return future


class Switch:
    """Delivers messages between in-process actors; `drop(sender, recipient, msg)` may lose some."""

    def __init__(self) -> None:
        self.refs: dict[str, pykka.ActorRef] = {}
        self.drop: Callable[[str, str, Message], bool] = lambda sender, recipient, msg: False
        self.delivered: list[tuple[str, str, Message]] = []

    def net_for(self, node_id: str) -> Any:
        switch = self

        class Net:
            def subscribe(self, prefix: str, ref: pykka.ActorRef) -> pykka.Future:
                switch.refs[node_id] = ref
                return _done(None)

            def send(self, recipient: str, msg: Message) -> pykka.Future:
                if not switch.drop(node_id, recipient, msg):
                    switch.delivered.append((node_id, recipient, msg))
                    ref = switch.refs.get(recipient)
                    if ref is not None:
                        ref.tell(Received(node_id, msg))
                return _done("link")

        return Net()


@pytest.fixture
def switch() -> Switch:
    return Switch()


@pytest.fixture
def nodes(switch: Switch) -> Iterator[dict[str, Any]]:
    """Three gftp actors (alice, bob, carol) on one switch; yields name -> proxy."""
    refs = {
        name: GftpActor.start(ident, SETTINGS, switch.net_for(ident.node_id), chunk_bytes=CHUNK)
        for name, ident in (("alice", ALICE), ("bob", BOB), ("carol", CAROL))
    }
    yield {name: ref.proxy() for name, ref in refs.items()}
    for ref in refs.values():
        ref.stop(timeout=WAIT_S)


def make_file(path: Path, size: int, seed: int = 7) -> bytes:
    data = (hashlib.sha3_256(bytes([seed])).digest() * (size // 32 + 1))[:size]
    data = bytes((b + i) % 256 for i, b in enumerate(data))
    path.write_bytes(data)
    return data


def sha3(data: bytes) -> str:
    return hashlib.sha3_256(data).hexdigest()


def stats(node: Any) -> dict[str, int]:
    return node.stats().get(timeout=WAIT_S)


# ---- publish and fetch ------------------------------------------------------------------------


def test_published_file_is_fetched_and_hash_verified(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", 20 * CHUNK + 123)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    assert published.hash_hex == sha3(data)
    assert published.url == f"gftp://{ALICE.node_id}/{sha3(data)}"
    assert published.size == len(data)
    fetched = fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst.bin"), len(data), WAIT_S)
    assert (tmp_path / "dst.bin").read_bytes() == data
    assert not (tmp_path / "dst.bin.part").exists()
    assert (fetched.size, fetched.hash_hex) == (len(data), sha3(data))
    assert stats(nodes["alice"])["bytes_served"] == len(data)


def test_empty_file_is_published_and_fetched(nodes: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    published = publish_blocking(nodes["alice"], str(tmp_path / "empty"))
    fetched = fetch_blocking(nodes["bob"], published.url, str(tmp_path / "got"), 0, WAIT_S)
    assert fetched.size == 0 and (tmp_path / "got").read_bytes() == b""


def test_file_published_for_one_peer_is_refused_to_another(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", 3 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"), allowed_peers=(BOB.node_id.lower(),))
    with pytest.raises(TransferRefusedError, match="not published for node"):
        fetch_blocking(nodes["carol"], published.url, str(tmp_path / "carol.bin"), len(data), WAIT_S)
    assert not (tmp_path / "carol.bin.part").exists()
    fetch_blocking(nodes["bob"], published.url, str(tmp_path / "bob.bin"), len(data), WAIT_S)
    assert (tmp_path / "bob.bin").read_bytes() == data


def test_unknown_hash_is_an_unknown_file_error(nodes: dict[str, Any], tmp_path: Path) -> None:
    url = f"gftp://{ALICE.node_id}/{'ab' * 32}"
    with pytest.raises(UnknownFileError, match="publishes no file"):
        fetch_blocking(nodes["bob"], url, str(tmp_path / "x"), 100, WAIT_S)


def test_file_over_max_bytes_fails_and_leaves_no_part(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", 5 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    with pytest.raises(FileTooLargeError, match=f"{len(data)} bytes, over the limit of {len(data) - 1}"):
        fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), len(data) - 1, WAIT_S)
    assert not (tmp_path / "dst").exists() and not (tmp_path / "dst.part").exists()
    assert stats(nodes["alice"])["bytes_served"] <= CHUNK  # only the probe


def test_closed_file_is_no_longer_served(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    assert nodes["alice"].close(published.url).get(timeout=WAIT_S) is True
    assert nodes["alice"].close(published.url).get(timeout=WAIT_S) is False
    with pytest.raises(UnknownFileError):
        fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), len(data), WAIT_S)


def test_file_published_twice_is_served_until_closed_twice(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", CHUNK)
    first = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    second = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    assert first.url == second.url
    assert nodes["alice"].close(first.hash_hex).get(timeout=WAIT_S)
    fetch_blocking(nodes["bob"], first.url, str(tmp_path / "dst"), len(data), WAIT_S)
    assert nodes["alice"].close(first.hash_hex).get(timeout=WAIT_S)
    assert nodes["alice"].published().get(timeout=WAIT_S) == []


def test_file_changed_after_publishing_is_not_served(nodes: dict[str, Any], tmp_path: Path) -> None:
    make_file(tmp_path / "src.bin", 2 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    make_file(tmp_path / "src.bin", 2 * CHUNK + 1, seed=9)
    with pytest.raises(SourceUnavailableError, match="changed"):
        fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), 10 * CHUNK, WAIT_S)


def test_fetch_resumes_from_the_part_file(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", 16 * CHUNK + 5)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    half = 8 * CHUNK + 100  # not on a chunk boundary
    (tmp_path / "dst.part").write_bytes(data[:half])
    fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), len(data), WAIT_S)
    assert (tmp_path / "dst").read_bytes() == data
    assert stats(nodes["alice"])["bytes_served"] == len(data) - half


def test_part_file_of_another_file_is_replaced(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", 6 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    (tmp_path / "dst.part").write_bytes(b"\xee" * (2 * CHUNK))
    fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), len(data), WAIT_S)
    assert (tmp_path / "dst").read_bytes() == data


def test_part_file_longer_than_the_file_is_replaced(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", 2 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    (tmp_path / "dst.part").write_bytes(data + b"tail")
    fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), 10 * CHUNK, WAIT_S)
    assert (tmp_path / "dst").read_bytes() == data


def test_lost_chunks_are_requested_again(
    nodes: dict[str, Any], switch: Switch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gftp_actor, "RETRY_AFTER_MS", 100)
    data = make_file(tmp_path / "src.bin", 12 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    dropped: set[int] = set()

    def lose_some(sender: str, recipient: str, msg: Message) -> bool:
        if isinstance(msg, GftpChunk) and (msg.offset // CHUNK) % 3 == 1 and msg.offset not in dropped:
            dropped.add(msg.offset)
            return True
        return False

    switch.drop = lose_some
    fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), len(data), WAIT_S)
    assert (tmp_path / "dst").read_bytes() == data
    assert dropped


def test_silent_node_times_out_and_keeps_the_part(
    nodes: dict[str, Any], switch: Switch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gftp_actor, "RETRY_AFTER_MS", 100)
    data = make_file(tmp_path / "src.bin", 8 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"))
    served = 0

    def go_silent_after_two(sender: str, recipient: str, msg: Message) -> bool:
        nonlocal served
        if isinstance(msg, GftpChunk):
            served += 1
            return served > 2
        return False

    switch.drop = go_silent_after_two
    with pytest.raises(TransferTimeoutError, match="did not finish within 0.5 s"):
        fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), len(data), 0.5)
    assert (tmp_path / "dst.part").read_bytes() == data[: 2 * CHUNK]
    switch.drop = lambda *args: False
    fetch_blocking(nodes["bob"], published.url, str(tmp_path / "dst"), len(data), WAIT_S)
    assert (tmp_path / "dst").read_bytes() == data


def test_fetch_from_the_own_node_works(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "src.bin", 3 * CHUNK)
    published = publish_blocking(nodes["alice"], str(tmp_path / "src.bin"), allowed_peers=())
    fetch_blocking(nodes["alice"], published.url, str(tmp_path / "copy"), len(data), WAIT_S)
    assert (tmp_path / "copy").read_bytes() == data


# ---- bad input ----------------------------------------------------------------------------------


def test_relative_paths_are_refused(nodes: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="not an absolute path"):
        nodes["alice"].publish("src.bin").get(timeout=WAIT_S)
    with pytest.raises(TransferError, match="not an absolute path"):
        nodes["alice"].fetch(f"gftp://{BOB.node_id}/{'ab' * 32}", "dst", 10, 1.0).get(timeout=WAIT_S)
    with pytest.raises(TransferError, match="not an absolute path"):
        nodes["alice"].open_upload("dst").get(timeout=WAIT_S)


def test_missing_file_and_bad_url_are_refused(nodes: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="No such file"):
        nodes["alice"].publish(str(tmp_path / "missing")).get(timeout=WAIT_S)
    with pytest.raises(BadUrlError, match="not a gftp URL"):
        nodes["alice"].fetch("http://example.org/x", str(tmp_path / "x"), 10, 1.0).get(timeout=WAIT_S)
    with pytest.raises(TransferError, match="not a node id"):
        nodes["alice"].publish(str(tmp_path), allowed_peers=("bob",)).get(timeout=WAIT_S)


def test_two_fetches_into_one_destination_are_refused(nodes: dict[str, Any], switch: Switch, tmp_path: Path) -> None:
    # Bob hears nothing, so the first fetch is still running when the second comes (an answer
    # that it has no such file could otherwise end the first one before the second starts).
    switch.drop = lambda sender, recipient, msg: recipient == BOB.node_id
    url = f"gftp://{BOB.node_id}/{'ab' * 32}"
    first = nodes["carol"].fetch(url, str(tmp_path / "dst"), 10, 2.0).get(timeout=WAIT_S)
    with pytest.raises(TransferError, match="already running"):
        nodes["carol"].fetch(url, str(tmp_path / "dst"), 10, 2.0).get(timeout=WAIT_S)
    with pytest.raises(TransferTimeoutError):
        first.wait(WAIT_S)


def test_url_node_id_may_be_lowercase() -> None:
    node_id, file_id = parse_gftp_url(f"gftp://{ALICE.node_id.lower()}/{'AB' * 32}")
    assert (node_id, file_id) == (ALICE.node_id, "ab" * 32)
    with pytest.raises(ProtocolError):
        parse_gftp_url(f"gftp://{ALICE.node_id}/{'ab' * 31}")


# ---- upload slots -------------------------------------------------------------------------------


def test_file_is_uploaded_into_a_slot(nodes: dict[str, Any], tmp_path: Path) -> None:
    data = make_file(tmp_path / "out.bin", 10 * CHUNK + 17)
    url = nodes["alice"].open_upload(str(tmp_path / "received.bin"), (BOB.node_id,), len(data)).get(timeout=WAIT_S)
    assert parse_gftp_url(url)[0] == ALICE.node_id
    uploaded = upload_blocking(nodes["bob"], str(tmp_path / "out.bin"), url, WAIT_S)
    assert (uploaded.size, uploaded.hash_hex) == (len(data), sha3(data))
    assert (tmp_path / "received.bin").read_bytes() == data
    assert not (tmp_path / "received.bin.part").exists()
    slots = nodes["alice"].upload_slots().get(timeout=WAIT_S)
    assert [(s["state"], s["received_bytes"]) for s in slots] == [("done", len(data))]


def test_slot_takes_one_file_only(nodes: dict[str, Any], tmp_path: Path) -> None:
    make_file(tmp_path / "out.bin", 100)
    url = nodes["alice"].open_upload(str(tmp_path / "received.bin")).get(timeout=WAIT_S)
    upload_blocking(nodes["bob"], str(tmp_path / "out.bin"), url, WAIT_S)
    with pytest.raises(TransferRefusedError, match="already received"):
        upload_blocking(nodes["carol"], str(tmp_path / "out.bin"), url, WAIT_S)


def test_empty_file_is_uploaded(nodes: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    url = nodes["alice"].open_upload(str(tmp_path / "received")).get(timeout=WAIT_S)
    upload_blocking(nodes["bob"], str(tmp_path / "empty"), url, WAIT_S)
    assert (tmp_path / "received").read_bytes() == b""


def test_upload_from_another_peer_is_refused(nodes: dict[str, Any], tmp_path: Path) -> None:
    make_file(tmp_path / "out.bin", 100)
    url = nodes["alice"].open_upload(str(tmp_path / "received.bin"), (BOB.node_id,)).get(timeout=WAIT_S)
    with pytest.raises(TransferRefusedError, match="not open for node"):
        upload_blocking(nodes["carol"], str(tmp_path / "out.bin"), url, WAIT_S)
    assert not (tmp_path / "received.bin").exists()


def test_upload_over_the_slot_limit_is_refused(nodes: dict[str, Any], tmp_path: Path) -> None:
    make_file(tmp_path / "out.bin", 3 * CHUNK)
    url = nodes["alice"].open_upload(str(tmp_path / "received.bin"), None, 3 * CHUNK - 1).get(timeout=WAIT_S)
    with pytest.raises(FileTooLargeError, match="over the slot's limit"):
        upload_blocking(nodes["bob"], str(tmp_path / "out.bin"), url, WAIT_S)
    assert not (tmp_path / "received.bin").exists()


def test_closed_slot_refuses_uploads(nodes: dict[str, Any], tmp_path: Path) -> None:
    make_file(tmp_path / "out.bin", 100)
    url = nodes["alice"].open_upload(str(tmp_path / "received.bin")).get(timeout=WAIT_S)
    assert nodes["alice"].close(url).get(timeout=WAIT_S)
    with pytest.raises(UnknownFileError, match="no upload slot"):
        upload_blocking(nodes["bob"], str(tmp_path / "out.bin"), url, WAIT_S)


def test_lost_upload_acks_are_made_up_for(
    nodes: dict[str, Any], switch: Switch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gftp_actor, "RETRY_AFTER_MS", 100)
    data = make_file(tmp_path / "out.bin", 9 * CHUNK)
    url = nodes["alice"].open_upload(str(tmp_path / "received.bin")).get(timeout=WAIT_S)
    lost: set[int] = set()

    def lose_acks(sender: str, recipient: str, msg: Message) -> bool:
        if isinstance(msg, GftpUploadAck) and msg.offset % (2 * CHUNK) == 0 and msg.offset not in lost:
            lost.add(msg.offset)
            return True
        return False

    switch.drop = lose_acks
    upload_blocking(nodes["bob"], str(tmp_path / "out.bin"), url, WAIT_S)
    assert (tmp_path / "received.bin").read_bytes() == data
    assert lost
    assert stats(nodes["alice"])["bytes_received"] == len(data)


def test_stopping_fails_waiting_transfers(switch: Switch, tmp_path: Path) -> None:
    ref = GftpActor.start(BOB, SETTINGS, switch.net_for(BOB.node_id), chunk_bytes=CHUNK)
    pending = ref.proxy().fetch(f"gftp://{ALICE.node_id}/{'ab' * 32}", str(tmp_path / "x"), 10, 30.0).get(
        timeout=WAIT_S
    )
    ref.stop(timeout=WAIT_S)
    with pytest.raises(TransferError, match="stopping"):
        pending.wait(WAIT_S)
    assert not os.path.exists(tmp_path / "x.part")
