"""The routing decision: one function, `choose_model`, from a rule and the request's facts to a model.

Everything here is pure: the rule, the catalog and the observed token profile come in as values.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mcp_prism.core.catalog import Catalog, ModelSpec
from mcp_prism.core.learned_router import LearnedRouter
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.rules import RoutingRule
from mcp_prism.core.tasks import TaskTypeSpec, Tier
from mcp_prism.errors import InvalidInput

# Typical token profile of one request of each built-in type, used until real usage is
# recorded (then the observed averages replace it).
DEFAULT_PROFILES: dict[str, TokenUsage] = {
    "ticket_classification": TokenUsage(input_tokens=900, output_tokens=60),
    "code_autocomplete": TokenUsage(input_tokens=1_500, output_tokens=120),
    "data_extraction": TokenUsage(input_tokens=2_500, output_tokens=400),
    "email_drafting": TokenUsage(input_tokens=800, output_tokens=450),
    "doc_generation": TokenUsage(input_tokens=4_000, output_tokens=1_200),
    "test_generation": TokenUsage(input_tokens=5_000, output_tokens=1_800),
    "code_review": TokenUsage(input_tokens=9_000, output_tokens=1_200),
    "security_audit": TokenUsage(input_tokens=12_000, output_tokens=1_500),
    "deploy_check": TokenUsage(input_tokens=6_000, output_tokens=900),
    "bug_investigation": TokenUsage(input_tokens=18_000, output_tokens=2_500),
    "architecture_design": TokenUsage(input_tokens=10_000, output_tokens=3_500),
    "general": TokenUsage(input_tokens=3_000, output_tokens=800),
}
FALLBACK_PROFILE = TokenUsage(input_tokens=3_000, output_tokens=800)
TIER_ALIASES = {Tier.SIMPLE: "fast", Tier.STANDARD: "standard", Tier.COMPLEX: "frontier"}
OUTPUT_HEADROOM = 4_096  # tokens kept free for the answer when checking a context window


def default_rule_for(task: TaskTypeSpec, catalog: Catalog) -> RoutingRule:
    """For a team-defined type with no stored rule: the tier's alias model."""
    primary = catalog.resolve(TIER_ALIASES[task.tier]).name
    return RoutingRule(task_type=task.name, primary=primary)


@dataclass(frozen=True, slots=True)
class Choice:
    model: ModelSpec
    reasons: tuple[str, ...]
    alternatives: tuple[ModelSpec, ...]
    router_version: int | None = None  # a mixed rule's learned router, and the request's hardness score
    router_score: float | None = None


def _fits(model: ModelSpec, needed: int, rule: RoutingRule) -> bool:
    return model.context_window >= needed and rule.required_capabilities <= model.capabilities


def choose_model(rule: RoutingRule, catalog: Catalog, *, boost: int = 0, context_tokens: int = 0,
                 profile: TokenUsage = FALLBACK_PROFILE, alternatives: bool = True,
                 router: LearnedRouter | None = None, text: str = "") -> Choice:
    """Apply `rule` to a request with complexity `boost` (0-2), `context_tokens` of prompt and `text` (what
    a mixed rule's learned `router` scores; the caller loads the version the rule names, or passes None
    when it cannot, and the request then goes to the strong model). `alternatives=False` skips pricing
    the other candidates (the gateway needs only the choice)."""
    chosen = catalog.resolve(rule.primary)
    reasons = [f"rule {rule.task_type} picks {chosen.name} ({chosen.tier.label} tier)"]
    router_version, router_score = None, None
    if rule.router is not None:
        router_version, strong = rule.router
        if router is None:
            chosen = catalog.resolve(strong)
            reasons.append(f"mixed rule: router v{router_version} unavailable, so the strong model {chosen.name}")
        else:
            hard, router_score = router.needs_strong(text, rule.task_type)
            if hard:
                chosen = catalog.resolve(strong)
            reasons.append(f"mixed rule: router v{router_version} scores the request {router_score:.3f} "
                           f"({'>=' if hard else '<'} threshold {router.threshold:.3f}): "
                           + (f"hard, so {chosen.name}" if hard else f"easy, stays on {chosen.name}"))
    for min_boost, model in rule.complexity_upgrades:
        if router_score is not None and router_score >= router.threshold:  # type: ignore[union-attr]
            break  # the router already chose the strong model: a heuristic upgrade must not undo it
        if boost >= min_boost:
            chosen = catalog.resolve(model)
            reasons.append(f"complexity boost {boost} >= {min_boost}: upgraded to {chosen.name}")

    needed = context_tokens + OUTPUT_HEADROOM if context_tokens else 0
    if needed and chosen.context_window < needed:
        if not rule.context_upgrade:
            raise InvalidInput(
                f"the prompt ({context_tokens} tokens) does not fit {chosen.name} "
                f"({chosen.context_window} tokens) and rule {rule.task_type} forbids a context upgrade"
            )
        candidates = [catalog.resolve(m) for m in rule.fallbacks]
        candidates += sorted(
            (m for t in Tier if t >= chosen.tier for m in catalog.in_tier(t) if m not in candidates),
            key=lambda m: (_cost_or_max(catalog, m, profile), m.name),
        )
        fitting = [m for m in candidates if _fits(m, needed, rule)]
        if not fitting:
            biggest = max(m.context_window for m in catalog.models.values())
            raise InvalidInput(
                f"no model in the catalog accepts {needed} tokens (prompt plus {OUTPUT_HEADROOM} for the "
                f"answer); the largest window is {biggest}. Shorten the context or add a larger model."
            )
        reasons.append(
            f"context of {context_tokens} tokens exceeds {chosen.name}'s {chosen.context_window}: "
            f"moved to {fitting[0].name} ({fitting[0].context_window} tokens)"
        )
        chosen = fitting[0]

    if not alternatives:
        return Choice(chosen, tuple(reasons), (), router_version, router_score)
    others: list[ModelSpec] = []
    for name in rule.models():
        spec = catalog.resolve(name)
        if spec.name != chosen.name and spec not in others and (not needed or _fits(spec, needed, rule)):
            others.append(spec)
    for tier in Tier:
        pool = [m for m in catalog.in_tier(tier)
                if m.name != chosen.name and m not in others and (not needed or _fits(m, needed, rule))]
        if pool:
            others.append(min(pool, key=lambda m: (_cost_or_max(catalog, m, profile), m.name)))
    return Choice(chosen, tuple(reasons), tuple(others[:6]), router_version, router_score)


_MAX = Decimal("1e9")


def _cost_or_max(catalog: Catalog, model: ModelSpec, profile: TokenUsage) -> Decimal:
    usd = catalog.cost(model.name, profile).usd
    return _MAX if usd is None else usd


def effective_tier(task: TaskTypeSpec, boost: int) -> Tier:
    return Tier(min(int(task.tier) + boost, int(Tier.COMPLEX)))
