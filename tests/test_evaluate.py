"""Evaluation end to end: automated checks (JSON Schema, exact, regex, real commands), the LLM judge against
a scripted OpenAI-compatible judge on 127.0.0.1 (order swap, ties, position bias, family warnings,
resuming, cost), blind human rating, and the CLI and MCP adapters. Experiments are rows inserted directly."""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp import Client

from mcp_prism import cli
from mcp_prism.config import Settings
from mcp_prism.core import judge as J
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.loop import evaluate as E
from mcp_prism.loop.evaluate import EvaluationService, parse_check
from mcp_prism.mcp_server import build_server
from mcp_prism.service import PrismService

JUDGE = "gpt-5"  # family gpt
BASELINE = "claude-sonnet-4-5"
HAIKU = "claude-haiku-4-5"  # family claude: no warning with a gpt judge
MINI = "gpt-5-mini"  # family gpt: self-preference warning
KEY = "sk-judge-test-0001"
PROMPT_TOKENS, COMPLETION_TOKENS = 1000, 100


# ==================================================================== a scripted judge
class ScriptedJudge:
    """An OpenAI-compatible /v1/chat/completions whose verdict follows `mode`:

    - "good": prefers the answer containing GOOD (EQUAL when both or neither do); an answer with BAD is
      UNACCEPTABLE
    - "first": always A_BETTER (pure position bias)
    - "refuse": answers without a verdict
    - "fail": HTTP 500
    - "fail_once": HTTP 500 on the first call of each prompt, then like "good"
    """

    def __init__(self) -> None:
        self.mode = "good"
        self.calls: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def verdict(self, user: str) -> str:
        a = re.search(r"<answer_a>\n(.*?)\n</answer_a>", user, re.DOTALL)
        b = re.search(r"<answer_b>\n(.*?)\n</answer_b>", user, re.DOTALL)
        assert a and b
        a_text, b_text = a.group(1), b.group(1)
        if self.mode == "first":
            return "Answer A reads well.\nVERDICT: A_BETTER"
        if self.mode == "refuse":
            return "I would rather not compare these answers."
        if "BAD" in b_text:
            return "B is wrong.\n**Verdict:** B_UNACCEPTABLE"
        if "BAD" in a_text:
            return "A is wrong.\nverdict: a unacceptable"
        if ("GOOD" in a_text) == ("GOOD" in b_text):
            return "Both are fine.\nVERDICT: EQUAL"
        return "VERDICT: A_BETTER" if "GOOD" in a_text else "Final verdict - `B_BETTER`."

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        request = json.loads(body)
        headers = dict(scope["headers"])
        user = next(m["content"] for m in request["messages"] if m["role"] == "user")
        with self._lock:
            self.calls.append(request)
            self.auth.append(headers.get(b"authorization", b"").decode())
            first_time = user not in self._seen
            self._seen.add(user)
        if self.mode == "fail" or (self.mode == "fail_once" and first_time):
            status, reply = 500, {"error": {"message": "judge overloaded", "type": "server_error"}}
        else:
            status, reply = 200, {
                "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": request["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.verdict(user)}}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
                          "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS},
            }
        data = json.dumps(reply).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


@pytest.fixture(scope="module")
def judge_server() -> Iterator[tuple[ScriptedJudge, str]]:
    app = ScriptedJudge()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, loop="asyncio", http="h11", lifespan="off", log_config=None,
                                           access_log=False, interface="asgi3"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "judge server did not start"
        time.sleep(0.01)
    yield app, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def judge(judge_server: tuple[ScriptedJudge, str], monkeypatch: pytest.MonkeyPatch) -> ScriptedJudge:
    app, _ = judge_server
    app.mode, app.calls, app.auth, app._seen = "good", [], [], set()
    monkeypatch.setattr(E, "RETRY_DELAYS", (0.0, 0.0))
    return app


@pytest.fixture
def settings(tmp_path: Path, judge_server: tuple[ScriptedJudge, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("PRISM_HOME", "PRISM_DB", "PRISM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    (tmp_path / "config.toml").write_text(f'[providers.openai]\nbase_url = "{judge_server[1]}"\n')
    return Settings.from_env({}, home=tmp_path)


@pytest.fixture
async def svc(settings: Settings) -> Any:
    service = await PrismService.open(settings)
    yield service
    await service.close()


# ==================================================================== experiments as rows
async def make_experiment(svc: PrismService, items: list[dict[str, Any]], *, exp_id: str = "exp-1",
                          task_type: str = "code_review", baseline: str = BASELINE,
                          candidates: tuple[str, ...] = (HAIKU,)) -> str:
    """Insert an experiment. Each item: prompt, expected (optional), baseline (answer), and per candidate
    model an answer (a string; None = the call failed; missing = no output)."""
    now = iso(utcnow())

    async def work(conn: Any) -> None:
        await conn.execute(
            "INSERT INTO experiments (id, task_type, baseline_model, candidates, evaluation, status, source, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'ready', 'store', ?, ?)",
            (exp_id, task_type, baseline, json.dumps(list(candidates)), json.dumps({"method": "judge"}), now, now))
        for n, it in enumerate(items, 1):
            await conn.execute("INSERT INTO experiment_items (experiment_id, item, prompt, expected) "
                               "VALUES (?, ?, ?, ?)", (exp_id, n, it.get("prompt", f"task {n}"), it.get("expected")))
            answers = [(baseline, "baseline", it.get("baseline"))] if "baseline" in it else []
            answers += [(m, "candidate", it[m]) for m in candidates if m in it]
            for model, role, response in answers:
                await conn.execute(
                    "INSERT INTO experiment_outputs (experiment_id, item, model, role, response, status, error, "
                    "input_tokens, output_tokens, cost_usd, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 10, 5, '0.001', ?)",
                    (exp_id, n, model, role, response, "ok" if response is not None else "error",
                     None if response is not None else "500 provider_error", now))

    await svc.store.transaction(work)
    return exp_id


async def evaluations(svc: PrismService, method: str, exp_id: str = "exp-1") -> dict[tuple[int, str], Any]:
    rows = await svc.store.fetch("SELECT * FROM evaluations WHERE experiment_id = ? AND method = ?", (exp_id, method))
    return {(r["item"], r["model"]): r for r in rows}


# ==================================================================== automated checks
SCHEMA = {"type": "object", "required": ["label"], "properties": {"label": {"enum": ["bug", "feature"]}},
          "additionalProperties": False}


@pytest.mark.anyio
async def test_json_schema_check(svc: PrismService) -> None:
    await make_experiment(svc, [
        {"baseline": '{"label": "bug"}', HAIKU: '{"label": "feature"}'},
        {"baseline": '{"label": "bug"}', HAIKU: '```json\n{"label": "bug"}\n```'},
        {"baseline": '{"label": "bug"}', HAIKU: "label: bug"},
        {"baseline": '{"label": "bug"}', HAIKU: '{"label": "question", "extra": 1}'},
        {"baseline": "not json", HAIKU: None},  # the candidate's call failed: nothing to check
    ])
    r = await EvaluationService(svc).automated("exp-1", {"type": "json_schema", "schema": SCHEMA})
    rows = await evaluations(svc, "automated")
    assert {k: v["verdict"] for k, v in rows.items()} == {
        (1, HAIKU): "acceptable", (2, HAIKU): "acceptable", (3, HAIKU): "unacceptable", (4, HAIKU): "unacceptable"}
    invalid = json.loads(rows[(3, HAIKU)]["detail"])
    assert invalid["error"] == "invalid JSON" and "line 1" in invalid["message"]
    wrong = json.loads(rows[(4, HAIKU)]["detail"])
    assert wrong["error_count"] == 2
    assert {e["path"] for e in wrong["errors"]} == {"/", "/label"}
    assert any("question" in e["message"] for e in wrong["errors"])
    assert rows[(1, HAIKU)]["evaluator"] == "json_schema" and rows[(1, HAIKU)]["cost_usd"] is None
    (cand,) = r.candidates
    assert (cand.model, cand.evaluated, cand.acceptable, cand.unacceptable) == (HAIKU, 4, 2, 2)
    # the baseline is checked for context (4 of 5 valid), never stored
    assert r.baseline is not None and (r.baseline.evaluated, r.baseline.acceptable) == (5, 4)
    assert all(k[1] != BASELINE for k in rows)
    assert "| claude-haiku-4-5 | candidate | 4 | 2 |" in r.markdown


@pytest.mark.anyio
async def test_exact_and_regex_checks_and_rerun_replaces(svc: PrismService) -> None:
    await make_experiment(svc, [
        {"expected": "Hello World", "baseline": "hello world", HAIKU: "  HELLO\n  world "},
        {"expected": "42", "baseline": "42", HAIKU: "41"},
        {"baseline": "x", HAIKU: "x"},  # no expected answer
    ])
    ev = EvaluationService(svc)
    r = await ev.automated("exp-1", {"type": "exact", "normalise": True})
    assert [(i.item, i.verdict) for i in r.items] == [(1, "acceptable"), (2, "unacceptable"), (3, "error")]
    detail = json.loads((await evaluations(svc, "automated"))[(2, HAIKU)]["detail"])
    assert detail["expected"] == "42" and detail["got"] == "41" and detail["first_difference"] == 1
    assert any("could not be checked" in n for n in r.notes)

    r = await ev.automated("exp-1", {"type": "exact", "normalise": False})
    assert [i.verdict for i in r.items] == ["unacceptable", "unacceptable", "error"]
    assert len(await evaluations(svc, "automated")) == 3  # replaced, not added

    r = await ev.automated("exp-1", {"type": "regex", "pattern": r"^\s*\w+\s+world", "ignorecase": True})
    assert [i.verdict for i in r.items] == ["acceptable", "unacceptable", "unacceptable"]
    # without a pattern, each item's expected answer is the pattern
    r = await ev.automated("exp-1", {"type": "regex"})
    assert [i.verdict for i in r.items] == ["unacceptable", "unacceptable", "error"]
    rows = await evaluations(svc, "automated")
    assert json.loads(rows[(2, HAIKU)]["detail"])["pattern"] == "42"
    assert rows[(1, HAIKU)]["evaluator"] == "regex"


CHECKER = ("import os, sys; answer = open(os.environ['PRISM_ANSWER_FILE']).read(); "
           "assert sys.argv[1] == os.environ['PRISM_ANSWER_FILE']; "
           "print('checking', os.environ['PRISM_ITEM']); "
           "sys.exit(0 if answer.strip() == os.environ['PRISM_EXPECTED'] else 3)")


@pytest.mark.anyio
async def test_command_check_exit_codes_output_and_timeout(svc: PrismService, tmp_path: Path) -> None:
    script = tmp_path / "checker.py"
    script.write_text(CHECKER)
    await make_experiment(svc, [
        {"expected": "def f(): return 1", "baseline": "x", HAIKU: "def f(): return 1\n"},
        {"expected": "def f(): return 1", "baseline": "x", HAIKU: "def f(): return 2"},
    ])
    command = f"{sys.executable} {script} {{answer_file}}"
    r = await EvaluationService(svc).automated("exp-1", {"type": "command", "command": command, "timeout": 30})
    assert [i.verdict for i in r.items] == ["acceptable", "unacceptable"]
    rows = await evaluations(svc, "automated")
    failed = json.loads(rows[(2, HAIKU)]["detail"])
    assert failed["exit_code"] == 3 and "checking 2" in failed["output_tail"]
    assert "exited 3" in r.items[1].summary
    assert rows[(1, HAIKU)]["evaluator"].startswith("command: ")

    # a command that never ends: killed at the timeout, unacceptable with a note
    started = time.monotonic()
    sleeper = f"{sys.executable} -c \"import time; print('started', flush=True); time.sleep(60)\""
    r = await EvaluationService(svc).automated("exp-1", {"type": "command", "command": sleeper, "timeout": 0.5,
                                                         "concurrency": 2})
    assert time.monotonic() - started < 15
    assert [i.verdict for i in r.items] == ["unacceptable", "unacceptable"]
    detail = json.loads((await evaluations(svc, "automated"))[(1, HAIKU)]["detail"])
    assert "timed out after 0.5 s" in detail["note"] and "started" in detail["output_tail"]

    # a command that is not there: error, not a failed answer
    r = await EvaluationService(svc).automated("exp-1", {"type": "command", "command": "no-such-checker-xyz"})
    assert {i.verdict for i in r.items} == {"error"}


@pytest.mark.anyio
async def test_command_check_extracts_code_and_uses_suffix(svc: PrismService) -> None:
    await make_experiment(svc, [{"baseline": "x", HAIKU: "Here:\n```python\nassert 1 + 1 == 2\n```\nDone."},
                                {"baseline": "x", HAIKU: "```python\nassert 1 + 1 == 3\n```"}])
    r = await EvaluationService(svc).automated("exp-1", {"type": "command", "command": f"{sys.executable} "
                                                          "{answer_file}", "suffix": ".py", "extract": True})
    assert [i.verdict for i in r.items] == ["acceptable", "unacceptable"]
    assert "AssertionError" in json.loads((await evaluations(svc, "automated"))[(2, HAIKU)]["detail"])["output_tail"]


@pytest.mark.parametrize(("check", "fragment"), [
    ("exact", "must be a JSON object"),
    ({}, 'check "type" must be one of json_schema, exact, regex, command'),
    ({"type": "fuzzy"}, "not 'fuzzy'"),
    ({"type": "json_schema"}, 'needs "schema"'),
    ({"type": "json_schema", "schema": {"type": "objekt"}}, "not a valid JSON Schema"),
    ({"type": "exact", "normalise": "yes"}, '"normalise" must be true or false'),
    ({"type": "exact", "normalsie": True}, "unknown field(s) normalsie"),
    ({"type": "regex", "pattern": "(unclosed"}, "not a valid regular expression"),
    ({"type": "command"}, 'needs "command"'),
    ({"type": "command", "command": "true", "timeout": 0}, '"timeout" must be'),
    ({"type": "command", "command": "true", "timeout": True}, '"timeout" must be'),
    ({"type": "command", "command": "true", "concurrency": 99}, '"concurrency" must be'),
    ({"type": "command", "command": "true", "cwd": "/no/such/dir"}, '"cwd" must be an existing folder'),
    ({"type": "command", "command": "true", "suffix": "py"}, '"suffix" must be a file extension'),
])
def test_invalid_checks_say_what_is_wrong(check: Any, fragment: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_check(check)
    assert fragment in str(e.value)


@pytest.mark.anyio
async def test_unknown_experiment(svc: PrismService) -> None:
    await make_experiment(svc, [{"baseline": "a", HAIKU: "a"}])
    with pytest.raises(UnknownName) as e:
        await EvaluationService(svc).automated("exp-404", {"type": "exact"})
    assert "exp-404" in str(e.value) and "exp-1" in str(e.value)


# ==================================================================== LLM judge
ITEMS = [
    {"prompt": "review diff 1", "baseline": "GOOD review", HAIKU: "GOOD review too", MINI: "GOOD"},  # equal
    {"prompt": "review diff 2", "baseline": "GOOD review", HAIKU: "meh review", MINI: "GOOD"},  # worse
    {"prompt": "review diff 3", "baseline": "GOOD review", HAIKU: "BAD review", MINI: "GOOD"},  # unacceptable
    {"prompt": "review diff 4", "baseline": "plain review", HAIKU: "GOOD review", MINI: "GOOD"},  # better
]


@pytest.mark.anyio
async def test_judge_order_swap_verdicts_cost_and_resume(svc: PrismService, judge: ScriptedJudge) -> None:
    await make_experiment(svc, ITEMS)
    ev = EvaluationService(svc)
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int, message: str) -> None:
        seen.append((done, total))

    r = await ev.judge("exp-1", JUDGE, progress=progress)
    rows = await evaluations(svc, "judge")
    assert {k[0]: v["verdict"] for k, v in rows.items()} == {1: "acceptable", 2: "degraded", 3: "unacceptable",
                                                             4: "acceptable"}
    assert (r.judged, r.skipped, r.position_bias, r.warnings) == (4, 0, 0, [])
    assert sorted(seen)[-1] == (4, 4)
    # two calls per pair, both orders, through the provider client with the key
    assert len(judge.calls) == 8 and set(judge.auth) == {f"Bearer {KEY}"}
    assert all(c["model"] == JUDGE and c["messages"][0]["role"] == "system" for c in judge.calls)
    users = [c["messages"][1]["content"] for c in judge.calls if "review diff 2" in c["messages"][1]["content"]]
    assert len(users) == 2 and all("Task type: code_review" in u for u in users)
    assert {u.index("meh review") < u.index("GOOD review") for u in users} == {True, False}  # both orders
    # detail: both raw judgments; cost: 2 calls x catalog price, per pair and in all
    detail = json.loads(rows[(2, HAIKU)]["detail"])
    assert [o["order"] for o in detail["orders"]] == ["baseline_first", "candidate_first"]
    assert [o["verdict"] for o in detail["orders"]] == ["A_BETTER", "B_BETTER"]
    assert [o["candidate"] for o in detail["orders"]] == ["worse", "worse"]
    assert all(o["raw"] and o["usage"]["input_tokens"] == PROMPT_TOKENS for o in detail["orders"])
    one_call = svc.catalog.cost(JUDGE, E.TokenUsage(PROMPT_TOKENS, 0, 0, COMPLETION_TOKENS, 0)).usd
    assert one_call is not None and one_call > 0
    assert Decimal(rows[(2, HAIKU)]["cost_usd"]) == 2 * one_call
    assert r.cost_usd == 8 * one_call
    assert rows[(2, HAIKU)]["evaluator"] == JUDGE
    (counts,) = r.candidates
    assert (counts.acceptable, counts.degraded, counts.unacceptable, counts.tie) == (2, 1, 1, 0)

    # resumable: nothing is judged (or paid) twice
    r = await ev.judge("exp-1", JUDGE)
    assert (r.judged, r.skipped, r.cost_usd) == (0, 4, Decimal(0)) and len(judge.calls) == 8
    assert r.candidates[0].evaluated == 4


@pytest.mark.anyio
async def test_position_biased_judge_gives_ties(svc: PrismService, judge: ScriptedJudge) -> None:
    await make_experiment(svc, ITEMS)
    judge.mode = "first"
    r = await EvaluationService(svc).judge("exp-1", JUDGE, concurrency=2)
    rows = await evaluations(svc, "judge")
    assert {v["verdict"] for v in rows.values()} == {"tie"}
    assert r.position_bias == 4 and r.candidates[0].tie == 4 and r.candidates[0].acceptable == 0
    assert all(json.loads(v["detail"])["position_preference"] == "first" for v in rows.values())
    assert "position bias" in r.markdown


@pytest.mark.anyio
async def test_judge_warns_about_its_own_family_and_itself(svc: PrismService, judge: ScriptedJudge) -> None:
    await make_experiment(svc, ITEMS, candidates=(HAIKU, MINI))
    r = await EvaluationService(svc).judge("exp-1", JUDGE)
    assert len(r.warnings) == 1 and MINI in r.warnings[0] and "family (gpt)" in r.warnings[0]
    assert "self-preference" in r.warnings[0]
    rows = await evaluations(svc, "judge")
    assert "warnings" in json.loads(rows[(1, MINI)]["detail"]) and "warnings" not in json.loads(
        rows[(1, HAIKU)]["detail"])
    assert {c.model for c in r.candidates} == {HAIKU, MINI} and r.judged == 8

    await make_experiment(svc, [{"baseline": "GOOD", JUDGE: "GOOD"}], exp_id="exp-2", candidates=(JUDGE,))
    r = await EvaluationService(svc).judge("exp-2", JUDGE)
    assert len(r.warnings) == 1 and "is the candidate gpt-5 itself" in r.warnings[0]
    await make_experiment(svc, [{"baseline": "GOOD", HAIKU: "GOOD"}], exp_id="exp-3", baseline=JUDGE)
    r = await EvaluationService(svc).judge("exp-3", JUDGE)
    assert len(r.warnings) == 1 and "is the baseline model" in r.warnings[0]


@pytest.mark.anyio
async def test_judge_errors_are_retried_next_time(svc: PrismService, judge: ScriptedJudge) -> None:
    items = [*ITEMS[:2], {"prompt": "orphan", HAIKU: "GOOD"}, {"prompt": "failed", "baseline": "x", HAIKU: None}]
    await make_experiment(svc, items)
    ev = EvaluationService(svc)
    judge.mode = "refuse"
    r = await ev.judge("exp-1", JUDGE)
    assert (r.judged, r.not_judged) == (2, 1)
    assert any("no baseline answer" in w for w in r.warnings)
    rows = await evaluations(svc, "judge")
    assert {v["verdict"] for v in rows.values()} == {"error"}
    assert "no verdict found" in json.loads(rows[(1, HAIKU)]["detail"])["error"]
    assert rows[(1, HAIKU)]["cost_usd"] is not None  # the refusals were paid for

    judge.mode = "fail"
    r = await ev.judge("exp-1", JUDGE)
    assert r.judged == 2 and r.candidates[0].error == 2
    detail = json.loads((await evaluations(svc, "judge"))[(1, HAIKU)]["detail"])
    assert "judge overloaded" in detail["orders"][0]["error"]
    assert len(judge.calls) == 4 + 4 * 3  # three attempts per call

    judge.mode = "fail_once"  # the retry inside one run recovers
    r = await ev.judge("exp-1", JUDGE)
    assert r.judged == 2 and {i.verdict for i in r.items} == {"acceptable", "degraded"}


@pytest.mark.anyio
async def test_judge_input_errors(svc: PrismService, judge: ScriptedJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    await make_experiment(svc, ITEMS)
    ev = EvaluationService(svc)
    with pytest.raises(UnknownName):
        await ev.judge("exp-1", "gpt-99")
    with pytest.raises(UnknownName):
        await ev.judge("nope", JUDGE)
    with pytest.raises(InvalidInput, match="concurrency"):
        await ev.judge("exp-1", JUDGE, concurrency=0)
    with pytest.raises(InvalidInput, match="ANTHROPIC_API_KEY"):
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
        await ev.judge("exp-1", "claude-opus-4-5")
    assert judge.calls == []


# ==================================================================== blind human rating
NAMES = ("claude", "haiku", "sonnet", "gpt", "mini", "anthropic", "openai", "baseline", "candidate")


async def rating_experiment(svc: PrismService, n: int = 12) -> str:
    items = [{"prompt": f"question {i}", "baseline": f"old answer {i}", HAIKU: f"new answer {i}",
              MINI: f"other answer {i}"} for i in range(1, n + 1)]
    return await make_experiment(svc, items, candidates=(HAIKU, MINI))


@pytest.mark.anyio
async def test_rating_pairs_are_blind_and_stable(svc: PrismService) -> None:
    await rating_experiment(svc)
    ev = EvaluationService(svc)
    p = await ev.next_for_rating("exp-1", "ann")
    assert not p.done and p.total == 24 and p.rated_by_you == 0 and p.token
    shown = p.model_dump_json().lower().replace(p.task_type or "", "")
    assert not any(name in shown for name in NAMES), shown  # no model names anywhere, token included
    assert set(p.choices) == set(J.HUMAN_RATINGS)
    assert p == await ev.next_for_rating("exp-1", "ann")  # stable
    # the candidate's side is random per pair, stable, and the same for every rater
    sides = []
    skip: list[str] = []
    for _ in range(24):
        q = await ev.next_for_rating("exp-1", "ann", skip=skip)
        assert q.token is not None and q.first and q.second
        sides.append("new" in q.first or "other" in q.first)
        skip.append(q.token)
    assert 0 < sum(sides) < 24
    assert (await ev.next_for_rating("exp-1", "ann", skip=skip)).done
    bob = await ev.next_for_rating("exp-1", "bob")
    assert bob.token != p.token  # each rater's queue has its own order...
    again = await ev.next_for_rating("exp-1", "ann", skip=[t for t in skip if t != bob.token])
    assert again.token == bob.token and again.first == bob.first  # ...but a pair looks the same to everyone


@pytest.mark.anyio
async def test_submit_maps_to_the_candidate_and_rerating_replaces(svc: PrismService) -> None:
    await rating_experiment(svc, n=3)
    ev = EvaluationService(svc)
    p = await ev.next_for_rating("exp-1", "ann")
    assert p.token and p.first and p.second
    cand_side = "first" if not p.first.startswith("old") else "second"
    base_side = "second" if cand_side == "first" else "first"
    item = int(p.token.split(":")[1])
    model = HAIKU if "new" in (p.first + p.second) else MINI

    r = await ev.submit_rating(p.token, base_side, "ann", note="misses a case")
    assert (r.replaced, r.rated_by_you, r.total) == (False, 1, 6)
    assert "verdict" not in r.model_dump()  # the rater is not told which answer was the candidate
    row = (await evaluations(svc, "human"))[(item, model)]
    assert (row["verdict"], row["evaluator"]) == ("degraded", "ann")
    detail = json.loads(row["detail"])
    assert detail["ratings"]["ann"]["note"] == "misses a case" and detail["candidate_shown"] == cand_side

    r = await ev.submit_rating(p.token, cand_side, "ann")  # changed her mind: replaces
    assert r.replaced and r.rated_by_you == 1
    row = (await evaluations(svc, "human"))[(item, model)]
    assert row["verdict"] == "acceptable" and list(json.loads(row["detail"])["ratings"]) == ["ann"]

    await ev.submit_rating(p.token, f"only_{base_side}", "bob")  # a second rater: the most severe counts
    row = (await evaluations(svc, "human"))[(item, model)]
    assert (row["verdict"], row["evaluator"]) == ("unacceptable", "ann, bob")
    assert json.loads(row["detail"])["agree"] is False

    await ev.submit_rating(p.token, "same", "bob")
    assert (await evaluations(svc, "human"))[(item, model)]["verdict"] == "acceptable"

    progress = await ev.rating_progress("exp-1")
    assert (progress.total, progress.rated) == (6, 1)
    assert [(x.rater, x.rated) for x in progress.raters] == [("ann", 1), ("bob", 1)]
    assert progress.candidates[0].acceptable == 1
    nxt = await ev.next_for_rating("exp-1", "ann")
    assert nxt.token != p.token and nxt.rated_by_you == 1


@pytest.mark.anyio
async def test_submit_rejects_bad_tokens_ratings_and_raters(svc: PrismService) -> None:
    await rating_experiment(svc, n=2)
    ev = EvaluationService(svc)
    p = await ev.next_for_rating("exp-1", "ann")
    assert p.token
    for token in ("garbage", "exp-1:1:0000000000000000", p.token[:-1] + "x", "exp-9:1:abc", "exp-1:x:abc"):
        with pytest.raises(InvalidInput, match="not valid"):
            await ev.submit_rating(token, "same", "ann")
    with pytest.raises(InvalidInput, match="rating must be one of first, second, same"):
        await ev.submit_rating(p.token, "acceptable", "ann")
    with pytest.raises(InvalidInput, match="rater"):
        await ev.submit_rating(p.token, "same", "  ")
    assert await evaluations(svc, "human") == {}


# ==================================================================== CLI
@pytest.fixture
def home(settings: Settings, tmp_path: Path) -> Path:
    async def setup() -> None:
        service = await PrismService.open(settings)
        try:
            third = {"prompt": "p3", "expected": "GOOD", "baseline": "GOOD", HAIKU: "GOOD"}
            await make_experiment(service, [*ITEMS[:2], third])
        finally:
            await service.close()

    asyncio.run(setup())
    return tmp_path


def run(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([*args, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_auto_and_judge(home: Path, capsys: pytest.CaptureFixture[str], judge: ScriptedJudge) -> None:
    check = home / "check.json"
    check.write_text(json.dumps({"type": "regex", "pattern": "GOOD"}))
    code, out, err = run(home, capsys, "evaluate", "auto", "exp-1", "--check", str(check))
    assert code == 0, err
    assert re.search(r"\| claude-haiku-4-5 +\| candidate +\| +3 \| +2 \| +0 \| +1 \|", out), out
    assert "item 2 on claude-haiku-4-5: unacceptable - the pattern does not match" in out
    code, out, _ = run(home, capsys, "evaluate", "auto", "exp-1", "--check", '{"type": "exact"}', "--json")
    assert code == 0 and json.loads(out)["candidates"][0]["acceptable"] == 1
    code, _, err = run(home, capsys, "evaluate", "auto", "exp-1", "--check", '{"type": "exakt"}')
    assert code == 2 and "must be one of" in err
    code, _, err = run(home, capsys, "evaluate", "auto", "exp-1", "--check", str(home / "missing.json"))
    assert code == 2 and "does not exist" in err

    code, out, err = run(home, capsys, "evaluate", "judge", "exp-1", "--judge", JUDGE, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["judged"], data["candidates"][0]["acceptable"], data["candidates"][0]["degraded"]) == (3, 2, 1)
    assert "[3/3]" in err  # progress on stderr
    code, out, _ = run(home, capsys, "evaluate", "judge", "exp-1", "--judge", JUDGE)
    assert code == 0 and "judged 0 pair(s) now, 3 already judged" in out


def test_cli_rate_reads_stdin(home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # skip one, mistype, rate one, give up on the next with q
    monkeypatch.setattr(sys, "stdin", io.StringIO("s\nwhat\n2!\nq\n"))
    code, out, err = run(home, capsys, "evaluate", "rate", "exp-1", "--rater", "ann")
    assert code == 0, err
    assert out.count("===== FIRST ANSWER =====") == 3 and "not a rating: 'what'" in out
    assert "ann: rated 1 pair(s) this session, 1 of 3 in all" in out
    assert not any(name in out.split("ann: rated")[0].lower() for name in ("claude", "haiku", "sonnet"))

    # end of input ends the session; --json keeps stdout clean
    monkeypatch.setattr(sys, "stdin", io.StringIO("=\n1\n"))
    code, out, err = run(home, capsys, "evaluate", "rate", "exp-1", "--rater", "ann", "--json")
    assert code == 0 and "FIRST ANSWER" in err
    data = json.loads(out)
    assert data["rated"] == 3 and data["raters"] == [{"rater": "ann", "rated": 3}]

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, out, _ = run(home, capsys, "evaluate", "rate", "exp-1", "--rater", "ann")
    assert code == 0 and "nothing left to rate" in out
    code, out, _ = run(home, capsys, "evaluate", "progress", "exp-1")
    assert code == 0 and "3 of 3 pair(s) rated; ann: 3" in out


# ==================================================================== MCP
@pytest.mark.anyio
async def test_mcp_tools(settings: Settings, judge: ScriptedJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    service = await PrismService.open(settings)
    try:
        await make_experiment(service, ITEMS)
    finally:
        await service.close()
    async with Client(build_server(settings, toolsets="loop")) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert {"evaluate_automated", "evaluate_with_judge", "next_rating", "submit_rating"} <= set(tools)
        assert "ctx" not in json.dumps(tools["evaluate_with_judge"].input_schema)
        assert tools["submit_rating"].input_schema["properties"]["rating"]["enum"] == list(J.HUMAN_RATINGS)

        r = await c.call_tool("evaluate_automated", {"experiment_id": "exp-1",
                                                     "check": {"type": "regex", "pattern": "GOOD"}})
        assert not r.is_error and r.structured_content["candidates"][0]["acceptable"] == 2
        r = await c.call_tool("evaluate_automated", {"experiment_id": "exp-1", "check": {"type": "nope"}})
        assert r.is_error and "must be one of" in r.content[0].text
        command = {"type": "command", "command": f"{sys.executable} -c pass"}
        r = await c.call_tool("evaluate_automated", {"experiment_id": "exp-1", "check": command})
        assert r.is_error and "PRISM_MCP_COMMAND_CHECKS=1" in r.content[0].text
        monkeypatch.setenv("PRISM_MCP_COMMAND_CHECKS", "1")
        r = await c.call_tool("evaluate_automated", {"experiment_id": "exp-1", "check": command})
        assert not r.is_error and r.structured_content["candidates"][0]["acceptable"] == 4

        r = await c.call_tool("evaluate_with_judge", {"experiment_id": "exp-1", "judge_model": JUDGE})
        assert not r.is_error, r.content
        assert r.structured_content["judged"] == 4 and Decimal(r.structured_content["cost_usd"]) > 0
        r = await c.call_tool("evaluate_with_judge", {"experiment_id": "exp-1", "judge_model": "nope-model"})
        assert r.is_error and "unknown model 'nope-model'" in r.content[0].text

        pair = (await c.call_tool("next_rating", {"experiment_id": "exp-1", "rater": "ann"})).structured_content
        assert pair["token"] and not any(n in json.dumps(pair).lower() for n in ("claude", "haiku", "sonnet"))
        r = await c.call_tool("submit_rating", {"token": pair["token"], "rating": "same", "rater": "ann"})
        assert not r.is_error and r.structured_content["rated_by_you"] == 1
        r = await c.call_tool("submit_rating", {"token": pair["token"], "rating": "good", "rater": "ann"})
        assert r.is_error
        r = await c.call_tool("submit_rating", {"token": "forged:1:abc", "rating": "same", "rater": "ann"})
        assert r.is_error and "not valid" in r.content[0].text
