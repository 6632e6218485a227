"""`mcp-prism install` writes each task's current model into agents and commands, records the project,
and `mcp-prism sync` (run by `rules set`, `rules rollback` and `experiment promote`) keeps them in step
without touching files the user edited. And install never writes through a symlink that leaves the
project. Real temp projects and PRISM_HOME folders, the real CLI in-process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import real_client
from fakes import run_fake_providers
from mcp import Client

from mcp_prism import cli
from mcp_prism.config import Settings
from mcp_prism.errors import InvalidInput
from mcp_prism.install import MANIFEST, install, parse_frontmatter, uninstall
from mcp_prism.install_sync import REGISTRY, installed
from mcp_prism.mcp_server import build_server
from mcp_prism.service import PrismService


def snapshot(root: Path) -> dict[str, tuple[bytes, int] | str]:
    """Every entry under root (links as their target, not followed): content and mtime of files."""
    out: dict[str, tuple[bytes, int] | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out


def prism(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def model_of(path: Path) -> Any:
    return parse_frontmatter(path.read_text())[0].get("model")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "prism-home"
    h.mkdir()
    return h


def project(tmp_path: Path, name: str) -> Path:
    p = tmp_path / name
    p.mkdir()
    (p / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return p


# ==================================================================== symlinks out of the project
LINKS = [  # (tool, the path in the project that is a link, what it points at outside, outside content)
    ("claude", ".claude", "outside-dir", None),
    ("opencode", ".opencode/commands", "outside-dir", None),
    ("opencode", "AGENTS.md", "outside-notes.md", "# someone else's notes\n"),
    ("claude", "AGENTS.md", "outside-notes.md", "# someone else's notes\n"),
    ("opencode", "opencode.json", "outside.json", '{"theme": "dark"}\n'),
    ("claude", ".mcp.json", "missing/never.json", None),  # a dangling link: writing would create the target
    ("claude", ".mcp-prism", "outside-dir", None),
    ("opencode", ".opencode/skills/route-task/SKILL.md", "outside-skill.md", "not ours\n"),
]


@pytest.mark.parametrize(("tool", "link", "target", "content"), LINKS)
def test_install_refuses_links_that_leave_the_project_and_writes_nothing(
        tmp_path: Path, tool: str, link: str, target: str, content: str | None) -> None:
    proj, outside = project(tmp_path, "proj"), tmp_path / "outside"
    outside.mkdir()
    dest = outside / target
    if content is not None:
        dest.write_text(content)
    elif target == "outside-dir":
        dest.mkdir()
    (proj / link).parent.mkdir(parents=True, exist_ok=True)
    (proj / link).symlink_to(dest, target_is_directory=target == "outside-dir")
    before_in, before_out = snapshot(proj), snapshot(outside)
    with pytest.raises(InvalidInput) as e:
        install(proj, tool)
    message = str(e.value)
    assert "symlink" in message and "outside the project" in message and "nothing was written" in message
    assert str(proj / link.split("/")[0]) in message or str(proj / link) in message  # names the link
    assert snapshot(proj) == before_in and snapshot(outside) == before_out
    assert not (outside / "missing").exists()


def test_links_inside_the_project_are_fine(tmp_path: Path) -> None:
    proj = project(tmp_path, "proj")
    (proj / "tooling" / "claude").mkdir(parents=True)
    (proj / ".claude").symlink_to(proj / "tooling" / "claude", target_is_directory=True)
    install(proj, "claude")
    assert (proj / "tooling/claude/commands/review.md").is_file()


def test_uninstall_refuses_a_link_added_since(tmp_path: Path) -> None:
    proj, outside = project(tmp_path, "proj"), tmp_path / "outside"
    install(proj, "opencode")
    outside.mkdir()
    (outside / "opencode.json").write_text((proj / "opencode.json").read_text())
    (proj / "opencode.json").unlink()
    (proj / "opencode.json").symlink_to(outside / "opencode.json")
    before_in, before_out = snapshot(proj), snapshot(outside)
    with pytest.raises(InvalidInput, match="outside the project"):
        uninstall(proj, "opencode")
    assert snapshot(proj) == before_in and snapshot(outside) == before_out


def test_cli_install_through_a_link_is_a_clear_error(tmp_path: Path, home: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    proj, outside = project(tmp_path, "proj"), tmp_path / "outside"
    outside.mkdir()
    (proj / ".claude").symlink_to(outside, target_is_directory=True)
    code, _, err = prism(home, capsys, "install", "claude", "--dir", str(proj))
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert f"{proj / '.claude'} is a symlink to {outside}" in err
    assert list(outside.iterdir()) == [] and installed(home) == []


# ==================================================================== rule models in agents and commands
def test_install_writes_each_tasks_model_and_sync_follows_rule_changes(
        tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    claude, pinned, gw = project(tmp_path, "a"), project(tmp_path, "b"), project(tmp_path, "c")
    assert prism(home, capsys, "install", "claude", "--dir", str(claude))[0] == 0
    code, out, _ = prism(home, capsys, "install", "opencode", "--dir", str(pinned), "--pin-models",
                         "--toolsets", "loop,rules")
    assert code == 0
    assert prism(home, capsys, "install", "opencode", "--dir", str(gw), "--gateway", "http://127.0.0.1:4000")[0] == 0
    assert installed(home) == [(claude, "claude"), (pinned, "opencode"), (gw, "opencode")]

    # Claude Code: the rule's model as a full id in agents and task commands; /route and /costs get none
    assert model_of(claude / ".claude/commands/review.md") == "claude-sonnet-4-5"
    assert model_of(claude / ".claude/agents/reviewer.md") == "claude-sonnet-4-5"
    assert model_of(claude / ".claude/agents/test-writer.md") == "claude-haiku-4-5"
    assert model_of(claude / ".claude/commands/route.md") is None
    # OpenCode: provider/model with --pin-models, the gateway's task alias with --gateway
    assert model_of(pinned / ".opencode/commands/review.md") == "anthropic/claude-sonnet-4-5"
    assert model_of(pinned / ".opencode/agents/test-writer.md") == "anthropic/claude-haiku-4-5"
    assert model_of(gw / ".opencode/commands/review.md") == "prism/prism/code_review"
    server = json.loads((pinned / "opencode.json").read_text())["mcp"]["prism"]
    assert server["environment"] == {"PRISM_TOOLSETS": "loop,rules"}

    # the developer edits one installed agent: sync must keep it
    reviewer = claude / ".claude/agents/reviewer.md"
    reviewer.write_text(reviewer.read_text() + "\nAlways check the migrations too.\n")
    edited = reviewer.read_text()
    gw_before = snapshot(gw)

    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"task_type": "code_review", "primary": "gpt-5", "fallbacks": ["claude-opus-4-5"]}))
    code, out, err = prism(home, capsys, "rules", "set", str(rule), "--author", "ana", "--reason", "stronger")
    assert code == 0, err
    assert "file(s) updated in 3 project(s)" in out and f"{reviewer}" in out and "edited" in out
    assert model_of(claude / ".claude/commands/review.md") == "claude-opus-4-5"  # first Anthropic model
    assert model_of(pinned / ".opencode/commands/review.md") == "openai/gpt-5"
    assert model_of(pinned / ".opencode/agents/reviewer.md") == "openai/gpt-5"
    assert reviewer.read_text() == edited  # kept, and said so
    assert snapshot(gw) == gw_before  # the gateway alias already follows the rule
    assert model_of(claude / ".claude/commands/test.md") == "claude-haiku-4-5"  # other tasks untouched

    rule.write_text(json.dumps({"task_type": "code_review", "primary": "gpt-5-mini"}))
    code, out, _ = prism(home, capsys, "rules", "set", str(rule), "--author", "ana", "--reason", "cheaper")
    assert model_of(claude / ".claude/commands/review.md") == "sonnet"  # no Anthropic model: the tier's

    code, out, _ = prism(home, capsys, "rules", "rollback", "code_review", "--to", "0", "--author", "ana",
                         "--reason", "back", "--dry-run")
    assert model_of(claude / ".claude/commands/review.md") == "sonnet"  # a dry run syncs nothing
    code, out, _ = prism(home, capsys, "rules", "rollback", "code_review", "--to", "0", "--author", "ana",
                         "--reason", "back")
    assert code == 0 and "updated in 3 project(s)" in out
    assert model_of(claude / ".claude/commands/review.md") == "claude-sonnet-4-5"
    assert model_of(pinned / ".opencode/commands/review.md") == "anthropic/claude-sonnet-4-5"

    # a second sync changes nothing and still reports the edited file
    before = snapshot(claude)
    code, out, _ = prism(home, capsys, "sync")
    assert code == 0 and snapshot(claude) == before
    assert ".claude/agents/reviewer.md: edited since mcp-prism installed it" in out

    # a command the developer deleted stays deleted (only `mcp-prism install` puts it back)
    (claude / ".claude/commands/docs.md").unlink()
    (claude / ".mcp.json").unlink()
    code, out, _ = prism(home, capsys, "sync")
    assert ".claude/commands/docs.md: deleted since mcp-prism installed it" in out
    assert not (claude / ".claude/commands/docs.md").exists() and not (claude / ".mcp.json").exists()
    assert prism(home, capsys, "install", "claude", "--dir", str(claude))[0] == 0
    assert (claude / ".claude/commands/docs.md").exists() and (claude / ".mcp.json").exists()


def test_sync_dry_run_writes_nothing_then_sync_catches_up(tmp_path: Path, home: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    proj = project(tmp_path, "a")
    assert prism(home, capsys, "install", "claude", "--dir", str(proj))[0] == 0

    async def change() -> None:  # the rule changes without a sync (through the service, as MCP tools do)
        svc = await PrismService.open(Settings.from_env({}, home=home))
        try:
            await svc.update_routing_rule({"task_type": "test_generation", "primary": "claude-sonnet-4-5"},
                                          author="a", reason="r")
        finally:
            await svc.close()

    asyncio.run(change())
    registry, before = (home / REGISTRY).read_text(), snapshot(proj)
    code, out, _ = prism(home, capsys, "sync", "--dry-run")
    assert code == 0 and "dry run" in out and ".claude/commands/test.md" in out
    assert snapshot(proj) == before and (home / REGISTRY).read_text() == registry
    code, out, _ = prism(home, capsys, "sync")
    assert code == 0 and model_of(proj / ".claude/commands/test.md") == "claude-sonnet-4-5"
    assert model_of(proj / ".claude/agents/test-writer.md") == "claude-sonnet-4-5"


def test_sync_forgets_uninstalled_projects_and_survives_a_broken_one(
        tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gone, broken, fine, removed = (project(tmp_path, n) for n in ("gone", "broken", "fine", "removed"))
    for p in (gone, broken, fine, removed):
        assert prism(home, capsys, "install", "claude", "--dir", str(p))[0] == 0
    assert prism(home, capsys, "uninstall", "claude", "--dir", str(removed))[0] == 0
    assert (removed, "claude") not in installed(home)
    for p in gone.iterdir():
        if p.is_dir():
            for q in sorted(p.rglob("*"), reverse=True):
                q.rmdir() if q.is_dir() else q.unlink()
            p.rmdir()
        else:
            p.unlink()
    gone.rmdir()
    (broken / MANIFEST).write_text("{not json")
    rule = tmp_path / "rule.json"
    rule.write_text(json.dumps({"task_type": "code_review", "primary": "claude-opus-4-5"}))
    code, out, err = prism(home, capsys, "rules", "set", str(rule), "--author", "a", "--reason", "r")
    assert code == 0, err  # the rule change stands whatever happens to the projects
    assert f"Not synced: {broken}" in out and "is damaged" in out
    assert model_of(fine / ".claude/commands/review.md") == "claude-opus-4-5"
    code, out, _ = prism(home, capsys, "--json", "sync")
    rows = {r["project"]: r for r in json.loads(out)["projects"]}
    assert rows[str(broken)]["status"] == "failed"
    assert (gone, "claude") not in installed(home) and (fine, "claude") in installed(home)
    assert rows[str(fine)]["status"] == "synced" and rows[str(fine)]["updated"] == []


def test_a_damaged_registry_is_a_clear_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / REGISTRY).write_text("[1, 2")
    code, _, err = prism(home, capsys, "sync")
    assert code == 2 and "installs.json is damaged" in err and "Traceback" not in err


def test_promote_reaches_installed_agents(tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proj = project(tmp_path, "a")
    prism(home, capsys, "install", "claude", "--dir", str(proj))
    assert model_of(proj / ".claude/agents/reviewer.md") == "claude-sonnet-4-5"
    # outcomes measured elsewhere: haiku as good as sonnet on 60 of 60 code reviews, so it qualifies
    data = tmp_path / "code_review.csv"
    data.write_text("prompt,claude-haiku-4-5,claude-sonnet-4-5\n" + "".join(f"review {i},1,1\n" for i in range(60)))
    code, out, err = prism(home, capsys, "--json", "import-outcomes", str(data), "--strong", "claude-sonnet-4-5")
    assert code == 0, err
    [exp] = json.loads(out)["experiments"]
    code, out, err = prism(home, capsys, "experiment", "promote", exp["experiment_id"], "claude-haiku-4-5",
                           "--author", "ana", "--reason", "qualified 60/60")
    assert code == 0, err
    assert "updated in 1 project(s)" in out
    assert model_of(proj / ".claude/agents/reviewer.md") == "claude-haiku-4-5"
    assert model_of(proj / ".claude/commands/review.md") == "claude-haiku-4-5"


# ==================================================================== the real Claude Code CLI
@pytest.mark.slow
def test_claude_code_runs_review_on_the_rule_model_and_follows_a_rule_change(
        tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`claude -p "/review ..."` (npm @anthropic-ai/claude-code, offline, straight at a fake Anthropic API: no
    gateway) sends the installed command with the rule's model; after `rules set` it sends the new one."""
    claude = real_client("claude")
    proj = project(tmp_path, "proj")
    (proj / "src").mkdir()
    (proj / "src" / "app.py").write_text("def add(a, b):\n    return a - b\n")
    # the MCP server is not under test here: a command that exits keeps Claude Code from waiting on it
    assert prism(home, capsys, "install", "claude", "--dir", str(proj), "--mcp-command", "true")[0] == 0
    cc_home = tmp_path / "cc-home"
    (cc_home / ".claude").mkdir(parents=True)
    with run_fake_providers() as fake:
        env = {"PATH": os.environ["PATH"], "HOME": str(cc_home), "CLAUDE_CONFIG_DIR": str(cc_home / ".claude"),
               "DISABLE_TELEMETRY": "1", "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
               "ANTHROPIC_BASE_URL": fake.base_url, "ANTHROPIC_API_KEY": str(fake.keys["anthropic"])}

        def models_sent(prompt: str) -> set[str]:
            fake.reset()
            p = subprocess.run([str(claude), "-p", prompt, "--output-format", "json"], env=env, cwd=proj,
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
            return {c.body["model"] for c in fake.calls if c.path == "/v1/messages"}

        default = models_sent("say hello")
        assert models_sent("/review src/app.py") == {"claude-sonnet-4-5"} != default  # the rule's, not the default
        rule = tmp_path / "rule.json"
        rule.write_text(json.dumps({"task_type": "code_review", "primary": "claude-haiku-4-5"}))
        assert prism(home, capsys, "rules", "set", str(rule), "--author", "a", "--reason", "qualified")[0] == 0
        assert models_sent("/review src/app.py") == {"claude-haiku-4-5"}


def test_a_rerun_keeps_the_toolsets_and_pins_chosen_before(tmp_path: Path, home: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    proj = project(tmp_path, "p")
    assert prism(home, capsys, "install", "opencode", "--dir", str(proj), "--toolsets", "team", "--pin-models")[0] == 0
    before = snapshot(proj)
    assert prism(home, capsys, "install", "opencode", "--dir", str(proj))[0] == 0
    assert snapshot(proj) == before
    assert prism(home, capsys, "install", "opencode", "--dir", str(proj), "--toolsets", "core",
                 "--no-pin-models")[0] == 0
    assert "environment" not in json.loads((proj / "opencode.json").read_text())["mcp"]["prism"]
    assert model_of(proj / ".opencode/commands/review.md") is None
    code, _, err = prism(home, capsys, "install", "opencode", "--dir", str(proj), "--toolsets", "budgets")
    assert code == 2 and "unknown toolset 'budgets'" in err and "core, rules, loop, data, team, all" in err


def test_rule_changes_over_mcp_sync_installed_projects_too(tmp_path: Path, home: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    proj = project(tmp_path, "p")
    assert prism(home, capsys, "install", "claude", "--dir", str(proj))[0] == 0

    async def over_mcp() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with Client(build_server(Settings.from_env({}, home=home), toolsets="rules")) as c:
            args = {"rule": {"task_type": "code_review", "primary": "claude-opus-4-5"}, "author": "agent",
                    "reason": "harder reviews"}
            dry = await c.call_tool("update_routing_rule", {**args, "dry_run": True})
            saved = await c.call_tool("update_routing_rule", args)
            rolled = await c.call_tool("rollback_routing_rule", {"task_type": "test_generation", "to_version": 0,
                                                                 "author": "agent", "reason": "noop"})
            for r in (dry, saved, rolled):
                assert not r.is_error, r.content
            return dry.structured_content, saved.structured_content, rolled.structured_content  # type: ignore

    dry, saved, rolled = asyncio.run(over_mcp())
    assert not any("Installed agents" in n for n in dry["notes"])  # a dry run syncs nothing
    assert any("file(s) updated in 1 project(s)" in n for n in saved["notes"])
    assert model_of(proj / ".claude/commands/review.md") == "claude-opus-4-5"
    assert any("0 file(s) updated" in n for n in rolled["notes"])


def test_install_says_which_tasks_could_not_get_their_rule_model(tmp_path: Path) -> None:
    models = {"code_review": [("gpt-5", "openai")], "test_generation": [("claude-haiku-4-5", "anthropic")]}
    r = install(project(tmp_path, "c"), "claude", models=models)
    assert any("Claude Code runs Anthropic models only: code_review (gpt-5) run on the tier's Claude model" in n
               for n in r.notes)
    r = install(project(tmp_path, "o"), "opencode", models={"code_review": [("acme-coder", "vllm")]}, pin_models=True)
    assert any("no OpenCode provider for the models of" in n and "code_review" in n for n in r.notes)
    r = install(project(tmp_path, "n"), "opencode", models=models)
    assert any("add --pin-models" in n for n in r.notes)
