"""`import-history`: the agents' local logs into usage events, incrementally and idempotently.

Each request an agent logged becomes one usage event (source `import`) with a request id made of the
agent's own ids (`claude-code:<message id>:<request id>`, `opencode:<part id>`, `codex:<response id>`) and
an event id derived from it, so importing the same history twice, from a re-read, a copied home folder or
another machine, stores it once (the store skips request ids it holds). How far each log was read is kept
per machine in `import_files`: a re-run reads only the bytes appended since (or, for OpenCode's database,
the messages updated since). Events are written before that state, so a crash re-reads, never skips.
An import narrowed by --since or --project does not move that state, so a later full import still sees
what it left out.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any

from mcp_prism.core.open_prices import OpenPrices
from mcp_prism.core.usage import UsageEvent
from mcp_prism.errors import InvalidInput
from mcp_prism.history import claude_code, codex, opencode
from mcp_prism.history.records import AGENTS, LoggedRequest, UnsupportedLayout
from mcp_prism.history.results import AgentImport, CostDisagreement, ImportResult
from mcp_prism.store.imports import FileState, load_import_state, save_import_state

log = logging.getLogger(__name__)

BATCH = 5_000  # events per store transaction
HEAD_BYTES = 256  # a log whose first bytes changed was replaced: read it from the start
COST_TOLERANCE = Decimal("0.000001")  # USD: an agent's logged cost within this of ours agrees (float rounding)
_PARSERS = {"claude-code": claude_code, "opencode": opencode, "codex": codex}


def _head(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()[:16]


def event_id(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()[:32]


def project_of(cwd: str | None) -> str | None:
    """The project a working directory stands for: its last folder name."""
    if not cwd:
        return None
    return PurePath(cwd.rstrip("/\\") or "/").name or None


@dataclass
class _Tally:
    files: int = 0
    files_read: int = 0
    requests: int = 0
    stored: int = 0
    unpriced: int = 0
    cost: Decimal = Decimal(0)
    agent_cost: Decimal = Decimal(0)
    sidechain: int = 0
    disagreements: dict[str, list[Decimal]] = field(default_factory=dict)  # model -> [ours, theirs, n]


class HistoryImporter:
    """Reads the agents' logs, classifies each turn's words, prices each request, stores the events."""

    def __init__(self, svc: Any, *, machine: str | None = None, user: str | None = None) -> None:
        self.svc = svc
        self.store = svc.store
        self.prices = OpenPrices(svc.catalog)
        self.machine = machine or socket.gethostname() or "unknown"
        self.user = user or os.environ.get("PRISM_USER") or _login()
        self._classified: dict[str, str] = {}
        self._warned: set[str] = set()
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- entry point
    async def run(self, agent: str = "all", *, path: str | None = None, since: str | None = None,
                  project: str | None = None) -> ImportResult:
        if agent not in (*AGENTS, "all"):
            raise InvalidInput(f"import-history reads {', '.join(AGENTS)} or all, not {agent!r}")
        if path and agent == "all":
            raise InvalidInput("--path needs the agent whose logs are there: import-history claude-code|opencode|"
                               "codex --path P")
        started = time.perf_counter()
        since_day = _since(since)
        narrowed = since_day is not None or project is not None
        state = await load_import_state(self.store, self.machine)
        agents = AGENTS if agent == "all" else (agent,)
        out = []
        for name in agents:
            roots = [Path(path).expanduser()] if path else _PARSERS[name].default_roots()
            if path and not roots[0].exists():
                raise InvalidInput(f"--path {path} does not exist; give the folder that holds the {name} logs")
            tally = _Tally()
            try:
                await self._agent(name, roots, state, tally, since_day, project, narrowed)
            except UnsupportedLayout as e:
                raise InvalidInput(str(e)) from None
            out.append(AgentImport(
                agent=name, roots=[str(r) for r in roots], files=tally.files, files_read=tally.files_read,
                requests=tally.requests, stored=tally.stored, duplicates=tally.requests - tally.stored,
                sidechain=tally.sidechain, unpriced=tally.unpriced, cost_usd=tally.cost,
                agent_cost_usd=tally.agent_cost if name == "opencode" else None,
                disagreements=[CostDisagreement(model=m, requests=int(v[2]), ours_usd=v[0], agent_usd=v[1])
                               for m, v in sorted(tally.disagreements.items())]))
        return ImportResult(machine=self.machine, user=self.user, agents=out, warnings=self.warnings,
                            state_saved=not narrowed, seconds=round(time.perf_counter() - started, 3))

    # ---------------------------------------------------------------- one agent
    async def _agent(self, name: str, roots: list[Path], state: dict[str, FileState], tally: _Tally,
                     since_day: date | None, project: str | None, narrowed: bool) -> None:
        parser = _PARSERS[name]
        files: list[Path] = []
        for root in roots:
            files += parser.find_logs(root)
        tally.files = len(files)
        pending: list[UsageEvent] = []
        states: list[FileState] = []  # saved only after their files' events are stored
        for f in files:
            try:
                state_now = await self._file(name, f, state.get(os.path.abspath(f)), pending, tally, since_day,
                                             project)
            except OSError as e:  # gone or unreadable since it was listed: the next import tries it again
                self._warn(f"read:{f}", f"could not read {f} ({e.strerror or e}); it is skipped this time")
                continue
            if state_now is not None and not narrowed:
                states.append(state_now)
            if len(states) >= BATCH:
                await self._flush(pending, states, tally)
        await self._flush(pending, states, tally)

    async def _file(self, name: str, f: Path, old: FileState | None, pending: list[UsageEvent], tally: _Tally,
                    since_day: date | None, project: str | None) -> FileState | None:
        """Read one log from where the last import stopped; its new state, or None when it was unchanged."""
        size, mtime = _signature(f, with_wal=name == "opencode")
        if old and (old.mtime_ns, old.size) == (mtime, size) and (name == "opencode" or old.read_to == size):
            return None  # unchanged since the last import: not even opened
        head = _head(f)
        positions: list[int] = [0]
        if name == "opencode":
            requests, positions[0], versions = opencode.read(f, old.read_to if old and old.head == head else 0)
            self._versions(versions, f)
            reqs: Iterable[LoggedRequest] = requests
        else:
            start = old.read_to if old and old.head == head and old.read_to <= size else 0
            positions[0] = start
            reqs = _tracking(_PARSERS[name].read(f, start), positions)
        tally.files_read += 1
        for req in reqs:
            if (since_day and req.ts.astimezone(UTC).date() < since_day) or (
                    project and project_of(req.cwd) != project):
                continue
            pending.append(self._event(req, tally))
            if len(pending) >= BATCH:
                await self._flush(pending, [], tally)
        return FileState(os.path.abspath(f), name, size, mtime, positions[0], head)

    def _versions(self, versions: list[str], f: Path) -> None:
        other = sorted(v for v in versions if not v.startswith(opencode.SUPPORTED + "."))
        if other:
            self._warn(f"opencode:{f}", f"{f} has sessions written by OpenCode {', '.join(other)}; this importer "
                                        f"was checked against {opencode.SUPPORTED}: check its figures")

    async def _flush(self, pending: list[UsageEvent], states: list[FileState], tally: _Tally) -> None:
        """Store the events, then how far their logs were read: a crash between the two re-reads, never skips.
        Many small logs share a transaction: per-file transactions were most of an import's time."""
        if pending:
            tally.stored += len(await self.store.insert_events(pending))
            pending.clear()
        if states:
            await save_import_state(self.store, self.machine, states)
            states.clear()

    # ---------------------------------------------------------------- one request
    def _event(self, req: LoggedRequest, tally: _Tally) -> UsageEvent:
        tally.requests += 1
        tally.sidechain += req.sidechain
        named = self.prices.name(req.model, req.provider)
        cost = self.prices.cost(req.model, req.provider, req.tokens, req.ts)
        if cost.usd is None:
            tally.unpriced += 1
            self._warn(f"price:{named.model}",
                       f"model {named.model!r} ({named.provider}) has no price in the catalog or genai-prices: its "
                       f"requests are imported with their tokens and reported as unpriced; add "
                       f'[models."{named.model}"] with provider, tier, context_window and price = {{ input = "..", '
                       f'output = ".." }} to config.toml to price it')
        else:
            tally.cost += cost.usd
        if req.agent_cost_usd is not None:
            tally.agent_cost += req.agent_cost_usd
            if cost.usd is not None and abs(cost.usd - req.agent_cost_usd) > COST_TOLERANCE:
                d = tally.disagreements.setdefault(named.model, [Decimal(0), Decimal(0), Decimal(0)])
                d[0] += cost.usd
                d[1] += req.agent_cost_usd
                d[2] += 1
        task_type = self._task_type(req.text)
        capture = self.svc.task_types[task_type].capture_samples
        request_id = f"{req.agent}:{req.key}"
        return UsageEvent(
            task_type=task_type, model=named.model, provider=named.provider, tokens=req.tokens,
            latency_ms=req.latency_ms, cost_usd=cost.usd, prices=cost.prices, ts=req.ts, id=event_id(request_id),
            user=self.user, project=project_of(req.cwd), source="import", request_id=request_id,
            prompt=req.text if capture and req.text else None, machine=self.machine, session_id=req.session_id,
            agent=req.agent, sidechain=req.sidechain, agent_cost_usd=req.agent_cost_usd,
        )

    def _task_type(self, text: str) -> str:
        """The classifier's verdict on the person's words, once per distinct turn text."""
        hit = self._classified.get(text)
        if hit is None:
            hit = self._classified[text] = self.svc.classifier.classify(text).task_type
        return hit

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)
            log.warning("%s", message)


def _tracking(lines: Iterator[tuple[int, LoggedRequest | None]], positions: list[int]) -> Iterator[LoggedRequest]:
    """The requests of a parser's (offset, request) stream; positions[0] follows the offset read to."""
    for pos, req in lines:
        positions[0] = pos
        if req is not None:
            yield req


def _signature(f: Path, *, with_wal: bool) -> tuple[int, int]:
    """(size, mtime_ns) that change when the log does. OpenCode writes through SQLite's WAL, where new rows
    wait while the main file stays unchanged: its database counts with its -wal file."""
    st = f.stat()
    size, mtime = st.st_size, st.st_mtime_ns
    wal = f.with_name(f.name + "-wal")
    if with_wal and wal.exists():
        w = wal.stat()
        size, mtime = size + w.st_size, max(mtime, w.st_mtime_ns)
    return size, mtime


def _since(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--since must be a date like 2026-11-01, not {value!r}") from None


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
