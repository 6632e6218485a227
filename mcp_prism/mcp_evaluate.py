"""MCP tools of the optimisation loop: evaluate an experiment (automated check, LLM judge, blind rating)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.types import ToolAnnotations
from pydantic import Field

from mcp_prism.errors import InvalidInput
from mcp_prism.loop.evaluate import (
    AutomatedResult,
    EvaluationService,
    JudgeResult,
    RatingPair,
    RatingRecorded,
)

Rating = Literal["first", "second", "same", "only_first", "only_second"]  # = core.judge.HUMAN_RATINGS

# A command check runs a shell command on the server's machine: over MCP (possibly a team server over
# HTTP) only when whoever started the server allowed it.
ALLOW_COMMANDS_ENV = "PRISM_MCP_COMMAND_CHECKS"

WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)


def register_tools(mcp: Any, get_service: Callable[[], Any], tool: Callable[..., Any]) -> None:
    """Add this area's tools to `mcp`; `tool(name, call)` runs a service call with the shared error handling."""

    def ev() -> EvaluationService:
        return EvaluationService(get_service())

    @mcp.tool(
        title="Evaluate an experiment with an automated check",
        annotations=WRITES,
        description=(
            "Check every candidate answer automatically; store a verdict each (pass = acceptable; replaces "
            "earlier automated verdicts). Returns counts per candidate and baseline, and each verdict's reason."
        ),
    )
    async def evaluate_automated(
        experiment_id: Annotated[str, Field(description="Experiment id.")],
        check: Annotated[dict[str, Any], Field(description=(
            "One of {\"type\": \"json_schema\", \"schema\": {...}} (answer is JSON valid against it), "
            "{\"type\": \"exact\", \"normalise\": true} (equals the expected answer; normalise = trim, collapse "
            "spaces, ignore case), {\"type\": \"regex\", \"pattern\": \"...\"} (default pattern: the expected "
            "answer), {\"type\": \"command\", \"command\": \"pytest -q {answer_file}\", \"timeout\": 60} (exit 0 "
            "= acceptable; also $PRISM_ANSWER_FILE, $PRISM_EXPECTED; runs on the server, only if started with "
            f"{ALLOW_COMMANDS_ENV}=1)."))],
        ctx: Context,
    ) -> AutomatedResult:
        if isinstance(check, dict) and check.get("type") == "command" and os.environ.get(ALLOW_COMMANDS_ENV) != "1":
            return await tool("evaluate_automated", _refuse_commands)
        return await tool("evaluate_automated", lambda: ev().automated(
            experiment_id, check, progress=lambda done, total, msg: ctx.report_progress(done, total, msg)))

    @mcp.tool(
        title="Evaluate an experiment with an LLM judge",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=True),
        description=(
            "A judge model compares each candidate answer with the baseline's, in both orders; acceptable only "
            "when both find it at least as good (disagreement = tie, never acceptable). Two paid judge calls per "
            "pair (cost_usd); resumable. Warns when the judge shares a candidate's family: pick another family."
        ),
    )
    async def evaluate_with_judge(
        experiment_id: Annotated[str, Field(description="Experiment id.")],
        judge_model: Annotated[str, Field(description="Judge model: strong, of another family than the "
                                                      "candidates.")],
        ctx: Context,
        concurrency: Annotated[int, Field(ge=1, le=32, description="Judge calls at once.")] = 4,
    ) -> JudgeResult:
        return await tool("evaluate_with_judge", lambda: ev().judge(
            experiment_id, judge_model, concurrency=concurrency,
            progress=lambda done, total, msg: ctx.report_progress(done, total, msg)))

    @mcp.tool(
        title="Next pair to rate (blind)",
        annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Next unrated pair for blind human rating: the prompt and two answers in random order (current "
            "model's and a candidate's, unlabelled). Show both, ask the person which is better, or equal, and "
            "whether the worse is unusable; send it with submit_rating. Never guess or reveal the models. "
            "done=true when all are rated."
        ),
    )
    async def next_rating(
        experiment_id: Annotated[str, Field(description="Experiment id.")],
        rater: Annotated[str, Field(description="The person rating (name or email).")],
        skip: Annotated[list[str] | None, Field(description="Tokens skipped for now.")] = None,
    ) -> RatingPair:
        return await tool("next_rating", lambda: ev().next_for_rating(experiment_id, rater, skip=skip or ()))

    @mcp.tool(
        title="Submit a blind rating",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Store a person's rating of a next_rating pair: first / second (that one is better), same, "
            "only_first / only_second (the other is unusable). It becomes the candidate's verdict unseen by the "
            "rater; rating again replaces it."
        ),
    )
    async def submit_rating(
        token: Annotated[str, Field(description="Token next_rating gave with the pair.")],
        rating: Annotated[Rating, Field(description="The person's judgement.")],
        rater: Annotated[str, Field(description="The person rating (name or email).")],
        note: Annotated[str | None, Field(description="Rater's comment.")] = None,
    ) -> RatingRecorded:
        return await tool("submit_rating", lambda: ev().submit_rating(token, rating, rater, note))


def _refuse_commands() -> AutomatedResult:
    raise InvalidInput(f"command checks run shell commands on the server, so over MCP they are off unless the "
                       f"server is started with {ALLOW_COMMANDS_ENV}=1; or run `mcp-prism evaluate auto EXP --check "
                       "check.json` on the machine yourself")
