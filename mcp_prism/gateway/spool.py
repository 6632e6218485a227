"""The gateway's local journal: every answered request's record is appended here before the answer's
last byte is sent, so a gateway killed before its recorder wrote the record (kill -9, OOM) loses
nothing: the next start replays the journal into the store (idempotent by event id) and books the
spend of the requests it did not record yet.

One file per gateway process under `<PRISM_HOME>/spool/`, held with an exclusive `flock` while the
process lives: a starting gateway replays only files no live process holds (several workers may share
a home). Records are JSON lines written with one `write(2)` each, straight to the kernel: they survive
the process being killed at any point. `fsync` runs at most every `sync_interval` seconds (group
commit), so a power loss or kernel crash can lose the last second; per-request fsync would cost a
disk flush on every answer. The journal is a chain of segments: the recorder seals the current one as
a flush starts and deletes a sealed segment once every outcome in it is in the store, so the journal
stays about one flush long however busy the gateway is.

Prompts and answers go in only for requests whose task type is known (capture was decided for it);
a named model's request is classified by the recorder from text that is not journaled, so a replayed
one is recorded under the default task type.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import iso, parse_iso

if TYPE_CHECKING:
    from mcp_prism.gateway.recorder import Outcome

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one gateway per home, no lock needed to tell them apart
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 1.0
SET_ASIDE = "set-aside.jsonl"  # records the store refused: kept for a person to look at, never replayed


def _lock(fd: int) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class Spool:
    def __init__(self, directory: Path, *, sync_interval: float = SYNC_INTERVAL_S) -> None:
        self.dir = directory
        self.sync_interval = sync_interval
        self.path: Path | None = None  # the segment appended to
        self._fd = -1
        self._used = False  # something was appended to the current segment
        self._sealed: dict[Path, int] = {}  # sealed segments (still locked) -> their fd
        self._dirty: set[int] = set()  # fds written since their last fsync
        self._synced = time.monotonic()

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._new_segment()

    def _new_segment(self) -> None:
        self.path = self.dir / f"spool-{os.getpid()}-{secrets.token_hex(6)}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _lock(self._fd)
        self._used = False

    def append(self, o: Outcome) -> None:
        os.write(self._fd, encode(o))
        self._used = True
        self._dirty.add(self._fd)

    def seal(self) -> Path | None:
        """Close the current segment to appends (it stays locked) and start a new one; None when the
        current one is empty (then it is kept)."""
        if not self._used or self.path is None:
            return None
        sealed = self.path
        self._sealed[sealed] = self._fd
        self._new_segment()
        return sealed

    def drop(self, path: Path) -> None:
        """A sealed segment whose every outcome is in the store."""
        fd = self._sealed.pop(path)
        path.unlink(missing_ok=True)
        self._dirty.discard(fd)
        os.close(fd)

    def sync_if_due(self) -> None:
        if self._dirty and time.monotonic() - self._synced >= self.sync_interval:
            for fd in self._dirty:
                os.fsync(fd)
            self._dirty.clear()
            self._synced = time.monotonic()

    def set_aside(self, o: Outcome, reason: str) -> None:
        line = json.dumps({"reason": reason, "record": json.loads(encode(o))}, default=str) + "\n"
        with open(self.dir / SET_ASIDE, "a", encoding="utf-8") as f:
            f.write(line)

    def close(self, *, keep: bool) -> None:
        """Close the journal; `keep` it (for the next start) when the store did not take everything."""
        if self._fd < 0:
            return
        segments = {**self._sealed, **({self.path: self._fd} if self.path is not None else {})}
        for path, fd in segments.items():
            if keep:
                os.fsync(fd)
            else:
                path.unlink(missing_ok=True)
            os.close(fd)
        self._sealed.clear()
        self._fd = -1

    def orphans(self) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
        """Journals of processes that are gone (no lock held), with their records. Delete each with
        `forget` once its records are in the store."""
        for path in sorted(self.dir.glob("spool-*.jsonl")):
            if path == self.path or path in self._sealed:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if not _lock(fd):
                    continue  # a live gateway's journal
                records = []
                with open(fd, "rb", closefd=False) as f:
                    for n, line in enumerate(f, 1):
                        try:
                            records.append(json.loads(line))
                        except ValueError:  # a line cut by a crash mid-write: it was never acknowledged
                            log.warning("skipping unreadable line %d of %s", n, path)
                yield path, records
            finally:
                os.close(fd)


_TOKEN_FIELDS = tuple(f.name for f in fields(TokenUsage))  # every count, whatever TokenUsage grows


def encode(o: Outcome) -> bytes:
    t = o.tokens
    res = o.reservation
    keep_text = bool(o.task_type)
    rec = {
        "id": o.id, "ts": iso(o.ts), "task_type": o.task_type, "model": o.model, "provider": o.provider,
        "tokens": {f: getattr(t, f) for f in _TOKEN_FIELDS},
        "status": o.status, "latency_ms": o.latency_ms, "upstream_ms": o.upstream_ms, "route": o.route,
        "ttft_ms": o.ttft_ms, "error_type": o.error_type, "rule_id": o.rule_id, "rule_version": o.rule_version,
        "user": o.user, "team": o.team, "project": o.project, "api_key_id": o.api_key_id,
        "prompt": o.prompt if keep_text else None, "response": o.response if keep_text else None,
        "cache_hit": o.cache_hit, "saved_usd": None if o.saved_usd is None else str(o.saved_usd),
    }
    if res is not None and res.windows:
        rec["settle"] = {"holder": res.holder, "budgets": [b.id for b in res.money()], "windows": res.windows,
                         "estimate": res.estimate, "actual": o.actual_pico, "tokens": o.actual_tokens,
                         "sliced": res.sliced}
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def decode(rec: dict[str, Any]) -> Outcome:
    from mcp_prism.gateway.recorder import Outcome

    return Outcome(
        id=rec["id"], ts=_ts(rec["ts"]), task_type=rec["task_type"], model=rec["model"], provider=rec["provider"],
        tokens=TokenUsage(**rec["tokens"]), status=rec["status"], latency_ms=rec["latency_ms"],
        upstream_ms=rec["upstream_ms"], route=rec["route"], ttft_ms=rec["ttft_ms"], error_type=rec["error_type"],
        rule_id=rec["rule_id"], rule_version=rec["rule_version"], user=rec["user"], team=rec["team"],
        project=rec["project"], api_key_id=rec["api_key_id"], prompt=rec["prompt"], response=rec["response"],
        cache_hit=rec["cache_hit"], saved_usd=None if rec["saved_usd"] is None else Decimal(rec["saved_usd"]),
    )


def _ts(text: str) -> datetime:
    return parse_iso(text)
