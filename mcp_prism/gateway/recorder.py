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
from dataclasses import dataclass
from datetime import datetime

from mcp_prism.core.catalog import Catalog
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import UsageEvent
from mcp_prism.gateway.metrics import Metrics
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


class Recorder:
    def __init__(self, store: Store, catalog: Catalog, metrics: Metrics, *, flush_interval: float = 0.2,
                 batch_size: int = 500, max_pending: int = 200_000) -> None:
        self.store, self.catalog, self.metrics = store, catalog, metrics
        self.flush_interval, self.batch_size, self.max_pending = flush_interval, batch_size, max_pending
        self._pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

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
        self.written += written
        self.metrics.queue.set(0)
        return written

    def _trim(self) -> None:
        over = len(self._pending) - self.max_pending
        if over > 0:
            del self._pending[:over]
            self.metrics.dropped.inc(over)
            log.error("gave up %d usage events: the store has refused writes for too long", over)

    def _event(self, o: Outcome) -> UsageEvent:
        cost = self.catalog.cost(o.model, o.tokens, o.ts) if o.model in self.catalog.models else None
        return UsageEvent(
            task_type=o.task_type, model=o.model, provider=o.provider, tokens=o.tokens,
            latency_ms=round(o.latency_ms, 3), ttft_ms=round(o.ttft_ms, 3) if o.ttft_ms is not None else None,
            cost_usd=cost.usd if cost else None, prices=cost.prices if cost else None, ts=o.ts, status=o.status,
            user=o.user, team=o.team, project=o.project, source="gateway", rule_id=o.rule_id,
            rule_version=o.rule_version, id=o.id, prompt=o.prompt, response=o.response,
        )

    def _observe(self, o: Outcome, ev: UsageEvent) -> None:
        m = self.metrics
        labels = (o.provider, o.model, o.task_type, o.team or "")
        m.requests.labels(*labels, o.status).inc()
        m.duration.labels("chat", *labels, o.error_type or "").observe(o.latency_ms / 1000)
        m.overhead.labels(o.route).observe(max(o.latency_ms - o.upstream_ms, 0.0) / 1000)
        if o.ttft_ms is not None:
            m.ttft.labels(*labels).observe(o.ttft_ms / 1000)
        t = o.tokens
        if t.input_tokens or t.output_tokens:
            m.token_usage.labels("input", *labels).observe(t.input_tokens)
            m.token_usage.labels("output", *labels).observe(t.output_tokens)
        for kind, n in (("input", t.input_tokens), ("output", t.output_tokens), ("cached_input", t.cached_input_tokens),
                        ("cache_write", t.cache_write_tokens), ("reasoning", t.reasoning_tokens)):
            if n:
                m.tokens.labels(kind, *labels).inc(n)
        if ev.cost_usd:
            m.cost.labels(*labels).inc(float(ev.cost_usd))
        if o.error_type:
            m.errors.labels(o.error_type, *labels).inc()

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
