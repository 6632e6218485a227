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
            "Check every candidate answer of an experiment automatically and store a verdict per answer "
            "(acceptable when the check passes, unacceptable when it fails; earlier automated verdicts are "
            "replaced). check is one of: {\"type\": \"json_schema\", \"schema\": {...}} (the answer must be JSON "
            "valid against the schema; a ```json fence is unwrapped), {\"type\": \"exact\", \"normalise\": true} "
            "(equals the item's expected answer; normalise = trim, collapse whitespace, ignore case), "
            "{\"type\": \"regex\", \"pattern\": \"...\"} (matches; without pattern, the item's expected answer is "
            "the pattern), {\"type\": \"command\", \"command\": \"pytest -q {answer_file}\", \"timeout\": 60} "
            "(runs on the server's machine; exit 0 = acceptable; the answer is in {answer_file} and "
            "$PRISM_ANSWER_FILE, the expected answer in $PRISM_EXPECTED; allowed only when the server was "
            f"started with {ALLOW_COMMANDS_ENV}=1). Returns counts per candidate, the "
            "baseline's counts for context and each item's verdict with the reason."
        ),
    )
    async def evaluate_automated(
        experiment_id: Annotated[str, Field(description="The experiment to evaluate.")],
        check: Annotated[dict[str, Any], Field(description="The check, a JSON object with a type (json_schema, "
                                                           "exact, regex, command) and its fields.")],
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
            "Let a judge model compare each candidate answer with the baseline model's answer to the same "
            "prompt, twice with the answers in both orders (judges prefer the first answer they see). A "
            "candidate answer is acceptable only when both orders find it at least as good; orders that "
            "disagree give a tie (reported, never counted acceptable); both worse gives degraded or "
            "unacceptable. Costs two judge calls per pair (cost_usd). Resumable: pairs judged before are "
            "skipped, errors are retried. Warns when the judge is of a candidate's family (self-preference): "
            "choose a judge from another family (list_models shows families)."
        ),
    )
    async def evaluate_with_judge(
        experiment_id: Annotated[str, Field(description="The experiment to evaluate.")],
        judge_model: Annotated[str, Field(description="The judge model (name or alias), ideally strong and of "
                                                      "another family than the candidates.")],
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
            "The next pair of answers this rater has not rated yet, for blind human rating: the task prompt "
            "and two answers, first and second, in a random order; one is the current model's, the other a "
            "candidate's, and nothing says which. Show both to the person and ask which is better, or whether "
            "they are as good as each other, and whether the worse one is unusable; then call submit_rating "
            "with the token. Do not guess or reveal which model wrote which answer. done=true when every "
            "pair is rated."
        ),
    )
    async def next_rating(
        experiment_id: Annotated[str, Field(description="The experiment to rate.")],
        rater: Annotated[str, Field(description="The person rating (name or email); ratings are kept per rater.")],
        skip: Annotated[list[str] | None, Field(description="Tokens the rater chose to skip for now.")] = None,
    ) -> RatingPair:
        return await tool("next_rating", lambda: ev().next_for_rating(experiment_id, rater, skip=skip or ()))

    @mcp.tool(
        title="Submit a blind rating",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                                    open_world_hint=False),
        description=(
            "Store a person's rating of the pair next_rating returned: first (the first answer is better), "
            "second (the second is better), same (as good as each other), only_first (only the first is "
            "acceptable; the second is wrong or unusable), only_second. The service turns it into the "
            "candidate's verdict without telling the rater. Rating a pair again replaces that rater's "
            "earlier rating."
        ),
    )
    async def submit_rating(
        token: Annotated[str, Field(description="The token next_rating returned with the pair.")],
        rating: Annotated[Rating, Field(description="The person's judgement of the two answers.")],
        rater: Annotated[str, Field(description="The person rating (name or email).")],
        note: Annotated[str | None, Field(description="Optional comment from the rater.")] = None,
    ) -> RatingRecorded:
        return await tool("submit_rating", lambda: ev().submit_rating(token, rating, rater, note))


def _refuse_commands() -> AutomatedResult:
    raise InvalidInput(f"command checks run shell commands on the server, so over MCP they are off unless the "
                       f"server is started with {ALLOW_COMMANDS_ENV}=1; or run `mcp-prism evaluate auto EXP --check "
                       "check.json` on the machine yourself")
