"""The skills package end to end with the real OpenCode CLI (npm `opencode-ai`, pinned in .ci/run), offline
and isolated in a temp HOME, driven by a scripted model on 127.0.0.1:

1. `mcp-prism install opencode` into a fresh project, then `opencode run --command review ...`: the agent
   calls mcp_prism's tools over MCP and the usage it records lands in the store.
2. With `--gateway`, the agent's own model requests go through `mcp-prism gateway`, which records each
   under the command's task type at the right cost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_for_port
from scripted_llm import ScriptedLLM, run_scripted_llm

ROOT = Path(__file__).resolve().parents[1]
OPENCODE = Path(os.environ.get("PRISM_OPENCODE_BIN", ROOT / ".ci/cache/opencode/node_modules/.bin/opencode"))

pytestmark = pytest.mark.skipif(not OPENCODE.exists(), reason=f"OpenCode not installed at {OPENCODE}; `.ci/run` "
                                "installs it (npm install --prefix .ci/cache/opencode opencode-ai@1.18.33)")

SCRIPTED_PRICE = {"input": "1.00", "output": "2.00"}  # USD per million tokens, for the scripted model


def _steps(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("prism_route_task", {"task_type": "code_review", "description": "review src/app.py"}),
            ("prism_record_usage", {"model": "claude-sonnet-4-5", "task_type": "code_review", "input_tokens": 1200,
                                    "output_tokens": 300, "latency_ms": 900})]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[dict[str, Any]]:
    home = tmp_path / "home"
    project = tmp_path / "project"
    prism_home = tmp_path / "prism"
    for d in (home, project / "src", prism_home):
        d.mkdir(parents=True)
    (project / "src" / "app.py").write_text("def add(a, b):\n    return a - b\n")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_STATE_HOME": str(home / ".local/state"), "OPENCODE_DISABLE_AUTOUPDATE": "1",
           "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
           "PRISM_HOME": str(prism_home), "PWD": str(project)}  # OpenCode takes its project folder from PWD
    for name in ("PRISM_DB", "PRISM_CONFIG"):
        env.pop(name, None)
    yield {"home": home, "project": project, "prism_home": prism_home, "env": env, "tmp": tmp_path}


def _prism(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_prism", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _opencode(args: list[str], sb: dict[str, Any], extra_env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    r = subprocess.run([str(OPENCODE), *args, "--format", "json"], cwd=sb["project"],
                       env={**sb["env"], **(extra_env or {})}, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"opencode failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def _tool_uses(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["part"]["tool"]: e["part"]["state"] for e in events if e.get("type") == "tool_use"}


def test_review_command_calls_prism_tools_and_usage_lands_in_the_store(sandbox: dict[str, Any]) -> None:
    installed = _prism(["install", "opencode", "--dir", str(sandbox["project"]), "--template", "python"],
                       sandbox["env"])
    assert installed.returncode == 0, installed.stderr
    config = json.loads((sandbox["project"] / "opencode.json").read_text())
    assert "prism" in config["mcp"]
    port = free_port()
    provider = {"provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "options": {
        "baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": "unused"}, "models": {"scripted": {"tool_call": True}}}},
        "enabled_providers": ["fake", "prism"], "model": "fake/scripted"}
    with run_scripted_llm(ScriptedLLM(_steps), port) as llm:
        events = _opencode(["run", "--model", "fake/scripted", "--command", "review", "src/app.py"], sandbox,
                           {"OPENCODE_CONFIG_CONTENT": json.dumps(provider)})
    tools = _tool_uses(events)
    assert tools["prism_route_task"]["status"] == "completed"
    assert tools["prism_record_usage"]["status"] == "completed"
    # what OpenCode sends with every model request for mcp_prism: the core tools, within 2,000 tokens (chars / 4)
    sent = [t for t in llm.requests[-1]["tools"] if t["function"]["name"].startswith("prism_")]
    assert {t["function"]["name"] for t in sent} == {"prism_route_task", "prism_record_usage",
                                                     "prism_record_quality", "prism_cost_report"}
    assert len(json.dumps(sent)) / 4 <= 2000, len(json.dumps(sent))
    # the installed command's text reached the model, not OpenCode's built-in /review
    prompt = json.dumps(llm.requests[-1]["messages"])
    assert "code_review" in prompt or "route_task" in prompt
    with sqlite3.connect(sandbox["prism_home"] / "prism.db") as db:
        rows = db.execute("SELECT task_type, model, source, input_tokens FROM usage_events").fetchall()
    assert rows == [("code_review", "claude-sonnet-4-5", "mcp", 1200)]


def test_with_gateway_agent_requests_are_recorded_under_the_commands_task_type(sandbox: dict[str, Any]) -> None:
    llm_port, gw_port = free_port(), free_port()
    prism_home: Path = sandbox["prism_home"]
    # the gateway's upstream is the scripted model, a local vLLM-style server with a configured price
    (prism_home / "config.toml").write_text(
        f'[providers.vllm]\nbase_url = "http://127.0.0.1:{llm_port}/v1"\n'
        f'[models."scripted"]\nprovider = "vllm"\ntier = "standard"\ncontext_window = 128000\n'
        f'capabilities = ["tools"]\nprice = {{ input = "{SCRIPTED_PRICE["input"]}", '
        f'output = "{SCRIPTED_PRICE["output"]}" }}\n')
    rule = {"task_type": "code_review", "primary": "scripted"}
    rule_file = sandbox["tmp"] / "rule.json"
    rule_file.write_text(json.dumps(rule))
    set_rule = _prism(["rules", "set", str(rule_file), "--author", "test", "--reason", "route reviews to the "
                       "scripted model"], sandbox["env"])
    assert set_rule.returncode == 0, set_rule.stderr
    installed = _prism(["install", "opencode", "--dir", str(sandbox["project"]), "--gateway",
                        f"http://127.0.0.1:{gw_port}/v1"], sandbox["env"])
    assert installed.returncode == 0, installed.stderr
    config = json.loads((sandbox["project"] / "opencode.json").read_text())
    models = config["provider"]["prism"]["models"]
    assert "prism/code_review" in models and "auto" in models
    log = sandbox["tmp"] / "gateway.log"
    with log.open("wb") as out:
        gateway = subprocess.Popen([sys.executable, "-m", "mcp_prism", "gateway", "--port", str(gw_port),
                                    "--no-auth"],
                                   env=sandbox["env"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(gateway, gw_port, log)
        with run_scripted_llm(ScriptedLLM(_steps), llm_port) as llm:
            _opencode(["run", "--model", "prism/prism/code_review", "--command", "review", "src/app.py"], sandbox,
                      {"OPENCODE_CONFIG_CONTENT": json.dumps({"enabled_providers": ["prism"]})})
        assert llm.requests, "no request reached the upstream through the gateway"
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
    with sqlite3.connect(prism_home / "prism.db") as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM usage_events WHERE source = 'gateway'")]
    assert len(rows) >= 2  # the agent's turns (and OpenCode's title request) all went through the gateway
    for row in rows:
        assert row["task_type"] == "code_review" and row["model"] == "scripted" and row["status"] == "ok"
        expected = (Decimal(row["input_tokens"]) * Decimal(SCRIPTED_PRICE["input"])
                    + Decimal(row["output_tokens"]) * Decimal(SCRIPTED_PRICE["output"])) / Decimal(1_000_000)
        assert Decimal(row["cost_usd"]) == expected


def test_installed_toolsets_reach_the_agent(sandbox: dict[str, Any]) -> None:
    """`install --toolsets team` writes PRISM_TOOLSETS into opencode.json's MCP entry: the agent sees the budget
    tools (and, without it, only the core ones)."""
    installed = _prism(["install", "opencode", "--dir", str(sandbox["project"]), "--toolsets", "team"],
                       sandbox["env"])
    assert installed.returncode == 0, installed.stderr
    port = free_port()
    provider = {"provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "options": {
        "baseURL": f"http://127.0.0.1:{port}/v1", "apiKey": "unused"}, "models": {"scripted": {"tool_call": True}}}},
        "enabled_providers": ["fake"], "model": "fake/scripted"}

    def steps(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [("prism_budget_status", {})]

    with run_scripted_llm(ScriptedLLM(steps), port) as llm:
        events = _opencode(["run", "--model", "fake/scripted", "how are our budgets?"], sandbox,
                           {"OPENCODE_CONFIG_CONTENT": json.dumps(provider)})
    assert _tool_uses(events)["prism_budget_status"]["status"] == "completed"
    offered = {t["function"]["name"] for t in llm.requests[-1].get("tools", []) if t["function"]["name"].startswith(
        "prism_")}
    assert offered == {"prism_route_task", "prism_record_usage", "prism_record_quality", "prism_cost_report",
                       "prism_set_budget", "prism_budget_status"}
