"""The provider agent's control methods (target "provider"): its offers, a reload, and its status."""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["control_methods"]

_OPEN_STATES = ("Proposal", "Pending", "Approved")


def control_methods(provider: Any, market: Any, activity: Any, ask_timeout_s: float) -> dict[str, Callable[..., Any]]:
    """Methods for ControlApi: each asks the actors with the node's ask timeout."""

    def ask(future: Any, timeout_s: float = ask_timeout_s) -> Any:
        return future.get(timeout=timeout_s)

    def status() -> dict[str, Any]:
        agreements = [
            {
                "agreement_id": r.terms.agreement_id,
                "state": r.state,
                "requestor_id": r.terms.requestor_id,
                "runtime": r.terms.offer_properties.get("golem.runtime.name"),
                "offer_id": r.terms.offer_id,
                "valid_to_ms": r.terms.valid_to_ms,
                "updated_ms": r.updated_ms,
            }
            for r in ask(market.list_agreements())
            if r.role == "provider" and r.state in _OPEN_STATES
        ]
        return {
            "offers": ask(provider.offers()),
            "rules": ask(provider.rules()),
            "agreements": agreements,
            "activities": ask(activity.running()) if activity is not None else [],
            "resources": ask(activity.resources()) if activity is not None else {},
        }

    def reload() -> dict[str, Any]:
        # A reload may probe a runtime (a Docker engine takes up to 3 s to fail) and re-publishes every offer.
        offers = ask(provider.reload(), ask_timeout_s * 3)
        return {"offers": offers, "rules": ask(provider.rules())}

    return {
        "offer_id": lambda: ask(provider.offer_id()),
        "offers": lambda: ask(provider.offers()),
        "reload": reload,
        "status": status,
    }
