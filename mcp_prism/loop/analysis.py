"""Analyse: the task-model matrix — where each task type runs, where it should run, and the evidence.

Evidence, strongest first: a qualified experiment, then recorded quality of a cheaper model on the same
task type (only these two make a cheaper model deployable), then signals of under-provisioning (low
quality, errors, rework: an upgrade is recommended), and last a tier mismatch alone, which is a
hypothesis to test with an experiment, never a recommendation to deploy.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from mcp_prism import render
from mcp_prism.core import analysis as core
from mcp_prism.core.catalog import ModelSpec
from mcp_prism.core.report import Totals, money, monthly, pct, repriced
from mcp_prism.core.routing import DEFAULT_PROFILES, FALLBACK_PROFILE, TIER_ALIASES
from mcp_prism.core.stats import Qualification
from mcp_prism.core.tasks import Tier
from mcp_prism.core.usage import parse_iso
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.loop import team_target
from mcp_prism.service import PrismService

EvidenceKind = Literal["experiment", "observed_quality", "low_quality", "errors", "rework", "tier_mismatch"]
Action = Literal["keep", "switch", "upgrade", "test"]
MAX_HYPOTHESIS_CANDIDATES = 3


class Evidence(BaseModel):
    kind: EvidenceKind
    summary: str
    experiment_id: str | None = None
    model: str | None = None


class ModelShare(BaseModel):
    model: str
    tier: str | None = Field(description="null when the model is not in the catalog")
    requests: int
    share_pct: float
    monthly_cost_usd: Decimal
    rated_requests: int
    avg_quality: float | None
    acceptable_share: float | None
    error_share: float


class TaskAnalysis(BaseModel):
    task_type: str
    task_tier: str
    current_models: list[ModelShare] = Field(description="what the task type ran on in the period, most used first")
    rule_model: str
    rule_version: int = Field(description="0 = the shipped default rule")
    action: Action = Field(description="keep | switch (deployable, evidenced) | upgrade (under-provisioned) | "
                                       "test (a hypothesis: run the proposed experiment first)")
    recommended_model: str | None
    deployable: bool
    monthly_requests: int
    monthly_cost_now_usd: Decimal
    monthly_cost_after_usd: Decimal | None
    monthly_saving_usd: Decimal | None = Field(description="positive saves money; negative for an upgrade")
    rated_requests: int
    avg_quality: float | None
    acceptable_share: float | None
    acceptable_lower_bound: float | None
    error_share: float
    rework_share: float | None = Field(description="share of requests repeating one from the same user minutes "
                                                   "earlier; null when no user is recorded")
    evidence: list[Evidence] = Field(description="strongest first")
    rationale: str
    proposed_experiment: str | None = Field(default=None, description="the command that would test the hypothesis")


class Hypothesis(BaseModel):
    task_type: str
    current_model: str
    candidates: list[str]
    potential_monthly_saving_usd: Decimal | None = Field(description="if the first candidate qualifies")
    rationale: str
    command: str


class AnalysisResult(BaseModel):
    since: str
    until: str
    days: int
    acceptable_score: float
    min_rated: int
    rows: list[TaskAnalysis]
    over_provisioned: list[str] = Field(description="task types where a cheaper model qualified or is a "
                                                    "likely candidate")
    under_provisioned: list[str]
    hypotheses: list[Hypothesis]
    monthly_cost_now_usd: Decimal
    monthly_cost_after_usd: Decimal = Field(description="with the deployable recommendations only")
    monthly_saving_usd: Decimal
    monthly_saving_pct: float | None
    potential_monthly_saving_usd: Decimal = Field(description="further saving if every hypothesis qualified")
    potential_monthly_cost_usd: Decimal
    notes: list[str]
    markdown: str
    team_plan: team_target.TeamPlan | None = Field(
        default=None, description="with a quality target or budget: the task types a team-level target sends to "
                                  "cheaper models, chosen on half the outcome data and certified on the other")


class _ExperimentResult:
    """One candidate's verdict in one experiment."""

    def __init__(self, experiment_id: str, model: str, q: Qualification, created_at: str) -> None:
        self.experiment_id, self.model, self.q, self.created_at = experiment_id, model, q, created_at


async def experiment_results(svc: PrismService, task_type: str | None = None) -> dict[str, list[_ExperimentResult]]:
    """Every candidate's qualification in every experiment that was not abandoned, per task type."""
    sql = "SELECT id, task_type, candidates, evaluation, created_at FROM experiments WHERE status != 'abandoned'"
    params: list[Any] = []
    if task_type:
        sql += " AND task_type = ?"
        params.append(task_type)
    experiments = await svc.store.fetch(sql + " ORDER BY created_at", params)
    if not experiments:
        return {}
    counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for r in await svc.store.fetch(
            "SELECT experiment_id, model, method, verdict, COUNT(*) AS n FROM evaluations "
            "GROUP BY experiment_id, model, method, verdict"):
        counts[(r["experiment_id"], r["model"], r["method"])][r["verdict"]] = int(r["n"])
    out: dict[str, list[_ExperimentResult]] = defaultdict(list)
    for e in experiments:
        evaluation = _json(e["evaluation"], {})
        method, _, _ = core.evaluation_settings(evaluation)
        for model in _json(e["candidates"], []):
            verdicts = counts.get((e["id"], model, method))
            if verdicts:
                out[e["task_type"]].append(_ExperimentResult(
                    e["id"], model, core.qualify_counts(verdicts, evaluation), e["created_at"]))
    return out


def _json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


class AnalysisService:
    def __init__(self, svc: PrismService, config: Mapping[str, Any] | None = None) -> None:
        self.svc = svc
        self.settings = core.LoopSettings.from_config(config)

    async def analyze(self, days: int = 30, *, quality_target: float | None = None, budget: Decimal | None = None,
                      seed: int = 0) -> AnalysisResult:
        if not 1 <= days <= 3660:
            raise InvalidInput("days must be between 1 and 3660")
        plan = None
        if quality_target is not None or budget is not None:
            plan = await team_target.plan(self.svc, quality_target=quality_target, budget=budget, seed=seed)
        svc, s = self.svc, self.settings
        report = await svc.cost_report(days=days)  # the period and monthly span every report uses
        span = report.days
        by_model = await svc.store.rollup(report.since, report.until, ["task_type", "model"])
        quality = await self._quality(report.since, report.until)
        rework = await self._rework(report.since, report.until)
        experiments = await experiment_results(svc)
        rules = await svc.rules()

        grouped: dict[str, list[tuple[str, Totals]]] = defaultdict(list)
        for r in by_model:
            grouped[r["task_type"]].append((r["model"], Totals.from_row(r)))
        rows: list[TaskAnalysis] = []
        hypotheses: list[Hypothesis] = []
        notes: list[str] = []
        for task, models in grouped.items():
            models.sort(key=lambda mt: (-mt[1].requests, mt[0]))
            row, hypothesis = self._analyse_task(task, models, span, quality.get(task, {}), rework.get(task),
                                                 experiments.get(task, []), rules.get(task))
            rows.append(row)
            if hypothesis:
                hypotheses.append(hypothesis)
            if any(t.unpriced for _, t in models):
                notes.append(f"{task}: some requests are on unpriced models; their cost is not projected")
        rows.sort(key=lambda x: -x.monthly_cost_now_usd)
        hypotheses.sort(key=lambda h: -(h.potential_monthly_saving_usd or 0))

        now_total = report.monthly_projection_usd
        deployable = sum((x.monthly_saving_usd for x in rows if x.deployable and x.monthly_saving_usd is not None),
                         Decimal(0))
        potential = sum((h.potential_monthly_saving_usd for h in hypotheses
                         if h.potential_monthly_saving_usd is not None and h.potential_monthly_saving_usd > 0),
                        Decimal(0))
        after = now_total - deployable
        if report.unpriced_requests:
            notes.append(f"{report.unpriced_requests:,} unpriced requests are counted at $0")
        if not rows:
            notes.append(f"no usage recorded between {report.since} and {report.until}: record usage "
                         "(MCP record_usage, the gateway, or `mcp-prism record`) and analyse again")
        result = AnalysisResult(
            since=report.since, until=report.until, days=span, acceptable_score=s.acceptable_score,
            min_rated=s.min_rated, rows=rows,
            over_provisioned=[x.task_type for x in rows if x.action in ("switch", "test")],
            under_provisioned=[x.task_type for x in rows if x.action == "upgrade"
                               or any(e.kind in ("low_quality", "errors", "rework") for e in x.evidence)],
            hypotheses=hypotheses, monthly_cost_now_usd=now_total, monthly_cost_after_usd=after,
            monthly_saving_usd=deployable, monthly_saving_pct=pct(deployable, now_total),
            potential_monthly_saving_usd=potential, potential_monthly_cost_usd=after - potential,
            notes=notes, markdown="", team_plan=plan,
        )
        result.markdown = analysis_markdown(result) + (f"\n\n{plan.markdown}" if plan else "")
        return result

    # ---------------------------------------------------------------- reads
    async def _quality(self, since: str, until: str) -> dict[str, dict[str, core.ObservedQuality]]:
        rows = await self.svc.store.fetch(
            "SELECT task_type, model, COUNT(*) AS rated, SUM(quality >= ?) AS acceptable, AVG(quality) AS mean, "
            "GROUP_CONCAT(DISTINCT quality_source) AS sources FROM usage_events "
            "WHERE ts >= ? AND ts < ? AND quality IS NOT NULL GROUP BY task_type, model",
            (self.settings.acceptable_score, since, until))
        out: dict[str, dict[str, core.ObservedQuality]] = defaultdict(dict)
        for r in rows:
            out[r["task_type"]][r["model"]] = core.observed_quality(
                int(r["rated"]), int(r["acceptable"] or 0), r["mean"], (r["sources"] or "").split(","))
        return out

    async def _rework(self, since: str, until: str) -> dict[str, tuple[int, int]]:
        """Per task type: (rework requests, requests with a user)."""
        rows = await self.svc.store.fetch(
            "SELECT task_type, user, ts FROM usage_events WHERE ts >= ? AND ts < ? AND user IS NOT NULL "
            "AND user != '' ORDER BY task_type, user, ts", (since, until))
        window = timedelta(minutes=self.settings.rework_minutes)
        times: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for r in rows:
            times[(r["task_type"], r["user"])].append(parse_iso(r["ts"]))
        out: dict[str, tuple[int, int]] = {}
        for (task, _user), ts in times.items():
            repeats, total = out.get(task, (0, 0))
            out[task] = (repeats + core.rework_count(ts, window, self.settings.rework_burst), total + len(ts))
        return out

    # ---------------------------------------------------------------- one task type
    def _reprice(self, models: Sequence[tuple[str, Totals]], target: str, span: int) -> Decimal | None:
        """Monthly cost of all of a task type's requests on `target` (the report's re-pricing)."""
        total = Decimal(0)
        for model, t in models:
            if t.unpriced:
                return None
            if model == target:
                total += monthly(t.cost_usd, span)
                continue
            cost = repriced(t, lambda u: self.svc.catalog.cost(target, u).usd)
            if cost is None:
                return None
            total += monthly(cost, span)
        return total

    def _spec(self, name: str) -> ModelSpec | None:
        try:
            return self.svc.catalog.resolve(name)
        except UnknownName:
            return None

    def _analyse_task(self, task: str, models: list[tuple[str, Totals]], span: int,
                      quality: dict[str, core.ObservedQuality], rework: tuple[int, int] | None,
                      experiments: list[_ExperimentResult], active: Any) -> tuple[TaskAnalysis, Hypothesis | None]:
        svc, s = self.svc, self.settings
        spec = svc.task_types.get(task)
        task_tier = spec.tier if spec else Tier.STANDARD
        totals = Totals()
        for _, t in models:
            totals.add(t)
        now = monthly(totals.cost_usd, span)
        dominant = models[0][0]
        dom_spec = self._spec(dominant)
        rule_model = svc.catalog.resolve(active.rule.primary).name if active else dominant

        # Quality over all the task type's current models.
        rated = sum(q.rated for q in quality.values())
        acceptable = sum(q.acceptable for q in quality.values())
        mean = (sum((q.mean or 0) * q.rated for q in quality.values()) / rated) if rated else None
        overall = core.observed_quality(rated, acceptable, mean, [x for q in quality.values() for x in q.sources])
        error_share = totals.errors / totals.requests if totals.requests else 0.0
        rework_share = rework[0] / rework[1] if rework and rework[1] else None

        shares = [ModelShare(
            model=m, tier=sp.tier.label if (sp := self._spec(m)) else None, requests=t.requests,
            share_pct=round(t.requests / totals.requests * 100, 1) if totals.requests else 0.0,
            monthly_cost_usd=monthly(t.cost_usd, span), rated_requests=quality[m].rated if m in quality else 0,
            avg_quality=quality[m].mean if m in quality else None,
            acceptable_share=quality[m].share if m in quality else None,
            error_share=t.errors / t.requests if t.requests else 0.0,
        ) for m, t in models]

        evidence: list[Evidence] = []
        action: Action = "keep"
        recommended: str | None = None
        after: Decimal | None = now
        rationale = "no evidence for a change"
        command: str | None = None
        hypothesis: Hypothesis | None = None

        # Under-provisioned: quality, errors, rework on what the task type runs on now.
        if core.low_quality(overall, s):
            evidence.append(Evidence(kind="low_quality", summary=(
                f"{overall.acceptable}/{overall.rated} rated requests acceptable (quality >= {s.acceptable_score}), "
                f"mean {overall.mean:.2f}; upper bound {overall.upper:.1%} < threshold {overall.threshold:.0%}"
                if overall.mean is not None else "low recorded quality")))
        if totals.requests >= s.min_rated and error_share > s.max_error_share:
            evidence.append(Evidence(kind="errors", summary=(
                f"{totals.errors}/{totals.requests} requests failed or were retried ({error_share:.1%} > "
                f"{s.max_error_share:.0%})")))
        if rework and rework[1] >= s.min_rated and rework_share is not None and rework_share > s.rework_share:
            evidence.append(Evidence(kind="rework", summary=(
                f"{rework[0]}/{rework[1]} requests repeat one of the same user within {s.rework_minutes:g} "
                f"minutes ({rework_share:.1%} > {s.rework_share:.0%})")))

        qualified = [e for e in experiments if e.q.qualified]
        failed = {e.model: e for e in experiments if not e.q.qualified and e.q.samples_needed is None}
        if evidence:  # quality first: never save money on a task type that is already failing
            target_tier = core.upgrade_tier(dom_spec.tier) if dom_spec else task_tier
            if target_tier is None:
                rationale = (f"{dominant} is already a top-tier model: look at the prompts, context and "
                             "tooling of this task type rather than the model")
            else:
                target = svc.catalog.resolve(TIER_ALIASES[target_tier]).name
                action, recommended = "upgrade", target
                after = self._reprice(models, target, span)
                rationale = (f"under-provisioned on {dominant}: upgrade to {target}, the "
                             f"{target_tier.label} tier's default model, and measure again")
        else:
            best: tuple[Decimal, str, Evidence] | None = None
            for e in qualified:
                cost = self._reprice(models, e.model, span)
                if cost is not None and cost < now and (best is None or now - cost > best[0]):
                    best = (now - cost, e.model, Evidence(
                        kind="experiment", experiment_id=e.experiment_id, model=e.model,
                        summary=f"experiment {e.experiment_id}: {e.model} {e.q.summary()}"))
            if best is None:
                for m, q in quality.items():
                    if m == dominant or not core.qualifies(q, s) or self._spec(m) is None:
                        continue
                    cost = self._reprice(models, m, span)
                    if cost is not None and cost < now and (best is None or now - cost > best[0]):
                        best = (now - cost, m, Evidence(
                            kind="observed_quality", model=m,
                            summary=f"recorded quality of {m} on {task}: {q.qualification.summary()}"))
            if best is not None:
                action, recommended = "switch", best[1]
                after = now - best[0]
                evidence.append(best[2])
                rationale = f"{recommended} is cheaper and its quality on {task} is proven ({best[2].kind})"
            elif dom_spec is not None and dom_spec.tier > task_tier:
                candidates = self._candidates(task, task_tier, dom_spec, active, set(failed))
                if candidates:
                    action, recommended = "test", candidates[0]
                    after = self._reprice(models, candidates[0], span)
                    # the baseline is what the traffic ran on (the rule may already name a candidate)
                    command = core.experiment_command(task, candidates, baseline=dominant)
                    summary = (f"tier mismatch only: {task} is a {task_tier.label}-tier task on {dominant} "
                               f"({dom_spec.tier.label} tier); a hypothesis to test, not to deploy")
                    evidence.append(Evidence(kind="tier_mismatch", model=candidates[0], summary=summary))
                    rationale = summary
                    hypothesis = Hypothesis(task_type=task, current_model=dominant, candidates=candidates,
                                            potential_monthly_saving_usd=core.saving(now, after),
                                            rationale=summary, command=command)
        for model, e in failed.items():
            evidence.append(Evidence(kind="experiment", experiment_id=e.experiment_id, model=model,
                                     summary=f"experiment {e.experiment_id}: {model} {e.q.summary()}"))
        evidence.sort(key=lambda ev: core.evidence_rank(ev.kind))
        if recommended == dominant:
            action, recommended, after = "keep", None, now
        deployable = action in ("switch", "upgrade")
        return TaskAnalysis(
            task_type=task, task_tier=task_tier.label, current_models=shares, rule_model=rule_model,
            rule_version=active.version if active else 0, action=action, recommended_model=recommended,
            deployable=deployable, monthly_requests=int(monthly(Decimal(totals.requests), span)),
            monthly_cost_now_usd=now, monthly_cost_after_usd=after if action != "keep" else now,
            monthly_saving_usd=core.saving(now, after) if action != "keep" else Decimal(0),
            rated_requests=rated, avg_quality=mean, acceptable_share=overall.share,
            acceptable_lower_bound=overall.qualification.lower_bound if rated else None,
            error_share=error_share, rework_share=rework_share, evidence=evidence, rationale=rationale,
            proposed_experiment=command,
        ), hypothesis

    def _candidates(self, task: str, task_tier: Tier, current: ModelSpec, active: Any,
                    failed: set[str]) -> list[str]:
        """Models to test a tier-mismatch hypothesis with: the rule's own primary when it sits lower, then
        the cheapest hosted models of the task's tier that have the rule's capabilities and no failed
        experiment on this task type."""
        svc = self.svc
        caps = active.rule.required_capabilities if active else frozenset()
        profile = DEFAULT_PROFILES.get(task, FALLBACK_PROFILE)
        out: list[str] = []
        if active:
            primary = svc.catalog.resolve(active.rule.primary)
            if task_tier <= primary.tier < current.tier and primary.name not in failed:
                out.append(primary.name)
        pool = [m for m in svc.catalog.in_tier(task_tier)
                if caps <= m.capabilities and m.name not in failed and svc.catalog.cost(m.name, profile).usd]
        pool.sort(key=lambda m: (svc.catalog.cost(m.name, profile).usd, m.name))
        for m in pool:
            if len(out) >= MAX_HYPOTHESIS_CANDIDATES:
                break
            if m.name not in out and m.name != current.name:
                out.append(m.name)
        return out


# -------------------------------------------------------------------- markdown
def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _money_delta(v: Decimal | None) -> str:
    if v is None:
        return "unpriced"
    return ("-" if v < 0 else "") + money(abs(v))


def analysis_markdown(r: AnalysisResult) -> str:
    parts = [f"### Task-model analysis {r.since} .. {r.until} ({r.days} day(s) of data)\n"]
    parts.append(
        f"Monthly cost now **{money(r.monthly_cost_now_usd)}**; with the deployable recommendations "
        f"**{money(r.monthly_cost_after_usd)}** (saving {_money_delta(r.monthly_saving_usd)}"
        + (f", {r.monthly_saving_pct:.1f}%" if r.monthly_saving_pct is not None else "") + ")."
        + (f" If the hypotheses below hold: a further {money(r.potential_monthly_saving_usd)} "
           f"(to {money(r.potential_monthly_cost_usd)})." if r.potential_monthly_saving_usd else "") + "\n")
    if r.rows:
        parts.append(render.table(
            ["task type", "runs on", "rule", "action", "recommended", "requests/mo", "now/mo", "saving/mo",
             "quality", "errors", "evidence"],
            [[x.task_type, ", ".join(f"{m.model} {m.share_pct:g}%" for m in x.current_models),
              f"{x.rule_model} v{x.rule_version}", x.action, x.recommended_model or "-", f"{x.monthly_requests:,}",
              money(x.monthly_cost_now_usd), _money_delta(x.monthly_saving_usd),
              "-" if x.avg_quality is None else f"{x.avg_quality:.2f} ({x.rated_requests})", _pct(x.error_share),
              x.evidence[0].kind if x.evidence else "-"] for x in r.rows]))
    deploy = [x for x in r.rows if x.deployable]
    if deploy:
        parts.append("\n#### Recommendations (evidenced)\n")
        for x in deploy:
            parts.append(f"- **{x.task_type}** → {x.recommended_model} ({_money_delta(x.monthly_saving_usd)}/month): "
                         f"{x.rationale}")
            parts += [f"  - {e.kind}: {e.summary}" for e in x.evidence]
    if r.hypotheses:
        parts.append("\n#### Hypotheses to test (not to deploy yet)\n")
        for h in r.hypotheses:
            parts.append(f"- **{h.task_type}** on {h.current_model}: try {', '.join(h.candidates)} — potential "
                         f"{_money_delta(h.potential_monthly_saving_usd)}/month. `{h.command}`")
    if r.under_provisioned:
        parts.append(f"\nUnder-provisioned: {', '.join(r.under_provisioned)}.")
    parts += [f"\nnote: {n}" for n in r.notes]
    return "\n".join(parts)
