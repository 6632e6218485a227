"""Learned per-request routing and the routing literature's metrics (PGR, APGR, CPT, cost cut): worked toy
examples computed by hand, a learnable synthetic set, and the real RouteLLM data when it is present."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import shared_data

from mcp_prism.cli import main
from mcp_prism.core.router_eval import (
    Example,
    LogisticRouter,
    evaluate_router,
    features,
    oracle_scores,
    random_apgr,
    routing_curve,
)

DATA = shared_data("routellm")
needs_data = pytest.mark.skipif(not (DATA / "gsm8k_responses.csv").is_file(),
                                reason=f"the public RouteLLM outcome data is not at {DATA}")

W, S = Decimal(1), Decimal(10)  # cost of one weak / strong call in the toy examples


def toy() -> list[Example]:
    # q_weak = 2/4, q_strong = 3/4: only A gains from the strong model
    return [Example("A", 0, 1, W, S), Example("B", 1, 1, W, S), Example("C", 0, 0, W, S), Example("D", 1, 1, W, S)]


def test_curve_worked_example() -> None:
    c = routing_curve(toy(), [0.1, 0.9, 0.5, 0.8])  # strong-first order: A, C, D, B
    assert [p.strong_share for p in c.points] == [0, 0.25, 0.5, 0.75, 1]
    assert [p.quality for p in c.points] == [0.5, 0.75, 0.75, 0.75, 0.75]
    assert [p.pgr for p in c.points] == [0, 1, 1, 1, 1]
    assert [p.cost for p in c.points] == [4, 13, 22, 31, 40]
    assert c.apgr == pytest.approx(0.125 + 0.75)  # first trapezoid (0+1)/2 * 0.25, then 3 * 0.25
    assert c.cpt(0.5) == c.cpt(0.95) == 0.25
    at95 = c.at_quality(0.95)  # 95% of 0.75 = 0.7125, first reached at one strong call
    assert at95 is not None and at95.strong_share == 0.25
    assert c.cost_cut(at95) == pytest.approx(1 - 13 / 40)


def test_curve_of_the_worst_order() -> None:
    c = routing_curve(toy(), [0.9, 0.1, 0.5, 0.8])  # A last: PGR 0 until every call is strong
    assert [p.pgr for p in c.points] == [0, 0, 0, 0, 1]
    assert c.apgr == pytest.approx(0.125)
    assert c.cpt(0.5) == 1.0
    assert c.at_quality(0.95).strong_share == 1.0  # type: ignore[union-attr]
    assert c.cost_cut(c.at_quality(0.95)) == 0


def test_perfect_router_is_near_one_and_random_near_half() -> None:
    examples = [Example(str(i), 0 if i < 5 else 1, 1, W, S) for i in range(100)]  # 5 prompts need the strong one
    perfect = routing_curve(examples, oracle_scores(examples))
    assert perfect.apgr == pytest.approx(0.05 / 2 + 0.95)
    assert perfect.cpt(0.95) == pytest.approx(0.05)
    assert random_apgr(examples, seed=3, trials=300) == pytest.approx(0.5, abs=0.05)


def test_pgr_needs_a_gap() -> None:
    with pytest.raises(ValueError, match="not better"):
        routing_curve([Example("a", 1, 1), Example("b", 0, 0)], [0.5, 0.5])
    with pytest.raises(ValueError, match="one probability per example"):
        routing_curve(toy(), [0.5])


def test_unpriced_examples_have_no_cost() -> None:
    c = routing_curve([Example("a", 0, 1), Example("b", 1, 1)], [0.1, 0.2])
    assert all(p.cost is None for p in c.points)
    assert c.cost_cut(c.points[1]) is None


def test_features_are_stable_and_normalised() -> None:
    a, b = features("Add 3 and 4, then double it?"), features("Add 3 and 4, then double it?")
    assert a == b  # crc32, not the per-process salted hash()
    hashed = [v for k, v in a.items() if k >= 8]
    assert sum(v * v for v in hashed) == pytest.approx(1.0)
    assert features("x", group="math") != features("x")


def _synthetic(n: int, seed: int) -> list[Example]:
    """The weak model fails exactly on prompts about 'integrals'; the strong one always succeeds."""
    rng = random.Random(seed)
    topics = ["integrals", "greetings", "weather", "recipes"]
    out = []
    for i in range(n):
        topic = rng.choice(topics)
        text = f"question {i} about {topic} and {rng.choice(['cats', 'dogs', 'trees'])}"
        out.append(Example(text, 0 if topic == "integrals" else 1, 1, W, S))
    return out


def test_learned_router_finds_the_hard_prompts_deterministically() -> None:
    examples = _synthetic(400, seed=1)
    ev = evaluate_router(examples, seed=7)
    assert ev.n_test == 200 and "seeded split" in ev.method
    assert ev.apgr > 0.8 > 0.6 > ev.apgr_random
    assert ev.apgr_oracle == pytest.approx(ev.apgr, abs=0.05)
    again = evaluate_router(examples, seed=7)
    assert again.apgr == ev.apgr and again.curve == ev.curve
    cv = evaluate_router(examples, seed=7, folds=5)
    assert cv.n_test == 400 and "5-fold" in cv.method and cv.apgr > 0.8


def test_router_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="train_share"):
        evaluate_router(_synthetic(20, 0), train_share=1.5)
    with pytest.raises(ValueError, match="folds"):
        evaluate_router(_synthetic(20, 0), folds=1)
    model = LogisticRouter().fit([features("a"), features("b")], [1, 0], seed=0)
    assert model.predict(features("a")) > model.predict(features("b"))


# ---------------------------------------------------------------- the real data, end to end
def _cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    capsys.readouterr()
    code = main([*args, "--home", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@needs_data
def test_router_eval_on_gsm8k(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One seed and 3x3 folds keep the test quick; benchmarks/bench_router.py quotes 5 seeds at 5x5.
    r = _cli_json(tmp_path, capsys, "router-eval", str(DATA / "gsm8k_responses.csv"), "--seed", "0", "--seeds", "1",
                  "--outer-folds", "3", "--inner-folds", "3")
    assert r["dataset"] == "gsm8k" and r["n"] == 1319 and r["n_test"] == 659
    assert r["strong"] == "gpt-4-1106-preview" and r["weak"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert 0.55 < r["apgr"] < 0.8  # a text-only difficulty model: clearly better than random, far from oracle
    assert 0.45 < r["apgr_random"] < 0.55
    assert r["apgr_oracle"] > 1  # the oracle can beat always-strong: the weak model is right where GPT-4 is not
    assert 0 < r["cpt_50"] < r["cpt_80"] < r["cpt_95"] <= 1
    assert "35%" in r["published"]
    assert r["prices"]["gpt-4-1106-preview"]["source"] == "genai-prices openai/gpt-4-turbo"
    # The honest figures: a threshold frozen on training folds, judged on held-out prompts.
    [oos] = r["out_of_sample"]  # no category column: text-only only
    assert oos["features"] == "text-only" and len(oos["seeds"]) == 1
    seed = oos["seeds"][0]
    assert 0.9 < seed["quality_kept"] < 1.0 and 0.1 < seed["cost_cut"] < 0.5
    assert 0.4 < seed["strong_share"] < 0.9 and sum(seed["labelings"].values()) == 3
    assert r["duplicates"] == 0 and not r["prompt_only_costs"] and r["tolerance"] == 0
    assert any("quote figures over at least 5" in n for n in r["notes"])


@needs_data
def test_router_eval_on_mt_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _cli_json(tmp_path, capsys, "router-eval", str(DATA), "--seeds", "2")
    assert r["format"] == "mtbench" and r["n"] == r["n_test"] == 80 and "5-fold" in r["method"]
    assert r["q_weak"] == pytest.approx(8.340625) and r["q_strong"] == pytest.approx(9.228125)
    assert 0.5 < r["apgr"] < 0.95 and 0.4 < r["apgr_random"] < 0.6
    assert "85%" in r["published"] and any("80 prompts" in n for n in r["notes"])
    assert any("turn 1's text only" in n for n in r["notes"])
    assert [o["features"] for o in r["out_of_sample"]] == ["text-only", "text+category"]
    for o in r["out_of_sample"]:
        assert o["quality_kept"]["min"] <= o["quality_kept"]["mean"] <= o["quality_kept"]["max"]
        assert 0.3 < o["cost_cut"]["mean"] < 0.95 and 0 < o["strong_share"]["mean"] < 1
    capsys.readouterr()
    assert main(["router-eval", str(DATA), "--home", str(tmp_path), "--seeds", "1"]) == 0
    text = capsys.readouterr().out
    assert "thresholds chosen out of sample" in text and "text+category" in text and "read off the test curve" in text
    assert "APGR" in text and "CPT(50%)" in text and "published for comparison" in text


def test_prompt_only_costs_are_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No answers in the file: costs count prompts only, and the report says so; duplicates are counted."""
    lines = ["prompt,weak,strong"]
    for i in range(120):
        hard = i % 5 < 2
        text = f"{'prove the integral bound' if hard else 'say hello to'} item {i % 100}"  # 20 duplicates
        lines.append(f"{text},{'False' if hard else 'True'},True")
    path = tmp_path / "toy_outcomes.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = _cli_json(tmp_path, capsys, "router-eval", str(path), "--seeds", "1", "--outer-folds", "2",
                  "--inner-folds", "2", "--price", "weak=0.1,0.1", "--price", "strong=10,30")
    assert r["prompt_only_costs"] and any(n.startswith("WARNING: no answers") for n in r["notes"])
    assert r["duplicates"] == 20


# ---------------------------------------------------------------- thresholds chosen out of sample
def test_calibrate_picks_the_fewest_strong_calls_that_reach_the_target() -> None:
    from mcp_prism.core.learned_router import calibrate, route_outcomes

    ex = toy()  # q_strong 0.75; weak alone 0.5; only A gains
    hard = [0.9, 0.1, 0.5, 0.2]  # A hardest
    t = calibrate(ex, hard, 0.95)
    assert 0.5 < t <= 0.9  # A alone goes strong: 0.75 >= 0.7125
    done = route_outcomes(ex, hard, t)
    assert done.strong_calls == 1 and done.quality_kept == 1.0 and done.cost_cut == pytest.approx(1 - 13 / 40)
    assert calibrate(ex, hard, 0.6) == float("inf")  # the weak model alone reaches 60%
    # A margin of standard errors demands more than the point estimate: 4 prompts cannot certify 95% with
    # 4 standard errors of margin, so everything goes strong.
    assert calibrate(ex, hard, 0.95, z=4.0) == float("-inf")


def test_out_of_sample_evaluation_is_deterministic_and_honest() -> None:
    from mcp_prism.core.router_eval import evaluate_out_of_sample

    examples = _synthetic(300, seed=2)
    a = evaluate_out_of_sample(examples, seeds=(0, 1), outer_folds=3, inner_folds=3)
    b = evaluate_out_of_sample(examples, seeds=(0, 1), outer_folds=3, inner_folds=3)
    assert a == b and len(a.seeds) == 2 and a.duplicates == 0
    for s in a.seeds:  # learnable: the integrals go strong, everything else stays weak
        assert s.quality_kept >= 0.95 and 0.15 < s.strong_share < 0.4 and s.cost_cut > 0.5
        assert sum(s.modes.values()) == 3 and set(s.cv_apgr) == {"ok", "gap"}
    mean, lo, hi = a.stat("cost_cut")  # type: ignore[misc]
    assert lo <= mean <= hi and a.met_target == 2


def test_duplicates_stay_on_one_side() -> None:
    from mcp_prism.core.learned_router import _folds, normalised

    texts = ["Same  prompt", "same prompt", "other", "third", "fourth", "fifth"]
    folds = _folds(len(texts), 3, seed=1, keys=[normalised(t) for t in texts])
    assert sorted(i for f in folds for i in f) == list(range(6))
    assert any({0, 1} <= set(f) for f in folds)
