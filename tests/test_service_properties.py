"""Property tests on the service's inputs: any input is either stored exactly or refused with
InvalidInput, and a refusal writes nothing."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.errors import InvalidInput
from mcp_prism.service import PrismService, UsageInput

tokens = st.integers(min_value=-5, max_value=3_000_000)
maybe_text = st.one_of(st.none(), st.text(max_size=40))

usage_inputs = st.builds(
    UsageInput,
    model=st.sampled_from(["claude-sonnet-4-5", "fast", "gpt-5", "not-a-model", "", "o3"]),
    task_type=st.one_of(st.none(), st.sampled_from(["code_review", "general", "bogus", ""])),
    description=maybe_text,
    provider=st.one_of(st.none(), st.just("acme")),
    input_tokens=tokens,
    cached_input_tokens=tokens,
    cache_write_tokens=tokens,
    output_tokens=tokens,
    reasoning_tokens=tokens,
    latency_ms=st.floats(min_value=-10, max_value=1e6, allow_nan=False),
    ttft_ms=st.one_of(st.none(), st.floats(min_value=-10, max_value=1e6, allow_nan=False)),
    status=st.sampled_from(["ok", "timeout", "weird"]),
    batch=st.booleans(),
    quality=st.one_of(st.none(), st.floats(min_value=-1, max_value=2, allow_nan=False)),
    quality_source=st.one_of(st.none(), st.sampled_from(["human", "judge", "automated", "vibes"])),
    request_id=st.one_of(st.none(), st.text(min_size=1, max_size=8)),
    timestamp=st.one_of(st.none(), st.sampled_from(["2026-11-01T10:00:00Z", "not a date", "2999-01-01T00:00:00Z"])),
)


def test_record_usage_stores_exactly_or_refuses_cleanly(tmp_path: Path) -> None:
    async def scenario(svc: PrismService, items: list[UsageInput]) -> None:
        seen_ids: set[str] = set()
        for u in items:
            before = await svc.store.count_events()
            try:
                r = await svc.record_usage(u)
            except InvalidInput as e:
                assert str(e).startswith("cannot record usage: ")
                assert await svc.store.count_events() == before
                continue
            after = await svc.store.count_events()
            if r.duplicate:
                assert after == before and r.id in seen_ids
                continue
            assert after == before + 1
            seen_ids.add(r.id)
            if r.priced:
                t = TokenUsage(u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens,
                               u.reasoning_tokens)
                assert r.cost_usd is not None and r.cost_usd >= 0
                row = await svc.store.find_event(r.id)
                assert row is not None and row["input_tokens"] == t.input_tokens
        total = (await svc.store.fetch("SELECT COALESCE(SUM(requests), 0) FROM usage_daily"))[0][0]
        assert total == await svc.store.count_events()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(items=st.lists(usage_inputs, min_size=1, max_size=6))
    def run(items: list[UsageInput]) -> None:
        async def main() -> None:
            svc = await PrismService.open(Settings.from_env({}, home=tempfile.mkdtemp(dir=tmp_path)))
            try:
                await scenario(svc, items)
            finally:
                await svc.close()

        asyncio.run(main())

    run()


@pytest.fixture(scope="module")
def routing_service(tmp_path_factory: pytest.TempPathFactory):
    """One service on one event loop for the routing property (route_task only reads)."""
    with asyncio.Runner() as runner:
        home = tmp_path_factory.mktemp("prism-prop")
        svc = runner.run(PrismService.open(Settings.from_env({}, home=home)))
        yield runner, svc
        runner.run(svc.close())


def test_route_task_answers_or_refuses_for_any_text(routing_service) -> None:
    runner, svc = routing_service

    @settings(max_examples=200, deadline=None)
    @given(text=st.text(max_size=300), context=st.integers(min_value=0, max_value=2_000_000))
    def check(text: str, context: int) -> None:
        try:
            r = runner.run(svc.route_task(text, context_tokens=context))
        except InvalidInput as e:
            assert "description" in str(e) or "no model in the catalog accepts" in str(e)
            return
        assert r.model in svc.catalog.models and 0 <= r.confidence <= 1
        assert svc.catalog.models[r.model].context_window >= context

    check()
