"""Monitor deployed rule versions, raise and deliver alerts, roll back regressions, and say which rules
are due for re-evaluation.

A monitor (a `monitors` row, written when a candidate is promoted) compares the recorded quality of the
requests routed by the new rule version with the baseline version's. A regression raises an alert
(stored first, so it is never lost; delivered to a Slack-compatible webhook when one is configured and
retried on every later check until it goes through) and, with auto_rollback, restores the baseline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import aiosqlite
import httpx
from pydantic import BaseModel, Field

from mcp_prism import render
from mcp_prism.core import analysis as core
from mcp_prism.core.report import money
from mcp_prism.core.stats import clopper_pearson_lower
from mcp_prism.core.usage import iso, parse_iso, utcnow
from mcp_prism.errors import InvalidInput, PrismError
from mcp_prism.loop.analysis import experiment_results
from mcp_prism.service import PrismService

log = logging.getLogger(__name__)

MONITOR_AUTHOR = "mcp-prism monitor"
RETRY_PAUSE_SECONDS = 0.5
MAX_REVIEW_CANDIDATES = 3
AlertKind = Literal["regression", "rolled_back", "review_due"]


class AlertView(BaseModel):
    id: int
    ts: str
    kind: str
    task_type: str | None
    message: str
    details: dict[str, Any]
    delivered: bool
    acknowledged: bool


class AlertList(BaseModel):
    open_only: bool
    alerts: list[AlertView]
    markdown: str


class MonitorView(BaseModel):
    id: int
    task_type: str
    rule_version: int
    baseline_version: int | None
    experiment_id: str | None
    started_at: str
    ends_at: str
    threshold: float
    auto_rollback: bool
    status: str
    last_checked: str | None
    details: dict[str, Any]


class MonitorList(BaseModel):
    monitors: list[MonitorView]
    markdown: str


class MonitorCheck(BaseModel):
    id: int
    task_type: str
    rule_version: int
    baseline_version: int | None
    previous_status: str
    status: str
    rated: int = Field(description="rated requests on the monitored version since the monitor started")
    acceptable: int
    acceptable_share: float | None
    lower_bound: float | None
    upper_bound: float | None
    threshold: float
    baseline_rated: int
    baseline_acceptable: int
    baseline_share: float | None
    summary: str
    rolled_back_to: int | None = None
    new_rule_version: int | None = None


class CheckResult(BaseModel):
    checked_at: str
    monitors: list[MonitorCheck]
    alerts_raised: list[AlertView]
    delivered: int = Field(description="alerts delivered to the webhook by this check (older ones included)")
    undelivered: int = Field(description="open alerts still waiting for delivery (retried on the next check)")
    webhook_configured: bool
    delivery_errors: list[str]
    markdown: str


class ProposedExperiment(BaseModel):
    task_type: str
    current_model: str
    rule_version: int
    last_evaluated: str | None = Field(description="null: never evaluated by an experiment")
    days_since_evaluated: int | None
    reasons: list[str]
    candidates: list[str]
    monthly_requests: int
    estimated_monthly_saving_usd: Decimal | None = Field(description="if the cheapest candidate qualified")
    command: str | None


class ReviewDue(BaseModel):
    checked_at: str
    review_after_days: int
    proposals: list[ProposedExperiment]
    alerts_raised: list[AlertView]
    markdown: str


def _loads(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _alert(r: Any) -> AlertView:
    return AlertView(id=r["id"], ts=r["ts"], kind=r["kind"], task_type=r["task_type"], message=r["message"],
                     details=_loads(r["details"]), delivered=bool(r["delivered"]),
                     acknowledged=bool(r["acknowledged"]))


def _monitor(r: Any) -> MonitorView:
    return MonitorView(id=r["id"], task_type=r["task_type"], rule_version=r["rule_version"],
                       baseline_version=r["baseline_version"], experiment_id=r["experiment_id"],
                       started_at=r["started_at"], ends_at=r["ends_at"], threshold=r["threshold"],
                       auto_rollback=bool(r["auto_rollback"]), status=r["status"], last_checked=r["last_checked"],
                       details=_loads(r["details"]))


def slack_payload(alert: AlertView) -> dict[str, Any]:
    """A Slack incoming-webhook message (also understood by Mattermost, Rocket.Chat, Teams workflows)."""
    lines = [f"*mcp-prism {alert.kind.replace('_', ' ')}*" + (f" — `{alert.task_type}`" if alert.task_type else ""),
             alert.message]
    d = alert.details
    if "rule_version" in d:
        lines.append(f"*Versions:* v{d['rule_version']} (monitored) vs v{d.get('baseline_version')} (baseline)")
    if "rated" in d:
        lines.append(f"*Numbers:* {d.get('acceptable')}/{d.get('rated')} acceptable "
                     f"({_share(d.get('acceptable_share'))}, bounds {_share(d.get('lower_bound'))}–"
                     f"{_share(d.get('upper_bound'))}) vs threshold {_share(d.get('threshold'))}; baseline "
                     f"{d.get('baseline_acceptable')}/{d.get('baseline_rated')} ({_share(d.get('baseline_share'))})")
    if d.get("rollback_command"):
        lines.append(f"*Roll back:* `{d['rollback_command']}`")
    if d.get("command"):
        lines.append(f"*Start:* `{d['command']}`")
    return {"text": f"mcp-prism {alert.kind}: {alert.message}",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]}


def _share(v: Any) -> str:
    return "-" if v is None else f"{float(v):.1%}"


class MonitorService:
    def __init__(self, svc: PrismService, config: Mapping[str, Any] | None = None, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.svc = svc
        self.settings = core.LoopSettings.from_config(config)
        self._transport = transport  # tests may inject one; the default is a real connection

    # ---------------------------------------------------------------- reads
    async def list_monitors(self) -> MonitorList:
        rows = await self.svc.store.fetch("SELECT * FROM monitors ORDER BY id DESC")
        monitors = [_monitor(r) for r in rows]
        return MonitorList(monitors=monitors, markdown=monitors_markdown(monitors))

    async def alerts(self, open_only: bool = True) -> AlertList:
        sql = "SELECT * FROM alerts" + (" WHERE acknowledged = 0" if open_only else "") + " ORDER BY id DESC"
        alerts = [_alert(r) for r in await self.svc.store.fetch(sql)]
        return AlertList(open_only=open_only, alerts=alerts, markdown=alerts_markdown(alerts, open_only))

    async def ack_alert(self, alert_id: int) -> AlertView:
        async def work(conn: aiosqlite.Connection) -> None:
            cur = await conn.execute("UPDATE alerts SET acknowledged = 1 WHERE id = ?", (alert_id,))
            if cur.rowcount == 0:
                raise InvalidInput(f"no alert has id {alert_id}; `mcp-prism alerts --all` lists them")

        await self.svc.store.transaction(work)
        rows = await self.svc.store.fetch("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        return _alert(rows[0])

    async def _rated(self, task_type: str, version: int | None, since: str, until: str) -> tuple[int, int]:
        sql = ("SELECT COUNT(*) AS n, SUM(quality >= ?) AS ok FROM usage_events WHERE task_type = ? "
               "AND quality IS NOT NULL AND ts >= ? AND ts < ?")
        params: list[Any] = [self.settings.acceptable_score, task_type, since, until]
        if version is not None:
            sql += " AND rule_version = ?"
            params.append(version)
        r = (await self.svc.store.fetch(sql, params))[0]
        return int(r["n"] or 0), int(r["ok"] or 0)

    # ---------------------------------------------------------------- check
    async def check_monitors(self, now: datetime | None = None, *, deliver: bool = True) -> CheckResult:
        now = now or utcnow()
        stamp = iso(now)
        rows = await self.svc.store.fetch("SELECT * FROM monitors WHERE status = 'watching' ORDER BY id")
        checks: list[MonitorCheck] = []
        raised: list[int] = []
        for r in rows:
            check, alert_ids = await self._check_one(_monitor(r), now)
            checks.append(check)
            raised += alert_ids
        delivered, errors = await self.deliver_pending() if deliver else (0, [])
        alerts = [_alert(r) for r in await self.svc.store.fetch(
            f"SELECT * FROM alerts WHERE id IN ({','.join('?' * len(raised))})", raised)] if raised else []
        undelivered = int((await self.svc.store.fetch(
            "SELECT COUNT(*) FROM alerts WHERE delivered = 0 AND acknowledged = 0"))[0][0])
        result = CheckResult(checked_at=stamp, monitors=checks, alerts_raised=alerts, delivered=delivered,
                             undelivered=undelivered, webhook_configured=bool(self.settings.webhook_url),
                             delivery_errors=errors, markdown="")
        result.markdown = check_markdown(result)
        return result

    async def _check_one(self, m: MonitorView, now: datetime) -> tuple[MonitorCheck, list[int]]:
        s = self.settings
        stamp = iso(now)
        n, ok = await self._rated(m.task_type, m.rule_version, m.started_at, stamp)
        base_from = iso(parse_iso(m.started_at) - timedelta(days=s.baseline_days))
        bn, bok = await self._rated(m.task_type, m.baseline_version, base_from, m.started_at)
        numbers = {
            "rule_version": m.rule_version, "baseline_version": m.baseline_version, "rated": n, "acceptable": ok,
            "acceptable_share": ok / n if n else None,
            "lower_bound": clopper_pearson_lower(ok, n) if n else None,
            "upper_bound": core.upper_bound(ok, n) if n else None,
            "threshold": m.threshold, "baseline_rated": bn, "baseline_acceptable": bok,
            "baseline_share": bok / bn if bn else None, "acceptable_score": s.acceptable_score,
            "min_rated": s.min_rated, "test": s.regression_test,
        }
        status, rolled_to, new_version = "watching", None, None
        alerts: list[tuple[str, str, dict[str, Any]]] = []
        if core.is_regression(ok, n, m.threshold, s):
            status = "regressed"
            command = (core.rollback_command(m.task_type, m.baseline_version)
                       if m.baseline_version is not None else None)
            summary = (f"rule {m.task_type} v{m.rule_version} regressed: {ok}/{n} rated requests acceptable "
                       f"({ok / n:.1%}), below the {m.threshold:.0%} threshold; baseline "
                       f"v{m.baseline_version}: " + (f"{bok}/{bn} ({bok / bn:.1%})" if bn else "no rated requests"))
            alerts.append(("regression", summary, {**numbers, "monitor_id": m.id, "rollback_command": command}))
            if m.auto_rollback:
                rolled_to, new_version, note = await self._rollback(m, summary)
                if new_version is not None:
                    status = "rolled_back"
                    alerts.append(("rolled_back", f"rule {m.task_type} rolled back to v{rolled_to} (now "
                                   f"v{new_version}) after a regression of v{m.rule_version}",
                                   {**numbers, "monitor_id": m.id, "new_rule_version": new_version}))
                else:
                    summary += f"; auto rollback not done: {note}"
                    alerts[0][2]["rollback_error"] = note
        elif now >= parse_iso(m.ends_at):
            status = "passed"
            summary = (f"rule {m.task_type} v{m.rule_version} passed its watch: {ok}/{n} rated requests acceptable"
                       + ("" if n >= s.min_rated else f" (fewer than {s.min_rated} rated: no regression could be "
                          "shown, record quality to make the watch meaningful)"))
        else:
            summary = (f"watching until {m.ends_at[:10]}: {ok}/{n} rated requests acceptable"
                       + (f" (needs {s.min_rated} to judge)" if n < s.min_rated else ""))

        details = {**m.details, "last": numbers, "summary": summary}
        if rolled_to is not None:
            details["rolled_back_to"], details["new_rule_version"] = rolled_to, new_version

        async def work(conn: aiosqlite.Connection) -> list[int]:
            await conn.execute("UPDATE monitors SET status = ?, last_checked = ?, details = ? WHERE id = ?",
                               (status, stamp, json.dumps(details, default=str), m.id))
            return [await _insert_alert(conn, stamp, kind, m.task_type, message, extra)
                    for kind, message, extra in alerts]

        ids = await self.svc.store.transaction(work)
        return MonitorCheck(
            id=m.id, task_type=m.task_type, rule_version=m.rule_version, baseline_version=m.baseline_version,
            previous_status=m.status, status=status, rated=n, acceptable=ok,
            acceptable_share=numbers["acceptable_share"], lower_bound=numbers["lower_bound"],
            upper_bound=numbers["upper_bound"], threshold=m.threshold, baseline_rated=bn, baseline_acceptable=bok,
            baseline_share=numbers["baseline_share"], summary=summary, rolled_back_to=rolled_to,
            new_rule_version=new_version,
        ), ids

    async def _rollback(self, m: MonitorView, summary: str) -> tuple[int | None, int | None, str]:
        """Restore the baseline version, unless someone changed the rule since (their change wins)."""
        if m.baseline_version is None:
            return None, None, "the monitor has no baseline version to return to"
        active = (await self.svc.rules(fresh=True)).get(m.task_type)
        if active is None or active.version != m.rule_version:
            return None, None, (f"the rule is now v{active.version if active else '?'}, not the monitored "
                                f"v{m.rule_version}; roll back by hand if still wanted")
        try:
            change = await self.svc.rollback_rule(m.task_type, m.baseline_version, author=MONITOR_AUTHOR,
                                                  reason=f"automatic rollback: {summary}")
        except PrismError as e:
            return None, None, str(e)
        return m.baseline_version, change.new_version, ""

    # ---------------------------------------------------------------- delivery
    async def deliver_pending(self) -> tuple[int, list[str]]:
        """POST every open, undelivered alert to the webhook, oldest first; a failure leaves it for the next
        check. Returns (delivered, errors). The URL is a secret (Slack's holds a token): never logged."""
        url = self.settings.webhook_url
        if not url:
            return 0, []
        rows = await self.svc.store.fetch("SELECT * FROM alerts WHERE delivered = 0 AND acknowledged = 0 ORDER BY id")
        if not rows:
            return 0, []
        delivered, errors = 0, []
        async with httpx.AsyncClient(timeout=self.settings.webhook_timeout, transport=self._transport) as client:
            for r in rows:
                alert = _alert(r)
                problem = await self._post(client, url, slack_payload(alert))
                if problem:
                    errors.append(f"alert {alert.id}: {problem}")
                    log.warning("alert %s not delivered (%s); retried on the next check", alert.id, problem)
                    break  # the receiver is down: keep the order, try again next time
                await self.svc.store.transaction(
                    lambda conn, i=alert.id: conn.execute("UPDATE alerts SET delivered = 1 WHERE id = ?", (i,)))
                delivered += 1
        return delivered, errors

    @staticmethod
    async def _post(client: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> str | None:
        problem = None
        for attempt in range(2):  # one retry
            if attempt:
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
            try:
                resp = await client.post(url, json=payload)
            except httpx.HTTPError as e:
                problem = f"webhook unreachable ({type(e).__name__})"
                continue
            if resp.is_success:
                return None
            problem = f"webhook answered HTTP {resp.status_code}"
        return problem

    # ---------------------------------------------------------------- re-evaluation
    async def review_due(self, now: datetime | None = None, *, raise_alerts: bool = True) -> ReviewDue:
        svc, s = self.svc, self.settings
        now = now or utcnow()
        stamp = iso(now)
        since = iso(now - timedelta(days=30))
        used = {r["task_type"]: int(r["n"]) for r in await svc.store.fetch(
            "SELECT task_type, COUNT(*) AS n FROM usage_events WHERE ts >= ? GROUP BY task_type", (since,))}
        history: dict[str, list[Any]] = {}
        for r in await svc.store.fetch("SELECT * FROM routing_rules ORDER BY task_type, version"):
            history.setdefault(r["task_type"], []).append(r)
        experiments = await experiment_results(svc)
        tried: dict[str, dict[str, str]] = {}  # task type -> model -> date of its latest experiment
        for r in await svc.store.fetch("SELECT task_type, candidates, baseline_model, created_at, updated_at, status "
                                       "FROM experiments WHERE status != 'abandoned'"):
            models = [*_list(r["candidates"]), *([r["baseline_model"]] if r["baseline_model"] else [])]
            for model in models:
                seen = tried.setdefault(r["task_type"], {})
                seen[model] = max(seen.get(model, ""), r["created_at"])
        rules = await svc.rules(fresh=True)
        proposals: list[ProposedExperiment] = []
        for task in sorted(set(used) | set(history)):
            active = rules.get(task)
            if active is None:
                continue
            evaluated = self._last_evaluated(history.get(task, []), experiments.get(task, []))
            age = (now - parse_iso(evaluated)).days if evaluated else None
            reasons: list[str] = []
            if active.version == 0:
                reasons.append("still on the shipped default rule: never evaluated with an experiment")
            elif evaluated is None:
                reasons.append(f"rule v{active.version} was never evaluated with an experiment")
            elif age is not None and age >= s.review_after_days:
                reasons.append(f"last evaluated {age} days ago ({evaluated[:10]}), more than {s.review_after_days}")
            primary = svc.catalog.resolve(active.rule.primary)
            compared = await svc.compare_models(task, [primary.name, *(
                m.name for m in svc.catalog.in_tier(primary.tier)
                if m.name != primary.name and active.rule.required_capabilities <= m.capabilities)])
            current = next(c for c in compared.candidates if c.model == primary.name)
            cheaper = [c for c in compared.candidates if c.model != primary.name and c.cost_per_request_usd is not None
                       and current.cost_per_request_usd is not None
                       and c.cost_per_request_usd < current.cost_per_request_usd]
            fresh = [c for c in cheaper if c.model not in tried.get(task, {})]
            stale = [c for c in cheaper if c.model in tried.get(task, {}) and
                     (now - parse_iso(tried[task][c.model])).days >= s.review_after_days]
            if fresh:
                reasons.append("cheaper in the same tier and never tried on this task type: "
                               + ", ".join(c.model for c in fresh[:MAX_REVIEW_CANDIDATES]))
            if stale:
                reasons.append("cheaper in the same tier, last tried more than "
                               f"{s.review_after_days} days ago: " + ", ".join(c.model for c in stale))
            if not reasons:
                continue
            candidates = [c.model for c in [*fresh, *stale]][:MAX_REVIEW_CANDIDATES]
            if not candidates:
                reasons.append(f"no cheaper model in the {primary.tier.label} tier: re-check {primary.name}'s "
                               "quality (record quality scores, or run an experiment against a cheaper tier)")
            best = min((c for c in cheaper if c.model in candidates), key=lambda c: c.cost_per_request_usd or 0,
                       default=None)
            saving = None
            if best is not None and current.monthly_cost_usd is not None and best.monthly_cost_usd is not None:
                saving = current.monthly_cost_usd - best.monthly_cost_usd
            proposals.append(ProposedExperiment(
                task_type=task, current_model=primary.name, rule_version=active.version, last_evaluated=evaluated,
                days_since_evaluated=age, reasons=reasons, candidates=candidates,
                monthly_requests=compared.monthly_requests, estimated_monthly_saving_usd=saving,
                command=core.experiment_command(task, candidates) if candidates else None))

        raised = await self._review_alerts(proposals, now) if raise_alerts else []
        result = ReviewDue(checked_at=stamp, review_after_days=s.review_after_days, proposals=proposals,
                           alerts_raised=raised, markdown="")
        result.markdown = review_markdown(result)
        if raised:
            await self.deliver_pending()
        return result

    @staticmethod
    def _last_evaluated(versions: list[Any], experiments: list[Any]) -> str | None:
        """When an experiment last evaluated this task type's routing: a rule version citing one, or an
        experiment with judged candidates."""
        dates = [v["created_at"] for v in versions if v["evidence"] and "experiment" in v["evidence"].lower()]
        dates += [e.created_at for e in experiments]
        return max(dates) if dates else None

    async def _review_alerts(self, proposals: list[ProposedExperiment], now: datetime) -> list[AlertView]:
        stamp, day = iso(now), iso(now)[:10]

        async def work(conn: aiosqlite.Connection) -> list[int]:
            ids = []
            for p in proposals:
                seen = await conn.execute_fetchall(
                    "SELECT 1 FROM alerts WHERE kind = 'review_due' AND task_type = ? AND substr(ts, 1, 10) = ?",
                    (p.task_type, day))
                if list(seen):
                    continue
                message = f"{p.task_type} on {p.current_model} is due for review: " + "; ".join(p.reasons)
                ids.append(await _insert_alert(conn, stamp, "review_due", p.task_type, message,
                                               {"candidates": p.candidates, "command": p.command,
                                                "rule_version": None, "reasons": p.reasons}))
            return ids

        ids = await self.svc.store.transaction(work)
        if not ids:
            return []
        rows = await self.svc.store.fetch(f"SELECT * FROM alerts WHERE id IN ({','.join('?' * len(ids))})", ids)
        return [_alert(r) for r in rows]


async def _insert_alert(conn: aiosqlite.Connection, ts: str, kind: str, task_type: str | None, message: str,
                        details: dict[str, Any]) -> int:
    body = json.dumps({k: v for k, v in details.items() if v is not None}, default=str)
    cur = await conn.execute(
        "INSERT INTO alerts (ts, kind, task_type, message, details, delivered, acknowledged) "
        "VALUES (?, ?, ?, ?, ?, 0, 0)", (ts, kind, task_type, message, body))
    return int(cur.lastrowid or 0)


def _list(text: str | None) -> list[str]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


# -------------------------------------------------------------------- markdown
def check_markdown(r: CheckResult) -> str:
    if not r.monitors:
        head = "No rule version is being watched (promoting an experiment's candidate starts a watch)."
    else:
        head = render.table(
            ["monitor", "task type", "version", "status", "rated", "acceptable", "lower–upper", "threshold",
             "baseline"],
            [[m.id, m.task_type, f"v{m.rule_version} vs v{m.baseline_version}", m.status, m.rated,
              _share(m.acceptable_share), f"{_share(m.lower_bound)}–{_share(m.upper_bound)}", _share(m.threshold),
              f"{m.baseline_acceptable}/{m.baseline_rated}"] for m in r.monitors])
    lines = [head, *(f"- {m.summary}" for m in r.monitors)]
    if r.alerts_raised:
        lines.append(f"\n{len(r.alerts_raised)} alert(s) raised: " + "; ".join(a.message for a in r.alerts_raised))
    if r.webhook_configured:
        lines.append(f"webhook: {r.delivered} delivered, {r.undelivered} waiting"
                     + (f" ({'; '.join(r.delivery_errors)})" if r.delivery_errors else ""))
    elif r.alerts_raised:
        lines.append("no [alerts] webhook_url configured: see `mcp-prism alerts`")
    return "\n".join(lines)


def monitors_markdown(monitors: list[MonitorView]) -> str:
    if not monitors:
        return "No monitors yet (promoting an experiment's candidate starts one)."
    return render.table(
        ["id", "task type", "version", "baseline", "status", "until", "threshold", "auto rollback", "last checked"],
        [[m.id, m.task_type, f"v{m.rule_version}", "-" if m.baseline_version is None else f"v{m.baseline_version}",
          m.status, m.ends_at[:10], _share(m.threshold), "yes" if m.auto_rollback else "no",
          (m.last_checked or "-")[:16]] for m in monitors])


def alerts_markdown(alerts: list[AlertView], open_only: bool) -> str:
    if not alerts:
        return "No open alerts." if open_only else "No alerts."
    return render.table(
        ["id", "when", "kind", "task type", "message", "delivered", "acknowledged"],
        [[a.id, a.ts[:16], a.kind, a.task_type or "-", a.message, "yes" if a.delivered else "no",
          "yes" if a.acknowledged else "no"] for a in alerts]) + \
        ("\n\nAcknowledge one: mcp-prism alerts --ack ID" if open_only else "")


def review_markdown(r: ReviewDue) -> str:
    if not r.proposals:
        return f"Nothing is due for review (rules are re-evaluated every {r.review_after_days} days)."
    parts = [render.table(
        ["task type", "on", "last evaluated", "candidates", "saving/mo if qualified", "why"],
        [[p.task_type, f"{p.current_model} v{p.rule_version}", (p.last_evaluated or "never")[:10],
          ", ".join(p.candidates) or "-", money(p.estimated_monthly_saving_usd) if p.candidates else "-",
          "; ".join(p.reasons)] for p in r.proposals])]
    parts += [f"- {p.task_type}: `{p.command}`" for p in r.proposals if p.command]
    return "\n".join(parts)
