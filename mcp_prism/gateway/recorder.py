"""The batched usage writer: the request path hands over an `Outcome` (no await, no I/O); a background
task prices a batch, writes it in one transaction and updates the metrics.

Nothing is lost on a graceful shutdown (`close` drains the queue). When the store refuses a batch
(e.g. the disk is full) the batch is kept and retried; only beyond `max_pending` events are the
oldest given up, counted in `prism_gateway_recorder_dropped_events` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
from mcp_prism.gateway.metrics import TOKEN_TYPES, Metrics
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
    router: tuple[int, float] | None = None  # a mixed rule's learned router version and hardness score


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
            try:
                events = [self._event(o) for o in batch]
                await self.store.insert_events(events)
            except Exception as e:  # keep the batch for the next tick; never lose it silently
                log.error("could not record %d usage events (will retry): %s", len(batch), e)
                self._trim()
                self.metrics.queue.set(len(self._pending))
                return written
            del self._pending[: len(batch)]
            for o, ev in zip(batch, events, strict=True):
                self._observe(o, ev)
            written += len(batch)
            self.written += len(batch)  # per batch: an early return on a later failure must not forget these
        self.metrics.queue.set(0)
        return written

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
        cost = o.cost
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
            router_version=o.router[0] if o.router else None, router_score=o.router[1] if o.router else None,
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
