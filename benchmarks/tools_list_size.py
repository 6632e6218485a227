"""What the MCP tool list costs an agent: `mcp-prism serve` on stdio (a fresh PRISM_HOME), one raw
`tools/list` per toolset choice, and its size in bytes and in tokens counted as bytes / 4 (the budget
tests/test_mcp_toolsets.py holds the default to: 2,000). Also the part models see: names, descriptions
and input schemas.

    .venv/bin/python benchmarks/tools_list_size.py [--toolsets core rules loop data team all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def tools_list(toolsets: str) -> str:
    with tempfile.TemporaryDirectory() as home:
        p = subprocess.Popen([sys.executable, "-m", "mcp_prism", "serve", "--toolsets", toolsets],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "PRISM_HOME": home})
        assert p.stdin and p.stdout
        for message in ({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "size", "version": "1"}}},
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}):
            p.stdin.write(json.dumps(message) + "\n")
            p.stdin.flush()
        p.stdout.readline()  # the initialize answer
        answer = p.stdout.readline()
        p.stdin.close()
        p.wait(20)
        return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toolsets", nargs="*", default=["core", "rules", "loop", "data", "team", "all"])
    args = parser.parse_args()
    print("| toolsets | tools | tools/list bytes | tokens (bytes/4) | names+descriptions+input schemas |")
    print("|---|---:|---:|---:|---:|")
    for name in args.toolsets:
        answer = tools_list(name)
        tools = json.loads(answer)["result"]["tools"]
        seen = sum(len(json.dumps({"name": t["name"], "description": t["description"], "input": t["inputSchema"]},
                                  separators=(",", ":"))) for t in tools)
        size = len(answer.encode("utf-8"))
        print(f"| {name} | {len(tools)} | {size:,} | {size // 4:,} | {seen:,} |")


if __name__ == "__main__":
    main()
