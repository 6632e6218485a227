"""One-hour cache writes, priced exactly: from Anthropic's usage block (the SDK's own types) through the
wire usage, the gateway's pass-through tracker and the store, to the cost engine. Money is compared with
exact `Decimal ==`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from anthropic.types import CacheCreation, Message, MessageDeltaUsage, RawMessageDeltaEvent, RawMessageStartEvent
from anthropic.types import Usage as AnthropicUsage
from genai_prices import Usage as GpUsage
from genai_prices import calc_price, data_snapshot

from mcp_prism.config import shipped_catalog_data
from mcp_prism.core.catalog import build_catalog
from mcp_prism.core.pricing import ONE_HOUR_WRITE_FACTOR, PriceSnapshot, Rate, TokenUsage, compute_cost
from mcp_prism.core.usage import UsageEvent
from mcp_prism.gateway.app import _PassthroughUsage
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.store.sqlite import Store

CATALOG = build_catalog(shipped_catalog_data())
AT = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# 1,000 plain input, 2,000 cache reads, 3,000 five-minute and 4,000 one-hour cache writes, 500 output
SDK_USAGE = AnthropicUsage(
    input_tokens=1_000, output_tokens=500, cache_read_input_tokens=2_000, cache_creation_input_tokens=7_000,
    cache_creation=CacheCreation(ephemeral_5m_input_tokens=3_000, ephemeral_1h_input_tokens=4_000),
)
# claude-sonnet-4-5 below 200k: input $3, read $0.30, 5m write $3.75, 1h write $6, output $15 per MTok
SONNET_COST = Decimal("0.04635")  # (1000*3 + 2000*0.3 + 3000*3.75 + 4000*6 + 500*15) / 1e6


def message(usage: AnthropicUsage) -> dict:
    return Message(id="msg_1", type="message", role="assistant", model="claude-sonnet-4-5", content=[],
                   stop_reason="end_turn", stop_sequence=None, usage=usage).model_dump(mode="json")


def test_usage_of_splits_cache_writes_by_lifetime() -> None:
    u = anthropic_format.usage_of(message(SDK_USAGE))
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (
        10_000, 2_000, 7_000, 4_000)
    t = u.tokens()
    assert t.cache_write_5m_tokens == 3_000 and t.problems() == []
    # the split survives rendering back to Anthropic's shape, as the SDK reads it
    back = AnthropicUsage.model_validate(anthropic_format._usage_out(u))
    assert back.cache_creation == SDK_USAGE.cache_creation
    assert back.cache_creation_input_tokens == 7_000


def test_one_hour_writes_cost_the_one_hour_rate() -> None:
    tokens = anthropic_format.usage_of(message(SDK_USAGE)).tokens()
    cost = CATALOG.cost("claude-sonnet-4-5", tokens, AT)
    assert cost.prices is not None and cost.prices.cache_write_1h == Rate(Decimal("6"), ((200_000, Decimal("12")),))
    assert cost.usd == SONNET_COST
    gp = calc_price(GpUsage(input_tokens=10_000, cache_read_tokens=2_000, cache_write_tokens=7_000,
                            cache_write_1h_tokens=4_000, output_tokens=500),
                    model_ref="claude-sonnet-4-5", provider_id="anthropic", genai_request_timestamp=AT)
    assert gp.total_price == SONNET_COST
    # before: every write at the 5-minute rate, $0.00900 less
    five_minute_only = TokenUsage(10_000, 2_000, 7_000, 500)
    assert CATALOG.cost("claude-sonnet-4-5", five_minute_only, AT).usd == Decimal("0.03735")


def test_tiered_one_hour_rate_follows_the_request_total() -> None:
    # claude-haiku-5-5: every token of a request over 100k input at the higher tier, 1h writes included
    small = TokenUsage(input_tokens=50_000, cache_write_tokens=10_000, cache_write_1h_tokens=10_000)
    large = TokenUsage(input_tokens=150_000, cache_write_tokens=10_000, cache_write_1h_tokens=10_000)
    assert CATALOG.cost("claude-haiku-5-5", small, AT).usd == Decimal("0.006")  # 40k*0.1 + 10k*0.2
    assert CATALOG.cost("claude-haiku-5-5", large, AT).usd == Decimal("0.08")  # 140k*0.5 + 10k*1


def test_without_a_one_hour_price_the_write_costs_twice_the_input_rate() -> None:
    prices = PriceSnapshot(input=Rate(Decimal("3")), output=Rate(Decimal("15")), cache_write=Rate(Decimal("3.75")))
    usage = TokenUsage(input_tokens=4_000, cache_write_tokens=4_000, cache_write_1h_tokens=1_000)
    assert compute_cost(usage, prices) == Decimal("0.01725")  # 3000*3.75 + 1000*6, /1e6
    # the rule is Anthropic's: every Anthropic model genai-prices lists with a 1h price has it at 2x input
    anthropic = next(p for p in data_snapshot.get_snapshot().providers if p.id == "anthropic")
    checked = 0
    for m in anthropic.models:
        for mp in ([c.prices for c in m.prices] if isinstance(m.prices, list) else [m.prices]):
            hour, base = mp.cache_write_1h_mtok, mp.input_mtok
            if hour is None or not isinstance(hour, Decimal) or not isinstance(base, Decimal):
                continue
            assert hour == base * ONE_HOUR_WRITE_FACTOR, m.id
            checked += 1
    assert checked >= 10


def test_one_hour_rate_round_trips_in_the_snapshot_and_discounts() -> None:
    prices = CATALOG.prices_at("claude-sonnet-4-5", AT)
    assert prices is not None
    assert PriceSnapshot.from_json(prices.to_json()) == prices
    assert prices.with_discount(Decimal("0.5"), "x").cache_write_1h.base == Decimal("3.0")


def test_more_one_hour_writes_than_writes_is_a_problem() -> None:
    assert any("cache_write_1h_tokens" in p for p in TokenUsage(10, 0, 2, 0, 0, 3).problems())


def test_gateway_pass_through_tracker_keeps_the_split() -> None:
    tracker = _PassthroughUsage(anthropic_format)
    start = RawMessageStartEvent(type="message_start", message=Message(
        id="msg_1", type="message", role="assistant", model="claude-sonnet-4-5", content=[], stop_reason=None,
        stop_sequence=None, usage=SDK_USAGE.model_copy(update={"output_tokens": 1})))
    delta = RawMessageDeltaEvent(type="message_delta", delta={"stop_reason": "end_turn"},
                                 usage=MessageDeltaUsage(output_tokens=500))
    tracker.feed("message_start", start.model_dump_json())
    tracker.feed("message_delta", delta.model_dump_json())
    assert tracker.usage.tokens() == TokenUsage(10_000, 2_000, 7_000, 500, 0, 4_000)
    decoder = anthropic_format.StreamDecoder()
    decoder.feed("message_start", start.model_dump_json())
    decoder.feed("message_delta", delta.model_dump_json())
    assert decoder.usage.cache_write_1h_tokens == 4_000


@pytest.mark.anyio
async def test_store_keeps_one_hour_writes_in_events_and_rollups(tmp_path: Path) -> None:
    tokens = TokenUsage(10_000, 2_000, 7_000, 500, 0, 4_000)
    cost = CATALOG.cost("claude-sonnet-4-5", tokens, AT)
    store = await Store.open(tmp_path / "p.db")
    try:
        await store.insert_events([UsageEvent(task_type="general", model="claude-sonnet-4-5", provider="anthropic",
                                              tokens=tokens, latency_ms=1.0, cost_usd=cost.usd, prices=cost.prices,
                                              ts=AT)])
        row = (await store.fetch("SELECT cache_write_tokens, cache_write_1h_tokens, cost_usd FROM usage_events"))[0]
        assert tuple(row) == (7_000, 4_000, str(SONNET_COST))
        rolled = await store.rollup("2026-11-20", "2026-11-21", ["model"])
        assert rolled[0]["cache_write_1h_tokens"] == 4_000
        snap = json.loads((await store.fetch("SELECT body FROM price_snapshots"))[0][0])
        assert snap["cache_write_1h"] == {"base": "6", "tiers": [[200000, "12"]]}
    finally:
        await store.close()


@pytest.mark.parametrize("model", ["claude-opus-4-5", "claude-haiku-4-5", "claude-sonnet-4-6"])
def test_catalog_one_hour_cost_equals_genai_prices(model: str) -> None:
    tokens = TokenUsage(60_000, 20_000, 30_000, 2_000, 0, 25_000)
    ours = CATALOG.cost(model, tokens, AT).usd
    gp = calc_price(GpUsage(input_tokens=60_000, cache_read_tokens=20_000, cache_write_tokens=30_000,
                            cache_write_1h_tokens=25_000, output_tokens=2_000),
                    model_ref=CATALOG.resolve(model).prices_ref, provider_id="anthropic", genai_request_timestamp=AT)
    assert ours == gp.total_price


# ------------------------------------------------------------------ through the gateway, as Claude Code sends it
@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    from fakes import run_fake_providers
    from test_gateway import KEYS, RunningGateway

    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as fake, \
            RunningGateway(tmp_path_factory.mktemp("gw1h"), fake) as g:
        yield g


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_gateway_records_one_hour_writes_at_their_price(gw, stream: bool) -> None:
    from fakes import CACHE_CREATION_1H_TOKENS, CACHE_CREATION_TOKENS, CACHED_TOKENS

    client = gw.anthropic()
    messages = [{"role": "user", "content": "[cached] [cached1h] summarise the invoice module"}]
    if stream:
        with client.messages.with_streaming_response.create(model="claude-sonnet-4-5", max_tokens=100,
                                                            messages=messages, stream=True) as raw:
            rid = raw.headers["x-prism-request-id"]
            for _ in raw.iter_lines():
                pass
    else:
        raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=100, messages=messages)
        rid, msg = raw.headers["x-prism-request-id"], raw.parse()
        assert msg.usage.cache_creation.ephemeral_1h_input_tokens == CACHE_CREATION_1H_TOKENS
    ev = gw.event(rid)
    writes = CACHE_CREATION_TOKENS + CACHE_CREATION_1H_TOKENS
    assert (ev["cache_write_tokens"], ev["cache_write_1h_tokens"], ev["cached_input_tokens"]) == (
        writes, CACHE_CREATION_1H_TOKENS, CACHED_TOKENS)
    ts = datetime.fromisoformat(ev["ts"].replace("Z", "+00:00"))
    expected = calc_price(GpUsage(input_tokens=ev["input_tokens"], cache_read_tokens=CACHED_TOKENS,
                                  cache_write_tokens=writes, cache_write_1h_tokens=CACHE_CREATION_1H_TOKENS,
                                  output_tokens=ev["output_tokens"]),
                          model_ref="claude-sonnet-4-5", provider_id="anthropic", genai_request_timestamp=ts)
    assert Decimal(ev["cost_usd"]) == expected.total_price
