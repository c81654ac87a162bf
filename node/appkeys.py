"""App-keys: the bearer tokens requestor agents present to the node's REST API, kept in SQLite."""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from protocol.errors import AppKeyError

__all__ = ["AppKey", "AppKeyStore"]

_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True, slots=True)
class AppKey:
    """A named key, and the identity requests made with it act as."""

    name: str
    key: str
    identity: str
    created_ms: int


class AppKeyStore:
    """Creates, lists, drops and checks app-keys."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def create(self, name: str, identity: str) -> AppKey:
        """A new random key under a new name.

        Raises:
            AppKeyError: the name is malformed or taken.
        """
        if not _NAME.match(name):
            raise AppKeyError(f"app-key name {name!r} must be 1-64 letters, digits, '.', '_' or '-'")
        key = AppKey(name, secrets.token_hex(16), identity, int(time.time() * 1000))
        try:
            with self._conn:
                self._conn.execute(
                    "INSERT INTO app_keys (name, key, identity, created_ms) VALUES (?, ?, ?, ?)",
                    (key.name, key.key, key.identity, key.created_ms),
                )
        except sqlite3.IntegrityError:
            raise AppKeyError(f"an app-key named {name!r} exists already") from None
        return key

    def list(self) -> list[AppKey]:
        """Every app-key, oldest first."""
        rows = self._conn.execute("SELECT name, key, identity, created_ms FROM app_keys ORDER BY created_ms, name").fetchall()
        return [AppKey(*row) for row in rows]

    def drop(self, name: str) -> None:
        """Delete an app-key.

        Raises:
            AppKeyError: no key of that name.
        """
        with self._conn:
            deleted = self._conn.execute("DELETE FROM app_keys WHERE name = ?", (name,)).rowcount
        if not deleted:
            raise AppKeyError(f"no app-key named {name!r}")

    def find(self, key: str) -> AppKey | None:
        """The app-key with this secret, if any (what the REST layer checks a bearer token with)."""
        row = self._conn.execute("SELECT name, key, identity, created_ms FROM app_keys WHERE key = ?", (key,)).fetchone()
        return AppKey(*row) if row else None
