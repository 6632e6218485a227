"""Offline task classifier: which task type a developer request is, and how hard it looks.

Pure and deterministic: stdlib only, no I/O. The built-in task types are recognised by a small
learned linear model (`core/text_model.TextModel`: hashed word and character n-gram TF-IDF features,
multinomial logistic regression), trained by `tools/classifier/train.py` on a corpus of requests
written in many voices (terse, questions, code or logs first, typos, non-native English) and shipped
as `mcp_prism/data/classifier.bin`; the config layer reads the bytes and passes the model in.

How a request is decided
------------------------
1. Team-defined keywords (`TaskTypeSpec.keywords`) are literal, whole-word and case-insensitive: a
   team that names a keyword means it, so a type whose keyword appears wins (more distinct keywords
   beat fewer, ties go to the earlier spec).
2. Otherwise the model gives a probability per built-in type. The best type is chosen unless the
   model's best guess is "no type fits" (its `general` class) or the best type's probability is below
   `threshold` (by default the one chosen by cross-validation when the model was trained): then the
   classifier falls back to the default type and names the declined guess as `runner_up`.
3. A verdict whose probability is below the model's `uncertain_below` (also chosen by
   cross-validation: the band where out-of-fold predictions were right at most 80% of the time) is
   marked `uncertain`, so callers can say so and name the runner-up; an agent can then pass the
   task type itself.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from mcp_prism.core.human_text import strip_boilerplate
from mcp_prism.core.tasks import BUILTIN_TASK_TYPES, GENERAL, TaskTypeSpec
from mcp_prism.core.text_model import HEAD_CHARS, TAIL_CHARS, TextModel

__all__ = ["Classification", "Classifier", "Complexity", "assess_complexity"]

# Team keywords: confidence 1 - 0.5 ** (distinct keywords matched + 1): 0.75 for one, 0.875 for two.
MAX_EVIDENCE = 4  # words reported as evidence for the chosen type
_WORD = re.compile(r"[^\W\d_][\w'-]*")


@dataclass(frozen=True)
class Classification:
    """The verdict on one request.

    `task_type` is a spec name, or the default when unsure (`fell_back`). When the classifier
    falls back, `confidence` is that of the best candidate it declined and `runner_up` names
    that candidate, so a caller can still see the guess. Otherwise `runner_up` is the
    second-best type, or None. `uncertain` says the verdict is weak (a fallback with a guess, or a
    probability in the band where the model is often wrong): pass the task type explicitly then.
    """

    task_type: str
    confidence: float
    signals: tuple[str, ...]
    fell_back: bool
    runner_up: str | None
    uncertain: bool = False


@dataclass(frozen=True)
class Complexity:
    """How many tiers (0, 1 or 2) to raise a task's default tier, and why."""

    boost: int
    signals: tuple[str, ...]


def _wrap(pattern: str) -> str:
    return rf"(?<!\w)(?:{pattern})(?!\w)"


@dataclass(frozen=True)
class _KeywordType:
    name: str
    regex: re.Pattern[str]


_TRUNCATED = "long text: read head and tail only"


class Classifier:
    """Classify a request into one of `specs`, or fall back to `default`.

    `model` is required when `specs` include built-in types other than the default (load it with
    `mcp_prism.config.shipped_classifier_model()`); without one, only team keywords decide.
    `threshold` (0..1) overrides the model's fallback probability threshold.
    """

    def __init__(
        self,
        specs: Sequence[TaskTypeSpec] = BUILTIN_TASK_TYPES,
        *,
        model: TextModel | None = None,
        default: str = GENERAL,
        threshold: float | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate task type names: {', '.join(dupes)}")
        if default not in names:
            raise ValueError(f"default task type {default!r} is not among the specs: {', '.join(names)}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold!r}")
        learned = [s.name for s in specs if s.builtin and s.name not in (default, GENERAL)]
        if model is None and learned:
            raise ValueError("the built-in task types need the trained model: pass "
                             "model=mcp_prism.config.shipped_classifier_model()")
        self.default = default
        self.model = model
        self.threshold = threshold if threshold is not None else (model.threshold if model else 0.0)
        self.uncertain_below = model.uncertain_below if model else 0.0
        self.names: tuple[str, ...] = tuple(names)
        # The model's classes this spec set can return; its `general` class means "no type fits".
        self._learned = frozenset(learned) & frozenset(model.classes if model else ())
        keyword_types = []
        for spec in specs:
            words = sorted({k.strip().lower() for k in spec.keywords if k.strip()}, key=len, reverse=True)
            if spec.name != default and words:
                alternation = "|".join(re.escape(w) for w in words)
                keyword_types.append(_KeywordType(spec.name, re.compile(_wrap(alternation))))
        self._keyword_types: tuple[_KeywordType, ...] = tuple(keyword_types)

    def classify(self, text: str) -> Classification:
        if text and "<" in text:  # an agent's reminders and wrappers are not the request (core/human_text)
            text = strip_boilerplate(text)
        if not text or not text.strip():
            return Classification(self.default, 0.0, ("empty text",), True, None)
        truncated = len(text) > HEAD_CHARS + TAIL_CHARS
        extra = (_TRUNCATED,) if truncated else ()
        ranked = self._ranked(text)
        keyword = self._keyword_match(text, truncated)
        if keyword is not None:
            name, found = keyword
            confidence = 1.0 - 0.5 ** (len(found) + 1)
            runner_up = next((n for n, _ in ranked if n not in (name, GENERAL)), None)
            signals = tuple(f"team keyword {k!r} -> {name}" for k in found) + extra
            return Classification(name, round(confidence, 4), signals, False, runner_up)
        if not ranked:
            return Classification(self.default, 0.0, ("no task-type evidence", *extra), True, None)

        fits = ranked[0][0] != GENERAL
        candidates = [(n, p) for n, p in ranked if n != GENERAL]
        if not candidates:
            return Classification(self.default, 0.0, ("no task-type evidence", *extra), True, None)
        best, p_best = candidates[0]
        second = candidates[1] if len(candidates) > 1 else None
        signals = [f"model: {best} {p_best:.2f}" + (f", runner-up {second[0]} {second[1]:.2f}" if second else "")]
        evidence = self._evidence(text, best)
        if evidence:
            signals.append(f"words for {best}: " + ", ".join(evidence))
        signals.extend(extra)
        if not fits or p_best < self.threshold:
            why = ("no task type fits (model's best guess is none)" if not fits
                   else f"confidence {p_best:.2f} below threshold {self.threshold:.2f}")
            signals.append(f"{why}: fell back to {self.default}")
            return Classification(self.default, round(p_best, 4), tuple(signals), True, best, True)
        uncertain = p_best < self.uncertain_below
        if uncertain:
            signals.append(f"uncertain: {p_best:.2f} < {self.uncertain_below:.2f}"
                           + (f"; could be {second[0]}" if second else ""))
        return Classification(best, round(p_best, 4), tuple(signals), False, second[0] if second else None,
                              uncertain)

    # ---------------------------------------------------------------- parts
    def _ranked(self, text: str) -> list[tuple[str, float]]:
        """Model probabilities over the types this classifier may return (plus `general`), best first."""
        if self.model is None or not self._learned:
            return []
        allowed = self._learned | {GENERAL}
        ranked = [(n, p) for n, p in self.model.scores(text).ranked if n in allowed]
        total = sum(p for _, p in ranked) or 1.0
        return [(n, p / total) for n, p in ranked]

    def _keyword_match(self, text: str, truncated: bool) -> tuple[str, list[str]] | None:
        if not self._keyword_types:
            return None
        window = (text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]) if truncated else text
        window = window.lower()
        best: tuple[str, list[str]] | None = None
        for kt in self._keyword_types:
            found = sorted({m.group() for m in kt.regex.finditer(window)})
            if found and (best is None or len(found) > len(best[1])):
                best = (kt.name, found)
        return best

    def _evidence(self, text: str, name: str) -> list[str]:
        """The request's words whose own weight points most to `name` (for the signals only)."""
        model = self.model
        if model is None or name not in model.classes:
            return []
        c = model.classes.index(name)
        mask = model.buckets - 1
        seen: dict[str, float] = {}
        for word in _WORD.findall(text[:HEAD_CHARS].lower()):
            if word not in seen:
                seen[word] = model.weight(c, zlib.crc32(("w:" + word).encode("utf-8", "surrogatepass")) & mask)
        top = sorted(((v, k) for k, v in seen.items() if v > 0), reverse=True)[:MAX_EVIDENCE]
        return [repr(k) for _, k in top]


# --------------------------------------------------------------------------------------------
# Complexity

LONG_CONTEXT_TOKENS = 50_000
LONG_TEXT_CHARS = 200_000  # ~50k tokens at ~4 characters a token
MAX_BOOST = 2
MANY_FILES = 3  # distinct file names that make a request multi-file

_FILE_REF = re.compile(
    r"(?<![\w/.-])[\w./-]*[\w-]\.(?:py|pyi|ts|tsx|js|jsx|go|rs|java|kt|rb|php|cs|cpp|cc|c|h|hpp|swift|scala|"
    r"sql|ya?ml|toml|json|tf|proto|sh)(?![\w])",
    re.IGNORECASE,
)

_COMPLEXITY_GROUPS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "multi-file scope",
        re.compile(
            _wrap(
                r"across\s+(?:the\s+|all\s+|our\s+|several\s+|multiple\s+|many\s+|\d+\s+)?(?:codebase|repos?|"
                r"repositories|services|modules|files|packages|microservices|teams|stack)|"
                r"cross-(?:service|module|repo|team|cutting)|multi-(?:service|module|repo|file)|"
                r"(?:multiple|several|many|all\s+(?:the\s+|our\s+)?|every|(?:[2-9]|\d{2,})\s+)"
                r"(?:files|services|microservices|modules|repos|repositories|packages)|"
                r"(?:whole|entire)\s+(?:codebase|repo|repository|system|monorepo)|end-to-end\s+flow"
            ),
            re.IGNORECASE,
        ),
    ),
    (
        "concurrency",
        re.compile(
            _wrap(
                r"race\s+conditions?|data\s+races?|racy|deadlock\w*|livelock\w*|concurren\w+|thread-?safe\w*|"
                r"multi-?thread\w*|multiple\s+threads|mutex\w*|lock\s+contention|atomic(?:ity|ally)?|"
                r"goroutine\s+leak|memory\s+ordering|parallel\s+writes"
            ),
            re.IGNORECASE,
        ),
    ),
    (
        "production incident",
        re.compile(
            _wrap(
                r"(?:prod(?:uction)?|live)\s+(?:incident|outage|is\s+down|down)|incident|outage|"
                r"data\s+(?:loss|corruption)|lost\s+(?:customer\s+)?data|(?:security\s+)?breach\w*|"
                r"sev\s?-?[01]|p0|customers?\s+(?:are\s+)?(?:affected|impacted)|down\s+in\s+prod\w*"
            ),
            re.IGNORECASE,
        ),
    ),
)


def _names_many_files(window: str) -> bool:
    return len({m.group().lower() for m in _FILE_REF.finditer(window)}) >= MANY_FILES


def assess_complexity(text: str, context_tokens: int = 0) -> Complexity:
    """Raise the tier by one for each strong signal group present, at most `MAX_BOOST` (2).

    Groups, in the order reported: multi-file scope (wording such as "across services", or
    `MANY_FILES` distinct file names), concurrency, production incident, long context
    (`context_tokens >= LONG_CONTEXT_TOKENS` or a text of `LONG_TEXT_CHARS` or more). Only the person's
    words count: an agent's reminders ("...so they run concurrently.") must never upgrade a request.
    """
    text = strip_boilerplate(text) if text and "<" in text else text or ""
    window = text if len(text) <= HEAD_CHARS + TAIL_CHARS else text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]
    signals: list[str] = []
    for label, regex in _COMPLEXITY_GROUPS:
        if regex.search(window) or (label == "multi-file scope" and _names_many_files(window)):
            signals.append(label)
    if context_tokens >= LONG_CONTEXT_TOKENS or len(text) >= LONG_TEXT_CHARS:
        signals.append("long context")
    return Complexity(min(MAX_BOOST, len(signals)), tuple(signals))
