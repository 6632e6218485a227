"""Virtual keys and budgets as services, pure windows and estimates, and their CLI and MCP adapters."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

import mcp_prism.cli
import mcp_prism.mcp_server
from mcp_prism.config import Settings
from mcp_prism.core.budgets import Budget, RateWindow, estimate_pico, output_allowance, state_of, window, window_key
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.service import PrismService
from mcp_prism.team.budgets import BudgetExceeded, BudgetService, Enforcer
from mcp_prism.team.keys import KeyCache, KeyService, hash_secret, key_id_of


@pytest.fixture
async def svc(tmp_path: Path) -> Any:
    s = await PrismService.open(Settings.from_env({}, home=tmp_path))
    yield s
    await s.close()


# ---------------------------------------------------------------- pure
def test_windows_and_reset_times_are_utc() -> None:
    now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)  # a Thursday
    assert window("day", now) == (datetime(2026, 12, 31, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert window("week", now) == (datetime(2026, 12, 28, tzinfo=UTC), datetime(2027, 1, 4, tzinfo=UTC))
    assert window("month", now) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert window("month", datetime(2027, 2, 10, tzinfo=UTC))[1] == datetime(2027, 3, 1, tzinfo=UTC)
    assert window_key(window("week", now)[0]) == "2026-12-28"
    with pytest.raises(InvalidInput, match="day, week, month"):
        window("year", now)


def test_estimate_and_state() -> None:
    assert output_allowance({"max_tokens": 50}) == 50 and output_allowance({"max_completion_tokens": 7}) == 7
    assert output_allowance({}) == 4096
    assert estimate_pico(None, 4000, 100) == 0
    b = Budget(1, "team", "t", "day", soft_pico=5, hard_pico=10, rpm=None, tpm=None, downgrade=True)
    assert state_of(b, 4, 0) == "ok" and state_of(b, 5, 0) == "soft_exceeded" and state_of(b, 5, 5) == "exhausted"
    assert b.near_soft(5) and not b.near_soft(4) and b.remaining_pico(3, 4) == 3


def test_rate_window_slides() -> None:
    w = RateWindow()
    assert w.check(2, None, 0.0) is None
    w.admit(0.0)
    w.admit(1.0)
    reason, wait = w.check(2, None, 2.0)  # type: ignore[misc]
    assert reason == "rpm" and wait == pytest.approx(58.0)
    assert w.check(2, None, 60.5) is None  # the first one left the window
    w.used(100, 61.0)
    assert w.check(None, 100, 62.0) == ("tpm", pytest.approx(59.0))


# ---------------------------------------------------------------- keys
@pytest.mark.anyio
async def test_key_lifecycle_secret_shown_once_hash_only(svc: PrismService, tmp_path: Path) -> None:
    keys = KeyService(svc.store)
    created = await keys.create("search", user="ana", project="web", name="ana's laptop")
    secret = created.secret
    assert secret.startswith(f"sk-prism-{created.key.id}-") and key_id_of(secret) == created.key.id
    listed = await keys.list()
    assert [k.id for k in listed.keys] == [created.key.id]
    assert secret not in listed.model_dump_json()
    cache = KeyCache(svc.store, ttl=0)
    assert (await cache.verify(secret)).team == "search"  # type: ignore[union-attr]
    assert await cache.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert await cache.verify("sk-prism-nope-x") is None and await cache.verify("unused") is None

    rotated = await keys.rotate(created.key.id)
    assert rotated.key.rotated_from == created.key.id and rotated.secret != secret
    assert await cache.verify(secret) is None and await cache.verify(rotated.secret) is not None
    assert [k.id for k in (await keys.list()).keys] == [rotated.key.id]
    assert len((await keys.list(include_revoked=True)).keys) == 2
    with pytest.raises(InvalidInput, match="revoked already"):
        await keys.rotate(created.key.id)
    assert not (await keys.revoke(rotated.key.id)).active
    assert await cache.verify(rotated.secret) is None
    with pytest.raises(UnknownName):
        await keys.revoke("nokey")
    await svc.store.fetch("PRAGMA wal_checkpoint(FULL)")
    db = b"".join(p.read_bytes() for p in tmp_path.glob("prism.db*"))
    for s in (secret, rotated.secret):
        assert s.encode() not in db and hash_secret(s).encode() in db


@pytest.mark.anyio
async def test_key_cache_sees_revocation_within_its_ttl(svc: PrismService) -> None:
    created = await KeyService(svc.store).create("t")
    cache = KeyCache(svc.store, ttl=3600)
    assert await cache.verify(created.secret) is not None
    await KeyService(svc.store).revoke(created.key.id)
    assert await cache.verify(created.secret) is not None  # cached: the documented TTL
    cache.ttl = 0
    assert await cache.verify(created.secret) is None


# ---------------------------------------------------------------- budgets
@pytest.mark.anyio
async def test_set_budget_validates_and_reports_status(svc: PrismService) -> None:
    budgets = BudgetService(svc.store)
    with pytest.raises(InvalidInput, match="at least one limit"):
        await budgets.set_budget("team", "t", "day")
    with pytest.raises(InvalidInput, match="above the hard limit"):
        await budgets.set_budget("team", "t", "day", soft_limit_usd=5, hard_limit_usd=1)
    with pytest.raises(InvalidInput, match="key, user, team, project"):
        await budgets.set_budget("org", "t", "day", hard_limit_usd=1)
    with pytest.raises(UnknownName):
        await budgets.set_budget("key", "missing", "day", hard_limit_usd=1)
    v = await budgets.set_budget("team", "t", "day", soft_limit_usd="0.5", hard_limit_usd=Decimal("1"), rpm=10)
    assert v.hard_limit_usd == Decimal(1) and v.spent_usd == 0 and v.state == "ok" and v.resets_at.endswith("Z")
    v2 = await budgets.set_budget("team", "t", "day", hard_limit_usd=2)  # replaces: same id
    assert v2.id == v.id and v2.soft_limit_usd is None and v2.rpm is None
    with pytest.raises(InvalidInput, match="no budget"):
        await budgets.budget_status(scope="user", subject="zed")


@pytest.mark.anyio
async def test_reserve_all_or_nothing_settle_and_soft_alert_once(svc: PrismService) -> None:
    budgets = BudgetService(svc.store)
    await budgets.set_budget("team", "t", "day", soft_limit_usd="0.000003", hard_limit_usd="0.00001")
    await budgets.set_budget("user", "u", "day", hard_limit_usd="0.000005")
    enf = Enforcer(svc.store, ttl=0)
    applicable = await enf.applicable(None, "u", "t", None)
    assert {b.scope for b in applicable} == {"team", "user"}
    est = 2_000_000  # $0.000002
    r1 = await enf.reserve(applicable, est)
    r2 = await enf.reserve(applicable, est)
    with pytest.raises(BudgetExceeded) as e:  # the user budget (5 µ$) has 1 µ$ left: refused on both
        await enf.reserve(applicable, est)
    # held by the two in flight (issue 12 case 12: it said "resets at" with a month's Retry-After)
    assert "user u" in e.value.message and "$0.000004 is reserved" in e.value.message and e.value.retry_after < 5
    team = (await budgets.budget_status(scope="team")).budgets[0]
    assert team.reserved_usd == Decimal("0.000004") and team.requests == 2  # the refused one left no trace
    await enf.settle(r1, 1_500_000, 10)
    await enf.settle(r1, 1_500_000, 10)  # settling twice is a no-op
    await enf.settle(r2, 2_000_000, 10)
    team = (await budgets.budget_status(scope="team")).budgets[0]
    assert team.spent_usd == Decimal("0.0000035") and team.reserved_usd == 0 and team.state == "soft_exceeded"
    r3 = await enf.reserve([b for b in applicable if b.scope == "team"], est)
    await enf.settle(r3, 1_000_000, 10)
    alerts = await svc.store.fetch("SELECT kind, message, details FROM alerts")
    assert len(alerts) == 1 and alerts[0]["kind"] == "budget_soft_limit"
    assert json.loads(alerts[0]["details"])["subject"] == "t"


@pytest.mark.anyio
async def test_two_services_on_one_database_enforce_one_budget(tmp_path: Path) -> None:
    settings = Settings.from_env({}, home=tmp_path)
    a, b = await PrismService.open(settings), await PrismService.open(settings)
    try:
        await BudgetService(a.store).set_budget("project", "p", "month", hard_limit_usd="0.00001")
        ea, eb = Enforcer(a.store, ttl=0), Enforcer(b.store, ttl=0)
        held = []
        for i in range(6):  # alternate the two connections: 5 x 2 µ$ fit, the 6th does not
            enf = ea if i % 2 == 0 else eb
            try:
                held.append((enf, await enf.reserve(await enf.applicable(None, None, None, "p"), 2_000_000)))
            except BudgetExceeded:
                break
        assert len(held) == 5
        for enf, res in held:
            await enf.settle(res, 2_000_000, 1)
        v = (await BudgetService(b.store).budget_status()).budgets[0]
        assert v.spent_usd == Decimal("0.00001") and v.reserved_usd == 0 and v.state == "exhausted"
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------- adapters
def test_cli_keys_and_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    # mcp_prism.cli_team is registered by mcp_prism.cli (LOOP_CLI_MODULES)
    home = ["--home", str(tmp_path)]
    assert mcp_prism.cli.main(["keys", "create", "--team", "search", "--user", "ana", *home]) == 0
    out = capsys.readouterr().out
    secret = next(w for w in out.split() if w.startswith("sk-prism-"))
    assert "only time" in out
    assert mcp_prism.cli.main(["keys", "list", "--json", *home]) == 0
    listed = json.loads(capsys.readouterr().out)
    kid = listed["keys"][0]["id"]
    assert secret not in json.dumps(listed)
    assert mcp_prism.cli.main(["budget", "set", "key", kid, "--period", "day", "--hard", "5", "--soft", "4",
                               *home]) == 0
    assert "| key" in capsys.readouterr().out
    assert mcp_prism.cli.main(["budget", "status", "--json", *home]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["budgets"][0]["hard_limit_usd"] == "5" and status["budgets"][0]["state"] == "ok"
    assert mcp_prism.cli.main(["keys", "rotate", kid, *home]) == 0
    assert "replaces" in capsys.readouterr().out
    assert mcp_prism.cli.main(["keys", "revoke", kid, *home]) == 0
    assert mcp_prism.cli.main(["budget", "set", "team", "x", *home]) != 0
    assert "at least one limit" in capsys.readouterr().err


@pytest.mark.anyio
async def test_mcp_set_budget_and_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = mcp_prism.mcp_server.build_server(Settings.from_env({}, home=tmp_path), toolsets="team")
    async with Client(server) as c:
        r = await c.call_tool("set_budget", {"scope": "team", "subject": "t", "period": "week",
                                             "hard_limit_usd": 20, "rpm": 60})
        assert not r.is_error and r.structured_content["hard_limit_usd"] == "20"
        r = await c.call_tool("budget_status", {})
        assert r.structured_content["budgets"][0]["remaining_usd"] == "20"
        r = await c.call_tool("set_budget", {"scope": "team", "subject": "t", "soft_limit_usd": 5,
                                             "hard_limit_usd": 1})
        assert r.is_error and "above the hard limit" in r.content[0].text


# ---------------------------------------------------------------- issue 12: hardening (cases 3, 4, 12)
def test_cli_refuses_a_huge_limit_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(tmp_path)]
    for flag, value in (("--hard", "1e30"), ("--hard", "1e400"), ("--hard", "5000000"), ("--soft", "four hundred")):
        assert mcp_prism.cli.main(["budget", "set", "team", "x", flag, value, *home]) != 0
        err = capsys.readouterr().err
        clear = ("too large", "must be an amount", "not an amount")
        assert "Traceback" not in err and any(s in err for s in clear), err
    assert mcp_prism.cli.main(["budget", "list", "--json", *home]) == 0
    assert json.loads(capsys.readouterr().out)["budgets"] == []


@pytest.mark.anyio
async def test_an_unreadable_budget_row_is_skipped_not_fatal(svc: PrismService) -> None:
    budgets = BudgetService(svc.store)
    await budgets.set_budget("team", "good", "day", hard_limit_usd=1)
    # a row written before limits were checked (or by hand): 1e30 dollars overflows the picodollar ledger
    await svc.store.transaction(lambda c: c.execute(
        "INSERT INTO budgets (scope, subject, period, hard_limit_usd, created_at, updated_at) "
        "VALUES ('team', 'bad', 'day', '1e30', 'x', 'x')"))
    listed = await budgets.budget_status()
    assert [b.subject for b in listed.budgets] == ["good"]
    enf = Enforcer(svc.store, ttl=0)
    await enf.refresh(force=True)  # the gateway's start-up read
    assert [b.subject for b in await enf.applicable(None, None, "good", None)] == ["good"]
    assert await enf.applicable(None, None, "bad", None) == []


@pytest.mark.anyio
async def test_a_budget_created_after_start_is_enforced_within_the_cache_interval(svc: PrismService) -> None:
    enf = Enforcer(svc.store, ttl=0.05)
    await enf.refresh(force=True)
    assert not enf.any  # none yet: the gateway skips budget lookups
    await BudgetService(svc.store).set_budget("team", "t", "day", hard_limit_usd="0.000001")
    deadline = asyncio.get_running_loop().time() + 5
    while not enf.any:  # the gateway's own test before each request
        assert asyncio.get_running_loop().time() < deadline, "a new budget never reached the enforcer"
        await asyncio.sleep(0.01)
    found = await enf.applicable(None, None, "t", None)
    assert [b.subject for b in found] == ["t"]
    with pytest.raises(BudgetExceeded):
        await enf.reserve(found, 2_000_000)


@pytest.mark.anyio
async def test_a_refusal_by_requests_in_flight_says_so_and_retries_soon(svc: PrismService) -> None:
    await BudgetService(svc.store).set_budget("team", "t", "month", hard_limit_usd="0.00001")
    enf = Enforcer(svc.store, ttl=0)
    found = await enf.applicable(None, None, "t", None)
    held = await enf.reserve(found, 8_000_000)  # a request in flight holds $0.000008 of $0.00001
    with pytest.raises(BudgetExceeded) as e:
        await enf.reserve(found, 5_000_000)  # would fit once it settles
    assert e.value.retry_after <= 5  # not the month's reset
    assert "in flight" in e.value.message and "left" not in e.value.message
    await enf.settle(held, 8_000_000, 10)
    with pytest.raises(BudgetExceeded) as e:  # now truly exhausted: the reset is the answer
        await enf.reserve(found, 5_000_000)
    assert e.value.retry_after > 3600 and "resets at" in e.value.message
