"""Offline task classifier: accuracy on the labelled set and on the frozen held-out set, the shipped
model file, determinism, fallbacks and uncertainty, team types, complexity boosts (not fooled by agent
boilerplate), and property tests. No timing assertions (see benchmarks/bench_classify.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_prism.config import shipped_classifier_model
from mcp_prism.core.classify import (
    LONG_CONTEXT_TOKENS,
    LONG_TEXT_CHARS,
    Classification,
    Classifier,
    Complexity,
    assess_complexity,
)
from mcp_prism.core.human_text import person_text
from mcp_prism.core.tasks import BUILTIN_TASK_TYPES, GENERAL, TaskTypeSpec, Tier
from mcp_prism.core.text_model import TextModel

DATA = Path(__file__).parent / "data" / "labelled_requests.jsonl"
HELDOUT = Path(__file__).parent / "data" / "heldout_requests.jsonl"
MODEL = shipped_classifier_model()
NON_GENERAL = [t.name for t in BUILTIN_TASK_TYPES if t.name != GENERAL]

SQL_MIGRATION = TaskTypeSpec(
    "sql_migration",
    "Write or fix a database schema migration.",
    Tier.STANDARD,
    keywords=("alembic", "migration script", "sql migration"),
)


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


ROWS = _load(DATA)
HELD = _load(HELDOUT)


def _clf(*args, **kwargs) -> Classifier:
    return Classifier(*args, model=MODEL, **kwargs)


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return _clf()


@pytest.fixture(scope="module")
def predicted(clf: Classifier) -> list[tuple[dict, Classification]]:
    return [(row, clf.classify(row["text"])) for row in ROWS]


def _accuracy(pairs: list[tuple[dict, Classification]]) -> float:
    return sum(r.task_type == row["task_type"] for row, r in pairs) / len(pairs)


def _confusion(pairs: list[tuple[dict, Classification]]) -> str:
    lines = []
    for name in sorted({row["task_type"] for row, _ in pairs}):
        mine = [(row, r) for row, r in pairs if row["task_type"] == name]
        got = Counter(r.task_type for _, r in mine)
        wrong = ", ".join(f"{k} x{v}" for k, v in got.most_common() if k != name)
        lines.append(f"  {name:<24} {got[name]}/{len(mine)}  {wrong}")
    misses = [f"  want {row['task_type']} got {r.task_type}: {row['text']!r}"
              for row, r in pairs if r.task_type != row["task_type"]]
    return "\nper type:\n" + "\n".join(lines) + "\nmisses:\n" + "\n".join(misses)


# --- the labelled set -----------------------------------------------------------------------


def test_labelled_set_shape() -> None:
    names = {t.name for t in BUILTIN_TASK_TYPES}
    counts = Counter(row["task_type"] for row in ROWS)
    hard = Counter(row["task_type"] for row in ROWS if row["hard"])
    for row in ROWS:
        assert set(row) >= {"text", "task_type", "hard"}
        assert row["task_type"] in names
        assert isinstance(row["hard"], bool) and row["text"].strip()
    for name in NON_GENERAL:
        assert counts[name] >= 18, name
        assert hard[name] >= 4, name
    assert len({row["text"] for row in ROWS}) == len(ROWS), "duplicate requests"


def test_accuracy_overall(predicted: list[tuple[dict, Classification]]) -> None:
    acc = _accuracy(predicted)
    assert acc >= 0.85, f"overall accuracy {acc:.3f} < 0.85" + _confusion(predicted)


def test_accuracy_hard_cases(predicted: list[tuple[dict, Classification]]) -> None:
    hard = [(row, r) for row, r in predicted if row["hard"]]
    acc = _accuracy(hard)
    assert acc >= 0.70, f"hard-case accuracy {acc:.3f} < 0.70" + _confusion(hard)


def test_heldout_set_shape() -> None:
    # Frozen before the model was trained or tuned (its own commit); never used to choose anything.
    counts = Counter(row["task_type"] for row in HELD)
    for name in NON_GENERAL:
        assert counts[name] >= 30, name
    assert len({row["text"] for row in HELD}) == len(HELD)
    assert not {row["text"] for row in HELD} & {row["text"] for row in ROWS}


def test_accuracy_on_heldout_set(clf: Classifier) -> None:
    typed = [(row, clf.classify(row["text"])) for row in HELD if row["task_type"] != GENERAL]
    acc = _accuracy(typed)
    # A regression floor, not the goal: the target is 0.90 and the shipped model measured 0.887
    # (mean 0.884, range 0.879-0.890 over five training seeds, tools/classifier/report.json). Only the
    # accuracy is printed, never the misses, so nobody tunes on them.
    assert acc >= 0.85, f"held-out accuracy {acc:.3f} < 0.85"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("write tests that reproduce the crash in the payment worker", "test_generation"),
        ("review the architecture doc for the new queue", "code_review"),
        ("design the schema for storing audit logs for 7 years", "architecture_design"),
        ("why does the deploy script hang on the migration step?", "bug_investigation"),
        ("draft an email announcing the security audit results", "email_drafting"),
        ("extract the stack traces from this log dump as JSON", "data_extraction"),
        ("review this code for security vulnerabilities", "security_audit"),
        ("hey, could you please write unit tests for money.py", "test_generation"),
    ],
)
def test_leading_intent_beats_topic_nouns(clf: Classifier, text: str, want: str) -> None:
    result = clf.classify(text)
    assert result.task_type == want, result


# --- result shape, determinism, fallbacks ---------------------------------------------------


def test_result_shape_and_signals(clf: Classifier) -> None:
    result = clf.classify("getting a stack trace from session_middleware.py, why does it crash?")
    assert result.task_type == "bug_investigation"
    assert not result.fell_back and not result.uncertain
    assert clf.uncertain_below <= result.confidence <= 1.0
    assert result.signals[0].startswith("model: bug_investigation")
    assert any(s.startswith("words for bug_investigation") for s in result.signals)
    assert result.runner_up is not None and result.runner_up not in (result.task_type, GENERAL)


def test_deterministic(clf: Classifier) -> None:
    other = Classifier(model=TextModel.from_bytes(_shipped_bytes()))
    for row in ROWS:
        first = clf.classify(row["text"])
        assert clf.classify(row["text"]) == first
        assert other.classify(row["text"]) == first


def test_ties_broken_by_spec_order() -> None:
    a = TaskTypeSpec("team_a", "A", Tier.SIMPLE, keywords=("frobnicate",))
    b = TaskTypeSpec("team_b", "B", Tier.SIMPLE, keywords=("frobnicate",))
    general = next(t for t in BUILTIN_TASK_TYPES if t.name == GENERAL)
    assert Classifier((a, b, general)).classify("frobnicate the widget").task_type == "team_a"
    assert Classifier((b, a, general)).classify("frobnicate the widget").task_type == "team_b"


@pytest.mark.parametrize("text", ["", "   ", "\n\t  \n"])
def test_empty_text_falls_back(clf: Classifier, text: str) -> None:
    result = clf.classify(text)
    assert result == Classification(GENERAL, 0.0, ("empty text",), True, None)


@pytest.mark.parametrize("text", ["hello there", "thanks, that did it", "what is the capital of Peru"])
def test_no_type_fits_falls_back_and_names_the_guess(clf: Classifier, text: str) -> None:
    result = clf.classify(text)
    assert result.task_type == GENERAL and result.fell_back and result.uncertain
    assert result.runner_up in NON_GENERAL  # the declined guess, so a caller can still see it
    assert any("fell back to general" in s for s in result.signals)


def test_conceptual_question_is_not_a_task(clf: Classifier) -> None:
    # About deploy words, but asks for an explanation, not a deploy check.
    result = clf.classify("explain what Kubernetes readiness probes are")
    assert result.fell_back and result.task_type == GENERAL
    assert result.runner_up in NON_GENERAL


def test_threshold_controls_fallback() -> None:
    text = "check the diff"
    assert _clf(threshold=0.0).classify(text).fell_back is False
    strict = _clf(threshold=1.0).classify(text)
    assert strict.fell_back and strict.task_type == GENERAL and strict.runner_up in NON_GENERAL


def test_default_threshold_comes_from_the_model(clf: Classifier) -> None:
    assert clf.threshold == MODEL.threshold and 0.0 <= MODEL.threshold < MODEL.uncertain_below < 1.0


def test_uncertain_marks_the_weak_band(clf: Classifier) -> None:
    # uncertain <=> a fallback with a guess, or a verdict below the model's cross-validated band
    seen = 0
    for row in ROWS + HELD:
        r = clf.classify(row["text"])
        want = r.runner_up is not None if r.fell_back else r.confidence < clf.uncertain_below
        assert r.uncertain == want, (row["text"], r)
        if r.uncertain and not r.fell_back:
            seen += 1
            assert any(s.startswith("uncertain:") for s in r.signals)
    assert seen, "no uncertain verdict at all: the band is not doing anything"


def test_very_long_text_is_classified_from_head_and_tail(clf: Classifier) -> None:
    text = "log line without much in it\n" * 20_000 + "why does the worker die at startup?"
    result = clf.classify(text)
    assert result.task_type == "bug_investigation"
    assert any("head and tail" in s for s in result.signals)


# --- team-defined types and constructor checks ----------------------------------------------


def test_custom_team_type_is_chosen() -> None:
    clf = _clf((*BUILTIN_TASK_TYPES, SQL_MIGRATION))
    for text in (
        "write an alembic migration script that adds users.last_login",
        "SQL migration for the new index on orders(created_at)",
        "the Alembic revision needs a downgrade() too",
    ):
        result = clf.classify(text)
        assert result.task_type == "sql_migration", (text, result)
        assert any("sql_migration" in s for s in result.signals)
    # Built-in behaviour is kept for text without the team's keywords.
    assert clf.classify("will this migration lock the orders table in prod?").task_type == "deploy_check"


def test_team_keywords_are_literal_and_whole_word() -> None:
    spec = TaskTypeSpec("cpp_port", "Port to C++", Tier.STANDARD, keywords=("c++", "(legacy)"))
    clf = _clf((*BUILTIN_TASK_TYPES, spec))
    assert clf.classify("port this module to C++").task_type == "cpp_port"
    assert clf.classify("the (legacy) billing code").task_type == "cpp_port"
    assert clf.classify("abc++def").task_type != "cpp_port"


def test_custom_default() -> None:
    other = TaskTypeSpec("misc", "Fallback", Tier.STANDARD)
    clf = Classifier((SQL_MIGRATION, other), default="misc")
    assert clf.classify("alembic please").task_type == "sql_migration"
    fallback = clf.classify("review this PR")  # no built-in patterns in this spec set
    assert fallback.task_type == "misc" and fallback.fell_back


def test_unknown_default_raises() -> None:
    with pytest.raises(ValueError, match="nope"):
        _clf(default="nope")


def test_duplicate_names_raise() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        _clf((*BUILTIN_TASK_TYPES, BUILTIN_TASK_TYPES[0]))


@pytest.mark.parametrize("threshold", [-0.1, 1.5])
def test_bad_threshold_raises(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        _clf(threshold=threshold)


def test_builtin_types_need_the_model() -> None:
    with pytest.raises(ValueError, match="shipped_classifier_model"):
        Classifier()


# --- the shipped model file -----------------------------------------------------------------


def _shipped_bytes() -> bytes:
    return (Path(__file__).parent.parent / "mcp_prism" / "data" / "classifier.bin").read_bytes()


def test_shipped_model_is_small_and_knows_every_builtin_type() -> None:
    data = _shipped_bytes()
    assert len(data) < 1_000_000
    assert set(MODEL.classes) == {t.name for t in BUILTIN_TASK_TYPES}
    assert MODEL.meta["cv_accuracy"] > 0.5 and MODEL.meta["corpus_rows"] > 11 * 300


@pytest.mark.parametrize("data", [b"", b"not zlib", __import__("zlib").compress(b"WRONGMAGIC")])
def test_bad_model_bytes_raise_a_clear_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="classifier model"):
        TextModel.from_bytes(data)


def test_model_round_trips_through_bytes() -> None:
    classes = ["a", "b"]
    blob = TextModel.to_bytes(classes, 16, [1.0 + i / 8 for i in range(16)],
                              [[0.5 - i / 16 for i in range(16)], [i / 16 - 0.5 for i in range(16)]],
                              [0.1, -0.1], {"threshold": 0.2, "uncertain_below": 0.6})
    m = TextModel.from_bytes(blob)
    assert (m.classes, m.buckets, m.threshold, m.uncertain_below) == (("a", "b"), 16, 0.2, 0.6)
    assert abs(m.weight(0, 0) - 0.5) < 0.01 and abs(m.weight(1, 15) - (15 / 16 - 0.5)) < 0.01
    assert abs(sum(p for _, p in m.scores("anything at all").ranked) - 1.0) < 1e-9


# --- complexity -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "signal"),
    [
        ("rename the field across all services that consume the orders topic", "multi-file scope"),
        ("this touches the whole codebase", "multi-file scope"),
        ("update api/orders.py, api/users.py and workers/sync.py together", "multi-file scope"),
        ("there is a race condition in the cache warmer", "concurrency"),
        ("the two workers deadlock on the inventory rows", "concurrency"),
        ("is this counter thread-safe?", "concurrency"),
        ("prod incident: checkout returns 500s", "production incident"),
        ("the outage last night lost some orders", "production incident"),
        ("we may have had data loss in the EU shard", "production incident"),
        ("possible security breach via the admin token", "production incident"),
    ],
)
def test_complexity_signal_groups(text: str, signal: str) -> None:
    result = assess_complexity(text)
    assert result == Complexity(1, (signal,))


def test_complexity_reads_the_persons_words_not_agent_boilerplate(clf: Classifier) -> None:
    # Claude Code opens the turn with reminders full of words that would otherwise count.
    reminder = ("<system-reminder>As you answer, these files across all services matter: a.py, b.py, c.py. "
                "Beware race conditions and thread-safety; a production incident runbook is in "
                "docs/incident.md. Write tests and review code carefully.</system-reminder>")
    messages = [{"role": "user", "content": [{"type": "text", "text": reminder},
                                             {"type": "text", "text": "add a docstring to parse_duration"}]}]
    text = person_text(messages)
    assert text == "add a docstring to parse_duration"
    assert assess_complexity(text) == Complexity(0, ())
    assert clf.classify(text).task_type == "doc_generation"


def test_complexity_none() -> None:
    assert assess_complexity("add a docstring to parse_duration") == Complexity(0, ())
    assert assess_complexity("") == Complexity(0, ())


def test_two_files_are_not_multi_file_scope() -> None:
    assert assess_complexity("compare a.py and b.py").boost == 0


def test_complexity_capped_at_two() -> None:
    text = "prod outage: a race condition across services corrupts orders"
    result = assess_complexity(text, context_tokens=LONG_CONTEXT_TOKENS)
    assert result.signals == ("multi-file scope", "concurrency", "production incident", "long context")
    assert result.boost == 2


def test_context_tokens_boost() -> None:
    assert assess_complexity("summarise this", context_tokens=LONG_CONTEXT_TOKENS - 1).boost == 0
    result = assess_complexity("summarise this", context_tokens=LONG_CONTEXT_TOKENS)
    assert result == Complexity(1, ("long context",))


def test_long_text_counts_as_long_context() -> None:
    result = assess_complexity("a" * LONG_TEXT_CHARS)
    assert result == Complexity(1, ("long context",))


# --- properties -----------------------------------------------------------------------------

_CLF = _clf((*BUILTIN_TASK_TYPES, SQL_MIGRATION))
_NAMES = {t.name for t in (*BUILTIN_TASK_TYPES, SQL_MIGRATION)}
_WORDS = st.sampled_from(
    ["review", "write", "tests", "why", "does", "crash", "deploy", "design", "extract", "email", "the",
     "README", "alembic", "don't", "security", "?", ",", "\n", "PR", "migration", "race condition"]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(_WORDS, max_size=30).map(" ".join)))
def test_classify_never_raises(text: str) -> None:
    result = _CLF.classify(text)
    assert result.task_type in _NAMES
    assert 0.0 <= result.confidence <= 1.0
    assert result.fell_back == (result.task_type == GENERAL)
    assert result.runner_up is None or result.runner_up in _NAMES - {GENERAL}
    assert result.signals and all(isinstance(s, str) for s in result.signals)
    assert _CLF.classify(text) == result


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4), st.text())
def test_any_team_keywords_compile_and_classify(keywords: list[str], text: str) -> None:
    spec = TaskTypeSpec("team_type", "x", Tier.SIMPLE, keywords=tuple(keywords))
    result = _clf((*BUILTIN_TASK_TYPES, spec)).classify(text)
    assert 0.0 <= result.confidence <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=10**7))
def test_assess_complexity_never_raises(text: str, tokens: int) -> None:
    result = assess_complexity(text, tokens)
    assert 0 <= result.boost <= 2
    assert result.boost == min(2, len(result.signals))
