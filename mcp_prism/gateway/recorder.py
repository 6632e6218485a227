"""The batched usage writer: the request path hands over an `Outcome` (no await, no I/O); a background
task prices a batch, writes it in one transaction and updates the metrics.

Nothing is lost on a graceful shutdown (`close` drains the queue). When the store is unavailable
(a busy or full disk, a lost connection) the batch is kept and retried; only beyond `max_pending`
events are the oldest given up, counted in `prism_gateway_recorder_dropped_events` and logged.
When the store refuses a batch for its data instead, one bad event must not hold back the others:
the batch is retried event by event and the events refused on their own are set aside (counted in
`prism_gateway_recorder_set_aside_events`, logged with their ids). Token counts are checked again
here (any producer of outcomes, not only the gateway's parsers): a bad one is recorded as
`invalid_usage` with no tokens, never negative or absurd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from mcp_prism.core.catalog import Catalog, Cost
from mcp_prism.core.classify import Classifier
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.tasks import GENERAL, TaskTypeSpec
from mcp_prism.core.usage import UsageEvent
from mcp_prism.errors import StoreError
from mcp_prism.gateway.metrics import TOKEN_TYPES, Metrics
from mcp_prism.providers.usage_check import token_count
from mcp_prism.store.sqlite import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """One gateway request as it ended (ok, error, or cancelled mid-stream)."""

    id: str  # also the x-prism-request-id response header: the handle for record_quality later
    ts: datetime
    task_type: str
    model: str
    provider: str
    tokens: TokenUsage
    status: str
    latency_ms: float
    upstream_ms: float
    route: str  # passthrough | translated
    ttft_ms: float | None = None
    error_type: str | None = None
    rule_id: str | None = None
    rule_version: int | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    prompt: str | None = None
    response: str | None = None
    text: str | None = None  # set when task_type is "" : classify this (the last user message) first
    api_key_id: str | None = None
    cache_hit: bool = False  # answered from the response cache: costs nothing, saves `saved_usd`
    saved_usd: Decimal | None = None
    cost: Cost | None = None  # when the request path priced it already (to settle a budget)


@dataclass(slots=True)
class _Series:
    """The metric children one label combination updates."""

    requests: Any
    duration: Any
    overhead: Any
    ttft: Any
    usage_in: Any
    usage_out: Any
    tokens: tuple[Any, ...]  # in TOKEN_TYPES order
    labels: tuple[str, ...]
    errors: Any
    cost: Any = None  # made on the first priced request: an unpriced model must not show a $0 series


class Recorder:
    def __init__(self, store: Store, catalog: Catalog, metrics: Metrics, *, flush_interval: float = 0.2,
                 batch_size: int = 500, max_pending: int = 200_000, classifier: Classifier | None = None,
                 task_types: Mapping[str, TaskTypeSpec] | None = None) -> None:
        self.classifier, self.task_types = classifier, task_types or {}
        self.store, self.catalog, self.metrics = store, catalog, metrics
        self.flush_interval, self.batch_size, self.max_pending = flush_interval, batch_size, max_pending
        self._pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0
        self._children: dict[tuple[str, ...], _Series] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prism-recorder")

    def record(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write everything pending now; returns how many events were written."""
        written = 0
        while self._pending:
            batch = self._pending[: self.batch_size]
            pairs = self._convert(batch)
            try:
                await self.store.insert_events([ev for _, ev in pairs])
                done, failure, rest = pairs, None, []
            except Exception as e:
                if _unavailable(e):
                    done, failure, rest = [], e, pairs
                else:  # the store refused the data: find the event(s) it refuses, write the rest
                    done, failure, rest = await self._isolate(pairs)
            # the batch leaves the queue but for what is still to write (set-aside events never come back)
            self._pending[: len(batch)] = [o for o, _ in rest]
            for o, ev in done:
                self._observe(o, ev)
            written += len(done)
            self.written += len(done)  # per batch: an early return on a later failure must not forget these
            if failure is not None:  # keep the rest for the next tick; never lose it silently
                log.error("could not record %d usage events (will retry): %s", len(rest), failure)
                self._trim()
                self.metrics.queue.set(len(self._pending))
                return written
        self.metrics.queue.set(0)
        return written

    def _convert(self, batch: list[Outcome]) -> list[tuple[Outcome, UsageEvent]]:
        """Outcomes as events; one that cannot become an event is set aside (it never will)."""
        out = []
        for o in batch:
            try:
                out.append((o, self._event(o)))
            except Exception as e:
                self._set_aside(o, e)
        return out

    async def _isolate(self, pairs: list[tuple[Outcome, UsageEvent]]) -> tuple[
            list[tuple[Outcome, UsageEvent]], Exception | None, list[tuple[Outcome, UsageEvent]]]:
        """Write the events one by one: those the store refuses on their own are set aside. Returns what
        was written and, when the store became unavailable meanwhile, that error and the events not tried."""
        done = []
        for i, (o, ev) in enumerate(pairs):
            try:
                await self.store.insert_events([ev])
            except Exception as e:
                if _unavailable(e):
                    return done, e, pairs[i:]
                self._set_aside(o, e)
                continue
            done.append((o, ev))
        return done, None, []

    def _set_aside(self, o: Outcome, err: BaseException) -> None:
        self.metrics.set_aside.inc()
        log.error("set aside usage event %s (%s %s, status %s): the store refuses it: %s", o.id, o.provider,
                  o.model, o.status, err)

    def _trim(self) -> None:
        over = len(self._pending) - self.max_pending
        if over > 0:
            del self._pending[:over]
            self.metrics.dropped.inc(over)
            log.error("gave up %d usage events: the store has refused writes for too long", over)

    def _event(self, o: Outcome) -> UsageEvent:
        if not o.task_type:  # a request for a named model: its task type is needed only for the record
            o.task_type = self.classifier.classify(o.text or "").task_type if self.classifier else GENERAL
            spec = self.task_types.get(o.task_type)
            if spec is None or not spec.capture_samples:
                o.prompt = o.response = None
        if not _sane(o.tokens):  # never price, store or budget a negative or absurd count
            log.warning("usage event %s had malformed token counts %s: recorded as invalid_usage without tokens",
                        o.id, o.tokens)
            o.tokens, o.status, o.cost = TokenUsage(), "invalid_usage", None
        cost = o.cost
        if cost is not None and cost.usd is not None and cost.usd < 0:
            cost = None
        if cost is None and o.model in self.catalog.models:
            cost = self.catalog.cost(o.model, o.tokens, o.ts)
        if o.cache_hit:
            cost = Cost(Decimal(0), None)
        return UsageEvent(
            task_type=o.task_type, model=o.model, provider=o.provider, tokens=o.tokens,
            latency_ms=round(o.latency_ms, 3), ttft_ms=round(o.ttft_ms, 3) if o.ttft_ms is not None else None,
            cost_usd=cost.usd if cost else None, prices=cost.prices if cost else None, ts=o.ts, status=o.status,
            user=o.user, team=o.team, project=o.project, source="gateway", rule_id=o.rule_id,
            rule_version=o.rule_version, id=o.id, prompt=o.prompt, response=o.response, api_key_id=o.api_key_id,
            cache_hit=o.cache_hit, saved_usd=o.saved_usd,
        )

    def _series(self, o: Outcome) -> _Series:
        key = (o.provider, o.model, o.task_type, o.team or "", o.status, o.error_type or "", o.route)
        found = self._children.get(key)
        if found is None:  # label lookups cost microseconds each: bind a combination's children once
            m, labels = self.metrics, key[:4]
            found = self._children[key] = _Series(
                requests=m.requests.labels(*labels, o.status),
                duration=m.duration.labels("chat", *labels, o.error_type or ""),
                overhead=m.overhead.labels(o.route),
                ttft=m.ttft.labels(*labels),
                usage_in=m.token_usage.labels("input", *labels),
                usage_out=m.token_usage.labels("output", *labels),
                tokens=tuple(m.tokens.labels(kind, *labels) for kind in TOKEN_TYPES),
                labels=labels,
                errors=m.errors.labels(o.error_type, *labels) if o.error_type else None,
            )
        return found

    def _observe(self, o: Outcome, ev: UsageEvent) -> None:
        s = self._series(o)
        s.requests.inc()
        s.duration.observe(o.latency_ms / 1000)
        s.overhead.observe(max(o.latency_ms - o.upstream_ms, 0.0) / 1000)
        if o.ttft_ms is not None:
            s.ttft.observe(o.ttft_ms / 1000)
        t = o.tokens
        if t.input_tokens or t.output_tokens:
            s.usage_in.observe(t.input_tokens)
            s.usage_out.observe(t.output_tokens)
        for child, n in zip(s.tokens, (t.input_tokens, t.output_tokens, t.cached_input_tokens, t.cache_write_tokens,
                                       t.reasoning_tokens), strict=True):
            if n:
                child.inc(n)
        if ev.cost_usd:
            if s.cost is None:
                s.cost = self.metrics.cost.labels(*s.labels)
            s.cost.inc(float(ev.cost_usd))
        if s.errors is not None:
            s.errors.inc()

    async def close(self) -> None:
        """Stop the background task and write what is left (graceful shutdown)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        for _ in range(3):
            await self.flush()
            if not self._pending:
                return
            await asyncio.sleep(0.2)
        if self._pending:
            log.error("shutting down with %d usage events the store would not take", len(self._pending))


def _sane(t: TokenUsage) -> bool:
    counts = (t.input_tokens, t.cached_input_tokens, t.cache_write_tokens, t.output_tokens, t.reasoning_tokens)
    return all(token_count(n) is not None for n in counts) and not t.problems()


def _unavailable(err: BaseException) -> bool:
    """The store could not take anything now (busy, full or unreachable): keep the events and retry.
    Anything else is the store refusing the data itself."""
    return isinstance(err, (StoreError, sqlite3.OperationalError, OSError))
