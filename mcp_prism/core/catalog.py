"""The model catalog: tier, context window, capabilities and provider of each model, plus
aliases, with prices looked up in genai-prices at the request's time.

New model names appear every month (Claude Code 2.1 sends `claude-opus-4-8` by default). A name the
catalog does not list but that plausibly belongs to a configured provider is *discovered* on first use
rather than refused: its provider is the one whose listed models share its family prefix (`claude-`,
`gpt-`, ...) or whose genai-prices list knows it; tier, capabilities and family come from the listed
model with the longest common prefix; the price comes from genai-prices when it knows the name, else
the model is unpriced (tokens recorded, cost None, never a silent 0), and only callers that serve or
record what a client named accept it (`resolve(..., unpriced=True)`). Discovered models serve clients
that name them; routing only offers the models the catalog lists.

`build_catalog` takes already-parsed mappings (the shipped catalog.toml, then the user's
config), so this module reads no files.
"""

from __future__ import annotations

import re
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
    responses_api: bool = False  # also serves OpenAI's Responses API (`/responses`) beside its own format


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
    discovered: bool = False  # not listed: found on first use (see the module doc)
    api: str = "chat"  # "responses": the model accepts only OpenAI's Responses API (codex family)


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
    _gp_providers: dict[str, gp.Provider] = field(default_factory=dict, repr=False)  # configured provider -> gp
    _discovered: dict[str, ModelSpec | None] = field(default_factory=dict, repr=False)  # None = not plausible

    # ---------------------------------------------------------------- lookup
    def resolve(self, name: str, *, unpriced: bool = False) -> ModelSpec:
        """A model by name or alias (aliases may point at aliases), or an unlisted name genai-prices knows
        for a configured provider. `unpriced` also admits plausible names nobody prices (for serving and
        recording what a client named; rules, judges and experiments leave it off, so a typo still fails)."""
        seen: set[str] = set()
        key = name.strip()
        while key in self.aliases and key not in seen:
            seen.add(key)
            key = self.aliases[key]
        spec = self.models.get(key)
        if spec is None:
            spec = self._discovered[key] if key in self._discovered else self._discover(key)
            if spec is None or (spec.prices_ref is None and not unpriced):
                raise UnknownName("model", name, [*self.models, *self.aliases])
        return spec

    def _discover(self, name: str) -> ModelSpec | None:
        """A spec for an unlisted but plausible model name (see the module doc); None when implausible."""
        if not _PLAUSIBLE.match(name):
            return None
        if len(self._discovered) >= MAX_DISCOVERED:  # bounded: clients inventing names cannot grow it forever
            old = next(iter(self._discovered))  # the oldest goes (found again if asked for again)
            del self._discovered[old]
            self._gp_models.pop(old, None)
            for k in [k for k in self._price_cache if k[0] == old]:
                del self._price_cache[k]
        listed = [m for m in self.models.values() if not self.providers[m.provider].local
                  or name.startswith(m.provider + "/")]
        nearest = max(listed, key=lambda m: (_common_prefix(m.name, name), m.name), default=None)
        family = _family_prefix(name)
        found: tuple[gp.Provider, gp.ModelInfo] | None = None
        if nearest is not None and family and nearest.name.startswith(family):
            gprov = self._gp_providers.get(nearest.provider)
            info = gprov.find_model(name) if gprov else None
            found = (gprov, info) if gprov and info else None
        else:  # no listed model of this family: a configured provider's genai-prices list may know it
            nearest = None
            for provider, gprov in self._gp_providers.items():
                info = gprov.find_model(name)
                if info is not None and not self.providers[provider].local:
                    found = (gprov, info)
                    same = [m for m in listed if m.provider == provider]
                    nearest = max(same, key=lambda m: (_common_prefix(m.name, name), m.name), default=None)
                    break
        if nearest is None:
            self._discovered[name] = None
            return None
        if found is not None:  # a dated or spelled-out name of a listed model (genai-prices says so): that model
            same = next((self.models[n] for n, (gprov, info) in self._gp_models.items() if n in self.models
                         and gprov.id == found[0].id and info.id == found[1].id), None)
            if same is not None:
                self._discovered[name] = same
                return same
        window = found[1].context_window if found and found[1].context_window else nearest.context_window
        spec = ModelSpec(name=name, provider=nearest.provider, tier=nearest.tier, context_window=window,
                         capabilities=nearest.capabilities, family=nearest.family,
                         prices_ref=found[1].id if found else None, discovered=True,
                         api=default_api(nearest.provider, name))
        if found is not None:
            self._gp_models[name] = found
        self._discovered[name] = spec
        return spec

    def in_tier(self, tier: Tier) -> list[ModelSpec]:
        """Hosted models of `tier`; local (Ollama/vLLM) models are offered only when a rule names them."""
        return [m for m in self.models.values() if m.tier == tier and not self.providers[m.provider].local]

    # ---------------------------------------------------------------- prices
    def prices_at(self, model: str, at: datetime | None = None) -> PriceSnapshot | None:
        """The prices in force for `model` at `at` (now when None), or None if unpriced."""
        spec = self.resolve(model, unpriced=True)
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


MAX_DISCOVERED = 1000
_PLAUSIBLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{1,127}$")


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _family_prefix(name: str) -> str:
    """`claude-` of claude-opus-4-8, `gpt-` of gpt-5.5, `ollama/` of ollama/qwen3: what a provider's names share."""
    m = re.match(r"[A-Za-z]+[-/]", name)
    return m.group(0) if m else ""


def default_api(provider: str, model: str) -> str:
    """The API a model takes when the catalog does not say: OpenAI's codex models take only the Responses API."""
    return "responses" if provider == "openai" and "codex" in model else "chat"


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
        cache_write_1h=_rate(mp.cache_write_1h_mtok),
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
    unknown = set(raw) - {"input", "output", "cached_input", "cache_write", "reasoning", "cache_write_1h"}
    if unknown or "input" not in raw or "output" not in raw:
        raise ConfigError(
            f"{where}: a price needs `input` and `output` (USD per million tokens) and may have "
            f"`cached_input`, `cache_write`, `cache_write_1h`, `reasoning`; got {sorted(raw)}"
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
            responses_api=bool(p.get("responses_api", False)),
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
        api = str(m.get("api", default_api(provider_name, name)))
        if api not in ("chat", "responses"):
            raise ConfigError(f'{where}.api must be "chat" or "responses" (a model that accepts only OpenAI\'s '
                              f"Responses API), not {api!r}")
        if api == "responses" and provider.format != "openai":
            raise ConfigError(f'{where}.api = "responses" needs an OpenAI-format provider, not {provider_name} '
                              f"({provider.format})")
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
            api=api,
        )

    catalog = Catalog(providers=providers, models=models, aliases=aliases, _gp_models=gp_models,
                      _gp_providers={n: gp_providers[n] for n in providers if n in gp_providers})
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
