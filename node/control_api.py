"""What ControlCall may reach: the market's, the provider agent's, the activity's and gftp's methods, with plain-data results."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from actors.gftp.api import control_methods as gftp_control_methods
from actors.market.actor import wait_for_agreement
from protocol.codec import Message, to_wire
from protocol.control import ControlCall, ControlResult
from protocol.errors import ControlError

__all__ = ["plain", "ControlApi"]


def plain(value: Any) -> Any:
    """Dataclasses, messages and containers as msgpack-able plain data; objects carry their kind."""
    if isinstance(value, Message):
        return {"type": type(value).__name__, **to_wire(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"type": type(value).__name__}
        out.update({f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)})
        return out
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


class ControlApi:
    """Dispatches ControlCall requests to actor proxies; one method a name, arguments by keyword."""

    def __init__(
        self, market: Any, provider: Any | None, ask_timeout_s: float, activity: Any = None, gftp: Any = None,
        payment: Any = None, payment_driver: Any = None,
    ) -> None:
        self._ask_s = ask_timeout_s
        self._market = market
        ask = self._ask
        market_methods: dict[str, Callable[..., Any]] = {
            name: (lambda name: lambda **kw: ask(getattr(market, name)(**kw)))(name)
            for name in (
                "subscribe_offer", "subscribe_demand", "unsubscribe", "subscriptions", "get_proposal",
                "counter_proposal", "reject_proposal", "create_agreement", "confirm_agreement", "cancel_agreement",
                "approve_agreement", "reject_agreement", "terminate_agreement", "get_agreement", "list_agreements",
                "agreement_state", "known_offers", "known_demands", "matching_demands",
            )
        }
        market_methods["collect"] = self._collect
        market_methods["wait_agreement"] = self._wait_agreement
        market_methods["agreement_events"] = self._agreement_events
        self._targets: dict[str, dict[str, Callable[..., Any]]] = {"market": market_methods}
        if provider is not None:
            from actors.provider.api import control_methods as provider_control_methods

            self._targets["provider"] = provider_control_methods(provider, market, activity, ask_timeout_s)
        if activity is not None:
            self._activity = activity
            self._targets["activity"] = {
                "create": self._activity_create,
                "exec": self._activity_exec,
                "results": self._activity_results,
                "events": self._activity_events,
                "state": self._activity_state,
                "destroy": self._activity_destroy,
                "running": lambda: ask(activity.running()),
            }
        if gftp is not None:
            self._targets["gftp"] = gftp_control_methods(gftp, ask_timeout_s)
        if payment is not None:
            from actors.payment.api import control_methods as payment_control_methods

            self._targets["payment"] = payment_control_methods(payment, payment_driver, ask_timeout_s)

    def handle(self, call: ControlCall) -> ControlResult:
        """Run a call.

        Raises:
            ControlError: unknown target or method, or wrong arguments.
        """
        methods = self._targets.get(call.target)
        if methods is None:
            raise ControlError(f"no control target {call.target!r} on this node (known: {', '.join(self._targets)})")
        method = methods.get(call.method)
        if method is None:
            raise ControlError(f"{call.target} has no control method {call.method!r}")
        try:
            return ControlResult(plain(method(**call.args)))
        except TypeError as exc:
            raise ControlError(f"{call.target}.{call.method}: {exc}") from None

    def _view(self, activity_id: str) -> Any:
        return self._ask(self._activity.view(activity_id))

    def _activity_create(self, agreement_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        activity_id = self._ask(self._activity.create_activity(agreement_id))
        view = self._view(activity_id)
        view.wait(lambda v: v.state != "New", min(timeout_s, 30.0))
        return self._activity_state(activity_id)

    def _activity_exec(self, activity_id: str, script: Any) -> str:
        if isinstance(script, str):
            import json

            try:
                script = json.loads(script)
            except ValueError as exc:
                raise ControlError(f"the exe-script is not JSON: {exc}") from None
        return self._ask(self._activity.exec(activity_id, script))

    def _activity_results(self, activity_id: str, batch_id: str, timeout_s: float = 10.0) -> list[Any]:
        view = self._view(activity_id)
        view.wait(lambda v: v.batch_finished(batch_id), min(timeout_s, 60.0))
        return view.results(batch_id)

    def _activity_events(self, activity_id: str, batch_id: str, after: int = 0) -> list[Any]:
        return self._view(activity_id).events(batch_id, after)

    def _activity_state(self, activity_id: str) -> dict[str, Any]:
        view = self._view(activity_id)
        return {
            "activity_id": activity_id, "agreement_id": view.agreement_id, "state": view.state,
            "reason": view.reason, "error": view.error, "usage": list(view.usage), "usage_ms": view.usage_ms,
        }

    def _activity_destroy(self, activity_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        self._ask(self._activity.destroy(activity_id))
        self._view(activity_id).wait(lambda v: v.state == "Terminated", min(timeout_s, 30.0))
        return self._activity_state(activity_id)

    def _ask(self, future: Any) -> Any:
        return future.get(timeout=self._ask_s)

    def _collect(self, sub_id: str, max_events: int = 10, timeout_s: float = 1.0) -> list[Any]:
        queue = self._ask(self._market.subscription_queue(sub_id))
        return queue.take(max_events, min(timeout_s, 30.0))

    def _wait_agreement(self, agreement_id: str, timeout_s: float = 5.0) -> str:
        return wait_for_agreement(self._market, agreement_id, min(timeout_s, 30.0), self._ask_s)

    def _agreement_events(self, after_ms: int = 0, max_events: int = 100, timeout_s: float = 0.0) -> list[Any]:
        log = self._ask(self._market.event_log())
        return log.after(after_ms, max_events, min(timeout_s, 30.0))
