"""A team-level quality target: the pure choice (exact, greedy, budget), its out-of-sample certificate, and
`analyze --quality-target` / `team-promote` over imported outcomes, on a real SQLite store."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data

from mcp_prism.cli import main
from mcp_prism.core import portfolio as pf

DATA = shared_data("routellm")
D = Decimal


def _type(name: str, n: int, cheap_q: float, cheap_cost: str, strong_cost: str = "10") -> pf.TypeData:
    """n items; the cheap model scores `cheap_q` of the strong model's 1.0 on each."""
    return pf.TypeData(name, "S", tuple(pf.Item({"S": 1.0, "C": cheap_q}, {"S": D(strong_cost), "C": D(cheap_cost)})
                                        for _ in range(n)))


def test_target_takes_the_least_quality_lost_per_dollar_first() -> None:
    # a: loses 0.02/item and saves 9/item; b: loses 0.5 and saves 9; c: loses 0.1 but saves 1.
    types = [_type("a", 10, 0.98, "1"), _type("b", 10, 0.5, "1"), _type("c", 10, 0.9, "9")]
    plan = pf.choose(types, quality_target=0.95)
    assert plan.method == "exact" and plan.feasible
    assert plan.assignment == {"a": "C", "b": "S", "c": "C"}  # 29.8 + ... >= 95% of 30, at the lowest cost
    assert plan.chosen_on.quality_kept == pytest.approx((9.8 + 10 + 9) / 30)
    tight = pf.choose(types, quality_target=0.99)
    assert tight.assignment == {"a": "C", "b": "S", "c": "S"}
    none = pf.choose(types, quality_target=1.0)
    assert none.assignment == {"a": "S", "b": "S", "c": "S"} and none.chosen_on.cost_cut == 0


def test_budget_is_the_dual() -> None:
    types = [_type("a", 10, 0.98, "1"), _type("b", 10, 0.5, "1"), _type("c", 10, 0.9, "9")]
    plan = pf.choose(types, budget=D(200))  # all strong: 300; a and c cheap: 10 + 100 + 90, the best quality
    assert plan.assignment == {"a": "C", "b": "S", "c": "C"} and plan.chosen_on.cost == 200
    assert not pf.choose(types, budget=D(5)).feasible
    with pytest.raises(ValueError, match="exactly one"):
        pf.choose(types)


def test_greedy_agrees_with_exact_on_a_random_portfolio(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(4)
    types = [_type(f"t{i}", 5, rng.uniform(0.3, 1.0), f"{rng.uniform(0.5, 9):.2f}") for i in range(10)]
    exact = pf.choose(types, quality_target=0.9)
    monkeypatch.setattr(pf, "EXACT_LIMIT", 1)
    greedy = pf.choose(types, quality_target=0.9)
    assert greedy.method == "greedy" and greedy.feasible and greedy.chosen_on.quality_kept >= 0.9
    # Greedy by ratio is near the optimum here: within 5 points of cost cut.
    assert greedy.chosen_on.cost_cut >= exact.chosen_on.cost_cut - 0.05  # type: ignore[operator]


def test_certificate_is_measured_on_the_other_half() -> None:
    rng = random.Random(1)
    items = tuple(pf.Item({"S": 1.0, "C": float(rng.random() < 0.9)}, {"S": D(10), "C": D(1)}) for _ in range(200))
    t = pf.TypeData("x", "S", items)
    plan = pf.plan_out_of_sample([t], quality_target=0.8, seed=3)
    c = plan.certificate
    assert c is not None and c.items == 100 and plan.assignment == {"x": "C"}
    assert c.lower_bound < c.quality_kept and 0.8 < c.quality_kept <= 1  # type: ignore[operator]
    assert c.cost_cut == pytest.approx(0.9)


# ---------------------------------------------------------------- through the CLI and the store
def _cli(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main([*args, "--home", str(home), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _wide(path: Path, cheap_ok: float, n: int = 120, seed: int = 0) -> None:
    rng = random.Random(seed)
    rows = [{"prompt": f"{path.stem} request {i}", "gpt-4o-mini": rng.random() < cheap_ok, "gpt-4o": True,
             "gpt-4o-mini_response": "ok" * 20, "gpt-4o_response": "ok" * 20} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_analyze_proposes_and_team_promote_applies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    for task, ok in (("ticket_classification", 0.97), ("code_review", 0.4)):
        _wide(tmp_path / f"{task}.jsonl", ok)
        _cli(home, capsys, "import-outcomes", str(tmp_path / f"{task}.jsonl"), "--task-type", task)
    r = _cli(home, capsys, "analyze", "--quality-target", "0.75")
    plan = r["team_plan"]
    assert plan["to_cheaper"] == ["ticket_classification"] and plan["feasible"]
    assert plan["quality_lower_bound"] < plan["quality_kept"] and plan["held_out_items"] == 120
    assert 0.3 < plan["cost_cut"] < 0.6  # half the traffic moves to a model ~16x cheaper
    assert "Team-level target" in r["markdown"]
    done = _cli(home, capsys, "team-promote", "--quality-target", "0.75", "--author", "ana", "--reason", "target")
    assert list(done["promoted"]) == ["ticket_classification"] and done["monitors"]["ticket_classification"] > 0
    rule = _cli(home, capsys, "rules", "show", "ticket_classification")
    assert rule["rule"]["primary"] == "gpt-4o-mini" and rule["version"] == done["promoted"]["ticket_classification"]
    monitors = _cli(home, capsys, "monitor", "list")["monitors"]
    assert [m["task_type"] for m in monitors] == ["ticket_classification"]
    capsys.readouterr()
    assert main(["analyze", "--quality-target", "0.75", "--budget", "3", "--home", str(home)]) != 0
    assert "not both" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "question.jsonl").is_file(), reason=f"no RouteLLM data at {DATA}")
def test_mt_bench_categories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _cli(tmp_path, capsys, "import-outcomes", str(DATA))
    plan = _cli(tmp_path, capsys, "analyze", "--quality-target", "0.95")["team_plan"]
    assert len(plan["types"]) == 8 and plan["method"] == "exact" and plan["held_out_items"] == 40
    assert 0.6 < plan["cost_cut"] < 0.95 and plan["chosen_quality_kept"] >= 0.95
