"""Issue 12.11: `experiment run` exits non-zero when every call failed (and `start` already warned), and the
experiment `analyze` proposes starts from the model the traffic actually ran on."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "DEEPSEEK_API_KEY")


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_") and k not in KEYS}
    return subprocess.run([sys.executable, "-m", "mcp_prism", *args, "--home", str(home)], cwd=REPO, env=env,
                          text=True, capture_output=True, timeout=300)


def test_a_run_where_every_call_fails_exits_non_zero(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"classify ticket {i}: printer on fire"}) + "\n"
                               for i in range(50)))
    home = tmp_path / "home"
    r = cli(home, "experiment", "start", "ticket_classification", "--candidates", "gpt-5-mini", "--from-file",
            str(prompts), "--samples", "50", "--baseline", "claude-haiku-4-5", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert any("no API key for anthropic" in w for w in info["warnings"])  # start already knew
    r = cli(home, "experiment", "run", info["id"])
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "every one of the 100 call(s) failed" in r.stderr and "Traceback" not in r.stderr
    assert "ANTHROPIC_API_KEY" in r.stdout or "ANTHROPIC_API_KEY" in r.stderr


def test_analyze_proposes_experiments_against_the_model_the_traffic_ran_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = cli(home, "demo", "--requests", "3000", "--db", str(home / "prism.db"))  # sample traffic, all on sonnet
    assert r.returncode == 0, r.stderr
    r = cli(home, "analyze", "--json")
    assert r.returncode == 0, r.stderr
    hypotheses = json.loads(r.stdout)["hypotheses"]
    assert hypotheses, "the demo's tier mismatches should propose experiments"
    for h in hypotheses:
        assert h["current_model"] == "claude-sonnet-4-5" and "--baseline claude-sonnet-4-5" in h["command"]
    # the proposal runs: no "candidate is the baseline" (the demo stores no prompts, so it stops at sampling)
    args = shlex.split(hypotheses[0]["command"])[1:]
    r = cli(home, *args)
    assert "is the baseline" not in r.stderr and "Traceback" not in r.stderr
    assert r.returncode == 2 and "capture" in r.stderr
