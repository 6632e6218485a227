"""The dashboard's pages rendered from the services' result models (no I/O here)."""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from mcp_prism.loop.analysis import AnalysisResult
from mcp_prism.loop.experiments import ExperimentList, ExperimentReport
from mcp_prism.loop.monitoring import AlertList, MonitorList
from mcp_prism.results import CostReport, RuleHistory, RuleView
from mcp_prism.ui.html import cards, chart, e, num, pct, share, table, usd

DIMENSIONS = ("task_type", "model", "provider", "team", "user", "project")
FILTERS = ("team", "user", "project", "task_type", "model")
TOP_SERIES = 8  # series drawn over time; the rest are summed as "other"


def _f(v: Decimal | None) -> float | None:
    return None if v is None else float(v)


# ==================================================================== costs
def costs_form(params: dict[str, str]) -> str:
    by = params.get("by", "task_type")
    opts = "".join(f'<option value="{d}"{" selected" if d == by else ""}>{d.replace("_", " ")}</option>'
                   for d in DIMENSIONS)
    fields = "".join(f'<label>{f.replace("_", " ")}<input name="{f}" value="{e(params.get(f, ""))}" size="12"></label>'
                     for f in FILTERS)
    return (f'<form class="filters" method="get" action="/costs">'
            f'<label>days<input name="days" value="{e(params.get("days", ""))}" size="4" placeholder="30"></label>'
            f'<label>since<input name="since" value="{e(params.get("since", ""))}" size="10" placeholder="YYYY-MM-DD">'
            f'</label><label>until<input name="until" value="{e(params.get("until", ""))}" size="10"></label>'
            f'<label>by<select name="by">{opts}</select></label>{fields}<button>Show</button></form>')


def _series(daily: CostReport, dim: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Spend per day per group: the top groups by cost, the rest summed as "other"; days without spend are 0."""
    per: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for g in daily.groups:
        per[g.key[dim]][g.key["day"]] += g.cost_usd
        totals[g.key[dim]] += g.cost_usd
    from datetime import date, timedelta

    start, end = date.fromisoformat(daily.since), date.fromisoformat(daily.until)
    days = [str(start + timedelta(n)) for n in range((end - start).days)]
    ranked = sorted(totals, key=lambda k: (-totals[k], k))
    top, rest = ranked[:TOP_SERIES], ranked[TOP_SERIES:]
    sets = [{"label": k, "data": [float(per[k].get(d, 0)) for d in days]} for k in top]
    if rest:
        sets.append({"label": "other", "data": [float(sum(per[k].get(d, Decimal(0)) for k in rest)) for d in days]})
    return days, sets


def costs_body(r: CostReport, daily: CostReport, params: dict[str, str], batch_counts: dict[str, int],
               scope_note: str = "") -> tuple[str, list[dict[str, Any]]]:
    dim = r.group_by[0]
    days, sets = _series(daily, dim)
    summary = cards([
        ("spend in period", usd(r.total_cost_usd, test_id="total-cost"), "card-total"),
        ("requests", num(r.total_requests, test_id="total-requests"), "card-requests"),
        ("per month now", usd(r.monthly_projection_usd, test_id="monthly-now"), "card-month"),
        ("per month with routing", usd(r.monthly_after_routing_usd, test_id="monthly-after"), "card-after"),
        ("saving per month", usd(r.monthly_saving_usd, test_id="monthly-saving"), "card-saving"),
        ("response-cache hits", num(r.cache_hits, test_id="cache-hits"), "card-cache-hits"),
        ("saved by the cache", usd(r.cache_saved_usd, test_id="cache-saved"), "card-cache-saved"),
        ("batch requests", num(sum(batch_counts.values()), test_id="batch-requests"), "card-batch"),
    ])
    rows = [[e(g.key[dim]), num(g.requests), usd(g.cost_usd), pct(g.share_of_cost_pct),
             num(g.avg_latency_ms, "-" if g.avg_latency_ms is None else f"{g.avg_latency_ms:,.0f} ms"),
             share(g.avg_quality), num(g.errors), num(g.unpriced_requests)] for g in r.groups]
    groups = table([dim.replace("_", " "), "requests", "cost", "share", "avg latency", "avg quality", "errors",
                    "unpriced"], rows, test_id="cost-groups", empty="no usage recorded in this period")
    opp = table(["task type", "now", "routed to", "requests", "per month now", "per month routed", "saving",
                 "evidence"],
                [[e(o.task_type), e(o.current_model), e(o.routed_model), num(o.requests), usd(o.monthly_cost_now_usd),
                  usd(o.monthly_cost_routed_usd), usd(o.monthly_saving_usd), e(o.evidence)] for o in r.opportunities],
                test_id="opportunities", empty="no savings opportunity: every task type runs on its rule's model")
    filt = ", ".join(f"{k} = {v}" for k, v in r.filters.items()) or "none"
    body = (costs_form(params) + f'<p class="meta">{e(r.since)} to {e(r.until)} (until exclusive), {r.days} day(s) '
            f'with data; filters: {e(filt)}{e(scope_note)}</p>' + summary
            + '<div class="grid2">' + chart("chart-time", f"spend per day by {dim.replace('_', ' ')} (USD)")
            + chart("chart-groups", f"spend by {dim.replace('_', ' ')} (USD)") + "</div>"
            + f"<h2>By {e(dim.replace('_', ' '))}</h2>" + groups + "<h2>Savings opportunities</h2>" + opp)
    charts = [
        {"id": "chart-time", "type": "bar", "stacked": True, "labels": days, "datasets": sets, "y": "USD"},
        {"id": "chart-groups", "type": "bar", "labels": [g.key[dim] for g in r.groups[:20]],
         "datasets": [{"label": "cost (USD)", "data": [float(g.cost_usd) for g in r.groups[:20]]}], "y": "USD",
         "horizontal": True},
    ]
    return body, charts


# ==================================================================== matrix
def _exp_command_link(command: str) -> str:
    return f'<code class="cmd">{e(command)}</code>'


def matrix_body(a: AnalysisResult) -> tuple[str, list[dict[str, Any]]]:
    summary = cards([
        ("per month now", usd(a.monthly_cost_now_usd, test_id="matrix-now"), "card-now"),
        ("per month after (deployable)", usd(a.monthly_cost_after_usd, test_id="matrix-after"), "card-after"),
        ("saving per month", usd(a.monthly_saving_usd, test_id="matrix-saving"), "card-saving"),
        ("more if hypotheses qualify", usd(a.potential_monthly_saving_usd, test_id="matrix-potential"),
         "card-potential"),
    ])
    rows = []
    for t in a.rows:
        now = ", ".join(f"{m.model} {m.share_pct:.0f}%" for m in t.current_models[:3]) or "-"
        ev = "<br>".join((f'<a href="/experiments/{quote(x.experiment_id, safe="")}">{e(x.summary)}</a>'
                          if x.experiment_id else e(x.summary)) for x in t.evidence[:3]) or "-"
        action = f'<span class="tag {e(t.action)}">{e(t.action)}</span>'
        test = ("<br>" + _exp_command_link(t.proposed_experiment)) if t.proposed_experiment else ""
        rows.append([e(t.task_type), e(now), e(t.rule_model), action + test, e(t.recommended_model or "-"),
                     usd(t.monthly_cost_now_usd), usd(t.monthly_cost_after_usd), usd(t.monthly_saving_usd),
                     share(t.acceptable_share), ev])
    grid = table(["task type", "now", "rule", "action", "recommended", "per month now", "after", "saving",
                  "acceptable", "evidence"], rows, test_id="matrix", empty="no usage in the period")
    hyp = table(["task type", "now", "candidates", "potential saving / month", "test it with"],
                [[e(h.task_type), e(h.current_model), e(", ".join(h.candidates)), usd(h.potential_monthly_saving_usd),
                  _exp_command_link(h.command)] for h in a.hypotheses], test_id="hypotheses",
                empty="no hypotheses: nothing cheaper looks likely to qualify")
    notes = "".join(f"<li>{e(n)}</li>" for n in a.notes)
    body = (f'<p class="meta">{e(a.since)} to {e(a.until)}, {a.days} day(s)</p>' + summary
            + chart("chart-matrix", "monthly cost per task type: now vs recommended (USD)")
            + "<h2>Now vs recommended</h2>" + grid + "<h2>Hypotheses (run the experiment to test one)</h2>" + hyp
            + (f"<ul class='notes'>{notes}</ul>" if notes else ""))
    charts = [{"id": "chart-matrix", "type": "bar", "labels": [t.task_type for t in a.rows], "datasets": [
        {"label": "now", "data": [float(t.monthly_cost_now_usd) for t in a.rows]},
        {"label": "after", "data": [_f(t.monthly_cost_after_usd if t.monthly_cost_after_usd is not None
                                       else t.monthly_cost_now_usd) for t in a.rows]}], "y": "USD per month"}]
    return body, charts


# ==================================================================== experiments
def experiments_body(listing: ExperimentList) -> str:
    rows = [[f'<a href="/experiments/{quote(x.id, safe="")}">{e(x.id)}</a>', e(x.task_type), e(x.baseline_model),
             e(", ".join(x.candidates)), e(x.evaluation.get("method", "")), e(x.status), num(x.items),
             e(x.created_at[:16])] for x in listing.experiments]
    return table(["experiment", "task type", "baseline", "candidates", "method", "status", "items", "created"], rows,
                 test_id="experiments", empty="no experiments yet: start one with `mcp-prism experiment start`")


def _ms(v: float | None) -> str:
    return num(v, "-" if v is None else f"{v:,.0f} ms")


def experiment_body(r: ExperimentReport, *, owner: bool, progress: Any = None, agreement: Any = None,
                    new_link: Any = None, promoted: Any = None) -> tuple[str, list[dict[str, Any]]]:
    x = r.experiment
    meta = (f'<p class="meta">{e(x.task_type)} · baseline {e(x.baseline_model)} · method {e(r.method)} · '
            f'threshold {r.threshold:.0%} at {r.confidence:.0%} confidence · status {e(x.status)} · '
            f'{x.items} items · paid {e(str(r.experiment_cost_usd))} USD</p>')
    rows = [[e(c.model), f'<span class="tag v-{e(c.verdict.replace(" ", "-"))}">{e(c.verdict)}</span>',
             share(c.rate), share(c.lower_bound), share(c.threshold), num(c.evaluated), num(c.acceptable),
             usd(c.cost_per_request_usd), _ms(c.latency_p50_ms), _ms(c.latency_p95_ms),
             usd(c.saving_per_month_usd), e(c.summary)] for c in r.candidates]
    b = r.baseline
    rows.append([e(b.model) + " (baseline)", "-", "-", "-", "-", num(b.answers), "-", usd(b.cost_per_request_usd),
                 _ms(b.latency_p50_ms), _ms(b.latency_p95_ms), "-", "-"])
    grid = table(["model", "verdict", "acceptable", "lower bound", "threshold", "evaluated", "acceptable n",
                  "cost / request", "p50", "p95", "saving / month", "summary"], rows, test_id="candidates")
    fails = "".join(
        f'<details class="fail"><summary>item {f.item} · {e(f.model)} · {e(f.verdict)} ({e(f.method)})</summary>'
        f'<div class="pair"><div><h4>prompt</h4><pre>{e(f.prompt)}</pre></div>'
        f'<div><h4>baseline</h4><pre>{e(f.baseline_answer)}</pre></div>'
        f'<div><h4>candidate</h4><pre>{e(f.candidate_answer)}</pre></div></div></details>'
        for f in r.failed_examples) or '<p class="empty">no failed examples</p>'
    body = meta
    if promoted is not None:
        body += (f'<p class="ok" data-testid="promoted">promoted {e(promoted.candidate)}: {e(promoted.task_type)} '
                 f'rule version {promoted.new_version}, monitor {promoted.monitor_id} until '
                 f'{e(promoted.monitor_ends_at[:10])}</p>')
    body += (chart("chart-quality", "acceptable rate: lower bound to observed, threshold as a line")
             + "<h2>Candidates</h2>" + grid + "<h2>Failed examples</h2>" + fails)
    if owner:
        body += _promote_form(r) + _rating_section(x.id, progress, agreement, new_link)
    lo = [[c.lower_bound or 0, c.rate or 0] for c in r.candidates]
    charts = [{"id": "chart-quality", "type": "interval", "labels": [c.model for c in r.candidates],
               "intervals": lo, "threshold": r.threshold, "y": "acceptable share"}]
    return body, charts


def _promote_form(r: ExperimentReport) -> str:
    opts = "".join(f'<option value="{e(c.model)}">{e(c.model)} ({e(c.verdict)})</option>' for c in r.candidates)
    return (f'<h2>Promote</h2><form method="post" class="act" action="/experiments/{quote(r.experiment.id, safe="")}'
            f'/promote"><label>candidate<select name="candidate">{opts}</select></label>'
            f'<label>author<input name="author" required maxlength="100"></label>'
            f'<label>reason<input name="reason" required maxlength="500" size="40"></label>'
            f'<button>Promote (under a monitor)</button></form>')


def _rating_section(exp_id: str, progress: Any, agreement: Any, new_link: Any) -> str:
    out = "<h2>Human rating</h2>"
    if progress is not None:
        out += (f'<p data-testid="rating-progress">{progress.rated} of {progress.total} pair(s) rated; '
                + (", ".join(f"{e(p.rater)}: {p.rated}" for p in progress.raters) or "no ratings yet") + "</p>")
    if agreement is not None:
        out += table(["rater", "rater", "pairs both rated", "observed agreement", "Cohen's kappa"],
                     [[e(p.rater_a), e(p.rater_b), num(p.shared), share(p.observed_agreement),
                       num(p.kappa, "-" if p.kappa is None else f"{p.kappa:.2f}")] for p in agreement.pairs],
                     test_id="kappa", empty="agreement shows once two raters rated the same pairs")
        out += table(["link", "rater", "created by", "created", "active"],
                     [[e(x.id), e(x.rater), e(x.created_by), e(x.created_at[:16]), e("yes" if x.active else "revoked")]
                      for x in agreement.links], test_id="rater-links", empty="no rater links yet")
    if new_link is not None:
        out += (f'<p class="ok">Send this link to {e(new_link.link.rater)} (shown once): '
                f'<a data-testid="new-link" href="{e(new_link.path)}">{e(new_link.path)}</a></p>')
    out += (f'<form method="post" class="act" action="/experiments/{quote(exp_id, safe="")}/rater-link">'
            f'<label>rater<input name="rater" required maxlength="100"></label><button>Create a rating link</button>'
            f'</form><p class="meta">or: <code>mcp-prism ui rater-link {e(exp_id)} --rater NAME</code></p>')
    return out


# ==================================================================== rules
def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    a = json.dumps(old, indent=2, sort_keys=True).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True).splitlines()
    lines = list(difflib.unified_diff(a, b, "before", "after", lineterm="", n=1))[2:]
    return "<pre class='diff'>" + "\n".join(
        f'<span class="{"add" if ln.startswith("+") else "del" if ln.startswith("-") else "ctx"}">{e(ln)}</span>'
        for ln in lines) + "</pre>" if lines else "<p class='empty'>no change</p>"


def rules_body(rules: list[RuleView], histories: list[RuleHistory], monitors: MonitorList, alerts: AlertList, *,
               owner: bool) -> str:
    rows = [[f'<a href="#rule-{e(v.task_type)}">{e(v.task_type)}</a>', num(v.version), e(v.rule.get("primary", "")),
             e(", ".join(v.rule.get("fallbacks", []) or [])), e(v.author), e(v.reason), e((v.created_at or "")[:16])]
            for v in rules]
    body = table(["task type", "version", "primary", "fallbacks", "author", "reason", "since"], rows,
                 test_id="rules")
    body += "<h2>Monitors</h2>" + table(
        ["id", "task type", "version", "threshold", "status", "until", "auto rollback"],
        [[num(m.id), e(m.task_type), num(m.rule_version), share(m.threshold), e(m.status), e(m.ends_at[:10]),
          e("yes" if m.auto_rollback else "no")] for m in monitors.monitors], test_id="monitors",
        empty="no monitors: promoting a candidate starts one")
    body += "<h2>Alerts</h2>" + table(
        ["id", "when", "kind", "task type", "message", "acknowledged"],
        [[num(a.id), e(a.ts[:16]), e(a.kind), e(a.task_type or "-"), e(a.message), e("yes" if a.acknowledged else "no")]
         for a in alerts.alerts], test_id="alerts", empty="no alerts")
    body += "<h2>History</h2>"
    for h in histories:
        versions = sorted(h.versions, key=lambda v: v.version)
        items = []
        for n, v in enumerate(versions):
            shown = (_diff(versions[n - 1].rule, v.rule) if n else  # the first as it is, then what changed
                     f"<pre>{e(json.dumps(v.rule, indent=2, sort_keys=True))}</pre>")
            items.append(f'<div class="version"><h4>v{v.version} · {e(v.author)} · {e((v.created_at or "")[:16])}</h4>'
                         f'<p>{e(v.reason)}{" · evidence: " + e(v.evidence) if v.evidence else ""}</p>'
                         + shown + "</div>")
        audit = table(["when", "actor", "action", "reason"],
                      [[e(str(x.get("ts", ""))[:16]), e(x.get("actor")), e(x.get("action")), e(x.get("reason"))]
                       for x in h.audit], empty="no audit entries")
        current = versions[-1].version if versions else 0
        rollback = (f'<form method="post" class="act" action="/rules/{quote(h.task_type, safe="")}/rollback">'
                    f'<label>to version<input name="to" type="number" min="0" max="{current}" required size="3">'
                    f'</label><label>author<input name="author" required maxlength="100"></label>'
                    f'<label>reason<input name="reason" required maxlength="500" size="30"></label>'
                    f'<button>Roll back</button></form>') if owner and versions else ""
        body += (f'<section id="rule-{e(h.task_type)}" class="rule"><h3>{e(h.task_type)}</h3>{"".join(items)}'
                 f'<h4>audit</h4>{audit}{rollback}</section>')
    return body


# ==================================================================== rating (rater's page)
def rating_body(experiment_id: str, rater: str) -> str:
    keys = (("1", "first", "Left is better"), ("2", "same", "Same"), ("3", "second", "Right is better"),
            ("4", "only_first", "Only left usable"), ("5", "only_second", "Only right usable"))
    buttons = "".join(f'<button type="button" data-rating="{r}" data-key="{k}"><kbd>{k}</kbd> {e(label)}</button>'
                      for k, r, label in keys)
    return (f'<div id="rate" data-experiment="{e(experiment_id)}" data-rater="{e(rater)}">'
            f'<p class="meta">Rating as <b>{e(rater)}</b>. The two answers are in a random order and unlabelled. '
            f'Keys: 1-5 rate, S skips for now. Your ratings are saved as you go; come back to this link to resume.</p>'
            f'<div class="progress"><div class="bar" id="bar"></div></div><p id="progress" data-testid="progress"></p>'
            f'<section id="task"><h2>Task</h2><pre id="prompt"></pre><p id="question"></p>'
            f'<div class="pair"><div><h3>Left</h3><pre id="first"></pre></div>'
            f'<div><h3>Right</h3><pre id="second"></pre></div></div>'
            f'<div class="buttons">{buttons}<button type="button" data-rating="skip" data-key="s"><kbd>S</kbd> Skip'
            f'</button></div></section><p id="done" hidden data-testid="done">All pairs rated. Thank you!</p>'
            f'<p id="error" class="error" hidden></p></div>')
