"""A team-level quality target: which task types go to a cheaper model, chosen for the whole team.

Beside the per-type acceptance rule ("≥ 90% of a type's prompts acceptable"), a team can state "keep
≥ X% of the strong model's quality overall at the lowest cost", or the dual "spend ≤ $Y for the best
quality". Types where the cheap model loses little quality per dollar saved go first. Pure: per-item
outcomes come in as values.

The choice is made on one half of each type's items and measured on the other half: the quality kept
there, with a one-sided lower confidence bound (delta method on the ratio of means), is what certifies
it. A choice is never judged on the items it was made on.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

EXACT_LIMIT = 20_000  # assignments enumerated exactly up to this many; greedy above
Z95 = 1.6448536269514722  # one-sided 95%


@dataclass(frozen=True, slots=True)
class Item:
    """One prompt of a task type: every model's score and cost on it."""

    scores: Mapping[str, float]
    costs: Mapping[str, Decimal]


@dataclass(frozen=True, slots=True)
class TypeData:
    task_type: str
    strong: str
    items: tuple[Item, ...]
    weight: float = 1.0  # requests each item stands for (monthly volume / items); 1 = the items themselves

    def models(self) -> list[str]:
        common = set(self.items[0].scores) if self.items else set()
        for it in self.items:
            common &= set(it.scores) & set(it.costs)
        return sorted(common)


@dataclass(frozen=True, slots=True)
class Totals:
    quality: float  # weighted sum of scores
    quality_strong: float
    cost: Decimal
    cost_strong: Decimal

    @property
    def quality_kept(self) -> float | None:
        return self.quality / self.quality_strong if self.quality_strong else None

    @property
    def cost_cut(self) -> float | None:
        return float(1 - self.cost / self.cost_strong) if self.cost_strong else None


@dataclass(frozen=True, slots=True)
class Certificate:
    """The chosen assignment measured on items it was not chosen on."""

    items: int
    quality_kept: float | None
    lower_bound: float | None  # one-sided 95% lower confidence bound of quality_kept
    cost_cut: float | None
    per_type: dict[str, float | None] = field(default_factory=dict)  # quality kept per type, held out


@dataclass(frozen=True, slots=True)
class Plan:
    objective: str  # in words
    assignment: dict[str, str]  # task type -> model
    chosen_on: Totals  # on the selection half
    method: str  # exact | greedy
    feasible: bool
    certificate: Certificate | None = None

    def cheaper(self, strong: Mapping[str, str]) -> dict[str, str]:
        return {t: m for t, m in self.assignment.items() if m != strong[t]}


def _sums(t: TypeData, model: str, items: Sequence[Item]) -> tuple[float, Decimal]:
    return (sum(it.scores[model] for it in items) * t.weight,
            sum((it.costs[model] for it in items), Decimal(0)) * Decimal(str(t.weight)))


def totals(types: Sequence[TypeData], assignment: Mapping[str, str],
           items: Mapping[str, Sequence[Item]] | None = None) -> Totals:
    q = qs = 0.0
    c = cs = Decimal(0)
    for t in types:
        its = items[t.task_type] if items is not None else t.items
        a, b = _sums(t, assignment.get(t.task_type, t.strong), its)
        sa, sb = _sums(t, t.strong, its)
        q, c, qs, cs = q + a, c + b, qs + sa, cs + sb
    return Totals(q, qs, c, cs)


def choose(types: Sequence[TypeData], *, quality_target: float | None = None, budget: Decimal | None = None,
           items: Mapping[str, Sequence[Item]] | None = None) -> Plan:
    """The assignment of task types to models meeting `quality_target` (share of the all-strong quality)
    at the lowest cost, or the best quality within `budget` (in the units of the items' costs). Exact
    over every assignment when there are few, else greedy by quality lost per dollar saved."""
    if (quality_target is None) == (budget is None):
        raise ValueError("give exactly one of a quality target or a budget")
    if quality_target is not None and not 0 < quality_target <= 1:
        raise ValueError(f"the quality target is a share of the strong model's quality in (0, 1], not {quality_target}")
    per: dict[str, dict[str, tuple[float, Decimal]]] = {}
    for t in types:
        its = items[t.task_type] if items is not None else t.items
        if not its:
            raise ValueError(f"task type {t.task_type} has no items to choose on")
        per[t.task_type] = {m: _sums(t, m, its) for m in t.models()}
    q_all = sum(per[t.task_type][t.strong][0] for t in types)
    c_all = sum((per[t.task_type][t.strong][1] for t in types), Decimal(0))
    if quality_target is not None:
        objective = f"keep >= {quality_target:.1%} of the strong models' quality at the lowest cost"
        goal = quality_target * q_all

        def ok(q: float, c: Decimal) -> bool:
            return q >= goal - 1e-9

        def better(a: tuple[float, Decimal], b: tuple[float, Decimal]) -> bool:
            return (a[1], -a[0]) < (b[1], -b[0])
    else:
        assert budget is not None
        objective = f"the best quality for at most {budget} spent"

        def ok(q: float, c: Decimal) -> bool:
            return c <= budget

        def better(a: tuple[float, Decimal], b: tuple[float, Decimal]) -> bool:
            return (-a[0], a[1]) < (-b[0], b[1])

    names = [t.task_type for t in types]
    options = [sorted(per[n], key=lambda m, n=n: (per[n][m][1], m)) for n in names]
    size = math.prod(len(o) for o in options)
    strong_pick = {t.task_type: t.strong for t in types}
    best: tuple[float, Decimal] | None = None
    pick: dict[str, str] = dict(strong_pick)
    if size <= EXACT_LIMIT:
        method = "exact"
        for combo in itertools.product(*options):
            q = sum(per[n][m][0] for n, m in zip(names, combo, strict=True))
            c = sum((per[n][m][1] for n, m in zip(names, combo, strict=True)), Decimal(0))
            if ok(q, c) and (best is None or better((q, c), best)):
                best, pick = (q, c), dict(zip(names, combo, strict=True))
    else:
        method = "greedy"
        q, c = q_all, c_all
        current = dict(strong_pick)
        # From all-strong, take the move losing the least quality per dollar saved: for a target, while
        # the target still holds; for a budget, until the spend fits it.
        while not (quality_target is None and ok(q, c)):
            moves = []
            for n in names:
                q0, c0 = per[n][current[n]]
                for m in per[n]:
                    q1, c1 = per[n][m]
                    saved = c0 - c1
                    if saved <= 0:
                        continue
                    moves.append(((q0 - q1) / float(saved), n, m, q1 - q0, c1 - c0))
            moves.sort()
            for _, n, m, dq, dc in moves:
                if quality_target is not None and not ok(q + dq, c + dc):
                    continue
                current[n], q, c = m, q + dq, c + dc
                break
            else:
                break
        if ok(q, c):
            best, pick = (q, c), current
    feasible = best is not None
    return Plan(objective=objective, assignment=pick, chosen_on=totals(types, pick, items), method=method,
                feasible=feasible)


def certify(types: Sequence[TypeData], assignment: Mapping[str, str], items: Mapping[str, Sequence[Item]],
            z: float = Z95) -> Certificate:
    """Quality kept by `assignment` on `items` (held out), with a one-sided lower bound: the delta-method
    standard error of the ratio of weighted sums, from the per-item residuals routed - ratio * strong."""
    tot = totals(types, assignment, items)
    ratio = tot.quality_kept
    per_type: dict[str, float | None] = {}
    lower = None
    if ratio is not None:
        var = 0.0
        for t in types:
            model = assignment.get(t.task_type, t.strong)
            for it in items[t.task_type]:
                e = (it.scores[model] - ratio * it.scores[t.strong]) * t.weight
                var += e * e
            one = totals([t], assignment, items)
            per_type[t.task_type] = one.quality_kept
        lower = ratio - z * math.sqrt(var) / tot.quality_strong
    return Certificate(items=sum(len(items[t.task_type]) for t in types), quality_kept=ratio, lower_bound=lower,
                       cost_cut=tot.cost_cut, per_type=per_type)


def halves(types: Sequence[TypeData], seed: int = 0) -> tuple[dict[str, list[Item]], dict[str, list[Item]]]:
    """Each type's items split in two by a seeded shuffle: (selection half, certification half)."""
    a: dict[str, list[Item]] = {}
    b: dict[str, list[Item]] = {}
    for t in types:
        idx = list(range(len(t.items)))
        random.Random(f"{seed}:{t.task_type}").shuffle(idx)
        cut = (len(idx) + 1) // 2
        a[t.task_type] = [t.items[i] for i in idx[:cut]]
        b[t.task_type] = [t.items[i] for i in idx[cut:]]
    return a, b


def plan_out_of_sample(types: Sequence[TypeData], *, quality_target: float | None = None,
                       budget: Decimal | None = None, seed: int = 0) -> Plan:
    """Choose on one half of every type's items, certify on the other. A budget is in the units of the
    full data's costs, so the selection half is held to half of it."""
    usable = [t for t in types if len(t.items) >= 2]
    a, b = halves(usable, seed)
    share = None
    if budget is not None:
        full = sum((_sums(t, t.strong, t.items)[1] for t in usable), Decimal(0))
        half = sum((_sums(t, t.strong, a[t.task_type])[1] for t in usable), Decimal(0))
        share = budget * (half / full) if full else budget
    plan = choose(usable, quality_target=quality_target, budget=share, items=a)
    cert = certify(usable, plan.assignment, b)
    return Plan(objective=plan.objective, assignment=plan.assignment, chosen_on=plan.chosen_on, method=plan.method,
                feasible=plan.feasible, certificate=cert)
