"""CLI commands for the config file: `mcp-prism config check [--file F]` and `mcp-prism config schema`.

They run before (and without) a store: `check` must be able to judge a config that would stop a server.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from mcp_prism.config import Settings
from mcp_prism.core.config_schema import config_json_schema_text
from mcp_prism.errors import ConfigError


def cmd_check(a: argparse.Namespace) -> int:
    env = dict(os.environ)
    if a.file:
        if not os.path.isfile(a.file):
            raise ConfigError(f"--file {a.file}: no such file")
        env["PRISM_CONFIG"] = a.file
    elif getattr(a, "home", None):
        env.pop("PRISM_CONFIG", None)
    from mcp_prism.config_check import check_settings  # loads the catalog and the gateway's settings code

    settings = Settings.from_env(env, home=getattr(a, "home", None))
    summary = check_settings(settings)
    where = settings.config_path or "no config file (the shipped defaults)"
    print(f"config OK: {where}")
    for line in summary:
        print(f"  {line}")
    return 0


def cmd_schema(a: argparse.Namespace) -> int:
    sys.stdout.write(config_json_schema_text())
    return 0


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    config = add("config", "check the config file, or print its JSON Schema (for editors)")
    csub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    p = add("check", "read the config file as a server would and say what is wrong (exit 2) or OK", csub)
    p.add_argument("--file", metavar="PATH",
                   help="the file to check (default $PRISM_CONFIG or $PRISM_HOME/config.toml)")
    p.set_defaults(standalone=cmd_check)
    p = add("schema", "print the config file's JSON Schema (also shipped as mcp_prism/data/config.schema.json)",
            csub)
    p.set_defaults(standalone=cmd_schema)
