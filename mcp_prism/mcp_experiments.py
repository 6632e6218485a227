"""MCP tools of the optimisation loop: experiments (start, run, report, promote, list).

No `from __future__ import annotations` here, as in mcp_server.py: the SDK reads the tools' signatures
(the `Context` parameter, `Annotated` fields) at registration, from real annotation objects.
"""

from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism import install_sync
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
            "Set up an experiment: 1-5 candidate models on 50-100 real requests of a task type beside the "
            "baseline (the rule's primary unless given). Samples: stored requests (needs capture_samples = true) "
            "or a JSONL file of {prompt, expected, response, edge_case}; edge cases always kept. No model call: "
            "then run_experiment, evaluate, experiment_report."
        ),
    )
    async def start_experiment(
        task_type: Annotated[str, Field(description="Task type (e.g. test_generation).")],
        candidates: Annotated[list[str], Field(
            min_length=1, max_length=5, description="Candidate models (e.g. ['gpt-5-mini']).")],
        samples: Annotated[int, Field(ge=50, le=100, description="Sample count.")] = 50,
        method: Annotated[Method, Field(description="How answers will be evaluated.")] = "human",
        threshold: Annotated[float | None, Field(
            gt=0, lt=1, description="Acceptance rate to clear by its lower confidence bound; default 0.95, "
                                    "0.90 for judge.")] = None,
        settings: Annotated[dict[str, Any] | None, Field(
            description="Evaluator settings (e.g. {\"judge\": \"gpt-5\"}).")] = None,
        from_file: Annotated[str | None, Field(description="JSONL sample file on the server.")] = None,
        seed: Annotated[int, Field(description="Seed of the draw.")] = 7,
        baseline_model: Annotated[str | None, Field(description="Default: the rule's primary.")] = None,
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
            "Call the baseline and candidates for every missing answer (paid provider calls). Answers are saved "
            "as paid, so a re-run pays only for what is missing. Returns calls, errors (retried next run) and cost."
        ),
    )
    async def run_experiment(
        experiment_id: Annotated[str, Field(description="Id from start_experiment.")],
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
            "Whether each candidate qualifies: verdict counts, acceptance rate and its lower bound vs threshold "
            "(qualified / not / undecided with samples needed), latency, cost per request and month, saving vs "
            "baseline, and failed examples. With markdown."
        ),
    )
    async def experiment_report(
        experiment_id: Annotated[str, Field(description="Experiment id.")],
    ) -> ExperimentReport:
        return await tool("experiment_report", lambda: experiments().report(experiment_id))

    @mcp.tool(
        title="Promote a qualified candidate",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False,
                                    open_world_hint=False),
        description=(
            "Make a qualified candidate its task type's primary model (new rule version, experiment as evidence) "
            "and watch it for monitor_days. Refused, with the verdict, for a candidate that did not qualify."
        ),
    )
    async def promote_candidate(
        experiment_id: Annotated[str, Field(description="Experiment id.")],
        candidate: Annotated[str, Field(description="Qualified candidate model.")],
        author: Annotated[str, Field(description="Who promotes it (name or email).")],
        reason: Annotated[str, Field(description="Why (e.g. 'qualified at 95%, 60% cheaper').")],
        monitor_days: Annotated[int, Field(ge=1, le=365, description="Days to watch the new rule.")] = 14,
        auto_rollback: Annotated[bool, Field(description="Roll back if quality regresses.")] = False,
    ) -> PromoteResult:
        async def promote() -> PromoteResult:
            r = await experiments().promote(experiment_id, candidate, author=author, reason=reason,
                                            monitor_days=monitor_days, auto_rollback=auto_rollback)
            await install_sync.noted(get_service(), r.change)  # installed agents get the promoted model
            return r

        return await tool("promote_candidate", promote)

    @mcp.tool(
        title="List experiments",
        annotations=READ_ONLY,
        description=("Experiments, newest first: status, baseline and candidates, samples, and answers still "
                     "missing (what run_experiment would pay for)."),
    )
    async def list_experiments(
        task_type: Annotated[str | None, Field(description="Only this task type.")] = None,
    ) -> ExperimentList:
        return await tool("list_experiments", lambda: experiments().list(task_type))
