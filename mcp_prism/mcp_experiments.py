"""MCP tools of the optimisation loop: experiments (start, run, report, promote, list).

No `from __future__ import annotations` here, as in mcp_server.py: the SDK reads the tools' signatures
(the `Context` parameter, `Annotated` fields) at registration, from real annotation objects.
"""

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.loop.experiments import (
    ExperimentInfo,
    ExperimentList,
    ExperimentReport,
    ExperimentService,
    PromoteResult,
    RunSummary,
)
from mcp_prism.mcp_server import READ_ONLY

Method = Literal["human", "judge", "automated"]



def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""

    def experiments() -> ExperimentService:
        return ExperimentService(get_service())

    @mcp.tool(
        title="Start an experiment",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Set up an experiment that tries 1-5 cheaper candidate models on 50-100 real requests of one task type "
            "beside the current model (the baseline: the task type's rule primary unless given). Samples come from "
            "stored requests (the task type needs capture_samples = true in config.toml) or a JSONL file on the "
            "server (one {prompt, expected, response, edge_case} object per line). Edge cases are always kept. "
            "Recorded baseline answers are reused. Makes no model call: run_experiment does, then the answers are "
            "evaluated (human, judge or automated) and experiment_report says which candidate qualifies."
        ),
    )
    async def start_experiment(
        task_type: Annotated[str, Field(description="The task type to experiment on (e.g. test_generation).")],
        candidates: Annotated[list[str], Field(
            min_length=1, max_length=5,
            description="Candidate models or aliases, 1 to 5 (e.g. ['gpt-5-mini', 'claude-haiku-4-5']).")],
        samples: Annotated[int, Field(ge=50, le=100, description="How many samples, 50 to 100.")] = 50,
        method: Annotated[Method, Field(description="How the answers will be evaluated.")] = "human",
        threshold: Annotated[float | None, Field(
            gt=0, lt=1, description="Acceptance rate a candidate must clear (by its lower confidence bound); "
                                    "default 0.95 for human and automated, 0.90 for judge.")] = None,
        settings: Annotated[dict[str, Any] | None, Field(
            description="Extra evaluation settings kept for the evaluator (e.g. {\"judge\": \"gpt-5\"}).")] = None,
        from_file: Annotated[str | None, Field(
            description="Path of a JSONL sample file on the server, instead of stored requests.")] = None,
        seed: Annotated[int, Field(description="Random seed of the draw.")] = 7,
        baseline_model: Annotated[str | None, Field(
            description="The model to compare with; default the rule's primary.")] = None,
    ) -> ExperimentInfo:
        evaluation: dict[str, Any] = {**(settings or {}), "method": method}
        if threshold is not None:
            evaluation["threshold"] = threshold
        return await tool("start_experiment", lambda: experiments().start(
            task_type, candidates, samples=samples, evaluation=evaluation, from_file=from_file, seed=seed,
            baseline_model=baseline_model))

    @mcp.tool(
        title="Run an experiment",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=True),
        description=(
            "Call the baseline and candidate models for every answer the experiment still lacks (this costs "
            "money: the provider calls are paid). Each answer is saved as soon as it is paid for, so calling "
            "it again after an interruption or errors pays only for what is missing. Reports progress. Returns "
            "calls made, answers already done, errors (retried by the next call) and this run's cost."
        ),
    )
    async def run_experiment(
        experiment_id: Annotated[str, Field(description="The id start_experiment returned.")],
        ctx: Context,
        concurrency: Annotated[int, Field(ge=1, le=32, description="Calls in flight at once.")] = 4,
    ) -> RunSummary:
        async def progress(done: int, total: int, message: str) -> None:
            await ctx.report_progress(done, total, message)

        return await tool("run_experiment", lambda: experiments().run(experiment_id, concurrency=concurrency,
                                                                      progress=progress))

    @mcp.tool(
        title="Experiment report",
        annotations=READ_ONLY,
        description=(
            "Whether each candidate qualifies: verdicts counted (acceptable, ties, failures), acceptance rate, its "
            "lower confidence bound against the threshold and the verdict (qualified / not qualified / undecided "
            "with how many more samples would decide it), what a sequential test would have done, latency p50/p95, "
            "tokens, cost per request and per month with the saving against the baseline, the experiment's and "
            "judging's cost, and the failed examples. Includes a markdown summary."
        ),
    )
    async def experiment_report(
        experiment_id: Annotated[str, Field(description="The experiment's id.")],
    ) -> ExperimentReport:
        return await tool("experiment_report", lambda: experiments().report(experiment_id))

    @mcp.tool(
        title="Promote a qualified candidate",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Make a qualified candidate the primary model of the experiment's task type: a new routing rule "
            "version (other rule fields kept) with the experiment as evidence, and a monitor that watches the "
            "new rule for monitor_days (optionally rolling it back on regression). Refused for a candidate that "
            "is not qualified, quoting its verdict."
        ),
    )
    async def promote_candidate(
        experiment_id: Annotated[str, Field(description="The experiment's id.")],
        candidate: Annotated[str, Field(description="The qualified candidate model to promote.")],
        author: Annotated[str, Field(description="Who promotes it (name or email).")],
        reason: Annotated[str, Field(description="Why (e.g. 'qualified at 95%, 60% cheaper').")],
        monitor_days: Annotated[int, Field(ge=1, le=365, description="Days to watch the new rule.")] = 14,
        auto_rollback: Annotated[bool, Field(description="Roll back by itself if quality regresses.")] = False,
    ) -> PromoteResult:
        return await tool("promote_candidate", lambda: experiments().promote(
            experiment_id, candidate, author=author, reason=reason, monitor_days=monitor_days,
            auto_rollback=auto_rollback))

    @mcp.tool(
        title="List experiments",
        annotations=READ_ONLY,
        description=("Every experiment (or one task type's), newest first, with its status, baseline and "
                     "candidate models, sample count, and how many answers are still missing (what "
                     "run_experiment would pay for)."),
    )
    async def list_experiments(
        task_type: Annotated[str | None, Field(description="Only this task type's experiments.")] = None,
    ) -> ExperimentList:
        return await tool("list_experiments", lambda: experiments().list(task_type))
