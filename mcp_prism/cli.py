"""The CLI adapter (`mcp-prism`): parse arguments, call `PrismService`, print the result.

It only translates: every decision and every number comes from the service. `--json` prints the
result model as JSON (`model_dump(mode="json")`); otherwise aligned markdown tables for people.
Errors: a `PrismError` prints `error: <message>` and exits with its code (2 for bad input);
argparse errors exit 2 with the usage; anything else is a bug, logged to a file, never a traceback
on the terminal (unless PRISM_DEBUG=1).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mcp_prism import __version__, render
from mcp_prism.config import Settings
from mcp_prism.core.report import money
from mcp_prism.core.usage import QUALITY_SOURCES, SOURCES, STATUSES
from mcp_prism.errors import InvalidInput, PrismError
from mcp_prism.limits import clip_message, harden_parser
from mcp_prism.results import CostReport, RouteResult, RuleChange, RuleHistory, RuleView
from mcp_prism.service import PrismService, UsageInput

log = logging.getLogger("mcp_prism.cli")

PROG = "mcp-prism"
CRASH_LOG = "cli-errors.log"

Handler = Callable[[PrismService, argparse.Namespace], Awaitable[Any]]
# Each holds `register_commands(add, sub)`, adding subcommands whose handler is a `Handler` returning
# (result, markdown text): the commands of one area of the optimisation loop, and install/uninstall.
LOOP_CLI_MODULES = ("mcp_prism.cli_experiments", "mcp_prism.cli_evaluate", "mcp_prism.cli_analysis",
                    "mcp_prism.cli_data", "mcp_prism.install", "mcp_prism.install_sync", "mcp_prism.cli_team",
                    "mcp_prism.cli_batch", "mcp_prism.cli_history", "mcp_prism.cli_config", "mcp_prism.cli_events",
                    "mcp_prism.cli_router", "mcp_prism.cli_ui")


# ==================================================================== output helpers
def _out(text: str = "") -> None:
    print(text)


def _json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    print(json.dumps(data, indent=2, ensure_ascii=False))


_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_NUMERIC = re.compile(r"^(?:-|unpriced|[-+]?\$?-?[\d,]*\.?\d+(?:%| ms)?)$")


def aligned(text: str) -> str:
    """Pad every markdown table in `text` so that its columns line up in a terminal (still markdown);
    numeric columns are right-aligned."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.extend(_align_block(lines[i:j]))
            i = j
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


def _align_block(block: list[str]) -> list[str]:
    rows = [[c.strip() for c in _CELL_SPLIT.split(line.strip())[1:-1]] for line in block]
    if len(rows) < 2 or not rows[1] or not all(c and set(c) <= {"-", ":"} for c in rows[1]):
        return block
    header, body = rows[0], rows[2:]
    n = len(header)
    if len(rows[1]) != n or any(len(r) != n for r in body):
        return block
    widths = [max(3, *(len(r[k]) for r in (header, *body))) for k in range(n)]
    right = [bool(body) and all(_NUMERIC.match(r[k]) for r in body) and any(r[k] != "-" for r in body)
             for k in range(n)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right,
                                                                                     strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if r else "-" * (w + 2) for w, r in zip(widths, right,
                                                                                        strict=True)) + "|"
    return [line(header), sep, *(line(r) for r in body)]


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return aligned(render.table(headers, rows))


def _per_mtok(value: Decimal | None) -> str:
    return "-" if value is None else "$" + render.decimal_str(value)


def _csv(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


# ==================================================================== human renderers
def show_route(r: RouteResult) -> str:
    how = (f"classified from the description, confidence {r.confidence:.2f}" if r.classified
           else "task type given")
    t = r.typical_tokens
    lines = [
        f"{r.model}  ({r.tier} tier, {r.provider})",
        f"task type: {r.task_type} ({how})",
        f"typical request: {t['input_tokens']:,} input / {t['output_tokens']:,} output tokens "
        f"({r.profile_source} profile), about {money(r.estimated_cost_usd)} on {r.model}",
        f"rule: {r.rule_id} v{r.rule_version}" + (" (shipped default)" if r.rule_version == 0 else ""),
        "why:",
        *(f"  - {reason}" for reason in r.reasons),
    ]
    if r.uncertain:
        lines.insert(2, f"uncertain: the classifier is not sure of {r.task_type}"
                        + (f"; runner-up {r.runner_up}" if r.runner_up else "")
                        + ". Pass --task-type if you know it.")
    if r.signals:
        lines += ["signals:", *(f"  - {s}" for s in r.signals)]
    if r.alternatives:
        lines += ["", "alternatives:",
                  _table(["model", "tier", "typical request"],
                         [[a.model, a.tier, money(a.estimated_cost_usd)] for a in r.alternatives])]
    return "\n".join(lines)


def _rule_summary(rule: dict[str, Any]) -> tuple[str, str, str]:
    ups = ", ".join(f"boost>={u['min_boost']}: {u['model']}" for u in rule.get("complexity_upgrades", []))
    return str(rule.get("primary", "")), ", ".join(rule.get("fallbacks", [])) or "-", ups or "-"


def show_rules(views: Sequence[RuleView]) -> str:
    rows = []
    for v in views:
        primary, fallbacks, ups = _rule_summary(v.rule)
        rows.append([v.task_type, v.version, primary, fallbacks, ups, v.author])
    return _table(["task type", "version", "primary", "fallbacks", "complexity upgrades", "author"], rows) + \
        "\n\nversion 0 = the shipped default. Change one: mcp-prism rules set rule.json --author A --reason R"


def show_rule(v: RuleView) -> str:
    head = f"rule {v.task_type} v{v.version}" + (" (shipped default)" if v.version == 0 else "")
    meta = [f"author: {v.author}", f"reason: {v.reason}"]
    if v.evidence:
        meta.append(f"evidence: {v.evidence}")
    if v.created_at:
        meta.append(f"created: {v.created_at}")
    return "\n".join([head, *meta, json.dumps(v.rule, indent=2)])


def show_change(c: RuleChange) -> str:
    before, after = c.previous_rule.get("primary"), c.rule.get("primary")
    if c.dry_run:
        head = f"DRY RUN, nothing saved: rule {c.task_type} would go from v{c.previous_version} to a new version"
    else:
        head = f"rule {c.task_type}: v{c.previous_version} -> v{c.new_version} (saved)"
    lines = [head, f"primary: {before} -> {after}"]
    if c.requests_last_30_days:
        line = (f"last 30 days: {c.requests_last_30_days:,} requests cost {money(c.cost_last_30_days_usd)}; "
                f"on the new rule: {money(c.projected_cost_last_30_days_usd)}")
        if c.projected_monthly_change_usd is not None:
            change = c.projected_monthly_change_usd
            line += f" ({'+' if change >= 0 else '-'}{money(abs(change))})"
        lines.append(line)
    lines += [f"note: {n}" for n in c.notes]
    return "\n".join(lines)


def show_history(h: RuleHistory) -> str:
    rows = []
    for v in h.versions:
        primary, fallbacks, _ = _rule_summary(v.rule)
        rows.append([v.version, primary, fallbacks, v.author, v.reason, v.evidence or "-", v.created_at or "-"])
    return f"rule {h.task_type}: {len(h.versions)} version(s), the last one is in force\n\n" + _table(
        ["version", "primary", "fallbacks", "author", "reason", "evidence", "created"], rows)


# ==================================================================== commands
async def cmd_route(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await svc.route_task(a.description, a.task_type, context_tokens=a.context_tokens)
    return r, show_route(r)


def _filters(a: argparse.Namespace) -> dict[str, str]:
    return {k: v for k, v in (("team", a.team), ("user", a.user), ("project", a.project),
                              ("task_type", a.task_type), ("model", a.model)) if v}


async def cmd_report(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await svc.cost_report(days=a.days, since=a.since, until=a.until, group_by=_csv(a.by) or ["task_type"],
                              filters=_filters(a), top=a.top)
    if getattr(a, "html", None):  # the dashboard's Costs page as one self-contained file
        from mcp_prism.ui.export import export_costs

        where = await export_costs(svc, r, a.html, days=a.days, since=a.since, until=a.until, filters=_filters(a))
        return r, aligned(r.markdown) + f"\n\nHTML report written to {where}"
    return r, aligned(r.markdown)


async def cmd_compare(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await svc.compare_models(a.task_type, _csv(a.models) or None, input_tokens=a.input_tokens,
                                 output_tokens=a.output_tokens, cached_input_tokens=a.cached_input_tokens)
    return r, aligned(r.markdown)


async def cmd_models(svc: PrismService, a: argparse.Namespace) -> Any:
    r = svc.list_models(tier=a.tier, provider=a.provider)
    rows = [[m.name, m.provider, m.tier, f"{m.context_window:,}", _per_mtok(m.input_usd_per_mtok),
             _per_mtok(m.output_usd_per_mtok), _per_mtok(m.cached_input_usd_per_mtok),
             ", ".join(m.aliases) or "-"] for m in r.models]
    text = _table(["model", "provider", "tier", "context", "input $/Mtok", "output $/Mtok", "cached $/Mtok",
                   "aliases"], rows)
    return r, f"{text}\n\n{len(r.models)} model(s); prices in USD per million tokens"


async def cmd_rules_list(svc: PrismService, a: argparse.Namespace) -> Any:
    views = await svc.list_rules()
    return views, show_rules(views)


async def cmd_rules_show(svc: PrismService, a: argparse.Namespace) -> Any:
    v = await svc.show_rule(a.task_type)
    return v, show_rule(v)


RULE_EXAMPLE = '{"task_type": "code_review", "primary": "claude-sonnet-4-5"}'


def read_json_arg(value: str, what: str, example: str, *, inline: bool = False) -> Any:
    """A JSON argument: a file, `-` for standard input, or (with `inline`) the JSON itself when it starts
    with `{`. Errors say which file or line and column was wrong, and what the JSON should look like."""
    if inline and value.lstrip().startswith("{"):
        text, where = value, f"the --{what} value"
    elif value == "-":
        text, where = sys.stdin.read(), "standard input"
    else:
        where = value
        try:
            text = Path(value).expanduser().read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InvalidInput(f"{what} file {value} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInput(f"cannot read {what} file {value}: {e.__class__.__name__}: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{where} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                           f"a {what} looks like {example}") from None


async def cmd_rules_set(svc: PrismService, a: argparse.Namespace) -> Any:
    rule = read_json_arg(a.file, "rule", RULE_EXAMPLE)
    c = await svc.update_routing_rule(rule, author=a.author, reason=a.reason, evidence=a.evidence, dry_run=a.dry_run)
    return c, await _synced(svc, c, show_change(c))


async def cmd_rules_rollback(svc: PrismService, a: argparse.Namespace) -> Any:
    c = await svc.rollback_rule(a.task_type, a.to, author=a.author, reason=a.reason, dry_run=a.dry_run)
    return c, await _synced(svc, c, show_change(c))


async def _synced(svc: PrismService, c: RuleChange, text: str) -> str:
    """A saved rule change reaches the models written into installed agents and commands (`mcp-prism sync`)."""
    if c.dry_run:
        return text
    from mcp_prism.install_sync import after_rule_change

    note = await after_rule_change(svc)
    return f"{text}\n{note}" if note else text


async def cmd_rules_history(svc: PrismService, a: argparse.Namespace) -> Any:
    h = await svc.rule_history(a.task_type)
    return h, show_history(h)


async def cmd_record(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await svc.record_usage(UsageInput(
        model=a.model, task_type=a.task_type, description=a.description, provider=a.provider,
        input_tokens=a.input_tokens, cached_input_tokens=a.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens, output_tokens=a.output_tokens,
        reasoning_tokens=a.reasoning_tokens, latency_ms=a.latency_ms, ttft_ms=a.ttft_ms, status=a.status,
        batch=a.batch, quality=a.quality, quality_source=a.quality_source, user=a.user, team=a.team,
        project=a.project, source=a.source, request_id=a.request_id, timestamp=a.timestamp,
    ))
    if r.duplicate:
        text = f"already recorded (same request id): {r.id}; nothing new stored"
    else:
        text = f"recorded {r.id}: {r.task_type} on {r.model}, cost {money(r.cost_usd)}"
    return r, text


async def cmd_rate(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await svc.record_quality(a.event_id, a.score, a.source)
    was = "unrated" if r.previous_quality is None else f"{r.previous_quality:.2f}"
    return r, f"rated {r.id} ({r.task_type} on {r.model}): {r.quality:.2f} from {r.source} (was {was})"


def demo_settings(settings: Settings, a: argparse.Namespace) -> Settings:
    """The sample month goes to its own SQLite file (PRISM_HOME/demo.db), never into the real store, unless
    --db names a file; --remove works on the real store (to take out samples older versions put there)."""
    from mcp_prism.demo import DEMO_DB

    if getattr(a, "remove", False) or getattr(a, "db", None):
        return settings
    return replace(settings, db_path=settings.home / DEMO_DB, database_url=None)


async def cmd_demo(svc: PrismService, a: argparse.Namespace) -> Any:
    from mcp_prism.demo import DEMO_PROJECT, remove_demo, run_demo

    if a.remove:
        removed = await remove_demo(svc)
        return removed, removed.text
    d = await run_demo(svc, days=a.days, seed=a.seed, requests=a.requests)
    r = await svc.cost_report(days=a.days, group_by=["task_type"], filters={"project": DEMO_PROJECT})
    return r, demo_text(d, r)


def demo_text(d: Any, r: CostReport) -> str:
    rule = "=" * 78
    stored = f"{d.new:,} new" if d.new else "already there, nothing added"
    lines = [
        rule,
        "  SAMPLE DATA - an invented month, not your usage (mcp-prism demo)",
        rule,
        f"{d.requests:,} sample requests ({stored}) over the last {d.days} day(s), seed {d.seed}:",
        f"a fictional team that sends EVERY request to {d.model}.",
        f'Tagged project "{d.project}", source "{d.source}", teams {", ".join(d.teams)}.',
        f"Database: {d.database} (a sample store of its own: your real usage is untouched)",
        "See it again with `mcp-prism report --db <that file>`; remove it with `mcp-prism demo --remove`.",
        "Running the demo again adds nothing.",
        "",
        aligned(r.markdown),
        "",
    ]
    if r.monthly_after_routing_usd is not None and r.monthly_saving_usd is not None:
        lines.append(
            f"SAMPLE DATA summary: everything on {d.model} costs {money(r.monthly_projection_usd)}/month; "
            f"with the routing rules {money(r.monthly_after_routing_usd)}/month: "
            f"a saving of {money(r.monthly_saving_usd)}/month ({r.monthly_saving_pct or 0:.1f}%).")
        down = [x for x in r.routing if x.monthly_after_usd is not None and x.monthly_after_usd < x.monthly_before_usd]
        up = [x for x in r.routing if x.monthly_after_usd is not None and x.monthly_after_usd > x.monthly_before_usd]
        if down:
            saved = sum((x.monthly_before_usd - x.monthly_after_usd for x in down), Decimal(0))  # type: ignore[operator]
            lines.append(f"  {len(down)} task type(s) move to cheaper models: -{money(saved)}/month.")
        if up:
            extra = sum((x.monthly_after_usd - x.monthly_before_usd for x in up), Decimal(0))  # type: ignore[operator]
            names = ", ".join(x.task_type for x in up)
            lines.append(f"  {names} move up to stronger models: +{money(extra)}/month "
                         "(the rules buy quality there).")
    else:
        lines.append("SAMPLE DATA summary: some requests could not be re-priced; see the table above.")
    lines += [
        "",
        "Next: `mcp-prism serve` to connect an agent (MCP over stdio), "
        f"`mcp-prism report --db {d.database}` to slice the sample, "
        "`mcp-prism rules list` to see the rules behind the 'after' column.",
    ]
    return "\n".join(lines)


def cmd_serve(settings: Settings, a: argparse.Namespace) -> int:
    from mcp_prism import mcp_server  # imported here: the other commands don't need the MCP SDK loaded
    from mcp_prism.config_check import check_settings

    check_settings(settings)  # a bad config stops here with its message, not inside a running server
    asyncio.run(_preflight(settings))  # so does a store that cannot open (damaged, unwritable folder)
    toolsets = mcp_server.env_toolsets(settings, a.toolsets)  # an unknown name fails here, before serving
    if a.http:
        env_hosts = os.environ.get("PRISM_ALLOWED_HOSTS", "")
        allowed = [*a.allowed_host, *(h.strip() for h in env_hosts.split(",") if h.strip())]
        mcp_server.serve_http(settings, host=a.host, port=a.port, token=os.environ.get("PRISM_TOKEN"),
                              allowed_hosts=allowed, toolsets=toolsets)
    else:
        mcp_server.serve_stdio(settings, toolsets)
    return 0


def cmd_gateway(settings: Settings, a: argparse.Namespace) -> int:
    from mcp_prism.config_check import check_settings
    from mcp_prism.gateway import serve_gateway

    check_settings(settings)  # a bad config stops here with its message, not inside a running server
    serve_gateway(settings, host=a.host, port=a.port, token=os.environ.get("PRISM_GATEWAY_TOKEN") or None,
                  no_auth=a.no_auth)
    return 0


# ==================================================================== parser
def _common(json_flag: bool = True) -> argparse.ArgumentParser:
    """Flags every subcommand accepts (also before the subcommand). SUPPRESS keeps a value given
    before the subcommand from being reset by the subparser's default."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                   help="folder for the database and config (overrides PRISM_HOME, PRISM_DB, PRISM_CONFIG)")
    g.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="database file (overrides PRISM_DB)")
    if json_flag:
        g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the result as JSON (machine output)")
    return p


def _nonneg_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return n


def _pos_int(value: str) -> int:
    n = _nonneg_int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_common()],
        description="Route each AI coding task to the cheapest model that does it well, and prove it.",
        epilog="Start with `mcp-prism demo` (sample data), then `mcp-prism serve` to connect an agent.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, parent: Any = sub, **kw: Any) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help_text, description=help_text, parents=[common], **kw)

    p = add("serve", "run the MCP server (stdio by default; --http for a team server)")
    p.add_argument("--http", action="store_true", help="serve MCP over Streamable HTTP instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--port", type=_pos_int, default=8765, help="HTTP port (default 8765)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a host name clients use to reach the server (Host/Origin check); repeatable, "
                        "also PRISM_ALLOWED_HOSTS=a,b. The bearer token comes from PRISM_TOKEN.")
    p.add_argument("--toolsets", metavar="NAMES", default=None,
                   help="tools to offer besides the core ones (route_task, record_usage, record_quality, "
                        "cost_report), comma-separated: rules, loop, data, team, or all (default: PRISM_TOOLSETS, "
                        "else [mcp] toolsets in config.toml, else none)")
    p.set_defaults(serve=cmd_serve)

    p = add("gateway", "run the HTTP gateway: OpenAI (/v1/chat/completions) and Anthropic (/v1/messages) "
                       "endpoints that route each request, forward it and record it")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1; any other needs "
                                                       "PRISM_GATEWAY_TOKEN)")
    p.add_argument("--port", type=_pos_int, default=4000, help="port (default 4000)")
    p.add_argument("--no-auth", action="store_true",
                   help="local mode: accept requests without a virtual key (only on a loopback address)")
    p.set_defaults(serve=cmd_gateway)

    p = add("demo", "fill a sample store (PRISM_HOME/demo.db, apart from your data) with a labelled SAMPLE "
                    "month (one team, everything on claude-sonnet-4-5) and show what routing would save")
    p.add_argument("--days", type=_pos_int, default=30, help="days of sample data, ending now (default 30)")
    p.add_argument("--seed", type=int, default=7, help="random seed; the same seed gives the same sample")
    p.add_argument("--requests", type=_pos_int, default=None,
                   help="total sample requests (default about 20,000 per 30 days)")
    p.add_argument("--remove", action="store_true",
                   help="delete the sample store (demo.db) and void sample events an older version put in the "
                        "real store")
    p.set_defaults(handler=cmd_demo, settings_for=demo_settings)

    p = add("route", "which model should this task use, why, and what it costs")
    p.add_argument("description", nargs="?", default=None, help="the task in free text")
    p.add_argument("--task-type", help="skip the classifier: the task type")
    p.add_argument("--context-tokens", type=_nonneg_int, default=0, help="size of the prompt, if known")
    p.set_defaults(handler=cmd_route)

    p = add("report", "where the money goes, and what the routing rules would save")
    period = p.add_mutually_exclusive_group()
    period.add_argument("--days", type=int, default=None, help="the last N days (default 30)")
    period.add_argument("--since", metavar="DATE", help="first day, like 2026-11-01")
    p.add_argument("--until", metavar="DATE", help="day after the last (exclusive; default tomorrow)")
    p.add_argument("--by", default="task_type",
                   help="comma-separated grouping: task_type, model, provider, team, user, project, day")
    for flag in ("team", "user", "project", "task-type", "model"):
        p.add_argument(f"--{flag}", help=f"only this {flag.replace('-', ' ')}")
    p.add_argument("--top", type=_pos_int, default=10, help="how many savings opportunities to show")
    p.add_argument("--html", metavar="FILE", help="also write the report with its charts to one self-contained HTML "
                                                  "file (opens with no network)")
    p.set_defaults(handler=cmd_report)

    p = add("compare", "compare models' cost for a task type or a token profile")
    p.add_argument("--task-type", help="use this task type's observed (or typical) token profile")
    p.add_argument("--models", help="comma-separated models to compare (default: candidates per tier)")
    p.add_argument("--input-tokens", type=_nonneg_int, default=None)
    p.add_argument("--output-tokens", type=_nonneg_int, default=None)
    p.add_argument("--cached-input-tokens", type=_nonneg_int, default=0)
    p.set_defaults(handler=cmd_compare)

    rules = add("rules", "routing rules: list, show, set, rollback, history")
    rsub = rules.add_subparsers(dest="rules_command", metavar="ACTION", required=True)
    p = add("list", "every task type's rule in force", rsub)
    p.set_defaults(handler=cmd_rules_list)
    p = add("show", "one task type's rule in force", rsub)
    p.add_argument("task_type")
    p.set_defaults(handler=cmd_rules_show)
    p = add("set", "store a new version of a rule from a JSON file (or - for stdin)", rsub)
    p.add_argument("file", help='a JSON rule, like {"task_type": "code_review", "primary": "claude-sonnet-4-5"}')
    p.add_argument("--author", required=True, help="who makes the change (name or email)")
    p.add_argument("--reason", required=True, help="why (e.g. 'experiment 12 qualified haiku')")
    p.add_argument("--evidence", help="a link or summary of the evidence")
    p.add_argument("--dry-run", action="store_true", help="show the effect, save nothing")
    p.set_defaults(handler=cmd_rules_set)
    p = add("rollback", "store an earlier version of a rule as the newest (0 = shipped default)", rsub)
    p.add_argument("task_type")
    p.add_argument("--to", type=_nonneg_int, required=True, metavar="N", help="the version to go back to")
    p.add_argument("--author", required=True)
    p.add_argument("--reason", required=True)
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(handler=cmd_rules_rollback)
    p = add("history", "every version of a rule, with who changed it and why", rsub)
    p.add_argument("task_type")
    p.set_defaults(handler=cmd_rules_history)

    p = add("models", "the model catalog with prices")
    p.add_argument("--tier", choices=["simple", "standard", "complex"])
    p.add_argument("--provider")
    p.set_defaults(handler=cmd_models)

    p = add("record", "record one usage event (for scripts and imports)")
    p.add_argument("--model", required=True)
    p.add_argument("--task-type")
    p.add_argument("--description", help="classified into a task type when --task-type is not given")
    p.add_argument("--provider", help="needed only for a model not in the catalog (recorded as unpriced)")
    for flag in ("input-tokens", "cached-input-tokens", "cache-write-tokens", "output-tokens", "reasoning-tokens"):
        p.add_argument(f"--{flag}", type=_nonneg_int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--ttft-ms", type=float, default=None)
    p.add_argument("--status", choices=STATUSES, default="ok")
    p.add_argument("--batch", action="store_true", help="sent through the provider's batch API")
    p.add_argument("--quality", type=float, default=None, help="0..1")
    p.add_argument("--quality-source", choices=QUALITY_SOURCES)
    p.add_argument("--user")
    p.add_argument("--team")
    p.add_argument("--project")
    p.add_argument("--source", choices=SOURCES, default="import")
    p.add_argument("--request-id", help="your id for the request; recording it twice stores it once")
    p.add_argument("--timestamp", help="ISO 8601, like 2026-11-25T10:00:00Z (default now)")
    p.set_defaults(handler=cmd_record)

    p = add("rate", "give a recorded request a quality score")
    p.add_argument("event_id", help="the id `record` printed, or your request id")
    p.add_argument("score", type=float, help="0 (unusable) .. 1 (perfect)")
    p.add_argument("--source", choices=QUALITY_SOURCES, default="human", help="who judged (default human)")
    p.set_defaults(handler=cmd_rate)
    # The optimisation loop's commands live beside their services, one adapter module per area.
    for module in LOOP_CLI_MODULES:
        importlib.import_module(module).register_commands(add, sub)
    harden_parser(parser)  # every argument bounded (lengths, ranges, USD amounts): mcp_prism/limits.py
    return parser


# ==================================================================== main
def load_settings(home: str | None, db: str | None) -> Settings:
    env: dict[str, str] = dict(os.environ)
    if home:  # an explicit home holds its own database and config
        for name in ("PRISM_DB", "PRISM_CONFIG"):
            env.pop(name, None)
    settings = Settings.from_env(env, home=home)
    if db:
        settings.db_path = Path(db).expanduser()
    return settings


async def _preflight(settings: Settings) -> None:
    """Open the store once and close it: a server that cannot open it exits with the reason."""
    service = await PrismService.open(settings)
    await service.close()


async def _run(settings: Settings, handler: Handler, args: argparse.Namespace) -> Any:
    service = await PrismService.open(settings)
    try:
        return await handler(service, args)
    finally:
        await service.close()


def _setup_logging(serve: bool) -> None:
    level = os.environ.get("PRISM_LOG_LEVEL", "INFO" if serve else "WARNING").upper()
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level, logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _crash_log(exc: BaseException, home: str | None) -> Path | None:
    """Append the traceback to a file in the home folder; return where, or None if it cannot."""
    try:
        folder = Path(home or os.environ.get("PRISM_HOME") or Path.home() / ".mcp-prism").expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CRASH_LOG
        with path.open("a", encoding="utf-8") as f:
            f.write(f"--- {PROG} {__version__}: unexpected failure\n")
            f.writelines(traceback.format_exception(exc))
        return path
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (argparse printed it; code 2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    home, db = getattr(args, "home", None), getattr(args, "db", None)
    serving = getattr(args, "serve", None)
    _setup_logging(serving is not None)
    try:
        standalone = getattr(args, "standalone", None)
        if standalone is not None:  # commands that judge the config itself, before any store
            return standalone(args)
        settings = load_settings(home, db)
        if getattr(args, "settings_for", None) is not None:  # a command with a store of its own (the demo)
            settings = args.settings_for(settings, args)
        if serving:
            return serving(settings, args)
        result, text = asyncio.run(_run(settings, args.handler, args))
        if getattr(args, "json", False):
            _json(result)
        else:
            _out(text)
        return getattr(args, "exit_code", 0)  # a handler that printed a result may still report a failure
    except PrismError as e:
        print(f"error: {clip_message(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mcp-prism report | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:
        if os.environ.get("PRISM_DEBUG") == "1":
            traceback.print_exception(e, file=sys.stderr)
        where = _crash_log(e, home)
        hint = f"see the log ({where})" if where else "see the log (set PRISM_DEBUG=1 to print the traceback)"
        print(f"error: unexpected failure ({type(e).__name__}); {hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
