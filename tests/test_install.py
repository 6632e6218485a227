"""`mcp-prism install|uninstall opencode|claude` in temp projects: what lands where, valid configs for each
tool, merging into the user's files, idempotency, dry runs, user edits kept, and exact uninstall."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from mcp_prism import install as inst
from mcp_prism.config import Settings
from mcp_prism.core.tasks import BUILTIN_NAMES
from mcp_prism.errors import InvalidInput
from mcp_prism.install import MANIFEST, install, parse_frontmatter, uninstall
from mcp_prism.install_sync import installed
from mcp_prism.service import PrismService

GATEWAY = "http://127.0.0.1:4000"
# Top-level keys of OpenCode's config schema that we may write (it rejects unknown top-level keys).
OPENCODE_TOP_KEYS = {"$schema", "mcp", "provider", "model"}
COMMANDS = {"review", "test", "docs", "security", "deploy-check", "route", "costs"}
SKILLS = {"route-task", "read-cost-report", "qualify-model"}
AGENTS = {"reviewer", "bug-investigator", "test-writer"}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: content and modification time (to prove a run wrote nothing)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def contents(root: Path) -> dict[str, bytes]:
    return {k: v[0] for k, v in snapshot(root).items()}


def actions(result: inst.InstallResult) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in result.changes:
        out.setdefault(c.action, set()).add(c.path)
    return out


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "proj"
    p.mkdir()
    (p / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    return p


# ------------------------------------------------------------------------------------ OpenCode
def test_opencode_install_writes_what_opencode_reads(project: Path) -> None:
    r = install(project, "opencode")
    assert {f".opencode/commands/{c}.md" for c in COMMANDS} <= actions(r)["create"]
    for c in COMMANDS:
        assert (project / f".opencode/commands/{c}.md").read_text() == inst.commands()[c].text
    for s in SKILLS:
        meta, _ = parse_frontmatter((project / f".opencode/skills/{s}/SKILL.md").read_text())
        assert meta["name"] == s
    for a in AGENTS:
        meta, _ = parse_frontmatter((project / f".opencode/agents/{a}.md").read_text())
        assert meta["mode"] == "subagent" and "model" not in meta
    agents_md = (project / "AGENTS.md").read_text()
    assert agents_md == inst.template_text("python")  # guessed from pyproject.toml
    assert not (project / "CLAUDE.md").exists() and not (project / ".mcp.json").exists()

    config = json.loads((project / "opencode.json").read_text())
    assert set(config) == {"$schema", "mcp"} and config["$schema"] == "https://opencode.ai/config.json"
    server = config["mcp"]["prism"]
    assert server == {"type": "local", "command": [sys.executable, "-m", "mcp_prism", "serve"], "enabled": True}
    assert r.template == "python" and r.gateway is None
    assert any("fill in" in n for n in r.notes)


def test_opencode_with_gateway_defines_the_provider_and_routes_commands_through_it(project: Path) -> None:
    r = install(project, "opencode", gateway=GATEWAY + "/v1/", task_types=[*BUILTIN_NAMES, "sql_migration"])
    assert r.gateway == GATEWAY
    config = json.loads((project / "opencode.json").read_text())
    assert set(config) <= OPENCODE_TOP_KEYS
    provider = config["provider"]["prism"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": GATEWAY + "/v1", "apiKey": "{env:PRISM_API_KEY}"}
    # the gateway's model ids: `auto` and `prism/<task_type>`, team task types included
    assert set(provider["models"]) == {"auto"} | {f"prism/{t}" for t in [*BUILTIN_NAMES, "sql_migration"]}
    assert all(m["tool_call"] is True for m in provider["models"].values())
    assert config["model"] == "prism/auto"

    def resolves(model_id: str) -> bool:  # OpenCode splits provider/model at the first slash
        provider_id, _, model = model_id.partition("/")
        return model in config["provider"].get(provider_id, {}).get("models", {})

    assert resolves(config["model"])
    for name, doc in inst.commands().items():
        meta, body = parse_frontmatter((project / f".opencode/commands/{name}.md").read_text())
        assert body == doc.body
        if doc.task_type:
            assert meta["model"] == f"prism/prism/{doc.task_type}" and resolves(meta["model"])
        else:
            assert "model" not in meta
    for name, doc in inst.agents().items():
        meta, _ = parse_frontmatter((project / f".opencode/agents/{name}.md").read_text())
        assert meta["model"] == f"prism/prism/{doc.task_type}" and resolves(meta["model"])
    assert "do not call record_usage" in (project / "AGENTS.md").read_text()
    assert any("mcp-prism gateway" in n for n in r.notes)


# ------------------------------------------------------------------------------------ Claude Code
def test_claude_install_writes_what_claude_code_reads(project: Path) -> None:
    r = install(project, "claude", template="go", gateway=GATEWAY)
    assert (project / "CLAUDE.md").read_text() == "@AGENTS.md\n"
    assert (project / "AGENTS.md").read_text().startswith((inst.bundle() / "agents_templates" / "go.md").read_text())
    for c in COMMANDS:
        assert (project / f".claude/commands/{c}.md").read_text() == inst.commands()[c].text
    for s in SKILLS:
        assert (project / f".claude/skills/{s}/SKILL.md").is_file()
    models = {a: parse_frontmatter((project / f".claude/agents/{a}.md").read_text())[0]["model"] for a in AGENTS}
    assert models == {"reviewer": "sonnet", "bug-investigator": "opus", "test-writer": "haiku"}
    config = json.loads((project / ".mcp.json").read_text())
    assert config == {"mcpServers": {"prism": {"command": sys.executable, "args": ["-m", "mcp_prism", "serve"],
                                               "env": {}}}}
    assert any(f"ANTHROPIC_BASE_URL={GATEWAY}" in n for n in r.notes)
    assert not (project / "opencode.json").exists() and not (project / ".opencode").exists()


@pytest.mark.anyio
async def test_the_configured_mcp_command_starts_the_server(project: Path, tmp_path: Path) -> None:
    install(project, "claude")
    server = json.loads((project / ".mcp.json").read_text())["mcpServers"]["prism"]
    env = {**os.environ, "PRISM_HOME": str(tmp_path / "home")}
    env.pop("PRISM_DB", None)
    env.pop("PRISM_CONFIG", None)
    params = StdioServerParameters(command=server["command"], args=server["args"], env=env, cwd=str(project))
    with (tmp_path / "server.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as c:
            prompts = {p.name for p in (await c.list_prompts()).prompts}
            tools = {t.name for t in (await c.list_tools()).tools}
    assert {"review", "deploy-check"} <= prompts and "route_task" in tools


# ------------------------------------------------------------------------------------ idempotent, dry run
@pytest.mark.parametrize("tool", ["opencode", "claude"])
def test_second_run_changes_nothing(project: Path, tool: str) -> None:
    install(project, tool, gateway=GATEWAY)
    before = snapshot(project)
    r = install(project, tool, gateway=GATEWAY)
    assert set(actions(r)) == {"unchanged"}
    assert snapshot(project) == before
    assert "Nothing to change." in inst.render_result(r)


@pytest.mark.parametrize("tool", ["opencode", "claude"])
def test_dry_run_lists_the_changes_and_writes_nothing(project: Path, tool: str) -> None:
    before = snapshot(project)
    dry = install(project, tool, dry_run=True)
    assert snapshot(project) == before and dry.dry_run
    assert "dry run" in inst.render_result(dry)
    real = install(project, tool)
    assert [c.model_dump() for c in dry.changes] == [c.model_dump() for c in real.changes]
    before = snapshot(project)
    dry = uninstall(project, tool, dry_run=True)
    assert snapshot(project) == before and "remove" in actions(dry)


def test_both_tools_in_one_project_share_agents_md(project: Path) -> None:
    original = contents(project)
    install(project, "opencode", gateway=GATEWAY)
    install(project, "claude")  # without --gateway: the shared section keeps the gateway line
    assert set(actions(install(project, "opencode", gateway=GATEWAY))) == {"unchanged"}
    assert set(actions(install(project, "claude"))) == {"unchanged"}
    assert "do not call record_usage" in (project / "AGENTS.md").read_text()

    r = uninstall(project, "opencode")
    assert "AGENTS.md" in actions(r)["keep"]  # Claude Code still uses it
    assert (project / "AGENTS.md").exists() and not (project / ".opencode").exists()
    assert not (project / "opencode.json").exists()
    uninstall(project, "claude")
    assert contents(project) == original
    assert sorted(p.name for p in project.iterdir()) == ["pyproject.toml"]


# ------------------------------------------------------------------------------------ merging
def test_merges_into_existing_config_and_instructions_and_uninstall_restores_them(project: Path) -> None:
    user_config = {"$schema": "https://opencode.ai/config.json", "theme": "dark",
                   "mcp": {"github": {"type": "remote", "url": "https://example.com/mcp"}},
                   "provider": {"ollama": {"npm": "@ai-sdk/openai-compatible", "models": {"llama": {}}}},
                   "model": "ollama/llama"}
    (project / "opencode.json").write_text(json.dumps(user_config, indent=2) + "\n")
    (project / "AGENTS.md").write_text("# Our rules\n\nUse tabs.\n")
    (project / ".opencode" / "commands").mkdir(parents=True)
    (project / ".opencode/commands/review.md").write_text("---\ndescription: our own review\n---\nReview.\n")
    original = contents(project)

    r = install(project, "opencode", template="rust", gateway=GATEWAY)
    config = json.loads((project / "opencode.json").read_text())
    assert config["theme"] == "dark" and config["mcp"]["github"] == user_config["mcp"]["github"]
    assert config["provider"]["ollama"] == user_config["provider"]["ollama"] and "prism" in config["provider"]
    assert config["model"] == "ollama/llama"  # the user's choice wins
    assert ("opencode.json", "model: already set by you; left as it is") in {(c.path, c.detail) for c in r.changes}
    agents_md = (project / "AGENTS.md").read_text()
    assert agents_md.startswith("# Our rules\n\nUse tabs.\n\n" + inst.BEGIN) and "rust" not in agents_md
    assert "AGENTS.md" in actions(r)["append"]
    assert any("--template rust not used" in n for n in r.notes)
    assert (project / ".opencode/commands/review.md").read_text().endswith("Review.\n")  # theirs, kept
    assert ".opencode/commands/review.md" in actions(r)["keep"]
    assert set(actions(install(project, "opencode", gateway=GATEWAY))) <= {"unchanged", "keep"}

    uninstall(project, "opencode")
    assert contents(project) == original


def test_a_user_prism_server_is_kept(project: Path) -> None:
    mine = {"mcpServers": {"prism": {"type": "http", "url": "https://prism.internal/mcp"}}}
    (project / ".mcp.json").write_text(json.dumps(mine))
    r = install(project, "claude")
    assert json.loads((project / ".mcp.json").read_text()) == mine
    assert any(c.action == "keep" and "mcpServers/prism" in c.detail for c in r.changes)
    uninstall(project, "claude")
    assert json.loads((project / ".mcp.json").read_text()) == mine


def test_claude_md_without_agents_md_gets_the_section(project: Path) -> None:
    (project / "CLAUDE.md").write_text("# Notes for Claude\n")
    install(project, "opencode")  # OpenCode reads CLAUDE.md when there is no AGENTS.md: keep it that way
    install(project, "claude")
    assert not (project / "AGENTS.md").exists()
    text = (project / "CLAUDE.md").read_text()
    assert text.startswith("# Notes for Claude\n\n" + inst.BEGIN) and text.count(inst.BEGIN) == 1
    uninstall(project, "claude")
    uninstall(project, "opencode")
    assert (project / "CLAUDE.md").read_text() == "# Notes for Claude\n"


def test_claude_md_pointing_at_agents_md_leaves_claude_md_alone(project: Path) -> None:
    (project / "AGENTS.md").write_text("# Rules\n")
    (project / "CLAUDE.md").write_text("@AGENTS.md\n\nMore.\n")
    install(project, "claude")
    assert (project / "CLAUDE.md").read_text() == "@AGENTS.md\n\nMore.\n"
    assert inst.BEGIN in (project / "AGENTS.md").read_text()


@pytest.mark.parametrize(("marker", "template"), [("package.json", "typescript"), ("go.mod", "go"),
                                                   ("Cargo.toml", "rust"), ("pom.xml", "java"), (None, "generic")])
def test_template_is_guessed_from_the_project(tmp_path: Path, marker: str | None, template: str) -> None:
    if marker:
        (tmp_path / marker).write_text("")
    assert install(tmp_path, "opencode").template == template
    # a re-run keeps the recorded template even if the project's files change
    (tmp_path / "pyproject.toml").write_text("")
    assert install(tmp_path, "opencode").template == template


# ------------------------------------------------------------------------------------ user edits, upgrades
def test_user_edits_are_never_overwritten_or_deleted(project: Path) -> None:
    install(project, "claude")
    edited = project / ".claude/commands/review.md"
    edited.write_text(edited.read_text() + "\nAlso check our logging rules.\n")
    agents_md = project / "AGENTS.md"
    agents_md.write_text(agents_md.read_text().replace("<project name>", "Billing"))

    r = install(project, "claude")
    assert ".claude/commands/review.md" in actions(r)["keep"]
    assert edited.read_text().endswith("logging rules.\n")

    r = uninstall(project, "claude")
    assert edited.exists() and ".claude/commands/review.md" in actions(r)["keep"]
    assert not (project / ".claude/commands/test.md").exists()
    # AGENTS.md was filled in: it stays, only our section goes
    assert agents_md.read_text().startswith("# AGENTS.md — Billing") and inst.BEGIN not in agents_md.read_text()
    assert any("kept" in n for n in r.notes)
    assert not (project / MANIFEST).exists() and not (project / ".mcp-prism").exists()


def test_an_edited_prism_section_is_kept(project: Path) -> None:
    (project / "AGENTS.md").write_text("# Rules\n")
    install(project, "opencode")
    text = (project / "AGENTS.md").read_text()
    (project / "AGENTS.md").write_text(text.replace("free (no model call)", "free"))
    assert "AGENTS.md" in actions(install(project, "opencode", gateway=GATEWAY))["keep"]
    r = uninstall(project, "opencode")
    assert "AGENTS.md" in actions(r)["keep"] and inst.BEGIN in (project / "AGENTS.md").read_text()


def test_an_unedited_older_install_is_upgraded_and_stale_files_removed(project: Path) -> None:
    install(project, "opencode")
    manifest_path = project / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    files = manifest["tools"]["opencode"]["files"]
    # pretend an older version installed another review.md and a command that no longer ships
    old = "---\ndescription: old review\n---\nold $ARGUMENTS\n"
    (project / ".opencode/commands/review.md").write_text(old)
    files[".opencode/commands/review.md"]["sha256"] = inst._sha(old)
    (project / ".opencode/commands/retired.md").write_text(old)
    files[".opencode/commands/retired.md"] = {"kind": "file", "sha256": inst._sha(old)}
    manifest_path.write_text(json.dumps(manifest))

    r = install(project, "opencode")
    assert ".opencode/commands/review.md" in actions(r)["update"]
    assert ".opencode/commands/retired.md" in actions(r)["remove"]
    assert (project / ".opencode/commands/review.md").read_text() == inst.commands()["review"].text
    assert not (project / ".opencode/commands/retired.md").exists()


def test_dropping_the_gateway_removes_what_it_added(project: Path) -> None:
    install(project, "opencode", gateway=GATEWAY)
    r = install(project, "opencode")
    config = json.loads((project / "opencode.json").read_text())
    assert "provider" not in config and "model" not in config and "mcp" in config
    assert {"removed provider/prism", "removed model"} <= {c.detail for c in r.changes}
    meta, _ = parse_frontmatter((project / ".opencode/commands/review.md").read_text())
    assert "model" not in meta


def test_a_user_key_added_under_our_parent_survives_uninstall(project: Path) -> None:
    install(project, "opencode")
    config = json.loads((project / "opencode.json").read_text())
    config["mcp"]["other"] = {"type": "local", "command": ["x"]}
    (project / "opencode.json").write_text(json.dumps(config, indent=2) + "\n")
    uninstall(project, "opencode")
    left = json.loads((project / "opencode.json").read_text())
    assert left == {"mcp": {"other": {"type": "local", "command": ["x"]}}}


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"tool": "vscode"}, "use one of: opencode, claude"),
    ({"template": "cobol"}, "use one of: python"),
    ({"gateway": "localhost:4000"}, "like http://127.0.0.1:4000"),
])
def test_bad_arguments_say_how_to_fix_them(project: Path, kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"tool": "opencode", **kwargs}
    with pytest.raises(InvalidInput, match=fragment):
        install(project, args.pop("tool"), **args)
    assert sorted(p.name for p in project.iterdir()) == ["pyproject.toml"]


def test_missing_project_and_nothing_to_uninstall(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        install(tmp_path / "nope", "claude")
    with pytest.raises(InvalidInput, match="nothing to uninstall"):
        uninstall(tmp_path, "claude")


def test_invalid_json_is_not_overwritten(project: Path) -> None:
    (project / "opencode.json").write_text('{\n  // my comment\n  "theme": "dark"\n}\n')
    with pytest.raises(InvalidInput, match=r"not valid JSON .*add these keys by hand"):
        install(project, "opencode")
    assert (project / "opencode.json").read_text().startswith("{\n  // my comment")


def test_a_damaged_manifest_is_reported(project: Path) -> None:
    (project / ".mcp-prism").mkdir()
    (project / MANIFEST).write_text("{broken")
    with pytest.raises(InvalidInput, match="damaged"):
        install(project, "opencode")


# ------------------------------------------------------------------------------------ CLI contract
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-prism")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, parent: Any = sub, **kw: Any) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help_text, **kw)

    inst.register_commands(add, sub)
    return parser


@pytest.mark.anyio
async def test_cli_handlers(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "prism-home"
    home.mkdir()
    (home / "config.toml").write_text('[task_types.sql_migration]\ntier = "standard"\n')  # a team task type
    svc = await PrismService.open(Settings.from_env({}, home=home))
    try:
        a = _parser().parse_args(["install", "opencode", "--dir", str(project), "--gateway", GATEWAY,
                                  "--mcp-command", "mcp-prism serve", "--dry-run"])
        result, text = await a.handler(svc, a)
        assert result.dry_run and "dry run" in text and not (project / "opencode.json").exists()
        assert installed(home) == []  # a dry run records nothing
        a = _parser().parse_args(["install", "opencode", "--dir", str(project), "--gateway", GATEWAY,
                                  "--mcp-command", "mcp-prism serve"])
        result, text = await a.handler(svc, a)
        config = json.loads((project / "opencode.json").read_text())
        assert config["mcp"]["prism"]["command"] == ["mcp-prism", "serve"]
        assert "prism/sql_migration" in config["provider"]["prism"]["models"]
        assert "| create | opencode.json |" in text
        assert installed(home) == [(project.resolve(), "opencode")]  # for `mcp-prism sync`
        a = _parser().parse_args(["uninstall", "opencode", "--dir", str(project)])
        result, text = await a.handler(svc, a)
        assert result.uninstall and not (project / "opencode.json").exists()
        assert installed(home) == []
    finally:
        await svc.close()
    with pytest.raises(SystemExit):
        _parser().parse_args(["install", "opencode", "--template", "cobol"])
