"""Node identity: a secp256k1 key whose checksummed Ethereum address is the node id."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os

import coincurve
import zmq
from zmq.utils import z85
from eth_hash.auto import keccak

from protocol.errors import IdentityError, SignatureError

__all__ = ["Identity", "recover_signer", "to_checksum_address", "is_node_id", "keccak"]

SIGNATURE_BYTES = 65


@functools.lru_cache(maxsize=65536)
def to_checksum_address(raw20: bytes) -> str:
    """EIP-55 checksummed hex address of 20 raw bytes."""
    hex_addr = raw20.hex()
    digest = keccak(hex_addr.encode()).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(hex_addr, digest))


def is_node_id(value: object) -> bool:
    """True when value is a checksummed 0x address (the only form a node id takes)."""
    if not isinstance(value, str) or len(value) != 42 or not value.startswith("0x"):
        return False
    return _is_checksummed(value)


# Node ids repeat on every frame; remembering the answer saves two keccaks a frame.
@functools.lru_cache(maxsize=65536)
def _is_checksummed(value: str) -> bool:
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        return False
    return to_checksum_address(raw) == value


def _address_of(public_key: coincurve.PublicKey) -> str:
    return to_checksum_address(keccak(public_key.format(compressed=False)[1:])[-20:])


def recover_signer(digest32: bytes, signature: bytes) -> str:
    """The node id whose key made signature over a 32-byte digest.

    Raises:
        SignatureError: the signature is malformed or recovers no key.
    """
    if type(signature) is not bytes or len(signature) != SIGNATURE_BYTES:
        raise SignatureError(f"a signature is {SIGNATURE_BYTES} bytes")
    try:
        public = coincurve.PublicKey.from_signature_and_message(signature, digest32, hasher=None)
    except Exception as exc:  # coincurve raises ValueError or its own errors
        raise SignatureError(f"signature does not recover a key: {exc}") from None
    return _address_of(public)


class Identity:
    """A node's private key, with the node id and the CURVE transport keys it implies."""

    __slots__ = ("_key", "node_id", "curve_secret", "curve_public")

    def __init__(self, private_key: bytes) -> None:
        if type(private_key) is not bytes or len(private_key) != 32:
            raise IdentityError("a private key is 32 bytes")
        try:
            self._key = coincurve.PrivateKey(private_key)
        except Exception as exc:
            raise IdentityError(f"not a valid secp256k1 key: {exc}") from None
        self.node_id: str = _address_of(self._key.public_key)
        # The CURVE key is derived from the identity key, so it needs no storage of its
        # own and a node keeps its transport key across restarts.
        secret = hmac.new(private_key, b"loam-curve25519-v1", hashlib.sha256).digest()
        self.curve_secret: bytes = z85.encode(secret)
        self.curve_public: bytes = zmq.curve_public(self.curve_secret)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity."""
        return cls(os.urandom(32))

    @property
    def private_key(self) -> bytes:
        """The raw 32-byte secret (for the keystore only)."""
        return self._key.secret

    def sign(self, digest32: bytes) -> bytes:
        """A 65-byte recoverable signature (r, s, recovery id) over a 32-byte digest."""
        return self._key.sign_recoverable(digest32, hasher=None)

    def __repr__(self) -> str:
        return f"Identity({self.node_id})"
