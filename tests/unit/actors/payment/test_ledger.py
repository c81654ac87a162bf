"""Payment rules: prices from usage, document checks, allocations, statuses, and never paying twice."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.payment.ledger import (
    FINAL_STATUSES,
    STATUS_TRANSITIONS,
    STATUSES,
    WEI_PER_GLM,
    AgreementAccount,
    Allocation,
    AllocationError,
    InvalidPaymentTransitionError,
    PaymentError,
    PaymentTerms,
    Tolerance,
    amount_due_wei,
    check_debit_note,
    check_invoice,
    check_status_move,
    glm_to_wei,
)
from protocol import payment
from tests.unit.protocol.samples import MALLORY, PLATFORM, PROVIDER, REQUESTOR, agreement_terms

COEFFS = (0.1, 0.01, 1.0)  # GLM per cpu-second, per second, start fee
AGREEMENT = agreement_terms().agreement_id
TERMS = PaymentTerms(AGREEMENT, PROVIDER.node_id, REQUESTOR.node_id, PLATFORM, COEFFS, mid_agreement_payments=True)


def note(total_wei: int, usage: tuple[float, ...] = (2.0, 30.0), due: int | None = None, issuer=PROVIDER, **kw) -> payment.DebitNote:
    fields = dict(
        agreement_id=AGREEMENT, activity_id="ac", recipient_id=REQUESTOR.node_id, payment_platform=PLATFORM,
        total_amount_due_wei=total_wei, usage_counter_vector=usage, timestamp_ms=1_000, payment_due_ms=due,
    )
    fields.update(kw)
    return payment.make_debit_note(issuer, **fields)


def inv(amount_wei: int, **kw) -> payment.Invoice:
    fields = dict(
        agreement_id=AGREEMENT, activity_ids=("ac",), recipient_id=REQUESTOR.node_id, payment_platform=PLATFORM,
        amount_wei=amount_wei, payment_due_ms=5_000, timestamp_ms=2_000,
    )
    fields.update(kw)
    return payment.make_invoice(PROVIDER, **fields)


# -- amounts ---------------------------------------------------------------------------


def test_amount_is_coefficients_times_usage_plus_start_fee() -> None:
    assert amount_due_wei(COEFFS, (2.0, 30.0)) == 15 * WEI_PER_GLM // 10


def test_amount_of_no_usage_is_the_start_fee() -> None:
    assert amount_due_wei([0.5, 0.25, 0.125], (0.0, 0.0)) == WEI_PER_GLM // 8


def test_amount_is_exact_in_wei_where_floats_are_not() -> None:
    # 0.1 + 0.2 != 0.3 in floats; in wei the price is exactly 0.3 GLM.
    assert amount_due_wei([0.1, 0.2, 0.0], (1.0, 1.0)) == 3 * WEI_PER_GLM // 10
    assert amount_due_wei([1e-18, 0.0], (3.0,)) == 3


def test_amount_rounds_down_to_whole_wei() -> None:
    # 0.025/3600 GLM per second for one second is 6944444444444.445 wei (as repr'd): pay ...444.
    per_s = 0.025 / 3600
    assert amount_due_wei([per_s, 0.0], (1.0,)) == 6_944_444_444_444
    assert amount_due_wei([1e-19, 0.0], (9.0,)) == 0
    assert glm_to_wei("0.0000000000000000019") == 1


def test_amount_beyond_64_bits_is_exact() -> None:
    assert amount_due_wei([1000.0, 0.0], (1e9,)) == 10**12 * WEI_PER_GLM


@pytest.mark.parametrize(
    ("coeffs", "usage"),
    [([0.1, 1.0], (1.0, 2.0)), ([0.1, 0.2, 1.0], (1.0,)), ([-0.1, 0.0], (1.0,)), ([0.1, 0.0], (float("nan"),)),
     ([float("inf"), 0.0], (1.0,)), ([0.1, 0.0], (-1.0,))],
)
def test_amount_refuses_bad_vectors(coeffs, usage) -> None:
    with pytest.raises(ValueError):
        amount_due_wei(coeffs, usage)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=4),
    st.floats(0, 1e6, allow_nan=False),
)
def test_amount_is_monotonic_in_usage_and_matches_decimal(coeffs: list[float], extra: float) -> None:
    usage = tuple(float(i) for i in range(len(coeffs) - 1))
    base = amount_due_wei(coeffs, usage)
    exact = sum((Decimal(repr(c)) * Decimal(repr(u)) for c, u in zip(coeffs, usage)), Decimal(repr(coeffs[-1])))
    assert base == int(exact * WEI_PER_GLM)  # non-negative, so int() truncation is rounding down
    if usage:
        more = (usage[0] + extra, *usage[1:])
        assert amount_due_wei(coeffs, more) >= base


# -- debit note and invoice checks -----------------------------------------------------------


def test_debit_note_at_the_agreed_price_is_accepted() -> None:
    assert check_debit_note(note(amount_due_wei(COEFFS, (2.0, 30.0))), TERMS, (2.0, 30.0)).accepted


def test_debit_note_within_tolerance_of_usage_seen_is_accepted() -> None:
    # The provider's snapshot is a second newer than what the requestor saw.
    usage = (2.0, 31.0)
    verdict = check_debit_note(note(amount_due_wei(COEFFS, usage), usage), TERMS, (2.0, 30.0), Tolerance(0.05))
    assert verdict.accepted


def test_debit_note_over_tolerance_is_rejected_as_incorrect_amount() -> None:
    usage = (20.0, 300.0)
    n = note(amount_due_wei(COEFFS, usage), usage)
    verdict = check_debit_note(n, TERMS, (2.0, 30.0), Tolerance(0.05))
    assert not verdict.accepted
    assert verdict.reason == "IncorrectAmount"
    assert n.debit_note_id in verdict.message


def test_debit_note_above_its_own_usage_is_rejected() -> None:
    verdict = check_debit_note(note(100 * WEI_PER_GLM, (2.0, 30.0)), TERMS, (2000.0, 30000.0))
    assert verdict.reason == "IncorrectAmount"
    assert "its own usage" in verdict.message


def test_absolute_tolerance_covers_small_early_differences() -> None:
    n = note(amount_due_wei(COEFFS, (0.0, 2.0)), (0.0, 2.0))
    assert not check_debit_note(n, TERMS, (0.0, 0.0), Tolerance(0.0)).accepted
    assert check_debit_note(n, TERMS, (0.0, 0.0), Tolerance(0.0, absolute_wei=WEI_PER_GLM // 50)).accepted


def test_debit_note_with_due_date_without_mid_agreement_payments_is_unsolicited() -> None:
    terms = dataclasses.replace(TERMS, mid_agreement_payments=False)
    verdict = check_debit_note(note(WEI_PER_GLM, due=9_000), terms, (2.0, 30.0))
    assert verdict.reason == "UnsolicitedService"


@pytest.mark.parametrize(
    "changes",
    [{"agreement_id": "other"}, {"recipient_id": MALLORY.node_id}, {"payment_platform": "erc20-polygon-glm"}],
)
def test_debit_note_for_other_parties_is_unsolicited(changes) -> None:
    assert check_debit_note(note(WEI_PER_GLM, **changes), TERMS, (2.0, 30.0)).reason == "UnsolicitedService"


def test_debit_note_from_another_issuer_is_unsolicited() -> None:
    assert check_debit_note(note(WEI_PER_GLM, issuer=MALLORY), TERMS, (2.0, 30.0)).reason == "UnsolicitedService"


def test_debit_note_with_wrong_vector_length_is_incorrect_amount() -> None:
    assert check_debit_note(note(WEI_PER_GLM, (1.0,)), TERMS, (2.0, 30.0)).reason == "IncorrectAmount"


def test_invoice_up_to_the_accepted_debit_notes_is_accepted_without_usage() -> None:
    assert check_invoice(inv(5 * WEI_PER_GLM), TERMS, 5 * WEI_PER_GLM, None).accepted
    assert check_invoice(inv(4 * WEI_PER_GLM), TERMS, 5 * WEI_PER_GLM, None).accepted


def test_invoice_above_accepted_without_usage_is_rejected() -> None:
    assert check_invoice(inv(5 * WEI_PER_GLM + 1), TERMS, 5 * WEI_PER_GLM, None).reason == "IncorrectAmount"


def test_invoice_checked_against_final_usage() -> None:
    final = (2.0, 30.0)
    assert check_invoice(inv(amount_due_wei(COEFFS, final)), TERMS, 0, final).accepted
    assert check_invoice(inv(2 * amount_due_wei(COEFFS, final)), TERMS, 0, final).reason == "IncorrectAmount"


def test_invoice_for_unknown_agreement_is_unsolicited() -> None:
    assert check_invoice(inv(1, agreement_id="nope"), TERMS, 0, None).reason == "UnsolicitedService"


# -- allocations -------------------------------------------------------------------------


def alloc(total: int = 100, timeout_ms: int | None = 10_000) -> Allocation:
    return Allocation("al", REQUESTOR.node_id, PLATFORM, total_wei=total, timeout_ms=timeout_ms)


def test_reserve_and_spend_move_money_from_remaining() -> None:
    a = alloc().reserve(60, 0)
    assert (a.reserved_wei, a.remaining_wei) == (60, 40)
    a = a.spend(50, 0)
    assert (a.spent_wei, a.reserved_wei, a.remaining_wei) == (50, 10, 40)


def test_overdrawing_an_allocation_is_refused() -> None:
    a = alloc().reserve(90, 0)
    with pytest.raises(AllocationError, match="al has 10 wei left"):
        a.reserve(11, 0)
    with pytest.raises(AllocationError):
        a.spend(101, 0)


def test_amend_cannot_go_below_spent_and_reserved() -> None:
    a = alloc().reserve(30, 0).spend(20, 0)
    assert a.amend(30, 0).total_wei == 30
    with pytest.raises(AllocationError, match="cannot go down"):
        a.amend(29, 0)


def test_released_allocation_pays_its_reservations_but_reserves_nothing() -> None:
    a = alloc().reserve(30, 0).release(5)
    assert a.release(6) is a
    assert a.spend(30, 7).spent_wei == 30
    with pytest.raises(AllocationError, match="released"):
        a.reserve(1, 7)
    with pytest.raises(AllocationError):
        a.spend(31, 7)
    with pytest.raises(AllocationError):
        a.amend(500, 7)


def test_expired_allocation_refuses_new_reservations() -> None:
    a = alloc(timeout_ms=10)
    assert a.expire(9) is a
    with pytest.raises(AllocationError, match="expired"):
        a.reserve(1, 10)
    assert a.expire(10).state == "expired"


def test_allocation_refuses_negative_amounts() -> None:
    for op in ("reserve", "spend", "unreserve"):
        with pytest.raises(AllocationError):
            getattr(alloc(), op)(-1, 0)
    with pytest.raises(AllocationError):
        Allocation("x", "a", PLATFORM, total_wei=10, spent_wei=11)


_ops = st.lists(
    st.tuples(st.sampled_from(["reserve", "unreserve", "spend", "amend", "release", "expire"]), st.integers(-5, 2**70)),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**70), _ops)
def test_no_operation_sequence_overdraws_an_allocation(total: int, ops) -> None:
    a = alloc(total, timeout_ms=30)
    for now_ms, (op, amount) in enumerate(ops):
        try:
            if op in ("reserve", "unreserve", "spend"):
                a = getattr(a, op)(amount, now_ms)
            elif op == "amend":
                a = a.amend(amount, now_ms)
            else:
                a = getattr(a, op)(now_ms)
        except AllocationError:
            pass
        assert 0 <= a.spent_wei <= a.spent_wei + a.reserved_wei <= a.total_wei
        assert a.remaining_wei >= 0


# -- statuses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new"),
    [("Issued", "Received"), ("Received", "Accepted"), ("Received", "Rejected"), ("Rejected", "Accepted"),
     ("Accepted", "Settled"), ("Accepted", "Failed"), ("Failed", "Settled"), ("Received", "Cancelled")],
)
def test_legal_status_moves(current: str, new: str) -> None:
    assert check_status_move("d1", current, new) is True


@pytest.mark.parametrize(
    ("current", "new"),
    [("Accepted", "Rejected"), ("Settled", "Accepted"), ("Cancelled", "Received"), ("Received", "Settled"),
     ("Rejected", "Settled"), ("Received", "Issued"), ("Received", "Paid")],
)
def test_illegal_status_moves_are_refused(current: str, new: str) -> None:
    with pytest.raises(InvalidPaymentTransitionError, match="d1"):
        check_status_move("d1", current, new)


def test_repeated_status_is_a_duplicate_not_an_error() -> None:
    for status in STATUSES:
        assert check_status_move("d1", status, status) is False


def test_final_statuses_lead_nowhere() -> None:
    assert FINAL_STATUSES == {"Settled", "Cancelled"}
    assert all(nxt <= STATUSES for nxt in STATUS_TRANSITIONS.values())


# -- the account of an agreement ---------------------------------------------------------------


def test_lower_debit_note_after_a_higher_one_is_a_no_op() -> None:
    acc = AgreementAccount("ag").accept_debit_note("d2", 80, payment_due=True)
    assert acc.accept_debit_note("d1", 50, payment_due=True) is acc
    assert acc.to_pay_wei() == 80


def test_duplicate_invoice_is_idempotent_and_a_second_invoice_is_refused() -> None:
    acc = AgreementAccount("ag").accept_invoice("i1", 100)
    assert acc.accept_invoice("i1", 100) is acc
    with pytest.raises(PaymentError, match="already has invoice i1"):
        acc.accept_invoice("i2", 100)


def test_invoice_before_the_last_debit_note_pays_the_invoice() -> None:
    acc = AgreementAccount("ag").accept_debit_note("d1", 40, True).accept_invoice("i1", 100)
    acc = acc.accept_debit_note("d2", 90, True)  # arrives late
    assert acc.to_pay_wei() == 100


def test_debit_notes_without_due_date_trigger_no_payment() -> None:
    assert AgreementAccount("ag").accept_debit_note("d1", 40).to_pay_wei() == 0


def test_paying_more_than_is_due_is_refused() -> None:
    acc = AgreementAccount("ag").accept_debit_note("d1", 40, True).pay(40)
    assert acc.to_pay_wei() == 0
    with pytest.raises(PaymentError, match="only 0 wei"):
        acc.pay(1)
    assert acc.accept_invoice("i1", 100).to_pay_wei() == 60


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("note"), st.integers(0, 10**21), st.booleans()),
            st.tuples(st.just("invoice"), st.integers(0, 10**21), st.booleans()),
            st.tuples(st.just("pay"), st.integers(0, 10**21), st.booleans()),
        ),
        max_size=30,
    )
)
def test_out_of_order_and_duplicate_documents_never_pay_beyond_the_invoice(events) -> None:
    acc = AgreementAccount("ag")
    paid = 0
    for i, (what, amount, flag) in enumerate(events):
        if what == "note":
            acc = acc.accept_debit_note(f"d{amount}", amount, payment_due=flag)
        elif what == "invoice":
            try:
                acc = acc.accept_invoice("i1" if flag else f"i{i}", amount)
            except PaymentError:
                pass
        else:
            # The payer pays what is due (all of it, or a part); paying more is refused.
            part = min(amount, acc.to_pay_wei()) if flag else acc.to_pay_wei()
            acc = acc.pay(part)
            paid += part
        assert acc.paid_wei == paid
        if acc.invoice_wei is not None:
            assert paid <= max(acc.invoice_wei, acc.due_wei)
            assert paid + acc.to_pay_wei() == max(acc.invoice_wei, paid)
        else:
            assert paid <= acc.due_wei
