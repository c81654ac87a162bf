"""ProviderAgentActor: publishes one offer per active preset, negotiates by its rules, decides on agreements."""

from __future__ import annotations

import dataclasses
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
from actors.provider.offer import (
    PAYMENT_TERMS,
    check_demand,
    check_requestor,
    linear_coeffs,
    offer_constraints,
    offer_properties,
    payment_platform,
)
from protocol.identity import Identity

if TYPE_CHECKING:
    from node.presets import Preset
    from node.settings import ProviderSettings, Settings

__all__ = ["ProviderAgentActor"]

_MAX_COUNTERS_PER_CHAIN = 5


@dataclass(frozen=True, slots=True)
class _Renew:
    pass


@dataclass
class _Published:
    """One preset's offer on the market."""

    preset: Preset
    cfg: ProviderSettings  # the [provider] settings with the preset's runtime, prices and resources
    offer_id: str
    properties: dict[str, Any]
    expires_ms: int


class ProviderAgentActor(LoamActor):
    """Sells this node's compute on the market: an offer per active preset (or the [provider] settings)."""

    name = "provider"

    def __init__(
        self,
        identity: Identity,
        settings: Settings,
        market: Any,
        *,
        activity: Any = None,
        on_actor_failure: FailureHandler | None = None,
    ) -> None:
        super().__init__(identity.node_id, on_actor_failure)
        self._settings = settings
        self._cfg = settings.provider
        self._market = market
        self._activity = activity
        self._ask_s = settings.actors.ask_timeout_s
        self._offers: dict[str, _Published] = {}  # preset name -> its live offer
        self._unavailable: dict[str, str] = {}  # preset name -> why it is not offered
        self._republished: set[str] = set()  # presets whose offer the last reload replaced
        self._implicit = True
        self._versions: dict[str, str] = {}  # runtime -> version, for runtimes that work here
        self._counters: dict[str, int] = {}  # demand id -> counter-proposals we made in that chain
        self._ticker: Ticker | None = None

    def start_up(self) -> None:
        self._apply(self._settings)
        self._ticker = Ticker(self.actor_ref, _Renew(), 5.0)

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        for pub in self._offers.values():
            try:
                self._market.unsubscribe(pub.offer_id).get(timeout=self._ask_s)
            except Exception:  # noqa: BLE001 - the market may be stopping too
                pass

    # -- control ----------------------------------------------------------------------------

    def offer_id(self) -> str | None:
        """The id of an offer currently published (the first preset's)."""
        return next((p.offer_id for p in self._offers.values()), None)

    def offers(self) -> list[dict[str, Any]]:
        """Every preset and its offer: runtime, prices, resources, offer id (None when not offered, with why)."""
        from node.presets import effective_presets

        try:
            presets, implicit = effective_presets(self._settings.data_dir, self._cfg)
        except Exception:  # noqa: BLE001 - a broken file: show what is published
            presets, implicit = [p.preset for p in self._offers.values()], self._implicit
        out = []
        for preset in presets:
            pub = self._offers.get(preset.name)
            out.append({
                "preset": preset.name,
                "implicit": implicit,
                "active": preset.active,
                "runtime": preset.runtime,
                "start_fee": preset.start_fee,
                "env_per_hour": preset.env_per_hour,
                "cpu_per_hour": preset.cpu_per_hour,
                "coeffs": list(pub.properties["golem.com.pricing.model.linear.coeffs"]) if pub else [],
                "cores": pub.cfg.cores if pub else preset.cores,
                "memory_gib": pub.cfg.memory_gib if pub else preset.memory_gib,
                "storage_gib": pub.cfg.storage_gib if pub else preset.storage_gib,
                "offer_id": pub.offer_id if pub else None,
                "republished": preset.name in self._republished,
                "expires_ms": pub.expires_ms if pub else None,
                "not_offered": "" if pub else (self._unavailable.get(preset.name) or "inactive"),
            })
        return out

    def rules(self) -> dict[str, Any]:
        """The limits and negotiation rules in force."""
        c = self._cfg
        return {
            "node_name": self._settings.node.name,
            "subnet": self._settings.node.subnet,
            "runtime": c.runtime, "start_fee": c.start_fee, "env_per_hour": c.env_per_hour, "cpu_per_hour": c.cpu_per_hour,
            "cores": c.cores, "memory_gib": c.memory_gib, "storage_gib": c.storage_gib,
            "payment_network": c.payment_network,
            "max_agreements": c.max_agreements,
            "min_expiration_s": c.min_expiration_s, "max_expiration_s": c.max_expiration_s,
            "debit_note_interval_s": c.debit_note_interval_s,
            "debit_note_accept_timeout_s": c.debit_note_accept_timeout_s,
            "payment_timeout_s": c.payment_timeout_s,
            "payment_platform": payment_platform(c),
            "account": c.account or self.node_id,
            "payment_account": c.account,
            "allow_requestors": list(c.allow_requestors),
            "block_requestors": list(c.block_requestors),
        }

    def reload(self) -> list[dict[str, Any]]:
        """Read the settings and presets again and re-publish the offers; returns offers().

        Raises:
            SettingsError: the files hold a bad value; the offers stay as they were.
        """
        from node.presets import effective_presets
        from node.settings import load_settings

        fresh = load_settings(self._settings.data_dir, dict(self._settings.overrides))
        effective_presets(fresh.data_dir, fresh.provider)  # fail before anything is withdrawn
        node = fresh.node
        if not node.name:
            node = dataclasses.replace(node, name=self._settings.node.name)
        if node.subnet != self._settings.node.subnet:
            # The overlay joined its subnet at startup; offers follow it after a restart.
            self._log.warning("subnet_change_needs_restart", running=self._settings.node.subnet, configured=node.subnet)
            node = dataclasses.replace(node, subnet=self._settings.node.subnet)
        self._apply(dataclasses.replace(fresh, node=node))
        self._log.info("provider_reloaded", offers=len(self._offers))
        return self.offers()

    # -- publishing -------------------------------------------------------------------------

    def _apply(self, settings: Settings) -> None:
        """Take these settings: tell the activity actor the limits, withdraw the old offers, publish the new."""
        from node.presets import effective_presets, preset_settings

        self._settings = settings
        self._cfg = settings.provider
        if self._activity is not None:
            self._activity.set_limits(self._cfg.cores, self._cfg.memory_gib, self._cfg.storage_gib)
        presets, self._implicit = effective_presets(settings.data_dir, self._cfg)
        old = dict(self._offers)
        self._offers = {}
        self._unavailable = {}
        self._republished = set()
        for preset in presets:
            if not preset.active:
                continue
            version = self._runtime_version(preset.runtime)
            if version is None:
                continue
            cfg = preset_settings(self._cfg, preset)
            previous = old.get(preset.name)
            if previous is not None and previous.properties == self._properties(cfg, version):
                # Nothing a requestor sees has changed: keep the offer, and the negotiations on it.
                self._offers[preset.name] = dataclasses.replace(previous, preset=preset, cfg=cfg)
                del old[preset.name]
                continue
            self._publish(preset, cfg, version)
            self._republished.add(preset.name)
        for pub in old.values():
            try:
                self._market.unsubscribe(pub.offer_id).get(timeout=self._ask_s)
            except MarketError:
                pass  # already gone
        self._counters.clear()

    def _runtime_version(self, runtime: str) -> str | None:
        """The runtime's version when it works here (a runtime that failed is probed again next time)."""
        from exeunits.probe import probe_runtime

        if runtime in self._versions:
            return self._versions[runtime]
        probe = probe_runtime(runtime)
        if not probe.available:
            # Offering what cannot run would only produce failed activities.
            self._log.error("runtime_unavailable", runtime=runtime, reason=probe.reason)
            for_presets = f"runtime {runtime} is unavailable: {probe.reason}"
            self._unavailable.update({name: for_presets for name in self._preset_names(runtime)})
            return None
        self._versions[runtime] = probe.version or self._cfg.runtime_version
        return self._versions[runtime]

    def _preset_names(self, runtime: str) -> list[str]:
        from node.presets import effective_presets

        presets, _ = effective_presets(self._settings.data_dir, self._cfg)
        return [p.name for p in presets if p.runtime == runtime]

    def _properties(self, cfg: ProviderSettings, version: str) -> dict[str, Any]:
        node = self._settings.node
        props = offer_properties(cfg, self.node_id, node.name, node.subnet)
        props["golem.runtime.version"] = version
        return props

    def _publish(self, preset: Preset, cfg: ProviderSettings, version: str) -> None:
        node = self._settings.node
        props = self._properties(cfg, version)
        offer_id = self._market.subscribe_offer(
            props, offer_constraints(node.subnet), "", cfg.offer_ttl_s, self.actor_ref
        ).get(timeout=self._ask_s)
        self._offers[preset.name] = _Published(preset, cfg, offer_id, props, now_ms() + int(cfg.offer_ttl_s * 1000))
        self._log.info(
            "offer_published", offer_id=offer_id, preset=preset.name, runtime=cfg.runtime, coeffs=linear_coeffs(cfg)
        )

    def _renew(self, pub: _Published) -> None:
        old = pub.offer_id
        self._publish(pub.preset, pub.cfg, pub.properties["golem.runtime.version"])
        try:
            self._market.unsubscribe(old).get(timeout=self._ask_s)
        except MarketError:
            pass

    # -- negotiation ------------------------------------------------------------------------

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
                # Re-publish when four fifths of an offer's life are gone, so it never lapses.
                for pub in list(self._offers.values()):
                    if now_ms() > pub.expires_ms - pub.cfg.offer_ttl_s * 200:
                        self._renew(pub)
        except MarketError as exc:
            # The other side may have withdrawn in the meantime; that is no reason to die.
            self._log.warning("negotiation_step_failed", error=str(exc))
        return None

    def _on_proposal(self, event: ProposalEvent) -> None:
        proposal = event.proposal
        pub = next((p for p in self._offers.values() if p.offer_id == proposal.offer_id), None)
        if pub is None:
            return
        verdict = check_demand(pub.cfg, proposal.properties, now_ms(), self._active_agreements(), proposal.issuer_id)
        rounds = self._counters.get(proposal.demand_id, 0)
        if verdict.accept and rounds >= _MAX_COUNTERS_PER_CHAIN:
            verdict = verdict.__class__(False, f"no agreement after {rounds} rounds of negotiation")
        if not verdict.accept:
            self._log.info("demand_refused", proposal_id=proposal.proposal_id, requestor=proposal.issuer_id, reason=verdict.reason)
            self._market.reject_proposal(pub.offer_id, proposal.proposal_id, {"message": verdict.reason})
            return
        self._counters[proposal.demand_id] = rounds + 1
        props = dict(pub.properties)
        props["golem.com.payment.chosen-platform"] = payment_platform(pub.cfg)
        # The requestor's expiration and payment terms (checked above) are what both sides sign.
        for key in ("golem.srv.comp.expiration", *PAYMENT_TERMS):
            if key in proposal.properties:
                props[key] = proposal.properties[key]
        self._market.counter_proposal(
            pub.offer_id, proposal.proposal_id, props, offer_constraints(self._settings.node.subnet)
        ).get(timeout=self._ask_s)

    def _on_agreement(self, agreement_id: str) -> None:
        record = self._market.get_agreement(agreement_id).get(timeout=self._ask_s)
        # The lists may have changed since the proposal was countered.
        verdict = check_requestor(self._cfg, record.terms.requestor_id)
        if not verdict.accept:
            self._market.reject_agreement(agreement_id, {"message": verdict.reason}).get(timeout=self._ask_s)
            return
        active = self._active_agreements()
        if active >= self._cfg.max_agreements:
            reason = {"message": f"no free capacity: {active} of {self._cfg.max_agreements} agreements in use"}
            self._market.reject_agreement(agreement_id, reason).get(timeout=self._ask_s)
            return
        short = self._resources_short(record)
        if short:
            self._market.reject_agreement(agreement_id, {"message": short}).get(timeout=self._ask_s)
            return
        self._market.approve_agreement(agreement_id).get(timeout=self._ask_s)

    def _resources_short(self, record: Any) -> str:
        """Why the approved agreements and this one together would claim more than the provider has ("" if not).

        Each agreement claims what its offer sells an activity (threads, memory, disk), so an
        agreement is only approved when its activity will fit beside the others'.
        """

        def claim(props: dict[str, Any]) -> tuple[float, float, float]:
            values = (props.get("golem.inf.cpu.threads", 1), props.get("golem.inf.mem.gib", 0.0), props.get("golem.inf.storage.gib", 0.0))
            return tuple(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0 for v in values)  # type: ignore[return-value]

        others = [r for r in self._market.list_agreements("Approved").get(timeout=self._ask_s)
                  if r.role == "provider" and r.agreement_id != record.agreement_id]  # fmt: skip
        used = [sum(claim(r.terms.offer_properties)[i] for r in others) for i in range(3)]
        need = claim(record.terms.offer_properties)
        limits = (float(self._cfg.cores), float(self._cfg.memory_gib), float(self._cfg.storage_gib))
        for i, (what, unit) in enumerate((("cores", ""), ("memory", " GiB"), ("disk", " GiB"))):
            if used[i] + need[i] > limits[i] + 1e-9:
                return (
                    f"no free {what}: the agreement's activity needs {need[i]:g}{unit}, {used[i]:g}{unit} of "
                    f"{limits[i]:g}{unit} are claimed by {len(others)} approved agreement(s)"
                )
        return ""
