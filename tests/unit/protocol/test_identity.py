"""Node identity: node ids are Ethereum addresses, signatures recover their signer, keys are checked."""

from __future__ import annotations

from typing import Any

import pytest
import zmq
from eth_account import Account
from eth_utils import to_checksum_address as eth_checksum
from hypothesis import given, settings
from hypothesis import strategies as st
from zmq.utils import z85

from protocol.errors import IdentityError, SignatureError
from protocol.identity import Identity, is_node_id, keccak, recover_signer, to_checksum_address
from tests.unit.protocol.samples import ALICE, BOB

# The order of the secp256k1 group: valid private keys are 1 .. N - 1.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
DIGEST = keccak(b"a message")
FUZZ = settings(database=None, max_examples=25, deadline=None)


@pytest.mark.parametrize(
    "key",
    [
        bytes([1]) * 32,
        bytes([2]) * 32,
        (1).to_bytes(32, "big"),
        (SECP256K1_N - 1).to_bytes(32, "big"),
        bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"),
    ],
    ids=["ones", "twos", "one", "n_minus_1", "docs_key"],
)
def test_node_id_is_the_ethereum_address_of_the_key(key: bytes) -> None:
    assert Identity(key).node_id == Account.from_key(key).address


@FUZZ
@given(st.integers(1, SECP256K1_N - 1))
def test_node_id_matches_eth_account_for_any_key(k: int) -> None:
    key = k.to_bytes(32, "big")
    assert Identity(key).node_id == Account.from_key(key).address


@FUZZ
@given(st.binary(min_size=20, max_size=20))
def test_checksum_address_matches_eth_utils(raw: bytes) -> None:
    assert to_checksum_address(raw) == eth_checksum(raw)


def test_checksum_address_of_known_vector() -> None:
    # From EIP-55.
    raw = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
    assert to_checksum_address(raw) == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


# ---- is_node_id -------------------------------------------------------------------------------


def test_is_node_id_accepts_checksummed_addresses() -> None:
    assert is_node_id(ALICE.node_id)
    assert is_node_id(BOB.node_id)
    assert is_node_id("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    assert is_node_id("0x" + "0" * 40)  # no letters, so its lowercase form is its checksummed form


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(ALICE.node_id.lower(), id="lowercase"),
        pytest.param("0x" + ALICE.node_id[2:].upper(), id="uppercase"),
        pytest.param(ALICE.node_id[:-1], id="short"),
        pytest.param(ALICE.node_id + "0", id="long"),
        pytest.param(ALICE.node_id[2:], id="no_prefix"),
        pytest.param("0X" + ALICE.node_id[2:], id="capital_prefix"),
        pytest.param("0x" + "g" * 40, id="not_hex"),
        pytest.param("0x" + " " * 40, id="spaces"),
        pytest.param("0x" + "ab " * 13 + "a", id="hex_with_spaces"),
        pytest.param("0x" + "é" * 40, id="non_ascii"),
        pytest.param("", id="empty"),
        pytest.param("0x", id="prefix_only"),
        pytest.param(ALICE.node_id.encode(), id="bytes"),
        pytest.param(bytes.fromhex(ALICE.node_id[2:]), id="raw_bytes"),
        pytest.param(None, id="none"),
        pytest.param(0, id="int"),
        pytest.param([ALICE.node_id], id="list"),
    ],
)
def test_is_node_id_rejects_anything_else(value: Any) -> None:
    assert not is_node_id(value)


@FUZZ
@given(st.text(max_size=50))
def test_is_node_id_never_raises(value: str) -> None:
    assert is_node_id(value) in (True, False)


# ---- signatures -------------------------------------------------------------------------------


def test_signature_recovers_its_signer() -> None:
    sig = ALICE.sign(DIGEST)
    assert len(sig) == 65
    assert recover_signer(DIGEST, sig) == ALICE.node_id


def test_signatures_are_deterministic() -> None:
    assert ALICE.sign(DIGEST) == ALICE.sign(DIGEST)
    assert ALICE.sign(DIGEST) != BOB.sign(DIGEST)


def test_signature_over_another_digest_recovers_someone_else() -> None:
    assert recover_signer(keccak(b"another message"), ALICE.sign(DIGEST)) != ALICE.node_id


@pytest.mark.parametrize(
    "signature",
    [
        pytest.param(b"", id="empty"),
        pytest.param(ALICE.sign(DIGEST)[:64], id="64_bytes"),
        pytest.param(ALICE.sign(DIGEST) + b"\x00", id="66_bytes"),
        pytest.param(ALICE.sign(DIGEST)[:64] + b"\x04", id="recovery_id_4"),
        pytest.param(ALICE.sign(DIGEST)[:64] + b"\xff", id="recovery_id_255"),
        pytest.param(bytes(65), id="zero_r_and_s"),
        pytest.param(b"\xff" * 64 + b"\x00", id="r_and_s_over_the_order"),
        pytest.param(bytearray(ALICE.sign(DIGEST)), id="bytearray"),
        pytest.param(ALICE.sign(DIGEST).hex(), id="hex_str"),
        pytest.param(None, id="none"),
    ],
)
def test_malformed_signature_is_a_signature_error(signature: Any) -> None:
    with pytest.raises(SignatureError):
        recover_signer(DIGEST, signature)


@pytest.mark.parametrize("digest", [b"", DIGEST[:31], DIGEST + b"\x00"], ids=["empty", "31_bytes", "33_bytes"])
def test_digest_of_the_wrong_length_is_a_signature_error(digest: bytes) -> None:
    with pytest.raises(SignatureError):
        recover_signer(digest, ALICE.sign(DIGEST))


@FUZZ
@given(st.binary(min_size=65, max_size=65))
def test_random_signatures_raise_only_signature_error_or_recover_a_stranger(sig: bytes) -> None:
    try:
        signer = recover_signer(DIGEST, sig)
    except SignatureError:
        return
    assert is_node_id(signer)
    assert signer != ALICE.node_id


# ---- CURVE keys -------------------------------------------------------------------------------


def test_curve_keys_are_deterministic_per_private_key() -> None:
    again = Identity(ALICE.private_key)
    assert again.curve_secret == ALICE.curve_secret
    assert again.curve_public == ALICE.curve_public


def test_curve_keys_differ_across_private_keys() -> None:
    assert ALICE.curve_secret != BOB.curve_secret
    assert ALICE.curve_public != BOB.curve_public


def test_curve_keys_are_a_z85_keypair() -> None:
    assert len(ALICE.curve_secret) == 40 and len(ALICE.curve_public) == 40
    assert len(z85.decode(ALICE.curve_secret)) == 32
    assert len(z85.decode(ALICE.curve_public)) == 32
    assert zmq.curve_public(ALICE.curve_secret) == ALICE.curve_public


def test_curve_secret_is_not_the_identity_key() -> None:
    assert z85.decode(ALICE.curve_secret) != ALICE.private_key


# ---- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(bytes(31), id="31_bytes"),
        pytest.param(bytes([1]) * 31, id="31_nonzero_bytes"),
        pytest.param(bytes([1]) * 33, id="33_bytes"),
        pytest.param(b"", id="empty"),
        pytest.param(bytes(32), id="zero"),
        pytest.param(SECP256K1_N.to_bytes(32, "big"), id="group_order"),
        pytest.param(b"\xff" * 32, id="over_the_order"),
        pytest.param(bytearray([1]) * 32, id="bytearray"),
        pytest.param("01" * 32, id="hex_str"),
        pytest.param(None, id="none"),
    ],
)
def test_unusable_private_key_is_an_identity_error(key: Any) -> None:
    with pytest.raises(IdentityError):
        Identity(key)


def test_private_key_round_trips() -> None:
    assert ALICE.private_key == bytes([1]) * 32
    assert Identity(ALICE.private_key).node_id == ALICE.node_id


def test_generated_identities_are_distinct_and_valid() -> None:
    a, b = Identity.generate(), Identity.generate()
    assert a.node_id != b.node_id
    assert is_node_id(a.node_id) and is_node_id(b.node_id)


def test_repr_shows_the_node_id_but_not_the_key() -> None:
    text = repr(ALICE)
    assert ALICE.node_id in text
    assert ALICE.private_key.hex() not in text
    assert ALICE.curve_secret.decode() not in text
