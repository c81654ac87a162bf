"""Tests of the node database: pragmas, migrations by user_version, and the peer store."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from node import storage
from node.storage import MIGRATIONS, Migration, PeerStore, db_path, ensure_data_dir, open_database, schema_version
from protocol.errors import StorageError

__all__: list[str] = []


def test_open_database_sets_pragmas_and_creates_tables(tmp_path: Path) -> None:
    conn = open_database(db_path(tmp_path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"identities", "peers"} <= tables
        assert schema_version(conn) == len(MIGRATIONS)
    finally:
        conn.close()
    assert db_path(tmp_path) == tmp_path / "loam.db"


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    open_database(db_path(tmp_path)).close()
    conn = open_database(db_path(tmp_path))
    assert schema_version(conn) == len(MIGRATIONS)
    conn.close()


def test_appended_migration_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_database(db_path(tmp_path)).close()
    extra = Migration(name="widgets", statements=("CREATE TABLE widgets (id INTEGER PRIMARY KEY)",))
    monkeypatch.setattr(storage, "MIGRATIONS", [*MIGRATIONS, extra])
    conn = open_database(db_path(tmp_path))
    assert schema_version(conn) == len(MIGRATIONS) + 1
    conn.execute("INSERT INTO widgets (id) VALUES (1)")
    conn.close()
    open_database(db_path(tmp_path)).close()  # would fail with "table widgets already exists"


def test_failed_migration_rolls_back_and_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = Migration(name="broken", statements=("CREATE TABLE t (a)", "THIS IS NOT SQL"))
    monkeypatch.setattr(storage, "MIGRATIONS", [*MIGRATIONS, bad])
    with pytest.raises(StorageError, match="broken"):
        open_database(db_path(tmp_path))
    monkeypatch.setattr(storage, "MIGRATIONS", list(MIGRATIONS))
    conn = open_database(db_path(tmp_path))
    assert schema_version(conn) == len(MIGRATIONS)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone() is None
    conn.close()


def test_database_from_newer_loam_is_refused(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    raw.close()
    with pytest.raises(StorageError, match="newer Loam"):
        open_database(path)


def test_garbage_file_is_a_storage_error(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    path.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(StorageError, match=str(path)):
        open_database(path)


def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_database(tmp_path / "nope" / "loam.db")


def test_ensure_data_dir_creates_owner_only_dir(tmp_path: Path) -> None:
    data_dir = ensure_data_dir(tmp_path / "a" / "b")
    assert data_dir.is_dir()
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    assert ensure_data_dir(data_dir) == data_dir
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        ensure_data_dir(tmp_path / "file")


@pytest.fixture
def peers(tmp_path: Path) -> PeerStore:
    return PeerStore(open_database(db_path(tmp_path)))


def test_peer_store_returns_most_recent_first(peers: PeerStore) -> None:
    peers.save("0xA", b"rec-a", last_seen_ms=1000)
    peers.save("0xB", b"rec-b", last_seen_ms=3000)
    peers.save("0xC", b"rec-c", last_seen_ms=2000)
    assert peers.load_all(limit=10) == [("0xB", b"rec-b"), ("0xC", b"rec-c"), ("0xA", b"rec-a")]
    assert peers.load_all(limit=2) == [("0xB", b"rec-b"), ("0xC", b"rec-c")]


def test_peer_store_save_replaces_record_and_clears_failures(peers: PeerStore) -> None:
    peers.save("0xA", b"old", last_seen_ms=1000)
    assert peers.record_failure("0xA") == 1
    assert peers.record_failure("0xA") == 2
    assert peers.failures("0xA") == 2
    peers.save("0xA", b"new", last_seen_ms=2000)
    assert peers.failures("0xA") == 0
    assert peers.load_all(limit=10) == [("0xA", b"new")]


def test_peer_store_forget_and_unknown_ids(peers: PeerStore) -> None:
    peers.save("0xA", b"rec", last_seen_ms=1)
    peers.forget("0xA")
    peers.forget("0xUnknown")
    assert peers.load_all(limit=10) == []
    assert peers.record_failure("0xUnknown") == 0
