"""Errors of gftp transfers, and the one place a wire failure code becomes an exception.

    NodeError
    └── TransferError               a publish, download or upload that did not succeed
        ├── BadUrlError             not a gftp://<node id>/<64 hex> URL
        ├── UnknownFileError        the node publishes no such file, or has no such upload slot
        ├── TransferRefusedError    the file or slot is not meant for this node
        ├── FileTooLargeError       over the size limit of the download or the slot
        ├── HashMismatchError       the bytes do not hash to what the URL or the finish says
        ├── TransferTimeoutError    no complete answer within the transfer's timeout
        └── SourceUnavailableError  the file changed or cannot be read where it is served
"""

from __future__ import annotations

from protocol.errors import NodeError

__all__ = [
    "TransferError",
    "BadUrlError",
    "UnknownFileError",
    "TransferRefusedError",
    "FileTooLargeError",
    "HashMismatchError",
    "TransferTimeoutError",
    "SourceUnavailableError",
    "error_for_code",
]


class TransferError(NodeError):
    """A gftp publish, download or upload that did not succeed."""


class BadUrlError(TransferError):
    """Not a gftp URL."""


class UnknownFileError(TransferError):
    """The serving node publishes no such file (or closed it), or has no such upload slot."""


class TransferRefusedError(TransferError):
    """The file or upload slot exists but is not meant for the asking node (or is busy)."""


class FileTooLargeError(TransferError):
    """The file is larger than the transfer's or the slot's size limit."""


class HashMismatchError(TransferError):
    """The bytes received do not hash to the sha3-256 the URL (or the upload's finish) names."""


class TransferTimeoutError(TransferError):
    """The transfer did not complete within its timeout."""


class SourceUnavailableError(TransferError):
    """The serving node cannot read the file, or it changed since it was published."""


_BY_CODE: dict[str, type[TransferError]] = {
    "unknown_file": UnknownFileError,
    "refused": TransferRefusedError,
    "busy": TransferRefusedError,
    "too_large": FileTooLargeError,
    "hash_mismatch": HashMismatchError,
    "unavailable": SourceUnavailableError,
}


def error_for_code(code: str, message: str) -> TransferError:
    """The exception a GftpFailed code stands for (TransferError for bad_request and unknown codes)."""
    return _BY_CODE.get(code, TransferError)(message)
