"""The wire format modules by the name the catalog gives a provider's format (`ProviderSpec.format`)."""

from __future__ import annotations

from types import ModuleType

from mcp_prism.providers.formats import anthropic, gemini, openai

FORMATS: dict[str, ModuleType] = {"openai": openai, "anthropic": anthropic, "gemini": gemini}
