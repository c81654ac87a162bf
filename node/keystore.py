"""Node identities on disk: Ethereum keystore v3 files (or plain hex keys for testnets) plus an index table."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping


from protocol.errors import IdentityError
from protocol.identity import Identity

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["IdentityInfo", "KeyStore", "read_password", "parse_private_key", "SCRYPT_N", "PASSWORD_ENV"]

# The scrypt cost geth and Golem use. Tests lower it (monkeypatch this, or pass scrypt_n)
# because one unlock at this cost takes about a second and 256 MiB.
SCRYPT_N = 262144
PASSWORD_ENV = "LOAM_PASSWORD"
KEYS_DIR_NAME = "keys"

_ALIAS_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ADDRESS_RE = re.compile(r"^0[xX][0-9a-fA-F]{40}$")


@dataclass(frozen=True, slots=True)
class IdentityInfo:
    """What the keystore knows about an identity without unlocking it."""

    address: str
    alias: str | None
    is_default: bool
    encrypted: bool
    created_ms: int


def parse_private_key(text: str) -> bytes:
    """The 32 bytes of a hex private key, with or without 0x and surrounding whitespace.

    Raises:
        IdentityError: not 64 hex digits.
    """
    hex_text = text.strip()
    if hex_text[:2].lower() == "0x":
        hex_text = hex_text[2:]
    if len(hex_text) != 64:
        raise IdentityError(
            f"a private key is 64 hex digits (32 bytes), optionally prefixed with 0x; got {len(hex_text)} characters"
        )
    try:
        return bytes.fromhex(hex_text)
    except ValueError:
        raise IdentityError("a private key is 64 hex digits (32 bytes); the text given is not hex") from None


def read_password(settings: Settings, environ: Mapping[str, str] | None = None) -> str | None:
    """The keystore password: $LOAM_PASSWORD, else the contents of identity.password_file, else None.

    A relative password_file is taken relative to the data directory; one trailing newline is dropped.

    Raises:
        IdentityError: password_file is set but cannot be read.
    """
    env = os.environ if environ is None else environ
    password = env.get(PASSWORD_ENV)
    if password:
        return password
    if not settings.identity.password_file:
        return None
    path = Path(settings.identity.password_file).expanduser()
    if not path.is_absolute():
        path = settings.data_dir / path
    return read_password_file(path)


def read_password_file(path: Path) -> str:
    """A password kept in a file, without its one trailing newline.

    Raises:
        IdentityError: the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read password file {path}: {exc}") from None
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


class KeyStore:
    """The identities of one data directory: key files in <data_dir>/keys, their index in the database.

    >>> store = KeyStore(data_dir, open_database(db_path(data_dir)))  # doctest: +SKIP
    >>> info = store.create(alias="main", password="secret")  # doctest: +SKIP
    >>> identity = store.unlock(store.get(None), "secret")  # doctest: +SKIP
    """

    def __init__(self, data_dir: Path, conn: sqlite3.Connection, scrypt_n: int | None = None) -> None:
        self._data_dir = Path(data_dir)
        self._conn = conn
        self._scrypt_n = SCRYPT_N if scrypt_n is None else scrypt_n

    @property
    def keys_dir(self) -> Path:
        """Where the key files live."""
        return self._data_dir / KEYS_DIR_NAME

    def create(self, alias: str | None = None, password: str | None = None) -> IdentityInfo:
        """Make a new random identity; password None stores the key unencrypted (testnets only).

        Raises:
            IdentityError: the alias is taken or malformed.
        """
        return self.import_key(Identity.generate().private_key, alias, password)

    def import_key(self, private_key: bytes, alias: str | None = None, password: str | None = None) -> IdentityInfo:
        """Add an existing private key; the first identity of a data directory becomes the default.

        Raises:
            IdentityError: a bad key, a malformed or taken alias, or an address already present.
        """
        identity = Identity(private_key)
        alias = self.check_alias(alias)
        address = identity.node_id
        if self._row_by_address(address) is not None:
            raise IdentityError(f"identity {address} already exists")

        encrypted = password is not None
        if encrypted:
            assert password is not None
            # eth_keyfile pulls in heavy crypto modules; only key creation and unlocking need it.
            from eth_keyfile import create_keyfile_json

            keyfile = create_keyfile_json(
                identity.private_key, password.encode("utf-8"), version=3, kdf="scrypt", iterations=self._scrypt_n
            )
            path = self._key_path(address, encrypted=True)
            self._write_private(path, json.dumps(keyfile, indent=2) + "\n")
        else:
            path = self._key_path(address, encrypted=False)
            self._write_private(path, identity.private_key.hex() + "\n")

        created_ms = time.time_ns() // 1_000_000
        try:
            with self._conn:
                has_default = self._conn.execute("SELECT 1 FROM identities WHERE is_default = 1").fetchone()
                self._conn.execute(
                    "INSERT INTO identities (address, alias, is_default, encrypted, created_ms) VALUES (?, ?, ?, ?, ?)",
                    (address, alias, 0 if has_default else 1, int(encrypted), created_ms),
                )
        except sqlite3.IntegrityError:
            # Lost a race with another process adding the same address or alias.
            path.unlink(missing_ok=True)
            raise IdentityError(f"identity {address} or alias {alias!r} already exists") from None
        return self.get(address)

    def list(self) -> list[IdentityInfo]:
        """Every identity, oldest first."""
        rows = self._conn.execute(
            "SELECT address, alias, is_default, encrypted, created_ms FROM identities ORDER BY created_ms, address"
        ).fetchall()
        return [_info(row) for row in rows]

    def get(self, name: str | None = None) -> IdentityInfo:
        """An identity by alias or address (any letter case); None means the default one.

        Raises:
            IdentityError: no such identity, or none at all.
        """
        if name is None or name == "":
            row = self._conn.execute(
                "SELECT address, alias, is_default, encrypted, created_ms FROM identities WHERE is_default = 1"
            ).fetchone()
            if row is None:
                raise IdentityError("there is no identity yet; create one with `loam id create`")
            return _info(row)
        row = self._row_by_address(name) if _ADDRESS_RE.match(name) else self._row_by_alias(name)
        if row is None:
            raise IdentityError(f"no identity with alias or address {name!r}; `loam id list` shows them")
        return _info(row)

    def unlock(self, info: IdentityInfo, password: str | None = None) -> Identity:
        """Load an identity's private key (the password is ignored for unencrypted keys).

        Raises:
            IdentityError: no password for an encrypted key, a wrong password, a missing or
                damaged key file, or a key file holding another address's key.
        """
        path = self._key_path(info.address, encrypted=info.encrypted)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise IdentityError(f"the key file of identity {info.address} is missing: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise IdentityError(f"cannot read the key file of identity {info.address}: {exc}") from None

        if info.encrypted:
            if password is None:
                raise IdentityError(
                    f"identity {info.address} is encrypted and needs its password "
                    f"(type it when asked, or use a password file or ${PASSWORD_ENV})"
                )
            try:
                keyfile = json.loads(text)
            except ValueError as exc:
                raise IdentityError(f"key file {path} is not valid JSON: {exc}") from None
            from eth_keyfile import decode_keyfile_json

            try:
                private_key = decode_keyfile_json(keyfile, password.encode("utf-8"))
            except ValueError as exc:
                if "MAC mismatch" in str(exc):
                    raise IdentityError(f"wrong password for identity {info.address}") from None
                raise IdentityError(f"key file {path} is damaged: {exc}") from None
            except (KeyError, TypeError, AttributeError) as exc:
                raise IdentityError(f"key file {path} is damaged: missing or bad field {exc}") from None
        else:
            try:
                private_key = parse_private_key(text)
            except IdentityError as exc:
                raise IdentityError(f"key file {path} is damaged: {exc}") from None

        identity = Identity(bytes(private_key))
        if identity.node_id.lower() != info.address.lower():
            raise IdentityError(
                f"key file {path} holds the key of {identity.node_id}, not of {info.address}"
            )
        return identity

    def set_default(self, name: str) -> IdentityInfo:
        """Make an identity (by alias or address) the default one.

        Raises:
            IdentityError: no such identity.
        """
        info = self.get(name)
        with self._conn:
            self._conn.execute("UPDATE identities SET is_default = 0 WHERE is_default = 1")
            self._conn.execute("UPDATE identities SET is_default = 1 WHERE address = ?", (info.address,))
        return self.get(info.address)

    def check_alias(self, alias: str | None) -> str | None:
        """The alias a new identity would get ("" means none), if it is well-formed and free.

        Raises:
            IdentityError: the alias is malformed, looks like an address, or is taken.
        """
        if alias is None or alias == "":
            return None
        if not _ALIAS_RE.match(alias):
            raise IdentityError(f"alias {alias!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if _ADDRESS_RE.match(alias):
            raise IdentityError(f"alias {alias!r} looks like an address; pick a name that does not")
        if self._row_by_alias(alias) is not None:
            raise IdentityError(f"alias {alias!r} is already used by another identity")
        return alias

    def _row_by_address(self, address: str) -> Any:
        return self._conn.execute(
            "SELECT address, alias, is_default, encrypted, created_ms FROM identities WHERE lower(address) = lower(?)",
            (address,),
        ).fetchone()

    def _row_by_alias(self, alias: str) -> Any:
        return self._conn.execute(
            "SELECT address, alias, is_default, encrypted, created_ms FROM identities WHERE alias = ?",
            (alias,),
        ).fetchone()

    def _key_path(self, address: str, *, encrypted: bool) -> Path:
        return self.keys_dir / f"{address}.{'json' if encrypted else 'key'}"

    def _write_private(self, path: Path, text: str) -> None:
        """Write a secret file readable by its owner only, atomically."""
        keys_dir = path.parent
        if not keys_dir.is_dir():
            keys_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(keys_dir, 0o700)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            # os.open's mode is only used when the file is new; a leftover .tmp keeps its old mode.
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fd = -1
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            if fd >= 0:
                os.close(fd)
        os.replace(tmp, path)


def _info(row: Any) -> IdentityInfo:
    address, alias, is_default, encrypted, created_ms = row
    return IdentityInfo(
        address=address, alias=alias, is_default=bool(is_default), encrypted=bool(encrypted), created_ms=int(created_ms)
    )
