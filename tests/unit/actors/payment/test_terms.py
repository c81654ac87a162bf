"""An agreement's payment terms as both sides read them from its properties."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from actors.payment.terms import ACCEPT_TIMEOUT_KEY, DEBIT_NOTE_INTERVAL_KEY, PAYMENT_TIMEOUT_KEY, read_terms
from protocol.errors import PaymentError
from protocol.market import AgreementTerms

PROVIDER = "0x" + "11" * 20
REQUESTOR = "0x" + "22" * 20
PLATFORM = "erc20-local-tglm"


def _terms(offer: dict[str, Any], demand: dict[str, Any]) -> AgreementTerms:
    base_offer = {
        "golem.com.payment.chosen-platform": PLATFORM,
        f"golem.com.payment.platform.{PLATFORM}.address": PROVIDER,
        "golem.com.pricing.model.linear.coeffs": [0.001, 0.002, 0.5],
        "golem.com.usage.vector": ["golem.usage.cpu_sec", "golem.usage.duration_sec"],
        "golem.inf.cpu.threads": 4,
    }
    base_demand = {f"golem.com.payment.platform.{PLATFORM}.address": REQUESTOR}
    return AgreementTerms(
        "a" * 64, REQUESTOR, PROVIDER, "d", "o", "dp", "op", {**base_demand, **demand}, "()",
        {**base_offer, **offer}, "()", 10**13, 10**12,
    )  # fmt: skip


def test_the_provider_chosen_platform_addresses_and_linear_price_are_read() -> None:
    parties = read_terms(_terms({}, {}))
    assert (parties.platform, parties.payee_address, parties.payer_address) == (PLATFORM, PROVIDER, REQUESTOR)
    assert parties.terms.coeffs == (0.001, 0.002, 0.5)
    assert parties.terms.usage_vector == ("golem.usage.cpu_sec", "golem.usage.duration_sec")
    assert parties.terms.threads == 4
    assert parties.terms.debit_note_interval_s == 120.0  # Golem's default
    assert parties.terms.accept_timeout_s is None and parties.terms.payment_timeout_s is None


def test_the_demands_interval_and_accept_timeout_win_and_mid_agreement_payments_need_both_sides() -> None:
    offer = {DEBIT_NOTE_INTERVAL_KEY: 120.0, PAYMENT_TIMEOUT_KEY: 120.0, ACCEPT_TIMEOUT_KEY: 240}
    t = read_terms(_terms(offer, {DEBIT_NOTE_INTERVAL_KEY: 5, ACCEPT_TIMEOUT_KEY: 30, PAYMENT_TIMEOUT_KEY: 60})).terms
    assert (t.debit_note_interval_s, t.accept_timeout_s, t.payment_timeout_s) == (5.0, 30.0, 60.0)
    # The requestor asks for mid-agreement payments the offer does not name: none.
    t = read_terms(_terms({}, {PAYMENT_TIMEOUT_KEY: 60})).terms
    assert t.payment_timeout_s is None
    # An interval below a second is raised to one; a nonsense value falls back to the offer's.
    assert read_terms(_terms({}, {DEBIT_NOTE_INTERVAL_KEY: 0.01})).terms.debit_note_interval_s == 1.0
    assert read_terms(_terms({DEBIT_NOTE_INTERVAL_KEY: 60}, {DEBIT_NOTE_INTERVAL_KEY: "soon"})).terms.debit_note_interval_s == 60.0


@pytest.mark.parametrize(
    "offer",
    [
        {"golem.com.pricing.model.linear.coeffs": [0.1, 0.2]},  # no start fee
        {"golem.com.pricing.model.linear.coeffs": [0.1, -0.2, 0.0]},  # a negative price
        {"golem.com.pricing.model.linear.coeffs": "cheap"},
        {"golem.com.usage.vector": None},
    ],
)
def test_an_agreement_without_a_sound_linear_price_is_refused(offer: dict[str, Any]) -> None:
    with pytest.raises(PaymentError, match="no linear price"):
        read_terms(_terms(offer, {}))


def test_an_agreement_without_a_platform_is_refused() -> None:
    terms = _terms({}, {})
    offer = {k: v for k, v in terms.offer_properties.items() if "payment" not in k}
    bare = dataclasses.replace(terms, offer_properties=offer, demand_properties={})
    with pytest.raises(PaymentError, match="names no payment platform"):
        read_terms(bare)
