"""Google Gemini `generateContent` wire format, spoken to Gemini as a provider.

Requests go to `POST {base}/models/{model}:generateContent` (or `:streamGenerateContent?alt=sse`, where every
SSE `data:` is a whole `GenerateContentResponse` chunk); the model name lives in the URL, not the body.

Choices worth knowing:
- Tool schemas go out as `parametersJsonSchema` and response schemas as `responseJsonSchema`: both take plain
  JSON Schema (`additionalProperties`, `anyOf`, `$ref`, lowercase types...), so client schemas pass through
  without the lossy rewrite the OpenAPI-subset `parameters` / `responseSchema` fields would need. Only the
  root `$schema` / `$id` meta keys are dropped. (The two fields are mutually exclusive with their older twins.)
- Gemini needs the function NAME beside a function response; it comes from `ToolResult.name` or from the
  most recent earlier `ToolCall` with the same id.
- Gemini 3 rejects replayed `functionCall` parts without a `thoughtSignature`. The neutral model has nowhere
  to keep Gemini's real signature across a client round trip, so replayed calls carry Google's documented
  bypass value instead (see `_SKIP_SIGNATURE`).
- Gemini thought signatures are never exposed as `Thinking.signature`: that slot is for Anthropic, which
  would reject a Gemini signature.

Pure translation, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mcp_prism.providers.formats import new_id
from mcp_prism.providers.formats import retry_after as header_retry_after
from mcp_prism.providers.usage_check import checked_usage
from mcp_prism.providers.wire import (
    BlockStop,
    ChatRequest,
    ChatResponse,
    ErrorKind,
    Image,
    Message,
    Part,
    StopReason,
    StreamEnd,
    StreamEvent,
    StreamStart,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    Tool,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolResult,
    Usage,
    WireError,
    kind_for_status,
)

# Google's documented value for a functionCall whose real signature is unavailable (history from another
# model or rebuilt by a client): https://ai.google.dev/gemini-api/docs/thought-signatures
_SKIP_SIGNATURE = "skip_thought_signature_validator"

_CONTENT_FILTER_REASONS = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII",
                                     "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})

_FINISH_OF_STOP: dict[str, str] = {"end": "STOP", "tool_use": "STOP", "stop_sequence": "STOP",
                                   "length": "MAX_TOKENS", "content_filter": "SAFETY", "error": "OTHER"}

# google.rpc status strings -> neutral kinds (https://ai.google.dev/gemini-api/docs/troubleshooting)
_KIND_OF_STATUS: dict[str, ErrorKind] = {
    "INVALID_ARGUMENT": "invalid_request", "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request", "UNAUTHENTICATED": "authentication", "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found", "RESOURCE_EXHAUSTED": "rate_limited", "INTERNAL": "provider_error",
    "UNKNOWN": "provider_error", "UNAVAILABLE": "overloaded", "DEADLINE_EXCEEDED": "timeout",
    "CANCELLED": "provider_error",
}
_STATUS_OF_KIND: dict[str, str] = {
    "invalid_request": "INVALID_ARGUMENT", "authentication": "UNAUTHENTICATED", "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND", "request_too_large": "INVALID_ARGUMENT", "rate_limited": "RESOURCE_EXHAUSTED",
    "provider_error": "INTERNAL", "timeout": "DEADLINE_EXCEEDED", "overloaded": "UNAVAILABLE",
}

# Gemini 3+: thinkingLevel. Gemini 2.5: thinkingBudget in tokens (0 = off, Flash only; Pro's floor is 128).
_LEVEL_OF_EFFORT = {"none": "MINIMAL", "minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
                    "xhigh": "HIGH"}
_BUDGET_OF_EFFORT = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 24576}

_IMAGE_EXT = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
              "webp": "image/webp", "heic": "image/heic", "heif": "image/heif"}
_IMAGE_MAGIC = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"), ("UklGR", "image/webp"))


# ---------------------------------------------------------------- request: neutral -> Gemini
def build_request(req: ChatRequest, model: str) -> dict[str, Any]:
    """The JSON body for `models/{model}:generateContent`; `model` only steers model-specific fields."""
    if not req.messages:
        raise WireError(400, "invalid_request", "the request has no messages; Gemini needs at least one")
    body: dict[str, Any] = {"contents": _contents(req.messages, _needs_signature(model))}
    system = [{"text": t.text} for t in req.system if t.text]
    if system:
        body["systemInstruction"] = {"parts": system}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in req.tools]}]
        if req.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _calling_config(req.tool_choice, req.tools)}
    config = _generation_config(req, model)
    if config:
        body["generationConfig"] = config
    return body


def _contents(messages: list[Message], sign_calls: bool) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool_call_id -> name, as of this point in the conversation
    contents: list[dict[str, Any]] = []
    for m_index, message in enumerate(messages):
        role = "model" if message.role == "assistant" else "user"
        responses: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, Text):
                if part.text:  # Gemini rejects empty text parts
                    others.append({"text": part.text})
            elif isinstance(part, Image):
                others.append(_image_part(part))
            elif isinstance(part, ToolCall):
                if role != "model":
                    raise WireError(400, "invalid_request",
                                    f"messages[{m_index}]: a tool call can only appear in an assistant message")
                names[part.id] = part.name
                call: dict[str, Any] = {"functionCall": {"id": part.id, "name": part.name,
                                                         "args": _args_object(part.arguments)}}
                if sign_calls:
                    call["thoughtSignature"] = _SKIP_SIGNATURE
                others.append(call)
            elif isinstance(part, ToolResult):
                name = part.name or names.get(part.tool_call_id)
                if not name:
                    raise WireError(400, "invalid_request",
                                    f"messages[{m_index}]: tool result {part.tool_call_id!r} matches no earlier "
                                    "tool call, and Gemini needs the function name to send it")
                responses.append({"functionResponse": {"id": part.tool_call_id, "name": name,
                                                       "response": _result_object(part)}})
                # Images ride beside the response: every Gemini model takes inline parts in a user turn.
                others.extend(_image_part(c) for c in part.content if isinstance(c, Image))
            # Thinking is dropped: another provider's reasoning means nothing to Gemini.
        parts = responses + others  # function responses first, so parallel results stay together
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:  # Gemini wants alternating turns
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if not contents:
        raise WireError(400, "invalid_request", "every message is empty; Gemini needs at least one non-empty part")
    return contents


def _args_object(arguments: str) -> dict[str, Any]:
    # Lenient on purpose: a truncated call from an earlier turn (another model hit max tokens) must not make
    # the whole conversation unsendable, so junk is kept as text rather than rejected.
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _result_object(result: ToolResult) -> dict[str, Any]:
    text = "".join(c.text for c in result.content if isinstance(c, Text))
    # "output" / "error" are the keys Gemini documents for a function response.
    return {"error": text} if result.is_error else {"output": text}


def _image_part(image: Image) -> dict[str, Any]:
    if image.data is not None:
        return {"inlineData": {"mimeType": image.media_type or _sniff_mime(image.data), "data": image.data}}
    url = image.url or ""
    match = re.match(r"data:([^;,]+)?(?:;[^,]*)?,(.*)", url, re.DOTALL)
    if match:
        data = match.group(2)
        return {"inlineData": {"mimeType": match.group(1) or _sniff_mime(data), "data": data}}
    if not url:
        raise WireError(400, "invalid_request", "an image part has neither data nor url")
    ext = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
    # fileData needs a mimeType; Gemini reads the real format from the bytes, so JPEG is a safe fallback.
    return {"fileData": {"mimeType": image.media_type or _IMAGE_EXT.get(ext, "image/jpeg"), "fileUri": url}}


def _sniff_mime(data: str) -> str:
    return next((mime for prefix, mime in _IMAGE_MAGIC if data.startswith(prefix)), "image/jpeg")


def _declaration(tool: Tool) -> dict[str, Any]:
    decl: dict[str, Any] = {"name": tool.name}
    if tool.description:
        decl["description"] = tool.description
    schema = {k: v for k, v in tool.parameters.items() if k not in ("$schema", "$id")}
    if schema and schema != {"type": "object"}:  # a function without parameters leaves the field unset
        decl["parametersJsonSchema"] = schema
    return decl


def _calling_config(choice: str, tools: list[Tool]) -> dict[str, Any]:
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}.get(choice)
    if mode:
        return {"mode": mode}
    if choice not in {t.name for t in tools}:
        raise WireError(400, "invalid_request", f"tool_choice names {choice!r}, which is not among the tools")
    return {"mode": "ANY", "allowedFunctionNames": [choice]}


def _generation_config(req: ChatRequest, model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if req.max_tokens is not None:
        config["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.top_p is not None:
        config["topP"] = req.top_p
    if req.stop:
        config["stopSequences"] = list(req.stop)
    fmt = req.response_format or {}
    if fmt.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    elif fmt.get("type") == "json_schema":
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            config["responseJsonSchema"] = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    thinking = _thinking_config(req.reasoning_effort, model)
    if thinking:
        config["thinkingConfig"] = thinking
    return config


def _gemini_version(model: str) -> int | None:
    match = re.search(r"gemini-(\d+)", model)
    return int(match.group(1)) if match else None


def _needs_signature(model: str) -> bool:
    # Gemini 3 and later validate signatures; unversioned aliases (gemini-flash-latest) point there too.
    version = _gemini_version(model)
    return "gemini" in model and (version is None or version >= 3)


def _thinking_config(effort: str | None, model: str) -> dict[str, Any] | None:
    if effort is None or effort not in _LEVEL_OF_EFFORT:
        return None  # unknown efforts are left to the model's default rather than guessed at
    version = _gemini_version(model)
    if version is not None and version < 3:
        if "gemini-2.5" not in model:
            return None  # 1.x / 2.0 reject thinkingConfig outright
        budget = _BUDGET_OF_EFFORT[effort]
        if budget == 0 and "pro" in model:
            budget = 128  # 2.5 Pro cannot turn thinking off
        return {"thinkingBudget": budget, "includeThoughts": budget > 0}
    level = _LEVEL_OF_EFFORT[effort]
    if "gemini-3-pro" in model:  # 3 Pro has only LOW and HIGH
        level = "HIGH" if level in ("MEDIUM", "HIGH") else "LOW"
    return {"thinkingLevel": level, "includeThoughts": True}


# ---------------------------------------------------------------- response: Gemini -> neutral
def parse_response(body: dict[str, Any]) -> ChatResponse:
    candidates = body.get("candidates") or []
    usage = usage_of(body)
    resp_id = body.get("responseId") or new_id("gen_")
    model = body.get("modelVersion") or ""
    created = _unix_time(body.get("createTime"))
    if not candidates:
        blocked = (body.get("promptFeedback") or {}).get("blockReason")
        return ChatResponse(resp_id, model, [], "content_filter" if blocked else "end", usage, created=created)
    candidate = candidates[0]
    content: list[Text | ToolCall | Thinking] = []
    calls = 0
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            fc = part["functionCall"] or {}
            content.append(ToolCall(fc.get("id") or _call_id(resp_id, calls), fc.get("name", ""),
                                    json.dumps(fc.get("args") or {}, ensure_ascii=False)))
            calls += 1
        elif part.get("text"):
            if part.get("thought"):
                if content and isinstance(content[-1], Thinking):
                    content[-1].text += part["text"]
                else:
                    content.append(Thinking(part["text"]))
            elif content and isinstance(content[-1], Text):
                content[-1].text += part["text"]
            else:
                content.append(Text(part["text"]))
    stop = _stop_reason(candidate.get("finishReason"), calls > 0)
    return ChatResponse(resp_id, model, content, stop, usage, created=created)


def _stop_reason(finish: str | None, has_calls: bool) -> StopReason:
    if finish == "MAX_TOKENS":
        return "length"
    if finish in _CONTENT_FILTER_REASONS:
        return "content_filter"
    return "tool_use" if has_calls else "end"


def _call_id(resp_id: str, n: int) -> str:
    # Gemini rarely gives call ids; tie generated ones to the response so turns never reuse an id.
    tag = re.sub(r"[^A-Za-z0-9_-]", "", resp_id)[:24]
    return f"call_{tag}_{n}" if tag else f"call_{n}"


def _unix_time(stamp: Any) -> int | None:
    if not isinstance(stamp, str):
        return None
    try:
        return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


@checked_usage  # bad counts from upstream are dropped and the usage marked invalid
def usage_of(body: Mapping[str, Any]) -> Usage:
    """Neutral usage from `usageMetadata`.

    Per the GenerateContentResponse.UsageMetadata reference (ai.google.dev/api/generate-content, mirrored in
    google-genai `types.GenerateContentResponseUsageMetadata`): `promptTokenCount` already includes
    `cachedContentTokenCount`; `totalTokenCount` is the sum of prompt, candidates, `toolUsePromptTokenCount`
    and `thoughtsTokenCount`, so thoughts are NOT inside `candidatesTokenCount` and tool-use prompt tokens are
    NOT inside `promptTokenCount`. Hence input = prompt + tool-use prompt, output = candidates + thoughts.
    """
    meta = body.get("usageMetadata") or {}
    prompt = int(meta.get("promptTokenCount") or 0)
    tool_prompt = int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    candidates = int(meta.get("candidatesTokenCount") or 0)
    input_tokens = prompt + tool_prompt
    cached = min(int(meta.get("cachedContentTokenCount") or 0), input_tokens)
    return Usage(input_tokens=input_tokens, output_tokens=candidates + thoughts, cached_input_tokens=cached,
                 reasoning_tokens=thoughts)


# ---------------------------------------------------------------- streaming
class StreamDecoder:
    """Turns `streamGenerateContent?alt=sse` chunks into neutral stream events.

    Every chunk is a whole GenerateContentResponse holding only new parts; function calls arrive complete,
    so each becomes start + one args delta + stop. Gemini sends no [DONE]: call `finish()` at end of stream.
    """

    def __init__(self) -> None:
        self._id = ""
        self._started = False
        self._ended = False
        self._open: tuple[str, int] | None = None  # (kind, index) of the open text or thinking block
        self._next_index = 0
        self._calls = 0
        self._usage: Usage | None = None
        self._first_token = False

    @property
    def usage(self) -> Usage:
        return self._usage or Usage()

    @property
    def first_token_seen(self) -> bool:
        return self._first_token

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        if not data.strip():
            return []
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise WireError(502, "provider_error", f"Gemini sent a stream chunk that is not JSON: {data[:200]!r}") \
                from exc
        if isinstance(chunk, list):  # an error mid-stream can arrive in the array form
            chunk = chunk[0] if chunk and isinstance(chunk[0], dict) else {}
        if not isinstance(chunk, dict):
            raise WireError(502, "provider_error", "Gemini sent a stream chunk that is not a JSON object")
        if "error" in chunk:
            code = chunk["error"].get("code") if isinstance(chunk["error"], dict) else None
            raise parse_error(code if isinstance(code, int) else 500, json.dumps(chunk).encode(), {})
        if "usageMetadata" in chunk:
            self._usage = usage_of(chunk)
        events: list[StreamEvent] = []
        if not self._started:
            self._started = True
            self._id = chunk.get("responseId") or new_id("gen_")
            events.append(StreamStart(self._id, chunk.get("modelVersion") or "", self._usage))
        if self._ended:
            return events  # only late usage is of interest now
        candidates = chunk.get("candidates") or []
        if not candidates:
            if (chunk.get("promptFeedback") or {}).get("blockReason"):
                events.extend(self._end("content_filter"))
            return events
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or []:
            if "functionCall" in part:
                events.extend(self._close())
                fc = part["functionCall"] or {}
                index = self._take_index()
                events += [ToolCallStart(index, fc.get("id") or _call_id(self._id, self._calls), fc.get("name", "")),
                           ToolArgsDelta(index, json.dumps(fc.get("args") or {}, ensure_ascii=False)),
                           BlockStop(index)]
                self._calls += 1
                self._first_token = True
            elif part.get("text"):
                kind = "thinking" if part.get("thought") else "text"
                if self._open is None or self._open[0] != kind:
                    events.extend(self._close())
                    self._open = (kind, self._take_index())
                index = self._open[1]
                events.append(ThinkingDelta(index, part["text"]) if kind == "thinking"
                              else TextDelta(index, part["text"]))
                self._first_token = True
        finish = candidate.get("finishReason")
        if finish:
            events.extend(self._end(_stop_reason(finish, self._calls > 0)))
        return events

    def finish(self) -> list[StreamEvent]:
        """End of the HTTP stream: fine after a finishReason, an error before one."""
        if self._ended:
            return []
        raise WireError(502, "provider_error", "stream ended early: Gemini closed it before a finishReason")

    def _take_index(self) -> int:
        self._next_index += 1
        return self._next_index - 1

    def _close(self) -> list[StreamEvent]:
        if self._open is None:
            return []
        index, self._open = self._open[1], None
        return [BlockStop(index)]

    def _end(self, stop: StopReason) -> list[StreamEvent]:
        self._ended = True
        return [*self._close(), StreamEnd(stop, self._usage)]


# ---------------------------------------------------------------- errors
def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> WireError:
    """A Gemini error response (`{"error": {"code", "message", "status", "details"}}`) as a WireError."""
    retry_after = header_retry_after(headers)
    try:
        payload: Any = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, list) and payload:  # streamGenerateContent without alt=sse wraps it in an array
        payload = payload[0]
    err = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(err, dict):
        text = body.decode("utf-8", "replace").strip()
        message = f"Gemini returned HTTP {status}: {text[:300]}" if text else f"Gemini returned HTTP {status}"
        return WireError(status, kind_for_status(status), message, retry_after)
    rpc_status = err.get("status") if isinstance(err.get("status"), str) else None
    kind = _KIND_OF_STATUS.get(rpc_status or "") or kind_for_status(status)
    if status == 413:
        kind = "request_too_large"
    for detail in err.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            retry_after = _duration_seconds(detail.get("retryDelay")) or retry_after
        # A bad key comes back as 400 INVALID_ARGUMENT; the ErrorInfo reason says what it really is.
        if detail.get("reason") == "API_KEY_INVALID":
            kind = "authentication"
    message = str(err.get("message") or f"Gemini returned HTTP {status}")
    return WireError(status, kind, message, retry_after, rpc_status)


def _duration_seconds(value: Any) -> float | None:
    # protobuf Duration in JSON: "12s", "0.5s", "1.000340s"
    if isinstance(value, str) and value.endswith("s"):
        try:
            return float(value[:-1])
        except ValueError:
            return None
    return None


def render_error(err: WireError) -> dict[str, Any]:
    """A WireError as Gemini would send it."""
    error: dict[str, Any] = {"code": err.status, "message": err.message,
                             "status": err.provider_type or _STATUS_OF_KIND.get(err.kind, "INTERNAL")}
    if err.retry_after is not None:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                             "retryDelay": f"{err.retry_after:g}s"}]
    return {"error": error}


# ---------------------------------------------------------------- rendering (fake servers, symmetry)
def render_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    """A ChatResponse as a Gemini `GenerateContentResponse`."""
    parts: list[dict[str, Any]] = []
    for part in resp.content:
        if isinstance(part, Text):
            parts.append({"text": part.text})
        elif isinstance(part, Thinking):
            if not part.redacted:
                parts.append({"text": part.text, "thought": True})
        else:
            parts.append({"functionCall": {"id": part.id, "name": part.name, "args": _args_object(part.arguments)}})
    u = resp.usage
    meta: dict[str, Any] = {"promptTokenCount": u.input_tokens,
                            "candidatesTokenCount": u.output_tokens - u.reasoning_tokens,
                            "totalTokenCount": u.input_tokens + u.output_tokens}
    if u.reasoning_tokens:
        meta["thoughtsTokenCount"] = u.reasoning_tokens
    if u.cached_input_tokens:
        meta["cachedContentTokenCount"] = u.cached_input_tokens
    body: dict[str, Any] = {"usageMetadata": meta, "modelVersion": model or resp.model, "responseId": resp.id}
    if not parts and resp.stop_reason == "content_filter":
        body["promptFeedback"] = {"blockReason": "SAFETY"}
        return body
    body["candidates"] = [{"content": {"role": "model", "parts": parts},
                           "finishReason": _FINISH_OF_STOP[resp.stop_reason], "index": 0}]
    return body


# ---------------------------------------------------------------- request: Gemini -> neutral
def parse_request(body: Any, model: str = "") -> ChatRequest:
    """Validate a generateContent body (camelCase or snake_case, as the REST API takes both).

    `model` comes from the URL. Streaming is also a URL matter, so `stream` stays False here.
    """
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _bad("'contents' must be a non-empty list of {role, parts} objects")
    pending: list[ToolCall] = []  # calls not yet answered, to pair id-less responses by name
    counter = [0]
    messages = [_parse_content(c, f"contents[{i}]", pending, counter) for i, c in enumerate(contents)]
    req = ChatRequest(model=model or str(body.get("model") or ""), messages=messages)
    system = _field(body, "systemInstruction")
    if system is not None:
        if not isinstance(system, dict) or not isinstance(system.get("parts"), list):
            raise _bad("'systemInstruction' must be an object with a 'parts' list")
        req.system = [Text(p["text"]) for p in system["parts"] if isinstance(p, dict) and p.get("text")]
    req.tools = _parse_tools(body.get("tools"))
    tool_config = _field(body, "toolConfig")
    if tool_config is not None:
        req.tool_choice = _parse_tool_config(tool_config)
    config = _field(body, "generationConfig")
    if config is not None:
        _parse_generation_config(config, req)
    return req


def _bad(message: str) -> WireError:
    return WireError(400, "invalid_request", message)


def _field(obj: Mapping[str, Any], camel: str) -> Any:
    if camel in obj:
        return obj[camel]
    return obj.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel))


def _parse_content(content: Any, where: str, pending: list[ToolCall], counter: list[int]) -> Message:
    if not isinstance(content, dict):
        raise _bad(f"{where} must be an object with 'role' and 'parts'")
    role = content.get("role") or "user"
    if role not in ("user", "model"):
        raise _bad(f"{where}.role must be 'user' or 'model', not {role!r}")
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _bad(f"{where}.parts must be a non-empty list")
    out: list[Part] = []
    for j, part in enumerate(parts):
        at = f"{where}.parts[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"{at} must be an object")
        if "text" in part:
            if not isinstance(part["text"], str):
                raise _bad(f"{at}.text must be a string")
            out.append(Thinking(part["text"]) if part.get("thought") else Text(part["text"]))
        elif _field(part, "inlineData") is not None or _field(part, "fileData") is not None:
            out.append(_parse_media(part, at))
        elif _field(part, "functionCall") is not None:
            if role != "model":
                raise _bad(f"{at}: functionCall is only allowed in a 'model' turn")
            fc = _field(part, "functionCall")
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str) or not fc["name"]:
                raise _bad(f"{at}.functionCall needs a 'name'")
            call_id = fc.get("id")
            if not call_id:
                call_id = f"call_{counter[0]}"
                counter[0] += 1
            call = ToolCall(call_id, fc["name"], json.dumps(fc.get("args") or {}, ensure_ascii=False))
            pending.append(call)
            out.append(call)
        elif _field(part, "functionResponse") is not None:
            out.append(_parse_function_response(_field(part, "functionResponse"), at, role, pending))
        else:
            raise _bad(f"{at} has no supported field (text, inlineData, fileData, functionCall, functionResponse)")
    return Message("assistant" if role == "model" else "user", out)


def _parse_media(part: Mapping[str, Any], at: str) -> Image:
    inline = _field(part, "inlineData")
    if inline is not None:
        if not isinstance(inline, dict) or not isinstance(inline.get("data"), str):
            raise _bad(f"{at}.inlineData needs base64 'data'")
        return Image(media_type=_field(inline, "mimeType"), data=inline["data"])
    file_data = _field(part, "fileData")
    uri = _field(file_data, "fileUri") if isinstance(file_data, dict) else None
    if not isinstance(uri, str) or not uri:
        raise _bad(f"{at}.fileData needs a 'fileUri'")
    return Image(media_type=_field(file_data, "mimeType"), url=uri)


def _parse_function_response(fr: Any, at: str, role: str, pending: list[ToolCall]) -> ToolResult:
    if role != "user":
        raise _bad(f"{at}: functionResponse is only allowed in a 'user' turn")
    if not isinstance(fr, dict) or not isinstance(fr.get("name"), str) or not fr["name"]:
        raise _bad(f"{at}.functionResponse needs a 'name'")
    response = fr.get("response")
    if response is not None and not isinstance(response, dict):
        raise _bad(f"{at}.functionResponse.response must be a JSON object")
    name, call_id = fr["name"], fr.get("id")
    match = next((c for c in pending if (c.id == call_id if call_id else c.name == name)), None)
    if match is not None:
        pending.remove(match)
        call_id = call_id or match.id
    response = response or {}
    is_error = "error" in response and "output" not in response
    # "output" / "error" hold the result when present; otherwise the whole object is the output.
    value = response["output"] if "output" in response else response["error"] if is_error else response
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return ToolResult(call_id or f"call_{name}", [Text(text)], is_error=is_error, name=name)


def _parse_tools(tools: Any) -> list[Tool]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list")
    out: list[Tool] = []
    for i, tool in enumerate(tools):
        decls = _field(tool, "functionDeclarations") if isinstance(tool, dict) else None
        if decls is None:
            continue  # built-in tools (googleSearch, codeExecution) have no neutral equivalent
        if not isinstance(decls, list):
            raise _bad(f"tools[{i}].functionDeclarations must be a list")
        for j, decl in enumerate(decls):
            if not isinstance(decl, dict) or not isinstance(decl.get("name"), str) or not decl["name"]:
                raise _bad(f"tools[{i}].functionDeclarations[{j}] needs a 'name'")
            schema = _field(decl, "parametersJsonSchema")
            if schema is None:
                schema = _json_schema_of(decl.get("parameters") or {"type": "object", "properties": {}})
            out.append(Tool(decl["name"], decl.get("description"), schema))
    return out


def _json_schema_of(schema: Any) -> Any:
    """Gemini's OpenAPI-style Schema (uppercase types, `nullable`) as plain JSON Schema."""
    if isinstance(schema, list):
        return [_json_schema_of(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out[key] = value.lower()
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: _json_schema_of(v) for k, v in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "prefixItems", "additionalProperties"):
            out[key] = _json_schema_of(value)
        elif key != "nullable":
            out[key] = value
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _parse_tool_config(tool_config: Any) -> str | None:
    fcc = _field(tool_config, "functionCallingConfig") if isinstance(tool_config, dict) else None
    if not isinstance(fcc, dict):
        raise _bad("'toolConfig' must be an object with a 'functionCallingConfig'")
    mode = str(fcc.get("mode") or "AUTO").upper()
    names = _field(fcc, "allowedFunctionNames") or []
    if mode in ("AUTO", "MODE_UNSPECIFIED", "VALIDATED"):
        return "auto"
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        # Several allowed names have no neutral form; "required" is the nearest.
        return names[0] if isinstance(names, list) and len(names) == 1 else "required"
    raise _bad(f"toolConfig.functionCallingConfig.mode {mode!r} is not AUTO, ANY or NONE")


def _parse_generation_config(config: Any, req: ChatRequest) -> None:
    if not isinstance(config, dict):
        raise _bad("'generationConfig' must be an object")
    number_fields = (("maxOutputTokens", "max_tokens", int), ("temperature", "temperature", float),
                     ("topP", "top_p", float))
    for camel, attr, kind in number_fields:
        value = _field(config, camel)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
            raise _bad(f"generationConfig.{camel} must be a{'n integer' if kind is int else ' number'}")
        setattr(req, attr, kind(value))
    stop = _field(config, "stopSequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("generationConfig.stopSequences must be a list of strings")
        req.stop = list(stop)
    schema = _field(config, "responseJsonSchema")
    if schema is None and _field(config, "responseSchema") is not None:
        schema = _json_schema_of(_field(config, "responseSchema"))
    if schema is not None:
        req.response_format = {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    elif _field(config, "responseMimeType") == "application/json":
        req.response_format = {"type": "json_object"}
    thinking = _field(config, "thinkingConfig")
    if isinstance(thinking, dict):
        level = _field(thinking, "thinkingLevel")
        budget = _field(thinking, "thinkingBudget")
        if isinstance(level, str) and level.upper() != "THINKING_LEVEL_UNSPECIFIED":
            req.reasoning_effort = level.lower()
        elif isinstance(budget, int) and budget >= 0:
            req.reasoning_effort = ("none" if budget == 0 else "low" if budget <= 2048
                                    else "medium" if budget <= 12288 else "high")
