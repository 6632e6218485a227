"""What both store backends read the same way: the rollup layout, rule rows, and the read queries, written
once in portable SQL with `?` placeholders (PgStore.fetch translates them). The backends differ only in
how they write (transactions, upserts, bulk inserts) and connect."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Self

from mcp_prism.core.pricing import to_picodollars
from mcp_prism.errors import InvalidInput

GROUP_COLUMNS = ("task_type", "model", "provider", "team", "user", "project", "day")

ROLLUP_SUMS = ("requests", "errors", "unpriced", "input_tokens", "cached_input_tokens", "cache_write_tokens",
               "output_tokens", "reasoning_tokens", "cost_pico", "latency_ms_sum", "quality_sum", "quality_n",
               "cache_write_1h_tokens", "cache_hits", "saved_pico")
# The same sums computed from raw events, for groupings no rollup holds (CASE: PostgreSQL has no SUM(bool)).
RAW_SUMS = {
    "requests": "COUNT(*)", "errors": "SUM(CASE WHEN status != 'ok' THEN 1 ELSE 0 END)",
    "unpriced": "SUM(CASE WHEN cost_pico IS NULL THEN 1 ELSE 0 END)",
    "input_tokens": "SUM(input_tokens)", "cached_input_tokens": "SUM(cached_input_tokens)",
    "cache_write_tokens": "SUM(cache_write_tokens)", "output_tokens": "SUM(output_tokens)",
    "reasoning_tokens": "SUM(reasoning_tokens)", "cost_pico": "SUM(cost_pico)",
    "latency_ms_sum": "SUM(latency_ms)", "quality_sum": "SUM(quality)", "quality_n": "COUNT(quality)",
    "cache_write_1h_tokens": "SUM(cache_write_1h_tokens)", "cache_hits": "SUM(cache_hit)",
    "saved_pico": "SUM(CASE WHEN cache_hit = 1 THEN CAST(ROUND(CAST(COALESCE(saved_usd, '0') AS DOUBLE PRECISION)"
                  " * 1e12) AS BIGINT) ELSE 0 END)",
}
ROLLUPS: dict[str, tuple[str, ...]] = {
    "usage_daily": ("day", "task_type", "model", "provider", "team", "project"),
    "usage_daily_user": ("day", "user", "team", "project"),
}


def event_sums(e: Any, pico: int | None) -> tuple[Any, ...]:
    """What one UsageEvent adds to each rollup row, in ROLLUP_SUMS' order."""
    t = e.tokens
    return (1, int(e.status != "ok"), int(pico is None), t.input_tokens, t.cached_input_tokens,
            t.cache_write_tokens, t.output_tokens, t.reasoning_tokens, pico or 0, e.latency_ms,
            e.quality or 0.0, int(e.quality is not None), t.cache_write_1h_tokens, int(e.cache_hit),
            to_picodollars(e.saved_usd) if e.cache_hit and e.saved_usd is not None else 0)


def row_sums(e: Any) -> tuple[Any, ...]:
    """The same for a stored usage_events row (voiding takes back exactly what the insert added)."""
    pico, quality = e["cost_pico"], e["quality"]
    saved = e["saved_usd"]
    return (1, int(e["status"] != "ok"), int(pico is None), e["input_tokens"], e["cached_input_tokens"],
            e["cache_write_tokens"], e["output_tokens"], e["reasoning_tokens"], pico or 0, e["latency_ms"],
            quality or 0.0, int(quality is not None), e["cache_write_1h_tokens"], int(e["cache_hit"]),
            to_picodollars(Decimal(saved)) if e["cache_hit"] and saved is not None else 0)


def quoted(col: str) -> str:
    """`user` is reserved in PostgreSQL; double quotes are standard SQL, so SQLite reads them too."""
    return f'"{col}"' if col == "user" else col


@dataclass(frozen=True, slots=True)
class RuleRow:
    task_type: str
    version: int
    body: dict[str, Any]
    author: str
    reason: str
    evidence: str | None
    created_at: str


def rule_row(r: Any) -> RuleRow:
    return RuleRow(r["task_type"], r["version"], json.loads(r["body"]), r["author"], r["reason"],
                   r["evidence"], r["created_at"])


class StoreReads:
    """Read queries over `fetch`, and `async with`; mixed into Store (SQLite) and PgStore (PostgreSQL)."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def find_event(self, ref: str) -> Any | None:
        rows = await self.fetch(
            "SELECT e.*, p.body AS price_snapshot FROM usage_events e "
            "LEFT JOIN price_snapshots p ON p.id = e.price_snapshot_id WHERE e.id = ? OR e.request_id = ?",
            (ref, ref),
        )
        return rows[0] if rows else None

    async def rollup(self, since_day: str, until_day: str, group_by: Sequence[str],
                     filters: dict[str, str] | None = None) -> list[Any]:
        """Sums over [since_day, until_day) grouped by `group_by` (columns of GROUP_COLUMNS).

        Reads the smallest rollup that has every column asked for; raw events otherwise."""
        filters = filters or {}
        bad = [c for c in (*group_by, *filters) if c not in GROUP_COLUMNS]
        if bad:
            raise InvalidInput(f"cannot group or filter by {bad}; choose from {list(GROUP_COLUMNS)}")
        needed = {*group_by, *filters}
        table = next((t for t, keys in ROLLUPS.items() if needed <= set(keys)), None)
        params: list[Any] = [since_day, until_day, *filters.values()]
        if table is not None:
            day_col, sums = "day", [f"SUM({c}) AS {c}" for c in ROLLUP_SUMS]
            exprs = [quoted(c) for c in group_by]
            cols = list(exprs)
            where = ["day >= ?", "day < ?", *(f"{quoted(c)} = ?" for c in filters)]
        else:  # raw events: `day` is derived, absent values are NULL rather than ''
            table, day_col = "usage_events", "substr(ts, 1, 10)"
            sums = [f"{expr} AS {c}" for c, expr in RAW_SUMS.items()]
            exprs = [day_col if c == "day" else f"COALESCE({quoted(c)}, '')" for c in group_by]
            cols = [f"{e} AS {quoted(c)}" for e, c in zip(exprs, group_by, strict=True)]
            where = ["ts >= ?", "ts < ?", *(f"COALESCE({quoted(c)}, '') = ?" for c in filters)]
        select = ", ".join([*cols, *sums, f"MIN({day_col}) AS first_day"])
        sql = f"SELECT {select} FROM {table} WHERE {' AND '.join(where)}"
        if group_by:  # group by the expressions: a bare name would mean the raw column, not the alias
            sql += " GROUP BY " + ", ".join(exprs)
        return await self.fetch(sql, params)

    async def count_events(self) -> int:
        rows = await self.fetch("SELECT COUNT(*) FROM usage_events")
        return int(rows[0][0])

    async def latest_rules(self) -> dict[str, RuleRow]:
        rows = await self.fetch(
            "SELECT r.* FROM routing_rules r JOIN (SELECT task_type, MAX(version) AS v FROM routing_rules "
            "GROUP BY task_type) m ON m.task_type = r.task_type AND m.v = r.version"
        )
        return {r["task_type"]: rule_row(r) for r in rows}

    async def rule_history(self, task_type: str) -> list[RuleRow]:
        rows = await self.fetch("SELECT * FROM routing_rules WHERE task_type = ? ORDER BY version", (task_type,))
        return [rule_row(r) for r in rows]

    async def audit_log(self, limit: int = 100, target: str | None = None) -> list[Any]:
        if target:
            return await self.fetch("SELECT * FROM audit_log WHERE target = ? ORDER BY id DESC LIMIT ?",
                                    (target, limit))
        return await self.fetch("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
