"""The whole loop on one store, against fake providers: capture real requests → experiment → run →
evaluate → report → promote → the promoted rule regresses in production → alert and automatic rollback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeProviders, run_fake_providers
from test_store import PG_URL, drop_pg_schema, fresh_pg_schema, pg_unreachable

from mcp_prism.config import Settings
from mcp_prism.loop.evaluate import EvaluationService
from mcp_prism.loop.experiments import ExperimentService
from mcp_prism.loop.monitoring import MonitorService
from mcp_prism.service import PrismService, UsageInput

KEYS = {"OPENAI_API_KEY": "sk-openai-loop", "ANTHROPIC_API_KEY": "sk-ant-loop", "GEMINI_API_KEY": "gm-loop"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as f:
        yield f


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_capture_experiment_qualify_promote_regress_rollback(fake: FakeProviders, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   backend: str) -> None:
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    env: dict[str, str] = {}
    schema = None
    if backend == "postgres":  # the same loop on the shared store several gateway replicas would use
        reason = await pg_unreachable()
        if reason:
            pytest.skip(reason)
        schema = fresh_pg_schema()
        env["PRISM_DATABASE_URL"] = f"{PG_URL}?schema={schema}"
    (tmp_path / "config.toml").write_text(
        f'[providers.openai]\nbase_url = "{fake.base_url}/v1"\n'
        f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n'
        f'[task_types.code_review]\ncapture_samples = true\n'
        f'[monitoring]\nmin_rated = 20\n')
    svc = await PrismService.open(Settings.from_env(env, home=tmp_path))
    try:
        # 1. production traffic on the expensive model, with prompts captured (the task type opted in)
        await svc.record_many([UsageInput(
            model="claude-sonnet-4-5", task_type="code_review", input_tokens=3000, output_tokens=600,
            latency_ms=2000, prompt=f"Review this diff #{i}: rename variable x{i}", response=f"echo: Review #{i}",
        ) for i in range(70)])
        baseline_version = (await svc.rules())["code_review"].version

        # 2. an experiment on 60 of those requests with a cheaper candidate, paid once
        exps = ExperimentService(svc)
        info = await exps.start("code_review", ["gpt-5-nano"], samples=60,
                                evaluation={"method": "automated"})
        calls_before = len(fake.calls)
        await exps.run(info.id)
        assert len(fake.calls) - calls_before == 60  # the baseline's answers came from the captured requests
        await exps.run(info.id)
        assert len(fake.calls) - calls_before == 60  # nothing to redo, nothing paid twice

        # 3. automated evaluation: the fake answers "echo: <prompt>", which this check accepts
        await EvaluationService(svc).automated(info.id, {"type": "regex", "pattern": r"^echo: Review this diff"})
        report = await exps.report(info.id)
        cand = report.candidates[0]
        assert (cand.acceptable, cand.evaluated) == (60, 60)
        assert cand.verdict == "qualified" and cand.lower_bound >= 0.95  # 60/60 certifies 95% (bound 95.1%)

        # 4. promote: a new rule version routes code reviews to the candidate, under a monitor
        promoted = await exps.promote(info.id, "gpt-5-nano", author="lead", reason="qualified 60/60",
                                      auto_rollback=True)
        active = (await svc.rules(fresh=True))["code_review"]
        assert active.rule.primary == "gpt-5-nano" and active.version == promoted.new_version
        route = await svc.route_task(task_type="code_review")
        assert route.model == "gpt-5-nano"

        # 5. in production the new version's answers are rated poorly: a confident regression
        await svc.record_many([UsageInput(
            model="gpt-5-nano", task_type="code_review", input_tokens=3000, output_tokens=600, latency_ms=500,
            quality=0.2 if i < 20 else 0.9, quality_source="human", rule_id="code_review",
            rule_version=promoted.new_version) for i in range(25)])
        check = await MonitorService(svc).check_monitors(deliver=False)
        assert any(r.status == "rolled_back" for r in check.monitors), check
        back = (await svc.rules(fresh=True))["code_review"]
        assert back.version > promoted.new_version and back.rule.primary != "gpt-5-nano"
        kinds = {a.kind for a in (await MonitorService(svc).alerts()).alerts}
        assert {"regression", "rolled_back"} <= kinds
        assert baseline_version == 0
    finally:
        await svc.close()
        if schema:
            await drop_pg_schema(schema)
