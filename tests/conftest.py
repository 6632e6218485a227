from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mcp_prism.config import shipped_catalog_data
from mcp_prism.core.catalog import Catalog, build_catalog


@pytest.fixture
def catalog() -> Catalog:
    return build_catalog(shipped_catalog_data())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def shared_data(name: str) -> Path:
    """A folder of ../shared/data beside the repo (PRISM_SHARED_DATA overrides; a clone elsewhere falls back to
    the workplace's /work/shared). Tests that need it skip when it is absent."""
    roots = [Path(os.environ["PRISM_SHARED_DATA"])] if os.environ.get("PRISM_SHARED_DATA") else []
    roots += [Path(__file__).resolve().parents[1].parent / "shared" / "data", Path("/work/shared/data")]
    for root in roots:
        if (root / name).is_dir():
            return root / name
    return roots[0] / name


CLIENTS = {"claude": "@anthropic-ai/claude-code@2.1.197", "codex": "@openai/codex@0.169.0",
           "ccusage": "ccusage@18.0.11", "opencode": "opencode-ai@1.18.33"}


def real_client(name: str) -> Path:
    """The pinned npm CLI `name` that `.ci/run` installs under .ci/cache/NAME (PRISM_<NAME>_BIN overrides);
    the calling test is skipped, saying how to install it, when it is absent."""
    env = os.environ.get(f"PRISM_{name.upper()}_BIN")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / f".ci/cache/{name}/node_modules/.bin/{name}"
    if not path.exists():
        pytest.skip(f"{name} is not installed at {path}: `.ci/run` installs it "
                    f"(npm install --prefix .ci/cache/{name} {CLIENTS[name]})")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Runs `serve_http` for real in a child process: `python -c HTTP_SCRIPT <port>`, token in PRISM_TOKEN.
HTTP_SCRIPT = """
import os, sys
from mcp_prism.config import Settings
from mcp_prism.mcp_server import serve_http
serve_http(Settings.from_env(), host="127.0.0.1", port=int(sys.argv[1]), token=os.environ["PRISM_TOKEN"])
"""


def wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 20.0) -> None:
    """Wait until `proc` accepts connections on 127.0.0.1:`port`; fail with its log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"HTTP server did not start: {log.read_text()}")
            time.sleep(0.05)
