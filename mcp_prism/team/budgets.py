"""Budgets over the store: setting them, their status, and the gateway's enforcement ledger.

Enforcement (`Enforcer`) before the upstream call reserves the request's estimated cost on every USD
budget that applies (its key, user, team, project) in ONE transaction: per budget a conditional
`UPDATE budget_spend ... WHERE spent + reserved + estimate <= hard`, so either every budget admits the
request or none is touched. After the answer (or an error, or a disconnect) one more transaction
settles: reserved -= estimate, spent += actual. Because admission compares against spend AND every
reservation in flight, across processes sharing the database, the settled spend can pass the hard
limit only by what admitted requests cost beyond their estimates (0 when they stay within their
max_tokens and the body-bytes/4 prompt estimate).

Reservations are leases (`store/leases.py`): a gateway process registers as a holder, renews it every
third of `lease_ttl`, and sums what it holds per budget window in `budget_leases` inside the same
transactions as `budget_spend`. When a gateway is killed its holder expires, and any gateway (a
surviving replica, or the restarted one) gives its reservations back. Settling goes through the
lease too, so a reservation is given back exactly once, by its settle or by a reclaim.

Slices (a gateway with leases): the request path does not write the database per request. A replica
reserves a *slice* of each hard-limited budget at once (up to `SLICE_REQUESTS` estimates, at most
1/`SLICE_SHARE` of the hard limit, never less than it needs), under its lease and by the same conditional
UPDATE, and admits requests from it in memory while `in flight estimates + estimate <= slice`. When the
slice runs short it is refilled (one transaction for all the request's budgets); when a full slice no
longer fits under the limit, exactly what the request needs is asked for, so the last dollar is still
usable. A finished request gives its estimate back to the slice at once and its actual cost (at most the
estimate) is moved from reserved to spent with its usage record. So the database keeps
`spent + reserved <= hard` at every commit, as before, across replicas, and the overshoot bound is the
same: settled spend <= hard + sum over admitted requests of (actual - estimate)+, 0 when answers stay
within their estimates. What slices cost instead is early refusal: another replica may be refused while
this one holds an unused slice, at most min(SLICE_REQUESTS estimates, hard / SLICE_SHARE) per replica and
budget; an idle slice is given back after a third of `lease_ttl`, a stopped or killed replica's by its lease.

Rate limits (rpm, tpm) are sliding windows in this process: each gateway replica counts its own.
The budget list is cached for `BUDGET_CACHE_TTL_S` seconds, so a new or changed budget reaches a running
gateway within that time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import aiosqlite
from pydantic import BaseModel, Field

from mcp_prism.core.budgets import (
    MAX_LIMIT_USD,
    MAX_RATE,
    PERIODS,
    SCOPES,
    Budget,
    RateWindow,
    exhausted_message,
    pico,
    retry_after_s,
    state_of,
    usd,
    window,
    window_key,
)
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.limits import require_text
from mcp_prism.store import leases
from mcp_prism.store.sqlite import Store

log = logging.getLogger(__name__)

BUDGET_CACHE_TTL_S = 5.0
LEASE_TTL_S = 30.0  # a killed gateway's reservations come back within this (plus a renewal interval)
SLICE_REQUESTS = 64  # a replica reserves up to this many requests' estimates of a budget at once
SLICE_SHARE = 16  # ... but never more than this fraction of the hard limit (bounds early refusal elsewhere)
_COLUMNS = "id, scope, subject, period, soft_limit_usd, hard_limit_usd, rpm, tpm, downgrade"


class BudgetView(BaseModel):
    """A budget and where its current window stands."""

    id: int
    scope: str = Field(description="key | user | team | project")
    subject: str = Field(description="The key id, user, team or project name")
    period: str = Field(description="day | week | month (UTC windows; weeks start on Monday)")
    soft_limit_usd: Decimal | None = Field(default=None, description="Crossing it raises an alert once per window")
    hard_limit_usd: Decimal | None = Field(default=None, description="Requests that could pass it get a 429")
    rpm: int | None = Field(default=None, description="Requests per minute (per gateway replica)")
    tpm: int | None = Field(default=None, description="Tokens per minute (per gateway replica)")
    downgrade: bool = Field(default=False, description="Near the soft limit, route to a cheaper model of the rule")
    window_start: str
    resets_at: str
    spent_usd: Decimal
    reserved_usd: Decimal = Field(description="Estimated cost held by requests in flight")
    remaining_usd: Decimal | None = Field(default=None, description="Hard (else soft) limit minus spent and reserved")
    requests: int = Field(description="Requests admitted in this window")
    state: str = Field(description="ok | soft_exceeded | exhausted")


class BudgetList(BaseModel):
    budgets: list[BudgetView]


def _money(value: Any, what: str) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"{what} must be a number of US dollars like 25 or 2.50, not {value!r}") from None
    if not d.is_finite() or d < 0:
        raise InvalidInput(f"{what} must be zero or more US dollars, not {value!r}")
    if d > MAX_LIMIT_USD:
        raise InvalidInput(f"{what} of ${value} is too large: budgets go up to ${MAX_LIMIT_USD:,} a period "
                           "(leave the limit out for none)")
    return d


def _budgets(rows: list[sqlite3.Row]) -> list[Budget]:
    """The budgets of these rows; a row the code cannot read (written by hand or by an older version
    without today's checks) is skipped and logged, so it never breaks the other budgets or a start."""
    out = []
    for r in rows:
        try:
            out.append(_budget(r))
        except (InvalidInput, ValueError, TypeError, KeyError) as e:
            log.error("skipping budget row %s (%s %s %s): %s; fix it with `mcp-prism budget set`",
                      r["id"], r["scope"], r["subject"], r["period"], e)
    return out


def _budget(row: sqlite3.Row) -> Budget:
    return Budget(id=row["id"], scope=row["scope"], subject=row["subject"], period=row["period"],
                  soft_pico=pico(_money(row["soft_limit_usd"], "soft")),
                  hard_pico=pico(_money(row["hard_limit_usd"], "hard")),
                  rpm=row["rpm"], tpm=row["tpm"], downgrade=bool(row["downgrade"]))


def _view(b: Budget, spent: int, reserved: int, requests: int, now: datetime) -> BudgetView:
    start, end = window(b.period, now)
    remaining = b.remaining_pico(spent, reserved)
    return BudgetView(
        id=b.id, scope=b.scope, subject=b.subject, period=b.period,
        soft_limit_usd=None if b.soft_pico is None else usd(b.soft_pico),
        hard_limit_usd=None if b.hard_pico is None else usd(b.hard_pico), rpm=b.rpm, tpm=b.tpm,
        downgrade=b.downgrade, window_start=window_key(start), resets_at=iso(end), spent_usd=usd(spent),
        reserved_usd=usd(reserved), remaining_usd=None if remaining is None else usd(remaining), requests=requests,
        state=state_of(b, spent, reserved))


class BudgetService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def set_budget(self, scope: str, subject: str, period: str = "month", *,
                         soft_limit_usd: Decimal | str | float | None = None,
                         hard_limit_usd: Decimal | str | float | None = None, rpm: int | None = None,
                         tpm: int | None = None, downgrade: bool = False) -> BudgetView:
        """Create or replace the budget of (scope, subject, period); its spend so far is kept."""
        if scope not in SCOPES:
            raise InvalidInput(f"unknown budget scope {scope!r}: use one of {', '.join(SCOPES)}")
        if period not in PERIODS:
            raise InvalidInput(f"unknown budget period {period!r}: use one of {', '.join(PERIODS)}")
        subject = (subject or "").strip()
        require_text("subject", subject)
        if not subject:
            raise InvalidInput(f"name the {scope} the budget is for (for a key: its id from `mcp-prism keys list`)")
        soft, hard = _money(soft_limit_usd, "soft_limit_usd"), _money(hard_limit_usd, "hard_limit_usd")
        for what, v in (("rpm", rpm), ("tpm", tpm)):
            if v is not None and not 1 <= v <= MAX_RATE:
                raise InvalidInput(f"{what} must be from 1 to {MAX_RATE:,} (leave it out for no limit), not {v}")
        if soft is None and hard is None and rpm is None and tpm is None:
            raise InvalidInput("a budget needs at least one limit: soft_limit_usd, hard_limit_usd, rpm or tpm")
        if soft is not None and hard is not None and soft > hard:
            raise InvalidInput(f"the soft limit ${soft} is above the hard limit ${hard}: the soft limit warns first")
        if scope == "key" and not await self.store.fetch("SELECT 1 FROM api_keys WHERE id = ?", (subject,)):
            known = [r["id"] for r in await self.store.fetch("SELECT id FROM api_keys WHERE revoked_at IS NULL")]
            raise UnknownName("key", subject, known)
        now = iso(utcnow())

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO budgets (scope, subject, period, soft_limit_usd, hard_limit_usd, rpm, tpm, downgrade, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, subject, period) "
                "DO UPDATE SET soft_limit_usd = excluded.soft_limit_usd, hard_limit_usd = excluded.hard_limit_usd, "
                "rpm = excluded.rpm, tpm = excluded.tpm, downgrade = excluded.downgrade, "
                "updated_at = excluded.updated_at",
                (scope, subject, period, None if soft is None else str(soft), None if hard is None else str(hard),
                 rpm, tpm, int(downgrade), now, now))

        await self.store.transaction(work)
        found = await self.budget_status(scope=scope, subject=subject, period=period)
        return found.budgets[0]

    async def budget_status(self, *, scope: str | None = None, subject: str | None = None,
                            period: str | None = None, at: datetime | None = None) -> BudgetList:
        """Every budget matching the filters, with spent, reserved and remaining in its current window."""
        now = at or utcnow()
        sql, params = f"SELECT {_COLUMNS} FROM budgets WHERE 1 = 1", []
        for col, v in (("scope", scope), ("subject", subject), ("period", period)):
            if v:
                sql += f" AND {col} = ?"
                params.append(v)
        budgets = _budgets(await self.store.fetch(sql + " ORDER BY scope, subject, period", params))
        if not budgets and (scope or subject or period):
            what = " ".join(x for x in (scope, subject, period) if x)
            raise InvalidInput(f"no budget for {what}: set one with `mcp-prism budget set` (MCP: set_budget)")
        out = []
        for b in budgets:
            rows = await self.store.fetch(
                "SELECT spent_pico, reserved_pico, requests FROM budget_spend WHERE budget_id = ? AND window_start = ?",
                (b.id, window_key(window(b.period, now)[0])))
            spent, reserved, requests = tuple(rows[0]) if rows else (0, 0, 0)
            out.append(_view(b, spent, reserved, requests, now))
        return BudgetList(budgets=out)


# ---------------------------------------------------------------- enforcement (the gateway's request path)
class BudgetExceeded(Exception):
    """A budget refused the request: `message` says which, how much is left and when it resets."""

    def __init__(self, budget: Budget, reason: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.budget, self.reason, self.message, self.retry_after = budget, reason, message, retry_after


@dataclass(slots=True)
class Reservation:
    """What one admitted request holds: settle it exactly once."""

    budgets: list[Budget]
    estimate: int
    windows: list[str] = field(default_factory=list)  # the window each money budget reserved in
    settled: bool = False
    holder: str | None = None  # the lease it is held under (None: an enforcer without leases)
    sliced: bool = False  # admitted from this replica's slice: settling moves min(actual, estimate) to spent
    finished: bool = False  # its estimate went back to the slice (in memory)

    def money(self) -> list[Budget]:
        return [b for b in self.budgets if b.money]


@dataclass(slots=True)
class _Slice:
    """What this replica holds of one budget window: `held` is reserved under its lease (minus the costs of
    finished requests whose settle is still to be written), `inflight` the estimates of admitted requests."""

    held: int = 0
    inflight: int = 0
    used_at: float = 0.0
    base: int = 0  # spend and other replicas' reservations as last read (for downgrades near the soft limit)

    def free(self) -> int:
        return self.held - self.inflight


class Enforcer:
    """Budgets on the gateway's request path: cached budget list, rate windows, reserve and settle."""

    def __init__(self, store: Store, *, ttl: float = BUDGET_CACHE_TTL_S, lease_ttl: float = LEASE_TTL_S,
                 on_level: Any = None, on_reject: Any = None, slices: bool = True) -> None:
        self.store, self.ttl, self.lease_ttl = store, ttl, lease_ttl
        self.slices = slices  # admit from pre-allocated slices once leases are on (see the module docstring)
        self._slices: dict[tuple[int, str], _Slice] = {}
        self._refill_lock = asyncio.Lock()
        self.holder: str | None = None  # set by start_leases (the gateway); None: reservations not leased
        self._renew_at = 0.0
        self._by_subject: dict[tuple[str, str], list[Budget]] = {}
        self._loaded = -1e9
        self._rates: dict[int, RateWindow] = {}
        self._windows: set[tuple[int, str]] = set()  # ledger rows known to exist (created by this process)
        self._near: dict[int, bool] = {}  # last level seen per budget (for downgrade), per replica
        self.on_level = on_level  # (budget, remaining_pico | None) -> None: the metrics gauge
        self.on_reject = on_reject  # (budget, reason) -> None: the rejections counter
        self._any = False
        self.by_id: dict[int, Budget] = {}

    async def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._loaded < self.ttl:
            return
        self._loaded = now
        rows = await self.store.fetch(f"SELECT {_COLUMNS} FROM budgets")
        by: dict[tuple[str, str], list[Budget]] = {}
        for b in _budgets(rows):
            by.setdefault((b.scope, b.subject), []).append(b)
        self._by_subject, self._any = by, bool(by)
        self.by_id = {b.id: b for found in by.values() for b in found}

    @property
    def any(self) -> bool:
        """Some budget may apply: the gateway skips `applicable` when not. True once the cached list is due
        for a refresh too, so a budget created after start-up is enforced within `ttl` seconds."""
        return self._any or time.monotonic() - self._loaded >= self.ttl

    async def applicable(self, key_id: str | None, user: str | None, team: str | None,
                         project: str | None) -> list[Budget]:
        await self.refresh()
        if not self._any:
            return []
        out: list[Budget] = []
        for scope, subject in (("key", key_id), ("user", user), ("team", team), ("project", project)):
            if subject:
                out += self._by_subject.get((scope, subject), ())
        return out

    def near_limit(self, budgets: list[Budget]) -> bool:
        """Some budget asking for downgrades is near its soft limit (as last seen by this replica)."""
        return any(b.downgrade and self._near.get(b.id, False) for b in budgets)

    async def reserve(self, budgets: list[Budget], estimate: int, now: datetime | None = None) -> Reservation:
        """Admit the request on every budget or raise BudgetExceeded (then nothing is held)."""
        mono = time.monotonic()
        for b in budgets:
            if b.rpm is not None or b.tpm is not None:
                hit = self._rates.setdefault(b.id, RateWindow()).check(b.rpm, b.tpm, mono)
                if hit is not None:
                    reason, wait = hit
                    limit = b.rpm if reason == "rpm" else b.tpm
                    what = "requests" if reason == "rpm" else "tokens"
                    self._reject(b, reason)
                    raise BudgetExceeded(b, reason, f"the rate limit of {b.scope} {b.subject} is reached: {limit} "
                                         f"{what} per minute (counted by this gateway replica); retry in "
                                         f"{max(1, round(wait))} s", max(1.0, wait))
        money = [b for b in budgets if b.money]
        res = Reservation(budgets, estimate, holder=self.holder)
        holder = self.holder
        if money and holder is not None and self.slices:
            when = now or utcnow()
            windows = [window_key(window(b.period, when)[0]) for b in money]
            await self._take(money, windows, estimate, when)
            res.windows, res.sliced = windows, True
        elif money:
            when = now or utcnow()
            windows = [window_key(window(b.period, when)[0]) for b in money]

            async def work(conn: aiosqlite.Connection) -> list[tuple[int, int]]:
                seen = []
                if holder is not None and estimate:  # leases first, in key order as settles take them: no deadlock
                    await leases.hold(conn, holder, sorted({(b.id, w) for b, w in zip(money, windows, strict=True)}),
                                      estimate)
                for b, w in zip(money, windows, strict=True):
                    if (b.id, w) not in self._windows:  # a ledger row, once made, lasts its window: skip the insert
                        await conn.execute("INSERT OR IGNORE INTO budget_spend (budget_id, window_start) "
                                           "VALUES (?, ?)", (b.id, w))
                    sql = ("UPDATE budget_spend SET reserved_pico = reserved_pico + ?, requests = requests + 1 "
                           "WHERE budget_id = ? AND window_start = ?")
                    params: tuple[Any, ...] = (estimate, b.id, w)
                    if b.hard_pico is not None:
                        sql += " AND spent_pico + reserved_pico + ? <= ?"
                        params += (estimate, b.hard_pico)
                    rows = list(await conn.execute_fetchall(sql + " RETURNING spent_pico, reserved_pico", params))
                    if not rows:
                        raise _Refused(b)  # the store rolls back every reservation made above
                    seen.append((rows[0][0], rows[0][1]))
                return seen

            try:
                result = await self.store.transaction(work)
            except _Refused as refused:
                b = refused.budget
                w = windows[money.index(b)]
                rows = await self.store.fetch("SELECT spent_pico, reserved_pico FROM budget_spend "
                                              "WHERE budget_id = ? AND window_start = ?", (b.id, w))
                spent, reserved = tuple(rows[0]) if rows else (0, 0)
                resets = window(b.period, when)[1]
                self._level(b, spent, reserved)
                self._reject(b, "budget")
                raise BudgetExceeded(b, "budget", exhausted_message(b, spent, reserved, estimate, resets),
                                     retry_after_s(b, spent, reserved, estimate, resets, when)) from None
            for b, (spent, reserved) in zip(money, result, strict=True):
                self._level(b, spent, reserved)
            self._windows.update(zip((b.id for b in money), windows, strict=True))
            res.windows = windows
        for b in budgets:
            if b.rpm is not None or b.tpm is not None:
                self._rates[b.id].admit(mono)
        return res

    async def _take(self, money: list[Budget], windows: list[str], estimate: int, when: datetime) -> None:
        """Admit `estimate` on every budget from this replica's slices, refilling those that run short
        (one refill at a time per replica: concurrent requests wait for it rather than each taking a slice)."""
        keys = list(zip(money, windows, strict=True))
        if self._needs(keys, estimate):
            async with self._refill_lock:
                for _ in range(8):  # a request admitted during the refill's await may take its room: again
                    short = [(b, w) for b, w in keys if b.hard_pico is not None
                             and self._slices.setdefault((b.id, w), _Slice()).free() < estimate]
                    rows = [(b, w) for b, w in keys if (b.id, w) not in self._windows]
                    if not short and not rows:
                        break
                    await self._refill(short, rows, estimate, when)
                else:
                    raise BudgetExceeded(money[0], "budget", f"{money[0].label()} is busy: requests at once took "
                                         "its room first; retry in a second", 1.0)
                self._admit(keys, estimate)
                return
        self._admit(keys, estimate)

    def _needs(self, keys: list[tuple[Budget, str]], estimate: int) -> bool:
        """Some budget's slice is short of `estimate`, or a ledger row is still to be made."""
        for b, w in keys:
            if (b.id, w) not in self._windows:
                return True
            if b.hard_pico is not None and self._slices.setdefault((b.id, w), _Slice()).free() < estimate:
                return True
        return False

    def _admit(self, keys: list[tuple[Budget, str]], estimate: int) -> None:
        mono = time.monotonic()
        for b, w in keys:
            sl = self._slices.setdefault((b.id, w), _Slice())
            sl.inflight += estimate
            sl.used_at = mono
            if b.downgrade:
                self._near[b.id] = b.near_soft(sl.base + sl.inflight)

    async def _refill(self, short: list[tuple[Budget, str]], rows: list[tuple[Budget, str]], estimate: int,
                      when: datetime) -> None:
        """Reserve more of each short budget under this replica's lease (a slice, else exactly what is
        needed), and make the ledger rows missing; raise BudgetExceeded when even the need does not fit."""
        holder = self.holder
        assert holder is not None
        asks = sorted(((b, w, estimate - self._slices[(b.id, w)].free()) for b, w in short),
                      key=lambda a: (a[0].id, a[1]))
        asks = [(b, w, need, max(need, min(SLICE_REQUESTS * estimate, (b.hard_pico or 0) // SLICE_SHARE)))
                for b, w, need in asks]

        async def work(conn: aiosqlite.Connection, exact: bool) -> list[tuple[int, int, int]]:
            for b, w in rows:
                await conn.execute("INSERT OR IGNORE INTO budget_spend (budget_id, window_start) VALUES (?, ?)",
                                   (b.id, w))
            amounts = [need if exact else big for _, _, need, big in asks]
            if asks:  # the lease first, in key order as settles take them: no deadlock
                await leases.hold_each(conn, holder, [(b.id, w, a) for (b, w, _, _), a in zip(asks, amounts,
                                                                                             strict=True)])
            got = []
            for (b, w, _, _), amount in zip(asks, amounts, strict=True):
                found = list(await conn.execute_fetchall(
                    "UPDATE budget_spend SET reserved_pico = reserved_pico + ? WHERE budget_id = ? AND "
                    "window_start = ? AND spent_pico + reserved_pico + ? <= ? RETURNING spent_pico, reserved_pico",
                    (amount, b.id, w, amount, b.hard_pico)))
                if not found:
                    raise _Refused(b)  # the store rolls back the lease and every slice taken above
                got.append((amount, found[0][0], found[0][1]))
            return got

        try:
            try:
                got = await self.store.transaction(lambda conn: work(conn, False))
            except _Refused:
                got = await self.store.transaction(lambda conn: work(conn, True))
        except _Refused as refused:
            b = refused.budget
            w = next(w for bb, w, _, _ in asks if bb is b)
            found = await self.store.fetch("SELECT spent_pico, reserved_pico FROM budget_spend "
                                           "WHERE budget_id = ? AND window_start = ?", (b.id, w))
            spent, reserved = tuple(found[0]) if found else (0, 0)
            reserved -= max(0, self._slices[(b.id, w)].free())  # this replica's unused slice is not in flight
            resets = window(b.period, when)[1]
            self._level(b, spent, reserved)
            self._reject(b, "budget")
            raise BudgetExceeded(b, "budget", exhausted_message(b, spent, reserved, estimate, resets),
                                 retry_after_s(b, spent, reserved, estimate, resets, when)) from None
        self._windows.update((b.id, w) for b, w in rows)
        for (b, w, _, _), (amount, spent, reserved) in zip(asks, got, strict=True):
            sl = self._slices[(b.id, w)]
            sl.held += amount
            sl.base = spent + reserved - sl.held
            self._level(b, spent, max(0, reserved - sl.free()))

    def finish(self, res: Reservation, actual: int) -> None:
        """A sliced request ended: its estimate goes back to the slice, and its cost (at most the estimate)
        leaves what the slice holds, since its settle moves that from reserved to spent. No I/O."""
        if not res.sliced or res.finished:
            return
        res.finished = True
        if res.holder != self.holder:  # held under a lease this process no longer has (reclaimed)
            return
        back = min(max(actual, 0), res.estimate)
        for b, w in zip(res.money(), res.windows, strict=True):
            if (sl := self._slices.get((b.id, w))) is not None:
                sl.inflight -= res.estimate
                sl.base += max(actual, 0)  # booked soon
                if b.hard_pico is not None:
                    sl.held -= back

    async def give_back_idle(self) -> int:
        """Return the unused slices no request took from for a third of the lease time (so other replicas
        can use that room); returns the picodollars given back."""
        holder = self.holder
        if holder is None:
            return 0
        mono = time.monotonic()
        idle = [(k, sl.free()) for k, sl in self._slices.items()
                if sl.inflight == 0 and sl.free() > 0 and mono - sl.used_at > self.lease_ttl / 3]
        if not idle:
            return 0
        for k, amount in idle:  # out of the slice first: a request arriving meanwhile refills instead
            self._slices[k].held -= amount

        async def work(conn: aiosqlite.Connection) -> None:
            for (budget_id, w), amount in sorted(idle):
                if await leases.release(conn, holder, budget_id, w, amount):
                    await conn.execute("UPDATE budget_spend SET reserved_pico = CASE WHEN reserved_pico > ? THEN "
                                       "reserved_pico - ? ELSE 0 END WHERE budget_id = ? AND window_start = ?",
                                       (amount, amount, budget_id, w))

        try:
            await self.store.transaction(work)
        except Exception as e:  # still under the lease: given back when this gateway stops or its lease expires
            log.error("could not give back unused budget slices (held until this gateway stops): %s", e)
            return 0
        return sum(a for _, a in idle)

    async def settle(self, res: Reservation, actual: int, tokens: int) -> None:
        """Release the estimate and book the actual cost (0 for a request that failed before an answer);
        raise the soft-limit alert once per window."""
        await self.settle_many([(res, actual, tokens)])

    async def settle_many(self, items: list[tuple[Reservation, int, int]]) -> None:
        """Settle several requests in one transaction (the gateway batches them off the request path;
        until then their estimates stay reserved, which can only refuse early, never overspend)."""
        todo = self.unsettled(items)
        seen: list[tuple[Budget, int, int]] = []
        if todo:
            try:
                seen = await self.store.transaction(lambda conn: self.settle_in(conn, todo))
            except Exception as e:  # the leases give them back once this process stops renewing them
                log.error("could not settle %d budget reservation(s) of $%s (they stay reserved until this "
                          "gateway's lease is reclaimed): %s", len(todo), usd(sum(r.estimate for r, _, _ in todo)), e)
        self.settled(items, seen)

    @staticmethod
    def unsettled(items: Iterable[tuple[Reservation, int, int]]) -> list[tuple[Reservation, int, int]]:
        """The items with a money budget still to settle."""
        return [(res, actual, tokens) for res, actual, tokens in items if not res.settled and res.windows]

    async def settle_in(self, conn: aiosqlite.Connection, todo: list[tuple[Reservation, int, int]]
                        ) -> list[tuple[Budget, int, int]]:
        """The settle's SQL inside the caller's transaction (the recorder runs it with the usage events of
        the same requests: a request is recorded and its spend booked together, or neither)."""
        def backs(res: Reservation, actual: int) -> Iterable[tuple[Budget, str, int]]:
            # what leaves `reserved` per budget: the estimate, or for a sliced request its cost (at most the
            # estimate; nothing for a budget without a hard limit, which holds no slice)
            for b, w in zip(res.money(), res.windows, strict=True):
                yield b, w, ((min(actual, res.estimate) if b.hard_pico is not None else 0) if res.sliced
                             else res.estimate)

        held: dict[tuple[str, int, str], int] = {}  # what each lease gives back, summed
        for res, actual, _ in todo:
            if res.holder is not None:
                for b, w, back in backs(res, max(actual, 0)):
                    if back:
                        held[(res.holder, b.id, w)] = held.get((res.holder, b.id, w), 0) + back
        live = {k for k in sorted(held) if await leases.release(conn, *k, held[k])}
        # one UPDATE per budget window for the whole batch: [budget, back, spend, requests counted now]
        by: dict[tuple[int, str], list[Any]] = {}
        for res, actual, _ in todo:
            actual = max(actual, 0)  # a negative cost never reaches a budget
            for b, w, back in backs(res, actual):
                if res.holder is not None and (res.holder, b.id, w) not in live:
                    back = 0  # a reclaimed lease gave this back already: only the spend is booked
                row = by.setdefault((b.id, w), [b, 0, 0, 0])
                row[1] += back
                row[2] += actual
                row[3] += int(res.sliced)  # a sliced request is counted when booked, not when admitted
        seen = []
        for (budget_id, w), (b, back, actual, n) in sorted(by.items(), key=lambda kv: kv[0]):
            rows = list(await conn.execute_fetchall(
                # CASE, not the scalar MAX(a, b): PostgreSQL has only the aggregate
                "UPDATE budget_spend SET reserved_pico = CASE WHEN reserved_pico > ? THEN reserved_pico - ? "
                "ELSE 0 END, spent_pico = spent_pico + ?, requests = requests + ? "
                "WHERE budget_id = ? AND window_start = ? RETURNING spent_pico, reserved_pico",
                (back, back, actual, n, budget_id, w)))
            spent, reserved = (rows[0][0], rows[0][1]) if rows else (0, 0)
            sl = self._slices.get((budget_id, w))
            if sl is not None:
                sl.base = spent + reserved - sl.held
            seen.append((b, spent, max(0, reserved - sl.free()) if sl is not None else reserved))
            if b.soft_pico is not None and spent >= b.soft_pico:
                await self._soft_alert(conn, b, w, spent)
        return seen

    def settled(self, items: Iterable[tuple[Reservation, int, int]], seen: list[tuple[Budget, int, int]]) -> None:
        """After the settle's transaction: mark the reservations settled, count their tokens, and update
        the levels this replica last saw."""
        mono = time.monotonic()
        for res, _, tokens in items:
            if res.settled:
                continue
            res.settled = True
            for b in res.budgets:
                if b.tpm is not None:
                    self._rates.setdefault(b.id, RateWindow()).used(tokens, mono)
        for b, spent, reserved in seen:
            self._level(b, spent, reserved)

    # ---------------------------------------------------------------- leases
    def _expiry(self) -> str:
        return iso(datetime.fromtimestamp(time.time() + self.lease_ttl, UTC))

    async def start_leases(self) -> None:
        """Hold this process's reservations under a lease, and give back those of expired holders."""
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        holder, expiry = self.holder, self._expiry()
        self._slices = {}  # slices belong to a lease: a new holder starts with none
        await self.store.transaction(lambda conn: leases.register(conn, holder, expiry))
        self._renew_at = time.monotonic() + self.lease_ttl / 3
        await self.reclaim_expired()

    async def keep_leases(self) -> None:
        """Renew this process's lease when a third of it has passed, and reclaim expired ones then."""
        if self.holder is None or time.monotonic() < self._renew_at:
            return
        self._renew_at = time.monotonic() + self.lease_ttl / 3
        holder, expiry = self.holder, self._expiry()
        try:
            if not await self.store.transaction(lambda conn: leases.renew(conn, holder, expiry)):
                # stalled past its lease: another gateway gave its reservations back; hold new ones afresh
                log.error("this gateway's budget lease %s expired and was reclaimed; registering a new one", holder)
                await self.start_leases()
                return
            await self.reclaim_expired()
            await self.give_back_idle()
        except Exception as e:
            log.error("could not renew the budget lease %s (retrying in %.0f s): %s", holder, self.lease_ttl / 3, e)

    async def reclaim_expired(self, holder: str | None = None) -> int:
        """Give back what expired holders (or `holder`) reserved; returns the picodollars given back."""
        now = iso(utcnow())
        taken = await self.store.transaction(lambda conn: leases.reclaim(conn, now, holder))
        total = sum(p for *_, p in taken)
        if total:
            log.warning("gave back $%s reserved by %d gateway process(es) that %s", usd(total),
                        len({h for h, *_ in taken}), "stopped renewing their lease" if holder is None else "stopped")
        return total

    async def stop_leases(self) -> None:
        """A graceful stop: give back whatever this process still holds (requests never settled)."""
        if self.holder is not None:
            holder, self.holder = self.holder, None
            self._slices = {}
            try:
                await self.reclaim_expired(holder)
            except Exception as e:
                log.error("could not give back this gateway's budget lease %s (it expires on its own): %s", holder, e)

    @staticmethod
    async def _soft_alert(conn: aiosqlite.Connection, b: Budget, w: str, spent: int) -> None:
        cur = await conn.execute("UPDATE budget_spend SET soft_alerted = 1 WHERE budget_id = ? "
                                 "AND window_start = ? AND soft_alerted = 0", (b.id, w))
        if cur.rowcount == 1:
            assert b.soft_pico is not None
            await conn.execute(
                "INSERT INTO alerts (ts, kind, task_type, message, details) VALUES (?, ?, NULL, ?, ?)",
                (iso(utcnow()), "budget_soft_limit",
                 f"{b.label()} passed its soft limit: ${usd(spent)} spent of a ${usd(b.soft_pico)} "
                 f"soft limit" + (f" (hard limit ${usd(b.hard_pico)})" if b.hard_pico else ""),
                 json.dumps({"budget_id": b.id, "scope": b.scope, "subject": b.subject,
                             "period": b.period, "window_start": w, "spent_usd": str(usd(spent)),
                             "soft_limit_usd": str(usd(b.soft_pico))})))

    def _level(self, b: Budget, spent: int, reserved: int) -> None:
        self._near[b.id] = b.near_soft(spent + reserved)
        if self.on_level is not None:
            self.on_level(b, b.remaining_pico(spent, reserved))

    def _reject(self, b: Budget, reason: str) -> None:
        if self.on_reject is not None:
            self.on_reject(b, reason)


class _Refused(Exception):
    def __init__(self, budget: Budget) -> None:
        super().__init__(budget.label())
        self.budget = budget

