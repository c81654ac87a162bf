"""The node's SQLite database: opening it, schema migrations by user_version, and the peer store."""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from protocol.errors import StorageError

__all__ = [
    "Migration",
    "MIGRATIONS",
    "open_database",
    "migrate",
    "schema_version",
    "db_path",
    "ensure_data_dir",
    "PeerStore",
]

DB_FILE_NAME = "loam.db"
BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: SQL statements run in order, then an optional Python step, in one transaction."""

    name: str
    statements: tuple[str, ...]
    apply: Callable[[sqlite3.Connection], None] | None = None


# Schema version N means the first N migrations have run. Append new steps at the end and
# never edit or reorder a released one: a database remembers only how many steps it has had.
MIGRATIONS: list[Migration] = [
    Migration(
        name="identities_and_peers",
        statements=(
            """
            CREATE TABLE identities (
                address TEXT PRIMARY KEY,
                alias TEXT UNIQUE,
                is_default INTEGER NOT NULL DEFAULT 0,
                encrypted INTEGER NOT NULL,
                created_ms INTEGER NOT NULL
            )
            """,
            """
            CREATE TABLE peers (
                node_id TEXT PRIMARY KEY,
                record BLOB NOT NULL,
                last_seen_ms INTEGER NOT NULL,
                failures INTEGER NOT NULL DEFAULT 0
            )
            """,
            "CREATE INDEX peers_by_last_seen ON peers (last_seen_ms DESC)",
        ),
    ),
    Migration(
        name="market_agreements",
        statements=(
            """
            CREATE TABLE agreements (
                agreement_id TEXT PRIMARY KEY,
                role TEXT NOT NULL CHECK (role IN ('requestor', 'provider')),
                state TEXT NOT NULL,
                terms BLOB NOT NULL,
                requestor_signature BLOB,
                provider_signature BLOB,
                approved_ms INTEGER,
                terminator TEXT,
                reason TEXT,
                end_signature BLOB,
                end_ms INTEGER,
                unacked TEXT NOT NULL DEFAULT '',
                updated_ms INTEGER NOT NULL
            )
            """,
            "CREATE INDEX agreements_by_state ON agreements (state)",
            """
            CREATE TABLE agreement_events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                event_ms INTEGER NOT NULL,
                agreement_id TEXT NOT NULL REFERENCES agreements (agreement_id),
                kind TEXT NOT NULL,
                terminator TEXT,
                reason TEXT
            )
            """,
        ),
    ),
    Migration(
        name="payment_driver",
        statements=(
            # Amounts and fees are decimal TEXT: they exceed SQLite's 64-bit integers.
            """
            CREATE TABLE transactions (
                tx_id TEXT PRIMARY KEY,
                platform TEXT NOT NULL,
                sender TEXT NOT NULL,
                nonce INTEGER NOT NULL,
                raw_tx BLOB NOT NULL,
                tx_hash TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL CHECK (kind IN ('batch', 'single')),
                status TEXT NOT NULL
                    CHECK (status IN ('signed', 'sent', 'mined', 'confirmed', 'failed', 'replaced')),
                max_fee_wei TEXT NOT NULL,
                priority_fee_wei TEXT NOT NULL,
                created_ms INTEGER NOT NULL,
                sent_ms INTEGER,
                block INTEGER,
                error TEXT
            )
            """,
            "CREATE INDEX transactions_by_nonce ON transactions (sender, nonce)",
            "CREATE INDEX transactions_by_status ON transactions (status)",
            """
            CREATE TABLE payments (
                payment_id TEXT PRIMARY KEY,
                platform TEXT NOT NULL,
                payee TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'batched', 'confirmed', 'failed')),
                tx_id TEXT REFERENCES transactions (tx_id),
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL
            )
            """,
            "CREATE INDEX payments_by_status ON payments (platform, status, created_ms)",
            "CREATE INDEX payments_by_tx ON payments (tx_id)",
        ),
    ),
    Migration(
        name="payment_ledger",
        statements=(
            # Amounts are decimal TEXT of wei (beyond SQLite's 64-bit integers); `document` and
            # `reply` hold the signed messages, so either side can re-send them after a restart.
            """
            CREATE TABLE allocations (
                allocation_id TEXT PRIMARY KEY,
                address TEXT NOT NULL,
                platform TEXT NOT NULL,
                total_wei TEXT NOT NULL,
                spent_wei TEXT NOT NULL,
                reserved_wei TEXT NOT NULL,
                timeout_ms INTEGER,
                make_deposit INTEGER NOT NULL DEFAULT 0,
                state TEXT NOT NULL CHECK (state IN ('active', 'released', 'expired')),
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL
            )
            """,
            """
            CREATE TABLE debit_notes (
                debit_note_id TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('issued', 'received')),
                agreement_id TEXT NOT NULL,
                activity_id TEXT NOT NULL,
                peer_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                payment_due_ms INTEGER,
                status TEXT NOT NULL,
                document BLOB NOT NULL,
                accepted_wei TEXT,
                allocation_id TEXT,
                reply BLOB,
                unacked TEXT NOT NULL DEFAULT '',
                issued_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (debit_note_id, role)
            )
            """,
            "CREATE INDEX debit_notes_by_agreement ON debit_notes (agreement_id, role)",
            "CREATE INDEX debit_notes_by_status ON debit_notes (role, platform, status)",
            """
            CREATE TABLE invoices (
                invoice_id TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('issued', 'received')),
                agreement_id TEXT NOT NULL,
                activity_id TEXT NOT NULL DEFAULT '',
                peer_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                payment_due_ms INTEGER,
                status TEXT NOT NULL,
                document BLOB NOT NULL,
                accepted_wei TEXT,
                allocation_id TEXT,
                reply BLOB,
                unacked TEXT NOT NULL DEFAULT '',
                issued_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (invoice_id, role)
            )
            """,
            "CREATE INDEX invoices_by_agreement ON invoices (agreement_id, role)",
            "CREATE INDEX invoices_by_status ON invoices (role, platform, status)",
            """
            CREATE TABLE ledger_payments (
                payment_id TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('made', 'received')),
                peer_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                tx_hash TEXT NOT NULL,
                document BLOB,
                unacked TEXT NOT NULL DEFAULT '',
                created_ms INTEGER NOT NULL,
                PRIMARY KEY (payment_id, role)
            )
            """,
            """
            CREATE TABLE ledger_agreement_payments (
                payment_id TEXT NOT NULL,
                role TEXT NOT NULL,
                agreement_id TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                PRIMARY KEY (payment_id, role, agreement_id),
                FOREIGN KEY (payment_id, role) REFERENCES ledger_payments (payment_id, role)
            )
            """,
            "CREATE INDEX ledger_agreement_payments_by_agreement ON ledger_agreement_payments (agreement_id, role)",
        ),
    ),
    Migration(
        name="app_keys",
        statements=(
            """
            CREATE TABLE app_keys (
                name TEXT PRIMARY KEY,
                key TEXT NOT NULL UNIQUE,
                identity TEXT NOT NULL,
                created_ms INTEGER NOT NULL
            )
            """,
        ),
    ),
    Migration(
        name="payment_tracking",
        statements=(
            # What the ledger actor tracks beyond the documents: the payment terms of each
            # agreement, each activity's usage and debit-note timing, and the payments the
            # requestor has handed to the driver (recorded before they are handed over).
            """
            CREATE TABLE payment_agreements (
                agreement_id TEXT NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('provider', 'requestor')),
                peer_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                payee_address TEXT NOT NULL,
                payer_address TEXT NOT NULL,
                terms TEXT NOT NULL,
                allocation_id TEXT,
                auto_accept INTEGER NOT NULL DEFAULT 0,
                state TEXT NOT NULL CHECK (state IN ('open', 'ended', 'invoiced')),
                ended_ms INTEGER,
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL,
                PRIMARY KEY (agreement_id, role)
            )
            """,
            "CREATE INDEX payment_agreements_by_state ON payment_agreements (role, state)",
            """
            CREATE TABLE payment_activities (
                activity_id TEXT PRIMARY KEY,
                agreement_id TEXT NOT NULL,
                usage TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                ended INTEGER NOT NULL DEFAULT 0,
                last_note_id TEXT NOT NULL DEFAULT '',
                last_note_ms INTEGER NOT NULL DEFAULT 0,
                updated_ms INTEGER NOT NULL
            )
            """,
            "CREATE INDEX payment_activities_by_agreement ON payment_activities (agreement_id)",
            """
            CREATE TABLE scheduled_payments (
                payment_id TEXT PRIMARY KEY,
                agreement_id TEXT NOT NULL,
                payee_id TEXT NOT NULL,
                payee_address TEXT NOT NULL,
                platform TEXT NOT NULL,
                amount_wei TEXT NOT NULL,
                document_ids TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('scheduled', 'confirmed', 'failed')),
                tx_hash TEXT,
                created_ms INTEGER NOT NULL,
                updated_ms INTEGER NOT NULL
            )
            """,
            "CREATE INDEX scheduled_payments_by_agreement ON scheduled_payments (agreement_id, status)",
        ),
    ),
    Migration(
        name="payment_usage_seen",
        statements=(
            # The requestor's record of the usage providers reported for its activities, so
            # that documents arriving after a restart are still checked against it.
            """
            CREATE TABLE usage_seen (
                activity_id TEXT PRIMARY KEY,
                agreement_id TEXT NOT NULL,
                usage TEXT NOT NULL,
                usage_ms INTEGER NOT NULL,
                state TEXT NOT NULL
            )
            """,
        ),
    ),
]


def db_path(data_dir: Path) -> Path:
    """Where a data directory keeps its database."""
    return Path(data_dir) / DB_FILE_NAME


def ensure_data_dir(data_dir: Path) -> Path:
    """Create a data directory (owner-only, 0700) if it does not exist yet; returns it.

    Raises:
        StorageError: the path exists but is not a directory, or cannot be created.
    """
    data_dir = Path(data_dir).expanduser()
    if data_dir.is_dir():
        return data_dir
    if data_dir.exists():
        raise StorageError(f"data directory {data_dir} exists but is not a directory")
    try:
        data_dir.mkdir(parents=True, mode=0o700)
        # mkdir's mode is filtered by the umask; the data dir holds keys, so insist.
        os.chmod(data_dir, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot create data directory {data_dir}: {exc}") from None
    return data_dir


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at path.

    The connection uses WAL, enforces foreign keys, waits up to 5 s on a locked database and
    may be used from other threads (one at a time: give each actor its own connection).

    >>> conn = open_database(db_path(data_dir))  # doctest: +SKIP

    Raises:
        StorageError: the file cannot be opened, is not a database, or was made by a newer Loam.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise StorageError(f"cannot open database {path}: directory {path.parent} does not exist")
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"database {path} cannot use WAL journaling (got {mode})")
        migrate(conn, where=str(path))
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageError(f"database {path} is unusable: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    """The number of migrations a database has had."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, where: str = "the database") -> int:
    """Run the migrations a database has not had yet, each in its own transaction; returns the version.

    Raises:
        StorageError: the database is newer than this code, or a migration fails.
    """
    version = schema_version(conn)
    known = len(MIGRATIONS)
    if version > known:
        raise StorageError(
            f"{where} has schema version {version}, but this Loam only knows versions up to {known}: "
            "it was written by a newer Loam; upgrade Loam or use another data directory"
        )
    for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Another process may have migrated while we waited for the write lock.
            if schema_version(conn) >= number:
                conn.rollback()
                continue
            for statement in migration.statements:
                conn.execute(statement)
            if migration.apply is not None:
                migration.apply(conn)
            # PRAGMA cannot take a bound parameter; number is our own int.
            conn.execute(f"PRAGMA user_version = {int(number)}")
            conn.commit()
        except sqlite3.Error as exc:
            conn.rollback()
            raise StorageError(f"migration {number} ({migration.name}) of {where} failed: {exc}") from None
        except BaseException:
            conn.rollback()
            raise
    return schema_version(conn)


class PeerStore:
    """Peer records remembered across restarts, so that a node can rejoin without bootstrap.

    >>> peers = PeerStore(conn)  # doctest: +SKIP
    >>> peers.save("0xAb...", record, last_seen_ms=now_ms)  # doctest: +SKIP
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def save(self, node_id: str, record: bytes, last_seen_ms: int) -> None:
        """Store or refresh a peer's record; a fresh sighting clears its failure count."""
        with self._lock, self._conn:
            self._conn.execute(
                """
                INSERT INTO peers (node_id, record, last_seen_ms, failures) VALUES (?, ?, ?, 0)
                ON CONFLICT (node_id) DO UPDATE SET
                    record = excluded.record, last_seen_ms = excluded.last_seen_ms, failures = 0
                """,
                (node_id, bytes(record), int(last_seen_ms)),
            )

    def load_all(self, limit: int) -> list[tuple[str, bytes]]:
        """Up to limit (node_id, record) pairs, most recently seen first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT node_id, record FROM peers ORDER BY last_seen_ms DESC, node_id LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [(node_id, bytes(record)) for node_id, record in rows]

    def forget(self, node_id: str) -> None:
        """Drop a peer's record (unknown ids are ignored)."""
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM peers WHERE node_id = ?", (node_id,))

    def record_failure(self, node_id: str) -> int:
        """Count one more failed dial of a peer; returns its failure count (0 if it is unknown)."""
        with self._lock, self._conn:
            rows = self._conn.execute(
                "UPDATE peers SET failures = failures + 1 WHERE node_id = ? RETURNING failures",
                (node_id,),
            ).fetchall()
        return int(rows[0][0]) if rows else 0

    def failures(self, node_id: str) -> int:
        """A peer's failure count since it was last seen (0 if it is unknown)."""
        with self._lock:
            row = self._conn.execute("SELECT failures FROM peers WHERE node_id = ?", (node_id,)).fetchone()
        return int(row[0]) if row else 0
