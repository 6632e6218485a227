"""The application service: the one place every adapter (MCP server, CLI, later the gateway) calls.

It validates input, asks the pure core for decisions and arithmetic, and reads or writes the store.
It knows nothing of MCP, HTTP or terminals.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from mcp_prism import render
from mcp_prism.config import Settings, shipped_classifier_model
from mcp_prism.core.catalog import Catalog, ModelSpec
from mcp_prism.core.classify import Classifier, assess_complexity
from mcp_prism.core.learned_router import LearnedRouter
from mcp_prism.core.pricing import TokenUsage, from_picodollars
from mcp_prism.core.report import Totals, monthly, pct, repriced
from mcp_prism.core.routing import DEFAULT_PROFILES, FALLBACK_PROFILE, OUTPUT_HEADROOM, choose_model, default_rule_for
from mcp_prism.core.rules import DEFAULT_RULES, RoutingRule, parse_rule
from mcp_prism.core.tasks import TaskTypeSpec, Tier
from mcp_prism.core.text_model import TextModel
from mcp_prism.core.usage import (
    QUALITY_SOURCES,
    SOURCES,
    STATUSES,
    UsageEvent,
    parse_iso,
    token_bound_problems,
    utcnow,
)
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.file_access import FileRoots
from mcp_prism.limits import check_text, require_text
from mcp_prism.providers.client import ProviderClient
from mcp_prism.results import (
    Alternative,
    Candidate,
    CompareResult,
    CostReport,
    ModelInfo,
    ModelList,
    Opportunity,
    QualityResult,
    RecordResult,
    ReportGroup,
    RouteResult,
    RoutingLine,
    RuleChange,
    RuleHistory,
    RuleView,
    VoidResult,
)
from mcp_prism.store import open_store, voiding
from mcp_prism.store.reads import ROLLUP_SUMS, ROLLUPS
from mcp_prism.store.routers import get_router
from mcp_prism.store.sqlite import GROUP_COLUMNS, RuleRow, Store

log = logging.getLogger(__name__)

RULES_TTL_SECONDS = 2.0  # other processes' rule changes are seen within this
PROFILE_TTL_SECONDS = 60.0
MIN_OBSERVED_REQUESTS = 5  # below this, the shipped typical profile is used
MAX_TEXT = 200_000
AUTO = "auto"
TASK_PREFIX = "prism/"  # `prism/code_review` as a model name routes by that task's rule


@dataclass(frozen=True, slots=True)
class ActiveRule:
    rule: RoutingRule
    version: int
    row: RuleRow | None


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where the gateway sends one request, and why (recorded with the request)."""

    model: ModelSpec
    task_type: str
    rule_id: str | None  # the task type whose rule decided; None when the client named the model
    rule_version: int | None
    reason: str
    fallbacks: tuple[ModelSpec, ...] = ()  # the rule's fallbacks that fit the request, in order
    router_version: int | None = None  # a mixed rule's learned router and its hardness score of the request
    router_score: float | None = None


@dataclass(slots=True)
class UsageInput:
    """One request to record, as an adapter received it (validated by `record_usage`)."""

    model: str
    task_type: str | None = None
    description: str | None = None
    provider: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the one-hour part of cache_write_tokens
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: str = "ok"
    batch: bool = False
    quality: float | None = None
    quality_source: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    source: str = "mcp"
    rule_id: str | None = None
    rule_version: int | None = None
    request_id: str | None = None
    timestamp: str | None = None
    prompt: str | None = None
    response: str | None = None
    router_version: int | None = None
    router_score: float | None = None


def _fold(rows: Sequence[Any], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Rollup rows summed down to `keys` (each a column of the rows), as `StoreReads.rollup` would return."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r[c] for c in keys)
        acc = out.get(k)
        if acc is None:
            out[k] = {**{c: r[c] for c in keys}, **{c: r[c] or 0 for c in ROLLUP_SUMS}, "first_day": r["first_day"]}
        else:
            for c in ROLLUP_SUMS:
                acc[c] += r[c] or 0
            if r["first_day"] and (not acc["first_day"] or r["first_day"] < acc["first_day"]):
                acc["first_day"] = r["first_day"]
    return list(out.values())


def _day(d: date) -> str:
    return d.isoformat()


def _parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a date like 2026-11-01, not {value!r}") from None


class PrismService:
    def __init__(self, store: Store, catalog: Catalog, task_types: dict[str, TaskTypeSpec], *,
                 default_task_type: str = "general", classifier_threshold: float | None = None,
                 classifier_model: TextModel | None = None) -> None:
        if default_task_type not in task_types:
            raise UnknownName("task type", default_task_type, list(task_types))
        self.store = store
        self.file_roots: FileRoots | None = None  # set by the MCP adapter: files a remote caller may name
        self.catalog = catalog
        self.task_types = task_types
        self.classifier = Classifier(list(task_types.values()), default=default_task_type,
                                     threshold=classifier_threshold,
                                     model=classifier_model or shipped_classifier_model())
        self._defaults = self._default_rules()
        self._rules: dict[str, ActiveRule] = {}
        self._rules_at = float("-inf")
        self._profiles: dict[str, Totals] = {}
        self._profiles_at = float("-inf")
        self._routers: dict[tuple[str, int], LearnedRouter | None] = {}  # immutable once stored
        self._providers: ProviderClient | None = None
        self._warned_unpriced: set[str] = set()
        self.settings: Settings | None = None  # set by `open`; the loop reads its config sections from it

    @classmethod
    async def open(cls, settings: Settings) -> PrismService:
        catalog = settings.catalog()
        task_types = settings.task_types()
        store = await open_store(settings.database_url or settings.db_path)
        try:
            service = cls(store, catalog, task_types, default_task_type=settings.default_task_type,
                          classifier_threshold=settings.classifier_threshold)
        except BaseException:
            await store.close()
            raise
        service.settings = settings
        return service

    def providers(self) -> ProviderClient:
        """The provider clients (experiments and judges call models through them), made on first use."""
        if self._providers is None:
            self._providers = ProviderClient(self.catalog)
        return self._providers

    def readable_path(self, path: str | Path) -> Path:
        """A file a caller named, for reading: confined to `file_roots` when an MCP client asks."""
        if self.file_roots is not None:
            return self.file_roots.check(path)
        require_text("path", str(path))
        return Path(path).expanduser()

    async def close(self) -> None:
        if self._providers is not None:
            await self._providers.aclose()
            self._providers = None
        await self.store.close()

    # ---------------------------------------------------------------- rules
    def _default_rules(self) -> dict[str, ActiveRule]:
        out: dict[str, ActiveRule] = {}
        for raw in DEFAULT_RULES:
            if raw["task_type"] in self.task_types:
                out[raw["task_type"]] = ActiveRule(parse_rule(raw, self.catalog, self.task_types), 0, None)
        for name, spec in self.task_types.items():
            if name not in out:
                out[name] = ActiveRule(default_rule_for(spec, self.catalog), 0, None)
        return out

    async def rules(self, *, fresh: bool = False) -> dict[str, ActiveRule]:
        now = time.monotonic()
        if fresh or now - self._rules_at > RULES_TTL_SECONDS:
            active = dict(self._defaults)
            for task_type, row in (await self.store.latest_rules()).items():
                if task_type not in self.task_types:
                    continue
                try:
                    active[task_type] = ActiveRule(parse_rule(row.body, self.catalog, self.task_types),
                                                   row.version, row)
                except InvalidInput as e:  # e.g. a model removed from the config since
                    log.warning("stored rule %s v%s no longer valid (%s); using the default", task_type,
                                row.version, e)
            self._rules, self._rules_at = active, now
        return self._rules

    async def router_for(self, rule: RoutingRule) -> LearnedRouter | None:
        """The learned router version a mixed rule names, loaded once (a stored version never changes).
        None when it cannot be loaded: the rule then sends requests to its strong model."""
        if rule.router is None:
            return None
        key = (rule.task_type, rule.router[0])
        if key not in self._routers:
            try:
                row = await get_router(self.store, *key)
                self._routers[key] = LearnedRouter.from_json(row.body)
            except (InvalidInput, ValueError, KeyError) as e:  # missing or unreadable: permanent, so cached
                log.warning("router %s v%s cannot be loaded (%s): its mixed rule sends requests to the strong "
                            "model", key[0], key[1], e)
                self._routers[key] = None
        return self._routers[key]

    async def _profiles_by_type(self) -> dict[str, Totals]:
        now = time.monotonic()
        if now - self._profiles_at > PROFILE_TTL_SECONDS:
            today = utcnow().date()
            rows = await self.store.rollup(_day(today - timedelta(days=30)), _day(today + timedelta(days=1)),
                                           ["task_type"])
            self._profiles = {r["task_type"]: Totals.from_row(r) for r in rows}
            self._profiles_at = now
        return self._profiles

    async def _profile(self, task_type: str) -> tuple[TokenUsage, str]:
        totals = (await self._profiles_by_type()).get(task_type)
        if totals and totals.requests >= MIN_OBSERVED_REQUESTS:
            return totals.average_usage(), "observed"
        return DEFAULT_PROFILES.get(task_type, FALLBACK_PROFILE), "default"

    def resolve_model(self, name: str) -> ModelSpec:
        """`catalog.resolve`, warning once per model a client named that the catalog does not list and
        genai-prices cannot price (its requests are recorded with tokens but no cost)."""
        spec = self.catalog.resolve(name, unpriced=True)
        if spec.discovered and spec.name not in self._warned_unpriced and self.catalog.prices_at(spec.name) is None:
            self._warned_unpriced.add(spec.name)
            log.warning("model %s is not in the catalog and genai-prices has no price for it: its requests are "
                        "recorded unpriced. To price them add to the config file [models.\"%s\"] with provider = "
                        "\"%s\", tier, context_window and price = {input = \"...\", output = \"...\"} (USD per "
                        "million tokens), or upgrade genai-prices (pip install -U genai-prices)",
                        spec.name, spec.name, spec.provider)
        return spec

    def _task(self, name: str) -> TaskTypeSpec:
        spec = self.task_types.get(name)
        if spec is None:
            raise UnknownName("task type", name, list(self.task_types))
        return spec

    # ---------------------------------------------------------------- route_task
    async def route_task(self, description: str | None = None, task_type: str | None = None, *,
                         context_tokens: int = 0) -> RouteResult:
        if not (description and description.strip()) and not task_type:
            raise InvalidInput("give a task description (free text) or a task_type; "
                               f"task types: {', '.join(sorted(self.task_types))}")
        if description and len(description) > MAX_TEXT:
            raise InvalidInput(f"description is {len(description)} characters; send at most {MAX_TEXT} "
                               "(a summary is enough) and pass the prompt size as context_tokens")
        if context_tokens < 0:
            raise InvalidInput("context_tokens must be >= 0")
        signals: list[str] = []
        uncertain, runner_up = False, None
        if task_type:
            self._task(task_type)
            confidence, classified = 1.0, False
        else:
            c = self.classifier.classify(description or "")
            task_type, confidence, classified = c.task_type, c.confidence, True
            signals.extend(c.signals)
            uncertain, runner_up = c.uncertain, c.runner_up
            if uncertain:
                # Say so where an agent reads it: it can pass task_type itself on the next call.
                signals.append(f"uncertain classification: {task_type} (confidence {c.confidence:.2f})"
                               + (f", runner-up {runner_up}" if runner_up else "")
                               + "; pass task_type if you know which it is")
        cx = assess_complexity(description or "", context_tokens)
        signals.extend(f"complexity: {s}" for s in cx.signals)
        active = (await self.rules())[task_type]
        profile, profile_source = await self._profile(task_type)
        if context_tokens:
            profile = TokenUsage(input_tokens=context_tokens, output_tokens=profile.output_tokens)
        choice = choose_model(active.rule, self.catalog, boost=cx.boost, context_tokens=context_tokens,
                              profile=profile, text=description or "",
                              router=await self.router_for(active.rule) if active.rule.router else None)
        model = choice.model
        return RouteResult(
            model=model.name,
            provider=model.provider,
            tier=model.tier.label,
            task_type=task_type,
            confidence=round(confidence, 3),
            classified=classified,
            uncertain=uncertain,
            runner_up=runner_up,
            reasons=list(choice.reasons),
            signals=signals,
            complexity_boost=cx.boost,
            estimated_cost_usd=self.catalog.cost(model.name, profile).usd,
            typical_tokens={"input_tokens": profile.input_tokens, "output_tokens": profile.output_tokens},
            profile_source=profile_source,
            alternatives=[Alternative(model=a.name, tier=a.tier.label,
                                      estimated_cost_usd=self.catalog.cost(a.name, profile).usd)
                          for a in choice.alternatives],
            rule_id=task_type,
            rule_version=active.version,
            router_version=choice.router_version,
            router_score=None if choice.router_score is None else round(choice.router_score, 6),
        )

    async def route_request(self, requested: str, text: str, *, task_hint: str | None = None,
                            context_tokens: int = 0, classify_named: bool = True) -> RouteDecision:
        """The gateway's routing: `requested` is what the client put in `model` — a concrete model or
        alias (served as asked), `auto` (classify `text`), or `prism/<task_type>`; `task_hint` (the
        X-Prism-Task header) names the task when the model field cannot. Lean on purpose: it runs on
        every proxied request, so nothing here estimates alternatives' costs. With `classify_named`
        false, a request for a named model comes back with task_type "" (the caller classifies it
        later, off the request path, since only the record needs it)."""
        requested = requested.strip()
        # The header wins over the model field: Claude Code always sends its own model name, so a
        # slash command can only name its task through the header.
        task = task_hint.strip() if task_hint and task_hint.strip() else None
        if task is None and requested.startswith(TASK_PREFIX):
            task = requested[len(TASK_PREFIX):]
        if task == AUTO:
            task = None
        elif task is None and requested != AUTO:
            model = self.resolve_model(requested)
            task_type = self.classifier.classify(text).task_type if classify_named else ""
            return RouteDecision(model, task_type, None, None, f"client asked for {requested}")
        if task is not None:
            self._task(task)
            reason = f"task {task} named by the client"
        else:
            c = self.classifier.classify(text)
            task, reason = c.task_type, f"classified as {c.task_type} ({c.confidence:.2f})"
        active = (await self.rules())[task]
        profile, _ = await self._profile(task)
        cx = assess_complexity(text, context_tokens)
        choice = choose_model(active.rule, self.catalog, boost=cx.boost, context_tokens=context_tokens,
                              profile=profile, alternatives=False, text=text,
                              router=await self.router_for(active.rule) if active.rule.router else None)
        needed = context_tokens + OUTPUT_HEADROOM if context_tokens else 0
        fallbacks = tuple(m for m in (self.catalog.resolve(n) for n in active.rule.fallbacks)
                          if m.name != choice.model.name and m.context_window >= needed
                          and active.rule.required_capabilities <= m.capabilities)
        return RouteDecision(choice.model, task, task, active.version, f"{reason}; {choice.reasons[-1]}", fallbacks,
                             choice.router_version, choice.router_score)

    # ---------------------------------------------------------------- compare_models
    async def compare_models(self, task_type: str | None = None, models: Sequence[str] | None = None, *,
                             input_tokens: int | None = None, output_tokens: int | None = None,
                             cached_input_tokens: int = 0) -> CompareResult:
        given = input_tokens is not None or output_tokens is not None
        if not task_type and not models and not given:
            raise InvalidInput("give a task_type, a list of models, or token counts (input_tokens, output_tokens)")
        current: str | None = None
        volume, observed = 0, {}
        if task_type:
            self._task(task_type)
            profile, source = await self._profile(task_type)
            active = (await self.rules())[task_type]
            current = self.catalog.resolve(active.rule.primary).name
            today = utcnow().date()
            rows = await self.store.rollup(_day(today - timedelta(days=30)), _day(today + timedelta(days=1)),
                                           ["model"], {"task_type": task_type})
            observed = {r["model"]: Totals.from_row(r) for r in rows}
            total = sum(t.requests for t in observed.values())
            first = min((r["first_day"] for r in rows), default=None)
            days = (today - date.fromisoformat(first)).days + 1 if first else 30
            volume = int(monthly(Decimal(total), days))
        else:
            profile, source = FALLBACK_PROFILE, "default"
        if given:
            inp = input_tokens if input_tokens is not None else profile.input_tokens
            out = output_tokens if output_tokens is not None else profile.output_tokens
            profile = TokenUsage(input_tokens=inp, cached_input_tokens=cached_input_tokens, output_tokens=out)
            source = "given"
            problems = token_bound_problems(profile) or profile.problems()
            if problems:
                raise InvalidInput("; ".join(problems))

        specs: list[ModelSpec] = []
        if models:
            specs = [self.catalog.resolve(m) for m in models]
        else:
            names = [*active.rule.models()] if task_type else []
            for tier in Tier:
                pool = sorted(self.catalog.in_tier(tier),
                              key=lambda m: (self.catalog.cost(m.name, profile).usd or Decimal("1e9"), m.name))
                names += [m.name for m in pool[:3]]
            names += [m for m in observed if m in self.catalog.models]
            specs = [self.catalog.resolve(n) for n in dict.fromkeys(names)]
        specs = list({s.name: s for s in specs}.values())

        candidates = []
        for spec in specs:
            unit = self.catalog.cost(spec.name, profile).usd
            seen = observed.get(spec.name, Totals())
            candidates.append(Candidate(
                model=spec.name, provider=spec.provider, tier=spec.tier.label,
                context_window=spec.context_window, current=spec.name == current,
                cost_per_request_usd=unit,
                monthly_cost_usd=None if unit is None else unit * volume,
                observed_requests=seen.requests, observed_quality=seen.avg_quality,
                observed_latency_ms=seen.avg_latency_ms,
            ))
        candidates.sort(key=lambda c: (c.cost_per_request_usd is None, c.cost_per_request_usd or 0, c.model))
        tokens = {"input_tokens": profile.input_tokens, "cached_input_tokens": profile.cached_input_tokens,
                  "output_tokens": profile.output_tokens}
        result = CompareResult(task_type=task_type, tokens_per_request=tokens, profile_source=source,
                               monthly_requests=volume, candidates=candidates, markdown="")
        result.markdown = render.compare_markdown(result)
        return result

    # ---------------------------------------------------------------- cost_report
    def _period(self, days: int | None, since: str | None, until: str | None) -> tuple[date, date]:
        today = utcnow().date()
        end = _parse_day(until, "until") if until else today + timedelta(days=1)
        if since:
            start = _parse_day(since, "since")
        else:
            n = 30 if days is None else days
            if not 1 <= n <= 3660:
                raise InvalidInput("days must be between 1 and 3660")
            start = end - timedelta(days=n)
        if start >= end:
            raise InvalidInput(f"since ({start}) must be before until ({end}); until is exclusive")
        return start, end

    async def cost_report(self, *, days: int | None = None, since: str | None = None, until: str | None = None,
                          group_by: Sequence[str] = ("task_type",), filters: dict[str, str] | None = None,
                          top: int = 10) -> CostReport:
        group = list(dict.fromkeys(group_by)) or ["task_type"]
        bad = [g for g in group if g not in GROUP_COLUMNS]
        if bad:
            raise InvalidInput(f"cannot group by {bad}; choose from {', '.join(GROUP_COLUMNS)}")
        filters = {k: v for k, v in (filters or {}).items() if v}
        start, end = self._period(days, since, until)
        s, e = _day(start), _day(end)
        both = list(dict.fromkeys([*group, "task_type", "model"]))
        if any({*both, *filters} <= set(keys) for keys in ROLLUPS.values()):
            # one read of the rollup, folded both ways here: the report costs one pass over days x groups
            fine = await self.store.rollup(s, e, both, filters)
            rows, by_model = _fold(fine, group), _fold(fine, ["task_type", "model"])
        else:
            rows = await self.store.rollup(s, e, group, filters)
            by_model = await self.store.rollup(s, e, ["task_type", "model"], filters)

        firsts = [r["first_day"] for r in by_model if r["first_day"]]
        covered_from = max(start, date.fromisoformat(min(firsts))) if firsts else start
        covered_to = min(end, utcnow().date() + timedelta(days=1))
        span = max((covered_to - covered_from).days, 1)

        grand = Totals()
        groups_t = []
        for r in rows:
            t = Totals.from_row(r)
            grand.add(t)
            groups_t.append(({g: str(r[g]) for g in group}, t))
        groups_t.sort(key=lambda kt: (-kt[1].cost_usd, -kt[1].requests))
        groups = [ReportGroup(
            key=k, requests=t.requests, errors=t.errors, unpriced_requests=t.unpriced,
            input_tokens=t.input_tokens, cached_input_tokens=t.cached_input_tokens,
            cache_write_tokens=t.cache_write_tokens, output_tokens=t.output_tokens,
            reasoning_tokens=t.reasoning_tokens, cost_usd=t.cost_usd,
            share_of_cost_pct=pct(t.cost_usd, grand.cost_usd), avg_latency_ms=t.avg_latency_ms,
            avg_quality=t.avg_quality, rated_requests=t.quality_n,
        ) for k, t in groups_t]

        routing, opportunities, after_total = await self._routing_plan(by_model, span)
        before_month = monthly(grand.cost_usd, span)
        saving = None if after_total is None else before_month - after_total
        report = CostReport(
            since=s, until=e, days=span, group_by=group, filters=filters, groups=groups,
            total_requests=grand.requests, total_cost_usd=grand.cost_usd, unpriced_requests=grand.unpriced,
            monthly_projection_usd=before_month, monthly_after_routing_usd=after_total,
            monthly_saving_usd=saving,
            monthly_saving_pct=None if saving is None else pct(saving, before_month),
            routing=routing, opportunities=opportunities[:top], markdown="",
        )
        # the cache's hits and savings are rollup sums too: read with the groups, not from the events
        report.cache_hits = sum(int(r["cache_hits"] or 0) for r in rows)
        report.cache_saved_usd = from_picodollars(sum(int(r["saved_pico"] or 0) for r in rows))
        report.markdown = render.report_markdown(report)
        return report

    async def _routing_plan(self, by_model: Sequence[Any], span: int
                            ) -> tuple[list[RoutingLine], list[Opportunity], Decimal | None]:
        rules = await self.rules()
        lines: dict[str, RoutingLine] = {}
        opportunities: list[Opportunity] = []
        after_total: Decimal | None = Decimal(0)
        for r in by_model:
            t = Totals.from_row(r)
            task = r["task_type"]
            active = rules.get(task)
            routed = self.catalog.resolve(active.rule.primary) if active else None
            now_m = monthly(t.cost_usd, span)
            if routed is None or t.unpriced:
                after = None
            elif routed.name == r["model"]:
                after = now_m
            else:
                cost = repriced(t, lambda u, m=routed.name: self.catalog.cost(m, u).usd)
                after = None if cost is None else monthly(cost, span)
            line = lines.setdefault(task, RoutingLine(
                task_type=task, requests=0, current_models=[],
                routed_model=routed.name if routed else "(no rule)",
                monthly_before_usd=Decimal(0), monthly_after_usd=Decimal(0)))
            line.requests += t.requests
            line.current_models.append(r["model"])
            line.monthly_before_usd += now_m
            line.monthly_after_usd = None if after is None or line.monthly_after_usd is None \
                else line.monthly_after_usd + after
            after_total = None if after is None or after_total is None else after_total + after
            if routed and after is not None and routed.name != r["model"] and after != now_m:
                current = self.catalog.models.get(r["model"])
                opportunities.append(Opportunity(
                    task_type=task, current_model=r["model"], routed_model=routed.name, requests=t.requests,
                    monthly_cost_now_usd=now_m, monthly_cost_routed_usd=after, monthly_saving_usd=now_m - after,
                    evidence=self._evidence(task, current, routed, active),
                ))
        opportunities.sort(key=lambda o: -o.monthly_saving_usd)
        return sorted(lines.values(), key=lambda x: -x.monthly_before_usd), opportunities, after_total

    @staticmethod
    def _evidence(task: str, current: ModelSpec | None, routed: ModelSpec, active: ActiveRule | None) -> str:
        rule = f"rule {task} v{active.version if active else 0}"
        if active and active.row and active.row.evidence:
            return f"{rule}: {active.row.evidence}"
        if current is None:
            return f"{rule} routes to {routed.name}; the current model is not in the catalog"
        move = ("a downgrade" if routed.tier < current.tier else "an upgrade" if routed.tier > current.tier
                else "the same tier")
        return (f"tier mismatch only ({current.name} is {current.tier.label}, {rule} uses {routed.name}, "
                f"{routed.tier.label}; {move}): a hypothesis to confirm with an experiment")

    # ---------------------------------------------------------------- rules: update, rollback, history
    async def list_rules(self) -> list[RuleView]:
        return [self._view(a) for _, a in sorted((await self.rules(fresh=True)).items())]

    def _view(self, a: ActiveRule) -> RuleView:
        if a.row is None:
            return RuleView(task_type=a.rule.task_type, version=0, rule=a.rule.to_json(),
                            author="mcp_prism", reason="shipped default (the seed's task-model matrix)")
        return RuleView(task_type=a.rule.task_type, version=a.version, rule=a.rule.to_json(),
                        author=a.row.author, reason=a.row.reason, evidence=a.row.evidence,
                        created_at=a.row.created_at)

    async def show_rule(self, task_type: str) -> RuleView:
        self._task(task_type)
        return self._view((await self.rules(fresh=True))[task_type])

    async def update_routing_rule(self, rule: dict[str, Any], *, author: str, reason: str,
                                  evidence: str | None = None, dry_run: bool = False) -> RuleChange:
        if not author or not author.strip():
            raise InvalidInput("author is required: who is making this change (a name or email)")
        if not reason or not reason.strip():
            raise InvalidInput("reason is required: why this change (e.g. 'experiment 12 qualified haiku')")
        for name, value in (("author", author), ("reason", reason), ("evidence", evidence)):
            require_text(name, value)
        parsed = parse_rule(rule, self.catalog, self.task_types)
        if parsed.router is not None:  # a mixed rule must name a stored router version
            await get_router(self.store, parsed.task_type, parsed.router[0])
        return await self._change(parsed, author=author.strip(), reason=reason.strip(), evidence=evidence,
                                  dry_run=dry_run, action="update", details={})

    async def rollback_rule(self, task_type: str, to_version: int, *, author: str, reason: str,
                            dry_run: bool = False) -> RuleChange:
        self._task(task_type)
        if not author or not reason:
            raise InvalidInput("author and reason are required for a rollback")
        require_text("author", author)
        require_text("reason", reason)
        if to_version == 0:
            body = self._defaults[task_type].rule.to_json()
        else:
            history = {r.version: r for r in await self.store.rule_history(task_type)}
            if to_version not in history:
                raise InvalidInput(f"rule {task_type} has no version {to_version}; versions: "
                                   f"{[0, *sorted(history)]} (0 = shipped default)")
            body = history[to_version].body
        parsed = parse_rule(body, self.catalog, self.task_types)
        return await self._change(parsed, author=author, reason=reason, evidence=None, dry_run=dry_run,
                                  action="rollback", details={"to_version": to_version})

    async def _change(self, rule: RoutingRule, *, author: str, reason: str, evidence: str | None, dry_run: bool,
                      action: str, details: dict[str, Any]) -> RuleChange:
        previous = (await self.rules(fresh=True))[rule.task_type]
        today = utcnow().date()
        rows = await self.store.rollup(_day(today - timedelta(days=30)), _day(today + timedelta(days=1)),
                                       ["model"], {"task_type": rule.task_type})
        now_cost, new_cost, requests = Decimal(0), Decimal(0), 0
        notes: list[str] = []
        for r in rows:
            t = Totals.from_row(r)
            requests += t.requests
            now_cost += t.cost_usd
            cost = repriced(t, lambda u: self.catalog.cost(rule.primary, u).usd)
            if cost is None or t.unpriced:
                notes.append(f"{t.requests} requests on {r['model']} could not be re-priced (unpriced)")
                new_cost = None  # type: ignore[assignment]
            elif new_cost is not None:
                new_cost += cost
        task = self.task_types[rule.task_type]
        primary = self.catalog.resolve(rule.primary)
        if primary.tier < task.tier:
            notes.append(f"{primary.name} is {primary.tier.label}-tier, below the {task.tier.label} tier this task "
                         "type defaults to: deploy only with evidence (a qualified experiment)")
        if not requests:
            notes.append("no usage recorded for this task type in the last 30 days; cost change not projected")
        change = RuleChange(
            dry_run=dry_run, task_type=rule.task_type, previous_version=previous.version, new_version=None,
            rule=rule.to_json(), previous_rule=previous.rule.to_json(), requests_last_30_days=requests,
            cost_last_30_days_usd=now_cost,
            projected_cost_last_30_days_usd=new_cost if requests else None,
            projected_monthly_change_usd=(new_cost - now_cost) if requests and new_cost is not None else None,
            notes=notes,
        )
        if not dry_run:
            row = await self.store.add_rule_version(
                rule.task_type, rule.to_json(), author=author, reason=reason, evidence=evidence, action=action,
                details={**details, "previous_version": previous.version, "rule": rule.to_json()},
                expect_version=previous.version if previous.row else None,
            )
            change.new_version = row.version
            await self.rules(fresh=True)
        return change

    async def rule_history(self, task_type: str) -> RuleHistory:
        self._task(task_type)
        rows = await self.store.rule_history(task_type)
        default = self._defaults[task_type]
        versions = [self._view(default)] + [
            RuleView(task_type=r.task_type, version=r.version, rule=r.body, author=r.author, reason=r.reason,
                     evidence=r.evidence, created_at=r.created_at) for r in rows]
        audit = [dict(a) for a in await self.store.audit_log(200, target=f"rule:{task_type}")]
        return RuleHistory(task_type=task_type, versions=versions, audit=audit)

    # ---------------------------------------------------------------- record_usage / record_quality
    def _usage_event(self, u: UsageInput) -> UsageEvent:
        problems: list[str] = []
        task_type = u.task_type
        if not task_type:
            if not u.description:
                problems.append("task_type is required (or a description to classify)")
            else:
                task_type = self.classifier.classify(u.description).task_type
        elif task_type not in self.task_types:
            problems.append(str(UnknownName("task type", task_type, list(self.task_types))))
        if u.status not in STATUSES:
            problems.append(f"status must be one of {', '.join(STATUSES)}")
        if u.source not in SOURCES:
            problems.append(f"source must be one of {', '.join(SOURCES)}")
        if u.latency_ms < 0 or (u.ttft_ms is not None and u.ttft_ms < 0):
            problems.append("latency_ms and ttft_ms must be >= 0")
        if u.ttft_ms is not None and u.ttft_ms > u.latency_ms:
            problems.append("ttft_ms (time to first token) cannot exceed latency_ms")
        if u.quality is not None:
            if not 0 <= u.quality <= 1:
                problems.append("quality must be between 0 and 1")
            if u.quality_source not in QUALITY_SOURCES:
                problems.append(f"quality_source must be one of {', '.join(QUALITY_SOURCES)} when quality is given")
        for name in ("model", "provider", "user", "team", "project", "request_id", "rule_id", "description",
                     "prompt", "response"):
            problems += check_text(name, getattr(u, name))
        if not (isinstance(u.latency_ms, int | float) and math.isfinite(u.latency_ms) and u.latency_ms <= 1e9):
            problems.append("latency_ms must be a finite number of milliseconds")
        tokens = TokenUsage(u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens,
                            u.reasoning_tokens, u.cache_write_1h_tokens)
        bounds = token_bound_problems(tokens)
        problems += bounds or tokens.problems()
        ts = utcnow()
        if u.timestamp:
            try:
                ts = parse_iso(u.timestamp)
                if ts.tzinfo is None:
                    ts = ts.replace(tzinfo=UTC)
            except ValueError:
                problems.append(f"timestamp must be ISO 8601 like 2026-11-25T10:00:00Z, not {u.timestamp!r}")
            else:
                if ts > utcnow() + timedelta(minutes=5):
                    problems.append("timestamp is in the future")
        spec: ModelSpec | None
        try:
            spec = self.resolve_model(u.model)
        except UnknownName:
            spec = None
            if not u.provider:
                problems.append(f"model {u.model!r} is not in the catalog: give its provider to record it "
                                "(it will be reported as unpriced), or add it to the config file")
        if problems:
            raise InvalidInput("cannot record usage: " + "; ".join(problems))
        assert task_type is not None
        model = spec.name if spec else u.model.strip()
        provider = spec.provider if spec else str(u.provider)
        cost = self.catalog.cost(model, tokens, ts, batch=u.batch) if spec else None
        capture = self.task_types[task_type].capture_samples
        return UsageEvent(
            task_type=task_type, model=model, provider=provider, tokens=tokens, latency_ms=float(u.latency_ms),
            cost_usd=cost.usd if cost else None, prices=cost.prices if cost else None, ts=ts,
            ttft_ms=u.ttft_ms, status=u.status, batch=u.batch, quality=u.quality,
            quality_source=u.quality_source if u.quality is not None else None,
            user=u.user, team=u.team, project=u.project, source=u.source, rule_id=u.rule_id,
            rule_version=u.rule_version, request_id=u.request_id or None,
            prompt=u.prompt if capture else None, response=u.response if capture else None,
            router_version=u.router_version, router_score=u.router_score,
        )

    async def record_usage(self, u: UsageInput) -> RecordResult:
        event = self._usage_event(u)
        stored = await self.store.insert_events([event])
        if not stored:  # a retry of a request already recorded
            row = await self.store.find_event(event.request_id or "")
            assert row is not None
            return RecordResult(id=row["id"], duplicate=True, task_type=row["task_type"], model=row["model"],
                                cost_usd=Decimal(row["cost_usd"]) if row["cost_usd"] is not None else None,
                                priced=row["cost_usd"] is not None, sample_stored=False)
        return RecordResult(id=event.id, duplicate=False, task_type=event.task_type, model=event.model,
                            cost_usd=event.cost_usd, priced=event.cost_usd is not None,
                            sample_stored=event.prompt is not None or event.response is not None)

    async def record_many(self, inputs: Sequence[UsageInput]) -> int:
        """Validate all, then store all in one transaction (the demo and importers use this)."""
        return len(await self.store.insert_events([self._usage_event(u) for u in inputs]))

    async def void_events(self, kind: str, value: str, *, author: str, reason: str,
                          dry_run: bool = False) -> VoidResult:
        """Take usage events (one by id or request id, or all of a source or project) out of every report and
        rollup, with an audit entry; the rows are kept in `voided_events`."""
        if kind not in ("id", "source", "project"):
            raise InvalidInput("void events by id, source or project")
        for name, text in (("value", value), ("author", author), ("reason", reason)):
            require_text(name, text)
        if not value or not value.strip():
            raise InvalidInput(f"give the {kind} of the events to void")
        if not dry_run and (not author.strip() or not reason.strip()):
            raise InvalidInput("voiding needs --author (who) and --reason (why): both go to the audit log")
        value = value.strip()
        outcome = (await voiding.preview(self.store, kind, value) if dry_run  # type: ignore[arg-type]
                   else await voiding.void(self.store, kind, value, actor=author.strip(),  # type: ignore[arg-type]
                                           reason=reason.strip()))
        if not dry_run:
            self._profiles_at = float("-inf")  # observed profiles must forget the voided events
        return VoidResult(dry_run=dry_run, selector=f"{kind}={value}", events=outcome.events,
                          cost_usd=from_picodollars(outcome.cost_pico), unpriced=outcome.unpriced,
                          first_ts=outcome.first_ts, last_ts=outcome.last_ts, sample_ids=outcome.ids)

    async def record_quality(self, ref: str, score: float, source: str) -> QualityResult:
        if not ref or not ref.strip():
            raise InvalidInput("give the usage event id (from record_usage) or your request_id")
        if not 0 <= score <= 1:
            raise InvalidInput("score must be between 0 (unusable) and 1 (perfect)")
        if source not in QUALITY_SOURCES:
            raise InvalidInput(f"source must be one of {', '.join(QUALITY_SOURCES)}")
        row = await self.store.set_quality(ref.strip(), score, source)
        self._profiles_at = float("-inf")
        return QualityResult(id=row["id"], task_type=row["task_type"], model=row["model"], quality=score,
                             source=source, previous_quality=row["quality"])

    # ---------------------------------------------------------------- catalog
    def list_models(self, *, tier: str | None = None, provider: str | None = None) -> ModelList:
        want_tier = None
        if tier:
            try:
                want_tier = Tier.parse(tier)
            except ValueError as e:
                raise InvalidInput(str(e)) from None
        if provider and provider not in self.catalog.providers:
            raise UnknownName("provider", provider, list(self.catalog.providers))
        aliases_of: dict[str, list[str]] = {}
        for alias in self.catalog.aliases:
            aliases_of.setdefault(self.catalog.resolve(alias).name, []).append(alias)
        out = []
        for m in self.catalog.models.values():
            if (want_tier is not None and m.tier != want_tier) or (provider and m.provider != provider):
                continue
            p = self.catalog.prices_at(m.name)
            out.append(ModelInfo(
                name=m.name, provider=m.provider, tier=m.tier.label, context_window=m.context_window,  # type: ignore[arg-type]
                capabilities=sorted(m.capabilities), family=m.family, priced=p is not None,
                input_usd_per_mtok=p.input.base if p else None, output_usd_per_mtok=p.output.base if p else None,
                cached_input_usd_per_mtok=p.cached_input.base if p and p.cached_input else None,
                price_source=p.source if p else None, aliases=sorted(aliases_of.get(m.name, [])),
            ))
        out.sort(key=lambda x: (x.tier != "simple", x.tier != "standard", x.provider, x.name))
        return ModelList(models=out, aliases=dict(self.catalog.aliases))
