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
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from mcp_prism.core.catalog import Catalog, Cost
from mcp_prism.core.classify import Classifier
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.tasks import GENERAL, TaskTypeSpec
from mcp_prism.core.usage import UsageEvent
from mcp_prism.errors import StoreError
from mcp_prism.gateway.metrics import TOKEN_TYPES, Metrics
from mcp_prism.gateway.spool import Spool, decode
from mcp_prism.providers.usage_check import token_count
from mcp_prism.store.sqlite import Store
from mcp_prism.team.budgets import Enforcer, Reservation

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
    reservation: Reservation | None = None  # settled in the transaction that records this outcome
    actual_pico: int = 0  # what the request cost, booked on its budgets
    actual_tokens: int = 0
    seq: int = 0  # arrival order in this recorder: which journal segments hold only written outcomes
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
                 task_types: Mapping[str, TaskTypeSpec] | None = None, enforcer: Enforcer | None = None,
                 spool: Spool | None = None, settle_interval: float = 0.05) -> None:
        """`enforcer`: settle each outcome's budget reservation in the transaction that records it, at most
        `settle_interval` seconds after it arrives. `spool`: journal each outcome as it arrives."""
        self.classifier, self.task_types = classifier, task_types or {}
        self.enforcer, self.spool, self.settle_interval = enforcer, spool, settle_interval
        self._soon = False  # a flush is due within settle_interval (an outcome holds a reservation)
        self._aside: list[tuple[Reservation, int, int]] = []  # reservations of set-aside outcomes
        self._seq = 0
        self._replayed = 0  # outcomes a replay found missing from the store
        self._segments: list[tuple[Path, int]] = []  # sealed journal segments and the last seq each holds
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
        """Take an outcome (journaled first when there is a spool: the gateway calls this before the
        answer's last byte, so an answered request is never lost with the process)."""
        self._seq += 1
        outcome.seq = self._seq
        if self.spool is not None:
            try:
                self.spool.append(outcome)
            except OSError as e:  # a full disk must not fail the answer: it is only less durable
                self.metrics.journal_errors.inc()
                log.error("could not journal usage event %s (it is recorded, but would not survive a crash): %s",
                          outcome.id, e)
        self._pending.append(outcome)
        if len(self._pending) >= self.batch_size:
            self._wake.set()
        elif (outcome.reservation is not None and not outcome.reservation.sliced and not self._soon
              and self._task is not None):
            self._soon = True  # its estimate stays reserved until then: release it soon
            asyncio.get_running_loop().call_later(self.settle_interval, self._wake.set)

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            self._soon = False
            await self.flush()
            if self.spool is not None:
                try:
                    self.spool.sync_if_due()
                except OSError as e:
                    log.error("could not sync the usage journal %s: %s", self.spool.path, e)

    async def flush(self) -> int:
        """Write everything pending now; returns how many events were written."""
        written = 0
        if self.spool is not None and (sealed := self.spool.seal()) is not None:
            self._segments.append((sealed, self._seq))
        while self._pending:
            batch = self._pending[: self.batch_size]
            pairs = self._convert(batch)
            done, failure, rest = await self._write(pairs)
            # the batch leaves the queue but for what is still to write (set-aside events never come back)
            self._pending[: len(batch)] = [o for o, _ in rest]
            for o, ev in done:
                self._observe(o, ev)
            written += len(done)
            self.written += len(done)  # per batch: an early return on a later failure must not forget these
            self._drop_segments()
            if failure is not None:  # keep the rest for the next tick; never lose it silently
                log.error("could not record %d usage events (will retry): %s", len(rest), failure)
                self._trim()
                self.metrics.queue.set(len(self._pending))
                await self._settle_aside()
                return written
        self.metrics.queue.set(0)
        self._drop_segments()
        await self._settle_aside()
        return written

    def _drop_segments(self) -> None:
        """Delete the sealed journal segments whose outcomes have all left the queue (written or set aside)."""
        head = self._pending[0].seq if self._pending else self._seq + 1
        while self._segments and self._segments[0][1] < head:
            assert self.spool is not None
            self.spool.drop(self._segments.pop(0)[0])

    async def _write(self, pairs: list[tuple[Outcome, UsageEvent]], *, replay: bool = False) -> tuple[
            list[tuple[Outcome, UsageEvent]], Exception | None, list[tuple[Outcome, UsageEvent]]]:
        """Write a batch; when the store refuses its data, find the event(s) it refuses and write the rest.
        Returns what was written, the error that stopped the writing (None when nothing did), the rest."""
        try:
            await self._insert(pairs, replay=replay)
            return pairs, None, []
        except Exception as e:
            if _unavailable(e):
                return [], e, pairs
            return await self._isolate(pairs, replay=replay)

    async def _insert(self, pairs: list[tuple[Outcome, UsageEvent]], *, replay: bool = False) -> None:
        """One transaction: the events, and the budget settles of those among them not recorded before."""
        events = [ev for _, ev in pairs]
        enf = self.enforcer
        items = {o.id: (o.reservation, o.actual_pico, o.actual_tokens) for o, _ in pairs if o.reservation is not None}
        if enf is None or not items:
            if replay:
                self._replayed += len(await self.store.insert_events(events, skip_known_ids=True))
            else:
                await self.store.insert_events(events)
            return
        seen: list[Any] = []

        async def then(conn: Any, fresh: list[UsageEvent]) -> None:
            todo = enf.unsettled(items[e.id] for e in fresh if e.id in items)
            seen[:] = await enf.settle_in(conn, todo) if todo else []

        fresh = await self.store.insert_events(events, skip_known_ids=replay, then=then)
        enf.settled(list(items.values()), seen)
        if replay:
            self._replayed += len(fresh)

    async def _settle_aside(self) -> None:
        """Set-aside outcomes are not recorded, but their requests were answered: book their cost anyway."""
        if self._aside and self.enforcer is not None:
            items, self._aside = self._aside, []
            await self.enforcer.settle_many(items)

    async def replay(self) -> int:
        """Record what killed gateways journaled but never wrote (each file once the store has it);
        returns how many outcomes were new to the store."""
        if self.spool is None:
            return 0
        self._replayed = 0
        for path, records in self.spool.orphans():
            outcomes = []
            for rec in records:
                try:
                    outcomes.append(self._decode(rec))
                except (KeyError, TypeError, ValueError) as e:
                    log.warning("skipping an unreadable record in %s: %s", path, e)
            for i in range(0, len(outcomes), self.batch_size):
                done, failure, _ = await self._write(self._convert(outcomes[i:i + self.batch_size]), replay=True)
                self.written += len(done)
                if failure is not None:
                    log.error("could not replay the usage journal %s (kept for the next start): %s", path, failure)
                    break
            else:
                path.unlink(missing_ok=True)
                log.info("replayed the usage journal %s: %d record(s)", path, len(outcomes))
        await self._settle_aside()
        return self._replayed

    def _decode(self, rec: dict[str, Any]) -> Outcome:
        o = decode(rec)
        settle = rec.get("settle")
        if settle and self.enforcer is not None:
            found = [(self.enforcer.by_id.get(i), w) for i, w in zip(settle["budgets"], settle["windows"], strict=True)]
            found = [(b, w) for b, w in found if b is not None]  # a budget removed since: nothing to book
            o.reservation = Reservation([b for b, _ in found], int(settle["estimate"]), [w for _, w in found],
                                        holder=settle["holder"], sliced=bool(settle.get("sliced")))
            o.actual_pico, o.actual_tokens = int(settle["actual"]), int(settle["tokens"])
        return o

    def _convert(self, batch: list[Outcome]) -> list[tuple[Outcome, UsageEvent]]:
        """Outcomes as events; one that cannot become an event is set aside (it never will)."""
        out = []
        for o in batch:
            try:
                out.append((o, self._event(o)))
            except Exception as e:
                self._set_aside(o, e)
        return out

    async def _isolate(self, pairs: list[tuple[Outcome, UsageEvent]], *, replay: bool = False) -> tuple[
            list[tuple[Outcome, UsageEvent]], Exception | None, list[tuple[Outcome, UsageEvent]]]:
        """Write the events one by one: those the store refuses on their own are set aside. Returns what
        was written and, when the store became unavailable meanwhile, that error and the events not tried."""
        done: list[tuple[Outcome, UsageEvent]] = []
        refused: list[tuple[Outcome, UsageEvent, Exception]] = []
        for i, (o, ev) in enumerate(pairs):
            try:
                await self._insert([(o, ev)], replay=replay)
            except Exception as e:
                if _unavailable(e):
                    return done, e, [(r[0], r[1]) for r in refused] + pairs[i:]
                refused.append((o, ev, e))
                continue
            done.append((o, ev))
        if refused and not done and len(pairs) > 1:  # every one refused: the store's fault, not theirs
            return [], refused[0][2], pairs
        for o, _, e in refused:
            self._set_aside(o, e)
        return done, None, []

    def _set_aside(self, o: Outcome, err: BaseException) -> None:
        self.metrics.set_aside.inc()
        log.error("set aside usage event %s (%s %s, status %s): the store refuses it: %s", o.id, o.provider,
                  o.model, o.status, err)
        if self.spool is not None:
            try:
                self.spool.set_aside(o, str(err))
            except (OSError, TypeError, ValueError) as e:
                log.error("could not keep set-aside usage event %s in the journal: %s", o.id, e)
        if o.reservation is not None:
            self._aside.append((o.reservation, max(o.actual_pico, 0), o.actual_tokens))

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
                break
            await asyncio.sleep(0.2)
        if self._pending:
            log.error("shutting down with %d usage events the store would not take%s", len(self._pending),
                      f" (kept in {self.spool.path} for the next start)" if self.spool is not None else "")
        if self.spool is not None:
            self.spool.close(keep=bool(self._pending))


_TOKEN_FIELDS = tuple(f.name for f in fields(TokenUsage))


def _sane(t: TokenUsage) -> bool:
    return all(token_count(getattr(t, f)) is not None for f in _TOKEN_FIELDS) and not t.problems()


def _unavailable(err: BaseException) -> bool:
    """The store could not take anything now (busy, full or unreachable): keep the events and retry.
    Anything else is the store refusing the data itself."""
    return isinstance(err, (StoreError, sqlite3.OperationalError, OSError))
