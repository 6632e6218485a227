"""The MCP adapter end to end: real MCP sessions (in-process, both protocol eras) over a real SQLite
file, and a real Streamable HTTP server on 127.0.0.1 with a bearer token."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

import httpx
import httpx2
import pytest
from conftest import HTTP_SCRIPT, free_port, wait_for_port
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_prism import mcp_server
from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import QUALITY_SOURCES, STATUSES
from mcp_prism.errors import ConfigError
from mcp_prism.mcp_server import build_http_server, build_server, serve_http
from mcp_prism.service import PrismService
from mcp_prism.store.sqlite import GROUP_COLUMNS

pytestmark = pytest.mark.anyio

TOOLS = {
    "route_task", "compare_models", "cost_report", "update_routing_rule", "rollback_routing_rule",
    "routing_rule_history", "record_usage", "record_quality", "list_models",
    # the optimisation loop
    "start_experiment", "run_experiment", "experiment_report", "promote_candidate", "list_experiments",
    "evaluate_automated", "evaluate_with_judge", "next_rating", "submit_rating",
    "analyze", "check_monitors", "list_alerts", "acknowledge_alert", "review_due",
    "import_outcomes", "evaluate_router", "set_budget", "budget_status", "train_router", "promote_router",
}
READ_ONLY = {"route_task", "compare_models", "cost_report", "routing_rule_history", "list_models",
             "experiment_report", "list_experiments", "next_rating", "analyze", "list_alerts", "evaluate_router",
             "budget_status"}
# tools that reach outside the server: model providers (experiments, the judge) or the alert webhook
OPEN_WORLD = {"run_experiment", "evaluate_with_judge", "check_monitors"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, home=tmp_path)


@pytest.fixture
def server(settings: Settings):
    return build_server(settings, toolsets="all")  # these tests drive every tool; tests/test_mcp_toolsets.py the sets


@pytest.fixture
async def client(server):
    async with Client(server) as c:
        yield c


async def call(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured content."""
    r = await c.call_tool(tool, args)
    assert not r.is_error, r.content[0].text if r.content else r
    assert r.structured_content is not None
    return r.structured_content


async def fails(c: Client, tool: str, *fragments: str, **args: Any) -> str:
    """Call a tool that must fail with is_error and a message naming every fragment."""
    r = await c.call_tool(tool, args)
    assert r.is_error, f"{tool}({args}) should have failed: {r.structured_content}"
    text = r.content[0].text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    assert "Traceback" not in text
    return text


async def total(c: Client) -> tuple[int, Decimal]:
    report = await call(c, "cost_report")
    return report["total_requests"], Decimal(report["total_cost_usd"])


async def rule_version(c: Client, task_type: str) -> int:
    return (await call(c, "route_task", task_type=task_type))["rule_version"]


# ------------------------------------------------------------------------------------------- discovery
@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_both_protocol_modes_list_tools_and_route(server, mode: str) -> None:
    async with Client(server, mode=mode) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == TOOLS
        r = await call(c, "route_task", description="write unit tests for the parser")
        assert (r["task_type"], r["tier"], r["model"], r["classified"]) == (
            "test_generation", "simple", "claude-haiku-4-5", True)
        assert r["rule_id"] == "test_generation" and r["rule_version"] == 0
        assert Decimal(r["estimated_cost_usd"]) > 0
        assert r["uncertain"] is False and r["runner_up"] not in (None, "general")
        vague = await call(c, "route_task", description="hello there")  # no type fits: said so, guess named
        assert vague["task_type"] == "general" and vague["uncertain"] is True and vague["runner_up"]
        text = await fails(c, "route_task", "unknown task type 'nope'", "code_review", task_type="nope")
        assert text.startswith("Error executing tool route_task")


async def test_every_tool_is_documented_for_agents(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        assert tool.title and len(tool.description or "") > 80, tool.name
        assert tool.output_schema and tool.output_schema.get("type") == "object", tool.name
        a = tool.annotations
        assert a is not None, tool.name
        hints = (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)
        assert None not in hints, tool.name
        assert a.read_only_hint == (tool.name in READ_ONLY), tool.name
        assert a.open_world_hint == (tool.name in OPEN_WORLD), tool.name
        props = tool.input_schema["properties"]
        assert props, tool.name
        for name, prop in props.items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("update_routing_rule", "rollback_routing_rule"):
        assert tools[name].annotations.destructive_hint and not tools[name].annotations.idempotent_hint
    assert tools["record_usage"].annotations.destructive_hint is False
    assert "computed server-side" in tools["record_usage"].description
    # the rule's JSON Schema is the `rule` parameter's schema
    rule = tools["update_routing_rule"].input_schema["properties"]["rule"]
    assert rule["required"] == ["task_type", "primary"] and rule["additionalProperties"] is False
    assert {"primary", "fallbacks", "complexity_upgrades", "required_capabilities"} <= set(rule["properties"])
    assert set(tools["update_routing_rule"].input_schema["required"]) == {"rule", "author", "reason"}
    assert "source" not in tools["record_usage"].input_schema["properties"]  # fixed to "mcp"


def test_argument_enums_match_the_service() -> None:
    assert set(get_args(mcp_server.Status)) == set(STATUSES)
    assert set(get_args(mcp_server.QualitySource)) == set(QUALITY_SOURCES)
    assert set(get_args(mcp_server.GroupColumn)) == set(GROUP_COLUMNS)


# ------------------------------------------------------------------------------------------- route_task
async def test_route_task_by_type_and_context(client: Client) -> None:
    r = await call(client, "route_task", task_type="code_review")
    assert (r["model"], r["confidence"], r["classified"]) == ("claude-sonnet-4-5", 1.0, False)
    big = await call(client, "route_task", task_type="code_review", context_tokens=300_000)
    assert big["model"] != "claude-sonnet-4-5" and any("context" in x for x in big["reasons"])


async def test_route_task_bad_input(client: Client) -> None:
    await fails(client, "route_task", "description", "task_type")  # neither given
    await fails(client, "route_task", "context_tokens", "greater than or equal to 0",
                description="x", context_tokens=-1)
    await fails(client, "route_task", "context_tokens", "valid integer", description="x", context_tokens="lots")
    await fails(client, "route_task", "no model in the catalog accepts", task_type="code_review",
                context_tokens=5_000_000)


# ------------------------------------------------------------------------------------------- usage + report
async def test_record_usage_then_cost_report_shows_the_exact_cost(client: Client, settings: Settings) -> None:
    expected = settings.catalog().cost("claude-haiku-4-5", TokenUsage(12_000, 8_000, 0, 900)).usd
    rec = await call(client, "record_usage", model="claude-haiku-4-5", task_type="test_generation",
                     input_tokens=12_000, cached_input_tokens=8_000, output_tokens=900, latency_ms=2100,
                     ttft_ms=400, team="core", user="ana", project="parser", request_id="req-1",
                     rule_id="test_generation", rule_version=0)
    assert rec["priced"] and not rec["duplicate"] and Decimal(rec["cost_usd"]) == expected
    assert (rec["task_type"], rec["model"]) == ("test_generation", "claude-haiku-4-5")

    again = await call(client, "record_usage", model="claude-haiku-4-5", task_type="test_generation",
                       input_tokens=12_000, cached_input_tokens=8_000, output_tokens=900, request_id="req-1")
    assert again["duplicate"] and again["id"] == rec["id"]

    report = await call(client, "cost_report")
    assert report["total_requests"] == 1 and Decimal(report["total_cost_usd"]) == expected
    [group] = report["groups"]
    assert group["key"] == {"task_type": "test_generation"} and group["requests"] == 1
    assert (group["input_tokens"], group["cached_input_tokens"], group["output_tokens"]) == (12_000, 8_000, 900)
    assert Decimal(group["cost_usd"]) == expected and "test_generation" in report["markdown"]

    by = await call(client, "cost_report", group_by=["model", "team"], team="core")
    assert by["filters"] == {"team": "core"}
    assert by["groups"][0]["key"] == {"model": "claude-haiku-4-5", "team": "core"}
    assert (await call(client, "cost_report", team="other"))["total_requests"] == 0
    assert (await call(client, "cost_report", user="ana", project="parser", model="claude-haiku-4-5",
                       task_type="test_generation"))["total_requests"] == 1

    classified = await call(client, "record_usage", model="cheap", description="write unit tests for the parser",
                            input_tokens=100, output_tokens=10)
    assert classified["task_type"] == "test_generation" and classified["model"] == "gpt-5-nano"


async def test_record_usage_bad_input_writes_nothing(client: Client) -> None:
    before = await total(client)
    ok = {"model": "claude-haiku-4-5", "task_type": "test_generation", "input_tokens": 100, "output_tokens": 10}
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"task_type": "nope"}, ("unknown task type 'nope'",)),
        ({"model": "no-such-model"}, ("no-such-model", "give its provider")),
        ({"input_tokens": -5}, ("input_tokens", "greater than or equal to 0")),
        ({"cached_input_tokens": 500}, ("input_tokens must count every prompt token",)),
        ({"quality": 1.5, "quality_source": "human"}, ("quality", "less than or equal to 1")),
        ({"quality": 0.5}, ("quality_source must be one of",)),
        ({"timestamp": "yesterday"}, ("timestamp must be ISO 8601",)),
        ({"latency_ms": 10, "ttft_ms": 50}, ("ttft_ms",)),
        ({"status": "exploded"}, ("status",)),
        ({"task_type": None}, ("task_type is required",)),
    ]
    for change, fragments in cases:
        await fails(client, "record_usage", *fragments, **{**ok, **change})
    await fails(client, "record_usage", "model", "Field required", task_type="test_generation")
    assert await total(client) == before == (0, Decimal(0))


async def test_record_quality(client: Client) -> None:
    rec = await call(client, "record_usage", model="claude-haiku-4-5", task_type="test_generation",
                     input_tokens=100, output_tokens=10, request_id="r-7")
    q = await call(client, "record_quality", event_id=rec["id"], score=0.9, source="human")
    assert (q["id"], q["quality"], q["source"], q["previous_quality"]) == (rec["id"], 0.9, "human", None)
    q = await call(client, "record_quality", event_id="r-7", score=0.5, source="judge")  # by request_id
    assert q["previous_quality"] == 0.9 and q["quality"] == 0.5

    await fails(client, "record_quality", "score", "less than or equal to 1", event_id=rec["id"], score=1.5,
                source="human")
    await fails(client, "record_quality", "source", "'human', 'judge' or 'automated'", event_id=rec["id"],
                score=0.1, source="vibes")
    await fails(client, "record_quality", "no usage event has id or request_id 'missing'", event_id="missing",
                score=0.1, source="human")
    await fails(client, "record_quality", "give the usage event id", event_id="  ", score=0.1, source="human")
    [group] = (await call(client, "cost_report"))["groups"]
    assert group["avg_quality"] == 0.5 and group["rated_requests"] == 1  # the failed calls changed nothing


async def test_cost_report_bad_input(client: Client) -> None:
    await fails(client, "cost_report", "since must be a date like 2026-11-01", since="last tuesday")
    await fails(client, "cost_report", "until must be a date", until="2026-13-45")
    await fails(client, "cost_report", "must be before until", since="2026-11-10", until="2026-11-01")
    await fails(client, "cost_report", "days", "greater than or equal to 1", days=0)
    await fails(client, "cost_report", "group_by", "'task_type'", group_by=["colour"])


# ------------------------------------------------------------------------------------------- rules
async def test_update_rollback_and_history(client: Client) -> None:
    rule = {"task_type": "test_generation", "primary": "gpt-5-mini", "fallbacks": ["claude-haiku-4-5"]}
    dry = await call(client, "update_routing_rule", rule=rule, author="ana", reason="try mini", dry_run=True)
    assert dry["dry_run"] and dry["new_version"] is None and dry["previous_version"] == 0
    assert dry["rule"]["primary"] == "gpt-5-mini" and dry["previous_rule"]["primary"] == "claude-haiku-4-5"
    assert await rule_version(client, "test_generation") == 0  # a dry run writes nothing

    change = await call(client, "update_routing_rule", rule=rule, author="ana", reason="experiment 12",
                        evidence="exp-12: equal pass rate")
    assert (change["dry_run"], change["previous_version"], change["new_version"]) == (False, 0, 1)
    r = await call(client, "route_task", description="write unit tests for the parser")
    assert (r["model"], r["rule_version"]) == ("gpt-5-mini", 1)

    back = await call(client, "rollback_routing_rule", task_type="test_generation", to_version=0, author="bo",
                      reason="quality dropped")
    assert (back["previous_version"], back["new_version"]) == (1, 2)
    r = await call(client, "route_task", description="write unit tests for the parser")
    assert (r["model"], r["rule_version"]) == ("claude-haiku-4-5", 2)

    history = await call(client, "routing_rule_history", task_type="test_generation")
    assert [v["version"] for v in history["versions"]] == [0, 1, 2]
    assert [v["rule"]["primary"] for v in history["versions"]] == ["claude-haiku-4-5", "gpt-5-mini",
                                                                  "claude-haiku-4-5"]
    assert history["versions"][1]["author"] == "ana" and history["versions"][1]["evidence"].startswith("exp-12")
    assert len(history["audit"]) == 2
    assert "ana" in json.dumps(history["audit"]) and "bo" in json.dumps(history["audit"])
    assert "rollback" in json.dumps(history["audit"])


async def test_rule_changes_refuse_bad_input_and_write_nothing(client: Client) -> None:
    good = {"task_type": "code_autocomplete", "primary": "codestral-2508"}
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"rule": {**good, "required_capabilities": ["vision"]}},
         ("codestral-2508", "lacks required capabilities ['vision']")),
        ({"rule": {**good, "primary": "gpt-99"}}, ("unknown model", "gpt-99")),
        ({"rule": {**good, "task_type": "nope"}}, ("unknown task type 'nope'",)),
        ({"rule": {**good, "colour": "red"}}, ("invalid routing rule", "colour")),
        ({"rule": {"task_type": "code_autocomplete"}}, ("'primary' is a required property",)),
        ({"author": "  "}, ("author is required",)),
        ({"reason": ""}, ("reason is required",)),
    ]
    for change, fragments in cases:
        args = {"rule": good, "author": "ana", "reason": "r", **change}
        await fails(client, "update_routing_rule", *fragments, **args)
    await fails(client, "update_routing_rule", "author", "Field required", rule=good, reason="r")
    await fails(client, "update_routing_rule", "rule", "valid dictionary", rule=[1, 2], author="a", reason="r")

    await fails(client, "rollback_routing_rule", "has no version 5", "versions: [0]", task_type="code_autocomplete",
                to_version=5, author="a", reason="r")
    await fails(client, "rollback_routing_rule", "unknown task type 'nope'", task_type="nope", to_version=0,
                author="a", reason="r")
    await fails(client, "rollback_routing_rule", "reason", "Field required", task_type="code_autocomplete",
                to_version=0, author="a")
    await fails(client, "routing_rule_history", "unknown task type 'nope'", task_type="nope")

    history = await call(client, "routing_rule_history", task_type="code_autocomplete")
    assert [v["version"] for v in history["versions"]] == [0] and history["audit"] == []
    assert await rule_version(client, "code_autocomplete") == 0


# ------------------------------------------------------------------------------------------- catalog
async def test_compare_models(client: Client, settings: Settings) -> None:
    c = await call(client, "compare_models", task_type="code_review")
    current = [x for x in c["candidates"] if x["current"]]
    assert [x["model"] for x in current] == ["claude-sonnet-4-5"]
    costs = [Decimal(x["cost_per_request_usd"]) for x in c["candidates"] if x["cost_per_request_usd"] is not None]
    assert costs == sorted(costs) and c["profile_source"] == "default" and c["markdown"]

    given = await call(client, "compare_models", models=["gpt-5-mini", "claude-haiku-4-5"], input_tokens=10_000,
                       output_tokens=1_000)
    assert given["profile_source"] == "given" and not any(x["current"] for x in given["candidates"])
    catalog = settings.catalog()
    for cand in given["candidates"]:
        assert Decimal(cand["cost_per_request_usd"]) == catalog.cost(cand["model"], TokenUsage(10_000, 0, 0, 1_000)).usd

    await fails(client, "compare_models", "unknown model", "gpt-99", models=["gpt-99"])
    await fails(client, "compare_models", "unknown task type 'nope'", task_type="nope")
    await fails(client, "compare_models", "give a task_type, a list of models, or token counts")
    await fails(client, "compare_models", "input_tokens", "greater than or equal to 0", models=["gpt-5-mini"],
                input_tokens=-1)
    await fails(client, "compare_models", "cached_input_tokens + cache_write_tokens exceed input_tokens",
                models=["gpt-5-mini"], input_tokens=10, output_tokens=1, cached_input_tokens=50)


async def test_list_models(client: Client) -> None:
    everything = await call(client, "list_models")
    simple = await call(client, "list_models", tier="simple")
    assert simple["models"] and all(m["tier"] == "simple" for m in simple["models"])
    assert len(simple["models"]) < len(everything["models"])
    assert "claude-haiku-4-5" in {m["name"] for m in simple["models"]}
    openai = await call(client, "list_models", provider="openai", tier="complex")
    assert openai["models"] and all((m["provider"], m["tier"]) == ("openai", "complex") for m in openai["models"])
    assert everything["aliases"]
    await fails(client, "list_models", "tier", "'simple', 'standard' or 'complex'", tier="huge")
    await fails(client, "list_models", "unknown provider 'acme'", "openai", provider="acme")


# ------------------------------------------------------------------------------------------- errors
async def test_unexpected_errors_are_logged_not_shown(client: Client, monkeypatch, caplog) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internal detail /etc/prism")

    monkeypatch.setattr(PrismService, "route_task", broken)
    with caplog.at_level(logging.ERROR, logger="mcp_prism.mcp_server"):
        text = await fails(client, "route_task", "internal error", description="x")
    assert "secret internal detail" not in text
    assert any("route_task failed unexpectedly" in r.message and r.exc_info for r in caplog.records)


# ------------------------------------------------------------------------------------------- resources
async def test_resources_read_back_as_json(client: Client) -> None:
    listed = {str(r.uri) for r in (await client.list_resources()).resources}
    assert {"prism://rules", "prism://catalog"} <= listed
    templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    assert "prism://rules/{task_type}" in templates

    rules = json.loads((await client.read_resource("prism://rules")).contents[0].text)
    by_type = {r["task_type"]: r for r in rules}
    assert by_type["code_review"]["rule"]["primary"] == "claude-sonnet-4-5" and by_type["code_review"]["version"] == 0

    await call(client, "update_routing_rule", rule={"task_type": "code_review", "primary": "gpt-5"}, author="ana",
               reason="r")
    one = (await client.read_resource("prism://rules/code_review")).contents[0]
    assert one.mime_type == "application/json"
    data = json.loads(one.text)
    assert data["active"]["version"] == 1 and data["active"]["rule"]["primary"] == "gpt-5"
    assert [v["version"] for v in data["versions"]] == [0, 1] and len(data["audit"]) == 1

    catalog = json.loads((await client.read_resource("prism://catalog")).contents[0].text)
    assert "claude-haiku-4-5" in {m["name"] for m in catalog["models"]} and catalog["aliases"]

    with pytest.raises(MCPError) as err:
        await client.read_resource("prism://rules/nope")
    assert err.value.error.code == -32602 and "unknown task type 'nope'" in err.value.error.message


# ------------------------------------------------------------------------------------------- sessions
async def test_sessions_share_one_service(server, settings: Settings) -> None:
    async with Client(server) as a:
        async with Client(server, mode="legacy") as b:
            await call(a, "update_routing_rule", rule={"task_type": "general", "primary": "gpt-5"}, author="a",
                       reason="r")
            assert (await call(b, "route_task", task_type="general"))["rule_version"] == 1  # no cache lag
            await call(b, "record_usage", model="gpt-5", task_type="general", input_tokens=10, output_tokens=1)
            assert (await total(a))[0] == 1
        assert (await call(a, "route_task", task_type="general"))["model"] == "gpt-5"  # still open
    async with Client(server) as c:  # reopened after the last session closed it
        assert (await total(c))[0] == 1


@pytest.mark.slow
async def test_stdio_round_trip(tmp_path: Path) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_prism.mcp_server"],
                                   env={"PRISM_HOME": str(tmp_path), "PATH": os.environ.get("PATH", ""),
                                        "PRISM_TOOLSETS": "all"})
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as c:
            assert {t.name for t in (await c.list_tools()).tools} == TOOLS
            r = await call(c, "route_task", description="write unit tests for the parser")
            assert r["model"] == "claude-haiku-4-5"
            await fails(c, "record_quality", "no usage event", event_id="x", score=0.5, source="human")
    assert (tmp_path / "prism.db").exists()


# ------------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, str, subprocess.Popen[bytes], Path]]:
    """serve_http for real in a child process on 127.0.0.1:<free port>, with a bearer token."""
    port, token = free_port(), "t0ken-" + os.urandom(8).hex()
    env = {**os.environ, "PRISM_HOME": str(tmp_path / "home"), "PRISM_TOKEN": token, "PRISM_TOOLSETS": "all"}
    log, stdout = tmp_path / "server.log", tmp_path / "server.stdout"
    with log.open("w") as err, stdout.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", HTTP_SCRIPT, str(port)], env=env, stdout=out, stderr=err)
    try:
        wait_for_port(proc, port, log)
        yield f"http://127.0.0.1:{port}/mcp", token, proc, log
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.slow
async def test_http_requires_the_bearer_token_and_checks_origin(http_server) -> None:
    url, token, proc, log = http_server
    async with httpx.AsyncClient(timeout=10) as h:
        r = await h.post(url, json=INIT, headers=HEADERS)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await h.post(url, json=INIT, headers={**HEADERS, "Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = await h.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {token}x"})
        assert r.status_code == 401
        r = await h.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {token}",
                                                  "Origin": "http://evil.example"})
        assert r.status_code == 403
        r = await h.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {token}",
                                                  "Host": "evil.example"})
        assert r.status_code == 421
        r = await h.post(url, json=INIT, headers={**HEADERS, "Authorization": f"Bearer {token}",
                                                  "Origin": url.removesuffix("/mcp")})
        assert r.status_code == 200 and "mcp-prism" in r.text

    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as h2:
        for mode in ("legacy", "auto"):
            async with Client(streamable_http_client(url, http_client=h2), mode=mode) as c:
                assert {t.name for t in (await c.list_tools()).tools} == TOOLS
                r = await call(c, "route_task", description="write unit tests for the parser")
                assert r["model"] == "claude-haiku-4-5"
                await fails(c, "route_task", "unknown task type", task_type="nope")

    proc.terminate()
    proc.wait(10)
    out = log.read_text()
    assert "POST /mcp" in out and "Invalid Origin header" in out  # the log (access log too) is on stderr ...
    assert token not in out, "the bearer token leaked into the server's log"  # ... without the token
    assert log.with_suffix(".stdout").read_text() == ""


def test_http_config_guards(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="needs a bearer token"):
        build_http_server(settings, host="0.0.0.0", port=8765)
    with pytest.raises(ConfigError, match="needs a bearer token"):
        serve_http(settings, host="0.0.0.0", port=8765)  # refused before anything is bound
    with pytest.raises(ConfigError, match="empty"):
        build_http_server(settings, host="127.0.0.1", token=" ")
    server, security = build_http_server(settings, host="0.0.0.0", port=9000, token="s3cret")
    assert security.enable_dns_rebinding_protection
    assert {"0.0.0.0:9000", "127.0.0.1:9000", "localhost:9000", "[::1]:9000"} <= set(security.allowed_hosts)
    assert "http://localhost:9000" in security.allowed_origins
    assert "s3cret" not in repr(server._token_verifier)
    _, loopback = build_http_server(settings)  # loopback without a token is allowed
    assert loopback.allowed_hosts[0] == "127.0.0.1:8765"
    _, extra = build_http_server(settings, host="0.0.0.0", port=9000, token="s3cret",
                                 allowed_hosts=["prism.internal", "10.0.0.5:9001", "fe80::1"])
    assert {"prism.internal:9000", "10.0.0.5:9001", "[fe80::1]:9000"} <= set(extra.allowed_hosts)
    assert "https://prism.internal:9000" in extra.allowed_origins
    with pytest.raises(ConfigError, match="port"):
        build_http_server(settings, port=0)
