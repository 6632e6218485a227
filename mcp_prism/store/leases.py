"""SQL of budget leases (migration 0006): a reservation is held by a live gateway process, so the
reservations of a killed one are given back instead of staying reserved until the window ends.

Every function runs inside the caller's transaction (`conn` from `Store.transaction`, either backend),
beside the `budget_spend` update it keeps in step with. `release` and `reclaim` both go through the
lease row, which the database locks: a settle racing a reclaim gives each reservation back once.
"""

from __future__ import annotations

from typing import Any


async def register(conn: Any, holder: str, expires_at: str) -> None:
    await conn.execute("INSERT INTO budget_holders (holder, expires_at) VALUES (?, ?) ON CONFLICT (holder) "
                       "DO UPDATE SET expires_at = excluded.expires_at", (holder, expires_at))


async def renew(conn: Any, holder: str, expires_at: str) -> bool:
    """False when the holder's row is gone (another gateway reclaimed it: its leases were given back)."""
    rows = list(await conn.execute_fetchall("UPDATE budget_holders SET expires_at = ? WHERE holder = ? "
                                            "RETURNING holder", (expires_at, holder)))
    return bool(rows)


async def hold(conn: Any, holder: str, keys: list[tuple[int, str]], pico: int) -> None:
    """Add `pico` to the holder's lease on each (budget_id, window_start), in one statement (the request
    path pays per statement), rows in the order given (callers sort them: one lock order)."""
    await conn.execute(
        "INSERT INTO budget_leases (holder, budget_id, window_start, reserved_pico) VALUES "
        + ", ".join("(?, ?, ?, ?)" for _ in keys)
        + " ON CONFLICT (holder, budget_id, window_start) "
        "DO UPDATE SET reserved_pico = budget_leases.reserved_pico + excluded.reserved_pico",
        tuple(v for budget_id, window_start in keys for v in (holder, budget_id, window_start, pico)))


async def hold_each(conn: Any, holder: str, amounts: list[tuple[int, str, int]]) -> None:
    """Add each (budget_id, window_start, pico) to the holder's lease, in one statement, rows in the order
    given (callers sort them: one lock order)."""
    await conn.execute(
        "INSERT INTO budget_leases (holder, budget_id, window_start, reserved_pico) VALUES "
        + ", ".join("(?, ?, ?, ?)" for _ in amounts)
        + " ON CONFLICT (holder, budget_id, window_start) "
        "DO UPDATE SET reserved_pico = budget_leases.reserved_pico + excluded.reserved_pico",
        tuple(v for budget_id, window_start, pico in amounts for v in (holder, budget_id, window_start, pico)))


async def release(conn: Any, holder: str, budget_id: int, window_start: str, pico: int) -> bool:
    """Take `pico` off the holder's lease; False when the lease is gone (reclaimed: the budget's
    reservation was given back already and must not be again)."""
    rows = list(await conn.execute_fetchall(
        "UPDATE budget_leases SET reserved_pico = CASE WHEN reserved_pico > ? THEN reserved_pico - ? ELSE 0 END "
        "WHERE holder = ? AND budget_id = ? AND window_start = ? RETURNING reserved_pico",
        (pico, pico, holder, budget_id, window_start)))
    return bool(rows)


async def reclaim(conn: Any, now: str, holder: str | None = None) -> list[tuple[str, int, str, int]]:
    """Give back the reservations of expired holders (or of `holder`, shutting down): remove their leases,
    and holders' rows, and take what the leases held off `budget_spend`. Returns (holder, budget_id,
    window_start, pico) of every lease taken back."""
    if holder is None:
        # leases whose holder is expired or has no row (a holder reclaimed while it still reserved)
        cond, params = ("holder NOT IN (SELECT holder FROM budget_holders WHERE expires_at >= ?)", (now,))
    else:
        cond, params = "holder = ?", (holder,)
    rows = list(await conn.execute_fetchall(
        f"DELETE FROM budget_leases WHERE {cond} RETURNING holder, budget_id, window_start, reserved_pico",
        params))
    out = []
    for h, budget_id, window_start, pico in sorted((tuple(r) for r in rows), key=lambda r: (r[1], r[2])):
        if pico > 0:
            await conn.execute(
                "UPDATE budget_spend SET reserved_pico = CASE WHEN reserved_pico > ? THEN reserved_pico - ? "
                "ELSE 0 END WHERE budget_id = ? AND window_start = ?", (pico, pico, budget_id, window_start))
        out.append((h, budget_id, window_start, pico))
    if holder is None:
        await conn.execute("DELETE FROM budget_holders WHERE expires_at < ?", (now,))
    else:
        await conn.execute("DELETE FROM budget_holders WHERE holder = ?", (holder,))
    return out
