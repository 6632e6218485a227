"""Issue 12 "Done when", the gateway's part: hypothesis drives every gateway endpoint with hostile bodies and
headers, and the fake upstream with hostile answers (its markers: `[malformed]`, `[cut]`, `[usage=JSON]`, ...).
Every answer is a clear error in the client's own format or an answer: never a 500 or a traceback, the gateway
still serving, and a request the gateway refuses stores nothing beyond its refusal record."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import FakeProviders, run_fake_providers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import HOSTILE_INT, VALUE
from test_gateway import KEYS, RunningGateway

FUZZ = settings(max_examples=int(os.environ.get("PRISM_FUZZ_EXAMPLES", "60")), deadline=None,
                derandomize=os.environ.get("PRISM_FUZZ_RANDOM") != "1",
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

CHAT, MESSAGES, RESPONSES, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/messages/count_tokens"
ANTHROPIC_PATHS = {MESSAGES, COUNT}
MODELS = st.sampled_from(["gpt-5-nano", "claude-haiku-4-5", "gemini-2.5-flash", "auto", "prism/code_review",
                          "prism/ticket_classification", "gpt-5.1-codex-mini", "", "no-such-model", "x" * 300])
# the fake upstream's hostile answers, chosen by a marker in the last user message
MARKERS = st.sampled_from(["", "[malformed]", "[cut]", '[usage="many"]', "[usage=-500]", "[usage=1.5e300]",
                           "[usage=100000000000000000000]", "[usage=null]", '[usage={"x":1}]', "[429]", "[529]",
                           "[tool]", "[reasoning]", "[cached1h]", "[malformed] [cut]"])
WORDS = st.sampled_from(["classify this ticket: printer jammed", "review this diff", "", "🙂" * 20, "a\x00b",
                         "x" * 5_000, "<system-reminder>noise</system-reminder>\nwrite tests"])
SIDE_TABLES = ("batch_requests", "response_cache", "budget_spend", "budget_leases", "alerts",
               "routing_rules", "api_keys", "experiments")


def _nested(depth: int, leaf: str = "[]") -> str:
    return "[" * depth + leaf + "]" * depth


@st.composite
def shaped(draw: st.DrawFn, path: str) -> Any:
    """A request of `path`'s shape with hostile parts: markers, odd words, hostile values in any field."""
    text = f"{draw(WORDS)} {draw(MARKERS)}"
    stream = draw(st.booleans())
    if path == RESPONSES:
        body: dict[str, Any] = {"model": draw(MODELS), "input": draw(st.sampled_from([
            text, [{"role": "user", "content": [{"type": "input_text", "text": text}]}]]))}
    else:
        messages: list[Any] = [{"role": "user", "content": text}]
        if draw(st.booleans()):  # a Claude-Code-like mid-conversation system message, or an odd role
            messages.insert(0, {"role": draw(st.sampled_from(["system", "assistant", "tool", "admin"])),
                                "content": draw(WORDS)})
        body = {"model": draw(MODELS), "messages": messages, "max_tokens": draw(HOSTILE_INT)}
    if stream and path != COUNT:
        body["stream"] = True
        if path == CHAT and draw(st.booleans()):
            body["stream_options"] = {"include_usage": draw(st.sampled_from([True, False, "yes", None]))}
    for _ in range(draw(st.integers(0, 2))):  # hostile values in existing or extra fields
        field = draw(st.sampled_from([*body, "tools", "metadata", "temperature", "system", "user"]))
        body[field] = draw(VALUE)
    if draw(st.integers(0, 9)) == 0:  # a deeply nested content
        conv = "input" if path == RESPONSES else "messages"
        body[conv] = [{"role": "user", "content": json.loads(_nested(draw(st.integers(50, 400))))}]
    return body


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from([CHAT, MESSAGES, RESPONSES, COUNT]))
    kind = draw(st.integers(0, 9))
    if kind <= 5:
        raw = json.dumps(draw(shaped(path))).encode()
    elif kind == 6:
        raw = json.dumps(draw(VALUE)).encode()
    elif kind == 7:
        raw = draw(st.binary(max_size=300))
    else:  # nested past any parser's recursion limit, or just under it
        depth = draw(st.sampled_from([900, 990, 2_000, 100_000]))
        raw = _nested(depth, draw(st.sampled_from(["", "{}", "1"]))).encode()
    headers = {"content-type": draw(st.sampled_from(["application/json", "text/plain", "application/json"]))}
    if draw(st.booleans()):
        headers["x-prism-batch"] = draw(st.sampled_from(["1", "true", "TRUE", "yes", "on", "0", "false", "2", ""]))
    if draw(st.booleans()):
        headers["x-prism-task"] = draw(st.sampled_from(["code_review", "general", "nope", "x" * 500, "../../etc"]))
    return path, raw, headers


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mcp_prism") and (record.exc_info or "Traceback" in record.getMessage()):
            self.found.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as f:
        yield f


@pytest.fixture(scope="module")
def gw(fake: FakeProviders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway,
                                                                                        _Tracebacks]]:
    handler = _Tracebacks()
    logging.getLogger().addHandler(handler)
    try:
        with RunningGateway(tmp_path_factory.mktemp("gwfuzz"), fake) as g:
            yield g, handler
    finally:
        logging.getLogger().removeHandler(handler)


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as c:
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in SIDE_TABLES}


def _event(db: Path, rid: str) -> dict[str, Any] | None:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        row = c.execute("SELECT status, cost_pico, (SELECT COUNT(*) FROM samples WHERE event_id = ?) AS samples "
                        "FROM usage_events WHERE id = ?", (rid, rid)).fetchone()
    return dict(row) if row else None


@FUZZ
@given(req=requests())
def test_every_gateway_endpoint_answers_hostile_input_clearly(gw: tuple[RunningGateway, _Tracebacks],
                                                            fake: FakeProviders,
                                                            req: tuple[str, bytes, dict[str, str]]) -> None:
    g, tracebacks = gw
    tracebacks.found.clear()  # each example is judged on its own
    path, raw, headers = req
    db = g.settings.db_path
    before, calls = _counts(db), len(fake.calls)
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{g.url}{path}", content=raw, headers=headers)
        text = r.text
        assert r.status_code != 500 and "internal gateway error" not in text, (r.status_code, text[:500])
        assert "Traceback" not in text
        if r.status_code >= 400:  # a clear error, in the format of the API the client called
            err = r.json()
            if path in ANTHROPIC_PATHS:
                assert err["type"] == "error" and isinstance(err["error"]["message"], str), err
            else:
                assert isinstance(err["error"]["message"], str), err
            assert 0 < len(err["error"]["message"]) < 20_000
        assert client.get(f"{g.url}/healthz").status_code == 200  # still serving
    rid = r.headers.get("x-prism-request-id")
    if rid and r.status_code < 400 and path != COUNT and r.status_code != 202:
        g.event(rid, timeout=10)  # recorded (so the next example's snapshot is not moved by this one)
    if 400 <= r.status_code < 500 and r.status_code != 429:  # refused by the gateway
        time.sleep(0.1)  # the recorder's flush interval is 0.05 s
        assert _counts(db) == before, "a refused request stored something beyond its record"
        if rid and (ev := _event(db, rid)) is not None:
            assert ev["status"] != "ok" and not ev["cost_pico"], ev  # a record of the error, costing nothing
            if len(fake.calls) == calls:  # refused by the gateway itself (not an upstream's 4xx): no prompt kept
                assert not ev["samples"], ev
    assert not tracebacks.found, tracebacks.found
