"""Monitoring, alerts and re-evaluation on a real store: a regression delivered to a local webhook
receiver (Slack payload), automatic rollback, a receiver that is down, a watch that passes, rules due
for review; CLI and MCP smoke tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from mcp import Client

from mcp_prism.cli import main
from mcp_prism.config import Settings
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput
from mcp_prism.loop.monitoring import MonitorService
from mcp_prism.mcp_server import build_server
from mcp_prism.service import PrismService, UsageInput

pytestmark = pytest.mark.anyio


class Receiver:
    """A webhook receiver on 127.0.0.1 that keeps the JSON it gets."""

    def __init__(self, port: int) -> None:
        self.got: list[dict[str, Any]] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def receiver(port: int) -> Iterator[Receiver]:
    with Receiver(port) as r:
        yield r


@pytest.fixture
def settings(tmp_path: Path, port: int) -> Settings:
    (tmp_path / "config.toml").write_text(
        f'[alerts]\nwebhook_url = "http://127.0.0.1:{port}/hooks/T000/B000/secret"\n'
        '[monitoring]\nmin_rated = 20\n')
    return Settings.from_env({}, home=tmp_path)


@pytest.fixture
async def svc(settings: Settings):
    service = await PrismService.open(settings)
    try:
        yield service
    finally:
        await service.close()


def rated(n: int, quality: float, version: int, days_ago: float, task: str = "code_review",
          model: str = "gpt-5") -> list[UsageInput]:
    ts = iso(utcnow() - timedelta(days=days_ago))
    return [UsageInput(model=model, task_type=task, input_tokens=1000, output_tokens=100, quality=quality,
                       quality_source="human", rule_id=task, rule_version=version, timestamp=ts)
            for _ in range(n)]


async def deploy(svc: PrismService, *, auto_rollback: bool, days_left: float = 12) -> int:
    """v1 sonnet (baseline), v2 gpt-5 (monitored since two days ago); returns the monitor id."""
    for model in ("claude-sonnet-4-5", "gpt-5"):
        await svc.update_routing_rule({"task_type": "code_review", "primary": model}, author="t", reason="test")
    now = utcnow()

    async def work(conn: Any) -> int:
        cur = await conn.execute(
            "INSERT INTO monitors (task_type, rule_version, baseline_version, experiment_id, started_at, ends_at, "
            "threshold, auto_rollback, status) VALUES ('code_review', 2, 1, 'exp-1', ?, ?, 0.9, ?, 'watching')",
            (iso(now - timedelta(days=2)), iso(now + timedelta(days=days_left)), int(auto_rollback)))
        return int(cur.lastrowid)

    return await svc.store.transaction(work)


async def test_regression_is_delivered_and_rolled_back(svc: PrismService, settings: Settings,
                                                       receiver: Receiver) -> None:
    await deploy(svc, auto_rollback=True)
    await svc.record_many([*rated(30, 0.9, 1, 3, model="claude-sonnet-4-5"),  # baseline: 30/30
                           *rated(15, 0.8, 2, 1), *rated(10, 0.3, 2, 1)])  # monitored: 15/25
    monitor = MonitorService(svc, settings.user_config)
    r = await monitor.check_monitors()
    m = r.monitors[0]
    assert (m.status, m.rated, m.acceptable, m.baseline_rated, m.baseline_acceptable) == ("rolled_back", 25, 15,
                                                                                          30, 30)
    assert m.acceptable_share == pytest.approx(0.6) and m.upper_bound < 0.9 and m.baseline_share == 1.0
    assert (m.rolled_back_to, m.new_rule_version) == (1, 3)
    history = {v.version: v for v in (await svc.rule_history("code_review")).versions}
    assert history[3].rule == history[1].rule and history[3].author == "mcp-prism monitor"
    assert (await svc.rules(fresh=True))["code_review"].rule.primary == "claude-sonnet-4-5"

    assert [a.kind for a in r.alerts_raised] == ["regression", "rolled_back"]
    assert r.delivered == 2 and r.undelivered == 0 and r.delivery_errors == []
    assert len(receiver.got) == 2
    payload = receiver.got[0]
    assert set(payload) == {"text", "blocks"} and "regression" in payload["text"]
    block = payload["blocks"][0]
    assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    text = block["text"]["text"]
    for fragment in ("code_review", "v2 (monitored) vs v1 (baseline)", "15/25", "30/30",
                     "mcp-prism rules rollback code_review --to 1"):
        assert fragment in text, fragment
    assert "rolled back to v1" in receiver.got[1]["text"]
    assert (await monitor.list_monitors()).monitors[0].status == "rolled_back"

    # the monitor is no longer watched; nothing is raised or sent twice
    again = await monitor.check_monitors()
    assert again.monitors == [] and again.delivered == 0 and len(receiver.got) == 2


async def test_a_receiver_that_is_down_gets_the_alert_later(svc: PrismService, settings: Settings,
                                                            port: int) -> None:
    await deploy(svc, auto_rollback=False)
    await svc.record_many(rated(20, 0.2, 2, 1))
    monitor = MonitorService(svc, settings.user_config)
    r = await monitor.check_monitors()
    assert r.monitors[0].status == "regressed" and r.monitors[0].new_rule_version is None
    assert r.delivered == 0 and r.undelivered == 1 and "unreachable" in r.delivery_errors[0]
    assert "secret" not in " ".join(r.delivery_errors)  # the webhook URL holds a token
    assert (await svc.rules(fresh=True))["code_review"].version == 2  # no auto rollback asked
    stored = (await monitor.alerts()).alerts
    assert [(a.kind, a.delivered) for a in stored] == [("regression", False)]

    with Receiver(port) as receiver:
        later = await monitor.check_monitors()
    assert later.delivered == 1 and later.undelivered == 0 and len(receiver.got) == 1
    assert (await monitor.alerts()).alerts[0].delivered

    acked = await monitor.ack_alert(stored[0].id)
    assert acked.acknowledged and (await monitor.alerts()).alerts == []
    assert len((await monitor.alerts(open_only=False)).alerts) == 1
    with pytest.raises(InvalidInput, match="no alert has id 999"):
        await monitor.ack_alert(999)


async def test_a_watch_passes_after_its_window(svc: PrismService, settings: Settings, receiver: Receiver) -> None:
    await deploy(svc, auto_rollback=True, days_left=1)
    await svc.record_many(rated(20, 0.9, 2, 1))  # 20/20: not certified at 0.90, but no regression either
    monitor = MonitorService(svc, settings.user_config)
    first = await monitor.check_monitors()
    assert first.monitors[0].status == "watching" and first.alerts_raised == []
    done = await monitor.check_monitors(now=utcnow() + timedelta(days=2))
    assert done.monitors[0].status == "passed" and "passed" in done.monitors[0].summary
    assert receiver.got == [] and (await svc.rules(fresh=True))["code_review"].version == 2


async def test_review_due(svc: PrismService, settings: Settings, receiver: Receiver) -> None:
    now = utcnow()
    old, recent = iso(now - timedelta(days=120)), iso(now - timedelta(days=10))

    async def rules(conn: Any) -> None:
        for task, primary, evidence, created in (
                ("code_review", "claude-sonnet-4-5", "experiment:exp-old qualified", old),
                ("data_extraction", "gpt-5-nano", "experiment:exp-new 60/60", recent)):
            await conn.execute("INSERT INTO routing_rules VALUES (?, 1, ?, 't', 'r', ?, ?)",
                               (task, json.dumps({"task_type": task, "primary": primary}), evidence, created))
        await conn.execute(  # deepseek-reasoner was tried on code_review 10 days ago: not proposed again
            "INSERT INTO experiments (id, task_type, baseline_model, candidates, evaluation, status, source, "
            "created_at, updated_at) VALUES ('exp-ds', 'code_review', 'claude-sonnet-4-5', '[\"deepseek-reasoner\"]', "
            "'{\"method\": \"judge\"}', 'abandoned', 'store', ?, ?)", (recent, recent))

    await svc.store.transaction(rules)
    await svc.record_many([*rated(5, 0.9, 1, 1, task="code_review", model="claude-sonnet-4-5"),
                           *rated(5, 0.9, 1, 1, task="data_extraction", model="gpt-5-nano"),
                           *rated(5, 0.9, 0, 1, task="general", model="claude-sonnet-4-5")])
    monitor = MonitorService(svc, settings.user_config)
    r = await monitor.review_due()
    due = {p.task_type: p for p in r.proposals}
    assert set(due) == {"code_review", "general"}  # data_extraction: evaluated 10 days ago, cheapest in its tier
    review = due["code_review"]
    assert review.days_since_evaluated == 120 and review.last_evaluated == old
    assert any("120 days ago" in x for x in review.reasons)
    # an abandoned experiment tried nothing; the cheapest standard models on this profile
    assert review.candidates[:2] == ["deepseek-reasoner", "o4-mini"] and len(review.candidates) == 3
    assert review.estimated_monthly_saving_usd is not None and review.estimated_monthly_saving_usd > 0
    assert review.command and review.command.startswith("mcp-prism experiment start code_review --candidates ")
    assert due["general"].last_evaluated is None and "shipped default" in due["general"].reasons[0]
    assert sorted(a.task_type for a in r.alerts_raised) == ["code_review", "general"]
    assert len(receiver.got) == 2 and receiver.got[0]["blocks"][0]["text"]["type"] == "mrkdwn"

    again = await monitor.review_due()  # deduplicated per task type per day
    assert again.alerts_raised == [] and len(again.proposals) == 2 and len(receiver.got) == 2


async def test_review_skips_models_already_tried(svc: PrismService, settings: Settings) -> None:
    recent = iso(utcnow() - timedelta(days=10))

    async def work(conn: Any) -> None:
        await conn.execute(
            "INSERT INTO experiments (id, task_type, baseline_model, candidates, evaluation, status, source, "
            "created_at, updated_at) VALUES ('e', 'code_review', 'claude-sonnet-4-5', '[\"deepseek-reasoner\"]', "
            "'{\"method\": \"judge\"}', 'evaluated', 'store', ?, ?)", (recent, recent))

    await svc.store.transaction(work)
    await svc.record_many(rated(5, 0.9, 0, 1, model="claude-sonnet-4-5"))
    r = await MonitorService(svc, settings.user_config).review_due(raise_alerts=False)
    assert "deepseek-reasoner" not in r.proposals[0].candidates and r.alerts_raised == []


def test_cli_monitor_alerts_review(settings: Settings, receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(settings.home)

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main([*args, "--home", home])
        return code, capsys.readouterr().out

    code, out = run("monitor", "list")
    assert code == 0 and "No monitors yet" in out
    code, out = run("monitor", "check", "--json")
    assert code == 0 and json.loads(out)["monitors"] == [] and json.loads(out)["webhook_configured"]
    assert main(["record", "--model", "claude-sonnet-4-5", "--task-type", "general", "--home", home]) == 0
    code, out = run("review-due")
    assert code == 0 and "general" in out and "shipped default" in out
    code, out = run("alerts", "--json")
    alerts = json.loads(out)["alerts"]
    assert code == 0 and alerts[0]["kind"] == "review_due" and alerts[0]["delivered"]
    code, out = run("alerts", "--ack", str(alerts[0]["id"]))
    assert code == 0 and "acknowledged" in out
    code, out = run("alerts")
    assert "No open alerts" in out
    code, out = run("alerts", "--all")
    assert "review_due" in out
    assert main(["alerts", "--ack", "42", "--home", home]) == 2


async def test_mcp_tools(settings: Settings, receiver: Receiver) -> None:
    async with Client(build_server(settings, toolsets="loop")) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert {"analyze", "check_monitors", "list_alerts", "acknowledge_alert", "review_due"} <= set(tools)
        assert tools["analyze"].annotations.read_only_hint and tools["check_monitors"].annotations.destructive_hint
        r = await c.call_tool("record_usage", {"model": "claude-sonnet-4-5", "task_type": "test_generation",
                                               "input_tokens": 5000, "output_tokens": 1000})
        assert not r.is_error
        a = await c.call_tool("analyze", {"days": 7})
        assert not a.is_error and a.structured_content["rows"][0]["action"] == "test"
        m = await c.call_tool("check_monitors", {})
        assert not m.is_error and m.structured_content["monitors"] == []
        rd = await c.call_tool("review_due", {})
        assert not rd.is_error and rd.structured_content["proposals"][0]["task_type"] == "test_generation"
        al = await c.call_tool("list_alerts", {})
        alert_id = al.structured_content["alerts"][0]["id"]
        ack = await c.call_tool("acknowledge_alert", {"alert_id": alert_id})
        assert not ack.is_error and ack.structured_content["acknowledged"]
        bad = await c.call_tool("acknowledge_alert", {"alert_id": 999})
        assert bad.is_error and "no alert has id 999" in bad.content[0].text
