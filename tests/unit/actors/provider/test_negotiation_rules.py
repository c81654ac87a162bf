"""The provider's negotiation rules beyond capacity and expiration: allow and block lists, payment terms in the offer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors.provider.offer import check_demand, check_requestor, offer_properties, payment_platform
from node.settings import ProviderSettings, load_settings
from tests.unit.protocol.samples import ALICE, BOB, T0_MS

__all__: list[str] = []

CAROL = "0x" + "c0" * 20


def provider(tmp_path: Path, **overrides: Any) -> ProviderSettings:
    return load_settings(tmp_path, {f"provider.{k}": v for k, v in overrides.items()}, environ={}).provider


def demand(cfg: ProviderSettings) -> dict[str, Any]:
    return {
        "golem.srv.comp.expiration": T0_MS + 3_600_000,
        f"golem.com.payment.platform.{payment_platform(cfg)}.address": BOB.node_id,
    }


def test_with_no_lists_anyone_is_dealt_with(tmp_path: Path) -> None:
    cfg = provider(tmp_path)
    assert check_demand(cfg, demand(cfg), T0_MS, 0, BOB.node_id).accept


def test_a_blocked_requestor_is_refused_whatever_its_case(tmp_path: Path) -> None:
    cfg = provider(tmp_path, block_requestors=[BOB.node_id.upper().replace("0X", "0x")])
    verdict = check_demand(cfg, demand(cfg), T0_MS, 0, BOB.node_id)
    assert not verdict.accept
    assert verdict.reason == f"requestor {BOB.node_id} is blocked by this provider"
    assert check_demand(cfg, demand(cfg), T0_MS, 0, ALICE.node_id).accept


def test_with_an_allow_list_only_those_on_it_are_dealt_with(tmp_path: Path) -> None:
    cfg = provider(tmp_path, allow_requestors=[ALICE.node_id, CAROL])
    assert check_requestor(cfg, ALICE.node_id).accept
    verdict = check_demand(cfg, demand(cfg), T0_MS, 0, BOB.node_id)
    assert not verdict.accept and verdict.reason == f"requestor {BOB.node_id} is not on this provider's allow-list"


def test_the_block_list_wins_over_the_allow_list(tmp_path: Path) -> None:
    cfg = provider(tmp_path, allow_requestors=[BOB.node_id], block_requestors=[BOB.node_id])
    assert "blocked" in check_requestor(cfg, BOB.node_id).reason


def test_the_requestor_is_checked_before_capacity(tmp_path: Path) -> None:
    cfg = provider(tmp_path, block_requestors=[BOB.node_id], max_agreements=1)
    assert "blocked" in check_demand(cfg, demand(cfg), T0_MS, 1, BOB.node_id).reason


def test_payment_terms_and_account_go_into_the_offer(tmp_path: Path) -> None:
    cfg = provider(
        tmp_path, debit_note_interval_s=60.0, debit_note_accept_timeout_s=30.0, payment_timeout_s=300.0, account=CAROL
    )
    props = offer_properties(cfg, ALICE.node_id, "n", "public")
    assert props["golem.com.scheme.payu.debit-note.interval-sec?"] == 60.0
    assert props["golem.com.payment.debit-notes.accept-timeout?"] == 30
    assert props["golem.com.scheme.payu.payment-timeout-sec?"] == 300.0
    assert props[f"golem.com.payment.platform.{payment_platform(cfg)}.address"] == CAROL


def test_without_an_account_the_node_itself_is_paid(tmp_path: Path) -> None:
    cfg = provider(tmp_path)
    props = offer_properties(cfg, ALICE.node_id, "n", "public")
    assert props[f"golem.com.payment.platform.{payment_platform(cfg)}.address"] == ALICE.node_id
    assert props["golem.com.scheme.payu.debit-note.interval-sec?"] == 120.0
    assert props["golem.com.payment.debit-notes.accept-timeout?"] == 240


@pytest.mark.parametrize("bad", ["bob", "0x123", "0x" + "zz" * 20])
def test_a_list_entry_that_is_no_node_id_fails_at_load(tmp_path: Path, bad: str) -> None:
    from protocol.errors import SettingsError

    with pytest.raises(SettingsError, match="is not a node id"):
        provider(tmp_path, block_requestors=[bad])


INTERVAL = "golem.com.scheme.payu.debit-note.interval-sec?"
ACCEPT = "golem.com.payment.debit-notes.accept-timeout?"
PAY = "golem.com.scheme.payu.payment-timeout-sec?"


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [
        (INTERVAL, 1, True), (INTERVAL, 86400.0, True), (INTERVAL, 0.5, False), (INTERVAL, 90000, False),
        (INTERVAL, "60", False), (ACCEPT, 5, True), (ACCEPT, 4.9, False), (PAY, 120.0, True), (PAY, 0, False),
    ],
)
def test_payment_terms_a_demand_sets_must_be_within_golems_bounds(tmp_path: Path, key: str, value: Any, ok: bool) -> None:
    cfg = provider(tmp_path)
    verdict = check_demand(cfg, {**demand(cfg), key: value}, T0_MS, 0, BOB.node_id)
    assert verdict.accept is ok
    if not ok:
        assert verdict.reason.startswith(f"the demand's {key} = {value!r} is outside")


def test_an_agreement_over_ten_hours_needs_mid_agreement_payments(tmp_path: Path) -> None:
    cfg = provider(tmp_path)
    long = {**demand(cfg), "golem.srv.comp.expiration": T0_MS + 11 * 3_600_000}
    verdict = check_demand(cfg, long, T0_MS, 0)
    assert not verdict.accept
    assert verdict.reason == f"an agreement of 11.0 h needs mid-agreement payments (over 10 h): the demand names no {PAY}"
    assert check_demand(cfg, {**long, PAY: 300}, T0_MS, 0).accept
    assert check_demand(cfg, {**demand(cfg), "golem.srv.comp.expiration": T0_MS + 9 * 3_600_000}, T0_MS, 0).accept
