"""Evaluating an experiment's candidate answers: automated checks, an LLM judge, blind human rating.

Every method writes one row per (item, candidate) into `evaluations` (method automated | judge | human),
with the candidate's verdict (acceptable | degraded | unacceptable | tie | error), what it rests on
(`detail`, JSON), who decided (`evaluator`) and what judging cost (`cost_usd`). The experiment report
reads those rows; nothing here decides qualification.

- Automated: a JSON Schema, an exact answer, a regex, or a user command (e.g. the tests of generated
  code) decides each answer on its own; a failed check is `unacceptable`.
- Judge: a model compares candidate and baseline in both orders (see `core.judge`); resumable.
- Human: blind pairwise rating; see `EvaluationService.next_for_rating` for the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import sqlite3
import tempfile
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, Field

from mcp_prism.core import judge as J
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.providers.registry import FORMATS, upstream_format
from mcp_prism.providers.wire import ChatRequest, Message, Text, WireError
from mcp_prism.service import PrismService

CHECK_TYPES = ("json_schema", "exact", "regex", "command")
CHECK_EXAMPLES = ('{"type": "json_schema", "schema": {...}}, {"type": "exact", "normalise": true}, '
                  '{"type": "regex", "pattern": "^OK"}, {"type": "command", "command": "pytest -q tests", '
                  '"timeout": 60}')
MAX_DETAIL_TEXT = 2_000  # characters of an answer, expectation or command output kept in `detail`
OUTPUT_TAIL_LINES = 20
MAX_CONCURRENCY = 32
JUDGE_MAX_TOKENS = 4_096
RETRY_DELAYS = (1.0, 4.0)  # seconds before the 2nd and 3rd attempt of a judge call (rate limits, 5xx)
_RETRYABLE = ("rate_limited", "overloaded", "timeout", "provider_error")

ProgressFn = Callable[[int, int, str], Awaitable[None]]


# ==================================================================== results
class VerdictCounts(BaseModel):
    model: str
    role: Literal["candidate", "baseline"] = "candidate"
    evaluated: int = 0
    acceptable: int = 0
    degraded: int = 0
    unacceptable: int = 0
    tie: int = 0
    error: int = 0

    def add(self, verdict: str) -> None:
        self.evaluated += 1
        setattr(self, verdict, getattr(self, verdict) + 1)


class ItemVerdict(BaseModel):
    item: int
    model: str
    verdict: str
    summary: str = Field(description="why, in a line")


class AutomatedResult(BaseModel):
    experiment_id: str
    check: dict[str, Any]
    candidates: list[VerdictCounts] = Field(description="stored verdicts per candidate model")
    baseline: VerdictCounts | None = Field(None, description="the baseline's answers under the same check "
                                                             "(for context; not stored)")
    items: list[ItemVerdict]
    notes: list[str] = Field(default_factory=list)
    markdown: str = ""


class JudgeResult(BaseModel):
    experiment_id: str
    judge_model: str
    judged: int = Field(description="pairs judged in this run")
    skipped: int = Field(description="pairs already judged earlier (not paid for again)")
    not_judged: int = Field(0, description="candidate answers without a usable baseline answer")
    candidates: list[VerdictCounts] = Field(description="every stored judge verdict per candidate")
    position_bias: int = Field(0, description="ties where the judge favoured the same position in both orders")
    cost_usd: Decimal | None = Field(description="what this run's judge calls cost (None when unpriced)")
    warnings: list[str] = Field(default_factory=list)
    items: list[ItemVerdict] = Field(default_factory=list, description="verdicts reached in this run")
    markdown: str = ""


class RatingPair(BaseModel):
    """One blind pair to rate, or done=true when the rater has rated every pair."""

    experiment_id: str
    done: bool
    token: str | None = Field(None, description="pass it to submit_rating; it names no model")
    task_type: str | None = None
    prompt: str | None = None
    first: str | None = Field(None, description="the answer shown first")
    second: str | None = Field(None, description="the answer shown second")
    question: str = ""
    choices: dict[str, str] = Field(default_factory=dict, description="rating -> meaning")
    rated_by_you: int = 0
    total: int = 0


class RatingRecorded(BaseModel):
    experiment_id: str
    rater: str
    replaced: bool = Field(description="this rater had rated the pair before; the new rating replaces it")
    rated_by_you: int
    total: int


class RaterProgress(BaseModel):
    rater: str
    rated: int


class RatingProgress(BaseModel):
    experiment_id: str
    total: int = Field(description="pairs to rate (candidate answers with a baseline answer)")
    rated: int = Field(description="pairs rated by at least one rater")
    raters: list[RaterProgress]
    candidates: list[VerdictCounts] = Field(description="human verdicts per candidate so far")
    markdown: str = ""


# ==================================================================== automated checks (pure parts)
@dataclass(frozen=True, slots=True)
class Check:
    type: str
    spec: dict[str, Any]
    schema: dict[str, Any] | None = None
    pattern: re.Pattern[str] | None = None
    normalise: bool = True
    extract: bool = True
    command: str = ""
    timeout: float = 60.0
    concurrency: int = 4
    cwd: str | None = None
    suffix: str = ".txt"
    regex_flags: int = 0

    @property
    def evaluator(self) -> str:
        if self.type == "command":
            return f"command: {self.command[:200]}"
        if self.type == "regex" and self.pattern is not None:
            return f"regex: {self.pattern.pattern[:200]}"
        return self.type


_ALLOWED_KEYS = {
    "json_schema": {"type", "schema", "extract"},
    "exact": {"type", "normalise", "normalize"},
    "regex": {"type", "pattern", "ignorecase"},
    "command": {"type", "command", "timeout", "concurrency", "cwd", "suffix", "extract"},
}


def _bool(spec: dict[str, Any], key: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f'check field "{key}" must be true or false, not {value!r}')
    return value


def parse_check(spec: Any) -> Check:
    """Validate a check given as a dict (from JSON); say what is wrong and what a valid one looks like."""
    if not isinstance(spec, dict):
        raise InvalidInput(f"a check must be a JSON object, like {CHECK_EXAMPLES}")
    kind = spec.get("type")
    if kind not in CHECK_TYPES:
        raise InvalidInput(f'check "type" must be one of {", ".join(CHECK_TYPES)}, not {kind!r}; examples: '
                           f"{CHECK_EXAMPLES}")
    unknown = sorted(set(spec) - _ALLOWED_KEYS[kind])
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)} in a {kind} check; allowed: "
                           f"{', '.join(sorted(_ALLOWED_KEYS[kind]))}")
    if kind == "json_schema":
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise InvalidInput('a json_schema check needs "schema": a JSON Schema object, like '
                               '{"type": "json_schema", "schema": {"type": "object", "required": ["label"]}}')
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as e:
            where = "/".join(map(str, e.absolute_path)) or "(root)"
            raise InvalidInput(f"the check's schema is not a valid JSON Schema at {where}: {e.message}") from None
        return Check(kind, spec, schema=schema, extract=_bool(spec, "extract", True))
    if kind == "exact":
        if "normalise" in spec and "normalize" in spec:
            raise InvalidInput('give "normalise" or "normalize", not both')
        key = "normalize" if "normalize" in spec else "normalise"
        return Check(kind, spec, normalise=_bool(spec, key, True))
    if kind == "regex":
        flags = re.IGNORECASE if _bool(spec, "ignorecase", False) else 0
        pattern = spec.get("pattern")
        compiled = None
        if pattern is not None:
            if not isinstance(pattern, str) or not pattern:
                raise InvalidInput('"pattern" must be a non-empty regular expression (or leave it out to use '
                                   "each item's expected answer as the pattern)")
            try:
                compiled = re.compile(pattern, flags)
            except re.error as e:
                raise InvalidInput(f"the check's pattern {pattern!r} is not a valid regular expression: {e}") from None
        return Check(kind, spec, pattern=compiled, regex_flags=flags)
    command = spec.get("command")
    if not isinstance(command, str) or not command.strip():
        raise InvalidInput('a command check needs "command": a shell command whose exit code 0 means acceptable, '
                           'e.g. "python -m pytest -q tests/test_gen.py"; the answer is in {answer_file} and '
                           "$PRISM_ANSWER_FILE, the expected answer in $PRISM_EXPECTED")
    timeout = spec.get("timeout", 60)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise InvalidInput(f'"timeout" must be a number of seconds between 0 and 3600, not {timeout!r}')
    concurrency = spec.get("concurrency", 4)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInput(f'"concurrency" must be a whole number from 1 to {MAX_CONCURRENCY}, not {concurrency!r}')
    cwd = spec.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not Path(cwd).expanduser().is_dir()):
        raise InvalidInput(f'"cwd" must be an existing folder, not {cwd!r}')
    suffix = spec.get("suffix", ".txt")
    if not isinstance(suffix, str) or not re.fullmatch(r"\.[A-Za-z0-9_.-]{1,16}", suffix):
        raise InvalidInput(f'"suffix" must be a file extension like ".py", not {suffix!r}')
    return Check(kind, spec, command=command, timeout=float(timeout), concurrency=concurrency,
                 cwd=str(Path(cwd).expanduser()) if cwd else None, suffix=suffix,
                 extract=_bool(spec, "extract", False))


_FENCE = re.compile(r"^\s*```[^\n`]*\n(.*?)\n?```\s*$", re.DOTALL)
_FIRST_FENCE = re.compile(r"```[^\n`]*\n(.*?)\n?```", re.DOTALL)


def strip_fence(text: str, *, first_block: bool = False) -> str:
    """The inside of a markdown code fence when the answer is one (or, with first_block, contains one)."""
    m = _FENCE.match(text) or (_FIRST_FENCE.search(text) if first_block else None)
    return m.group(1) if m else text


def normalise(text: str) -> str:
    """Strip, collapse whitespace, case-fold (and NFKC, so look-alike characters compare equal)."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _short(text: str | None, limit: int = MAX_DETAIL_TEXT) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit:,} more characters]"


@dataclass(frozen=True, slots=True)
class Outcome:
    verdict: str
    summary: str
    detail: dict[str, Any]


def check_json_schema(check: Check, answer: str) -> Outcome:
    text = strip_fence(answer) if check.extract else answer
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return Outcome("unacceptable", f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                       {"error": "invalid JSON", "message": f"{e.msg} at line {e.lineno}, column {e.colno}",
                        "answer": _short(answer)})
    assert check.schema is not None
    validator = jsonschema.validators.validator_for(check.schema)(check.schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return Outcome("acceptable", "valid against the schema", {"valid": True})
    found = [{"path": "/" + "/".join(map(str, e.absolute_path)), "message": e.message[:500],
              "schema_path": "/".join(map(str, e.absolute_schema_path))} for e in errors[:10]]
    first = found[0]
    return Outcome("unacceptable", f"{len(errors)} schema error(s); at {first['path']}: {first['message'][:120]}",
                   {"valid": False, "errors": found, "error_count": len(errors)})


def check_exact(check: Check, answer: str, expected: str | None) -> Outcome:
    if expected is None:
        return Outcome("error", "the item has no expected answer", {"error": "an exact check needs each item's "
                                                                               "expected answer"})
    got, want = (normalise(answer), normalise(expected)) if check.normalise else (answer, expected)
    if got == want:
        return Outcome("acceptable", "matches the expected answer", {"match": True})
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    return Outcome("unacceptable", f"differs from the expected answer at character {at}",
                   {"match": False, "normalised": check.normalise, "first_difference": at,
                    "expected": _short(want), "got": _short(got)})


def check_regex(check: Check, answer: str, expected: str | None) -> Outcome:
    pattern = check.pattern
    if pattern is None:
        if not expected:
            return Outcome("error", "no pattern: the check has none and the item has no expected answer",
                           {"error": "no pattern"})
        try:
            pattern = re.compile(expected, check.regex_flags)
        except re.error as e:
            return Outcome("error", f"the item's expected answer is not a valid regex: {e}",
                           {"error": f"invalid pattern: {e}", "pattern": _short(expected)})
    m = pattern.search(answer)
    if m:
        return Outcome("acceptable", "the pattern matches", {"pattern": _short(pattern.pattern),
                                                              "matched": _short(m.group(0), 200)})
    return Outcome("unacceptable", "the pattern does not match", {"pattern": _short(pattern.pattern),
                                                                  "answer": _short(answer)})


def _tail(output: bytes) -> str:
    lines = output.decode("utf-8", "replace").rstrip().splitlines()[-OUTPUT_TAIL_LINES:]
    return _short("\n".join(lines)) or ""


async def run_command(check: Check, answer: str, expected: str | None, item: int) -> Outcome:
    """Run the check's command on one answer (in its own process group, killed on timeout)."""
    with tempfile.TemporaryDirectory(prefix="prism-check-") as tmp:
        answer_file = Path(tmp) / f"answer{check.suffix}"
        answer_file.write_text(strip_fence(answer, first_block=True) if check.extract else answer, encoding="utf-8")
        expected_file = Path(tmp) / "expected.txt"
        expected_file.write_text(expected or "", encoding="utf-8")
        command = check.command.replace("{answer_file}", shlex.quote(str(answer_file))).replace(
            "{expected_file}", shlex.quote(str(expected_file)))
        env = {**os.environ, "PRISM_ANSWER_FILE": str(answer_file), "PRISM_EXPECTED_FILE": str(expected_file),
               "PRISM_ITEM": str(item)}
        # Environment variables are limited to 128 KiB each on Linux; the file always has it all.
        env["PRISM_EXPECTED"] = (expected or "") if len(expected or "") < 100_000 else ""
        started = time.monotonic()
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, cwd=check.cwd or tmp, start_new_session=True)
        assert proc.stdout is not None
        reader = asyncio.create_task(proc.stdout.read())
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), check.timeout)
        except TimeoutError:
            timed_out = True
        finally:
            if proc.returncode is None or timed_out:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a shell's children too
                await proc.wait()
        try:
            output = await asyncio.wait_for(reader, 5)
        except TimeoutError:  # a grandchild that left the group still holds the pipe
            reader.cancel()
            output = b""
        seconds = round(time.monotonic() - started, 3)
    detail: dict[str, Any] = {"command": _short(command, 500), "seconds": seconds, "output_tail": _tail(output)}
    if timed_out:
        detail.update(timeout=check.timeout, note=f"timed out after {check.timeout:g} s; the process was killed")
        return Outcome("unacceptable", f"timed out after {check.timeout:g} s", detail)
    code = proc.returncode
    detail["exit_code"] = code
    if code == 0:
        return Outcome("acceptable", "the command exited 0", detail)
    if code in (126, 127):
        return Outcome("error", f"the command could not run (exit {code}: not found or not executable)", detail)
    last = detail["output_tail"].splitlines()[-1:] if detail["output_tail"] else []
    return Outcome("unacceptable", f"the command exited {code}" + (f": {last[0][:120]}" if last else ""), detail)


# ==================================================================== the service
@dataclass(frozen=True, slots=True)
class _Pair:
    item: int
    model: str  # the candidate
    candidate: str
    baseline: str
    baseline_model: str
    prompt: str
    expected: str | None


_UPSERT = (
    "INSERT INTO evaluations (experiment_id, item, model, method, verdict, detail, evaluator, cost_usd, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (experiment_id, item, model, method) DO UPDATE SET "
    "verdict = excluded.verdict, detail = excluded.detail, evaluator = excluded.evaluator, "
    "cost_usd = excluded.cost_usd, created_at = excluded.created_at"
)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


class EvaluationService:
    """Automated checks, the LLM judge and blind human rating of one experiment's candidate answers."""

    def __init__(self, svc: PrismService) -> None:
        self.svc = svc
        self.store = svc.store

    # ---------------------------------------------------------------- reading experiments
    async def _experiment(self, experiment_id: str) -> sqlite3.Row:
        rows = await self.store.fetch("SELECT * FROM experiments WHERE id = ?", (experiment_id,))
        if not rows:
            known = await self.store.fetch("SELECT id FROM experiments ORDER BY created_at DESC LIMIT 30")
            raise UnknownName("experiment", experiment_id, [r["id"] for r in known])
        return rows[0]

    async def _pairs(self, exp: sqlite3.Row) -> tuple[list[_Pair], int]:
        """Candidate answers (status ok) with the baseline's answer to the same item, and how many
        candidate answers have no usable baseline answer."""
        rows = await self.store.fetch(
            "SELECT o.item, o.model, o.role, o.response, i.prompt, i.expected FROM experiment_outputs o "
            "JOIN experiment_items i ON i.experiment_id = o.experiment_id AND i.item = o.item "
            "WHERE o.experiment_id = ? AND o.status = 'ok' AND o.response IS NOT NULL ORDER BY o.item, o.model",
            (exp["id"],))
        baselines: dict[int, tuple[str, str]] = {}
        for r in rows:
            if r["role"] == "baseline" and (r["item"] not in baselines or r["model"] == exp["baseline_model"]):
                baselines[r["item"]] = (r["model"], r["response"])
        pairs, orphans = [], 0
        for r in rows:
            if r["role"] != "candidate":
                continue
            base = baselines.get(r["item"])
            if base is None:
                orphans += 1
                continue
            pairs.append(_Pair(r["item"], r["model"], r["response"], base[1], base[0], r["prompt"], r["expected"]))
        return pairs, orphans

    async def _write(self, experiment_id: str, item: int, model: str, method: str, verdict: str,
                     detail: dict[str, Any], evaluator: str, cost: Decimal | None) -> None:
        params = (experiment_id, item, model, method, verdict, _dumps(detail), evaluator,
                  None if cost is None else str(cost), iso(utcnow()))

        async def work(conn: Any) -> None:
            await conn.execute(_UPSERT, params)

        await self.store.transaction(work)

    async def _counts(self, experiment_id: str, method: str) -> list[VerdictCounts]:
        rows = await self.store.fetch(
            "SELECT model, verdict, COUNT(*) AS n FROM evaluations WHERE experiment_id = ? AND method = ? "
            "GROUP BY model, verdict ORDER BY model", (experiment_id, method))
        out: dict[str, VerdictCounts] = {}
        for r in rows:
            c = out.setdefault(r["model"], VerdictCounts(model=r["model"]))
            if r["verdict"] in J.VERDICTS:
                c.evaluated += r["n"]
                setattr(c, r["verdict"], getattr(c, r["verdict"]) + r["n"])
        return list(out.values())

    # ---------------------------------------------------------------- automated
    async def automated(self, experiment_id: str, check: dict[str, Any], *,
                        progress: ProgressFn | None = None) -> AutomatedResult:
        """Run `check` on every candidate answer (and, for context, the baseline's); store the candidates'
        verdicts (method automated, replacing earlier ones: the check may have changed)."""
        parsed = parse_check(check)
        exp = await self._experiment(experiment_id)
        rows = await self.store.fetch(
            "SELECT o.item, o.model, o.role, o.response, i.expected FROM experiment_outputs o "
            "JOIN experiment_items i ON i.experiment_id = o.experiment_id AND i.item = o.item "
            "WHERE o.experiment_id = ? AND o.status = 'ok' AND o.response IS NOT NULL ORDER BY o.item, o.model",
            (experiment_id,))
        notes: list[str] = []
        if not any(r["role"] == "candidate" for r in rows):
            notes.append("no candidate answers yet: run the experiment first (mcp-prism experiment run)")
        gate = asyncio.Semaphore(parsed.concurrency)
        done = 0

        async def one(r: sqlite3.Row) -> tuple[sqlite3.Row, Outcome]:
            nonlocal done
            answer, expected = r["response"], r["expected"]
            if parsed.type == "json_schema":
                outcome = check_json_schema(parsed, answer)
            elif parsed.type == "exact":
                outcome = check_exact(parsed, answer, expected)
            elif parsed.type == "regex":
                outcome = check_regex(parsed, answer, expected)
            else:
                async with gate:
                    outcome = await run_command(parsed, answer, expected, r["item"])
            if r["role"] == "candidate":
                detail = {"check": parsed.type, "summary": outcome.summary, **outcome.detail}
                await self._write(experiment_id, r["item"], r["model"], "automated", outcome.verdict, detail,
                                  parsed.evaluator, None)
            done += 1
            if progress is not None:
                await progress(done, len(rows), f"item {r['item']} on {r['model']}: {outcome.verdict}")
            return r, outcome

        results = await asyncio.gather(*(one(r) for r in rows))
        candidates: dict[str, VerdictCounts] = {}
        baseline: VerdictCounts | None = None
        items: list[ItemVerdict] = []
        for r, outcome in results:
            if r["role"] == "candidate":
                candidates.setdefault(r["model"], VerdictCounts(model=r["model"])).add(outcome.verdict)
                items.append(ItemVerdict(item=r["item"], model=r["model"], verdict=outcome.verdict,
                                         summary=outcome.summary))
            else:
                baseline = baseline or VerdictCounts(model=r["model"], role="baseline")
                baseline.add(outcome.verdict)
        errors = sum(c.error for c in candidates.values())
        if errors:
            notes.append(f"{errors} answer(s) could not be checked (verdict error): see each item's summary")
        if exp["baseline_model"] and baseline is None:
            notes.append("the baseline has no answers to check")
        result = AutomatedResult(experiment_id=experiment_id, check=check, candidates=list(candidates.values()),
                                 baseline=baseline, items=items, notes=notes)
        result.markdown = _counts_markdown(f"automated check ({parsed.evaluator}) on experiment {experiment_id}",
                                           [*result.candidates, *([baseline] if baseline else [])], notes)
        return result

    # ---------------------------------------------------------------- judge
    def _format(self, judge_model: str) -> str:
        """The wire format the judge is called in (codex models take only the Responses API)."""
        catalog = self.svc.catalog
        return upstream_format(catalog, catalog.resolve(judge_model))

    async def _ask(self, judge_model: str, provider: str, system: str, user: str) -> tuple[str, TokenUsage, float]:
        """One judge call: (reply text, usage, latency ms). Retries rate limits and 5xx a couple of times."""
        fmt_name = self._format(judge_model)
        fmt = FORMATS[fmt_name]
        req = ChatRequest(model=judge_model, messages=[Message("user", [Text(user)])], system=[Text(system)],
                          max_tokens=JUDGE_MAX_TOKENS)
        body = json.dumps(fmt.build_request(req, judge_model), ensure_ascii=False).encode()
        client = self.svc.providers()
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                resp = await client.send(client.request(provider, judge_model, body, stream=False, fmt=fmt_name))
                try:
                    raw = await resp.aread()
                finally:
                    await resp.aclose()
                if resp.status_code >= 400:
                    raise fmt.parse_error(resp.status_code, raw, resp.headers)
                try:
                    parsed = fmt.parse_response(json.loads(raw))
                except (ValueError, TypeError, AttributeError, KeyError) as e:
                    raise WireError(502, "provider_error", f"the judge's reply could not be read: {e}") from None
            except WireError as e:
                if e.kind not in _RETRYABLE or attempt >= len(RETRY_DELAYS):
                    raise
                await asyncio.sleep(min(e.retry_after or RETRY_DELAYS[attempt], 60.0))
                attempt += 1
                continue
            text = "".join(p.text for p in parsed.content if isinstance(p, Text))
            return text, parsed.usage.tokens(), (time.monotonic() - started) * 1000

    async def judge(self, experiment_id: str, judge_model: str, *, concurrency: int = 4,
                    progress: ProgressFn | None = None) -> JudgeResult:
        """Judge every candidate answer against the baseline's with `judge_model`, in both orders.

        Resumable: pairs with a stored judge verdict are skipped; `error` verdicts are judged again."""
        if isinstance(concurrency, bool) or not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidInput(f"concurrency must be from 1 to {MAX_CONCURRENCY}, not {concurrency!r}")
        exp = await self._experiment(experiment_id)
        spec = self.svc.catalog.resolve(judge_model)
        client = self.svc.providers()
        if spec.provider not in client.endpoints:
            raise InvalidInput(f"the judge's provider {spec.provider} is not configured")
        if not client.has_key(spec.provider):
            env = client.endpoints[spec.provider].provider.api_key_env
            raise InvalidInput(f"no API key for {spec.provider} (the judge {spec.name}'s provider): set {env}")
        per_model = self._judge_warnings(spec.name, spec.family, json.loads(exp["candidates"] or "[]"),
                                         exp["baseline_model"])
        warnings = [w for ws in per_model.values() for w in ws]
        pairs, orphans = await self._pairs(exp)
        judged_rows = await self.store.fetch(
            "SELECT item, model FROM evaluations WHERE experiment_id = ? AND method = 'judge' AND verdict != 'error'",
            (experiment_id,))
        done_keys = {(r["item"], r["model"]) for r in judged_rows}
        todo = [p for p in pairs if (p.item, p.model) not in done_keys]
        task = self.svc.task_types.get(exp["task_type"])
        description = task.description if task else None
        gate = asyncio.Semaphore(concurrency)
        total_cost: Decimal | None = Decimal(0)
        unpriced = False
        items: list[ItemVerdict] = []
        finished = 0

        async def call(system: str, user: str) -> tuple[str, TokenUsage, float]:
            async with gate:
                return await self._ask(spec.name, spec.provider, system, user)

        async def one(p: _Pair) -> None:
            nonlocal total_cost, unpriced, finished
            prompt = J.render_prompt(p.prompt)
            orders = (("baseline_first", p.baseline, p.candidate, "B"), ("candidate_first", p.candidate, p.baseline,
                                                                          "A"))
            replies = await asyncio.gather(*(call(*J.judge_messages(exp["task_type"], description, prompt, a, b,
                                                                    p.expected)) for _, a, b, _ in orders),
                                           return_exceptions=True)
            detail_orders: list[dict[str, Any]] = []
            relations: list[J.Relation | None] = []
            cost: Decimal | None = Decimal(0)
            problems: list[str] = []
            for (name, _, _, cand_is), reply in zip(orders, replies, strict=True):
                entry: dict[str, Any] = {"order": name, "candidate_is": cand_is}
                if isinstance(reply, BaseException):
                    if not isinstance(reply, WireError):
                        raise reply
                    entry["error"] = str(reply)
                    problems.append(f"{name}: {reply}")
                    relations.append(None)
                else:
                    text, usage, latency = reply
                    call_cost = self.svc.catalog.cost(spec.name, usage).usd
                    cost = None if cost is None or call_cost is None else cost + call_cost
                    verdict = J.parse_verdict(text)
                    rel = None if verdict is None else J.relation(verdict, cand_is)  # type: ignore[arg-type]
                    entry.update(raw=_short(text, 8_000), verdict=verdict, candidate=rel,
                                 usage={"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
                                 cost_usd=None if call_cost is None else str(call_cost), latency_ms=round(latency))
                    if verdict is None:
                        problems.append(f"{name}: no verdict found in the judge's reply")
                    relations.append(rel)
                detail_orders.append(entry)
            detail: dict[str, Any] = {"judge": spec.name, "judge_family": spec.family, "orders": detail_orders,
                                      "baseline_model": p.baseline_model}
            if per_model.get(p.model):
                detail["warnings"] = per_model[p.model]
            if problems or None in relations:
                verdict_out, summary = "error", "; ".join(problems)
                detail["error"] = summary
            else:
                combined = J.combine(relations[0], relations[1])  # type: ignore[arg-type]
                verdict_out, summary = combined.verdict, combined.reason
                detail.update(reason=combined.reason, position_preference=combined.position_preference)
            if cost is None:
                unpriced = True
            else:
                total_cost = None if total_cost is None else total_cost + cost
            await self._write(experiment_id, p.item, p.model, "judge", verdict_out, detail, spec.name, cost)
            items.append(ItemVerdict(item=p.item, model=p.model, verdict=verdict_out, summary=summary))
            finished += 1
            if progress is not None:
                await progress(finished, len(todo), f"item {p.item} on {p.model}: {verdict_out}")

        await asyncio.gather(*(one(p) for p in todo))
        if unpriced:
            warnings.append(f"no price is known for the judge {spec.name}: its cost is not counted")
            total_cost = None
        if orphans:
            warnings.append(f"{orphans} candidate answer(s) have no baseline answer to compare with: not judged")
        bias = await self.store.fetch(
            "SELECT COUNT(*) AS n FROM evaluations WHERE experiment_id = ? AND method = 'judge' AND verdict = 'tie' "
            "AND json_extract(detail, '$.position_preference') IS NOT NULL", (experiment_id,))
        items.sort(key=lambda i: (i.item, i.model))
        result = JudgeResult(experiment_id=experiment_id, judge_model=spec.name, judged=len(todo),
                             skipped=len(pairs) - len(todo), not_judged=orphans,
                             candidates=await self._counts(experiment_id, "judge"), position_bias=bias[0]["n"],
                             cost_usd=total_cost, warnings=warnings, items=items)
        notes = [f"judged {result.judged} pair(s) now, {result.skipped} already judged; this run cost "
                 + ("unknown (unpriced judge)" if total_cost is None else f"${total_cost:.6f}"),
                 "a tie = the two orders disagreed (position bias decided): reported, never counted acceptable",
                 *warnings]
        if result.position_bias:
            notes.append(f"{result.position_bias} tie(s) show position bias (the judge favoured one position "
                         "in both orders)")
        result.markdown = _counts_markdown(f"LLM judge {spec.name} on experiment {experiment_id}",
                                           result.candidates, notes)
        return result

    def _judge_warnings(self, judge: str, family: str, candidates: Sequence[str],
                        baseline: str | None) -> dict[str, list[str]]:
        """Bias warnings per candidate ("" for the one about the baseline)."""
        out: dict[str, list[str]] = {}
        for name in candidates:
            if name == judge:
                out[name] = [f"the judge {judge} is the candidate {name} itself: it will favour its own answers "
                             "(self-preference); use a judge of another family"]
                continue
            try:
                cand_family = self.svc.catalog.resolve(name).family
            except UnknownName:
                continue
            if cand_family == family:
                out[name] = [f"the judge {judge} is of the candidate {name}'s family ({family}): LLM judges "
                             "favour their own family's answers (self-preference); use a judge of another family"]
        if baseline and baseline == judge:
            out[""] = [f"the judge {judge} is the baseline model: it may favour the baseline's answers "
                       "(against the candidates)"]
        return out

    # ---------------------------------------------------------------- blind human rating
    def _token(self, exp: sqlite3.Row, item: int, model: str) -> str:
        # Opaque: a digest of the pair salted with the experiment's creation time, so neither the model
        # nor the order can be read from it (or guessed by hashing catalog names).
        digest = hashlib.sha256(f"{exp['id']}\x1f{item}\x1f{model}\x1f{exp['created_at']}".encode()).hexdigest()
        return f"{exp['id']}:{item}:{digest[:16]}"

    async def _human_rows(self, experiment_id: str) -> dict[tuple[int, str], dict[str, Any]]:
        rows = await self.store.fetch("SELECT item, model, detail FROM evaluations WHERE experiment_id = ? AND "
                                      "method = 'human'", (experiment_id,))
        return {(r["item"], r["model"]): json.loads(r["detail"] or "{}") for r in rows}

    async def next_for_rating(self, experiment_id: str, rater: str, *, skip: Sequence[str] = ()) -> RatingPair:
        """The next pair `rater` has not rated, blind.

        Protocol (symmetric pairwise preference, as MT-Bench's human study): the baseline's and the
        candidate's answers are shown as "first" and "second" in a random order that is stable per
        (item, candidate); nothing says which model wrote which, or which one is new. The rater answers
        one symmetric question: which is better, or are they as good as each other, and whether the
        worse one is unusable (ratings first / second / same / only_first / only_second). The service
        alone maps that to the candidate's verdict: acceptable when it is at least as good as the
        baseline, degraded when worse, unacceptable when only the baseline's answer is usable.

        Why not "rate answer 2 against answer 1" with the candidate always second, or "rate the marked
        answer"? Then the rater knows which answer is the new model's, and expectations (cheaper must be
        worse, or hoping the experiment succeeds) bias the rating. Pairs come in a stable random order per
        rater; with several candidates the baseline's answer to an item recurs across pairs, which a rater
        may notice, so the queue mixes items rather than showing one item's pairs in a row.
        `skip`: tokens the rater passed over in this session (they stay unrated, for later)."""
        rater = _rater(rater)
        exp = await self._experiment(experiment_id)
        pairs, _ = await self._pairs(exp)
        human = await self._human_rows(experiment_id)
        mine = [p for p in pairs if rater in human.get((p.item, p.model), {}).get("ratings", {})]
        skipped = set(skip)
        todo = [p for p in J.shuffled(pairs, experiment_id, rater)
                if rater not in human.get((p.item, p.model), {}).get("ratings", {})
                and self._token(exp, p.item, p.model) not in skipped]
        base = RatingPair(experiment_id=experiment_id, done=not todo, rated_by_you=len(mine), total=len(pairs),
                          question="Compare the two answers to this task. Which is better, or are they as good as "
                                   "each other? If the worse one is wrong or unusable, say that only the better "
                                   "one is acceptable.",
                          choices=dict(J.HUMAN_RATING_HELP))
        if not todo:
            return base
        p = todo[0]
        cand_first = J.blind_candidate_first(experiment_id, p.item, p.model)
        first, second = (p.candidate, p.baseline) if cand_first else (p.baseline, p.candidate)
        return base.model_copy(update={"token": self._token(exp, p.item, p.model), "task_type": exp["task_type"],
                                       "prompt": J.render_prompt(p.prompt), "first": first, "second": second})

    async def _resolve_token(self, token: str) -> tuple[sqlite3.Row, _Pair]:
        bad = InvalidInput(f"rating token {token!r} is not valid: use the token next_rating returned, unchanged")
        try:
            experiment_id, item_text, _ = token.rsplit(":", 2)
            item = int(item_text)
        except (ValueError, AttributeError):
            raise bad from None
        rows = await self.store.fetch("SELECT * FROM experiments WHERE id = ?", (experiment_id,))
        if not rows:
            raise bad
        exp = rows[0]
        pairs, _ = await self._pairs(exp)
        for p in pairs:
            if p.item == item and self._token(exp, p.item, p.model) == token:
                return exp, p
        raise bad

    async def submit_rating(self, token: str, rating: str, rater: str, note: str | None = None) -> RatingRecorded:
        """Store `rater`'s blind rating of one pair (see `next_for_rating`); a second rating by the same rater
        replaces the first. The stored verdict is the candidate's; with several raters the most severe counts."""
        rater = _rater(rater)
        if rating not in J.HUMAN_RATINGS:
            raise InvalidInput(f"rating must be one of {', '.join(J.HUMAN_RATINGS)}, not {rating!r}: "
                               + "; ".join(f"{k} = {v}" for k, v in J.HUMAN_RATING_HELP.items()))
        if note is not None and len(note) > 4_000:
            raise InvalidInput("the note is too long: keep it under 4,000 characters")
        exp, p = await self._resolve_token(token)
        cand_first = J.blind_candidate_first(exp["id"], p.item, p.model)
        verdict = J.human_verdict(rating, cand_first)
        replaced = False

        async def work(conn: Any) -> None:
            nonlocal replaced
            cur = await conn.execute("SELECT detail FROM evaluations WHERE experiment_id = ? AND item = ? AND "
                                     "model = ? AND method = 'human'", (exp["id"], p.item, p.model))
            row = await cur.fetchone()
            await cur.close()
            detail = json.loads(row[0]) if row and row[0] else {}
            ratings: dict[str, Any] = detail.get("ratings", {})
            replaced = rater in ratings
            ratings[rater] = {"rating": rating, "verdict": verdict, "note": note, "at": iso(utcnow())}
            verdicts = [r["verdict"] for r in ratings.values()]
            detail = {"protocol": "blind pairwise, symmetric; order random per (item, candidate)",
                      "candidate_shown": "first" if cand_first else "second", "baseline_model": p.baseline_model,
                      "ratings": ratings, "agree": len(set(verdicts)) == 1}
            await conn.execute(_UPSERT, (exp["id"], p.item, p.model, "human", J.combine_raters(verdicts),
                                         _dumps(detail), ", ".join(sorted(ratings)), None, iso(utcnow())))

        await self.store.transaction(work)
        progress = await self.rating_progress(exp["id"])
        mine = next((r.rated for r in progress.raters if r.rater == rater), 0)
        return RatingRecorded(experiment_id=exp["id"], rater=rater, replaced=replaced, rated_by_you=mine,
                              total=progress.total)

    async def rating_progress(self, experiment_id: str) -> RatingProgress:
        exp = await self._experiment(experiment_id)
        pairs, _ = await self._pairs(exp)
        keys = {(p.item, p.model) for p in pairs}
        human = {k: v for k, v in (await self._human_rows(experiment_id)).items() if k in keys}
        per_rater: dict[str, int] = {}
        for detail in human.values():
            for name in detail.get("ratings", {}):
                per_rater[name] = per_rater.get(name, 0) + 1
        result = RatingProgress(experiment_id=experiment_id, total=len(pairs), rated=len(human),
                                raters=[RaterProgress(rater=k, rated=v) for k, v in sorted(per_rater.items())],
                                candidates=await self._counts(experiment_id, "human"))
        notes = [f"{result.rated} of {result.total} pair(s) rated; "
                 + (", ".join(f"{r.rater}: {r.rated}" for r in result.raters) or "no ratings yet")]
        result.markdown = _counts_markdown(f"human ratings of experiment {experiment_id}", result.candidates, notes)
        return result


def _rater(rater: str) -> str:
    name = (rater or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("rater must be a name or email of 1 to 100 characters (ratings are stored per rater)")
    return name


def _counts_markdown(title: str, counts: Sequence[VerdictCounts], notes: Sequence[str]) -> str:
    lines = [f"**{title}**", "", "| model | role | evaluated | acceptable | degraded | unacceptable | tie | error |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c.model} | {c.role} | {c.evaluated} | {c.acceptable} | {c.degraded} | {c.unacceptable} | {c.tie} "
              f"| {c.error} |" for c in counts]
    if not counts:
        lines.append("| - | - | 0 | 0 | 0 | 0 | 0 | 0 |")
    return "\n".join([*lines, "", *(f"- {n}" for n in notes)]).rstrip()
