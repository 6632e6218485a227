"""The OpenAI Chat Completions and Anthropic Messages wire formats, checked against the official SDKs.

The SDKs' pydantic types are the ground truth for response and stream shapes: rendered bodies are
validated with `model_validate`, and translated streams are read back through the real SDK clients
(over an in-memory httpx transport) and their stream accumulators.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse as AnthropicErrorResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from mcp_prism.providers.formats import anthropic as anth
from mcp_prism.providers.formats import openai as oai
from mcp_prism.providers.sse import SSEDecoder, encode_sse
from mcp_prism.providers.wire import (
    BlockStop,
    ChatResponse,
    Image,
    StreamEnd,
    StreamStart,
    Text,
    TextDelta,
    Thinking,
    ThinkingDelta,
    ToolArgsDelta,
    ToolCall,
    ToolCallStart,
    ToolResult,
    Usage,
    WireError,
)

RAW_EVENT = TypeAdapter(RawMessageStreamEvent)
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


# ---------------------------------------------------------------- SSE
def feed_all(raw: bytes, cuts: list[int]) -> list[tuple[str | None, str]]:
    dec = SSEDecoder()
    out: list[tuple[str | None, str]] = []
    last = 0
    for cut in sorted(set(cuts)):
        out += dec.feed(raw[last:cut])
        last = cut
    out += dec.feed(raw[last:])
    return out + dec.flush()


def test_sse_fields_comments_and_line_endings() -> None:
    raw = (b": keep-alive comment\n\n"
           b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n"
           b"data: line one\ndata: line two\n\n"
           b"data:no-space\rid: 7\rretry: 100\r\r"
           b"event: ping\n\n"  # no data: not dispatched
           b"data\n\n"  # a field with no colon: empty data
           b"data: caf\xc3\xa9 \xe2\x9c\x93\n\n"
           b"data: tail without blank line")
    assert feed_all(raw, []) == [("message_start", '{"a":1}'), (None, "line one\nline two"), (None, "no-space"),
                                 (None, ""), (None, "café ✓"), (None, "tail without blank line")]


def test_sse_bom_and_cr_split_across_chunks() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"\xef\xbb") == []
    assert dec.feed(b"\xbfdata: x\r") == []
    assert dec.feed(b"\n\r") == []  # the second CR may still be half of a CRLF
    assert dec.feed(b"\ndata: y\n\n") == [(None, "x"), (None, "y")]
    assert dec.flush() == []


SSE_EVENTS = st.lists(st.tuples(st.none() | st.sampled_from(["message_start", "content_block_delta", "ping"]),
                                st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
                                        max_size=30)), max_size=8)


@settings(max_examples=200, deadline=None)
@given(events=SSE_EVENTS, newline=st.sampled_from(["\n", "\r\n", "\r"]), data=st.data())
def test_sse_any_chunking_gives_the_same_events(events: list[tuple[str | None, str]], newline: str,
                                                data: st.DataObject) -> None:
    raw = b"".join(encode_sse(d, e) for e, d in events).replace(b"\n", newline.encode())
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    assert feed_all(raw, cuts) == events
    assert feed_all(raw, list(range(len(raw)))) == events  # byte by byte, through multibyte characters


def test_encode_sse_multiline() -> None:
    assert encode_sse("a\nb", "x") == b"event: x\ndata: a\ndata: b\n\n"
    assert feed_all(encode_sse("a\r\nb"), []) == [(None, "a\nb")]


# ---------------------------------------------------------------- requests
OPENAI_REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                     {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C, sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "14:05"}]},
        {"role": "user", "content": "Thanks. Summarise."},
        {"role": "assistant", "content": "Sunny, 18C, 14:05."},
        {"role": "user", "content": "And tomorrow?"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                                "parameters": WEATHER_SCHEMA}},
              {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
    "tool_choice": "auto", "parallel_tool_calls": False, "max_completion_tokens": 500, "temperature": 0.5,
    "top_p": 0.9, "stop": "END", "stream": True, "stream_options": {"include_usage": True}, "user": "u-1",
}


def test_openai_request_parses_to_neutral() -> None:
    req = oai.parse_request(OPENAI_REQUEST)
    assert [t.text for t in req.system] == ["You are terse.", "Use tools."]
    assert [m.role for m in req.messages] == ["user", "assistant", "user", "user", "assistant", "user"]
    assert req.messages[0].content[1] == Image(media_type="image/png", data=PNG)
    assert req.messages[0].content[2] == Image(url="https://x.test/a.jpg")
    assert req.messages[1].content == [Text("Checking."), ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
                                       ToolCall("call_2", "get_time", "")]
    # consecutive tool messages become one user message; the tool name is looked up for Gemini
    assert req.messages[2].content == [ToolResult("call_1", [Text("18C, sunny")], name="get_weather"),
                                       ToolResult("call_2", [Text("14:05")], name="get_time")]
    assert (req.max_tokens, req.temperature, req.top_p, req.stop, req.stream, req.stream_usage, req.user,
            req.parallel_tool_calls, req.tool_choice) == (500, 0.5, 0.9, ["END"], True, True, "u-1", False, "auto")
    assert req.tools[1].description is None and req.tools[0].parameters == WEATHER_SCHEMA


def test_openai_to_anthropic_to_openai_round_trip() -> None:
    neutral = oai.parse_request(OPENAI_REQUEST)
    body = anth.build_request(neutral, "claude-sonnet-4-5")
    # Anthropic shape: strictly alternating, tool results first, arguments as objects, system blocks
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert body["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Use tools."}]
    assert body["messages"][1]["content"][1:] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]
    assert [b["type"] for b in body["messages"][2]["content"]] == ["tool_result", "tool_result", "text"]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert (body["max_tokens"], body["stop_sequences"], body["metadata"], body["stream"]) == (
        500, ["END"], {"user_id": "u-1"}, True)

    again = oai.build_request(anth.parse_request(body), "gpt-4o")
    expected = json.loads(json.dumps(OPENAI_REQUEST))
    expected["messages"][0:2] = [{"role": "system", "content": [{"type": "text", "text": "You are terse."},
                                                                {"type": "text", "text": "Use tools."}]}]
    calls = expected["messages"][2]["tool_calls"]
    calls[1]["function"]["arguments"] = "{}"  # "" is not JSON: it goes out as an empty object
    expected["messages"][4]["content"] = "14:05"
    expected["stop"] = ["END"]
    expected["max_completion_tokens"] = 500
    assert again["messages"] == expected["messages"]
    assert again["tools"] == expected["tools"]
    for key in ("tool_choice", "parallel_tool_calls", "max_completion_tokens", "temperature", "top_p", "stop",
                "stream", "stream_options", "user"):
        assert again[key] == expected[key], key


ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5", "max_tokens": 1024,
    "system": [{"type": "text", "text": "Long cached context", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Look:", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Need the tool.", "signature": "sig=="},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
             "content": [{"type": "text", "text": "timeout"}]},
            {"type": "text", "text": "Try again?"}]},
    ],
    "tools": [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA,
               "cache_control": {"type": "ephemeral"}}],
    "tool_choice": {"type": "any"}, "temperature": 0.2, "stop_sequences": ["###"],
    "metadata": {"user_id": "u-2"}, "thinking": {"type": "enabled", "budget_tokens": 2048},
}


def test_anthropic_request_parses_to_neutral() -> None:
    req = anth.parse_request(ANTHROPIC_REQUEST)
    assert req.system == [Text("Long cached context", {"type": "ephemeral"})]
    assert req.messages[0].content == [Text("Look:", {"type": "ephemeral"}), Image("image/jpeg", PNG)]
    assert req.messages[1].content == [Thinking("Need the tool.", "sig=="), Text("Let me look."),
                                       ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')]
    assert req.messages[2].content == [ToolResult("toolu_1", [Text("timeout")], True, "get_weather"),
                                       Text("Try again?")]
    assert (req.tool_choice, req.max_tokens, req.temperature, req.stop, req.user, req.reasoning_effort) == (
        "required", 1024, 0.2, ["###"], "u-2", "low")


def test_anthropic_to_openai_to_anthropic_round_trip() -> None:
    neutral = anth.parse_request(ANTHROPIC_REQUEST)
    body = oai.build_request(neutral, "gpt-4o")
    assert body["messages"][0] == {"role": "system", "content": "Long cached context"}
    assert body["messages"][2] == {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "timeout"}
    assert body["messages"][4] == {"role": "user", "content": "Try again?"}
    assert body["tool_choice"] == "required" and body["reasoning_effort"] == "low"

    back = anth.parse_request(anth.build_request(oai.parse_request(body), "claude-sonnet-4-5"))
    # what OpenAI cannot carry is gone (thinking, cache_control, is_error); everything else survives
    assert back.system == [Text("Long cached context")] and back.max_tokens == 1024
    assert [m.role for m in back.messages] == ["user", "assistant", "user"]
    assert back.messages[0].content == [Text("Look:"), Image("image/jpeg", PNG)]
    assert back.messages[1].content == [Text("Let me look."), ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')]
    assert back.messages[2].content == [ToolResult("toolu_1", [Text("timeout")], name="get_weather"),
                                        Text("Try again?")]
    assert (back.tool_choice, back.temperature, back.stop, back.user) == ("required", 0.2, ["###"], "u-2")
    rebuilt = anth.build_request(back, "claude-sonnet-4-5")
    assert rebuilt["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "timeout"}]},
        {"type": "text", "text": "Try again?"}]
    assert rebuilt["tools"] == [{"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}]


def test_anthropic_build_makes_a_valid_request_from_loose_history() -> None:
    req = oai.parse_request({"model": "m", "messages": [
        {"role": "assistant", "content": ""},  # empty: dropped
        {"role": "user", "content": "a"}, {"role": "user", "content": "b"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "content": ""}], "temperature": 1.7})
    req.messages[2].content.insert(0, Thinking("gemini thoughts"))  # unsigned: Anthropic would reject it
    body = anth.build_request(req, "claude")
    assert body["max_tokens"] == anth.DEFAULT_MAX_TOKENS and body["temperature"] == 1.0
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1"}]}]
    assert "tool_choice" not in body and "system" not in body


def test_anthropic_thinking_budget_rules() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high"}
    body = anth.build_request(oai.parse_request({**base, "temperature": 0.3}), "claude")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 24576}
    assert body["max_tokens"] > 24576 and "temperature" not in body  # thinking needs the default temperature
    body = anth.build_request(oai.parse_request({**base, "max_completion_tokens": 3000}), "claude")
    assert body["thinking"]["budget_tokens"] == 2999 and body["max_tokens"] == 3000
    assert "thinking" not in anth.build_request(oai.parse_request({**base, "max_tokens": 1000}), "claude")
    forced = {**base, "tools": OPENAI_REQUEST["tools"], "tool_choice": "required"}
    assert "thinking" not in anth.build_request(oai.parse_request(forced), "claude")
    loop = {**base, "messages": OPENAI_REQUEST["messages"][:6]}  # last assistant turn has no thinking block
    assert "thinking" not in anth.build_request(oai.parse_request(loop), "claude")
    assert anth.parse_request(anth.build_request(oai.parse_request(base), "c")).reasoning_effort == "high"


def test_openai_build_from_anthropic_specifics() -> None:
    req = anth.parse_request({"model": "c", "max_tokens": 10, "stream": True, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                          {"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "text", "text": "see image"},
            {"type": "image", "source": {"type": "url", "url": "https://x.test/s.png"}}]}]}]})
    body = oai.build_request(req, "gpt-4o")
    assert body["stream_options"] == {"include_usage": True} and body["max_completion_tokens"] == 10
    assert body["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "shot", "arguments": "{}"}}]}
    assert body["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "see image"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/s.png"}}]}]
    assert "tools" not in body and "tool_choice" not in body and "parallel_tool_calls" not in body
    req.user = "user_" + "f" * 64 + "_account__session_0d9c"  # Claude Code's shape: over OpenAI's 64
    assert "user" not in oai.build_request(req, "gpt-4o")


@pytest.mark.parametrize(("body", "needle"), [
    ([], "JSON object"),
    ({"messages": [{"role": "user", "content": "x"}]}, '"model" is required'),
    ({"model": "m"}, '"messages" is required'),
    ({"model": "m", "messages": []}, "non-empty"),
    ({"model": "m", "messages": ["hi"]}, "messages[0] must be an object"),
    ({"model": "m", "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role must be one of"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content must be a string"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "got type 'video'"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "not supported"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml,<svg/>"}}]}]}, "must be base64"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id is required"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]}, "tool_calls[0] must be"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]}, "JSON string"),
    ({"model": "m", "messages": [{"role": "function", "content": "x"}]}, "legacy"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]},
     "tools[0] must be"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "any"}, '"tool_choice" must'),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "positive integer"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "from 0 to 2"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, '"stop" must be'),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, '"n" must be 1'),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "true or false"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}},
     "response_format"),
])
def test_openai_bad_requests(body: Any, needle: str) -> None:
    with pytest.raises(WireError) as e:
        oai.parse_request(body)
    assert (e.value.status, e.value.kind) == (400, "invalid_request")
    assert needle in e.value.message


A_OK = {"model": "c", "max_tokens": 5}


@pytest.mark.parametrize(("body", "needle"), [
    ({"model": "c", "messages": [{"role": "user", "content": "x"}]}, '"max_tokens" is required'),
    ({**A_OK, "max_tokens": True, "messages": [{"role": "user", "content": "x"}]}, "positive integer"),
    ({**A_OK, "model": None, "messages": [{"role": "user", "content": "x"}]}, '"model" is required'),
    ({**A_OK, "messages": []}, "non-empty"),
    ({**A_OK, "messages": [{"role": "system", "content": "x"}]}, 'top-level "system"'),
    ({**A_OK, "system": 3, "messages": [{"role": "user", "content": "x"}]}, '"system" must be'),
    ({**A_OK, "system": [{"type": "image"}], "messages": [{"role": "user", "content": "x"}]}, "system[0]"),
    ({**A_OK, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "1", "name": "f", "input": {}}]}]},
     "not supported in a user message"),
    ({**A_OK, "messages": [{"role": "user", "content": [{"type": "document"}]}]}, "'document'"),
    ({**A_OK, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
     "file sources"),
    ({**A_OK, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}, "tool_use_id is required"),
    ({**A_OK, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "1", "content": [{"type": "document"}]}]}]}, "text or image"),
    ({**A_OK, "messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "1", "name": "f", "input": "x"}]}]}, '"input": {...}'),
    ({**A_OK, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305",
                                                                        "name": "web_search"}]}, "server tool"),
    ({**A_OK, "messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f"}]}, "input_schema is required"),
    ({**A_OK, "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}, '"tool_choice" must'),
    ({**A_OK, "messages": [{"role": "user", "content": "x"}], "temperature": 1.5}, "from 0 to 1"),
    ({**A_OK, "messages": [{"role": "user", "content": "x"}], "stop_sequences": "x"}, "array of strings"),
    ({**A_OK, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 10}},
     "at least 1024"),
    ({**A_OK, "messages": [{"role": "user", "content": "x"}], "metadata": {"user_id": 1}}, "user_id"),
])
def test_anthropic_bad_requests(body: Any, needle: str) -> None:
    with pytest.raises(WireError) as e:
        anth.parse_request(body)
    assert (e.value.status, e.value.kind) == (400, "invalid_request")
    assert needle in e.value.message


def test_non_object_tool_arguments_are_a_clear_error_for_anthropic() -> None:
    req = oai.parse_request({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1, 2"}}]}]})
    with pytest.raises(WireError, match="not a JSON object"):
        anth.build_request(req, "claude")


# ---------------------------------------------------------------- responses
OPENAI_RESPONSE = {
    "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
        "role": "assistant", "content": "Checking.", "refusal": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]}}],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
              "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 200, "audio_tokens": 0}},
}
ANTHROPIC_RESPONSE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 200, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 1000,
              "output_tokens": 300},
}


def test_openai_response_to_anthropic_client() -> None:
    resp = oai.parse_response(OPENAI_RESPONSE)
    assert resp.content == [Text("Checking."), ToolCall("call_1", "get_weather", '{"city":"Paris"}')]
    assert resp.stop_reason == "tool_use" and resp.created == 1_700_000_000
    assert resp.usage == Usage(1200, 300, 1000, 0, 200)
    body = anth.render_response(resp, "gpt-4o")
    msg = AnthropicMessage.model_validate(body)
    assert msg.id.startswith("msg_") and msg.stop_reason == "tool_use"
    assert msg.content[1].type == "tool_use" and msg.content[1].input == {"city": "Paris"}
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (200, 1000, 300)
    assert anth.usage_of(body) == resp.usage


def test_anthropic_response_to_openai_client() -> None:
    resp = anth.parse_response(ANTHROPIC_RESPONSE)
    assert resp.content[0] == Thinking("hmm", "sig") and resp.stop_reason == "tool_use"
    assert resp.usage == Usage(input_tokens=1250, output_tokens=300, cached_input_tokens=1000, cache_write_tokens=50)
    body = oai.render_response(resp, "claude-sonnet-4-5")
    completion = ChatCompletion.model_validate(body)
    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking."
    assert choice.message.tool_calls[0].function.arguments == '{"city":"Paris"}'
    assert completion.usage.prompt_tokens == 1250 and completion.usage.prompt_tokens_details.cached_tokens == 1000
    assert oai.usage_of(body) == resp.usage


@pytest.mark.parametrize(("native", "neutral", "openai_out", "anthropic_out"), [
    ("end_turn", "end", "stop", "end_turn"), ("max_tokens", "length", "length", "max_tokens"),
    ("stop_sequence", "stop_sequence", "stop", "stop_sequence"), ("pause_turn", "end", "stop", "end_turn"),
    ("refusal", "content_filter", "content_filter", "refusal"), ("tool_use", "tool_use", "tool_calls", "tool_use"),
])
def test_stop_reasons(native: str, neutral: str, openai_out: str, anthropic_out: str) -> None:
    resp = anth.parse_response({**ANTHROPIC_RESPONSE, "stop_reason": native, "stop_sequence": "###"})
    assert resp.stop_reason == neutral
    assert oai.render_response(resp, "m")["choices"][0]["finish_reason"] == openai_out
    rendered = anth.render_response(resp, "m")
    assert rendered["stop_reason"] == anthropic_out
    assert rendered["stop_sequence"] == ("###" if native == "stop_sequence" else None)


def test_only_tool_calls_render_null_content_and_text_only_renders_no_tool_calls() -> None:
    calls = ChatResponse("x", "m", [ToolCall("c", "f", "")], "tool_use", Usage())
    body = oai.render_response(calls, "m")
    assert body["choices"][0]["message"]["content"] is None
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"
    ChatCompletion.model_validate(body)
    text = ChatResponse("x", "m", [Text("a"), Text("b")], "end", Usage())
    body = oai.render_response(text, "m")
    assert body["choices"][0]["message"]["content"] == "ab" and "tool_calls" not in body["choices"][0]["message"]
    bad_args = ChatResponse("x", "m", [ToolCall("c", "f", "{oops")], "tool_use", Usage())
    AnthropicMessage.model_validate(anth.render_response(bad_args, "m"))


def test_refusal_and_reasoning_content_from_compatible_providers() -> None:
    body = {"id": "1", "choices": [{"finish_reason": "content_filter", "message": {
        "role": "assistant", "content": None, "refusal": "I can't help with that.",
        "reasoning_content": "thinking..."}}]}
    resp = oai.parse_response(body)
    assert resp.content == [Thinking("thinking..."), Text("I can't help with that.")]
    assert resp.stop_reason == "content_filter" and resp.usage == Usage()


USAGES = st.builds(
    lambda base, cached, write, out, reasoning: Usage(base + cached + write, out + reasoning, cached, write, reasoning),
    *(st.integers(0, 10**7) for _ in range(5)))


@given(usage=USAGES)
def test_usage_round_trips_through_both_formats(usage: Usage) -> None:
    resp = ChatResponse("id", "m", [Text("x")], "end", usage)
    for fmt in (oai, anth):
        assert fmt.usage_of(fmt.render_response(resp, "m")) == usage
        assert fmt.parse_response(fmt.render_response(resp, "m")).usage == usage
    assert not usage.tokens().problems()


# ---------------------------------------------------------------- streams
def sse(events: list[tuple[str | None, Any]]) -> bytes:
    return b"".join(encode_sse(d if isinstance(d, str) else json.dumps(d), e) for e, d in events)


def oa_chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, Any] | None = None,
             choices: bool = True) -> dict[str, Any]:
    return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
            if choices else [], "usage": usage}


OPENAI_STREAM = sse([(None, d) for d in [
    oa_chunk({"role": "assistant", "content": "", "refusal": None}),
    oa_chunk({"content": "Let me "}), oa_chunk({"content": "check — ✓."}),
    oa_chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                              "function": {"name": "get_weather", "arguments": ""}}]}),
    oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
    oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Pa'}}]}),
    oa_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}),
    oa_chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                              "function": {"name": "get_time", "arguments": '{"tz":'}}]}),
    oa_chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"CET"}'}}]}),
    oa_chunk({}, "tool_calls"),
    oa_chunk(None, usage={"prompt_tokens": 1200, "completion_tokens": 90, "total_tokens": 1290,
                          "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 40, "audio_tokens": 0}}, choices=False),
    "[DONE]"]])
OPENAI_STREAM_USAGE = Usage(1200, 90, 1024, 0, 40)

ANTHROPIC_STREAM = sse([
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_up", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 30, "cache_creation_input_tokens": 170, "cache_read_input_tokens": 1000,
                  "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "thinking_delta", "thinking": "User wants weather."}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh=="}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1,
                             "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": "Let me "}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1,
                             "delta": {"type": "text_delta", "text": "check — ✓."}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2,
                             "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 95}}),
    ("message_stop", {"type": "message_stop"}),
])
ANTHROPIC_STREAM_USAGE = Usage(1200, 95, 1000, 170, 0)


def translate(raw: bytes, decoder: Any, encoder: Any,
              cuts: tuple[int, ...] | list[int] = ()) -> tuple[bytes, list[Any]]:
    sse_in = SSEDecoder()
    events: list[Any] = []
    out = b""
    last = 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        for name, data in sse_in.feed(raw[last:cut]):
            for ev in decoder.feed(name, data):
                events.append(ev)
                out += encoder.encode(ev)
        last = cut
    for ev in decoder.finish():
        events.append(ev)
        out += encoder.encode(ev)
    return out, events


def mock_client(cls: Callable[..., Any], body: bytes, http: Any = httpx) -> Any:
    """The real SDK client, answered in memory with `body` as the event stream."""
    def handler(request: Any) -> Any:
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=body)
    return cls(api_key="test", base_url="http://provider.test/v1",
               http_client=http.Client(transport=http.MockTransport(handler)))


def read_with_openai_sdk(body: bytes) -> Any:
    # every chunk must be a valid ChatCompletionChunk, not just tolerated by the lenient SDK parser
    for _, data in feed_all(body, []):
        if data != "[DONE]":
            ChatCompletionChunk.model_validate_json(data)
    client = mock_client(openai.OpenAI, body)
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}],
                                        stream_options={"include_usage": True}) as stream:
        return stream.get_final_completion()


def read_with_anthropic_sdk(body: bytes) -> Any:
    events = feed_all(body, [])
    for name, data in events:
        event = RAW_EVENT.validate_json(data)
        assert event.type == name
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    client = mock_client(anthropic.Anthropic, body, httpx2)  # this SDK version is built on httpx2
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        return stream.get_final_message()


def test_openai_stream_decodes_to_neutral_events() -> None:
    dec = oai.StreamDecoder()
    _, events = translate(OPENAI_STREAM, dec, oai.StreamEncoder("m", True))
    assert events == [
        StreamStart("chatcmpl-up", "gpt-4o-2024-08-06"), TextDelta(0, "Let me "), TextDelta(0, "check — ✓."),
        BlockStop(0), ToolCallStart(1, "call_a", "get_weather"), ToolArgsDelta(1, '{"ci'),
        ToolArgsDelta(1, 'ty": "Pa'), ToolArgsDelta(1, 'ris"}'), BlockStop(1), ToolCallStart(2, "call_b", "get_time"),
        ToolArgsDelta(2, '{"tz":'), ToolArgsDelta(2, '"CET"}'), BlockStop(2),
        StreamEnd("tool_use", OPENAI_STREAM_USAGE)]
    assert dec.first_token_seen and dec.usage == OPENAI_STREAM_USAGE


def test_openai_stream_end_waits_for_usage_or_done() -> None:
    dec = oai.StreamDecoder()
    dec.feed(None, json.dumps(oa_chunk({"content": "hi"})))
    assert dec.usage == Usage() and dec.first_token_seen
    assert dec.feed(None, json.dumps(oa_chunk({}, "stop"))) == [BlockStop(0)]
    assert dec.feed(None, "[DONE]") == [StreamEnd("end", None)]  # no usage chunk asked for
    assert dec.feed(None, "[DONE]") == [] and dec.finish() == []
    dec = oai.StreamDecoder()
    end = dec.feed(None, json.dumps(oa_chunk({"content": "x"}, "length", usage={"prompt_tokens": 3,
                                                                                "completion_tokens": 1})))
    assert end[-1] == StreamEnd("length", Usage(3, 1))  # finish and usage together: no need to wait


def test_openai_stream_to_anthropic_client() -> None:
    body, _ = translate(OPENAI_STREAM, oai.StreamDecoder(), anth.StreamEncoder("gpt-4o"))
    msg = read_with_anthropic_sdk(body)
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert msg.content[0].text == "Let me check — ✓."
    assert (msg.content[1].id, msg.content[1].name, msg.content[1].input) == ("call_a", "get_weather",
                                                                              {"city": "Paris"})
    assert msg.content[2].input == {"tz": "CET"}
    assert msg.stop_reason == "tool_use" and msg.model == "gpt-4o"
    assert anth.usage_of(msg.model_dump()) == OPENAI_STREAM_USAGE  # input tokens arrive in message_delta


def test_anthropic_stream_to_openai_client() -> None:
    body, events = translate(ANTHROPIC_STREAM, anth.StreamDecoder(), oai.StreamEncoder("claude-x", True))
    assert events[0] == StreamStart("msg_up", "claude-sonnet-4-5", Usage(1200, 1, 1000, 170, 0))
    assert ThinkingDelta(0, "", "EqQBCgIYAh==") in events
    completion = read_with_openai_sdk(body)
    choice = completion.choices[0]
    assert choice.message.content == "Let me check — ✓." and choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("toolu_a", "get_weather",
                                                                                  {"city": "Paris"})
    assert completion.model == "claude-x" and completion.id.startswith("chatcmpl-")
    assert oai.usage_of(completion.model_dump()) == ANTHROPIC_STREAM_USAGE
    chunks = feed_all(body, [])
    assert chunks[-1] == (None, "[DONE]") and json.loads(chunks[-2][1])["choices"] == []


def test_openai_stream_without_include_usage_has_no_usage_chunk() -> None:
    body, _ = translate(ANTHROPIC_STREAM, anth.StreamDecoder(), oai.StreamEncoder("m", False))
    datas = [d for _, d in feed_all(body, [])]
    assert datas[-1] == "[DONE]" and all('"usage"' not in d for d in datas)
    assert read_with_openai_sdk(body).usage is None


@pytest.mark.parametrize(("raw", "decoder", "encoder", "reader"), [
    (OPENAI_STREAM, oai.StreamDecoder, lambda: oai.StreamEncoder("m", True), read_with_openai_sdk),
    (ANTHROPIC_STREAM, anth.StreamDecoder, lambda: anth.StreamEncoder("m"), read_with_anthropic_sdk),
])
def test_same_format_through_neutral_is_faithful(raw: bytes, decoder: Any, encoder: Any, reader: Any) -> None:
    final = reader(translate(raw, decoder(), encoder())[0])
    if reader is read_with_anthropic_sdk:
        assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
        assert final.content[0].signature == "EqQBCgIYAh==" and final.content[0].thinking == "User wants weather."
        assert anth.usage_of(final.model_dump()) == ANTHROPIC_STREAM_USAGE
    else:
        assert [c.function.arguments for c in final.choices[0].message.tool_calls] == ['{"city": "Paris"}',
                                                                                       '{"tz":"CET"}']
        assert oai.usage_of(final.model_dump()) == OPENAI_STREAM_USAGE


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_stream_translation_ignores_chunk_boundaries(data: st.DataObject) -> None:
    for raw, dec, enc in ((OPENAI_STREAM, oai.StreamDecoder, lambda: anth.StreamEncoder("m")),
                          (ANTHROPIC_STREAM, anth.StreamDecoder, lambda: oai.StreamEncoder("m", True))):
        cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
        _, whole = translate(raw, dec(), enc())
        _, split = translate(raw, dec(), enc(), cuts)
        assert split == whole


def test_encoders_open_blocks_for_bare_deltas() -> None:
    # a Gemini-like provider: no StreamStart, no BlockStops, text then a tool call, then thinking
    enc = anth.StreamEncoder("gemini-x")
    body = b"".join(enc.encode(ev) for ev in [
        TextDelta(0, "a"), TextDelta(0, "b"), ToolCallStart(1, "c1", "f"), ToolArgsDelta(1, '{"x":1}'),
        ThinkingDelta(2, "t"), TextDelta(3, "c"), StreamEnd("end", Usage(10, 5))])
    msg = read_with_anthropic_sdk(body)
    assert [b.type for b in msg.content] == ["text", "tool_use", "thinking", "text"]
    assert msg.content[1].input == {"x": 1} and msg.usage.input_tokens == 10 and msg.stop_reason == "end_turn"
    completion = read_with_openai_sdk(b"".join(oai.StreamEncoder("m", True).encode(ev) for ev in [
        TextDelta(0, "hi"), ThinkingDelta(1, "hidden"), StreamEnd("stop_sequence", Usage(3, 2))]))
    assert completion.choices[0].message.content == "hi" and completion.choices[0].finish_reason == "stop"


@given(usage=USAGES)
def test_stream_usage_round_trips(usage: Usage) -> None:
    for fmt in (oai, anth):
        enc = fmt.StreamEncoder("m", True)
        body = enc.encode(StreamStart("id", "m")) + enc.encode(TextDelta(0, "x")) + enc.encode(StreamEnd("end", usage))
        dec = fmt.StreamDecoder()
        events = [ev for name, d in feed_all(body, []) for ev in dec.feed(name, d)] + dec.finish()
        assert events[-1] == StreamEnd("end", usage)


def test_stream_errors_raise_wire_errors() -> None:
    dec = anth.StreamDecoder()
    with pytest.raises(WireError) as e:
        dec.feed("error", '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}')
    assert (e.value.status, e.value.kind, e.value.message) == (529, "overloaded", "Overloaded")
    with pytest.raises(WireError) as e:
        oai.StreamDecoder().feed(None, '{"error": {"message": "boom", "type": "server_error", "code": null}}')
    assert (e.value.status, e.value.kind, e.value.provider_type) == (500, "provider_error", "server_error")
    with pytest.raises(WireError, match="not JSON"):
        oai.StreamDecoder().feed(None, "{truncated")


def test_mid_stream_error_encoding() -> None:
    err = WireError(529, "overloaded", "Overloaded")
    name, data = feed_all(anth.StreamEncoder("m").error(err), [])[0]
    assert name == "error" and AnthropicErrorResponse.model_validate_json(data).error.type == "overloaded_error"
    (name, data), = feed_all(oai.StreamEncoder("m", False).error(err), [])
    assert json.loads(data)["error"]["message"] == "Overloaded"


# ---------------------------------------------------------------- errors
def test_parse_error_bodies_and_retry_after() -> None:
    body = (b'{"error": {"message": "Rate limit reached", "type": "requests", "param": null, '
            b'"code": "rate_limit_exceeded"}}')
    err = oai.parse_error(429, body, {"Retry-After": "7"})
    assert (err.status, err.kind, err.message, err.retry_after, err.provider_type) == (
        429, "rate_limited", "Rate limit reached", 7.0, "requests")
    assert oai.parse_error(429, body, {"retry-after-ms": "1500"}).retry_after == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert 100 < anth.parse_error(529, b"", {"retry-after": later}).retry_after <= 120
    assert oai.parse_error(500, b"", {"retry-after": "soon"}).retry_after is None

    err = anth.parse_error(529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}, '
                                b'"request_id": "req_1"}', {})
    assert (err.kind, err.message, err.provider_type) == ("overloaded", "Overloaded", "overloaded_error")
    err = anth.parse_error(502, b"<html>Bad gateway</html>", {})
    assert err.kind == "provider_error" and "<html>Bad gateway</html>" in err.message and "502" in err.message
    assert "empty body" in oai.parse_error(503, b"", {}).message
    assert oai.parse_error(400, b'[{"error": {"code": 400, "message": "bad arg", "status": "INVALID"}}]',
                           {}).message == "bad arg"
    assert oai.parse_error(401, b'{"error": "no key"}', {}).kind == "authentication"


@pytest.mark.parametrize("kind", ["invalid_request", "authentication", "permission", "not_found",
                                  "request_too_large", "rate_limited", "overloaded", "timeout", "provider_error"])
def test_render_error_shapes(kind: str) -> None:
    err = WireError(400, kind, "what went wrong")  # type: ignore[arg-type]
    body = oai.render_error(err)
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"] == err.message
    assert openai.APIStatusError(err.message, response=httpx.Response(400, request=httpx.Request("POST", "http://x")),
                                 body=body).body == body
    body = anth.render_error(err)
    if kind == "request_too_large":  # documented by Anthropic, not (yet) in the SDK's error union
        assert body == {"type": "error", "error": {"type": "request_too_large", "message": err.message}}
    else:
        AnthropicErrorResponse.model_validate(body)
    again = anth.parse_error(418, json.dumps(body).encode(), {})
    assert again.kind == kind


def test_anthropic_decoder_skips_blocks_it_cannot_translate_and_reports_partial_usage() -> None:
    dec = anth.StreamDecoder()
    assert dec.finish() == []  # nothing started: nothing owed
    events = dec.feed("message_start", json.dumps({"type": "message_start", "message": {
        "id": "msg_1", "model": "c", "usage": {"input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 1}}}))
    assert events == [StreamStart("msg_1", "c", Usage(15, 1, 10))] and dec.usage == Usage(15, 1, 10)
    assert not dec.first_token_seen
    for index, block in enumerate([{"type": "redacted_thinking", "data": "opaque"},
                                   {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}]):
        assert dec.feed("content_block_start", json.dumps({"type": "content_block_start", "index": index,
                                                           "content_block": block})) == []
        assert dec.feed("content_block_delta", json.dumps({"type": "content_block_delta", "index": index, "delta": {
            "type": "input_json_delta", "partial_json": "{}"}})) == []
        assert dec.feed("content_block_stop", json.dumps({"type": "content_block_stop", "index": index})) == []
    assert dec.feed("ping", '{"type": "ping"}') == []
    assert dec.finish() == [StreamEnd("end", Usage(15, 1, 10))]  # connection closed before message_stop


def test_compatible_provider_reasoning_and_unindexed_tool_calls() -> None:
    dec = oai.StreamDecoder()
    events = []
    for delta in [{"role": "assistant", "reasoning_content": "Think "}, {"reasoning_content": "hard."},
                  {"content": "Answer."},
                  {"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]},  # no "index"
                  {"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": '{"x":'}}]},
                  {"tool_calls": [{"function": {"arguments": "1}"}}]}]:
        events += dec.feed(None, json.dumps(oa_chunk(delta)))
    events += dec.feed(None, json.dumps(oa_chunk({}, "tool_calls"))) + dec.feed(None, "[DONE]")
    enc = anth.StreamEncoder("m")
    msg = read_with_anthropic_sdk(b"".join(enc.encode(ev) for ev in events))
    assert [b.type for b in msg.content] == ["thinking", "text", "tool_use", "tool_use"]
    assert msg.content[0].thinking == "Think hard." and msg.content[3].input == {"x": 1}
    assert (msg.content[2].id, msg.content[3].id) == ("a", "b") and msg.stop_reason == "tool_use"


def test_anthropic_mid_conversation_system_messages_translate_to_user_turn_text() -> None:
    """Claude Code 2.1 sends `role: "system"` inside `messages` (beta mid-conversation-system-2026-04-07),
    after the user's turn; translated for other providers as a <system-reminder> in that user turn, the way
    Claude Code itself folds it in when the beta is refused."""
    req = anth.parse_request({**A_OK, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "write tests"}]},
        {"role": "system", "content": "Available agent types: Explore"},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": [{"type": "text", "text": "skills: review"}]},
        {"role": "user", "content": "go on"},
    ]})
    assert [m.role for m in req.messages] == ["user", "assistant", "user"]
    assert [p.text for p in req.messages[0].content] == [
        "write tests", "<system-reminder>\nAvailable agent types: Explore\n</system-reminder>"]
    assert [p.text for p in req.messages[2].content] == [
        "go on", "<system-reminder>\nskills: review\n</system-reminder>"]
    built = oai.build_request(req, "gpt-5-nano")
    assert [m["role"] for m in built["messages"]] == ["user", "assistant", "user"]
