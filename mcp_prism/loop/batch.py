"""Batch: non-urgent requests sent through the providers' batch APIs, answered later at the batch price.

Flow: `enqueue` stores one request (in the provider's format) as `queued` and returns its id; `submit_pending`
claims the queued requests, groups them per provider and model and creates one provider batch per group (OpenAI:
upload a JSONL file, then create the batch; Anthropic: one Message Batches call); `poll` asks every open provider
batch whether it has ended, downloads its results, stores each answer in the CLIENT's format (translated through
`providers.wire` when the formats differ) and records one usage event per answered request (`batch=True`, the
batch price, source "gateway", request_id = the batch request id). `get`, `list` and `cancel` serve clients;
`run_batch_loop` is the gateway's background task.

Safe to repeat and to run in several processes: a claim (status `submitting`, in one transaction) keeps two
submitters from sending the same request twice; `poll` records usage first (deduplicated on request_id) and then
settles the rows with `WHERE status = 'submitted'`, so a crash between the two, or two pollers, never records a
request twice. A claim older than `STALE_CLAIM` (a submitter that died mid-way) is taken over; if that
submitter had already created its provider batch, those requests are sent twice (the first answers are then
never fetched, and are not recorded).

Batch APIs exist here for OpenAI and Anthropic. Gemini's Batch Mode is not implemented: `enqueue` refuses a model on
any other provider with a clear error, and `supports(model)` lets the gateway decide before it answers 202 (a
request that asked for batch by header gets the error; a task type configured as batch is served normally).

Config (`config.toml`): `[batch] task_types = ["doc_generation", ...]` (always batched) and `interval_seconds`
(the gateway loop's period, default 60).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

import aiosqlite
import httpx
from pydantic import BaseModel, Field

from mcp_prism import render
from mcp_prism.core.catalog import ModelSpec
from mcp_prism.core.config_schema import checked
from mcp_prism.core.report import money
from mcp_prism.core.usage import UsageEvent, iso, utcnow
from mcp_prism.errors import ConfigError, InvalidInput, PrismError, UnknownName
from mcp_prism.providers.client import ANTHROPIC_VERSION, ProviderClient
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.providers.formats import last_user_text
from mcp_prism.providers.formats import openai as openai_format
from mcp_prism.providers.registry import FORMATS
from mcp_prism.providers.wire import ChatResponse, WireError
from mcp_prism.service import PrismService, UsageInput

log = logging.getLogger(__name__)

CLIENT_FORMATS = ("openai", "anthropic")  # the gateway's client-facing formats
BATCH_APIS = ("openai", "anthropic")  # providers (by name) whose batch API is implemented
ID_PREFIX = "batch_req_"
STATUSES = ("queued", "submitting", "submitted", "completed", "failed", "expired", "cancelled")
OPENAI_ENDPOINT = "/v1/chat/completions"
# Per provider batch: OpenAI takes 50,000 requests / 200 MB per file, Anthropic 100,000 requests / 256 MB.
MAX_REQUESTS = {"openai": 50_000, "anthropic": 100_000}
MAX_BYTES = {"openai": 190_000_000, "anthropic": 250_000_000}
STALE_CLAIM = timedelta(minutes=10)
DEFAULT_INTERVAL = 60.0
TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=120.0, pool=10.0).as_dict()
OPENAI_RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
# Failed submissions worth retrying on the next tick (the provider or our credentials, not the requests).
TRANSIENT = frozenset({401, 403, 408, 409, 429})
EVENT_STATUS = {"rate_limited": "rate_limited", "timeout": "timeout", "invalid_request": "invalid_request",
                "authentication": "invalid_request", "permission": "invalid_request",
                "not_found": "invalid_request", "request_too_large": "invalid_request"}
PROMPT_CHARS = 4000


# ==================================================================== results
class BatchRequestInfo(BaseModel):
    id: str = Field(description="the batch request id (batch_req_...); fetch the answer with it")
    status: Literal["queued", "submitting", "submitted", "completed", "failed", "expired", "cancelled"]
    task_type: str
    model: str
    provider: str
    client_format: str = Field(description="openai|anthropic: the shape of `result` and `error`")
    provider_batch_id: str | None = None
    created_at: str
    submitted_at: str | None = None
    completed_at: str | None = None
    result: dict[str, Any] | None = Field(default=None, description="the answer in the client's format, once completed")
    error: dict[str, Any] | None = Field(default=None, description="the error in the client's format, when failed")
    error_message: str | None = None
    cost_usd: Decimal | None = Field(default=None, description="recorded cost at the batch price (null until "
                                                               "answered, or when the model is unpriced)")


class BatchList(BaseModel):
    requests: list[BatchRequestInfo]
    counts: dict[str, int] = Field(description="requests per status (all of them, not only those listed)")


class ProviderBatch(BaseModel):
    provider: str
    model: str
    provider_batch_id: str
    requests: int


class SubmitResult(BaseModel):
    submitted: int = Field(description="requests sent to a provider batch API")
    batches: list[ProviderBatch]
    failed: int = Field(description="requests the provider refused (marked failed)")
    requeued: int = Field(description="requests left queued after a transient failure, retried next time")
    errors: list[str]


class PollResult(BaseModel):
    checked: int = Field(description="provider batches asked")
    still_running: int
    completed: int = Field(description="requests answered")
    failed: int
    expired: int
    cancelled: int
    events_recorded: int
    cost_usd: Decimal = Field(description="cost recorded by this poll, at the batch price")
    errors: list[str]


# ==================================================================== helpers
@dataclass(slots=True)
class _Outcome:
    """One request's fate in a finished provider batch."""

    kind: Literal["ok", "error", "cancelled", "expired"]
    body: dict[str, Any] | None = None  # the provider's answer (kind ok)
    error: WireError | None = None


def new_request_id() -> str:
    return ID_PREFIX + secrets.token_hex(12)


def _status_of(err: WireError) -> str:
    return EVENT_STATUS.get(err.kind, "provider_error")


def _json_obj(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"message": text}
    return value if isinstance(value, dict) else {"value": value}


def _error_message(error: dict[str, Any] | None) -> str | None:
    if error is None:
        return None
    inner = error.get("error")
    if isinstance(inner, dict) and isinstance(inner.get("message"), str):
        return inner["message"]
    return str(error.get("message") or error)


def batch_settings(user_config: Mapping[str, Any], task_types: Collection[str]) -> tuple[frozenset[str], float]:
    """`[batch] task_types, interval_seconds` (typed by the config schema), checked against the known task types."""
    config = checked(user_config).get("batch") or {}
    types = config.get("task_types", [])
    unknown = sorted(set(types) - set(task_types))
    if unknown:
        raise ConfigError(f"batch.task_types names unknown task types {unknown}; known: "
                          f"{', '.join(sorted(task_types))}")
    return frozenset(types), float(config.get("interval_seconds", DEFAULT_INTERVAL))


# ==================================================================== the service
class BatchService:
    def __init__(self, svc: PrismService, providers: ProviderClient | None = None) -> None:
        self.svc = svc
        self._providers = providers  # the gateway passes its own client; otherwise the service's
        self.task_types, self.interval = batch_settings(svc.settings.user_config if svc.settings else {},
                                                        svc.task_types)

    @property
    def providers(self) -> ProviderClient:
        return self._providers or self.svc.providers()

    # ---------------------------------------------------------------- decisions for the gateway
    @staticmethod
    def header_asks(header: str | None) -> bool:
        """True for an `X-Prism-Batch` header that asks for batch (`1` or `true`, the documented values);
        raise InvalidInput for a value that is neither those nor `0`/`false` (never guess: "yes", "on")."""
        if header is None:
            return False
        value = header.strip().lower()
        if value in ("1", "true"):
            return True
        if value in ("0", "false", ""):
            return False
        raise InvalidInput(f"X-Prism-Batch must be 1 or true to queue the request for the batch API "
                           f"(0, false or no header to answer it now), not {header[:40]!r}")

    def wants_batch(self, task_type: str | None, header: str | None = None) -> bool:
        """True when the request asked for batch (`X-Prism-Batch: 1`) or its task type is configured as batch."""
        return self.header_asks(header) or (bool(task_type) and task_type in self.task_types)

    def supports(self, model: str | ModelSpec) -> bool:
        spec = model if isinstance(model, ModelSpec) else self.svc.catalog.resolve(model)
        return spec.provider in BATCH_APIS and spec.api != "responses"  # the queue sends Chat Completions

    def _check(self, spec: ModelSpec) -> None:
        if spec.api == "responses":
            raise InvalidInput(f"{spec.name} accepts only the Responses API, which the batch queue does not send: "
                               "send the request without X-Prism-Batch, or name another model")
        if not self.supports(spec):
            raise InvalidInput(f"{spec.name} is served by {spec.provider}, whose batch API mcp_prism does not "
                               f"support (only {' and '.join(BATCH_APIS)}): send the request without "
                               "X-Prism-Batch, or name a model of a supported provider")

    # ---------------------------------------------------------------- enqueue
    async def enqueue(self, body: Mapping[str, Any] | bytes | str, *, model: str, task_type: str,
                      client_format: str, api_key_id: str | None = None, team: str | None = None,
                      user: str | None = None, project: str | None = None) -> str:
        """Queue one request whose `body` is already in the provider's format; returns its id. A batch
        answer is fetched later as JSON, so `stream` and `stream_options` are dropped."""
        if task_type not in self.svc.task_types:
            raise UnknownName("task type", task_type, list(self.svc.task_types))
        if client_format not in CLIENT_FORMATS:
            raise InvalidInput(f"client_format must be one of {', '.join(CLIENT_FORMATS)}, not {client_format!r}")
        spec = self.svc.catalog.resolve(model)
        self._check(spec)
        if isinstance(body, bytes | str):
            try:
                body = json.loads(body)
            except ValueError as e:
                raise InvalidInput(f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise InvalidInput("a batch request body must be a JSON object with a non-empty `messages` list")
        data = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        data["model"] = spec.name
        rid = new_request_id()
        row = (rid, task_type, spec.name, spec.provider, client_format, json.dumps(data, separators=(",", ":")),
               "queued", api_key_id, team, user, project, iso(utcnow()))

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.execute(
                "INSERT INTO batch_requests (id, task_type, model, provider, client_format, body, status, api_key_id, "
                "team, user, project, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

        await self.svc.store.transaction(work)
        return rid

    async def enqueue_client(self, body: Mapping[str, Any], *, client_format: str, model: str, task_type: str,
                             **who: str | None) -> str:
        """Queue a request given in the CLIENT's format: translated to the provider's format when they differ
        (as the gateway forwards a request), then `enqueue`d. `who`: api_key_id, team, user, project."""
        if client_format not in CLIENT_FORMATS:
            raise InvalidInput(f"client_format must be one of {', '.join(CLIENT_FORMATS)}, not {client_format!r}")
        spec = self.svc.catalog.resolve(model)
        self._check(spec)
        pformat = self.svc.catalog.providers[spec.provider].format
        if pformat == client_format:
            data: Mapping[str, Any] = body
        else:
            try:
                neutral = FORMATS[client_format].parse_request(dict(body))
            except WireError as e:
                raise InvalidInput(e.message) from None
            if "reasoning" not in spec.capabilities:  # non-reasoning models reject the parameter
                neutral.reasoning_effort = None
            neutral.stream = False
            data = FORMATS[pformat].build_request(neutral, spec.name)
        return await self.enqueue(data, model=spec.name, task_type=task_type, client_format=client_format, **who)

    # ---------------------------------------------------------------- reading
    async def get(self, request_id: str, *, api_key_id: str | None = None) -> BatchRequestInfo:
        """One request's status and, once completed, its answer. With `api_key_id`, a request queued under
        another key is reported as unknown (ids are not shared between keys)."""
        rows = await self.svc.store.fetch("SELECT * FROM batch_requests WHERE id = ?", (request_id.strip(),))
        if not rows or (api_key_id is not None and rows[0]["api_key_id"] not in (None, api_key_id)):
            raise InvalidInput(f"no batch request has id {request_id!r}: use the id the gateway answered with "
                               "(batch_req_...), or `mcp-prism batch list`")
        cost = await self.svc.store.fetch("SELECT cost_usd FROM usage_events WHERE batch = 1 AND request_id = ?",
                                          (rows[0]["id"],))
        return self._info(rows[0], cost[0]["cost_usd"] if cost else None, full=True)

    async def list_requests(self, status: str | None = None, limit: int = 100) -> BatchList:
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be from 1 to 10000")
        where, params = ("WHERE b.status = ?", [status]) if status else ("", [])
        rows = await self.svc.store.fetch(
            "SELECT b.*, (SELECT e.cost_usd FROM usage_events e WHERE e.batch = 1 AND e.request_id = b.id) AS cost "
            f"FROM batch_requests b {where} ORDER BY b.created_at DESC, b.id DESC LIMIT ?", (*params, limit))
        counts = await self.svc.store.fetch("SELECT status, COUNT(*) AS n FROM batch_requests GROUP BY status")
        return BatchList(requests=[self._info(r, r["cost"], full=False) for r in rows],
                         counts={r["status"]: r["n"] for r in counts})

    @staticmethod
    def _info(row: sqlite3.Row, cost: str | None, *, full: bool) -> BatchRequestInfo:
        error = _json_obj(row["error"])
        return BatchRequestInfo(
            id=row["id"], status=row["status"], task_type=row["task_type"], model=row["model"],
            provider=row["provider"], client_format=row["client_format"], provider_batch_id=row["provider_batch_id"],
            created_at=row["created_at"], submitted_at=row["submitted_at"], completed_at=row["completed_at"],
            result=_json_obj(row["result"]) if full else None, error=error if full else None,
            error_message=_error_message(error), cost_usd=Decimal(cost) if cost is not None else None)

    # ---------------------------------------------------------------- provider HTTP
    def _api(self, provider: str) -> tuple[str, dict[str, str]]:
        ep = self.providers.endpoints[provider]
        spec = ep.provider
        if spec.api_key_env and not ep.key:
            raise WireError(401, "authentication", f"no API key for {provider}: set {spec.api_key_env} in the "
                            "environment of the process that submits batches")
        if not spec.base_url:
            raise WireError(500, "provider_error", f"provider {provider} has no base_url: set "
                            f"providers.{provider}.base_url in the config file")
        headers: dict[str, str] = {}
        if spec.format == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
            if ep.key:
                headers["x-api-key"] = ep.key
        elif ep.key:
            headers["authorization"] = f"Bearer {ep.key}"
        return spec.base_url.rstrip("/"), headers

    async def _call(self, provider: str, method: str, url: str, headers: dict[str, str], *,
                    payload: Any = None, files: Any = None, data: Any = None) -> bytes:
        kw: dict[str, Any] = {"files": files, "data": data} if files is not None else {}
        if payload is not None:
            kw["content"] = json.dumps(payload, separators=(",", ":")).encode()
            headers = {**headers, "content-type": "application/json"}
        request = httpx.Request(method, url, headers=headers, extensions={"timeout": TIMEOUT}, **kw)
        response = await self.providers.send(request)
        try:
            raw = await response.aread()
        except httpx.TimeoutException:
            raise WireError(504, "timeout", f"{provider} stopped sending its answer (timed out)") from None
        except httpx.HTTPError as e:
            raise WireError(502, "provider_error", f"{provider}'s answer broke off: {e}") from None
        finally:
            await response.aclose()
        if response.status_code >= 400:
            pformat = self.providers.endpoints[provider].provider.format
            raise FORMATS[pformat].parse_error(response.status_code, raw, response.headers)
        return raw

    async def _call_json(self, provider: str, method: str, url: str, headers: dict[str, str],
                         **kw: Any) -> dict[str, Any]:
        raw = await self._call(provider, method, url, headers, **kw)
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise WireError(502, "provider_error", f"{provider} answered {method} {url} with something that is not "
                            "a JSON object")
        return value

    # ---------------------------------------------------------------- submit
    async def submit_pending(self, limit: int | None = None) -> SubmitResult:
        """Send every queued request (up to `limit`) to its provider's batch API, one provider batch per
        provider and model (split further at the providers' size limits)."""
        rows = await self._claim(limit)
        groups: dict[tuple[str, str], list[sqlite3.Row]] = {}
        for r in rows:
            groups.setdefault((r["provider"], r["model"]), []).append(r)
        result = SubmitResult(submitted=0, batches=[], failed=0, requeued=0, errors=[])
        for (provider, model), group in groups.items():
            for chunk in self._chunks(provider, group):
                ids = [r["id"] for r in chunk]
                try:
                    batch_id = await (self._submit_openai(chunk) if self._dialect(provider) == "openai"
                                      else self._submit_anthropic(chunk))
                except WireError as e:
                    msg = f"{provider} batch of {len(chunk)} request(s) for {model}: {e}"
                    result.errors.append(msg)
                    if e.status >= 500 or e.status in TRANSIENT:
                        log.warning("batch submission will be retried: %s", msg)
                        await self._release(ids)
                        result.requeued += len(ids)
                    else:
                        await self._fail(chunk, e)
                        result.failed += len(ids)
                    continue
                await self._mark_submitted(ids, batch_id)
                result.submitted += len(ids)
                result.batches.append(ProviderBatch(provider=provider, model=model, provider_batch_id=batch_id,
                                                    requests=len(ids)))
        return result

    def _dialect(self, provider: str) -> str:
        return "anthropic" if self.svc.catalog.providers[provider].format == "anthropic" else "openai"

    def _chunks(self, provider: str, rows: list[sqlite3.Row]) -> list[list[sqlite3.Row]]:
        dialect = self._dialect(provider)
        out: list[list[sqlite3.Row]] = [[]]
        size = 0
        for r in rows:
            n = len(r["body"]) + 200
            if out[-1] and (len(out[-1]) >= MAX_REQUESTS[dialect] or size + n > MAX_BYTES[dialect]):
                out.append([])
                size = 0
            out[-1].append(r)
            size += n
        return [c for c in out if c]

    async def _claim(self, limit: int | None) -> list[sqlite3.Row]:
        now = utcnow()
        stale = iso(now - STALE_CLAIM)

        async def work(conn: aiosqlite.Connection) -> list[sqlite3.Row]:
            cur = await conn.execute(
                "SELECT * FROM batch_requests WHERE status = 'queued' OR (status = 'submitting' AND "
                "submitted_at < ?) ORDER BY created_at, id" + (" LIMIT ?" if limit else ""),
                (stale, limit) if limit else (stale,))
            cur.row_factory = sqlite3.Row
            rows: list[sqlite3.Row] = list(await cur.fetchall())  # type: ignore[arg-type]
            await cur.close()
            # Only a config change can strand a request on a provider without a batch API: fail it, saying why.
            stranded = [r for r in rows if r["provider"] not in BATCH_APIS]
            rows = [r for r in rows if r["provider"] in BATCH_APIS]
            await conn.executemany(
                "UPDATE batch_requests SET status = 'failed', error = ?, completed_at = ? WHERE id = ?",
                [(json.dumps(FORMATS[r["client_format"]].render_error(WireError(
                    400, "invalid_request", f"{r['provider']} has no batch API mcp_prism supports; send the "
                    "request again without X-Prism-Batch"))), iso(now), r["id"]) for r in stranded])
            await conn.executemany("UPDATE batch_requests SET status = 'submitting', submitted_at = ? WHERE id = ?",
                                   [(iso(now), r["id"]) for r in rows])
            return rows

        return await self.svc.store.transaction(work)

    async def _release(self, ids: Sequence[str]) -> None:
        async def work(conn: aiosqlite.Connection) -> None:
            await conn.executemany("UPDATE batch_requests SET status = 'queued', submitted_at = NULL "
                                   "WHERE id = ? AND status = 'submitting'", [(i,) for i in ids])

        await self.svc.store.transaction(work)

    async def _fail(self, rows: Sequence[sqlite3.Row], err: WireError) -> None:
        now = iso(utcnow())

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "UPDATE batch_requests SET status = 'failed', error = ?, completed_at = ? "
                "WHERE id = ? AND status = 'submitting'",
                [(json.dumps(FORMATS[r["client_format"]].render_error(err)), now, r["id"]) for r in rows])

        await self.svc.store.transaction(work)

    async def _mark_submitted(self, ids: Sequence[str], batch_id: str) -> None:
        now = iso(utcnow())

        async def work(conn: aiosqlite.Connection) -> None:
            # A request cancelled while it was being sent stays cancelled, but keeps the batch id: its answer
            # is still paid for and recorded when the batch ends.
            await conn.executemany(
                "UPDATE batch_requests SET provider_batch_id = ?, submitted_at = ?, "
                "status = CASE WHEN status = 'submitting' THEN 'submitted' ELSE status END WHERE id = ?",
                [(batch_id, now, i) for i in ids])

        await self.svc.store.transaction(work)

    async def _submit_openai(self, rows: Sequence[sqlite3.Row]) -> str:
        provider = rows[0]["provider"]
        base, headers = self._api(provider)
        lines = [json.dumps({"custom_id": r["id"], "method": "POST", "url": OPENAI_ENDPOINT,
                             "body": json.loads(r["body"])}, separators=(",", ":")) for r in rows]
        data = ("\n".join(lines) + "\n").encode()
        uploaded = await self._call_json(provider, "POST", f"{base}/files", headers,
                                         files={"file": ("prism-batch.jsonl", data, "application/jsonl")},
                                         data={"purpose": "batch"})
        if not isinstance(uploaded.get("id"), str):
            raise WireError(502, "provider_error", f"{provider} accepted the batch file but sent no file id")
        batch = await self._call_json(provider, "POST", f"{base}/batches", headers, payload={
            "input_file_id": uploaded["id"], "endpoint": OPENAI_ENDPOINT, "completion_window": "24h",
            "metadata": {"source": "mcp_prism"}})
        if not isinstance(batch.get("id"), str):
            raise WireError(502, "provider_error", f"{provider} created a batch but sent no batch id")
        return batch["id"]

    async def _submit_anthropic(self, rows: Sequence[sqlite3.Row]) -> str:
        provider = rows[0]["provider"]
        base, headers = self._api(provider)
        requests = [{"custom_id": r["id"], "params": json.loads(r["body"])} for r in rows]
        batch = await self._call_json(provider, "POST", f"{base}/messages/batches", headers,
                                      payload={"requests": requests})
        if not isinstance(batch.get("id"), str):
            raise WireError(502, "provider_error", f"{provider} created a message batch but sent no id")
        return batch["id"]

    # ---------------------------------------------------------------- poll
    async def poll(self) -> PollResult:
        """Check every provider batch still open; settle the requests of those that ended."""
        open_batches = await self.svc.store.fetch(
            "SELECT DISTINCT provider, provider_batch_id FROM batch_requests WHERE provider_batch_id IS NOT NULL AND "
            "(status = 'submitted' OR (status = 'cancelled' AND completed_at IS NULL)) ORDER BY provider_batch_id")
        result = PollResult(checked=0, still_running=0, completed=0, failed=0, expired=0, cancelled=0,
                            events_recorded=0, cost_usd=Decimal(0), errors=[])
        for b in open_batches:
            provider, batch_id = b["provider"], b["provider_batch_id"]
            result.checked += 1
            try:
                outcomes = await (self._results_openai(provider, batch_id) if self._dialect(provider) == "openai"
                                  else self._results_anthropic(provider, batch_id))
            except WireError as e:
                result.errors.append(f"{provider} batch {batch_id}: {e}")
                log.warning("could not check %s batch %s (will retry): %s", provider, batch_id, e)
                continue
            if outcomes is None:
                result.still_running += 1
                continue
            await self._settle(batch_id, outcomes, result)
        return result

    async def _results_openai(self, provider: str, batch_id: str) -> _Ended | None:
        base, headers = self._api(provider)
        batch = await self._call_json(provider, "GET", f"{base}/batches/{batch_id}", headers)
        status = batch.get("status")
        if status in OPENAI_RUNNING:
            return None
        outcomes: dict[str, _Outcome] = {}
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            if not isinstance(file_id, str) or not file_id:
                continue
            raw = await self._call(provider, "GET", f"{base}/files/{file_id}/content", headers)
            for item in _result_lines(raw):
                outcomes[item["custom_id"]] = self._openai_line(item)
        # Requests with no line: the batch's own fate decides theirs.
        default: Literal["error", "expired", "cancelled"] = \
            "expired" if status == "expired" else "cancelled" if status == "cancelled" else "error"
        errors = (batch.get("errors") or {}).get("data") if isinstance(batch.get("errors"), dict) else None
        why = "; ".join(str(e.get("message")) for e in errors or [] if isinstance(e, dict)) or \
            f"the {provider} batch ended ({status}) without an answer for this request"
        return _Ended(outcomes, _Outcome(default, error=WireError(502, "provider_error", why)))

    @staticmethod
    def _openai_line(item: dict[str, Any]) -> _Outcome:
        response = item.get("response")
        if isinstance(response, dict):
            status = response.get("status_code")
            body = response.get("body")
            if status == 200 and isinstance(body, dict):
                return _Outcome("ok", body=body)
            if status == 200:
                return _Outcome("error", error=WireError(502, "provider_error", "the provider's batch answer is not "
                                                         "a JSON object"))
            raw = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
            return _Outcome("error", error=openai_format.parse_error(int(status or 500), raw, {}))
        err = item.get("error") if isinstance(item.get("error"), dict) else {}
        code = str(err.get("code") or "")
        if code == "batch_expired":
            return _Outcome("expired")
        if code == "batch_cancelled":
            return _Outcome("cancelled")
        return _Outcome("error", error=WireError(500, "provider_error", str(err.get("message") or
                                                                            "the batch request failed")))

    async def _results_anthropic(self, provider: str, batch_id: str) -> _Ended | None:
        base, headers = self._api(provider)
        batch = await self._call_json(provider, "GET", f"{base}/messages/batches/{batch_id}", headers)
        if batch.get("processing_status") != "ended":
            return None
        url = batch.get("results_url")
        outcomes: dict[str, _Outcome] = {}
        if isinstance(url, str) and url:
            full = httpx.URL(base).join(url)
            # The key goes only to the provider's own host, whatever URL the answer named.
            same_host = full.host == httpx.URL(base).host
            raw = await self._call(provider, "GET", str(full), headers if same_host else {})
            for item in _result_lines(raw):
                outcomes[item["custom_id"]] = self._anthropic_line(item.get("result"))
        why = f"the {provider} message batch ended without a result for this request"
        return _Ended(outcomes, _Outcome("error", error=WireError(502, "provider_error", why)))

    @staticmethod
    def _anthropic_line(result: Any) -> _Outcome:
        kind = result.get("type") if isinstance(result, dict) else None
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            return _Outcome("ok", body=result["message"])
        if kind == "canceled":
            return _Outcome("cancelled")
        if kind == "expired":
            return _Outcome("expired")
        error = result.get("error") if isinstance(result, dict) else None
        # An errored result holds the API's error response; its type gives the status (no HTTP status here).
        return _Outcome("error", error=anthropic_format._error_of(error if isinstance(error, dict) else {}, None))

    async def _settle(self, batch_id: str, ended: _Ended, result: PollResult) -> None:
        rows = await self.svc.store.fetch(
            "SELECT * FROM batch_requests WHERE provider_batch_id = ? AND (status = 'submitted' OR "
            "(status = 'cancelled' AND completed_at IS NULL))", (batch_id,))
        now = utcnow()
        events: list[UsageEvent] = []
        updates: list[tuple[Any, ...]] = []
        for row in rows:
            out = ended.outcomes.get(row["id"], ended.default)
            cancelled_by_client = row["status"] == "cancelled"
            body = json.loads(row["body"])
            status, answer, error = "completed", None, None
            if out.kind == "ok":
                assert out.body is not None
                try:
                    parsed = FORMATS[self.svc.catalog.providers[row["provider"]].format].parse_response(out.body)
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    out = _Outcome("error", error=WireError(502, "provider_error", f"the provider's answer could "
                                                            f"not be read ({e})"))
                else:
                    events.append(self._event(row, parsed, "cancelled" if cancelled_by_client else "ok", body, now))
                    answer = self._render(row, out.body, parsed)
            if out.kind == "error":
                assert out.error is not None
                status = "failed"
                error = json.dumps(FORMATS[row["client_format"]].render_error(out.error))
                events.append(self._event(row, None, _status_of(out.error), body, now))
            elif out.kind in ("expired", "cancelled"):
                status = out.kind
                if out.kind == "expired":
                    err = WireError(504, "timeout", "the provider's batch expired before answering this request; "
                                    "send it again")
                    error = json.dumps(FORMATS[row["client_format"]].render_error(err))
            if cancelled_by_client:
                updates.append(("cancelled", None, None, iso(now), row["id"], "cancelled"))
                continue
            updates.append((status, answer, error, iso(now), row["id"], "submitted"))
            setattr(result, status, getattr(result, status) + 1)
        stored = await self.svc.store.insert_events(events)  # skips request_ids already recorded
        result.events_recorded += len(stored)
        result.cost_usd += sum((e.cost_usd for e in stored if e.cost_usd is not None), Decimal(0))

        async def work(conn: aiosqlite.Connection) -> None:
            await conn.executemany("UPDATE batch_requests SET status = ?, result = ?, error = ?, completed_at = ? "
                                   "WHERE id = ? AND status = ?", updates)

        await self.svc.store.transaction(work)

    def _render(self, row: sqlite3.Row, body: dict[str, Any], parsed: ChatResponse) -> str:
        pformat = self.svc.catalog.providers[row["provider"]].format
        if pformat == row["client_format"]:
            return json.dumps(body, separators=(",", ":"))
        return json.dumps(FORMATS[row["client_format"]].render_response(parsed, row["model"]), separators=(",", ":"))

    def _event(self, row: sqlite3.Row, parsed: ChatResponse | None, status: str, body: dict[str, Any],
               now: Any) -> UsageEvent:
        tokens = parsed.usage if parsed else None
        if tokens is not None and tokens.invalid and status == "ok":  # bad counts were dropped: say so
            status = "invalid_usage"
        u = UsageInput(
            model=row["model"], task_type=row["task_type"], provider=row["provider"],
            input_tokens=tokens.input_tokens if tokens else 0,
            cached_input_tokens=tokens.cached_input_tokens if tokens else 0,
            cache_write_tokens=tokens.cache_write_tokens if tokens else 0,
            output_tokens=tokens.output_tokens if tokens else 0,
            reasoning_tokens=tokens.reasoning_tokens if tokens else 0,
            # Hours of queueing are not model latency: recorded as 0 so latency reports stay about the models
            # (the turnaround is in batch_requests: created_at .. completed_at).
            latency_ms=0.0, status=status, batch=True, user=row["user"], team=row["team"], project=row["project"],
            source="gateway", request_id=row["id"], timestamp=iso(now),
            prompt=last_user_text(body.get("messages"), limit=PROMPT_CHARS) or None,
            response=parsed.text() if parsed else None)
        event = self.svc._usage_event(u)
        event.api_key_id = row["api_key_id"]
        return event

    # ---------------------------------------------------------------- cancel
    async def cancel(self, request_id: str, *, api_key_id: str | None = None) -> BatchRequestInfo:
        """Cancel one request. Queued: it is never sent. Already sent: it is marked cancelled and its answer is
        discarded (but recorded, since the provider bills it); the provider batch itself is cancelled once none
        of its requests is still wanted."""
        info = await self.get(request_id, api_key_id=api_key_id)
        if info.status not in ("queued", "submitting", "submitted"):
            raise InvalidInput(f"batch request {info.id} is already {info.status}: there is nothing to cancel")
        now = iso(utcnow())

        async def work(conn: aiosqlite.Connection) -> int:
            # A queued request is settled now; one already sent stays open (completed_at NULL) until its batch
            # ends, so that what the provider did answer is still recorded.
            cur = await conn.execute(
                "UPDATE batch_requests SET status = 'cancelled', completed_at = CASE WHEN status = 'queued' "
                "THEN ? ELSE NULL END WHERE id = ? AND status IN ('queued', 'submitting', 'submitted')", (now, info.id))
            return cur.rowcount

        if not await self.svc.store.transaction(work):
            raise InvalidInput(f"batch request {info.id} changed state meanwhile; look again with `batch status`")
        batch_id = info.provider_batch_id
        if info.status == "submitted" and batch_id:
            left = await self.svc.store.fetch("SELECT COUNT(*) AS n FROM batch_requests WHERE provider_batch_id = ? "
                                              "AND status = 'submitted'", (batch_id,))
            if not left[0]["n"]:
                try:
                    await self._cancel_provider_batch(info.provider, batch_id)
                except WireError as e:  # the request is cancelled for us either way
                    log.warning("could not cancel %s batch %s: %s", info.provider, batch_id, e)
        return await self.get(info.id)

    async def _cancel_provider_batch(self, provider: str, batch_id: str) -> None:
        base, headers = self._api(provider)
        path = f"/messages/batches/{batch_id}/cancel" if self._dialect(provider) == "anthropic" \
            else f"/batches/{batch_id}/cancel"
        await self._call_json(provider, "POST", base + path, headers)


@dataclass(slots=True)
class _Ended:
    """A finished provider batch: the outcome per request id, and the fate of requests it has no line for."""

    outcomes: dict[str, _Outcome]
    default: _Outcome


# ==================================================================== the gateway's background loop
async def run_batch_loop(service: BatchService | PrismService, interval: float | None,
                         stop_event: asyncio.Event) -> None:
    """Every `interval` seconds (None: the config's batch.interval_seconds), submit queued requests and poll
    open batches, until `stop_event` is set. A failing tick is logged and retried on the next one."""
    batches = service if isinstance(service, BatchService) else BatchService(service)
    period = batches.interval if interval is None else interval
    while not stop_event.is_set():
        try:
            submitted = await batches.submit_pending()
            polled = await batches.poll()
            if submitted.submitted or polled.completed or polled.failed:
                log.info("batch: %d request(s) submitted, %d answered, %d failed", submitted.submitted,
                         polled.completed, polled.failed)
        except PrismError as e:
            log.warning("batch loop: %s (retrying in %.0fs)", e, period)
        except Exception:  # a bug: keep the gateway's loop alive, show it in the log
            log.exception("batch loop tick failed (retrying in %.0fs)", period)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), period)


# ==================================================================== markdown
def info_markdown(r: BatchRequestInfo) -> str:
    lines = [f"batch request {r.id}: **{r.status}**", f"- task type {r.task_type}, model {r.model} ({r.provider}), "
             f"answer in {r.client_format} format",
             f"- queued {r.created_at}" + (f", submitted {r.submitted_at}" if r.submitted_at else "")
             + (f", settled {r.completed_at}" if r.completed_at else "")]
    if r.provider_batch_id:
        lines.append(f"- provider batch {r.provider_batch_id}")
    if r.cost_usd is not None:
        lines.append(f"- cost {money(r.cost_usd, 6)} (batch price)")
    if r.error_message:
        lines.append(f"- error: {r.error_message}")
    if r.result is not None:
        lines += ["", "```json", json.dumps(r.result, indent=2, ensure_ascii=False), "```"]
    elif r.status in ("queued", "submitting", "submitted"):
        lines.append("- not answered yet: `mcp-prism batch poll` checks the provider (the gateway does it by itself)")
    return "\n".join(lines)


def list_markdown(r: BatchList) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items())) or "none"
    if not r.requests:
        return f"no batch requests to show (all: {counts})"
    rows = [[x.id, x.status, x.task_type, x.model, x.created_at[:19], money(x.cost_usd, 6)
             if x.cost_usd is not None else "-", x.error_message or ""] for x in r.requests]
    return render.table(["id", "status", "task type", "model", "queued", "cost", "error"], rows) + \
        f"\n\nall requests: {counts}"


def submit_markdown(r: SubmitResult) -> str:
    if not (r.submitted or r.failed or r.requeued):
        return "nothing queued to submit"
    lines = [f"{r.submitted} request(s) submitted in {len(r.batches)} provider batch(es)"
             + (f"; {r.failed} refused (failed)" if r.failed else "")
             + (f"; {r.requeued} left queued after a transient error" if r.requeued else "")]
    if r.batches:
        lines += ["", render.table(["provider", "model", "provider batch", "requests"],
                                   [[b.provider, b.model, b.provider_batch_id, b.requests] for b in r.batches])]
    lines += [f"error: {e}" for e in r.errors]
    return "\n".join(lines)


def poll_markdown(r: PollResult) -> str:
    if not r.checked:
        return "no open batches"
    lines = [f"{r.checked} provider batch(es) checked, {r.still_running} still running; {r.completed} answered, "
             f"{r.failed} failed, {r.expired} expired, {r.cancelled} cancelled; {r.events_recorded} usage event(s) "
             f"recorded costing {money(r.cost_usd, 6)} at the batch price"]
    lines += [f"error: {e}" for e in r.errors]
    return "\n".join(lines)


def _result_lines(raw: bytes) -> list[dict[str, Any]]:
    """The lines of a batch results file that name their request; a torn or foreign line is skipped."""
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("custom_id"), str):
            out.append(item)
    return out
