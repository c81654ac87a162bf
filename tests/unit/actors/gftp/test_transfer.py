"""Chunk bookkeeping of gftp transfers: what is requested when, answers in any order, resume, retries."""

from __future__ import annotations

import threading

import pytest

from actors.gftp.errors import FileTooLargeError, HashMismatchError, TransferError, TransferTimeoutError
from actors.gftp.transfer import BadResponseError, DownloadPlan, Pending, ReorderBuffer, UploadPlan

DATA = bytes(range(256)) * 4  # 1024 bytes
CHUNK = 100


def download(start: int = 0, window: int = 3, max_bytes: int = 10_000) -> DownloadPlan:
    return DownloadPlan(start_offset=start, chunk_bytes=CHUNK, window=window, max_bytes=max_bytes)


def answer(plan: DownloadPlan, offset: int, size: int, data: bytes = DATA, now_ms: int = 0) -> list[bytes]:
    return plan.on_chunk(offset, data[offset:offset + size], len(data), now_ms)


def run_to_end(plan: DownloadPlan, data: bytes = DATA) -> bytes:
    """Answer every request in order until the plan is done; returns the bytes handed out."""
    out = b""
    for _ in range(1000):
        if plan.done:
            return out
        for offset, size in plan.to_request(0):
            out += b"".join(plan.on_chunk(offset, data[offset:offset + size], len(data), 0))
    raise AssertionError("the plan never finished")


# ---- DownloadPlan -----------------------------------------------------------------------------


def test_first_request_is_a_single_probe_until_the_size_is_known() -> None:
    plan = download()
    assert plan.to_request(0) == [(0, CHUNK)]
    assert plan.to_request(0) == []  # still waiting for the probe
    assert answer(plan, 0, CHUNK) == [DATA[:CHUNK]]
    assert plan.total_size == len(DATA)
    assert plan.to_request(0) == [(100, CHUNK), (200, CHUNK), (300, CHUNK)]


def test_window_limits_requests_in_flight() -> None:
    plan = download(window=2)
    answer(plan, *plan.to_request(0)[0])
    first = plan.to_request(0)
    assert len(first) == 2 and plan.in_flight == 2
    assert plan.to_request(0) == []
    answer(plan, *first[0])
    assert plan.to_request(0) == [(300, CHUNK)]


def test_answers_out_of_order_come_out_in_order() -> None:
    plan = download(window=3)
    answer(plan, *plan.to_request(0)[0])
    reqs = plan.to_request(0)
    assert answer(plan, *reqs[2]) == []
    assert answer(plan, *reqs[1]) == []
    assert plan.written == 100
    assert answer(plan, *reqs[0]) == [DATA[100:200], DATA[200:300], DATA[300:400]]
    assert plan.written == 400


def test_held_answers_count_against_the_window() -> None:
    plan = download(window=2)
    answer(plan, *plan.to_request(0)[0])
    reqs = plan.to_request(0)
    answer(plan, *reqs[1])  # held: the chunk before it is missing
    assert plan.to_request(0) == []  # one in flight + one held = window


def test_whole_file_comes_out_exactly_once() -> None:
    assert run_to_end(download()) == DATA


def test_last_chunk_is_shorter() -> None:
    data = DATA[:250]
    plan = download()
    assert run_to_end(plan, data) == data
    assert plan.total_size == 250


def test_duplicate_answer_of_a_retried_request_is_ignored() -> None:
    plan = download()
    answer(plan, *plan.to_request(0)[0])
    offset, size = plan.to_request(0)[0]
    assert answer(plan, offset, size) == [DATA[100:200]]
    assert answer(plan, offset, size) == []
    assert plan.written == 200


def test_answer_to_nothing_requested_is_ignored() -> None:
    plan = download()
    assert plan.on_chunk(500, b"x" * 100, len(DATA), 0) == []
    assert plan.total_size is None


def test_file_over_max_bytes_is_refused_at_the_probe() -> None:
    plan = download(max_bytes=len(DATA) - 1)
    with pytest.raises(FileTooLargeError, match="1024 bytes"):
        answer(plan, *plan.to_request(0)[0])


def test_file_of_exactly_max_bytes_is_fetched() -> None:
    assert run_to_end(download(max_bytes=len(DATA))) == DATA


def test_resume_starts_at_the_prefix_and_only_asks_for_the_rest() -> None:
    plan = download(start=500)
    assert plan.to_request(0) == [(500, CHUNK)]
    out = b"".join(answer(plan, 500, CHUNK))
    requested = []
    for _ in range(100):
        reqs = plan.to_request(0)
        if not reqs:
            break
        for offset, size in reqs:
            requested.append(offset)
            out += b"".join(answer(plan, offset, size))
    assert plan.done
    assert out == DATA[500:]
    assert requested == list(range(600, len(DATA), CHUNK))


def test_resume_of_a_complete_prefix_finishes_after_the_probe() -> None:
    plan = download(start=len(DATA))
    offset, size = plan.to_request(0)[0]
    assert plan.on_chunk(offset, b"", len(DATA), 0) == []
    assert plan.done and plan.written == len(DATA)


def test_prefix_longer_than_the_file_is_a_hash_mismatch() -> None:
    plan = download(start=2000)
    offset, size = plan.to_request(0)[0]
    with pytest.raises(HashMismatchError, match="partial download"):
        plan.on_chunk(offset, b"", len(DATA), 0)


def test_empty_file_is_done_after_the_probe() -> None:
    plan = download()
    offset, _ = plan.to_request(0)[0]
    assert plan.on_chunk(offset, b"", 0, 0) == []
    assert plan.done and plan.to_request(0) == []


def test_size_that_changes_between_answers_is_a_bad_response() -> None:
    plan = download()
    answer(plan, *plan.to_request(0)[0])
    offset, size = plan.to_request(0)[0]
    with pytest.raises(BadResponseError, match="changed"):
        plan.on_chunk(offset, DATA[offset:offset + size], len(DATA) + 1, 0)


def test_chunk_of_the_wrong_length_is_a_bad_response() -> None:
    plan = download()
    plan.to_request(0)
    with pytest.raises(BadResponseError, match="expected 100"):
        plan.on_chunk(0, DATA[:99], len(DATA), 0)


def test_unanswered_requests_are_retried_after_the_retry_time_only() -> None:
    plan = download()
    answer(plan, *plan.to_request(0)[0])
    reqs = plan.to_request(now_ms=1000)
    answer(plan, *reqs[0])
    assert plan.overdue(now_ms=1999, retry_after_ms=1000) == []
    assert plan.overdue(now_ms=2000, retry_after_ms=1000) == reqs[1:]
    assert plan.overdue(now_ms=2500, retry_after_ms=1000) == []  # counted as sent again at 2000
    assert plan.overdue(now_ms=3000, retry_after_ms=1000) == reqs[1:]


def test_lost_probe_is_retried() -> None:
    plan = download()
    plan.to_request(now_ms=0)
    assert plan.overdue(now_ms=5000, retry_after_ms=3000) == [(0, CHUNK)]


def test_bad_plan_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        DownloadPlan(start_offset=-1, chunk_bytes=CHUNK, window=1, max_bytes=10)
    with pytest.raises(ValueError):
        DownloadPlan(start_offset=0, chunk_bytes=0, window=1, max_bytes=10)


# ---- UploadPlan -------------------------------------------------------------------------------


def test_upload_sends_a_window_in_offset_order() -> None:
    plan = UploadPlan(total_size=250, chunk_bytes=CHUNK, window=2)
    assert plan.to_send(0) == [(0, 100), (100, 100)]
    assert plan.to_send(0) == []
    assert plan.on_ack(100)
    assert plan.to_send(0) == [(200, 50)]
    assert not plan.all_acked
    assert plan.on_ack(0) and plan.on_ack(200)
    assert plan.all_acked and plan.acked_bytes == 250


def test_upload_duplicate_ack_is_ignored() -> None:
    plan = UploadPlan(total_size=100, chunk_bytes=CHUNK, window=2)
    plan.to_send(0)
    assert plan.on_ack(0)
    assert not plan.on_ack(0)
    assert plan.acked_bytes == 100


def test_empty_upload_is_acknowledged_at_once() -> None:
    plan = UploadPlan(total_size=0, chunk_bytes=CHUNK, window=2)
    assert plan.to_send(0) == [] and plan.all_acked


def test_upload_unacknowledged_chunks_are_resent() -> None:
    plan = UploadPlan(total_size=300, chunk_bytes=CHUNK, window=3)
    plan.to_send(now_ms=0)
    plan.on_ack(100)
    assert plan.overdue(now_ms=2999, retry_after_ms=3000) == []
    assert plan.overdue(now_ms=3000, retry_after_ms=3000) == [(0, 100), (200, 100)]


# ---- ReorderBuffer ----------------------------------------------------------------------------


def test_reorder_buffer_writes_in_order() -> None:
    buf = ReorderBuffer(max_ahead_bytes=1000)
    assert buf.add(200, DATA[200:300]) == []
    assert buf.add(100, DATA[100:200]) == []
    assert buf.held_bytes == 200
    assert buf.add(0, DATA[:100]) == [DATA[:100], DATA[100:200], DATA[200:300]]
    assert buf.written == 300 and buf.held_bytes == 0


def test_reorder_buffer_ignores_resent_chunks() -> None:
    buf = ReorderBuffer(max_ahead_bytes=1000)
    buf.add(0, DATA[:100])
    assert buf.add(0, DATA[:100]) == []
    buf.add(200, DATA[200:300])
    assert buf.add(200, DATA[200:300]) == []
    assert buf.held_bytes == 100


def test_reorder_buffer_refuses_partial_overlap_and_far_ahead_chunks() -> None:
    buf = ReorderBuffer(max_ahead_bytes=300)
    buf.add(0, DATA[:100])
    with pytest.raises(ValueError, match="overlaps"):
        buf.add(50, DATA[50:150])
    with pytest.raises(ValueError, match="ahead"):
        buf.add(350, DATA[350:450])
    assert buf.add(300, DATA[300:400]) == []  # exactly at the limit


# ---- Pending ----------------------------------------------------------------------------------


def test_pending_returns_the_result_set_from_another_thread() -> None:
    pending = Pending("fetching x")
    timer = threading.Timer(0.02, pending.resolve, args=("done",))
    timer.start()
    assert pending.wait(5.0) == "done"
    timer.join()


def test_pending_raises_the_error() -> None:
    pending = Pending("fetching x")
    pending.fail(FileTooLargeError("too big"))
    with pytest.raises(FileTooLargeError, match="too big"):
        pending.wait(1.0)


def test_pending_first_outcome_wins() -> None:
    pending = Pending("fetching x")
    pending.resolve(1)
    pending.fail(TransferError("late"))
    pending.resolve(2)
    assert pending.wait(0) == 1


def test_pending_times_out_naming_what() -> None:
    with pytest.raises(TransferTimeoutError, match="fetching x did not finish"):
        Pending("fetching x").wait(0.01)
