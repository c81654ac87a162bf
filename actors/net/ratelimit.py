"""A token bucket, to cap what one peer may make a node do per second."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows `rate_per_s` on average with bursts up to `burst`; time is passed in."""

    __slots__ = ("_rate_per_ms", "_burst", "_tokens", "_last_ms")

    def __init__(self, rate_per_s: float, burst: float, now_ms: int) -> None:
        self._rate_per_ms = rate_per_s / 1000.0
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last_ms = now_ms

    def take(self, now_ms: int, count: float = 1.0) -> bool:
        """Spend count tokens if there are enough; False (and spend nothing) if not."""
        elapsed = now_ms - self._last_ms
        if elapsed > 0:
            self._tokens = min(self._burst, self._tokens + elapsed * self._rate_per_ms)
            self._last_ms = now_ms
        if self._tokens >= count:
            self._tokens -= count
            return True
        return False
