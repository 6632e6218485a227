"""The Decimal cost engine and the catalog's prices, cross-checked against genai-prices.

Every comparison of money here is exact `Decimal ==`: the engine promises no rounding.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price, data_snapshot
from genai_prices import types as gp
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_prism.config import shipped_catalog_data
from mcp_prism.core.catalog import Catalog, build_catalog, cheapest_first
from mcp_prism.core.pricing import (
    PriceSnapshot,
    Rate,
    TokenUsage,
    compute_cost,
    from_picodollars,
    to_picodollars,
)
from mcp_prism.errors import ConfigError, UnknownName

SHIPPED = build_catalog(shipped_catalog_data())
GENAI_MODELS = sorted(name for name, spec in SHIPPED.models.items() if spec.fixed_price is None)
LOCAL_MODELS = sorted(name for name, spec in SHIPPED.models.items() if spec.fixed_price is not None)
TIERED = {
    "claude-sonnet-4-5": 200_000,
    "gemini-2.5-pro": 200_000,
    "gemini-3-pro-preview": 200_000,
    "gpt-5.4": 272_000,
    "gpt-5.5": 272_000,
}
# Noon UTC is DeepSeek's standard-price window, 20:00 UTC its off-peak window; both are checked.
TIMESTAMPS = (datetime(2026, 11, 20, 12, 0, tzinfo=UTC), datetime(2026, 11, 20, 20, 0, tzinfo=UTC))
AT = TIMESTAMPS[0]

USAGES: dict[str, TokenUsage] = {
    "plain": TokenUsage(input_tokens=1_234, output_tokens=567),
    "tiny": TokenUsage(input_tokens=1, output_tokens=1),
    "zero": TokenUsage(),
    "cached_reads": TokenUsage(input_tokens=50_000, cached_input_tokens=32_768, output_tokens=900),
    "cache_writes": TokenUsage(input_tokens=40_000, cache_write_tokens=25_000, output_tokens=1_000),
    "reads_and_writes": TokenUsage(input_tokens=90_000, cached_input_tokens=60_000, cache_write_tokens=20_000,
                                   output_tokens=3_210),
    "reasoning": TokenUsage(input_tokens=8_000, output_tokens=12_345, reasoning_tokens=11_000),
    "at_200k": TokenUsage(input_tokens=200_000, output_tokens=2_000),
    "over_200k": TokenUsage(input_tokens=200_001, output_tokens=2_000),
    "at_272k": TokenUsage(input_tokens=272_000, output_tokens=2_000),
    "over_272k": TokenUsage(input_tokens=272_001, output_tokens=2_000),
    "large_cached_over_tier": TokenUsage(input_tokens=450_000, cached_input_tokens=300_000,
                                         cache_write_tokens=50_000, output_tokens=40_000, reasoning_tokens=30_000),
    "million": TokenUsage(input_tokens=1_000_000, output_tokens=64_000, reasoning_tokens=10_000),
}


def genai_cost(catalog: Catalog, model: str, usage: TokenUsage, at: datetime,
               price_context: dict[str, str] | None = None) -> Decimal:
    """What genai-prices says `usage` of catalog model `model` costs at `at`."""
    spec = catalog.resolve(model)
    assert spec.prices_ref is not None
    gp_usage = Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,  # includes reasoning tokens, as in TokenUsage
    )
    result = calc_price(gp_usage, model_ref=spec.prices_ref, provider_id=spec.provider,
                        genai_request_timestamp=at, price_context=price_context)
    return result.total_price


def gp_model(catalog: Catalog, model: str) -> gp.ModelInfo:
    spec = catalog.resolve(model)
    provider = next(p for p in data_snapshot.get_snapshot().providers if p.id == spec.provider)
    info = provider.find_model(spec.prices_ref or model)
    assert info is not None
    return info


def with_layer(layer: dict[str, Any]) -> Catalog:
    return build_catalog(shipped_catalog_data(), layer)


# ------------------------------------------------------------------ cross-check with genai-prices
def test_shipped_catalog_has_enough_genai_priced_models() -> None:
    assert len(GENAI_MODELS) >= 20
    assert set(TIERED) <= set(GENAI_MODELS)


@pytest.mark.parametrize("model", GENAI_MODELS)
def test_every_shipped_genai_model_is_priced(catalog: Catalog, model: str) -> None:
    prices = catalog.prices_at(model, AT)
    assert prices is not None, f"{model} has no genai-prices entry"
    assert prices.source.startswith("genai-prices:")
    assert catalog.cost(model, USAGES["plain"], AT).priced


@pytest.mark.parametrize("usage_name", list(USAGES))
@pytest.mark.parametrize("model", GENAI_MODELS)
def test_cost_equals_genai_prices(catalog: Catalog, model: str, usage_name: str) -> None:
    usage = USAGES[usage_name]
    assert usage.problems() == []
    for at in TIMESTAMPS:
        ours = catalog.cost(model, usage, at)
        assert ours.usd is not None
        assert ours.usd == genai_cost(catalog, model, usage, at), (model, usage_name, at)
        assert ours.usd >= 0


@pytest.mark.parametrize(("model", "threshold"), sorted(TIERED.items()))
def test_price_tier_applies_to_all_tokens_once_crossed(catalog: Catalog, model: str, threshold: int) -> None:
    prices = catalog.prices_at(model, AT)
    assert prices is not None
    assert prices.input.tiers and prices.input.tiers[0][0] == threshold
    assert prices.output.tiers and prices.output.tiers[0][0] == threshold
    low_in, high_in = prices.input.at(threshold), prices.input.at(threshold + 1)
    low_out, high_out = prices.output.at(threshold), prices.output.at(threshold + 1)
    assert high_in > low_in and high_out > low_out

    at_edge = TokenUsage(input_tokens=threshold, output_tokens=1_000)
    over = TokenUsage(input_tokens=threshold + 1, output_tokens=1_000)
    # the cliff: every token of the request is billed at the higher rate, not just the excess
    assert catalog.cost(model, at_edge, AT).usd == (threshold * low_in + 1_000 * low_out) / Decimal(10**6)
    assert catalog.cost(model, over, AT).usd == ((threshold + 1) * high_in + 1_000 * high_out) / Decimal(10**6)
    for usage in (at_edge, over, TokenUsage(input_tokens=threshold + 1, cached_input_tokens=threshold,
                                            output_tokens=5)):
        assert catalog.cost(model, usage, AT).usd == genai_cost(catalog, model, usage, AT)


def test_reasoning_tokens_are_billed_as_output_when_no_reasoning_rate(catalog: Catalog) -> None:
    with_reasoning = TokenUsage(input_tokens=1_000, output_tokens=5_000, reasoning_tokens=4_000)
    without = TokenUsage(input_tokens=1_000, output_tokens=5_000)
    assert catalog.cost("o3", with_reasoning, AT).usd == catalog.cost("o3", without, AT).usd


def test_explicit_reasoning_rate_splits_output() -> None:
    prices = PriceSnapshot(input=Rate(Decimal(1)), output=Rate(Decimal(10)), reasoning=Rate(Decimal(4)))
    usage = TokenUsage(input_tokens=1_000, output_tokens=3_000, reasoning_tokens=2_000)
    assert compute_cost(usage, prices) == (1_000 * 1 + 1_000 * 10 + 2_000 * 4) / Decimal(10**6)


# ------------------------------------------------------------------ prices change over time
def _start_date_changes() -> list[tuple[str, Any]]:
    out = []
    for name in GENAI_MODELS:
        info = gp_model(SHIPPED, name)
        if isinstance(info.prices, list):
            for cp in info.prices:
                if isinstance(cp.constraint, gp.StartDateConstraint):
                    out.append((name, cp.constraint.start_date))
    return out


START_DATE_CHANGES = _start_date_changes()


def _token_prices(mp: gp.ModelPrice) -> tuple[Any, ...]:
    return tuple(getattr(mp, k) for k in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok",
                                          "output_reasoning_mtok"))


def test_some_catalog_models_have_dated_price_changes() -> None:
    names = {name for name, _ in START_DATE_CHANGES}
    assert {"claude-opus-4-6", "o3"} <= names


@pytest.mark.parametrize(("model", "start"), START_DATE_CHANGES, ids=[f"{m}@{d}" for m, d in START_DATE_CHANGES])
def test_prices_follow_genai_start_dates(catalog: Catalog, model: str, start: Any) -> None:
    midnight = datetime(start.year, start.month, start.day, tzinfo=UTC)
    before, after = midnight - timedelta(microseconds=1), midnight
    info = gp_model(catalog, model)
    gp_before, gp_after = info.get_prices(before), info.get_prices(after)
    ours_before, ours_after = catalog.prices_at(model, at=before), catalog.prices_at(model, at=after)
    assert ours_before is not None and ours_after is not None
    # the catalog's prices change exactly when genai-prices' token prices change
    assert (ours_before != ours_after) == (_token_prices(gp_before) != _token_prices(gp_after))
    usage = TokenUsage(input_tokens=300_000, cached_input_tokens=100_000, output_tokens=20_000)
    for at in (before, after, midnight - timedelta(days=30), midnight + timedelta(days=30)):
        assert catalog.cost(model, usage, at).usd == genai_cost(catalog, model, usage, at)


def test_claude_opus_4_6_long_context_surcharge_ended(catalog: Catalog) -> None:
    start = next(d for m, d in START_DATE_CHANGES if m == "claude-opus-4-6")
    before = datetime(start.year, start.month, start.day, tzinfo=UTC) - timedelta(days=1)
    after = before + timedelta(days=2)
    old, new = catalog.prices_at("claude-opus-4-6", at=before), catalog.prices_at("claude-opus-4-6", at=after)
    assert old is not None and new is not None
    assert old != new
    assert old.input.tiers and not new.input.tiers
    usage = TokenUsage(input_tokens=300_000, output_tokens=1_000)
    assert catalog.cost("claude-opus-4-6", usage, before).usd != catalog.cost("claude-opus-4-6", usage, after).usd


def test_o3_price_cut(catalog: Catalog) -> None:
    old = catalog.prices_at("o3", at=datetime(2025, 6, 9, 23, 59, tzinfo=UTC))
    new = catalog.prices_at("o3", at=datetime(2025, 6, 10, 0, 0, tzinfo=UTC))
    assert old is not None and new is not None
    assert (old.input.base, old.output.base) == (Decimal(10), Decimal(40))
    assert (new.input.base, new.output.base) == (Decimal(2), Decimal(8))


def test_timezones_are_converted_to_utc_and_naive_means_utc(catalog: Catalog) -> None:
    # 01:00 at +05:00 on the 10th is 20:00 UTC on the 9th: still the old o3 price.
    plus5 = timezone(timedelta(hours=5))
    assert catalog.prices_at("o3", at=datetime(2025, 6, 10, 1, 0, tzinfo=plus5)) == catalog.prices_at(
        "o3", at=datetime(2025, 6, 9, 12, tzinfo=UTC))
    assert catalog.prices_at("o3", at=datetime(2025, 6, 9, 23, 0)) == catalog.prices_at(
        "o3", at=datetime(2025, 6, 9, 23, 0, tzinfo=UTC))


def test_deepseek_time_of_day_prices(catalog: Catalog) -> None:
    day, night = TIMESTAMPS
    info = gp_model(catalog, "deepseek-chat")
    assert _token_prices(info.get_prices(day)) != _token_prices(info.get_prices(night))
    assert catalog.prices_at("deepseek-chat", day) != catalog.prices_at("deepseek-chat", night)
    usage = USAGES["cached_reads"]
    assert catalog.cost("deepseek-chat", usage, day).usd == genai_cost(catalog, "deepseek-chat", usage, day)
    assert catalog.cost("deepseek-chat", usage, night).usd == genai_cost(catalog, "deepseek-chat", usage, night)


# ------------------------------------------------------------------ batch
@pytest.mark.parametrize("model", GENAI_MODELS + LOCAL_MODELS)
def test_batch_discount(catalog: Catalog, model: str) -> None:
    spec = catalog.resolve(model)
    for usage in (USAGES["plain"], USAGES["large_cached_over_tier"], USAGES["cache_writes"]):
        full = catalog.cost(model, usage, AT).usd
        batch = catalog.cost(model, usage, AT, batch=True).usd
        assert full is not None and batch is not None
        if spec.provider in ("anthropic", "openai", "google"):
            assert batch == full / 2
            if full:
                assert batch < full
        elif spec.provider == "deepseek" or catalog.providers[spec.provider].local:
            assert batch == full
        else:
            assert batch == full * (1 - catalog.providers[spec.provider].batch_discount)


def _has_batch_variant(model: str) -> bool:
    info = gp_model(SHIPPED, model)
    return any(v.when == {"processing": "batch"} for v in info.price_variants or ())


@pytest.mark.parametrize("model", [m for m in GENAI_MODELS if _has_batch_variant(m)])
def test_batch_matches_genai_batch_prices_for_uncached_tokens(catalog: Catalog, model: str) -> None:
    # genai-prices' own batch variants (in force from 2026-10-14) agree with the flat 50% for plain
    # input and output tokens; cached reads are where the two models of batch pricing can differ.
    for usage in (USAGES["plain"], USAGES["over_272k"], USAGES["million"]):
        assert catalog.cost(model, usage, AT, batch=True).usd == genai_cost(
            catalog, model, usage, AT, price_context={"processing": "batch"})


# ------------------------------------------------------------------ unpriced, local, discounts, config prices
def test_unpriced_model_costs_none_never_zero() -> None:
    cat = with_layer({"models": {"my-model": {"provider": "openai", "prices": "no-such-model-xyz",
                                              "tier": "simple", "context_window": 8_000}}})
    assert cat.prices_at("my-model", AT) is None
    cost = cat.cost("my-model", USAGES["plain"], AT)
    assert cost.usd is None and cost.prices is None and not cost.priced
    assert cat.cost("my-model", TokenUsage(), AT).usd is None
    assert cat.cost("my-model", USAGES["plain"], AT, batch=True).usd is None
    ordered = cheapest_first(cat, [cat.resolve("my-model"), cat.resolve("gpt-4o-mini")], USAGES["plain"])
    assert [m.name for m in ordered] == ["gpt-4o-mini", "my-model"]


@pytest.mark.parametrize("model", LOCAL_MODELS)
def test_local_models_cost_exactly_zero(catalog: Catalog, model: str) -> None:
    assert catalog.providers[catalog.resolve(model).provider].local
    for usage in USAGES.values():
        cost = catalog.cost(model, usage, AT)
        assert cost.priced
        assert cost.usd == Decimal(0)
        assert cost.prices is not None and cost.prices.source == "config"


def test_negotiated_discount_is_exactly_85_percent_of_list(catalog: Catalog) -> None:
    discounted = with_layer({"models": {"claude-sonnet-4-5": {"discount": "0.15"}}})
    spec = discounted.resolve("claude-sonnet-4-5")
    assert spec.discount == Decimal("0.15")
    assert spec.tier == catalog.resolve("claude-sonnet-4-5").tier  # the layer merged, not replaced
    for usage in USAGES.values():
        list_cost = catalog.cost("claude-sonnet-4-5", usage, AT).usd
        ours = discounted.cost("claude-sonnet-4-5", usage, AT).usd
        assert list_cost is not None and ours is not None
        assert ours == Decimal("0.85") * list_cost
        assert discounted.cost("standard", usage, AT).usd == ours  # through the alias too
        assert discounted.cost("claude-sonnet-4-5", usage, AT, batch=True).usd == ours / 2
    prices = discounted.prices_at("claude-sonnet-4-5", AT)
    assert prices is not None and "negotiated" in prices.source
    # other models keep their list price
    assert discounted.cost("gpt-4o", USAGES["plain"], AT).usd == catalog.cost("gpt-4o", USAGES["plain"], AT).usd


def test_explicit_config_price_for_custom_model() -> None:
    cat = with_layer({"models": {"my-coder": {
        "provider": "vllm", "tier": "simple", "context_window": 32_000, "capabilities": ["fim"],
        "price": {"input": "0.3", "output": "1.2", "cached_input": "0.15"},
    }}})
    usage = TokenUsage(input_tokens=10_000, cached_input_tokens=4_000, cache_write_tokens=1_000,
                       output_tokens=2_000, reasoning_tokens=500)
    cost = cat.cost("my-coder", usage, AT)
    # 5,000 plain input at 0.3, 4,000 cached at 0.15, 1,000 cache writes at the input price, 2,000 output at 1.2
    assert cost.usd == Decimal("0.0048")
    assert cost.usd == (5_000 * Decimal("0.3") + 4_000 * Decimal("0.15") + 1_000 * Decimal("0.3")
                        + 2_000 * Decimal("1.2")) / Decimal(10**6)
    assert cost.prices is not None and cost.prices.source == "config"
    assert cat.cost("my-coder", TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000), AT).usd == Decimal("1.5")
    # a config price beats genai-prices even for a model genai-prices knows
    overridden = with_layer({"models": {"gpt-4o": {"price": {"input": "1", "output": "2"}}}})
    assert overridden.cost("gpt-4o", TokenUsage(input_tokens=10**6, output_tokens=10**6), AT).usd == Decimal(3)


def test_discount_on_config_priced_model_is_applied_or_rejected() -> None:
    layer = {"models": {"my-coder": {"provider": "vllm", "tier": "simple", "context_window": 32_000,
                                     "price": {"input": "1", "output": "2"}, "discount": "0.5"}}}
    try:
        cat = with_layer(layer)
    except ConfigError:
        return  # rejecting the combination is a fix too
    assert cat.cost("my-coder", TokenUsage(input_tokens=10**6, output_tokens=10**6), AT).usd == Decimal("1.5")


# ------------------------------------------------------------------ build_catalog errors
def _model(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"provider": "openai", "tier": "simple", "context_window": 1_000}
    base.update(over)
    return base


@pytest.mark.parametrize(("layer", "needle"), [
    ({"models": {"m": _model(tier="enormous")}}, "models.'m'.tier"),
    ({"models": {"m": _model(tier=7)}}, "models.'m'.tier"),
    ({"models": {"m": _model(provider="acme")}}, "models.'m'.provider"),
    ({"models": {"m": {"tier": "simple", "context_window": 1}}}, "models.'m'.provider"),
    ({"models": {"m": _model(capabilities=["tools", "telepathy"])}}, "models.'m'.capabilities"),
    ({"aliases": {"speedy": "no-such-model"}}, "alias 'speedy'"),
    ({"aliases": {"gpt-4o": "gpt-4o-mini"}}, "alias 'gpt-4o'"),
    ({"aliases": {"loop-a": "loop-b", "loop-b": "loop-a"}}, "alias 'loop-a'"),
    ({"models": {"m": _model(price={"input": "cheap", "output": "1"})}}, "models.'m'.price.input"),
    ({"models": {"m": _model(price={"input": "1", "output": "-1"})}}, "models.'m'.price.output"),
    ({"models": {"m": _model(price={"input": "1", "output": "NaN"})}}, "models.'m'.price.output"),
    ({"models": {"m": _model(price={"input": "1"})}}, "models.'m'.price"),
    ({"models": {"m": _model(price={"input": "1", "output": "1", "surge": "2"})}}, "models.'m'.price"),
    ({"models": {"m": _model(context_window=0)}}, "models.'m'.context_window"),
    ({"models": {"m": _model(context_window="big")}}, "models.'m'.context_window"),
    ({"models": {"m": _model(discount="1.5")}}, "models.'m'.discount"),
    ({"models": {"m": _model(discount="lots")}}, "models.'m'.discount"),
    ({"models": {"m": "not a table"}}, "models.m"),
    ({"providers": {"openai": {"batch_discount": "half"}}}, "providers.openai.batch_discount"),
    ({"providers": {"openai": {"batch_discount": "2"}}}, "providers.openai.batch_discount"),
    ({"providers": {"acme": {"format": "soap"}}}, "providers.acme.format"),
])
def test_build_catalog_errors_name_the_field(layer: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        with_layer(layer)
    assert needle in str(err.value)


def test_alias_chains_resolve(catalog: Catalog) -> None:
    cat = with_layer({"aliases": {"my-default": "standard"}})
    assert cat.resolve("my-default").name == "claude-sonnet-4-5"
    assert cat.resolve(" fast ").name == catalog.resolve("gemini-2.5-flash").name


# ------------------------------------------------------------------ TokenUsage.problems
def test_token_usage_problems() -> None:
    assert TokenUsage(input_tokens=10, cached_input_tokens=4, cache_write_tokens=6, output_tokens=3,
                      reasoning_tokens=3).problems() == []
    assert TokenUsage().problems() == []

    (msg,) = TokenUsage(input_tokens=10, cached_input_tokens=11).problems()
    assert "cached_input_tokens" in msg and "exceed input_tokens" in msg
    (msg,) = TokenUsage(input_tokens=10, cached_input_tokens=6, cache_write_tokens=5).problems()
    assert "cache_write_tokens" in msg
    (msg,) = TokenUsage(input_tokens=10, output_tokens=5, reasoning_tokens=6).problems()
    assert "reasoning_tokens exceed output_tokens" in msg

    for name in ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens"):
        problems = TokenUsage(**{name: -1}).problems()
        assert f"{name} must be >= 0" in problems, (name, problems)

    many = TokenUsage(input_tokens=-1, cached_input_tokens=2, output_tokens=1, reasoning_tokens=2).problems()
    assert len(many) == 3


# ------------------------------------------------------------------ serialisation
TIERED_SNAPSHOT = PriceSnapshot(
    input=Rate(Decimal("3"), ((200_000, Decimal("6")), (1_000_000, Decimal("9.5")))),
    output=Rate(Decimal("15"), ((200_000, Decimal("22.5")),)),
    cached_input=Rate(Decimal("0.30"), ((200_000, Decimal("0.6")),)),
    cache_write=Rate(Decimal("3.75")),
    reasoning=Rate(Decimal("0.000001")),
    batch_discount=Decimal("0.5"),
    source="config",
)


@pytest.mark.parametrize("snapshot", [
    TIERED_SNAPSHOT,
    PriceSnapshot(input=Rate(Decimal(0)), output=Rate(Decimal(0))),
    *[s for s in (SHIPPED.prices_at(m, AT) for m in GENAI_MODELS + LOCAL_MODELS) if s is not None],
])
def test_price_snapshot_json_round_trip(snapshot: PriceSnapshot) -> None:
    text = snapshot.to_json()
    back = PriceSnapshot.from_json(text)
    assert back == snapshot
    assert back.to_json() == text
    for usage in (USAGES["large_cached_over_tier"], USAGES["reasoning"], USAGES["million"]):
        assert compute_cost(usage, back) == compute_cost(usage, snapshot)
        assert compute_cost(usage, back, batch=True) == compute_cost(usage, snapshot, batch=True)


def test_tiered_rate_json_shape() -> None:
    assert Rate(Decimal("2.5")).to_json() == "2.5"
    assert Rate(Decimal("2.5"), ((272_000, Decimal("5")),)).to_json() == {"base": "2.5", "tiers": [[272_000, "5"]]}
    assert Rate.from_json({"base": "2.5", "tiers": [[272_000, "5"]]}).at(272_001) == Decimal(5)
    assert Rate.from_json(0.5) == Rate(Decimal("0.5"))


@given(st.decimals(min_value=Decimal("-1e6"), max_value=Decimal("1e6"), places=12,
                   allow_nan=False, allow_infinity=False))
def test_picodollars_round_trip(cost: Decimal) -> None:
    pico = to_picodollars(cost)
    assert isinstance(pico, int)
    assert from_picodollars(pico) == cost


def test_picodollars_rounding_and_none() -> None:
    assert to_picodollars(Decimal("0.0048")) == 4_800_000_000
    assert to_picodollars(Decimal("0.0000000000005")) == 0  # half to even
    assert to_picodollars(Decimal("0.0000000000015")) == 2
    assert to_picodollars(Decimal("0.00000000000149")) == 1
    assert from_picodollars(None) == Decimal(0)
    assert from_picodollars(1) == Decimal("1e-12")


# ------------------------------------------------------------------ properties
PROPERTY_MODELS = ["claude-sonnet-4-5", "claude-haiku-5-5", "gpt-5.4", "gemini-2.5-pro", "gpt-4o-mini",
                   "deepseek-chat"]


@st.composite
def valid_usages(draw: st.DrawFn) -> TokenUsage:
    n_in = draw(st.integers(0, 2_000_000))
    cached = draw(st.integers(0, n_in))
    write = draw(st.integers(0, n_in - cached))
    out = draw(st.integers(0, 2_000_000))
    reasoning = draw(st.integers(0, out))
    return TokenUsage(n_in, cached, write, out, reasoning)


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(PROPERTY_MODELS), usage=valid_usages(), extra_out=st.integers(1, 100_000),
       at=st.sampled_from(TIMESTAMPS))
def test_cost_properties(model: str, usage: TokenUsage, extra_out: int, at: datetime) -> None:
    assert usage.problems() == []
    cost = SHIPPED.cost(model, usage, at).usd
    assert cost is not None
    assert cost >= 0
    assert cost == genai_cost(SHIPPED, model, usage, at)

    more = TokenUsage(usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens,
                      usage.output_tokens + extra_out, usage.reasoning_tokens)
    more_cost = SHIPPED.cost(model, more, at).usd
    assert more_cost is not None and more_cost > cost

    discount = SHIPPED.providers[SHIPPED.resolve(model).provider].batch_discount
    assert SHIPPED.cost(model, usage, at, batch=True).usd == (1 - discount) * cost


def test_discovered_models_are_bounded_and_found_again(catalog, monkeypatch) -> None:
    """Unlisted names are discovered on first use; a flood of invented ones evicts the oldest instead of
    growing without limit or refusing a real new model."""
    from mcp_prism.core import catalog as catalog_module

    monkeypatch.setattr(catalog_module, "MAX_DISCOVERED", 3)
    assert catalog.resolve("claude-opus-5-5").discovered and catalog.prices_at("claude-opus-5-5") is not None
    for i in range(5):
        assert catalog.resolve(f"claude-invented-{i}", unpriced=True).provider == "anthropic"
    assert len(catalog._discovered) == 3 and "claude-opus-5-5" not in catalog._discovered
    assert catalog.prices_at("claude-opus-5-5") is not None  # found again, priced again
    assert not catalog.resolve("claude-haiku-4-5").discovered
    with pytest.raises(UnknownName):
        catalog.resolve("not a model name")


def test_an_unpriced_new_name_is_only_for_serving_what_a_client_named(catalog) -> None:
    """Rules, judges and experiments resolve strictly: a name neither listed nor known to genai-prices may be
    a typo there. Known new names (genai-prices) resolve everywhere."""
    with pytest.raises(UnknownName):
        catalog.resolve("claude-sonet-4-5")
    assert catalog.resolve("claude-sonet-4-5", unpriced=True).provider == "anthropic"
    assert catalog.prices_at("claude-sonet-4-5") is None
    assert catalog.resolve("claude-opus-4-8").prices_ref == "claude-opus-4-8"
