"""MCP tools of learned routers: train_router, promote_router (a mixed rule, monitored)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.loop.routers import RouterPromotion, RouterService, RouterView


def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""

    @mcp.tool(
        name="train_router",
        title="Train a learned per-request router",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Train a router for one task type from its outcome data (experiments and imported outcomes that "
            "scored a cheap and a strong model on the same prompts) and store it as the type's next router "
            "version. Its threshold is frozen on calibration folds of the training part; expected quality kept, "
            "cost cut (each with a 95% interval) and the share of strong calls are measured on a held-out part. "
            "Nothing routes with it until promote_router."
        ),
    )
    async def train_router(
        task_type: Annotated[str, Field(description="The task type whose outcome data trains it.")],
        author: Annotated[str, Field(description="Who trains it (name or email).")],
        reason: Annotated[str, Field(description="Why.")],
        cheap: Annotated[str | None, Field(description="The cheap model (default: the only candidate).")] = None,
        strong: Annotated[str | None, Field(description="The strong model (default: the baseline).")] = None,
        target: Annotated[float, Field(gt=0, le=1, description="Share of the strong model's quality to keep.")] = 0.95,
        seed: Annotated[int, Field(description="Seed of the held-out split and the training.")] = 0,
    ) -> RouterView:
        return await tool("train_router", lambda: RouterService(get_service()).train(
            task_type, cheap=cheap, strong=strong, target=target, seed=seed, author=author, reason=reason))

    @mcp.tool(
        name="promote_router",
        title="Route a task type with a learned router",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Make the task type's rule a mixed rule: its requests go to the router's cheap model unless the router "
            "(this stored version) scores a request as hard, then to the strong model. Stores a new rule version "
            "and a monitor; with auto_rollback a quality regression rolls the rule, and so the router, back. "
            "route_task and the gateway apply it; usage records carry the router's version and score."
        ),
    )
    async def promote_router(
        task_type: Annotated[str, Field(description="The task type.")],
        version: Annotated[int, Field(ge=1, description="The router version (from train_router).")],
        author: Annotated[str, Field(description="Who promotes it.")],
        reason: Annotated[str, Field(description="Why.")],
        monitor_days: Annotated[int, Field(ge=1, le=365, description="How long the monitor watches.")] = 14,
        auto_rollback: Annotated[bool, Field(description="Roll back on a regression.")] = True,
    ) -> RouterPromotion:
        return await tool("promote_router", lambda: RouterService(get_service()).promote(
            task_type, version, author=author, reason=reason, monitor_days=monitor_days,
            auto_rollback=auto_rollback))
