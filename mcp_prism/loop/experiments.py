"""Experiments: run candidate models on sampled requests of one task type beside the current model,
report whether each candidate qualifies, and promote a qualified one (a new rule version under watch).

Flow: `start` draws 50-100 samples (stored requests or a JSONL file, edge cases kept) and records the
baseline's answers it already has; `run` pays for every missing answer exactly once (each answer is its
own transaction, so an interrupted run resumes where it stopped); evaluations are written by
`loop/evaluate.py` or an importer, never here; `report` reads them and qualifies each candidate with
`core.stats`; `promote` deploys a qualified candidate and starts a monitor.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import aiosqlite
from pydantic import BaseModel, Field

from mcp_prism import render
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.report import money, monthly
from mcp_prism.core.stats import DEFAULT_THRESHOLDS, SPRT, qualify
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput, PrismError, UnknownName
from mcp_prism.providers.formats import openai as openai_format
from mcp_prism.providers.registry import FORMATS, upstream_format
from mcp_prism.providers.wire import ChatRequest, Text, ToolCall, WireError
from mcp_prism.results import RuleChange
from mcp_prism.service import PrismService

log = logging.getLogger(__name__)

METHODS = ("human", "judge", "automated")
# The team's policy (../shared/notes/evaluation.md): humans and checks must clear 95%, a judge 90%.
MIN_SAMPLES, MAX_SAMPLES, DEFAULT_SAMPLES = 50, 100, 50
MAX_CANDIDATES = 5
EDGE_SHARE = 0.10  # of the draw, chosen as edge cases (longest, most tokens, lowest quality)
LOW_QUALITY = 0.7  # a recorded quality below this makes a request an edge case
MAX_CONCURRENCY = 32
EXCERPT = 400
FAILED_VERDICTS = ("tie", "degraded", "unacceptable")
# When an experiment's own method has no verdicts for a candidate, the first of these that has some is used.
METHOD_FALLBACK = ("human", "automated", "judge", "imported")

Progress = Callable[[int, int, str], Any]


# ==================================================================== results
class ExperimentInfo(BaseModel):
    id: str
    task_type: str
    baseline_model: str
    candidates: list[str]
    evaluation: dict[str, Any] = Field(description="method, threshold, confidence and method settings")
    status: str = Field(description="created | ready (every answer paid for) | promoted | ...")
    source: str = Field(description="store (sampled requests) | file (JSONL) | import")
    created_at: str
    updated_at: str
    notes: str | None = None
    items: int
    edge_cases: int
    outputs_ok: dict[str, int] = Field(description="answers paid for (or recorded), per model")
    outputs_failed: dict[str, int] = Field(description="answers whose last attempt failed, per model (retried by run)")
    answers_missing: int = Field(description="(item, model) answers still to get: what `run` will pay for")
    warnings: list[str] = Field(default_factory=list)
    next_step: str = ""


class ExperimentList(BaseModel):
    experiments: list[ExperimentInfo]


class RunSummary(BaseModel):
    experiment_id: str
    total: int = Field(description="answers the experiment needs: items x (baseline + candidates)")
    already_done: int = Field(description="answers paid for before this run (not paid again)")
    calls_made: int = Field(description="provider calls made by this run")
    succeeded: int
    errors: int = Field(description="calls that failed (recorded; the next run retries them)")
    cost_usd: Decimal = Field(description="what this run's successful calls cost")
    unpriced_calls: int = 0
    error_examples: list[str] = Field(default_factory=list)
    complete: bool = Field(description="every answer is in; evaluate next")
    status: str
    next_step: str


class ModelStats(BaseModel):
    model: str
    role: Literal["baseline", "candidate"]
    answers: int = Field(description="ok answers")
    failed_calls: int = Field(description="answers whose last call failed")
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None
    cost_per_request_usd: Decimal | None = Field(default=None, description="mean over answers; None when unknown")
    cost_per_month_usd: Decimal | None = Field(default=None, description="at the task type's observed volume")
    cost_note: str | None = Field(default=None, description="set when the cost is an estimate, and how it was made")


class CandidateReport(ModelStats):
    method: str | None = Field(default=None, description="whose verdicts were counted")
    evaluated: int = Field(default=0, description="items with a verdict (evaluation errors excluded)")
    acceptable: int = 0
    ties: int = Field(default=0, description="judge ties: counted in n, not acceptable")
    not_acceptable: int = Field(default=0, description="degraded or unacceptable")
    evaluation_errors: int = 0
    unevaluated: int = Field(default=0, description="items with no verdict yet")
    rate: float | None = None
    lower_bound: float | None = None
    threshold: float = 0.0
    confidence: float = 0.95
    verdict: Literal["qualified", "not qualified", "undecided", "not evaluated"] = "not evaluated"
    more_samples_needed: int | None = None
    summary: str = ""
    sprt: str = ""
    sprt_decision: str | None = Field(default=None, description="accept | reject | continue | undecided")
    sprt_stopped_at_item: int | None = None
    sprt_items_used: int | None = None
    saving_per_request_usd: Decimal | None = None
    saving_per_month_usd: Decimal | None = None
    saving_pct: float | None = None


class FailedExample(BaseModel):
    item: int
    model: str
    verdict: str
    method: str
    prompt: str
    baseline_answer: str | None
    candidate_answer: str | None
    detail: Any = None


class ExperimentReport(BaseModel):
    experiment: ExperimentInfo
    method: str
    threshold: float
    confidence: float
    monthly_requests: int | None = Field(description="the task type's volume per month (last 30 days); None = none")
    volume_note: str
    baseline: ModelStats
    candidates: list[CandidateReport]
    experiment_cost_usd: Decimal = Field(description="answers this experiment paid for")
    judge_cost_usd: Decimal = Field(description="what LLM judging cost")
    failed_examples: list[FailedExample]
    markdown: str = ""


class PromoteResult(BaseModel):
    experiment_id: str
    task_type: str
    candidate: str
    previous_model: str
    previous_version: int
    new_version: int
    evidence: str
    monitor_id: int
    monitor_ends_at: str
    threshold: float
    auto_rollback: bool
    change: RuleChange


# ==================================================================== helpers
@dataclass(slots=True)
class _Sample:
    prompt: str  # stored form: plain text, or JSON {"system": ..., "messages": [...]}
    expected: str | None = None
    response: str | None = None  # the baseline's answer, when known
    edge_case: bool = False
    category: str | None = None
    event_id: str | None = None
    size: int = 0  # prompt characters
    tokens: int = 0
    quality: float | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    latency_ms: float | None = None
    cost_usd: str | None = None


@dataclass(slots=True)
class _Outcome:
    """What one provider call gave: an answer with its usage, or an error."""

    ok: bool
    text: str | None = None
    error: str | None = None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    latency_ms: float | None = None
    cost: Decimal | None = None


def _chat_request(prompt: str, model: str) -> ChatRequest:
    """The prompt as a neutral request: OpenAI-shaped messages, or one user message for plain text."""
    data: Any = None
    if prompt.lstrip()[:1] in ("{", "["):
        try:
            data = json.loads(prompt)
        except ValueError:
            data = None
    messages: list[Any]
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        messages = list(data["messages"])
        system = data.get("system")
        if system:
            messages.insert(0, {"role": "system", "content": system})
    elif isinstance(data, list) and data and all(isinstance(m, dict) and "role" in m for m in data):
        messages = data
    else:
        messages = [{"role": "user", "content": prompt}]
    return openai_format.parse_request({"model": model, "messages": messages})


def _prompt_text(prompt: str) -> str:
    """What a person should read of a prompt: the last user message's text."""
    try:
        req = _chat_request(prompt, "x")
    except WireError:
        return prompt
    for msg in reversed(req.messages):
        if msg.role == "user":
            return " ".join(p.text for p in msg.content if isinstance(p, Text))
    return prompt


def _excerpt(text: str | None, limit: int = EXCERPT) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _answer_text(content: Sequence[Any]) -> str:
    out: list[str] = []
    for part in content:
        if isinstance(part, Text):
            out.append(part.text)
        elif isinstance(part, ToolCall):
            out.append(f"[tool call {part.name}({part.arguments})]")
    return "".join(out)


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation: a reported latency was really observed)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _call_progress(progress: Progress | None, done: int, total: int, message: str) -> None:
    if progress is None:
        return
    try:
        result = progress(done, total, message)
        if inspect.isawaitable(result):
            await result
    except Exception:  # a gone client must not stop a paid-for run; the answers are saved regardless
        log.warning("progress report failed", exc_info=True)


def _sprt_for(threshold: float) -> SPRT:
    # p0 = the threshold (not good enough), p1 closes 70% of the gap to 1: 0.90 -> 0.97 as the notes have it.
    return SPRT(p0=threshold, p1=round(1 - (1 - threshold) * 0.3, 6), cap=MAX_SAMPLES)


# ==================================================================== the service
class ExperimentService:
    def __init__(self, svc: PrismService, *, thresholds: dict[str, float] | None = None) -> None:
        self.svc = svc
        self.store = svc.store
        self.thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}

    # ---------------------------------------------------------------- start
    async def start(self, task_type: str, candidates: Sequence[str], *, samples: int = DEFAULT_SAMPLES,
                    evaluation: dict[str, Any] | None = None, from_file: str | Path | None = None, seed: int = 7,
                    baseline_model: str | None = None) -> ExperimentInfo:
        if task_type not in self.svc.task_types:
            raise UnknownName("task type", task_type, list(self.svc.task_types))
        if isinstance(samples, bool) or not isinstance(samples, int) or not MIN_SAMPLES <= samples <= MAX_SAMPLES:
            raise InvalidInput(f"samples must be a whole number from {MIN_SAMPLES} to {MAX_SAMPLES}, not {samples!r}: "
                               f"fewer cannot qualify a model, more cost more than they tell")
        evaluation = self._evaluation(evaluation)
        if baseline_model:
            baseline = self.svc.catalog.resolve(baseline_model).name
        else:
            active = (await self.svc.rules(fresh=True))[task_type]
            baseline = self.svc.catalog.resolve(active.rule.primary).name
        names = self._candidates(candidates, baseline)
        if from_file is not None:
            pool, source = self._read_file(from_file), "file"
            where = f"the file {from_file}"
        else:
            pool, source = await self._stored(task_type, baseline), "store"
            where = f"stored requests of {task_type}"
        if len(pool) < samples:
            raise InvalidInput(self._too_few(task_type, len(pool), samples, where, source))
        chosen = self._draw(pool, samples, seed)
        warnings = [f"no API key for {p}: set {self.svc.catalog.providers[p].api_key_env} before `run`"
                    for p in sorted({self.svc.catalog.resolve(m).provider for m in [baseline, *names]})
                    if not self.svc.providers().has_key(p)]
        for i, s in enumerate(chosen, 1):
            try:
                _chat_request(s.prompt, baseline)
            except WireError as e:
                raise InvalidInput(f"sample {i} ({s.event_id or 'from the file'}) is not a usable prompt: "
                                   f"{e.message}") from None

        exp_id = f"e{utcnow():%Y%m%d}-{secrets.token_hex(3)}"
        now = iso(utcnow())

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO experiments (id, task_type, baseline_model, candidates, evaluation, status, source, "
                "created_at, updated_at, notes) VALUES (?, ?, ?, ?, ?, 'created', ?, ?, ?, ?)",
                (exp_id, task_type, baseline, json.dumps(names), json.dumps(evaluation, sort_keys=True), source,
                 now, now, f"seed {seed}, {samples} samples from {where}"))
            await conn.executemany(
                "INSERT INTO experiment_items (experiment_id, item, prompt, expected, source_event_id, edge_case, "
                "category) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(exp_id, i, s.prompt, s.expected, s.event_id, int(s.edge_case), s.category)
                 for i, s in enumerate(chosen, 1)])
            # Known baseline answers carry the experiment's creation time: the original requests paid for
            # them, so the experiment's own cost leaves them out (see `_paid`).
            await conn.executemany(
                "INSERT INTO experiment_outputs (experiment_id, item, model, role, response, status, input_tokens, "
                "cached_input_tokens, output_tokens, reasoning_tokens, latency_ms, cost_usd, created_at) "
                "VALUES (?, ?, ?, 'baseline', ?, 'ok', ?, ?, ?, ?, ?, ?, ?)",
                [(exp_id, i, baseline, s.response, s.input_tokens, s.cached_input_tokens, s.output_tokens,
                  s.reasoning_tokens, s.latency_ms, s.cost_usd, now)
                 for i, s in enumerate(chosen, 1) if s.response is not None])

        await self.store.transaction(work)
        info = await self.show(exp_id)
        info.warnings = warnings
        return info

    def _evaluation(self, evaluation: dict[str, Any] | None) -> dict[str, Any]:
        ev = dict(evaluation or {"method": "human"})
        method = ev.get("method", "human")
        if method not in METHODS:
            raise InvalidInput(f"evaluation method must be one of {', '.join(METHODS)}, not {method!r}")
        threshold = ev.get("threshold")
        if threshold is None:
            threshold = self.thresholds[method]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.5 <= threshold < 1:
            raise InvalidInput(f"threshold must be an acceptance rate from 0.5 to below 1 (e.g. 0.95), "
                               f"not {threshold!r}")
        confidence = ev.get("confidence", 0.95)
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0.5 < confidence < 1:
            raise InvalidInput(f"confidence must be between 0.5 and 1 (e.g. 0.95), not {confidence!r}")
        ev.update(method=method, threshold=float(threshold), confidence=float(confidence))
        return ev

    def _candidates(self, candidates: Sequence[str], baseline: str) -> list[str]:
        if isinstance(candidates, str):
            candidates = [c for c in candidates.split(",") if c.strip()]
        if not candidates:
            raise InvalidInput("give 1 to 5 candidate models (names or aliases from list_models) to try "
                               f"against the baseline {baseline}")
        names: list[str] = []
        for c in candidates:
            name = self.svc.catalog.resolve(c).name
            if name == baseline:
                raise InvalidInput(f"candidate {c!r} is the baseline ({baseline}), the model answers are compared "
                                   "with; choose other models, or name another baseline")
            if name in names:
                raise InvalidInput(f"candidate {name} is listed twice")
            names.append(name)
        if len(names) > MAX_CANDIDATES:
            raise InvalidInput(f"{len(names)} candidates given; at most {MAX_CANDIDATES} per experiment "
                               "(each one multiplies the cost): split them over two experiments")
        return names

    def _too_few(self, task_type: str, have: int, want: int, where: str, source: str) -> str:
        head = f"{want} samples asked for, but {where} hold only {have} usable one(s)"
        if have >= MIN_SAMPLES:
            return f"{head}; ask for at most {have} (samples={have}), or add more"
        if source == "file":
            return (f"{head}; an experiment needs at least {MIN_SAMPLES}: add lines to the file (one JSON object "
                    'per line: {"prompt": ..., "expected": ..., "response": ...})')
        return (f"{head}; an experiment needs at least {MIN_SAMPLES}. To collect them, opt the task type in to "
                f"sample capture in config.toml (`[task_types.{task_type}]` with `capture_samples = true`) and let "
                "requests flow through the gateway or record_usage with prompt and response; or import a JSONL "
                "file of prompts (from_file / --from-file)")

    async def _stored(self, task_type: str, baseline: str) -> list[_Sample]:
        rows = await self.store.fetch(
            "SELECT s.event_id, s.prompt, s.response, e.model, e.input_tokens, e.cached_input_tokens, "
            "e.output_tokens, e.reasoning_tokens, e.latency_ms, e.cost_usd, e.quality FROM samples s "
            "JOIN usage_events e ON e.id = s.event_id WHERE e.task_type = ? AND e.status = 'ok' "
            "AND s.prompt IS NOT NULL AND s.prompt != '' ORDER BY e.ts DESC, e.id DESC", (task_type,))
        seen: set[str] = set()
        out: list[_Sample] = []
        for r in rows:  # newest first: a prompt sent twice counts once, with its latest answer
            if r["prompt"] in seen:
                continue
            seen.add(r["prompt"])
            mine = r["model"] == baseline and r["response"] is not None  # another model's answer is no baseline
            out.append(_Sample(
                prompt=r["prompt"], response=r["response"] if mine else None, event_id=r["event_id"],
                size=len(r["prompt"]), tokens=int(r["input_tokens"]) + int(r["output_tokens"]), quality=r["quality"],
                input_tokens=r["input_tokens"] if mine else 0,
                cached_input_tokens=r["cached_input_tokens"] if mine else 0,
                output_tokens=r["output_tokens"] if mine else 0, reasoning_tokens=r["reasoning_tokens"] if mine else 0,
                latency_ms=r["latency_ms"] if mine else None, cost_usd=r["cost_usd"] if mine else None))
        out.reverse()  # oldest first, so the seeded draw does not depend on arrival order of equal timestamps
        return out

    def _read_file(self, path: str | Path) -> list[_Sample]:
        readable = getattr(self.svc, "readable_path", None)  # confined to the file roots for MCP callers
        p = readable(path) if readable else Path(path).expanduser()
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise InvalidInput(f"sample file {p} does not exist") from None
        except UnicodeDecodeError:
            raise InvalidInput(f"sample file {p} is not UTF-8 text; give a JSONL file (one JSON object a line)"
                               ) from None
        except OSError as e:
            raise InvalidInput(f"cannot read sample file {p}: {e.strerror or type(e).__name__}") from None
        out: list[_Sample] = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{p.name} line {n}"
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise InvalidInput(f"{where} is not JSON ({e}); each line is one object like "
                                   '{"prompt": "...", "expected": "...", "response": "...", "edge_case": false}'
                                   ) from None
            if not isinstance(obj, dict):
                raise InvalidInput(f"{where} must be a JSON object with a prompt")
            prompt = obj.get("prompt")
            if isinstance(prompt, dict):
                if not isinstance(prompt.get("messages"), list) or not prompt["messages"]:
                    raise InvalidInput(f"{where}: a structured prompt is {{\"system\": ..., \"messages\": "
                                       '[{"role": "user", "content": ...}]} (OpenAI chat shape)')
                stored = json.dumps({k: prompt[k] for k in ("system", "messages") if prompt.get(k)}, sort_keys=True)
            elif isinstance(prompt, str) and prompt.strip():
                stored = prompt
            else:
                raise InvalidInput(f"{where}: \"prompt\" is required, a text or {{\"system\", \"messages\"}}")
            for key in ("expected", "response", "category"):
                if obj.get(key) is not None and not isinstance(obj[key], str):
                    raise InvalidInput(f"{where}: \"{key}\" must be a string")
            edge = obj.get("edge_case", False)
            if not isinstance(edge, bool):
                raise InvalidInput(f"{where}: \"edge_case\" must be true or false")
            out.append(_Sample(prompt=stored, expected=obj.get("expected"), response=obj.get("response"),
                               edge_case=edge, category=obj.get("category"), size=len(stored),
                               tokens=len(stored) // 4))
        return out

    @staticmethod
    def _draw(pool: list[_Sample], samples: int, seed: int) -> list[_Sample]:
        """Keep every flagged edge case, then about 10% by longest prompt / most tokens / lowest recorded
        quality, the rest at random; shuffled with the seed so edge cases are not all first."""
        rng = random.Random(seed)
        chosen: list[int] = [i for i, s in enumerate(pool) if s.edge_case][:samples]
        for i in chosen:
            pool[i].category = pool[i].category or "flagged edge case"
        taken = set(chosen)
        slots = max(1, round(samples * EDGE_SHARE))
        lists = [
            ("longest prompt", sorted(range(len(pool)), key=lambda i: -pool[i].size)),
            ("most tokens", sorted(range(len(pool)), key=lambda i: -pool[i].tokens)),
            ("low recorded quality", sorted((i for i, s in enumerate(pool)
                                             if s.quality is not None and s.quality < LOW_QUALITY),
                                            key=lambda i: pool[i].quality or 0.0)),
        ]
        added, rounds = 0, 0
        while added < slots and len(chosen) < samples and rounds < len(pool):
            for reason, order in lists:
                pick = next((i for i in order if i not in taken), None)
                if pick is None or added >= slots or len(chosen) >= samples:
                    continue
                taken.add(pick)
                chosen.append(pick)
                pool[pick].edge_case = True
                pool[pick].category = pool[pick].category or reason
                added += 1
            rounds += 1
        rest = [i for i in range(len(pool)) if i not in taken]
        chosen += rng.sample(rest, samples - len(chosen))
        rng.shuffle(chosen)
        return [pool[i] for i in chosen]

    # ---------------------------------------------------------------- list / show
    async def _row(self, experiment_id: str) -> sqlite3.Row:
        rows = await self.store.fetch("SELECT * FROM experiments WHERE id = ?", (experiment_id,))
        if not rows:
            recent = [r["id"] for r in await self.store.fetch(
                "SELECT id FROM experiments ORDER BY created_at DESC LIMIT 20")]
            raise UnknownName("experiment", experiment_id, recent)
        return rows[0]

    async def _info(self, row: sqlite3.Row) -> ExperimentInfo:
        exp_id = row["id"]
        candidates = json.loads(row["candidates"])
        counts = await self.store.fetch(
            "SELECT COUNT(*) AS n, COALESCE(SUM(edge_case), 0) AS edge FROM experiment_items WHERE experiment_id = ?",
            (exp_id,))
        outs = await self.store.fetch(
            "SELECT model, status, COUNT(*) AS n FROM experiment_outputs WHERE experiment_id = ? "
            "GROUP BY model, status", (exp_id,))
        ok = {m: 0 for m in [row["baseline_model"], *candidates]}
        failed = dict(ok)
        for r in outs:
            (ok if r["status"] == "ok" else failed)[r["model"]] = r["n"]
        items = int(counts[0]["n"])
        missing = items * len(ok) - sum(ok.values())
        if row["status"] == "promoted":
            step = "promoted; the monitor watches the new rule"
        elif missing:
            step = f"run it: `mcp-prism experiment run {exp_id}` (run_experiment) pays for {missing} answer(s)"
        else:
            step = f"evaluate the answers, then `mcp-prism experiment report {exp_id}`"
        return ExperimentInfo(
            id=exp_id, task_type=row["task_type"], baseline_model=row["baseline_model"], candidates=candidates,
            evaluation=json.loads(row["evaluation"]), status=row["status"], source=row["source"],
            created_at=row["created_at"], updated_at=row["updated_at"], notes=row["notes"], items=items,
            edge_cases=int(counts[0]["edge"]), outputs_ok=ok, outputs_failed={m: n for m, n in failed.items() if n},
            answers_missing=missing, next_step=step)

    async def show(self, experiment_id: str) -> ExperimentInfo:
        return await self._info(await self._row(experiment_id))

    async def list(self, task_type: str | None = None) -> ExperimentList:
        if task_type:
            rows = await self.store.fetch("SELECT * FROM experiments WHERE task_type = ? "
                                          "ORDER BY created_at DESC, id DESC", (task_type,))
        else:
            rows = await self.store.fetch("SELECT * FROM experiments ORDER BY created_at DESC, id DESC")
        return ExperimentList(experiments=[await self._info(r) for r in rows])

    # ---------------------------------------------------------------- run
    async def run(self, experiment_id: str, *, concurrency: int = 4, progress: Progress | None = None) -> RunSummary:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidInput(f"concurrency must be from 1 to {MAX_CONCURRENCY}, not {concurrency!r}")
        row = await self._row(experiment_id)
        if row["status"] == "abandoned":
            raise InvalidInput(f"experiment {experiment_id} was abandoned; start a new one")
        baseline, candidates = row["baseline_model"], json.loads(row["candidates"])
        items = await self.store.fetch(
            "SELECT item, prompt FROM experiment_items WHERE experiment_id = ? ORDER BY item", (experiment_id,))
        done = {(r["item"], r["model"]) for r in await self.store.fetch(
            "SELECT item, model FROM experiment_outputs WHERE experiment_id = ? AND status = 'ok'", (experiment_id,))}
        roles = {baseline: "baseline", **{c: "candidate" for c in candidates}}
        todo = [(r["item"], r["prompt"], m) for r in items for m in roles if (r["item"], m) not in done]
        total = len(items) * len(roles)
        already = total - len(todo)
        summary = RunSummary(experiment_id=experiment_id, total=total, already_done=already, calls_made=0,
                             succeeded=0, errors=0, cost_usd=Decimal(0), complete=False, status=row["status"],
                             next_step="")
        sem = asyncio.Semaphore(concurrency)
        await _call_progress(progress, already, total, f"{already}/{total} answers already paid for")

        async def one(item: int, prompt: str, model: str) -> None:
            async with sem:
                outcome = await self._call(prompt, model)
                write = asyncio.ensure_future(self._save(experiment_id, item, model, roles[model], outcome))
                try:
                    await asyncio.shield(write)
                except asyncio.CancelledError:
                    await write  # the answer is paid for: record it before stopping, or a resume pays again
                    raise
                finally:
                    summary.calls_made += 1
                    if outcome.ok:
                        summary.succeeded += 1
                        if outcome.cost is None:
                            summary.unpriced_calls += 1
                        else:
                            summary.cost_usd += outcome.cost
                    else:
                        summary.errors += 1
                        if len(summary.error_examples) < 5:
                            summary.error_examples.append(f"item {item} on {model}: {outcome.error}")
                n = already + summary.calls_made
                await _call_progress(progress, n, total, f"item {item} on {model}: "
                                     + ("ok" if outcome.ok else f"error ({outcome.error})"))

        try:
            async with asyncio.TaskGroup() as group:
                for item, prompt, model in todo:
                    group.create_task(one(item, prompt, model))
        except* PrismError as group_error:  # e.g. the store failed: show its message, not an exception group
            raise group_error.exceptions[0] from None

        complete = summary.errors == 0 and summary.succeeded == len(todo)
        if complete and row["status"] == "created":
            await self._set_status(experiment_id, "ready")
        summary.complete = complete
        summary.status = "ready" if complete and row["status"] == "created" else row["status"]
        if complete:
            summary.next_step = (f"every answer is in: evaluate them, then `mcp-prism experiment report "
                                 f"{experiment_id}`")
        else:
            summary.next_step = (f"{summary.errors} call(s) failed and were recorded; run again to retry only those "
                                 f"(`mcp-prism experiment run {experiment_id}`)")
        return summary

    async def _call(self, prompt: str, model: str) -> _Outcome:
        """One non-streaming call; every failure becomes an error outcome (recorded, retried next run)."""
        catalog = self.svc.catalog
        spec = catalog.resolve(model)
        provider = catalog.providers[spec.provider]
        fmt_name = upstream_format(catalog, spec)  # codex models take only the Responses API
        fmt = FORMATS.get(fmt_name)
        if fmt is None:
            return _Outcome(False, error=f"provider {provider.name} speaks {provider.format}, which experiments "
                                 "cannot call")
        client = self.svc.providers()
        t0 = time.perf_counter()
        try:
            req = _chat_request(prompt, spec.name)
            body = json.dumps(fmt.build_request(req, spec.name), separators=(",", ":")).encode()
            resp = await client.send(client.request(provider.name, spec.name, body, stream=False, fmt=fmt_name))
            try:
                raw = await resp.aread()
            finally:
                await resp.aclose()
            latency = (time.perf_counter() - t0) * 1000
            if resp.status_code >= 400:
                err = fmt.parse_error(resp.status_code, raw, resp.headers)
                return _Outcome(False, error=str(err), latency_ms=latency)
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("the body is not a JSON object")
            parsed = fmt.parse_response(data)
        except WireError as e:
            return _Outcome(False, error=str(e), latency_ms=(time.perf_counter() - t0) * 1000)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return _Outcome(False, error=f"the provider's answer could not be read: {e}",
                                 latency_ms=(time.perf_counter() - t0) * 1000)
        tokens = parsed.usage.tokens()
        return _Outcome(True, text=_answer_text(parsed.content), input_tokens=tokens.input_tokens,
                             cached_input_tokens=tokens.cached_input_tokens, output_tokens=tokens.output_tokens,
                             reasoning_tokens=tokens.reasoning_tokens, latency_ms=latency,
                             cost=catalog.cost(spec.name, tokens).usd)

    async def _save(self, experiment_id: str, item: int, model: str, role: str, o: _Outcome) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT OR REPLACE INTO experiment_outputs (experiment_id, item, model, role, response, status, error, "
                "input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, latency_ms, cost_usd, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (experiment_id, item, model, role, o.text, "ok" if o.ok else "error", o.error, o.input_tokens,
                 o.cached_input_tokens, o.output_tokens, o.reasoning_tokens, o.latency_ms,
                 None if o.cost is None else str(o.cost), iso(utcnow())))

        await self.store.transaction(work)

    async def _set_status(self, experiment_id: str, status: str) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE experiments SET status = ?, updated_at = ? WHERE id = ?",
                               (status, iso(utcnow()), experiment_id))

        await self.store.transaction(work)

    # ---------------------------------------------------------------- report
    async def report(self, experiment_id: str) -> ExperimentReport:
        row = await self._row(experiment_id)
        info = await self._info(row)
        ev = info.evaluation
        method, threshold, confidence = ev["method"], float(ev["threshold"]), float(ev.get("confidence", 0.95))
        items = {r["item"]: r for r in await self.store.fetch(
            "SELECT * FROM experiment_items WHERE experiment_id = ? ORDER BY item", (experiment_id,))}
        outputs = await self.store.fetch("SELECT * FROM experiment_outputs WHERE experiment_id = ?", (experiment_id,))
        by_model: dict[str, list[sqlite3.Row]] = {}
        for o in outputs:
            by_model.setdefault(o["model"], []).append(o)
        answers = {(o["item"], o["model"]): o for o in outputs}
        evals = await self.store.fetch("SELECT * FROM evaluations WHERE experiment_id = ? ORDER BY item",
                                       (experiment_id,))
        volume, volume_note = await self._monthly_volume(info.task_type)

        baseline = self._stats(info.baseline_model, "baseline", by_model.get(info.baseline_model, []), volume)
        cand_stats = {c: self._stats(c, "candidate", by_model.get(c, []), volume) for c in info.candidates}
        self._estimate_baseline(baseline, by_model.get(info.baseline_model, []), list(cand_stats.values()), volume)
        reports: list[CandidateReport] = []
        failed: list[FailedExample] = []
        for cand in info.candidates:
            stats = cand_stats[cand]
            rep = CandidateReport(**stats.model_dump(), threshold=threshold, confidence=confidence)
            mine = [e for e in evals if e["model"] == cand]
            used = self._method(method, mine)
            verdicts = {e["item"]: e for e in mine if e["method"] == used}
            rep.method = used
            rep.unevaluated = sum(1 for i in items if i not in verdicts)
            sprt = _sprt_for(threshold)
            for item in sorted(verdicts):
                e = verdicts[item]
                v = e["verdict"]
                if v == "error":
                    rep.evaluation_errors += 1
                    continue
                rep.evaluated += 1
                if v == "acceptable":
                    rep.acceptable += 1
                elif v == "tie":
                    rep.ties += 1
                else:
                    rep.not_acceptable += 1
                if v != "acceptable":
                    failed.append(FailedExample(
                        item=item, model=cand, verdict=v, method=used or method,
                        prompt=_excerpt(_prompt_text(items[item]["prompt"])) or "",
                        baseline_answer=_excerpt(self._answer(answers, item, info.baseline_model)),
                        candidate_answer=_excerpt(self._answer(answers, item, cand)),
                        detail=_json_or_text(e["detail"])))
                if rep.sprt_stopped_at_item is None:
                    decision = sprt.add(v == "acceptable")
                    if decision in ("accept", "reject"):
                        rep.sprt_stopped_at_item, rep.sprt_items_used = item, sprt.n
                    rep.sprt_decision = decision
            self._qualify(rep, sprt)
            self._savings(rep, baseline)
            reports.append(rep)

        paid = await self.store.fetch(
            "SELECT o.cost_usd FROM experiment_outputs o JOIN experiments x ON x.id = o.experiment_id "
            "WHERE o.experiment_id = ? AND o.cost_usd IS NOT NULL AND o.created_at != x.created_at", (experiment_id,))
        judged = [e["cost_usd"] for e in evals if e["cost_usd"] is not None]
        result = ExperimentReport(
            experiment=info, method=method, threshold=threshold, confidence=confidence, monthly_requests=volume,
            volume_note=volume_note, baseline=baseline, candidates=reports,
            experiment_cost_usd=sum((Decimal(r["cost_usd"]) for r in paid), Decimal(0)),
            judge_cost_usd=sum((Decimal(c) for c in judged), Decimal(0)), failed_examples=failed)
        result.markdown = report_markdown(result)
        return result

    @staticmethod
    def _answer(answers: dict[tuple[int, str], sqlite3.Row], item: int, model: str) -> str | None:
        o = answers.get((item, model))
        if o is None:
            return None
        return o["response"] if o["status"] == "ok" else f"(error: {o['error']})"

    @staticmethod
    def _method(method: str, evals: Sequence[sqlite3.Row]) -> str | None:
        have = {e["method"] for e in evals}
        if method in have:
            return method
        return next((m for m in METHOD_FALLBACK if m in have), None)

    @staticmethod
    def _qualify(rep: CandidateReport, sprt: SPRT) -> None:
        if rep.evaluated == 0:
            rep.verdict = "not evaluated"
            rep.summary = ("no verdicts yet: evaluate the answers (human rating, judge or automated checks), "
                           "then report again")
            rep.sprt = "SPRT: nothing to test yet"
            return
        q = qualify(rep.acceptable, rep.evaluated, rep.threshold, rep.confidence)
        rep.rate, rep.lower_bound = q.rate, q.lower_bound
        rep.more_samples_needed = q.more_needed
        rep.verdict = "qualified" if q.qualified else "undecided" if q.more_needed is not None else "not qualified"
        rep.summary = q.summary()
        if rep.ties:
            rep.summary += f" ({rep.ties} judge tie(s) counted as not acceptable)"
        head = f"SPRT (p0 {sprt.p0:.0%}, p1 {sprt.p1:.1%}, α = β = 5%)"
        if rep.sprt_stopped_at_item is not None:
            word = "accepted" if rep.sprt_decision == "accept" else "rejected"
            early = rep.sprt_items_used is not None and rep.sprt_items_used < rep.evaluated
            rep.sprt = (f"{head}: would have {word} after {rep.sprt_items_used} verdict(s), at item "
                        f"{rep.sprt_stopped_at_item}" + (" — an early stop" if early else ""))
        else:
            rep.sprt = f"{head}: would not have stopped within {sprt.n} verdict(s) (log-LR {sprt.llr:+.2f})"

    @staticmethod
    def _savings(rep: CandidateReport, baseline: ModelStats) -> None:
        a, b = baseline.cost_per_request_usd, rep.cost_per_request_usd
        if a is None or b is None:
            return
        rep.saving_per_request_usd = a - b
        rep.saving_pct = float((a - b) / a * 100) if a else None
        if baseline.cost_per_month_usd is not None and rep.cost_per_month_usd is not None:
            rep.saving_per_month_usd = baseline.cost_per_month_usd - rep.cost_per_month_usd

    @staticmethod
    def _stats(model: str, role: Literal["baseline", "candidate"], rows: Sequence[sqlite3.Row],
               volume: int | None) -> ModelStats:
        ok = [r for r in rows if r["status"] == "ok"]
        latencies = [float(r["latency_ms"]) for r in ok if r["latency_ms"] is not None]
        metered = [r for r in ok if r["input_tokens"] or r["output_tokens"]]
        costs = [_decimal(r["cost_usd"]) for r in ok]
        per_request = None
        if ok and all(c is not None for c in costs):
            per_request = sum(costs, Decimal(0)) / len(costs)  # type: ignore[arg-type]
        return ModelStats(
            model=model, role=role, answers=len(ok), failed_calls=len(rows) - len(ok),
            latency_p50_ms=_percentile(latencies, 0.50), latency_p95_ms=_percentile(latencies, 0.95),
            mean_input_tokens=sum(r["input_tokens"] for r in metered) / len(metered) if metered else None,
            mean_output_tokens=sum(r["output_tokens"] for r in metered) / len(metered) if metered else None,
            cost_per_request_usd=per_request,
            cost_per_month_usd=per_request * volume if per_request is not None and volume is not None else None)

    def _estimate_baseline(self, baseline: ModelStats, rows: Sequence[sqlite3.Row], candidates: Sequence[ModelStats],
                           volume: int | None) -> None:
        """Baseline answers from a file carry no usage: price them at the candidates' mean input tokens (the
        same prompts) and about a token per 4 characters of answer, and say it is an estimate."""
        if baseline.cost_per_request_usd is not None or not baseline.answers or baseline.mean_input_tokens is not None:
            return
        inputs = [c.mean_input_tokens for c in candidates if c.mean_input_tokens is not None]
        if not inputs:
            return
        texts = [len(r["response"] or "") / 4 for r in rows if r["status"] == "ok"]
        usage = TokenUsage(input_tokens=round(sum(inputs) / len(inputs)),
                           output_tokens=max(1, round(sum(texts) / len(texts))))
        cost = self.svc.catalog.cost(baseline.model, usage).usd
        if cost is None:
            return
        baseline.cost_per_request_usd = cost
        baseline.cost_per_month_usd = cost * volume if volume is not None else None
        baseline.cost_note = (f"estimated: the baseline answers came without token counts; priced at "
                              f"{usage.input_tokens:,} input tokens (the candidates' mean) and {usage.output_tokens:,} "
                              "output tokens (answer length / 4)")

    async def _monthly_volume(self, task_type: str) -> tuple[int | None, str]:
        today = utcnow().date()
        rows = await self.store.rollup((today - timedelta(days=30)).isoformat(),
                                       (today + timedelta(days=1)).isoformat(), ["task_type"],
                                       {"task_type": task_type})
        requests = sum(int(r["requests"] or 0) for r in rows)
        if not requests:
            return None, (f"no {task_type} requests recorded in the last 30 days: monthly cost and saving are not "
                          "projected (per-request figures still hold)")
        first = min(r["first_day"] for r in rows)
        days = (today - date.fromisoformat(first)).days + 1
        volume = int(monthly(Decimal(requests), days))
        return volume, f"{volume:,} {task_type} requests/month (observed: {requests:,} in {days} day(s))"

    # ---------------------------------------------------------------- promote
    async def promote(self, experiment_id: str, candidate: str, *, author: str, reason: str, monitor_days: int = 14,
                      auto_rollback: bool = False) -> PromoteResult:
        if not author or not author.strip():
            raise InvalidInput("author is required: who promotes the candidate (a name or email)")
        if not reason or not reason.strip():
            raise InvalidInput("reason is required: why promote it (e.g. 'cheaper at equal quality')")
        if isinstance(monitor_days, bool) or not isinstance(monitor_days, int) or not 1 <= monitor_days <= 365:
            raise InvalidInput(f"monitor_days must be from 1 to 365, not {monitor_days!r}")
        report = await self.report(experiment_id)
        info = report.experiment
        name = self.svc.catalog.resolve(candidate).name
        rep = next((c for c in report.candidates if c.model == name), None)
        if rep is None:
            raise InvalidInput(f"{name} is not a candidate of experiment {experiment_id}; its candidates: "
                               f"{', '.join(info.candidates)}")
        if info.status == "promoted":
            raise InvalidInput(f"experiment {experiment_id} was already promoted; start a new experiment to try "
                               "another change")
        if rep.verdict != "qualified":
            raise InvalidInput(f"{name} is {rep.verdict} in experiment {experiment_id}: {rep.summary}. Only a "
                               "qualified candidate can be promoted")
        active = (await self.svc.rules(fresh=True))[info.task_type]
        rule = active.rule.to_json()
        previous_model = rule["primary"]
        rule["primary"] = name
        rule["fallbacks"] = [f for f in rule.get("fallbacks", []) if f != name]
        evidence = f"experiment:{experiment_id} {name} vs {info.baseline_model}: {rep.summary}"
        change = await self.svc.update_routing_rule(rule, author=author.strip(), reason=reason.strip(),
                                                    evidence=evidence)
        assert change.new_version is not None
        now = utcnow()
        ends = iso(now + timedelta(days=monitor_days))
        details = {"candidate": name, "baseline_model": info.baseline_model, "previous_model": previous_model,
                   "verdict": rep.summary, "evaluated": rep.evaluated, "acceptable": rep.acceptable,
                   "method": rep.method, "author": author.strip()}

        async def work(conn: aiosqlite.Connection) -> int:
            await conn.execute("UPDATE experiments SET status = 'promoted', updated_at = ?, notes = "
                               "COALESCE(notes || '; ', '') || ? WHERE id = ?",
                               (iso(now), f"promoted {name} as rule v{change.new_version}", experiment_id))
            cur = await conn.execute(
                "INSERT INTO monitors (task_type, rule_version, baseline_version, experiment_id, started_at, ends_at, "
                "threshold, auto_rollback, status, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'watching', ?)",
                (info.task_type, change.new_version, change.previous_version, experiment_id, iso(now), ends,
                 report.threshold, int(auto_rollback), json.dumps(details, sort_keys=True)))
            return int(cur.lastrowid or 0)

        monitor_id = await self.store.transaction(work)
        return PromoteResult(
            experiment_id=experiment_id, task_type=info.task_type, candidate=name, previous_model=previous_model,
            previous_version=change.previous_version, new_version=change.new_version, evidence=evidence,
            monitor_id=monitor_id, monitor_ends_at=ends, threshold=report.threshold, auto_rollback=auto_rollback,
            change=change)


# ==================================================================== markdown
def _usd(v: Decimal | None) -> str:
    """Like `money`, with enough places for per-request amounts far below a cent."""
    if v is None or v == 0 or abs(v) >= Decimal("0.01"):
        return money(v)
    sign = "-" if v < 0 else ""
    return f"{sign}${abs(v):.10f}".rstrip("0")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def _tok(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def info_markdown(info: ExperimentInfo) -> str:
    ev = info.evaluation
    lines = [f"experiment {info.id} ({info.status}): {info.task_type}, baseline {info.baseline_model}, "
             f"candidates {', '.join(info.candidates)}",
             f"{info.items} item(s) ({info.edge_cases} edge case(s)) from {info.source}; evaluation {ev.get('method')} "
             f"at {float(ev.get('threshold', 0)):.0%}",
             "answers: " + ", ".join(f"{m} {n}/{info.items}" for m, n in info.outputs_ok.items())]
    if info.outputs_failed:
        lines.append("last call failed: " + ", ".join(f"{m} {n}" for m, n in info.outputs_failed.items()))
    lines += [f"warning: {w}" for w in info.warnings]
    lines.append(f"next: {info.next_step}")
    return "\n".join(lines)


def list_markdown(listing: ExperimentList) -> str:
    if not listing.experiments:
        return "no experiments yet: `mcp-prism experiment start TASK_TYPE --candidates MODEL,...`"
    rows = [[e.id, e.task_type, e.status, e.baseline_model, ", ".join(e.candidates), e.items, e.answers_missing,
             e.created_at[:16]] for e in listing.experiments]
    return render.table(["id", "task type", "status", "baseline", "candidates", "items", "answers missing",
                         "created"], rows)


def run_markdown(s: RunSummary) -> str:
    lines = [f"experiment {s.experiment_id}: {s.calls_made} call(s) made ({s.succeeded} ok, {s.errors} failed), "
             f"{s.already_done} of {s.total} answers were already paid for; this run cost {money(s.cost_usd)}"
             + (f" (+{s.unpriced_calls} unpriced)" if s.unpriced_calls else "")]
    lines += [f"  error: {e}" for e in s.error_examples]
    lines.append(f"next: {s.next_step}")
    return "\n".join(lines)


def report_markdown(r: ExperimentReport) -> str:
    e = r.experiment
    parts = [f"### Experiment {e.id}: {e.task_type}, {e.items} items, baseline {e.baseline_model}\n",
             f"Evaluation: {r.method}; a candidate qualifies when the {r.confidence:.0%} lower bound of its "
             f"acceptance rate clears {r.threshold:.0%}. Volume: {r.volume_note}.\n"]
    rows = []
    for c in r.candidates:
        rows.append([c.model, c.verdict, f"{c.acceptable}/{c.evaluated}", c.ties, _pct(c.rate), _pct(c.lower_bound),
                     c.more_samples_needed if c.more_samples_needed is not None else "-"])
    parts.append(render.table(["candidate", "verdict", "acceptable", "ties", "rate", "lower bound", "more samples"],
                              rows))
    parts.append("")
    parts += [f"- **{c.model}**: {c.summary}. {c.sprt}." for c in r.candidates]
    parts.append("")
    cost_rows = []
    for s in [r.baseline, *r.candidates]:
        saving = "-"
        if isinstance(s, CandidateReport) and s.saving_per_request_usd is not None:
            saving = f"{_usd(s.saving_per_request_usd)}/req" + (
                f", {_usd(s.saving_per_month_usd)}/month" if s.saving_per_month_usd is not None else "") + (
                f" ({s.saving_pct:.0f}%)" if s.saving_pct is not None else "")
        cost_rows.append([s.model + (" (baseline)" if s.role == "baseline" else ""), s.answers, s.failed_calls,
                          _ms(s.latency_p50_ms), _ms(s.latency_p95_ms), _tok(s.mean_input_tokens),
                          _tok(s.mean_output_tokens), _usd(s.cost_per_request_usd),
                          _usd(s.cost_per_month_usd) if s.cost_per_month_usd is not None else "-", saving])
    parts.append(render.table(["model", "answers", "failed", "p50", "p95", "in tok", "out tok", "per request",
                               "per month", "saving vs baseline"], cost_rows))
    parts += [f"\n{s.model}: {s.cost_note}." for s in [r.baseline, *r.candidates] if s.cost_note]
    parts.append(f"\nExperiment cost {_usd(r.experiment_cost_usd)}; judging {_usd(r.judge_cost_usd)}.")
    if r.failed_examples:
        parts.append(f"\n#### Not acceptable ({len(r.failed_examples)})\n")
        for f in r.failed_examples[:20]:
            detail = f.detail if isinstance(f.detail, str) else json.dumps(f.detail, ensure_ascii=False)
            parts.append(f"- item {f.item}, {f.model}: **{f.verdict}** ({f.method})\n"
                         f"  - prompt: {_excerpt(f.prompt, 200)}\n"
                         f"  - baseline: {_excerpt(f.baseline_answer, 200)}\n"
                         f"  - candidate: {_excerpt(f.candidate_answer, 200)}"
                         + (f"\n  - detail: {_excerpt(detail, 300)}" if f.detail is not None else ""))
        if len(r.failed_examples) > 20:
            parts.append(f"- ... {len(r.failed_examples) - 20} more (see the JSON result)")
    return "\n".join(parts)


def promote_markdown(p: PromoteResult) -> str:
    return (f"rule {p.task_type}: v{p.previous_version} -> v{p.new_version}, primary {p.previous_model} -> "
            f"{p.candidate} (saved)\nevidence: {p.evidence}\nmonitor {p.monitor_id} watches it until "
            f"{p.monitor_ends_at[:10]} (threshold {p.threshold:.0%}, auto-rollback "
            f"{'on' if p.auto_rollback else 'off'}); undo with `mcp-prism rules rollback {p.task_type} "
            f"--to {p.previous_version}`")

