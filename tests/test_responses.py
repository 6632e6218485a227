"""OpenAI's Responses API end to end: the fake OpenAI server's `/v1/responses`, the `responses` format module and
the gateway's `/v1/responses`, all proven by the official `openai` SDK (`client.responses.create`, streaming and
not, and `openai.types.responses` validation), plus chat and Anthropic clients routed to a codex model, which
the gateway must call with the Responses API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pydantic
import pytest
from fakes import CACHED_TOKENS, REASONING_TOKENS, THINKING_SIGNATURE, THINKING_TEXT, FakeProviders, run_fake_providers
from openai.types.responses import Response, ResponseStreamEvent
from test_gateway import KEYS, RunningGateway, _Reopened

from mcp_prism.config import shipped_catalog_data
from mcp_prism.core.catalog import build_catalog
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.errors import ConfigError
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.providers.formats import responses as fmt
from mcp_prism.providers.sse import SSEDecoder
from mcp_prism.providers.wire import (
    ChatResponse,
    StreamEnd,
    Text,
    TextDelta,
    Thinking,
    ToolCall,
    ToolCallStart,
    Usage,
    WireError,
)

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_CHAT = {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys={"openai": KEYS["OPENAI_API_KEY"], "anthropic": KEYS["ANTHROPIC_API_KEY"],
                                  "gemini": KEYS["GEMINI_API_KEY"]}) as f:
        yield f


@pytest.fixture(scope="module")
def oai(fake: FakeProviders) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.openai_base_url, api_key=KEYS["OPENAI_API_KEY"], max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def gw(fake: FakeProviders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with RunningGateway(tmp_path_factory.mktemp("gw"), fake) as g:
        yield g


def _events(raw: bytes) -> list[Any]:
    """SSE bytes -> SDK stream event models (validated, so a field OpenAI always sends cannot be missing)."""
    out = []
    for event, data in SSEDecoder().feed(raw):
        obj = json.loads(data)
        assert obj["type"] == event  # every event line names its data's type, as OpenAI's do
        out.append(EVENTS.validate_python(obj))
    return out


# ---------------------------------------------------------------- the fake OpenAI Responses API
def test_fake_text_with_cached_and_reasoning_usage(oai: openai.OpenAI) -> None:
    raw = oai.responses.with_raw_response.create(model="gpt-5", input="[cached] [reasoning] hello",
                                                 include=["reasoning.encrypted_content"])
    r = Response.model_validate_json(raw.content)  # strict: every field OpenAI always sends is there
    assert r.output_text == "echo: [cached] [reasoning] hello" and r.status == "completed"
    reasoning = r.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == THINKING_TEXT
    assert reasoning.encrypted_content == THINKING_SIGNATURE
    assert r.usage.input_tokens_details.cached_tokens == CACHED_TOKENS
    assert r.usage.output_tokens_details.reasoning_tokens == REASONING_TOKENS
    assert r.usage.input_tokens > CACHED_TOKENS  # totals include their details


def test_fake_stream_sends_openais_events_in_order(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-5", input="hello stream") as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert final.output_text == "echo: hello stream" and final.usage.output_tokens > 0


def test_fake_function_call_round_trip(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="gpt-5", input="[tool] weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {
        "city": "Paris"}
    second = oai.responses.create(model="gpt-5", tools=[WEATHER], input=[
        {"role": "user", "content": "[tool] weather in Paris?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert second.output_text == "tool said: sunny, 21C"


def test_fake_errors_and_cut_streams(oai: openai.OpenAI, fake: FakeProviders) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        oai.responses.create(model="gpt-5", input="[429] busy?")
    assert e.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.BadRequestError, match="additionalProperties"):
        oai.responses.create(model="gpt-5", input="x", tools=[{**WEATHER, "strict": True}])
    fake.reset()
    with pytest.raises(openai.APIConnectionError):
        for _ in oai.responses.create(model="gpt-5", input="[cut] a fairly long text to stream", stream=True):
            pass
    assert fake.streams_cut == 1


# ---------------------------------------------------------------- the format module
def test_parse_request_reads_codex_shaped_input() -> None:
    body = {"model": "auto", "instructions": "be terse", "stream": True, "store": False,
            "reasoning": {"effort": "low", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
            "tools": [WEATHER, {"type": "web_search"}, {"type": "namespace", "name": "x", "tools": []}],
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>"
                                                                 "x</environment_context>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}],
                 "encrypted_content": "ENC"},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                 "arguments": '{"city":"Paris"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]}
    req = fmt.parse_request(body)
    assert [t.text for t in req.system] == ["be terse", "rules"]
    assert [m.role for m in req.messages] == ["user", "assistant", "user"]
    assert [t.name for t in req.tools] == ["get_weather"]  # hosted and namespaced tools do not translate
    assert req.reasoning_effort == "low" and req.stream
    thinking, call = req.messages[1].content
    assert isinstance(thinking, Thinking) and (thinking.text, thinking.encrypted, thinking.id) == ("hmm", "ENC", "rs_1")
    assert call == ToolCall("call_1", "get_weather", '{"city":"Paris"}')
    assert req.messages[2].content[0].name == "get_weather"
    # the same request built for another provider, and back for OpenAI's Responses API
    anthropic_body = anthropic_format.build_request(req, "claude-haiku-4-5")
    assert not any(b.get("type") == "thinking" for m in anthropic_body["messages"] for b in m["content"]
                   if isinstance(b, dict))  # OpenAI's encrypted reasoning means nothing to Anthropic
    out = fmt.build_request(req, "gpt-5")
    assert out["instructions"] == "be terse\n\nrules" and out["store"] is False
    assert [i["type"] for i in out["input"]] == ["message", "reasoning", "function_call", "function_call_output"]
    assert out["tools"][0]["strict"] is False


def test_untranslatable_requests_say_why() -> None:
    with pytest.raises(WireError, match="previous_response_id"):
        fmt.parse_request({"model": "m", "input": "x", "previous_response_id": "resp_1"})
    with pytest.raises(WireError, match="item_reference"):
        fmt.parse_request({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]})
    with pytest.raises(WireError, match='"input" is required'):
        fmt.parse_request({"model": "m"})


def test_rendered_response_and_stream_are_valid_sdk_objects() -> None:
    resp = ChatResponse("abc", "m", [Thinking("why"), Text("hi"), ToolCall("call_9", "get_weather", "{}")],
                        "tool_use", Usage(100, 20, 40, 0, 5))
    body = fmt.render_response(resp, "claude-haiku-4-5")
    parsed = Response.model_validate(body)
    assert parsed.output_text == "hi" and [o.type for o in parsed.output] == ["reasoning", "message", "function_call"]
    assert parsed.usage.input_tokens_details.cached_tokens == 40
    assert fmt.parse_response(body).usage.tokens() == TokenUsage(100, 40, 0, 20, 5)
    from mcp_prism.gateway.cache import response_events
    enc = fmt.StreamEncoder("claude-haiku-4-5")
    events = _events(b"".join(enc.encode(ev) for ev in response_events(resp)))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed" and done.response.output_text == "hi"
    assert done.response.usage.output_tokens_details.reasoning_tokens == 5
    # and our decoder reads our encoder back
    dec = fmt.StreamDecoder()
    neutral = [n for e in events for n in dec.feed(e.type, e.model_dump_json())]
    assert any(isinstance(n, ToolCallStart) and n.name == "get_weather" for n in neutral)
    assert isinstance(neutral[-1], StreamEnd) and neutral[-1].stop_reason == "tool_use"


def test_decoder_reads_openais_stream(fake: FakeProviders) -> None:
    with httpx.Client(timeout=10) as http:
        auth = {"authorization": f"Bearer {KEYS['OPENAI_API_KEY']}"}
        raw = http.post(f"{fake.openai_base_url}/responses", headers=auth, json={
            "model": "gpt-5", "input": "[tool] [reasoning] [cached] go", "tools": [WEATHER], "stream": True}).content
    dec = fmt.StreamDecoder()
    out = [n for event, data in SSEDecoder().feed(raw) for n in dec.feed(event, data)]
    kinds = [type(n).__name__ for n in out]
    assert kinds[0] == "StreamStart" and kinds[-1] == "StreamEnd"
    assert "".join(n.text for n in out if type(n).__name__ == "ThinkingDelta") == THINKING_TEXT
    start = next(n for n in out if isinstance(n, ToolCallStart))
    assert start.name == "get_weather" and start.id.startswith("call_")
    end = out[-1]
    assert end.stop_reason == "tool_use" and end.usage.cached_input_tokens == CACHED_TOKENS
    assert end.usage.reasoning_tokens == REASONING_TOKENS


def test_decoder_edge_cases() -> None:
    def run(*events: tuple[str, dict[str, Any]]) -> list[Any]:
        dec = fmt.StreamDecoder()
        return [n for kind, obj in events for n in dec.feed(kind, json.dumps({"type": kind, **obj}))]

    created = ("response.created", {"response": {"id": "resp_1", "model": "m"}})
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'}
    # arguments sent whole in output_item.done, not as deltas
    out = run(created, ("response.output_item.added", {"output_index": 0, "item": {**call, "arguments": ""}}),
              ("response.output_item.done", {"output_index": 0, "item": call}),
              ("response.incomplete", {"response": {"status": "incomplete", "incomplete_details": {
                  "reason": "max_output_tokens"}, "usage": {"input_tokens": 5, "output_tokens": 9}}}))
    assert [getattr(n, "arguments", None) for n in out if type(n).__name__ == "ToolArgsDelta"] == ['{"a":1}']
    assert out[-1].stop_reason == "length" and out[-1].usage.output_tokens == 9
    with pytest.raises(WireError, match="slow down") as e:
        run(created, ("error", {"code": "rate_limit_exceeded", "message": "slow down", "param": None}))
    assert e.value.status == 429 and e.value.provider_type == "rate_limit_exceeded"
    with pytest.raises(WireError, match="model crashed"):
        run(created, ("response.failed", {"response": {"status": "failed", "error": {
            "code": "server_error", "message": "model crashed"}}}))
    assert fmt.StreamDecoder().finish() == []  # a stream without its terminal event did not finish


def test_stream_error_is_an_error_event_then_response_failed() -> None:
    enc = fmt.StreamEncoder("m")
    events = _events(enc.encode(TextDelta(0, "par")) + enc.error(WireError(502, "provider_error", "cut off")))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.error.message == "cut off"


def test_catalog_marks_codex_models_responses_only(catalog: Any) -> None:
    assert catalog.resolve("gpt-5.1-codex-mini").api == "responses" and catalog.resolve("gpt-5").api == "chat"
    assert catalog.providers["openai"].responses_api and not catalog.providers["anthropic"].responses_api
    later = build_catalog(shipped_catalog_data(), {"models": {"gpt-9-codex": {
        "provider": "openai", "tier": "simple", "context_window": 1}}})
    assert later.resolve("gpt-9-codex").api == "responses"  # OpenAI's codex models, unless the catalog says
    with pytest.raises(ConfigError, match="api must be"):
        build_catalog({"providers": {"p": {"format": "openai"}}, "models": {"m": {
            "provider": "p", "tier": "simple", "context_window": 1, "api": "completions"}}})
    with pytest.raises(ConfigError, match="OpenAI-format provider"):
        build_catalog({"providers": {"p": {"format": "anthropic"}}, "models": {"m": {
            "provider": "p", "tier": "simple", "context_window": 1, "api": "responses"}}})


def test_upstream_format_per_model_and_client() -> None:
    from mcp_prism.providers.registry import upstream_format
    local = build_catalog(shipped_catalog_data(), {"models": {"qwen-coder": {
        "provider": "vllm", "tier": "simple", "context_window": 32768, "price": {"input": "0", "output": "0"}}}})
    cases = {("gpt-5", "openai"): "openai", ("gpt-5", "responses"): "responses",  # OpenAI serves both APIs
             ("gpt-5.1-codex-mini", "openai"): "responses", ("gpt-5.1-codex-mini", "anthropic"): "responses",
             ("claude-haiku-4-5", "responses"): "anthropic", ("gemini-2.5-flash", "responses"): "gemini",
             ("qwen-coder", "responses"): "openai"}  # a compatible server without /responses: translated to chat
    for (model, client), expected in cases.items():
        assert upstream_format(local, local.resolve(model), client) == expected, (model, client)


# ---------------------------------------------------------------- the gateway's /v1/responses
def test_responses_client_to_openai_passes_through(gw: RunningGateway, fake: FakeProviders) -> None:
    raw = gw.openai().responses.with_raw_response.create(model="gpt-5-nano", input="[cached] [reasoning] hi there",
                                                         instructions="be brief")
    r = raw.parse()
    assert r.output_text == "echo: [cached] [reasoning] hi there" and raw.headers["x-prism-model"] == "gpt-5-nano"
    sent = fake.calls[-1]
    assert sent.path == "/v1/responses" and sent.body["model"] == "gpt-5-nano" and sent.body["instructions"]
    ev = gw.event(raw.headers["x-prism-request-id"])
    assert (ev["model"], ev["status"]) == ("gpt-5-nano", "ok")
    assert ev["input_tokens"] == r.usage.input_tokens and ev["cached_input_tokens"] == CACHED_TOKENS
    assert ev["output_tokens"] == r.usage.output_tokens and ev["reasoning_tokens"] == REASONING_TOKENS
    expected = gw.app.service.catalog.cost("gpt-5-nano", TokenUsage(
        r.usage.input_tokens, CACHED_TOKENS, 0, r.usage.output_tokens, REASONING_TOKENS), None).usd
    assert Decimal(ev["cost_usd"]) == expected


def test_responses_stream_passthrough_is_recorded_with_its_usage(gw: RunningGateway, fake: FakeProviders) -> None:
    with gw.openai().responses.with_streaming_response.create(
            model="gpt-5-nano", input=[{"role": "user", "content": "write unit tests for the invoice parser"}],
            stream=True) as raw:
        events = [e for e in raw.parse()]
        rid = raw.headers["x-prism-request-id"]
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "echo: write unit tests for the invoice parser"
    ev = gw.event(rid)
    assert ev["status"] == "ok" and ev["output_tokens"] == events[-1].response.usage.output_tokens > 0
    assert ev["task_type"] == "test_generation"  # the person's words, from the Responses input items


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gemini-2.5-flash"])
def test_responses_client_routed_to_another_format_looks_native(gw: RunningGateway, fake: FakeProviders,
                                                                  model: str) -> None:
    client = gw.openai()
    raw = client.responses.with_raw_response.create(model=model, input="[cached] hello across formats",
                                                     instructions="Be brief.")
    r = Response.model_validate_json(raw.content)
    assert r.output_text == "echo: [cached] hello across formats" and r.model == model
    assert r.usage.input_tokens_details.cached_tokens > 0
    assert fake.calls[-1].path != "/v1/responses"
    ev = gw.event(raw.headers["x-prism-request-id"])
    assert ev["input_tokens"] == r.usage.input_tokens
    # tools, streamed: arguments arrive whole, then the tool result is answered
    with client.responses.stream(model=model, input="[tool] weather in Paris?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    call = next(o for o in final.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    second = client.responses.create(model=model, tools=[WEATHER], input=[
        {"role": "user", "content": "[tool] weather in Paris?"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}])
    assert second.output_text == "tool said: sunny, 21C"


def test_chat_client_routed_to_a_codex_model_is_called_with_the_responses_api(gw: RunningGateway,
                                                                               fake: FakeProviders) -> None:
    client = gw.openai()
    first = client.chat.completions.create(model="gpt-5.1-codex-mini", tools=[WEATHER_CHAT],
                                           messages=[{"role": "user", "content": "[tool] weather in Paris?"}])
    sent = fake.calls[-1]
    assert sent.path == "/v1/responses" and sent.body["model"] == "gpt-5.1-codex-mini" and sent.body["store"] is False
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Paris"}
    stream = client.chat.completions.create(model="gpt-5.1-codex-mini", stream=True, tools=[WEATHER_CHAT],
                                            stream_options={"include_usage": True}, messages=[
        {"role": "user", "content": "[tool] weather in Paris?"}, first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tool said: sunny, 21C"
    assert chunks[-1].usage.completion_tokens > 0
    assert fake.calls[-1].path == "/v1/responses" and fake.calls[-1].body["input"][-1]["type"] == \
        "function_call_output"
    # an Anthropic client too
    msg = gw.anthropic().messages.create(model="gpt-5.1-codex-mini", max_tokens=100,
                                         messages=[{"role": "user", "content": "[reasoning] hi codex"}])
    assert msg.content[-1].text == "echo: [reasoning] hi codex" and fake.calls[-1].path == "/v1/responses"


def test_bad_responses_requests_get_openai_errors(gw: RunningGateway) -> None:
    client = gw.openai()
    with pytest.raises(openai.BadRequestError, match="`input` must be"):
        client.responses.create(model="gpt-5-nano", input=[])
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="claude-haiku-4-5", input="hi", previous_response_id="resp_123")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model-anywhere", input="hi")


def test_unprefixed_responses_path_is_served(gw: RunningGateway) -> None:
    with openai.OpenAI(base_url=gw.url, api_key="unused", max_retries=0) as client:
        assert client.responses.create(model="gpt-5-nano", input="hello").output_text == "echo: hello"


def test_anthropic_client_thinking_from_a_responses_model_is_dropped_going_back(gw: RunningGateway,
                                                                               fake: FakeProviders) -> None:
    client: anthropic.Anthropic = gw.anthropic()
    first = client.messages.create(model="gpt-5.1-codex-mini", max_tokens=100,
                                   messages=[{"role": "user", "content": "[reasoning] think"}])
    client.messages.create(model="gpt-5.1-codex-mini", max_tokens=100, messages=[
        {"role": "user", "content": "[reasoning] think"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": "again"}])
    assert not any(i.get("type") == "reasoning" for i in fake.calls[-1].body["input"])



def test_a_client_hanging_up_right_after_the_last_event_got_a_whole_answer(gw: RunningGateway) -> None:
    """Codex closes the connection as soon as `response.completed` arrives, possibly before the gateway has read
    the provider's end of body (`[long]`: the fake pauses after every event, the last included): that is a whole
    answer, recorded as ok with its usage, not a cancellation."""
    for _ in range(3):
        with httpx.Client(timeout=10) as http, http.stream("POST", f"{gw.url}/v1/responses", json={
                "model": "gpt-5-nano", "input": "[long] [reasoning] hang up early", "stream": True}) as resp:
            rid = resp.headers["x-prism-request-id"]
            for line in resp.iter_lines():
                if line == "event: response.completed":
                    break
        ev = gw.event(rid)
        assert ev["status"] == "ok" and ev["reasoning_tokens"] == REASONING_TOKENS and ev["output_tokens"] > 0


def test_captured_samples_and_the_response_cache_work_for_responses_clients(fake: FakeProviders,
                                                                              tmp_path: Any) -> None:
    home = tmp_path / "home"
    RunningGateway(home, fake)  # writes the base config (ticket_classification captures samples); add the cache
    with (home / "config.toml").open("a") as f:
        f.write('[cache]\ntask_types = ["ticket_classification"]\nttl_seconds = 600\n')
    with _Reopened(home, fake) as g:
        client = g.openai()
        for model in ("prism/ticket_classification", "gpt-5-nano"):  # gemini (translated), openai (passed through)
            ask = {"model": model, "input": f"route ticket 7 to billing ({model})"}
            with client.responses.with_streaming_response.create(**ask, stream=True) as raw:
                streamed = [e for e in raw.parse()]
                miss = raw.headers["x-prism-request-id"]
            calls = len(fake.calls)
            again = client.responses.with_raw_response.create(**ask)
            replay = list(client.responses.create(**ask, stream=True))
            ev = g.event(miss)
            text = f"echo: route ticket 7 to billing ({model})"
            assert streamed[-1].response.output_text == text and ev["task_type"] == "ticket_classification"
            with sqlite3.connect(g.settings.db_path) as db:
                sample = db.execute("SELECT prompt, response FROM samples WHERE event_id = ?", (miss,)).fetchone()
            assert sample == (f"route ticket 7 to billing ({model})", text)
            if model.startswith("prism/"):  # cached by task type: the repeats never reached the provider
                assert len(fake.calls) == calls and again.headers["x-prism-cache"] == "hit"
                assert Response.model_validate_json(again.content).output_text == text
                assert replay[-1].type == "response.completed" and replay[-1].response.output_text == text


def test_responses_client_to_a_chat_only_compatible_server_is_translated_to_chat(fake: FakeProviders,
                                                                                  tmp_path: Any) -> None:
    home = tmp_path / "home"
    RunningGateway(home, fake)
    with (home / "config.toml").open("a") as f:  # a local vLLM-style server: Chat Completions only
        f.write(f'[providers.vllm]\nbase_url = "{fake.openai_base_url}"\napi_key_env = "OPENAI_API_KEY"\n'
                '[models."qwen-coder"]\nprovider = "vllm"\ntier = "simple"\ncontext_window = 32768\n'
                'capabilities = ["tools"]\nprice = { input = "1.00", output = "2.00" }\n')
    with _Reopened(home, fake) as g:
        client = g.openai()
        with client.responses.with_streaming_response.create(model="qwen-coder", input="[tool] weather?",
                                                             tools=[WEATHER], stream=True) as raw:
            final = list(raw.parse())[-1].response
            rid = raw.headers["x-prism-request-id"]
        assert fake.calls[-1].path == "/v1/chat/completions" and fake.calls[-1].body["stream_options"] == {
            "include_usage": True}
        call = next(o for o in final.output if o.type == "function_call")
        assert json.loads(call.arguments) == {"city": "Paris"}
        u = final.usage
        ev = g.event(rid)
        assert (ev["input_tokens"], ev["output_tokens"]) == (u.input_tokens, u.output_tokens)
        assert Decimal(ev["cost_usd"]) == (Decimal(u.input_tokens) * 1 + Decimal(u.output_tokens) * 2) / 10**6


def test_a_conversation_routed_to_claude_then_to_openai_drops_reasoning_openai_cannot_resume(
        gw: RunningGateway, fake: FakeProviders) -> None:
    """Claude's thinking reaches a Responses client as a reasoning item with no encrypted state; sent back to
    OpenAI (`store: false`) it would be a 404 ("Item ... not found"), so the gateway leaves it out."""
    client = gw.openai()
    first = client.responses.create(model="claude-haiku-4-5", input="[reasoning] think", store=False)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == THINKING_TEXT
    assert reasoning.id.startswith(fmt.MINTED_REASONING) and not reasoning.encrypted_content
    history = [{"role": "user", "content": "[reasoning] think"}, *[o.model_dump(exclude_none=True)
                                                                  for o in first.output]]
    second = client.responses.create(model="gpt-5-nano", store=False, input=[*history, {
        "role": "user", "content": "and now?"}])
    assert second.output_text == "echo: and now?"
    sent = fake.calls[-1].body["input"]
    assert [i.get("type", "message") for i in sent] == ["message", "message", "message"]
