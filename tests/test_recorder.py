"""Recorder: outcomes batched into a real SQLite store, priced, and observed in the Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mcp_prism.core.catalog import Catalog
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import UsageEvent
from mcp_prism.gateway.metrics import Metrics
from mcp_prism.gateway.recorder import Outcome, Recorder
from mcp_prism.store.sqlite import Store

pytestmark = pytest.mark.anyio

PRICED = ("claude-haiku-4-5", "anthropic")
PRICED_2 = ("gpt-4o-mini", "openai")
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "p.db")
    try:
        yield s
    finally:
        await s.close()


def outcome(i: int, model: str = PRICED[0], provider: str = PRICED[1], *, status: str = "ok",
            tokens: TokenUsage | None = None, **kw: Any) -> Outcome:
    fields: dict[str, Any] = dict(
        id=f"req-{i:05d}", ts=NOW, task_type="chat", model=model, provider=provider,
        tokens=tokens or TokenUsage(input_tokens=100 + i, output_tokens=10 + i), status=status,
        latency_ms=120.1234 + i, upstream_ms=119.0 + i, route="passthrough",
    )
    fields.update(kw)
    return Outcome(**fields)


async def rows(store: Store) -> list[sqlite3.Row]:
    return await store.fetch("SELECT * FROM usage_events ORDER BY id")


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def fail_times(store: Store, monkeypatch: pytest.MonkeyPatch, n: int) -> list[int]:
    """Make `store.insert_events` fail with a disk error `n` times, then work; returns the batch sizes tried."""
    real = store.insert_events
    tried: list[int] = []

    async def flaky(events: Iterable[UsageEvent]) -> list[UsageEvent]:
        batch = list(events)
        tried.append(len(batch))
        if len(tried) <= n:
            raise sqlite3.OperationalError("disk I/O error")
        return await real(batch)

    monkeypatch.setattr(store, "insert_events", flaky)
    return tried


async def test_flush_writes_priced_events(store: Store, catalog: Catalog) -> None:
    m = Metrics()
    rec = Recorder(store, catalog, m)
    outs = [
        outcome(0, ttft_ms=45.67891, team="core", user="ann", project="p1"),
        outcome(1, *PRICED_2, status="error", error_type="upstream_5xx"),
        outcome(2, tokens=TokenUsage(input_tokens=1000, cached_input_tokens=400, output_tokens=50)),
    ]
    for o in outs:
        rec.record(o)
    assert await rec.flush() == 3
    assert rec.written == 3
    got = await rows(store)
    assert [r["id"] for r in got] == [o.id for o in outs]
    for r, o in zip(got, outs, strict=True):
        expected = catalog.cost(o.model, o.tokens, o.ts).usd
        assert expected is not None and expected > 0
        assert Decimal(r["cost_usd"]) == expected
        assert r["price_snapshot_id"] is not None
        assert (r["model"], r["provider"], r["status"]) == (o.model, o.provider, o.status)
        assert (r["input_tokens"], r["cached_input_tokens"], r["output_tokens"]) == (
            o.tokens.input_tokens, o.tokens.cached_input_tokens, o.tokens.output_tokens)
        assert r["latency_ms"] == pytest.approx(round(o.latency_ms, 3))
        assert r["source"] == "gateway"
        assert r["task_type"] == "chat"
        assert datetime.fromisoformat(r["ts"]) == o.ts
    assert got[0]["ttft_ms"] == pytest.approx(45.679)
    assert got[1]["ttft_ms"] is None
    assert (got[0]["team"], got[0]["user"], got[0]["project"]) == ("core", "ann", "p1")
    assert await rec.flush() == 0  # nothing left pending
    assert sample(m, "prism_gateway_recorder_queue") == 0


async def test_batch_larger_than_batch_size_is_split(store: Store, catalog: Catalog,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tried = fail_times(store, monkeypatch, 0)
    rec = Recorder(store, catalog, Metrics(), batch_size=7)
    for i in range(23):
        rec.record(outcome(i))
    assert await rec.flush() == 23
    assert tried == [7, 7, 7, 2]
    assert [r["id"] for r in await rows(store)] == [f"req-{i:05d}" for i in range(23)]


async def test_close_drains_everything_pending(store: Store, catalog: Catalog) -> None:
    rec = Recorder(store, catalog, Metrics(), flush_interval=10)  # only close() can get them written in time
    rec.start()
    for i in range(1000):
        rec.record(outcome(i))
    t0 = asyncio.get_running_loop().time()
    await rec.close()
    assert asyncio.get_running_loop().time() - t0 < 2
    assert await store.count_events() == 1000
    assert rec.written == 1000


async def test_background_task_flushes_on_interval(store: Store, catalog: Catalog) -> None:
    rec = Recorder(store, catalog, Metrics(), flush_interval=0.02)
    rec.start()
    try:
        rec.record(outcome(0))
        for _ in range(100):
            if await store.count_events() == 1:
                break
            await asyncio.sleep(0.01)
        assert await store.count_events() == 1
    finally:
        await rec.close()


async def test_store_failure_loses_nothing(store: Store, catalog: Catalog, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    tried = fail_times(store, monkeypatch, 2)
    m = Metrics()
    rec = Recorder(store, catalog, m, flush_interval=0.02)
    rec.start()
    try:
        with caplog.at_level(logging.ERROR, logger="mcp_prism.gateway.recorder"):
            for i in range(10):
                rec.record(outcome(i))
            for _ in range(200):
                if await store.count_events() == 10:
                    break
                await asyncio.sleep(0.01)
            assert rec._task is not None and not rec._task.done()  # the failures did not kill the writer
    finally:
        await rec.close()
    assert await store.count_events() == 10
    assert tried[:3] == [10, 10, 10]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all("disk I/O error" in r.getMessage() and "will retry" in r.getMessage() for r in errors)
    # Observed once, when they were written, not once per attempt.
    labels = dict(gen_ai_provider_name=PRICED[1], gen_ai_response_model=PRICED[0], task_type="chat", team="")
    assert sample(m, "prism_gateway_requests_total", **labels, status="ok") == 10
    assert sample(m, "prism_gateway_recorder_dropped_events_total") == 0


async def test_queue_gauge_while_failing(store: Store, catalog: Catalog, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    fail_times(store, monkeypatch, 1)
    m = Metrics()
    rec = Recorder(store, catalog, m, batch_size=2)
    for i in range(5):
        rec.record(outcome(i))
    with caplog.at_level(logging.ERROR):
        assert await rec.flush() == 0
    assert sample(m, "prism_gateway_recorder_queue") == 5
    assert await rec.flush() == 5
    assert sample(m, "prism_gateway_recorder_queue") == 0


async def test_max_pending_drops_oldest(store: Store, catalog: Catalog, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    fail_times(store, monkeypatch, 2)
    m = Metrics()
    rec = Recorder(store, catalog, m, batch_size=3, max_pending=5)
    with caplog.at_level(logging.ERROR, logger="mcp_prism.gateway.recorder"):
        for i in range(8):
            rec.record(outcome(i))
        assert await rec.flush() == 0
        assert sample(m, "prism_gateway_recorder_dropped_events_total") == 3
        for i in range(8, 10):
            rec.record(outcome(i))
        assert await rec.flush() == 0
    assert sample(m, "prism_gateway_recorder_dropped_events_total") == 5
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert gave_up == ["gave up 3 usage events: the store has refused writes for too long",
                       "gave up 2 usage events: the store has refused writes for too long"]
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    assert await rec.flush() == 5
    assert [r["id"] for r in await rows(store)] == [f"req-{i:05d}" for i in range(5, 10)]  # the newest kept


async def test_metrics_after_flush(store: Store, catalog: Catalog) -> None:
    m = Metrics()
    rec = Recorder(store, catalog, m)
    outs = [
        outcome(0, ttft_ms=30.0, team="core",
                tokens=TokenUsage(input_tokens=1000, cached_input_tokens=200, cache_write_tokens=100,
                                  output_tokens=300, reasoning_tokens=50)),
        outcome(1, team="core"),
        outcome(2, team="core", status="error", error_type="timeout", tokens=TokenUsage()),
        outcome(3, *PRICED_2, ttft_ms=12.5),
    ]
    for o in outs:
        rec.record(o)
    await rec.flush()
    core = dict(gen_ai_provider_name=PRICED[1], gen_ai_response_model=PRICED[0], task_type="chat", team="core")
    other = dict(gen_ai_provider_name=PRICED_2[1], gen_ai_response_model=PRICED_2[0], task_type="chat", team="")
    assert sample(m, "prism_gateway_requests_total", **core, status="ok") == 2
    assert sample(m, "prism_gateway_requests_total", **core, status="error") == 1
    assert sample(m, "prism_gateway_requests_total", **other, status="ok") == 1
    assert sample(m, "prism_gateway_errors_total", error_type="timeout", **core) == 1

    assert sample(m, "prism_gateway_tokens_total", type="input", **core) == 1000 + 101
    assert sample(m, "prism_gateway_tokens_total", type="output", **core) == 300 + 11
    assert sample(m, "prism_gateway_tokens_total", type="cached_input", **core) == 200
    assert sample(m, "prism_gateway_tokens_total", type="cache_write", **core) == 100
    assert sample(m, "prism_gateway_tokens_total", type="reasoning", **core) == 50
    assert sample(m, "prism_gateway_tokens_total", type="input", **other) == 103

    for labels, group in ((core, outs[:3]), (other, outs[3:])):
        usd = sum((catalog.cost(o.model, o.tokens, o.ts).usd or Decimal(0) for o in group), Decimal(0))
        assert sample(m, "prism_gateway_cost_usd_total", **labels) == pytest.approx(float(usd), rel=1e-9)

    assert sample(m, "gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="chat", **core,
                  error_type="") == 2
    assert sample(m, "gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="chat", **core,
                  error_type="timeout") == 1
    assert sample(m, "gen_ai_client_operation_duration_seconds_sum", gen_ai_operation_name="chat", **other,
                  error_type="") == pytest.approx(outs[3].latency_ms / 1000)
    assert sample(m, "gen_ai_server_time_to_first_token_seconds_count", **core) == 1
    assert sample(m, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **core) == 2  # not the 0-token one
    assert sample(m, "prism_gateway_overhead_seconds_count", route="passthrough") == 4
    assert b"prism_gateway_cost_usd_total" in m.render()


async def test_unknown_model_is_unpriced_not_free(store: Store, catalog: Catalog) -> None:
    m = Metrics()
    rec = Recorder(store, catalog, m)
    assert "my-local-llama" not in catalog.models
    rec.record(outcome(0, "my-local-llama", "vllm"))
    rec.record(outcome(1, tokens=TokenUsage()))  # a priced model that used no tokens costs a real 0
    assert await rec.flush() == 2
    unknown, zero = await rows(store)
    assert unknown["cost_usd"] is None
    assert unknown["cost_pico"] is None
    assert unknown["price_snapshot_id"] is None
    assert zero["cost_usd"] is not None and Decimal(zero["cost_usd"]) == 0
    assert zero["cost_pico"] == 0
    (daily,) = await store.fetch("SELECT unpriced, requests FROM usage_daily WHERE model = 'my-local-llama'")
    assert (daily["unpriced"], daily["requests"]) == (1, 1)
    labels = dict(gen_ai_provider_name="vllm", gen_ai_response_model="my-local-llama", task_type="chat", team="")
    assert sample(m, "prism_gateway_requests_total", **labels, status="ok") == 1
    assert sample(m, "prism_gateway_tokens_total", type="input", **labels) == 100
    assert not sample(m, "prism_gateway_cost_usd_total", **labels)  # absent or a pre-bound 0: never incremented


async def test_close_gives_up_when_the_store_never_recovers(store: Store, catalog: Catalog,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    fail_times(store, monkeypatch, 10**6)
    real_sleep = asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda _delay: real_sleep(0))  # skip close()'s retry pauses
    rec = Recorder(store, catalog, Metrics())
    rec.record(outcome(0))
    with caplog.at_level(logging.ERROR, logger="mcp_prism.gateway.recorder"):
        await rec.close()  # returns (after a few retries) instead of hanging the shutdown
    assert "shutting down with 1 usage events the store would not take" in caplog.text


async def test_written_counts_batches_stored_before_a_failure(store: Store, catalog: Catalog,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    real = store.insert_events
    calls = 0

    async def second_fails(events: Iterable[UsageEvent]) -> list[UsageEvent]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return await real(events)

    monkeypatch.setattr(store, "insert_events", second_fails)
    m = Metrics()
    rec = Recorder(store, catalog, m, batch_size=2)
    for i in range(5):
        rec.record(outcome(i))
    with caplog.at_level(logging.ERROR):
        assert await rec.flush() == 2  # the first batch went in, the second was refused
    assert rec.written == 2
    assert sample(m, "prism_gateway_recorder_queue") == 3
    assert await rec.flush() == 3
    assert rec.written == 5 == await store.count_events()
