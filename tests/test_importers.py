"""Outcome importers end to end on a real SQLite store: small hand-made wide files (CSV, JSONL, a folder)
and an MT-Bench miniature with exact expected experiments, outputs and evaluations; the errors; the
loop summary; the CLI and MCP adapters; and the real RouteLLM data when it is present."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data
from mcp import Client

from mcp_prism.cli import main
from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.loop.importers import PriceBook, experiment_id, import_outcomes, parse_price
from mcp_prism.mcp_server import build_server
from mcp_prism.service import PrismService

DATA = shared_data("routellm")
needs_data = pytest.mark.skipif(not (DATA / "gsm8k_responses.csv").is_file(),
                                reason=f"the public RouteLLM outcome data is not at {DATA}")
PRICES = ("weak=1,2", "strong=10,20")  # USD per million tokens

TOY_CSV = """prompt,weak,strong,weak_response,strong_response
What is 2+2?,True,True,4,4
Integrate x^2 dx.,False,True,no idea,x^3/3 + C
Prove P=NP.,False,False,yes,no
Capital of France?,true,0,Paris,Lyon
Name a prime.,no,yes,4,2
"""


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[PrismService]:
    s = await PrismService.open(Settings.from_env({}, home=tmp_path / "home"))
    try:
        yield s
    finally:
        await s.close()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


async def rows(svc: PrismService, sql: str, *params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await svc.store.fetch(sql, params)]


# ---------------------------------------------------------------- wide CSV
@pytest.mark.anyio
async def test_csv_becomes_one_experiment(svc: PrismService, tmp_path: Path) -> None:
    r = await import_outcomes(svc, write(tmp_path / "toy_outcomes.csv", TOY_CSV), prices=PRICES)
    eid = experiment_id("toy", "toy_outcomes.csv")
    assert [e.experiment_id for e in r.experiments] == [eid]
    assert r.strong == "strong" and r.strong_chosen_by.startswith("highest mean score")
    assert r.scale == "binary" and "candidate correct, or both wrong" in r.acceptance_rule
    [exp] = await rows(svc, "SELECT * FROM experiments")
    assert (exp["task_type"], exp["baseline_model"], json.loads(exp["candidates"]), exp["status"], exp["source"]) \
        == ("toy", "strong", ["weak"], "evaluated", "import")
    evaluation = json.loads(exp["evaluation"])
    assert evaluation["method"] == "imported" and evaluation["threshold"] == 0.9
    assert evaluation["prices"]["weak"]["source"] == "--price override"

    items = await rows(svc, "SELECT item, prompt, category FROM experiment_items ORDER BY item")
    assert [i["prompt"] for i in items] == ["What is 2+2?", "Integrate x^2 dx.", "Prove P=NP.", "Capital of France?",
                                               "Name a prime."]
    assert {i["category"] for i in items} == {"toy"}

    out = await rows(svc, "SELECT item, model, role, response, status, input_tokens, output_tokens, cost_usd, score "
                          "FROM experiment_outputs ORDER BY item, model")
    assert len(out) == 10
    # "What is 2+2?" is 12 characters = 3 tokens, the answer "4" one token
    assert out[0] == {"item": 0, "model": "strong", "role": "baseline", "response": "4", "status": "ok",
                      "input_tokens": 3, "output_tokens": 1, "cost_usd": str(Decimal("0.00005")), "score": 1.0}
    assert out[1]["role"] == "candidate" and Decimal(out[1]["cost_usd"]) == Decimal("0.000005")  # 3*1 + 1*2
    assert [o["score"] for o in out if o["model"] == "weak"] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert [o["score"] for o in out if o["model"] == "strong"] == [1.0, 1.0, 0.0, 0.0, 1.0]

    evals = await rows(svc, "SELECT item, model, method, verdict, detail, evaluator FROM evaluations ORDER BY item")
    assert [e["verdict"] for e in evals] == ["acceptable", "unacceptable", "acceptable", "acceptable",
                                                "unacceptable"]
    assert {(e["model"], e["method"], e["evaluator"]) for e in evals} == {
        ("weak", "imported", "import:toy_outcomes.csv")}
    both_wrong = json.loads(evals[2]["detail"])
    assert both_wrong["as_good_as_baseline"] is True and both_wrong["candidate_correct"] is False
    assert both_wrong["baseline_correct"] is False and both_wrong["where"] == "toy_outcomes.csv:4"

    [s] = r.summaries
    assert (s.task_type, s.candidate, s.n, s.acceptable, s.qualified) == ("toy", "weak", 5, 3, False)
    assert s.candidate_mean_score == 0.4 and s.baseline_mean_score == 0.6
    assert "does not qualify" in s.verdict
    assert r.routing.routed == {"toy": "strong"} and r.routing.quality_kept == 1 and r.routing.cost_share == 1


@pytest.mark.anyio
async def test_reimport_replaces_and_foreign_ids_are_refused(svc: PrismService, tmp_path: Path) -> None:
    path = write(tmp_path / "toy.csv", TOY_CSV)
    first = await import_outcomes(svc, path, prices=PRICES)
    second = await import_outcomes(svc, path, prices=PRICES)
    assert not first.experiments[0].replaced and second.experiments[0].replaced
    assert (await rows(svc, "SELECT COUNT(*) AS n FROM experiments"))[0]["n"] == 1
    assert (await rows(svc, "SELECT COUNT(*) AS n FROM evaluations"))[0]["n"] == 5
    assert (await rows(svc, "SELECT COUNT(*) AS n FROM experiment_outputs"))[0]["n"] == 10
    # an experiment with that id that did not come from an import is never overwritten
    eid = first.experiments[0].experiment_id
    await svc.store.transaction(lambda c: c.execute("UPDATE experiments SET source = 'store' WHERE id = ?", (eid,)))
    with pytest.raises(InvalidInput, match="was not imported"):
        await import_outcomes(svc, path, prices=PRICES)
    assert (await rows(svc, "SELECT COUNT(*) AS n FROM evaluations"))[0]["n"] == 5


@pytest.mark.anyio
async def test_a_qualified_task_type_is_routed_to_the_cheap_model(svc: PrismService, tmp_path: Path) -> None:
    body = "prompt,weak,strong\n" + "".join(f"question {i},1,1\n" for i in range(60))
    r = await import_outcomes(svc, write(tmp_path / "easy.csv", body), strong="strong", prices=("weak=1,1",
                                                                                                 "strong=10,10"))
    [s] = r.summaries
    assert s.qualified and s.lower_bound == pytest.approx(0.05 ** (1 / 60))  # 60/60: bound = alpha^(1/n)
    assert r.routing.routed == {"easy": "weak"}
    assert r.routing.quality_kept == 1.0 and r.routing.cost_share == pytest.approx(0.1)
    assert any("no answers for" in n for n in r.notes)  # no response columns: output tokens unknown


# ---------------------------------------------------------------- JSONL, numeric scores, folders
@pytest.mark.anyio
async def test_jsonl_numeric_scores_with_tolerance(svc: PrismService, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "chat.jsonl", [
        {"prompt": "hello", "a": 8, "b": 9, "category": "greet"},
        {"prompt": "write a poem", "a": 6, "b": 9},
        {"prompt": "sum 1..10", "a": 10, "b": 7},
    ])
    strict = await import_outcomes(svc, path, prices=("a=1,1", "b=2,2"))
    assert strict.scale == "numeric" and strict.strong == "b"
    assert "candidate score >= baseline score - 0" in strict.acceptance_rule
    assert strict.summaries[0].acceptable == 1
    loose = await import_outcomes(svc, path, tolerance=1, prices=("a=1,1", "b=2,2"))
    assert "baseline score - 1" in loose.acceptance_rule and loose.summaries[0].acceptable == 2
    verdicts = await rows(svc, "SELECT verdict, detail FROM evaluations ORDER BY item")
    assert [v["verdict"] for v in verdicts] == ["acceptable", "unacceptable", "acceptable"]
    assert json.loads(verdicts[0]["detail"])["candidate_score"] == 8
    cats = await rows(svc, "SELECT category FROM experiment_items ORDER BY item")
    assert [c["category"] for c in cats] == ["greet", "chat", "chat"]


@pytest.mark.anyio
async def test_folder_gives_one_experiment_per_file(svc: PrismService, tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    write(folder / "maths_results.csv", TOY_CSV)
    jsonl(folder / "chat.jsonl", [{"prompt": "hi", "weak": True, "strong": True}])
    write(folder / "README.md", "ignored")
    r = await import_outcomes(svc, folder, prices=PRICES)
    assert sorted(e.task_type for e in r.experiments) == ["chat", "maths"]
    assert {s.task_type: s.n for s in r.summaries} == {"chat": 1, "maths": 5}
    with pytest.raises(InvalidInput, match="each file's name is its task type"):
        await import_outcomes(svc, folder, task_type="x")


# ---------------------------------------------------------------- MT-Bench
def mtbench(folder: Path, *, drop_turn: bool = False) -> Path:
    jsonl(folder / "question.jsonl", [
        {"question_id": 1, "category": "writing", "turns": ["Write a haiku.", "Now rhyme it."]},
        {"question_id": 2, "category": "writing", "turns": ["Write a limerick.", "Shorter."]},
        {"question_id": 3, "category": "math", "turns": ["2+2?", "Times 3?"]},
    ])
    judged = []
    scores = {("cheap", 1): (9, 7), ("big", 1): (9, 9), ("cheap", 2): (10, 10), ("big", 2): (9, 10),
              ("cheap", 3): (4, 2), ("big", 3): (10, 10)}
    for (model, qid), pair in scores.items():
        for turn, score in enumerate(pair, start=1):
            if drop_turn and (model, qid, turn) == ("cheap", 3, 2):
                continue
            answer = f"{model} answer {qid}.{turn}"
            prompt = (f"[Question]\nq\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
                      if turn == 1 else
                      f"<|The Start of Assistant A's Conversation with User|>\n\n### User:\nq\n\n### Assistant A:\n"
                      f"{model} answer {qid}.1\n\n### User:\nq2\n\n### Assistant A:\n{answer}\n\n"
                      "<|The End of Assistant A's Conversation with User|>")
            judged.append({"question_id": qid, "model": model, "judge": ["gpt-4", "single-v1"], "turn": turn,
                           "score": score, "user_prompt": prompt, "judgment": "[[x]]"})
    jsonl(folder / "judgements.jsonl", judged)
    return folder


@pytest.mark.anyio
async def test_mt_bench_one_experiment_per_category(svc: PrismService, tmp_path: Path) -> None:
    r = await import_outcomes(svc, mtbench(tmp_path / "mtb"), prices=("cheap=1,1", "big=10,10"))
    assert r.format == "mtbench" and r.strong == "big" and r.scale == "numeric"
    assert {e.task_type: e.items for e in r.experiments} == {"math": 1, "writing": 2}
    out = await rows(svc, "SELECT e.task_type, o.item, o.model, o.score, o.response, o.input_tokens "
                          "FROM experiment_outputs o JOIN experiments e ON e.id = o.experiment_id "
                          "ORDER BY e.task_type, o.item, o.model")
    got = {(o["task_type"], o["item"], o["model"]): o["score"] for o in out}
    assert got == {("math", 0, "big"): 10, ("math", 0, "cheap"): 3, ("writing", 0, "big"): 9,
                   ("writing", 0, "cheap"): 8, ("writing", 1, "big"): 9.5, ("writing", 1, "cheap"): 10}
    first = next(o for o in out if o["model"] == "cheap" and o["task_type"] == "writing" and o["item"] == 0)
    assert first["response"] == "cheap answer 1.1\n\ncheap answer 1.2"
    # turn 2 re-sends turn 1 and the model's own first answer: 14+13 + 14+16 characters = 57 -> 15 tokens
    assert first["input_tokens"] == 15
    prompt = json.loads((await rows(svc, "SELECT prompt FROM experiment_items WHERE category = 'math'"))[0]["prompt"])
    assert prompt["turns"] == ["2+2?", "Times 3?"] and prompt["messages"][0]["content"] == "2+2?"
    verdicts = {s.task_type: (s.acceptable, s.n) for s in r.summaries}
    assert verdicts == {"math": (0, 1), "writing": (1, 2)}


@pytest.mark.anyio
async def test_mt_bench_missing_turn_is_a_bad_row(svc: PrismService, tmp_path: Path) -> None:
    folder = mtbench(tmp_path / "mtb", drop_turn=True)
    with pytest.raises(InvalidInput, match=r"question.jsonl:3: question 3 lacks a judgement of every turn for cheap"):
        await import_outcomes(svc, folder)
    r = await import_outcomes(svc, folder, skip_bad=True, prices=("cheap=1,1", "big=10,10"))
    assert {e.task_type for e in r.experiments} == {"writing"}
    assert "task type math: every row was bad, so it was not imported" in r.notes
    with pytest.raises(InvalidInput, match=r"MT-Bench needs judgements\.jsonl"):
        await import_outcomes(svc, write(tmp_path / "lonely" / "question.jsonl", "{}\n"), fmt="mtbench")


# ---------------------------------------------------------------- errors
@pytest.mark.anyio
async def test_validation_errors(svc: PrismService, tmp_path: Path) -> None:
    cases = [
        (write(tmp_path / "a.csv", "question,weak,strong\nq,1,0\n"), "no 'prompt' column"),
        (write(tmp_path / "b.csv", "prompt,weak_response\nq,a\n"), "no score columns"),
        (write(tmp_path / "c.csv", "prompt,weak\nq,1\n"), "only one score column"),
        (write(tmp_path / "d.txt", "prompt,weak,strong\n"), "unknown format of d.txt"),
        (tmp_path / "missing.csv", "does not exist"),
    ]
    for path, message in cases:
        with pytest.raises(InvalidInput, match=message):
            await import_outcomes(svc, path)
    assert (await rows(svc, "SELECT COUNT(*) AS n FROM experiments"))[0]["n"] == 0


@pytest.mark.anyio
async def test_bad_rows_are_reported_with_line_numbers(svc: PrismService, tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 'prompt,weak,strong\nok,1,1\n,1,1\nq,maybe,1\n"multi\nline",0,1\nlast,1,\n')
    with pytest.raises(InvalidInput) as e:
        await import_outcomes(svc, path)
    text = str(e.value)
    assert "3 bad row(s), nothing was imported" in text and "--skip-bad" in text
    assert "t.csv:3: empty or missing prompt" in text
    assert "t.csv:4: column weak: score 'maybe' is neither True/False nor a number" in text
    assert "t.csv:7: column strong: empty score" in text  # csv line numbers count the multi-line cell
    assert (await rows(svc, "SELECT COUNT(*) AS n FROM experiments"))[0]["n"] == 0
    r = await import_outcomes(svc, path, skip_bad=True, prices=PRICES)
    assert r.experiments[0].items == 2 and len(r.experiments[0].skipped_rows) == 3
    bad_json = write(tmp_path / "j.jsonl", '{"prompt": "a", "weak": 1, "strong": 1}\nnot json\n[1]\n')
    with pytest.raises(InvalidInput, match=r"j.jsonl:2: not JSON .*\n  j.jsonl:3: not a JSON object"):
        await import_outcomes(svc, bad_json)


@pytest.mark.anyio
async def test_options_are_checked(svc: PrismService, tmp_path: Path) -> None:
    path = write(tmp_path / "toy.csv", TOY_CSV)
    with pytest.raises(UnknownName, match="unknown model in this data 'gpt'"):
        await import_outcomes(svc, path, strong="gpt")
    with pytest.raises(InvalidInput, match="threshold must be between 0 and 1"):
        await import_outcomes(svc, path, threshold=90)
    with pytest.raises(InvalidInput, match="MODEL=IN,OUT"):
        await import_outcomes(svc, path, prices=("weak=cheap",))
    assert parse_price("org/model=0.5,1.5") == ("org/model", (Decimal("0.5"), Decimal("1.5")))


@pytest.mark.anyio
async def test_prices_from_catalog_and_genai_prices_or_unpriced(svc: PrismService, tmp_path: Path) -> None:
    body = "prompt,gpt-4-1106-preview,mistralai/Mixtral-8x7B-Instruct-v0.1,claude-haiku-4-5,mystery\nq,1,0,1,0\n"
    r = await import_outcomes(svc, write(tmp_path / "p.csv", body))
    assert r.prices["gpt-4-1106-preview"].source == "genai-prices openai/gpt-4-turbo"
    assert r.prices["gpt-4-1106-preview"].input_usd_per_mtok == 10
    assert r.prices["mistralai/Mixtral-8x7B-Instruct-v0.1"].source == "genai-prices mistral/mixtral-8x7b"
    assert r.prices["claude-haiku-4-5"].source.startswith("catalog")
    assert r.prices["mystery"].source == "unpriced"
    assert any("mystery has no known price" in n for n in r.notes)
    costs = {o["model"]: o["cost_usd"] for o in await rows(svc, "SELECT model, cost_usd FROM experiment_outputs")}
    assert costs["mystery"] is None and costs["gpt-4-1106-preview"] is not None


# ---------------------------------------------------------------- adapters
def test_cli_import_outcomes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "toy.csv", TOY_CSV)
    code = main(["import-outcomes", str(path), "--home", str(tmp_path / "h"), "--price", "weak=1,2",
                 "--price", "strong=10,20", "--task-type", "Quiz"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "imported 5 items" in out and "| quiz" in out and "does not qualify" in out
    assert "keeps 100.0% of the strong model's mean quality at 100.0% of its cost" in out
    code = main(["import-outcomes", str(tmp_path / "nope.csv"), "--home", str(tmp_path / "h")])
    _, err = capsys.readouterr()
    assert code == 2 and "error: " in err and "does not exist" in err and "Traceback" not in err


@pytest.mark.anyio
async def test_mcp_tools(tmp_path: Path) -> None:
    path = write(tmp_path / "toy.csv", TOY_CSV)
    server = build_server(Settings.from_env({}, home=tmp_path), toolsets="data")  # the file is under PRISM_HOME
    async with Client(server) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert tools["evaluate_router"].annotations.read_only_hint
        assert tools["import_outcomes"].annotations.destructive_hint
        r = await c.call_tool("import_outcomes", {"path": str(path), "prices": list(PRICES)})
        assert not r.is_error and r.structured_content["summaries"][0]["acceptable"] == 3
        r = await c.call_tool("import_outcomes", {"path": str(path), "threshold": 0.9, "strong": "nobody"})
        assert r.is_error and "unknown model in this data 'nobody'" in r.content[0].text
        r = await c.call_tool("evaluate_router", {"path": str(path)})
        assert not r.is_error and r.structured_content["n"] == 5 and "5-fold" in r.structured_content["method"]
        r = await c.call_tool("evaluate_router", {"path": str(path), "folds": 6})
        assert r.is_error and "folds must be between 2 and the number of examples (5)" in r.content[0].text


# ---------------------------------------------------------------- the real data
@needs_data
@pytest.mark.anyio
async def test_real_gsm8k_and_mt_bench(svc: PrismService) -> None:
    r = await import_outcomes(svc, DATA / "gsm8k_responses.csv")
    [s] = r.summaries
    assert (s.task_type, s.n, s.acceptable, s.qualified) == ("gsm8k", 1319, 936, False)
    assert s.candidate_mean_score == pytest.approx(0.638, abs=0.001)
    assert s.baseline_mean_score == pytest.approx(0.857, abs=0.001)
    assert Decimal("0.05") < s.candidate_cost_usd < Decimal("0.5") < Decimal("2") < s.baseline_cost_usd < 10
    assert r.prices["mistralai/Mixtral-8x7B-Instruct-v0.1"].source == "genai-prices mistral/mixtral-8x7b"

    m = await import_outcomes(svc, DATA)
    assert m.format == "mtbench" and m.strong == "gpt-4-1106-preview"
    assert sorted(e.task_type for e in m.experiments) == ["coding", "extraction", "humanities", "math", "reasoning",
                                                          "roleplay", "stem", "writing"]
    means = {x.task_type: (x.candidate_mean_score, x.baseline_mean_score) for x in m.summaries}
    assert means["coding"] == pytest.approx((6.30, 8.65)) and means["writing"] == pytest.approx((9.55, 9.65))
    assert all(x.n == 10 and not x.qualified for x in m.summaries)  # 10 items can never certify 90%
    assert m.routing.quality_kept == 1 and m.routing.cost_share == 1
    assert any("fewer than 60 items" in n for n in m.notes)


# ---------------------------------------------------------------- issue 12.7: one cost formula, tiers per request
def test_imported_costs_price_each_request_at_its_own_tier(catalog) -> None:
    book = PriceBook({}, catalog)
    sonnet = book.price("claude-sonnet-4-5")
    assert (sonnet.input_usd_per_mtok, sonnet.output_usd_per_mtok) == (Decimal(3), Decimal(15))  # not $6 / $22.50
    assert book.cost("claude-sonnet-4-5", 1_000, 500) == Decimal("0.0105")  # 1000*3/1M + 500*15/1M, exactly
    gemini = book.price("gemini-2.5-pro")
    assert (gemini.input_usd_per_mtok, gemini.output_usd_per_mtok) == (Decimal("1.25"), Decimal(10))
    assert book.cost("gemini-2.5-pro", 2_000, 1_000) == Decimal("0.0125")
    # a request that does cross the 200k tier is billed at the tier, like the gateway bills it
    assert book.cost("claude-sonnet-4-5", 250_000, 0) == Decimal("1.5")
    usage = TokenUsage(input_tokens=250_000, output_tokens=10)
    assert book.cost("claude-sonnet-4-5", 250_000, 10) == catalog.cost("claude-sonnet-4-5", usage).usd
    assert book.cost("mystery-model", 10, 10) is None
