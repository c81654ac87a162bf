"""ProviderAgentActor: publishes the provider's offer, negotiates by its rules, decides on agreements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from actors.base import FailureHandler, LoamActor, Ticker
from actors.market.events import (
    AgreementEvent,
    AgreementOperationEvent,
    MarketError,
    ProposalEvent,
    ProposalRejectedEvent,
    now_ms,
)
from actors.provider.offer import check_demand, offer_constraints, offer_properties, payment_platform
from protocol.identity import Identity

if TYPE_CHECKING:
    from node.settings import Settings

__all__ = ["ProviderAgentActor"]

_MAX_COUNTERS_PER_CHAIN = 5


@dataclass(frozen=True, slots=True)
class _Renew:
    pass


class ProviderAgentActor(LoamActor):
    """Sells this node's compute on the market under the [provider] settings."""

    name = "provider"

    def __init__(self, identity: Identity, settings: Settings, market: Any, *, on_actor_failure: FailureHandler | None = None) -> None:
        super().__init__(identity.node_id, on_actor_failure)
        self._cfg = settings.provider
        self._subnet = settings.node.subnet
        self._node_name = settings.node.name
        self._market = market
        self._ask_s = settings.actors.ask_timeout_s
        self._offer_id: str | None = None
        self._offer_expires_ms = 0
        self._counters: dict[str, int] = {}  # demand id -> counter-proposals we made in that chain
        self._ticker: Ticker | None = None

    def start_up(self) -> None:
        from exeunits.probe import probe_runtime

        probe = probe_runtime(self._cfg.runtime)
        self._runtime_version = probe.version
        if not probe.available:
            # Offering what cannot run would only produce failed activities.
            self._log.error("runtime_unavailable", runtime=self._cfg.runtime, reason=probe.reason)
            return
        self._publish()
        self._ticker = Ticker(self.actor_ref, _Renew(), 5.0)

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        if self._offer_id is not None:
            try:
                self._market.unsubscribe(self._offer_id).get(timeout=self._ask_s)
            except Exception:  # noqa: BLE001 - the market may be stopping too
                pass

    def offer_id(self) -> str | None:
        """The id of the offer currently published."""
        return self._offer_id

    def _publish(self) -> None:
        props = offer_properties(self._cfg, self.node_id, self._node_name, self._subnet)
        props["golem.runtime.version"] = self._runtime_version or self._cfg.runtime_version
        old = self._offer_id
        self._offer_id = self._market.subscribe_offer(
            props, offer_constraints(self._subnet), "", self._cfg.offer_ttl_s, self.actor_ref
        ).get(timeout=self._ask_s)
        self._offer_expires_ms = now_ms() + int(self._cfg.offer_ttl_s * 1000)
        self._offer_props = props
        if old is not None:
            self._market.unsubscribe(old)
        self._log.info("offer_published", offer_id=self._offer_id, runtime=self._cfg.runtime)

    def _active_agreements(self) -> int:
        records = self._market.list_agreements("Approved").get(timeout=self._ask_s)
        return sum(1 for r in records if r.role == "provider")

    def on_receive(self, message: Any) -> Any:
        try:
            if isinstance(message, ProposalEvent):
                self._on_proposal(message)
            elif isinstance(message, AgreementEvent):
                self._on_agreement(message.agreement_id)
            elif isinstance(message, ProposalRejectedEvent):
                self._log.info("proposal_rejected_by_requestor", proposal_id=message.proposal_id, reason=message.reason)
            elif isinstance(message, AgreementOperationEvent):
                self._log.info("agreement_event", agreement_id=message.agreement_id, kind=message.kind)
            elif isinstance(message, _Renew):
                # Re-publish when four fifths of the offer's life are gone, so it never lapses.
                if now_ms() > self._offer_expires_ms - self._cfg.offer_ttl_s * 200:
                    self._publish()
        except MarketError as exc:
            # The other side may have withdrawn in the meantime; that is no reason to die.
            self._log.warning("negotiation_step_failed", error=str(exc))
        return None

    def _on_proposal(self, event: ProposalEvent) -> None:
        proposal = event.proposal
        if self._offer_id is None or proposal.offer_id != self._offer_id:
            return
        verdict = check_demand(self._cfg, proposal.properties, now_ms(), self._active_agreements())
        rounds = self._counters.get(proposal.demand_id, 0)
        if verdict.accept and rounds >= _MAX_COUNTERS_PER_CHAIN:
            verdict = verdict.__class__(False, f"no agreement after {rounds} rounds of negotiation")
        if not verdict.accept:
            self._log.info("demand_refused", proposal_id=proposal.proposal_id, reason=verdict.reason)
            self._market.reject_proposal(self._offer_id, proposal.proposal_id, {"message": verdict.reason})
            return
        self._counters[proposal.demand_id] = rounds + 1
        props = dict(self._offer_props)
        props["golem.com.payment.chosen-platform"] = payment_platform(self._cfg)
        for key in ("golem.srv.comp.expiration",):
            if key in proposal.properties:
                props[key] = proposal.properties[key]
        self._market.counter_proposal(self._offer_id, proposal.proposal_id, props, offer_constraints(self._subnet)).get(
            timeout=self._ask_s
        )

    def _on_agreement(self, agreement_id: str) -> None:
        active = self._active_agreements()
        if active >= self._cfg.max_agreements:
            reason = {"message": f"no free capacity: {active} of {self._cfg.max_agreements} agreements in use"}
            self._market.reject_agreement(agreement_id, reason).get(timeout=self._ask_s)
            return
        self._market.approve_agreement(agreement_id).get(timeout=self._ask_s)
