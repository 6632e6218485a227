"""Issue 12: bad input, damaged stores and hostile callers get a clear error, never a traceback, and change
nothing. The CLI runs as a real subprocess, the MCP tools in real sessions (in-process and over stdio)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from mcp_prism.config import Settings
from mcp_prism.mcp_server import build_server

REPO = Path(__file__).resolve().parents[1]


def cli(home: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "mcp_prism", *args], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=120, input=input)


def refused(r: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "unexpected failure" not in r.stderr, r.stderr[-3000:]
    for needle in needles:
        assert needle in r.stderr, r.stderr[-2000:]
    return r.stderr


def events(home: Path) -> int:
    db = home / "prism.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM usage_events").fetchone()[0]


# ---------------------------------------------------------------- 12.10: the CLI never shows a traceback
def test_cli_bad_numbers_are_usage_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    refused(cli(home, "budget", "set", "team", "x", "--soft", "four hundred"), "not an amount in USD")
    refused(cli(home, "budget", "set", "team", "x", "--hard", "1e400"), "must be an amount from 0")
    refused(cli(home, "budget", "set", "team", "x", "--hard", "NaN"), "must be an amount from 0")
    ok = cli(home, "budget", "set", "team", "x", "--soft", "$400")  # the form people write is understood
    assert ok.returncode == 0 and "$400" in ok.stdout, ok.stderr
    refused(cli(home, "record", "--model", "gpt-5", "--task-type", "general", "--input-tokens",
                "9200000000000000000"), "out of range")
    refused(cli(home, "record", "--model", "gpt-5", "--task-type", "general", "--latency-ms", "inf"), "finite")
    assert events(home) == 0


def test_import_outcomes_on_a_binary_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    blob = tmp_path / "outcomes.csv"
    blob.write_bytes(bytes(range(256)) * 40)
    refused(cli(home, "import-outcomes", str(blob)), "not UTF-8 text")
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"prompt,a,b\nq,1\x000,1\n")
    refused(cli(home, "import-outcomes", str(nul)), "bad row")


def _demo_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    r = cli(home, "record", "--model", "gpt-5", "--task-type", "general", "--input-tokens", "1000")
    assert r.returncode == 0, r.stderr
    return home


def test_a_damaged_database_is_named_not_a_crash(tmp_path: Path) -> None:
    home = tmp_path / "garbage"
    home.mkdir()
    (home / "prism.db").write_bytes(os.urandom(8192))
    refused(cli(home, "report"), "damaged or is not an mcp_prism database", "move it aside", code=3)
    truncated = _demo_home(tmp_path)
    db = truncated / "prism.db"
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.truncate(size // 2)
    r = cli(truncated, "report")
    refused(r, "damaged", code=3)


def test_serve_with_a_damaged_database_exits_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "prism.db").write_bytes(b"not a database at all " * 400)
    r = cli(home, "serve", input="")
    refused(r, "damaged", code=3)


def test_an_unwritable_home_is_one_clear_message(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = cli(blocker / "home", "report")  # PRISM_HOME below a file: its folder cannot be created
    refused(r, "cannot create the folder", "PRISM_HOME", code=3)
    assert "Event loop is closed" not in r.stderr


def _read_only(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with `home` mounted read-only (root ignores file modes; a private mount does not)."""
    if os.geteuid() != 0:
        for p in (home / "prism.db", home):
            if p.exists():
                p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            return cli(home, *args)
        finally:
            home.chmod(0o755)
    if not shutil.which("unshare"):
        pytest.skip("running as root without unshare: cannot make a read-only folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_HOME"] = str(home)
    script = f'mount --bind -o ro "{home}" "{home}" && exec "$0" -m mcp_prism "$@"'
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, sys.executable, *args], env=env, text=True,
                       capture_output=True, timeout=120)
    if "mount:" in r.stderr or "unshare:" in r.stderr:
        pytest.skip(f"cannot mount read-only here: {r.stderr.strip()[:200]}")
    return r


def test_a_read_only_database_still_reports(tmp_path: Path) -> None:
    home = _demo_home(tmp_path)
    r = _read_only(home, "report")
    assert r.returncode == 0, r.stderr
    assert "1 requests" in r.stdout
    r = _read_only(home, "record", "--model", "gpt-5", "--task-type", "general")
    refused(r, "is read-only", "write access", code=3)
    assert "stayed busy" not in r.stderr
    assert events(home) == 1


def test_a_read_only_home_without_a_database_is_one_clear_message(tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    r = _read_only(home, "report")
    refused(r, "folder is read-only", "PRISM_HOME", code=3)
    assert "Event loop is closed" not in r.stderr and not (home / "prism.db").exists()


# ---------------------------------------------------------------- MCP: hostile arguments
@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({}, home=tmp_path / "home")


async def fails(c: Client, tool: str, args: dict[str, Any], *needles: str) -> str:
    r = await c.call_tool(tool, args)
    assert r.is_error, f"{tool} accepted {str(args)[:200]}"
    text = r.content[0].text
    assert "internal error" not in text and "Traceback" not in text, text[:500]
    assert len(text) < 5000, f"{len(text)} characters of error"
    for needle in needles:
        assert needle in text, text[:1000]
    return text


@pytest.mark.anyio
async def test_mcp_tools_refuse_huge_numbers_long_strings_nul_and_fake_booleans(settings: Settings) -> None:
    async with Client(build_server(settings, toolsets="all")) as c:
        base = {"model": "gpt-5", "task_type": "general"}
        await fails(c, "record_usage", {**base, "input_tokens": 10**30}, "input_tokens")
        await fails(c, "record_usage", {**base, "input_tokens": 9_200_000_000_000_000_000}, "input_tokens")
        await fails(c, "record_usage", {**base, "input_tokens": 10**13}, "more than any provider bills")
        await fails(c, "record_usage", {**base, "user": "u" * 1_000_000}, "user", "at most 256")
        await fails(c, "record_usage", {**base, "team": "t\x00"}, "team")
        await fails(c, "record_usage", {**base, "batch": "yes"}, "batch", "valid boolean")
        await fails(c, "route_task", {"task_type": "general", "context_tokens": 10**30}, "context_tokens")
        await fails(c, "compare_models", {"input_tokens": 10**30}, "input_tokens")
        await fails(c, "cost_report", {"days": 5000}, "3660")  # a tool's own tighter bound still holds
        rule = {"task_type": "general", "primary": "gpt-5"}
        await fails(c, "update_routing_rule", {"rule": rule, "author": "a", "reason": "r", "dry_run": "yes"},
                    "dry_run")
        await fails(c, "update_routing_rule", {"rule": rule, "author": "a" * 100_000, "reason": "r"}, "author")
        await fails(c, "check_monitors", {"deliver": "yes"}, "deliver")
        await fails(c, "set_budget", {"scope": "team", "subject": "s" * 1_000_000, "hard_limit_usd": "5"},
                    "subject")
        await fails(c, "import_outcomes", {"path": "x" * 1_000_000}, "path")
        await fails(c, "import_outcomes", {"path": "/etc/pass\x00wd"}, "path")
        r = await c.call_tool("record_usage", {**base, "input_tokens": 10, "batch": True})  # real booleans do
        assert not r.is_error
        schema = {t.name: t for t in (await c.list_tools()).tools}["record_usage"].input_schema
        assert schema["properties"]["user"]["maxLength"] == 256  # clients see the bounds
    assert events(settings.home) == 1


@pytest.mark.anyio
async def test_mcp_file_tools_read_only_under_their_roots(settings: Settings, tmp_path: Path) -> None:
    secret = tmp_path / "outside" / "passwd.csv"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:root:/root:/bin/bash\nline2\n")
    async with Client(build_server(settings, toolsets="all")) as c:
        for tool, args in (("import_outcomes", {"path": str(secret)}), ("evaluate_router", {"path": str(secret)}),
                           ("start_experiment", {"task_type": "general", "candidates": ["gpt-5-mini"],
                                                 "from_file": str(secret)})):
            text = await fails(c, tool, args, "outside the folders this MCP server may read")
            assert "root:x" not in text
        await fails(c, "import_outcomes", {"path": "/etc/passwd"}, "outside the folders")
        link = settings.home / "link.csv"  # a link inside the root to a file outside is followed, then refused
        settings.home.mkdir(parents=True, exist_ok=True)
        link.symlink_to(secret)
        await fails(c, "import_outcomes", {"path": str(link)}, "outside the folders")
        inside = settings.home / "passwd.csv"  # inside the root, a non-outcome file: no content quoted
        inside.write_text(secret.read_text())
        text = await fails(c, "import_outcomes", {"path": str(inside)}, "no 'prompt' column")
        assert "root:x" not in text


@pytest.mark.anyio
async def test_mcp_over_http_reads_no_files_unless_configured(tmp_path: Path) -> None:
    from mcp_prism.mcp_server import build_http_server

    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_text("prompt,weak,strong\nq1,1,1\nq2,0,1\n")
    home = tmp_path / "home"
    server, _ = build_http_server(Settings.from_env({}, home=home), token="t" * 32, toolsets="data")
    async with Client(server) as c:  # the HTTP server's tools, in-process: no file roots by default
        await fails(c, "import_outcomes", {"path": str(data / "t.csv")}, "reads no files")
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(f'[mcp]\nfile_roots = ["{data}"]\n')
    server, _ = build_http_server(Settings.from_env({}, home=home), token="t" * 32, toolsets="data")
    async with Client(server) as c:
        r = await c.call_tool("import_outcomes", {"path": str(data / "t.csv")})
        assert not r.is_error, r.content[0].text


@pytest.mark.anyio
async def test_stdio_server_survives_hostile_calls(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_")}
    env["PRISM_HOME"] = str(home)
    params = StdioServerParameters(command=sys.executable, args=["-m", "mcp_prism", "serve", "--toolsets", "all"],
                                   env=env, cwd=str(tmp_path))
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as c:
            await fails(c, "record_usage", {"model": "gpt-5", "task_type": "general", "input_tokens": 10**30},
                        "input_tokens")
            await fails(c, "import_outcomes", {"path": "/etc/passwd"}, "outside the folders")
            r = await c.call_tool("route_task", {"task_type": "general"})  # still serving
            assert not r.is_error
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


@pytest.mark.anyio
async def test_mcp_json_object_arguments_are_bounded_in_size(settings: Settings) -> None:
    async with Client(build_server(settings, toolsets="all")) as c:
        huge = {f"k{i}": "v" * 100 for i in range(2_000)}
        await fails(c, "start_experiment", {"task_type": "general", "candidates": ["gpt-5-mini"], "settings": huge},
                    "the limit is 100000")
        rule = {"task_type": "general", "primary": "gpt-5", "x": "y" * 200_000}
        await fails(c, "update_routing_rule", {"rule": rule, "author": "a", "reason": "r"}, "the limit is 100000")
