"""Crash suite (issue 12): kill -9 of the real `mcp-prism gateway` process under load, with budgets, on
SQLite and on PostgreSQL; then a restart. Every answered request must be recorded exactly once (the
journal replayed), no reservation may stay held (the killed process's leases reclaimed), and each
budget's ledger must equal the cost recorded under it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port, wait_for_port
from fakes import FakeProviders, run_fake_providers
from test_gateway import KEYS
from test_store import PG_URL, drop_pg_schema, fresh_pg_schema, pg_unreachable

from mcp_prism.config import Settings
from mcp_prism.service import PrismService
from mcp_prism.team.budgets import BudgetService
from mcp_prism.team.keys import KeyService

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2  # a killed gateway's reservations come back within this (and a renewal interval)
LOAD_SECONDS = 2.0  # of requests before the kill
MIN_ANSWERED = 40
WORKERS = 12


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}, slow_seconds=0.3) as f:
        yield f


class _Load:
    """Clients sending requests (plain and streamed, OpenAI and Anthropic shapes, some slow so that
    requests are in flight at the kill) until told to stop; keeps the ids of answers received whole."""

    def __init__(self, url: str, secret: str) -> None:
        self.url, self.secret = url, secret
        self.answered: list[str] = []
        self.refused = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def worker(self, w: int) -> None:
        with httpx.Client(timeout=10) as c:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    self._one(c, w, i)
                except httpx.HTTPError:  # the gateway was killed under this request: not answered
                    return

    def _one(self, c: httpx.Client, w: int, i: int) -> None:
        anthropic, stream = (w + i) % 2 == 0, i % 3 == 0
        text = f"[slow] load {w}-{i}" if i % 4 == 0 else f"load {w}-{i}"
        body: dict[str, Any] = {"model": "claude-haiku-4-5" if w % 3 else "gpt-5-nano", "max_tokens": 40,
                                "stream": stream, "messages": [{"role": "user", "content": text}]}
        path, headers = ("/v1/messages", {"x-api-key": self.secret, "anthropic-version": "2023-06-01"}) \
            if anthropic else ("/v1/chat/completions", {"authorization": f"Bearer {self.secret}"})
        with c.stream("POST", self.url + path, json=body, headers=headers) as r:
            data = r.read()
        if r.status_code == 429:
            with self._lock:
                self.refused += 1
            return
        assert r.status_code == 200, data
        end = b"message_stop" if anthropic else b"[DONE]"
        if not stream:
            json.loads(data)  # a whole answer
        elif end not in data:
            return  # cut by the kill: not answered
        with self._lock:
            self.answered.append(r.headers["x-prism-request-id"])


def _start(env: dict[str, str], tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port, log = free_port(), tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcp_prism", "gateway", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_port(proc, port, log)
    return proc, port


async def _state(env: dict[str, str]) -> dict[str, Any]:
    svc = await PrismService.open(Settings.from_env(env))
    try:
        st = svc.store
        ids = [r[0] for r in await st.fetch("SELECT id FROM usage_events")]
        ledger = {int(r[0]): (int(r[1]), int(r[2])) for r in
                  await st.fetch("SELECT budget_id, spent_pico, reserved_pico FROM budget_spend")}
        budgets = {r[0]: int(r[1]) for r in await st.fetch("SELECT scope, id FROM budgets")}
        cost = {scope: int((await st.fetch(
            f"SELECT COALESCE(SUM(cost_pico), 0) FROM usage_events WHERE {col} = ?", (val,)))[0][0])
            for scope, col, val in (("team", "team", "t"), ("user", '"user"' if svc.settings.database_url
                                                             else "user", "ana"))}
        leases = int((await st.fetch("SELECT COALESCE(SUM(reserved_pico), 0) FROM budget_leases"))[0][0])
        return {"ids": ids, "ledger": ledger, "budgets": budgets, "cost": cost, "leases": leases}
    finally:
        await svc.close()


def _reserved(state: dict[str, Any]) -> int:
    return sum(reserved for _, reserved in state["ledger"].values())


@pytest.mark.parametrize(("backend", "survivor"), [("sqlite", False), ("postgres", False), ("postgres", True)])
def test_kill_9_under_load_loses_no_answer_and_holds_no_reservation(backend: str, survivor: bool,
                                                                      fake: FakeProviders, tmp_path: Path) -> None:
    """`survivor`: a second replica keeps running beside the killed one and gives its reservations back
    before anything restarts; the restart then books the journaled answers without giving them back twice."""
    env = {**os.environ, **KEYS, "PRISM_HOME": str(tmp_path)}
    env.pop("PRISM_CONFIG", None)
    env.pop("PRISM_DB", None)
    schema = None
    if backend == "postgres":
        reason = asyncio.run(pg_unreachable())
        if reason:
            pytest.skip(reason)
        schema = fresh_pg_schema()
        env["PRISM_DATABASE_URL"] = f"{PG_URL}?schema={schema}"
    else:
        env.pop("PRISM_DATABASE_URL", None)
    (tmp_path / "config.toml").write_text(f'[providers.openai]\nbase_url = "{fake.base_url}/v1"\n'
                                          f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n'
                                          f"[gateway]\nbudget_lease_seconds = {LEASE_SECONDS}\n")

    async def setup() -> str:
        svc = await PrismService.open(Settings.from_env(env))
        try:
            created = await KeyService(svc.store).create("t", user="ana")
            await BudgetService(svc.store).set_budget("team", "t", "month", hard_limit_usd="5")
            await BudgetService(svc.store).set_budget("user", "ana", "day", hard_limit_usd="5")
            return created.secret
        finally:
            await svc.close()

    procs: list[subprocess.Popen[bytes]] = []
    try:
        secret = asyncio.run(setup())
        if survivor:
            procs.append(_start(env, tmp_path, "replica")[0])
        proc, port = _start(env, tmp_path, "gateway")
        procs.append(proc)
        load = _Load(f"http://127.0.0.1:{port}", secret)
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            workers = [pool.submit(load.worker, w) for w in range(WORKERS)]
            began = time.monotonic()  # at least LOAD_SECONDS and MIN_ANSWERED answers (at most 20 s: a busy machine)
            while time.monotonic() - began < 20 and (time.monotonic() - began < LOAD_SECONDS
                                                      or len(load.answered) < MIN_ANSWERED):
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # mid-load: answers just sent, requests in flight, batches unwritten
            proc.wait(timeout=10)
            load.stop.set()
            for f in workers:
                f.result()  # a worker's own failure (not the kill's) fails the test
        journaled = sum(len(p.read_bytes().splitlines()) for p in (tmp_path / "spool").glob("spool-*.jsonl"))
        before = asyncio.run(_state(env))
        assert len(load.answered) >= MIN_ANSWERED, "the load did not get going"
        if survivor:  # the surviving replica reclaims the dead one's leases on its own
            deadline = time.monotonic() + 10 * LEASE_SECONDS
            while _reserved(state := asyncio.run(_state(env))) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _reserved(state) == 0 and state["leases"] == 0, state["ledger"]

        proc, port = _start(env, tmp_path, "restarted")  # replays the journal, reclaims the expired leases
        procs.append(proc)
        deadline = time.monotonic() + 10 * LEASE_SECONDS
        while True:
            after = asyncio.run(_state(env))
            if not _reserved(after) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for p in procs:
            if p.poll() is None:
                p.terminate()
                assert p.wait(timeout=30) in (0, -signal.SIGTERM)
        after = asyncio.run(_state(env))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if schema is not None:
            asyncio.run(drop_pg_schema(schema))

    ids = after["ids"]
    assert len(ids) == len(set(ids))  # recorded at most once
    missing = set(load.answered) - set(ids)
    assert not missing, f"{len(missing)} answered request(s) not recorded ({journaled} journaled at the kill)"
    assert after["leases"] == 0
    for scope, budget_id in after["budgets"].items():
        spent, reserved = after["ledger"][budget_id]
        assert reserved == 0, (scope, after["ledger"])  # no reservation held
        assert spent == after["cost"][scope], (scope, spent, after["cost"])  # ledger = recorded cost
    print(f"{backend}{' + survivor' if survivor else ''}: {len(load.answered)} answered, {load.refused} refused, "
          f"{journaled} journaled at the kill, {len(set(load.answered) - set(before['ids']))} answered but "
          "unrecorded before the restart")
