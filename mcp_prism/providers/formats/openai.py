"""OpenAI Chat Completions wire format (`POST /v1/chat/completions`), both as clients send it and as
OpenAI-compatible providers answer it.

Choices worth knowing:
- `system` and `developer` messages anywhere in the conversation become the neutral top-level system.
- Consecutive `tool` messages become one neutral user message of `ToolResult`s (the Anthropic/Gemini
  shape); going out, tool results become `tool` messages again, placed before any other user content.
  Tool messages hold text only, so images in a tool result follow in a user message.
- Outgoing requests use `max_completion_tokens` (`max_tokens` is rejected by OpenAI reasoning models) and,
  when streaming, always ask for the usage chunk: the gateway needs usage to bill the request.
- Thinking parts have no place in Chat Completions and are dropped. Compatible providers that stream
  `reasoning_content` / `reasoning` deltas (DeepSeek, vLLM, OpenRouter) are read as thinking.
- Usage: `prompt_tokens` already includes `cached_tokens` (and `cache_write_tokens`, which some compatible
  providers report) and `completion_tokens` includes `reasoning_tokens`: the neutral convention as is.

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
    now,
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

_STOP_IN: dict[str, StopReason] = {"stop": "end", "length": "length", "tool_calls": "tool_use",
                                   "function_call": "tool_use", "content_filter": "content_filter"}
_STOP_OUT: dict[str, str] = {"end": "stop", "length": "length", "tool_use": "tool_calls", "stop_sequence": "stop",
                             "content_filter": "content_filter", "error": "stop"}
# (type, code) per neutral error kind, as OpenAI names them.
_ERROR_OUT: dict[str, tuple[str, str | None]] = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("permission_error", None),
    "not_found": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limited": ("rate_limit_error", "rate_limit_exceeded"),
    "overloaded": ("server_error", "overloaded"),
    "timeout": ("timeout_error", "timeout"),
    "provider_error": ("server_error", None),
}
_ROLES = "system, developer, user, assistant or tool"
# OpenAI rejects a longer `user`; Claude Code's metadata.user_id is longer, so such ids are left out.
_MAX_USER = 64


# ---------------------------------------------------------------- requests in
def parse_request(body: dict[str, Any]) -> ChatRequest:
    if not isinstance(body, dict):
        bad_request(f"the request body must be a JSON object, got {type_name(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        bad_request('"model" is required and must be a string, e.g. "model": "gpt-4o"')
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        bad_request('"messages" is required and must be a non-empty array of {"role": ..., "content": ...} objects')
    n = body.get("n")
    if n is not None and n != 1:
        bad_request(f'"n" must be 1 (the gateway returns a single choice), got {n!r}; send separate requests instead')

    req = ChatRequest(model=model, messages=[])
    tool_names: dict[str, str] = {}  # tool call id -> function name, for ToolResult.name
    for i, msg in enumerate(raw_messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            bad_request(f"{where} must be an object with role and content, got {type_name(msg)}")
        role = msg.get("role")
        if role in ("system", "developer"):
            req.system.extend(_text_parts(msg.get("content"), where))
        elif role == "user":
            req.messages.append(Message("user", _user_parts(msg.get("content"), where)))
        elif role == "assistant":
            req.messages.append(Message("assistant", _assistant_parts(msg, where, tool_names)))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                bad_request(f"{where}.tool_call_id is required on tool messages: the id of the assistant tool call "
                            "this message answers")
            result = ToolResult(call_id, list(_text_parts(msg.get("content"), where)), name=tool_names.get(call_id))
            last = req.messages[-1] if req.messages else None
            # Consecutive tool messages answer one assistant turn: one neutral user message holds them all.
            if last is not None and last.role == "user" and last.content and all(
                    isinstance(p, ToolResult) for p in last.content):
                last.content.append(result)
            else:
                req.messages.append(Message("user", [result]))
        elif role == "function":
            bad_request(f'{where}: the legacy "function" role is not supported; send a "tool" message with '
                        "tool_call_id instead")
        else:
            bad_request(f"{where}.role must be one of {_ROLES}, got {role!r}")

    req.tools = _tools(body.get("tools"))
    req.tool_choice = _tool_choice(body.get("tool_choice"))
    max_tokens = body.get("max_completion_tokens")
    key = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, key = body.get("max_tokens"), "max_tokens"
    if max_tokens is not None:
        if not is_int(max_tokens) or max_tokens < 1:
            bad_request(f'"{key}" must be a positive integer, got {max_tokens!r}')
        req.max_tokens = max_tokens
    req.temperature = _number(body, "temperature", 0, 2)
    req.top_p = _number(body, "top_p", 0, 1)
    stop = body.get("stop")
    if isinstance(stop, str):
        req.stop = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        req.stop = list(stop)
    elif stop is not None:
        bad_request(f'"stop" must be a string or an array of strings, got {type_name(stop)}')
    req.stream = _bool(body, "stream") or False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            bad_request(f'"stream_options" must be an object like {{"include_usage": true}}, got {type_name(options)}')
        req.stream_usage = bool(options.get("include_usage"))
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            bad_request(f'"user" must be a string, got {type_name(user)}')
        req.user = user
    req.parallel_tool_calls = _bool(body, "parallel_tool_calls")
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            bad_request('"response_format" must be {"type": "text"}, {"type": "json_object"} or '
                        '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}')
        if fmt["type"] == "json_schema" and not isinstance(fmt.get("json_schema"), dict):
            bad_request('"response_format" of type json_schema needs "json_schema": {"name": ..., "schema": {...}}')
        req.response_format = fmt if fmt["type"] != "text" else None
    effort = body.get("reasoning_effort")
    if effort is not None:
        if not isinstance(effort, str):
            bad_request(f'"reasoning_effort" must be a string such as "low", "medium" or "high", got {effort!r}')
        req.reasoning_effort = effort
    return req


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        bad_request(f'"{key}" must be a number from {low} to {high}, got {value!r}')
    return value


def _bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        bad_request(f'"{key}" must be true or false, got {value!r}')
    return value


def _text_parts(content: Any, where: str) -> list[Text]:
    """Content that may only hold text: a string or an array of text parts."""
    if isinstance(content, str):
        return [Text(content)] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        bad_request(f"{where}.content must be a string or an array of text parts, got {type_name(content)}")
    out = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            bad_request(f'{where}.content[{j}] must be a text part {{"type": "text", "text": "..."}} here')
        out.append(Text(part["text"]))
    return out


def _user_parts(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        bad_request(f"{where}.content must be a string or an array of content parts, got {type_name(content)}")
    out: list[Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            out.append(Text(part["text"]))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str) or not url:
                bad_request(f'{where}.content[{j}].image_url must be '
                            '{"url": "https://..." or "data:image/png;base64,..."}')
            out.append(_image_from_url(url, f"{where}.content[{j}]"))
        elif kind in ("input_audio", "file"):
            bad_request(f"{where}.content[{j}]: {kind} parts are not supported by the gateway; send text or images")
        else:
            bad_request(f'{where}.content[{j}] must be {{"type": "text", "text": ...}} or '
                        f'{{"type": "image_url", "image_url": {{"url": ...}}}}, got type {kind!r}')
    return out


def _image_from_url(url: str, where: str) -> Image:
    if not url.startswith("data:"):
        return Image(url=url)
    head, comma, data = url[5:].partition(",")
    if not comma or not head.endswith(";base64"):
        bad_request(f'{where}: a data: image URL must be base64, like "data:image/png;base64,iVBOR..."')
    return Image(media_type=head[:-7] or None, data=data)


def _assistant_parts(msg: dict[str, Any], where: str, tool_names: dict[str, str]) -> list[Part]:
    content = msg.get("content")
    out: list[Part] = []
    if isinstance(content, str):
        if content:
            out.append(Text(content))
    elif isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            key = "text" if kind == "text" else "refusal" if kind == "refusal" else None
            if key is None or not isinstance(part.get(key), str):
                bad_request(f'{where}.content[{j}] must be {{"type": "text", "text": ...}} in an assistant message')
            out.append(Text(part[key]))
    elif content is not None:
        bad_request(f"{where}.content must be a string, an array of text parts or null, got {type_name(content)}")
    if not out and isinstance(msg.get("refusal"), str):
        out.append(Text(msg["refusal"]))
    calls = msg.get("tool_calls")
    if calls is None:
        return out
    if not isinstance(calls, list):
        bad_request(f"{where}.tool_calls must be an array, got {type_name(calls)}")
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(call.get("id"), str) or not isinstance(fn.get("name"), str):
            bad_request(f'{where}.tool_calls[{j}] must be {{"id": ..., "type": "function", '
                        '"function": {"name": ..., "arguments": "<JSON text>"}}')
        args = fn.get("arguments")
        if args is None:
            args = ""
        elif not isinstance(args, str):
            bad_request(f"{where}.tool_calls[{j}].function.arguments must be a JSON string, got {type_name(args)}")
        tool_names[call["id"]] = fn["name"]
        out.append(ToolCall(call["id"], fn["name"], args))
    return out


def _tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        bad_request(f'"tools" must be an array, got {type_name(raw)}')
    out = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            bad_request(f'tools[{i}] must be {{"type": "function", "function": {{"name": ..., '
                        '"parameters": {...}}}; other tool types are not supported')
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            bad_request(f"tools[{i}].function.name is required")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        elif not isinstance(params, dict):
            bad_request(f"tools[{i}].function.parameters must be a JSON Schema object, got {type_name(params)}")
        desc = fn.get("description")
        out.append(Tool(fn["name"], desc if isinstance(desc, str) else None, params))
    return out


def _tool_choice(raw: Any) -> str | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function":
        name = (raw.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return name
    bad_request('"tool_choice" must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}')


# ---------------------------------------------------------------- requests out
def build_request(req: ChatRequest, model: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if req.system:
        system = req.system
        messages.append({"role": "system", "content": system[0].text if len(system) == 1
                         else [{"type": "text", "text": t.text} for t in system]})
    for msg in req.messages:
        if msg.role == "assistant":
            messages.append(_assistant_out(msg.content))
        else:
            _user_out(msg.content, messages)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.tools:
        body["tools"] = [{"type": "function", "function": _function_out(t)} for t in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = (req.tool_choice if req.tool_choice in ("auto", "none", "required")
                                   else {"type": "function", "function": {"name": req.tool_choice}})
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.max_tokens is not None:
        body["max_completion_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop:
        body["stop"] = req.stop
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # always: the gateway bills from it
    if req.user is not None and len(req.user) <= _MAX_USER:
        body["user"] = req.user
    if req.response_format is not None:
        body["response_format"] = req.response_format
    if req.reasoning_effort is not None:
        body["reasoning_effort"] = req.reasoning_effort
    return body


def _function_out(tool: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    return fn


def _image_url(image: Image) -> dict[str, Any]:
    url = f"data:{image.media_type or 'image/png'};base64,{image.data}" if image.data is not None else image.url
    return {"type": "image_url", "image_url": {"url": url}}


def _assistant_out(parts: list[Part]) -> dict[str, Any]:
    texts = [p.text for p in parts if isinstance(p, Text)]
    calls = [{"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments or "{}"}}
             for p in parts if isinstance(p, ToolCall)]
    out: dict[str, Any] = {"role": "assistant"}
    if len(texts) == 1:
        out["content"] = texts[0]
    elif texts:
        out["content"] = [{"type": "text", "text": t} for t in texts]
    else:
        out["content"] = None if calls else ""
    if calls:
        out["tool_calls"] = calls
    return out


def _user_out(parts: list[Part], messages: list[dict[str, Any]]) -> None:
    # Tool messages must directly follow the assistant's tool calls, so they go first.
    rest: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, ToolResult):
            texts = [c.text for c in p.content if isinstance(c, Text)]
            messages.append({"role": "tool", "tool_call_id": p.tool_call_id,
                             "content": texts[0] if len(texts) == 1 else "" if not texts
                             else [{"type": "text", "text": t} for t in texts]})
            rest.extend(_image_url(c) for c in p.content if isinstance(c, Image))
        elif isinstance(p, Text):
            rest.append({"type": "text", "text": p.text})
        elif isinstance(p, Image):
            rest.append(_image_url(p))
    if not rest:
        return
    if len(rest) == 1 and rest[0]["type"] == "text":
        messages.append({"role": "user", "content": rest[0]["text"]})
    else:
        messages.append({"role": "user", "content": rest})


# ---------------------------------------------------------------- responses
def usage_of(body: Mapping[str, Any]) -> Usage:
    return _usage(body.get("usage"))


@checked_usage  # bad counts from upstream are dropped and the usage marked invalid
def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    return Usage(input_tokens=raw.get("prompt_tokens") or 0, output_tokens=raw.get("completion_tokens") or 0,
                 cached_input_tokens=prompt.get("cached_tokens") or 0,
                 cache_write_tokens=prompt.get("cache_write_tokens") or 0,
                 reasoning_tokens=completion.get("reasoning_tokens") or 0)


def _usage_out(u: Usage) -> dict[str, Any]:
    prompt: dict[str, int] = {"cached_tokens": u.cached_input_tokens}
    if u.cache_write_tokens:
        prompt["cache_write_tokens"] = u.cache_write_tokens
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.output_tokens, "prompt_tokens_details": prompt,
            "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens}}


def parse_response(body: dict[str, Any]) -> ChatResponse:
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[Text | ToolCall | Thinking] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append(Thinking(reasoning))
    text = msg.get("content")
    if isinstance(text, list):  # a few compatible providers answer with parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append(Text(text))
    elif isinstance(msg.get("refusal"), str):
        content.append(Text(msg["refusal"]))
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append(ToolCall(call.get("id") or new_id("call_"), fn.get("name", ""), fn.get("arguments") or ""))
    stop = _STOP_IN.get(choice.get("finish_reason") or "stop", "end")
    return ChatResponse(id=body.get("id") or new_id("chatcmpl-"), model=body.get("model", ""), content=content,
                        stop_reason=stop, usage=usage_of(body), created=body.get("created"))


def _completion_id(resp_id: str) -> str:
    return resp_id if resp_id.startswith("chatcmpl-") else f"chatcmpl-{resp_id}" if resp_id else new_id("chatcmpl-")


def render_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    texts = [p.text for p in resp.content if isinstance(p, Text)]
    calls = [{"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments or "{}"}}
             for p in resp.content if isinstance(p, ToolCall)]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None,
                               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {"id": _completion_id(resp.id), "object": "chat.completion", "created": resp.created or now(),
            "model": model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                         "finish_reason": _STOP_OUT[resp.stop_reason]}],
            "usage": _usage_out(resp.usage)}


# ---------------------------------------------------------------- streams in
class StreamDecoder:
    """`chat.completion.chunk` events to neutral events.

    Blocks follow one another: a text block closes when a tool call starts, and each tool call when the
    next starts. StreamEnd waits until both the finish reason and the usage chunk are in (or `[DONE]`).
    """

    __slots__ = ("_ended", "_kind", "_next", "_open", "_started", "_stop", "_tools", "_usage", "first_token_seen")

    def __init__(self) -> None:
        self._started = False
        self._ended = False
        self._next = 0  # next neutral block index
        self._open: int | None = None
        self._kind: str | None = None  # "text" | "thinking" | "tool" for the open block
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index -> neutral block index
        self._stop: StopReason | None = None
        self._usage: Usage | None = None
        self.first_token_seen = False

    @property
    def usage(self) -> Usage:
        return self._usage or Usage()

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        if self._ended:
            return []
        if data == "[DONE]":
            return self.finish()
        try:
            chunk = json.loads(data)
        except ValueError:
            raise WireError(502, "provider_error", f"the provider sent a stream chunk that is not JSON: "
                                                   f"{data[:200]!r}") from None
        if not isinstance(chunk, dict):
            return []
        out: list[StreamEvent] = []
        if "error" in chunk and not chunk.get("choices"):
            raise _error_of(chunk, None)
        if not self._started:
            self._started = True
            out.append(StreamStart(chunk.get("id") or new_id("chatcmpl-"), chunk.get("model") or ""))
        choices = chunk.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                self._delta(delta, out)
            finish = choice.get("finish_reason")
            if finish:
                self._close(out)
                self._stop = _STOP_IN.get(finish, "end")
        usage = chunk.get("usage")
        if usage:
            self._usage = _usage(usage)
            if self._stop is not None:
                self._ended = True
                out.append(StreamEnd(self._stop, self._usage))
        return out

    def finish(self) -> list[StreamEvent]:
        """End of stream (`[DONE]` or the connection closed): the StreamEnd still owed, if any."""
        if self._ended or not self._started:
            return []
        self._ended = True
        out: list[StreamEvent] = []
        self._close(out)
        out.append(StreamEnd(self._stop or "end", self._usage))
        return out

    def _close(self, out: list[StreamEvent]) -> None:
        if self._open is not None:
            out.append(BlockStop(self._open))
            self._open = self._kind = None

    def _block(self, kind: str, out: list[StreamEvent]) -> int:
        """The open block's index if it is of this kind, else a newly opened one (closing the old)."""
        if self._open is not None and self._kind == kind:
            return self._open
        self._close(out)
        index = self._open = self._next
        self._kind = kind
        self._next += 1
        return index

    def _delta(self, delta: dict[str, Any], out: list[StreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            out.append(ThinkingDelta(self._block("thinking", out), reasoning))
            self.first_token_seen = True
        text = delta.get("content") or delta.get("refusal")
        if text and isinstance(text, str):
            out.append(TextDelta(self._block("text", out), text))
            self.first_token_seen = True
        calls = delta.get("tool_calls")
        if not calls:
            return
        for call in calls:
            key = call.get("index")
            if key is None:  # some compatible providers omit it: a new id means a new call
                key = len(self._tools) if call.get("id") or not self._tools else len(self._tools) - 1
            fn = call.get("function") or {}
            index = self._tools.get(key)
            if index is None:
                self._close(out)  # each tool call is a block of its own
                index = self._tools[key] = self._block("tool", out)
                out.append(ToolCallStart(index, call.get("id") or new_id("call_"), fn.get("name") or ""))
                self.first_token_seen = True
            args = fn.get("arguments")
            if args:
                out.append(ToolArgsDelta(index, args))


# ---------------------------------------------------------------- streams out
class StreamEncoder:
    """Neutral events to the `data: {chunk}` lines an OpenAI SDK client reads."""

    __slots__ = ("_head", "_include_usage", "_model", "_prefix", "_tail", "_tool_index", "_usage_null")

    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._prefix = ""  # 'data: {"id":...,"model":...,' shared by every chunk
        self._head: str | None = None
        # OpenAI sends "usage": null on every chunk but the last when the client asked for usage.
        self._usage_null = ',"usage":null' if include_usage else ""
        self._tail = ',"logprobs":null,"finish_reason":null}]' + self._usage_null + "}\n\n"
        self._tool_index: dict[int, int] = {}  # neutral block index -> OpenAI tool_calls index

    def _start(self, resp_id: str) -> bytes:
        # Everything before the delta is the same on every chunk: build it once.
        self._prefix = (f'data: {{"id":{dumps(_completion_id(resp_id))},"object":"chat.completion.chunk",'
                        f'"created":{now()},"model":{dumps(self._model)},')
        self._head = self._prefix + '"choices":[{"index":0,"delta":'
        return self._chunk('{"role":"assistant","content":""}')

    def _chunk(self, delta_json: str) -> bytes:
        return (self._head + delta_json + self._tail).encode()  # type: ignore[operator]

    def encode(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, StreamStart):
            return self._start(ev.id) if self._head is None else b""
        prefix = self._start("") if self._head is None else b""
        if isinstance(ev, TextDelta):
            return prefix + self._chunk('{"content":' + dumps(ev.text) + "}") if ev.text else prefix
        if isinstance(ev, ToolCallStart):
            i = self._tool_index[ev.index] = len(self._tool_index)
            return prefix + self._chunk(dumps({"tool_calls": [{"index": i, "id": ev.id, "type": "function",
                                                                "function": {"name": ev.name, "arguments": ""}}]}))
        if isinstance(ev, ToolArgsDelta):
            i = self._tool_index.get(ev.index)
            if i is None or not ev.arguments:
                return prefix
            return prefix + self._chunk(f'{{"tool_calls":[{{"index":{i},"function":{{"arguments":'
                                        f"{dumps(ev.arguments)}}}}}]}}")
        if isinstance(ev, StreamEnd):
            return prefix + self._end(ev)
        return prefix  # thinking and block stops have no Chat Completions form

    def _end(self, ev: StreamEnd) -> bytes:
        head = self._head
        assert head is not None
        out = head + '{},"logprobs":null,"finish_reason":"' + _STOP_OUT[ev.stop_reason] + '"}]' + self._usage_null
        out += "}\n\n"
        if self._include_usage and ev.usage is not None:
            out += self._prefix + '"choices":[],"usage":' + dumps(_usage_out(ev.usage)) + "}\n\n"
        return (out + "data: [DONE]\n\n").encode()

    def error(self, err: WireError) -> bytes:
        return f"data: {dumps(render_error(err))}\n\n".encode()


# ---------------------------------------------------------------- errors
def _error_of(obj: Any, status: int | None) -> WireError:
    """A WireError from a parsed error body: {"error": {...}}, {"error": "..."} or [{"error": {...}}];
    `status` None for an error inside a stream, which has no HTTP status of its own."""
    if isinstance(obj, list) and obj:
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, str):
        err = {"message": err}
    if not isinstance(err, dict):
        err = obj if isinstance(obj, dict) else {}
    code = err.get("code")
    if status is None:  # a numeric code is the best status a mid-stream error offers
        status = code if isinstance(code, int) and 400 <= code < 600 else 500
    message = err.get("message")
    if not isinstance(message, str) or not message:
        message = f"the provider returned HTTP {status} with no error message"
    provider_type = err.get("type") if isinstance(err.get("type"), str) else code if isinstance(code, str) else None
    kind: ErrorKind = kind_for_status(status)
    return WireError(status, kind, message, provider_type=provider_type)


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> WireError:
    parsed = json_body(body)
    if isinstance(parsed, dict | list):
        err = _error_of(parsed, status)
    elif body.strip():
        err = WireError(status, kind_for_status(status), f"the provider returned HTTP {status}: {body_text(body)}")
    else:
        err = WireError(status, kind_for_status(status), f"the provider returned HTTP {status} with an empty body")
    err.retry_after = retry_after(headers)
    return err


def render_error(err: WireError) -> dict[str, Any]:
    kind, code = _ERROR_OUT.get(err.kind, ("server_error", None))
    return {"error": {"message": err.message, "type": kind, "param": None, "code": code}}
