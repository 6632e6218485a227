"""The real Codex CLI and the real OpenCode (its built-in `openai` provider) through a real `mcp-prism gateway`
to the fake providers, offline: both speak only OpenAI's Responses API. Every request they make must be
recorded under the task type of the person's words (not Codex's `<environment_context>` or AGENTS.md
messages) at the exact cost of the tokens the provider reported.

The setups are the README's (gateway section), as tried here: Codex 0.169.0 with a `model_providers.prism`
entry (`wire_api = "responses"`, `env_key`), OpenCode 1.18.33 with `provider.openai.options.baseURL`."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, real_client, wait_for_port
from fakes import (
    FakeProviders,
    _anthropic_turn,
    _anthropic_usage,
    _gemini_turn,
    _gemini_usage,
    _plan,
    _responses_turn,
    _responses_usage,
    run_fake_providers,
)

from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage

pytestmark = pytest.mark.slow

PROMPT = "write unit tests for the invoice parser"
AGENTS_MD = ("Design the system architecture and module boundaries before any change: write the data model and "
             "the migration plan first.")
KEYS = {"OPENAI_API_KEY": "sk-fake-openai-e2e", "ANTHROPIC_API_KEY": "sk-ant-fake-e2e", "GEMINI_API_KEY": "gm-fake"}


@dataclass
class Stack:
    fake: FakeProviders
    url: str  # the gateway's root
    home: Path  # PRISM_HOME
    tmp: Path
    gateway: subprocess.Popen[bytes]

    def stop(self) -> list[dict[str, Any]]:
        """Stop the gateway gracefully (every request is written on the way out); its gateway usage events."""
        self.gateway.terminate()
        self.gateway.wait(timeout=30)
        with sqlite3.connect(self.home / "prism.db") as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM usage_events WHERE source = 'gateway' ORDER BY ts")]


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """Fake providers, and the gateway in a process of its own over them (`--no-auth` unless the test's indirect
    parameter is False: then every request needs a virtual key)."""
    no_auth = getattr(request, "param", True)
    home = tmp_path / "prism"
    home.mkdir()
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as fake:
        (home / "config.toml").write_text(
            f'[providers.openai]\nbase_url = "{fake.openai_base_url}"\n'
            f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n'
            f'[providers.google]\nbase_url = "{fake.base_url}/v1beta"\n'
            "[gateway.retries]\nattempts = 1\n")
        port = free_port()
        env = {**os.environ, **KEYS, "PRISM_HOME": str(home)}
        for name in ("PRISM_DB", "PRISM_CONFIG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(name, None)
        log = tmp_path / "gateway.log"
        with log.open("wb") as out:
            gateway = subprocess.Popen([sys.executable, "-m", "mcp_prism", "gateway", "--port", str(port),
                                        *(["--no-auth"] if no_auth else [])], env=env, stdout=out,
                                       stderr=subprocess.STDOUT)
        s = Stack(fake, f"http://127.0.0.1:{port}", home, tmp_path, gateway)
        try:
            wait_for_port(gateway, port, log)
            yield s
        finally:
            if gateway.poll() is None:
                gateway.kill()
                gateway.wait(timeout=10)


def _expected_cost(model: str, call: Any, home: Path) -> tuple[TokenUsage, Decimal]:
    """The usage the fake reported for `call` (recomputed by the fake's own rules) and its price."""
    if call.path == "/v1/responses":
        u = _responses_usage(_plan(_responses_turn(call.body)))
        tokens = TokenUsage(u["input_tokens"], u["input_tokens_details"]["cached_tokens"], 0, u["output_tokens"],
                            u["output_tokens_details"]["reasoning_tokens"])
    elif call.provider == "gemini":
        u = _gemini_usage(_plan(_gemini_turn(call.path.split("/models/")[1].split(":")[0], call.body)))
        thoughts = u.get("thoughtsTokenCount", 0)
        tokens = TokenUsage(u["promptTokenCount"], u.get("cachedContentTokenCount", 0), 0,
                            u["candidatesTokenCount"] + thoughts, thoughts)
    else:
        assert call.path == "/v1/messages", call.path
        u = _anthropic_usage(_plan(_anthropic_turn(call.body)))
        tokens = TokenUsage(u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"],
                            u["cache_read_input_tokens"], u["cache_creation_input_tokens"], u["output_tokens"], 0)
    cost = Settings.from_env({}, home=home).catalog().cost(model, tokens, None)
    assert cost.usd is not None
    return tokens, cost.usd


def _assert_recorded(events: list[dict[str, Any]], fake: FakeProviders, home: Path, model: str,
                     task_type: str) -> None:
    """One ok event per provider call, each with that call's tokens and their exact price. Agents send some
    requests concurrently (OpenCode's title request), so events are matched to calls by their usage."""
    calls = [c for c in fake.calls if c.method == "POST"]
    assert events and len(events) == len(calls), (events, calls)
    expected = [_expected_cost(model, c, home) for c in calls]
    for event in events:
        assert event["status"] == "ok" and event["model"] == model and event["task_type"] == task_type, event
        got = TokenUsage(event["input_tokens"], event["cached_input_tokens"], event["cache_write_tokens"],
                         event["output_tokens"], event["reasoning_tokens"])
        match = next((e for e in expected if e[0] == got), None)
        assert match is not None, (got, expected)
        expected.remove(match)
        assert Decimal(event["cost_usd"]) == match[1]


# ---------------------------------------------------------------- Codex CLI
def _codex(stack: Stack, model: str, prompt: str, key: str = "unused-with-no-auth") -> subprocess.CompletedProcess[str]:
    codex = real_client("codex")
    codex_home, home, project = stack.tmp / "codex", stack.tmp / "home", stack.tmp / "project"
    for d in (codex_home, home, project):
        d.mkdir(exist_ok=True)
    # instructions that classify as architecture_design were they taken for the person's words
    (project / "AGENTS.md").write_text("# Project rules\n" + AGENTS_MD + "\n")
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "prism"\n'
        "[model_providers.prism]\n"
        'name = "mcp-prism gateway"\n'
        f'base_url = "{stack.url}/v1"\n'
        'env_key = "PRISM_GATEWAY_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(HOME=str(home), CODEX_HOME=str(codex_home), PRISM_GATEWAY_KEY=key)
    return subprocess.run([str(codex), "exec", "--skip-git-repo-check", prompt], cwd=project, env=env,
                          capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("model", "upstream"), [("gpt-5-nano", "gpt-5-nano"), ("auto", "claude-haiku-4-5"),
                                               ("gemini-2.5-flash", "gemini-2.5-flash")])
def test_codex_exec_through_the_gateway_is_recorded(stack: Stack, model: str, upstream: str) -> None:
    """`auto` routes the test-writing task by its rule (to Claude: translated both ways, tools and reasoning
    included), a Gemini model is translated too, a named OpenAI model passes through to /v1/responses. `[tool]`
    makes the model call Codex's first tool, so each run has a tool round trip (two requests)."""
    run = _codex(stack, model, f"[tool] [reasoning] {PROMPT}")
    events = stack.stop()
    assert run.returncode == 0, f"codex failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert "tool said:" in run.stdout + run.stderr
    paths = {c.path for c in stack.fake.calls if c.method == "POST"}
    assert paths == ({"/v1/responses"} if upstream.startswith("gpt") else {"/v1/messages"}
                     if upstream.startswith("claude") else {f"/v1beta/models/{upstream}:streamGenerateContent"})
    first = next(c for c in stack.fake.calls if c.method == "POST").body
    assert AGENTS_MD in json.dumps(first)  # AGENTS.md went along, yet was not classified
    if upstream.startswith("gpt"):  # passed through untouched but for the model
        assert first["include"] == ["reasoning.encrypted_content"] and first["store"] is False
        assert any("<environment_context>" in json.dumps(i) for i in first["input"])
    assert len(events) >= 2  # the tool call, then the answer to its output
    _assert_recorded(events, stack.fake, stack.home, upstream, "test_generation")


@pytest.mark.parametrize("stack", [False], indirect=True)
def test_codex_with_a_virtual_key_is_recorded_under_its_team(stack: Stack) -> None:
    """The gateway as a team runs it (keys required): Codex's `env_key` holds the virtual key."""
    made = subprocess.run([sys.executable, "-m", "mcp_prism", "keys", "create", "--team", "search", "--user", "ana",
                           "--json"], env={**os.environ, "PRISM_HOME": str(stack.home)}, capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    refused = _codex(stack, "gpt-5-nano", PROMPT, key="sk-prism-000000000000-not-a-key")
    assert refused.returncode != 0 and not stack.fake.calls  # an unknown key never reaches a provider
    run = _codex(stack, "gpt-5-nano", PROMPT, key=key["secret"])
    events = [e for e in stack.stop() if e["status"] == "ok"]
    assert run.returncode == 0, f"codex failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert stack.fake.calls[-1].headers["authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"  # ours, not the key
    assert [(e["team"], e["user"], e["api_key_id"]) for e in events] == [("search", "ana", key["key"]["id"])]
    _assert_recorded(events, stack.fake, stack.home, "gpt-5-nano", "test_generation")


# ---------------------------------------------------------------- OpenCode, built-in openai provider
@pytest.mark.parametrize(("model", "upstream"), [("gpt-5-nano", "gpt-5-nano"), ("auto", "claude-haiku-4-5")])
def test_opencode_builtin_openai_provider_through_the_gateway_is_recorded(stack: Stack, model: str,
                                                                         upstream: str) -> None:
    """A model OpenCode knows passes through; `auto`, declared as an extra model of the openai provider, is
    routed by the task's rule (to Claude, translated both ways)."""
    opencode = real_client("opencode")
    home, project = stack.tmp / "home", stack.tmp / "project"
    for d in (home, project):
        d.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
                "XDG_STATE_HOME": str(home / ".local/state"), "OPENCODE_DISABLE_AUTOUPDATE": "1",
                "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1",
                "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "PWD": str(project), "OPENAI_API_KEY": "unused-with-no-auth"})
    config = {"provider": {"openai": {"options": {"baseURL": f"{stack.url}/v1"},
                                      "models": {"auto": {"name": "auto (mcp-prism routes it)"}}}},
              "enabled_providers": ["openai"], "model": f"openai/{model}", "small_model": f"openai/{model}"}
    env["OPENCODE_CONFIG_CONTENT"] = json.dumps(config)
    run = subprocess.run([str(opencode), "run", "--model", f"openai/{model}", "--format", "json", PROMPT],
                         cwd=project, env=env, capture_output=True, text=True, timeout=240,
                         stdin=subprocess.DEVNULL)
    events = stack.stop()
    assert run.returncode == 0, f"opencode failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    texts = [e["part"]["text"] for line in run.stdout.splitlines() if line.startswith("{")
             for e in [json.loads(line)] if e.get("type") == "text"]
    assert any(t.startswith("echo: ") and PROMPT in t for t in texts), run.stdout[-2000:]
    assert {c.path for c in stack.fake.calls if c.method == "POST"} == {
        "/v1/responses" if upstream.startswith("gpt") else "/v1/messages"}
    # OpenCode's session-title request and the agent's own turn: both about the person's words
    assert len(events) >= 2
    _assert_recorded(events, stack.fake, stack.home, upstream, "test_generation")
