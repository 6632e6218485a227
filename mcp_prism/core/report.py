"""Report arithmetic over rollup rows: totals, averages, monthly projection, re-pricing.

Every number a report prints comes from `Totals` built from stored rows by these functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from mcp_prism.core.pricing import TokenUsage, from_picodollars

DAYS_PER_MONTH = Decimal(30)


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    unpriced: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms_sum: float = 0.0
    quality_sum: float = 0.0
    quality_n: int = 0

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Totals:
        return cls(
            requests=int(row["requests"] or 0),
            errors=int(row["errors"] or 0),
            unpriced=int(row["unpriced"] or 0),
            input_tokens=int(row["input_tokens"] or 0),
            cached_input_tokens=int(row["cached_input_tokens"] or 0),
            cache_write_tokens=int(row["cache_write_tokens"] or 0),
            output_tokens=int(row["output_tokens"] or 0),
            reasoning_tokens=int(row["reasoning_tokens"] or 0),
            cost_usd=from_picodollars(row["cost_pico"]),
            latency_ms_sum=float(row["latency_ms_sum"] or 0.0),
            quality_sum=float(row["quality_sum"] or 0.0),
            quality_n=int(row["quality_n"] or 0),
        )

    def add(self, other: Totals) -> None:
        for name in self.__slots__:  # type: ignore[attr-defined]
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def avg_latency_ms(self) -> float | None:
        return self.latency_ms_sum / self.requests if self.requests else None

    @property
    def avg_quality(self) -> float | None:
        return self.quality_sum / self.quality_n if self.quality_n else None

    def average_usage(self) -> TokenUsage:
        """The token profile of one typical request in these totals (rounded to whole tokens)."""
        n = max(self.requests, 1)
        return TokenUsage(
            input_tokens=round(self.input_tokens / n),
            cached_input_tokens=min(round(self.cached_input_tokens / n), round(self.input_tokens / n)),
            cache_write_tokens=min(round(self.cache_write_tokens / n),
                                   round(self.input_tokens / n) - round(self.cached_input_tokens / n)),
            output_tokens=round(self.output_tokens / n),
            reasoning_tokens=min(round(self.reasoning_tokens / n), round(self.output_tokens / n)),
        )


def monthly(cost: Decimal, days: int) -> Decimal:
    """Project a cost observed over `days` days to a 30-day month."""
    if days <= 0:
        return Decimal(0)
    return cost * DAYS_PER_MONTH / Decimal(days)


def repriced(totals: Totals, unit_cost: Callable[[TokenUsage], Decimal | None]) -> Decimal | None:
    """What `totals.requests` requests of the same average profile would cost on another model."""
    if totals.requests == 0:
        return Decimal(0)
    one = unit_cost(totals.average_usage())
    return None if one is None else one * totals.requests


def money(value: Decimal | None, places: int = 2) -> str:
    """Human display of USD: 2 places for big sums, more for sub-cent amounts."""
    if value is None:
        return "unpriced"
    sign, value = ("-" if value < 0 else ""), abs(value)
    if value != 0 and value < Decimal("0.000001"):
        return f"{sign}${value:.2e}"  # below a millionth of a dollar: fixed places would print "$0."
    if value != 0 and value < Decimal("0.01"):
        return f"{sign}${value:.6f}".rstrip("0")
    return f"{sign}${value:,.{places}f}"


def pct(part: Decimal, whole: Decimal) -> float | None:
    return float(part / whole * 100) if whole else None
