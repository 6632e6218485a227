"""OpenAI Responses wire format (`POST /v1/responses`), as Codex CLI and OpenCode's built-in `openai` provider
send it and as OpenAI answers it (the only API codex-family models accept).

Choices worth knowing:
- `instructions` and `system`/`developer` input messages become the neutral system; going out, the system is
  the `instructions` string.
- Input items map to neutral messages: `message` items by role, `function_call` to an assistant `ToolCall`
  (its `call_id` is the id), `function_call_output` to a user `ToolResult`, `reasoning` to an assistant
  `Thinking` (summary text, `encrypted_content` and `id` kept for OpenAI only). Consecutive items of one
  role share a message. `item_reference` and `previous_response_id` need OpenAI's stored state, so they
  cannot be translated.
- Only `function` tools translate; OpenAI-hosted or client-specific tools (web_search, file_search,
  namespace, custom, local_shell ...) are left out when a request crosses formats.
- Outgoing requests say `store: false` (the gateway keeps no conversation at OpenAI), `strict: false` on
  function tools (the API's default is strict), and drop `stop`, which the Responses API has no place for.
  Reasoning from another provider is dropped: only OpenAI's own encrypted reasoning can be sent back. Going to
  a Responses client, another provider's thinking becomes a reasoning item whose id starts `rs_prism_`; such
  items are removed before a request reaches OpenAI (`without_minted_reasoning`), which could not resume them.
- Usage: `input_tokens` includes `input_tokens_details.cached_tokens` and `output_tokens` includes
  `output_tokens_details.reasoning_tokens`: the neutral convention as is.
- Errors use the same body as Chat Completions (`{"error": {"message", "type", "param", "code"}}`).

Pure translation, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mcp_prism.providers.formats import bad_request, dumps, is_int, new_id, now, type_name
from mcp_prism.providers.formats.openai import _image_from_url, parse_error, render_error
from mcp_prism.providers.usage_check import checked_usage
from mcp_prism.providers.wire import (
    BlockStop,
    ChatRequest,
    ChatResponse,
    Image,
    Message,
    Part,
    Role,
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

__all__ = ["MINTED_REASONING", "TERMINAL_EVENTS", "StreamDecoder", "StreamEncoder", "build_request", "parse_error",
           "parse_request", "parse_response", "render_error", "render_response", "usage_of",
           "without_minted_reasoning"]

# Id prefix of the reasoning items the gateway makes from another provider's thinking: they hold no state OpenAI
# can resume (no encrypted_content, never stored), so they are dropped before a request reaches OpenAI.
MINTED_REASONING = "rs_prism_"
# The events that end a Responses stream (no `[DONE]` follows them).
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_STATUS_OF_CODE = {"rate_limit_exceeded": 429, "invalid_prompt": 400, "context_length_exceeded": 400,
                   "server_error": 500, "server_is_overloaded": 503}
_INCOMPLETE_STOP: dict[str, StopReason] = {"max_output_tokens": "length", "content_filter": "content_filter"}
_UNTRANSLATABLE = ("item_reference", "local_shell_call", "local_shell_call_output", "computer_call",
                   "computer_call_output", "mcp_call", "mcp_approval_request", "mcp_approval_response",
                   "image_generation_call", "code_interpreter_call")


# ---------------------------------------------------------------- requests in
def parse_request(body: dict[str, Any]) -> ChatRequest:
    if not isinstance(body, dict):
        bad_request(f"the request body must be a JSON object, got {type_name(body)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        bad_request('"model" is required and must be a string, e.g. "model": "gpt-5"')
    if body.get("previous_response_id"):
        bad_request('"previous_response_id" continues a conversation stored at OpenAI, which a request routed to '
                    'another provider cannot use: send the whole conversation in "input" (and "store": false)')
    req = ChatRequest(model=model, messages=[])
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        req.system.append(Text(instructions))
    elif instructions is not None and not isinstance(instructions, str):
        bad_request(f'"instructions" must be a string, got {type_name(instructions)}')
    raw = body.get("input")
    if isinstance(raw, str):
        req.messages.append(Message("user", [Text(raw)]))
    elif isinstance(raw, list) and raw:
        names: dict[str, str] = {}
        for i, item in enumerate(raw):
            _item_in(req, item, f"input[{i}]", names)
    else:
        bad_request('"input" is required: a string or a non-empty array of items such as '
                    '{"role": "user", "content": "..."}')
    if not req.messages:
        bad_request('"input" holds no user or assistant content to answer')
    req.tools = _tools(body.get("tools"))
    req.tool_choice = _tool_choice(body.get("tool_choice"))
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not is_int(limit) or limit < 1:
            bad_request(f'"max_output_tokens" must be a positive integer, got {limit!r}')
        req.max_tokens = limit
    for key, high in (("temperature", 2), ("top_p", 1)):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
                bad_request(f'"{key}" must be a number from 0 to {high}, got {value!r}')
            setattr(req, key, value)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        bad_request(f'"stream" must be true or false, got {stream!r}')
    req.stream = bool(stream)
    req.stream_usage = True  # a Responses stream always ends with its usage
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        bad_request(f'"parallel_tool_calls" must be true or false, got {parallel!r}')
    req.parallel_tool_calls = parallel
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str):
        req.user = user
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        req.reasoning_effort = reasoning["effort"]
    elif reasoning is not None and not isinstance(reasoning, dict):
        bad_request(f'"reasoning" must be an object like {{"effort": "medium"}}, got {type_name(reasoning)}')
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if isinstance(fmt, dict):
        req.response_format = _format_in(fmt)
    return req


def _add(req: ChatRequest, role: Role, part: Part) -> None:
    last = req.messages[-1] if req.messages else None
    if last is not None and last.role == role:
        last.content.append(part)
    else:
        req.messages.append(Message(role, [part]))


def _item_in(req: ChatRequest, item: Any, where: str, names: dict[str, str]) -> None:
    if not isinstance(item, dict):
        bad_request(f"{where} must be an object, got {type_name(item)}")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        content = item.get("content")
        if role in ("system", "developer"):
            req.system.extend(p for p in _content_in(content, where, "system") if isinstance(p, Text))
        elif role in ("user", "assistant"):
            for part in _content_in(content, where, role):
                _add(req, role, part)
        else:
            bad_request(f"{where}.role must be user, assistant, system or developer, got {role!r}")
    elif kind in ("function_call", "custom_tool_call"):
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
            bad_request(f"{where}: a {kind} item needs call_id and name strings")
        if kind == "function_call":
            args = item.get("arguments")
            if not isinstance(args, str):
                bad_request(f"{where}.arguments must be a JSON string, got {type_name(args)}")
        else:  # a free-form tool's input, as a function's single argument
            args = dumps({"input": item.get("input") if isinstance(item.get("input"), str) else ""})
        names[call_id] = name
        _add(req, "assistant", ToolCall(call_id, name, args))
    elif kind in ("function_call_output", "custom_tool_call_output"):
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            bad_request(f"{where}.call_id is required: the call_id of the function_call this output answers")
        output = item.get("output")
        parts: list[Text | Image] = [Text(output)] if isinstance(output, str) else [
            p for p in _content_in(output, where, "user") if isinstance(p, Text | Image)]
        _add(req, "user", ToolResult(call_id, parts, name=names.get(call_id)))
    elif kind == "reasoning":
        summary = item.get("summary")
        text = "\n\n".join(s["text"] for s in summary if isinstance(s, dict) and isinstance(s.get("text"), str)) \
            if isinstance(summary, list) else ""
        encrypted = item.get("encrypted_content")
        _add(req, "assistant", Thinking(text, encrypted=encrypted if isinstance(encrypted, str) else None,
                                        id=item.get("id") if isinstance(item.get("id"), str) else None))
    elif kind in _UNTRANSLATABLE:
        bad_request(f"{where}: {kind} items exist only at OpenAI and cannot be sent to another provider; "
                    "send the conversation as messages and function calls")
    # other items (web_search_call, file_search_call ...) are OpenAI-hosted tool records: nothing to translate


def _content_in(content: Any, where: str, role: str) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    if content is None:
        return []
    if not isinstance(content, list):
        bad_request(f"{where}.content must be a string or an array of content parts, got {type_name(content)}")
    out: list[Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            out.append(Text(part["text"]))
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            out.append(Text(part["refusal"]))
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                bad_request(f"{where}.content[{j}]: only input_image parts with an image_url (https: or data:) can "
                            "be translated, not file_id")
            out.append(_image_from_url(url, f"{where}.content[{j}]"))
        else:
            bad_request(f'{where}.content[{j}] must be an input_text, output_text or input_image part in a {role} '
                        f"message, got type {kind!r}")
    return out


def _tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        bad_request(f'"tools" must be an array, got {type_name(raw)}')
    out = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, dict):
            bad_request(f"tools[{i}] must be an object, got {type_name(tool)}")
        if tool.get("type") != "function":
            continue  # hosted and client-specific tools have no counterpart elsewhere
        name, params, desc = tool.get("name"), tool.get("parameters"), tool.get("description")
        if not isinstance(name, str) or not name:
            bad_request(f"tools[{i}].name is required on function tools")
        if params is None:
            params = {"type": "object", "properties": {}}
        elif not isinstance(params, dict):
            bad_request(f"tools[{i}].parameters must be a JSON Schema object, got {type_name(params)}")
        out.append(Tool(name, desc if isinstance(desc, str) else None, params))
    return out


def _tool_choice(raw: Any) -> str | None:
    if raw is None or raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return raw["name"]
    return None  # a hosted tool or an allowed-tools list: left to the model


def _format_in(fmt: dict[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    return None


def without_minted_reasoning(body: dict[str, Any]) -> dict[str, Any]:
    """`body` without the reasoning items the gateway minted from another provider's thinking (a conversation
    that was routed to Claude, then to OpenAI): OpenAI would answer 404 for them. Unchanged (the same object)
    when there are none, so a pass-through stays untouched."""
    items = body.get("input")
    if not isinstance(items, list) or not any(
            isinstance(i, dict) and i.get("type") == "reasoning" and str(i.get("id", "")).startswith(MINTED_REASONING)
            for i in items):
        return body
    return {**body, "input": [i for i in items if not (isinstance(i, dict) and i.get("type") == "reasoning"
                                                      and str(i.get("id", "")).startswith(MINTED_REASONING))]}


# ---------------------------------------------------------------- requests out
def build_request(req: ChatRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    if req.system:
        body["instructions"] = "\n\n".join(t.text for t in req.system)
    items: list[dict[str, Any]] = []
    for msg in req.messages:
        if msg.role == "assistant":
            _assistant_items(msg.content, items)
        else:
            _user_items(msg.content, items)
    body["input"] = items
    if req.tools:
        body["tools"] = [{"type": "function", "name": t.name, **({"description": t.description}
                          if t.description is not None else {}), "parameters": t.parameters, "strict": False}
                         for t in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = (req.tool_choice if req.tool_choice in ("auto", "none", "required")
                                   else {"type": "function", "name": req.tool_choice})
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.max_tokens is not None:
        body["max_output_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.reasoning_effort is not None:
        body["reasoning"] = {"effort": req.reasoning_effort}
    if req.response_format is not None:
        body["text"] = {"format": _format_out(req.response_format)}
    if req.user is not None and len(req.user) <= 64:
        body["safety_identifier"] = req.user
    body["store"] = False
    if req.stream:
        body["stream"] = True
    return body


def _format_out(fmt: dict[str, Any]) -> dict[str, Any]:
    if fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema") or {}
        return {"type": "json_schema", "name": schema.get("name", "response"),
                **{k: schema[k] for k in ("schema", "strict", "description") if k in schema}}
    return {"type": "json_object"}


def _image_out(image: Image) -> dict[str, Any]:
    url = f"data:{image.media_type or 'image/png'};base64,{image.data}" if image.data is not None else image.url
    return {"type": "input_image", "image_url": url, "detail": "auto"}


def _assistant_items(parts: list[Part], items: list[dict[str, Any]]) -> None:
    texts: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            texts.append({"type": "output_text", "text": p.text, "annotations": []})
            continue
        if texts:
            items.append({"type": "message", "role": "assistant", "content": texts})
            texts = []
        if isinstance(p, ToolCall):
            items.append({"type": "function_call", "call_id": p.id, "name": p.name, "arguments": p.arguments or "{}"})
        elif isinstance(p, Thinking) and p.encrypted:  # OpenAI's own reasoning only: others' means nothing here
            item: dict[str, Any] = {"type": "reasoning", "summary": [{"type": "summary_text", "text": p.text}]
                                    if p.text else [], "encrypted_content": p.encrypted}
            if p.id:
                item["id"] = p.id
            items.append(item)
    if texts:
        items.append({"type": "message", "role": "assistant", "content": texts})


def _user_items(parts: list[Part], items: list[dict[str, Any]]) -> None:
    content: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, ToolResult):
            texts = [c.text for c in p.content if isinstance(c, Text)]
            images = [c for c in p.content if isinstance(c, Image)]
            output: str | list[dict[str, Any]] = "\n".join(texts) if not images else \
                [*({"type": "input_text", "text": t} for t in texts), *(_image_out(i) for i in images)]
            items.append({"type": "function_call_output", "call_id": p.tool_call_id, "output": output})
        elif isinstance(p, Text):
            content.append({"type": "input_text", "text": p.text})
        elif isinstance(p, Image):
            content.append(_image_out(p))
    if content:
        items.append({"type": "message", "role": "user", "content": content})


# ---------------------------------------------------------------- responses
def usage_of(body: Mapping[str, Any]) -> Usage:
    return _usage(body.get("usage"))


@checked_usage  # bad counts from upstream are dropped and the usage marked invalid
def _usage(raw: Any) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    inp = raw.get("input_tokens_details") or {}
    out = raw.get("output_tokens_details") or {}
    return Usage(input_tokens=raw.get("input_tokens") or 0, output_tokens=raw.get("output_tokens") or 0,
                 cached_input_tokens=inp.get("cached_tokens") or 0,
                 cache_write_tokens=inp.get("cache_write_tokens") or 0,
                 reasoning_tokens=out.get("reasoning_tokens") or 0)


def _usage_out(u: Usage) -> dict[str, Any]:
    details = {"cached_tokens": u.cached_input_tokens, "cache_write_tokens": u.cache_write_tokens}
    return {"input_tokens": u.input_tokens, "input_tokens_details": details,
            "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.input_tokens + u.output_tokens}


def _stop_of(resp: Mapping[str, Any], has_calls: bool) -> StopReason:
    if resp.get("status") == "incomplete":
        reason = (resp.get("incomplete_details") or {}).get("reason")
        return _INCOMPLETE_STOP.get(reason, "length")
    return "tool_use" if has_calls else "end"


def parse_response(body: dict[str, Any]) -> ChatResponse:
    content: list[Text | ToolCall | Thinking] = []
    for item in body.get("output") or ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            text = "".join(p.get("text") or p.get("refusal") or "" for p in item.get("content") or ()
                           if isinstance(p, dict))
            if text:
                content.append(Text(text))
        elif kind == "function_call":
            content.append(ToolCall(item.get("call_id") or new_id("call_"), item.get("name", ""),
                                    item.get("arguments") or ""))
        elif kind == "custom_tool_call":
            content.append(ToolCall(item.get("call_id") or new_id("call_"), item.get("name", ""),
                                    dumps({"input": item.get("input") or ""})))
        elif kind == "reasoning":
            summary = item.get("summary") or ()
            text = "\n\n".join(s.get("text", "") for s in summary if isinstance(s, dict))
            content.append(Thinking(text, encrypted=item.get("encrypted_content"), id=item.get("id")))
    stop = _stop_of(body, any(isinstance(p, ToolCall) for p in content))
    return ChatResponse(id=body.get("id") or new_id("resp_"), model=body.get("model", ""), content=content,
                        stop_reason=stop, usage=usage_of(body), created=body.get("created_at"))


def _response_id(resp_id: str) -> str:
    return resp_id if resp_id.startswith("resp_") else f"resp_{resp_id}" if resp_id else new_id("resp_")


def _item_out(part: Text | ToolCall | Thinking) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"id": new_id("msg_"), "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": part.text, "annotations": [], "logprobs": []}]}
    if isinstance(part, ToolCall):
        return {"id": new_id("fc_"), "type": "function_call", "status": "completed", "call_id": part.id,
                "name": part.name, "arguments": part.arguments or "{}"}
    item: dict[str, Any] = {"id": part.id or new_id(MINTED_REASONING), "type": "reasoning",
                            "summary": [{"type": "summary_text", "text": part.text}] if part.text else []}
    if part.encrypted:
        item["encrypted_content"] = part.encrypted
    return item


def _envelope(resp_id: str, model: str, created: int, status: str, output: list[dict[str, Any]],
              usage: Usage | None, stop: StopReason | None = None) -> dict[str, Any]:
    """A Response object with every field the API always sends."""
    incomplete = None
    if status == "incomplete":
        incomplete = {"reason": "content_filter" if stop == "content_filter" else "max_output_tokens"}
    return {"id": resp_id, "object": "response", "created_at": created, "status": status, "background": False,
            "error": None, "incomplete_details": incomplete, "instructions": None, "max_output_tokens": None,
            "model": model, "output": output, "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": False, "temperature": 1.0,
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
            "truncation": "disabled", "usage": _usage_out(usage) if usage is not None else None, "user": None,
            "metadata": {}}


def _status_of(stop: StopReason) -> str:
    return "incomplete" if stop in ("length", "content_filter") else "completed"


def render_response(resp: ChatResponse, model: str) -> dict[str, Any]:
    output = [_item_out(p) for p in resp.content if not (isinstance(p, Thinking) and p.redacted)]
    return _envelope(_response_id(resp.id), model, resp.created or now(), _status_of(resp.stop_reason), output,
                     resp.usage, resp.stop_reason)


# ---------------------------------------------------------------- streams in
class StreamDecoder:
    """Responses stream events to neutral events. Each output item with content is one neutral block,
    opened on its first delta (a reasoning item with only encrypted content opens none) and closed by
    `response.output_item.done`; `response.completed` / `.incomplete` end the stream with its usage."""

    __slots__ = ("_args", "_blocks", "_calls", "_ended", "_next", "_started", "_usage", "first_token_seen")

    def __init__(self) -> None:
        self._started = False
        self._ended = False
        self._next = 0
        self._blocks: dict[int, int] = {}  # output_index -> neutral block index
        self._args: set[int] = set()  # output indexes whose arguments streamed as deltas
        self._calls = False
        self._usage: Usage | None = None
        self.first_token_seen = False

    @property
    def usage(self) -> Usage:
        return self._usage or Usage()

    def _open(self, output_index: int) -> int:
        index = self._blocks.get(output_index)
        if index is None:
            index = self._blocks[output_index] = self._next
            self._next += 1
        return index

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        if self._ended or data == "[DONE]":
            return []
        try:
            obj = json.loads(data)
        except ValueError:
            raise WireError(502, "provider_error", f"the provider sent a stream event that is not JSON: "
                                                   f"{data[:200]!r}") from None
        if not isinstance(obj, dict):
            return []
        kind = obj.get("type") or event
        out: list[StreamEvent] = []
        if kind == "error" or kind == "response.failed":
            err = obj if kind == "error" else (obj.get("response") or {}).get("error") or {}
            raise _stream_error(err)
        if not self._started:
            self._started = True
            resp = obj.get("response") if isinstance(obj.get("response"), dict) else {}
            out.append(StreamStart(resp.get("id") or new_id("resp_"), resp.get("model") or ""))
        where = obj.get("output_index")
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            if obj.get("delta"):
                out.append(TextDelta(self._open(where), obj["delta"]))
                self.first_token_seen = True
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            if obj.get("delta"):
                out.append(ThinkingDelta(self._open(where), obj["delta"]))
                self.first_token_seen = True
        elif kind == "response.reasoning_summary_part.added":
            if obj.get("summary_index") and where in self._blocks:  # parts of one summary read as paragraphs
                out.append(ThinkingDelta(self._blocks[where], "\n\n"))
        elif kind == "response.output_item.added":
            item = obj.get("item") or {}
            if item.get("type") == "function_call":
                self._calls = True
                out.append(ToolCallStart(self._open(where), item.get("call_id") or new_id("call_"),
                                         item.get("name") or ""))
                self.first_token_seen = True
        elif kind == "response.function_call_arguments.delta":
            if obj.get("delta") and where in self._blocks:
                self._args.add(where)
                out.append(ToolArgsDelta(self._blocks[where], obj["delta"]))
        elif kind == "response.output_item.done":
            item = obj.get("item") or {}
            index = self._blocks.get(where)
            if index is not None:
                if item.get("type") == "function_call" and where not in self._args and item.get("arguments"):
                    out.append(ToolArgsDelta(index, item["arguments"]))  # arguments sent whole, not as deltas
                out.append(BlockStop(index))
        elif kind in ("response.completed", "response.incomplete"):
            resp = obj.get("response") or {}
            self._usage = usage_of(resp)
            self._ended = True
            out.append(StreamEnd(_stop_of(resp, self._calls), self._usage))
        return out

    def finish(self) -> list[StreamEvent]:
        """End of the connection: a Responses stream that ended without its terminal event ended badly."""
        return []


def _stream_error(err: dict[str, Any]) -> WireError:
    """An `error` event or a failed response's `error` ({code, message}): the status its code stands for."""
    code = err.get("code") if isinstance(err.get("code"), str) else None
    message = err.get("message") if isinstance(err.get("message"), str) and err["message"] else \
        "the provider's response failed"
    status = _STATUS_OF_CODE.get(code or "", 500)
    return WireError(status, kind_for_status(status), message, provider_type=code)


# ---------------------------------------------------------------- streams out
class _Item:
    __slots__ = ("call_id", "id", "kind", "name", "output_index", "text")

    def __init__(self, kind: str, output_index: int, call_id: str = "", name: str = "") -> None:
        self.kind = kind  # "message" | "reasoning" | "function_call"
        self.id = new_id({"message": "msg_", "reasoning": MINTED_REASONING, "function_call": "fc_"}[kind])
        self.output_index = output_index
        self.text: list[str] = []  # text, summary or arguments so far
        self.call_id, self.name = call_id, name

    def body(self, status: str) -> dict[str, Any]:
        text = "".join(self.text)
        if self.kind == "message":
            content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] \
                if status == "completed" else []
            return {"id": self.id, "type": "message", "status": status, "content": content, "role": "assistant"}
        if self.kind == "reasoning":
            return {"id": self.id, "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": text}] if status == "completed" and text else []}
        return {"id": self.id, "type": "function_call", "status": status,
                "arguments": text if status == "completed" else "", "call_id": self.call_id, "name": self.name}


class StreamEncoder:
    """Neutral events to the `event: response.*` SSE events an OpenAI SDK (and Codex CLI) reads, in OpenAI's
    order: response.created, response.in_progress, then per output item `output_item.added`, its parts and
    deltas, `output_item.done`; last `response.completed` (or `.incomplete`) holding every item and the usage."""

    __slots__ = ("_created", "_done", "_id", "_items", "_model", "_open", "_seq")

    def __init__(self, model: str, include_usage: bool = True) -> None:
        self._model = model
        self._seq = 0
        self._id = ""
        self._created = now()
        self._items: dict[int, _Item] = {}  # neutral block index -> item
        self._open: list[int] = []  # block indexes whose items are not done yet
        self._done: list[dict[str, Any]] = []  # finished items, in output order

    def _event(self, kind: str, fields: dict[str, Any]) -> str:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return f"event: {kind}\ndata: {dumps(data)}\n\n"

    def _start(self, resp_id: str) -> str:
        self._id = _response_id(resp_id)
        env = _envelope(self._id, self._model, self._created, "in_progress", [], None)
        return self._event("response.created", {"response": env}) + self._event("response.in_progress",
                                                                                   {"response": env})

    def _item(self, index: int, kind: str, out: list[str], call_id: str = "", name: str = "") -> _Item:
        item = self._items.get(index)
        if item is not None:
            return item
        for other in list(self._open):  # output items follow one another: close any still open
            out.append(self._close(other))
        item = self._items[index] = _Item(kind, len(self._done), call_id, name)
        self._open.append(index)
        ref = {"output_index": item.output_index}
        out.append(self._event("response.output_item.added", {**ref, "item": item.body("in_progress")}))
        ref["item_id"] = item.id
        if kind == "message":
            out.append(self._event("response.content_part.added", {**ref, "content_index": 0, "part": {
                "type": "output_text", "annotations": [], "logprobs": [], "text": ""}}))
        elif kind == "reasoning":
            out.append(self._event("response.reasoning_summary_part.added", {**ref, "summary_index": 0, "part": {
                "type": "summary_text", "text": ""}}))
        return item

    def _close(self, index: int) -> str:
        item = self._items[index]
        self._open.remove(index)
        ref = {"item_id": item.id, "output_index": item.output_index}
        text = "".join(item.text)
        out = []
        if item.kind == "message":
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            out.append(self._event("response.output_text.done", {**ref, "content_index": 0, "text": text,
                                                                 "logprobs": []}))
            out.append(self._event("response.content_part.done", {**ref, "content_index": 0, "part": part}))
        elif item.kind == "reasoning":
            out.append(self._event("response.reasoning_summary_text.done", {**ref, "summary_index": 0,
                                                                            "text": text}))
            out.append(self._event("response.reasoning_summary_part.done", {**ref, "summary_index": 0, "part": {
                "type": "summary_text", "text": text}}))
        else:
            out.append(self._event("response.function_call_arguments.done", {**ref, "arguments": text}))
        body = item.body("completed")
        self._done.append(body)
        out.append(self._event("response.output_item.done", {"output_index": item.output_index, "item": body}))
        return "".join(out)

    def encode(self, ev: StreamEvent) -> bytes:
        out: list[str] = []
        if not self._id:
            out.append(self._start(ev.id if isinstance(ev, StreamStart) else ""))
        if isinstance(ev, TextDelta):
            item = self._item(ev.index, "message", out)
            if ev.text:
                item.text.append(ev.text)
                out.append(self._event("response.output_text.delta", {
                    "item_id": item.id, "output_index": item.output_index, "content_index": 0, "delta": ev.text,
                    "logprobs": []}))
        elif isinstance(ev, ThinkingDelta):
            item = self._item(ev.index, "reasoning", out)
            if ev.text:
                item.text.append(ev.text)
                out.append(self._event("response.reasoning_summary_text.delta", {
                    "item_id": item.id, "output_index": item.output_index, "summary_index": 0, "delta": ev.text}))
        elif isinstance(ev, ToolCallStart):
            self._item(ev.index, "function_call", out, ev.id, ev.name)
        elif isinstance(ev, ToolArgsDelta):
            item = self._items.get(ev.index)
            if item is not None and ev.index in self._open and ev.arguments:
                item.text.append(ev.arguments)
                out.append(self._event("response.function_call_arguments.delta", {
                    "item_id": item.id, "output_index": item.output_index, "delta": ev.arguments}))
        elif isinstance(ev, BlockStop):
            if ev.index in self._open:
                out.append(self._close(ev.index))
        elif isinstance(ev, StreamEnd):
            out.extend(self._close(i) for i in list(self._open))
            status = _status_of(ev.stop_reason)
            env = _envelope(self._id, self._model, self._created, status, self._done, ev.usage or Usage(),
                            ev.stop_reason)
            out.append(self._event(f"response.{status}", {"response": env}))
        return "".join(out).encode()

    def error(self, err: WireError) -> bytes:
        """A failure mid-stream: OpenAI's `error` event, then `response.failed` so clients stop waiting."""
        body = render_error(err)["error"]
        out = self._start("") if not self._id else ""
        out += self._event("error", {"code": body["code"] or body["type"], "message": err.message, "param": None})
        env = _envelope(self._id, self._model, self._created, "failed", self._done, None)
        env["error"] = {"code": "server_error" if err.status >= 500 else "invalid_prompt", "message": err.message}
        return (out + self._event("response.failed", {"response": env})).encode()
