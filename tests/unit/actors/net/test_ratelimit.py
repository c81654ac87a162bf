"""The token bucket: a burst, then refusal until time refills it at the configured rate."""

from __future__ import annotations

from actors.net.ratelimit import TokenBucket

__all__: list[str] = []

T0 = 1_000_000


def drain(bucket: TokenBucket, now_ms: int) -> int:
    """Take single tokens until refused; how many were taken."""
    taken = 0
    while bucket.take(now_ms):
        taken += 1
    return taken


def test_full_burst_is_allowed_then_refused() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, now_ms=T0)
    assert [bucket.take(T0) for _ in range(6)] == [True] * 5 + [False]


def test_tokens_come_back_at_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, now_ms=T0)
    drain(bucket, T0)
    assert not bucket.take(T0 + 99)  # 0.99 of a token
    assert bucket.take(T0 + 100)
    assert not bucket.take(T0 + 100)
    assert drain(bucket, T0 + 400) == 3  # 300 ms at 10/s


def test_idle_time_never_fills_beyond_burst() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, now_ms=T0)
    drain(bucket, T0)
    assert drain(bucket, T0 + 3_600_000) == 5


def test_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=3, now_ms=T0)
    assert bucket.take(T0)
    assert not bucket.take(T0, count=3)
    assert not bucket.take(T0, count=3)
    assert bucket.take(T0, count=2)
    assert not bucket.take(T0)


def test_take_of_several_tokens_spends_them_all() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=5, now_ms=T0)
    assert bucket.take(T0, count=4)
    assert drain(bucket, T0) == 1


def test_clock_going_back_adds_no_tokens() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=2, now_ms=T0)
    drain(bucket, T0)
    assert not bucket.take(T0 - 10_000)
    assert bucket.take(T0 + 100)
