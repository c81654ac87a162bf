"""Tests of the keystore: encrypted and plain key files, aliases, the default identity, unlocking."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from node.keystore import KeyStore, parse_private_key, read_password, read_password_file
from node.settings import load_settings
from node.storage import db_path, open_database
from protocol.errors import IdentityError
from protocol.identity import Identity

__all__: list[str] = []

SMALL_N = 2**10


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    conn = open_database(db_path(tmp_path))
    yield KeyStore(tmp_path, conn, scrypt_n=SMALL_N)
    conn.close()


def test_encrypted_key_round_trips_with_the_right_password(store: KeyStore, tmp_path: Path) -> None:
    info = store.create(alias="main", password="correct horse")
    assert info.encrypted and info.alias == "main" and info.is_default
    keyfile = json.loads((tmp_path / "keys" / f"{info.address}.json").read_text())
    assert keyfile["version"] == 3
    assert keyfile["crypto"]["kdf"] == "scrypt"
    assert keyfile["crypto"]["kdfparams"]["n"] == SMALL_N
    identity = store.unlock(info, "correct horse")
    assert identity.node_id == info.address


def test_wrong_or_missing_password_is_an_identity_error(store: KeyStore) -> None:
    info = store.create(alias=None, password="right")
    with pytest.raises(IdentityError, match=f"wrong password for identity {info.address}"):
        store.unlock(info, "wrong")
    with pytest.raises(IdentityError, match="encrypted and needs its password"):
        store.unlock(info, None)


def test_unencrypted_key_is_a_private_hex_file(store: KeyStore, tmp_path: Path) -> None:
    info = store.create(alias="test", password=None)
    assert not info.encrypted
    path = tmp_path / "keys" / f"{info.address}.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert len(path.read_text().strip()) == 64
    assert store.unlock(info, None).node_id == info.address
    assert store.unlock(info, "ignored for plain keys").node_id == info.address


def test_encrypted_key_file_is_owner_only(store: KeyStore, tmp_path: Path) -> None:
    info = store.create(alias=None, password="pw")
    assert stat.S_IMODE(os.stat(tmp_path / "keys" / f"{info.address}.json").st_mode) == 0o600


def test_first_identity_is_default_until_changed(store: KeyStore) -> None:
    first = store.create(alias="one", password=None)
    second = store.create(alias="two", password=None)
    assert store.get(None).address == first.address
    assert not second.is_default
    assert store.set_default("two").is_default
    assert store.get(None).address == second.address
    assert [i.is_default for i in store.list()] == [False, True]


def test_get_by_alias_or_address_in_any_case(store: KeyStore) -> None:
    info = store.create(alias="work", password=None)
    assert store.get("work") == info
    assert store.get(info.address.lower()) == info
    assert store.get("0x" + info.address[2:].upper()) == info
    with pytest.raises(IdentityError, match="no identity with alias or address 'play'"):
        store.get("play")


def test_no_identity_yet(store: KeyStore) -> None:
    assert store.list() == []
    with pytest.raises(IdentityError, match="loam id create"):
        store.get(None)


def test_duplicate_alias_and_address_are_refused(store: KeyStore, tmp_path: Path) -> None:
    identity = Identity.generate()
    store.import_key(identity.private_key, alias="dup", password=None)
    with pytest.raises(IdentityError, match="alias 'dup' is already used"):
        store.create(alias="dup", password=None)
    with pytest.raises(IdentityError, match=f"identity {identity.node_id} already exists"):
        store.import_key(identity.private_key, alias="other", password=None)
    assert len(store.list()) == 1
    assert len(list((tmp_path / "keys").iterdir())) == 1


@pytest.mark.parametrize("alias", ["has space", "x" * 65, "0x" + "ab" * 20])
def test_malformed_aliases_are_refused(store: KeyStore, alias: str) -> None:
    with pytest.raises(IdentityError, match="alias"):
        store.create(alias=alias, password=None)


def test_imported_key_keeps_its_address(store: KeyStore) -> None:
    identity = Identity(bytes(range(1, 33)))
    info = store.import_key(identity.private_key, alias=None, password="pw")
    assert info.address == identity.node_id
    assert store.unlock(info, "pw").private_key == identity.private_key


def test_key_file_of_another_address_is_refused(store: KeyStore, tmp_path: Path) -> None:
    info = store.create(alias=None, password=None)
    other = Identity.generate()
    (tmp_path / "keys" / f"{info.address}.key").write_text(other.private_key.hex())
    with pytest.raises(IdentityError, match=f"holds the key of {other.node_id}"):
        store.unlock(info, None)


def test_missing_or_damaged_key_file(store: KeyStore, tmp_path: Path) -> None:
    plain = store.create(alias="plain", password=None)
    enc = store.create(alias="enc", password="pw")
    (tmp_path / "keys" / f"{plain.address}.key").unlink()
    with pytest.raises(IdentityError, match="missing"):
        store.unlock(plain, None)
    (tmp_path / "keys" / f"{enc.address}.json").write_text("{not json")
    with pytest.raises(IdentityError, match="not valid JSON"):
        store.unlock(enc, "pw")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("ab" * 32, True),
        ("0x" + "ab" * 32 + "\n", True),
        ("  0X" + "AB" * 32, True),
        ("ab" * 31, False),
        ("zz" * 32, False),
        ("", False),
    ],
)
def test_parse_private_key(text: str, ok: bool) -> None:
    if ok:
        assert parse_private_key(text) == bytes([0xAB] * 32)
    else:
        with pytest.raises(IdentityError, match="64 hex digits"):
            parse_private_key(text)


def test_read_password_prefers_env_then_file(tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text("from-file\n")
    settings = load_settings(tmp_path, {"identity.password_file": "pw.txt"}, environ={})
    assert read_password(settings, {"LOAM_PASSWORD": "from-env"}) == "from-env"
    assert read_password(settings, {}) == "from-file"
    assert read_password(load_settings(tmp_path, environ={}), {}) is None


def test_read_password_file_strips_one_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("secret \n\n")
    assert read_password_file(path) == "secret \n"
    with pytest.raises(IdentityError, match="cannot read password file"):
        read_password_file(tmp_path / "missing")
