"""Learned routers, live: train one per task type from the team's outcome data, store it versioned, and put
it to work in a "mixed" rule (the task type goes to the cheap model unless the router scores a request as
hard) that is monitored and rolled back like any promoted rule.

Training holds out a test part first (duplicates kept together), trains on the rest — the labeling and the
threshold chosen by cross-validation there (core/learned_router.py) — and measures the frozen router on
the held-out part: that is the expected quality and cost shown, with 95% intervals. The stored router is
the one measured (it is not refitted on the held-out part afterwards).
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
from pydantic import BaseModel, Field

from mcp_prism.core import learned_router as lr
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput
from mcp_prism.results import RuleChange
from mcp_prism.service import PrismService
from mcp_prism.store.routers import (
    OutcomeRow,
    RouterRow,
    add_router_version,
    experiment_outcomes,
    get_router,
    insert_monitor,
    list_routers,
)

MIN_ITEMS = 40
MONITOR_AUTHOR = "mcp-prism monitor"


class RouterView(BaseModel):
    task_type: str
    version: int
    cheap: str
    strong: str
    labeling: str = Field(description="ok: weak as good as strong; gap: strong-minus-weak in 3 classes")
    threshold: float | str
    trained_on: int
    held_out: int
    target: float
    expected: dict[str, Any] = Field(description="on the held-out items, threshold frozen: quality_kept and "
                                                 "cost_cut with 95% intervals, strong_share")
    calibration: dict[str, Any] | None
    experiments: list[str]
    author: str
    reason: str
    created_at: str
    markdown: str = ""


class RouterPromotion(BaseModel):
    task_type: str
    router_version: int
    cheap: str
    strong: str
    previous_version: int
    new_version: int
    monitor_id: int
    monitor_ends_at: str
    threshold: float
    auto_rollback: bool
    change: RuleChange
    markdown: str = ""


def prompt_text(prompt: str) -> str:
    """The text a router reads from a stored item: the first user message of a JSON conversation (what is
    known when its first call is routed), else the prompt itself."""
    if prompt.startswith("{"):
        try:
            data = json.loads(prompt)
        except ValueError:
            return prompt
        for m in data.get("messages", []) if isinstance(data, dict) else []:
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
    return prompt


def _view(row: RouterRow) -> RouterView:
    s = row.summary
    v = RouterView(task_type=row.task_type, version=row.version, cheap=s["cheap"], strong=s["strong"],
                   labeling=row.body["mode"], threshold=row.body["threshold"], trained_on=s["trained_on"],
                   held_out=s["held_out"], target=s["target"], expected=s["expected"],
                   calibration=row.body.get("calibration"), experiments=s.get("experiments", []), author=row.author,
                   reason=row.reason, created_at=row.created_at)
    v.markdown = router_markdown(v)
    return v


def _span(v: Any) -> str:
    return "-" if not v else f"{v[0]:.1%} to {v[1]:.1%}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def router_markdown(v: RouterView) -> str:
    e = v.expected
    pct = _pct
    return "\n".join([
        f"router {v.task_type} v{v.version}: {v.cheap} unless scored hard, then {v.strong} "
        f"(labeling {v.labeling}, threshold {v.threshold})",
        f"trained on {v.trained_on} item(s) (threshold frozen on their out-of-fold scores at {v.target:.0%} of the "
        f"strong model's quality); measured on {v.held_out} held-out item(s):",
        f"- quality kept {pct(e.get('quality_kept'))} (95% interval {_span(e.get('quality_kept_95'))})",
        f"- cost cut {pct(e.get('cost_cut'))} (95% interval {_span(e.get('cost_cut_95'))})",
        f"- calls to the strong model {pct(e.get('strong_share'))}",
        f"by {v.author} at {v.created_at}: {v.reason}"])


class RouterService:
    def __init__(self, svc: PrismService) -> None:
        self.svc = svc

    async def train(self, task_type: str, *, cheap: str | None = None, strong: str | None = None,
                    target: float = 0.95, tolerance: float = 0.0, margin_z: float = 1.0, test_share: float = 0.3,
                    seed: int = 0, author: str, reason: str) -> RouterView:
        svc = self.svc  # any task type with outcome data can be trained; promote needs a configured one
        if not author.strip() or not reason.strip():
            raise InvalidInput("author and reason are required: who trains the router and why")
        if not 0 < target <= 1 or not 0.1 <= test_share <= 0.5 or tolerance < 0 or margin_z < 0:
            raise InvalidInput("target must be in (0, 1], test_share from 0.1 to 0.5, tolerance and margin >= 0")
        rows = (await experiment_outcomes(svc.store, task_type)).get(task_type, [])
        if not rows:
            raise InvalidInput(f"no outcome data for {task_type}: run an experiment (`mcp-prism experiment start`) "
                               "or import outcomes (`mcp-prism import-outcomes`) for it first")
        strong = svc.catalog.resolve(strong).name if strong else _one({r.baseline for r in rows}, "strong")
        models = {m for r in rows for m in r.scores} - {strong}
        cheap = svc.catalog.resolve(cheap).name if cheap else _one(models, "cheap")
        examples = [_example(r, cheap, strong) for r in rows if cheap in r.scores and strong in r.scores]
        if len(examples) < MIN_ITEMS:
            raise InvalidInput(f"{len(examples)} item(s) with outcomes of both {cheap} and {strong} on {task_type}; "
                               f"a router needs at least {MIN_ITEMS} (run a larger experiment)")
        train, test = _split(examples, test_share, seed)

        def fit() -> tuple[lr.LearnedRouter, dict[str, Any]]:
            router = lr.train(train, target=target, tolerance=tolerance, seed=seed,
                              folds=min(5, len(train) // 8), margin_z=margin_z)
            return router, lr.expected(test, router)

        try:
            router, expected = await anyio.to_thread.run_sync(fit)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        summary = {"cheap": cheap, "strong": strong, "trained_on": len(train), "held_out": len(test),
                   "target": target, "tolerance": tolerance, "seed": seed, "expected": expected,
                   "experiments": sorted({r.experiment_id for r in rows})}
        row = await add_router_version(svc.store, task_type, router.to_json(), summary, author=author.strip(),
                                       reason=reason.strip())
        return _view(row)

    async def list(self, task_type: str | None = None) -> list[RouterView]:
        return [_view(r) for r in await list_routers(self.svc.store, task_type)]

    async def show(self, task_type: str, version: int) -> RouterView:
        return _view(await get_router(self.svc.store, task_type, version))

    async def promote(self, task_type: str, version: int, *, author: str, reason: str, monitor_days: int = 14,
                      auto_rollback: bool = True, threshold: float | None = None) -> RouterPromotion:
        """Make the task type's rule a mixed rule using router `version` (a new rule version), watched by a
        monitor: a regression alert rolls the rule, and with it the router, back (auto_rollback)."""
        svc = self.svc
        svc._task(task_type)
        if not 1 <= monitor_days <= 365:
            raise InvalidInput(f"monitor_days must be from 1 to 365, not {monitor_days}")
        view = await self.show(task_type, version)
        if threshold is None:
            # Watch what the router promised: the lower end of its held-out quality interval, capped at 0.9.
            low = (view.expected.get("quality_kept_95") or [0.9])[0]
            threshold = min(0.9, max(0.5, float(low)))
        elif not 0 < threshold < 1:
            raise InvalidInput(f"threshold must be between 0 and 1, not {threshold}")
        active = (await svc.rules(fresh=True))[task_type]
        rule = active.rule.to_json()
        rule["primary"] = view.cheap
        rule["fallbacks"] = [f for f in rule.get("fallbacks", []) if f not in (view.cheap, view.strong)]
        rule["router"] = {"version": version, "strong": view.strong}
        rule.pop("complexity_upgrades", None)  # the router is this rule's per-request difficulty signal
        e = view.expected
        evidence = (f"router:{task_type}@v{version} held-out quality kept {e.get('quality_kept')}, "
                    f"cost cut {e.get('cost_cut')}, strong calls {e.get('strong_share')}")
        change = await svc.update_routing_rule(rule, author=author, reason=reason, evidence=evidence)
        assert change.new_version is not None
        now = utcnow()
        ends = iso(now + timedelta(days=monitor_days))
        monitor_id = await insert_monitor(
            svc.store, task_type=task_type, rule_version=change.new_version,
            baseline_version=change.previous_version, started_at=iso(now), ends_at=ends, threshold=threshold,
            auto_rollback=auto_rollback, details={"router_version": version, "cheap": view.cheap,
                                                  "strong": view.strong, "expected": e, "author": author.strip()})
        out = RouterPromotion(task_type=task_type, router_version=version, cheap=view.cheap, strong=view.strong,
                              previous_version=change.previous_version, new_version=change.new_version,
                              monitor_id=monitor_id, monitor_ends_at=ends, threshold=threshold,
                              auto_rollback=auto_rollback, change=change)
        out.markdown = (f"rule {task_type} v{change.new_version}: {view.cheap} unless router v{version} scores a "
                        f"request hard, then {view.strong}; monitor {monitor_id} watches it until {ends[:10]} at "
                        f"{threshold:.0%} acceptable" + (", rolling back on a regression" if auto_rollback else ""))
        return out


def _one(models: set[str], role: str) -> str:
    if len(models) != 1:
        raise InvalidInput(f"the outcome data has {len(models)} possible {role} models ({', '.join(sorted(models))})"
                           f"; say which with --{role}")
    return next(iter(models))


def _example(r: OutcomeRow, cheap: str, strong: str) -> lr.Example:
    def cost(m: str) -> Decimal | None:
        v = r.costs.get(m)
        return None if v is None else Decimal(v)

    return lr.Example(prompt_text(r.prompt), r.scores[cheap], r.scores[strong], cost(cheap), cost(strong))


def _split(examples: list[lr.Example], test_share: float, seed: int) -> tuple[list[lr.Example], list[lr.Example]]:
    """A seeded held-out part, duplicate prompts kept on one side."""
    keys = sorted({lr.normalised(e.text) for e in examples})
    random.Random(seed).shuffle(keys)
    held = set(keys[:max(1, round(len(keys) * test_share))])
    return ([e for e in examples if lr.normalised(e.text) not in held],
            [e for e in examples if lr.normalised(e.text) in held])
