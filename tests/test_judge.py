"""The pure judging core: verdict parsing, the order-swap combination, blind-rating mapping, prompts."""

from __future__ import annotations

import json

import pytest

from mcp_prism.core import judge as J


@pytest.mark.parametrize(("text", "expected"), [
    ("The answers are close.\nVERDICT: B_BETTER", "B_BETTER"),
    ("VERDICT: A_BETTER", "A_BETTER"),
    ("verdict: equal", "EQUAL"),
    ("**Verdict:** b better", "B_BETTER"),
    ("**Final verdict**: `A_UNACCEPTABLE`.", "A_UNACCEPTABLE"),
    ("Verdict - B is unusable", "B_UNACCEPTABLE"),
    ("Verdict: Answer B is better than answer A", "B_BETTER"),
    ("VERDICT: TIE", "EQUAL"),
    ("verdict = B > A", "B_BETTER"),
    ("Verdict: A", "A_BETTER"),
    ("VERDICT:EQUAL", "EQUAL"),
    ("# Verdict\nsee below\n\nVERDICT: B_UNACCEPTABLE", "B_UNACCEPTABLE"),
    ("MT-Bench style: [[A]]", "A_BETTER"),
    ("[[B]]", "B_BETTER"),
    ("[[C]]", "EQUAL"),
    ('{"reasoning": "same facts", "verdict": "EQUAL"}', "EQUAL"),
    ("Both answers fix the bug.\n\nEQUAL", "EQUAL"),
    ("Both answers fix the bug.\n**B_BETTER**", "B_BETTER"),
    ("A and B are equally good", "EQUAL"),
    # the judge repeated the instructions first: the last verdict line counts
    ("I must answer VERDICT: A_BETTER, B_BETTER or EQUAL.\nB handles the edge case.\nVERDICT: B_BETTER",
     "B_BETTER"),
])
def test_parse_verdict_formats(text: str, expected: str) -> None:
    assert J.parse_verdict(text) == expected


@pytest.mark.parametrize("text", [
    None, "", "   ", "I cannot compare these answers.", "Verdict: it depends on the use case",
    "Verdict: B is not as good as A, arguably", "Both have merits and flaws.", "[[maybe]]",
    '{"verdict": "unclear"}', "Answer A is long. Answer B is short and has more detail than the first one.",
])
def test_parse_verdict_garbage_is_none(text: str | None) -> None:
    assert J.parse_verdict(text) is None


@pytest.mark.parametrize(("verdict", "cand", "rel"), [
    ("EQUAL", "B", "equal"), ("EQUAL", "A", "equal"),
    ("B_BETTER", "B", "better"), ("A_BETTER", "B", "worse"),
    ("A_BETTER", "A", "better"), ("B_BETTER", "A", "worse"),
    ("B_UNACCEPTABLE", "B", "unacceptable"), ("A_UNACCEPTABLE", "A", "unacceptable"),
    ("A_UNACCEPTABLE", "B", "better"), ("B_UNACCEPTABLE", "A", "better"),
])
def test_relation_maps_positions_to_the_candidate(verdict: str, cand: str, rel: str) -> None:
    assert J.relation(verdict, cand) == rel  # type: ignore[arg-type]


@pytest.mark.parametrize(("first", "second", "verdict"), [
    ("equal", "equal", "acceptable"), ("better", "equal", "acceptable"), ("better", "better", "acceptable"),
    ("equal", "better", "acceptable"),
    ("worse", "worse", "degraded"), ("worse", "unacceptable", "unacceptable"),
    ("unacceptable", "worse", "unacceptable"), ("unacceptable", "unacceptable", "unacceptable"),
    ("better", "worse", "tie"), ("worse", "better", "tie"), ("equal", "worse", "tie"),
    ("unacceptable", "equal", "tie"),
])
def test_combine_needs_both_orders(first: str, second: str, verdict: str) -> None:
    assert J.combine(first, second).verdict == verdict  # type: ignore[arg-type]


def test_combine_names_the_position_bias() -> None:
    # A judge that always prefers answer A: the candidate loses when second, wins when first.
    always_a = J.combine(J.relation("A_BETTER", "B"), J.relation("A_BETTER", "A"))
    assert always_a.verdict == "tie" and always_a.position_preference == "first"
    always_b = J.combine(J.relation("B_BETTER", "B"), J.relation("B_BETTER", "A"))
    assert always_b.verdict == "tie" and always_b.position_preference == "second"
    assert J.combine("equal", "worse").position_preference is None  # disagreement without a side
    assert "disagree" in always_a.reason


def test_judge_messages_hold_task_prompt_reference_and_both_answers() -> None:
    system, user = J.judge_messages("code_review", "Review a diff.", "review this diff", "ANSWER ONE",
                                    "ANSWER TWO", reference="the right review")
    assert "VERDICT" in system and "longer" in system  # asks for the token, warns about verbosity
    assert "Task type: code_review (Review a diff.)" in user
    assert "Is answer B as good as answer A" in user
    assert user.index("<answer_a>\nANSWER ONE") < user.index("<answer_b>\nANSWER TWO")
    assert "<reference_answer>\nthe right review" in user
    _, no_ref = J.judge_messages("general", None, "p", "a", "b")
    assert "reference" not in no_ref
    _, long = J.judge_messages("general", None, "p", "x" * (J.MAX_ANSWER_CHARS + 10), "b")
    assert "cut: 10 more characters" in long


def test_render_prompt_plain_and_json() -> None:
    assert J.render_prompt("just text") == "just text"
    assert J.render_prompt(json.dumps({"messages": [{"role": "user", "content": "hi"}]})) == "hi"
    rendered = J.render_prompt(json.dumps({"system": "be brief", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}]}))
    assert rendered == "[system]\nbe brief\n\n[user]\nlook\n[image]\n\n[assistant]\nok\n\n[user]\nagain"
    assert J.render_prompt('{"not": "a prompt"}') == '{"not": "a prompt"}'
    assert J.render_prompt('"a JSON string"') == "a JSON string"


def test_blind_order_is_stable_and_balanced() -> None:
    firsts = [J.blind_candidate_first("exp", item, "cand") for item in range(200)]
    assert firsts == [J.blind_candidate_first("exp", item, "cand") for item in range(200)]
    assert 70 < sum(firsts) < 130
    # per candidate too: two candidates of one item are not always on the same side
    assert any(J.blind_candidate_first("exp", i, "a") != J.blind_candidate_first("exp", i, "b") for i in range(20))


@pytest.mark.parametrize(("rating", "cand_first", "verdict"), [
    ("same", True, "acceptable"), ("same", False, "acceptable"),
    ("first", True, "acceptable"), ("second", True, "degraded"), ("only_second", True, "unacceptable"),
    ("only_first", True, "acceptable"),
    ("second", False, "acceptable"), ("first", False, "degraded"), ("only_first", False, "unacceptable"),
    ("only_second", False, "acceptable"),
])
def test_human_verdict(rating: str, cand_first: bool, verdict: str) -> None:
    assert J.human_verdict(rating, cand_first) == verdict


def test_human_verdict_rejects_unknown_and_raters_combine_conservatively() -> None:
    with pytest.raises(ValueError):
        J.human_verdict("acceptable", True)
    assert J.combine_raters(["acceptable"]) == "acceptable"
    assert J.combine_raters(["acceptable", "degraded"]) == "degraded"
    assert J.combine_raters(["unacceptable", "acceptable", "degraded"]) == "unacceptable"


def test_shuffled_is_stable_per_seed() -> None:
    keys = list(range(30))
    assert J.shuffled(keys, "exp", "ann") == J.shuffled(keys, "exp", "ann")
    assert J.shuffled(keys, "exp", "ann") != J.shuffled(keys, "exp", "bob")
    assert sorted(J.shuffled(keys, "exp", "ann")) == keys
