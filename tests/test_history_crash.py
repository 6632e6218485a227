"""Crash suite, importers (issue 12 "Done when"): kill -9 of a real `mcp-prism import-history` mid-run, then
the same command again: every logged request is imported exactly once (none lost, none twice)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from test_history import DAY, assistant_line, user_line, write_jsonl

SESSIONS, PER_SESSION = 120, 250  # 30,000 requests: the import takes seconds, so the kill lands mid-run


def _count(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage_events").fetchone()
    except sqlite3.OperationalError:  # the table is not there yet
        return 0, 0


def test_import_history_killed_mid_run_then_rerun_imports_each_request_once(tmp_path: Path) -> None:
    logs = tmp_path / "claude"
    for s in range(SESSIONS):
        entries = []
        for i in range(PER_SESSION):
            n = s * PER_SESSION + i
            ts = DAY + timedelta(seconds=n)
            entries += [user_line("write unit tests for the invoice parser", ts, session=f"s{s}"),
                        assistant_line(n, ts + timedelta(seconds=1), session=f"s{s}")]
        write_jsonl(logs / f"projects/-work-p{s}/s{s}.jsonl", entries)
    total = SESSIONS * PER_SESSION
    home = tmp_path / "home"
    env = {**os.environ, "PRISM_HOME": str(home)}
    cmd = [sys.executable, "-m", "mcp_prism", "import-history", "claude-code", "--path", str(logs),
           "--machine", "m1", "--user", "ana"]
    db = home / "prism.db"

    log = tmp_path / "import.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while _count(db)[0] == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-run: some logs stored, their offsets maybe not, others not read
    proc.wait(timeout=30)
    at_kill = _count(db)[0]
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    assert 0 < at_kill < total, f"the kill did not land mid-run ({at_kill} of {total} stored)"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _count(db) == (total, total)  # every request once: none lost, none stored twice
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0 and _count(db) == (total, total)  # and a third run adds nothing
