"""Issue 12.5: an absurd event is refused before it is stored, and one that got in can be voided (by id,
source or project) with an audit entry, out of every report and rollup, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from test_store import T0, event, store  # noqa: F401 - `store` is the two-backend fixture

from mcp_prism.core.pricing import TokenUsage
from mcp_prism.store import voiding

REPO = Path(__file__).resolve().parents[1]


async def sums(s) -> dict[str, tuple[int, int]]:
    out = {}
    for table in ("usage_daily", "usage_daily_user"):
        r = (await s.fetch(f"SELECT SUM(requests) AS n, SUM(cost_pico) AS pico FROM {table}"))[0]
        out[table] = (int(r["n"] or 0), int(r["pico"] or 0))
    r = (await s.fetch("SELECT COUNT(*) AS n, SUM(cost_pico) AS pico FROM usage_events"))[0]
    out["usage_events"] = (int(r["n"] or 0), int(r["pico"] or 0))
    return out


@pytest.mark.anyio
async def test_void_by_id_source_and_project_keeps_rollups_equal_to_events(store) -> None:  # noqa: F811
    keep = [event(ts=T0 + timedelta(minutes=i), project="web", user="ana", quality=0.8, quality_source="human")
            for i in range(3)]
    huge = event(ts=T0, project="web", user="ana", request_id="oops", cost_usd=Decimal("2500000"),
                 tokens=TokenUsage(input_tokens=10_000_000, output_tokens=10))
    demo = [event(ts=T0 - timedelta(days=d), source="demo", project="sample", status="timeout") for d in range(4)]
    await store.insert_events([*keep, huge, *demo])
    before = await sums(store)
    assert before["usage_events"][0] == 8 and before["usage_daily"] == before["usage_events"]

    preview = await voiding.preview(store, "id", "oops")
    assert preview.events == 1 and preview.cost_pico == 2_500_000 * 10**12
    assert await sums(store) == before  # a dry run changes nothing

    out = await voiding.void(store, "id", "oops", actor="ops", reason="a typo")
    assert out.events == 1 and out.ids == [huge.id]
    after = await sums(store)
    assert after["usage_events"] == (7, before["usage_events"][1] - 2_500_000 * 10**12)
    assert after["usage_daily"] == after["usage_events"] == after["usage_daily_user"]

    assert (await voiding.void(store, "source", "demo", actor="ops", reason="sample data")).events == 4
    assert (await voiding.void(store, "project", "web", actor="ops", reason="test")).events == 3
    assert await sums(store) == {t: (0, 0) for t in after}
    assert not await store.fetch("SELECT * FROM usage_daily")  # emptied rollup rows are dropped
    kept = await store.fetch("SELECT id, actor, reason, event FROM voided_events ORDER BY voided_at")
    assert len(kept) == 8 and json.loads(next(r for r in kept if r["id"] == huge.id)["event"])["request_id"] == "oops"
    audit = await store.fetch("SELECT actor, action, target, details FROM audit_log WHERE action = 'void_events' "
                              "ORDER BY id")
    assert [a["target"] for a in audit] == ["events:id=oops", "events:source=demo", "events:project=web"]
    assert json.loads(audit[0]["details"])["reason"] == "a typo"
    assert (await voiding.void(store, "id", "oops", actor="ops", reason="again")).events == 0


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcp_prism", *args, "--home", str(home)], cwd=REPO, text=True,
                          capture_output=True, timeout=120)


def test_record_refuses_unbillable_counts_and_events_void_removes_what_got_in(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = _cli(home, "record", "--model", "claude-sonnet-4-5", "--task-type", "general",
             "--input-tokens", "10000000000000")
    assert r.returncode == 2 and "more than any provider bills" in r.stderr and "Traceback" not in r.stderr
    r = _cli(home, "record", "--model", "claude-sonnet-4-5", "--task-type", "general", "--input-tokens",
             "10000000", "--request-id", "big")  # the largest billable request still records
    assert r.returncode == 0, r.stderr
    r = _cli(home, "record", "--model", "gpt-5", "--task-type", "general", "--input-tokens", "1000")
    assert r.returncode == 0, r.stderr
    report = json.loads(_cli(home, "report", "--json").stdout)
    assert report["total_requests"] == 2 and Decimal(report["total_cost_usd"]) > 30
    r = _cli(home, "events", "void", "--id", "big", "--dry-run")
    assert r.returncode == 0 and "would void 1 event" in r.stdout
    r = _cli(home, "events", "void", "--id", "big")
    assert r.returncode == 2 and "--author" in r.stderr
    r = _cli(home, "events", "void", "--id", "big", "--author", "ops", "--reason", "typo", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["events"] == 1
    report = json.loads(_cli(home, "report", "--json").stdout)
    assert report["total_requests"] == 1 and Decimal(report["total_cost_usd"]) < 1
