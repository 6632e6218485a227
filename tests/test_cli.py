"""The CLI adapter end to end: `main([...])` in-process on a real SQLite home under tmp_path, plus real
`python -m mcp_prism` subprocesses to prove the entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mcp_prism import cli
from mcp_prism.cli import main
from mcp_prism.core.report import money
from mcp_prism.demo import DEMO_MODEL, DEMO_PROJECT, MIX, sample_inputs
from mcp_prism.results import (
    CompareResult,
    CostReport,
    ModelList,
    QualityResult,
    RecordResult,
    RouteResult,
    RuleChange,
    RuleHistory,
    RuleView,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = "1200"  # sample requests for in-process demo runs (the default month is exercised by subprocess)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRISM_HOME", "PRISM_DB", "PRISM_CONFIG", "PRISM_DEBUG", "PRISM_TOKEN"):
        monkeypatch.delenv(name, raising=False)


class Run:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home, self.capsys = home, capsys
        self.demo_db = home / "demo.db"

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main([*args, "--home", str(self.home)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self(*args, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(tmp_path / "home", capsys)


def _bad(result: tuple[int, str, str], *needles: str) -> str:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "error:" in err and "Traceback" not in err and "Traceback" not in out
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------- demo
def test_demo_prints_sample_label_and_consistent_before_after(run: Run) -> None:
    code, out, err = run("demo", "--requests", SMALL)
    assert code == 0, err
    report = CostReport.model_validate(run.json("report", "--project", DEMO_PROJECT, "--db", str(run.demo_db)))
    before, after, saving = (report.monthly_projection_usd, report.monthly_after_routing_usd,
                             report.monthly_saving_usd)
    assert after is not None and saving is not None
    assert saving > 0 and after < before
    assert saving == before - after  # exact, as Decimals
    assert "SAMPLE DATA" in out and DEMO_PROJECT in out and DEMO_MODEL in out
    assert str(run.demo_db) in out  # the sample has a store of its own (issue 12.6)
    assert "Routing per task type" in out and "Biggest savings opportunities" in out
    for value in (before, after, saving):
        assert money(value) in out
    assert f"{report.monthly_saving_pct:.1f}%" in out
    assert "mcp-prism serve" in out.splitlines()[-1]  # the last line says what to do next
    # every task type of the mix is in the routing table, all of it on the one mid-tier model today
    assert {line.task_type for line in report.routing} == set(MIX)
    assert all(line.current_models == [DEMO_MODEL] for line in report.routing)


def test_demo_json_is_the_cost_report_and_matches_the_human_numbers(run: Run) -> None:
    data = run.json("demo", "--requests", SMALL)
    report = CostReport.model_validate(data)
    assert report.total_requests == int(SMALL) and report.filters == {"project": DEMO_PROJECT}
    before, after = Decimal(data["monthly_projection_usd"]), Decimal(data["monthly_after_routing_usd"])
    assert Decimal(data["monthly_saving_usd"]) == before - after > 0
    code, out, _ = run("demo", "--requests", SMALL)  # same data again: the same numbers are printed
    assert code == 0 and money(before) in out and money(after) in out and money(before - after) in out


def test_demo_twice_stores_nothing_new(run: Run) -> None:
    first = run.json("demo", "--requests", SMALL)
    code, out, _ = run("demo", "--requests", SMALL)
    assert code == 0 and "nothing added" in out
    second = run.json("demo", "--requests", SMALL)
    assert first["total_requests"] == second["total_requests"] == int(SMALL)
    assert first["total_cost_usd"] == second["total_cost_usd"]
    everything = run.json("report", "--db", str(run.demo_db))
    assert everything["total_requests"] == int(SMALL)


def test_demo_never_mixes_into_the_real_store_and_is_removable(run: Run) -> None:
    assert run("record", "--model", "gpt-5", "--task-type", "general", "--input-tokens", "1000")[0] == 0
    run.json("demo", "--requests", SMALL)
    real = run.json("report")
    assert real["total_requests"] == 1  # the real report, analysis and profiles never see the sample
    assert run.json("report", "--db", str(run.demo_db))["total_requests"] == int(SMALL)
    # a store an older version filled: sample events inside the real store are voided by --remove
    assert run("demo", "--requests", "50", "--db", str(run.home / "prism.db"))[0] == 0
    assert run.json("report")["total_requests"] == 51
    code, out, err = run("demo", "--remove")
    assert code == 0, err
    assert "deleted the sample store" in out and "voided 50 sample event(s)" in out
    assert not run.demo_db.exists() and run.json("report")["total_requests"] == 1
    assert "no sample store" in run("demo", "--remove")[1]


def test_demo_sample_is_deterministic_and_follows_the_mix() -> None:
    now = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
    a = sample_inputs(days=30, seed=7, now=now)
    b = sample_inputs(days=30, seed=7, now=now)
    assert a == b and len(a) == 20_000
    assert sample_inputs(days=30, seed=8, now=now) != a
    # a different clock moves the timestamps only: what was sent stays the same
    later = sample_inputs(days=30, seed=7, now=datetime(2026, 12, 3, 23, 59, tzinfo=UTC))
    assert [replace(u, timestamp=None) for u in later] == [replace(u, timestamp=None) for u in a]
    counts: dict[str, int] = {}
    for u in a:
        counts[u.task_type or ""] = counts.get(u.task_type or "", 0) + 1
    weight = sum(MIX.values())
    assert counts == {t: 20_000 * w // weight for t, w in MIX.items()}
    simple = sum(counts[t] for t in ("ticket_classification", "code_autocomplete", "data_extraction",
                                     "email_drafting", "doc_generation", "test_generation"))
    assert simple == 12_000  # 60%
    assert {u.model for u in a} == {DEMO_MODEL} and {u.source for u in a} == {"demo"}
    assert {u.project for u in a} == {DEMO_PROJECT} and all(u.team.startswith("sample-team-") for u in a)
    assert len({u.request_id for u in a}) == len(a) and a[0].request_id == "demo-7-0"
    errors = sum(u.status != "ok" for u in a)
    assert 100 <= errors <= 300  # about 1%
    assert any(u.cached_input_tokens for u in a) and any(u.quality is not None for u in a)
    stamps = [datetime.fromisoformat(u.timestamp or "") for u in a]
    assert max(stamps) <= now and (now - min(stamps)).days < 30


# ---------------------------------------------------------------- route, report, compare, models
def test_route_prints_the_model(run: Run) -> None:
    code, out, err = run("route", "write unit tests for the invoice parser")
    assert code == 0, err
    assert out.splitlines()[0].startswith("claude-haiku-4-5") and "test_generation" in out
    r = RouteResult.model_validate(run.json("route", "review this pull request", "--task-type", "code_review"))
    assert r.model == "claude-sonnet-4-5" and r.task_type == "code_review" and not r.classified
    # No task type fits: the CLI says the classification is unsure, names the runner-up, and the way out.
    code, out, err = run("route", "hello there")
    assert code == 0, err
    uncertain = next(line for line in out.splitlines() if line.startswith("uncertain:"))
    r = RouteResult.model_validate(run.json("route", "hello there"))
    assert r.uncertain and r.runner_up and r.runner_up in uncertain and "--task-type" in uncertain


def test_report_and_compare_json_match_their_schemas(run: Run) -> None:
    run.json("demo", "--requests", SMALL, "--db", str(run.home / "prism.db"))  # sample data asked into this store
    report = CostReport.model_validate(run.json("report", "--days", "30", "--by", "task_type,model",
                                                "--team", "sample-team-a"))
    assert report.group_by == ["task_type", "model"] and report.filters == {"team": "sample-team-a"}
    assert 0 < report.total_requests < int(SMALL)
    code, out, _ = run("report", "--by", "team")
    assert code == 0 and "sample-team-b" in out
    cmp = CompareResult.model_validate(run.json("compare", "--task-type", "code_review"))
    assert any(c.current and c.model == "claude-sonnet-4-5" for c in cmp.candidates)
    cmp = CompareResult.model_validate(run.json("compare", "--models", "claude-haiku-4-5,gpt-5",
                                                "--input-tokens", "1000", "--output-tokens", "100"))
    assert sorted(c.model for c in cmp.candidates) == ["claude-haiku-4-5", "gpt-5"]
    assert cmp.profile_source == "given" and cmp.tokens_per_request["input_tokens"] == 1000


def test_models_tier_simple_lists_only_simple_models(run: Run) -> None:
    listing = ModelList.model_validate(run.json("models", "--tier", "simple"))
    assert listing.models and {m.tier for m in listing.models} == {"simple"}
    code, out, _ = run("models", "--tier", "simple")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| model ")]
    assert len(rows) == len(listing.models)
    assert all(line.split("|")[3].strip() == "simple" for line in rows)
    assert "claude-opus-4-5" not in out and "claude-haiku-4-5" in out


# ---------------------------------------------------------------- rules
def test_rules_set_show_rollback_history(run: Run, tmp_path: Path) -> None:
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"task_type": "code_review", "primary": "claude-haiku-4-5",
                                "fallbacks": ["gpt-5-mini"]}))
    dry = RuleChange.model_validate(run.json("rules", "set", str(rule), "--author", "ana", "--reason", "try",
                                             "--dry-run"))
    assert dry.dry_run and dry.new_version is None
    assert RuleView.model_validate(run.json("rules", "show", "code_review")).version == 0

    code, out, err = run("rules", "set", str(rule), "--author", "ana", "--reason", "experiment 12",
                         "--evidence", "exp-12")
    assert code == 0, err
    assert "v0 -> v1" in out
    code, out, _ = run("rules", "show", "code_review")
    assert code == 0 and "code_review v1" in out and "claude-haiku-4-5" in out and "ana" in out
    shown = RuleView.model_validate(run.json("rules", "show", "code_review"))
    assert (shown.version, shown.rule["primary"], shown.evidence) == (1, "claude-haiku-4-5", "exp-12")
    assert RouteResult.model_validate(run.json("route", "--task-type", "code_review")).rule_version == 1

    back = RuleChange.model_validate(run.json("rules", "rollback", "code_review", "--to", "0", "--author", "ana",
                                              "--reason", "quality dropped"))
    assert (back.previous_version, back.new_version, back.rule["primary"]) == (1, 2, "claude-sonnet-4-5")
    history = RuleHistory.model_validate(run.json("rules", "history", "code_review"))
    assert [v.version for v in history.versions] == [0, 1, 2] and len(history.audit) == 2
    code, out, _ = run("rules", "history", "code_review")
    assert code == 0 and "quality dropped" in out
    views = [RuleView.model_validate(v) for v in run.json("rules", "list")]
    assert {v.task_type for v in views} == set(MIX) and next(
        v for v in views if v.task_type == "code_review").version == 2


def test_rules_set_from_stdin(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO('{"task_type": "general", "primary": "gpt-5"}'))
    change = RuleChange.model_validate(run.json("rules", "set", "-", "--author", "a", "--reason", "r"))
    assert change.new_version == 1 and change.rule["primary"] == "gpt-5"


# ---------------------------------------------------------------- record, rate
def test_record_and_rate(run: Run) -> None:
    args = ("record", "--model", "claude-haiku-4-5", "--task-type", "email_drafting", "--input-tokens", "800",
            "--output-tokens", "400", "--latency-ms", "900", "--request-id", "job-1")
    first = RecordResult.model_validate(run.json(*args))
    assert not first.duplicate and first.priced and first.cost_usd and first.cost_usd > 0
    again = RecordResult.model_validate(run.json(*args))
    assert again.duplicate and again.id == first.id
    rated = QualityResult.model_validate(run.json("rate", first.id, "0.75", "--source", "judge"))
    assert (rated.quality, rated.source, rated.previous_quality) == (0.75, "judge", None)
    code, out, _ = run("rate", "job-1", "0.9")
    assert code == 0 and "0.90 from human" in out and "was 0.75" in out


# ---------------------------------------------------------------- errors
def test_bad_input_exits_2_with_a_clear_error(run: Run, tmp_path: Path) -> None:
    _bad(run("route", "--task-type", "nope"), "unknown task type 'nope'")
    _bad(run("rules", "show", "nope"), "unknown task type")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _bad(run("rules", "set", str(bad), "--author", "a", "--reason", "r"), "not valid JSON")
    _bad(run("rules", "set", str(tmp_path / "missing.json"), "--author", "a", "--reason", "r"), "does not exist")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"task_type": "code_review", "primary": "no-such-model"}))
    _bad(run("rules", "set", str(wrong), "--author", "a", "--reason", "r"), "no-such-model")
    _bad(run("rules", "set", str(wrong), "--reason", "r"), "--author", "usage:")
    _bad(run("rules", "rollback", "code_review", "--to", "1", "--author", "a", "--reason", "r"), "no version 1")
    _bad(run("report", "--since", "2026-13-01"), "since must be a date")
    _bad(run("report", "--until", "yesterday"), "until must be a date")
    _bad(run("report", "--by", "colour"), "cannot group by")
    _bad(run("report", "--days", "3", "--since", "2026-01-01"), "not allowed with")
    _bad(run("rate", "nope", "0.5"), "no usage event")
    _bad(run("rate", "x", "1.5"), "between 0")
    _bad(run("models", "--tier", "huge"), "invalid choice")
    _bad(run("models", "--provider", "acme"), "unknown provider")
    _bad(run("record", "--model", "claude-haiku-4-5", "--task-type", "general", "--input-tokens", "10",
             "--cached-input-tokens", "20"), "cached_input_tokens")
    _bad(run("demo", "--days", "0"), "must be >= 1")


def test_unexpected_failure_is_logged_not_shown(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("internal detail sk-not-a-real-key")

    monkeypatch.setattr(cli.PrismService, "list_models", boom)
    code, out, err = run("models")
    assert code == 1 and out == ""
    assert err.startswith("error: unexpected failure (RuntimeError); see the log")
    assert "Traceback" not in err and "sk-not-a-real-key" not in err
    log = run.home / cli.CRASH_LOG
    assert "RuntimeError" in log.read_text()
    monkeypatch.setenv("PRISM_DEBUG", "1")
    code, _, err = run("models")
    assert code == 1 and "Traceback" in err


def test_serve_calls_the_mcp_server(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_prism import mcp_server

    calls: list[tuple[str, Any, dict[str, Any]]] = []
    monkeypatch.setattr(mcp_server, "serve_stdio",
                        lambda settings, toolsets: calls.append(("stdio", settings, {"toolsets": toolsets})))
    monkeypatch.setattr(mcp_server, "serve_http", lambda settings, **kw: calls.append(("http", settings, kw)))
    monkeypatch.setenv("PRISM_TOKEN", "tok-123")
    monkeypatch.delenv("PRISM_TOOLSETS", raising=False)
    assert run("serve")[0] == 0
    monkeypatch.setenv("PRISM_ALLOWED_HOSTS", "prism.internal, 10.0.0.5")
    code, out, err = run("serve", "--http", "--host", "0.0.0.0", "--port", "9000", "--allowed-host", "gw",
                         "--toolsets", "team,loop")
    assert code == 0 and "tok-123" not in out + err
    assert [c[0] for c in calls] == ["stdio", "http"]
    assert calls[0][2] == {"toolsets": ("core",)}
    assert calls[1][2] == {"host": "0.0.0.0", "port": 9000, "token": "tok-123",
                           "allowed_hosts": ["gw", "prism.internal", "10.0.0.5"], "toolsets": ("core", "team", "loop")}
    assert calls[0][1].db_path == run.home / "prism.db"


def test_help_and_home_before_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["--home", str(tmp_path), "--json", "models", "--tier", "complex"]) == 0
    assert {m["tier"] for m in json.loads(capsys.readouterr().out)["models"]} == {"complex"}
    assert (tmp_path / "prism.db").exists()
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


# ---------------------------------------------------------------- the real entry point
def _python(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    return subprocess.run([sys.executable, "-m", "mcp_prism", *args, "--home", str(home)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_python_m_mcp_prism_demo(tmp_path: Path) -> None:
    home = tmp_path / "prism home"
    p = _python("demo", home=home)
    assert p.returncode == 0, p.stderr
    assert "SAMPLE DATA" in p.stdout and "20,000 sample requests (20,000 new)" in p.stdout
    assert "Traceback" not in p.stderr
    assert _python("report", "--json", home=home).stdout.count('"total_requests": 0') == 1  # the real store
    j = _python("report", "--project", DEMO_PROJECT, "--json", "--db", str(home / "demo.db"), home=home)
    report = CostReport.model_validate_json(j.stdout)
    assert report.total_requests == 20_000
    assert report.monthly_saving_usd == report.monthly_projection_usd - (report.monthly_after_routing_usd or 0) > 0
    assert money(report.monthly_projection_usd) in p.stdout and money(report.monthly_saving_usd) in p.stdout
    bad = _python("route", "--task-type", "nope", home=home)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown task type") and "Traceback" not in bad.stderr
    assert _python("--help", home=home).returncode == 0
