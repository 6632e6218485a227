"""Budgets, pure: their windows in UTC, the cost a request reserves before its upstream call, the
decision a budget's ledger row implies, and the in-process sliding windows of the rate limits.

Money is integer picodollars here (as in `budget_spend`), so reserve and settle are exact sums.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from mcp_prism.core.pricing import PriceSnapshot, TokenUsage, compute_cost, from_picodollars, to_picodollars
from mcp_prism.errors import InvalidInput

SCOPES = ("key", "user", "team", "project")
PERIODS = ("day", "week", "month")
Scope = Literal["key", "user", "team", "project"]
Period = Literal["day", "week", "month"]

# Output a request may produce when it does not say (no max_tokens): what the reservation assumes.
DEFAULT_OUTPUT_ALLOWANCE = 4096
BYTES_PER_TOKEN = 4  # prompt tokens ~ body bytes / 4: over-counts JSON syntax, so the estimate errs high
NEAR_SOFT_FRACTION = Decimal("0.9")  # with only a hard limit, "near" means 90% of it
RATE_WINDOW_S = 60.0
# The ledger sums picodollars in 64-bit integers (at most ~$9.2M): limits stay well below so that spend,
# reservations and a limit added together can never overflow it.
MAX_LIMIT_USD = Decimal(1_000_000)
MAX_RATE = 1_000_000_000  # rpm / tpm: beyond any provider's quota
INFLIGHT_RETRY_S = 2.0  # a refusal caused by requests in flight: they settle within seconds, not at the reset
ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}


def window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The [start, end) of the budget window holding `now`, in UTC: day from 00:00, week from Monday
    00:00, month from the 1st 00:00. `end` is when the budget resets."""
    now = now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    raise InvalidInput(f"unknown budget period {period!r}: use one of {', '.join(PERIODS)}")


def window_key(start: datetime) -> str:
    """The `budget_spend.window_start` text of a window (its first day)."""
    return start.strftime("%Y-%m-%d")


def output_allowance(data: dict[str, Any]) -> int:
    """The output tokens a request may produce, from its own limit when it gives one."""
    for field in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        v = data.get(field)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return DEFAULT_OUTPUT_ALLOWANCE


def estimate_usage(body_bytes: int, max_output: int) -> TokenUsage:
    return TokenUsage(input_tokens=math.ceil(body_bytes / BYTES_PER_TOKEN), output_tokens=max_output)


def estimate_pico(prices: PriceSnapshot | None, body_bytes: int, max_output: int) -> int:
    """The picodollars a request reserves: its prompt (all uncached) and its whole output allowance
    at the model's prices; 0 for an unpriced model (its recorded cost is unknown too)."""
    if prices is None:
        return 0
    return to_picodollars(compute_cost(estimate_usage(body_bytes, max_output), prices))


def usd(pico: int) -> Decimal:
    return from_picodollars(pico)


def pico(amount: Decimal | None) -> int | None:
    return None if amount is None else to_picodollars(amount)


@dataclass(frozen=True, slots=True)
class Budget:
    id: int
    scope: str
    subject: str
    period: str
    soft_pico: int | None
    hard_pico: int | None
    rpm: int | None
    tpm: int | None
    downgrade: bool

    @property
    def money(self) -> bool:
        return self.soft_pico is not None or self.hard_pico is not None

    def label(self) -> str:
        return f"the {ADJECTIVE.get(self.period, self.period)} budget of {self.scope} {self.subject}"

    def near_soft(self, spent_plus_reserved: int) -> bool:
        """Close enough to the limit to route to a cheaper model (budgets with `downgrade`)."""
        if self.soft_pico is not None:
            return spent_plus_reserved >= self.soft_pico
        if self.hard_pico is not None:
            return spent_plus_reserved >= int(self.hard_pico * NEAR_SOFT_FRACTION)
        return False

    def remaining_pico(self, spent: int, reserved: int) -> int | None:
        limit = self.hard_pico if self.hard_pico is not None else self.soft_pico
        return None if limit is None else max(0, limit - spent - reserved)


def state_of(b: Budget, spent: int, reserved: int) -> str:
    """ok | soft_exceeded | exhausted (the hard limit leaves nothing for another request)."""
    if b.hard_pico is not None and spent + reserved >= b.hard_pico:
        return "exhausted"
    if b.soft_pico is not None and spent >= b.soft_pico:
        return "soft_exceeded"
    return "ok"


def held_by_inflight(b: Budget, spent: int, reserved: int, estimate: int) -> bool:
    """The request would fit once the requests in flight settle (at most their estimates come back). Read
    after a refusal, `reserved` may already be 0: the refusal itself shows some were in flight then."""
    return b.hard_pico is not None and spent + estimate <= b.hard_pico


def exhausted_message(b: Budget, spent: int, reserved: int, estimate: int, resets_at: datetime) -> str:
    left = b.remaining_pico(spent, reserved) or 0
    if held_by_inflight(b, spent, reserved, estimate):
        # `left` may read more than `estimate` here: requests settled between the refusal and this read
        return (f"{b.label()} is held by requests in flight: ${usd(spent):.6f} of ${usd(b.hard_pico or 0):.6f} is "
                f"spent and ${usd(reserved):.6f} is reserved by requests still running, so this request (which may "
                f"cost up to ${usd(estimate):.6f}) could not be admitted now. Retry in "
                f"{INFLIGHT_RETRY_S:.0f} s, when they have settled.")
    return (f"{b.label()} is exhausted for this request: ${usd(left):.6f} of ${usd(b.hard_pico or 0):.6f} is left "
            f"(${usd(spent):.6f} spent, ${usd(reserved):.6f} reserved by requests in flight) and this request "
            f"may cost up to ${usd(estimate):.6f}; it resets at {resets_at.strftime('%Y-%m-%dT%H:%M:%SZ')}. "
            "Lower max_tokens, wait for the reset, or ask for a higher limit (mcp-prism budget set).")


def retry_after_s(b: Budget, spent: int, reserved: int, estimate: int, resets_at: datetime, now: datetime) -> float:
    """Seconds until the request could pass: a few when requests in flight hold the budget, else the reset."""
    if held_by_inflight(b, spent, reserved, estimate):
        return INFLIGHT_RETRY_S
    return max(1.0, (resets_at - now).total_seconds())


class RateWindow:
    """Requests and tokens of the last minute for one budget, in this process (a replica each)."""

    __slots__ = ("requests", "token_sum", "tokens")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.token_sum = 0

    def _expire(self, now: float) -> None:
        edge = now - RATE_WINDOW_S
        while self.requests and self.requests[0] <= edge:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= edge:
            self.token_sum -= self.tokens.popleft()[1]

    def check(self, rpm: int | None, tpm: int | None, now: float) -> tuple[str, float] | None:
        """None when a request may go now; else ("rpm" | "tpm", seconds until it may)."""
        self._expire(now)
        if rpm is not None and len(self.requests) >= rpm:
            return "rpm", self.requests[0] + RATE_WINDOW_S - now
        if tpm is not None and self.token_sum >= tpm:
            return "tpm", self.tokens[0][0] + RATE_WINDOW_S - now if self.tokens else RATE_WINDOW_S
        return None

    def admit(self, now: float) -> None:
        self.requests.append(now)

    def used(self, tokens: int, now: float) -> None:
        """Tokens are counted when the answer is in (what it really used)."""
        if tokens > 0:
            self.tokens.append((now, tokens))
            self.token_sum += tokens
