"""What a provider offers: offer properties and constraints from its settings, and the rules it negotiates by."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.settings import ProviderSettings

__all__ = ["payment_platform", "offer_properties", "offer_constraints", "linear_coeffs", "check_demand", "check_requestor", "Verdict"]

USAGE_VECTOR = ["golem.usage.cpu_sec", "golem.usage.duration_sec"]
DEBIT_NOTE_INTERVAL = "golem.com.scheme.payu.debit-note.interval-sec?"
ACCEPT_TIMEOUT = "golem.com.payment.debit-notes.accept-timeout?"
PAYMENT_TIMEOUT = "golem.com.scheme.payu.payment-timeout-sec?"
# The payment terms a requestor may set in its demand; the provider echoes them in its counter.
PAYMENT_TERMS = (DEBIT_NOTE_INTERVAL, ACCEPT_TIMEOUT, PAYMENT_TIMEOUT)
# Golem's rule: an agreement longer than this must be paid as it goes (mid-agreement payments).
MID_AGREEMENT_PAYMENTS_AFTER_S = 10 * 3600.0


def payment_platform(cfg: ProviderSettings) -> str:
    """The payment platform string, e.g. erc20-holesky-tglm (GLM on mainnet and polygon)."""
    token = "glm" if cfg.payment_network in ("mainnet", "polygon") else "tglm"
    return f"{cfg.payment_driver}-{cfg.payment_network}-{token}"


def linear_coeffs(cfg: ProviderSettings) -> list[float]:
    """Linear pricing coefficients in usage-vector order, then the start fee (as Golem's golemsp)."""
    return [cfg.cpu_per_hour / 3600.0, cfg.env_per_hour / 3600.0, float(cfg.start_fee)]


def offer_properties(cfg: ProviderSettings, node_id: str, node_name: str, subnet: str) -> dict[str, Any]:
    """The flat properties of the provider's offer."""
    plat = payment_platform(cfg)
    threads = min(cfg.cores, os.cpu_count() or cfg.cores)
    return {
        "golem.inf.cpu.architecture": platform.machine(),
        "golem.inf.cpu.cores": threads,
        "golem.inf.cpu.threads": threads,
        "golem.inf.mem.gib": float(cfg.memory_gib),
        "golem.inf.storage.gib": float(cfg.storage_gib),
        "golem.runtime.name": cfg.runtime,
        "golem.runtime.version": cfg.runtime_version,
        # vm activities join a requestor's virtual network (deploy's `net`), so clients may ask for "vpn".
        "golem.runtime.capabilities": ["vpn"] if cfg.runtime == "vm" else [],
        "golem.node.id.name": node_name,
        "golem.node.debug.subnet": subnet,
        "golem.srv.caps.multi-activity": True,
        "golem.activity.caps.transfer.protocol": ["http", "https", "gftp"],
        "golem.com.scheme": "payu",
        DEBIT_NOTE_INTERVAL: float(cfg.debit_note_interval_s),
        PAYMENT_TIMEOUT: float(cfg.payment_timeout_s),
        ACCEPT_TIMEOUT: int(cfg.debit_note_accept_timeout_s),
        f"golem.com.payment.platform.{plat}.address": cfg.account or node_id,
        "golem.com.payment.protocol.version": 3,
        "golem.com.pricing.model": "linear",
        "golem.com.pricing.model.linear.coeffs": linear_coeffs(cfg),
        "golem.com.usage.vector": list(USAGE_VECTOR),
    }


def offer_constraints(subnet: str) -> str:
    """What the provider asks of a demand: its subnet, and an expiration."""
    return f"(&(golem.node.debug.subnet={subnet})(golem.srv.comp.expiration>0))"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A negotiation decision: accept, or reject with a reason."""

    accept: bool
    reason: str = ""


def check_requestor(cfg: ProviderSettings, requestor_id: str) -> Verdict:
    """Whether the provider deals with this requestor at all: its block-list, then its allow-list."""
    node_id = requestor_id.lower()
    if node_id in cfg.block_requestors:
        return Verdict(False, f"requestor {requestor_id} is blocked by this provider")
    if cfg.allow_requestors and node_id not in cfg.allow_requestors:
        return Verdict(False, f"requestor {requestor_id} is not on this provider's allow-list")
    return Verdict(True)


def check_demand(
    cfg: ProviderSettings, demand_props: dict[str, Any], now_ms: int, active_agreements: int, requestor_id: str = ""
) -> Verdict:
    """Whether the provider takes a requestor's proposal, by its negotiation rules."""
    if requestor_id:
        verdict = check_requestor(cfg, requestor_id)
        if not verdict.accept:
            return verdict
    if active_agreements >= cfg.max_agreements:
        return Verdict(False, f"no free capacity: {active_agreements} of {cfg.max_agreements} agreements in use")
    expiration = demand_props.get("golem.srv.comp.expiration")
    if not isinstance(expiration, (int, float)) or isinstance(expiration, bool):
        return Verdict(False, "the demand has no golem.srv.comp.expiration")
    left_s = (expiration - now_ms) / 1000.0
    if left_s < cfg.min_expiration_s:
        return Verdict(False, f"agreement expiration {left_s:.0f} s away is below the minimum of {cfg.min_expiration_s:.0f} s")
    if left_s > cfg.max_expiration_s:
        return Verdict(False, f"agreement expiration {left_s:.0f} s away is above the maximum of {cfg.max_expiration_s:.0f} s")
    plat = payment_platform(cfg)
    if f"golem.com.payment.platform.{plat}.address" not in demand_props:
        return Verdict(False, f"the demand offers no payment on {plat}")
    return _check_payment_terms(demand_props, left_s)


def _check_payment_terms(demand_props: dict[str, Any], left_s: float) -> Verdict:
    """The payment terms a demand may set: Golem's bounds, and mid-agreement payments for long agreements."""
    def number(key: str) -> float | None:
        value = demand_props.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return None
        return float(value)

    for key, low, high in ((DEBIT_NOTE_INTERVAL, 1.0, 86400.0), (ACCEPT_TIMEOUT, 5.0, None), (PAYMENT_TIMEOUT, 1.0, 86400.0)):
        if key not in demand_props:
            continue
        value = number(key)
        if value is None or value < low or (high is not None and value > high):
            bounds = f"{low:g} s to {high:g} s" if high is not None else f"at least {low:g} s"
            return Verdict(False, f"the demand's {key} = {demand_props[key]!r} is outside {bounds}")
    if left_s > MID_AGREEMENT_PAYMENTS_AFTER_S and PAYMENT_TIMEOUT not in demand_props:
        return Verdict(
            False,
            f"an agreement of {left_s / 3600:.1f} h needs mid-agreement payments (over "
            f"{MID_AGREEMENT_PAYMENTS_AFTER_S / 3600:g} h): the demand names no {PAYMENT_TIMEOUT}",
        )
    return Verdict(True)
