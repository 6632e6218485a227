"""The cost engine: token usage x the price in force at the request's time, in Decimal.

Conventions (the same as genai-prices, so the two can be cross-checked):
- `input_tokens` counts every prompt token, including cache reads and cache writes
  (OpenAI's `prompt_tokens`; for Anthropic add `cache_read_input_tokens` and
  `cache_creation_input_tokens` to its `input_tokens`).
- `output_tokens` counts every generated token, including reasoning tokens
  (OpenAI's `completion_tokens`; for Gemini add `thoughts_token_count`).
- A price tier ("above 200k input tokens") applies to *all* tokens of the request once the
  request's total input crosses it, as providers bill it.
- Batch: the provider's batch discount multiplies the whole bill.
- Cache writes: `cache_write_tokens` counts every cache write; `cache_write_1h_tokens` is the part of
  them written with a one-hour lifetime (Anthropic's `cache_creation.ephemeral_1h_input_tokens`), billed
  at `cache_write_1h` (genai-prices' `cache_write_1h_mtok`). The rest are 5-minute writes at `cache_write`.
  A price list without a one-hour rate bills one-hour writes at 2x the input rate, Anthropic's rule
  (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#pricing); only Anthropic reports them.

No rounding happens here; `to_picodollars` quantises for storage sums.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

MTOK = Decimal(1_000_000)
PICO = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per million tokens; `tiers` are (threshold, price) cliffs on total input tokens."""

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()

    def at(self, total_input_tokens: int) -> Decimal:
        for start, price in reversed(self.tiers):
            if total_input_tokens > start:
                return price
        return self.base

    def to_json(self) -> Any:
        if not self.tiers:
            return str(self.base)
        return {"base": str(self.base), "tiers": [[s, str(p)] for s, p in self.tiers]}

    @classmethod
    def from_json(cls, value: Any) -> Rate:
        if isinstance(value, dict):
            return cls(Decimal(value["base"]), tuple((int(s), Decimal(p)) for s, p in value["tiers"]))
        return cls(Decimal(str(value)))

    def scaled(self, factor: Decimal) -> Rate:
        return Rate(self.base * factor, tuple((s, p * factor) for s, p in self.tiers))


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the one-hour part of cache_write_tokens

    @property
    def cache_write_5m_tokens(self) -> int:
        return self.cache_write_tokens - self.cache_write_1h_tokens

    def problems(self) -> list[str]:
        """What is inconsistent about these counts, in words a caller can act on."""
        out = []
        for name in ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
                     "reasoning_tokens", "cache_write_1h_tokens"):
            if getattr(self, name) < 0:
                out.append(f"{name} must be >= 0")
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            out.append(
                "cached_input_tokens + cache_write_tokens exceed input_tokens; input_tokens must count "
                "every prompt token, cached ones included"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            out.append("cache_write_1h_tokens exceed cache_write_tokens; cache_write_tokens must count every "
                       "cache write, one-hour ones included")
        if self.reasoning_tokens > self.output_tokens:
            out.append("reasoning_tokens exceed output_tokens; output_tokens must include reasoning tokens")
        return out


_OPTIONAL = ("cached_input", "cache_write", "reasoning", "cache_write_1h")
ONE_HOUR_WRITE_FACTOR = Decimal(2)  # x the input rate, where a price list has no one-hour write price


@dataclass(frozen=True, slots=True)
class PriceSnapshot:
    """The prices one request was billed at. Missing rates fall back as providers bill:
    cached reads and cache writes at the input price, reasoning at the output price, one-hour cache
    writes at twice the input price (Anthropic's rule)."""

    input: Rate
    output: Rate
    cached_input: Rate | None = None
    cache_write: Rate | None = None
    reasoning: Rate | None = None
    batch_discount: Decimal = Decimal(0)
    source: str = "genai-prices"
    extra: tuple[tuple[str, str], ...] = field(default=())
    cache_write_1h: Rate | None = None

    def to_json(self) -> str:
        data: dict[str, Any] = {"input": self.input.to_json(), "output": self.output.to_json()}
        for name in _OPTIONAL:
            rate = getattr(self, name)
            if rate is not None:
                data[name] = rate.to_json()
        data["batch_discount"] = str(self.batch_discount)
        data["source"] = self.source
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PriceSnapshot:
        data = json.loads(text)
        opt = {k: Rate.from_json(data[k]) for k in _OPTIONAL if k in data}
        return cls(
            input=Rate.from_json(data["input"]),
            output=Rate.from_json(data["output"]),
            batch_discount=Decimal(data.get("batch_discount", "0")),
            source=data.get("source", "unknown"),
            **opt,
        )

    def with_discount(self, fraction: Decimal, source: str) -> PriceSnapshot:
        """A negotiated discount: every rate times (1 - fraction)."""
        factor = Decimal(1) - fraction
        return PriceSnapshot(
            input=self.input.scaled(factor),
            output=self.output.scaled(factor),
            cached_input=self.cached_input.scaled(factor) if self.cached_input else None,
            cache_write=self.cache_write.scaled(factor) if self.cache_write else None,
            reasoning=self.reasoning.scaled(factor) if self.reasoning else None,
            cache_write_1h=self.cache_write_1h.scaled(factor) if self.cache_write_1h else None,
            batch_discount=self.batch_discount,
            source=source,
        )


def compute_cost(usage: TokenUsage, prices: PriceSnapshot, *, batch: bool = False) -> Decimal:
    """Exact USD cost of one request."""
    n_in = usage.input_tokens
    cached_rate = prices.cached_input or prices.input
    write_rate = prices.cache_write or prices.input
    plain_in = n_in - usage.cached_input_tokens - usage.cache_write_tokens
    total = (
        plain_in * prices.input.at(n_in)
        + usage.cached_input_tokens * cached_rate.at(n_in)
        + usage.cache_write_5m_tokens * write_rate.at(n_in)
    )
    if usage.cache_write_1h_tokens:
        hour_rate = prices.cache_write_1h or prices.input.scaled(ONE_HOUR_WRITE_FACTOR)
        total += usage.cache_write_1h_tokens * hour_rate.at(n_in)
    if prices.reasoning is not None:
        total += (usage.output_tokens - usage.reasoning_tokens) * prices.output.at(n_in)
        total += usage.reasoning_tokens * prices.reasoning.at(n_in)
    else:
        total += usage.output_tokens * prices.output.at(n_in)
    cost = total / MTOK
    if batch and prices.batch_discount:
        cost *= Decimal(1) - prices.batch_discount
    return cost


def to_picodollars(cost: Decimal) -> int:
    """Integer picodollars (1e-12 USD) for exact sums in SQL."""
    return int(cost.quantize(PICO, rounding=ROUND_HALF_EVEN).scaleb(12))


def from_picodollars(value: int | None) -> Decimal:
    # normalised and without an exponent, so it prints as "0.006", not "0.006000000000"
    return Decimal(format(Decimal(value or 0).scaleb(-12).normalize(), "f"))
