"""Import outcomes of an experiment someone else ran, and measure routing on them.

Two formats become experiments in the store (source `import`, evaluation method `imported`) that the
rest of the loop reads like any other:

- wide: a `prompt` column, one score column per model (True/False, 0/1, or numbers such as 1-10 judge
  scores), optional `<model>_response` columns, optional `category`; CSV or JSONL. One file (task type
  from the option or the file name, a trailing `_responses`/`_outcomes`/`_results`/`_scores` dropped)
  or a folder of such files whose names give the task types.
- mtbench: FastChat's `question.jsonl` + `judgements.jsonl` (single-answer grading, 1-10 per turn; the
  two turns are averaged); one experiment per category.

Each experiment's baseline is the strong model (`strong=`, default the model with the highest mean score
over the whole import), the other models are candidates. A candidate's item is `acceptable` when it is
as good as the baseline there: binary scores, candidate correct or both wrong; numeric scores, candidate
>= baseline - tolerance. Tokens are estimated at 4 characters a token; costs come from `--price`
overrides, else our catalog, else genai-prices' list prices; every result says which.

Re-importing is idempotent: an experiment's id is derived from its task type and source file name, and
importing the same file again replaces that experiment (items, outputs, evaluations) in one transaction.
An id held by an experiment that was not imported is refused. Files are read twice, streaming: once to
validate and find the strong model, once to write.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import anyio
from genai_prices import Usage, calc_price
from pydantic import BaseModel, Field

from mcp_prism.core import router_eval
from mcp_prism.core.catalog import Catalog, ModelSpec, ProviderSpec, snapshot_from_genai
from mcp_prism.core.pricing import PriceSnapshot, Rate, TokenUsage, compute_cost
from mcp_prism.core.stats import qualify
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.limits import clip

CHARS_PER_TOKEN = 4
CONFIDENCE = 0.95
CHUNK = 500  # rows per executemany
MAX_SHOWN_ERRORS = 10
WIDE_SUFFIXES = (".csv", ".jsonl", ".ndjson")
RESERVED = {"prompt", "category", "id", "question_id", "expected", "reference", "task_type"}
NAME_SUFFIX = re.compile(r"_(responses|outcomes|results|scores)$")
Format = Literal["wide", "mtbench"]
TRUE, FALSE = {"true", "yes", "t", "y"}, {"false", "no", "f", "n"}


# ==================================================================== result models
class ModelPrice(BaseModel):
    input_usd_per_mtok: Decimal | None
    output_usd_per_mtok: Decimal | None
    source: str = Field(description="--price override, catalog, genai-prices <provider>/<model>, or unpriced")


class ImportedExperiment(BaseModel):
    experiment_id: str
    task_type: str
    source_file: str
    items: int
    baseline: str
    candidates: list[str]
    skipped_rows: list[str] = Field(default_factory=list, description="file:line: why (with --skip-bad)")
    replaced: bool = Field(description="true when an earlier import of the same file was replaced")


class CandidateSummary(BaseModel):
    task_type: str
    experiment_id: str
    candidate: str
    baseline: str
    n: int
    acceptable: int
    rate: float
    lower_bound: float
    threshold: float
    qualified: bool
    samples_needed: int | None = Field(description="samples in all that would certify the threshold at this "
                                                   "rate (None: it cannot, or it already qualifies)")
    more_needed: int | None
    verdict: str
    candidate_mean_score: float | None
    baseline_mean_score: float | None
    candidate_cost_usd: Decimal | None
    baseline_cost_usd: Decimal | None


class RoutingSummary(BaseModel):
    rule: str
    routed: dict[str, str] = Field(description="task type -> model this routing sends it to")
    quality_kept: float | None = Field(description="mean score routed / mean score all on the strong model")
    cost_share: float | None = Field(description="cost routed / cost all on the strong model")


class ImportResult(BaseModel):
    path: str
    format: Format
    scale: Literal["binary", "numeric"]
    acceptance_rule: str
    threshold: float
    confidence: float
    strong: str
    strong_chosen_by: str
    experiments: list[ImportedExperiment]
    prices: dict[str, ModelPrice]
    summaries: list[CandidateSummary]
    routing: RoutingSummary = Field(description="qualified task types to their cheapest qualified candidate")
    routing_point_estimate: RoutingSummary = Field(
        description="NOT certified: task types whose observed rate alone reaches the threshold")
    notes: list[str]


class CurvePointOut(BaseModel):
    strong_share: float
    quality: float
    pgr: float
    cost_usd: Decimal | None


class SeedOut(BaseModel):
    seed: int
    quality_kept: float | None = Field(description="routed mean quality / always-strong mean quality, held out")
    cost_cut: float | None = Field(description="1 - routed cost / always-strong cost, held out")
    strong_share: float = Field(description="share of calls sent to the strong model")
    apgr: float | None
    labelings: dict[str, int] = Field(description="labeling chosen by inner cross-validation, per outer fold: "
                                                  "ok = weak as good as strong, gap = strong-minus-weak, 3 classes")
    labeling_cv_apgr: dict[str, float] = Field(description="per labeling: inner cross-validation APGR on the "
                                                           "training folds (how the labeling was chosen)")


class Range(BaseModel):
    mean: float
    min: float
    max: float


class OutOfSampleOut(BaseModel):
    features: str = Field(description="text-only, or text+category")
    method: str
    seeds: list[SeedOut]
    quality_kept: Range | None
    cost_cut: Range | None
    strong_share: Range | None
    apgr: Range | None
    seeds_meeting_target: int
    labeling_cv_apgr: dict[str, float] = Field(description="per labeling: inner-CV APGR, mean over seeds and folds")


class RouterEvalResult(BaseModel):
    dataset: str
    format: Format
    strong: str
    weak: str
    method: str
    n: int
    n_test: int
    label_rule: str
    weak_ok_rate: float = Field(description="share of test prompts where the weak model is as good")
    q_weak: float
    q_strong: float
    apgr: float
    apgr_random: float
    apgr_oracle: float
    cpt_50: float | None
    cpt_80: float | None
    cpt_95: float | None
    strong_share_at_95_quality: float | None
    cost_cut_at_95_quality: float | None = Field(description="1 - cost/cost(always strong) at 95% quality")
    cost_all_strong_usd: Decimal | None
    cost_at_95_quality_usd: Decimal | None
    points: list[CurvePointOut] = Field(description="the curve at strong-call shares 0, 0.1, ..., 1")
    tolerance: float = Field(description="numeric scores: the weak model counts as good as the strong one within "
                                         "this (labels only; quality is the mean score)")
    target: float = Field(description="share of the strong model's mean quality the thresholds aim at")
    out_of_sample: list[OutOfSampleOut] = Field(
        description="the honest figures: thresholds chosen on training folds, quality and cost measured on "
                    "held-out prompts; text-only, and with the category as a feature when the data has one")
    duplicates: int = Field(description="prompts repeating another's text (case/space folded); each duplicate "
                                        "group stays on one side of every split")
    prompt_only_costs: bool = Field(description="true when a model has no answers in the data: its cost counts "
                                                "the prompt only")
    published: str | None
    prices: dict[str, ModelPrice]
    notes: list[str]


# ==================================================================== prices
class PriceBook:
    """Per-model prices: overrides, then the catalog, then genai-prices. Each is a `PriceSnapshot`, and costs
    are computed per request by `core/pricing.compute_cost`, so tiered models (a higher rate above 200k input
    tokens) are priced at the rate each request's own size reaches, exactly as the gateway prices them."""

    def __init__(self, overrides: dict[str, tuple[Decimal, Decimal]], catalog: Catalog | None = None) -> None:
        self.overrides, self.catalog = overrides, catalog
        self._cache: dict[str, tuple[ModelPrice, PriceSnapshot | None]] = {}

    def price(self, model: str) -> ModelPrice:
        return self._entry(model)[0]

    def _entry(self, model: str) -> tuple[ModelPrice, PriceSnapshot | None]:
        if model not in self._cache:
            snap, source = self._lookup(model)
            shown = ModelPrice(input_usd_per_mtok=snap.input.base if snap else None,  # list price, below any tier
                               output_usd_per_mtok=snap.output.base if snap else None, source=source)
            self._cache[model] = (shown, snap)
        return self._cache[model]

    def _lookup(self, model: str) -> tuple[PriceSnapshot | None, str]:
        if model in self.overrides:
            pin, pout = self.overrides[model]
            return PriceSnapshot(input=Rate(pin), output=Rate(pout), source="--price override"), "--price override"
        if self.catalog is not None:
            try:
                spec: ModelSpec | None = self.catalog.resolve(model)
            except UnknownName:
                spec = None
            if spec is not None and not spec.discovered:  # an unlisted name: priced and named by genai-prices below
                snap = self.catalog.prices_at(spec.name)
                if snap is not None:
                    return snap, f"catalog {spec.name}"
        for ref, provider in _genai_candidates(model):
            try:
                calc = calc_price(Usage(input_tokens=1, output_tokens=1), ref, provider_id=provider)
            except (LookupError, ValueError):
                continue
            snap = snapshot_from_genai(calc.model.get_prices(datetime.now(tz=UTC)),
                                       ProviderSpec(calc.provider.id, "openai"), calc.provider.id)
            return snap, f"genai-prices {calc.provider.id}/{calc.model.id}"
        return None, "unpriced"

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> Decimal | None:
        """The cost of one request of this size (None when the model is unpriced)."""
        snap = self._entry(model)[1]
        if snap is None:
            return None
        return compute_cost(TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens), snap)


def _genai_candidates(model: str) -> list[tuple[str, str | None]]:
    """Ids to try in genai-prices, the model's own provider first: `org/Name-Instruct-v0.1` is tried
    as the org's provider's `name-instruct-v0.1` and `name`, then as-is at hosts that list hub names."""
    out: list[tuple[str, str | None]] = [(model, None)]
    if "/" in model:
        org, base = model.split("/", 1)
        provider = re.sub(r"(-?ai)$", "", org.lower())
        base = base.lower()
        out += [(base, provider), (re.sub(r"-instruct(-v[\d.]+)?$", "", base), provider)]
        out += [(model, host) for host in ("together", "fireworks", "deepinfra")]
    return out


def parse_price(text: str) -> tuple[str, tuple[Decimal, Decimal]]:
    """`MODEL=IN,OUT` in USD per million tokens."""
    model, sep, rest = text.rpartition("=")
    parts = rest.split(",")
    try:
        if not sep or not model or len(parts) != 2:
            raise InvalidOperation
        pin, pout = Decimal(parts[0]), Decimal(parts[1])
        if pin < 0 or pout < 0 or not (pin.is_finite() and pout.is_finite()):
            raise InvalidOperation
    except InvalidOperation:
        raise InvalidInput(f"bad price {text!r}: write MODEL=IN,OUT in USD per million tokens, like "
                           "gpt-4-1106-preview=10,30") from None
    return model.strip(), (pin, pout)


# ==================================================================== reading outcomes
@dataclass(slots=True)
class Row:
    """One prompt with every model's score, answer and estimated tokens."""

    where: str  # file:line, for messages
    prompt: str  # as stored in experiment_items.prompt (text, or JSON for multi-turn)
    text: str  # the prompt text the router reads
    scores: dict[str, float]
    responses: dict[str, str | None]
    input_chars: dict[str, int]  # per model: a multi-turn conversation re-sends that model's own answers
    category: str | None = None
    expected: str | None = None


@dataclass(slots=True)
class Source:
    """One future experiment: a task type and a re-readable stream of rows."""

    task_type: str
    label: str  # the source file's name (with the task type, the experiment's identity)
    path: Path
    read: Callable[[], Iterator[Row | str]]  # yields rows, or "file:line: problem" for bad ones
    models: list[str] = field(default_factory=list)


def score_value(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"score {clip(value, 40)} is not a finite number")
        return float(value)
    text = str(value).strip().lower()
    if text in TRUE:
        return 1.0
    if text in FALSE:
        return 0.0
    if not text:
        raise ValueError("empty score")
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"score {clip(value, 40)} is neither True/False nor a number") from None
    if not math.isfinite(v):
        raise ValueError(f"score {clip(value, 40)} is not a finite number")
    return v


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A file that is not text, not CSV or not readable becomes a clear error (naming no content)."""
    try:
        yield
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name} is not UTF-8 text: outcome files are .csv or .jsonl text") from None
    except csv.Error as e:
        raise InvalidInput(f"{path.name} is not a readable CSV file ({e})") from None
    except OSError as e:
        raise InvalidInput(f"cannot read {path.name}: {e.strerror or type(e).__name__}") from None


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, record) per data row, or (line, problem) when a line cannot be read as a record."""
    with _reading(path):
        yield from _raw_records(path)


def _raw_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            for rec in reader:
                if None in rec:
                    yield reader.line_num, "more cells than the header has columns"
                    continue
                yield reader.line_num, rec
    elif suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8-sig") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, f"not JSON ({e.msg})"
                    continue
                yield n, rec if isinstance(rec, dict) else "not a JSON object"
    else:
        raise InvalidInput(f"unknown format of {path.name}: wide outcome files are .csv or .jsonl (one JSON "
                           "object a line); for MT-Bench pass the folder holding question.jsonl and "
                           "judgements.jsonl with --format mtbench")


def _columns(path: Path) -> list[str]:
    """The header of a CSV, or the keys of a JSONL file's first object."""
    if path.suffix.lower() == ".csv":
        with _reading(path), path.open(newline="", encoding="utf-8-sig") as f:
            return next(csv.reader(f), [])
    for _, rec in _records(path):
        if isinstance(rec, dict):
            return list(rec)
    return []


def wide_source(path: Path, task_type: str | None) -> Source:
    cols = _columns(path)
    if "prompt" not in cols:
        # the header is not quoted back: errors never carry a file's content (the path may not be an outcome file)
        raise InvalidInput(f"{path.name}: no 'prompt' column (the header has {len(cols)} columns); a wide "
                           "outcome file needs a prompt column and one score column per model")
    responses = {c[: -len("_response")] for c in cols if c.endswith("_response")}
    models = [c for c in cols if c not in RESERVED and not c.endswith("_response")]
    if not models:
        raise InvalidInput(f"{path.name}: no score columns; add one column per model holding its score "
                           "(True/False or a number), named after the model")
    if len(models) < 2:
        raise InvalidInput(f"{path.name}: only one score column; comparing needs at least two models")
    task = task_type or NAME_SUFFIX.sub("", path.stem)

    def read() -> Iterator[Row | str]:
        for line, rec in _records(path):
            where = f"{path.name}:{line}"
            if isinstance(rec, str):
                yield f"{where}: {rec}"
                continue
            prompt = rec.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                yield f"{where}: empty or missing prompt"
                continue
            scores: dict[str, float] = {}
            problem = None
            for m in models:
                try:
                    scores[m] = score_value(rec.get(m, ""))
                except ValueError as e:
                    problem = f"{where}: column {m}: {e}"
                    break
            if problem:
                yield problem
                continue
            answers = {m: _text(rec.get(f"{m}_response")) if m in responses else None for m in models}
            yield Row(where, prompt, prompt, scores, answers, {m: len(prompt) for m in models},
                      _text(rec.get("category")), _text(rec.get("expected")))

    return Source(_slug(task), path.name, path, read, models)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9_.-]+", "_", name.strip().lower()).strip("_")
    if not slug:
        raise InvalidInput(f"cannot make a task type of {name!r}; give one with --task-type")
    return slug


_ANSWER_1 = re.compile(r"\[The Start of Assistant's Answer\]\n(.*?)\n\[The End of Assistant's Answer\]", re.S)
_ANSWER_N = re.compile(r"### Assistant A:\n(.*?)(?=\n\n### User:|\n\n<\|The End of Assistant A's Conversation)", re.S)


def mtbench_sources(folder: Path) -> list[Source]:
    """One source per MT-Bench category; a question is a row, its score per model the mean of its two turns."""
    qpath, jpath = folder / "question.jsonl", folder / "judgements.jsonl"
    for p in (qpath, jpath):
        if not p.is_file():
            raise InvalidInput(f"MT-Bench needs {p.name} in {folder} (FastChat's question.jsonl and "
                               "judgements.jsonl from single-answer grading)")
    questions: dict[int, tuple[int, dict[str, Any]]] = {}
    problems: list[str] = []
    for line, rec in _records(qpath):
        if isinstance(rec, str) or not isinstance(rec.get("turns"), list) or "question_id" not in rec:
            problems.append(f"{qpath.name}:{line}: {rec if isinstance(rec, str) else 'needs question_id and turns'}")
            continue
        questions[rec["question_id"]] = (line, rec)
    # (question, model) -> turn -> (score, answer, where)
    judged: dict[tuple[Any, str], dict[int, tuple[float, str | None]]] = defaultdict(dict)
    models: list[str] = []
    for line, rec in _records(jpath):
        where = f"{jpath.name}:{line}"
        if isinstance(rec, str):
            problems.append(f"{where}: {rec}")
            continue
        try:
            qid, model, turn = rec["question_id"], str(rec["model"]), int(rec["turn"])
            score = score_value(rec["score"])
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{where}: needs question_id, model, turn and a numeric score ({e})")
            continue
        if score < 0:  # FastChat writes -1 when the judge's answer held no rating
            problems.append(f"{where}: the judge gave no rating (score {score:g})")
            continue
        if qid not in questions:
            problems.append(f"{where}: question {qid} is not in {qpath.name}")
            continue
        if model not in models:
            models.append(model)
        prompt_text = str(rec.get("user_prompt", ""))
        found = (_ANSWER_1.findall(prompt_text) if turn == 1 else _ANSWER_N.findall(prompt_text)) or [None]
        judged[(qid, model)][turn] = (score, found[-1])
    if len(models) < 2:
        raise InvalidInput(f"{jpath.name}: judgements of at least two models are needed, found {models or 'none'}")
    by_category: dict[str, list[Row | str]] = defaultdict(list)
    for qid, (line, q) in questions.items():
        where = f"{qpath.name}:{line}"
        turns = [str(t) for t in q["turns"]]
        category = _slug(str(q.get("category") or "uncategorised"))
        scores, answers, chars = {}, {}, {}
        missing = [m for m in models if set(judged[(qid, m)]) != set(range(1, len(turns) + 1))]
        if missing:
            by_category[category].append(f"{where}: question {qid} lacks a judgement of every turn for "
                                         f"{', '.join(missing)}")
            continue
        for m in models:
            got = judged[(qid, m)]
            scores[m] = sum(s for s, _ in got.values()) / len(got)
            said = [got[t][1] or "" for t in sorted(got)]
            answers[m] = "\n\n".join(said) if any(said) else None
            # Turn k re-sends the earlier turns and this model's earlier answers.
            chars[m] = sum(len(t) for t in turns) + sum(len(turns[i]) + len(said[i]) for i in range(len(turns) - 1))
        stored = json.dumps({"messages": [{"role": "user", "content": turns[0]}], "turns": turns}, ensure_ascii=False)
        # The router reads turn 1 only: turn 2 is not known when the conversation's first call is routed.
        by_category[category].append(Row(where, stored, turns[0], scores, answers, chars, category,
                                         _text(q.get("reference") and json.dumps(q["reference"]))))
    if problems:
        by_category.setdefault("", []).extend(problems)  # reported with the rest; "" is never imported
    return [Source(cat, "mt-bench", qpath, lambda rows=rows: iter(rows), list(models))
            for cat, rows in sorted(by_category.items())]


def _readable(svc: Any, path: str | Path) -> Path:
    """The path, confined to the service's file roots when a remote (MCP) caller named it."""
    readable = getattr(svc, "readable_path", None)
    return readable(path) if readable else Path(path).expanduser()


def detect_format(path: Path) -> Format:
    if path.is_dir() and (path / "question.jsonl").is_file() and (path / "judgements.jsonl").is_file():
        return "mtbench"
    return "wide"


def open_sources(path: Path, fmt: Format | None, task_type: str | None) -> tuple[Format, list[Source]]:
    if not path.exists():
        raise InvalidInput(f"{path} does not exist; give an outcome file (.csv/.jsonl) or a folder of them")
    if fmt not in (None, "wide", "mtbench"):
        raise InvalidInput(f"unknown format {fmt!r}: use wide or mtbench")
    fmt = fmt or detect_format(path)
    if fmt == "mtbench":
        if task_type:
            raise InvalidInput("--task-type does not apply to MT-Bench: its categories are the task types")
        folder = path if path.is_dir() else path.parent
        return fmt, mtbench_sources(folder)
    if path.is_dir():
        if task_type:
            raise InvalidInput("--task-type applies to one file; in a folder, each file's name is its task type")
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in WIDE_SUFFIXES)
        if not files:
            raise InvalidInput(f"{path} holds no .csv or .jsonl outcome files")
        sources = [wide_source(p, None) for p in files]
        seen: dict[str, str] = {}
        for s in sources:
            if s.task_type in seen:
                raise InvalidInput(f"{seen[s.task_type]} and {s.label} both give task type {s.task_type}; "
                                   "rename one or import them one at a time with --task-type")
            seen[s.task_type] = s.label
        return fmt, sources
    return fmt, [wide_source(path, task_type)]


@dataclass(slots=True)
class Scan:
    """What the validating pass learned."""

    bad: list[str] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    binary: bool = True
    rows: int = 0
    valid: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # task type -> valid rows


def scan(sources: Sequence[Source]) -> Scan:
    out = Scan()
    for s in sources:
        for row in s.read():
            if isinstance(row, str):
                out.bad.append(row)
                continue
            out.rows += 1
            out.valid[s.task_type] += 1
            for m, v in row.scores.items():
                out.sums[m] += v
                out.counts[m] += 1
                if v not in (0.0, 1.0):
                    out.binary = False
    return out


def _check_bad(sc: Scan, skip_bad: bool) -> None:
    if sc.bad and not skip_bad:
        shown = "\n".join(f"  {b}" for b in sc.bad[:MAX_SHOWN_ERRORS])
        more = f"\n  ... and {len(sc.bad) - MAX_SHOWN_ERRORS} more" if len(sc.bad) > MAX_SHOWN_ERRORS else ""
        raise InvalidInput(f"{len(sc.bad)} bad row(s), nothing was imported:\n{shown}{more}\n"
                           "fix them, or pass --skip-bad (skip_bad=true) to import the rest and list the skipped rows")
    if sc.rows == 0:
        raise InvalidInput("no valid rows to import")


def _choose_strong(sc: Scan, strong: str | None) -> tuple[str, str]:
    means = {m: sc.sums[m] / sc.counts[m] for m in sc.counts if sc.counts[m]}
    if strong:
        if strong not in means:
            raise UnknownName("model in this data", strong, list(means))
        return strong, "given"
    best = max(means, key=lambda m: (means[m], m))
    shown = ", ".join(f"{m} {v:.3f}" for m, v in sorted(means.items(), key=lambda kv: -kv[1]))
    return best, f"highest mean score over the import ({shown})"


def acceptance_rule(binary: bool, tolerance: float) -> str:
    if binary:
        return ("binary scores: acceptable when the candidate is as good as the baseline (candidate correct, "
                "or both wrong)")
    return (f"numeric scores: acceptable when candidate score >= baseline score - {tolerance:g}"
            + (" (MT-Bench: the mean of the two turns' 1-10 judge scores)" if tolerance == 0 else ""))


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def experiment_id(task_type: str, label: str) -> str:
    return f"import-{task_type}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


# ==================================================================== import
async def import_outcomes(svc: Any, path: str | Path, *, fmt: Format | None = None, task_type: str | None = None,
                          strong: str | None = None, threshold: float = 0.90, tolerance: float = 0.0,
                          skip_bad: bool = False, prices: Sequence[str] = ()) -> ImportResult:
    """Import outcome files as experiments and summarise: which task types the cheaper models qualify for."""
    if not 0 < threshold < 1:
        raise InvalidInput(f"threshold must be between 0 and 1 (like 0.9), got {threshold}")
    if tolerance < 0:
        raise InvalidInput(f"tolerance must be >= 0, got {tolerance}")
    book = PriceBook(dict(parse_price(p) for p in prices), svc.catalog)
    p = _readable(svc, path)
    fmt, sources = open_sources(p, fmt, task_type)
    sc = await anyio.to_thread.run_sync(scan, sources)
    _check_bad(sc, skip_bad)
    strong, chosen_by = _choose_strong(sc, strong)
    rule = acceptance_rule(sc.binary, tolerance)
    tol = 0.0 if sc.binary else tolerance
    notes: list[str] = []
    if sc.binary and tolerance:
        notes.append("the tolerance does not apply to binary scores and was ignored")
    experiments = []
    for s in sources:
        if not s.task_type:
            continue
        if not sc.valid[s.task_type]:
            notes.append(f"task type {s.task_type}: every row was bad, so it was not imported")
            continue
        experiments.append(await _write(svc.store, s, strong, rule, tol, threshold, book, sc.binary, p))
    models = sorted({m for s in sources for m in s.models})
    price_info = {m: book.price(m) for m in models}
    for m, info in price_info.items():
        if info.source == "unpriced":
            notes.append(f"{m} has no known price: pass --price {m}=IN,OUT (USD per million tokens); its costs "
                         "are left out")
    named = {m for e in experiments for m in [e.baseline, *e.candidates]}
    silent = sorted(named - await _answered(svc.store, experiments))
    if silent:
        notes.append(f"WARNING: no answers for {', '.join(silent)}: output tokens unknown, their costs count the "
                     "prompt only")
    notes.append(f"tokens estimated at {CHARS_PER_TOKEN} characters a token from prompts and answers; "
                 "costs at list prices (sources in `prices`)")
    summaries = await summarise(svc.store, [e.experiment_id for e in experiments], threshold)
    if any(s.n < 60 for s in summaries):
        notes.append("task types with fewer than 60 items cannot certify 90% even with no failures at 95% "
                     "confidence (Clopper-Pearson); see samples_needed")
    certified = routing_summary(summaries, strong, lambda s: s.qualified,
                                "qualified task types go to their cheapest qualified candidate, the rest to "
                                f"{strong}")
    point = routing_summary(summaries, strong, lambda s: s.rate >= threshold,
                            f"NOT certified: task types whose observed acceptance rate alone is >= {threshold:.0%}")
    return ImportResult(path=str(p), format=fmt, scale="binary" if sc.binary else "numeric", acceptance_rule=rule,
                        threshold=threshold, confidence=CONFIDENCE, strong=strong, strong_chosen_by=chosen_by,
                        experiments=experiments, prices=price_info, summaries=summaries, routing=certified,
                        routing_point_estimate=point, notes=notes)


async def _answered(store: Any, experiments: Sequence[ImportedExperiment]) -> set[str]:
    """Models with at least one stored answer in these experiments."""
    ids = [e.experiment_id for e in experiments]
    rows = await store.fetch(f"SELECT DISTINCT model FROM experiment_outputs WHERE response IS NOT NULL AND "
                             f"experiment_id IN ({','.join('?' * len(ids))})", ids)
    return {r["model"] for r in rows}


async def _write(store: Any, s: Source, strong: str, rule: str, tol: float, threshold: float, book: PriceBook,
                 binary: bool, path: Path) -> ImportedExperiment:
    eid = experiment_id(s.task_type, s.label)
    if strong not in s.models:
        raise InvalidInput(f"{s.label}: has no scores of the strong model {strong} (its models: "
                           f"{', '.join(s.models)}); import it separately or pick --strong")
    candidates = [m for m in s.models if m != strong]
    now = iso(utcnow())
    evaluation = {"method": "imported", "threshold": threshold, "confidence": CONFIDENCE, "rule": rule,
                  "scale": "binary" if binary else "numeric", "tolerance": tol,
                  "prices": {m: book.price(m).model_dump(mode="json") for m in s.models}}
    notes = json.dumps({"imported_from": str(path), "file": s.label, "chars_per_token": CHARS_PER_TOKEN})
    skipped: list[str] = []

    async def work(conn: Any) -> bool:
        old = await conn.execute_fetchall("SELECT source FROM experiments WHERE id = ?", (eid,))
        if old and old[0][0] != "import":
            raise InvalidInput(f"experiment {eid} exists and was not imported; nothing was written")
        for table in ("evaluations", "experiment_outputs", "experiment_items"):
            await conn.execute(f"DELETE FROM {table} WHERE experiment_id = ?", (eid,))
        await conn.execute("DELETE FROM experiments WHERE id = ?", (eid,))
        await conn.execute(
            "INSERT INTO experiments (id, task_type, baseline_model, candidates, evaluation, status, source, "
            "created_at, updated_at, notes) VALUES (?, ?, ?, ?, ?, 'evaluated', 'import', ?, ?, ?)",
            (eid, s.task_type, strong, json.dumps(candidates), json.dumps(evaluation), now, now, notes))
        items: list[tuple[Any, ...]] = []
        outputs: list[tuple[Any, ...]] = []
        evals: list[tuple[Any, ...]] = []
        n = 0
        for row in s.read():
            if isinstance(row, str):
                skipped.append(row)
                continue
            items.append((eid, n, row.prompt, row.expected, None, row.category or s.task_type))
            for m in s.models:
                answer = row.responses.get(m)
                tin, tout = _tokens(row.input_chars[m]), _tokens(len(answer or ""))
                cost = book.cost(m, tin, tout)
                outputs.append((eid, n, m, "baseline" if m == strong else "candidate", answer, tin, tout,
                                None if cost is None else str(cost), row.scores[m], now))
            base = row.scores[strong]
            for m in candidates:
                cand = row.scores[m]
                detail = {"candidate_score": cand, "baseline_score": base, "as_good_as_baseline": cand >= base - tol,
                          "rule": rule, "where": row.where}
                if binary:
                    detail["candidate_correct"] = cand == 1.0
                    detail["baseline_correct"] = base == 1.0
                evals.append((eid, n, m, "acceptable" if cand >= base - tol else "unacceptable",
                              json.dumps(detail), f"import:{s.label}", now))
            n += 1
            if len(items) >= CHUNK:
                await _flush(conn, items, outputs, evals)
        await _flush(conn, items, outputs, evals)
        if n == 0:
            raise InvalidInput(f"{s.label}: no valid rows for task type {s.task_type}; nothing was written")
        return bool(old)

    skipped.clear()
    replaced = await store.transaction(work)
    count = (await store.fetch("SELECT COUNT(*) AS n FROM experiment_items WHERE experiment_id = ?", (eid,)))[0]["n"]
    return ImportedExperiment(experiment_id=eid, task_type=s.task_type, source_file=s.label, items=count,
                              baseline=strong, candidates=candidates, skipped_rows=skipped, replaced=replaced)


async def _flush(conn: Any, items: list[tuple[Any, ...]], outputs: list[tuple[Any, ...]],
                 evals: list[tuple[Any, ...]]) -> None:
    await conn.executemany("INSERT INTO experiment_items (experiment_id, item, prompt, expected, source_event_id, "
                           "category) VALUES (?, ?, ?, ?, ?, ?)", items)
    await conn.executemany(
        "INSERT INTO experiment_outputs (experiment_id, item, model, role, response, status, input_tokens, "
        "output_tokens, cost_usd, score, created_at) VALUES (?, ?, ?, ?, ?, 'ok', ?, ?, ?, ?, ?)", outputs)
    await conn.executemany("INSERT INTO evaluations (experiment_id, item, model, method, verdict, detail, evaluator, "
                           "created_at) VALUES (?, ?, ?, 'imported', ?, ?, ?, ?)", evals)
    items.clear()
    outputs.clear()
    evals.clear()


# ==================================================================== the loop on imported experiments
async def summarise(store: Any, experiment_ids: Sequence[str], threshold: float = 0.90) -> list[CandidateSummary]:
    """Per experiment and candidate: does it qualify (lower bound of the acceptance rate vs threshold), with
    mean scores and total costs of candidate and baseline, read back from the store."""
    out: list[CandidateSummary] = []
    for eid in experiment_ids:
        exp = await store.fetch("SELECT task_type, baseline_model, candidates FROM experiments WHERE id = ?", (eid,))
        if not exp:
            raise UnknownName("experiment", eid)
        task, baseline = exp[0]["task_type"], exp[0]["baseline_model"]
        stats: dict[str, list[Any]] = {}  # model -> [score sum, scored, cost sum, unpriced]
        for r in await store.fetch("SELECT model, score, cost_usd FROM experiment_outputs WHERE experiment_id = ?",
                                   (eid,)):
            st = stats.setdefault(r["model"], [0.0, 0, Decimal(0), 0])
            if r["score"] is not None:
                st[0] += r["score"]
                st[1] += 1
            if r["cost_usd"] is None:
                st[3] += 1
            else:
                st[2] += Decimal(r["cost_usd"])
        verdicts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in await store.fetch("SELECT model, verdict, COUNT(*) AS n FROM evaluations WHERE experiment_id = ? "
                                   "AND method = 'imported' GROUP BY model, verdict", (eid,)):
            verdicts[r["model"]][r["verdict"]] += r["n"]

        mean = {m: st[0] / st[1] for m, st in stats.items() if st[1]}
        cost = {m: st[2] for m, st in stats.items() if not st[3]}

        for cand in json.loads(exp[0]["candidates"]):
            v = verdicts[cand]
            n = sum(v.values())
            q = qualify(v["acceptable"], n, threshold, CONFIDENCE)
            out.append(CandidateSummary(
                task_type=task, experiment_id=eid, candidate=cand, baseline=baseline, n=n, acceptable=q.acceptable,
                rate=q.rate, lower_bound=q.lower_bound, threshold=threshold, qualified=q.qualified,
                samples_needed=q.samples_needed, more_needed=q.more_needed, verdict=q.summary(),
                candidate_mean_score=mean.get(cand), baseline_mean_score=mean.get(baseline),
                candidate_cost_usd=cost.get(cand), baseline_cost_usd=cost.get(baseline)))
    return out


def routing_summary(summaries: Sequence[CandidateSummary], strong: str, ok: Callable[[CandidateSummary], bool],
                    rule: str) -> RoutingSummary:
    """Send each task type to its cheapest candidate that passes `ok`, else the strong model; compare the
    mean score and cost with sending everything to the strong model (item-weighted)."""
    by_task: dict[str, list[CandidateSummary]] = defaultdict(list)
    for s in summaries:
        by_task[s.task_type].append(s)
    routed: dict[str, str] = {}
    q_routed = q_strong = 0.0
    c_routed: Decimal | None = Decimal(0)
    c_strong: Decimal | None = Decimal(0)
    for task, group in sorted(by_task.items()):
        base = group[0]
        passing = sorted((s for s in group if ok(s)),
                         key=lambda s: (s.candidate_cost_usd is None, s.candidate_cost_usd or 0, s.candidate))
        pick = passing[0] if passing else None
        routed[task] = pick.candidate if pick else strong
        base_mean = base.baseline_mean_score or 0.0
        q_strong += base_mean * base.n
        q_routed += ((pick.candidate_mean_score or 0.0) if pick else base_mean) * base.n
        picked_cost = pick.candidate_cost_usd if pick else base.baseline_cost_usd
        c_strong = None if c_strong is None or base.baseline_cost_usd is None else c_strong + base.baseline_cost_usd
        c_routed = None if c_routed is None or picked_cost is None else c_routed + picked_cost
    return RoutingSummary(rule=rule, routed=routed, quality_kept=q_routed / q_strong if q_strong else None,
                          cost_share=float(c_routed / c_strong) if c_routed is not None and c_strong else None)


# ==================================================================== learned per-request routing
def load_rows(sources: Sequence[Source], skip_bad: bool) -> tuple[list[tuple[str, Row]], Scan]:
    sc = scan(sources)
    _check_bad(sc, skip_bad)
    rows = [(s.task_type, r) for s in sources if s.task_type for r in s.read() if isinstance(r, Row)]
    return rows, sc


async def evaluate_router_file(svc: Any, path: str | Path, *, fmt: Format | None = None, task_type: str | None = None,
                               strong: str | None = None, weak: str | None = None, seed: int = 0,
                               train_share: float = 0.5, folds: int | None = None, tolerance: float = 0.0,
                               skip_bad: bool = False, prices: Sequence[str] = (), seeds: int = 5,
                               target: float = 0.95, margin_z: float = 1.0, outer_folds: int = 5,
                               inner_folds: int = 5) -> RouterEvalResult:
    """Learn a per-prompt strong/weak router from outcome data and measure it: thresholds chosen out of
    sample over `seeds` seeds (the headline), and the threshold-free curve (APGR, CPT) on a held-out split."""
    if not 1 <= seeds <= 50:
        raise InvalidInput(f"seeds must be from 1 to 50, got {seeds}")
    if not 0 < target <= 1:
        raise InvalidInput(f"target must be a share in (0, 1] of the strong model's quality, like 0.95; got {target}")
    if tolerance < 0 or margin_z < 0:
        raise InvalidInput("tolerance and margin must be >= 0")
    if not 2 <= outer_folds <= 20 or not 2 <= inner_folds <= 20:
        raise InvalidInput("outer and inner folds must be from 2 to 20")
    book = PriceBook(dict(parse_price(p) for p in prices), svc.catalog)
    p = _readable(svc, path)
    fmt, sources = open_sources(p, fmt, task_type)
    rows, sc = await anyio.to_thread.run_sync(load_rows, sources, skip_bad)
    strong, _ = _choose_strong(sc, strong)
    others = [m for m in sc.counts if m != strong]
    if weak is None:
        if len(others) != 1:
            raise InvalidInput(f"the data has {len(others)} models besides {strong} ({', '.join(others)}); "
                               "say which is the weak one with --weak")
        weak = others[0]
    elif weak not in others:
        raise UnknownName("weak model in this data", weak, others)
    tol = 0.0 if sc.binary else tolerance
    examples = []
    answered: set[str] = set()
    for _task, r in rows:
        if weak not in r.scores or strong not in r.scores:
            continue
        answered.update(m for m in (weak, strong) if r.responses.get(m))
        costs = [book.cost(m, _tokens(r.input_chars[m]), _tokens(len(r.responses.get(m) or "")))
                 for m in (weak, strong)]
        examples.append(router_eval.Example(r.text, r.scores[weak], r.scores[strong], costs[0], costs[1],
                                            r.category))
    notes: list[str] = []
    honest = len(examples) >= 2 * outer_folds * inner_folds
    if not honest:
        notes.append(f"WARNING: {len(examples)} prompts are too few to choose thresholds out of sample with "
                     f"{outer_folds} outer x {inner_folds} inner folds (needs {2 * outer_folds * inner_folds}): only "
                     "the curve is shown, and its cost cut is read off the data it is judged on")
    if folds is None and len(examples) < 200:
        folds = 5
        notes.append(f"only {len(examples)} prompts: the curve (APGR, CPT) is scored by 5-fold cross-validation; "
                     "treat the figures as indicative")
    silent = sorted({weak, strong} - answered)
    if silent:
        notes.append(f"WARNING: no answers for {', '.join(silent)} in the data: output tokens are unknown, so "
                     "costs count the prompt only and the cost cut is not what a real bill would show")
    if seeds < 5:
        notes.append(f"only {seeds} seed(s): quote figures over at least 5")
    grouped = any(e.group for e in examples)
    variants = [False, True] if grouped else [False]

    def run() -> tuple[router_eval.RouterEvaluation, list[router_eval.OutOfSample]]:
        ev = router_eval.evaluate_router(examples, seed=seed, train_share=train_share, folds=folds, tolerance=tol)
        oos = [router_eval.evaluate_out_of_sample(
            examples, seeds=range(seed, seed + seeds), target=target, tolerance=tol, use_group=g,
            outer_folds=outer_folds, inner_folds=inner_folds, margin_z=margin_z) for g in variants] if honest else []
        return ev, oos

    try:
        ev, oos = await anyio.to_thread.run_sync(run)
    except ValueError as e:
        raise InvalidInput(str(e)) from None
    c = ev.curve
    at95 = c.at_quality(0.95)
    if at95 is not None and at95.strong_share == 0:
        notes.append(f"the weak model alone already reaches 95% of the strong model's mean quality "
                     f"({c.q_weak:.3f} vs {c.q_strong:.3f}), so the 95% cost cut needs no router; read APGR/CPT")
    dataset = "mt-bench" if fmt == "mtbench" else ", ".join(sorted({s.task_type for s in sources}))
    published = next((v for k, v in router_eval.PUBLISHED.items() if k.replace("-", "") in dataset.replace("-", "")),
                     None)
    step = max(1, round(len(c.points) / 10))
    picked = sorted({*range(0, len(c.points), step), len(c.points) - 1})
    pts = [CurvePointOut(strong_share=c.points[i].strong_share, quality=c.points[i].quality, pgr=c.points[i].pgr,
                         cost_usd=c.points[i].cost) for i in picked]
    notes.append("router: sublinear TF-IDF of hashed word unigrams and bigrams plus prompt length and number "
                 "count (and the category in the text+category rows); labeling (weak as good as strong, or "
                 "strong-minus-weak in 3 classes) chosen per training set by inner cross-validation APGR")
    if fmt == "mtbench":
        notes.append("MT-Bench: routed on turn 1's text only (turn 2 is unknown when turn 1 is routed); the "
                     "conversation stays on the routed model, so its quality is the mean of both turns' scores")
    notes.append(f"thresholds: frozen on out-of-fold training scores at {target:.0%} of the strong model's "
                 f"quality" + (f" with a margin of {margin_z:g} standard error(s)" if margin_z else "")
                 + "; the curve's cost cut is read off the test curve (optimistic, like published figures)")
    return RouterEvalResult(
        dataset=dataset, format=fmt, strong=strong, weak=weak, method=ev.method, n=ev.n, n_test=ev.n_test,
        label_rule=acceptance_rule(sc.binary, tol), weak_ok_rate=ev.weak_ok_rate, q_weak=c.q_weak,
        q_strong=c.q_strong, apgr=ev.apgr, apgr_random=ev.apgr_random, apgr_oracle=ev.apgr_oracle,
        cpt_50=c.cpt(0.5), cpt_80=c.cpt(0.8), cpt_95=c.cpt(0.95),
        strong_share_at_95_quality=at95.strong_share if at95 else None, cost_cut_at_95_quality=c.cost_cut(at95),
        cost_all_strong_usd=c.points[-1].cost, cost_at_95_quality_usd=at95.cost if at95 else None, points=pts,
        published=published, prices={m: book.price(m) for m in (weak, strong)}, notes=notes, tolerance=tol,
        target=target, out_of_sample=[_oos_out(o) for o in oos],
        duplicates=len(examples) - len({router_eval.lr.normalised(e.text) for e in examples}),
        prompt_only_costs=bool(silent))


def _oos_out(o: router_eval.OutOfSample) -> OutOfSampleOut:
    def rng(name: str) -> Range | None:
        st = o.stat(name)
        return None if st is None else Range(mean=st[0], min=st[1], max=st[2])

    return OutOfSampleOut(
        features="text+category" if o.use_group else "text-only",
        method=(f"per seed, {o.outer_folds}-fold cross-fitting: each held-out fold is routed by a router trained "
                f"on the other folds, its labeling and threshold chosen by {o.inner_folds}-fold cross-validation "
                "on those folds only"),
        seeds=[SeedOut(seed=s.seed, quality_kept=s.quality_kept, cost_cut=s.cost_cut, strong_share=s.strong_share,
                       apgr=s.apgr, labelings=s.modes, labeling_cv_apgr=s.cv_apgr) for s in o.seeds],
        quality_kept=rng("quality_kept"), cost_cut=rng("cost_cut"), strong_share=rng("strong_share"),
        apgr=rng("apgr"), seeds_meeting_target=o.met_target,
        labeling_cv_apgr={m: sum(s.cv_apgr[m] for s in o.seeds if m in s.cv_apgr)
                          / max(1, sum(1 for s in o.seeds if m in s.cv_apgr))
                          for m in sorted({m for s in o.seeds for m in s.cv_apgr})})
