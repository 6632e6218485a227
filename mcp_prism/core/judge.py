"""Judging a candidate's answer against the baseline's: prompts, verdict parsing, combination rules.

Pure: no I/O. The LLM judge sees the two answers twice, in both orders, and is asked a symmetric
question (which is better, or are they as good as each other). Each order's verdict becomes the
candidate's relation to the baseline (better / equal / worse / unacceptable); the candidate counts as
acceptable only when both orders say it is at least as good. Orders that disagree are a `tie`: the
judge's position bias decided, not the answers (MT-Bench, Zheng et al. 2023), so it is reported and
never counted as acceptable.

Human raters get the same symmetric question, blind: see `blind_candidate_first` and `human_verdict`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

# What one judge call may answer, about the answers as shown (A first, B second).
OrderVerdict = Literal["A_BETTER", "B_BETTER", "EQUAL", "A_UNACCEPTABLE", "B_UNACCEPTABLE"]
ORDER_VERDICTS: tuple[OrderVerdict, ...] = ("A_BETTER", "B_BETTER", "EQUAL", "A_UNACCEPTABLE", "B_UNACCEPTABLE")
# The candidate compared with the baseline, in one order.
Relation = Literal["better", "equal", "worse", "unacceptable"]
# What is stored in evaluations.verdict.
Verdict = Literal["acceptable", "degraded", "unacceptable", "tie", "error"]
VERDICTS: tuple[str, ...] = ("acceptable", "degraded", "unacceptable", "tie", "error")

MAX_ANSWER_CHARS = 40_000  # per answer shown to a judge; longer ones are cut with a note
MAX_PROMPT_CHARS = 60_000

JUDGE_SYSTEM = """\
You are an impartial expert reviewer. You compare two answers to the same task and decide whether \
they are equally good for the person who asked, or which one is better.

Judge correctness first, then whether the answer does what was asked, then completeness and clarity. \
Do not prefer an answer because it is longer, more confident, or shown first: the order of the \
answers is random. Two answers that differ only in style or wording are EQUAL. An answer is \
UNACCEPTABLE when it is wrong, unsafe, does not do the task, or would mislead the person.

Reason briefly, then end your reply with exactly one line of the form
VERDICT: <one of A_BETTER, B_BETTER, EQUAL, A_UNACCEPTABLE, B_UNACCEPTABLE>
- A_BETTER: answer A is clearly better than answer B (B is still usable)
- B_BETTER: answer B is clearly better than answer A (A is still usable)
- EQUAL: B is as good as A for this task, and A as good as B (both may be imperfect)
- A_UNACCEPTABLE: answer A is unacceptable and answer B is better
- B_UNACCEPTABLE: answer B is unacceptable and answer A is better"""


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[... cut: {len(text) - limit:,} more characters not shown]"


def judge_messages(task_type: str, task_description: str | None, prompt: str, answer_a: str, answer_b: str,
                   reference: str | None = None) -> tuple[str, str]:
    """(system, user) text of one judge call: the task, optionally a reference answer, answers A and B."""
    task = f"Task type: {task_type}" + (f" ({task_description})" if task_description else "")
    parts = [
        task,
        "Is answer B as good as answer A for this task? Compare them as the instructions say.",
        f"<task_prompt>\n{_cut(prompt, MAX_PROMPT_CHARS)}\n</task_prompt>",
    ]
    if reference:
        parts.append("A reference answer (correct, but other wordings or approaches can be equally good):\n"
                     f"<reference_answer>\n{_cut(reference, MAX_ANSWER_CHARS)}\n</reference_answer>")
    parts += [
        f"<answer_a>\n{_cut(answer_a, MAX_ANSWER_CHARS)}\n</answer_a>",
        f"<answer_b>\n{_cut(answer_b, MAX_ANSWER_CHARS)}\n</answer_b>",
        "Reason briefly, then end with the line VERDICT: A_BETTER, B_BETTER, EQUAL, A_UNACCEPTABLE or "
        "B_UNACCEPTABLE.",
    ]
    return JUDGE_SYSTEM, "\n\n".join(parts)


# ---------------------------------------------------------------- verdict parsing
_STRIP = re.compile(r"[*`\"'\[\](){}#|~]")
_SEP = re.compile(r"[^A-Z0-9<>=]+")
_END = r"(?:_|$)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(?:ANSWER_)?([AB])_(?:IS_)?(?:UNACCEPTABLE|UNUSABLE)" + _END), "{}_UNACCEPTABLE"),
    (re.compile(r"^(?:ANSWER_)?([AB])_(?:IS_)?BETTER" + _END), "{}_BETTER"),
    (re.compile(r"^([AB])_?>_?[AB]" + _END), "{}_BETTER"),
    (re.compile(r"^(?:EQUAL|EQUALLY_GOOD|TIE|TIED|SAME|THE_SAME|C|A_?=_?B|B_?=_?A|AS_GOOD|BOTH_EQUAL)" + _END),
     "EQUAL"),
    (re.compile(r"^(?:ANSWER_)?A_AND_(?:ANSWER_)?B_ARE_(?:EQUAL|EQUALLY_GOOD|THE_SAME|TIED|AS_GOOD)" + _END),
     "EQUAL"),
    (re.compile(r"^(?:ANSWER_)?([AB])$"), "{}_BETTER"),
)
_MARKER = re.compile(r"verdict\s*[*_`]*\s*(?:is)?\s*[:=\-\u2013\u2014]?[ \t]*([^\n]*)", re.IGNORECASE)
_DOUBLE_BRACKETS = re.compile(r"\[\[\s*([^\[\]\n]{1,40}?)\s*\]\]")
_JSON_VERDICT = re.compile(r'"verdict"\s*:\s*"([^"\n]{1,40})"', re.IGNORECASE)


def _phrase(text: str) -> str:
    return _SEP.sub("_", _STRIP.sub(" ", text).upper()).strip("_")


def _match(phrase: str, *, whole: bool) -> str | None:
    for pattern, out in _PATTERNS:
        m = pattern.match(phrase)
        if m and (not whole or m.end() == len(phrase) or phrase[m.end():] == ""):
            return out.format(*m.groups()) if m.groups() else out
    return None


def parse_verdict(text: str | None) -> OrderVerdict | None:
    """The judge's verdict from its reply, or None when there is no clear one.

    Accepted, latest first: a `VERDICT: X` line (any case, markdown, separators: `**Verdict:** b better`),
    MT-Bench's `[[A]]` / `[[B]]` / `[[C]]`, a JSON `"verdict": "X"`, or a last line that is only a verdict."""
    if not text:
        return None
    for m in reversed(list(_MARKER.finditer(text))):
        found = _match(_phrase(m.group(1)), whole=False)
        if found:
            return found  # type: ignore[return-value]
    for finder in (_DOUBLE_BRACKETS, _JSON_VERDICT):
        for m in reversed(list(finder.finditer(text))):
            found = _match(_phrase(m.group(1)), whole=True)
            if found:
                return found  # type: ignore[return-value]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        last = _phrase(lines[-1])
        found = _match(last, whole=True) if last and len(last) <= 30 else None
        if found:
            return found  # type: ignore[return-value]
    return None


# ---------------------------------------------------------------- order-swap combination
def relation(verdict: OrderVerdict, candidate_is: Literal["A", "B"]) -> Relation:
    """The candidate compared with the baseline, from one order's verdict."""
    other = "B" if candidate_is == "A" else "A"
    if verdict == "EQUAL":
        return "equal"
    if verdict == f"{candidate_is}_BETTER" or verdict == f"{other}_UNACCEPTABLE":
        return "better"
    if verdict == f"{other}_BETTER":
        return "worse"
    return "unacceptable"


@dataclass(frozen=True, slots=True)
class Combined:
    verdict: Verdict
    reason: str
    # "first" / "second": both orders strictly favoured the answer in that position, whichever it was.
    position_preference: str | None = None


_GOOD = ("better", "equal")
_BAD = ("worse", "unacceptable")


def combine(baseline_first: Relation, candidate_first: Relation) -> Combined:
    """The candidate's verdict from both orders (A=baseline first, then A=candidate).

    acceptable: both orders say the candidate is at least as good; degraded: both say worse;
    unacceptable: both say worse and at least one calls the candidate unacceptable; otherwise tie."""
    if baseline_first in _GOOD and candidate_first in _GOOD:
        return Combined("acceptable", "both orders: the candidate is at least as good as the baseline")
    if baseline_first in _BAD and candidate_first in _BAD:
        if "unacceptable" in (baseline_first, candidate_first):
            return Combined("unacceptable", "both orders: the candidate is worse, and the judge called it "
                                            "unacceptable")
        return Combined("degraded", "both orders: the candidate is worse than the baseline")
    # Disagreement. Position preference: each order strictly favoured the answer in the same position.
    preference = None
    if candidate_first == "better" and baseline_first in _BAD:
        preference = "first"
    elif baseline_first == "better" and candidate_first in _BAD:
        preference = "second"
    return Combined("tie", f"the orders disagree (candidate {baseline_first} when shown second, "
                           f"{candidate_first} when shown first): not counted as acceptable", preference)


# ---------------------------------------------------------------- prompts of experiment items
def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif part.get("type") in ("image", "image_url", "input_image"):
                    out.append("[image]")
        return "\n".join(out)
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return content["text"]
    return "" if content is None else json.dumps(content, ensure_ascii=False)


def render_prompt(stored: str) -> str:
    """An experiment item's prompt as readable text: plain text as is; the JSON form
    `{"system": ..., "messages": [{"role", "content"}]}` as role-labelled sections."""
    try:
        data = json.loads(stored)
    except (json.JSONDecodeError, TypeError):
        return stored
    if isinstance(data, str):
        return data
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        return stored
    sections = []
    system = _content_text(data.get("system"))
    if system:
        sections.append(f"[system]\n{system}")
    messages = [m for m in data["messages"] if isinstance(m, dict)]
    if len(messages) == 1 and not system and messages[0].get("role", "user") == "user":
        return _content_text(messages[0].get("content"))
    for m in messages:
        sections.append(f"[{m.get('role', 'user')}]\n{_content_text(m.get('content'))}")
    return "\n\n".join(sections)


# ---------------------------------------------------------------- blind human rating
# The rater compares two unnamed answers shown in a stable random order, symmetrically:
HumanRating = Literal["first", "second", "same", "only_first", "only_second"]
HUMAN_RATINGS: tuple[str, ...] = ("first", "second", "same", "only_first", "only_second")
HUMAN_RATING_HELP = {
    "first": "the first answer is better (the second is still usable)",
    "second": "the second answer is better (the first is still usable)",
    "same": "they are as good as each other for this task",
    "only_first": "only the first answer is acceptable: the second is wrong or unusable",
    "only_second": "only the second answer is acceptable: the first is wrong or unusable",
}
_SEVERITY = {"acceptable": 0, "degraded": 1, "unacceptable": 2}


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8], "big")


def blind_candidate_first(experiment_id: str, item: int, model: str) -> bool:
    """Whether the candidate's answer is shown first: random per (experiment, item, candidate), but stable."""
    return random.Random(_seed("order", experiment_id, item, model)).random() < 0.5


def shuffled(keys: list[Any], *seed_parts: object) -> list[Any]:
    """`keys` in a stable random order (per rater: rating order effects average out)."""
    out = list(keys)
    random.Random(_seed("queue", *seed_parts)).shuffle(out)
    return out


def human_verdict(rating: str, candidate_first: bool) -> Verdict:
    """The candidate's verdict from a blind rating: acceptable when it is at least as good as the baseline."""
    mine, other = ("first", "second") if candidate_first else ("second", "first")
    if rating in ("same", mine, f"only_{mine}"):
        return "acceptable"
    if rating == other:
        return "degraded"
    if rating == f"only_{other}":
        return "unacceptable"
    raise ValueError(f"unknown rating {rating!r}")


def combine_raters(verdicts: list[str]) -> str:
    """Several raters of one pair: the most severe verdict counts (a quality gate errs on the safe side)."""
    return max(verdicts, key=lambda v: _SEVERITY.get(v, 3))
