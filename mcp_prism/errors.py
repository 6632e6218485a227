"""The one error tree of mcp_prism.

    PrismError                    base; `str(e)` is safe to show to a user (no secrets, no traceback)
     ├── InvalidInput             the caller sent something wrong; the message says how to fix it
     │    └── UnknownName         a task type, model, alias or rule that does not exist
     ├── ConfigError              the config file is wrong
     ├── UnpricedModel            a cost was asked of a model with no known price
     └── StoreError               the database could not do what was asked (nothing was written)

Adapters catch `PrismError` and translate it (MCP `ToolError`, HTTP 4xx/5xx, CLI exit code 2).
Anything else is a bug: adapters log it and show a generic message.
"""

from __future__ import annotations


class PrismError(Exception):
    """Base of every error mcp_prism raises on purpose."""

    exit_code = 1


class InvalidInput(PrismError):
    exit_code = 2


class UnknownName(InvalidInput):
    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...] = ()) -> None:
        self.kind, self.name = kind, name
        hint = ""
        if known:
            shown = ", ".join(sorted(known)[:30])
            hint = f"; known {kind}s: {shown}" + (" ..." if len(known) > 30 else "")
        shown_name = repr(name) if len(name) <= 120 else f"{name[:120]!r}... ({len(name)} characters)"
        super().__init__(f"unknown {kind} {shown_name}{hint}")


class ConfigError(PrismError):
    exit_code = 2


class UnpricedModel(PrismError):
    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"no price is known for model {model!r}; add a price for it under [models.{model!r}] "
            "in the config file, or pick a priced model"
        )


class StoreError(PrismError):
    exit_code = 3
