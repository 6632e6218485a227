"""Budget slices (issue 16): replicas admit requests from pre-allocated slices of a budget, refilled in
batches, with the same no-overspend guarantee and a stated bound on early refusal (team/budgets.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mcp_prism.store.sqlite import Store
from mcp_prism.team.budgets import SLICE_REQUESTS, SLICE_SHARE, BudgetExceeded, BudgetService, Enforcer, Reservation

HARD = 100_000_000  # $0.0001 in picodollars
EST = 2_000_000


async def _row(store: Store) -> tuple[int, int, int]:
    rows = await store.fetch("SELECT spent_pico, reserved_pico, requests FROM budget_spend")
    return int(rows[0][0]), int(rows[0][1]), int(rows[0][2])


async def _replicas(store: Store, n: int, lease_ttl: float = 60) -> list[Enforcer]:
    out = []
    for _ in range(n):
        e = Enforcer(store, ttl=0, lease_ttl=lease_ttl)
        await e.start_leases()
        out.append(e)
    return out


@pytest.mark.anyio
async def test_two_replicas_with_slices_never_overspend_and_refuse_early_by_at_most_a_slice(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "p.db")
    try:
        await BudgetService(store).set_budget("team", "t", "month", hard_limit_usd="0.0001")
        reps = await _replicas(store, 2)
        found = await reps[0].applicable(None, None, "t", None)

        async def one(i: int) -> Reservation | None:
            try:
                return await reps[i % 2].reserve(found, EST)
            except BudgetExceeded:
                return None

        held = [r for r in await asyncio.gather(*(one(i) for i in range(100))) if r is not None]
        spent, reserved, _ = await _row(store)
        assert spent + reserved <= HARD  # what the database holds never passes the limit
        assert len(held) * EST <= HARD
        # early refusal: unused room is below one estimate plus the other replica's slice
        slice_ = min(SLICE_REQUESTS * EST, HARD // SLICE_SHARE)
        assert len(held) >= (HARD - EST - slice_) // EST, len(held)
        assert all(r.sliced for r in held)
        for r in held:  # every answer costs its estimate: spend lands exactly on what was admitted
            e = reps[[rep.holder for rep in reps].index(r.holder)]
            e.finish(r, EST)
            await e.settle(r, EST, 10)
        spent, reserved, requests = await _row(store)
        assert spent == len(held) * EST <= HARD and requests == len(held)
        for e in reps:
            await e.stop_leases()  # a graceful stop gives back the unused slices
        assert await _row(store) == (len(held) * EST, 0, len(held))
        assert not await store.fetch("SELECT * FROM budget_leases")
    finally:
        await store.close()


@pytest.mark.anyio
async def test_with_slices_spend_passes_the_limit_only_by_what_answers_cost_beyond_their_estimates(
        tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "p.db")
    try:
        await BudgetService(store).set_budget("team", "t", "month", hard_limit_usd="0.0001")
        [e] = await _replicas(store, 1)
        found = await e.applicable(None, None, "t", None)
        over = 0
        admitted = 0
        for i in range(200):  # sequential: each finishes before the next; every third costs 1.5x its estimate
            try:
                r = await e.reserve(found, EST)
            except BudgetExceeded as refused:
                assert "exhausted" in refused.message or "in flight" in refused.message
                break
            admitted += 1
            actual = EST * 3 // 2 if i % 3 == 0 else EST // 2
            over += max(0, actual - EST)
            e.finish(r, actual)
            await e.settle(r, actual, 10)
        spent, reserved, _ = await _row(store)
        assert spent + reserved <= HARD + over
        assert admitted > HARD // EST  # cheap answers left room for more requests than estimates alone
        assert spent <= HARD + over  # the stated bound
        await e.stop_leases()
        assert (await _row(store))[1] == 0
    finally:
        await store.close()


@pytest.mark.anyio
async def test_an_idle_slice_is_given_back_while_the_replica_lives_and_a_dead_ones_by_its_lease(
        tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "p.db")
    try:
        await BudgetService(store).set_budget("team", "t", "month", hard_limit_usd="1")
        idle, dead = await _replicas(store, 2, lease_ttl=0.3)
        found = await idle.applicable(None, None, "t", None)
        r = await idle.reserve(found, EST)
        idle.finish(r, EST // 2)
        await idle.settle(r, EST // 2, 10)
        assert (await _row(store))[1] == SLICE_REQUESTS * EST - EST // 2  # the rest of its slice is held
        kept = await dead.reserve(found, EST)  # `dead` holds a slice and an admitted request, then is killed
        await asyncio.sleep(0.35)
        idle._renew_at = 0  # its next renewal: renews, reclaims the dead one's lease, gives back its idle slice
        await idle.keep_leases()
        assert await _row(store) == (EST // 2, 0, 1)
        assert [h for (h,) in await store.fetch("SELECT holder FROM budget_holders")] == [idle.holder]
        dead.finish(kept, EST)
        await dead.settle(kept, EST, 10)  # a late settle books the spend and gives nothing back twice
        assert await _row(store) == (EST // 2 + EST, 0, 2)
        r2 = await idle.reserve(found, EST)  # the live replica takes a fresh slice
        assert (await _row(store))[1] == SLICE_REQUESTS * EST and r2.sliced
        await idle.stop_leases()
        assert (await _row(store))[1] == 0
    finally:
        await store.close()
