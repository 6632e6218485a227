"""Toolsets: the default MCP tool list is small enough to send with every agent request, each toolset
turns on exactly its tools, unknown names are refused, and the compact schemas accept what the full
ones accept. Sizes are measured on a real stdio session (the bytes of the JSON-RPC answer)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from mcp_prism import mcp_toolsets
from mcp_prism.config import Settings
from mcp_prism.errors import ConfigError
from mcp_prism.mcp_server import build_server

CORE = {"route_task", "record_usage", "record_quality", "cost_report"}
# Tokens counted as characters / 4 of the whole JSON-RPC `tools/list` answer, as the server writes it
# on stdio (compact JSON, ASCII). Real tokenizers give about 3.5-4.5 characters per token on this text.
TOKEN_BUDGET = 2000
CHARS_PER_TOKEN = 4


def stdio_session(env: dict[str, str], *args: str) -> dict[str, str]:
    """Start `mcp-prism serve ARGS` on stdio, speak raw JSON-RPC, return the raw answer lines."""
    p = subprocess.Popen([sys.executable, "-m", "mcp_prism", "serve", *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    assert p.stdin and p.stdout
    try:
        def send(message: dict[str, Any]) -> None:
            p.stdin.write(json.dumps(message) + "\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]

        send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "size-test", "version": "1"}}})
        init = p.stdout.readline()
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        listed = p.stdout.readline()
    finally:
        p.stdin.close()
        p.wait(20)
        err = p.stderr.read() if p.stderr else ""
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert init and listed, err
    return {"initialize": init, "tools/list": listed}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {**os.environ, "PRISM_HOME": str(tmp_path / "home")}
    for name in ("PRISM_DB", "PRISM_CONFIG", mcp_toolsets.ENV):
        e.pop(name, None)
    return e


@pytest.mark.slow
def test_default_tools_list_fits_the_token_budget_on_a_real_session(env: dict[str, str]) -> None:
    answer = stdio_session(env)["tools/list"]
    tools = json.loads(answer)["result"]["tools"]
    assert {t["name"] for t in tools} == CORE
    chars = len(answer.encode("utf-8"))
    assert chars / CHARS_PER_TOKEN <= TOKEN_BUDGET, f"tools/list is {chars} characters (~{chars // 4} tokens)"
    for t in tools:  # small, but still says when to call it and what each argument is
        assert len(t["description"]) > 80, t["name"]
        assert all(p.get("description") for p in t["inputSchema"]["properties"].values()), t["name"]
        assert t["outputSchema"]["type"] == "object" and t["outputSchema"]["properties"], t["name"]
    # the whole list with every toolset on, for the record: far below the 100 KB it was
    everything = stdio_session(env, "--toolsets", "all")["tools/list"]
    assert len(json.loads(everything)["result"]["tools"]) == sum(map(len, mcp_toolsets.TOOLSETS.values()))
    assert len(everything) < 48_000


@pytest.mark.anyio
@pytest.mark.parametrize("name", [n for n in mcp_toolsets.TOOLSETS if n != mcp_toolsets.CORE])
async def test_each_toolset_turns_on_exactly_its_tools(tmp_path: Path, name: str) -> None:
    async with Client(build_server(Settings.from_env({}, home=tmp_path), toolsets=name)) as c:
        listed = {t.name for t in (await c.list_tools()).tools}
        assert listed == CORE | set(mcp_toolsets.TOOLSETS[name])
        # a tool of another toolset is not registered at all: it cannot be called either
        other = next(t for n, ts in mcp_toolsets.TOOLSETS.items() if n not in (name, mcp_toolsets.CORE) for t in ts)
        r = await c.call_tool(other, {})
        assert r.is_error and "Unknown tool" in r.content[0].text


@pytest.mark.anyio
async def test_the_toolsets_partition_every_tool(tmp_path: Path) -> None:
    names = [t for ts in mcp_toolsets.TOOLSETS.values() for t in ts]
    assert len(names) == len(set(names)), "a tool is in two toolsets"
    settings = Settings.from_env({}, home=tmp_path)
    async with Client(build_server(settings, toolsets="all")) as c:
        assert {t.name for t in (await c.list_tools()).tools} == set(names)
    async with Client(build_server(settings)) as c:
        assert {t.name for t in (await c.list_tools()).tools} == CORE
        assert set(mcp_toolsets.TOOLSETS[mcp_toolsets.CORE]) == CORE
        assert "--toolsets" in (c.instructions or "")  # the agent is told the rest exists


def test_names_are_parsed_and_unknown_ones_refused_with_the_valid_ones() -> None:
    assert mcp_toolsets.parse(" Loop , team,,loop", "x") == ("core", "loop", "team")
    assert mcp_toolsets.parse(["all"], "x") == tuple(mcp_toolsets.TOOLSETS)
    assert mcp_toolsets.parse("", "x") == ("core",)
    with pytest.raises(ConfigError, match=r"unknown toolset 'lop'; valid toolsets: core, rules, loop, data, team, "
                                          r"all"):
        mcp_toolsets.parse("lop", "--toolsets")
    with pytest.raises(ConfigError, match="toolset names are strings"):
        mcp_toolsets.parse([3], "[mcp] toolsets")  # type: ignore[list-item]


def test_flag_beats_env_beats_config() -> None:
    config = {"mcp": {"toolsets": ["team"]}}
    env = {mcp_toolsets.ENV: "data"}
    assert mcp_toolsets.resolve("loop", env=env, config=config) == ("core", "loop")
    assert mcp_toolsets.resolve(None, env=env, config=config) == ("core", "data")
    assert mcp_toolsets.resolve(None, env={mcp_toolsets.ENV: " "}, config=config) == ("core", "team")
    assert mcp_toolsets.resolve(None, env={}, config={}) == ("core",)
    with pytest.raises(ConfigError, match=r"\[mcp\] toolsets must be a list"):
        mcp_toolsets.resolve(None, config={"mcp": {"toolsets": 3}})
    with pytest.raises(ConfigError, match=r"\[mcp\] in config.toml must be a table"):
        mcp_toolsets.resolve(None, config={"mcp": "loop"})


@pytest.mark.anyio
async def test_config_file_turns_toolsets_on(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[mcp]\ntoolsets = ["team", "rules"]\n')
    async with Client(build_server(Settings.from_env({}, home=tmp_path))) as c:
        listed = {t.name for t in (await c.list_tools()).tools}
    assert listed == CORE | set(mcp_toolsets.TOOLSETS["team"]) | set(mcp_toolsets.TOOLSETS["rules"])
    (tmp_path / "config.toml").write_text('[mcp]\ntoolsets = ["budgets"]\n')
    with pytest.raises(ConfigError, match="unknown toolset 'budgets'"):
        build_server(Settings.from_env({}, home=tmp_path))


def test_serve_refuses_unknown_toolsets_before_serving(env: dict[str, str]) -> None:
    r = subprocess.run([sys.executable, "-m", "mcp_prism", "serve", "--toolsets", "loop,nope"], env=env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown toolset 'nope'" in r.stderr and "core, rules, loop, data, team, all" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mcp_prism", "serve"], env={**env, mcp_toolsets.ENV: "teams"},
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "PRISM_TOOLSETS: unknown toolset 'teams'" in r.stderr


@pytest.mark.slow
def test_env_var_turns_toolsets_on_for_a_served_process(env: dict[str, str]) -> None:
    answer = stdio_session({**env, mcp_toolsets.ENV: "team"})["tools/list"]
    assert {t["name"] for t in json.loads(answer)["result"]["tools"]} == CORE | {"set_budget", "budget_status"}


# ------------------------------------------------------------------------------------------- compact schemas
PROBES: list[Any] = [None, True, 0, -1, 1, 0.5, 1e9, "x", "", [], ["x"], {}, {"a": 1}, "task_type"]


@pytest.mark.anyio
async def test_compact_input_schemas_accept_what_the_full_ones_accept(tmp_path: Path) -> None:
    """Every argument of every tool, probed with values of every JSON type: the compact schema agrees
    with pydantic's full one, except that an optional argument is no longer offered null."""
    server = build_server(Settings.from_env({}, home=tmp_path), toolsets="all")
    full = {t.name: t.input_schema for t in await MCPServer.list_tools(server)}
    compact = {t.name: t.input_schema for t in await server.list_tools()}
    assert set(full) == set(compact)
    checked = 0
    for name, schema in full.items():
        small = compact[name]
        assert "title" not in json.dumps(small).replace('"title": {', "")
        assert len(json.dumps(small)) < len(json.dumps(schema))
        required = schema.get("required", [])
        base = {r: _valid_example(schema["properties"][r], schema) for r in required}
        for prop, value in itertools.product(schema["properties"], PROBES):
            instance = {**base, prop: value}
            want = jsonschema.Draft202012Validator(schema).is_valid(instance)
            got = jsonschema.Draft202012Validator(small).is_valid(instance)
            if value is None and prop not in required and schema["properties"][prop].get("default", 0) is None:
                assert not got  # optional: leave it out instead of sending null
            else:
                assert want == got, (name, prop, value)
            checked += 1
    assert checked > 1000


def _valid_example(prop: dict[str, Any], root: dict[str, Any]) -> Any:
    """A value the full schema accepts for a required argument (enough for our tools' arguments)."""
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if kind == "string":
        return "x"
    if kind == "integer":
        return max(1, prop.get("minimum", 1))
    if kind == "number":
        return 0.5
    if kind == "array":
        return ["gpt-5-mini"]
    if kind == "object" or "$ref" in prop:
        return {"task_type": "general", "primary": "gpt-5-mini"}
    if "anyOf" in prop:
        return _valid_example(prop["anyOf"][0], root)
    raise AssertionError(f"no example for {prop}")
