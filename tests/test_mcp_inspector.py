"""The MCP Inspector CLI (npm, an outside client) against the real server over stdio and Streamable HTTP.

Skipped when the Inspector is not installed; `.ci/run` installs it into `.ci/cache/inspector`
(or point `PRISM_INSPECTOR` at an `mcp-inspector` binary)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HTTP_SCRIPT, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INSPECTOR = REPO / ".ci" / "cache" / "inspector" / "node_modules" / ".bin" / "mcp-inspector"
TOOL_ERROR_EXIT = 5  # the Inspector's exit code for a tool result with isError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inspector() -> str:
    path = os.environ.get("PRISM_INSPECTOR") or str(DEFAULT_INSPECTOR)
    if not (Path(path).exists() and os.access(path, os.X_OK)):
        pytest.skip(f"MCP Inspector not installed at {path}; `.ci/run` installs it "
                    "(npm install --prefix .ci/cache/inspector @modelcontextprotocol/inspector@2.12.0)")
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH; the MCP Inspector needs it")
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "PRISM_HOME": str(tmp_path / "prism")}


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)


def stdio(inspector: str, *args: str) -> list[str]:
    return [inspector, "--cli", sys.executable, "-m", "mcp_prism.mcp_server", *args]


def test_stdio_tools_list(inspector: str, env: dict[str, str]) -> None:
    p = run(stdio(inspector, "--method", "tools/list"), env)
    assert p.returncode == 0, p.stderr
    tools = {t["name"]: t for t in json.loads(p.stdout)["tools"]}
    assert set(tools) == {"route_task", "record_usage", "record_quality", "cost_report"}  # the default toolset
    assert tools["route_task"]["outputSchema"]["type"] == "object"
    assert tools["route_task"]["annotations"]["readOnlyHint"] is True
    p = run(stdio(inspector, "-e", "PRISM_TOOLSETS=rules", "--method", "tools/list"), env)
    assert p.returncode == 0, p.stderr
    assert "update_routing_rule" in {t["name"] for t in json.loads(p.stdout)["tools"]}


def test_stdio_route_task(inspector: str, env: dict[str, str]) -> None:
    p = run(stdio(inspector, "--method", "tools/call", "--tool-name", "route_task",
                  "--tool-arg", "description=write unit tests for the parser"), env)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert not result.get("isError")
    routed = json.loads(result["content"][0]["text"])
    assert (routed["model"], routed["task_type"], routed["tier"]) == ("claude-haiku-4-5", "test_generation", "simple")
    assert result.get("structuredContent", routed)["model"] == "claude-haiku-4-5"


def test_stdio_tool_error_exits_5(inspector: str, env: dict[str, str]) -> None:
    p = run(stdio(inspector, "--method", "tools/call", "--tool-name", "route_task",
                  "--tool-arg", "task_type=nope"), env)
    assert p.returncode == TOOL_ERROR_EXIT, (p.stdout, p.stderr)
    result = json.loads(p.stdout)
    assert result["isError"] is True and "unknown task type 'nope'" in result["content"][0]["text"]
    assert "Traceback" not in p.stdout


def test_stdio_resource_read(inspector: str, env: dict[str, str]) -> None:
    p = run(stdio(inspector, "--method", "resources/read", "--uri", "prism://rules/code_review"), env)
    assert p.returncode == 0, p.stderr
    body = json.loads(json.loads(p.stdout)["contents"][0]["text"])
    assert body["active"]["rule"]["primary"] == "claude-sonnet-4-5"


# ------------------------------------------------------------------------------------------- HTTP


@pytest.fixture
def http_url(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    port, token = free_port(), "insp-" + os.urandom(8).hex()
    log = tmp_path / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", HTTP_SCRIPT, str(port)], env={**env, "PRISM_TOKEN": token},
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(proc, port, log)
        yield f"http://127.0.0.1:{port}/mcp", token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_http_tools_list_with_bearer_token(inspector: str, env: dict[str, str], http_url: tuple[str, str]) -> None:
    url, token = http_url
    base = [inspector, "--cli", url, "--transport", "http"]
    p = run([*base, "--header", f"Authorization: Bearer {token}", "--method", "tools/list"], env)
    assert p.returncode == 0, p.stderr
    assert "route_task" in {t["name"] for t in json.loads(p.stdout)["tools"]}

    p = run([*base, "--header", f"Authorization: Bearer {token}", "--method", "tools/call",
             "--tool-name", "route_task", "--tool-arg", "task_type=code_review"], env)
    assert p.returncode == 0, p.stderr
    assert json.loads(json.loads(p.stdout)["content"][0]["text"])["model"] == "claude-sonnet-4-5"

    p = run([*base, "--header", "Authorization: Bearer wrong", "--method", "tools/list"], env)
    assert p.returncode != 0 and "route_task" not in p.stdout
