"""Virtual API keys: the secret is shown once at creation; only its sha256 is stored.

A secret reads `sk-prism-<id>-<random>`: the gateway finds the row by the public id and compares the
hash in constant time, so a lookup is one primary-key read, cached for `KEY_CACHE_TTL_S` seconds. A
revocation or rotation therefore reaches a running gateway within that TTL (per replica).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from dataclasses import dataclass

import aiosqlite
from pydantic import BaseModel, Field

from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.store.sqlite import Store

PREFIX = "sk-prism-"
KEY_CACHE_TTL_S = 5.0
_COLUMNS = "id, hash, team, user, project, name, created_at, revoked_at, rotated_from, last_used_at"


class KeyInfo(BaseModel):
    """A virtual key as stored: never its secret."""

    id: str = Field(description="Public id (safe to show and log); the secret starts with sk-prism-<id>-")
    team: str
    user: str | None = None
    project: str | None = None
    name: str | None = None
    created_at: str
    revoked_at: str | None = None
    rotated_from: str | None = Field(default=None, description="The key this one replaced")
    active: bool


class KeyCreated(BaseModel):
    key: KeyInfo
    secret: str = Field(description="The key itself: shown only now, store it in your client's settings")


class KeyList(BaseModel):
    keys: list[KeyInfo]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str | None:
    """The public id inside a secret, or None when it is not a virtual key."""
    if not secret.startswith(PREFIX):
        return None
    kid, sep, rest = secret[len(PREFIX):].partition("-")
    return kid if sep and kid and rest else None


def _new_secret() -> tuple[str, str]:
    kid = secrets.token_hex(6)
    return kid, f"{PREFIX}{kid}-{secrets.token_urlsafe(24)}"


def _info(row: sqlite3.Row) -> KeyInfo:
    return KeyInfo(id=row["id"], team=row["team"], user=row["user"], project=row["project"], name=row["name"],
                   created_at=row["created_at"], revoked_at=row["revoked_at"], rotated_from=row["rotated_from"],
                   active=row["revoked_at"] is None)


def _clean(value: str | None, what: str, *, required: bool = False) -> str | None:
    value = value.strip() if value else None
    if required and not value:
        raise InvalidInput(f"a key needs its {what}: give --{what} NAME")
    if value and len(value) > 200:
        raise InvalidInput(f"the {what} name is over 200 characters")
    return value


class KeyService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, team: str, *, user: str | None = None, project: str | None = None,
                     name: str | None = None, rotated_from: str | None = None) -> KeyCreated:
        team_ = _clean(team, "team", required=True)
        user_, project_, name_ = _clean(user, "user"), _clean(project, "project"), _clean(name, "name")
        kid, secret = _new_secret()
        now = iso(utcnow())

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL)",
                (kid, hash_secret(secret), team_, user_, project_, name_, now, rotated_from))

        await self.store.transaction(work)
        return KeyCreated(key=await self.get(kid), secret=secret)

    async def get(self, key_id: str) -> KeyInfo:
        rows = await self.store.fetch(f"SELECT {_COLUMNS} FROM api_keys WHERE id = ?", (key_id.strip(),))
        if not rows:
            known = [r["id"] for r in await self.store.fetch("SELECT id FROM api_keys ORDER BY created_at")]
            raise UnknownName("key", key_id, known)
        return _info(rows[0])

    async def list(self, *, team: str | None = None, include_revoked: bool = False) -> KeyList:
        sql = f"SELECT {_COLUMNS} FROM api_keys WHERE 1 = 1"
        params: list[str] = []
        if team:
            sql += " AND team = ?"
            params.append(team)
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        rows = await self.store.fetch(sql + " ORDER BY created_at", params)
        return KeyList(keys=[_info(r) for r in rows])

    async def revoke(self, key_id: str) -> KeyInfo:
        info = await self.get(key_id)
        if not info.active:
            return info

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                               (iso(utcnow()), info.id))

        await self.store.transaction(work)
        return await self.get(info.id)

    async def rotate(self, key_id: str) -> KeyCreated:
        """A new secret with the same labels; the old key is revoked in the same transaction."""
        old = await self.get(key_id)
        if not old.active:
            raise InvalidInput(f"key {old.id} is revoked already: create a new one with `mcp-prism keys create`")
        kid, secret = _new_secret()
        now = iso(utcnow())

        async def work(conn: aiosqlite.Connection) -> None:
            cur = await conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                     (now, old.id))
            if cur.rowcount != 1:
                raise InvalidInput(f"key {old.id} was revoked meanwhile: nothing was rotated")
            await conn.execute(
                f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, NULL)",
                (kid, hash_secret(secret), old.team, old.user, old.project, old.name, now, old.id))

        await self.store.transaction(work)
        return KeyCreated(key=await self.get(kid), secret=secret)


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """What the gateway needs of a key on the request path."""

    id: str
    hash: str
    team: str
    user: str | None
    project: str | None


class KeyCache:
    """Key id -> row for `ttl` seconds (misses too, so a flood of bad keys costs no reads)."""

    def __init__(self, store: Store, ttl: float = KEY_CACHE_TTL_S) -> None:
        self.store, self.ttl = store, ttl
        self._rows: dict[str, tuple[float, ActiveKey | None]] = {}

    async def verify(self, secret: str) -> ActiveKey | None:
        """The active key this secret is, or None (unknown, wrong secret, or revoked)."""
        kid = key_id_of(secret)
        if kid is None:
            return None
        now = time.monotonic()
        hit = self._rows.get(kid)
        if hit is None or now - hit[0] > self.ttl:
            rows = await self.store.fetch(
                "SELECT id, hash, team, user, project FROM api_keys WHERE id = ? AND revoked_at IS NULL", (kid,))
            key = ActiveKey(*tuple(rows[0])) if rows else None
            if len(self._rows) > 100_000:  # bounded: junk ids must not grow it forever
                self._rows.clear()
            self._rows[kid] = hit = (now, key)
        key = hit[1]
        if key is None or not hmac.compare_digest(hash_secret(secret), key.hash):
            return None
        return key
