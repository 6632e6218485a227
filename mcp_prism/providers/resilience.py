"""Reliability for upstream calls: retries with backoff, ordered fallbacks, a circuit breaker per deployment.

`send_resilient` walks an ordered list of targets (the routed model, then the rule's fallbacks). Each
target gets up to `RetryPolicy.attempts` tries while the provider answers with a retryable status
(429, 500, 502, 503, 504, 529) or the transport fails (timeouts, refused connections: `WireError` 504 /
502 from `ProviderClient.send`); anything else — success or a client-side 4xx — is returned at once,
because another model would reject the same bad request too. Waits are exponential with full jitter
(AWS "Exponential Backoff And Jitter"), or the provider's own retry-after when it is short enough;
a longer retry-after moves on to the next target instead of holding the client.

`CircuitBreaker` remembers consecutive failures per (provider, model): after `failures` in a row the
deployment is skipped for `cooldown` seconds, then one request is let through as a trial (half-open)
and its outcome closes or re-opens the circuit. When every target's circuit is open the first is tried
anyway: an answer, even a failure, beats an error the gateway made up.

Only the status line and headers are awaited, never the body, so streamed answers pass through
untouched: once a response is returned nothing is retried. Responses given up on are closed here.
Pure asyncio, no I/O of its own: `send`, `sleep` and the clock are injected (tests drive them).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import httpx

from mcp_prism.core.config_schema import checked
from mcp_prism.errors import ConfigError
from mcp_prism.providers.wire import WireError

T = TypeVar("T")
Key = tuple[str, str]  # (provider, model): one deployment
CircuitState = Literal["closed", "open", "half_open"]
# first: the first try of the request; retry: the same target again; fallback: the first try of a later
# target; skipped: a target passed over because its circuit is open.
AttemptKind = Literal["first", "retry", "fallback", "skipped"]
# Gauge values for `prism_gateway_circuit_state{provider,model}`.
CIRCUIT_STATE_VALUE: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


# ---------------------------------------------------------------- retry policy
@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 2  # tries per target, the first included (1 = no retries, fallbacks only)
    backoff_base: float = 0.5  # seconds; the n-th retry waits up to base * 2**(n-1) ...
    backoff_max: float = 8.0  # ... capped here
    max_retry_after: float = 10.0  # honour a provider's retry-after up to this; longer moves to the next target
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def retryable(self, status: int) -> bool:
        return status in self.retry_statuses

    def backoff(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(retry-1))] for the `retry`-th retry (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(0, retry - 1))
        return ceiling * self.random()

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before the `retry`-th retry of the same target; None: don't, move on."""
        if retry_after is not None:
            return max(0.0, retry_after) if retry_after <= self.max_retry_after else None
        return self.backoff(retry)


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The provider's requested wait: `retry-after-ms` (OpenAI), `retry-after` in seconds or as an HTTP
    date. None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ---------------------------------------------------------------- circuit breaker
@dataclass(slots=True)
class _Deployment:
    failures: int = 0  # consecutive
    opened_at: float | None = None  # set while open (or half-open: open with the cooldown over)
    trial_since: float | None = None  # a half-open trial is in flight since then


class CircuitBreaker:
    """Consecutive-failure circuit breaker per deployment key. Single event loop, no awaits inside, so
    no lock is needed; `clock` is injectable (monotonic seconds)."""

    def __init__(self, failures: int = 5, cooldown: float = 30.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown <= 0:
            raise ValueError("failures must be >= 1 and cooldown > 0")
        self.failures = failures
        self.cooldown = cooldown
        self._clock = clock
        self._d: dict[Key, _Deployment] = {}

    def state(self, key: Key) -> CircuitState:
        d = self._d.get(key)
        if d is None or d.opened_at is None:
            return "closed"
        return "half_open" if self._clock() - d.opened_at >= self.cooldown else "open"

    def states(self) -> dict[Key, CircuitState]:
        """Every deployment seen so far and its state now (for the metrics gauge)."""
        return {k: self.state(k) for k in self._d}

    def allow(self, key: Key) -> bool:
        """May a request go to `key` now? In half-open state this claims the one trial request; a trial
        that never reports back (cancelled and not released) expires after another cooldown."""
        d = self._d.setdefault(key, _Deployment())
        if d.opened_at is None:
            return True
        now = self._clock()
        if now - d.opened_at < self.cooldown:
            return False
        if d.trial_since is not None and now - d.trial_since < self.cooldown:
            return False  # someone else's trial is in flight
        d.trial_since = now
        return True

    def success(self, key: Key) -> None:
        self._d[key] = _Deployment()

    def failure(self, key: Key) -> None:
        d = self._d.setdefault(key, _Deployment())
        d.failures += 1
        if d.opened_at is not None or d.failures >= self.failures:  # a failed trial re-opens at once
            d.opened_at = self._clock()
        d.trial_since = None

    def release(self, key: Key) -> None:
        """Give back a half-open trial whose outcome is unknown (the request was cancelled)."""
        d = self._d.get(key)
        if d is not None:
            d.trial_since = None


# ---------------------------------------------------------------- sending
@dataclass(slots=True)
class Attempt(Generic[T]):
    """One try (or one skip) of one target."""

    target: T
    status: int | None  # the provider's HTTP status; None when no response came
    error: str | None  # WireError kind, "circuit_open" (skipped) or None
    waited: float  # seconds slept before this try
    seconds: float = 0.0  # until the status line arrived (or the transport gave up)
    kind: AttemptKind = "first"

    @property
    def skipped(self) -> bool:
        return self.kind == "skipped"


@dataclass(slots=True)
class Attempted(Generic[T]):
    """The target that answered for good and its (unread) response, or the last failure when all failed."""

    target: T
    response: httpx.Response
    attempts: list[Attempt[T]]

    @property
    def ok(self) -> bool:
        return self.response.status_code < 400

    @property
    def retries(self) -> int:
        """Tries beyond the first (retries and fallbacks alike; skips not counted)."""
        return max(0, sum(1 for a in self.attempts if not a.skipped) - 1)


async def send_resilient(
    targets: Sequence[T],
    build: Callable[[T], httpx.Request],
    send: Callable[[httpx.Request], Awaitable[httpx.Response]],
    *,
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    key: Callable[[T], Key],
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    on_attempt: Callable[[Attempt[T]], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Attempted[T]:
    """Send to the first target that answers for good (see the module doc). `build` is called once per
    target (a WireError from it, e.g. no API key, moves on to the next target); the request is reused
    for that target's retries. When every target failed: the last failure response is returned (the
    client sees the provider's own status and body), or the last WireError raised when the last
    failure had no response."""
    if not targets:
        raise ValueError("send_resilient needs at least one target")
    attempts: list[Attempt[T]] = []
    held: httpx.Response | None = None  # the latest failure response, kept open in case all fail
    held_target: T | None = None
    last_error: WireError | None = None

    tried = False  # has any target been tried (built or sent) yet

    def note(a: Attempt[T], n: int = 1) -> None:
        nonlocal tried
        if a.error == "circuit_open":
            a.kind = "skipped"
        else:
            a.kind = "retry" if n > 1 else "fallback" if tried else "first"
            tried = True
        attempts.append(a)
        if on_attempt is not None:
            on_attempt(a)

    async def drop_held() -> None:
        nonlocal held
        if held is not None:
            await held.aclose()
            held = None

    async def run(target: T, k: Key) -> Attempted[T] | None:
        """Try one target; an Attempted when it answered for good, None to move on."""
        nonlocal held, held_target, last_error
        try:
            request = build(target)
        except WireError as e:
            note(Attempt(target, None, e.kind, 0.0))
            await drop_held()
            last_error = e
            return None
        waited = 0.0
        for n in range(1, policy.attempts + 1):
            t0 = clock()
            retry_after: float | None
            try:
                response = await send(request)
            except WireError as e:
                note(Attempt(target, None, e.kind, waited, clock() - t0), n)
                await drop_held()
                last_error = e
                if not policy.retryable(e.status):
                    breaker.release(k)
                    raise
                breaker.failure(k)
                retry_after = e.retry_after
            else:
                status = response.status_code
                if not policy.retryable(status):
                    note(Attempt(target, status, None, waited, clock() - t0), n)
                    await drop_held()
                    # A 4xx is the request's fault, not the deployment's: it proves the deployment is up.
                    breaker.success(k)
                    return Attempted(target, response, attempts)
                note(Attempt(target, status, "rate_limited" if status == 429 else "provider_error", waited,
                             clock() - t0), n)
                await drop_held()
                held, held_target, last_error = response, target, None
                breaker.failure(k)
                retry_after = retry_after_seconds(response.headers)
            if n == policy.attempts or breaker.state(k) != "closed":
                return None
            delay = policy.delay(n, retry_after)
            if delay is None:
                return None
            await sleep(delay)
            waited = delay
        return None

    current: Key | None = None
    try:
        open_skipped: list[T] = []
        sent = False
        for target in targets:
            k = key(target)
            if not breaker.allow(k):
                note(Attempt(target, None, "circuit_open", 0.0))
                open_skipped.append(target)
                continue
            current = k
            done = await run(target, k)
            current = None
            sent = True
            if done is not None:
                return done
        if not sent and open_skipped:  # every circuit open: an answer beats an error we make up
            target = open_skipped[0]
            current = key(target)
            done = await run(target, current)
            current = None
            if done is not None:
                return done
    except BaseException:
        if current is not None:
            breaker.release(current)
        await drop_held()
        raise
    if last_error is None and held is not None:
        return Attempted(held_target, held, attempts)  # type: ignore[arg-type]
    await drop_held()
    assert last_error is not None
    raise last_error


def ordered_targets(first: T, rest: Iterable[T], name: Callable[[T], str]) -> list[T]:
    """`first`, then `rest` in order, without repeats (a rule may list its primary among its fallbacks)."""
    seen = {name(first)}
    out = [first]
    for t in rest:
        if name(t) not in seen:
            seen.add(name(t))
            out.append(t)
    return out


# ---------------------------------------------------------------- config
class Resilience(NamedTuple):
    policy: RetryPolicy
    breaker: CircuitBreaker


_RETRY_KEYS = {"attempts", "backoff_base_seconds", "backoff_max_seconds", "max_retry_after_seconds"}
_CIRCUIT_KEYS = {"failures", "cooldown_seconds"}


def _table(parent: Mapping[str, Any], name: str, where: str, known: set[str]) -> Mapping[str, Any]:
    raw = parent.get(name, {})
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table ([{where}] in the config file)")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return raw


def _number(table: Mapping[str, Any], name: str, where: str, default: float, low: float, high: float, *,
            integer: bool = False, low_open: bool = False) -> float:
    value = table.get(name, default)
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) \
            or not (low < value if low_open else low <= value) or value > high:
        span = f"{'above' if low_open else 'from'} {low:g} {'up ' if low_open else ''}to {high:g}"
        raise ConfigError(f"{where}.{name} must be {kind} {span}, not {value!r}")
    return value


def from_config(user_config: Mapping[str, Any], *, clock: Callable[[], float] = time.monotonic) -> Resilience:
    """`[gateway.retries] attempts, backoff_base_seconds, backoff_max_seconds, max_retry_after_seconds` and
    `[gateway.circuit] failures, cooldown_seconds`; defaults when absent."""
    gateway = checked(user_config).get("gateway", {})
    if not isinstance(gateway, Mapping):
        raise ConfigError("gateway must be a table ([gateway] in the config file)")
    d = RetryPolicy()
    r = _table(gateway, "retries", "gateway.retries", _RETRY_KEYS)
    attempts = int(_number(r, "attempts", "gateway.retries", d.attempts, 1, 10, integer=True))
    base = float(_number(r, "backoff_base_seconds", "gateway.retries", d.backoff_base, 0, 60))
    cap = float(_number(r, "backoff_max_seconds", "gateway.retries", max(d.backoff_max, base), 0, 600))
    if cap < base:
        raise ConfigError(f"gateway.retries.backoff_max_seconds ({cap:g}) must be at least backoff_base_seconds "
                          f"({base:g})")
    max_after = float(_number(r, "max_retry_after_seconds", "gateway.retries", d.max_retry_after, 0, 600))
    c = _table(gateway, "circuit", "gateway.circuit", _CIRCUIT_KEYS)
    failures = int(_number(c, "failures", "gateway.circuit", 5, 1, 1000, integer=True))
    cooldown = float(_number(c, "cooldown_seconds", "gateway.circuit", 30.0, 0, 3600, low_open=True))
    return Resilience(RetryPolicy(attempts, base, cap, max_after), CircuitBreaker(failures, cooldown, clock=clock))
