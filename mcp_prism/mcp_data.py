"""MCP tools of the optimisation loop: data — import outcomes someone else measured (`import_outcomes`)
and measure a learned per-request router on them (`evaluate_router`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.loop.importers import ImportResult, RouterEvalResult, evaluate_router_file, import_outcomes

PATH = ("Path on the server: a .csv/.jsonl with a prompt column and one score column per model (True/False or "
        "a number; optional <model>_response), a folder of them (file name = task type), or an MT-Bench folder "
        "(question.jsonl, judgements.jsonl).")
PRICES = "Price overrides, 'MODEL=IN,OUT' in USD per million tokens (e.g. 'gpt-4-1106-preview=10,30')."


def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""

    @mcp.tool(
        name="import_outcomes",
        title="Import measured outcomes",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Import per-prompt outcomes of 2+ models measured elsewhere (e.g. RouteLLM GSM8K, MT-Bench) as "
            "experiments, one per task type, strongest model as baseline; an answer is acceptable when as good as "
            "the baseline's. Returns per task type whether the cheaper model qualifies (lower confidence bound vs "
            "threshold, samples still needed), quality kept and cost share. Re-import replaces; bad rows refused "
            "with line numbers unless skip_bad."
        ),
    )
    async def import_outcomes_tool(
        path: Annotated[str, Field(description=PATH)],
        format: Annotated[Literal["wide", "mtbench"] | None, Field(
            description="Default: mtbench for an MT-Bench folder, else wide.")] = None,
        task_type: Annotated[str | None, Field(
            description="Task type of a single file (default: its name).")] = None,
        strong: Annotated[str | None, Field(
            description="Baseline model (default: highest mean score).")] = None,
        threshold: Annotated[float, Field(
            gt=0, lt=1, description="Acceptance rate to certify (95% lower bound).")] = 0.90,
        tolerance: Annotated[float, Field(
            ge=0, description="Numeric scores: acceptable if >= baseline - tolerance.")] = 0.0,
        skip_bad: Annotated[bool, Field(description="Skip (and list) bad rows instead of refusing.")] = False,
        prices: Annotated[list[str] | None, Field(description=PRICES)] = None,
    ) -> ImportResult:
        return await tool("import_outcomes", lambda: import_outcomes(
            get_service(), path, fmt=format, task_type=task_type, strong=strong, threshold=threshold,
            tolerance=tolerance, skip_bad=skip_bad, prices=prices or ()))

    @mcp.tool(
        name="evaluate_router",
        title="Evaluate a learned per-request router",
        annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Learn from outcome data which prompts a weak model handles as well as a strong one, and measure it. "
            "out_of_sample holds the honest figures (thresholds chosen on training folds; quality kept, cost cut "
            "and strong-call share on held-out prompts, mean and range over seeds, text-only and with category). "
            "Also APGR (random = 0.5), CPT(50/80/95%), and the optimistic curve-read cut. Writes nothing."
        ),
    )
    async def evaluate_router_tool(
        path: Annotated[str, Field(description=PATH)],
        format: Annotated[Literal["wide", "mtbench"] | None, Field(description="File format.")] = None,
        strong: Annotated[str | None, Field(description="Strong model (default: highest mean score).")] = None,
        weak: Annotated[str | None, Field(description="Weak model (default: the other one).")] = None,
        seed: Annotated[int, Field(description="Seed of split and training.")] = 0,
        train_share: Annotated[float, Field(gt=0, lt=1, description="Share of prompts to train on.")] = 0.5,
        folds: Annotated[int | None, Field(
            ge=2, description="k-fold instead of a split (default 5 under 200 prompts).")] = None,
        tolerance: Annotated[float, Field(
            ge=0, description="Numeric scores: weak is as good if >= strong - tolerance.")] = 0.0,
        skip_bad: Annotated[bool, Field(description="Skip bad rows instead of refusing.")] = False,
        prices: Annotated[list[str] | None, Field(description=PRICES)] = None,
        seeds: Annotated[int, Field(ge=1, le=50, description="Seeds of the out-of-sample evaluation.")] = 5,
        target: Annotated[float, Field(gt=0, le=1, description="Share of the strong model's quality the "
                                                                "thresholds aim at.")] = 0.95,
        margin: Annotated[float, Field(ge=0, description="Standard errors of margin when freezing a "
                                                         "threshold.")] = 1.0,
    ) -> RouterEvalResult:
        return await tool("evaluate_router", lambda: evaluate_router_file(
            get_service(), path, fmt=format, strong=strong, weak=weak, seed=seed, train_share=train_share,
            folds=folds, tolerance=tolerance, skip_bad=skip_bad, prices=prices or (), seeds=seeds, target=target,
            margin_z=margin))
