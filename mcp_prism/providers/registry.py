"""The wire format modules by name, and which one a model is called with upstream."""

from __future__ import annotations

from types import ModuleType

from mcp_prism.core.catalog import Catalog, ModelSpec
from mcp_prism.providers.formats import anthropic, gemini, openai, responses

FORMATS: dict[str, ModuleType] = {"openai": openai, "anthropic": anthropic, "gemini": gemini,
                                  "responses": responses}


def upstream_format(catalog: Catalog, model: ModelSpec, client: str | None = None) -> str:
    """The format `model` is called in: the Responses API for models that accept nothing else (`api =
    "responses"`, the codex family), and for a Responses client when the provider serves that API too
    (`responses_api = true`: passed through rather than translated); otherwise the provider's format."""
    if model.api == "responses":
        return "responses"
    provider = catalog.providers[model.provider]
    if client == "responses" and provider.responses_api:
        return "responses"
    return provider.format
