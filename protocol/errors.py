"""The exception hierarchy shared by every part of Loam.

    NodeError                      base of everything Loam raises on purpose
    ├── ProtocolError              a message or frame that is not what the protocol says
    │   ├── DecodeError            bytes that do not decode to a known message
    │   ├── SignatureError         a signature that does not verify or names another signer
    │   ├── ReplayError            a message id seen before within the replay window
    │   ├── StaleMessageError      a timestamp outside the clock-skew window
    │   ├── MessageTooLargeError   a frame or item over the size cap
    │   ├── PropertyError          a property map that is not flat JSON within the size caps
    │   └── ConstraintSyntaxError  a constraint filter or rank expression that does not parse
    ├── SettingsError              a setting that is missing, of the wrong type or out of range
    ├── IdentityError              no identity, a wrong password, a bad key
    ├── StorageError               the node's database cannot be opened or migrated
    ├── NetError                   overlay failures (unknown peer, bad address)
    │   └── PeerUnreachableError   no link and no route to a node
    ├── ControlError               the local control channel failed or the node is not running
    ├── AppKeyError                an app-key name that is taken, unknown or malformed
    ├── ChainError                 a blockchain RPC call, transaction or contract call failed
    ├── PaymentError               a payment operation that cannot be done
    │   ├── AllocationError        an allocation overdrawn, amended below its spending, or used after release
    │   ├── InvalidPaymentTransitionError  a debit note or invoice status change not allowed from its status
    │   ├── PaymentNotFoundError   no such allocation, debit note, invoice or payment
    │   └── PaymentConflictError   a payment id scheduled again with another payee or amount
    ├── VpnError                   a virtual network request that cannot be carried out (bad addresses, ports)
    │   ├── VpnNotFoundError       no such network, node in it, or tunnel
    │   └── VpnConflictError       an address already taken in the network
    └── ExeUnitError               an exe-unit cannot prepare or run the work it was given
        ├── PackageError           a WASI package (zip + manifest.json) that is malformed, unsafe or too big
        └── WasmModuleError        a module that does not compile, link or start (no _start, unknown imports)
"""

from __future__ import annotations

__all__ = [
    "NodeError",
    "AppKeyError",
    "PaymentError",
    "AllocationError",
    "InvalidPaymentTransitionError",
    "PaymentConflictError",
    "PaymentNotFoundError",
    "ProtocolError",
    "DecodeError",
    "SignatureError",
    "ReplayError",
    "StaleMessageError",
    "MessageTooLargeError",
    "PropertyError",
    "ConstraintSyntaxError",
    "SettingsError",
    "IdentityError",
    "StorageError",
    "NetError",
    "PeerUnreachableError",
    "ControlError",
    "ExeUnitError",
    "PackageError",
    "WasmModuleError",
    "ChainError",
    "VpnError",
    "VpnNotFoundError",
    "VpnConflictError",
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


class PropertyError(ProtocolError):
    """A property map that cannot be flattened, or is not flat JSON within the size caps."""


class ConstraintSyntaxError(ProtocolError):
    """A constraint filter or rank expression that does not parse.

    ``position`` is the 1-based character offset of the problem, ``line`` and ``column``
    the same place for multi-line text, ``expected`` what the parser wanted there:

        >>> raise ConstraintSyntaxError.at("(a=b", 4, '")"')
        Traceback (most recent call last):
        protocol.errors.ConstraintSyntaxError: at 1:5: expected ")" but found end of input
    """

    def __init__(
        self, message: str, *, position: int = 0, expected: str = "", line: int = 0, column: int = 0
    ) -> None:
        super().__init__(message)
        self.position = position
        self.expected = expected
        self.line = line
        self.column = column

    @classmethod
    def at(cls, text: str, index: int, expected: str, found: str | None = None) -> ConstraintSyntaxError:
        """The error for ``text`` at 0-based ``index``: what was expected and what was found there.

        Without ``found``, the character at ``index`` (or "end of input") is named.
        """
        index = max(0, min(index, len(text)))
        line = text.count("\n", 0, index) + 1
        column = index - (text.rfind("\n", 0, index) + 1) + 1
        if found is None:
            found = "end of input" if index >= len(text) else _describe_char(text[index])
        where = f"{line}:{column}" if "\n" not in text else f"{line}:{column} (position {index + 1})"
        return cls(
            f"at {where}: expected {expected} but found {found}",
            position=index + 1,
            expected=expected,
            line=line,
            column=column,
        )


def _describe_char(char: str) -> str:
    if char == '"':
        return "'\"'"
    if char.isprintable():
        return f'"{char}"'
    return repr(char)


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


class ExeUnitError(NodeError):
    """An exe-unit cannot prepare or run the work it was given (bad setup, bad limits)."""


class PackageError(ExeUnitError):
    """A WASI package that is malformed, unsafe (path traversal, zip bomb) or too big."""


class WasmModuleError(ExeUnitError):
    """A WebAssembly module that does not compile, link or start.

    A module that starts and then traps or hits a limit is not an error but an outcome
    (see ``exeunits.wasm.runtime.RunOutcome``).
    """


class ChainError(NodeError):
    """A blockchain call failed: no RPC endpoint answers, the chain id is wrong, a call or
    transaction reverts (the revert reason is in the message), or gas is over the cap."""


class PaymentError(NodeError):
    """A payment operation that cannot be done (base of the payment errors)."""


class AllocationError(PaymentError):
    """An allocation would be overdrawn, amended below what it has spent, or used after release or expiry."""


class InvalidPaymentTransitionError(PaymentError):
    """A debit note or invoice status change that is not allowed from its current status."""


class PaymentNotFoundError(PaymentError):
    """No such allocation, debit note, invoice or payment on this node."""


class PaymentConflictError(PaymentError):
    """A payment id scheduled again with another payee or amount."""


class AppKeyError(NodeError):
    """An app-key name that is taken, unknown or malformed."""


class VpnError(NodeError):
    """A virtual network request that cannot be carried out: bad addresses, an unknown node."""


class VpnNotFoundError(VpnError):
    """No such network (or no such node in it) on this node."""


class VpnConflictError(VpnError):
    """An address already taken in the network."""
