"""The real Claude Code CLI (npm @anthropic-ai/claude-code 2.1.197) through a real gateway to a scripted fake
Anthropic API, offline: every request it makes is recorded with the task type of the person's words and the
exact cost.

What Claude Code 2.1.197 was seen to send here (these tests pin it):
- `HEAD /` (a connectivity check; any answer will do), then for `claude -p "..."` one request (no
  count_tokens call in these runs):
- streaming `POST /v1/messages?beta=true` with its default model `claude-opus-4-8` (not in the shipped catalog:
  priced from genai-prices), `max_tokens` 64000, adaptive thinking, 24 tools, and the beta
  `mid-conversation-system-2026-04-07`: a `role: "system"` message (its agent list, ~6 KB) after the user turn.
  Refused with a 400, it retries once without the beta, folding that text into the user turn as a reminder.
- the user turn opens with `<system-reminder>` blocks (agents, skills, date); the person's words come last.
- `ANTHROPIC_CUSTOM_HEADERS="X-Prism-Task: code_review"` adds that header to every request (how to route by task).
- with `ANTHROPIC_API_KEY` and `ANTHROPIC_AUTH_TOKEN` both set it sends `x-api-key` and `Authorization: Bearer`.
- a slash command (`claude -p "/review ..."`) arrives as `<command-message>`/`<command-name>`/`<command-args>`
  tags followed by the command file's body with $ARGUMENTS filled in.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from conftest import free_port, real_client
from fakes import FakeProviders, run_fake_providers

from mcp_prism.config import Settings
from mcp_prism.core.human_text import person_text
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import parse_iso
from mcp_prism.gateway import build_gateway
from mcp_prism.install import install
from mcp_prism.store import open_store
from mcp_prism.team.keys import KeyService

pytestmark = pytest.mark.slow

PROVIDER_KEY = "sk-ant-e2e-provider-key"
CLAUDE_TIMEOUT = 120  # seconds one `claude -p` may take (it answers in well under a second here)
PROMPT = "write unit tests for the invoice parser"
FIXTURE = Path(__file__).parent / "data" / "claude_code_2.1.197_request.json"


class Gateway:
    """The gateway under uvicorn in a thread, over a fresh home whose providers are the fake."""

    def __init__(self, home: Path, fake: FakeProviders, *, no_auth: bool) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n'
            f'[providers.openai]\nbase_url = "{fake.base_url}/v1"\n'
            f'[providers.google]\nbase_url = "{fake.base_url}/v1beta"\n'
            "[gateway.retries]\nattempts = 1\n")
        self.settings = Settings.from_env({}, home=home)
        env = {"ANTHROPIC_API_KEY": PROVIDER_KEY, "OPENAI_API_KEY": fake.keys["openai"],
               "GEMINI_API_KEY": fake.keys["gemini"]}
        self.app = build_gateway(self.settings, env=env, flush_interval=0.05, no_auth=no_auth)
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # (method, path?query, headers) Claude Code sent

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                query = scope.get("query_string", b"").decode()
                self.seen.append((scope["method"], scope["path"] + ("?" + query if query else ""),
                                  {k.decode(): v.decode() for k, v in scope["headers"]}))
            await self.app(scope, receive, send)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Gateway:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The usage events once `n` are written (the recorder batches off the request path)."""
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(self.settings.db_path) as db:
                db.row_factory = sqlite3.Row
                rows = [dict(r) for r in db.execute("SELECT * FROM usage_events ORDER BY ts")]
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def create_key(self, team: str) -> tuple[str, str]:
        async def go() -> tuple[str, str]:
            store = await open_store(self.settings.db_path)
            try:
                made = await KeyService(store).create(team, user="ana")
                return made.key.id, made.secret
            finally:
                await store.close()
        return asyncio.run(go())


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"anthropic": PROVIDER_KEY}) as f:
        yield f


@pytest.fixture
def claude() -> Path:
    return real_client("claude")


def run_claude(claude: Path, tmp: Path, gateway_url: str, prompt: str, *, env: dict[str, str] | None = None,
               project: Path | None = None) -> dict[str, Any]:
    """`claude -p PROMPT --output-format json` with its own HOME and config dir, offline, pointed at the gateway."""
    home = tmp / "home"
    (home / ".claude").mkdir(parents=True, exist_ok=True)
    project = project or tmp / "project"
    project.mkdir(exist_ok=True)
    full = {"PATH": os.environ["PATH"], "HOME": str(home), "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "ANTHROPIC_BASE_URL": gateway_url, **(env or {})}
    p = subprocess.run([str(claude), "-p", prompt, "--output-format", "json"], env=full, cwd=project,
                       capture_output=True, text=True, timeout=CLAUDE_TIMEOUT)
    assert p.returncode == 0, f"claude exited {p.returncode}: {p.stdout[-2000:]} {p.stderr[-2000:]}"
    out = json.loads(p.stdout)
    assert out["is_error"] is False, out
    return out


def assert_recorded(gw: Gateway, fake: FakeProviders, task_type: str, *, model: str | None = None,
                    api_key_id: str | None = None) -> list[dict[str, Any]]:
    """Every chat request Claude Code made reached the fake and is recorded once, ok, under `task_type`, at
    exactly the catalog's price of the tokens recorded."""
    calls = [c for c in fake.calls if c.path == "/v1/messages"]
    assert calls, "Claude Code sent no request through the gateway"
    events = gw.events(len(calls))
    assert len(events) == len(calls), events
    catalog = gw.settings.catalog()
    for ev, call in zip(events, calls, strict=True):
        assert ev["status"] == "ok" and ev["source"] == "gateway"
        assert ev["task_type"] == task_type, (ev["task_type"], person_text(call.body["messages"]))
        assert ev["model"] == call.body["model"] and (model is None or ev["model"] == model)
        assert ev["api_key_id"] == api_key_id
        tokens = TokenUsage(ev["input_tokens"], ev["cached_input_tokens"], ev["cache_write_tokens"],
                            ev["output_tokens"], ev["reasoning_tokens"])
        assert ev["input_tokens"] > 0 and ev["output_tokens"] > 0
        cost = catalog.cost(ev["model"], tokens, parse_iso(ev["ts"])).usd
        assert cost is not None and Decimal(ev["cost_usd"]) == cost
    return events


def test_claude_p_with_its_default_model_is_served_and_recorded(claude: Path, fake: FakeProviders,
                                                                 tmp_path: Path) -> None:
    fake.reset()
    with Gateway(tmp_path / "gw", fake, no_auth=True) as gw:
        out = run_claude(claude, tmp_path, gw.url, PROMPT, env={"ANTHROPIC_API_KEY": "sk-ant-not-a-real-key"})
        events = assert_recorded(gw, fake, "test_generation")
    assert out["result"].startswith("echo: ")
    default = events[0]["model"]
    assert default.startswith("claude-") and default not in gw.settings.catalog().models  # new: discovered
    call = fake.calls[-1]
    assert call.headers["x-api-key"] == PROVIDER_KEY  # the gateway's own key, never the client's
    sent = [(m, p) for m, p, _ in gw.seen if p.startswith("/v1/messages")]
    assert sent and all(x == ("POST", "/v1/messages?beta=true") for x in sent)
    # Claude Code's own count of what it used matches what the gateway recorded
    used = out["modelUsage"]
    assert sum(e["input_tokens"] for e in events) == sum(
        u["inputTokens"] + u["cacheReadInputTokens"] + u["cacheCreationInputTokens"] for u in used.values())
    assert sum(e["output_tokens"] for e in events) == sum(u["outputTokens"] for u in used.values())


def test_header_routing_with_claude_5_system_messages(claude: Path, fake: FakeProviders, tmp_path: Path) -> None:
    """X-Prism-Task (ANTHROPIC_CUSTOM_HEADERS) routes by the task's rule. code_review's primary speaks Anthropic:
    the request, with its mid-conversation `role: "system"` message, passes through untouched but for `model`.
    data_extraction's primary is a Gemini model: the same request is translated, that message included."""
    fake.reset()
    with Gateway(tmp_path / "gw", fake, no_auth=True) as gw:
        run_claude(claude, tmp_path, gw.url, PROMPT, env={"ANTHROPIC_API_KEY": "sk-ant-not-a-real-key",
                                                          "ANTHROPIC_CUSTOM_HEADERS": "X-Prism-Task: code_review"})
        events = assert_recorded(gw, fake, "code_review", model="claude-sonnet-4-5")
        assert all(e["rule_id"] == "code_review" for e in events)
        call = fake.calls[-1]
        assert any(m["role"] == "system" for m in call.body["messages"])  # passed through as Claude Code sent it
        assert "mid-conversation-system" in call.headers["anthropic-beta"]

        fake.reset()
        run_claude(claude, tmp_path, gw.url, PROMPT, env={"ANTHROPIC_API_KEY": "sk-ant-not-a-real-key",
                                                          "ANTHROPIC_CUSTOM_HEADERS": "X-Prism-Task: data_extraction"})
        gemini = [c for c in fake.calls if c.provider == "gemini"]
        assert gemini and not [c for c in fake.calls if c.provider == "anthropic"]
        contents = gemini[-1].body["contents"]
        assert [c["role"] for c in contents] == ["user"]
        assert "Available agent types" in json.dumps(contents)  # the system message, folded into the turn
        events = gw.events(len(events) + len(gemini))
        new = events[-len(gemini):]
        catalog = gw.settings.catalog()
        for ev in new:
            assert (ev["task_type"], ev["model"], ev["status"]) == ("data_extraction", "gemini-2.5-flash", "ok")
            tokens = TokenUsage(ev["input_tokens"], ev["cached_input_tokens"], ev["cache_write_tokens"],
                                ev["output_tokens"], ev["reasoning_tokens"])
            assert Decimal(ev["cost_usd"]) == catalog.cost(ev["model"], tokens, parse_iso(ev["ts"])).usd


@pytest.mark.parametrize("with_api_key", [False, True], ids=["auth-token-only", "api-key-and-auth-token"])
def test_a_virtual_key_is_honoured_however_claude_code_sends_it(claude: Path, fake: FakeProviders, tmp_path: Path,
                                                               with_api_key: bool) -> None:
    """ANTHROPIC_AUTH_TOKEN=<virtual key> (the README's setup); with ANTHROPIC_API_KEY set too Claude Code sends
    both x-api-key and a Bearer token, and the virtual key must still be found."""
    fake.reset()
    with Gateway(tmp_path / "gw", fake, no_auth=False) as gw:
        key_id, secret = gw.create_key("search")
        env = {"ANTHROPIC_AUTH_TOKEN": secret}
        if with_api_key:
            env["ANTHROPIC_API_KEY"] = "sk-ant-a-provider-key-the-gateway-ignores"
        run_claude(claude, tmp_path, gw.url, PROMPT, env=env)
        events = assert_recorded(gw, fake, "test_generation", api_key_id=key_id)
        headers = [h for _, p, h in gw.seen if p.startswith("/v1/messages")]
        assert all(h["authorization"] == f"Bearer {secret}" for h in headers)
        assert all(("x-api-key" in h) == with_api_key for h in headers)  # both credentials when both are set
        assert all((e["team"], e["user"]) == ("search", "ana") for e in events)
        assert all(secret not in json.dumps(c.headers) for c in fake.calls)  # the virtual key stays here


def test_review_command_installed_by_mcp_prism_through_the_gateway(claude: Path, fake: FakeProviders,
                                                                   tmp_path: Path) -> None:
    """`mcp-prism install claude` writes .claude/commands/review.md; `claude -p "/review src/invoice.py"` sends
    the command through the gateway, recorded as code_review (the person's command, not its file's text)."""
    fake.reset()
    project = tmp_path / "project"
    project.mkdir()
    install(project, "claude", mcp_command=["true"])  # an MCP server command that exits: not under test here
    (project / "src").mkdir()
    (project / "src" / "invoice.py").write_text("def parse(text):\n    return text.split(',')\n")
    with Gateway(tmp_path / "gw", fake, no_auth=True) as gw:
        run_claude(claude, tmp_path, gw.url, "/review src/invoice.py", project=project,
                   env={"ANTHROPIC_API_KEY": "sk-ant-not-a-real-key"})
        assert_recorded(gw, fake, "code_review")
    sent = fake.calls[-1].body["messages"][0]["content"]
    assert any("<command-name>/review</command-name>" in p.get("text", "") for p in sent)
    assert any(p.get("text", "").startswith("Review this change: src/invoice.py") for p in sent)
