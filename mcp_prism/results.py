"""What the application service returns: pydantic models that every adapter shows as it likes
(MCP structured content, JSON for `--json`, tables for people). Money is Decimal (a string in JSON)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field


class ModelInfo(BaseModel):
    name: str
    provider: str
    tier: Literal["simple", "standard", "complex"]
    context_window: int
    capabilities: list[str]
    family: str
    priced: bool
    input_usd_per_mtok: Decimal | None = None
    output_usd_per_mtok: Decimal | None = None
    cached_input_usd_per_mtok: Decimal | None = None
    price_source: str | None = None
    aliases: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    models: list[ModelInfo]
    aliases: dict[str, str]


class Alternative(BaseModel):
    model: str
    tier: str
    estimated_cost_usd: Decimal | None = Field(description="cost of a typical request of this task type")


class RouteResult(BaseModel):
    model: str = Field(description="the model to use")
    provider: str
    tier: str
    task_type: str
    confidence: float = Field(description="1.0 when the task type was given; the classifier's otherwise")
    classified: bool = Field(description="true when the task type came from the description")
    uncertain: bool = Field(False, description="true when the classifier is unsure of task_type (a weak verdict, or "
                                               "no type fit and it fell back): check it, and pass task_type "
                                               "yourself if it is wrong")
    runner_up: str | None = Field(None, description="the next most likely task type when classified (the declined "
                                                    "guess when it fell back)")
    reasons: list[str]
    signals: list[str] = Field(description="what the classifier and complexity check saw")
    complexity_boost: int
    estimated_cost_usd: Decimal | None = Field(description="cost of a typical request of this type on the model")
    typical_tokens: dict[str, int]
    profile_source: Literal["observed", "default"]
    alternatives: list[Alternative]
    rule_id: str
    rule_version: int = Field(description="0 = the shipped default rule")
    router_version: int | None = Field(default=None, description="a mixed rule's learned router version "
                                                                 "(pass it back to record_usage)")
    router_score: float | None = Field(default=None, description="the router's hardness score of this request")


class Candidate(BaseModel):
    model: str
    provider: str
    tier: str
    context_window: int
    current: bool = Field(description="the model the current rule routes this task type to")
    cost_per_request_usd: Decimal | None
    monthly_cost_usd: Decimal | None = Field(description="at the observed volume; null when unpriced")
    observed_requests: int
    observed_quality: float | None
    observed_latency_ms: float | None


class CompareResult(BaseModel):
    task_type: str | None
    tokens_per_request: dict[str, int]
    profile_source: Literal["observed", "default", "given"]
    monthly_requests: int
    candidates: list[Candidate]
    markdown: str


class ReportGroup(BaseModel):
    key: dict[str, str]
    requests: int
    errors: int
    unpriced_requests: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Decimal
    share_of_cost_pct: float | None
    avg_latency_ms: float | None
    avg_quality: float | None
    rated_requests: int


class Opportunity(BaseModel):
    task_type: str
    current_model: str
    routed_model: str
    requests: int
    monthly_cost_now_usd: Decimal
    monthly_cost_routed_usd: Decimal
    monthly_saving_usd: Decimal
    evidence: str


class RoutingLine(BaseModel):
    task_type: str
    requests: int
    current_models: list[str]
    routed_model: str
    monthly_before_usd: Decimal
    monthly_after_usd: Decimal | None


class CostReport(BaseModel):
    since: str
    until: str
    days: int
    group_by: list[str]
    filters: dict[str, str]
    groups: list[ReportGroup]
    total_requests: int
    total_cost_usd: Decimal
    unpriced_requests: int
    monthly_projection_usd: Decimal
    monthly_after_routing_usd: Decimal | None
    monthly_saving_usd: Decimal | None
    monthly_saving_pct: float | None
    routing: list[RoutingLine]
    opportunities: list[Opportunity]
    markdown: str
    cache_hits: int = 0  # requests answered from the response cache in the period (cost $0)
    cache_saved_usd: Decimal = Decimal(0)  # what those answers cost when first paid for


class RuleView(BaseModel):
    task_type: str
    version: int
    rule: dict[str, Any]
    author: str
    reason: str
    evidence: str | None = None
    created_at: str | None = None


class RuleChange(BaseModel):
    dry_run: bool
    task_type: str
    previous_version: int
    new_version: int | None
    rule: dict[str, Any]
    previous_rule: dict[str, Any]
    requests_last_30_days: int
    cost_last_30_days_usd: Decimal
    projected_cost_last_30_days_usd: Decimal | None
    projected_monthly_change_usd: Decimal | None
    notes: list[str]


class RuleHistory(BaseModel):
    task_type: str
    versions: list[RuleView]
    audit: list[dict[str, Any]]


class RecordResult(BaseModel):
    id: str
    duplicate: bool = Field(description="true when this request_id was already recorded; nothing new stored")
    task_type: str
    model: str
    cost_usd: Decimal | None
    priced: bool
    sample_stored: bool


class VoidResult(BaseModel):
    dry_run: bool = Field(description="true: nothing was changed; these events would be voided")
    selector: str = Field(description="what was matched, e.g. source=demo")
    events: int = Field(description="usage events voided (or that would be)")
    cost_usd: Decimal = Field(description="their recorded cost, now out of every report")
    unpriced: int
    first_ts: str | None
    last_ts: str | None
    sample_ids: list[str] = Field(description="the first few event ids")


class QualityResult(BaseModel):
    id: str
    task_type: str
    model: str
    quality: float
    source: str
    previous_quality: float | None
