"""The REST error mapper: the one place where domain errors become HTTP status codes.

Every error answer has the spec's ErrorMessage shape, ``{"message": "..."}``.
"""

from __future__ import annotations

from typing import Any

import pykka

from protocol.errors import NodeError

__all__ = ["ApiError", "status_of", "error_body"]


class ApiError(NodeError):
    """An answer other than success, decided by a handler: an HTTP status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> dict[str, Any]:
    """The spec's ErrorMessage."""
    return {"message": message}


def status_of(exc: BaseException) -> int | None:
    """The HTTP status a domain error maps to; None for an unexpected exception (a bug: 500)."""
    # Imported here: the actors' modules are heavy and the mapper is imported by everything.
    from actors.activity.actor import ActivityError, ActivityNotFoundError
    from actors.market.events import (
        AgreementNotFoundError,
        InvalidTransitionError,
        MarketError,
        ProposalNotFoundError,
        SubscriptionNotFoundError,
    )
    import protocol.errors as pe

    def kinds(*names: str) -> tuple[type, ...]:
        # Payment errors may be newer than this module's callers' tree: only those that exist.
        return tuple(k for k in (getattr(pe, n, None) for n in names) if isinstance(k, type))

    PaymentNotFoundError = kinds("PaymentNotFoundError", "VpnNotFoundError")
    conflicts = kinds("InvalidPaymentTransitionError", "PaymentConflictError", "VpnConflictError")
    bad_input = kinds("PaymentError", "ProtocolError", "VpnError")
    PeerUnreachableError, NetError = pe.PeerUnreachableError, pe.NetError

    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(
        exc,
        (SubscriptionNotFoundError, ProposalNotFoundError, AgreementNotFoundError, ActivityNotFoundError, *PaymentNotFoundError),
    ):
        return 404
    if isinstance(exc, (InvalidTransitionError, *conflicts)):
        return 409
    if isinstance(exc, (MarketError, ActivityError, *bad_input)):
        return 400
    if isinstance(exc, PeerUnreachableError):
        return 503
    if isinstance(exc, NetError):
        return 400
    if isinstance(exc, pykka.Timeout):
        return 504
    if isinstance(exc, pykka.ActorDeadError):
        return 503
    return None
