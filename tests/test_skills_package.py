"""The skills package as shipped: commands, skills, agents and AGENTS.md templates parse, use only the
frontmatter fields each tool accepts, name only tools the live MCP server has, ship inside the package,
and the five task commands are offered as MCP prompts with the same text."""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from pathlib import Path

import pytest
from mcp import Client

from mcp_prism import install, mcp_toolsets
from mcp_prism.config import Settings
from mcp_prism.core.tasks import BUILTIN_NAMES, BUILTIN_TASK_TYPES
from mcp_prism.errors import InvalidInput
from mcp_prism.mcp_prompts import DEFAULT_TARGET, PROMPTS
from mcp_prism.mcp_server import build_server

ROOT = Path(__file__).resolve().parents[1]

# Command frontmatter: OpenCode reads description, agent, model, subtask; Claude Code reads description,
# argument-hint, allowed-tools, model. Each ignores the other's keys (OpenCode's command schema drops
# unknown keys). `model` means different things in each (provider/model vs haiku|sonnet|opus), so the
# shipped files leave it out and the installer adds it per tool.
OPENCODE_COMMAND_KEYS = {"description", "agent", "model", "subtask"}
CLAUDE_COMMAND_KEYS = {"description", "argument-hint", "allowed-tools", "model"}
SHIPPED_COMMAND_KEYS = (OPENCODE_COMMAND_KEYS | CLAUDE_COMMAND_KEYS) - {"model"}
CLAUDE_AGENT_KEYS = {"name", "description", "tools", "model"}
OPENCODE_AGENT_KEYS = {"description", "mode", "model", "temperature", "top_p", "permission", "tools", "disable"}
SKILL_KEYS = {"name", "description"}  # the fields both tools define; OpenCode: name 1-64 chars, description ≤ 1024
CLAUDE_BUILTIN_TOOLS = {"Read", "Grep", "Glob", "Bash", "Edit", "Write", "MultiEdit", "WebFetch", "WebSearch"}
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

COMMAND_TASKS = {"review": "code_review", "test": "test_generation", "docs": "doc_generation",
                 "security": "security_audit", "deploy-check": "deploy_check", "route": None, "costs": None}
AGENT_TASKS = {"reviewer": "code_review", "bug-investigator": "bug_investigation", "test-writer": "test_generation"}


def shipped_markdown() -> dict[str, str]:
    """Every markdown file the package ships, by path relative to the bundle."""
    base = Path(str(install.bundle()))
    found = {}
    for folder, _, names in os.walk(base, followlinks=True):  # the bundle's folders are symlinks
        for name in names:
            if name.endswith(".md"):
                path = Path(folder, name)
                found[path.relative_to(base).as_posix()] = path.read_text(encoding="utf-8")
    return dict(sorted(found.items()))


def mentioned_tools(text: str) -> set[str]:
    """Tool names a text uses: "the prism X tool", "X tool" with a snake_case X, or `mcp__prism__X`."""
    return (set(re.findall(r"\b([a-z]+(?:_[a-z]+)+)\b`? tools?\b", text))
            | set(re.findall(r"\bprism `?([a-z_]+)`? tool", text))
            | set(re.findall(r"mcp__prism__([a-z_]+)", text)))


@pytest.fixture
async def live_tools(tmp_path: Path) -> set[str]:
    """Every tool the server has with all toolsets on (files naming a tool that is off by default say how
    to turn it on: test_files_say_how_to_turn_on_the_toolsets_they_use)."""
    async with Client(build_server(Settings.from_env({}, home=tmp_path), toolsets="all")) as c:
        return {t.name for t in (await c.list_tools()).tools}


# ------------------------------------------------------------------------------------ commands
def test_commands_are_the_seven_with_frontmatter_both_tools_accept() -> None:
    docs = install.commands()
    assert set(docs) == set(COMMAND_TASKS)
    for name, doc in docs.items():
        assert set(doc.meta) <= SHIPPED_COMMAND_KEYS, f"{name}: {set(doc.meta) - SHIPPED_COMMAND_KEYS}"
        assert isinstance(doc.meta["description"], str) and 10 < len(doc.meta["description"]) <= 200
        assert all(isinstance(v, str) for v in doc.meta.values()), f"{name}: every value must be a string"
        assert "$ARGUMENTS" in doc.body, f"{name} ignores what the developer typed"
        assert doc.task_type == COMMAND_TASKS[name], name


def test_task_commands_route_record_usage_and_quality() -> None:
    for name, doc in install.commands().items():
        if COMMAND_TASKS[name] is None:
            continue
        assert doc.task_type in BUILTIN_NAMES
        tools = mentioned_tools(doc.body)
        assert {"route_task", "record_usage", "record_quality"} <= tools, name
        assert f"`task_type` = `{doc.task_type}`" in doc.body, f"{name} must route with its own task type"
        assert "gateway" in doc.body, f"{name} must say when not to record (the gateway records)"


@pytest.mark.parametrize(("name", "words"), [
    ("review", ["boundar", "concurrency", "contracts", "security", "tests", "performance", "file:line"]),
    ("test", ["edge", "boundaries", "properties", "regression", "runner", "deterministic", "fail"]),
    ("docs", ["docstrings", "readme", "changelog", "upgrade notes", "examples"]),
    ("security", ["injection", "authentication", "authorisation", "secrets", "advisories", "deserialisation",
                  "ssrf", "path traversal"]),
    ("deploy-check", ["migrations", "configuration", "feature flags", "rollout", "rollback"]),
])
def test_command_bodies_cover_their_checklist(name: str, words: list[str]) -> None:
    body = install.commands()[name].body.lower()
    missing = [w for w in words if w not in body]
    assert not missing, f"/{name} does not cover {missing}"


@pytest.mark.anyio
async def test_allowed_tools_are_claude_tools_or_live_prism_tools(live_tools: set[str]) -> None:
    for name, doc in {**install.commands(), **install.agents()}.items():
        field = doc.meta.get("allowed-tools") or doc.meta.get("tools") or ""
        for tool in (t.strip() for t in field.split(",")):
            if tool.startswith("mcp__prism__"):
                assert tool.removeprefix("mcp__prism__") in live_tools, f"{name}: {tool}"
            else:
                assert re.sub(r"\(.*\)$", "", tool) in CLAUDE_BUILTIN_TOOLS, f"{name}: {tool}"


# ------------------------------------------------------------------------------------ skills
def test_skills_are_named_after_their_folders_and_say_when_to_use_them() -> None:
    docs = install.skills()
    assert set(docs) == {"route-task", "read-cost-report", "qualify-model"}
    for folder, doc in docs.items():
        assert set(doc.meta) == SKILL_KEYS, folder
        assert doc.meta["name"] == folder and KEBAB.match(folder) and len(folder) <= 64
        assert doc.meta["description"].startswith("Use ") and len(doc.meta["description"]) <= 1024
    # the skills folder holds nothing a tool would not load
    assert {p.name for p in (ROOT / "skills").iterdir()} == set(docs)


def test_qualification_skill_states_the_statistics_rule() -> None:
    body = install.skills()["qualify-model"].body
    for step in ("start_experiment", "run_experiment", "evaluate_", "experiment_report", "promote_candidate"):
        assert step in body
    assert "lower confidence bound" in body and "can never certify 95%" in body
    assert body.index("start_experiment") < body.index("run_experiment") < body.index("experiment_report") \
        < body.index("promote_candidate")


# ------------------------------------------------------------------------------------ agents
def test_agents_use_claude_fields_and_name_a_task_type() -> None:
    docs = install.agents()
    assert set(docs) == set(AGENT_TASKS)
    tiers = {t.name: t.tier for t in BUILTIN_TASK_TYPES}
    for name, doc in docs.items():
        assert set(doc.meta) <= CLAUDE_AGENT_KEYS and doc.meta["name"] == name
        assert doc.task_type == AGENT_TASKS[name]
        assert {"route_task", "record_usage"} <= mentioned_tools(doc.body)
    # each on the tier its task deserves: one of each
    assert {tiers[t].label for t in AGENT_TASKS.values()} == {"simple", "standard", "complex"}


def test_agents_as_installed_for_each_tool() -> None:
    tiers = {t.name: t.tier for t in BUILTIN_TASK_TYPES}
    models = {t: [("gpt-5-mini", "openai"), ("claude-haiku-4-5", "anthropic")] for t in AGENT_TASKS.values()}
    for name, doc in install.agents().items():
        gateway = install.opencode_model(doc.task_type, models, gateway=True, pin=True)
        meta, body = install.parse_frontmatter(install._opencode_agent(doc, gateway))
        assert set(meta) <= OPENCODE_AGENT_KEYS and meta["mode"] == "subagent"
        assert meta["model"] == f"prism/prism/{doc.task_type}" and body == doc.body
        assert ("permission" in meta) == (name != "test-writer")  # read-only unless it writes tests
        assert install.opencode_model(doc.task_type, models, gateway=False, pin=True) == "openai/gpt-5-mini"
        unpinned = install.opencode_model(doc.task_type, models, gateway=False, pin=False)
        meta, _ = install.parse_frontmatter(install._opencode_agent(doc, unpinned))
        assert "model" not in meta  # without the gateway or --pin-models it runs on the session's model
        meta, _ = install.parse_frontmatter(install._claude_agent(doc))
        assert set(meta) <= CLAUDE_AGENT_KEYS
        assert meta["model"] == install.CLAUDE_TIER_MODELS[tiers[doc.task_type]]  # no rules known: the tier
        meta, _ = install.parse_frontmatter(install._claude_agent(doc, models))
        assert meta["model"] == "claude-haiku-4-5"  # the rule's first model Claude Code can run


# ------------------------------------------------------------------------------------ templates
@pytest.mark.parametrize("name", install.TEMPLATES)
def test_agents_md_templates_have_the_sections_and_the_prism_part(name: str) -> None:
    text = install.template_text(name)
    for heading in ("## Build, test, lint", "## Layout", "## Conventions", "## Boundaries",
                    "## Models and cost: mcp_prism"):
        assert heading in text, f"{name}: {heading}"
    assert text.count(install.BEGIN) == 1 and text.endswith(install.END + "\n")


def test_prism_section_says_where_tasks_go_recording_and_escalation() -> None:
    block = install.section_block()
    assert {"route_task", "record_usage", "record_quality"} <= mentioned_tools(block)
    assert "escalate" in block.lower()
    assert all(t.name in block for t in BUILTIN_TASK_TYPES), "every built-in task type has a tier listed"
    gateway = install.section_block("http://127.0.0.1:4000/v1")
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:4000`" in gateway and "do not call record_usage" in gateway
    assert (ROOT / "agents_templates" / "CLAUDE.md").read_text() == "@AGENTS.md\n"


def test_unknown_template_is_refused_with_the_choices() -> None:
    with pytest.raises(InvalidInput, match="python, typescript, go, rust, java, generic"):
        install.template_text("cobol")


# ------------------------------------------------------------------------------------ every file
@pytest.mark.anyio
async def test_every_tool_a_shipped_file_mentions_exists_on_the_server(live_tools: set[str]) -> None:
    files = shipped_markdown()
    assert len(files) >= 7 + 3 + 3 + 6
    for path, text in files.items():
        unknown = mentioned_tools(text) - live_tools
        assert not unknown, f"{path} mentions tools the server does not have: {sorted(unknown)}"


def test_files_say_how_to_turn_on_the_toolsets_they_use() -> None:
    """A command or skill that needs a tool outside the default (core) toolset names its toolset and how
    to turn it on, so an agent that does not see the tool can tell the developer what to do."""
    needing = 0
    for path, text in shipped_markdown().items():
        sets = {mcp_toolsets.TOOLSET_OF[t] for t in mentioned_tools(text) if t in mcp_toolsets.TOOLSET_OF}
        for name in sets - {mcp_toolsets.CORE}:
            needing += 1
            assert f"`{name}`" in text and "--toolsets" in text, f"{path} uses the {name} toolset without saying so"
    assert needing >= 4


def test_every_shipped_frontmatter_parses() -> None:
    for path, text in shipped_markdown().items():
        if text.startswith("---\n"):
            install.parse_frontmatter(text, path)
        else:
            assert path.startswith("agents_templates/") and "/" not in path.removeprefix("agents_templates/"), path


@pytest.mark.parametrize(("text", "fragment"), [
    ("no frontmatter", "has no frontmatter"),
    ("---\ndescription: x\n", "not closed"),
    ("---\nargument-hint: [a]\n---\n", "quote the value"),
    ("---\ndescription: a: b\n---\n", "quote the value"),
    ("---\n  edit: deny\n---\n", "expected 'key: value'"),
    ("---\nkey: 'open\n---\n", "unterminated"),
])
def test_frontmatter_parser_rejects_what_yaml_would_read_differently(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        install.parse_frontmatter(text)


def test_frontmatter_round_trips() -> None:
    meta = {"description": "a: b [c]", "mode": "subagent", "subtask": True, "permission": {"edit": "deny"}}
    assert install.parse_frontmatter(install.render_frontmatter(meta, "body\n")) == (meta, "body\n")


# ------------------------------------------------------------------------------------ packaging
def test_bundle_is_the_top_level_folders_and_every_file_is_in_package_data() -> None:
    bundle = ROOT / "mcp_prism" / "_bundle"
    for name in ("commands", "skills", "agents_templates"):
        assert (bundle / name).resolve() == (ROOT / name).resolve()
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mcp_prism"]
    for name in ("commands", "skills", "agents_templates"):
        for path in (ROOT / name).rglob("*"):
            if path.is_file():
                rel = f"_bundle/{path.relative_to(ROOT).as_posix()}"
                assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns), \
                    f"{rel} would not ship in the wheel: add it to [tool.setuptools.package-data]"


# ------------------------------------------------------------------------------------ MCP prompts
@pytest.mark.anyio
async def test_the_five_commands_are_mcp_prompts_with_the_command_text(tmp_path: Path) -> None:
    docs = install.commands()
    async with Client(build_server(Settings.from_env({}, home=tmp_path))) as c:
        prompts = {p.name: p for p in (await c.list_prompts()).prompts}
        assert set(prompts) == set(PROMPTS) == {"review", "test", "docs", "security", "deploy-check"}
        for name, p in prompts.items():
            assert p.description == docs[name].meta["description"]
            assert [a.name for a in p.arguments or []] == ["target"] and not p.arguments[0].required
            r = await c.get_prompt(name, {"target": "src/billing.py"})
            text = r.messages[0].content.text
            assert r.messages[0].role == "user"
            assert text == docs[name].body.strip().replace("$ARGUMENTS", "src/billing.py")
            assert f"`{docs[name].task_type}`" in text and "$ARGUMENTS" not in text
        r = await c.get_prompt("review", {})
        assert DEFAULT_TARGET in r.messages[0].content.text


def test_tool_mention_detection_is_not_vacuous() -> None:
    text = "Call the prism frobnicate tool, then the prism `route_task` tool; also mcp__prism__nope and x_y tool."
    assert mentioned_tools(text) == {"frobnicate", "route_task", "nope", "x_y"}
