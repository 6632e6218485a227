"""Keys and budgets enforced by the real gateway (uvicorn thread, fake providers behind it, SQLite)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fakes import FakeProviders, run_fake_providers
from test_gateway import KEYS, RunningGateway

from mcp_prism.config import Settings
from mcp_prism.core.budgets import estimate_pico
from mcp_prism.core.pricing import from_picodollars
from mcp_prism.errors import ConfigError
from mcp_prism.gateway import serve_gateway
from mcp_prism.service import PrismService
from mcp_prism.team.budgets import BudgetService
from mcp_prism.team.keys import KeyService


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}, slow_seconds=0.5) as f:
        yield f


def _setup(home: Path, *, budgets: list[dict[str, Any]] = (), **key: Any) -> str:  # type: ignore[assignment]
    """A key (and budgets; `subject="$key"` means the key) in the home's database; returns the secret."""
    async def go() -> str:
        svc = await PrismService.open(Settings.from_env({}, home=home))
        try:
            created = await KeyService(svc.store).create(key.pop("team", "search"), **key)
            for b in budgets:
                b = dict(b)
                subject = created.key.id if b["subject"] == "$key" else b["subject"]
                await BudgetService(svc.store).set_budget(b.pop("scope"), subject, b.pop("period", "day"),
                                                          **{k: v for k, v in b.items() if k != "subject"})
            return created.secret
        finally:
            await svc.close()

    home.mkdir(parents=True, exist_ok=True)
    return asyncio.run(go())


def _ledger(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("SELECT * FROM budget_spend")]


def _keyed(home: Path, fake: FakeProviders) -> RunningGateway:
    g = RunningGateway(home, fake)
    g.app.require_key = True  # what `mcp-prism gateway` does without --no-auth
    return g


def test_key_required_labels_usage_and_revocation(fake: FakeProviders, tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = _setup(home, team="search", user="ana")
    with _keyed(home, fake) as g:
        with pytest.raises(openai.AuthenticationError, match="virtual key"):
            g.openai().chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(anthropic.AuthenticationError):
            g.anthropic(api_key=secret + "x").messages.create(model="gpt-5-nano", max_tokens=5,
                                                              messages=[{"role": "user", "content": "x"}])
        raw = g.openai(api_key=secret).chat.completions.with_raw_response.create(
            model="gpt-5-nano", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-prism-team": "other", "x-prism-project": "web"})
        ev = g.event(raw.headers["x-prism-request-id"])
        assert (ev["team"], ev["user"], ev["project"]) == ("search", "ana", "web")  # the key's team wins
        assert ev["api_key_id"] == secret.split("-")[2]
        assert httpx.get(f"{g.url}/metrics").status_code == 401
        assert httpx.get(f"{g.url}/metrics", headers={"authorization": f"Bearer {secret}"}).status_code == 200
        g.app.keys.ttl = 0  # type: ignore[union-attr]  # revocation shows within the cache TTL; skip the wait
        asyncio.run(_revoke(home, secret.split("-")[2]))
        with pytest.raises(openai.AuthenticationError):
            g.openai(api_key=secret).chat.completions.create(model="gpt-5-nano",
                                                             messages=[{"role": "user", "content": "x"}])
    assert secret.encode() not in b"".join(p.read_bytes() for p in home.glob("prism.db*"))


async def _revoke(home: Path, kid: str) -> None:
    svc = await PrismService.open(Settings.from_env({}, home=home))
    try:
        await KeyService(svc.store).revoke(kid)
    finally:
        await svc.close()


def test_no_auth_only_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        serve_gateway(Settings.from_env({}, home=tmp_path), host="0.0.0.0", port=1, no_auth=True)


def test_hard_budget_429_in_each_clients_shape(fake: FakeProviders, tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = _setup(home, budgets=[{"scope": "key", "subject": "$key", "hard_limit_usd": "0.0002"}])
    with _keyed(home, fake) as g:
        ok = g.openai(api_key=secret).chat.completions.create(model="gpt-5-nano", max_tokens=100,
                                                              messages=[{"role": "user", "content": "hi"}])
        assert ok.choices[0].message.content
        with pytest.raises(openai.RateLimitError) as e:  # 4096 output tokens allowance: $0.0016 > what is left
            g.openai(api_key=secret).chat.completions.create(model="gpt-5-nano",
                                                             messages=[{"role": "user", "content": "hi"}])
        msg = str(e.value)
        assert "daily budget of key" in msg and "left" in msg and "resets at" in msg
        assert int(e.value.response.headers["retry-after"]) > 0
        with pytest.raises(anthropic.RateLimitError) as ea:
            g.anthropic(api_key=secret).messages.create(model="gpt-5-nano", max_tokens=4096,
                                                        messages=[{"role": "user", "content": "hi"}])
        assert ea.value.body["type"] == "error" and "exhausted" in ea.value.body["error"]["message"]
        time.sleep(0.3)
        metrics = httpx.get(f"{g.url}/metrics", headers={"x-api-key": secret}).text
        assert 'prism_budget_remaining_usd{period="day",scope="key"' in metrics
        assert 'prism_budget_rejections_total{' in metrics and 'reason="budget"' in metrics


def test_rpm_limit_and_soft_limit_alert(fake: FakeProviders, tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = _setup(home, team="t", budgets=[{"scope": "team", "subject": "t", "rpm": 3},
                                             {"scope": "team", "subject": "t", "period": "month",
                                              "soft_limit_usd": "0.0000001"}])
    with _keyed(home, fake) as g:
        client = g.openai(api_key=secret)
        for i in range(3):
            client.chat.completions.create(model="gpt-5-nano", max_tokens=50,
                                           messages=[{"role": "user", "content": f"n{i}"}])
        with pytest.raises(openai.RateLimitError, match="3 requests per minute") as e:
            client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "n4"}])
        assert int(e.value.response.headers["retry-after"]) >= 1
    with sqlite3.connect(home / "prism.db") as db:
        alerts = db.execute("SELECT kind, message FROM alerts").fetchall()
    assert len(alerts) == 1 and alerts[0][0] == "budget_soft_limit" and "team t" in alerts[0][1]


def test_100_concurrent_requests_never_overspend_the_hard_limit(fake: FakeProviders, tmp_path: Path) -> None:
    """The guarantee: admission compares the limit with settled spend plus every reservation in flight,
    so settled spend <= limit + sum over admitted requests of (actual - estimate)+; the fake's answers
    cost less than their estimates, so spend never passes the limit at all."""
    home = tmp_path / "home"
    hard = Decimal("0.0005")
    secret = _setup(home, team="t", budgets=[{"scope": "team", "subject": "t", "hard_limit_usd": str(hard)}])
    body = json.dumps({"model": "gpt-5-nano", "max_tokens": 200,
                       "messages": [{"role": "user", "content": "[slow] concurrency probe"}]}).encode()

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as c:
            return await asyncio.gather(*(c.post(f"{url}/v1/chat/completions", content=body, headers={
                "authorization": f"Bearer {secret}", "content-type": "application/json"}) for _ in range(100)))

    with _keyed(home, fake) as g:
        responses = asyncio.run(fire(g.url))
        admitted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(admitted) + len(refused) == 100, {r.status_code for r in responses}
        events = [g.event(r.headers["x-prism-request-id"]) for r in admitted]
    estimate = estimate_pico(g.app.service.catalog.prices_at("gpt-5-nano"), len(body), 200)  # type: ignore[union-attr]
    assert len(admitted) >= int(hard * 10**12) // estimate  # no refusal while there was room for one more
    # refused while others were in flight: said so, with a Retry-After of seconds (issue 12 case 12)
    assert refused and all("exhausted" in r.json()["error"]["message"] or "in flight" in r.json()["error"]["message"]
                           for r in refused)
    assert all(int(r.headers["retry-after"]) <= 5 for r in refused if "in flight" in r.json()["error"]["message"])
    actual = [Decimal(e["cost_usd"]) for e in events]
    over = sum((max(Decimal(0), a - from_picodollars(estimate)) for a in actual), Decimal(0))
    [row] = _ledger(home / "prism.db")
    assert row["reserved_pico"] == 0  # every reservation settled
    spent = from_picodollars(row["spent_pico"])
    assert spent == sum(actual)  # the ledger and the usage record agree to the picodollar
    assert spent <= hard + over and over == 0


def test_near_the_soft_limit_a_downgrade_budget_routes_to_the_rules_cheaper_model(fake: FakeProviders,
                                                                                   tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = _setup(home, team="t", budgets=[{"scope": "team", "subject": "t", "period": "month",
                                              "soft_limit_usd": "0.0000001", "downgrade": True}])

    async def rule() -> None:
        svc = await PrismService.open(Settings.from_env({}, home=home))
        try:
            await svc.update_routing_rule({"task_type": "code_review", "primary": "claude-sonnet-4-5",
                                           "fallbacks": ["claude-haiku-4-5"]}, author="test", reason="downgrade")
        finally:
            await svc.close()

    asyncio.run(rule())
    with _keyed(home, fake) as g:
        client = g.openai(api_key=secret)
        ask = {"model": "prism/code_review", "messages": [{"role": "user", "content": "review this"}]}
        first = client.chat.completions.with_raw_response.create(**ask)
        second = client.chat.completions.with_raw_response.create(**ask)
    assert first.headers["x-prism-model"] == "claude-sonnet-4-5"  # under the soft limit: the rule's choice
    assert second.headers["x-prism-model"] == "claude-haiku-4-5"  # past it: the rule's cheaper model


def test_a_budget_set_after_the_gateway_started_with_none_is_enforced(fake: FakeProviders, tmp_path: Path) -> None:
    """Issue 12 case 3: it stayed unenforced until a restart (32 of 32 requests over a $0.000001 budget
    answered 200)."""
    home = tmp_path / "home"
    secret = _setup(home, team="t")
    with _keyed(home, fake) as g:
        g.app.enforcer.ttl = 0.2  # type: ignore[union-attr]  # the 5 s cache interval, shortened for the test
        client = g.openai(api_key=secret)
        client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": "before"}])

        async def set_budget() -> None:
            svc = await PrismService.open(Settings.from_env({}, home=home))
            try:
                await BudgetService(svc.store).set_budget("team", "t", "month", hard_limit_usd="0.000001")
            finally:
                await svc.close()

        asyncio.run(set_budget())
        time.sleep(0.3)
        codes = []
        for i in range(5):
            try:
                client.chat.completions.create(model="gpt-5-nano", messages=[{"role": "user", "content": f"n{i}"}])
                codes.append(200)
            except openai.RateLimitError:
                codes.append(429)
    assert codes == [429] * 5
