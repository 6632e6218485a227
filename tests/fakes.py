"""Fake OpenAI, Anthropic and Gemini APIs on 127.0.0.1, speaking each provider's documented wire format.

Nothing here can reach a real provider, so provider clients are tested against this server instead. One ASGI app
serves all three APIs on one port:

- OpenAI Chat Completions: ``POST /v1/chat/completions``, ``GET /v1/models``; auth ``Authorization: Bearer <key>``.
  OpenAI Responses: ``POST /v1/responses`` (same auth, markers and error bodies), streaming the events OpenAI sends
  (``response.created``, ``response.in_progress``, ``response.output_item.added``, ``response.content_part.added``,
  ``response.output_text.delta`` / ``response.function_call_arguments.delta`` / reasoning summary events,
  ``...done`` events, ``response.completed``); as the API does, it rejects a ``strict: true`` function tool
  whose schema lacks ``additionalProperties: false`` and a reasoning item with neither stored state nor
  ``encrypted_content``.
  Batch API: ``POST /v1/files`` (multipart, purpose=batch), ``GET /v1/files/{id}[/content]``, ``POST /v1/batches``,
  ``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel`` (endpoint ``/v1/chat/completions`` only).
- Anthropic Messages: ``POST /v1/messages`` (role ``system`` mid-conversation accepted with the
  ``mid-conversation-system-*`` beta, as Claude Code 2.1 sends it), ``POST /v1/messages/count_tokens``
  (``GET /v1/models`` too when called with ``anthropic-version``); auth
  ``x-api-key`` (or ``Authorization: Bearer``, which anthropic-sdk-python 2.x sends) plus a required
  ``anthropic-version`` header. Message Batches: ``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
  ``POST .../{id}/cancel``, ``GET .../{id}/results`` (JSONL).
- Gemini: ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent`` (``?alt=sse`` for SSE, a
  streamed JSON array without it; ``/v1/models/...`` too, which google-genai may use); auth ``x-goog-api-key``
  header or ``?key=``. As the real API does, a bad key is 400 INVALID_ARGUMENT (reason API_KEY_INVALID) and a missing
  key 403 PERMISSION_DENIED, not 401.

The scenario is chosen by markers in the text of the last user message, so a test can steer it through any client,
including a gateway that rewrites the request: ``[tool]``, ``[cached]``, ``[reasoning]``, ``[429]``, ``[500]``,
``[529]``, ``[slow]``, ``[malformed]``, ``[cut]``, ``[long]``, ``[cached1h]`` (see ``_plan`` and
``_scenario_error``). Without a marker the reply is ``"echo: <last user text>"``.

Usage::

    from fakes import run_fake_providers          # tests/ is on sys.path (pytest rootdir-relative imports)

    with run_fake_providers() as fake:             # or the `fake_providers` fixture
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key=fake.keys["openai"])
        ...
        assert fake.calls[-1].body["model"] == "gpt-4o-mini"
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
import uvicorn

DEFAULT_KEYS: dict[str, str] = {
    "openai": "sk-fake-openai-key",
    "anthropic": "sk-ant-fake-anthropic-key",
    "gemini": "fake-gemini-key",
}
PROVIDERS = ("openai", "anthropic", "gemini")

# Fixed token counts so tests can assert exact usage numbers for the [cached] and [reasoning] scenarios.
CACHED_TOKENS = 2048  # OpenAI cached_tokens, Anthropic cache_read_input_tokens, Gemini cachedContentTokenCount
CACHE_CREATION_TOKENS = 256  # Anthropic cache_creation_input_tokens
CACHE_CREATION_1H_TOKENS = 512  # [cached1h]: one-hour cache writes (cache_creation.ephemeral_1h_input_tokens)
REASONING_TOKENS = 64  # OpenAI reasoning_tokens, Gemini thoughtsTokenCount, added to Anthropic output_tokens
RETRY_AFTER_SECONDS = 7
ECHO_LIMIT = 200  # the echoed user text is truncated to this many characters
LONG_CHUNKS = 50  # [long]: number of content deltas ...
LONG_DELAY = 0.01  # ... and the pause between stream events, so a client can disconnect mid-stream
CUT_AFTER = 3  # [cut]: content deltas sent before the connection is dropped
SLOW_SECONDS = 30.0  # [slow]: delay before answering (FakeProviders.slow_seconds overrides it)
THINKING_TEXT = "Let me think about this step by step."
THINKING_SIGNATURE = "RmFrZVRoaW5raW5nU2lnbmF0dXJlRm9yVGVzdHM="

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-goog-api-key"})
_GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):(generateContent|streamGenerateContent)$")
# Top-level GenerateContentRequest fields; the real API rejects anything else (a common gateway bug).
_GEMINI_FIELDS = frozenset(
    {
        "model",
        "contents",
        "tools",
        "toolConfig",
        "tool_config",
        "safetySettings",
        "safety_settings",
        "systemInstruction",
        "system_instruction",
        "generationConfig",
        "generation_config",
        "cachedContent",
        "cached_content",
    }
)


class _CutStream(Exception):
    """Raised mid-response: uvicorn then drops the connection without the terminating chunk."""


class _HideCuts(logging.Filter):
    # uvicorn logs every exception from the app; the deliberate [cut] ones are noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _CutStream))


logging.getLogger("uvicorn.error").addFilter(_HideCuts())


@dataclass
class Call:
    """One request the fake received. Secrets stay in `headers`/`query` for assertions but are masked in repr."""

    provider: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    raw: bytes = field(repr=False)

    def __getitem__(self, name: str) -> Any:
        # Dict-style access too (call["body"]), for tests written against plain-dict records.
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in self.__dataclass_fields__ else default

    def __repr__(self) -> str:
        headers = {k: ("***" if k in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        query = {k: ("***" if k == "key" else v) for k, v in self.query.items()}
        return (
            f"Call(provider={self.provider!r}, method={self.method!r}, path={self.path!r}, query={query!r}, "
            f"headers={headers!r}, body={self.body!r})"
        )


# --- provider-neutral scenario planning -------------------------------------------------------------------------


@dataclass
class _Turn:
    """What the fake needs from a request, whatever the provider."""

    model: str
    last_text: str  # text of the last user message that has text
    tool_result: str | None  # text of the last tool result in the conversation
    tools: list[tuple[str, dict[str, Any]]]  # (name, JSON schema) of the function tools offered
    all_text: str

    def has(self, marker: str) -> bool:
        return marker in self.last_text


@dataclass
class _Reply:
    text: str  # visible text ("" for a tool call)
    pieces: list[str]  # the text as streamed
    tool: tuple[str, dict[str, Any]] | None
    input_tokens: int  # uncached input
    output_tokens: int  # visible output, reasoning excluded
    cached: bool
    reasoning: bool
    cached_1h: bool = False
    bad_usage: Any = None  # `[usage=JSON]`: the prompt count the usage block reports instead (a hostile upstream)


_BAD_USAGE = re.compile(r"\[usage=([^\]]+)\]")


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


def _split(text: str, parts: int = 4, max_size: int = 8) -> list[str]:
    # Short texts still stream as several deltas so clients must concatenate them.
    size = max(1, min(max_size, math.ceil(len(text) / parts)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _minimal_value(schema: Any, name: str) -> Any:
    if not isinstance(schema, dict):
        return "Paris"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    kind = str(kind).lower()  # Gemini schemas spell types in upper case
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return _minimal_args(schema) if schema.get("required") else {}
    if kind == "null":
        return None
    return "Paris" if name == "city" else "test"


def _minimal_args(schema: dict[str, Any]) -> dict[str, Any]:
    """{"city": "Paris"}, or the smallest object holding the schema's required properties."""
    required = [r for r in schema.get("required") or [] if isinstance(r, str)]
    if not required:
        return {"city": "Paris"}
    props = schema.get("properties") or {}
    return {name: _minimal_value(props.get(name), name) for name in required}


def _plan(turn: _Turn) -> _Reply:
    tool = None
    if turn.tool_result is not None:
        text = f"tool said: {turn.tool_result}"
    elif turn.has("[tool]") and turn.tools:
        name, schema = turn.tools[0]
        tool = (name, _minimal_args(schema))
        text = ""
    elif turn.has("[long]"):
        text = ""
    else:
        text = f"echo: {turn.last_text[:ECHO_LIMIT]}"
    if tool is not None:
        pieces, out = [], _tokens(tool[0] + json.dumps(tool[1]))
    elif turn.has("[long]") and turn.tool_result is None:
        pieces = [f"chunk {i:02d}. " for i in range(LONG_CHUNKS)]
        text = "".join(pieces)
        out = _tokens(text)
    else:
        pieces, out = _split(text), _tokens(text)
    return _Reply(
        text=text,
        pieces=pieces,
        tool=tool,
        input_tokens=_tokens(turn.all_text),
        output_tokens=out,
        cached=turn.has("[cached]"),
        reasoning=turn.has("[reasoning]"),
        cached_1h=turn.has("[cached1h]"),
        bad_usage=json.loads(m.group(1)) if (m := _BAD_USAGE.search(turn.last_text)) else None,
    )


def _collect_text(obj: Any) -> list[str]:
    """Every string under text-bearing keys of a messages/contents structure (for token estimates)."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [s for item in obj for s in _collect_text(item)]
    if isinstance(obj, dict):
        keys = ("text", "content", "parts", "system", "systemInstruction", "system_instruction", "input", "args")
        out = [s for k in keys if k in obj for s in _collect_text(obj[k])]
        for k in ("input", "args", "response", "functionResponse", "function_response"):
            if isinstance(obj.get(k), dict):
                out.append(json.dumps(obj[k]))
        return out
    return []


def _block_text(content: Any) -> str:
    """Text of an OpenAI/Anthropic content value: a string or a list of {"type": "text", "text"} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


# --- responses ----------------------------------------------------------------------------------------------------


@dataclass
class _Full:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Streamed:
    chunks: list[bytes]
    content_type: str
    cut_at: int | None = None  # drop the connection instead of sending chunks[cut_at]
    delay: float = 0.0
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json(status: int, obj: Any, headers: list[tuple[str, str]] | None = None, *, indent: int | None = None) -> _Full:
    body = json.dumps(obj, indent=indent).encode() if indent else _compact(obj)
    return _Full(status, body, "application/json", headers or [])


SSE = "text/event-stream; charset=utf-8"
RETRY_HEADERS = [("retry-after", str(RETRY_AFTER_SECONDS))]


def _openai_error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> _Full:
    return _json(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


def _anthropic_error(status: int, type_: str, message: str, request_id: str = "req_fake") -> _Full:
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}
    return _json(status, body, [("request-id", request_id)])


def _gemini_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> _Full:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return _json(code, {"error": err}, indent=2)  # Google pretty-prints its JSON bodies


def _scenario_error(provider: str, turn: _Turn) -> _Full | None:
    """Error/malformed responses selected by markers, in the provider's own shape."""
    if turn.has("[malformed]"):
        return _Full(200, b'{"id": "broken", "choices": [ <- not JSON', "application/json")
    if turn.has("[429]"):
        if provider == "openai":
            r = _openai_error(
                429,
                f"Rate limit reached for {turn.model} on requests per min (RPM): Limit 3, Used 3, Requested 1. "
                f"Please try again in {RETRY_AFTER_SECONDS}s.",
                "requests",
                code="rate_limit_exceeded",
            )
        elif provider == "anthropic":
            r = _anthropic_error(
                429, "rate_limit_error", "This request would exceed the rate limit for your organization."
            )
        else:
            quota = {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": turn.model},
                        "quotaValue": "10",
                    }
                ],
            }
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{RETRY_AFTER_SECONDS}s"}
            r = _gemini_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                [quota, retry],
            )
        r.headers += RETRY_HEADERS
        return r
    if turn.has("[500]"):
        if provider == "openai":
            return _openai_error(
                500, "The server had an error while processing your request. Sorry about that!", "server_error"
            )
        if provider == "anthropic":
            return _anthropic_error(500, "api_error", "Internal server error")
        return _gemini_error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        )
    if turn.has("[529]"):
        # Anthropic's 529; the other providers signal the same condition with 503.
        if provider == "anthropic":
            return _anthropic_error(529, "overloaded_error", "Overloaded")
        if provider == "openai":
            return _openai_error(503, "The engine is currently overloaded, please try again later.", "server_error")
        return _gemini_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    return None


# --- OpenAI -------------------------------------------------------------------------------------------------------


def _openai_turn(body: dict[str, Any]) -> _Turn:
    messages = [m for m in body["messages"] if isinstance(m, dict)]
    last_text = next(
        (t for m in reversed(messages) if m.get("role") == "user" and (t := _block_text(m.get("content")))), ""
    )
    results = [_block_text(m.get("content")) for m in messages if m.get("role") in ("tool", "function")]
    tools = [
        (t["function"]["name"], t["function"].get("parameters") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
    ]
    return _Turn(body["model"], last_text, results[-1] if results else None, tools, " ".join(_collect_text(messages)))


def _openai_validate(body: Any) -> _Full | None:
    if not isinstance(body, dict):
        return _openai_error(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
            "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            "invalid_request_error",
        )
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _openai_error(400, "you must provide a model parameter", "invalid_request_error")
    messages = body.get("messages")
    if messages is None:
        return _openai_error(
            400,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            "messages",
            "missing_required_parameter",
        )
    if not isinstance(messages, list) or not messages:
        return _openai_error(
            400,
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "invalid_request_error",
            "messages",
            "empty_array",
        )
    roles = ("system", "developer", "user", "assistant", "tool", "function")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in roles:
            return _openai_error(
                400,
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
                "'tool', and 'developer'.",
                "invalid_request_error",
                f"messages[{i}].role",
                "invalid_value",
            )
    if body.get("stream_options") is not None and not body.get("stream"):
        return _openai_error(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "invalid_request_error",
            "stream_options",
        )
    return None


def _openai_usage(r: _Reply) -> dict[str, Any]:
    cached = CACHED_TOKENS if r.cached else 0
    reasoning = REASONING_TOKENS if r.reasoning else 0
    prompt, completion = r.input_tokens + cached, r.output_tokens + reasoning  # both totals include the details
    if r.bad_usage is not None:
        prompt = r.bad_usage
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if r.bad_usage is None else completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_response(body: dict[str, Any], turn: _Turn, r: _Reply, seq: int) -> _Full | _Streamed:
    cid, call_id, created = f"chatcmpl-fake{seq:06d}", f"call_fake{seq:06d}", int(time.time())
    headers = [("x-request-id", f"req_fake{seq:06d}"), ("openai-processing-ms", "1")]
    common = {"created": created, "model": turn.model, "service_tier": "default", "system_fingerprint": "fp_fake"}
    tool_call = None
    if r.tool:
        tool_call = {
            "id": call_id,
            "type": "function",
            "function": {"name": r.tool[0], "arguments": json.dumps(r.tool[1])},
        }
    finish = "tool_calls" if r.tool else "stop"

    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if r.tool else r.text, "refusal": None}
        if tool_call:
            message["tool_calls"] = [tool_call]
        message["annotations"] = []
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        resp = {"id": cid, "object": "chat.completion", **common, "choices": [choice], "usage": _openai_usage(r)}
        return _json(200, resp, headers)

    include_usage = (body.get("stream_options") or {}).get("include_usage") is True

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        c: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", **common}
        c["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        if include_usage:
            c["usage"] = None  # the API sends an explicit null on every chunk but the last
        return b"data: " + _compact(c) + b"\n\n"

    if tool_call:
        first = {**tool_call, "index": 0, "function": {"name": r.tool[0], "arguments": ""}}  # type: ignore[index]
        chunks = [chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None})]
        fragments = _split(tool_call["function"]["arguments"], parts=4, max_size=6)
        chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": f}}]}) for f in fragments]
    else:
        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        fragments = r.pieces
        chunks += [chunk({"content": p}) for p in fragments]
    chunks.append(chunk({}, finish))
    if include_usage:
        last = {"id": cid, "object": "chat.completion.chunk", **common, "choices": [], "usage": _openai_usage(r)}
        chunks.append(b"data: " + _compact(last) + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return _Streamed(chunks, SSE, cut_at=1 + min(CUT_AFTER, len(fragments)), headers=headers)


# --- OpenAI Responses ---------------------------------------------------------------------------------------------


def _responses_validate(body: Any) -> _Full | None:
    if not isinstance(body, dict):
        return _openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _openai_error(400, "Missing required parameter: 'model'.", "invalid_request_error", "model",
                             "missing_required_parameter")
    items = body.get("input")
    if not isinstance(items, str | list) or not items:
        return _openai_error(400, "Missing required parameter: 'input'.", "invalid_request_error", "input",
                             "missing_required_parameter")
    for i, item in enumerate(items if isinstance(items, list) else []):
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message" and item.get("role") not in ("user", "assistant", "system", "developer"):
            return _openai_error(400, f"Invalid value: '{item.get('role')}'. Supported values are: 'assistant', "
                                 "'system', 'developer', and 'user'.", "invalid_request_error", f"input[{i}].role",
                                 "invalid_value")
        if kind == "function_call_output" and not isinstance(item.get("call_id"), str):
            return _openai_error(400, f"Missing required parameter: 'input[{i}].call_id'.", "invalid_request_error",
                                 f"input[{i}].call_id", "missing_required_parameter")
        if kind == "reasoning" and not item.get("encrypted_content") and body.get("store") is False:
            return _openai_error(404, f"Item with id '{item.get('id')}' not found. Items are not persisted when "
                                 "`store` is set to false.", "invalid_request_error", "input", None)
    for i, tool in enumerate(body.get("tools") or []):
        if isinstance(tool, dict) and tool.get("type") == "function" and tool.get("strict") is True:
            params = tool.get("parameters") or {}
            if params.get("additionalProperties") is not False:
                return _openai_error(400, f"Invalid schema for function '{tool.get('name')}': In context=(), "
                                     "'additionalProperties' is required to be supplied and to be false.",
                                     "invalid_request_error", f"tools[{i}].parameters", "invalid_function_parameters")
    return None


def _responses_turn(body: dict[str, Any]) -> _Turn:
    items = body["input"]
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    items = [i for i in items if isinstance(i, dict)]

    def text_of(content: Any) -> str:
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict)
                       and p.get("type") in ("input_text", "output_text"))

    messages = [i for i in items if i.get("type", "message") == "message"]
    last_text = next((t for m in reversed(messages) if m.get("role") == "user" and (t := text_of(m.get("content")))),
                     "")
    results = [o if isinstance(o := i.get("output"), str) else text_of(o) for i in items
               if i.get("type") == "function_call_output"]
    tools = [(t["name"], t.get("parameters") or {}) for t in body.get("tools") or []
             if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)]
    all_text = " ".join([text_of(m.get("content")) for m in messages] + results
                        + ([body["instructions"]] if isinstance(body.get("instructions"), str) else []))
    return _Turn(body["model"], last_text, results[-1] if results else None, tools, all_text)


def _responses_usage(r: _Reply) -> dict[str, Any]:
    cached = CACHED_TOKENS if r.cached else 0
    reasoning = REASONING_TOKENS if r.reasoning else 0
    inp, out = r.input_tokens + cached, r.output_tokens + reasoning  # totals include the details
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": inp + out}


def _responses_response(body: dict[str, Any], turn: _Turn, r: _Reply, seq: int) -> _Full | _Streamed:
    rid, created = f"resp_fake{seq:06d}", int(time.time())
    headers = [("x-request-id", f"req_fake{seq:06d}"), ("openai-processing-ms", "1")]
    encrypted = "reasoning.encrypted_content" in (body.get("include") or [])
    reasoning_item: dict[str, Any] | None = None
    if r.reasoning:
        reasoning_item = {"id": f"rs_fake{seq:06d}", "type": "reasoning",
                          "summary": [{"type": "summary_text", "text": THINKING_TEXT}]}
        if encrypted:
            reasoning_item["encrypted_content"] = THINKING_SIGNATURE
    if r.tool:
        item: dict[str, Any] = {"id": f"fc_fake{seq:06d}", "type": "function_call", "status": "completed",
                                "arguments": json.dumps(r.tool[1]), "call_id": f"call_fake{seq:06d}",
                                "name": r.tool[0]}
    else:
        item = {"id": f"msg_fake{seq:06d}", "type": "message", "status": "completed", "content": [
            {"type": "output_text", "annotations": [], "logprobs": [], "text": r.text}], "role": "assistant"}
    output = [*([reasoning_item] if reasoning_item else []), item]

    def envelope(status: str, out: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        return {"id": rid, "object": "response", "created_at": created, "status": status, "background": False,
                "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
                "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None, "model": turn.model,
                "output": out, "parallel_tool_calls": body.get("parallel_tool_calls", True),
                "previous_response_id": None, "prompt_cache_key": body.get("prompt_cache_key"),
                "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
                "safety_identifier": None, "service_tier": "default", "store": body.get("store", True),
                "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
                "tool_choice": body.get("tool_choice", "auto"), "tools": tools, "top_logprobs": 0, "top_p": 1.0,
                "truncation": "disabled", "usage": usage, "user": None, "metadata": {}}

    if not body.get("stream"):
        return _json(200, envelope("completed", output, _responses_usage(r)), headers)

    seq_no = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": next(seq_no)}
        return f"event: {kind}\n".encode() + b"data: " + _compact(data) + b"\n\n"

    chunks = [event("response.created", response=envelope("in_progress", [], None)),
              event("response.in_progress", response=envelope("in_progress", [], None))]
    index = 0
    if reasoning_item:
        ref = {"item_id": reasoning_item["id"], "output_index": 0}
        chunks.append(event("response.output_item.added", output_index=0,
                            item={"id": reasoning_item["id"], "type": "reasoning", "summary": []}))
        chunks.append(event("response.reasoning_summary_part.added", **ref, summary_index=0,
                            part={"type": "summary_text", "text": ""}))
        chunks += [event("response.reasoning_summary_text.delta", **ref, summary_index=0, delta=p,
                         obfuscation="fake") for p in _split(THINKING_TEXT, 2, 64)]
        chunks.append(event("response.reasoning_summary_text.done", **ref, summary_index=0, text=THINKING_TEXT))
        chunks.append(event("response.reasoning_summary_part.done", **ref, summary_index=0,
                            part={"type": "summary_text", "text": THINKING_TEXT}))
        chunks.append(event("response.output_item.done", output_index=0, item=reasoning_item))
        index = 1
    ref = {"item_id": item["id"], "output_index": index}
    if r.tool:
        chunks.append(event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "arguments": ""}))
        deltas = [event("response.function_call_arguments.delta", **ref, delta=f, obfuscation="fake")
                  for f in _split(item["arguments"], parts=4, max_size=6)]
        tail = [event("response.function_call_arguments.done", **ref, arguments=item["arguments"])]
    else:
        chunks.append(event("response.output_item.added", output_index=index,
                            item={**item, "status": "in_progress", "content": []}))
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        chunks.append(event("response.content_part.added", **ref, content_index=0, part=part))
        deltas = [event("response.output_text.delta", **ref, content_index=0, delta=p, logprobs=[],
                        obfuscation="fake") for p in r.pieces]
        tail = [event("response.output_text.done", **ref, content_index=0, text=r.text, logprobs=[]),
                event("response.content_part.done", **ref, content_index=0, part={**part, "text": r.text})]
    cut_at = len(chunks) + min(CUT_AFTER, len(deltas))
    chunks += deltas + tail
    chunks.append(event("response.output_item.done", output_index=index, item=item))
    chunks.append(event("response.completed", response=envelope("completed", output, _responses_usage(r))))
    return _Streamed(chunks, SSE, cut_at=cut_at, headers=headers)


# --- Anthropic ----------------------------------------------------------------------------------------------------


MID_CONVERSATION_SYSTEM_BETA = "mid-conversation-system-"  # Claude Code 2.1 asks for it (Claude 5 era models)


def _anthropic_validate(body: Any, betas: str = "") -> _Full | None:
    if not isinstance(body, dict):
        return _anthropic_error(400, "invalid_request_error", "There was an issue with the JSON body of your request.")
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return _anthropic_error(400, "invalid_request_error", f"{name}: Field required")
    if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
        return _anthropic_error(400, "invalid_request_error", "max_tokens: Input should be a valid integer >= 1")
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        return _anthropic_error(400, "invalid_request_error", "messages: at least one message is required")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role == "system" and MID_CONVERSATION_SYSTEM_BETA in betas and i > 0:
            continue  # allowed mid-conversation with the beta header, as the API does
        if role not in ("user", "assistant"):
            return _anthropic_error(
                400,
                "invalid_request_error",
                f'messages.{i}.role: Unexpected role "{role}". The Messages API accepts a top-level `system` '
                'parameter, not "system" as an input message role.',
            )
        if "content" not in m:
            return _anthropic_error(400, "invalid_request_error", f"messages.{i}.content: Field required")
    return None


def _anthropic_count_tokens(body: Any) -> _Full:
    """`POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N counted as the chat scenarios count input."""
    if not isinstance(body, dict) or "model" not in body or not isinstance(body.get("messages"), list):
        return _anthropic_error(400, "invalid_request_error", "model and messages: Field required")
    text = " ".join(_collect_text(body["messages"]) + _collect_text(body.get("system")))
    return _json(200, {"input_tokens": _tokens(text)})


def _anthropic_turn(body: dict[str, Any]) -> _Turn:
    messages = body["messages"]
    last_text = next(
        (t for m in reversed(messages) if m.get("role") == "user" and (t := _block_text(m.get("content")))), ""
    )
    results = [
        _block_text(block.get("content"))
        for m in messages
        if isinstance(m.get("content"), list)
        for block in m["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result"
    ]
    tools = [
        (t["name"], t["input_schema"])
        for t in body.get("tools") or []
        if isinstance(t, dict) and "name" in t and isinstance(t.get("input_schema"), dict)
    ]
    all_text = " ".join(_collect_text(messages) + _collect_text(body.get("system")))
    return _Turn(body["model"], last_text, results[-1] if results else None, tools, all_text)


def _anthropic_usage(r: _Reply, *, output_tokens: int | None = None) -> dict[str, Any]:
    creation = CACHE_CREATION_TOKENS if r.cached else 0
    hour = CACHE_CREATION_1H_TOKENS if r.cached_1h else 0
    out = r.output_tokens + (REASONING_TOKENS if r.reasoning else 0)
    return {
        "input_tokens": r.input_tokens if r.bad_usage is None else r.bad_usage,  # excludes cached/cache-written
        "cache_creation_input_tokens": creation + hour,
        "cache_read_input_tokens": CACHED_TOKENS if r.cached else 0,
        "cache_creation": {"ephemeral_5m_input_tokens": creation, "ephemeral_1h_input_tokens": hour},
        "output_tokens": out if output_tokens is None else output_tokens,
        "service_tier": "standard",
    }


def _anthropic_response(body: dict[str, Any], turn: _Turn, r: _Reply, seq: int) -> _Full | _Streamed:
    mid, tool_id, request_id = f"msg_fake{seq:06d}", f"toolu_fake{seq:06d}", f"req_fake{seq:06d}"
    headers = [("request-id", request_id)]
    stop_reason = "tool_use" if r.tool else "end_turn"
    head = {"id": mid, "type": "message", "role": "assistant", "model": turn.model}

    if not body.get("stream"):
        content: list[dict[str, Any]] = []
        if r.reasoning:
            content.append({"type": "thinking", "thinking": THINKING_TEXT, "signature": THINKING_SIGNATURE})
        if r.tool:
            content.append({"type": "tool_use", "id": tool_id, "name": r.tool[0], "input": r.tool[1]})
        else:
            content.append({"type": "text", "text": r.text})
        resp = {**head, "content": content, "stop_reason": stop_reason, "stop_sequence": None}
        resp["usage"] = _anthropic_usage(r)
        return _json(200, resp, headers)

    def event(data: dict[str, Any]) -> bytes:
        return f"event: {data['type']}\n".encode() + b"data: " + _compact(data) + b"\n\n"

    def delta(index: int, d: dict[str, Any]) -> bytes:
        return event({"type": "content_block_delta", "index": index, "delta": d})

    start = {**head, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = _anthropic_usage(r, output_tokens=1)
    chunks = [event({"type": "message_start", "message": start})]
    ping = event({"type": "ping"})  # the API pings right after the first block starts
    index = 0
    if r.reasoning:
        block = {"type": "thinking", "thinking": "", "signature": ""}
        chunks += [event({"type": "content_block_start", "index": index, "content_block": block}), ping]
        chunks += [delta(index, {"type": "thinking_delta", "thinking": p}) for p in _split(THINKING_TEXT, 2, 64)]
        chunks.append(delta(index, {"type": "signature_delta", "signature": THINKING_SIGNATURE}))
        chunks.append(event({"type": "content_block_stop", "index": index}))
        index += 1
    if r.tool:
        block = {"type": "tool_use", "id": tool_id, "name": r.tool[0], "input": {}}
        fragments = ["", *_split(json.dumps(r.tool[1]), parts=4, max_size=6)]
        deltas = [delta(index, {"type": "input_json_delta", "partial_json": f}) for f in fragments]
    else:
        block = {"type": "text", "text": ""}
        deltas = [delta(index, {"type": "text_delta", "text": p}) for p in r.pieces]
    chunks.append(event({"type": "content_block_start", "index": index, "content_block": block}))
    if index == 0:
        chunks.append(ping)
    cut_at = len(chunks) + min(CUT_AFTER, len(deltas))
    chunks += deltas
    chunks.append(event({"type": "content_block_stop", "index": index}))
    out = _anthropic_usage(r)["output_tokens"]
    message_delta = {"stop_reason": stop_reason, "stop_sequence": None}
    chunks.append(event({"type": "message_delta", "delta": message_delta, "usage": {"output_tokens": out}}))
    chunks.append(event({"type": "message_stop"}))
    return _Streamed(chunks, SSE, cut_at=cut_at, headers=headers)


# --- Gemini -------------------------------------------------------------------------------------------------------


def _gemini_validate(body: Any) -> _Full | None:
    if not isinstance(body, dict):
        return _gemini_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token.")
    unknown = sorted(set(body) - _GEMINI_FIELDS)
    if unknown:
        violations = [
            {"field": k, "description": f'Invalid JSON payload received. Unknown name "{k}": Cannot find field.'}
            for k in unknown
        ]
        return _gemini_error(
            400,
            "INVALID_ARGUMENT",
            "\n".join(v["description"] for v in violations),
            [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}],
        )
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return _gemini_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n")
    for c in contents:
        if not isinstance(c, dict) or c.get("role", "user") not in ("user", "model", "function"):
            return _gemini_error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
        if not isinstance(c.get("parts"), list) or not c["parts"]:
            return _gemini_error(
                400,
                "INVALID_ARGUMENT",
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.\n",
            )
    return None


def _gemini_turn(model: str, body: dict[str, Any]) -> _Turn:
    contents = body["contents"]

    def text_of(c: dict[str, Any]) -> str:
        return "".join(p["text"] for p in c["parts"] if isinstance(p, dict) and isinstance(p.get("text"), str))

    last_text = next((t for c in reversed(contents) if c.get("role", "user") == "user" and (t := text_of(c))), "")
    results = []
    for c in contents:
        for p in c["parts"]:
            fr = p.get("functionResponse") or p.get("function_response") if isinstance(p, dict) else None
            if isinstance(fr, dict):
                resp = fr.get("response")
                # {"result": "18C"} style responses read best as their single value
                if isinstance(resp, dict) and len(resp) == 1 and isinstance(next(iter(resp.values())), str):
                    results.append(next(iter(resp.values())))
                else:
                    results.append(json.dumps(resp))
    tools = []
    for t in body.get("tools") or []:
        decls = (t.get("functionDeclarations") or t.get("function_declarations") or []) if isinstance(t, dict) else []
        for d in decls:
            schema = d.get("parameters") or d.get("parametersJsonSchema") or d.get("parameters_json_schema") or {}
            tools.append((d["name"], schema))
    system = body.get("systemInstruction") or body.get("system_instruction")
    all_text = " ".join(_collect_text(contents) + _collect_text(system))
    return _Turn(model, last_text, results[-1] if results else None, tools, all_text)


def _gemini_usage(r: _Reply, *, final: bool = True) -> dict[str, Any]:
    cached = CACHED_TOKENS if r.cached else 0
    prompt = r.input_tokens + cached  # promptTokenCount includes the cached part
    usage: dict[str, Any] = {"promptTokenCount": prompt if r.bad_usage is None else r.bad_usage}
    total = prompt
    if final:
        usage["candidatesTokenCount"] = r.output_tokens
        total += r.output_tokens
        if r.reasoning:
            usage["thoughtsTokenCount"] = REASONING_TOKENS
            total += REASONING_TOKENS
    usage["totalTokenCount"] = total
    if cached:
        usage["cachedContentTokenCount"] = cached
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    return usage


def _gemini_response(turn: _Turn, r: _Reply, seq: int, *, stream: bool, sse: bool) -> _Full | _Streamed:
    rid = f"fakeResponse{seq:06d}"
    tail = {"modelVersion": turn.model, "responseId": rid}

    def candidate(parts: list[dict[str, Any]], finish: bool) -> dict[str, Any]:
        c: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
        if finish:
            c["finishReason"] = "STOP"
        c["index"] = 0
        return c

    if r.tool:
        parts_per_chunk = [[{"functionCall": {"name": r.tool[0], "args": r.tool[1]}}]]  # never split by the API
    else:
        parts_per_chunk = [[{"text": p}] for p in r.pieces]
    if not stream:
        parts = [p for ps in parts_per_chunk for p in ps]
        if not r.tool:
            parts = [{"text": r.text}]
        resp = {"candidates": [candidate(parts, True)], "usageMetadata": _gemini_usage(r), **tail}
        return _json(200, resp, indent=2)

    n = len(parts_per_chunk)
    responses = [
        {"candidates": [candidate(ps, i == n - 1)], "usageMetadata": _gemini_usage(r, final=i == n - 1), **tail}
        for i, ps in enumerate(parts_per_chunk)
    ]
    cut_at = min(CUT_AFTER, n - 1) if n > 1 else 0
    if sse:
        # Gemini separates SSE events with CRLF pairs; clients must not assume "\n\n".
        chunks = [b"data: " + _compact(x) + b"\r\n\r\n" for x in responses]
        return _Streamed(chunks, "text/event-stream", cut_at=cut_at)
    # Without alt=sse the API streams one pretty-printed JSON array.
    texts = [json.dumps(x, indent=2) for x in responses]
    chunks = [("[" if i == 0 else ",\r\n").encode() + t.encode() for i, t in enumerate(texts)] + [b"]"]
    return _Streamed(chunks, "application/json; charset=UTF-8", cut_at=cut_at)


# --- batch APIs ---------------------------------------------------------------------------------------------------
# OpenAI Batch (`/v1/files` + `/v1/batches`) and Anthropic Message Batches (`/v1/messages/batches`). Every line is
# answered by the live chat logic when the batch is created (markers work per line, so `[429]` yields an errored
# line; `[slow]` does not wait), and the batch reports itself finished on its (batch_polls_until_done + 1)-th
# retrieve, or as cancelled on the first retrieve after a cancel.

_FILE_PATH = re.compile(r"^/v1/files/([^/]+)(/content)?$")
_OPENAI_BATCH_PATH = re.compile(r"^/v1/batches/([^/]+)(/cancel)?$")
_ANTHROPIC_BATCH_PATH = re.compile(r"^/v1/messages/batches/([^/]+)(/cancel|/results)?$")
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
BATCH_ENDPOINTS = ("/v1/chat/completions",)  # the one batch endpoint the fake serves
BATCH_WINDOW_SECONDS = 24 * 3600


@dataclass
class FakeBatch:
    """A batch the fake holds: `results` maps custom_id -> (HTTP status, response body), computed at creation."""

    id: str
    provider: str
    obj: dict[str, Any]  # the batch object as the API last showed it
    custom_ids: list[str]
    results: dict[str, tuple[int, bytes]]
    polls: int = 0
    cancelled: bool = False
    done: bool = False


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def _chat_once(fake: FakeProviders, provider: str, body: Any) -> _Full:
    """One non-streaming answer by the live chat logic, as a batch line gets it."""
    seq = next(fake._seq)
    error = _openai_validate(body) if provider == "openai" else _anthropic_validate(body)
    if error:
        return error
    body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    turn = _openai_turn(body) if provider == "openai" else _anthropic_turn(body)
    error = _scenario_error(provider, turn)
    if error:
        return error
    reply = _plan(turn)
    response = (_openai_response if provider == "openai" else _anthropic_response)(body, turn, reply, seq)
    assert isinstance(response, _Full)
    return response


def _multipart(headers: dict[str, str], raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename, bytes)."""
    match = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
    if not headers.get("content-type", "").startswith("multipart/form-data") or not match:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in raw.split(b"--" + match.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        name = re.search(rb'\bname="([^"]*)"', head)
        filename = re.search(rb'\bfilename="([^"]*)"', head)
        if name:
            fields[name.group(1).decode()] = (
                filename.group(1).decode() if filename else None,
                data[:-2] if data.endswith(b"\r\n") else data,
            )
    return fields


def _file_object(fid: str, f: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": fid,
        "object": "file",
        "bytes": len(f["data"]),
        "created_at": f["created_at"],
        "filename": f["filename"],
        "purpose": f["purpose"],
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def _add_file(fake: FakeProviders, data: bytes, filename: str, purpose: str) -> str:
    fid = f"file-fake{next(fake._seq):06d}"
    fake.files[fid] = {"data": data, "filename": filename, "purpose": purpose, "created_at": int(time.time())}
    return fid


def _openai_batch_api(
    fake: FakeProviders, method: str, path: str, headers: dict[str, str], body: Any, raw: bytes
) -> _Full:
    if (method, path) == ("POST", "/v1/files"):
        fields = _multipart(headers, raw)
        for name in ("file", "purpose"):
            if name not in fields:
                return _openai_error(
                    400, f"Missing required parameter: '{name}'.", "invalid_request_error", name,
                    "missing_required_parameter",
                )
        purpose = fields["purpose"][1].decode()
        if purpose not in ("batch", "fine-tune", "assistants", "vision", "user_data", "evals"):
            return _openai_error(400, f"Invalid value for purpose: '{purpose}'.", "invalid_request_error", "purpose")
        filename, data = fields["file"]
        fid = _add_file(fake, data, filename or "upload", purpose)
        return _json(200, _file_object(fid, fake.files[fid]))
    match = _FILE_PATH.match(path)
    if match and method == "GET":
        f = fake.files.get(match.group(1))
        if f is None:
            return _openai_error(404, f"No such File object: {match.group(1)}", "invalid_request_error", "id")
        if match.group(2):
            return _Full(200, f["data"], "application/octet-stream")
        return _json(200, _file_object(match.group(1), f))
    if (method, path) == ("POST", "/v1/batches"):
        return _openai_create_batch(fake, body)
    match = _OPENAI_BATCH_PATH.match(path)
    if match and (method, bool(match.group(2))) in (("GET", False), ("POST", True)):
        batch = fake.batches.get(match.group(1))
        if batch is None or batch.provider != "openai":
            return _openai_error(404, f"No batch found with id '{match.group(1)}'.", "invalid_request_error")
        if match.group(2):
            if batch.done:
                return _openai_error(
                    400, f"Cannot cancel a batch with status '{batch.obj['status']}'.", "invalid_request_error"
                )
            batch.cancelled = True
            batch.obj.update(status="cancelling", cancelling_at=int(time.time()))
            return _json(200, batch.obj)
        _openai_poll(fake, batch)
        return _json(200, batch.obj)
    return _openai_error(404, f"Invalid URL ({method} {path})", "invalid_request_error")


def _openai_create_batch(fake: FakeProviders, body: Any) -> _Full:
    if not isinstance(body, dict):
        return _openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            return _openai_error(
                400, f"Missing required parameter: '{name}'.", "invalid_request_error", name,
                "missing_required_parameter",
            )
    endpoint = body["endpoint"]
    if endpoint not in BATCH_ENDPOINTS:
        return _openai_error(
            400, f"Invalid value: '{endpoint}'. Supported values are: {', '.join(map(repr, BATCH_ENDPOINTS))}.",
            "invalid_request_error", "endpoint", "invalid_value",
        )
    if body["completion_window"] != "24h":
        return _openai_error(
            400, f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.",
            "invalid_request_error", "completion_window", "invalid_value",
        )
    f = fake.files.get(body["input_file_id"])
    if f is None or f["purpose"] != "batch":
        return _openai_error(
            400, f"Invalid 'input_file_id': '{body['input_file_id']}'. Upload a file with purpose 'batch' first.",
            "invalid_request_error", "input_file_id",
        )
    now = int(time.time())
    bid = f"batch_fake{next(fake._seq):06d}"
    # Lines are validated up front, as the API's "validating" phase does; any problem fails the whole batch.
    problems: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    for i, text in enumerate(f["data"].decode("utf-8", "replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            problems.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                             "param": None, "line": i})
            continue
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            problem = "Missing required parameter: 'custom_id'."
        elif line.get("method") != "POST" or line.get("url") != endpoint:
            problem = f"The url and method of every request must be POST {endpoint}."
        elif not isinstance(line.get("body"), dict):
            problem = "Missing required parameter: 'body'."
        elif any(x["custom_id"] == line["custom_id"] for x in lines):
            problem = f"The custom_id '{line['custom_id']}' is used by more than one request."
        elif lines and line["body"].get("model") != lines[0]["body"].get("model"):
            problem = "All requests in a batch must use the same model."
        else:
            lines.append(line)
            continue
        problems.append({"code": "invalid_request", "message": problem, "param": None, "line": i})
    if not lines and not problems:
        problems.append({"code": "empty_file", "message": "The input file is empty.", "param": None, "line": None})
    obj: dict[str, Any] = {
        "id": bid, "object": "batch", "endpoint": endpoint, "errors": None, "input_file_id": body["input_file_id"],
        "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
        "created_at": now, "in_progress_at": None, "expires_at": now + BATCH_WINDOW_SECONDS, "finalizing_at": None,
        "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
    }
    batch = FakeBatch(bid, "openai", obj, [x["custom_id"] for x in lines], {})
    if problems:
        obj.update(status="failed", failed_at=now, errors={"object": "list", "data": problems})
        batch.done = True
    else:
        for line in lines:
            r = _chat_once(fake, "openai", line["body"])
            batch.results[line["custom_id"]] = (r.status, r.body)
    fake.batches[bid] = batch
    return _json(200, obj)


def _openai_poll(fake: FakeProviders, batch: FakeBatch) -> None:
    batch.polls += 1
    if batch.done:
        return
    now = int(time.time())
    if batch.cancelled:
        batch.done = True
        batch.obj.update(status="cancelled", cancelled_at=now)
        return
    if batch.polls <= fake.batch_polls_until_done:
        batch.obj.update(status="in_progress", in_progress_at=batch.obj["in_progress_at"] or now)
        return
    out: list[bytes] = []
    errors: list[bytes] = []
    for cid in batch.custom_ids:
        status, data = batch.results[cid]
        try:
            parsed: Any = json.loads(data)
        except ValueError:
            parsed = data.decode("utf-8", "replace")  # [malformed]: the body as text, still one JSON line
        seq = next(fake._seq)
        line = {
            "id": f"batch_req_fake{seq:06d}",
            "custom_id": cid,
            "response": {"status_code": status, "request_id": f"req_fake{seq:06d}", "body": parsed},
            "error": None,
        }
        (out if status == 200 else errors).append(_compact(line) + b"\n")
    if out:
        batch.obj["output_file_id"] = _add_file(fake, b"".join(out), f"{batch.id}_output.jsonl", "batch_output")
    if errors:
        batch.obj["error_file_id"] = _add_file(fake, b"".join(errors), f"{batch.id}_error.jsonl", "batch_output")
    batch.done = True
    batch.obj.update(
        status="completed", in_progress_at=batch.obj["in_progress_at"] or now, finalizing_at=now, completed_at=now,
        request_counts={"total": len(batch.custom_ids), "completed": len(out), "failed": len(errors)},
    )


def _anthropic_batch_api(fake: FakeProviders, method: str, path: str, body: Any) -> _Full:
    if (method, path) == ("POST", "/v1/messages/batches"):
        return _anthropic_create_batch(fake, body)
    match = _ANTHROPIC_BATCH_PATH.match(path)
    action = match.group(2) if match else None
    if not match or (method, action) not in (("GET", None), ("POST", "/cancel"), ("GET", "/results")):
        return _anthropic_error(404, "not_found_error", "Not Found")
    batch = fake.batches.get(match.group(1))
    if batch is None or batch.provider != "anthropic":
        return _anthropic_error(404, "not_found_error", f"Message batch {match.group(1)!r} not found.")
    if action == "/cancel":
        if not batch.done:
            batch.cancelled = True
            batch.obj.update(processing_status="canceling", cancel_initiated_at=_rfc3339(time.time()))
        return _json(200, batch.obj)
    if action == "/results":
        if not batch.done:
            return _anthropic_error(
                404, "not_found_error", f"Results for batch {batch.id!r} are not available until it has ended."
            )
        lines = []
        for cid in batch.custom_ids:
            status, data = batch.results.get(cid, (0, b""))
            if not status:
                result: dict[str, Any] = {"type": "canceled"}
            elif status == 200:
                result = {"type": "succeeded", "message": json.loads(data)}
            else:
                err = json.loads(data) if data.startswith(b"{") else {}
                if err.get("type") != "error":  # [malformed]: the API would report its own failure
                    err = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"},
                           "request_id": None}
                result = {"type": "errored", "error": err}
            lines.append(_compact({"custom_id": cid, "result": result}) + b"\n")
        return _Full(200, b"".join(lines), "application/binary")
    batch.polls += 1
    if not batch.done and (batch.cancelled or batch.polls > fake.batch_polls_until_done):
        if batch.cancelled:
            batch.results.clear()  # nothing had been processed yet: every request is canceled
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        for cid in batch.custom_ids:
            status = batch.results.get(cid, (0, b""))[0]
            counts["canceled" if not status else "succeeded" if status == 200 else "errored"] += 1
        batch.done = True
        batch.obj.update(
            processing_status="ended", request_counts=counts, ended_at=_rfc3339(time.time()),
            results_url=f"{fake.base_url}/v1/messages/batches/{batch.id}/results",
        )
    return _json(200, batch.obj)


def _anthropic_create_batch(fake: FakeProviders, body: Any) -> _Full:
    requests = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return _anthropic_error(400, "invalid_request_error", "requests: List should have at least 1 item")
    seen: set[str] = set()
    for i, r in enumerate(requests):
        cid = r.get("custom_id") if isinstance(r, dict) else None
        if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
            return _anthropic_error(
                400, "invalid_request_error", f"requests.{i}.custom_id: String should match pattern "
                "'^[a-zA-Z0-9_-]{1,64}$'",
            )
        if cid in seen:
            return _anthropic_error(400, "invalid_request_error", f"Duplicate custom_id {cid!r} in requests.")
        if not isinstance(r.get("params"), dict):
            return _anthropic_error(400, "invalid_request_error", f"requests.{i}.params: Field required")
        seen.add(cid)
    now = time.time()
    bid = f"msgbatch_fake{next(fake._seq):06d}"
    obj = {
        "id": bid, "type": "message_batch", "processing_status": "in_progress",
        "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
        "ended_at": None, "created_at": _rfc3339(now), "expires_at": _rfc3339(now + BATCH_WINDOW_SECONDS),
        "archived_at": None, "cancel_initiated_at": None, "results_url": None,
    }
    batch = FakeBatch(bid, "anthropic", obj, [r["custom_id"] for r in requests], {})
    for r in requests:  # params are checked per request: a bad one is an errored result, not a failed batch
        answer = _chat_once(fake, "anthropic", r["params"])
        batch.results[r["custom_id"]] = (answer.status, answer.body)
    fake.batches[bid] = batch
    return _json(200, obj)


# --- the ASGI app -------------------------------------------------------------------------------------------------


class _Disconnect:
    """Watches `receive` for http.disconnect once the body has been read."""

    def __init__(self, receive: Callable[[], Any]) -> None:
        self.event = asyncio.Event()
        self._task = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Callable[[], Any]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.event.set()

    def close(self) -> None:
        self._task.cancel()


class _App:
    def __init__(self, fake: FakeProviders) -> None:
        self.fake = fake

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(parse_qsl(scope.get("query_string", b"").decode()))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        method, path = scope["method"], scope["path"]
        provider = self._provider(path, headers)
        self.fake.calls.append(Call(provider, method, path, query, headers, body, raw))

        disconnect = _Disconnect(receive)
        try:
            response = await self._handle(provider, method, path, query, headers, body, raw, disconnect)
            if response is not None:
                await self._send(send, response, disconnect)
        finally:
            disconnect.close()

    @staticmethod
    def _provider(path: str, headers: dict[str, str]) -> str:
        if path.startswith(("/v1beta/", "/v1alpha/")) or _GEMINI_PATH.match(path):
            return "gemini"
        if path.startswith("/v1/messages"):
            return "anthropic"
        if path.startswith("/v1/models") and ("x-api-key" in headers or "anthropic-version" in headers):
            return "anthropic"
        return "openai"

    async def _handle(
        self,
        provider: str,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: Any,
        raw: bytes,
        disconnect: _Disconnect,
    ) -> _Full | _Streamed | None:
        fake = self.fake
        seq = next(fake._seq)

        if provider == "openai":
            auth = headers.get("authorization", "")
            key = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not key:
                return _openai_error(
                    401,
                    "You didn't provide an API key. You need to provide your API key in an Authorization header "
                    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank "
                    "username) if you're accessing the API from your browser and are prompted for a username and "
                    "password. You can obtain an API key from https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                )
            if not fake.key_ok("openai", key):
                return _openai_error(
                    401,
                    f"Incorrect API key provided: {key[:3]}***{key[-2:]}. You can find your API key at "
                    "https://platform.openai.com/account/api-keys.",
                    "invalid_request_error",
                    code="invalid_api_key",
                )
            if (method, path) == ("GET", "/v1/models"):
                models = [
                    {"id": m, "object": "model", "created": 1715367049, "owned_by": "system"}
                    for m in fake.models["openai"]
                ]
                return _json(200, {"object": "list", "data": models})
            if path.startswith(("/v1/files", "/v1/batches")):
                return _openai_batch_api(fake, method, path, headers, body, raw)
            if (method, path) == ("POST", "/v1/responses"):
                provider = "responses"
                error = _responses_validate(raw if body is None and raw else body)
                if error:
                    return error
                turn = _responses_turn(body)
            elif (method, path) != ("POST", "/v1/chat/completions"):
                return _openai_error(404, f"Invalid URL ({method} {path})", "invalid_request_error")
            else:
                if body is None and raw:
                    body = raw  # not JSON: let validation produce the parse error
                error = _openai_validate(body)
                if error:
                    return error
                turn = _openai_turn(body)
            streaming = bool(body.get("stream"))
        elif provider == "anthropic":
            # The documented header is x-api-key; recent SDKs send the same key as a Bearer token instead.
            auth = headers.get("authorization", "")
            key = headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
            if not key:
                return _anthropic_error(401, "authentication_error", "x-api-key header is required")
            if not fake.key_ok("anthropic", key):
                return _anthropic_error(401, "authentication_error", "invalid x-api-key")
            if "anthropic-version" not in headers:
                return _anthropic_error(400, "invalid_request_error", "anthropic-version: header is required")
            if (method, path) == ("GET", "/v1/models"):
                models = [
                    {"type": "model", "id": m, "display_name": m, "created_at": "2025-05-22T00:00:00Z"}
                    for m in fake.models["anthropic"]
                ]
                page = {"data": models, "has_more": False, "first_id": models[0]["id"], "last_id": models[-1]["id"]}
                return _json(200, page)
            if path.startswith("/v1/messages/batches"):
                return _anthropic_batch_api(fake, method, path, body)
            if (method, path) == ("POST", "/v1/messages/count_tokens"):
                return _anthropic_count_tokens(body)
            if (method, path) != ("POST", "/v1/messages"):
                return _anthropic_error(404, "not_found_error", "Not Found")
            error = _anthropic_validate(body, headers.get("anthropic-beta", ""))
            if error:
                return error
            turn = _anthropic_turn(body)
            streaming = bool(body.get("stream"))
        else:
            key = headers.get("x-goog-api-key") or query.get("key", "")
            if not key:
                return _gemini_error(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established identity). Please use "
                    "API Key or other form of API consumer identity to call this API.",
                )
            if not fake.key_ok("gemini", key):
                info = {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }
                # Google answers a bad key with 400 INVALID_ARGUMENT, not 401.
                return _gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [info])
            match = _GEMINI_PATH.match(path)
            if method == "GET" and path.rstrip("/") in ("/v1beta/models", "/v1/models"):
                models = [
                    {"name": f"models/{m}", "displayName": m, "supportedGenerationMethods": ["generateContent"]}
                    for m in fake.models["gemini"]
                ]
                return _json(200, {"models": models}, indent=2)
            if method != "POST" or not match:
                return _gemini_error(404, "NOT_FOUND", f"Method not found: {method} {path}")
            error = _gemini_validate(body)
            if error:
                return error
            turn = _gemini_turn(match.group(2), body)
            streaming = match.group(3) == "streamGenerateContent"

        if turn.has("[slow]") and not await self._wait(disconnect, fake.slow_seconds):
            if fake._stopping:
                raise _CutStream
            fake.requests_abandoned += 1
            return None
        error = _scenario_error("openai" if provider == "responses" else provider, turn)
        if error:
            return error
        reply = _plan(turn)
        if provider == "responses":
            response = _responses_response(body, turn, reply, seq)
        elif provider == "openai":
            response = _openai_response(body, turn, reply, seq)
        elif provider == "anthropic":
            response = _anthropic_response(body, turn, reply, seq)
        else:
            response = _gemini_response(turn, reply, seq, stream=streaming, sse=query.get("alt") == "sse")
        if isinstance(response, _Streamed):
            if not turn.has("[cut]"):
                response.cut_at = None
            if turn.has("[long]"):
                response.delay = LONG_DELAY
        return response

    async def _wait(self, disconnect: _Disconnect, seconds: float) -> bool:
        """Sleep without blocking other requests; False as soon as the client leaves or the server stops."""
        deadline = time.monotonic() + seconds
        while not (disconnect.event.is_set() or self.fake._stopping):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(disconnect.event.wait(), min(remaining, 0.05))
        return False

    async def _send(self, send: Callable[[Any], Any], response: _Full | _Streamed, disconnect: _Disconnect) -> None:
        fake = self.fake
        if isinstance(response, _Full):
            headers = [
                (b"content-type", response.content_type.encode()),
                (b"content-length", str(len(response.body)).encode()),
                *[(k.encode(), v.encode()) for k, v in response.headers],
            ]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
            return
        # No content-length: uvicorn uses chunked encoding, so an abrupt close is visible to the client.
        headers = [
            (b"content-type", response.content_type.encode()),
            (b"cache-control", b"no-cache"),
            *[(k.encode(), v.encode()) for k, v in response.headers],
        ]
        fake.streams_started += 1
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        for i, chunk in enumerate(response.chunks):
            if i == response.cut_at:
                fake.streams_cut += 1
                raise _CutStream
            if fake._stopping:
                raise _CutStream
            if disconnect.event.is_set():
                fake.streams_cancelled += 1
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if response.delay:
                await self._wait(disconnect, response.delay)
        # Everything was sent: a client that hangs up now (e.g. right after [DONE]) still got a complete stream.
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        fake.streams_completed += 1


# --- running it ---------------------------------------------------------------------------------------------------


class FakeProviders:
    """The fake server: uvicorn in a background thread with its own event loop.

    Attributes: `base_url` ("http://127.0.0.1:PORT"), `openai_base_url` (base_url + "/v1"), `anthropic_base_url`,
    `gemini_base_url`, `keys` (provider -> valid key), `calls` (every request, in order), counters
    `streams_started`, `streams_completed`, `streams_cancelled` (client left mid-stream), `streams_cut` ([cut]),
    `requests_abandoned` (client left during [slow]), and `slow_seconds` (the [slow] delay, default 30).
    Batch APIs: `files` and `batches` hold what clients created; `batch_polls_until_done` is how many retrieves
    of a batch still show it in progress (default 0: the first retrieve after creation finds it finished).
    """

    def __init__(
        self, keys: dict[str, str | Collection[str]] | None = None, *, slow_seconds: float = SLOW_SECONDS
    ) -> None:
        unknown = set(keys or {}) - set(PROVIDERS)
        if unknown:
            raise ValueError(f"unknown providers in keys: {sorted(unknown)}")
        self.keys: dict[str, str | Collection[str]] = {**DEFAULT_KEYS, **(keys or {})}
        self.models: dict[str, list[str]] = {
            "openai": ["gpt-4o-mini", "gpt-4o", "o3-mini"],
            "anthropic": ["claude-sonnet-4-5", "claude-haiku-4-5"],
            "gemini": ["gemini-2.5-flash", "gemini-2.5-pro"],
        }
        self.slow_seconds = slow_seconds
        self.batch_polls_until_done = 0  # batch retrieves that still show a batch in progress
        self.files: dict[str, dict[str, Any]] = {}  # OpenAI files: id -> data, filename, purpose, created_at
        self.batches: dict[str, FakeBatch] = {}  # OpenAI and Anthropic batches by id
        self.calls: list[Call] = []
        self.port = 0
        self._seq = itertools.count(1)
        self._stopping = False
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.reset()

    def reset(self) -> None:
        """Forget recorded calls, files and batches and zero the counters (keys and slow_seconds stay)."""
        self.calls.clear()
        self.files.clear()
        self.batches.clear()
        self.streams_started = 0
        self.streams_completed = 0
        self.streams_cancelled = 0
        self.streams_cut = 0
        self.requests_abandoned = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    @property
    def gemini_base_url(self) -> str:
        return self.base_url

    def key_ok(self, provider: str, key: str) -> bool:
        valid = self.keys[provider]
        return key == valid if isinstance(valid, str) else key in valid

    def calls_for(self, provider: str) -> list[Call]:
        return [c for c in self.calls if c.provider == provider]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll `predicate` (e.g. ``lambda: fake.streams_cancelled == 1``): the server notices events asynchronously."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def start(self) -> FakeProviders:
        if self._thread is not None:
            raise RuntimeError("already started")
        # Bind first so the port is known and nobody can grab it between picking and serving.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            _App(self),
            loop="asyncio",
            http="h11",
            ws="none",
            interface="asgi3",
            lifespan="off",
            log_config=None,  # leave the process's logging configuration alone
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._stopping = False
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"fake-providers-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake provider server did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the server and join its thread; in-flight [slow]/[long] responses are dropped."""
        if self._thread is None:
            return
        self._stopping = True
        assert self._server is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._thread = self._server = self._sock = None

    def __enter__(self) -> FakeProviders:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_fake_providers(
    keys: dict[str, str | Collection[str]] | None = None, *, slow_seconds: float = SLOW_SECONDS
) -> FakeProviders:
    """Start the fake server and return it, already accepting connections; use it as a context manager or call
    `.stop()`. `keys` overrides the valid key per provider ("openai", "anthropic", "gemini"); a collection of
    strings allows several keys."""
    return FakeProviders(keys, slow_seconds=slow_seconds).start()


@pytest.fixture(scope="session")
def fake_providers_server() -> Iterator[FakeProviders]:
    """One fake server for the whole session (started on first use)."""
    with run_fake_providers() as fake:
        yield fake


@pytest.fixture
def fake_providers(fake_providers_server: FakeProviders) -> FakeProviders:
    """The session's fake server, with calls and counters reset for this test."""
    fake_providers_server.reset()
    fake_providers_server.slow_seconds = SLOW_SECONDS
    fake_providers_server.batch_polls_until_done = 0
    return fake_providers_server
