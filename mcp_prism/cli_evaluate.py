"""CLI commands of the optimisation loop: evaluate (filled in by issue 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add this area's subcommands: `add(name, help)` returns an argparse parser; set `handler=`."""
