"""Markdown tables for results (shown by agents and printed by the CLI). Formatting only."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from mcp_prism.core.report import money

if TYPE_CHECKING:
    from mcp_prism.results import CompareResult, CostReport


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _q(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


def compare_markdown(r: CompareResult) -> str:
    t = r.tokens_per_request
    head = (f"**{r.task_type or 'custom profile'}**: {t['input_tokens']:,} input / {t['output_tokens']:,} output "
            f"tokens per request ({r.profile_source}), {r.monthly_requests:,} requests/month\n\n")
    rows = [[("**" + c.model + "** (current)") if c.current else c.model, c.tier, f"{c.context_window:,}",
             money(c.cost_per_request_usd), money(c.monthly_cost_usd) if r.monthly_requests else "-",
             _q(c.observed_quality), _ms(c.observed_latency_ms), c.observed_requests]
            for c in r.candidates]
    return head + table(["model", "tier", "context", "per request", "per month", "quality", "latency",
                         "observed"], rows)


def report_markdown(r: CostReport) -> str:
    parts = [f"### Cost report {r.since} .. {r.until} ({r.days} day(s) of data)\n"]
    parts.append(
        f"{r.total_requests:,} requests, {money(r.total_cost_usd)} spent"
        + (f", {r.unpriced_requests:,} unpriced" if r.unpriced_requests else "")
        + f". Monthly projection: **{money(r.monthly_projection_usd)}**"
        + (f"; with the routing rules: **{money(r.monthly_after_routing_usd)}** "
           f"(saving {money(r.monthly_saving_usd)}, {_pct(r.monthly_saving_pct)})"
           if r.monthly_after_routing_usd is not None else "")
        + ".\n"
    )
    if r.cache_hits:
        parts.append(f"The response cache answered {r.cache_hits:,} request(s) at $0, saving "
                     f"{money(r.cache_saved_usd)}.\n")
    rows = [[" / ".join(g.key.values()) or "all", f"{g.requests:,}", f"{g.input_tokens + g.output_tokens:,}",
             money(g.cost_usd), _pct(g.share_of_cost_pct), _ms(g.avg_latency_ms), _q(g.avg_quality)]
            for g in r.groups]
    parts.append(table([" / ".join(r.group_by), "requests", "tokens", "cost", "share", "latency", "quality"], rows))
    if r.routing:
        parts.append("\n#### Routing per task type (monthly)\n")
        parts.append(table(
            ["task type", "requests", "now on", "routed to", "before", "after"],
            [[x.task_type, f"{x.requests:,}", ", ".join(x.current_models), x.routed_model,
              money(x.monthly_before_usd), money(x.monthly_after_usd)] for x in r.routing]))
    if r.opportunities:
        parts.append("\n#### Biggest savings opportunities\n")
        parts.append(table(
            ["task type", "from", "to", "saving / month", "evidence"],
            [[o.task_type, o.current_model, o.routed_model, money(o.monthly_saving_usd), o.evidence]
             for o in r.opportunities]))
    return "\n".join(parts)


def decimal_str(value: Decimal | None) -> str:
    return "unpriced" if value is None else format(value.normalize(), "f")
