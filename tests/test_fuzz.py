"""Issue 12 "Done when": hypothesis drives every MCP tool, every CLI command's arguments and the config loader
with hostile input. Each answer is a clear error or a result: never a traceback or "internal error", the server
still serving, and a refused write leaves the store as it was. (The gateway's endpoints have their own suite.)"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sqlite3
import string
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client

from mcp_prism import cli
from mcp_prism.config import Settings
from mcp_prism.config_check import check_settings
from mcp_prism.core.config_schema import PrismConfig, parse_config
from mcp_prism.errors import PrismError
from mcp_prism.mcp_server import build_server

FUZZ = settings(max_examples=int(os.environ.get("PRISM_FUZZ_EXAMPLES", "60")), deadline=None,
                derandomize=os.environ.get("PRISM_FUZZ_RANDOM") != "1",  # CI: the same examples every run
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Hostile scalars: edges of every type, long and odd text, numbers no store can hold.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "yes", "no", "true", "1", "-1", "NaN", "inf", "1e400", "$400", "../../etc/passwd",
                     "/etc/passwd", "a\x00b", "'; DROP TABLE usage_events; --", "{", "[]", "null", "🙂" * 50,
                     "x" * 5_000, "general", "gpt-5", "claude-sonnet-4-5", "team", "month"]),
)
HOSTILE_INT = st.one_of(st.integers(-10, 10**4),
                        st.sampled_from([-(2**63), 2**63, 10**30, -(10**30), 9_200_000_000_000_000_000]))
HOSTILE_FLOAT = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308, 0.5]))
SCALAR = st.one_of(st.none(), st.booleans(), HOSTILE_INT, HOSTILE_FLOAT, HOSTILE_TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                     max_leaves=12)


# ---------------------------------------------------------------- the config loader
def _sections() -> list[str]:
    return list(PrismConfig.model_fields)


KEYS = st.one_of(st.sampled_from(_sections()), st.text(string.ascii_lowercase + "_", min_size=1, max_size=12))
CONFIG = st.dictionaries(KEYS, st.one_of(VALUE, st.dictionaries(st.sampled_from(
    ["attempts", "retries", "circuit", "task_types", "ttl", "semantic", "provider", "tier", "price", "discount",
     "upstream_timeout_seconds", "file_roots", "webhook_url", "min_rated", "keywords", "capture_samples"]),
    VALUE, max_size=4)), max_size=5)


@FUZZ
@given(data=CONFIG)
def test_config_loader_refuses_or_accepts_never_crashes(data: dict[str, Any]) -> None:
    try:
        parse_config(data)
    except PrismError as e:
        assert len(str(e)) < 20_000
        return
    with contextlib.suppress(PrismError):  # it passed the typed check: the cross-table checks answer cleanly too
        check_settings(Settings(home=Path("/nonexistent-home"), db_path=Path("/nonexistent-home/x.db"),
                                config_path=None, user_config=parse_config(data).layer()))


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_config_file_text_never_crashes(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    home = tmp_path_factory.mktemp("cfg")
    (home / "config.toml").write_text(text, encoding="utf-8", errors="surrogateescape")
    with contextlib.suppress(PrismError):
        Settings.from_env({}, home=home)
    with contextlib.suppress(tomllib.TOMLDecodeError, UnicodeDecodeError):
        tomllib.loads(text)


# ---------------------------------------------------------------- MCP tools, in one real session
WRITE_TABLES = ("usage_events", "routing_rules", "audit_log", "budgets", "experiments", "alerts", "api_keys",
                "voided_events", "monitors")


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in WRITE_TABLES if t in have}


PROVIDER_KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "DEEPSEEK_API_KEY")


@contextlib.contextmanager
def _no_provider_keys() -> Iterator[None]:
    """No provider is called for real while fuzzing (experiments and judges fail fast without keys)."""
    saved = {k: os.environ.pop(k) for k in PROVIDER_KEYS if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@pytest.fixture(scope="module")
def mcp_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("mcp")
    server = build_server(Settings.from_env({}, home=home), toolsets="all")
    with _no_provider_keys(), start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(Client(server)) as client:
        tools = {t.name: t for t in portal.call(client.list_tools).tools}
        yield portal, client, home, tools


def _typed(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A hostile value of the type the schema declares (edges, odd text, enum members), to get past the
    argument check and into the service."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([_typed(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "integer":
        return st.one_of(HOSTILE_INT, st.integers(0, 200))
    if kind == "number":
        return st.one_of(HOSTILE_FLOAT, st.floats(0, 1))
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return HOSTILE_TEXT
    if kind == "array":
        return st.lists(_typed(schema.get("items", {})), max_size=4)
    if kind == "object":
        return st.one_of(st.just({"task_type": "general", "primary": "gpt-5"}),
                         st.dictionaries(st.text(max_size=10), SCALAR, max_size=4))
    if kind == "null":
        return st.none()
    return SCALAR


def _value_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.one_of(_typed(schema), _typed(schema), _typed(schema), SCALAR, VALUE)


@st.composite
def tool_call(draw: st.DrawFn, tools: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(tools)))
    schema = tools[name].input_schema
    props = schema.get("properties", {})
    required = [p for p in schema.get("required", []) if draw(st.integers(0, 9))]  # now and then one is missing
    optional = draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
    chosen = list(dict.fromkeys([*required, *optional]))
    args = {p: draw(_value_for(props[p])) for p in chosen}
    if draw(st.booleans()):
        args[draw(st.text(max_size=8))] = draw(SCALAR)  # an argument the tool does not have
    return name, args


def test_every_mcp_tool_under_hostile_arguments(mcp_session: tuple[Any, Any, Path, dict[str, Any]]) -> None:
    portal, client, home, tools = mcp_session
    assert len(tools) >= 20

    @FUZZ
    @given(call=tool_call(tools))
    def check(call: tuple[str, dict[str, Any]]) -> None:
        name, args = call
        before = _counts(home / "prism.db")
        r = portal.call(client.call_tool, name, args)
        text = "".join(getattr(c, "text", "") for c in r.content)
        assert "internal error" not in text and "Traceback" not in text, (name, str(args)[:300], text[:500])
        assert len(text) < 200_000
        if r.is_error:
            assert _counts(home / "prism.db") == before, (name, str(args)[:300], text[:300])
        alive = portal.call(client.call_tool, "route_task", {"task_type": "general"})
        assert not alive.is_error

    check()


# ---------------------------------------------------------------- CLI commands, every argument
SKIP_COMMANDS = {"serve", "gateway", "install", "uninstall", "sync"}  # servers; writes into projects (own suites)


def _commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    out: list[tuple[list[str], argparse.ArgumentParser]] = []

    def walk(path: list[str], p: argparse.ArgumentParser) -> None:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((path, p))
        for action in subs:
            for name, sub in action.choices.items():
                if not path and name in SKIP_COMMANDS:
                    continue
                walk([*path, name], sub)

    walk([], cli.build_parser())
    return out


COMMANDS = _commands()
GLOBAL = {"--home", "--db", "-h", "--help", "--json"}


@st.composite
def cli_call(draw: st.DrawFn) -> list[str]:
    path, parser = draw(st.sampled_from(COMMANDS))
    argv = list(path)
    for action in parser._actions:
        flags = [f for f in action.option_strings if f not in GLOBAL]
        if action.option_strings and not flags:
            continue
        if not action.option_strings:  # positional: mostly given, sometimes hostile
            if action.nargs in ("?", "*") and draw(st.booleans()):
                continue
            argv.append(draw(st.one_of(st.sampled_from(list(action.choices or [])) if action.choices
                                       else HOSTILE_TEXT, HOSTILE_TEXT)).replace("\x00", "0"))
            continue
        if not draw(st.booleans()):
            continue
        argv.append(flags[0])
        if action.nargs != 0:
            value = draw(st.one_of(HOSTILE_TEXT, HOSTILE_INT.map(str), HOSTILE_FLOAT.map(repr)))
            argv.append(value.replace("\x00", "0"))  # argv cannot carry NUL; the MCP suite sends it
    return argv


def test_every_cli_command_under_hostile_arguments(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("cli")
    os.environ.pop("PRISM_DEBUG", None)
    assert len(COMMANDS) >= 30

    @FUZZ
    @given(argv=cli_call())
    def check(argv: list[str]) -> None:
        out, err = io.StringIO(), io.StringIO()
        before = _counts(home / "prism.db") if (home / "prism.db").exists() else None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([*argv, "--home", str(home)])
        text = err.getvalue()
        assert "unexpected failure" not in text and "Traceback" not in text, (argv, text[-2000:])
        assert code in (0, 1, 2, 3), (argv, code, text[-500:])
        assert len(text) < 50_000, (argv, len(text))
        if code == 2 and before is not None:  # refused input writes nothing
            assert _counts(home / "prism.db") == before, argv

    with _no_provider_keys():
        check()
