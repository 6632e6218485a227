from __future__ import annotations

import importlib.resources
import tomllib
from typing import Any

import pytest

from mcp_prism.core.catalog import Catalog, build_catalog


def shipped_catalog_data() -> dict[str, Any]:
    """The parsed catalog.toml shipped inside the package."""
    text = importlib.resources.files("mcp_prism").joinpath("data/catalog.toml").read_text()
    return tomllib.loads(text)


@pytest.fixture
def catalog() -> Catalog:
    return build_catalog(shipped_catalog_data())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
