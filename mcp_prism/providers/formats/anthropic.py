"""Anthropic Messages wire format (`POST /v1/messages`), both as clients send it and as Claude answers it.

Choices worth knowing:
- Outgoing requests always carry `max_tokens` (required; 4096 when the client gave none), strictly
  alternating user/assistant turns (consecutive same-role messages are merged, empty text dropped) and
  tool results first in their user turn, as the API demands.
- `reasoning_effort` maps to `thinking.budget_tokens` and back (`_BUDGET`). Thinking is left off when it
  could not be valid: a forced tool choice, a `max_tokens` too small for the minimum budget, or a tool loop
  whose last assistant turn has no signed thinking block (history from another provider). With thinking
  on, `temperature` / `top_p` are not sent (the API requires their defaults).
- OpenAI temperatures above 1 are clamped to Anthropic's maximum of 1.
- Usage: Anthropic's `input_tokens` EXCLUDES cache reads and writes; the neutral count includes them.
- Only signed thinking blocks are sent to Anthropic (it rejects unsigned ones); redacted thinking travels
  as `Thinking(redacted=True)` whose text is the opaque `data`. In streams, redacted blocks are skipped.

Pure translation, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp_prism.providers.formats import (
    bad_request,
    body_text,
    dumps,
    is_int,
    json_body,
    new_id,
    retry_after,
    type_name,
)
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

DEFAULT_MAX_TOKENS = 4096
_MIN_BUDGET = 1024
_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}

_STOP_IN: dict[str, StopReason] = {"end_turn": "end", "max_tokens": "length", "tool_use": "tool_use",
                                   "stop_sequence": "stop_sequence", "pause_turn": "end",
                                   "refusal": "content_filter", "model_context_window_exceeded": "length"}
_STOP_OUT: dict[str, str] = {"end": "end_turn", "length": "max_tokens", "tool_use": "tool_use",
                             "stop_sequence": "stop_sequence", "content_filter": "refusal", "error": "end_turn"}
_ERROR_OUT: dict[str, str] = {
    "invalid_request": "invalid_request_error", "authentication": "authentication_error",
    "permission": "permission_error", "not_found": "not_found_error", "request_too_large": "request_too_large",
    "rate_limited": "rate_limit_error", "overloaded": "overloaded_error", "timeout": "timeout_error",
    "provider_error": "api_error",
}
_ERROR_IN: dict[str, tuple[int, ErrorKind]] = {
    "invalid_request_error": (400, "invalid_request"), "authentication_error": (401, "authentication"),
    "billing_error": (402, "permission"), "permission_error": (403, "permission"),
    "not_found_error": (404, "not_found"), "request_too_large": (413, "request_too_large"),
    "rate_limit_error": (429, "rate_limited"), "api_error": (500, "provider_error"),
    "timeout_error": (504, "timeout"), "overloaded_error": (529, "overloaded"),
}


def effort_for_budget(budget: int) -> str:
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


# ---------------------------------------------------------------- requests in
def parse_request(body: dict[str, Any]) -> ChatRequest:
    if not isinstance(body, dict):
        bad_request(f"the request body must be a JSON object, got {type_name(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        bad_request('"model" is required and must be a string, e.g. "model": "claude-sonnet-4-5"')
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        bad_request('"max_tokens" is required by the Messages API: add e.g. "max_tokens": 4096')
    if not is_int(max_tokens) or max_tokens < 1:
        bad_request(f'"max_tokens" must be a positive integer, got {max_tokens!r}')
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        bad_request('"messages" is required and must be a non-empty array of {"role": ..., "content": ...} objects')

    req = ChatRequest(model=model, messages=[], max_tokens=max_tokens)
    req.system = _system(body.get("system"))
    tool_names: dict[str, str] = {}
    pending: list[Part] = []  # mid-conversation system messages after an answer, for the next user turn
    for i, msg in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            bad_request(f"{where} must be an object with role and content, got {type_name(msg)}")
        role = msg.get("role")
        if role == "system":
            if i == 0:
                bad_request(f'{where}.role "system" cannot open the conversation: put system instructions in the '
                            'top-level "system" field')
            parts = _mid_system(msg.get("content"), where)
            if req.messages and req.messages[-1].role == "user":  # it came before the answer: keep it there
                req.messages[-1].content.extend(parts)
            else:
                pending += parts
            continue
        if role not in ("user", "assistant"):
            bad_request(f'{where}.role must be "user", "assistant" or "system", got {role!r}')
        content = _content(msg.get("content"), role, where, tool_names)
        if pending and role == "user":  # after any tool results, which must lead a user turn
            content, pending = [*content, *pending], []
        req.messages.append(Message(role, content))
    if pending:  # system text after the last answer: the turn being answered
        req.messages.append(Message("user", pending))

    req.tools = _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"), req)
    req.temperature = _number(body, "temperature")
    req.top_p = _number(body, "top_p")
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            bad_request(f'"stop_sequences" must be an array of strings, got {type_name(stop)}')
        req.stop = list(stop)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        bad_request(f'"stream" must be true or false, got {stream!r}')
    req.stream = bool(stream)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            bad_request(f'"metadata" must be an object like {{"user_id": "..."}}, got {type_name(metadata)}')
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            bad_request(f'"metadata.user_id" must be a string, got {type_name(user)}')
        req.user = user
    _thinking(body, req)
    return req


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        bad_request(f'"{key}" must be a number from 0 to 1, got {value!r}')
    return value


def _text_block(block: dict[str, Any], where: str) -> Text:
    text = block.get("text")
    if not isinstance(text, str):
        bad_request(f'{where} must be a text block {{"type": "text", "text": "..."}}')
    cache = block.get("cache_control")
    return Text(text, cache if isinstance(cache, dict) else None)


def _system(raw: Any) -> list[Text]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [Text(raw)] if raw else []
    if not isinstance(raw, list):
        bad_request(f'"system" must be a string or an array of text blocks, got {type_name(raw)}')
    out = []
    for i, block in enumerate(raw):
        if not isinstance(block, dict) or block.get("type") != "text":
            bad_request(f'system[{i}] must be a text block {{"type": "text", "text": "..."}}')
        out.append(_text_block(block, f"system[{i}]"))
    return out


def _mid_system(raw: Any, where: str) -> list[Part]:
    """A `role: "system"` message inside `messages` (Claude Code sends these to Claude 5 models, beta
    mid-conversation-system-2026-04-07) as the user-turn text other providers accept: wrapped in a
    <system-reminder>, as Claude Code itself falls back to when the beta is refused."""
    if isinstance(raw, str):
        texts = [raw]
    else:
        texts = [t.text for t in _system(raw)] if isinstance(raw, list) else None
        if texts is None:
            bad_request(f'{where}.content must be a string or an array of text blocks, got {type_name(raw)}')
    return [Text(f"<system-reminder>\n{t}\n</system-reminder>") for t in texts if t]


def _image(block: dict[str, Any], where: str) -> Image:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        return Image(media_type=source["media_type"], data=source["data"])
    if kind == "url" and isinstance(source.get("url"), str):
        return Image(url=source["url"])
    bad_request(f'{where}.source must be {{"type": "base64", "media_type": "image/png", "data": "..."}} or '
                '{"type": "url", "url": "https://..."}; file sources are not supported by the gateway')


def _content(raw: Any, role: str, where: str, tool_names: dict[str, str]) -> list[Part]:
    if isinstance(raw, str):
        return [Text(raw)]
    if not isinstance(raw, list):
        bad_request(f"{where}.content must be a string or an array of content blocks, got {type_name(raw)}")
    out: list[Part] = []
    for j, block in enumerate(raw):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            out.append(_text_block(block, at))
        elif kind == "image" and role == "user":
            out.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            call_id, name, args = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(call_id, str) or not isinstance(name, str) or not isinstance(args, dict):
                bad_request(f'{at} must be {{"type": "tool_use", "id": ..., "name": ..., "input": {{...}}}}')
            tool_names[call_id] = name
            out.append(ToolCall(call_id, name, dumps(args)))
        elif kind == "tool_result" and role == "user":
            out.append(_tool_result(block, at, tool_names))
        elif kind == "thinking" and role == "assistant":
            if not isinstance(block.get("thinking"), str):
                bad_request(f'{at} must be {{"type": "thinking", "thinking": "...", "signature": "..."}}')
            sig = block.get("signature")
            out.append(Thinking(block["thinking"], sig if isinstance(sig, str) else None))
        elif kind == "redacted_thinking" and role == "assistant":
            if not isinstance(block.get("data"), str):
                bad_request(f'{at} must be {{"type": "redacted_thinking", "data": "..."}}')
            out.append(Thinking(block["data"], redacted=True))
        else:
            allowed = ("text, image, tool_result" if role == "user"
                       else "text, tool_use, thinking, redacted_thinking")
            bad_request(f"{at}: block type {kind!r} is not supported in a {role} message; the gateway accepts "
                        f"{allowed}")
    return out


def _tool_result(block: dict[str, Any], at: str, tool_names: dict[str, str]) -> ToolResult:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        bad_request(f"{at}.tool_use_id is required: the id of the tool_use block this result answers")
    raw = block.get("content")
    content: list[Text | Image] = []
    if isinstance(raw, str):
        if raw:
            content.append(Text(raw))
    elif isinstance(raw, list):
        for k, inner in enumerate(raw):
            kind = inner.get("type") if isinstance(inner, dict) else None
            if kind == "text":
                content.append(_text_block(inner, f"{at}.content[{k}]"))
            elif kind == "image":
                content.append(_image(inner, f"{at}.content[{k}]"))
            else:
                bad_request(f"{at}.content[{k}] must be a text or image block, got type {kind!r}")
    elif raw is not None:
        bad_request(f"{at}.content must be a string or an array of text/image blocks, got {type_name(raw)}")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        bad_request(f"{at}.is_error must be true or false, got {is_error!r}")
    return ToolResult(call_id, content, bool(is_error), tool_names.get(call_id))


def _tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        bad_request(f'"tools" must be an array, got {type_name(raw)}')
    out = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
            kind = tool.get("type") if isinstance(tool, dict) else None
            bad_request(f"tools[{i}]: only client tools {{name, description, input_schema}} are supported; "
                        f"server tool type {kind!r} cannot be routed through the gateway")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            bad_request(f"tools[{i}].name is required")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            bad_request(f'tools[{i}].input_schema is required: a JSON Schema object such as {{"type": "object"}}')
        desc = tool.get("description")
        out.append(Tool(tool["name"], desc if isinstance(desc, str) else None, schema))
    return out


def _tool_choice(raw: Any, req: ChatRequest) -> None:
    if raw is None:
        return
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in ("auto", "any", "none"):
        req.tool_choice = "required" if kind == "any" else kind
    elif kind == "tool" and isinstance(raw.get("name"), str) and raw["name"]:
        req.tool_choice = raw["name"]
    else:
        bad_request('"tool_choice" must be {"type": "auto"}, {"type": "any"}, {"type": "none"} or '
                    '{"type": "tool", "name": ...}')
    if raw.get("disable_parallel_tool_use") is True:
        req.parallel_tool_calls = False


def _thinking(body: dict[str, Any], req: ChatRequest) -> None:
    raw = body.get("thinking")
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if raw is not None:
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind == "enabled":
            budget = raw.get("budget_tokens")
            if not is_int(budget) or budget < _MIN_BUDGET:
                bad_request(f'"thinking.budget_tokens" must be an integer of at least {_MIN_BUDGET}, got {budget!r}')
            req.reasoning_effort = effort_for_budget(budget)
            return
        if kind == "adaptive":
            req.reasoning_effort = effort if isinstance(effort, str) else "medium"
            return
        if kind not in ("disabled", "between_tools"):
            bad_request('"thinking" must be {"type": "enabled", "budget_tokens": N}, {"type": "adaptive"} or '
                        '{"type": "disabled"}')
    if isinstance(effort, str):
        req.reasoning_effort = effort
    fmt = config.get("format") if isinstance(config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        req.response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"],
                                                                      "strict": True}}


# ---------------------------------------------------------------- requests out
def build_request(req: ChatRequest, model: str) -> dict[str, Any]:
    messages = _messages_out(req.messages)
    body: dict[str, Any] = {"model": model, "max_tokens": req.max_tokens or DEFAULT_MAX_TOKENS,
                            "messages": messages}
    if req.system:
        body["system"] = [_text_out(t) for t in req.system if t.text]
    if req.tools:
        body["tools"] = [_tool_out(t) for t in req.tools]
        choice: dict[str, Any] | None = None
        if req.tool_choice in ("auto", "none"):
            choice = {"type": req.tool_choice}
        elif req.tool_choice == "required":
            choice = {"type": "any"}
        elif req.tool_choice is not None:
            choice = {"type": "tool", "name": req.tool_choice}
        if req.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
            choice = choice or {"type": "auto"}
            choice["disable_parallel_tool_use"] = True
        if choice is not None:
            body["tool_choice"] = choice
    budget = _thinking_budget(req, messages, body["max_tokens"])
    if budget:
        if req.max_tokens is None:  # thinking counts toward max_tokens: leave room for the answer
            body["max_tokens"] = budget + DEFAULT_MAX_TOKENS
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    else:
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)
        if req.top_p is not None:
            body["top_p"] = req.top_p
    if req.stop:
        body["stop_sequences"] = req.stop
    if req.stream:
        body["stream"] = True
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    fmt = req.response_format
    if fmt and fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return body


def _thinking_budget(req: ChatRequest, messages: list[dict[str, Any]], max_tokens: int) -> int:
    budget = _BUDGET.get(req.reasoning_effort or "", 0)
    if not budget or req.tool_choice not in (None, "auto", "none"):
        return 0
    if req.max_tokens is not None:
        budget = min(budget, req.max_tokens - 1)
        if budget < _MIN_BUDGET:
            return 0
    # In a tool loop the API wants the last assistant turn to open with its (signed) thinking block.
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if last is not None and any(b["type"] == "tool_use" for b in last["content"]) \
            and last["content"][0]["type"] not in ("thinking", "redacted_thinking"):
        return 0
    return budget


def _text_out(t: Text) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "text", "text": t.text}
    if t.cache_control is not None:
        out["cache_control"] = t.cache_control
    return out


def _image_out(image: Image) -> dict[str, Any]:
    if image.data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": image.media_type or "image/png",
                                            "data": image.data}}
    return {"type": "image", "source": {"type": "url", "url": image.url}}


def _tool_out(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["input_schema"] = tool.parameters
    return out


def _input_of(call: ToolCall) -> dict[str, Any]:
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        bad_request(f"the arguments of tool call {call.id!r} ({call.name}) are not a JSON object: "
                    f"{call.arguments[:200]!r}; Anthropic needs tool input as an object")
    return value


def _block_out(part: Part) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return _text_out(part) if part.text else None  # the API rejects empty text blocks
    if isinstance(part, ToolResult):
        out: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.tool_call_id}
        content = [_text_out(c) if isinstance(c, Text) else _image_out(c) for c in part.content
                   if not isinstance(c, Text) or c.text]
        if content:
            out["content"] = content
        if part.is_error:
            out["is_error"] = True
        return out
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": _input_of(part)}
    if isinstance(part, Image):
        return _image_out(part)
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.text}
    if part.signature:  # unsigned thinking (from another provider) would be rejected
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def _messages_out(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        blocks = [b for b in map(_block_out, msg.content) if b is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == msg.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": msg.role, "content": blocks})
    for msg in out:
        content = msg["content"]
        # Tool results must open their user turn; the sort is stable, so order is otherwise kept.
        if msg["role"] == "user" and len(content) > 1 and any(b["type"] == "tool_result" for b in content):
            content.sort(key=lambda b: b["type"] != "tool_result")
    return out


# ---------------------------------------------------------------- responses
def usage_of(body: Mapping[str, Any]) -> Usage:
    raw = body.get("usage")
    if raw is None and isinstance(body.get("message"), dict):  # a message_start event
        raw = body["message"].get("usage")
    return _usage(raw) if isinstance(raw, dict) else Usage()


@checked_usage  # bad counts from upstream are dropped and the usage marked invalid
def _usage(raw: Mapping[str, Any]) -> Usage:
    read = raw.get("cache_read_input_tokens") or 0
    write = raw.get("cache_creation_input_tokens") or 0
    details = raw.get("output_tokens_details") or {}
    ttl = raw.get("cache_creation")  # {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}: the split of `write`
    hour = (ttl.get("ephemeral_1h_input_tokens") or 0) if isinstance(ttl, dict) else 0
    return Usage(input_tokens=(raw.get("input_tokens") or 0) + read + write,
                 output_tokens=raw.get("output_tokens") or 0, cached_input_tokens=read, cache_write_tokens=write,
                 reasoning_tokens=details.get("thinking_tokens") or 0, cache_write_1h_tokens=min(hour, write))


def _usage_out(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {"input_tokens": u.input_tokens - u.cached_input_tokens - u.cache_write_tokens,
                           "cache_creation_input_tokens": u.cache_write_tokens,
                           "cache_read_input_tokens": u.cached_input_tokens, "output_tokens": u.output_tokens}
    if u.cache_write_1h_tokens:
        out["cache_creation"] = {"ephemeral_5m_input_tokens": u.cache_write_tokens - u.cache_write_1h_tokens,
                                 "ephemeral_1h_input_tokens": u.cache_write_1h_tokens}
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


def parse_response(body: dict[str, Any]) -> ChatResponse:
    content: list[Text | ToolCall | Thinking] = []
    for block in body.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            content.append(Text(block.get("text", "")))
        elif kind == "tool_use":
            content.append(ToolCall(block.get("id", ""), block.get("name", ""), dumps(block.get("input") or {})))
        elif kind == "thinking":
            content.append(Thinking(block.get("thinking", ""), block.get("signature")))
        elif kind == "redacted_thinking":
            content.append(Thinking(block.get("data", ""), redacted=True))
        # server tool blocks (web search, code execution) ran at Anthropic: nothing for the client to do
    return ChatResponse(id=body.get("id") or new_id("msg_"), model=body.get("model", ""), content=content,
                        stop_reason=_STOP_IN.get(body.get("stop_reason") or "end_turn", "end"),
                        usage=usage_of(body), stop_sequence=body.get("stop_sequence"))


def _message_id(resp_id: str) -> str:
    return resp_id if resp_id.startswith("msg_") else f"msg_{resp_id}" if resp_id else new_id("msg_")


def render_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for part in resp.content:
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            try:
                args = json.loads(part.arguments) if part.arguments.strip() else {}
            except ValueError:
                args = None
            # A model's malformed arguments still reach the client, wrapped, rather than failing the request.
            content.append({"type": "tool_use", "id": part.id, "name": part.name,
                            "input": args if isinstance(args, dict) else {"_raw_arguments": part.arguments}})
        elif part.redacted:
            content.append({"type": "redacted_thinking", "data": part.text})
        else:
            content.append({"type": "thinking", "thinking": part.text, "signature": part.signature or ""})
    stop_sequence = resp.stop_sequence if resp.stop_reason == "stop_sequence" else None
    return {"id": _message_id(resp.id), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": _STOP_OUT[resp.stop_reason], "stop_sequence": stop_sequence,
            "usage": _usage_out(resp.usage)}


# ---------------------------------------------------------------- streams in
class StreamDecoder:
    """Messages stream events to neutral events; block indexes are Anthropic's own."""

    __slots__ = ("_ended", "_raw", "_skip", "_started", "_stop", "_stop_sequence", "first_token_seen")

    def __init__(self) -> None:
        self._raw: dict[str, Any] = {}  # Anthropic usage fields seen so far (message_delta counts are cumulative)
        self._skip: set[int] = set()  # blocks with no neutral form (redacted thinking, server tools)
        self._stop: StopReason = "end"
        self._stop_sequence: str | None = None
        self._started = False
        self._ended = False
        self.first_token_seen = False

    @property
    def usage(self) -> Usage:
        return _usage(self._raw)

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        try:
            obj = json.loads(data)
        except ValueError:
            raise WireError(502, "provider_error", f"the provider sent a stream event that is not JSON: "
                                                   f"{data[:200]!r}") from None
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type") or event
        if kind == "content_block_delta":
            index = obj.get("index", 0)
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if index in self._skip:
                return []
            if dtype == "text_delta":
                self.first_token_seen = True
                return [TextDelta(index, delta.get("text", ""))]
            if dtype == "input_json_delta":
                fragment = delta.get("partial_json")
                return [ToolArgsDelta(index, fragment)] if fragment else []
            if dtype == "thinking_delta":
                self.first_token_seen = True
                return [ThinkingDelta(index, delta.get("thinking", ""))]
            if dtype == "signature_delta":
                return [ThinkingDelta(index, "", delta.get("signature"))]
            return []
        if kind == "content_block_start":
            return self._block_start(obj.get("index", 0), obj.get("content_block") or {})
        if kind == "content_block_stop":
            index = obj.get("index", 0)
            return [] if index in self._skip else [BlockStop(index)]
        if kind == "message_start":
            msg = obj.get("message") or {}
            self._started = True
            self._merge(msg.get("usage"))
            return [StreamStart(msg.get("id") or new_id("msg_"), msg.get("model") or "", self.usage)]
        if kind == "message_delta":
            delta = obj.get("delta") or {}
            if delta.get("stop_reason"):
                self._stop = _STOP_IN.get(delta["stop_reason"], "end")
            self._stop_sequence = delta.get("stop_sequence")
            self._merge(obj.get("usage"))
            return []
        if kind == "message_stop":
            return self.finish()
        if kind == "error":
            raise _error_of(obj, None)
        return []  # ping, and event types added later

    def finish(self) -> list[StreamEvent]:
        """End of stream (`message_stop`, or the connection closed): the StreamEnd still owed, if any."""
        if self._ended or not self._started:
            return []
        self._ended = True
        return [StreamEnd(self._stop, self.usage, self._stop_sequence)]

    def _merge(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._raw.update((k, v) for k, v in usage.items() if v is not None)

    def _block_start(self, index: int, block: dict[str, Any]) -> list[StreamEvent]:
        kind = block.get("type")
        if kind == "text":
            if block.get("text"):
                self.first_token_seen = True
                return [TextDelta(index, block["text"])]
            return []
        if kind == "tool_use":
            self.first_token_seen = True
            out: list[StreamEvent] = [ToolCallStart(index, block.get("id") or new_id("toolu_"), block.get("name", ""))]
            if block.get("input"):
                out.append(ToolArgsDelta(index, dumps(block["input"])))
            return out
        if kind == "thinking":
            if block.get("thinking"):
                self.first_token_seen = True
                return [ThinkingDelta(index, block["thinking"], block.get("signature") or None)]
            return []
        self._skip.add(index)
        return []


# ---------------------------------------------------------------- streams out
def _event(name: str, payload: str) -> bytes:
    return f"event: {name}\ndata: {payload}\n\n".encode()


class StreamEncoder:
    """Neutral events to the `event: ...` stream an Anthropic SDK client reads.

    Opens blocks itself when the provider had none (OpenAI and Gemini stream bare deltas) and keeps at
    most one block open, numbering blocks in the order they are opened.
    """

    __slots__ = ("_blocks", "_include_usage", "_model", "_open", "_started")

    def __init__(self, model: str, include_usage: bool = True) -> None:
        self._model = model
        self._include_usage = include_usage  # unused: Anthropic streams always carry usage
        self._started = False
        self._blocks: dict[int, tuple[int, str]] = {}  # neutral index -> (our index, kind)
        self._open: int | None = None  # our index of the open block

    def _start(self, resp_id: str, usage: Usage | None) -> bytes:
        self._started = True
        message = {"id": _message_id(resp_id), "type": "message", "role": "assistant", "model": self._model,
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": _usage_out(usage or Usage())}
        return _event("message_start", dumps({"type": "message_start", "message": message}))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open = self._open, None
        return _event("content_block_stop", f'{{"type":"content_block_stop","index":{index}}}')

    def _block(self, neutral: int, kind: str, start: dict[str, Any]) -> tuple[int, bytes]:
        """Our index for this neutral block, opening it (and closing the one before) when new."""
        known = self._blocks.get(neutral)
        if known is not None and known[1] == kind:
            return known[0], b""
        out = self._close()
        index = len(self._blocks)
        self._blocks[neutral] = (index, kind)
        self._open = index
        return index, out + _event("content_block_start", dumps({"type": "content_block_start", "index": index,
                                                                 "content_block": start}))

    def encode(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, StreamStart):
            return b"" if self._started else self._start(ev.id, ev.usage)
        prefix = b"" if self._started else self._start("", None)
        if isinstance(ev, TextDelta):
            if not ev.text:
                return prefix
            index, opened = self._block(ev.index, "text", {"type": "text", "text": ""})
            return prefix + opened + _event("content_block_delta", f'{{"type":"content_block_delta","index":{index},'
                                            f'"delta":{{"type":"text_delta","text":{dumps(ev.text)}}}}}')
        if isinstance(ev, ToolCallStart):
            index, opened = self._block(ev.index, "tool_use", {"type": "tool_use", "id": ev.id, "name": ev.name,
                                                               "input": {}})
            return prefix + opened
        if isinstance(ev, ToolArgsDelta):
            known = self._blocks.get(ev.index)
            if known is None or not ev.arguments:
                return prefix
            return prefix + _event("content_block_delta", f'{{"type":"content_block_delta","index":{known[0]},'
                                   f'"delta":{{"type":"input_json_delta","partial_json":{dumps(ev.arguments)}}}}}')
        if isinstance(ev, ThinkingDelta):
            index, opened = self._block(ev.index, "thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out = prefix + opened
            if ev.text:
                out += _event("content_block_delta", f'{{"type":"content_block_delta","index":{index},'
                              f'"delta":{{"type":"thinking_delta","thinking":{dumps(ev.text)}}}}}')
            if ev.signature:
                out += _event("content_block_delta", f'{{"type":"content_block_delta","index":{index},'
                              f'"delta":{{"type":"signature_delta","signature":{dumps(ev.signature)}}}}}')
            return out
        if isinstance(ev, BlockStop):
            known = self._blocks.get(ev.index)
            return prefix + (self._close() if known is not None and known[0] == self._open else b"")
        return prefix + self._end(ev)

    def _end(self, ev: StreamEnd) -> bytes:
        out = self._close()
        usage = _usage_out(ev.usage) if ev.usage is not None else {"output_tokens": 0}
        stop_sequence = ev.stop_sequence if ev.stop_reason == "stop_sequence" else None
        delta = {"type": "message_delta", "delta": {"stop_reason": _STOP_OUT[ev.stop_reason],
                                                    "stop_sequence": stop_sequence}, "usage": usage}
        return out + _event("message_delta", dumps(delta)) + _event("message_stop", '{"type":"message_stop"}')

    def error(self, err: WireError) -> bytes:
        return _event("error", dumps(render_error(err)))


# ---------------------------------------------------------------- errors
def _error_of(obj: Any, status: int | None) -> WireError:
    """A WireError from a parsed error body; `status` None for a stream's error event, which has none."""
    err = obj.get("error") if isinstance(obj, dict) else None
    if not isinstance(err, dict):
        err = {"message": err} if isinstance(err, str) else {}
    etype = err.get("type") if isinstance(err.get("type"), str) else None
    known = _ERROR_IN.get(etype or "")
    if status is None:
        status = known[0] if known is not None else 500
    kind = known[1] if known is not None else kind_for_status(status)
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"the provider returned HTTP {status} with no error message"
    return WireError(status, kind, message, provider_type=etype)


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> WireError:
    parsed = json_body(body)
    if isinstance(parsed, dict):
        err = _error_of(parsed, status)
    elif body.strip():
        err = WireError(status, kind_for_status(status), f"the provider returned HTTP {status}: {body_text(body)}")
    else:
        err = WireError(status, kind_for_status(status), f"the provider returned HTTP {status} with an empty body")
    err.retry_after = retry_after(headers)
    return err


def render_error(err: WireError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_OUT.get(err.kind, "api_error"), "message": err.message}}
