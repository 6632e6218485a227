"""Two `mcp-prism gateway` processes sharing one PostgreSQL store enforce one budget exactly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import free_port, wait_for_port
from fakes import FakeProviders, run_fake_providers
from test_gateway import KEYS
from test_store import PG_URL, drop_pg_schema, fresh_pg_schema, pg_unreachable

from mcp_prism.config import Settings
from mcp_prism.core.pricing import to_picodollars
from mcp_prism.service import PrismService
from mcp_prism.team.budgets import BudgetService
from mcp_prism.team.keys import KeyService

# USD: room for about ten of these requests. max_tokens is kept near the fake's answer length so that the
# reserved estimate is close to the settled cost: how many get in then does not depend on settle timing.
HARD_LIMIT = "0.00004"


@pytest.fixture
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as f:
        yield f


def test_two_gateway_processes_on_one_postgres_enforce_one_budget(fake: FakeProviders, tmp_path: Path) -> None:
    reason = asyncio.run(pg_unreachable())
    if reason:
        pytest.skip(reason)
    schema = fresh_pg_schema()
    env = {**os.environ, **KEYS, "PRISM_HOME": str(tmp_path), "PRISM_DATABASE_URL": f"{PG_URL}?schema={schema}"}
    env.pop("PRISM_CONFIG", None)
    (tmp_path / "config.toml").write_text(f'[providers.openai]\nbase_url = "{fake.base_url}/v1"\n')

    async def setup() -> str:
        svc = await PrismService.open(Settings.from_env(env))
        try:
            created = await KeyService(svc.store).create("search")
            await BudgetService(svc.store).set_budget("team", "search", "month", hard_limit_usd=HARD_LIMIT)
            return created.secret
        finally:
            await svc.close()

    procs: list[subprocess.Popen[bytes]] = []
    try:
        secret = asyncio.run(setup())
        ports = [free_port(), free_port()]
        for i, port in enumerate(ports):
            log = tmp_path / f"gateway{i}.log"
            with log.open("wb") as out:
                procs.append(subprocess.Popen([sys.executable, "-m", "mcp_prism", "gateway", "--port", str(port)],
                                              env=env, stdout=out, stderr=subprocess.STDOUT))
            wait_for_port(procs[-1], port, log)

        def one(i: int) -> int:
            r = httpx.post(f"http://127.0.0.1:{ports[i % 2]}/v1/chat/completions", timeout=30,
                           headers={"authorization": f"Bearer {secret}"},
                           json={"model": "gpt-5-nano", "max_tokens": 6,
                                 "messages": [{"role": "user", "content": f"request {i}"}]})
            return r.status_code

        with ThreadPoolExecutor(max_workers=40) as pool:
            codes = list(pool.map(one, range(80)))
        for p in procs:
            p.terminate()
            p.wait(timeout=30)

        async def ledger() -> tuple[int, int, int]:
            svc = await PrismService.open(Settings.from_env(env))
            try:
                rows = await svc.store.fetch("SELECT spent_pico, reserved_pico FROM budget_spend")
                events = await svc.store.fetch("SELECT COUNT(*) FROM usage_events WHERE status = 'ok'")
                return int(rows[0][0]), int(rows[0][1]), int(events[0][0])
            finally:
                await svc.close()

        spent, reserved, recorded = asyncio.run(ledger())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        asyncio.run(drop_pg_schema(schema))
    admitted = codes.count(200)
    assert set(codes) <= {200, 429} and admitted >= 5 and codes.count(429) >= 40, codes
    assert spent <= to_picodollars(__import__("decimal").Decimal(HARD_LIMIT))  # one budget, never overspent
    assert reserved == 0 and recorded == admitted  # every admitted request settled and recorded
