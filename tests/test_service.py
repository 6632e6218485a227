"""The application service end to end on a real SQLite file: routing, rules, recording, reports."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import ConfigError, InvalidInput, UnknownName
from mcp_prism.service import PrismService, UsageInput

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _settings(tmp_path: Path, config: str = "") -> Settings:
    if config:
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "config.toml").write_text(config)
    return Settings.from_env({}, home=tmp_path)


@pytest.fixture
async def svc(tmp_path: Path):
    service = await PrismService.open(_settings(tmp_path))
    yield service
    await service.close()


async def test_route_by_type_and_by_description(svc: PrismService) -> None:
    r = await svc.route_task(task_type="ticket_classification")
    assert (r.model, r.tier, r.confidence, r.classified) == ("gemini-2.5-flash", "simple", 1.0, False)
    assert r.rule_id == "ticket_classification" and r.rule_version == 0
    assert r.estimated_cost_usd == svc.catalog.cost("gemini-2.5-flash", TokenUsage(900, 0, 0, 60)).usd
    r = await svc.route_task("Why does the checkout service return 500 after the deploy? stack trace attached")
    assert r.task_type == "bug_investigation" and r.tier == "complex" and r.classified
    assert r.alternatives and all(a.model != r.model for a in r.alternatives)


async def test_route_reports_an_uncertain_classification_and_the_runner_up(svc: PrismService) -> None:
    sure = await svc.route_task("write unit tests for the invoice parser")
    assert sure.task_type == "test_generation" and not sure.uncertain and sure.runner_up
    assert not any("uncertain" in s for s in sure.signals)
    # Nothing fits: it falls back, says so, and names the guess it declined.
    vague = await svc.route_task("hello there")
    assert vague.task_type == "general" and vague.uncertain and vague.runner_up not in (None, "general")
    assert any(s.startswith("uncertain classification") and vague.runner_up in s and "pass task_type" in s
               for s in vague.signals)
    # A verdict inside the model's weak band is reported the same way (band widened to cover it).
    svc.classifier.uncertain_below = 1.01
    weak = await svc.route_task("write unit tests for the invoice parser")
    assert weak.task_type == "test_generation" and weak.uncertain and weak.runner_up == sure.runner_up
    given = await svc.route_task("write unit tests for the invoice parser", task_type="test_generation")
    assert not given.uncertain and given.runner_up is None


async def test_complexity_upgrades_the_model(svc: PrismService) -> None:
    plain = await svc.route_task("review this pull request", task_type="code_review")
    hard = await svc.route_task(
        "review this pull request: it changes locking across several services and a race condition "
        "caused last night's production outage", task_type="code_review")
    assert plain.model == "claude-sonnet-4-5"
    assert hard.complexity_boost >= 1 and hard.model == "claude-opus-4-5"
    assert any("upgraded" in reason for reason in hard.reasons)


async def test_context_larger_than_window_moves_to_a_model_that_fits(svc: PrismService) -> None:
    r = await svc.route_task(task_type="code_review", context_tokens=300_000)
    assert svc.catalog.resolve(r.model).context_window >= 300_000 + 4096
    assert any("context" in reason for reason in r.reasons)
    assert all(svc.catalog.resolve(a.model).context_window >= 304_096 for a in r.alternatives)
    with pytest.raises(InvalidInput, match="no model in the catalog accepts"):
        await svc.route_task(task_type="code_review", context_tokens=5_000_000)


async def test_route_rejects_bad_input(svc: PrismService) -> None:
    with pytest.raises(InvalidInput, match="description"):
        await svc.route_task()
    with pytest.raises(UnknownName, match="task type"):
        await svc.route_task(task_type="nope")
    with pytest.raises(InvalidInput, match="context_tokens"):
        await svc.route_task("x", context_tokens=-1)


async def test_record_usage_costs_server_side_and_dedupes(svc: PrismService) -> None:
    u = UsageInput(model="standard", task_type="code_review", input_tokens=12_000, cached_input_tokens=8_000,
                   output_tokens=900, latency_ms=2100, ttft_ms=400, request_id="req-1")
    first = await svc.record_usage(u)
    expected = svc.catalog.cost("claude-sonnet-4-5", TokenUsage(12_000, 8_000, 0, 900)).usd
    assert first.model == "claude-sonnet-4-5" and first.cost_usd == expected and not first.duplicate
    again = await svc.record_usage(u)
    assert again.duplicate and again.id == first.id and again.cost_usd == expected
    report = await svc.cost_report(days=1)
    assert report.total_requests == 1 and report.total_cost_usd == expected


async def test_record_usage_validation_writes_nothing(svc: PrismService) -> None:
    bad = [
        UsageInput(model="gpt-4o", task_type="code_review", input_tokens=10, cached_input_tokens=20),
        UsageInput(model="gpt-4o", task_type="code_review", output_tokens=10, reasoning_tokens=20),
        UsageInput(model="gpt-4o", task_type="code_review", latency_ms=10, ttft_ms=20),
        UsageInput(model="gpt-4o", task_type="code_review", quality=1.5, quality_source="human"),
        UsageInput(model="gpt-4o", task_type="no_such_type"),
        UsageInput(model="gpt-4o", task_type="code_review", status="exploded"),
        UsageInput(model="gpt-4o", task_type="code_review", timestamp="yesterday"),
        UsageInput(model="made-up-model", task_type="code_review"),
    ]
    for u in bad:
        with pytest.raises(InvalidInput):
            await svc.record_usage(u)
    assert await svc.store.count_events() == 0


async def test_unknown_model_with_provider_is_unpriced_not_free(svc: PrismService) -> None:
    r = await svc.record_usage(UsageInput(model="acme-llm-9", provider="acme", task_type="general",
                                          input_tokens=1000, output_tokens=100, latency_ms=50))
    assert r.cost_usd is None and not r.priced
    report = await svc.cost_report(days=1)
    assert report.unpriced_requests == 1 and report.total_cost_usd == 0
    assert report.monthly_after_routing_usd is None  # cannot claim a saving over unknown spend
    assert "unpriced" in report.markdown


async def test_price_in_force_at_the_request_time_and_batch(svc: PrismService) -> None:
    old = iso(utcnow() - timedelta(days=3))
    r = await svc.record_usage(UsageInput(model="gpt-4o", task_type="general", input_tokens=1_000_000,
                                          output_tokens=1_000_000, timestamp=old, batch=True))
    assert r.cost_usd == (Decimal("2.5") + Decimal(10)) / 2
    with pytest.raises(InvalidInput, match="future"):
        await svc.record_usage(UsageInput(model="gpt-4o", task_type="general",
                                          timestamp=iso(utcnow() + timedelta(days=1))))


async def test_samples_are_stored_only_for_opted_in_types(tmp_path: Path) -> None:
    svc = await PrismService.open(_settings(tmp_path, "[task_types.code_review]\ncapture_samples = true\n"))
    try:
        kept = await svc.record_usage(UsageInput(model="gpt-4o", task_type="code_review", prompt="diff", response="ok"))
        dropped = await svc.record_usage(UsageInput(model="gpt-4o", task_type="email_drafting", prompt="secret",
                                                    response="text"))
        assert kept.sample_stored and not dropped.sample_stored
        rows = await svc.store.fetch("SELECT event_id, prompt FROM samples")
        assert [(r[0], r[1]) for r in rows] == [(kept.id, "diff")]
    finally:
        await svc.close()


async def test_team_task_type_from_config_is_classified_and_routed(tmp_path: Path) -> None:
    config = """
[task_types.sql_migration]
description = "Write or check database migrations"
tier = "standard"
keywords = ["alembic", "migration script", "sql migration"]
[aliases]
standard = "gpt-5"
"""
    svc = await PrismService.open(_settings(tmp_path, config))
    try:
        r = await svc.route_task("write an alembic migration script that adds the invoices table")
        assert r.task_type == "sql_migration" and r.model == "gpt-5"  # the tier alias, user-defined
        with pytest.raises(ConfigError):
            await PrismService.open(_settings(tmp_path / "x", "[task_types.code_review]\ntier = 'simple'\n"))
    finally:
        await svc.close()


async def test_rule_update_dry_run_versioning_rollback_and_audit(svc: PrismService) -> None:
    for i in range(10):
        await svc.record_usage(UsageInput(model="claude-sonnet-4-5", task_type="test_generation",
                                          input_tokens=5000, output_tokens=1500, latency_ms=900,
                                          request_id=f"t{i}"))
    rule = {"task_type": "test_generation", "primary": "claude-sonnet-4-5", "fallbacks": ["gpt-5-mini"]}
    dry = await svc.update_routing_rule(rule, author="ana", reason="trial", dry_run=True)
    assert dry.new_version is None and dry.requests_last_30_days == 10
    assert dry.projected_monthly_change_usd == 0  # same model as recorded
    assert (await svc.route_task(task_type="test_generation")).rule_version == 0  # dry run changed nothing

    down = await svc.update_routing_rule({**rule, "primary": "gpt-5-mini", "fallbacks": []}, author="ana",
                                         reason="cheaper", dry_run=True)
    expected_new = svc.catalog.cost("gpt-5-mini", TokenUsage(5000, 0, 0, 1500)).usd * 10
    assert down.projected_cost_last_30_days_usd == expected_new
    assert down.projected_monthly_change_usd == expected_new - down.cost_last_30_days_usd < 0

    v1 = await svc.update_routing_rule(rule, author="ana", reason="keep sonnet", evidence="exp-1")
    assert v1.new_version == 1
    routed = await svc.route_task(task_type="test_generation")
    assert (routed.model, routed.rule_version) == ("claude-sonnet-4-5", 1)
    back = await svc.rollback_rule("test_generation", 0, author="bo", reason="regression")
    assert back.new_version == 2
    assert (await svc.route_task(task_type="test_generation")).model == "claude-haiku-4-5"
    history = await svc.rule_history("test_generation")
    assert [v.version for v in history.versions] == [0, 1, 2]
    assert [a["action"] for a in history.audit] == ["rollback", "update"]
    with pytest.raises(InvalidInput, match="no version 7"):
        await svc.rollback_rule("test_generation", 7, author="bo", reason="x")


async def test_rule_validation_says_what_is_wrong(svc: PrismService) -> None:
    cases = [
        ({"task_type": "code_review"}, "primary"),
        ({"task_type": "code_review", "primary": "gpt-4o", "colour": "red"}, "colour"),
        ({"task_type": "code_review", "primary": "nope-model"}, "unknown model"),
        ({"task_type": "code_review", "primary": "deepseek-reasoner", "required_capabilities": ["tools"]},
         "lacks required capabilities"),
        ({"task_type": "code_review", "primary": "gpt-4o", "min_context": 500_000}, "min_context"),
        ({"task_type": "code_review", "primary": "gpt-4o", "fallbacks": ["gpt-4o"]}, "also listed"),
    ]
    for rule, words in cases:
        with pytest.raises(InvalidInput, match=words):
            await svc.update_routing_rule(rule, author="a", reason="r")
    with pytest.raises(InvalidInput, match="author"):
        await svc.update_routing_rule({"task_type": "code_review", "primary": "gpt-4o"}, author=" ", reason="r")
    assert (await svc.rule_history("code_review")).versions[-1].version == 0


async def test_cost_report_groups_projection_and_opportunities(svc: PrismService) -> None:
    inputs = []
    for i in range(40):
        task = "ticket_classification" if i % 2 else "code_review"
        inputs.append(UsageInput(model="claude-sonnet-4-5", task_type=task, input_tokens=2000, output_tokens=300,
                                 latency_ms=1000 + i, team="a" if i < 20 else "b", request_id=f"r{i}"))
    assert await svc.record_many(inputs) == 40
    unit = svc.catalog.cost("claude-sonnet-4-5", TokenUsage(2000, 0, 0, 300)).usd
    by_team = await svc.cost_report(days=7, group_by=["team"])
    assert {g.key["team"]: g.requests for g in by_team.groups} == {"a": 20, "b": 20}
    assert by_team.total_cost_usd == unit * 40
    assert by_team.days == 1 and by_team.monthly_projection_usd == unit * 40 * 30
    flash = svc.catalog.cost("gemini-2.5-flash", TokenUsage(2000, 0, 0, 300)).usd
    assert by_team.monthly_after_routing_usd == (unit * 20 + flash * 20) * 30
    assert by_team.monthly_saving_usd == (unit - flash) * 20 * 30
    [opp] = by_team.opportunities
    assert (opp.task_type, opp.routed_model) == ("ticket_classification", "gemini-2.5-flash")
    assert "hypothesis" in opp.evidence
    only_a = await svc.cost_report(days=7, filters={"team": "a"})
    assert only_a.total_requests == 20
    with pytest.raises(InvalidInput, match="group by"):
        await svc.cost_report(group_by=["colour"])
    with pytest.raises(InvalidInput, match="date"):
        await svc.cost_report(since="last tuesday")


async def test_quality_feeds_reports_and_compare(svc: PrismService) -> None:
    r = await svc.record_usage(UsageInput(model="gpt-4o-mini", task_type="data_extraction", input_tokens=100,
                                          output_tokens=10, latency_ms=300, request_id="q1"))
    q = await svc.record_quality("q1", 0.8, "judge")
    assert q.id == r.id and q.previous_quality is None
    await svc.record_quality(r.id, 0.6, "human")
    report = await svc.cost_report(days=1, group_by=["task_type", "model"])
    assert report.groups[0].avg_quality == pytest.approx(0.6) and report.groups[0].rated_requests == 1
    cmp = await svc.compare_models("data_extraction")
    mini = next(c for c in cmp.candidates if c.model == "gpt-4o-mini")
    assert mini.observed_quality == pytest.approx(0.6) and mini.observed_requests == 1
    assert sum(c.current for c in cmp.candidates) == 1
    with pytest.raises(InvalidInput):
        await svc.record_quality("nope", 0.5, "human")
    with pytest.raises(InvalidInput):
        await svc.record_quality(r.id, 2, "human")


async def test_compare_with_given_tokens_and_models(svc: PrismService) -> None:
    cmp = await svc.compare_models(models=["fast", "frontier"], input_tokens=1_000_000, output_tokens=0)
    assert [c.model for c in cmp.candidates] == ["gemini-2.5-flash", "claude-opus-4-5"]
    assert cmp.candidates[0].cost_per_request_usd == Decimal("0.3")
    with pytest.raises(InvalidInput):
        await svc.compare_models()


async def test_list_models_filters(svc: PrismService) -> None:
    simple = svc.list_models(tier="simple")
    assert simple.models and {m.tier for m in simple.models} == {"simple"}
    assert any("fast" in m.aliases for m in simple.models)
    assert all(m.priced for m in svc.list_models().models)
    with pytest.raises(InvalidInput):
        svc.list_models(tier="huge")


async def test_new_model_names_are_recorded_priced_from_genai_prices_or_unpriced_with_one_warning(
        svc: PrismService, caplog: pytest.LogCaptureFixture) -> None:
    """Claude Code's default model (claude-opus-4-8 in 2.1.197; claude-opus-5-5 elsewhere) is not in the shipped
    catalog: record_usage takes it without a provider, priced from genai-prices; a plausible name genai-prices
    does not know is recorded unpriced, with one warning saying how to add a price."""
    from genai_prices import data_snapshot

    for name in ("claude-opus-4-8", "claude-opus-5-5"):
        r = await svc.record_usage(UsageInput(model=name, task_type="code_review", input_tokens=1_000_000,
                                              output_tokens=1_000_000))
        info = {p.id: p for p in data_snapshot.get_snapshot().providers}["anthropic"].find_model(name)
        price = info.get_prices(utcnow())
        assert r.priced and r.cost_usd == price.input_mtok + price.output_mtok and r.model == name
    with caplog.at_level("WARNING"):
        for _ in range(3):
            r = await svc.record_usage(UsageInput(model="claude-opus-9-9", task_type="code_review", input_tokens=10))
            assert not r.priced and r.cost_usd is None
    warned = [rec.getMessage() for rec in caplog.records if "claude-opus-9-9" in rec.getMessage()]
    assert len(warned) == 1 and '[models."claude-opus-9-9"]' in warned[0] and "price =" in warned[0]
    with pytest.raises(InvalidInput, match="not in the catalog"):  # no provider's models look like it
        await svc.record_usage(UsageInput(model="acme-llm-9", task_type="code_review"))
    # a new name serves clients that ask for it; routing still offers only the listed models
    assert all(not m.discovered for tier in (0, 1, 2) for m in svc.catalog.in_tier(tier))  # type: ignore[arg-type]


def test_every_genai_prices_model_of_a_configured_provider_resolves_priced(tmp_path: Path) -> None:
    """The catalog follows genai-prices' model list, not a hand-kept one: each model genai-prices prices for a
    configured hosted provider resolves (to the provider whose models share its family) and is priced."""
    from genai_prices import data_snapshot

    catalog = _settings(tmp_path).catalog()
    gp = {p.id: p for p in data_snapshot.get_snapshot().providers}
    checked = 0
    for provider, spec in catalog.providers.items():
        if spec.local or provider not in gp:
            continue
        for info in gp[provider].models:
            try:
                price = info.get_prices(utcnow())
            except Exception:  # a model genai-prices lists without a current price
                continue
            if price.input_mtok is None or price.output_mtok is None or gp[provider].find_model(info.id) is None:
                continue  # unpriced by tokens, or an id that is only a prefix (ft:gpt-4o:<org>:...)
            m = catalog.resolve(info.id, unpriced=True)
            if m.provider != provider:  # another family hosted there (Claude on Google): its own provider's
                continue                # price, or unpriced, never the host's
            assert catalog.prices_at(info.id) is not None, info.id
            checked += 1
    assert checked > 50
