"""MCP tools of the optimisation loop: data — import outcomes someone else measured (`import_outcomes`)
and measure a learned per-request router on them (`evaluate_router`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.loop.importers import ImportResult, RouterEvalResult, evaluate_router_file, import_outcomes

PATH = ("A path on the server's machine: a wide outcome file (.csv or .jsonl with a prompt column, one score "
        "column per model holding True/False or a number, optional <model>_response columns), a folder of such "
        "files (each file name is a task type), or a folder with MT-Bench's question.jsonl and judgements.jsonl.")
PRICES = ("List prices overriding the catalog and genai-prices, as 'MODEL=IN,OUT' in USD per million tokens "
          "(e.g. 'gpt-4-1106-preview=10,30').")


def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""

    @mcp.tool(
        name="import_outcomes",
        title="Import measured outcomes",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Import per-prompt outcomes of two or more models measured elsewhere (e.g. RouteLLM's GSM8K file, "
            "MT-Bench judgements) as experiments, one per task type, with the strongest model as the baseline. "
            "Each candidate answer is judged acceptable when it is as good as the baseline's on that prompt. "
            "Returns per task type whether the cheaper model qualifies (lower confidence bound of its "
            "acceptance rate vs the threshold, and how many more samples would decide it), the quality kept and "
            "cost share of routing the qualified task types to it, and the price sources. Re-importing the same "
            "file replaces its experiments. Bad rows are refused with their line numbers unless skip_bad."
        ),
    )
    async def import_outcomes_tool(
        path: Annotated[str, Field(description=PATH)],
        format: Annotated[Literal["wide", "mtbench"] | None, Field(
            description="wide or mtbench; default: mtbench for a folder with question.jsonl and "
                        "judgements.jsonl")] = None,
        task_type: Annotated[str | None, Field(
            description="Task type of a single wide file (default: the file name).")] = None,
        strong: Annotated[str | None, Field(
            description="The strong/baseline model (default: the model with the highest mean score).")] = None,
        threshold: Annotated[float, Field(
            gt=0, lt=1, description="Acceptance rate a candidate must be certified at (95% lower bound).")] = 0.90,
        tolerance: Annotated[float, Field(
            ge=0, description="Numeric scores: acceptable when candidate >= baseline - tolerance.")] = 0.0,
        skip_bad: Annotated[bool, Field(description="Skip bad rows (they are listed) instead of refusing.")] = False,
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
            "Learn which prompts a weak model handles as well as a strong one from outcome data (a logistic "
            "regression over the prompt text, trained on a seeded split, or cross-validated on small sets) and "
            "measure the routing it gives. out_of_sample holds the honest figures: thresholds chosen on training "
            "folds, quality kept, cost cut and strong-call share measured on held-out prompts, mean and range over "
            "seeds, text-only and with the category. Also: APGR (area under the performance-gap-recovered "
            "curve; random = 0.5), CPT(50/80/95%) (share of strong calls needed), and the cost cut at 95% of the "
            "strong model's quality read off the test curve (optimistic), next to a random router, an oracle "
            "and RouteLLM's published figures. Writes nothing."
        ),
    )
    async def evaluate_router_tool(
        path: Annotated[str, Field(description=PATH)],
        format: Annotated[Literal["wide", "mtbench"] | None, Field(description="wide or mtbench")] = None,
        strong: Annotated[str | None, Field(description="The strong model (default: highest mean score).")] = None,
        weak: Annotated[str | None, Field(description="The weak model (default: the only other model).")] = None,
        seed: Annotated[int, Field(description="Seed of the split and the training.")] = 0,
        train_share: Annotated[float, Field(gt=0, lt=1, description="Share of prompts to train on.")] = 0.5,
        folds: Annotated[int | None, Field(
            ge=2, description="k-fold cross-validation instead of a split (default: 5 folds under 200 "
                              "prompts).")] = None,
        tolerance: Annotated[float, Field(
            ge=0, description="Numeric scores: weak is as good when >= strong - tolerance.")] = 0.0,
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
