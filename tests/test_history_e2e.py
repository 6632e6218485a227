"""`import-history` on logs the REAL agents wrote: Claude Code (`claude -p`), OpenCode (`opencode run`) and Codex
CLI (`codex exec`), pinned from npm by .ci/run, run offline in a temp HOME against the fake providers
(tests/fakes.py). Each log is read here independently (plain json/sqlite, not the importer's code) to say
what must be imported: every request once, every token, the cost genai-prices gives at the request's time,
subagent turns marked; then a re-import adds nothing and a new run adds only its own requests. ccusage
(npm, pinned) reads the same Claude Code folder: its token totals per day and model must equal ours.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import real_client
from fakes import CACHE_CREATION_1H_TOKENS, FakeProviders, run_fake_providers
from genai_prices import Usage, calc_price

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 180
# OpenCode is told a price that is not genai-prices' (gpt-4o-mini: input 0.15), so the disagreement shows
OPENCODE_COST = {"input": 0.3, "output": 0.6, "cache_read": 0.075}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _gp_cost(model: str, provider: str, at: datetime, **tokens: int) -> Decimal:
    return calc_price(Usage(**tokens), model_ref=model, provider_id=provider, genai_request_timestamp=at).total_price


# ------------------------------------------------------------------ running the real agents
def _base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "LANG": "C.UTF-8", "TZ": "UTC"}


def _claude(fake: FakeProviders, home: Path, project: Path, prompt: str) -> dict[str, Any]:
    env = {**_base_env(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"), "DISABLE_TELEMETRY": "1",
           "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": fake.keys["anthropic"]}
    r = subprocess.run([str(real_client("claude")), "-p", prompt, "--output-format", "json"], cwd=project, env=env,
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, f"claude failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return json.loads(r.stdout)


def _opencode(fake: FakeProviders, home: Path, project: Path, prompt: str) -> None:
    env = {**_base_env(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local/share"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_STATE_HOME": str(home / ".local/state"),
           "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1",
           "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "PWD": str(project),
           "OPENCODE_CONFIG_CONTENT": json.dumps({
               "provider": {"openai": {"npm": "@ai-sdk/openai-compatible", "options": {
                   "baseURL": fake.openai_base_url, "apiKey": fake.keys["openai"]},
                   "models": {"gpt-4o-mini": {"tool_call": True, "cost": OPENCODE_COST}}}},
               "enabled_providers": ["openai"], "model": "openai/gpt-4o-mini"})}
    r = subprocess.run([str(real_client("opencode")), "run", "--model", "openai/gpt-4o-mini", prompt, "--format",
                        "json"], cwd=project, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, f"opencode failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def _codex(fake: FakeProviders, home: Path, project: Path, prompt: str) -> None:
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "gpt-5.1-codex-mini"\nmodel_provider = "fake"\n[model_providers.fake]\nname = "fake"\n'
        f'base_url = "{fake.openai_base_url}"\nenv_key = "FAKE_OPENAI_KEY"\nwire_api = "responses"\n')
    env = {**_base_env(home), "CODEX_HOME": str(codex_home), "FAKE_OPENAI_KEY": fake.keys["openai"]}
    r = subprocess.run([str(real_client("codex")), "exec", "--skip-git-repo-check", prompt], cwd=project, env=env,
                       capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"codex failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def _import(prism_home: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRISM_", "CLAUDE_", "CODEX_", "XDG_"))}
    r = subprocess.run([sys.executable, "-m", "mcp_prism", "import-history", *args, "--json", "--home",
                        str(prism_home), "--machine", "laptop-1", "--user", "ana"], env=env, capture_output=True,
                       text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _events(prism_home: Path, agent: str) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(prism_home / "prism.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM usage_events WHERE agent = ?", (agent,)).fetchall()
    return {r["request_id"]: r for r in rows}


@pytest.fixture(scope="module")
def fake() -> Any:
    with run_fake_providers() as f:
        yield f


# ------------------------------------------------------------------ Claude Code
def _claude_logged(config: Path) -> dict[str, dict[str, Any]]:
    """Every API request in Claude Code's logs, read plainly: first entry per (message id, request id)."""
    out: dict[str, dict[str, Any]] = {}
    for f in sorted((config / "projects").rglob("*.jsonl")):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            m = e.get("message")
            if e.get("type") != "assistant" or not isinstance(m, dict) or m.get("model") == "<synthetic>":
                continue
            out.setdefault(f"claude-code:{m['id']}:{e['requestId']}", {**e, "_file": f})
    return out


def test_claude_code_history_imports_every_request_once_at_genai_prices(fake: FakeProviders, tmp_path: Path) -> None:
    home, project, prism = tmp_path / "home", tmp_path / "invoices", tmp_path / "prism"
    project.mkdir(parents=True)
    _claude(fake, home, project, "write unit tests for the invoice parser [cached1h]")
    # thinking and a tool call: the message is logged twice; the first tool offered is Agent, so a subagent runs
    _claude(fake, home, project, "review this diff for bugs [tool] [reasoning]")
    config = home / ".claude"
    logged = _claude_logged(config)
    entries = sum(1 for f in (config / "projects").rglob("*.jsonl") for line in f.read_text().splitlines()
                  if json.loads(line).get("type") == "assistant")
    assert len(logged) >= 4 and entries > len(logged), "Claude Code logs streamed messages more than once"
    assert any(e["isSidechain"] for e in logged.values())
    assert any(e["message"]["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] == CACHE_CREATION_1H_TOKENS
               for e in logged.values())
    served = {c.body["model"] for c in fake.calls if c.path == "/v1/messages" and isinstance(c.body, dict)}
    assert {e["message"]["model"] for e in logged.values()} <= served

    first = _import(prism, "claude-code", "--path", str(config))
    (cc,) = first["agents"]
    assert (cc["requests"], cc["stored"], cc["duplicates"], cc["unpriced"]) == (len(logged), len(logged), 0, 0)
    assert cc["sidechain"] == sum(1 for e in logged.values() if e["isSidechain"])
    events = _events(prism, "claude-code")
    assert set(events) == set(logged)
    total = Decimal(0)
    for rid, e in logged.items():
        u, ev = e["message"]["usage"], events[rid]
        hour = u["cache_creation"]["ephemeral_1h_input_tokens"]
        writes, reads = u["cache_creation_input_tokens"], u["cache_read_input_tokens"]
        assert (ev["input_tokens"], ev["cached_input_tokens"], ev["cache_write_tokens"], ev["cache_write_1h_tokens"],
                ev["output_tokens"]) == (u["input_tokens"] + reads + writes, reads, writes, hour, u["output_tokens"])
        cost = _gp_cost(e["message"]["model"], "anthropic", _ts(e["timestamp"]),
                        input_tokens=u["input_tokens"] + reads + writes, cache_read_tokens=reads,
                        cache_write_tokens=writes, cache_write_1h_tokens=hour, output_tokens=u["output_tokens"])
        assert Decimal(ev["cost_usd"]) == cost, rid
        total += cost
        assert (ev["model"], ev["provider"], ev["source"], ev["project"], ev["session_id"], ev["sidechain"],
                ev["machine"], ev["user"]) == (e["message"]["model"], "anthropic", "import", "invoices",
                                               e["sessionId"], int(e["isSidechain"]), "laptop-1", "ana")
        assert ev["ts"][:19] == e["timestamp"][:19]
    assert Decimal(cc["cost_usd"]) == total
    # the person's words decide the task type, not Claude Code's system reminders around them
    first_session = [ev for ev in events.values() if ev["cache_write_1h_tokens"]]
    assert first_session and all(ev["task_type"] == "test_generation" for ev in first_session)
    with sqlite3.connect(prism / "prism.db") as db:
        assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0  # prompts only when capture is on

    again = _import(prism, "claude-code", "--path", str(config))
    assert (again["agents"][0]["files_read"], again["agents"][0]["stored"]) == (0, 0)
    # a new session: only its requests are read and stored
    _claude(fake, home, project, "explain what this module does")
    third = _import(prism, "claude-code", "--path", str(config))
    new = set(_claude_logged(config)) - set(logged)
    assert new and third["agents"][0]["stored"] == len(new) == third["agents"][0]["requests"]
    assert set(_events(prism, "claude-code")) == set(logged) | new

    # ccusage 18 on the same folder: equal token totals per day and model
    ccusage = ROOT / ".ci/cache/ccusage/node_modules/.bin/ccusage"
    if not ccusage.exists():
        pytest.skip("ccusage is not installed: .ci/run installs it (npm install --prefix .ci/cache/ccusage "
                    "ccusage@18.0.11)")
    r = subprocess.run([str(ccusage), "daily", "--json", "--offline"], env={
        **_base_env(home), "CLAUDE_CONFIG_DIR": str(config)}, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    theirs = {(d["date"], b["modelName"]): (b["inputTokens"] + b["cacheCreationTokens"] + b["cacheReadTokens"],
                                            b["cacheReadTokens"], b["cacheCreationTokens"], b["outputTokens"])
              for d in json.loads(r.stdout)["daily"] for b in d["modelBreakdowns"]}
    ours: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for ev in _events(prism, "claude-code").values():
        acc = ours[(ev["ts"][:10], ev["model"])]
        for i, col in enumerate(("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")):
            acc[i] += ev[col]
    assert {k: tuple(v) for k, v in ours.items()} == theirs


# ------------------------------------------------------------------ OpenCode
def test_opencode_history_keeps_its_own_cost_beside_genai_prices(fake: FakeProviders, tmp_path: Path) -> None:
    home, project, prism = tmp_path / "home", tmp_path / "parser", tmp_path / "prism"
    project.mkdir(parents=True)
    _opencode(fake, home, project, "write unit tests for the invoice parser [cached] [reasoning]")
    _opencode(fake, home, project, "find the bug in the parser [tool]")
    data = home / ".local/share/opencode"
    with sqlite3.connect(data / "opencode.db") as db:
        steps = {f"opencode:{pid}": (json.loads(p), json.loads(m), created) for pid, p, m, created in db.execute(
            "SELECT p.id, p.data, m.data, p.time_created FROM part p JOIN message m ON m.id = p.message_id "
            "WHERE json_extract(p.data, '$.type') = 'step-finish'")}
        assert {v for (v,) in db.execute("SELECT version FROM session")} == {"1.18.33"}
    assert len(steps) >= 3

    out = _import(prism, "opencode", "--path", str(data))
    (oc,) = out["agents"]
    assert (oc["requests"], oc["stored"], oc["unpriced"]) == (len(steps), len(steps), 0)
    events = _events(prism, "opencode")
    assert set(events) == set(steps)
    ours_total = theirs_total = Decimal(0)
    for rid, (part, msg, created) in steps.items():
        t, ev = part["tokens"], events[rid]
        n_in = t["input"] + t["cache"]["read"] + t["cache"]["write"]
        assert (ev["input_tokens"], ev["cached_input_tokens"], ev["output_tokens"], ev["reasoning_tokens"]) == (
            n_in, t["cache"]["read"], t["output"] + t["reasoning"], t["reasoning"])
        cost = _gp_cost("gpt-4o-mini", "openai", datetime.fromtimestamp(created / 1000).astimezone(),
                        input_tokens=n_in, cache_read_tokens=t["cache"]["read"], output_tokens=t["output"] +
                        t["reasoning"])
        assert Decimal(ev["cost_usd"]) == cost
        assert Decimal(ev["agent_cost_usd"]) == Decimal(str(part["cost"]))
        assert (ev["model"], ev["provider"], ev["project"]) == (msg["modelID"], "openai", "parser")
        ours_total += cost
        theirs_total += Decimal(str(part["cost"]))
    assert Decimal(oc["agent_cost_usd"]) == theirs_total and Decimal(oc["cost_usd"]) == ours_total
    (d,) = oc["disagreements"]  # OpenCode was told input costs 0.30, genai-prices says 0.15
    assert (d["model"], d["requests"], Decimal(d["ours_usd"]), Decimal(d["agent_usd"])) == (
        "gpt-4o-mini", len(steps), ours_total, theirs_total)
    assert events[next(iter(steps))]["task_type"] == "test_generation"

    assert _import(prism, "opencode", "--path", str(data))["agents"][0]["stored"] == 0
    _opencode(fake, home, project, "explain what this module does")
    assert _import(prism, "opencode", "--path", str(data))["agents"][0]["stored"] >= 1
    with sqlite3.connect(data / "opencode.db") as db:
        n = db.execute("SELECT COUNT(*) FROM part WHERE json_extract(data, '$.type') = 'step-finish'").fetchone()[0]
    assert len(_events(prism, "opencode")) == n


# ------------------------------------------------------------------ Codex CLI
def test_codex_history_imports_each_response(fake: FakeProviders, tmp_path: Path) -> None:
    home, project, prism = tmp_path / "home", tmp_path / "svc", tmp_path / "prism"
    project.mkdir(parents=True)
    _codex(fake, home, project, "write unit tests for the invoice parser [cached] [reasoning]")
    _codex(fake, home, project, "explain what this module does")
    logs = sorted((home / ".codex/sessions").rglob("rollout-*.jsonl"))
    records = {}
    for f in logs:
        for line in f.read_text().splitlines():
            e = json.loads(line)
            if e["type"] == "token_usage_record":
                records[f"codex:{e['payload']['response_id']}"] = e
    assert len(logs) == 2 and len(records) == 2
    served = [c for c in fake.calls if c.path == "/v1/responses"]
    assert len(served) >= len(records)

    out = _import(prism, "codex", "--path", str(home / ".codex"))
    assert (out["agents"][0]["requests"], out["agents"][0]["stored"]) == (2, 2)
    events = _events(prism, "codex")
    assert set(events) == set(records)
    for rid, e in records.items():
        u, ev = e["payload"]["usage"], events[rid]
        assert (ev["input_tokens"], ev["cached_input_tokens"], ev["output_tokens"], ev["reasoning_tokens"]) == (
            u["input_tokens"], u["cached_input_tokens"], u["output_tokens"], u["reasoning_output_tokens"])
        cost = _gp_cost("gpt-5.1-codex-mini", "openai", _ts(e["timestamp"]), input_tokens=u["input_tokens"],
                        cache_read_tokens=u["cached_input_tokens"], output_tokens=u["output_tokens"])
        assert Decimal(ev["cost_usd"]) == cost
        assert (ev["model"], ev["project"]) == ("gpt-5.1-codex-mini", "svc")
    cached = [ev for ev in events.values() if ev["cached_input_tokens"]]
    assert len(cached) == 1 and cached[0]["task_type"] == "test_generation"
    assert _import(prism, "codex", "--path", str(home / ".codex"))["agents"][0]["stored"] == 0
