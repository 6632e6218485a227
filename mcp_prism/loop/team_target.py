"""A team-level quality target over the outcome data (experiments, imported outcomes): which task types
go to a cheaper model so the team keeps >= X% of the strong models' quality at the lowest cost (or the best
quality within a budget). Chosen on one half of every type's items, certified on the other (core/portfolio).
`apply` promotes the chosen set as rule versions, each watched by a monitor like any promotion.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from mcp_prism import render
from mcp_prism.core import portfolio as pf
from mcp_prism.core.stats import clopper_pearson_lower
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput
from mcp_prism.service import PrismService
from mcp_prism.store.routers import experiment_outcomes, insert_monitor


class TypeChoice(BaseModel):
    task_type: str
    strong: str
    model: str = Field(description="the model the plan sends this task type to")
    items: int
    quality_kept_held_out: float | None = Field(description="this type's quality on the certification half")
    acceptable_lower_bound: float | None = Field(
        description="95% Clopper-Pearson lower bound of the share of held-out items where the chosen model is as "
                    "good as the strong one: the threshold its monitor watches")
    configured: bool = Field(description="a configured task type: promote can apply it")


class TeamPlan(BaseModel):
    objective: str
    method: str = Field(description="exact (every assignment) or greedy by quality lost per dollar saved")
    feasible: bool
    seed: int
    types: list[TypeChoice]
    to_cheaper: list[str]
    chosen_quality_kept: float | None = Field(description="on the selection half (where the set was chosen)")
    chosen_cost_cut: float | None
    held_out_items: int
    quality_kept: float | None = Field(description="on the other half: what certifies the choice")
    quality_lower_bound: float | None = Field(description="one-sided 95% lower confidence bound of quality_kept")
    cost_cut: float | None = Field(description="1 - cost / cost with every type on its strong model, held out")
    certified: bool | None = Field(description="for a quality target: the lower bound reaches it")
    notes: list[str]
    markdown: str = ""


class TeamPromotion(BaseModel):
    plan: TeamPlan
    promoted: dict[str, int] = Field(description="task type -> new rule version")
    monitors: dict[str, int] = Field(description="task type -> monitor id")
    skipped: list[str]
    markdown: str = ""


def _types(outcomes: dict[str, list[Any]]) -> tuple[list[pf.TypeData], list[str]]:
    types: list[pf.TypeData] = []
    notes: list[str] = []
    for task, rows in sorted(outcomes.items()):
        strong = Counter(r.baseline for r in rows).most_common(1)[0][0]
        items = []
        for r in rows:
            if r.baseline != strong:
                continue
            costs = {m: Decimal(c) for m, c in r.costs.items() if c is not None and m in r.scores}
            if strong in costs:
                items.append(pf.Item(scores=dict(r.scores), costs=costs))
        if len(items) < 2:
            notes.append(f"{task}: fewer than 2 priced items with the strong model's outcome; left out")
            continue
        types.append(pf.TypeData(task, strong, tuple(items)))
    return types, notes


async def plan(svc: PrismService, *, quality_target: float | None = None, budget: Decimal | None = None,
               seed: int = 0) -> TeamPlan:
    if (quality_target is None) == (budget is None):
        raise InvalidInput("give a quality target (like 0.95: keep 95% of the strong models' quality) or a budget "
                           "in USD, not both")
    if quality_target is not None and not 0 < quality_target <= 1:
        raise InvalidInput(f"quality target must be a share in (0, 1], like 0.95; got {quality_target}")
    if budget is not None and budget < 0:
        raise InvalidInput(f"budget must be >= 0 USD, got {budget}")
    types, notes = _types(await experiment_outcomes(svc.store))
    if not types:
        raise InvalidInput("no outcome data to plan with: run experiments or import outcomes first")
    try:
        p = pf.plan_out_of_sample(types, quality_target=quality_target, budget=budget, seed=seed)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    c = p.certificate
    assert c is not None
    _, held = pf.halves(types, seed)
    choices = []
    for t in types:
        model = p.assignment[t.task_type]
        its = held[t.task_type]
        ok = sum(1 for it in its if it.scores[model] >= it.scores[t.strong])
        choices.append(TypeChoice(
            task_type=t.task_type, strong=t.strong, model=model, items=len(t.items),
            quality_kept_held_out=c.per_type.get(t.task_type),
            acceptable_lower_bound=clopper_pearson_lower(ok, len(its)) if its else None,
            configured=t.task_type in svc.task_types))
    notes.append("items weigh equally: the outcome data stands for the team's traffic mix")
    if budget is not None:
        notes.append("the budget is in USD over the outcome items; the selection half is held to its share of it")
    certified = None if quality_target is None or c.lower_bound is None else c.lower_bound >= quality_target
    out = TeamPlan(
        objective=p.objective, method=p.method, feasible=p.feasible, seed=seed, types=choices,
        to_cheaper=sorted(ch.task_type for ch in choices if ch.model != ch.strong),
        chosen_quality_kept=p.chosen_on.quality_kept, chosen_cost_cut=p.chosen_on.cost_cut,
        held_out_items=c.items, quality_kept=c.quality_kept, quality_lower_bound=c.lower_bound, cost_cut=c.cost_cut,
        certified=certified, notes=notes)
    out.markdown = plan_markdown(out)
    return out


async def apply(svc: PrismService, *, quality_target: float | None = None, budget: Decimal | None = None,
                seed: int = 0, author: str, reason: str, monitor_days: int = 14,
                auto_rollback: bool = False) -> TeamPromotion:
    """Promote the plan: each configured task type it sends to a cheaper model gets a rule version with that
    model as primary and a monitor at its held-out acceptable lower bound."""
    if not author.strip() or not reason.strip():
        raise InvalidInput("author and reason are required: who applies the plan and why")
    if not 1 <= monitor_days <= 365:
        raise InvalidInput(f"monitor_days must be from 1 to 365, not {monitor_days}")
    p = await plan(svc, quality_target=quality_target, budget=budget, seed=seed)
    if not p.feasible:
        raise InvalidInput(f"the plan is not feasible ({p.objective}); nothing was changed")
    promoted: dict[str, int] = {}
    monitors: dict[str, int] = {}
    skipped: list[str] = []
    rules = await svc.rules(fresh=True)
    for ch in p.types:
        if ch.model == ch.strong:
            continue
        if not ch.configured:
            skipped.append(f"{ch.task_type}: not a configured task type (add it to the config to route it)")
            continue
        rule = rules[ch.task_type].rule.to_json()
        model = svc.catalog.resolve(ch.model).name
        if rule["primary"] == model:
            skipped.append(f"{ch.task_type}: already on {model}")
            continue
        rule["primary"] = model
        rule["fallbacks"] = [f for f in rule.get("fallbacks", []) if f != model]
        rule.pop("router", None)
        evidence = (f"team target: {p.objective}; held out quality kept {p.quality_kept} (lower bound "
                    f"{p.quality_lower_bound}), cost cut {p.cost_cut}")
        change = await svc.update_routing_rule(rule, author=author, reason=reason, evidence=evidence)
        assert change.new_version is not None
        now = utcnow()
        threshold = min(0.95, max(0.5, ch.acceptable_lower_bound or 0.5))
        monitors[ch.task_type] = await insert_monitor(
            svc.store, task_type=ch.task_type, rule_version=change.new_version,
            baseline_version=change.previous_version, started_at=iso(now),
            ends_at=iso(now + timedelta(days=monitor_days)), threshold=threshold, auto_rollback=auto_rollback,
            details={"team_target": p.objective, "model": model, "strong": ch.strong, "author": author.strip()})
        promoted[ch.task_type] = change.new_version
    out = TeamPromotion(plan=p, promoted=promoted, monitors=monitors, skipped=skipped)
    out.markdown = p.markdown + "\n\n" + "\n".join(
        [f"- promoted {t} as rule v{v}, monitor {monitors[t]}" for t, v in promoted.items()]
        + [f"- skipped {s}" for s in skipped])
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def plan_markdown(p: TeamPlan) -> str:
    head = (f"### Team-level target: {p.objective}\n\nchosen ({p.method}) on one half of each task type's items, "
            f"measured on the other ({p.held_out_items} items): quality kept **{_pct(p.quality_kept)}** "
            f"(95% lower bound {_pct(p.quality_lower_bound)}), cost cut **{_pct(p.cost_cut)}**"
            + ("" if p.certified is None else f"; {'certified' if p.certified else 'NOT certified'} at the target")
            + f". On the selection half: {_pct(p.chosen_quality_kept)} kept, {_pct(p.chosen_cost_cut)} cut.")
    if not p.feasible:
        head += "\n\nNo assignment meets it on the selection half: everything stays on the strong models."
    table = render.table(["task type", "model", "strong", "items", "quality kept (held out)", "acceptable >="],
                         [[c.task_type, c.model, c.strong, c.items, _pct(c.quality_kept_held_out),
                           _pct(c.acceptable_lower_bound)] for c in p.types])
    return "\n".join([head, "", table, *(f"\nnote: {n}" for n in p.notes)])
