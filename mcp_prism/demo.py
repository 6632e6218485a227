"""The sample month: a clearly labelled, deterministic month of usage for a team that sends
EVERYTHING to one mid-tier model, so that `mcp-prism demo` can show what routing would save.

Application code: it only calls the service (`record_many`, then the CLI asks for `cost_report`).
Every row is tagged `source="demo"`, `project="sample-demo"`, teams `sample-team-*`, users
`sample-user-*`, request ids `demo-<seed>-<i>`, so the sample is easy to tell apart and running the
demo again stores nothing new.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from mcp_prism.core.routing import DEFAULT_PROFILES, FALLBACK_PROFILE
from mcp_prism.core.usage import utcnow
from mcp_prism.errors import InvalidInput
from mcp_prism.service import PrismService, UsageInput

DEMO_SOURCE = "demo"
DEMO_DB = "demo.db"  # beside prism.db in PRISM_HOME: the sample never mixes into real usage
DEMO_PROJECT = "sample-demo"
DEMO_MODEL = "claude-sonnet-4-5"
DEMO_TEAMS = ("sample-team-a", "sample-team-b", "sample-team-c")
DEMO_USERS = tuple(f"sample-user-{n:02d}" for n in range(1, 13))
DEFAULT_MONTHLY_REQUESTS = 20_000
BATCH = 2_000
MAX_REQUESTS = 1_000_000

# Share of requests per task type: 60% simple, 30% standard, 10% complex (the seed's mix).
MIX: dict[str, int] = {
    # simple: 60
    "ticket_classification": 12,
    "code_autocomplete": 16,
    "data_extraction": 8,
    "email_drafting": 6,
    "doc_generation": 8,
    "test_generation": 10,
    # standard: 30
    "code_review": 14,
    "security_audit": 4,
    "deploy_check": 4,
    "general": 8,
    # complex: 10
    "bug_investigation": 7,
    "architecture_design": 3,
}
ERROR_STATUSES = ("rate_limited", "timeout", "provider_error")
ERROR_RATE = 0.01
RATED_SHARE = 0.03  # a few requests carry a quality score
CACHE_FROM_TOKENS = 4_000  # prompts at least this long often hit the prompt cache
MAX_INPUT_TOKENS = 150_000  # stay well inside the model's 200k window
OUTPUT_TOKENS_PER_SECOND = 70.0
WEEKEND_WEIGHT = 0.35


class DemoResult(BaseModel):
    requests: int  # sample requests the demo describes (all of them, new or already stored)
    new: int  # stored by this run (0 when the same sample was already there)
    days: int
    seed: int
    since: str  # first day with sample data (UTC)
    until: str  # day after the last (exclusive), as reports take it
    model: str
    project: str
    source: str
    teams: list[str]
    database: str


def _counts(total: int) -> dict[str, int]:
    """Split `total` over MIX exactly (largest remainder), so the shares are as stated."""
    weight = sum(MIX.values())
    raw = {t: total * w / weight for t, w in MIX.items()}
    counts = {t: math.floor(v) for t, v in raw.items()}
    left = total - sum(counts.values())
    for t in sorted(raw, key=lambda t: (-(raw[t] - counts[t]), t))[:left]:
        counts[t] += 1
    return counts


def _lognormal(rng: random.Random, mean: float, sigma: float) -> float:
    """A lognormal draw whose expected value is `mean`."""
    return rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma)


def _day_slots(days: int, now: datetime) -> tuple[list[datetime], list[float]]:
    """Midnights (UTC) of the last `days` calendar days, today included, with a traffic weight each
    (weekends quieter; today only as far as it has gone)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [today - timedelta(days=days - 1 - d) for d in range(days)]
    weights = []
    for start in starts:
        w = WEEKEND_WEIGHT if start.weekday() >= 5 else 1.0
        if start == today:
            w *= max((now - today).total_seconds() / 86_400, 0.01)
        weights.append(w)
    return starts, weights


def _timestamp(rng: random.Random, start: datetime, now: datetime) -> datetime:
    """A time in the day starting at `start`: mostly working hours, never after `now`."""
    hour = rng.gauss(14.0, 3.5) if rng.random() < 0.85 else rng.uniform(0, 24)
    seconds = min(max(hour, 0.0), 23.999) * 3600
    ts = start + timedelta(seconds=seconds)
    if ts > now:  # today: squeeze into what has passed of it
        ts = start + (now - start) * rng.random()
    return ts


def sample_inputs(*, days: int = 30, seed: int = 7, requests: int | None = None,
                  now: datetime | None = None) -> list[UsageInput]:
    """The sample month as usage inputs. What each request was (type, tokens, status, score, team)
    depends only on `seed`; when it happened is spread over the days ending at `now`."""
    if not 1 <= days <= 366:
        raise InvalidInput("days must be between 1 and 366")
    total = round(DEFAULT_MONTHLY_REQUESTS * days / 30) if requests is None else requests
    if not 1 <= total <= MAX_REQUESTS:
        raise InvalidInput(f"requests must be between 1 and {MAX_REQUESTS:,}")
    now = now or utcnow()
    rng = random.Random(seed)  # what was sent: task types, tokens, statuses, scores, teams
    clock = random.Random(f"{seed}/clock")  # when: kept apart so that the time of day cannot shift the rest
    plan = [t for t, n in _counts(total).items() for _ in range(n)]
    rng.shuffle(plan)
    starts, weights = _day_slots(days, now)
    day_of = clock.choices(range(days), weights=weights, k=total)
    out: list[UsageInput] = []
    for i, task in enumerate(plan):
        typical = DEFAULT_PROFILES.get(task, FALLBACK_PROFILE)
        inp = max(50, min(MAX_INPUT_TOKENS, round(_lognormal(rng, typical.input_tokens, 0.55))))
        outp = max(5, round(_lognormal(rng, typical.output_tokens, 0.5)))
        cached = 0
        if inp >= CACHE_FROM_TOKENS and rng.random() < 0.55:
            cached = round(inp * rng.uniform(0.3, 0.75))
        ttft = _lognormal(rng, 450 + inp / 60, 0.35)
        status = "ok"
        if rng.random() < ERROR_RATE:
            status = rng.choice(ERROR_STATUSES)
            if status == "rate_limited":  # rejected before the model ran: nothing billed
                inp, cached, outp, ttft = 0, 0, 0, _lognormal(rng, 120, 0.3)
            else:  # cut off part-way through the answer
                outp = round(outp * rng.uniform(0.0, 0.5))
        latency = ttft + outp / OUTPUT_TOKENS_PER_SECOND * 1000 * rng.uniform(0.8, 1.25)
        if status == "timeout":
            latency = max(latency, 60_000.0)
        quality = quality_source = None
        if status == "ok" and rng.random() < RATED_SHARE:
            quality = round(min(1.0, max(0.0, rng.gauss(0.9, 0.06))), 2)
            quality_source = rng.choice(("human", "automated", "judge"))
        team = DEMO_TEAMS[rng.randrange(len(DEMO_TEAMS))]
        user = DEMO_USERS[rng.randrange(len(DEMO_USERS))]
        out.append(UsageInput(
            model=DEMO_MODEL, task_type=task, input_tokens=inp, cached_input_tokens=cached, output_tokens=outp,
            latency_ms=round(latency, 1), ttft_ms=round(min(ttft, latency), 1), status=status, quality=quality,
            quality_source=quality_source, user=user, team=team, project=DEMO_PROJECT, source=DEMO_SOURCE,
            request_id=f"demo-{seed}-{i}",
            timestamp=_timestamp(clock, starts[day_of[i]], now).isoformat(),
        ))
    return out


def _chunks(items: Sequence[UsageInput], size: int) -> list[Sequence[UsageInput]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def run_demo(service: PrismService, *, days: int = 30, seed: int = 7,
                   requests: int | None = None) -> DemoResult:
    """Store the sample month (idempotent: request ids `demo-<seed>-<i>` are recorded once)."""
    now = utcnow()
    inputs = sample_inputs(days=days, seed=seed, requests=requests, now=now)
    new = 0
    for chunk in _chunks(inputs, BATCH):
        new += await service.record_many(chunk)
    first = (now - timedelta(days=days - 1)).date()
    return DemoResult(
        requests=len(inputs), new=new, days=days, seed=seed, since=first.isoformat(),
        until=(now.date() + timedelta(days=1)).isoformat(), model=DEMO_MODEL, project=DEMO_PROJECT,
        source=DEMO_SOURCE, teams=list(DEMO_TEAMS), database=str(service.store.path),
    )



class DemoRemoved(BaseModel):
    sample_store: str = Field(description="the sample store's file")
    sample_store_deleted: bool
    voided_in_real_store: int = Field(description="sample events found in the real store (older versions put "
                                                  "them there), now voided")
    text: str = Field(exclude=True)


async def remove_demo(service: PrismService) -> DemoRemoved:
    """Delete PRISM_HOME/demo.db and void source=demo events in the real store `service` has open."""
    home = service.settings.home if service.settings else Path(service.store.path).parent
    db = home / DEMO_DB
    deleted = False
    for path in (db, db.with_name(DEMO_DB + "-wal"), db.with_name(DEMO_DB + "-shm")):
        if path.exists():
            path.unlink()
            deleted = deleted or path == db
    voided = await service.void_events("source", DEMO_SOURCE, author="mcp-prism demo --remove",
                                       reason="sample data removed from the real store")
    parts = [f"deleted the sample store {db}" if deleted else f"no sample store at {db}"]
    parts.append(f"voided {voided.events:,} sample event(s) in the real store" if voided.events
                 else "the real store holds no sample events")
    return DemoRemoved(sample_store=str(db), sample_store_deleted=deleted, voided_in_real_store=voided.events,
                       text="; ".join(parts))
