"""SQL of learned routers and of the outcome data they (and the team-level target) are trained on.

Functions over either store (SQLite or PostgreSQL): both speak `fetch` / `transaction` with `?`
placeholders, translated for PostgreSQL by the store itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class RouterRow:
    task_type: str
    version: int
    body: dict[str, Any]
    summary: dict[str, Any]
    author: str
    reason: str
    created_at: str


def _row(r: Any) -> RouterRow:
    return RouterRow(r["task_type"], int(r["version"]), json.loads(r["body"]), json.loads(r["summary"]),
                     r["author"], r["reason"], r["created_at"])


async def add_router_version(store: Any, task_type: str, body: dict[str, Any], summary: dict[str, Any], *,
                             author: str, reason: str) -> RouterRow:
    """Store the next version of a task type's router and its audit entry, in one transaction."""

    async def work(conn: Any) -> RouterRow:
        rows = await conn.execute_fetchall(
            "SELECT COALESCE(MAX(version), 0) FROM learned_routers WHERE task_type = ?", (task_type,))
        version = int(next(iter(rows))[0]) + 1
        now = iso(utcnow())
        await conn.execute(
            "INSERT INTO learned_routers (task_type, version, body, summary, author, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (task_type, version, json.dumps(body, sort_keys=True), json.dumps(summary, sort_keys=True, default=str),
             author, reason, now))
        await conn.execute("INSERT INTO audit_log (ts, actor, action, target, details) VALUES (?, ?, ?, ?, ?)",
                           (now, author, "router.train", f"router:{task_type}",
                            json.dumps({"version": version, "reason": reason}, sort_keys=True)))
        return RouterRow(task_type, version, body, summary, author, reason, now)

    return await store.transaction(work)


async def get_router(store: Any, task_type: str, version: int) -> RouterRow:
    rows = await store.fetch("SELECT * FROM learned_routers WHERE task_type = ? AND version = ?", (task_type, version))
    if not rows:
        raise InvalidInput(f"no router v{version} for task type {task_type}; `mcp-prism router list {task_type}` "
                           "shows the versions, `mcp-prism router train` makes one")
    return _row(rows[0])


async def list_routers(store: Any, task_type: str | None = None) -> list[RouterRow]:
    sql, params = "SELECT * FROM learned_routers", []
    if task_type:
        sql += " WHERE task_type = ?"
        params.append(task_type)
    return [_row(r) for r in await store.fetch(sql + " ORDER BY task_type, version", params)]


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """One experiment item: its prompt and every model's score and cost there."""

    experiment_id: str
    item: int
    prompt: str
    baseline: str
    scores: dict[str, float]
    costs: dict[str, str | None]


async def experiment_outcomes(store: Any, task_type: str | None = None) -> dict[str, list[OutcomeRow]]:
    """Per task type, the items of every experiment that was not abandoned, with each model's score: the
    stored score, else (a verdict without a score) 1 for an acceptable candidate answer and for the
    baseline, 0 for an unacceptable one. Items lacking a model's outcome leave that model out."""
    sql = "SELECT id, task_type, baseline_model FROM experiments WHERE status != 'abandoned'"
    params: list[Any] = []
    if task_type:
        sql += " AND task_type = ?"
        params.append(task_type)
    exps = await store.fetch(sql + " ORDER BY created_at, id", params)
    out: dict[str, list[OutcomeRow]] = {}
    for e in exps:
        eid, baseline = e["id"], e["baseline_model"]
        prompts = {r["item"]: r["prompt"] for r in await store.fetch(
            "SELECT item, prompt FROM experiment_items WHERE experiment_id = ? ORDER BY item", (eid,))}
        scores: dict[int, dict[str, float]] = {}
        costs: dict[int, dict[str, str | None]] = {}
        for r in await store.fetch("SELECT item, model, score, cost_usd, status FROM experiment_outputs "
                                   "WHERE experiment_id = ?", (eid,)):
            if r["status"] != "ok":
                continue
            costs.setdefault(r["item"], {})[r["model"]] = r["cost_usd"]
            if r["score"] is not None:
                scores.setdefault(r["item"], {})[r["model"]] = float(r["score"])
        for r in await store.fetch("SELECT item, model, verdict FROM evaluations WHERE experiment_id = ? "
                                   "AND verdict IN ('acceptable', 'unacceptable', 'degraded')", (eid,)):
            got = scores.setdefault(r["item"], {})
            if r["model"] not in got:
                got[r["model"]] = 1.0 if r["verdict"] == "acceptable" else 0.0
                got.setdefault(baseline, 1.0)
        rows = out.setdefault(e["task_type"], [])
        for item, prompt in prompts.items():
            have = {m: s for m, s in scores.get(item, {}).items() if m in costs.get(item, {})}
            if baseline in have and len(have) > 1:
                rows.append(OutcomeRow(eid, item, prompt, baseline, have, costs[item]))
    return {t: rows for t, rows in out.items() if rows}


async def insert_monitor(store: Any, *, task_type: str, rule_version: int, baseline_version: int | None,
                         started_at: str, ends_at: str, threshold: float, auto_rollback: bool,
                         details: dict[str, Any], experiment_id: str | None = None) -> int:
    """Watch a new rule version like a promotion does (loop/monitoring.py checks it)."""

    async def work(conn: Any) -> int:
        cur = await conn.execute(
            "INSERT INTO monitors (task_type, rule_version, baseline_version, experiment_id, started_at, ends_at, "
            "threshold, auto_rollback, status, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'watching', ?)",
            (task_type, rule_version, baseline_version, experiment_id, started_at, ends_at, threshold,
             int(auto_rollback), json.dumps(details, sort_keys=True, default=str)))
        return int(cur.lastrowid or 0)

    return await store.transaction(work)
