"""The exception hierarchy shared by every part of Loam.

    NodeError                      base of everything Loam raises on purpose
    ├── ProtocolError              a message or frame that is not what the protocol says
    │   ├── DecodeError            bytes that do not decode to a known message
    │   ├── SignatureError         a signature that does not verify or names another signer
    │   ├── ReplayError            a message id seen before within the replay window
    │   ├── StaleMessageError      a timestamp outside the clock-skew window
    │   └── MessageTooLargeError   a frame or item over the size cap
    ├── SettingsError              a setting that is missing, of the wrong type or out of range
    ├── IdentityError              no identity, a wrong password, a bad key
    ├── StorageError               the node's database cannot be opened or migrated
    ├── NetError                   overlay failures (unknown peer, bad address)
    │   └── PeerUnreachableError   no link and no route to a node
    └── ControlError               the local control channel failed or the node is not running
"""

from __future__ import annotations

__all__ = [
    "NodeError",
    "ProtocolError",
    "DecodeError",
    "SignatureError",
    "ReplayError",
    "StaleMessageError",
    "MessageTooLargeError",
    "SettingsError",
    "IdentityError",
    "StorageError",
    "NetError",
    "PeerUnreachableError",
    "ControlError",
]


class NodeError(Exception):
    """Base of every error Loam raises on purpose."""


class ProtocolError(NodeError):
    """A message or frame that breaks the wire protocol."""


class DecodeError(ProtocolError):
    """Bytes that do not decode to a registered message of the right shape."""


class SignatureError(ProtocolError):
    """A signature that does not verify, or that was made by someone else."""


class ReplayError(ProtocolError):
    """A message id seen before within the replay window."""


class StaleMessageError(ProtocolError):
    """A message whose timestamp is outside the allowed clock skew."""


class MessageTooLargeError(ProtocolError):
    """A frame or item larger than the configured cap."""


class SettingsError(NodeError):
    """A setting that is missing, of the wrong type or out of range."""


class IdentityError(NodeError):
    """No identity, a wrong password or an unusable key."""


class StorageError(NodeError):
    """The node's database cannot be opened or migrated."""


class NetError(NodeError):
    """An overlay operation that cannot be done."""


class PeerUnreachableError(NetError):
    """No link and no route to a node."""


class ControlError(NodeError):
    """The local control channel failed, or no node is running there."""
