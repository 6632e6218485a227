"""The model catalog: tier, context window, capabilities and provider of each model, plus
aliases, with prices looked up in genai-prices at the request's time.

`build_catalog` takes already-parsed mappings (the shipped catalog.toml, then the user's
config), so this module reads no files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from genai_prices import data_snapshot
from genai_prices import types as gp

from mcp_prism.core.pricing import PriceSnapshot, Rate, TokenUsage, compute_cost
from mcp_prism.core.tasks import Tier
from mcp_prism.errors import ConfigError, UnknownName

KNOWN_CAPABILITIES = frozenset({"tools", "vision", "json", "reasoning", "fim"})


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    name: str
    format: str  # wire format: openai | anthropic | gemini
    batch_discount: Decimal = Decimal(0)
    local: bool = False
    base_url: str = ""  # API root the provider client posts to (config may point it at a proxy or a fake)
    api_key_env: str | None = None  # environment variable holding the key; None = the provider needs none


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    provider: str
    tier: Tier
    context_window: int
    capabilities: frozenset[str]
    family: str
    prices_ref: str | None = None  # genai-prices model id; None when the price is configured
    fixed_price: PriceSnapshot | None = None
    discount: Decimal = Decimal(0)  # negotiated fraction off list price


@dataclass(frozen=True, slots=True)
class Cost:
    usd: Decimal | None  # None = unpriced, never a silent 0
    prices: PriceSnapshot | None

    @property
    def priced(self) -> bool:
        return self.usd is not None


@dataclass
class Catalog:
    providers: dict[str, ProviderSpec]
    models: dict[str, ModelSpec]
    aliases: dict[str, str]
    _gp_models: dict[str, tuple[gp.Provider, gp.ModelInfo]] = field(default_factory=dict, repr=False)
    _price_cache: dict[tuple[str, int], PriceSnapshot] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- lookup
    def resolve(self, name: str) -> ModelSpec:
        """A model by name or alias (aliases may point at aliases)."""
        seen: set[str] = set()
        key = name.strip()
        while key in self.aliases and key not in seen:
            seen.add(key)
            key = self.aliases[key]
        spec = self.models.get(key)
        if spec is None:
            raise UnknownName("model", name, [*self.models, *self.aliases])
        return spec

    def in_tier(self, tier: Tier) -> list[ModelSpec]:
        """Hosted models of `tier`; local (Ollama/vLLM) models are offered only when a rule names them."""
        return [m for m in self.models.values() if m.tier == tier and not self.providers[m.provider].local]

    # ---------------------------------------------------------------- prices
    def prices_at(self, model: str, at: datetime | None = None) -> PriceSnapshot | None:
        """The prices in force for `model` at `at` (now when None), or None if unpriced."""
        spec = self.resolve(model)
        if spec.fixed_price is not None:
            return spec.fixed_price  # a configured discount is folded in when the catalog is built
        found = self._gp_models.get(spec.name)
        if found is None:
            return None
        provider, info = found
        when = at or datetime.now(tz=UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        model_price = info.get_prices(when)
        cache_key = (spec.name, id(model_price))
        snap = self._price_cache.get(cache_key)
        if snap is None:
            snap = snapshot_from_genai(model_price, self.providers[spec.provider], provider.id)
            if spec.discount:
                snap = snap.with_discount(spec.discount, f"{snap.source} -{spec.discount * 100}% negotiated")
            self._price_cache[cache_key] = snap
        return snap

    def cost(self, model: str, usage: TokenUsage, at: datetime | None = None, *, batch: bool = False) -> Cost:
        prices = self.prices_at(model, at)
        if prices is None:
            return Cost(None, None)
        return Cost(compute_cost(usage, prices, batch=batch), prices)


def _rate(value: Decimal | gp.TieredPrices | None) -> Rate | None:
    if value is None:
        return None
    if isinstance(value, gp.TieredPrices):
        return Rate(value.base, tuple((t.start, t.price) for t in value.tiers))
    return Rate(value)


def snapshot_from_genai(mp: gp.ModelPrice, provider: ProviderSpec, gp_provider: str) -> PriceSnapshot:
    input_rate, output_rate = _rate(mp.input_mtok), _rate(mp.output_mtok)
    if input_rate is None or output_rate is None:
        raise ConfigError(f"genai-prices has no token prices for a {gp_provider} model")
    return PriceSnapshot(
        input=input_rate,
        output=output_rate,
        cached_input=_rate(mp.cache_read_mtok),
        cache_write=_rate(mp.cache_write_mtok),
        reasoning=_rate(mp.output_reasoning_mtok),
        batch_discount=provider.batch_discount,
        source=f"genai-prices:{gp_provider}",
    )


# -------------------------------------------------------------------- building
def _dec(value: Any, where: str, *, lo: Decimal = Decimal(0), hi: Decimal | None = None) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number; write it as a string like \"0.5\"") from None
    if not d.is_finite() or d < lo or (hi is not None and d > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise ConfigError(f"{where}: {value!r} must be {bound}")
    return d


def _fixed_price(raw: Mapping[str, Any], where: str, provider: ProviderSpec) -> PriceSnapshot:
    unknown = set(raw) - {"input", "output", "cached_input", "cache_write", "reasoning"}
    if unknown or "input" not in raw or "output" not in raw:
        raise ConfigError(
            f"{where}: a price needs `input` and `output` (USD per million tokens) and may have "
            f"`cached_input`, `cache_write`, `reasoning`; got {sorted(raw)}"
        )
    rates = {k: Rate(_dec(v, f"{where}.{k}")) for k, v in raw.items()}
    return PriceSnapshot(batch_discount=provider.batch_discount, source="config", **rates)


def build_catalog(*layers: Mapping[str, Any]) -> Catalog:
    """Merge catalog layers (shipped first, user config last) and resolve prices."""
    providers_raw: dict[str, dict[str, Any]] = {}
    models_raw: dict[str, dict[str, Any]] = {}
    aliases: dict[str, str] = {}
    for layer in layers:
        for name, p in (layer.get("providers") or {}).items():
            providers_raw.setdefault(name, {}).update(p)
        for name, m in (layer.get("models") or {}).items():
            if not isinstance(m, Mapping):
                raise ConfigError(f"models.{name} must be a table")
            models_raw.setdefault(name, {}).update(m)
        aliases.update(layer.get("aliases") or {})

    providers = {
        name: ProviderSpec(
            name=name,
            format=str(p.get("format", "openai")),
            batch_discount=_dec(p.get("batch_discount", "0"), f"providers.{name}.batch_discount",
                                hi=Decimal(1)),
            local=bool(p.get("local", False)),
            base_url=str(p.get("base_url", "")).rstrip("/"),
            api_key_env=str(p["api_key_env"]) if p.get("api_key_env") else None,
        )
        for name, p in providers_raw.items()
    }
    for name, p in providers.items():
        if p.format not in ("openai", "anthropic", "gemini"):
            raise ConfigError(f"providers.{name}.format must be openai, anthropic or gemini, not {p.format!r}")
        if p.base_url and not p.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"providers.{name}.base_url must start with http:// or https://, not {p.base_url!r}")
        if "api_key" in providers_raw[name]:  # keys live in the environment, never in a file that gets shared
            raise ConfigError(f"providers.{name}: put the key in an environment variable and name it with "
                              "api_key_env, not api_key")

    snapshot = data_snapshot.get_snapshot()
    gp_providers = {p.id: p for p in snapshot.providers}
    models: dict[str, ModelSpec] = {}
    gp_models: dict[str, tuple[gp.Provider, gp.ModelInfo]] = {}
    for name, m in models_raw.items():
        where = f"models.{name!r}"
        provider_name = m.get("provider")
        if provider_name not in providers:
            raise ConfigError(f"{where}.provider must be one of {sorted(providers)}, not {provider_name!r}")
        provider = providers[provider_name]
        try:
            tier = Tier.parse(m.get("tier", ""))
        except ValueError as e:
            raise ConfigError(f"{where}.tier: {e}") from None
        raw_caps = m.get("capabilities", [])
        if not isinstance(raw_caps, list) or not all(isinstance(c, str) for c in raw_caps):
            raise ConfigError(f'{where}.capabilities must be a list of strings, e.g. ["tools", "json"]')
        caps = frozenset(raw_caps)
        if caps - KNOWN_CAPABILITIES:
            raise ConfigError(f"{where}.capabilities: unknown {sorted(caps - KNOWN_CAPABILITIES)}; "
                              f"known: {sorted(KNOWN_CAPABILITIES)}")
        window = m.get("context_window")
        if not isinstance(window, int) or window <= 0:
            raise ConfigError(f"{where}.context_window must be a positive integer")
        discount = _dec(m.get("discount", "0"), f"{where}.discount", hi=Decimal(1))
        fixed = _fixed_price(m["price"], f"{where}.price", provider) if "price" in m else None
        if fixed is not None and discount:
            fixed = fixed.with_discount(discount, f"config -{discount * 100}% negotiated")
        ref = None if fixed else str(m.get("prices", name))
        if ref is not None:
            gprov = gp_providers.get(str(m.get("prices_provider", provider_name)))
            info = gprov.find_model(ref) if gprov else None
            if gprov and info:
                gp_models[name] = (gprov, info)
        models[name] = ModelSpec(
            name=name,
            provider=provider_name,
            tier=tier,
            context_window=window,
            capabilities=caps,
            family=str(m.get("family", provider_name)),
            prices_ref=ref,
            fixed_price=fixed,
            discount=discount,
        )

    catalog = Catalog(providers=providers, models=models, aliases=aliases, _gp_models=gp_models)
    for alias, target in aliases.items():
        if alias in models:
            raise ConfigError(f"alias {alias!r} has the name of a model; pick another alias name")
        try:
            catalog.resolve(target)
        except UnknownName:
            raise ConfigError(f"alias {alias!r} points at unknown model {target!r}") from None
    return catalog


def cheapest_first(catalog: Catalog, models: Iterable[ModelSpec], usage: TokenUsage) -> list[ModelSpec]:
    """Models ordered by the cost of `usage` now; unpriced ones last."""

    def key(m: ModelSpec) -> tuple[int, Decimal, str]:
        c = catalog.cost(m.name, usage)
        return (0, c.usd, m.name) if c.usd is not None else (1, Decimal(0), m.name)

    return sorted(models, key=key)
