"""The learned router live: outcome data imported, a router trained and stored, a mixed rule promoted, the
real gateway (fake providers behind it) sending easy requests to the cheap model and hard ones to the strong
one with the router's version and score recorded, and a regression rolling the rule — and the router —
back. Also route_task on the same rule, and the pure decision in core/routing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeProviders, run_fake_providers
from test_gateway import KEYS, RunningGateway

from mcp_prism.cli import main
from mcp_prism.config import Settings
from mcp_prism.core import learned_router as lr
from mcp_prism.core.routing import choose_model
from mcp_prism.core.rules import parse_rule
from mcp_prism.service import PrismService, UsageInput

TASK, CHEAP, STRONG = "ticket_classification", "gpt-4o-mini", "gpt-4o"
EASY = ["reset my password please", "where is my invoice for march", "change the email on my account",
        "how do I update billing address", "unsubscribe me from the newsletter"]
HARD = ["legal dispute over a chargeback with fraud allegations and a regulator complaint",
        "escalate: data breach suspected, customer threatens lawsuit over leaked records",
        "contract termination dispute citing breach of the service level agreement and penalties",
        "chargeback fraud investigation with conflicting bank statements and legal notice"]


def _outcomes(path: Path, n: int = 240, seed: int = 5) -> None:
    """The cheap model fails the legal/fraud escalations and handles the routine requests."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            hard = rng.random() < 0.35
            text = f"{rng.choice(HARD if hard else EASY)} (ticket {i})"
            cheap_ok = (rng.random() < 0.1) if hard else (rng.random() < 0.97)
            f.write(json.dumps({"prompt": text, CHEAP: cheap_ok, STRONG: True,
                                f"{CHEAP}_response": "queue: billing", f"{STRONG}_response": "queue: legal"}) + "\n")


def _cli(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    code = main([*args, "--home", str(home), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as f:
        yield f


def _ask(gw: RunningGateway, text: str) -> tuple[str, dict[str, Any]]:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model=f"prism/{TASK}", messages=[{"role": "user", "content": text}])
    return raw.headers["x-prism-rule"], gw.event(raw.headers["x-prism-request-id"])


def test_gateway_serves_a_mixed_rule_and_a_regression_rolls_the_router_back(
        tmp_path: Path, fake: FakeProviders, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    with RunningGateway(home, fake):  # writes the config (fake provider URLs) the CLI below reads too
        pass
    data = tmp_path / "tickets.jsonl"
    _outcomes(data)
    imported = _cli(home, capsys, "import-outcomes", str(data), "--task-type", TASK)
    assert imported["strong"] == STRONG
    trained = _cli(home, capsys, "router", "train", TASK, "--author", "ana", "--reason", "tickets differ")
    assert trained["version"] == 1 and trained["cheap"] == CHEAP and trained["strong"] == STRONG
    e = trained["expected"]  # measured on held-out items with the frozen threshold, with intervals
    assert e["quality_kept_95"][0] <= e["quality_kept"] <= e["quality_kept_95"][1] and e["quality_kept"] > 0.9
    assert 0.2 < e["strong_share"] < 0.6 and e["cost_cut"] > 0.3
    promoted = _cli(home, capsys, "router", "promote", TASK, "1", "--author", "ana", "--reason", "router v1")
    rule_version = promoted["new_version"]
    assert promoted["change"]["rule"]["router"] == {"version": 1, "strong": STRONG}

    with RunningGateway(home, fake) as gw:
        for text, model in (("reset my password please", CHEAP), (HARD[1], STRONG)):
            rule, ev = _ask(gw, text)
            assert rule == f"{TASK}@v{rule_version}"
            assert ev["model"] == model and ev["rule_version"] == rule_version and ev["router_version"] == 1
            assert (ev["router_score"] >= trained["threshold"]) == (model == STRONG)
        # Rated badly: 20 requests on the mixed rule, scored 0.1 by a human.
        ids = [gw.openai().chat.completions.with_raw_response.create(
            model=f"prism/{TASK}", messages=[{"role": "user", "content": f"{EASY[i % 5]} #{i}"}]
        ).headers["x-prism-request-id"] for i in range(20)]
        for i in ids:
            gw.event(i)
            _cli(home, capsys, "rate", i, "0.1")
        check = _cli(home, capsys, "monitor", "check")
        [m] = [m for m in check["monitors"] if m["rule_version"] == rule_version]
        assert m["status"] == "rolled_back" and m["rolled_back_to"] == promoted["previous_version"]
        assert {a["kind"] for a in check["alerts_raised"]} == {"regression", "rolled_back"}
        time.sleep(2.2)  # the gateway re-reads rules every 2 s
        rule, ev = _ask(gw, HARD[1])
        assert rule == f"{TASK}@v{m['new_rule_version']}" and ev["router_version"] is None
        assert ev["router_score"] is None and ev["model"] != STRONG  # the router no longer decides


def test_route_task_uses_the_mixed_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    data = tmp_path / "tickets.jsonl"
    _outcomes(data)
    _cli(home, capsys, "import-outcomes", str(data), "--task-type", TASK)
    _cli(home, capsys, "router", "train", TASK, "--author", "ana", "--reason", "r")
    _cli(home, capsys, "router", "promote", TASK, "1", "--author", "ana", "--reason", "r")

    async def run() -> tuple[list[Any], Any]:
        svc = await PrismService.open(Settings.from_env({}, home=home))
        try:
            routes = [await svc.route_task(t, task_type=TASK) for t in ("reset my password please", HARD[0])]
            h = routes[1]  # recorded back as an MCP client would, with what route_task returned
            rec = await svc.record_usage(UsageInput(model=h.model, task_type=TASK, input_tokens=10, rule_id=h.rule_id,
                                                    rule_version=h.rule_version, router_version=h.router_version,
                                                    router_score=h.router_score))
            row = (await svc.store.fetch("SELECT router_version, router_score FROM usage_events WHERE id = ?",
                                         (rec.id,)))[0]
            return routes, row
        finally:
            await svc.close()

    (easy, hard), row = asyncio.run(run())
    assert (row["router_version"], row["router_score"]) == (1, hard.router_score)
    assert (easy.model, hard.model) == (CHEAP, STRONG)
    assert easy.router_version == hard.router_version == 1 and easy.router_score < hard.router_score
    assert any("mixed rule: router v1" in r for r in hard.reasons)


def test_a_mixed_rule_needs_a_stored_router(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"task_type": TASK, "primary": CHEAP, "router": {"version": 3, "strong": STRONG}}))
    capsys.readouterr()
    assert main(["rules", "set", str(rule), "--author", "a", "--reason", "r", "--home", str(tmp_path)]) != 0
    assert "no router v3 for task type ticket_classification" in capsys.readouterr().err


def test_the_decision_is_the_core_s() -> None:
    """choose_model is the one decision: cheap unless hard; without the router it cannot load, strong."""
    settings = Settings.from_env({}, home=Path("/nonexistent-prism-home"))
    catalog, types = settings.catalog(), settings.task_types()
    rule = parse_rule({"task_type": TASK, "primary": CHEAP, "router": {"version": 2, "strong": STRONG}}, catalog, types)
    examples = [lr.Example(f"{t} {i}", 0.0 if t in HARD else 1.0, 1.0) for i in range(30) for t in (*EASY, *HARD)]
    router = lr.train(examples, seed=1)
    easy = choose_model(rule, catalog, router=router, text=EASY[0])
    hard = choose_model(rule, catalog, router=router, text=HARD[0])
    assert (easy.model.name, hard.model.name) == (CHEAP, STRONG)
    assert easy.router_version == 2 and easy.router_score is not None and hard.router_score > easy.router_score
    blind = choose_model(rule, catalog, router=None, text=EASY[0])
    assert blind.model.name == STRONG and "unavailable" in blind.reasons[-1]
    again = lr.LearnedRouter.from_json(json.loads(json.dumps(router.to_json())))
    assert again.hardness(HARD[2]) == pytest.approx(router.hardness(HARD[2]), abs=1e-5)


@pytest.mark.anyio
async def test_mcp_tools_train_promote_and_route(tmp_path: Path) -> None:
    from mcp import Client

    from mcp_prism.mcp_server import build_server

    (tmp_path / "h").mkdir()
    data = tmp_path / "h" / "tickets.jsonl"  # under PRISM_HOME: a file root of the stdio server
    _outcomes(data)
    server = build_server(Settings.from_env({}, home=tmp_path / "h"), toolsets="all")
    async with Client(server) as c:
        r = await c.call_tool("import_outcomes", {"path": str(data), "task_type": TASK})
        assert not r.is_error
        r = await c.call_tool("promote_router", {"task_type": TASK, "version": 1, "author": "a", "reason": "r"})
        assert r.is_error and "no router v1" in r.content[0].text
        r = await c.call_tool("train_router", {"task_type": TASK, "author": "a", "reason": "r"})
        assert not r.is_error and r.structured_content["version"] == 1
        r = await c.call_tool("promote_router", {"task_type": TASK, "version": 1, "author": "a", "reason": "r"})
        assert not r.is_error and r.structured_content["auto_rollback"]
        r = await c.call_tool("route_task", {"description": HARD[3], "task_type": TASK})
        out = r.structured_content
        assert out["model"] == STRONG and out["router_version"] == 1 and out["router_score"] is not None
