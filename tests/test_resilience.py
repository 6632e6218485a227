"""Retries, ordered fallbacks and the circuit breaker (providers/resilience.py), against the fake providers
failing on cue ([429], [500], [slow]), a dead port, and a tiny server here that fails its first N requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from conftest import free_port
from fakes import RETRY_AFTER_SECONDS, FakeProviders, run_fake_providers

from mcp_prism.config import Settings
from mcp_prism.errors import ConfigError
from mcp_prism.providers.client import ProviderClient
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.providers.formats import gemini as gemini_format
from mcp_prism.providers.formats import openai as openai_format
from mcp_prism.providers.resilience import (
    CIRCUIT_STATE_VALUE,
    Attempt,
    CircuitBreaker,
    RetryPolicy,
    from_config,
    ordered_targets,
    retry_after_seconds,
    send_resilient,
)
from mcp_prism.providers.wire import ChatRequest, Message, Text, WireError

pytestmark = pytest.mark.anyio

FORMATS: dict[str, ModuleType] = {"openai": openai_format, "anthropic": anthropic_format, "google": gemini_format}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash",
          "mistral": "mistral-small-latest"}


@dataclass(frozen=True)
class Target:
    provider: str
    text: str = "hello"
    stream: bool = False
    bogus_field: bool = False  # a body the provider rejects with 400

    @property
    def model(self) -> str:
        return MODELS[self.provider]


def key(t: Target) -> tuple[str, str]:
    return (t.provider, t.model)


def builder(client: ProviderClient):
    def build(t: Target) -> httpx.Request:
        fmt = FORMATS.get(t.provider, openai_format)
        req = ChatRequest(t.model, [Message("user", [Text(t.text)])], max_tokens=50, stream=t.stream)
        body = fmt.build_request(req, t.model)
        if t.bogus_field:
            body["not_a_field"] = 1
        return client.request(t.provider, t.model, json.dumps(body).encode(), stream=t.stream)
    return build


class Sleeps(list[float]):
    """An injected `sleep` that records the delays and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Recorder:
    """Wraps `send` to keep every response handed out, so tests can check which were closed."""

    def __init__(self, client: ProviderClient) -> None:
        self.client = client
        self.responses: list[httpx.Response] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        resp = await self.client.send(request)
        self.responses.append(resp)
        return resp


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(slow_seconds=5) as f:
        yield f


@pytest.fixture(autouse=True)
def _reset(fake: FakeProviders) -> None:
    fake.reset()


def make_client(tmp_path: Path, fake: FakeProviders, *, openai_url: str | None = None, timeout: float = 10.0,
                keys: dict[str, str] | None = None) -> ProviderClient:
    dead = free_port()  # nothing listens there: connection refused
    (tmp_path / "config.toml").write_text(
        f'[providers.openai]\nbase_url = "{openai_url or fake.base_url + "/v1"}"\n'
        f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n'
        f'[providers.google]\nbase_url = "{fake.base_url}/v1beta"\n'
        f'[providers.mistral]\nbase_url = "http://127.0.0.1:{dead}/v1"\n'
    )
    catalog = Settings.from_env({}, home=tmp_path).catalog()
    env = {"OPENAI_API_KEY": fake.keys["openai"], "ANTHROPIC_API_KEY": fake.keys["anthropic"],
           "GEMINI_API_KEY": fake.keys["gemini"], "MISTRAL_API_KEY": "unused", **(keys or {})}
    env = {k: v for k, v in env.items() if v}
    return ProviderClient(catalog, env, timeout=httpx.Timeout(timeout))


def policy(**kw: float) -> RetryPolicy:
    return RetryPolicy(**{"attempts": 2, "backoff_base": 0.01, "backoff_max": 0.05, "max_retry_after": 1.0, **kw})


def outcome(attempts: list[Attempt[Target]]) -> list[tuple[str, int | None, str | None]]:
    return [(a.target.provider, a.status, a.error) for a in attempts]


# ---------------------------------------------------------------- a server that fails its first N requests
@dataclass
class Flaky:
    fail_first: int
    status: int = 503
    headers: tuple[str, ...] = ()
    seen: int = 0
    port: int = 0


OK_BODY = json.dumps({
    "id": "chatcmpl-flaky", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "finally"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}).encode()


@pytest.fixture
async def flaky() -> AsyncIterator[Flaky]:
    state = Flaky(fail_first=2)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: several requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                state.seen += 1
                if state.seen <= state.fail_first:
                    body = json.dumps({"error": {"message": f"overloaded (try {state.seen})", "type": "server_error",
                                                 "param": None, "code": None}}).encode()
                    status = state.status
                else:
                    body, status = OK_BODY, 200
                lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Content-Type: application/json",
                         *state.headers]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------- retries
async def test_retries_until_the_flaky_server_answers(tmp_path: Path, fake: FakeProviders, flaky: Flaky) -> None:
    client = make_client(tmp_path, fake, openai_url=f"http://127.0.0.1:{flaky.port}/v1")
    sleeps, rec = Sleeps(), Recorder(client)
    p = RetryPolicy(attempts=3, backoff_base=0.2, backoff_max=0.3, max_retry_after=1.0)
    try:
        got = await send_resilient([Target("openai")], builder(client), rec, policy=p,
                                   breaker=CircuitBreaker(failures=5), key=key, sleep=sleeps)
        assert got.ok and got.target.provider == "openai" and got.retries == 2
        assert outcome(got.attempts) == [("openai", 503, "provider_error"), ("openai", 503, "provider_error"),
                                         ("openai", 200, None)]
        assert flaky.seen == 3
        # full jitter: the n-th wait is somewhere in [0, min(cap, base * 2**(n-1))]
        assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.2 and 0 <= sleeps[1] <= 0.3
        assert [a.waited for a in got.attempts] == [0.0, sleeps[0], sleeps[1]]
        # the two failed responses were closed here; the one handed back is the caller's to read and close
        assert [r.is_closed for r in rec.responses] == [True, True, False]
        body = json.loads(await got.response.aread())
        assert body["choices"][0]["message"]["content"] == "finally"
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_exhausted_retries_hand_back_the_providers_own_failure(tmp_path: Path, fake: FakeProviders,
                                                                    flaky: Flaky) -> None:
    flaky.fail_first = 10
    client = make_client(tmp_path, fake, openai_url=f"http://127.0.0.1:{flaky.port}/v1")
    rec = Recorder(client)
    try:
        got = await send_resilient([Target("openai")], builder(client), rec, policy=policy(attempts=3),
                                   breaker=CircuitBreaker(failures=10), key=key, sleep=Sleeps())
        assert not got.ok and got.response.status_code == 503 and flaky.seen == 3
        assert [r.is_closed for r in rec.responses] == [True, True, False]
        err = openai_format.parse_error(503, await got.response.aread(), got.response.headers)
        assert "overloaded (try 3)" in err.message  # the last failure, body intact
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_retry_after_is_honoured_within_the_max_wait(tmp_path: Path, fake: FakeProviders,
                                                           flaky: Flaky) -> None:
    flaky.fail_first, flaky.status, flaky.headers = 1, 429, ("Retry-After-Ms: 250",)
    client = make_client(tmp_path, fake, openai_url=f"http://127.0.0.1:{flaky.port}/v1")
    sleeps = Sleeps()
    try:
        got = await send_resilient([Target("openai")], builder(client), client.send, policy=policy(),
                                   breaker=CircuitBreaker(), key=key, sleep=sleeps)
        assert got.ok and sleeps == [0.25]
        assert outcome(got.attempts) == [("openai", 429, "rate_limited"), ("openai", 200, None)]
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_fake_429_waits_retry_after_when_allowed(tmp_path: Path, fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    sleeps = Sleeps()
    try:
        got = await send_resilient([Target("anthropic", "[429] hi")], builder(client), client.send,
                                   policy=policy(max_retry_after=10), breaker=CircuitBreaker(), key=key, sleep=sleeps)
        assert sleeps == [float(RETRY_AFTER_SECONDS)]  # exactly what the provider asked, no jitter
        assert got.response.status_code == 429 and len(fake.calls) == 2
        assert got.response.headers["retry-after"] == str(RETRY_AFTER_SECONDS)  # passed on to the client
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_long_retry_after_moves_to_the_next_target_without_waiting(tmp_path: Path,
                                                                          fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    sleeps = Sleeps()
    try:
        targets = [Target("openai", "[429] hi"), Target("anthropic", "hi")]
        got = await send_resilient(targets, builder(client), client.send, policy=policy(max_retry_after=1),
                                   breaker=CircuitBreaker(), key=key, sleep=sleeps)
        assert sleeps == [] and got.ok and got.target.provider == "anthropic"
        assert outcome(got.attempts) == [("openai", 429, "rate_limited"), ("anthropic", 200, None)]
        assert [c.provider for c in fake.calls] == ["openai", "anthropic"]
        await got.response.aclose()
    finally:
        await client.aclose()


# ---------------------------------------------------------------- ordered fallbacks
async def test_fallbacks_are_tried_in_order(tmp_path: Path, fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    rec = Recorder(client)
    seen: list[Attempt[Target]] = []
    try:
        targets = [Target("openai", "[500] a"), Target("anthropic", "[500] b"), Target("google", "c")]
        got = await send_resilient(targets, builder(client), rec, policy=policy(), breaker=CircuitBreaker(),
                                   key=key, sleep=Sleeps(), on_attempt=seen.append)
        assert got.target == targets[2]
        assert outcome(got.attempts) == [("openai", 500, "provider_error")] * 2 + [
            ("anthropic", 500, "provider_error")] * 2 + [("google", 200, None)]
        assert seen == got.attempts and got.retries == 4
        assert [a.kind for a in got.attempts] == ["first", "retry", "fallback", "retry", "fallback"]
        assert all(r.is_closed for r in rec.responses[:-1]) and not rec.responses[-1].is_closed
        parsed = gemini_format.parse_response(json.loads(await got.response.aread()))
        assert parsed.content[0].text == "echo: c"  # type: ignore[union-attr]
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_a_client_error_does_not_fall_back(tmp_path: Path, fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    breaker = CircuitBreaker(failures=1)
    try:
        targets = [Target("google", "x", bogus_field=True), Target("anthropic")]
        got = await send_resilient(targets, builder(client), client.send, policy=policy(), breaker=breaker,
                                   key=key, sleep=Sleeps())
        assert got.response.status_code == 400 and got.target.provider == "google"
        assert outcome(got.attempts) == [("google", 400, None)] and len(fake.calls) == 1
        assert breaker.state(key(targets[0])) == "closed"  # the deployment answered: it is healthy
        await got.response.aclose()
    finally:
        await client.aclose()
    bad_key = make_client(tmp_path, fake, keys={"OPENAI_API_KEY": "sk-wrong"})
    try:
        got = await send_resilient([Target("openai"), Target("anthropic")], builder(bad_key), bad_key.send,
                                   policy=policy(), breaker=breaker, key=key, sleep=Sleeps())
        assert got.response.status_code == 401 and [c.provider for c in fake.calls][1:] == ["openai"]
        await got.response.aclose()
    finally:
        await bad_key.aclose()


async def test_timeouts_and_refused_connections_are_retried_then_fall_back(tmp_path: Path,
                                                                           fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake, timeout=0.3)
    try:
        targets = [Target("openai", "[slow] a"), Target("mistral"), Target("anthropic", "b")]
        got = await send_resilient(targets, builder(client), client.send, policy=policy(), breaker=CircuitBreaker(),
                                   key=key, sleep=Sleeps())
        assert got.ok and got.target.provider == "anthropic"
        assert outcome(got.attempts) == [("openai", None, "timeout")] * 2 + [("mistral", None, "provider_error")] * 2 \
            + [("anthropic", 200, None)]
        assert all(a.seconds >= 0.25 for a in got.attempts[:2])
        await got.response.aclose()
        # every target fails without a response: the last WireError is raised
        with pytest.raises(WireError) as e:
            await send_resilient([Target("openai", "[slow] a"), Target("mistral")], builder(client), client.send,
                                 policy=policy(attempts=1), breaker=CircuitBreaker(), key=key, sleep=Sleeps())
        assert e.value.status == 502 and "cannot reach" in e.value.message
        with pytest.raises(WireError) as e:
            await send_resilient([Target("openai", "[slow] a")], builder(client), client.send,
                                 policy=policy(attempts=1), breaker=CircuitBreaker(), key=key, sleep=Sleeps())
        assert e.value.status == 504
    finally:
        await client.aclose()


async def test_a_target_that_cannot_be_built_is_passed_over(tmp_path: Path, fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake, keys={"GEMINI_API_KEY": ""})  # no key for google
    try:
        got = await send_resilient([Target("google"), Target("openai")], builder(client), client.send,
                                   policy=policy(), breaker=CircuitBreaker(), key=key, sleep=Sleeps())
        assert got.ok and outcome(got.attempts) == [("google", None, "provider_error"), ("openai", 200, None)]
        assert [a.kind for a in got.attempts] == ["first", "fallback"]
        await got.response.aclose()
        with pytest.raises(WireError, match="GEMINI_API_KEY"):
            await send_resilient([Target("google")], builder(client), client.send, policy=policy(),
                                 breaker=CircuitBreaker(), key=key, sleep=Sleeps())
    finally:
        await client.aclose()


async def test_a_failure_response_then_a_later_failure_response_hands_back_the_last(tmp_path: Path,
                                                                                    fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    rec = Recorder(client)
    try:
        targets = [Target("openai", "[500] a"), Target("anthropic", "[529] b")]
        got = await send_resilient(targets, builder(client), rec, policy=policy(attempts=1), breaker=CircuitBreaker(),
                                   key=key, sleep=Sleeps())
        assert got.target.provider == "anthropic" and got.response.status_code == 529
        assert [r.is_closed for r in rec.responses] == [True, False]
        err = anthropic_format.parse_error(529, await got.response.aread(), got.response.headers)
        assert err.kind == "overloaded"
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_streams_are_returned_unread_after_a_fallback(tmp_path: Path, fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    try:
        targets = [Target("anthropic", "[500] s", stream=True), Target("openai", "s", stream=True)]
        got = await send_resilient(targets, builder(client), client.send, policy=policy(attempts=1),
                                   breaker=CircuitBreaker(), key=key, sleep=Sleeps())
        assert got.ok and got.target.provider == "openai"
        assert got.response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join([chunk async for chunk in got.response.aiter_raw()])
        assert raw.endswith(b"data: [DONE]\n\n")
        chunks = [json.loads(line[6:]) for line in raw.decode().splitlines()
                  if line.startswith("data: {")]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == "echo: s"
        await got.response.aclose()
    finally:
        await client.aclose()


# ---------------------------------------------------------------- circuit breaker
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_circuit_opens_skips_and_recovers_half_open(tmp_path: Path, fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    clock = Clock()
    breaker = CircuitBreaker(failures=3, cooldown=30, clock=clock)
    oa = key(Target("openai"))
    p = policy(attempts=1)
    try:
        async def go(*targets: Target):
            got = await send_resilient(list(targets), builder(client), client.send, policy=p, breaker=breaker,
                                       key=key, sleep=Sleeps())
            await got.response.aclose()
            return got

        for _ in range(3):  # three consecutive failures, each answered by the fallback
            assert breaker.state(oa) == "closed"
            got = await go(Target("openai", "[500] x"), Target("anthropic"))
            assert got.target.provider == "anthropic"
        assert breaker.state(oa) == "open"
        assert breaker.states() == {oa: "open", key(Target("anthropic")): "closed"}
        assert CIRCUIT_STATE_VALUE[breaker.state(oa)] == 2

        fake.reset()
        got = await go(Target("openai", "healthy now"), Target("anthropic"))
        assert outcome(got.attempts) == [("openai", None, "circuit_open"), ("anthropic", 200, None)]
        assert got.attempts[0].skipped and [c.provider for c in fake.calls] == ["anthropic"]  # not even sent
        assert [a.kind for a in got.attempts] == ["skipped", "first"]
        assert got.retries == 0

        clock.now += 29.9
        assert breaker.state(oa) == "open"
        clock.now += 0.2
        assert breaker.state(oa) == "half_open"
        # the trial fails: open again for a full cooldown
        got = await go(Target("openai", "[500] still"), Target("anthropic"))
        assert outcome(got.attempts) == [("openai", 500, "provider_error"), ("anthropic", 200, None)]
        assert breaker.state(oa) == "open"
        clock.now += 15
        assert breaker.state(oa) == "open"
        clock.now += 15
        # the trial succeeds: closed, and the failure count starts over
        got = await go(Target("openai", "ok"), Target("anthropic"))
        assert got.target.provider == "openai" and breaker.state(oa) == "closed"
        await go(Target("openai", "[500] once"), Target("anthropic"))
        assert breaker.state(oa) == "closed"
    finally:
        await client.aclose()


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown=10, clock=clock)
    k = ("openai", "gpt-4o-mini")
    assert b.allow(k) and b.states() == {k: "closed"}
    b.failure(k)
    assert not b.allow(k)
    clock.now += 10
    assert b.allow(k)  # the trial
    assert not b.allow(k)  # a concurrent request is kept away while the trial is in flight
    b.release(k)  # the trial was cancelled: its outcome is unknown
    assert b.allow(k)
    clock.now += 10  # a trial that never reports back expires
    assert b.allow(k)
    b.success(k)
    assert b.state(k) == "closed" and b.allow(k) and b.allow(k)
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)


async def test_when_every_circuit_is_open_the_first_target_is_tried_anyway(tmp_path: Path,
                                                                             fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    breaker = CircuitBreaker(failures=1, cooldown=60, clock=Clock())
    for t in (Target("openai"), Target("anthropic")):
        breaker.failure(key(t))
    try:
        got = await send_resilient([Target("openai"), Target("anthropic")], builder(client), client.send,
                                   policy=policy(), breaker=breaker, key=key, sleep=Sleeps())
        assert got.ok and got.target.provider == "openai"
        assert outcome(got.attempts) == [("openai", None, "circuit_open"), ("anthropic", None, "circuit_open"),
                                         ("openai", 200, None)]
        assert [a.kind for a in got.attempts] == ["skipped", "skipped", "first"]
        assert breaker.state(key(Target("openai"))) == "closed"
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_retries_stop_once_the_circuit_opens(tmp_path: Path, fake: FakeProviders) -> None:
    client = make_client(tmp_path, fake)
    breaker = CircuitBreaker(failures=2, clock=Clock())
    try:
        got = await send_resilient([Target("openai", "[500] x"), Target("anthropic")], builder(client), client.send,
                                   policy=policy(attempts=5), breaker=breaker, key=key, sleep=Sleeps())
        assert outcome(got.attempts) == [("openai", 500, "provider_error")] * 2 + [("anthropic", 200, None)]
        await got.response.aclose()
    finally:
        await client.aclose()


async def test_a_cancelled_trial_is_released_and_held_responses_closed() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, cooldown=5, clock=clock)
    k = ("p", "m")
    breaker.failure(k)
    clock.now += 5
    failing = httpx.Response(503, content=b"busy")
    sent: list[int] = []

    async def send(request: httpx.Request) -> httpx.Response:
        sent.append(1)
        if len(sent) == 1:
            return failing
        raise asyncio.CancelledError

    async def never(seconds: float) -> None:
        raise asyncio.CancelledError  # the client left while we waited

    with pytest.raises(asyncio.CancelledError):
        await send_resilient(["a", "b"], lambda t: httpx.Request("POST", f"http://x/{t}"), send,
                             policy=RetryPolicy(attempts=3), breaker=breaker,
                             key=lambda t: k if t == "a" else ("p", t), sleep=never)
    assert failing.is_closed
    # the trial failed (503) so the circuit re-opened; the next trial comes after a new cooldown
    assert breaker.state(k) == "open"
    clock.now += 5
    assert breaker.allow(k)
    breaker2 = CircuitBreaker(failures=1, cooldown=5, clock=clock)
    breaker2.failure(k)
    clock.now += 5
    with pytest.raises(asyncio.CancelledError):
        await send_resilient(["a"], lambda t: httpx.Request("POST", "http://x/"), send, policy=RetryPolicy(),
                             breaker=breaker2, key=lambda t: k)
    assert breaker2.allow(k)  # the cancelled trial gave its slot back


# ---------------------------------------------------------------- policy pieces and config
def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    top = RetryPolicy(backoff_base=0.5, backoff_max=3.0, random=lambda: 1.0)
    assert [top.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert RetryPolicy(random=lambda: 0.0).backoff(3) == 0.0
    p = RetryPolicy(max_retry_after=5)
    assert p.delay(1, 4.5) == 4.5 and p.delay(1, 5.5) is None and p.delay(1, -3) == 0.0
    assert all(p.retryable(s) for s in (429, 500, 502, 503, 504, 529))
    assert not any(p.retryable(s) for s in (400, 401, 403, 404, 408, 413, 422, 501))


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "7"})) == 7.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "1.5", "retry-after-ms": "200"})) == 0.2
    assert retry_after_seconds(httpx.Headers({})) is None
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({"retry-after": "nan"})) is None
    now = datetime(2025, 1, 1, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_seconds(httpx.Headers({"retry-after": when}), now=now.timestamp()) == 30.0
    assert retry_after_seconds(httpx.Headers({"retry-after": format_datetime(now, usegmt=True)}),
                               now=now.timestamp() + 60) == 0.0


def test_ordered_targets_drops_repeats() -> None:
    assert ordered_targets("a", ["b", "a", "c", "b"], name=str) == ["a", "b", "c"]


def test_config_defaults_and_values() -> None:
    p, b = from_config({})
    assert (p.attempts, p.backoff_base, p.backoff_max, p.max_retry_after) == (2, 0.5, 8.0, 10.0)
    assert (b.failures, b.cooldown) == (5, 30.0)
    p, b = from_config({"gateway": {"upstream_timeout_seconds": 60,
                                    "retries": {"attempts": 4, "backoff_base_seconds": 0.25, "backoff_max_seconds": 2,
                                                "max_retry_after_seconds": 0},
                                    "circuit": {"failures": 2, "cooldown_seconds": 5}}})
    assert (p.attempts, p.backoff_base, p.backoff_max, p.max_retry_after) == (4, 0.25, 2.0, 0.0)
    assert (b.failures, b.cooldown) == (2, 5.0)
    # an unset cap follows a base above the default cap
    assert from_config({"gateway": {"retries": {"backoff_base_seconds": 20}}}).policy.backoff_max == 20


@pytest.mark.parametrize(("config", "message"), [
    ({"gateway": 3}, "gateway must be a table"),
    ({"gateway": {"retries": []}}, "gateway.retries must be a table"),
    ({"gateway": {"retries": {"attempt": 3}}}, "unknown setting(s) attempt; known: attempts"),
    ({"gateway": {"retries": {"attempts": 0}}}, "gateway.retries.attempts must be a whole number from 1 to 10, not 0"),
    ({"gateway": {"retries": {"attempts": 2.5}}}, "gateway.retries.attempts must be a whole number"),
    ({"gateway": {"retries": {"attempts": True}}}, "gateway.retries.attempts must be a whole number"),
    ({"gateway": {"retries": {"backoff_base_seconds": "1"}}}, "backoff_base_seconds must be a number from 0"),
    ({"gateway": {"retries": {"backoff_base_seconds": 2, "backoff_max_seconds": 1}}},
     "backoff_max_seconds (1) must be at least backoff_base_seconds (2)"),
    ({"gateway": {"retries": {"max_retry_after_seconds": -1}}}, "max_retry_after_seconds must be a number"),
    ({"gateway": {"circuit": {"failures": 0}}}, "gateway.circuit.failures must be a whole number from 1 to 1000"),
    ({"gateway": {"circuit": {"cooldown_seconds": 0}}},
     "gateway.circuit.cooldown_seconds must be a number above 0 up to 3600, not 0"),
    ({"gateway": {"circuit": {"cooldown": 5}}}, "gateway.circuit: unknown setting(s) cooldown"),
])
def test_config_errors_say_what_to_fix(config: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_config(config)
    assert message in str(e.value)


def test_config_from_a_real_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[gateway.retries]\nattempts = 3\n[gateway.circuit]\ncooldown_seconds = 12.5\n")
    p, b = from_config(Settings.from_env({}, home=tmp_path).user_config)
    assert p.attempts == 3 and b.cooldown == 12.5
