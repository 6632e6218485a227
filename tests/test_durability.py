"""Issue 12, "nothing lost, nothing wrong": malformed usage from upstreams (case 1), the recorder's
isolation of events the store refuses, and (see test_crash.py) kill -9 of the gateway under load."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeProviders, run_fake_providers
from test_gateway import KEYS
from test_gateway_budgets import _keyed, _ledger, _setup

from mcp_prism.core.catalog import Catalog
from mcp_prism.core.pricing import TokenUsage, from_picodollars
from mcp_prism.gateway.metrics import Metrics
from mcp_prism.gateway.recorder import Recorder
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.providers.formats import gemini as gemini_format
from mcp_prism.providers.formats import openai as openai_format
from mcp_prism.providers.formats import responses as responses_format
from mcp_prism.store.sqlite import Store

BAD_COUNTS = ('"many"', "1.5e300", "100000000000000000000", "-5000", "12.5", "true")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as f:
        yield f


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_each_format_marks_a_bad_count_invalid_and_never_passes_it_on(bad: str) -> None:
    v = json.loads(bad)
    for u in (openai_format.usage_of({"usage": {"prompt_tokens": v, "completion_tokens": 3}}),
              anthropic_format.usage_of({"usage": {"input_tokens": v, "output_tokens": 3}}),
              anthropic_format.usage_of({"message": {"usage": {"input_tokens": 5, "output_tokens": v}}}),
              gemini_format.usage_of({"usageMetadata": {"promptTokenCount": v, "candidatesTokenCount": 3}}),
              responses_format.usage_of({"usage": {"input_tokens": v, "output_tokens": 3}})):
        assert u.invalid
        t = u.tokens()
        assert all(type(n) is int and 0 <= n < 10**9 for n in (t.input_tokens, t.output_tokens,
                                                                t.cached_input_tokens, t.reasoning_tokens))
    good = openai_format.usage_of({"usage": {"prompt_tokens": 7, "completion_tokens": 3, "service_tier": "x",
                                             "prompt_tokens_details": {"cached_tokens": 2}}})
    assert not good.invalid and (good.input_tokens, good.cached_input_tokens) == (7, 2)
    assert openai_format.usage_of({"usage": {"prompt_tokens": 2, "prompt_tokens_details": {"cached_tokens": 9}}}
                                  ).invalid  # more cached than prompt tokens: the counts do not add up


def _post(g: Any, secret: str, model: str, text: str, *, stream: bool, anthropic: bool) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "max_tokens": 50, "stream": stream,
                            "messages": [{"role": "user", "content": text}]}
    path, headers = ("/v1/messages", {"x-api-key": secret, "anthropic-version": "2023-06-01"}) if anthropic else (
        "/v1/chat/completions", {"authorization": f"Bearer {secret}"})
    return httpx.post(g.url + path, json=body, headers=headers, timeout=30)


def test_malformed_usage_is_recorded_as_such_and_never_stops_recording(fake: FakeProviders, tmp_path: Path) -> None:
    """Before: one bad block made every later batch fail (0 of the next 20 stored) and negative counts
    drove a budget's spend negative."""
    home = tmp_path / "home"
    secret = _setup(home, team="t", budgets=[{"scope": "team", "subject": "t", "hard_limit_usd": "5"}])
    routes = [("gpt-5-nano", False), ("claude-haiku-4-5", True), ("claude-haiku-4-5", False),  # pass-through,
              ("gpt-5-nano", True), ("gemini-2.5-flash", False)]                             # translated
    bad_ids, good_ids = [], []
    with _keyed(home, fake) as g:
        for i, bad in enumerate(BAD_COUNTS):
            model, anthropic = routes[i % len(routes)]
            for stream in (False, True):
                r = _post(g, secret, model, f"hello [usage={bad}]", stream=stream, anthropic=anthropic)
                assert r.status_code == 200, r.text  # the client's answer is not the provider's bookkeeping
                bad_ids.append(r.headers["x-prism-request-id"])
        for i in range(20):
            model, anthropic = routes[i % len(routes)]
            r = _post(g, secret, model, f"normal {i}", stream=i % 2 == 0, anthropic=anthropic)
            assert r.status_code == 200
            good_ids.append(r.headers["x-prism-request-id"])
        bad_rows = [g.event(i) for i in bad_ids]
        good_rows = [g.event(i) for i in good_ids]
    for row in bad_rows:
        assert row["status"] == "invalid_usage", row
        assert 0 < row["input_tokens"] < 10**6 and 0 <= row["output_tokens"] < 10**6  # estimated, never trusted
        assert Decimal(row["cost_usd"]) >= 0
    assert all(r["status"] == "ok" and r["input_tokens"] > 0 for r in good_rows)
    [ledger] = _ledger(home / "prism.db")
    with sqlite3.connect(home / "prism.db") as db:
        recorded = sum(Decimal(c) for (c,) in db.execute("SELECT cost_usd FROM usage_events"))
        assert db.execute("SELECT COUNT(*) FROM usage_events WHERE input_tokens < 0 OR output_tokens < 0 "
                          "OR cost_pico < 0").fetchone()[0] == 0
    assert ledger["reserved_pico"] == 0 and ledger["spent_pico"] >= 0
    assert from_picodollars(ledger["spent_pico"]) == recorded  # the budget saw exactly what was recorded


@pytest.mark.anyio
async def test_recorder_sets_aside_what_the_store_refuses_and_writes_the_rest(
        tmp_path: Path, catalog: Catalog, caplog: pytest.LogCaptureFixture) -> None:
    from test_recorder import outcome
    store = await Store.open(tmp_path / "p.db")
    try:
        m = Metrics()
        rec = Recorder(store, catalog, m, batch_size=10)
        rec.record(outcome(0))
        rec.record(outcome(1, latency_ms=10**20))  # an int SQLite cannot bind: the store refuses this one
        rec.record(outcome(2, tokens=TokenUsage(input_tokens=-500, output_tokens=10)))  # negative: never stored
        rec.record(outcome(3, tokens=TokenUsage(input_tokens="many", output_tokens=10)))  # type: ignore[arg-type]
        for i in range(4, 25):
            rec.record(outcome(i))
        with caplog.at_level(logging.WARNING, logger="mcp_prism.gateway.recorder"):
            assert await rec.flush() == 24
            rec.record(outcome(25))  # later batches are not blocked either
            assert await rec.flush() == 1
        rows = {r["id"]: r for r in await store.fetch("SELECT * FROM usage_events")}
        assert "req-00001" not in rows and len(rows) == 25
        for bad in ("req-00002", "req-00003"):
            assert rows[bad]["status"] == "invalid_usage" and rows[bad]["input_tokens"] == 0
            assert rows[bad]["cost_pico"] == 0
        assert m.registry.get_sample_value("prism_gateway_recorder_set_aside_events_total") == 1
        assert "set aside usage event req-00001" in caplog.text
        assert not rec._pending
    finally:
        await store.close()


# ---------------------------------------------------------------- case 2: leases and the journal
async def _budget_row(store: Store) -> tuple[int, int]:
    rows = await store.fetch("SELECT spent_pico, reserved_pico FROM budget_spend")
    return int(rows[0][0]), int(rows[0][1])


@pytest.mark.anyio
async def test_a_dead_gateways_reservations_are_reclaimed_exactly_once(tmp_path: Path) -> None:
    from mcp_prism.team.budgets import BudgetService, Enforcer

    store = await Store.open(tmp_path / "p.db")
    try:
        await BudgetService(store).set_budget("team", "t", "month", hard_limit_usd="1")
        # per-request reservations (slices=False): exact amounts; tests/test_budget_slices.py covers slices
        dead = Enforcer(store, ttl=0, lease_ttl=0.2, slices=False)
        alive = Enforcer(store, ttl=0, lease_ttl=60, slices=False)
        await dead.start_leases()
        found = await dead.applicable(None, None, "t", None)
        held = [await dead.reserve(found, 3_000_000) for _ in range(3)]
        await dead.settle(held[0], 1_000_000, 5)
        assert await _budget_row(store) == (1_000_000, 6_000_000)
        # `dead` stops renewing (killed); another gateway starts and, once the lease expired, gives it back
        await alive.start_leases()
        assert await _budget_row(store) == (1_000_000, 6_000_000)  # not expired yet: still held
        await asyncio.sleep(0.3)
        assert await alive.reclaim_expired() == 6_000_000
        assert await _budget_row(store) == (1_000_000, 0)
        await dead.settle(held[1], 2_000_000, 5)  # a late settle books the spend, gives nothing back twice
        assert await _budget_row(store) == (3_000_000, 0)
        mine = await alive.reserve(found, 4_000_000)  # the survivor's own reservation is untouched
        assert await alive.reclaim_expired() == 0 and await _budget_row(store) == (3_000_000, 4_000_000)
        await alive.stop_leases()  # a graceful stop gives back what it never settled
        assert await _budget_row(store) == (3_000_000, 0) and not mine.settled
        assert not await store.fetch("SELECT * FROM budget_leases")
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_journal_replays_once_and_books_only_what_was_not_recorded(tmp_path: Path, catalog: Catalog) -> None:
    from test_recorder import outcome

    from mcp_prism.gateway.spool import Spool
    from mcp_prism.team.budgets import BudgetService, Enforcer

    store = await Store.open(tmp_path / "p.db")
    try:
        await BudgetService(store).set_budget("team", "t", "month", hard_limit_usd="1")
        enf = Enforcer(store, ttl=0, lease_ttl=60, slices=False)  # exact per-request amounts
        await enf.start_leases()
        found = await enf.applicable(None, None, "t", None)
        spool = Spool(tmp_path / "spool")
        spool.open()
        rec = Recorder(store, catalog, Metrics(), enforcer=enf, spool=spool)
        outs = []
        for i in range(4):
            o = outcome(i, team="t", reservation=await enf.reserve(found, 2_000_000), actual_pico=1_000_000)
            rec.record(o)
            outs.append(o)
        other = Recorder(store, catalog, Metrics(), enforcer=enf)  # the first two reach the store...
        for o in outs[:2]:
            other.record(o)
        assert await other.flush() == 2
        for fd in (spool._fd, *spool._sealed.values()):  # ...then the process dies: its lock goes, the file stays
            os.close(fd)
        assert await _budget_row(store) == (2_000_000, 4_000_000)

        enf2 = Enforcer(store, ttl=0, lease_ttl=60)
        await enf2.refresh(force=True)
        spool2 = Spool(tmp_path / "spool")
        spool2.open()
        rec2 = Recorder(store, catalog, Metrics(), enforcer=enf2, spool=spool2)
        assert await rec2.replay() == 2  # the two answered but unrecorded ones
        assert await store.count_events() == 4
        assert await _budget_row(store) == (4_000_000, 0)  # booked once, their leases given back
        assert await rec2.replay() == 0 and list((tmp_path / "spool").glob("spool-*.jsonl")) == [spool2.path]
    finally:
        await store.close()


def test_an_object_where_a_count_belongs_is_a_bad_count_not_a_crash() -> None:
    """Found by tests/test_gateway_fuzz.py: `"input_tokens": {"x": 1}` from an Anthropic-format upstream was
    kept as a nested block and the streamed usage sum raised TypeError (a 500 and a traceback)."""
    from mcp_prism.providers.formats import anthropic as anthropic_format
    from mcp_prism.providers.usage_check import sane_block

    clean, bad = sane_block({"input_tokens": {"x": 1}, "output_tokens": 5,
                             "cache_creation": {"ephemeral_1h_input_tokens": 2}})
    assert bad and clean == {"output_tokens": 5, "cache_creation": {"ephemeral_1h_input_tokens": 2}}
    u = anthropic_format.usage_of({"usage": {"input_tokens": {"x": 1}, "output_tokens": 5}})
    assert u.invalid and u.output_tokens == 5
