"""The gateway: an ASGI app speaking the OpenAI (Chat Completions and Responses) and Anthropic wire formats.

Each chat request is routed by `PrismService.route_request`, forwarded through `ProviderClient`, and
handed to the `Recorder` as it ends. When the client and the chosen provider speak the same format the
body passes through with only `model` replaced (and, for OpenAI streams, usage asked for); otherwise it
is translated through the neutral model in `providers.wire`. Which API a model is called with is
`providers.registry.upstream_format`'s choice (codex models take only the Responses API). Raw ASGI rather
than a framework because this runs on every request and a millisecond of CPU is the whole budget
(benchmarks/bench_gateway.py).

Auth: a virtual key (`mcp-prism keys create`, sent as Bearer or x-api-key) names the team, user and
project a request is recorded and budgeted under. Keys are required unless the gateway was built
with `no_auth=True` (`mcp-prism gateway --no-auth`, loopback only); a `token` (PRISM_GATEWAY_TOKEN)
is kept as an admin/legacy credential: it is accepted beside keys, and its requests carry the labels
of the x-prism-* headers. In no-auth mode a virtual key, when sent, is still checked and applied.
Budgets: see `mcp_prism.team.budgets` (reserve before the upstream call, settle after).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx

from mcp_prism.config import is_loopback
from mcp_prism.core.budgets import estimate_pico, output_allowance
from mcp_prism.core.catalog import ModelSpec
from mcp_prism.core.human_text import person_text
from mcp_prism.core.pricing import to_picodollars
from mcp_prism.core.usage import new_id, utcnow
from mcp_prism.errors import InvalidInput, UnknownName
from mcp_prism.gateway.cache import CacheSettings, ResponseCache, StreamCapture, cache_key, replay_as_stream
from mcp_prism.gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mcp_prism.gateway.metrics import Metrics
from mcp_prism.gateway.recorder import Outcome, Recorder
from mcp_prism.gateway.spool import Spool
from mcp_prism.loop.batch import BatchService, run_batch_loop
from mcp_prism.providers.client import ProviderClient
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.providers.formats import openai as openai_format
from mcp_prism.providers.formats import responses as responses_format
from mcp_prism.providers.prompt_cache import mark_cache_control
from mcp_prism.providers.registry import FORMATS, upstream_format
from mcp_prism.providers.resilience import (
    CIRCUIT_STATE_VALUE,
    Attempt,
    CircuitBreaker,
    Resilience,
    RetryPolicy,
    from_config,
    ordered_targets,
    send_resilient,
)
from mcp_prism.providers.sse import SSEDecoder, encode_sse
from mcp_prism.providers.wire import StreamEnd, TextDelta, Usage, WireError
from mcp_prism.service import AUTO, TASK_PREFIX, PrismService, RouteDecision
from mcp_prism.team.budgets import Budget, BudgetExceeded, Enforcer, Reservation
from mcp_prism.team.keys import PREFIX as KEY_PREFIX
from mcp_prism.team.keys import ActiveKey, KeyCache

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 32 * 1024 * 1024
BATCH_PATH = "/v1/prism/batches/"
SETTLE_INTERVAL = 0.05  # seconds a settled request's estimate may stay reserved (refusing early, never overspending)
SETTLE_BATCH = 64
REFUSED_PER_SECOND = 100  # refused requests recorded a second, at most (the rest are only answered)
LABEL_CHARS = 128
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
CLASSIFY_CHARS = 4000  # the person's newest words are classified; more adds cost, not signal
STATUS_OF_KIND = {"rate_limited": "rate_limited", "timeout": "timeout", "invalid_request": "invalid_request",
                  "authentication": "invalid_request", "permission": "invalid_request", "not_found": "invalid_request",
                  "request_too_large": "invalid_request"}
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]
FORWARDED_ANTHROPIC_HEADERS = (b"anthropic-version", b"anthropic-beta")
# SSE event names that end a stream passed through untouched (OpenAI chat streams end with `data: [DONE]`)
_END_EVENTS = frozenset({"message_stop", *responses_format.TERMINAL_EVENTS})


def _status_of(err: WireError) -> str:
    return STATUS_OF_KIND.get(err.kind, "provider_error")


@dataclass(slots=True)
class _Request:
    """What one chat request carries through the handler."""

    fmt: ModuleType
    fmt_name: str
    headers: dict[bytes, bytes]
    t0: float
    id: str
    ts: Any = None
    decision: RouteDecision | None = None
    prompt: str | None = None
    text: str = ""
    upstream_s: float = 0.0
    ttft_ms: float | None = None
    response_text: list[str] | None = None
    extra: dict[str, str] = field(default_factory=dict)
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    project: str | None = None
    reservation: Reservation | None = None
    actual_pico: int = 0  # what the answer cost, for settling the reservation
    actual_tokens: int = 0
    cache_key: str | None = None
    cache_hit: bool = False
    capture: Any = None  # StreamCapture of a cacheable streamed answer
    body_bytes: int = 0
    stream_events: int = 0  # content events relayed so far (about one token each)
    answer_bytes: int = 0  # size of a whole (non-streamed) answer: estimates tokens when usage is malformed

    def header(self, name: bytes) -> str | None:
        v = self.headers.get(name)
        return v.decode("latin-1") if v is not None else None


class Gateway:
    def __init__(self, service_factory: Callable[[], Awaitable[PrismService]], *, token: str | None = None,
                 env: Mapping[str, str] | None = None, flush_interval: float = 0.2,
                 upstream_timeout: float = 300.0, no_auth: bool | None = None,
                 resilience: Resilience | None = None) -> None:
        """`no_auth` None keeps the behaviour of callers from before virtual keys: open without a token."""
        self._timeout = httpx.Timeout(connect=min(10.0, upstream_timeout), read=upstream_timeout, write=30.0,
                                      pool=10.0)
        self._factory = service_factory
        self._resilience = resilience  # tests inject one (fast backoff, fake clock); else from the config file
        self.retry_policy = RetryPolicy()
        self.breaker = CircuitBreaker()
        self._token = token.encode() if token else None
        self.require_key = (not no_auth) if no_auth is not None else token is not None
        self.keys: KeyCache | None = None
        self.enforcer: Enforcer | None = None
        self._env = env
        self._flush_interval = flush_interval
        self.metrics = Metrics()
        self.service: PrismService | None = None
        self.providers: ProviderClient | None = None
        self.recorder: Recorder | None = None
        self._capture_any = False
        self.cache: ResponseCache | None = None
        self.batches: BatchService | None = None
        self._settle_queue: list[tuple[Reservation, int, int]] = []
        self._settle_wake = asyncio.Event()
        self._settle_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._batch_stop = asyncio.Event()
        self._batch_task: asyncio.Task[None] | None = None
        self.cache_conf = CacheSettings()
        self._refused_second, self._refused_count = 0, 0
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/chat/completions"): self._openai_chat,
            ("POST", "/chat/completions"): self._openai_chat,
            ("POST", "/v1/messages"): self._anthropic_messages,
            ("POST", COUNT_TOKENS_PATH): self._count_tokens,
            ("POST", "/v1/responses"): self._openai_responses,
            ("POST", "/responses"): self._openai_responses,
            ("GET", "/v1/models"): self._models,
            ("GET", "/models"): self._models,
            ("GET", "/healthz"): self._health,
            ("GET", "/metrics"): self._metrics,
        }

    # ---------------------------------------------------------------- lifecycle
    async def startup(self) -> None:
        self.service = await self._factory()
        self.providers = ProviderClient(self.service.catalog, self._env, timeout=self._timeout)
        settings = self.service.settings
        self.retry_policy, self.breaker = self._resilience or from_config(settings.user_config if settings else {})
        missing = [p for p in self.service.catalog.providers if not self.providers.has_key(p)]
        if missing:
            log.info("no API key in the environment for: %s (requests routed there get an error naming the "
                     "variable to set)", ", ".join(missing))
        self.keys = KeyCache(self.service.store)
        self.enforcer = Enforcer(self.service.store, on_level=self._budget_level, on_reject=self._budget_rejected,
                                 lease_ttl=settings.budget_lease_seconds if settings else 30.0)
        await self.enforcer.refresh(force=True)
        spool = None
        if settings is not None:  # the journal of answered requests (gateway/spool.py)
            try:
                spool = Spool(settings.home / "spool")
                spool.open()
            except OSError as e:
                spool = None
                log.error("no usage journal (%s): requests answered just before a crash would not be recorded", e)
        self.recorder = Recorder(self.service.store, self.service.catalog, self.metrics,
                                 flush_interval=self._flush_interval, classifier=self.service.classifier,
                                 task_types=self.service.task_types, enforcer=self.enforcer, spool=spool,
                                 settle_interval=SETTLE_INTERVAL)
        await self.recorder.replay()  # what a killed gateway answered but never recorded
        await self.enforcer.start_leases()  # and gives back what killed gateways held
        self._capture_any = any(t.capture_samples for t in self.service.task_types.values())
        self.cache_conf = CacheSettings.from_config(settings.user_config if settings else {},
                                                    known_task_types=self.service.task_types)
        self.cache = ResponseCache(self.service.store)
        if self.cache_conf.task_types:
            await self.cache.purge_expired()
        self.batches = BatchService(self.service, self.providers)
        self._batch_task = asyncio.create_task(run_batch_loop(self.batches, None, self._batch_stop))
        self.recorder.start()
        self._settle_task = asyncio.create_task(self._settle_loop(), name="prism-budget-settle")

    async def _settle_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settle_wake.wait(), SETTLE_INTERVAL)
            self._settle_wake.clear()
            await self._settle_pending()
            if self.enforcer is not None:
                await self.enforcer.keep_leases()

    async def _settle_pending(self) -> None:
        if self._settle_queue and self.enforcer is not None:
            batch, self._settle_queue = self._settle_queue, []
            await self.enforcer.settle_many(batch)

    async def shutdown(self) -> None:
        self._stopping = True
        self._settle_wake.set()
        if self._settle_task is not None:
            with contextlib.suppress(Exception):
                await self._settle_task
        await self._settle_pending()  # whatever arrived after the loop's last round
        if self._batch_task is not None:
            self._batch_stop.set()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._batch_task, 10)
        if self.recorder is not None:
            await self.recorder.close()
        if self.enforcer is not None:
            await self.enforcer.stop_leases()
        if self.providers is not None:
            await self.providers.aclose()
        if self.service is not None:
            await self.service.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is None and scope["method"] == "GET" and scope["path"].startswith(BATCH_PATH):
                handler = self._batch_get
            if not self.require_key:  # open (no key): refuse what a web page could send (see _cross_site)
                problem = _cross_site(_headers(scope))
                if problem:
                    await _error_for(scope, send, WireError(403, "permission", problem))
                    return
            if handler is None:
                if any(path == scope["path"] for _, path in self._routes):
                    await _error_for(scope, send, WireError(405, "invalid_request",
                                                            f"{scope['method']} is not allowed on {scope['path']}"))
                else:
                    await _error_for(scope, send, WireError(404, "not_found", f"no endpoint {scope['path']}: use "
                                                            "/v1/chat/completions, /v1/responses, /v1/messages, "
                                                            "/v1/messages/count_tokens or /v1/models"))
                return
            try:
                await handler(scope, receive, send)
            except RecursionError:  # a body nested deeper than the code handling it can walk: the caller's fault
                log.warning("refused a request nested too deeply to process on %s", scope["path"])
                with contextlib.suppress(Exception):  # the response may have started already
                    await _error_for(scope, send, WireError(400, "invalid_request", TOO_DEEP))
            except Exception:  # a bug: log it, answer 500 without the traceback
                log.exception("gateway handler failed")
                with contextlib.suppress(Exception):  # the response may have started already
                    await _error_for(scope, send, WireError(500, "provider_error",
                                                            "internal gateway error (see the gateway log)"))
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    try:
                        await self.startup()
                    except Exception as e:
                        log.error("gateway could not start: %s", e)
                        # release what started (an open store's thread would keep the process alive)
                        with contextlib.suppress(Exception):
                            await self.shutdown()
                        await send({"type": "lifespan.startup.failed", "message": str(e)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # ---------------------------------------------------------------- small endpoints
    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        ok = self.service is not None
        await _json(send, 200 if ok else 503, {"status": "ok" if ok else "starting"})

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._authorised(_headers(scope)):
            await _error_for(scope, send, WireError(401, "authentication", "send a virtual key or the gateway "
                                                    "token as a Bearer token"))
            return
        for (provider, model), state in self.breaker.states().items():  # open -> half-open is time: read it now
            self.metrics.circuit_state.labels(provider, model).set(CIRCUIT_STATE_VALUE[state])
        await _respond(send, 200, self.metrics.render(), [(b"content-type", METRICS_CONTENT_TYPE.encode())])

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        if not await self._authorised(headers):
            await _error_for(scope, send, WireError(401, "authentication", "send a virtual key as a Bearer token "
                                                    "or x-api-key"))
            return
        assert self.service is not None
        cat = self.service.catalog
        entries: list[tuple[str, str]] = [(m.name, m.provider) for m in cat.models.values()]
        entries += [(a, "mcp-prism") for a in cat.aliases]
        entries += [(AUTO, "mcp-prism")] + [(TASK_PREFIX + t, "mcp-prism") for t in sorted(self.service.task_types)]
        if b"anthropic-version" in headers:
            data = [{"type": "model", "id": i, "display_name": i, "created_at": "2025-01-01T00:00:00Z"}
                    for i, _ in entries]
            body: dict[str, Any] = {"data": data, "has_more": False, "first_id": data[0]["id"],
                                    "last_id": data[-1]["id"]}
        else:
            body = {"object": "list", "data": [{"id": i, "object": "model", "created": 0, "owned_by": o}
                                               for i, o in entries]}
        await _json(send, 200, body)

    async def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        ok, _ = await self._authenticate(headers)
        return ok

    async def _authenticate(self, headers: dict[bytes, bytes]) -> tuple[bool, ActiveKey | None]:
        """(allowed, the virtual key sent). A virtual key that does not verify is refused in every mode,
        so a typo never turns into unbudgeted spend; the admin token and no-auth mode need no key."""
        # Claude Code sends x-api-key AND a Bearer token when both ANTHROPIC_API_KEY and ANTHROPIC_AUTH_TOKEN
        # are set: a provider key (or anything else) in one header must not hide a virtual key in the other.
        auth = headers.get(b"authorization", b"")
        sent = [v for v in (headers.get(b"x-api-key"), auth[7:].strip() if auth[:7].lower() == b"bearer " else None)
                if v]
        prefix = KEY_PREFIX.encode()
        given = next((v for v in sent if v.startswith(prefix)), None)
        if given is not None and self.keys is not None:
            key = await self.keys.verify(given.decode("latin-1"))
            return key is not None, key
        if self._token is not None and any(hmac.compare_digest(v, self._token) for v in sent):
            return True, None
        return not self.require_key, None

    # ---------------------------------------------------------------- chat
    async def _openai_chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._chat(scope, receive, send, openai_format, "openai")

    async def _anthropic_messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._chat(scope, receive, send, anthropic_format, "anthropic")

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /v1/messages/count_tokens` (Claude Code and its IDE extensions call it): routed like a
        message; passed through when the target is an Anthropic model, else estimated here (about four
        bytes a token of what the model would read). Free, so not recorded as a request."""
        assert self.service is not None and self.providers is not None
        headers = _headers(scope)
        ok, _ = await self._authenticate(headers)
        if not ok:
            await _error_for(scope, send, WireError(401, "authentication", "this gateway needs a virtual key: "
                                                    "send it as x-api-key or a Bearer token"))
            return
        body, data, err = await _read_request(receive)
        if err is not None:
            await _error_for(scope, send, err)
            return
        hint = headers.get(b"x-prism-task")
        try:
            d = await self.service.route_request(data["model"], person_text(data["messages"], limit=CLASSIFY_CHARS),
                                                 task_hint=hint.decode("latin-1") if hint else None,
                                                 context_tokens=len(body) // 4, classify_named=False)
        except InvalidInput as e:
            status = 404 if isinstance(e, UnknownName) and e.kind == "model" else 400
            await _error_for(scope, send, WireError(status, "not_found" if status == 404 else "invalid_request",
                                                    str(e)))
            return
        m = d.model
        out_headers = [*JSON_HEADERS, (b"x-prism-model", m.name.encode())]
        if FORMATS[self.service.catalog.providers[m.provider].format] is not anthropic_format \
                or not self.providers.has_key(m.provider):
            counted = {k: data[k] for k in ("system", "messages", "tools") if k in data}
            estimate = len(json.dumps(counted, separators=(",", ":"))) // 4 + 1
            await _respond(send, 200, json.dumps({"input_tokens": estimate}).encode(), out_headers)
            return
        extra = {k.decode(): v.decode("latin-1") for k in FORWARDED_ANTHROPIC_HEADERS if (v := headers.get(k))}
        req = self.providers.request(m.provider, m.name, json.dumps({**data, "model": m.name}).encode(),
                                     stream=False, extra_headers=extra)
        req = httpx.Request("POST", req.url.copy_with(path=req.url.path + "/count_tokens"), headers=req.headers,
                            content=req.content, extensions=req.extensions)
        try:
            resp = await self.providers.send(req)
            try:
                raw = await _read_all(resp)
            finally:
                await resp.aclose()
        except WireError as e:
            await _error_for(scope, send, e)
            return
        if resp.status_code >= 400:  # in Anthropic's shape whatever the upstream sent
            await _error_for(scope, send, anthropic_format.parse_error(resp.status_code, raw, resp.headers))
            return
        await _respond(send, 200, raw, out_headers)

    async def _openai_responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._chat(scope, receive, send, responses_format, "responses")

    def _upstream(self, m: ModelSpec, client: str) -> tuple[str, ModuleType]:
        """(format name, module) `m` is called with for a client speaking `client` (see `upstream_format`)."""
        name = upstream_format(self.service.catalog, m, client)  # type: ignore[union-attr]
        return name, FORMATS[name]

    async def _chat(self, scope: Scope, receive: Receive, send: Send, fmt: ModuleType, fmt_name: str) -> None:
        self.metrics.in_flight.inc()
        try:
            await self._chat_inner(scope, receive, send, fmt, fmt_name)
        finally:
            self.metrics.in_flight.dec()

    async def _chat_inner(self, scope: Scope, receive: Receive, send: Send, fmt: ModuleType, fmt_name: str) -> None:
        assert self.service is not None and self.providers is not None
        t0 = time.perf_counter()
        r = _Request(fmt, fmt_name, _headers(scope), t0, new_id(), ts=utcnow())
        ok, key = await self._authenticate(r.headers)
        if not ok:
            await self._refuse(send, r, WireError(401, "authentication", "this gateway needs a virtual key (unknown "
                                                  "or revoked keys are refused): create one with `mcp-prism keys "
                                                  "create --team T` and send it as a Bearer token (OpenAI clients) "
                                                  "or x-api-key (Anthropic clients)"))
            return
        if key is not None:  # the key's labels win; the headers fill only what the key leaves open
            r.key_id, r.team = key.id, key.team
            r.user = key.user or r.header(b"x-prism-user")
            r.project = key.project or r.header(b"x-prism-project")
        else:
            r.user, r.team, r.project = (r.header(b"x-prism-user"), r.header(b"x-prism-team"),
                                         r.header(b"x-prism-project"))
        body, data, err = await _read_request(receive, "input" if fmt is responses_format else "messages")
        r.body_bytes = len(body)
        if err is not None:
            await self._refuse(send, r, err, data)
            return
        text = person_text(data["input" if fmt is responses_format else "messages"], limit=CLASSIFY_CHARS)
        try:
            d = await self.service.route_request(data["model"], text, task_hint=r.header(b"x-prism-task"),
                                                 context_tokens=len(body) // 4, classify_named=False)
        except UnknownName as e:
            await self._refuse(send, r, WireError(404 if e.kind == "model" else 400, "not_found"
                                                  if e.kind == "model" else "invalid_request", str(e)), data, text)
            return
        except InvalidInput as e:
            await self._refuse(send, r, WireError(400, "invalid_request", str(e)), data, text)
            return
        r.decision = d
        r.text = text
        if await self._queue_for_batch(send, r, data, d, text):
            return
        if await self._answer_from_cache(send, r, data, d):
            return
        assert self.enforcer is not None
        budgets = await self.enforcer.applicable(r.key_id, r.user, r.team, r.project) if self.enforcer.any else ()
        if budgets:
            if d.rule_id is not None and self.enforcer.near_limit(list(budgets)):
                d = r.decision = await self._downgrade(d)
            estimate = estimate_pico(self.service.catalog.prices_at(d.model.name), len(body), output_allowance(data))
            try:
                r.reservation = await self.enforcer.reserve(list(budgets), estimate)
            except BudgetExceeded as e:
                await self._error(send, r, WireError(429, "rate_limited", e.message, retry_after=e.retry_after),
                                  record=True)
                return
        try:
            await self._forward(scope, receive, send, r, data, d)
        finally:
            if r.reservation is not None:  # settled in batches off the request path; never lost on cancel
                self.enforcer.finish(r.reservation, r.actual_pico)
                self._settle_queue.append((r.reservation, r.actual_pico, r.actual_tokens))
                if len(self._settle_queue) >= SETTLE_BATCH:
                    self._settle_wake.set()

    async def _queue_for_batch(self, send: Send, r: _Request, data: dict[str, Any], d: RouteDecision,
                               text: str) -> bool:
        """Non-urgent requests (`X-Prism-Batch: 1`, or a task type configured as batch) go to the provider's
        batch API at the batch price: 202 with an id; the answer is fetched later from /v1/prism/batches/ID."""
        assert self.batches is not None and self.service is not None
        header = r.header(b"x-prism-batch")
        if not header and not self.batches.task_types:
            return False
        try:
            BatchService.header_asks(header)
        except InvalidInput as e:
            await self._error(send, r, WireError(400, "invalid_request", str(e)), record=True)
            return True
        if r.fmt is responses_format:  # the batch queue keeps Chat Completions and Messages requests only
            if BatchService.header_asks(header):
                await self._error(send, r, WireError(400, "invalid_request", "X-Prism-Batch is not supported on "
                                                     "/v1/responses: send the request to /v1/chat/completions"))
                return True
            return False
        task = d.task_type or self.service.classifier.classify(text).task_type
        if not self.batches.wants_batch(task, header):
            return False
        if not self.batches.supports(d.model):
            if BatchService.header_asks(header):
                await self._error(send, r, WireError(400, "invalid_request", f"{d.model.name} ({d.model.provider}) "
                                                     "has no batch API mcp_prism supports: drop X-Prism-Batch or "
                                                     "name an OpenAI or Anthropic model"), record=True)
                return True
            return False  # a batch task type routed to a provider without one: served now
        try:
            rid = await self.batches.enqueue_client(data, client_format=r.fmt_name, model=d.model.name,
                                                    task_type=task, api_key_id=r.key_id, team=r.team, user=r.user,
                                                    project=r.project)
        except InvalidInput as e:
            await self._error(send, r, WireError(400, "invalid_request", str(e)), record=True)
            return True
        await _json(send, 202, {"id": rid, "status": "queued", "result_url": f"{BATCH_PATH}{rid}"})
        return True

    async def _batch_get(self, scope: Scope, receive: Receive, send: Send) -> None:
        ok, key = await self._authenticate(_headers(scope))
        if not ok:
            await _error_for(scope, send, WireError(401, "authentication", "send a virtual key (or the gateway "
                                                    "token) as a Bearer token or x-api-key"))
            return
        assert self.batches is not None
        try:
            info = await self.batches.get(scope["path"][len(BATCH_PATH):], api_key_id=key.id if key else None)
        except InvalidInput as e:
            await _error_for(scope, send, WireError(404, "not_found", str(e)))
            return
        await _json(send, 200, info.model_dump(mode="json"))

    async def _answer_from_cache(self, send: Send, r: _Request, data: dict[str, Any], d: RouteDecision) -> bool:
        """Serve an opted-in task type's repeated request from the response cache (recorded at $0, with the
        saving); otherwise remember the key so a good answer is stored."""
        if self.cache is None or not self.cache_conf.should_cache(d.task_type, data):
            return False  # a named model's request has no task type yet: never cached
        r.cache_key = cache_key(r.fmt_name, data, d.model.name, d.task_type, r.project)
        hit = await self.cache.get(r.cache_key)
        if hit is None:
            return False
        r.cache_hit = True
        headers = [*self._prism_headers(r), (b"x-prism-cache", b"hit")]
        self._record(r, Usage(), "ok", saved_usd=hit.saved_usd)  # journaled before it is answered
        if data.get("stream") is True:
            opts = data.get("stream_options") if isinstance(data.get("stream_options"), dict) else {}
            wanted = r.fmt is not openai_format or opts.get("include_usage") is True
            await _respond(send, 200, replay_as_stream(r.fmt_name, json.loads(hit.body), include_usage=wanted),
                           SSE_HEADERS + headers)
        else:
            await _respond(send, 200, hit.body, JSON_HEADERS + headers)
        return True

    async def _downgrade(self, d: RouteDecision) -> RouteDecision:
        """Near a soft limit (budgets with `downgrade`): the next cheaper model among the rule's own models
        (primary, fallbacks, upgrades: models its author vetted for the task), in the same or a lower tier,
        with the capabilities the rule requires. Unchanged when there is none."""
        assert self.service is not None
        cat = self.service.catalog
        rule = (await self.service.rules())[d.task_type].rule
        here = cat.prices_at(d.model.name)
        if here is None:
            return d
        probe = (here.input.base, here.output.base)
        best, best_price = None, None
        for name in rule.models():
            spec = cat.resolve(name)
            prices = cat.prices_at(spec.name)
            if (spec.name == d.model.name or prices is None or spec.tier > d.model.tier
                    or not rule.required_capabilities <= spec.capabilities):
                continue
            price = (prices.input.base, prices.output.base)
            if price[0] + price[1] < probe[0] + probe[1] and (best_price is None
                                                               or price[0] + price[1] > best_price[0] + best_price[1]):
                best, best_price = spec, price
        if best is None:
            return d
        return RouteDecision(best, d.task_type, d.rule_id, d.rule_version,
                             f"{d.reason}; downgraded to {best.name}: a budget is near its soft limit")

    async def _forward(self, scope: Scope, receive: Receive, send: Send, r: _Request, data: dict[str, Any],
                       d: RouteDecision) -> None:
        assert self.service is not None and self.providers is not None
        fmt = r.fmt
        if self._capture_any if not d.task_type else self.service.task_types[d.task_type].capture_samples:
            r.prompt, r.response_text = r.text, []
        stream = data.get("stream") is True
        targets = ordered_targets(d.model, d.fallbacks, name=lambda m: m.name)
        # Decided once from the client's own body (each target's copy may ask the provider for usage).
        opts = data.get("stream_options")
        opts = opts if isinstance(opts, dict) else {}
        extra = {k.decode(): v.decode("latin-1") for k in FORWARDED_ANTHROPIC_HEADERS
                 if (v := r.headers.get(k)) is not None} if fmt is anthropic_format else None
        # Parsed for translation only when a target built speaks another format (Claude Code's requests
        # carry what only the Messages API accepts, e.g. mid-conversation system messages), and only once.
        parsed: list[Any] = []
        build_errors: dict[str, WireError] = {}

        def neutral_request() -> Any:
            if not parsed:
                try:
                    parsed.append(fmt.parse_request(data))
                except WireError as e:
                    parsed.append(e)
            if isinstance(parsed[0], WireError):
                raise parsed[0]
            return parsed[0]

        client_usage: dict[str, bool] = {}
        prompt_cache = d.rule_id is not None and (await self.service.rules())[d.task_type].rule.prompt_cache

        def build(m: ModelSpec) -> httpx.Request:
            try:
                return build_for(m)
            except WireError as e:
                build_errors[m.name] = e
                raise

        def build_for(m: ModelSpec) -> httpx.Request:
            pname, pfmt = self._upstream(m, r.fmt_name)
            if pfmt is fmt:
                body = {**data, "model": m.name}
                if prompt_cache and pfmt is anthropic_format:
                    body = mark_cache_control(body)
                elif pfmt is responses_format:  # reasoning minted from another provider's thinking: not OpenAI's
                    body = responses_format.without_minted_reasoning(body)
                client_usage[m.name] = True
                if stream and fmt is openai_format:
                    client_usage[m.name] = opts.get("include_usage") is True
                    body["stream_options"] = {**opts, "include_usage": True}  # we need usage to record it
                out = json.dumps(body, separators=(",", ":")).encode()
                return self.providers.request(m.provider, m.name, out, stream=stream,  # type: ignore[union-attr]
                                              extra_headers=extra, fmt=pname)
            neutral = neutral_request()
            # non-reasoning models reject the parameter
            req = neutral if "reasoning" in m.capabilities else replace(neutral, reasoning_effort=None)
            client_usage[m.name] = bool(getattr(neutral, "stream_usage", False)) or fmt is not openai_format
            built = pfmt.build_request(req, m.name)
            if prompt_cache and pfmt is anthropic_format:
                built = mark_cache_control(built)
            out = json.dumps(built, separators=(",", ":")).encode()
            return self.providers.request(m.provider, m.name, out, stream=stream, fmt=pname)  # type: ignore[union-attr]

        t_up = time.perf_counter()
        try:
            got = await send_resilient(targets, build, self.providers.send, policy=self.retry_policy,
                                       breaker=self.breaker, key=_deployment, on_attempt=self._on_attempt)
        except WireError as e:
            r.upstream_s = time.perf_counter() - t_up
            # every target failed: a request the client got wrong, or the chosen target's missing key, says
            # so rather than whatever the last fallback said
            bad = parsed[0] if parsed and isinstance(parsed[0], WireError) else None
            await self._error(send, r, bad or build_errors.get(d.model.name) or e, record=True)
            return
        resp = got.response
        if got.target is not d.model:  # a fallback answered: headers, record and cost name the model that did
            r.decision = d = replace(d, model=got.target, reason=f"{d.reason}; fell back to {got.target.name}")
        pfmt = self._upstream(got.target, r.fmt_name)[1]
        usage_wanted = client_usage[got.target.name]
        try:
            if resp.status_code >= 400:
                raw = await _read_all(resp)
                r.upstream_s = time.perf_counter() - t_up
                err = pfmt.parse_error(resp.status_code, raw, resp.headers)
                err.status = resp.status_code  # the client sees the provider's own status code
                await self._error(send, r, err, record=True)
            elif stream:
                await self._stream(scope, receive, send, r, resp, pfmt, t_up, usage_wanted)
            else:
                await self._complete(send, r, resp, pfmt, t_up)
        except WireError as e:  # the provider's answer broke off or stalled before its end
            r.upstream_s = time.perf_counter() - t_up
            await self._error(send, r, e, record=True)
        finally:
            await resp.aclose()

    async def _complete(self, send: Send, r: _Request, resp: httpx.Response, pfmt: ModuleType, t_up: float) -> None:
        raw = await _read_all(resp)
        r.upstream_s = time.perf_counter() - t_up
        r.answer_bytes = len(raw)
        assert r.decision is not None
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
            if pfmt is r.fmt:
                usage, out = pfmt.usage_of(body), raw
                if r.response_text is not None:
                    r.response_text.append(pfmt.parse_response(body).text())
            else:
                parsed = pfmt.parse_response(body)
                usage = parsed.usage
                out = json.dumps(r.fmt.render_response(parsed, r.decision.model.name), separators=(",", ":")).encode()
                if r.response_text is not None:
                    r.response_text.append(parsed.text())
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            await self._error(send, r, WireError(502, "provider_error", f"the provider sent a response that is not "
                                                 f"valid {pfmt.__name__.rsplit('.', 1)[-1]} JSON ({e})"), record=True)
            return
        self._record(r, usage, "ok")  # journaled before the answer goes out: a kill after it loses nothing
        await _respond(send, 200, out, JSON_HEADERS + self._prism_headers(r))
        await self._cache_put(r, out, usage)

    async def _cache_stream(self, r: _Request, capture: StreamCapture, usage: Usage) -> None:
        """Store a streamed answer as its end arrives, before the client gets its last bytes; a store that
        fails here costs a cache entry, never the answer already on its way."""
        assert r.decision is not None
        body = capture.body(r.fmt_name, r.decision.model.name)
        if body is not None:
            try:
                await self._cache_put(r, body, usage)
            except Exception:
                log.exception("could not store a streamed answer in the response cache")

    async def _cache_put(self, r: _Request, body: bytes, usage: Usage) -> None:
        """Keep a good answer of a cacheable request (its first, paid-for answer) for the task type's TTL."""
        d = r.decision
        if r.cache_key is None or self.cache is None or d is None or len(body) > self.cache_conf.max_entry_bytes:
            return
        cost = self.service.catalog.cost(d.model.name, usage.tokens(), r.ts).usd  # type: ignore[union-attr]
        await self.cache.put(r.cache_key, d.task_type, r.project, d.model.name, r.fmt_name, body, usage, cost,
                             self.cache_conf.ttl_for(d.task_type))

    async def _stream(self, scope: Scope, receive: Receive, send: Send, r: _Request, resp: httpx.Response,
                      pfmt: ModuleType, t_up: float, client_usage: bool) -> None:
        assert r.decision is not None
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self._prism_headers(r)})
        same = pfmt is r.fmt
        # a passed-through stream needs only its usage read; a translated one is decoded event by event
        state = _PumpState(None, _PassthroughUsage(pfmt)) if same else _PumpState(pfmt.StreamDecoder(), None)
        pump = asyncio.ensure_future(self._pump(send, r, resp, pfmt, state, t_up, client_usage))
        watch = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():  # the client went away: stop reading, which closes the upstream call
                pump.cancel()
                r.upstream_s = time.perf_counter() - t_up
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
                if state.ended:  # the client hung up after the answer's last event (Codex does): a whole answer
                    self._record(r, state.usage(), "ok")
                else:
                    self._record(r, _partial_usage(state.usage(), r), "cancelled", error_type="client_disconnected")
            watch.cancel()
        if pump.done() and not pump.cancelled():
            usage, status, err = pump.result()
            if err is not None:
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": r.fmt.StreamEncoder(
                        r.decision.model.name, client_usage).error(err), "more_body": True})
            self._record(r, usage, status, error_type=err.kind if err else None)  # before the last byte
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send, r: _Request, resp: httpx.Response, pfmt: ModuleType, state: _PumpState,
                    t_up: float, client_usage: bool) -> tuple[Usage, str, WireError | None]:
        """Copy the provider's stream to the client, translating when the formats differ; returns the
        usage seen, the status to record and the error to tell the client (None when it ended well)."""
        assert r.decision is not None
        sse = SSEDecoder()
        same = pfmt is r.fmt
        decoder, tracker = state.decoder, state.tracker
        encoder = None if same else r.fmt.StreamEncoder(r.decision.model.name, client_usage)
        # a cacheable request's streamed answer is rebuilt whole, to be stored once it ends well
        capture = r.capture = StreamCapture(r.fmt_name if same else None) if r.cache_key is not None else None
        ended = False
        try:
            async for chunk in resp.aiter_raw():
                if r.ttft_ms is None:
                    r.ttft_ms = (time.perf_counter() - r.t0) * 1000
                events = sse.feed(chunk)
                r.stream_events += len(events)
                if same:
                    assert tracker is not None
                    kept = []  # the events but a usage-only chunk the client did not ask for
                    for event, data in events:
                        if capture is not None:
                            capture.feed(event, data)
                        if not (tracker.feed(event, data) and not client_usage):
                            kept.append((event, data))
                        if data == "[DONE]" or event in _END_EVENTS:
                            ended = state.ended = True
                    if len(kept) < len(events):  # re-emit without the dropped chunk
                        chunk = b"".join(encode_sse(data, event) for event, data in kept)
                    if r.response_text is not None:
                        r.response_text.extend(tracker.texts(events))
                    out = chunk
                else:
                    assert encoder is not None
                    parts = []
                    for event, data in events:
                        decoded = decoder.feed(event, data)
                        if capture is not None:
                            capture.feed_events(decoded)
                        for ev in decoded:
                            if isinstance(ev, StreamEnd):
                                ended = state.ended = True
                            if r.response_text is not None and isinstance(ev, TextDelta):
                                r.response_text.append(ev.text)
                            parts.append(encoder.encode(ev))
                    out = b"".join(parts)
                if ended and capture is not None:  # cached before the client sees the end: a repeat hits
                    await self._cache_stream(r, capture, state.usage())
                    capture = None
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            rest = sse.flush()  # a last event the provider sent without its closing blank line
            if same:
                assert tracker is not None
                for event, data in rest:
                    tracker.feed(event, data)
                    ended = state.ended = ended or data == "[DONE]" or event in _END_EVENTS
                if ended and capture is not None:
                    for event, data in rest:
                        capture.feed(event, data)
                    await self._cache_stream(r, capture, state.usage())
                if rest:
                    await send({"type": "http.response.body", "body": b"".join(encode_sse(d, e) for e, d in rest),
                                "more_body": True})
            elif rest:
                assert encoder is not None
                tail = []
                for event, data in rest:
                    decoded = decoder.feed(event, data)
                    if capture is not None:
                        capture.feed_events(decoded)
                    for ev in decoded:
                        ended = state.ended = ended or isinstance(ev, StreamEnd)
                        tail.append(encoder.encode(ev))
                if ended and capture is not None:
                    await self._cache_stream(r, capture, state.usage())
                if tail:
                    await send({"type": "http.response.body", "body": b"".join(tail), "more_body": True})
        except WireError as e:  # an error event inside the provider's stream
            r.upstream_s = time.perf_counter() - t_up
            return state.usage(), _status_of(e), e
        except httpx.TimeoutException:
            r.upstream_s = time.perf_counter() - t_up
            return state.usage(), "timeout", WireError(504, "timeout", "the provider's stream stalled (timed out)")
        except httpx.HTTPError:
            r.upstream_s = time.perf_counter() - t_up
            return state.usage(), "provider_error", WireError(502, "provider_error",
                                                              "the provider's stream broke off before it ended")
        r.upstream_s = time.perf_counter() - t_up
        if not ended:
            return state.usage(), "provider_error", WireError(502, "provider_error",
                                                              "the provider's stream ended without finishing")
        return state.usage(), "ok", None

    def _on_attempt(self, a: Attempt[ModelSpec]) -> None:
        if a.kind != "first":
            self.metrics.retries.labels(a.target.provider, a.target.name, a.kind).inc()

    # ---------------------------------------------------------------- responses and recording
    def _prism_headers(self, r: _Request) -> list[tuple[bytes, bytes]]:
        d = r.decision
        assert d is not None
        out = [(b"x-prism-model", d.model.name.encode()), (b"x-prism-request-id", r.id.encode())]
        if d.task_type:  # known now when routing used it; a named model's request is classified later
            out.append((b"x-prism-task", d.task_type.encode()))
        if d.rule_id is not None:
            out.append((b"x-prism-rule", f"{d.rule_id}@v{d.rule_version}".encode()))
        return out

    async def _error(self, send: Send, r: _Request, err: WireError, *, record: bool = False) -> None:
        headers = list(JSON_HEADERS)
        if err.retry_after is not None:
            headers.append((b"retry-after", str(max(0, round(err.retry_after))).encode()))
        if r.decision is not None:
            headers += self._prism_headers(r)
        else:  # refused before routing, and recorded under this id all the same
            headers.append((b"x-prism-request-id", r.id.encode()))
        if record and r.decision is not None:
            self._record(r, Usage(), _status_of(err), error_type=err.kind)
        await _respond(send, err.status, json.dumps(r.fmt.render_error(err)).encode(), headers)

    def _record(self, r: _Request, usage: Usage, status: str, *, error_type: str | None = None,
                saved_usd: Decimal | None = None) -> None:
        d = r.decision
        assert d is not None and self.recorder is not None
        if usage.invalid:  # the provider's counts are not trusted: the request's size stands in, and says so
            usage, status, error_type = _estimated_usage(r), "invalid_usage", error_type or "invalid_usage"
            log.warning("%s sent a malformed usage block for request %s: recorded with estimated tokens",
                        d.model.provider, r.id)
        latency = (time.perf_counter() - r.t0) * 1000
        ttft = min(r.ttft_ms, latency) if r.ttft_ms is not None else None
        tokens = usage.tokens()
        cost = None
        # priced now to settle the budget (the recorder reuses it), or because the catalog does not list the
        # model (discovered on first use: the recorder prices listed models only)
        if r.reservation is not None or d.model.discovered:
            cost = self.service.catalog.cost(d.model.name, tokens, r.ts)  # type: ignore[union-attr]
            r.actual_pico = to_picodollars(cost.usd) if cost.usd is not None else 0
            r.actual_tokens = tokens.input_tokens + tokens.output_tokens
        if r.reservation is not None and self.enforcer is not None:
            self.enforcer.finish(r.reservation, r.actual_pico)  # its estimate is free for the next request now
        self.recorder.record(Outcome(
            id=r.id, ts=r.ts, task_type=d.task_type, model=d.model.name, provider=d.model.provider, tokens=tokens,
            status=status, latency_ms=latency, upstream_ms=r.upstream_s * 1000,
            route="passthrough" if self._upstream(d.model, r.fmt_name)[1] is r.fmt else "translated",
            ttft_ms=ttft, error_type=error_type, rule_id=d.rule_id, rule_version=d.rule_version,
            user=r.user, team=r.team, project=r.project,
            prompt=r.prompt, text=r.text if not d.task_type else None,
            response="".join(r.response_text) if r.response_text is not None else None, api_key_id=r.key_id,
            cache_hit=r.cache_hit, saved_usd=saved_usd, cost=cost, reservation=r.reservation,
            actual_pico=r.actual_pico, actual_tokens=r.actual_tokens,
            router=(d.router_version, d.router_score) if d.router_score is not None else None,  # type: ignore[arg-type]
        ))
        r.reservation = None  # the recorder settles it with the record, in one transaction

    async def _refuse(self, send: Send, r: _Request, err: WireError, data: Any = None, text: str = "") -> None:
        """Answer a request refused before it was routed, and record it with its status and whatever labels
        are known, so every request is counted. Bounded: at most REFUSED_PER_SECOND records a second (a
        flood of bad requests cannot fill the store), names cut to LABEL_CHARS, no prompt kept."""
        await self._error(send, r, err)
        now = int(time.monotonic())
        if now != self._refused_second:
            self._refused_second, self._refused_count = now, 0
        self._refused_count += 1
        if self._refused_count > REFUSED_PER_SECOND or self.recorder is None or self.service is None:
            return
        requested = data.get("model") if isinstance(data, dict) else None
        model = requested.strip()[:LABEL_CHARS] if isinstance(requested, str) and requested.strip() else "(none)"
        known = self.service.catalog.models.get(self.service.catalog.aliases.get(model, model))
        hint = r.header(b"x-prism-task")
        task = hint.strip() if hint and hint.strip() in self.service.task_types else ""
        self.recorder.record(Outcome(
            id=r.id, ts=r.ts, task_type=task, model=model, provider=known.provider if known else "(gateway)",
            tokens=Usage().tokens(), status=_status_of(err), latency_ms=(time.perf_counter() - r.t0) * 1000,
            upstream_ms=0.0, route="refused", error_type=err.kind, user=_cut(r.user), team=_cut(r.team),
            project=_cut(r.project), text=text[:CLASSIFY_CHARS], api_key_id=r.key_id))

    def _budget_level(self, b: Budget, remaining: int | None) -> None:
        if remaining is not None:
            self.metrics.budget_remaining.labels(b.scope, b.subject, b.period).set(remaining / 1e12)

    def _budget_rejected(self, b: Budget, reason: str) -> None:
        self.metrics.budget_rejections.labels(b.scope, b.subject, b.period, reason).inc()


# ---------------------------------------------------------------- stream helpers
@dataclass(slots=True)
class _PumpState:
    """Where a relayed stream's usage is read from: the pass-through tracker, or the translating decoder."""

    decoder: Any
    tracker: _PassthroughUsage | None
    ended: bool = False  # the provider's stream reached its last event

    def usage(self) -> Usage:
        if self.tracker is not None:
            return self.tracker.usage
        return self.decoder.usage



def _partial_usage(seen: Usage, r: _Request) -> Usage:
    """Usage of a stream the client left: what the provider reported so far (Anthropic sends input tokens
    at the start), with what it had not reported yet estimated — the prompt at ~4 bytes a token, the
    answer at about one token per streamed event — because the provider bills what it generated."""
    if seen.output_tokens and seen.input_tokens:
        return seen
    return Usage(input_tokens=seen.input_tokens or r.body_bytes // 4,
                 output_tokens=seen.output_tokens or max(r.stream_events - 1, 0),
                 cached_input_tokens=seen.cached_input_tokens, cache_write_tokens=seen.cache_write_tokens,
                 reasoning_tokens=seen.reasoning_tokens, cache_write_1h_tokens=seen.cache_write_1h_tokens)


def _estimated_usage(r: _Request) -> Usage:
    """Tokens of a request whose usage block was malformed: the prompt at ~4 bytes a token, the answer
    at one token per streamed event or ~4 bytes a token of the body relayed."""
    return Usage(input_tokens=r.body_bytes // 4, output_tokens=max(r.stream_events - 1, 0) or r.answer_bytes // 4)


def _may_carry_usage(data: str) -> bool:
    """Cheap test before parsing an OpenAI chunk: with include_usage every chunk says `"usage":null`
    but the last (compact JSON from OpenAI, `"usage": null` from some compatible servers)."""
    return '"usage"' in data and '"usage":null' not in data and '"usage": null' not in data


class _PassthroughUsage:
    """Usage (and, when capturing, text) from a stream passed through untouched: parses only the events
    that carry usage, so the pass-through path stays cheap."""

    def __init__(self, fmt: ModuleType) -> None:
        self.fmt = fmt
        self.usage = Usage()
        self._anthropic: dict[str, Any] = {}

    def feed(self, event: str | None, data: str) -> bool:
        """Take usage from this event; True when it is an OpenAI usage-only chunk."""
        if self.fmt is responses_format:  # usage rides on the terminal event's response object
            if event in responses_format.TERMINAL_EVENTS:
                with contextlib.suppress(ValueError, AttributeError, RecursionError):
                    self.usage = responses_format.usage_of(json.loads(data).get("response") or {})
            return False
        if self.fmt is anthropic_format:
            if event == "message_start" or event == "message_delta":
                try:
                    obj = json.loads(data)
                except (ValueError, RecursionError):
                    return False
                u = (obj.get("message") or {}).get("usage") if event == "message_start" else obj.get("usage")
                if isinstance(u, dict):
                    self._anthropic.update({k: v for k, v in u.items() if v is not None})  # checked by usage_of
                    self.usage = anthropic_format.usage_of({"usage": self._anthropic})
            return False
        if not _may_carry_usage(data):
            return False
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return False
        if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
            self.usage = openai_format.usage_of(obj)
            return not obj.get("choices")
        return False

    def texts(self, events: list[tuple[str | None, str]]) -> list[str]:
        out = []
        for event, data in events:
            try:
                obj = json.loads(data)
            except (ValueError, RecursionError):
                continue
            if self.fmt is responses_format:
                if event == "response.output_text.delta" and isinstance(obj.get("delta"), str):
                    out.append(obj["delta"])
            elif self.fmt is anthropic_format:
                delta = obj.get("delta") if event == "content_block_delta" else None
                if isinstance(delta, dict) and isinstance(delta.get("text"), str):
                    out.append(delta["text"])
            elif isinstance(obj, dict):
                for choice in obj.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if isinstance(content, str):
                        out.append(content)
        return out


def _cut(label: str | None) -> str | None:
    return label[:LABEL_CHARS] if label else None  # unset before auth: an unauthenticated caller has none


def _deployment(m: ModelSpec) -> tuple[str, str]:
    return (m.provider, m.name)


async def _read_all(resp: httpx.Response) -> bytes:
    try:
        return await resp.aread()
    except httpx.TimeoutException:
        raise WireError(504, "timeout", "the provider stopped sending its answer (timed out)") from None
    except httpx.HTTPError as e:
        raise WireError(502, "provider_error", f"the provider's answer broke off: {e}") from None


async def _disconnected(receive: Receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


# ---------------------------------------------------------------- ASGI helpers
class _TooLarge(Exception):
    pass


TOO_DEEP = ("the request body is nested too deeply (arrays or objects inside each other hundreds of levels "
            "deep): no API request needs that; send the messages flat, as the API documents them")


class _TooDeep(ValueError):
    pass


def _loads(body: bytes) -> Any:
    """The JSON of a request body; ValueError (never RecursionError) for one nested too deeply to parse."""
    try:
        return json.loads(body)
    except RecursionError:
        raise _TooDeep(TOO_DEEP) from None


def _bad_json(e: Exception) -> str:
    return str(e) if isinstance(e, _TooDeep) else f"the request body is not valid JSON: {e}"


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _read_body(receive: Receive) -> bytes:
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


async def _read_request(receive: Receive, conversation: str = "messages") -> tuple[bytes, Any, WireError | None]:
    """(body, parsed JSON, the client's error or None): one reading of a chat-shaped request for every endpoint.
    The JSON is None when it could not be parsed; the body is empty when it was too large to read."""
    try:
        body = await _read_body(receive)
    except _TooLarge:
        return b"", None, WireError(413, "request_too_large", f"request body over {MAX_BODY} bytes")
    try:
        data = _loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        return body, None, WireError(400, "invalid_request", _bad_json(e))
    problem = _shape_problem(data, conversation)
    return body, data, WireError(400, "invalid_request", problem) if problem else None


def _shape_problem(data: Any, conversation: str = "messages") -> str | None:
    if not isinstance(data, dict):
        return "the request body must be a JSON object"
    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        return ("`model` is required: a model name, an alias, `auto` (route by the task), or "
                f"`{TASK_PREFIX}<task_type>`")
    messages = data.get(conversation)
    if conversation == "input" and isinstance(messages, str) and messages:
        return None
    if not isinstance(messages, list) or not messages:
        return (f"`{conversation}` must be a non-empty list of messages" if conversation == "messages" else
                "`input` must be a string or a non-empty list of input items")
    return None


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, obj: Any) -> None:
    await _respond(send, status, json.dumps(obj).encode(), JSON_HEADERS)



async def _error_for(scope: Scope, send: Send, err: WireError) -> None:
    """An error in the format of the API the path belongs to: Anthropic's under /v1/messages (and for
    clients that say `anthropic-version`), OpenAI's elsewhere."""
    path = scope.get("path", "")
    anthropic = path.startswith("/v1/messages") or (not path.startswith(("/v1/chat", "/chat"))
                                                    and any(k == b"anthropic-version" for k, _ in scope["headers"]))
    fmt = anthropic_format if anthropic else openai_format
    await _respond(send, err.status, json.dumps(fmt.render_error(err)).encode(), JSON_HEADERS)


_LOCAL_HOSTS: set[bytes] = set()  # Host values seen to be loopback names (bounded below)


def _cross_site(headers: dict[bytes, bytes]) -> str | None:
    """Why an open (no-key) gateway refuses this request, or None. Open mode binds only to loopback, so a
    Host that is not a loopback name is a DNS-rebinding page, and an Origin of another site is a web page
    posting across sites: either could spend the provider keys (the MCP HTTP server checks the same)."""
    host = headers.get(b"host")
    if host is not None and host not in _LOCAL_HOSTS:  # the usual Host answers from a set, without parsing
        name = urlsplit("//" + host.decode("latin-1")).hostname or ""
        if not is_loopback(name):
            return (f"Host {host.decode('latin-1')!r} is not this machine: a gateway without keys (--no-auth) "
                    "answers only requests addressed to 127.0.0.1, localhost or [::1] (DNS-rebinding guard); "
                    "to serve other names, run it with virtual keys (mcp-prism keys create --team T)")
        if len(_LOCAL_HOSTS) < 64:  # a handful of host:port spellings in practice
            _LOCAL_HOSTS.add(host)
    origin = headers.get(b"origin")
    if origin is not None:
        o = urlsplit(origin.decode("latin-1"))
        if o.scheme not in ("http", "https") or not is_loopback(o.hostname or ""):
            return (f"requests from web pages (Origin {origin.decode('latin-1')!r}) are refused by a gateway "
                    "without keys (--no-auth): any site you visit could spend your provider keys; call it from "
                    "a local client, or run it with virtual keys")
    return None
