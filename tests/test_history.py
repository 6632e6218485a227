"""`import-history` behaviour on logs shaped exactly as the agents write them (field for field as Claude Code
2.1, OpenCode 1.18 and Codex CLI 0.169 wrote them in tests/test_history_e2e.py): streaming repeats, synthetic
errors, lines still being written, replaced files, filters, unknown models, other layouts, capture, several
machines into one PostgreSQL store, and the reports that read the result."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from test_store import PG_URL, drop_pg_schema, fresh_pg_schema, pg_unreachable

from mcp_prism.cli import main as cli_main
from mcp_prism.config import Settings
from mcp_prism.errors import InvalidInput
from mcp_prism.history.service import HistoryImporter
from mcp_prism.service import PrismService

DAY = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-5-20250929"


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def user_line(text: str, ts: datetime, session: str = "s1", cwd: str = "/work/invoices", **extra: Any) -> dict:
    return {"parentUuid": None, "isSidechain": False, "type": "user", "message": {"role": "user", "content": text},
            "uuid": f"u-{ts.timestamp()}", "timestamp": _iso(ts), "cwd": cwd, "sessionId": session,
            "version": "2.1.197", **extra}


def assistant_line(n: int, ts: datetime, *, model: str = SONNET, block: str = "text", session: str = "s1",
                   cwd: str = "/work/invoices", usage: dict | None = None, sidechain: bool = False) -> dict:
    u = usage or {"input_tokens": 100 + n, "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 20000,
                  "output_tokens": 50 + n, "service_tier": "standard",
                  "cache_creation": {"ephemeral_1h_input_tokens": 2000, "ephemeral_5m_input_tokens": 1000}}
    return {"parentUuid": "x", "isSidechain": sidechain, "type": "assistant", "requestId": f"req_{n:04d}",
            "message": {"id": f"msg_{n:04d}", "type": "message", "role": "assistant", "model": model,
                        "content": [{"type": block}], "stop_reason": "end_turn", "usage": u},
            "uuid": f"a-{n}-{block}", "timestamp": _iso(ts), "cwd": cwd, "sessionId": session, "version": "2.1.197"}


def write_jsonl(path: Path, entries: list[dict], mode: str = "w") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode) as f:
        for e in entries:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")


@pytest.fixture
async def svc(tmp_path: Path) -> Any:
    s = await PrismService.open(Settings.from_env({}, home=tmp_path / "prism"))
    try:
        yield s
    finally:
        await s.close()


async def run(svc: PrismService, path: Path, agent: str = "claude-code", **kw: Any) -> Any:
    return await HistoryImporter(svc, machine="m1", user="ana").run(agent, path=str(path), **kw)


async def rows(svc: PrismService) -> list[Any]:
    return await svc.store.fetch("SELECT * FROM usage_events ORDER BY request_id")


# ------------------------------------------------------------------ Claude Code
@pytest.mark.anyio
async def test_streamed_repeats_count_once_and_synthetic_errors_not_at_all(svc: PrismService, tmp_path: Path) -> None:
    logs = tmp_path / "claude"
    write_jsonl(logs / "projects/-work-invoices/s1.jsonl", [
        user_line("<system-reminder>skills...</system-reminder>write unit tests for the invoice parser", DAY),
        *(assistant_line(1, DAY + timedelta(seconds=2), block=b) for b in ("thinking", "text", "tool_use")),
        {**assistant_line(2, DAY, model="<synthetic>", usage={"input_tokens": 0, "output_tokens": 0}),
         "isApiErrorMessage": True},
        user_line("[Request interrupted by user]", DAY + timedelta(seconds=5), isMeta=True),
        assistant_line(3, DAY + timedelta(seconds=9), block="text"),
    ])
    r = await run(svc, logs)
    (cc,) = r.agents
    assert (cc.requests, cc.stored, cc.unpriced) == (2, 2, 0)
    events = await rows(svc)
    assert [e["request_id"] for e in events] == ["claude-code:msg_0001:req_0001", "claude-code:msg_0003:req_0003"]
    e = events[0]
    assert (e["model"], e["input_tokens"], e["cached_input_tokens"], e["cache_write_tokens"],
            e["cache_write_1h_tokens"], e["output_tokens"]) == ("claude-sonnet-4-5", 23101, 20000, 3000, 2000, 51)
    # sonnet 4.5: 101 x $3 + 20000 x $0.30 + 1000 x $3.75 + 2000 x $6 + 51 x $15, per million
    assert Decimal(e["cost_usd"]) == Decimal("0.022818")
    assert e["task_type"] == "test_generation" == events[1]["task_type"]  # the turn's words carry over
    assert (e["project"], e["session_id"], e["agent"], e["machine"], e["user"]) == (
        "invoices", "s1", "claude-code", "m1", "ana")


@pytest.mark.anyio
async def test_a_line_still_being_written_is_read_next_time_and_only_new_bytes_are_read(
        svc: PrismService, tmp_path: Path) -> None:
    log = tmp_path / "claude/projects/-work-invoices/s1.jsonl"
    write_jsonl(log, [user_line("review the retry logic", DAY), assistant_line(1, DAY)])
    half = json.dumps(assistant_line(2, DAY + timedelta(minutes=1)), separators=(",", ":"))
    with log.open("a") as f:
        f.write(half[:40])
    assert (await run(svc, tmp_path / "claude")).agents[0].stored == 1
    with log.open("a") as f:
        f.write(half[40:] + "\n")
    second = (await run(svc, tmp_path / "claude")).agents[0]
    assert (second.files_read, second.requests, second.stored) == (1, 1, 1)
    third = (await run(svc, tmp_path / "claude")).agents[0]
    assert (third.files_read, third.requests, third.stored) == (0, 0, 0)
    # the resumed read still knows the turn's words
    events = await rows(svc)
    assert [e["task_type"] for e in events] == ["code_review", "code_review"]


@pytest.mark.anyio
async def test_a_replaced_log_is_read_from_the_start_and_nothing_is_stored_twice(
        svc: PrismService, tmp_path: Path) -> None:
    log = tmp_path / "claude/projects/p/s1.jsonl"
    write_jsonl(log, [user_line("document the API", DAY), assistant_line(1, DAY), assistant_line(2, DAY)])
    await run(svc, tmp_path / "claude")
    write_jsonl(log, [{"type": "summary", "summary": "x"}, assistant_line(1, DAY), assistant_line(2, DAY),
                      assistant_line(3, DAY)])
    again = (await run(svc, tmp_path / "claude")).agents[0]
    assert (again.requests, again.stored, again.duplicates) == (3, 1, 2)
    assert len(await rows(svc)) == 3


@pytest.mark.anyio
async def test_since_and_project_narrow_the_import_without_moving_its_state(svc: PrismService, tmp_path: Path) -> None:
    logs = tmp_path / "claude"
    write_jsonl(logs / "projects/a/s1.jsonl", [assistant_line(1, DAY - timedelta(days=3)), assistant_line(2, DAY)])
    write_jsonl(logs / "projects/b/s2.jsonl", [assistant_line(3, DAY, session="s2", cwd="/work/billing")])
    r = await run(svc, logs, since="2026-11-19", project="invoices")
    assert (r.agents[0].stored, r.state_saved) == (1, False)
    assert [e["request_id"] for e in await rows(svc)] == ["claude-code:msg_0002:req_0002"]
    full = (await run(svc, logs)).agents[0]
    assert (full.requests, full.stored) == (3, 2)
    with pytest.raises(InvalidInput, match="--since must be a date"):
        await run(svc, logs, since="last week")


@pytest.mark.anyio
async def test_an_unknown_model_imports_unpriced_and_is_warned_about_once(svc: PrismService, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "claude/projects/p/s.jsonl", [
        assistant_line(1, DAY, model="claude-zeta-9"), assistant_line(2, DAY, model="claude-zeta-9"),
        assistant_line(3, DAY, model="claude-opus-4-8"),  # not in the catalog, priced by genai-prices
    ])
    r = await run(svc, tmp_path / "claude")
    assert (r.agents[0].stored, r.agents[0].unpriced) == (3, 2)
    assert len(r.warnings) == 1 and "claude-zeta-9" in r.warnings[0] and "config.toml" in r.warnings[0]
    events = {e["model"]: e for e in await rows(svc)}
    assert events["claude-zeta-9"]["cost_usd"] is None and events["claude-zeta-9"]["input_tokens"] == 23102
    assert events["claude-opus-4-8"]["cost_usd"] is not None


@pytest.mark.anyio
async def test_prompts_are_stored_only_for_task_types_that_capture(tmp_path: Path) -> None:
    home = tmp_path / "prism"
    home.mkdir()
    (home / "config.toml").write_text("[task_types.test_generation]\ncapture_samples = true\n")
    write_jsonl(tmp_path / "claude/projects/p/s.jsonl", [
        user_line("write unit tests for the invoice parser", DAY), assistant_line(1, DAY),
        user_line("review the retry logic for races", DAY + timedelta(minutes=1)),
        assistant_line(2, DAY + timedelta(minutes=1))])
    s = await PrismService.open(Settings.from_env({}, home=home))
    try:
        await run(s, tmp_path / "claude")
        samples = await s.store.fetch("SELECT e.task_type, s.prompt FROM samples s JOIN usage_events e "
                                      "ON e.id = s.event_id")
    finally:
        await s.close()
    assert [tuple(r) for r in samples] == [("test_generation", "write unit tests for the invoice parser")]


@pytest.mark.anyio
async def test_bad_arguments_say_what_to_do(svc: PrismService, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        await run(svc, tmp_path / "nowhere")
    with pytest.raises(InvalidInput, match="--path needs the agent"):
        await HistoryImporter(svc).run("all", path=str(tmp_path))


# ------------------------------------------------------------------ OpenCode and Codex layouts
@pytest.mark.anyio
async def test_opencode_older_layouts_fail_clearly(svc: PrismService, tmp_path: Path) -> None:
    old = tmp_path / "old"
    (old / "storage/message/ses_1").mkdir(parents=True)
    with pytest.raises(InvalidInput, match="older JSON storage"):
        await run(svc, old, "opencode")
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "opencode.db") as db:
        db.execute("CREATE TABLE session (id TEXT)")
    with pytest.raises(InvalidInput, match=r"not the layout OpenCode 1\.18 writes"):
        await run(svc, other, "opencode")
    assert await rows(svc) == []


@pytest.mark.anyio
async def test_codex_logs_with_only_token_count_events_count_each_response_once(
        svc: PrismService, tmp_path: Path) -> None:
    log = tmp_path / "codex/sessions/2026/11/20/rollout-2026-11-20T09-00-00-abc.jsonl"

    def count(total: int, last: int) -> dict:
        usage = {"input_tokens": last, "cached_input_tokens": last // 2, "output_tokens": 10,
                 "reasoning_output_tokens": 4, "total_tokens": last + 10}
        return {"timestamp": _iso(DAY), "type": "event_msg", "payload": {"type": "token_count", "info": {
            "total_token_usage": {**usage, "total_tokens": total}, "last_token_usage": usage}}}

    write_jsonl(log, [
        {"timestamp": _iso(DAY), "type": "session_meta", "payload": {"id": "abc", "cwd": "/work/svc"}},
        {"timestamp": _iso(DAY), "type": "turn_context",
         "payload": {"model": "gpt-5.1-codex-mini", "cwd": "/work/svc"}},
        {"timestamp": _iso(DAY), "type": "response_item", "payload": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "<environment_context>x</environment_context>"}]}},
        {"timestamp": _iso(DAY), "type": "response_item", "payload": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "write unit tests for the retry helper"}]}},
        count(1010, 1000), count(1010, 1000), count(3020, 2000)])
    r = (await run(svc, tmp_path / "codex", "codex")).agents[0]
    assert (r.requests, r.stored) == (2, 2)
    events = await rows(svc)
    assert sorted(e["input_tokens"] for e in events) == [1000, 2000]
    assert {(e["project"], e["task_type"], e["reasoning_tokens"]) for e in events} == {("svc", "test_generation", 4)}


# ------------------------------------------------------------------ several machines, one PostgreSQL store
@pytest.mark.anyio
async def test_several_machines_into_postgres_aggregate_labelled_and_count_nothing_twice(tmp_path: Path) -> None:
    reason = await pg_unreachable()
    if reason:
        pytest.skip(reason)
    schema = fresh_pg_schema()
    url = f"{PG_URL}?schema={schema}"
    # ana's laptop has sessions 1 and 2; her desktop a synced copy of session 2 and a new session 3; bo has 4
    lines = {n: [user_line("review the retry logic", DAY, session=f"s{n}"),
                 *(assistant_line(n * 10 + i, DAY + timedelta(minutes=i), session=f"s{n}") for i in range(3))]
             for n in (1, 2, 3, 4)}
    for machine, sessions in (("laptop", (1, 2)), ("desktop", (2, 3)), ("bo-mac", (4,))):
        for n in sessions:
            write_jsonl(tmp_path / machine / f"projects/p/s{n}.jsonl", lines[n])
    try:
        services = [await PrismService.open(Settings.from_env({"PRISM_DATABASE_URL": url}, home=tmp_path / m))
                    for m in ("laptop", "desktop", "bo-mac")]
        try:
            results = await asyncio.gather(*(
                HistoryImporter(s, machine=m, user=u).run("claude-code", path=str(tmp_path / m))
                for s, m, u in zip(services, ("laptop", "desktop", "bo-mac"), ("ana", "ana", "bo"), strict=True)))
            assert sum(r.agents[0].requests for r in results) == 15
            assert sum(r.agents[0].stored for r in results) == 12  # session 2 once
            by = await services[0].store.fetch(
                "SELECT machine, \"user\", COUNT(*) AS n FROM usage_events GROUP BY machine, \"user\"")
            counts = {(r["machine"], r["user"]): r["n"] for r in by}
            assert counts[("bo-mac", "bo")] == 3
            assert counts.get(("laptop", "ana"), 0) + counts.get(("desktop", "ana"), 0) == 9
            rolled = await services[0].store.rollup("2026-11-20", "2026-11-21", ["user"])
            assert {r["user"]: r["requests"] for r in rolled} == {"ana": 9, "bo": 3}
            again = await HistoryImporter(services[1], machine="desktop", user="ana").run(
                "claude-code", path=str(tmp_path / "desktop"))
            assert (again.agents[0].files_read, again.agents[0].stored) == (0, 0)
            assert await services[0].store.count_events() == 12
        finally:
            for s in services:
                await s.close()
    finally:
        await drop_pg_schema(schema)


# ------------------------------------------------------------------ the reports read imported history unchanged
def test_analyze_report_compare_and_review_due_work_on_imported_history(tmp_path: Path, capsys: Any) -> None:
    logs = tmp_path / "claude/projects/-work-invoices"
    now = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(days=1)
    prompts = ["write unit tests for the invoice parser", "review the retry logic for races",
               "document the public API of the billing module", "why does the nightly job crash with KeyError"]
    n = 0
    for day in range(10):
        entries: list[dict] = []
        for i, text in enumerate(prompts):
            ts = now - timedelta(days=day, minutes=i * 5)
            entries.append(user_line(text, ts, session=f"d{day}"))
            for _ in range(3):
                n += 1
                entries.append(assistant_line(n, ts + timedelta(seconds=n % 50), session=f"d{day}",
                                              model="claude-opus-4-5-20251101" if i % 2 else SONNET))
        write_jsonl(logs / f"d{day}.jsonl", entries)
    home = str(tmp_path / "prism")
    assert cli_main(["import-history", "claude-code", "--path", str(tmp_path / "claude"), "--home", home]) == 0
    assert "| claude-code | 10 (10) | 120 | 120 |" in capsys.readouterr().out
    for args in (["report", "--days", "30"], ["analyze"], ["compare", "--task-type", "code_review"], ["review-due"]):
        assert cli_main([*args, "--home", home, "--json"]) == 0, args
        out = json.loads(capsys.readouterr().out)
        assert out, args
    assert cli_main(["report", "--days", "30", "--home", home]) == 0
    report = capsys.readouterr().out
    assert "test_generation" in report and "claude-opus-4-5" in report


@pytest.mark.anyio
async def test_a_log_that_vanished_is_skipped_with_a_warning(svc: PrismService, tmp_path: Path) -> None:
    logs = tmp_path / "claude/projects/p"
    write_jsonl(logs / "s1.jsonl", [assistant_line(1, DAY)])
    (logs / "gone.jsonl").symlink_to(logs / "deleted-meanwhile.jsonl")  # listed, then not there to read
    r = await run(svc, tmp_path / "claude")
    assert (r.agents[0].files, r.agents[0].stored) == (2, 1)
    assert len(r.warnings) == 1 and "gone.jsonl" in r.warnings[0] and "skipped this time" in r.warnings[0]
