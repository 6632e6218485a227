"""The fake providers are faithful if the official SDKs (and google-genai's types) accept what they send."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fakes import (
    CACHE_CREATION_TOKENS,
    CACHED_TOKENS,
    LONG_CHUNKS,
    REASONING_TOKENS,
    THINKING_SIGNATURE,
    FakeProviders,
    fake_providers,  # noqa: F401  (fixture; conftest may register it too)
    fake_providers_server,  # noqa: F401
    run_fake_providers,
)

WEATHER_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
WEATHER_ANTHROPIC = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
WEATHER_GEMINI = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]},
            }
        ]
    }
]


@pytest.fixture
def fake(fake_providers: FakeProviders) -> FakeProviders:  # noqa: F811
    return fake_providers


@pytest.fixture(scope="module")
def oai(fake_providers_server: FakeProviders) -> Iterator[openai.OpenAI]:  # noqa: F811
    # Module-scoped: building an SDK client (TLS context included) costs ~0.1 s on a slow machine.
    fake = fake_providers_server
    with openai.OpenAI(base_url=fake.openai_base_url, api_key=fake.keys["openai"], max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def claude(fake_providers_server: FakeProviders) -> Iterator[anthropic.Anthropic]:  # noqa: F811
    fake = fake_providers_server
    with anthropic.Anthropic(base_url=fake.base_url, api_key=fake.keys["anthropic"], max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def http(fake_providers_server: FakeProviders) -> Iterator[httpx.Client]:  # noqa: F811
    with httpx.Client(base_url=fake_providers_server.base_url, timeout=5) as client:
        yield client


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def assert_cut(exc: BaseException) -> None:
    """The transport saw the chunked body end without its terminating chunk (SDKs may wrap that error)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    assert any("incomplete chunked read" in str(e) for e in chain), chain


# --- OpenAI -------------------------------------------------------------------------------------------------------


def test_openai_text(oai: openai.OpenAI, fake: FakeProviders) -> None:
    resp = oai.chat.completions.create(model="gpt-4o-mini", messages=user("hello there"))
    choice = resp.choices[0]
    assert choice.message.content == "echo: hello there"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == len("hello there") // 4 + 1
    assert resp.usage.completion_tokens == len("echo: hello there") // 4 + 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp._request_id is not None
    (call,) = fake.calls
    assert (call.provider, call.method, call.path) == ("openai", "POST", "/v1/chat/completions")
    assert call.headers["authorization"] == f"Bearer {fake.keys['openai']}"
    assert call.body["messages"] == user("hello there") and call["body"] == call.body  # dict-style access works too
    assert fake.keys["openai"] not in repr(call)


def test_openai_echo_is_truncated(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="gpt-4o-mini", messages=user("x" * 500))
    assert resp.choices[0].message.content == "echo: " + "x" * 200


def test_openai_stream_with_usage(oai: openai.OpenAI, fake: FakeProviders) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=user("stream me"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream me"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len("echo: stream me") // 4 + 1
    assert all(c.usage is None for c in chunks[:-1])
    assert fake.wait_until(lambda: fake.streams_completed == 1)
    assert (fake.streams_started, fake.streams_cancelled) == (1, 0)


def test_openai_stream_without_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=user("plain"), stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_tool_call(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="gpt-4o", messages=user("weather? [tool]"), tools=WEATHER_OPENAI)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    # the SDK's stream helper must reassemble the argument fragments into the full JSON
    with oai.chat.completions.stream(model="gpt-4o", messages=user("weather? [tool]"), tools=WEATHER_OPENAI) as s:
        final = s.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert final.choices[0].finish_reason == "tool_calls"
    assert streamed.id.startswith("call_") and streamed.function.name == "get_weather"
    assert json.loads(streamed.function.arguments) == {"city": "Paris"}

    followup = [
        *user("weather? [tool]"),
        {"role": "assistant", "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    resp = oai.chat.completions.create(model="gpt-4o", messages=followup, tools=WEATHER_OPENAI)  # type: ignore[arg-type]
    assert resp.choices[0].message.content == "tool said: 18C and sunny"


def test_openai_tool_call_minimal_required_args(oai: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "parameters": {
                    "type": "object",
                    "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                    "required": ["query", "limit"],
                },
            },
        }
    ]
    resp = oai.chat.completions.create(model="gpt-4o", messages=user("[tool]"), tools=tools)  # type: ignore[arg-type]
    (call,) = resp.choices[0].message.tool_calls or []
    assert json.loads(call.function.arguments) == {"query": "test", "limit": 1}


def test_openai_cached_and_reasoning_usage(oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(model="o3-mini", messages=user("[cached] [reasoning]"))
    usage = resp.usage
    assert usage is not None and usage.prompt_tokens_details and usage.completion_tokens_details
    assert usage.prompt_tokens_details.cached_tokens == CACHED_TOKENS
    assert usage.prompt_tokens > CACHED_TOKENS
    assert usage.completion_tokens_details.reasoning_tokens == REASONING_TOKENS
    assert usage.completion_tokens > REASONING_TOKENS


def test_openai_errors(oai: openai.OpenAI, fake: FakeProviders) -> None:
    with pytest.raises(openai.RateLimitError) as rate:
        oai.chat.completions.create(model="gpt-4o-mini", messages=user("[429]"))
    assert rate.value.response.headers["retry-after"] == "7"
    assert rate.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError) as server:
        oai.chat.completions.create(model="gpt-4o-mini", messages=user("[500]"))
    assert server.value.type == "server_error"
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert (bad.value.type, bad.value.param, bad.value.code) == ("invalid_request_error", "messages", "empty_array")
    with pytest.raises(openai.AuthenticationError) as auth:
        oai.with_options(api_key="sk-wrong").chat.completions.create(model="gpt-4o-mini", messages=user("hi"))
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(json.JSONDecodeError):
        oai.chat.completions.create(model="gpt-4o-mini", messages=user("[malformed]"))


def test_openai_raw_error_shapes(http: httpx.Client, fake: FakeProviders) -> None:
    auth = {"authorization": f"Bearer {fake.keys['openai']}"}
    r = http.post("/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers=auth)
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_required_parameter",
        }
    }
    r = http.post("/v1/chat/completions", content=b"{nope", headers=auth)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": user("hi")})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = http.post("/v1/chat/completions", json={"model": "m", "messages": user("[malformed]")}, headers=auth)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        r.json()
    r = http.get("/v1/models", headers=auth)
    assert r.json()["object"] == "list" and r.json()["data"][0]["object"] == "model"


def test_openai_models_list(oai: openai.OpenAI) -> None:
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]


def test_openai_cut_stream(oai: openai.OpenAI, fake: FakeProviders) -> None:
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=user("[cut] a fairly long text"), stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError) as cut:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert_cut(cut.value)
    assert 0 < len("".join(received)) < len("echo: [cut] a fairly long text")
    assert fake.streams_cut == 1 and fake.streams_completed == 0


def test_openai_slow_times_out_and_server_notices(oai: openai.OpenAI, fake: FakeProviders) -> None:
    with pytest.raises(openai.APITimeoutError):
        oai.with_options(timeout=0.2).chat.completions.create(model="gpt-4o-mini", messages=user("[slow]"))
    assert fake.wait_until(lambda: fake.requests_abandoned == 1, timeout=3)


def test_slow_does_not_block_other_requests(fake: FakeProviders, oai: openai.OpenAI) -> None:
    fake.slow_seconds = 0.3
    results: list[str | None] = []
    slow = threading.Thread(
        target=lambda: results.append(
            oai.chat.completions.create(model="m", messages=user("[slow]")).choices[0].message.content
        )
    )
    slow.start()
    assert oai.chat.completions.create(model="m", messages=user("fast")).choices[0].message.content == "echo: fast"
    assert results == []  # the slow one is still sleeping
    slow.join(timeout=5)
    assert results == ["echo: [slow]"]


def test_openai_long_stream_disconnect_is_observed(oai: openai.OpenAI, fake: FakeProviders) -> None:
    stream = oai.chat.completions.create(model="gpt-4o-mini", messages=user("[long]"), stream=True)
    for i, _ in enumerate(stream):
        if i == 5:
            break
    stream.close()
    assert fake.wait_until(lambda: fake.streams_cancelled == 1, timeout=3)
    assert fake.streams_completed == 0


def test_long_reply_without_streaming(oai: openai.OpenAI) -> None:
    text = oai.chat.completions.create(model="gpt-4o-mini", messages=user("[long]")).choices[0].message.content
    assert text is not None and text.count("chunk ") == LONG_CHUNKS


# --- Anthropic ----------------------------------------------------------------------------------------------------


def test_anthropic_text(claude: anthropic.Anthropic, fake: FakeProviders) -> None:
    msg = claude.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=user("hello"), system="be nice")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "echo: hello"  # type: ignore[union-attr]
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == len("hello be nice") // 4 + 1
    assert msg.usage.output_tokens == len("echo: hello") // 4 + 1
    assert msg._request_id is not None
    call = fake.calls[-1]
    assert call.provider == "anthropic"
    # anthropic-sdk-python 2.x sends the key as a Bearer token; the documented header is x-api-key
    key = call.headers.get("x-api-key") or call.headers["authorization"].removeprefix("Bearer ")
    assert key == fake.keys["anthropic"]
    assert "anthropic-version" in call.headers


def test_anthropic_stream_text(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="claude-haiku-4-5", max_tokens=100, messages=user("stream")) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1 and "".join(pieces) == "echo: stream"
    assert final.content[0].text == "echo: stream"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len("echo: stream") // 4 + 1
    assert final.usage.input_tokens == len("stream") // 4 + 1  # from message_start


def test_anthropic_raw_event_order(claude: anthropic.Anthropic) -> None:
    events = list(claude.messages.create(model="m", max_tokens=10, messages=user("hi"), stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[0].message.usage.output_tokens == 1  # type: ignore[union-attr]


def test_anthropic_tool_use(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="m", max_tokens=100, messages=user("[tool]"), tools=WEATHER_ANTHROPIC)
    assert msg.stop_reason == "tool_use"
    (block,) = msg.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}

    with claude.messages.stream(model="m", max_tokens=100, messages=user("[tool]"), tools=WEATHER_ANTHROPIC) as s:
        partial = [e.partial_json for e in s if e.type == "input_json"]
        final = s.get_final_message()
    assert len([p for p in partial if p]) > 1  # the arguments arrived in several fragments
    (streamed,) = final.content
    assert streamed.type == "tool_use" and streamed.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"

    followup = [
        *user("[tool]"),
        {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "18C"}]},
    ]
    msg = claude.messages.create(model="m", max_tokens=100, messages=followup, tools=WEATHER_ANTHROPIC)
    assert msg.content[0].text == "tool said: 18C"  # type: ignore[union-attr]


def test_anthropic_cached_and_thinking(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="m", max_tokens=100, messages=user("[cached] [reasoning]"))
    assert msg.usage.cache_read_input_tokens == CACHED_TOKENS
    assert msg.usage.cache_creation_input_tokens == CACHE_CREATION_TOKENS
    assert [b.type for b in msg.content] == ["thinking", "text"]

    with claude.messages.stream(model="m", max_tokens=100, messages=user("[cached] [reasoning]")) as s:
        thinking = "".join(e.thinking for e in s if e.type == "thinking")
        final = s.get_final_message()
    first = final.content[0]
    assert first.type == "thinking" and first.thinking == thinking and first.signature == THINKING_SIGNATURE
    assert final.content[1].text == "echo: [cached] [reasoning]"  # type: ignore[union-attr]
    assert final.usage.cache_read_input_tokens == CACHED_TOKENS
    assert final.usage.output_tokens > REASONING_TOKENS


def test_anthropic_errors(claude: anthropic.Anthropic, fake: FakeProviders) -> None:
    with pytest.raises(anthropic.RateLimitError) as rate:
        claude.messages.create(model="m", max_tokens=10, messages=user("[429]"))
    assert rate.value.response.headers["retry-after"] == "7"
    assert rate.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.InternalServerError) as server:
        claude.messages.create(model="m", max_tokens=10, messages=user("[500]"))
    assert server.value.status_code == 500
    with pytest.raises(anthropic.OverloadedError):
        claude.messages.create(model="m", max_tokens=10, messages=user("[529]"))
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model="m", max_tokens=10, messages=[{"role": "system", "content": "x"}])  # type: ignore[list-item]
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError) as auth:
        claude.with_options(api_key="sk-ant-wrong").messages.create(model="m", max_tokens=10, messages=user("hi"))
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_anthropic_raw_error_shapes(http: httpx.Client, fake: FakeProviders) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": user("hi")}
    r = http.post("/v1/messages", json=body, headers={"x-api-key": fake.keys["anthropic"]})
    assert r.status_code == 400
    assert r.json()["type"] == "error"
    assert r.json()["error"] == {"type": "invalid_request_error", "message": "anthropic-version: header is required"}
    headers = {"x-api-key": fake.keys["anthropic"], "anthropic-version": "2023-06-01"}
    r = http.post("/v1/messages", json={"model": "m", "messages": user("hi")}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["message"] == "max_tokens: Field required"
    r = http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = http.get("/v1/models", headers=headers)
    assert r.json()["data"][0]["type"] == "model"


def test_anthropic_cut_stream(claude: anthropic.Anthropic, fake: FakeProviders) -> None:
    with (
        pytest.raises(Exception) as cut,  # the SDK may or may not wrap the transport error
        claude.messages.stream(model="m", max_tokens=10, messages=user("[cut] some words here")) as s,
    ):
        for _ in s:
            pass
    assert_cut(cut.value)
    assert fake.streams_cut == 1


def test_anthropic_long_stream_disconnect_is_observed(claude: anthropic.Anthropic, fake: FakeProviders) -> None:
    with claude.messages.stream(model="m", max_tokens=10, messages=user("[long]")) as s:
        for i, _ in enumerate(s.text_stream):
            if i == 3:
                break
    assert fake.wait_until(lambda: fake.streams_cancelled == 1, timeout=3)


# --- Gemini -------------------------------------------------------------------------------------------------------

GEMINI = "/v1beta/models/gemini-2.5-flash"


def gemini_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def sse_data(text: str) -> list[dict[str, Any]]:
    events = text.split("\r\n\r\n")
    assert events[-1] == "" and all(e.startswith("data: ") for e in events[:-1])
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


@pytest.fixture
def gkey(fake: FakeProviders) -> dict[str, str]:
    return {"x-goog-api-key": str(fake.keys["gemini"])}


def validate_gemini(payload: dict[str, Any]) -> Any:
    types = pytest.importorskip("google.genai.types")
    return types.GenerateContentResponse.model_validate(payload)  # extra="forbid": unknown fields fail


def test_gemini_text(http: httpx.Client, gkey: dict[str, str], fake: FakeProviders) -> None:
    r = http.post(f"{GEMINI}:generateContent", json=gemini_body("hello"), headers=gkey)
    assert r.status_code == 200
    resp = validate_gemini(r.json())
    assert resp.text == "echo: hello"
    assert resp.candidates[0].finish_reason == "STOP"
    assert resp.usage_metadata.prompt_token_count == len("hello") // 4 + 1
    assert resp.usage_metadata.candidates_token_count == len("echo: hello") // 4 + 1
    assert fake.calls[-1].provider == "gemini" and fake.calls[-1].headers["x-goog-api-key"] == fake.keys["gemini"]


def test_gemini_stream_sse(http: httpx.Client, gkey: dict[str, str]) -> None:
    r = http.post(f"{GEMINI}:streamGenerateContent", params={"alt": "sse"}, json=gemini_body("hi there"), headers=gkey)
    assert r.headers["content-type"].startswith("text/event-stream")
    chunks = [validate_gemini(c) for c in sse_data(r.text)]
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == "echo: hi there"
    assert [c.candidates[0].finish_reason for c in chunks][-1] == "STOP"
    assert all(c.candidates[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].usage_metadata.candidates_token_count == len("echo: hi there") // 4 + 1


def test_gemini_stream_json_array(http: httpx.Client, gkey: dict[str, str]) -> None:
    r = http.post(f"{GEMINI}:streamGenerateContent", json=gemini_body("array"), headers=gkey)
    chunks = [validate_gemini(c) for c in r.json()]
    assert "".join(c.text for c in chunks) == "echo: array"


def test_gemini_tool_call_and_result(http: httpx.Client, gkey: dict[str, str]) -> None:
    body = gemini_body("[tool]", tools=WEATHER_GEMINI)
    resp = validate_gemini(http.post(f"{GEMINI}:generateContent", json=body, headers=gkey).json())
    (call,) = resp.function_calls
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    assert resp.candidates[0].finish_reason == "STOP"
    r = http.post(f"{GEMINI}:streamGenerateContent?alt=sse", json=body, headers=gkey)
    (chunk,) = [validate_gemini(c) for c in sse_data(r.text)]
    assert chunk.function_calls[0].args == {"city": "Paris"}

    body["contents"] += [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "18C"}}}]},
    ]
    resp = validate_gemini(http.post(f"{GEMINI}:generateContent", json=body, headers=gkey).json())
    assert resp.text == "tool said: 18C"


def test_gemini_cached_and_thoughts(http: httpx.Client, gkey: dict[str, str]) -> None:
    r = http.post(f"{GEMINI}:generateContent", json=gemini_body("[cached] [reasoning]"), headers=gkey)
    usage = validate_gemini(r.json()).usage_metadata
    assert usage.cached_content_token_count == CACHED_TOKENS
    assert usage.thoughts_token_count == REASONING_TOKENS
    assert usage.prompt_token_count > CACHED_TOKENS
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + REASONING_TOKENS


def test_gemini_errors(http: httpx.Client, gkey: dict[str, str]) -> None:
    r = http.post(f"{GEMINI}:generateContent", json=gemini_body("[429]"), headers=gkey)
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    error = r.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    retry = [d for d in error["details"] if d["@type"] == "type.googleapis.com/google.rpc.RetryInfo"]
    assert retry == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    r = http.post(f"{GEMINI}:streamGenerateContent?alt=sse", json=gemini_body("[500]"), headers=gkey)
    assert r.status_code == 500 and r.json()["error"]["status"] == "INTERNAL"
    r = http.post(f"{GEMINI}:generateContent", json={"contents": []}, headers=gkey)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = http.post(f"{GEMINI}:generateContent", json=gemini_body("hi", messages=[]), headers=gkey)
    assert r.status_code == 400 and 'Unknown name "messages"' in r.json()["error"]["message"]
    r = http.post(f"{GEMINI}:generateContent", json=gemini_body("hi"), headers={"x-goog-api-key": "bad"})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    r = http.post(f"{GEMINI}:generateContent", json=gemini_body("hi"))
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"
    r = http.post(f"{GEMINI}:generateContent", params={"key": gkey["x-goog-api-key"]}, json=gemini_body("q"))
    assert r.status_code == 200


def test_gemini_cut_stream(http: httpx.Client, gkey: dict[str, str], fake: FakeProviders) -> None:
    url = f"{GEMINI}:streamGenerateContent?alt=sse"
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", url, json=gemini_body("[cut] with enough text"), headers=gkey) as r,
    ):
        for _ in r.iter_bytes():
            pass
    assert fake.streams_cut == 1


def test_google_genai_client(fake: FakeProviders) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    client = genai.Client(api_key=str(fake.keys["gemini"]), http_options=types.HttpOptions(base_url=fake.base_url))
    resp = client.models.generate_content(model="gemini-2.5-flash", contents="via genai [cached]")
    assert resp.text == "echo: via genai [cached]"
    assert resp.usage_metadata.cached_content_token_count == CACHED_TOKENS
    text = "".join(c.text or "" for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="s"))
    assert text == "echo: s"
    config = types.GenerateContentConfig(
        tools=[
            types.Tool(
                function_declarations=[types.FunctionDeclaration(**WEATHER_GEMINI[0]["functionDeclarations"][0])]
            )
        ],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    resp = client.models.generate_content(model="gemini-2.5-flash", contents="[tool]", config=config)
    assert resp.function_calls[0].args == {"city": "Paris"}
    assert fake.calls[-1].path.endswith("/models/gemini-2.5-flash:generateContent")  # the SDK picks v1 or v1beta


# --- lifecycle ----------------------------------------------------------------------------------------------------


def test_run_and_stop_leaves_nothing_behind() -> None:
    before = set(threading.enumerate())
    with run_fake_providers(keys={"openai": ["k1", "k2"]}, slow_seconds=0.1) as fake:
        port = fake.port
        assert fake.base_url == f"http://127.0.0.1:{port}"
        auth = {"authorization": "Bearer k2"}
        body = {"model": "m", "messages": user("[slow]")}
        assert httpx.post(f"{fake.base_url}/v1/chat/completions", json=body, headers=auth).status_code == 200
        assert len(fake.calls) == 1
        fake.reset()
        assert fake.calls == [] and fake.streams_started == 0
    assert set(threading.enumerate()) <= before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_stop_with_a_request_in_flight_is_prompt() -> None:
    fake = run_fake_providers()
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            httpx.post(
                f"{fake.openai_base_url}/chat/completions",
                json={"model": "m", "messages": user("[slow]")},
                headers={"authorization": f"Bearer {fake.keys['openai']}"},
                timeout=10,
            )
        except httpx.HTTPError as e:
            errors.append(e)

    t = threading.Thread(target=slow)
    t.start()
    assert fake.wait_until(lambda: len(fake.calls) == 1)
    fake.stop()
    t.join(timeout=5)
    assert not t.is_alive()
