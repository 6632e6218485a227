"""Prices for any model name an agent logged, not only the catalog's: the catalog's own price when it
lists the model (aliases, configured prices and discounts included), else genai-prices' entry for the
provider the log names (or the provider whose model names match), else unpriced. New model names appear
every month; history must import them all and price whatever genai-prices knows. Pure (genai-prices'
data is in memory)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from genai_prices import data_snapshot
from genai_prices import types as gp

from mcp_prism.core.catalog import Catalog, Cost, ProviderSpec, snapshot_from_genai
from mcp_prism.core.pricing import PriceSnapshot, TokenUsage, compute_cost
from mcp_prism.errors import UnknownName


@dataclass(frozen=True, slots=True)
class Named:
    model: str  # the catalog's name when it lists the model, else the logged name
    provider: str
    genai: tuple[gp.Provider, gp.ModelInfo] | None  # None: the catalog prices it, or nothing does
    in_catalog: bool


@dataclass
class OpenPrices:
    catalog: Catalog
    _named: dict[tuple[str, str], Named] = field(default_factory=dict)
    _snaps: dict[tuple[str, int], PriceSnapshot] = field(default_factory=dict)

    def name(self, model: str, provider: str) -> Named:
        key = (model, provider)
        hit = self._named.get(key)
        if hit is None:
            hit = self._named[key] = self._lookup(model, provider)
        return hit

    def _lookup(self, model: str, provider: str) -> Named:
        try:
            spec = self.catalog.resolve(model)
            return Named(spec.name, spec.provider, None, True)
        except UnknownName:
            pass
        snapshot = data_snapshot.get_snapshot()
        aliases = {(gprov.id, info.id): name for name, (gprov, info) in self.catalog._gp_models.items()}
        for pid in (provider or None, None):  # the provider the log names, then any whose names match
            try:
                found = snapshot.find_provider_model(model, None, pid, None)
            except LookupError:
                continue
            listed = aliases.get((found[0].id, found[1].id))
            if listed is not None:  # a dated or spelled-out name of a catalog model: report it under that
                spec = self.catalog.models[listed]
                return Named(spec.name, spec.provider, None, True)
            return Named(model, provider or found[0].id, found, False)
        return Named(model, provider, None, False)

    def cost(self, model: str, provider: str, usage: TokenUsage, at: datetime) -> Cost:
        named = self.name(model, provider)
        if named.in_catalog:
            return self.catalog.cost(named.model, usage, at)
        if named.genai is None:
            return Cost(None, None)
        gprov, info = named.genai
        mp = info.get_prices(at)
        key = (f"{gprov.id}/{info.id}", id(mp))
        snap = self._snaps.get(key)
        if snap is None:
            spec = self.catalog.providers.get(named.provider) or ProviderSpec(named.provider, "openai")
            snap = self._snaps[key] = snapshot_from_genai(mp, spec, gprov.id)
        return Cost(compute_cost(usage, snap), snap)
