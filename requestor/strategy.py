"""Which providers to deal with and in what order: prices read from offers, filters and rank preferences.

    strategy = LowestPrice(max_price=Prices(cpu_per_hour=0.5))   # the cheapest first, none above the cap
    strategy = MostThreads()                                       # the most cpu threads first
    strategy = Custom(lambda offer: offer.threads - offer.price_per_hour)  # any callable: higher is better
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from requestor.errors import ConfigurationError

__all__ = ["ProviderOffer", "Prices", "Strategy", "LowestPrice", "MostThreads", "Custom", "as_strategy"]

CPU_SEC = "golem.usage.cpu_sec"
DURATION_SEC = "golem.usage.duration_sec"


@dataclass(frozen=True, slots=True)
class Prices:
    """Price caps in GLM; None leaves that price uncapped."""

    start: float | None = None
    cpu_per_hour: float | None = None
    env_per_hour: float | None = None

    def __post_init__(self) -> None:
        for name in ("start", "cpu_per_hour", "env_per_hour"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
                raise ConfigurationError(f"price cap {name} must be a non-negative number or None, not {value!r}")


@dataclass(frozen=True, slots=True)
class ProviderOffer:
    """A provider's proposal as the strategy sees it."""

    proposal_id: str
    provider_id: str
    properties: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.properties.get("golem.node.id.name") or self.provider_id[:10])

    @property
    def threads(self) -> int:
        value = self.properties.get("golem.inf.cpu.threads", self.properties.get("golem.inf.cpu.cores", 0))
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    def coefficient(self, usage: str) -> float | None:
        """The linear price per unit of a usage counter (GLM per second), None when it is not priced."""
        vector = self.properties.get("golem.com.usage.vector")
        coeffs = self.properties.get("golem.com.pricing.model.linear.coeffs")
        if not isinstance(vector, list) or not isinstance(coeffs, list) or usage not in vector:
            return None
        i = vector.index(usage)
        return float(coeffs[i]) if i < len(coeffs) else None

    @property
    def start_price(self) -> float:
        coeffs = self.properties.get("golem.com.pricing.model.linear.coeffs")
        return float(coeffs[-1]) if isinstance(coeffs, list) and coeffs else 0.0

    @property
    def cpu_per_hour(self) -> float:
        return (self.coefficient(CPU_SEC) or 0.0) * 3600

    @property
    def env_per_hour(self) -> float:
        return (self.coefficient(DURATION_SEC) or 0.0) * 3600

    @property
    def price_per_hour(self) -> float:
        """An hour of one busy thread and the activity: what ranks by price."""
        return self.cpu_per_hour + self.env_per_hour

    def problem(self, caps: Prices | None) -> str | None:
        """Why this offer is unusable (a malformed price or one above a cap), None when it is fine."""
        if self.properties.get("golem.com.pricing.model", "linear") != "linear":
            return f"pricing model {self.properties.get('golem.com.pricing.model')!r} is not linear"
        coeffs = self.properties.get("golem.com.pricing.model.linear.coeffs")
        vector = self.properties.get("golem.com.usage.vector")
        if not isinstance(coeffs, list) or not isinstance(vector, list) or len(coeffs) != len(vector) + 1:
            return "its linear coefficients do not match its usage vector"
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 for c in coeffs):
            return "its prices are not all non-negative numbers"
        if caps is None:
            return None
        for name, value, cap in (
            ("start", self.start_price, caps.start),
            ("cpu_per_hour", self.cpu_per_hour, caps.cpu_per_hour),
            ("env_per_hour", self.env_per_hour, caps.env_per_hour),
        ):
            if cap is not None and value > cap + 1e-12:
                return f"its {name} price {value:g} GLM is above the cap of {cap:g}"
        return None


class Strategy:
    """Scores offers: higher is better; `problem` says why an offer is refused outright."""

    def __init__(self, max_price: Prices | None = None) -> None:
        self.max_price = max_price

    def problem(self, offer: ProviderOffer) -> str | None:
        return offer.problem(self.max_price)

    def score(self, offer: ProviderOffer) -> float:
        return 0.0


class LowestPrice(Strategy):
    """The cheapest hour of work first (ties: more threads)."""

    def score(self, offer: ProviderOffer) -> float:
        return -offer.price_per_hour - offer.start_price + offer.threads * 1e-9


class MostThreads(Strategy):
    """The most cpu threads first (ties: the cheaper)."""

    def score(self, offer: ProviderOffer) -> float:
        return offer.threads - offer.price_per_hour * 1e-6


class Custom(Strategy):
    """Any callable from an offer to a number, higher better."""

    def __init__(self, score: Callable[[ProviderOffer], float], max_price: Prices | None = None) -> None:
        if not callable(score):
            raise ConfigurationError(f"a custom strategy needs a callable, not {type(score).__name__}")
        super().__init__(max_price)
        self._score = score

    def score(self, offer: ProviderOffer) -> float:
        return float(self._score(offer))


def as_strategy(value: Strategy | str | Callable[[ProviderOffer], float] | None, max_price: Prices | None = None) -> Strategy:
    """A strategy from a name ("lowest_price", "most_threads"), a callable, a Strategy or None (lowest price)."""
    if value is None or value == "lowest_price":
        return LowestPrice(max_price)
    if value == "most_threads":
        return MostThreads(max_price)
    if isinstance(value, Strategy):
        if max_price is not None:
            value.max_price = max_price
        return value
    if callable(value):
        return Custom(value, max_price)
    raise ConfigurationError(f"strategy {value!r} is not lowest_price, most_threads, a Strategy or a callable")
