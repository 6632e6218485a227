from __future__ import annotations

import socket

import pytest

from mcp_prism.config import shipped_catalog_data
from mcp_prism.core.catalog import Catalog, build_catalog


@pytest.fixture
def catalog() -> Catalog:
    return build_catalog(shipped_catalog_data())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
