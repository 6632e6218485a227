"""The Gemini generateContent wire format: requests out, responses / streams / errors back.

Where the google-genai SDK is installed its pydantic types (extra="forbid", camelCase aliases) check the
field names of every body we build or parse; without it those checks are skipped.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_prism.providers.formats import gemini
from mcp_prism.providers.wire import (
    BlockStop,
    ChatRequest,
    ChatResponse,
    Image,
    Message,
    StreamEnd,
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
)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = Tool("get_weather", "Weather for a city", {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
    "properties": {"city": {"type": "string", "default": "Paris"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"], "additionalProperties": False})
CLOCK = Tool("get_time", None, {"type": "object", "properties": {}})


try:  # ground truth for field names when present; the rest of each test runs without it
    from google.genai import types as genai_types
except ImportError:
    genai_types = None


def test_sdk_checks_are_active() -> None:
    """Makes a missing SDK visible as a skip instead of silently weaker tests."""
    pytest.importorskip("google.genai.types")


def check_request(body: dict[str, Any]) -> None:
    """Every top-level piece of a generateContent body must validate against the SDK's types."""
    types = genai_types
    if types is None:
        return
    assert set(body) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
    for content in body["contents"]:
        types.Content.model_validate(content)
    if "systemInstruction" in body:
        types.Content.model_validate(body["systemInstruction"])
    for tool in body.get("tools", []):
        types.Tool.model_validate(tool)
    if "toolConfig" in body:
        types.ToolConfig.model_validate(body["toolConfig"])
    if "generationConfig" in body:
        types.GenerationConfig.model_validate(body["generationConfig"])


def check_response(body: dict[str, Any]) -> None:
    if genai_types is not None:
        genai_types.GenerateContentResponse.model_validate(body)


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model="client-model", messages=list(messages), **kw)


def user(*parts: Any) -> Message:
    return Message("user", [Text(p) if isinstance(p, str) else p for p in parts])


def assistant(*parts: Any) -> Message:
    return Message("assistant", [Text(p) if isinstance(p, str) else p for p in parts])


# ---------------------------------------------------------------- build_request
def test_system_images_and_merged_turns() -> None:
    body = gemini.build_request(req(
        user("Look at these", Image("image/png", PNG), Image(url=f"data:image/png;base64,{PNG}")),
        user(Image(url="https://example.com/cat.webp?size=2"), Image(data=PNG)),
        assistant(Thinking("hmm", signature="anthropic-sig"), "Two cats.", Text("")),
        user("Thanks"),
        system=[Text("Be brief."), Text("Answer in English.")],
    ), "gemini-2.5-flash")
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"] == [
        {"text": "Look at these"},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?size=2"}},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},  # sniffed from the PNG magic
    ]
    assert body["contents"][1]["parts"] == [{"text": "Two cats."}]  # thinking and empty text dropped
    assert "generationConfig" not in body and "tools" not in body
    check_request(body)


def conversation() -> ChatRequest:
    return req(
        user("Weather and time in Paris?"),
        assistant("Checking.", ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
                  ToolCall("call_b", "get_time", "")),
        # OpenAI clients give no name on results; Anthropic ones may.
        Message("user", [ToolResult("call_a", [Text("18C"), Image("image/png", PNG)]),
                         ToolResult("call_b", [Text("clock offline")], is_error=True, name="get_time")]),
        user("And tomorrow?"),
        tools=[WEATHER, CLOCK],
    )


def test_multi_turn_tool_calls_and_results() -> None:
    body = gemini.build_request(conversation(), "gemini-2.5-pro")
    model_turn, result_turn = body["contents"][1], body["contents"][2]
    assert model_turn == {"role": "model", "parts": [
        {"text": "Checking."},
        {"functionCall": {"id": "call_a", "name": "get_weather", "args": {"city": "Paris"}}},
        {"functionCall": {"id": "call_b", "name": "get_time", "args": {}}},
    ]}
    assert result_turn["role"] == "user"
    assert result_turn["parts"] == [
        {"functionResponse": {"id": "call_a", "name": "get_weather", "response": {"output": "18C"}}},
        {"functionResponse": {"id": "call_b", "name": "get_time", "response": {"error": "clock offline"}}},
        {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"text": "And tomorrow?"},  # the next user message merged into the same turn
    ]
    assert len(body["contents"]) == 3
    check_request(body)


def test_gemini_3_replayed_calls_carry_the_bypass_signature() -> None:
    for model in ("gemini-3-flash-preview", "gemini-flash-latest", "models/gemini-3.1-pro-preview"):
        body = gemini.build_request(conversation(), model)
        calls = [p for p in body["contents"][1]["parts"] if "functionCall" in p]
        assert all(p["thoughtSignature"] == "skip_thought_signature_validator" for p in calls), model
        check_request(body)
    body = gemini.build_request(conversation(), "gemini-2.5-flash")
    assert not any("thoughtSignature" in p for p in body["contents"][1]["parts"])


def test_tool_result_name_comes_from_the_latest_call_with_that_id() -> None:
    # Two turns reusing the id "call_0" (Gemini gives none; some clients number from zero each turn).
    body = gemini.build_request(req(
        user("go"),
        assistant(ToolCall("call_0", "get_weather", "{}")),
        user(ToolResult("call_0", [Text("sunny")])),
        assistant(ToolCall("call_0", "get_time", "{}")),
        user(ToolResult("call_0", [Text("noon")])),
        tools=[WEATHER, CLOCK]), "gemini-2.5-flash")
    names = [p["functionResponse"]["name"] for c in body["contents"] for p in c["parts"] if "functionResponse" in p]
    assert names == ["get_weather", "get_time"]


def test_tool_result_without_a_known_name_is_a_clear_error() -> None:
    with pytest.raises(WireError) as exc:
        gemini.build_request(req(user(ToolResult("call_x", [Text("?")]))), "gemini-2.5-flash")
    assert exc.value.status == 400 and exc.value.kind == "invalid_request"
    assert "call_x" in exc.value.message and "name" in exc.value.message


def test_bad_arguments_are_kept_not_rejected() -> None:
    body = gemini.build_request(req(
        user("x"), assistant(ToolCall("c1", "get_weather", '{"city": "Par'), ToolCall("c2", "get_time", "[1]")),
        user(ToolResult("c1", [Text("?")]), ToolResult("c2", [Text("?")]))), "gemini-2.5-flash")
    args = [p["functionCall"]["args"] for p in body["contents"][1]["parts"]]
    assert args == [{"arguments": '{"city": "Par'}, {"value": [1]}]


def test_empty_and_invalid_conversations() -> None:
    with pytest.raises(WireError, match="no messages"):
        gemini.build_request(req(), "gemini-2.5-flash")
    with pytest.raises(WireError, match="empty"):
        gemini.build_request(req(user(Text("")), assistant(Thinking("x"))), "gemini-2.5-flash")
    with pytest.raises(WireError, match="assistant"):
        gemini.build_request(req(user(ToolCall("c", "f", "{}"))), "gemini-2.5-flash")


def test_function_declarations_use_parameters_json_schema() -> None:
    body = gemini.build_request(req(user("hi"), tools=[WEATHER, CLOCK, Tool("ping", "", {})]), "gemini-2.5-flash")
    decls = body["tools"][0]["functionDeclarations"]
    assert decls[0] == {"name": "get_weather", "description": "Weather for a city", "parametersJsonSchema": {
        "type": "object", "properties": {"city": {"type": "string", "default": "Paris"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"], "additionalProperties": False}}
    assert decls[1] == {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}}
    assert decls[2] == {"name": "ping"}
    assert "toolConfig" not in body
    check_request(body)


@pytest.mark.parametrize(("choice", "config"), [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ("get_time", {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
])
def test_tool_choice(choice: str, config: dict[str, Any]) -> None:
    body = gemini.build_request(req(user("hi"), tools=[WEATHER, CLOCK], tool_choice=choice), "gemini-2.5-flash")
    assert body["toolConfig"] == {"functionCallingConfig": config}
    check_request(body)


def test_tool_choice_naming_an_unknown_tool() -> None:
    with pytest.raises(WireError, match="nope"):
        gemini.build_request(req(user("hi"), tools=[WEATHER], tool_choice="nope"), "gemini-2.5-flash")


def test_generation_config_and_response_formats() -> None:
    schema = {"$schema": "x", "type": "object", "properties": {"n": {"type": ["integer", "null"]}},
              "additionalProperties": False}
    body = gemini.build_request(req(user("hi"), max_tokens=256, temperature=0.2, top_p=0.9, stop=["END"],
                                    response_format={"type": "json_schema",
                                                     "json_schema": {"name": "n", "schema": schema, "strict": True}}),
                                "gemini-2.5-flash")
    assert body["generationConfig"] == {
        "maxOutputTokens": 256, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object", "properties": {"n": {"type": ["integer", "null"]}},
                               "additionalProperties": False}}
    check_request(body)
    body = gemini.build_request(req(user("hi"), response_format={"type": "json_object"}), "gemini-2.5-flash")
    assert body["generationConfig"] == {"responseMimeType": "application/json"}
    body = gemini.build_request(req(user("hi"), response_format={"type": "text"}), "gemini-2.5-flash")
    assert "generationConfig" not in body


@pytest.mark.parametrize(("model", "effort", "thinking"), [
    ("gemini-3-flash-preview", "low", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-3-flash-preview", "medium", {"thinkingLevel": "MEDIUM", "includeThoughts": True}),
    ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "MINIMAL", "includeThoughts": True}),
    ("gemini-3-pro-preview", "medium", {"thinkingLevel": "HIGH", "includeThoughts": True}),
    ("gemini-3-pro-preview", "minimal", {"thinkingLevel": "LOW", "includeThoughts": True}),
    ("gemini-2.5-flash", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0, "includeThoughts": False}),
    ("gemini-2.5-pro", "none", {"thinkingBudget": 128, "includeThoughts": True}),
    ("gemini-2.0-flash", "high", None),
    ("gemini-2.5-flash", "extreme", None),
])
def test_reasoning_effort(model: str, effort: str, thinking: dict[str, Any] | None) -> None:
    body = gemini.build_request(req(user("hi"), reasoning_effort=effort), model)
    assert body.get("generationConfig", {}).get("thinkingConfig") == thinking
    if thinking:
        check_request(body)


# ---------------------------------------------------------------- parse_response / usage_of
def response(parts: list[dict[str, Any]], finish: str | None = "STOP", **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body = {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "r3sp0nse-Id",
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}, **extra}
    check_response(body)
    return body


def test_parse_text_response() -> None:
    out = gemini.parse_response(response([{"text": "Hello"}, {"text": ", world"}]))
    assert out == ChatResponse("r3sp0nse-Id", "gemini-2.5-flash", [Text("Hello, world")], "end",
                               Usage(input_tokens=10, output_tokens=5))


def test_parse_parallel_function_calls() -> None:
    out = gemini.parse_response(response([
        {"text": "Let me check."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
        {"functionCall": {"id": "given-id", "name": "get_time"}},
    ]))
    assert out.stop_reason == "tool_use"
    text, *calls = out.content
    assert text == Text("Let me check.")
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"}), ("get_time", {})]
    ids = [c.id for c in calls]
    assert ids[2] == "given-id" and ids[0] != ids[1]
    assert all(i.startswith("call_") for i in ids[:2])


def test_parse_thoughts() -> None:
    out = gemini.parse_response(response([
        {"text": "Think", "thought": True}, {"text": "ing.", "thought": True},
        {"text": "Answer.", "thoughtSignature": "c2ln"},
    ]))
    assert out.content == [Thinking("Thinking."), Text("Answer.")]  # Gemini signatures never leak out


@pytest.mark.parametrize(("finish", "stop"), [
    ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("OTHER", "end"), ("MALFORMED_FUNCTION_CALL", "end"), (None, "end"),
])
def test_finish_reasons(finish: str | None, stop: str) -> None:
    assert gemini.parse_response(response([{"text": "x"}], finish)).stop_reason == stop


def test_blocked_prompt_has_no_candidates() -> None:
    body = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}]},
            "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}, "modelVersion": "gemini-2.5-flash"}
    check_response(body)
    out = gemini.parse_response(body)
    assert out.content == [] and out.stop_reason == "content_filter"
    assert out.usage == Usage(input_tokens=7) and out.id.startswith("gen_")


def test_usage_normalisation() -> None:
    body = {"usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 600, "candidatesTokenCount": 50,
                              "thoughtsTokenCount": 200, "toolUsePromptTokenCount": 30, "totalTokenCount": 1280}}
    check_response(body)
    usage = gemini.usage_of(body)
    assert usage == Usage(input_tokens=1030, output_tokens=250, cached_input_tokens=600, reasoning_tokens=200)
    meta = body["usageMetadata"]
    assert usage.input_tokens + usage.output_tokens == meta["totalTokenCount"]
    assert gemini.usage_of({}) == Usage()


def test_render_response_round_trips() -> None:
    original = ChatResponse("resp-1", "gemini-2.5-pro", [
        Thinking("why"), Text("Calling."), ToolCall("call_1", "get_weather", '{"city": "Paris"}')], "tool_use",
        Usage(input_tokens=100, output_tokens=40, cached_input_tokens=20, reasoning_tokens=15))
    body = gemini.render_response(original, "gemini-2.5-pro")
    check_response(body)
    assert body["usageMetadata"]["candidatesTokenCount"] == 25
    assert gemini.parse_response(body) == original
    blocked = gemini.render_response(ChatResponse("b", "m", [], "content_filter", Usage(input_tokens=3)), "m")
    check_response(blocked)
    assert gemini.parse_response(blocked).stop_reason == "content_filter"


# ---------------------------------------------------------------- streaming
def sse(decoder: gemini.StreamDecoder, chunks: list[dict[str, Any]]) -> list[Any]:
    events: list[Any] = []
    for chunk in chunks:
        check_response(chunk)
        events += decoder.feed(None, json.dumps(chunk))
    return events


def chunk(parts: list[dict[str, Any]] | None = None, finish: str | None = None, **usage: int) -> dict[str, Any]:
    body: dict[str, Any] = {"modelVersion": "gemini-2.5-flash", "responseId": "stream1"}
    if parts is not None or finish:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts or []}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        body["candidates"] = [candidate]
    if usage:
        body["usageMetadata"] = usage
    return body


def test_stream_text_then_function_call() -> None:
    decoder = gemini.StreamDecoder()
    assert decoder.feed(None, "") == []
    assert not decoder.first_token_seen
    events = sse(decoder, [
        chunk([{"text": "Hel"}], promptTokenCount=12, totalTokenCount=12),
        chunk([{"text": "lo. "}], promptTokenCount=12, candidatesTokenCount=3, totalTokenCount=15),
        chunk([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
               {"functionCall": {"name": "get_time", "args": {}}}]),
        chunk([{"text": ""}], "STOP", promptTokenCount=12, candidatesTokenCount=20, thoughtsTokenCount=8,
              totalTokenCount=40),
    ])
    final = Usage(input_tokens=12, output_tokens=28, reasoning_tokens=8)
    call_1, call_2 = events[4].id, events[7].id
    assert call_1 != call_2
    assert events == [
        StreamStart("stream1", "gemini-2.5-flash", Usage(input_tokens=12)),
        TextDelta(0, "Hel"), TextDelta(0, "lo. "), BlockStop(0),
        ToolCallStart(1, call_1, "get_weather"), ToolArgsDelta(1, '{"city": "Paris"}'), BlockStop(1),
        ToolCallStart(2, call_2, "get_time"), ToolArgsDelta(2, "{}"), BlockStop(2),
        StreamEnd("tool_use", final),
    ]
    assert decoder.first_token_seen and decoder.usage == final
    assert decoder.finish() == []


def test_stream_thoughts_then_text_and_late_usage() -> None:
    decoder = gemini.StreamDecoder()
    events = sse(decoder, [
        chunk([{"text": "Pondering", "thought": True}]),
        chunk([{"text": "Answer", "thoughtSignature": "c2ln"}]),
        chunk([{"text": "!"}], "MAX_TOKENS"),
    ])
    assert events[1:] == [ThinkingDelta(0, "Pondering"), BlockStop(0), TextDelta(1, "Answer"), TextDelta(1, "!"),
                          BlockStop(1), StreamEnd("length", None)]
    assert sse(decoder, [chunk(promptTokenCount=4, candidatesTokenCount=2, totalTokenCount=6)]) == []
    assert decoder.usage == Usage(input_tokens=4, output_tokens=2)


def test_stream_ending_early_is_an_error() -> None:
    decoder = gemini.StreamDecoder()
    sse(decoder, [chunk([{"text": "partial"}])])
    with pytest.raises(WireError) as exc:
        decoder.finish()
    assert exc.value.status == 502 and exc.value.kind == "provider_error" and "early" in exc.value.message
    with pytest.raises(WireError, match="early"):
        gemini.StreamDecoder().finish()


def test_stream_blocked_prompt() -> None:
    decoder = gemini.StreamDecoder()
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
               "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}}
    events = sse(decoder, [blocked])
    assert isinstance(events[0], StreamStart)
    assert events[1] == StreamEnd("content_filter", Usage(input_tokens=9))
    assert decoder.finish() == []


def test_stream_garbage_and_errors() -> None:
    with pytest.raises(WireError, match="not JSON"):
        gemini.StreamDecoder().feed(None, "{oops")
    error = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}
    with pytest.raises(WireError) as exc:
        gemini.StreamDecoder().feed(None, json.dumps(error))
    assert (exc.value.status, exc.value.kind, exc.value.message) == (503, "overloaded", "The model is overloaded.")


# ---------------------------------------------------------------- errors
def test_parse_error_rate_limited_with_retry_info() -> None:
    body = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                      "message": "You exceeded your current quota, please check your plan and billing details.",
                      "details": [
                          {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                           "violations": [{"quotaMetric": "generate_content_free_tier_requests"}]},
                          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.5s"}]}}
    err = gemini.parse_error(429, json.dumps(body).encode(), {"Retry-After": "30"})
    assert (err.status, err.kind, err.retry_after, err.provider_type) == (429, "rate_limited", 12.5,
                                                                          "RESOURCE_EXHAUSTED")
    assert "quota" in err.message
    # Without RetryInfo the header is used, whatever its case.
    del body["error"]["details"]
    assert gemini.parse_error(429, json.dumps(body).encode(), {"retry-after": "7"}).retry_after == 7.0


def test_parse_error_invalid_argument_and_bad_key() -> None:
    body = {"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is not specified",
                      "status": "INVALID_ARGUMENT"}}
    err = gemini.parse_error(400, json.dumps(body).encode(), {})
    assert (err.status, err.kind, err.retry_after) == (400, "invalid_request", None)
    assert err.message.startswith("* GenerateContentRequest")
    bad_key = {"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                         "status": "INVALID_ARGUMENT",
                         "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}
    assert gemini.parse_error(400, json.dumps([bad_key]).encode(), {}).kind == "authentication"


@pytest.mark.parametrize(("status", "body", "kind", "text"), [
    (500, b"<html><body>Internal Server Error</body></html>", "provider_error", "Internal Server Error"),
    (503, b"", "overloaded", "HTTP 503"),
    (404, b'{"error": {"code": 404, "message": "models/nope is not found", "status": "NOT_FOUND"}}', "not_found",
     "models/nope"),
    (504, b'{"error": {"code": 504, "message": "Deadline expired", "status": "DEADLINE_EXCEEDED"}}', "timeout",
     "Deadline"),
    (403, b'{"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}', "permission", "denied"),
])
def test_parse_error_kinds(status: int, body: bytes, kind: str, text: str) -> None:
    err = gemini.parse_error(status, body, {})
    assert err.status == status and err.kind == kind and text in err.message


def test_render_error_round_trips() -> None:
    err = WireError(429, "rate_limited", "slow down", retry_after=3.0)
    body = gemini.render_error(err)
    assert body["error"]["status"] == "RESOURCE_EXHAUSTED"
    back = gemini.parse_error(429, json.dumps(body).encode(), {})
    assert (back.status, back.kind, back.message, back.retry_after) == (429, "rate_limited", "slow down", 3.0)


# ---------------------------------------------------------------- parse_request
def test_parse_request_round_trips_a_built_request() -> None:
    original = conversation()
    original.system = [Text("Be brief.")]
    original.tool_choice = "get_weather"
    original.max_tokens = 100
    original.stop = ["END"]
    original.reasoning_effort = "low"
    body = gemini.build_request(original, "gemini-3-flash-preview")
    parsed = gemini.parse_request(body, model="gemini-3-flash-preview")
    assert parsed.model == "gemini-3-flash-preview"
    assert parsed.system == [Text("Be brief.")]
    assert parsed.tool_choice == "get_weather" and parsed.max_tokens == 100 and parsed.stop == ["END"]
    assert parsed.reasoning_effort == "low"
    assert [t.name for t in parsed.tools] == ["get_weather", "get_time"]
    assert parsed.tools[0].parameters["additionalProperties"] is False
    calls = [p for p in parsed.messages[1].content if isinstance(p, ToolCall)]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}), ("call_b", "get_time", {})]
    results = [p for p in parsed.messages[2].content if isinstance(p, ToolResult)]
    assert results == [ToolResult("call_a", [Text("18C")], name="get_weather"),
                       ToolResult("call_b", [Text("clock offline")], is_error=True, name="get_time")]
    assert parsed.messages[2].content[2:] == [Image("image/png", PNG), Text("And tomorrow?")]


def test_parse_request_snake_case_and_legacy_schema() -> None:
    body = {
        "system_instruction": {"parts": [{"text": "sys"}]},
        "contents": [
            {"parts": [{"text": "hi"}, {"inline_data": {"mime_type": "image/png", "data": PNG}},
                       {"file_data": {"file_uri": "gs://b/cat.png"}}]},
            {"role": "model", "parts": [{"function_call": {"name": "lookup", "args": {"q": 1}}}]},
            {"role": "user", "parts": [{"function_response": {"name": "lookup", "response": {"rows": 2}}}]},
        ],
        "tools": [{"function_declarations": [{"name": "lookup", "parameters": {
            "type": "OBJECT", "properties": {"q": {"type": "INTEGER", "nullable": True}}}}]}, {"googleSearch": {}}],
        "tool_config": {"function_calling_config": {"mode": "ANY"}},
        "generation_config": {"temperature": 1, "response_mime_type": "application/json",
                              "thinking_config": {"thinking_budget": 0}},
    }
    parsed = gemini.parse_request(body)
    assert parsed.system == [Text("sys")]
    assert parsed.messages[0].content == [Text("hi"), Image("image/png", PNG), Image(url="gs://b/cat.png")]
    call = parsed.messages[1].content[0]
    assert isinstance(call, ToolCall) and call.id == "call_0"
    assert parsed.messages[2].content == [ToolResult("call_0", [Text('{"rows": 2}')], name="lookup")]
    assert parsed.tools[0].parameters == {"type": "object",
                                          "properties": {"q": {"type": ["integer", "null"]}}}
    assert parsed.tool_choice == "required" and parsed.temperature == 1.0
    assert parsed.response_format == {"type": "json_object"} and parsed.reasoning_effort == "none"


@pytest.mark.parametrize(("body", "words"), [
    ([], "JSON object"),
    ({}, "contents"),
    ({"contents": []}, "contents"),
    ({"contents": [{"role": "system", "parts": [{"text": "x"}]}]}, "role"),
    ({"contents": [{"role": "user", "parts": []}]}, "parts"),
    ({"contents": [{"role": "user", "parts": [{"executableCode": {}}]}]}, "no supported field"),
    ({"contents": [{"role": "user", "parts": [{"text": 3}]}]}, "string"),
    ({"contents": [{"role": "user", "parts": [{"functionCall": {"name": "f"}}]}]}, "model"),
    ({"contents": [{"role": "model", "parts": [{"functionCall": {"args": {}}}]}]}, "name"),
    ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png"}}]}]}, "data"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": "9"}}, "integer"),
    ({"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"stopSequences": "END"}}, "stopSequences"),
    ({"contents": [{"parts": [{"text": "x"}]}], "toolConfig": {"functionCallingConfig": {"mode": "SOME"}}}, "mode"),
    ({"contents": [{"parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [{}]}]}, "name"),
])
def test_parse_request_rejects_bad_bodies(body: Any, words: str) -> None:
    with pytest.raises(WireError) as exc:
        gemini.parse_request(body)
    assert exc.value.status == 400 and exc.value.kind == "invalid_request"
    assert words in exc.value.message
