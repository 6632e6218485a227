"""Experiments end to end: sampling (stored requests and JSONL files), paid-once runs against the fake
providers (resumable after cancellation, provider errors retried), the report's statistics and costs
against hand-computed figures, promotion with a monitor, and the CLI and MCP adapters."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from fakes import FakeProviders, run_fake_providers
from mcp import Client

from mcp_prism.cli import main
from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import iso, parse_iso, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.loop.experiments import ExperimentService, _chat_request
from mcp_prism.mcp_server import build_server
from mcp_prism.service import PrismService, UsageInput
from mcp_prism.store.sqlite import Store

pytestmark = pytest.mark.anyio

KEYS = {"openai": "sk-exp-openai", "anthropic": "sk-ant-exp", "gemini": "exp-gemini"}
ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
TASK = "ticket_classification"  # rule primary: gemini-2.5-flash
BASELINE = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys=KEYS) as f:
        yield f


@pytest.fixture
def home(tmp_path: Path, fake: FakeProviders, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake.reset()
    for provider, var in ENV.items():
        monkeypatch.setenv(var, KEYS[provider])
    for name in ("PRISM_HOME", "PRISM_DB", "PRISM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config.toml").write_text(
        f'[providers.openai]\nbase_url = "{fake.base_url}/v1"\n'
        f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n'
        f'[providers.google]\nbase_url = "{fake.base_url}/v1beta"\n'
        f"[task_types.{TASK}]\ncapture_samples = true\n")
    return tmp_path


@pytest.fixture
async def svc(home: Path):
    service = await PrismService.open(Settings.from_env({}, home=home))
    yield service
    await service.close()


def prompts_called(fake: FakeProviders) -> Counter[tuple[str, str]]:
    """(model, last user text) of every completion call the fakes received."""
    out: Counter[tuple[str, str]] = Counter()
    for c in fake.calls:
        body = c.body or {}
        if c.provider == "gemini":
            model = c.path.split("/models/")[1].split(":")[0]
            text = body["contents"][-1]["parts"][0]["text"]
        else:
            model = body["model"]
            content = body["messages"][-1]["content"]
            text = content if isinstance(content, str) else content[0]["text"]
        out[(model, text)] += 1
    return out


async def record_samples(svc: PrismService, n: int, *, with_response: int | None = None, model: str = BASELINE,
                         low_quality: int = 0) -> None:
    """n captured requests of TASK; the first `with_response` have the baseline's answer recorded."""
    with_response = n if with_response is None else with_response
    for i in range(n):
        await svc.record_usage(UsageInput(
            model=model, task_type=TASK, input_tokens=100 + i, output_tokens=20, latency_ms=300 + i,
            prompt=f"ticket {i}: my invoice is wrong" + (" and long" * i if i % 17 == 0 else ""),
            response=f"billing {i}" if i < with_response else None,
            quality=0.2 if i < low_quality else None, quality_source="human" if i < low_quality else None))


def write_jsonl(path: Path, n: int, *, edge: int = 0, responses: bool = False, marker: dict[int, str] | None = None,
                structured_every: int = 0) -> Path:
    lines = []
    for i in range(n):
        text = f"question {i}" + (f" {marker[i]}" if marker and i in marker else "")
        prompt: Any = text
        if structured_every and i % structured_every == 0:
            prompt = {"system": "Answer briefly.", "messages": [{"role": "user", "content": text}]}
        obj: dict[str, Any] = {"prompt": prompt, "expected": f"answer {i}", "edge_case": i < edge}
        if responses:
            obj["response"] = f"baseline answer {i}"
        lines.append(json.dumps(obj))
    path.write_text("\n".join(lines) + "\n")
    return path


# ==================================================================== start
async def test_start_from_stored_samples(svc: PrismService) -> None:
    await record_samples(svc, 64, with_response=60, low_quality=3)
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["gpt-4o-mini", "cheap"], samples=50)
    assert info.baseline_model == BASELINE and info.candidates == ["gpt-4o-mini", "gpt-5-nano"]
    assert info.source == "store" and info.items == 50 and info.status == "created"
    assert info.evaluation == {"method": "human", "threshold": 0.95, "confidence": 0.95}
    assert info.edge_cases >= 5  # about 10% of the draw
    items = await svc.store.fetch("SELECT * FROM experiment_items WHERE experiment_id = ? ORDER BY item", (info.id,))
    prompts = [r["prompt"] for r in items]
    assert len(set(prompts)) == 50
    # the longest prompt and the low-quality requests are kept as edge cases
    assert max((r["prompt"] for r in items), key=len) == "ticket 51: my invoice is wrong" + " and long" * 51
    edge = {r["prompt"]: r["category"] for r in items if r["edge_case"]}
    assert "ticket 51: my invoice is wrong" + " and long" * 51 in edge
    assert any(c == "low recorded quality" for c in edge.values())
    # recorded baseline answers become baseline outputs, with the event's tokens, latency and cost
    outs = await svc.store.fetch("SELECT * FROM experiment_outputs WHERE experiment_id = ?", (info.id,))
    answered = [r for r in items if int(r["prompt"].split()[1].rstrip(":")) < 60]
    assert len(outs) == len(answered) == info.outputs_ok[BASELINE]
    one = next(o for o in outs if o["item"] == answered[0]["item"])
    i = int(answered[0]["prompt"].split()[1].rstrip(":"))
    assert (one["response"], one["input_tokens"], one["latency_ms"], one["role"]) == (f"billing {i}", 100 + i,
                                                                                      300 + i, "baseline")
    assert Decimal(one["cost_usd"]) > 0
    assert info.answers_missing == 50 * 3 - len(answered)
    # the same seed draws the same samples; another seed another order
    again = await exps.start(TASK, ["gpt-4o-mini"], samples=50)
    same = [r["prompt"] for r in await svc.store.fetch(
        "SELECT prompt FROM experiment_items WHERE experiment_id = ? ORDER BY item", (again.id,))]
    assert same == prompts
    other = await exps.start(TASK, ["gpt-4o-mini"], samples=50, seed=8)
    assert [r["prompt"] for r in await svc.store.fetch(
        "SELECT prompt FROM experiment_items WHERE experiment_id = ? ORDER BY item", (other.id,))] != prompts
    listing = await exps.list()
    assert {e.id for e in listing.experiments} == {info.id, again.id, other.id}


async def test_stored_answers_of_another_model_are_not_the_baseline(svc: PrismService) -> None:
    await record_samples(svc, 50, model="gpt-4o")
    info = await ExperimentService(svc).start(TASK, ["gpt-4o-mini"], samples=50)
    assert info.outputs_ok[BASELINE] == 0 and info.answers_missing == 100


async def test_start_from_file(svc: PrismService, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", 70, edge=4, responses=True, structured_every=5)
    info = await ExperimentService(svc).start(TASK, ["gpt-4o-mini"], samples=60, from_file=path,
                                              evaluation={"method": "judge", "judge": "claude-sonnet-4-5"},
                                              baseline_model="fast")
    assert info.source == "file" and info.items == 60 and info.baseline_model == BASELINE
    assert info.evaluation == {"method": "judge", "threshold": 0.90, "confidence": 0.95, "judge": "claude-sonnet-4-5"}
    items = await svc.store.fetch("SELECT * FROM experiment_items WHERE experiment_id = ?", (info.id,))
    flagged = [r for r in items if r["category"] == "flagged edge case"]
    assert sorted(_chat_request(r["prompt"], "m").messages[-1].content[0].text for r in flagged) == [
        f"question {i}" for i in range(4)]
    structured = [r for r in items if r["prompt"].startswith("{")]
    assert structured and json.loads(structured[0]["prompt"])["system"] == "Answer briefly."
    assert all(r["expected"].startswith("answer ") for r in items)
    assert info.outputs_ok == {BASELINE: 60, "gpt-4o-mini": 0} and info.answers_missing == 60


async def test_start_validation(svc: PrismService, tmp_path: Path) -> None:
    exps = ExperimentService(svc)
    path = write_jsonl(tmp_path / "ok.jsonl", 50)
    with pytest.raises(UnknownName, match="unknown task type 'nope'"):
        await exps.start("nope", ["gpt-4o-mini"], from_file=path)
    for bad in (49, 101):
        with pytest.raises(InvalidInput, match="samples must be a whole number from 50 to 100"):
            await exps.start(TASK, ["gpt-4o-mini"], samples=bad, from_file=path)
    with pytest.raises(InvalidInput, match="give 1 to 5 candidate models"):
        await exps.start(TASK, [], from_file=path)
    with pytest.raises(InvalidInput, match="is the baseline"):
        await exps.start(TASK, ["fast"], from_file=path)
    with pytest.raises(InvalidInput, match="at most 5"):
        await exps.start(TASK, ["gpt-4o-mini", "gpt-4o", "gpt-4.1-nano", "gpt-4.1-mini", "gpt-5-nano", "gpt-5-mini"],
                         from_file=path)
    with pytest.raises(UnknownName, match="unknown model 'gpt-99'"):
        await exps.start(TASK, ["gpt-99"], from_file=path)
    with pytest.raises(InvalidInput, match="listed twice"):
        await exps.start(TASK, ["gpt-5-nano", "cheap"], from_file=path)
    with pytest.raises(InvalidInput, match="method must be one of human, judge, automated"):
        await exps.start(TASK, ["gpt-4o-mini"], from_file=path, evaluation={"method": "vibes"})
    with pytest.raises(InvalidInput, match="threshold must be"):
        await exps.start(TASK, ["gpt-4o-mini"], from_file=path, evaluation={"method": "human", "threshold": 1.5})
    # too few stored samples: say how many exist and how to get more
    await record_samples(svc, 12)
    with pytest.raises(InvalidInput) as e:
        await exps.start(TASK, ["gpt-4o-mini"])
    msg = str(e.value)
    assert "only 12 usable" in msg and "capture_samples = true" in msg and "JSONL" in msg
    await record_samples(svc, 55)  # the same 12 prompts again (counted once) plus 43 new ones
    with pytest.raises(InvalidInput, match=r"only 55 usable one\(s\); ask for at most 55"):
        await exps.start(TASK, ["gpt-4o-mini"], samples=60)
    # file problems name the line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(InvalidInput, match=r"bad\.jsonl line 2 is not JSON"):
        await exps.start(TASK, ["gpt-4o-mini"], from_file=bad)
    bad.write_text('{"prompt": ""}\n')
    with pytest.raises(InvalidInput, match='line 1: "prompt" is required'):
        await exps.start(TASK, ["gpt-4o-mini"], from_file=bad)
    with pytest.raises(InvalidInput, match="does not exist"):
        await exps.start(TASK, ["gpt-4o-mini"], from_file=tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInput, match="at least 50"):
        await exps.start(TASK, ["gpt-4o-mini"], from_file=write_jsonl(tmp_path / "small.jsonl", 20))
    assert (await exps.list()).experiments == []  # nothing half-created


# ==================================================================== run
async def test_run_pays_each_answer_exactly_once(svc: PrismService, fake: FakeProviders) -> None:
    await record_samples(svc, 50, with_response=40)
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["gpt-4o-mini", "claude-haiku-4-5"], samples=50)
    seen: list[tuple[int, int]] = []
    summary = await exps.run(info.id, concurrency=8, progress=lambda d, t, m: seen.append((d, t)))
    assert (summary.total, summary.already_done, summary.calls_made, summary.errors) == (150, 40, 110, 0)
    assert summary.complete and summary.status == "ready"
    assert len(fake.calls) == 110
    calls = prompts_called(fake)
    assert set(calls.values()) == {1}
    assert Counter(m for m, _ in calls) == {BASELINE: 10, "gpt-4o-mini": 50, "claude-haiku-4-5": 50}
    assert seen[0] == (40, 150) and seen[-1] == (150, 150)
    outs = await svc.store.fetch(
        "SELECT * FROM experiment_outputs WHERE experiment_id = ? AND model = 'gpt-4o-mini'", (info.id,))
    assert len(outs) == 50 and all(o["status"] == "ok" and o["response"].startswith("echo: ticket") for o in outs)
    assert all(o["input_tokens"] > 0 and o["output_tokens"] > 0 and o["latency_ms"] > 0 for o in outs)
    assert summary.cost_usd == sum(
        (Decimal(o["cost_usd"]) for o in await svc.store.fetch(
            "SELECT cost_usd FROM experiment_outputs o JOIN experiments x ON x.id = o.experiment_id "
            "WHERE o.experiment_id = ? AND o.created_at != x.created_at", (info.id,))), Decimal(0))
    assert summary.cost_usd > 0
    # a second run has nothing to pay for
    again = await exps.run(info.id)
    assert (again.calls_made, again.already_done, again.complete) == (0, 150, True)
    assert len(fake.calls) == 110
    assert (await exps.show(info.id)).answers_missing == 0


async def test_a_codex_candidate_is_called_with_the_responses_api(svc: PrismService, fake: FakeProviders) -> None:
    await record_samples(svc, 50)
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["gpt-5.1-codex-mini"], samples=50)
    summary = await exps.run(info.id, concurrency=8)
    assert (summary.calls_made, summary.errors) == (50, 0)
    assert {c.path for c in fake.calls} == {"/v1/responses"}  # codex models accept nothing else
    outs = await svc.store.fetch("SELECT * FROM experiment_outputs WHERE experiment_id = ? AND model = ?",
                                 (info.id, "gpt-5.1-codex-mini"))
    assert len(outs) == 50 and all(o["response"].startswith("echo: ticket") and o["output_tokens"] > 0 for o in outs)


async def test_interrupted_run_resumes_without_paying_twice(svc: PrismService, fake: FakeProviders,
                                                            tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", 50, structured_every=3)
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["gpt-4o-mini"], samples=50, from_file=path)
    k = 23
    task: asyncio.Task[Any] | None = None

    def stop_after_k(done: int, total: int, message: str) -> None:
        if done == k:
            assert task is not None
            task.cancel()

    task = asyncio.create_task(exps.run(info.id, concurrency=1, progress=stop_after_k))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(fake.calls) == k
    assert (await exps.show(info.id)).answers_missing == 100 - k
    first = prompts_called(fake)
    summary = await exps.run(info.id, concurrency=4)
    assert (summary.already_done, summary.calls_made, summary.complete) == (k, 100 - k, True)
    calls = prompts_called(fake)
    assert len(fake.calls) == 100 and set(calls.values()) == {1}  # every answer paid for once
    assert not set(prompts_called(fake)) - set(calls) and set(first) <= set(calls)


async def test_cancel_mid_call_saves_what_was_paid(svc: PrismService, fake: FakeProviders, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", 50)
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["gpt-4o-mini"], samples=50, from_file=path)
    task = asyncio.create_task(exps.run(info.id, concurrency=6))
    assert await asyncio.to_thread(fake.wait_until, lambda: len(fake.calls) >= 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    made = len(fake.calls)
    saved = 100 - (await exps.show(info.id)).answers_missing
    assert saved <= made  # a call cut off in flight may be lost, one that was answered never is
    await exps.run(info.id)
    assert (await exps.show(info.id)).answers_missing == 0
    assert len(fake.calls) - made == 100 - saved


async def test_provider_errors_are_recorded_and_retried(svc: PrismService, fake: FakeProviders,
                                                        tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", 50, responses=True, marker={3: "[500]", 7: "[500]"})
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["gpt-4o-mini", "claude-haiku-4-5"], samples=50, from_file=path)
    summary = await exps.run(info.id)
    assert (summary.calls_made, summary.succeeded, summary.errors, summary.complete) == (100, 96, 4, False)
    assert summary.status == "created" and "run again" in summary.next_step
    assert any("500" in e for e in summary.error_examples)
    errors = await svc.store.fetch(
        "SELECT * FROM experiment_outputs WHERE experiment_id = ? AND status = 'error'", (info.id,))
    assert len(errors) == 4 and all(e["response"] is None and "500" in e["error"] for e in errors)
    shown = await exps.show(info.id)
    assert shown.outputs_failed == {"gpt-4o-mini": 2, "claude-haiku-4-5": 2} and shown.answers_missing == 4
    # the next run retries only the failures (still failing: the marker is still there)
    fake.reset()
    again = await exps.run(info.id)
    assert (again.calls_made, again.errors, again.already_done) == (4, 4, 146) and len(fake.calls) == 4
    # once the provider recovers, the retry succeeds and the experiment is complete
    async def fix(conn: aiosqlite.Connection) -> None:
        await conn.execute("UPDATE experiment_items SET prompt = replace(prompt, ' [500]', '') WHERE experiment_id = ?",
                           (info.id,))

    await svc.store.transaction(fix)
    fake.reset()
    last = await exps.run(info.id)
    assert (last.calls_made, last.errors, last.complete, last.status) == (4, 0, True, "ready")
    assert (await exps.show(info.id)).outputs_failed == {}


async def test_missing_key_is_an_error_not_a_crash(svc: PrismService, fake: FakeProviders, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    svc._providers = None  # read the environment again
    path = write_jsonl(tmp_path / "s.jsonl", 50, responses=True)
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["claude-haiku-4-5"], samples=50, from_file=path)
    assert info.warnings == ["no API key for anthropic: set ANTHROPIC_API_KEY before `run`"]
    summary = await exps.run(info.id)
    assert summary.errors == 50 and "ANTHROPIC_API_KEY" in summary.error_examples[0] and not fake.calls


# ==================================================================== report
async def _experiment_with_outputs(svc: PrismService, tmp_path: Path, n: int, candidates: list[str],
                                   method: str = "judge", **evaluation: Any) -> str:
    """An experiment of n file items whose outputs are inserted by hand: baseline latency 100+i ms and
    $0.002 per answer, candidate c latency 10*(c+1)+i ms and $0.0005 per answer."""
    path = write_jsonl(tmp_path / f"r{n}.jsonl", n)
    info = await ExperimentService(svc).start(TASK, candidates, samples=n, from_file=path,
                                              evaluation={"method": method, **evaluation})
    now = iso(utcnow() + timedelta(seconds=1))

    async def work(conn: aiosqlite.Connection) -> None:
        rows = []
        for i in range(1, n + 1):
            rows.append((info.id, i, BASELINE, "baseline", f"base {i}", 1000, 200, 100 + i, "0.002", now))
            for c, model in enumerate(candidates):
                rows.append((info.id, i, model, "candidate", f"cand {i}", 1000, 100, 10 * (c + 1) + i, "0.0005", now))
        await conn.executemany(
            "INSERT INTO experiment_outputs (experiment_id, item, model, role, response, status, input_tokens, "
            "output_tokens, latency_ms, cost_usd, created_at) VALUES (?, ?, ?, ?, ?, 'ok', ?, ?, ?, ?, ?)", rows)

    await svc.store.transaction(work)
    return info.id


async def _verdicts(svc: PrismService, exp_id: str, model: str, verdicts: dict[int, str], method: str = "judge",
                    cost: str | None = None) -> None:
    async def work(conn: aiosqlite.Connection) -> None:
        await conn.executemany(
            "INSERT INTO evaluations (experiment_id, item, model, method, verdict, detail, evaluator, cost_usd, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, 'test', ?, ?)",
            [(exp_id, item, model, method, v, json.dumps({"why": f"item {item} {v}"}), cost, iso(utcnow()))
             for item, v in verdicts.items()])

    await svc.store.transaction(work)


async def test_report_against_hand_computed_figures(svc: PrismService, tmp_path: Path) -> None:
    # 10 requests of the task type recorded today: 10 x 30 / 1 day = 300 requests a month
    for _ in range(10):
        await svc.record_usage(UsageInput(model=BASELINE, task_type=TASK, input_tokens=10, output_tokens=5))
    exp_id = await _experiment_with_outputs(svc, tmp_path, 60, ["gpt-4o-mini", "claude-haiku-4-5"])
    # gpt-4o-mini: 59/60, its one failure the last item -> SPRT accepts at the 40th pass
    await _verdicts(svc, exp_id, "gpt-4o-mini", {i: "acceptable" if i < 60 else "unacceptable" for i in range(1, 61)},
                    cost="0.001")
    # claude-haiku-4-5: 57 acceptable, 1 tie, 1 degraded, 1 judge error (not counted) -> 57/59
    haiku = {i: "acceptable" for i in range(1, 61)}
    haiku.update({5: "tie", 9: "degraded", 60: "error"})
    await _verdicts(svc, exp_id, "claude-haiku-4-5", haiku, cost="0.001")
    r = await ExperimentService(svc).report(exp_id)
    assert (r.method, r.threshold, r.confidence, r.monthly_requests) == ("judge", 0.90, 0.95, 300)
    mini, haiku_r = r.candidates
    assert (mini.evaluated, mini.acceptable, mini.ties, mini.not_acceptable) == (59 + 1, 59, 0, 1)
    assert mini.verdict == "qualified" and mini.rate == pytest.approx(59 / 60)
    assert mini.lower_bound == pytest.approx(0.92336, abs=1e-4)  # Clopper-Pearson, 95% one-sided
    assert mini.summary.startswith("59/60 acceptable (98.3%); 95% lower bound 92.3% vs threshold 90%: qualifies")
    assert (mini.sprt_decision, mini.sprt_stopped_at_item, mini.sprt_items_used) == ("accept", 40, 40)
    assert "would have accepted after 40 verdict(s), at item 40 — an early stop" in mini.sprt
    assert (haiku_r.evaluated, haiku_r.acceptable, haiku_r.ties, haiku_r.not_acceptable,
            haiku_r.evaluation_errors) == (59, 57, 1, 1, 1)
    assert haiku_r.verdict == "undecided" and haiku_r.more_samples_needed is not None
    assert f"about {haiku_r.more_samples_needed} more samples" in haiku_r.summary
    assert "1 judge tie(s)" in haiku_r.summary
    # latency: nearest rank over 60 answers; baseline 101..160 ms, gpt-4o-mini 11..70 ms
    assert (r.baseline.latency_p50_ms, r.baseline.latency_p95_ms) == (130, 157)
    assert (mini.latency_p50_ms, mini.latency_p95_ms) == (40, 67)
    assert (r.baseline.mean_input_tokens, r.baseline.mean_output_tokens, mini.mean_output_tokens) == (1000, 200, 100)
    # cost: $0.002 vs $0.0005 a request, x300 a month
    assert (r.baseline.cost_per_request_usd, mini.cost_per_request_usd) == (Decimal("0.002"), Decimal("0.0005"))
    assert (r.baseline.cost_per_month_usd, mini.cost_per_month_usd) == (Decimal("0.6"), Decimal("0.15"))
    assert (mini.saving_per_request_usd, mini.saving_per_month_usd, mini.saving_pct) == (
        Decimal("0.0015"), Decimal("0.45"), 75.0)
    assert r.experiment_cost_usd == Decimal("0.002") * 60 + Decimal("0.0005") * 120
    assert r.judge_cost_usd == Decimal("0.001") * 120
    # failed examples: every verdict that is not acceptable (ties included, judge errors not)
    failed = {(f.model, f.item): f for f in r.failed_examples}
    assert set(failed) == {("gpt-4o-mini", 60), ("claude-haiku-4-5", 5), ("claude-haiku-4-5", 9)}
    f = failed[("claude-haiku-4-5", 9)]
    assert (f.verdict, f.method, f.baseline_answer, f.candidate_answer) == ("degraded", "judge", "base 9", "cand 9")
    assert f.prompt.startswith("question ") and f.detail == {"why": "item 9 degraded"}
    assert "qualified" in r.markdown and "#### Not acceptable (3)" in r.markdown and "$0.45/month" in r.markdown


async def test_report_48_of_50_does_not_certify_95_percent(svc: PrismService, tmp_path: Path) -> None:
    exp_id = await _experiment_with_outputs(svc, tmp_path, 50, ["gpt-4o-mini"], method="human")
    await _verdicts(svc, exp_id, "gpt-4o-mini", {i: "acceptable" if i > 2 else "unacceptable" for i in range(1, 51)},
                    method="human")
    r = await ExperimentService(svc).report(exp_id)
    c = r.candidates[0]
    assert (c.acceptable, c.evaluated, c.threshold, c.verdict) == (48, 50, 0.95, "not qualified")
    assert c.lower_bound == pytest.approx(0.8793, abs=1e-3)
    assert c.summary == ("48/50 acceptable (96.0%); 95% lower bound 87.9% vs threshold 95%: not decided — at this "
                         "rate it would take more than 1000 samples")
    assert c.sprt_decision == "continue" and "would not have stopped within 50 verdict(s)" in c.sprt
    # no usage of the task type: no monthly figures, and the report says why
    assert r.monthly_requests is None and "not projected" in r.volume_note and c.cost_per_month_usd is None
    assert c.saving_per_request_usd == Decimal("0.0015") and c.saving_per_month_usd is None


async def test_report_undecided_and_imported_verdicts(svc: PrismService, tmp_path: Path) -> None:
    exp_id = await _experiment_with_outputs(svc, tmp_path, 50, ["gpt-4o-mini", "gpt-5-nano"], method="human")
    # 50/50 at 95%: lower bound 94.2%, about 9 more samples would decide it
    await _verdicts(svc, exp_id, "gpt-4o-mini", {i: "acceptable" for i in range(1, 51)}, method="human")
    # an importer's verdicts count when the experiment's own method has none
    await _verdicts(svc, exp_id, "gpt-5-nano", {i: "acceptable" for i in range(1, 21)}, method="imported")
    r = await ExperimentService(svc).report(exp_id)
    mini, nano = r.candidates
    assert mini.verdict == "undecided" and mini.more_samples_needed == 9
    assert "about 9 more samples at this rate would decide it" in mini.summary
    assert (nano.method, nano.evaluated, nano.unevaluated) == ("imported", 20, 30)
    (tmp_path / "x").mkdir()
    fresh = await _experiment_with_outputs(svc, tmp_path / "x", 50, ["gpt-4o-mini"])
    none = (await ExperimentService(svc).report(fresh)).candidates[0]
    assert none.verdict == "not evaluated" and none.evaluated == 0 and "evaluate the answers" in none.summary
    with pytest.raises(UnknownName, match="unknown experiment 'e0'"):
        await ExperimentService(svc).report("e0")


async def test_report_estimates_baseline_cost_of_file_answers(svc: PrismService, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "s.jsonl", 50, responses=True)
    exps = ExperimentService(svc)
    info = await exps.start(TASK, ["gpt-4o-mini"], samples=50, from_file=path)
    await exps.run(info.id)
    r = await exps.report(info.id)
    base, mini = r.baseline, r.candidates[0]
    assert base.mean_input_tokens is None and base.latency_p50_ms is None  # the file gave answers only
    assert mini.mean_input_tokens is not None and mini.cost_per_request_usd is not None
    answers = [f"baseline answer {i}" for i in range(50)]
    usage = TokenUsage(input_tokens=round(mini.mean_input_tokens),
                       output_tokens=round(sum(len(a) for a in answers) / 4 / 50))
    assert base.cost_per_request_usd == svc.catalog.cost(BASELINE, usage).usd
    assert base.cost_note is not None and base.cost_note.startswith("estimated")
    assert mini.saving_per_request_usd == base.cost_per_request_usd - mini.cost_per_request_usd
    assert r.experiment_cost_usd == mini.cost_per_request_usd * 50  # the file's answers cost the experiment nothing


# ==================================================================== promote
async def test_promote_creates_rule_version_and_monitor(svc: PrismService, tmp_path: Path) -> None:
    exp_id = await _experiment_with_outputs(svc, tmp_path, 60, ["gpt-4o-mini", "claude-haiku-4-5"])
    await _verdicts(svc, exp_id, "gpt-4o-mini", {i: "acceptable" for i in range(1, 61)})
    await _verdicts(svc, exp_id, "claude-haiku-4-5", {i: "acceptable" if i > 3 else "degraded" for i in range(1, 61)})
    exps = ExperimentService(svc)
    with pytest.raises(InvalidInput) as e:
        await exps.promote(exp_id, "claude-haiku-4-5", author="ana", reason="cheaper")
    assert "claude-haiku-4-5 is" in str(e.value) and "57/60 acceptable" in str(e.value)
    assert "Only a qualified candidate can be promoted" in str(e.value)
    with pytest.raises(InvalidInput, match="not a candidate"):
        await exps.promote(exp_id, "gpt-5", author="ana", reason="x")
    with pytest.raises(InvalidInput, match="author is required"):
        await exps.promote(exp_id, "gpt-4o-mini", author=" ", reason="x")
    assert (await svc.rules(fresh=True))[TASK].version == 0  # nothing changed

    before = utcnow()
    p = await exps.promote(exp_id, "gpt-4o-mini", author="ana", reason="qualified, 75% cheaper", monitor_days=7,
                           auto_rollback=True)
    assert (p.previous_model, p.candidate, p.previous_version, p.new_version) == (BASELINE, "gpt-4o-mini", 0, 1)
    active = (await svc.rules(fresh=True))[TASK]
    assert active.version == 1 and active.rule.primary == "gpt-4o-mini"
    assert active.rule.fallbacks == ("claude-haiku-4-5",)  # gpt-4o-mini left the fallbacks, the rest is kept
    assert [m for _, m in active.rule.complexity_upgrades] == ["claude-haiku-4-5", "claude-sonnet-4-5"]
    assert active.row is not None and active.row.evidence.startswith(f"experiment:{exp_id} gpt-4o-mini vs {BASELINE}")
    assert "60/60 acceptable" in active.row.evidence and active.row.author == "ana"
    [m] = await svc.store.fetch("SELECT * FROM monitors")
    assert (m["task_type"], m["rule_version"], m["baseline_version"], m["experiment_id"], m["status"],
            m["threshold"], m["auto_rollback"], m["id"]) == (TASK, 1, 0, exp_id, "watching", 0.90, 1, p.monitor_id)
    ends = parse_iso(m["ends_at"]) - parse_iso(m["started_at"])
    assert ends == timedelta(days=7) and parse_iso(m["started_at"]) >= before
    assert (await exps.show(exp_id)).status == "promoted"
    with pytest.raises(InvalidInput, match="already promoted"):
        await exps.promote(exp_id, "gpt-4o-mini", author="ana", reason="again")
    # the rule can be rolled back to the version the monitor records as its baseline
    await svc.rollback_rule(TASK, m["baseline_version"], author="ana", reason="undo")
    assert (await svc.rules(fresh=True))[TASK].rule.primary == BASELINE


# ==================================================================== adapters
def _cli(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args, "--home", str(home)])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_experiment_commands(home: Path, fake: FakeProviders, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "cli.jsonl", 50, responses=True)
    code, out, err = _cli(home, capsys, "experiment", "start", TASK, "--candidates", "gpt-4o-mini", "--from-file",
                          str(path), "--method", "judge", "--set", "judge=claude-sonnet-4-5", "--json")
    assert code == 0, err
    info = json.loads(out)
    exp_id = info["id"]
    assert info["evaluation"]["judge"] == "claude-sonnet-4-5" and info["answers_missing"] == 50
    code, out, err = _cli(home, capsys, "experiment", "run", exp_id, "--concurrency", "5")
    assert code == 0, err
    assert "50 call(s) made (50 ok, 0 failed)" in out and "50/100 answers" in err and "100/100 answers" in err
    assert len(fake.calls) == 50
    code, out, err = _cli(home, capsys, "experiment", "list")
    assert code == 0 and exp_id in out
    code, out, err = _cli(home, capsys, "experiment", "show", exp_id)
    assert code == 0 and "gpt-4o-mini 50/50" in out
    code, out, err = _cli(home, capsys, "experiment", "report", exp_id)
    assert code == 0 and "not evaluated" in out and f"### Experiment {exp_id}" in out
    code, out, err = _cli(home, capsys, "experiment", "promote", exp_id, "gpt-4o-mini", "--author", "a",
                          "--reason", "r")
    assert code == 2 and "gpt-4o-mini is not evaluated" in err
    code, out, err = _cli(home, capsys, "experiment", "start", TASK, "--candidates", "gpt-4o-mini")
    assert code == 2 and "only 0 usable" in err and "Traceback" not in err
    code, out, err = _cli(home, capsys, "experiment", "start", TASK, "--candidates", "x", "--samples", "20")
    assert code == 2 and "must be from 50 to 100" in err


def test_cli_ctrl_c_stops_cleanly_and_resumes(home: Path, fake: FakeProviders, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_jsonl(tmp_path / "cli.jsonl", 50, responses=True)
    code, out, _ = _cli(home, capsys, "experiment", "start", TASK, "--candidates", "gpt-4o-mini", "--from-file",
                        str(path), "--json")
    exp_id = json.loads(out)["id"]
    real_run = ExperimentService.run

    async def ctrl_c_after_ten(self: ExperimentService, experiment_id: str, **kw: Any) -> Any:
        shown = kw["progress"]

        def progress(done: int, total: int, message: str) -> None:
            shown(done, total, message)
            if done == 60:  # asyncio.run's own SIGINT handler cancels the main task, as a real Ctrl-C does
                assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
                signal.raise_signal(signal.SIGINT)

        return await real_run(self, experiment_id, concurrency=1, progress=progress)

    monkeypatch.setattr(ExperimentService, "run", ctrl_c_after_ten)
    code, out, err = _cli(home, capsys, "experiment", "run", exp_id)
    assert code == 130 and "interrupted" in err
    assert f"stopped after 60 answer(s); nothing paid for is lost. Resume with `mcp-prism experiment run {exp_id}`" \
        in err
    assert len(fake.calls) == 10
    monkeypatch.setattr(ExperimentService, "run", real_run)
    code, out, err = _cli(home, capsys, "experiment", "run", exp_id, "--json")
    summary = json.loads(out)
    assert (summary["already_done"], summary["calls_made"], summary["complete"]) == (60, 40, True)
    assert len(fake.calls) == 50 and set(prompts_called(fake).values()) == {1}


async def test_mcp_experiment_tools(home: Path, fake: FakeProviders, tmp_path: Path) -> None:
    server = build_server(Settings.from_env({}, home=home), toolsets="loop")
    path = write_jsonl(tmp_path / "mcp.jsonl", 60, responses=True)
    async with Client(server) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert {"start_experiment", "run_experiment", "experiment_report", "promote_candidate",
                "list_experiments"} <= set(tools)
        assert tools["experiment_report"].annotations.read_only_hint
        assert "ctx" not in tools["run_experiment"].input_schema["properties"]
        r = await c.call_tool("start_experiment", {"task_type": TASK, "candidates": ["gpt-4o-mini"], "samples": 60,
                                                   "method": "judge", "from_file": str(path)})
        assert not r.is_error, r.content
        exp_id = r.structured_content["id"]
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        r = await c.call_tool("run_experiment", {"experiment_id": exp_id, "concurrency": 3},
                              progress_callback=on_progress)
        assert not r.is_error, r.content
        assert r.structured_content["calls_made"] == 60 and r.structured_content["complete"]
        assert progress and progress[-1][:2] == (120, 120)
        listing = await c.call_tool("list_experiments", {})
        assert [e["id"] for e in listing.structured_content["experiments"]] == [exp_id]
        r = await c.call_tool("promote_candidate", {"experiment_id": exp_id, "candidate": "gpt-4o-mini",
                                                    "author": "a", "reason": "r"})
        assert r.is_error and "not evaluated" in r.content[0].text
        # verdicts written by another process (an evaluator), then the report and a promotion
        store = await Store.open(home / "prism.db")
        try:
            await store.transaction(lambda conn: conn.executemany(
                "INSERT INTO evaluations (experiment_id, item, model, method, verdict, created_at) "
                "VALUES (?, ?, 'gpt-4o-mini', 'judge', 'acceptable', ?)",
                [(exp_id, i, iso(utcnow())) for i in range(1, 61)]))
        finally:
            await store.close()
        r = await c.call_tool("experiment_report", {"experiment_id": exp_id})
        assert not r.is_error and r.structured_content["candidates"][0]["verdict"] == "qualified"
        assert "60/60 acceptable" in r.structured_content["markdown"]
        r = await c.call_tool("promote_candidate", {"experiment_id": exp_id, "candidate": "gpt-4o-mini",
                                                    "author": "a", "reason": "r", "monitor_days": 3})
        assert not r.is_error, r.content
        assert (r.structured_content["new_version"], r.structured_content["monitor_id"]) == (1, 1)
        r = await c.call_tool("experiment_report", {"experiment_id": "nope"})
        assert r.is_error and "unknown experiment 'nope'" in r.content[0].text
