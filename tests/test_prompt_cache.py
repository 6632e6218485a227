"""Anthropic prompt caching: where `mark_cache_control` puts breakpoints (checked against the Anthropic
SDK's request types), and that cache writes and reads are costed exactly at their own prices."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from anthropic.types import TextBlockParam, ToolParam
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from fakes import CACHE_CREATION_TOKENS, CACHED_TOKENS, run_fake_providers
from pydantic import TypeAdapter

from mcp_prism.config import Settings
from mcp_prism.core.pricing import MTOK, TokenUsage
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.providers.prompt_cache import (
    MAX_BREAKPOINTS,
    count_breakpoints,
    estimate_tokens,
    mark_cache_control,
    min_cacheable_tokens,
)
from mcp_prism.service import PrismService

LONG = "You are a support agent for ACME. Follow the policy below exactly.\n" + "Policy clause. " * 1200
TOOL = {"name": "lookup_order", "description": "Look an order up by its id",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}
BIG_TOOL = {**TOOL, "name": "search_docs", "description": "Search the manual. " * 800}
EPHEMERAL = {"type": "ephemeral"}
_REQUEST: TypeAdapter[Any] = TypeAdapter(MessageCreateParamsNonStreaming)
_TEXT_BLOCK: TypeAdapter[Any] = TypeAdapter(TextBlockParam)
_TOOL: TypeAdapter[Any] = TypeAdapter(ToolParam)


def valid_for_the_sdk(body: dict[str, Any]) -> None:
    """The Anthropic SDK's request types accept it (system blocks and tools checked one by one: the
    request type declares them Iterable, which pydantic validates only lazily)."""
    _REQUEST.validate_python(body)
    for block in body["system"] if isinstance(body.get("system"), list) else ():
        _TEXT_BLOCK.validate_python(block)
    for tool in body.get("tools") or ():
        _TOOL.validate_python(tool)


def request(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 256,
            "messages": [{"role": "user", "content": "Where is order 42?"}], **extra}


def markers(body: dict[str, Any]) -> list[str]:
    """Where the breakpoints are: tools[i] / system[i] / messages[i][j]."""
    out = [f"tools[{i}]" for i, t in enumerate(body.get("tools") or []) if "cache_control" in t]
    system = body.get("system")
    if isinstance(system, list):
        out += [f"system[{i}]" for i, b in enumerate(system) if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list):
            out += [f"messages[{i}][{j}]" for j, b in enumerate(m["content"]) if "cache_control" in b]
    return out


def test_minimum_cacheable_prefix_per_model() -> None:
    assert min_cacheable_tokens("claude-sonnet-4-5") == 1024
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024
    assert min_cacheable_tokens("claude-opus-4-1") == 1024
    assert min_cacheable_tokens("claude-3-5-haiku-latest") == 2048
    assert min_cacheable_tokens("claude-haiku-4-5") == 4096
    assert min_cacheable_tokens("claude-opus-4-5") == 4096
    assert min_cacheable_tokens("claude-sonnet-4-6") == 2048
    assert min_cacheable_tokens("claude-haiku-5-5") == 2048  # an unlisted Haiku
    assert min_cacheable_tokens(None) == 1024


def test_short_prefix_is_left_alone() -> None:
    body = request(system="Be brief.", tools=[TOOL])
    assert mark_cache_control(body) == body


def test_long_string_system_becomes_a_marked_block() -> None:
    body = request(system=LONG)
    out = mark_cache_control(body)
    assert out["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert markers(out) == ["system[0]"]
    assert body["system"] == LONG  # the caller's body is untouched
    valid_for_the_sdk(out)


def test_long_tools_and_system_mark_both_last_tool_and_last_system_block() -> None:
    system = [{"type": "text", "text": "Intro."}, {"type": "text", "text": LONG}]
    body = request(system=system, tools=[TOOL, BIG_TOOL])
    before = copy.deepcopy(body)
    out = mark_cache_control(body)
    assert markers(out) == ["tools[1]", "system[1]"]
    assert body == before
    assert out["tools"][0] is TOOL and out["system"][0] is system[0]  # only the marked parts are copied
    valid_for_the_sdk(out)


def test_tools_alone_long_enough_without_a_system() -> None:
    out = mark_cache_control(request(tools=[TOOL, BIG_TOOL]))
    assert markers(out) == ["tools[1]"]
    # tools short, system long: the system breakpoint caches both; a tool breakpoint could cache nothing
    assert markers(mark_cache_control(request(tools=[TOOL], system=LONG))) == ["system[0]"]


def test_threshold_follows_the_model_or_the_caller() -> None:
    mid = "word " * 1500  # about 2,100 estimated tokens: enough for Sonnet 4.5, not for Haiku 4.5
    assert 1024 < estimate_tokens(mid) < 4096
    assert markers(mark_cache_control(request(system=mid))) == ["system[0]"]
    assert markers(mark_cache_control(request(system=mid, model="claude-haiku-4-5"))) == []
    assert markers(mark_cache_control(request(system=mid, model="claude-haiku-4-5"), min_tokens=1024)) == \
        ["system[0]"]


def test_idempotent() -> None:
    body = request(system=LONG, tools=[BIG_TOOL])
    once = mark_cache_control(body)
    assert mark_cache_control(once) == once
    assert count_breakpoints(once) == 2


def _turns(n_marked: int) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for i in range(n_marked):
        turns += [{"role": "user", "content": [{"type": "text", "text": f"doc {i}", "cache_control": EPHEMERAL}]},
                  {"role": "assistant", "content": "ok"}]
    return [*turns, {"role": "user", "content": "question"}]


@pytest.mark.parametrize(("client_markers", "expected"), [
    (0, ["tools[1]", "system[0]"]), (2, ["tools[1]", "system[0]"]), (3, ["system[0]"]), (4, []),
])
def test_never_more_than_four_breakpoints(client_markers: int, expected: list[str]) -> None:
    body = request(system=LONG, tools=[TOOL, BIG_TOOL], messages=_turns(client_markers))
    out = mark_cache_control(body)
    ours = [m for m in markers(out) if not m.startswith("messages")]
    assert ours == expected
    assert count_breakpoints(out) == min(MAX_BREAKPOINTS, client_markers + 2)
    assert out["messages"] == body["messages"]  # client markers untouched
    valid_for_the_sdk(out)


def test_top_level_automatic_caching_and_nested_tool_result_markers_count() -> None:
    messages = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
        {"type": "text", "text": "result", "cache_control": EPHEMERAL}]}]}]
    body = request(system=LONG, tools=[TOOL, BIG_TOOL], messages=messages * 2, cache_control=EPHEMERAL)
    assert count_breakpoints(body) == 3
    assert [m for m in markers(mark_cache_control(body)) if not m.startswith("messages")] == ["system[0]"]


def test_client_markers_are_left_as_they_are() -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "5m"}}]
    body = request(system=system, tools=[TOOL, {**BIG_TOOL, "cache_control": EPHEMERAL}])
    assert mark_cache_control(body) == body  # both places already marked by the client
    # one-hour client markers must precede five-minute ones: adding ours before them would be rejected
    hour = request(system=LONG, tools=[BIG_TOOL], messages=[{"role": "user", "content": [
        {"type": "text", "text": "doc", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}])
    assert mark_cache_control(hour) == hour


def test_odd_shapes_pass_through_for_anthropic_to_judge() -> None:
    assert mark_cache_control(request(system="")) == request(system="")
    assert mark_cache_control(request(system=[{"type": "text", "text": ""}])) == \
        request(system=[{"type": "text", "text": ""}])
    weird = request(system=42, tools="nope")
    assert mark_cache_control(weird) == weird


# ---------------------------------------------------------------- costing
def test_cache_writes_and_reads_are_costed_at_their_own_prices(catalog: Any) -> None:
    usage = anthropic_format.usage_of({"usage": {"input_tokens": 100, "cache_creation_input_tokens": 3000,
                                                 "cache_read_input_tokens": 5000, "output_tokens": 400}})
    tokens = usage.tokens()
    assert tokens == TokenUsage(input_tokens=8100, cached_input_tokens=5000, cache_write_tokens=3000,
                                output_tokens=400)
    prices = catalog.prices_at("claude-sonnet-4-5")
    assert prices is not None and prices.cached_input is not None and prices.cache_write is not None
    n = tokens.input_tokens
    p_in, p_read, p_write, p_out = (prices.input.at(n), prices.cached_input.at(n), prices.cache_write.at(n),
                                    prices.output.at(n))
    assert p_read < p_in < p_write  # reads are discounted, writes cost more: distinct prices, not the input price
    expected = (100 * p_in + 5000 * p_read + 3000 * p_write + 400 * p_out) / MTOK
    assert catalog.cost("claude-sonnet-4-5", tokens).usd == expected
    # Sonnet 4.5 list prices ($/MTok): input 3, cache read 0.30, 5-minute cache write 3.75, output 15
    assert (p_in, p_read, p_write, p_out) == (3, Decimal("0.3"), Decimal("3.75"), 15)
    assert expected == Decimal("0.01905")
    # above 200k input tokens every rate, cache ones included, moves to its long-context tier
    big = TokenUsage(input_tokens=250_000, cached_input_tokens=200_000, cache_write_tokens=40_000, output_tokens=1000)
    assert catalog.cost("claude-sonnet-4-5", big).usd == \
        (10_000 * prices.input.at(250_000) + 200_000 * prices.cached_input.at(250_000)
         + 40_000 * prices.cache_write.at(250_000) + 1000 * prices.output.at(250_000)) / MTOK


@pytest.mark.anyio
async def test_marked_request_through_the_fake_anthropic_api_is_costed_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-ant-test-0001"
    with run_fake_providers(keys={"anthropic": key}) as fake:
        (tmp_path / "config.toml").write_text(f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n')
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        svc = await PrismService.open(Settings.from_env({}, home=tmp_path))
        try:
            spec = svc.catalog.resolve("claude-sonnet-4-5")
            body = mark_cache_control(request(system=LONG, tools=[BIG_TOOL],
                                              messages=[{"role": "user", "content": "[cached] where is 42?"}]))
            client = svc.providers()
            resp = await client.send(client.request(spec.provider, spec.name, json.dumps(body).encode(), stream=False))
            try:
                raw = await resp.aread()
            finally:
                await resp.aclose()
            assert resp.status_code == 200, raw
            sent = fake.calls[-1].body
            assert sent["system"][-1]["cache_control"] == EPHEMERAL and sent["tools"][-1]["cache_control"] == EPHEMERAL
            parsed = anthropic_format.parse_response(json.loads(raw))
            tokens = parsed.usage.tokens()
            assert tokens.cached_input_tokens == CACHED_TOKENS and tokens.cache_write_tokens == CACHE_CREATION_TOKENS
            prices = svc.catalog.prices_at("claude-sonnet-4-5")
            assert prices is not None and prices.cached_input is not None and prices.cache_write is not None
            n = tokens.input_tokens
            plain = n - CACHED_TOKENS - CACHE_CREATION_TOKENS
            expected = (plain * prices.input.at(n) + CACHED_TOKENS * prices.cached_input.at(n)
                        + CACHE_CREATION_TOKENS * prices.cache_write.at(n)
                        + tokens.output_tokens * prices.output.at(n)) / MTOK
            assert svc.catalog.cost("claude-sonnet-4-5", tokens).usd == expected
        finally:
            await svc.close()
