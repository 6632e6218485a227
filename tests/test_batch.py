"""Batch requests end to end against the fake providers' batch APIs: enqueue -> submit -> poll -> answer in the
client's format (same format and cross-format), usage recorded once at the batch price, errored lines as
failures, unfinished batches, cancel, and the CLI. The fake batch endpoints are proven by the official SDKs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from fakes import FakeProviders, run_fake_providers

import mcp_prism.cli as cli
from mcp_prism.config import Settings
from mcp_prism.errors import ConfigError, InvalidInput
from mcp_prism.loop.batch import BatchService, run_batch_loop
from mcp_prism.providers.formats import anthropic as anthropic_format
from mcp_prism.providers.formats import openai as openai_format
from mcp_prism.providers.wire import ChatRequest, Message, Text
from mcp_prism.service import PrismService

KEYS = {"openai": "sk-batch-openai", "anthropic": "sk-ant-batch", "gemini": "batch-gemini"}
ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
TASK = "doc_generation"
GPT, CLAUDE = "gpt-4o-mini", "claude-haiku-4-5"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    with run_fake_providers(keys=KEYS) as f:
        yield f


def _config(fake: FakeProviders, extra: str = "") -> str:
    return (f'[providers.openai]\nbase_url = "{fake.base_url}/v1"\n'
            f'[providers.anthropic]\nbase_url = "{fake.base_url}/v1"\n'
            f'[providers.google]\nbase_url = "{fake.base_url}/v1beta"\n' + extra)


@pytest.fixture
def home(tmp_path: Path, fake: FakeProviders, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake.reset()
    fake.batch_polls_until_done = 0
    for provider, var in ENV.items():
        monkeypatch.setenv(var, KEYS[provider])
    for name in ("PRISM_HOME", "PRISM_DB", "PRISM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "config.toml").write_text(_config(fake, f"[task_types.{TASK}]\ncapture_samples = true\n"
                                                       f'[batch]\ntask_types = ["{TASK}"]\ninterval_seconds = 5\n'))
    return tmp_path


@pytest.fixture
async def svc(home: Path):
    service = await PrismService.open(Settings.from_env({}, home=home))
    yield service
    await service.close()


@pytest.fixture
def batches(svc: PrismService) -> BatchService:
    return BatchService(svc)


def chat(text: str, model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", [Text(text)])], max_tokens=200)


def openai_body(text: str, model: str = GPT) -> dict[str, Any]:
    return openai_format.build_request(chat(text, model), model)


def anthropic_body(text: str, model: str = CLAUDE) -> dict[str, Any]:
    return anthropic_format.build_request(chat(text, model), model)


async def events(svc: PrismService) -> list[Any]:
    return await svc.store.fetch("SELECT * FROM usage_events ORDER BY request_id")


def batch_cost(svc: PrismService, model: str, usage_body: dict[str, Any], fmt: Any) -> Decimal:
    return svc.catalog.cost(model, fmt.usage_of(usage_body).tokens(), batch=True).usd


# ==================================================================== the fake, driven by the official SDKs
def test_openai_sdk_drives_the_fake_batch_api(fake: FakeProviders) -> None:
    fake.reset()
    fake.batch_polls_until_done = 1
    client = openai.OpenAI(base_url=f"{fake.base_url}/v1", api_key=KEYS["openai"], max_retries=0)
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": GPT, "messages": [{"role": "user", "content": text}]}}
             for i, text in enumerate(["hello", "busy [429]"])]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(data)
    assert client.files.content(uploaded.id).content == data
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "validating"
    assert client.batches.retrieve(batch.id).status == "in_progress"
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 1)
    assert done.output_file_id and done.error_file_id
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert out[0]["custom_id"] == "r0" and out[0]["response"]["status_code"] == 200
    completion = openai.types.chat.ChatCompletion.model_validate(out[0]["response"]["body"])
    assert completion.choices[0].message.content == "echo: hello"
    err = json.loads(client.files.content(done.error_file_id).text)
    assert err["custom_id"] == "r1" and err["response"]["status_code"] == 429
    assert err["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.BadRequestError):  # a finished batch cannot be cancelled
        client.batches.cancel(batch.id)


def test_openai_fake_fails_a_batch_with_bad_lines(fake: FakeProviders) -> None:
    fake.reset()
    client = openai.OpenAI(base_url=f"{fake.base_url}/v1", api_key=KEYS["openai"], max_retries=0)
    good = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": GPT, "messages": [{"role": "user", "content": "x"}]}}
    other_model = {**good, "custom_id": "b", "body": {**good["body"], "model": "gpt-4o"}}
    data = (json.dumps(good) + "\n" + json.dumps(other_model) + "\nnot json\n").encode()
    uploaded = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.retrieve(client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                          completion_window="24h").id)
    assert batch.status == "failed" and batch.errors and batch.errors.data
    assert [e.line for e in batch.errors.data] == [2, 3]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")


def test_openai_sdk_cancels_a_running_batch(fake: FakeProviders) -> None:
    fake.reset()
    fake.batch_polls_until_done = 5
    client = openai.OpenAI(base_url=f"{fake.base_url}/v1", api_key=KEYS["openai"], max_retries=0)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": GPT, "messages": [{"role": "user", "content": "x"}]}}
    uploaded = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    after = client.batches.retrieve(batch.id)
    assert after.status == "cancelled" and after.output_file_id is None


def test_anthropic_sdk_drives_the_fake_message_batches(fake: FakeProviders) -> None:
    fake.reset()
    fake.batch_polls_until_done = 1
    client = anthropic.Anthropic(base_url=fake.base_url, api_key=KEYS["anthropic"], max_retries=0)
    params = {"model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "hello"}]}
    batch = client.messages.batches.create(requests=[
        {"custom_id": "ok-1", "params": params},
        {"custom_id": "bad-1", "params": {**params, "messages": [{"role": "user", "content": "x [529]"}]}},
        {"custom_id": "bad-2", "params": {"model": CLAUDE, "messages": params["messages"]}},  # no max_tokens
    ])
    assert batch.processing_status == "in_progress" and batch.request_counts.processing == 3
    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.results_url
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 2)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert results["ok-1"].type == "succeeded"
    assert results["ok-1"].message.content[0].text == "echo: hello"  # type: ignore[union-attr]
    assert results["bad-1"].type == "errored"
    assert results["bad-1"].error.error.type == "overloaded_error"  # type: ignore[union-attr]
    assert results["bad-2"].error.error.type == "invalid_request_error"  # type: ignore[union-attr]

    running = client.messages.batches.create(requests=[{"custom_id": "c", "params": params}])
    fake.batch_polls_until_done = 9
    assert client.messages.batches.cancel(running.id).processing_status == "canceling"
    cancelled = client.messages.batches.retrieve(running.id)
    assert cancelled.processing_status == "ended" and cancelled.request_counts.canceled == 1
    assert [r.result.type for r in client.messages.batches.results(running.id)] == ["canceled"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(requests=[{"custom_id": "has space", "params": params}])


# ==================================================================== the service
@pytest.mark.anyio
async def test_openai_round_trip_at_half_price(svc: PrismService, batches: BatchService,
                                               fake: FakeProviders) -> None:
    ids = [await batches.enqueue(openai_body(t), model=GPT, task_type=TASK, client_format="openai", team="docs")
           for t in ("write a docstring", "write a README")]
    assert all(i.startswith("batch_req_") for i in ids)
    assert (await batches.get(ids[0])).status == "queued"

    submitted = await batches.submit_pending()
    assert submitted.submitted == 2 and len(submitted.batches) == 1  # one batch per provider and model
    assert [c.path for c in fake.calls] == ["/v1/files", "/v1/batches"]
    upload = fake.calls[0].raw.decode()
    assert f'"custom_id":"{ids[0]}"' in upload and '"url":"/v1/chat/completions"' in upload
    assert (await batches.get(ids[0])).status == "submitted"

    polled = await batches.poll()
    assert (polled.checked, polled.completed, polled.failed, polled.events_recorded) == (1, 2, 0, 2)
    info = await batches.get(ids[0])
    assert info.status == "completed" and info.completed_at
    answer = openai.types.chat.ChatCompletion.model_validate(info.result)
    assert answer.choices[0].message.content == "echo: write a docstring"

    rows = {r["request_id"]: r for r in await events(svc)}
    assert set(rows) == set(ids)
    row = rows[ids[0]]
    expected = batch_cost(svc, GPT, info.result or {}, openai_format)
    assert expected and row["batch"] == 1 and row["source"] == "gateway" and row["status"] == "ok"
    assert Decimal(row["cost_usd"]) == expected == info.cost_usd
    full = svc.catalog.cost(GPT, openai_format.usage_of(info.result or {}).tokens()).usd
    assert expected * 2 == full  # the batch discount is half price for OpenAI
    assert row["team"] == "docs" and row["input_tokens"] == answer.usage.prompt_tokens  # type: ignore[union-attr]
    assert polled.cost_usd == sum(Decimal(r["cost_usd"]) for r in rows.values())
    sample = await svc.store.fetch("SELECT * FROM samples WHERE event_id = ?", (row["id"],))
    assert sample[0]["prompt"] == "write a docstring"  # the task type captures samples


@pytest.mark.anyio
async def test_anthropic_round_trip(svc: PrismService, batches: BatchService, fake: FakeProviders) -> None:
    rid = await batches.enqueue(anthropic_body("summarise the changelog [cached]"), model=CLAUDE, task_type=TASK,
                                client_format="anthropic", api_key_id="key_1", user="ana")
    assert (await batches.submit_pending()).submitted == 1
    create = fake.calls[-1]
    assert create.path == "/v1/messages/batches" and create.headers["x-api-key"] == KEYS["anthropic"]
    assert create.body["requests"][0]["custom_id"] == rid
    await batches.poll()
    info = await batches.get(rid, api_key_id="key_1")
    message = anthropic.types.Message.model_validate(info.result)
    assert message.content[0].text == "echo: summarise the changelog [cached]"  # type: ignore[union-attr]
    row = (await events(svc))[0]
    assert row["api_key_id"] == "key_1" and row["user"] == "ana" and row["batch"] == 1
    assert row["cached_input_tokens"] > 0  # the cache read is costed at its own (batch) price
    assert Decimal(row["cost_usd"]) == batch_cost(svc, CLAUDE, info.result or {}, anthropic_format)
    with pytest.raises(InvalidInput, match="no batch request"):  # another key cannot read it
        await batches.get(rid, api_key_id="key_2")


@pytest.mark.anyio
async def test_cross_format_openai_client_on_anthropic(svc: PrismService, batches: BatchService,
                                                       fake: FakeProviders) -> None:
    client_body = {"model": "auto", "messages": [{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "explain this module"}],
                   "max_tokens": 300, "stream": True, "stream_options": {"include_usage": True}}
    rid = await batches.enqueue_client(client_body, client_format="openai", model=CLAUDE, task_type=TASK)
    await batches.submit_pending()
    params = fake.calls[-1].body["requests"][0]["params"]
    assert params["model"] == CLAUDE and params["system"] and "stream" not in params
    await batches.poll()
    info = await batches.get(rid)
    assert info.status == "completed" and info.client_format == "openai"
    answer = openai.types.chat.ChatCompletion.model_validate(info.result)  # OpenAI shape, from Claude
    assert answer.choices[0].message.content == "echo: explain this module"
    assert answer.model == CLAUDE
    row = (await events(svc))[0]
    assert row["model"] == CLAUDE and row["provider"] == "anthropic"
    assert row["input_tokens"] == answer.usage.prompt_tokens  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_cross_format_anthropic_client_on_openai(batches: BatchService, fake: FakeProviders) -> None:
    client_body = {"model": "auto", "max_tokens": 100, "system": "be brief",
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "list the flags"}]}]}
    rid = await batches.enqueue_client(client_body, client_format="anthropic", model=GPT, task_type=TASK)
    await batches.submit_pending()
    await batches.poll()
    info = await batches.get(rid)
    message = anthropic.types.Message.model_validate(info.result)  # Anthropic shape, from GPT
    assert message.content[0].text == "echo: list the flags" and message.model == GPT  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_errored_lines_are_recorded_as_failures(svc: PrismService, batches: BatchService) -> None:
    ok = await batches.enqueue(openai_body("fine"), model=GPT, task_type=TASK, client_format="openai")
    limited = await batches.enqueue(openai_body("too many [429]"), model=GPT, task_type=TASK,
                                    client_format="openai")
    broken = await batches.enqueue(anthropic_body("oops [500]"), model=CLAUDE, task_type=TASK,
                                   client_format="openai")
    submitted = await batches.submit_pending()
    assert submitted.submitted == 3 and len(submitted.batches) == 2
    polled = await batches.poll()
    assert (polled.completed, polled.failed, polled.events_recorded) == (1, 2, 3)
    failed = await batches.get(limited)
    assert failed.status == "failed" and failed.result is None
    assert failed.error and failed.error["error"]["code"] == "rate_limit_exceeded"  # OpenAI error shape
    assert failed.error_message and "Rate limit" in failed.error_message
    cross = await batches.get(broken)  # an Anthropic error, told to an OpenAI client in its shape
    assert cross.status == "failed" and cross.error and cross.error["error"]["type"] == "server_error"
    rows = {r["request_id"]: r for r in await events(svc)}
    assert rows[ok]["status"] == "ok"
    assert rows[limited]["status"] == "rate_limited" and rows[limited]["batch"] == 1
    assert rows[broken]["status"] == "provider_error"
    assert Decimal(rows[limited]["cost_usd"]) == 0


@pytest.mark.anyio
async def test_polling_an_unfinished_batch(svc: PrismService, batches: BatchService, fake: FakeProviders) -> None:
    fake.batch_polls_until_done = 2
    rid = await batches.enqueue(anthropic_body("later"), model=CLAUDE, task_type=TASK, client_format="anthropic")
    await batches.submit_pending()
    for _ in range(2):
        polled = await batches.poll()
        assert (polled.checked, polled.still_running, polled.completed) == (1, 1, 0)
        assert (await batches.get(rid)).status == "submitted"
    assert not await events(svc)
    polled = await batches.poll()
    assert (polled.still_running, polled.completed) == (0, 1)
    assert (await batches.poll()).checked == 0  # nothing open any more


@pytest.mark.anyio
async def test_poll_is_idempotent(svc: PrismService, batches: BatchService) -> None:
    rid = await batches.enqueue(openai_body("once"), model=GPT, task_type=TASK, client_format="openai")
    await batches.submit_pending()
    first = await batches.poll()
    assert first.events_recorded == 1
    assert (await batches.poll()).checked == 0
    # A poller that died after recording but before settling the row: the next poll settles it, recording nothing.
    await svc.store.transaction(lambda conn: conn.execute(
        "UPDATE batch_requests SET status = 'submitted', result = NULL, completed_at = NULL WHERE id = ?", (rid,)))
    again = await batches.poll()
    assert (again.completed, again.events_recorded, again.cost_usd) == (1, 0, 0)
    assert len(await events(svc)) == 1
    assert (await batches.get(rid)).status == "completed"
    # Two pollers at once settle it once.
    await svc.store.transaction(lambda conn: conn.execute(
        "UPDATE batch_requests SET status = 'submitted' WHERE id = ?", (rid,)))
    both = await asyncio.gather(batches.poll(), BatchService(svc).poll())
    assert sum(p.events_recorded for p in both) == 0 and len(await events(svc)) == 1


@pytest.mark.anyio
async def test_submit_twice_sends_once(batches: BatchService, fake: FakeProviders) -> None:
    await batches.enqueue(openai_body("one"), model=GPT, task_type=TASK, client_format="openai")
    first, second = await asyncio.gather(batches.submit_pending(), batches.submit_pending())
    assert first.submitted + second.submitted == 1
    assert len([c for c in fake.calls if c.path == "/v1/batches"]) == 1
    assert (await batches.submit_pending()).submitted == 0


@pytest.mark.anyio
async def test_cancel(svc: PrismService, batches: BatchService, fake: FakeProviders) -> None:
    queued = await batches.enqueue(openai_body("never sent"), model=GPT, task_type=TASK, client_format="openai")
    info = await batches.cancel(queued)
    assert info.status == "cancelled" and info.completed_at
    assert (await batches.submit_pending()).submitted == 0 and not fake.calls
    with pytest.raises(InvalidInput, match="already cancelled"):
        await batches.cancel(queued)

    # A request already sent: its whole provider batch is cancelled once no request in it is wanted.
    fake.batch_polls_until_done = 5
    sent = await batches.enqueue(anthropic_body("sent"), model=CLAUDE, task_type=TASK, client_format="anthropic")
    await batches.submit_pending()
    assert (await batches.cancel(sent)).status == "cancelled"
    assert fake.calls[-1].path.endswith("/cancel")
    polled = await batches.poll()  # the provider batch ends as canceled; nothing was answered, nothing is billed
    assert polled.checked == 1 and polled.events_recorded == 0
    assert (await batches.get(sent)).completed_at and (await batches.poll()).checked == 0

    # One of two sent requests cancelled: the batch runs on; the cancelled answer is recorded (it is billed)
    # with status cancelled, and not kept as a result.
    fake.batch_polls_until_done = 0
    keep = await batches.enqueue(openai_body("keep"), model=GPT, task_type=TASK, client_format="openai")
    drop = await batches.enqueue(openai_body("drop"), model=GPT, task_type=TASK, client_format="openai")
    await batches.submit_pending()
    calls = len(fake.calls)
    await batches.cancel(drop)
    assert len(fake.calls) == calls  # the provider batch is not cancelled
    polled = await batches.poll()
    assert polled.completed == 1 and polled.events_recorded == 2
    dropped = await batches.get(drop)
    assert dropped.status == "cancelled" and dropped.result is None and dropped.cost_usd
    rows = {r["request_id"]: r["status"] for r in await events(svc)}
    assert rows == {keep: "ok", drop: "cancelled"}


@pytest.mark.anyio
async def test_refusals_and_config(svc: PrismService, batches: BatchService, home: Path) -> None:
    with pytest.raises(InvalidInput, match="batch API"):
        await batches.enqueue({"contents": []}, model="gemini-2.5-flash", task_type=TASK, client_format="openai")
    assert not batches.supports("gemini-2.5-flash") and batches.supports(GPT) and batches.supports(CLAUDE)
    with pytest.raises(InvalidInput, match="task type"):
        await batches.enqueue(openai_body("x"), model=GPT, task_type="nope", client_format="openai")
    with pytest.raises(InvalidInput, match="client_format"):
        await batches.enqueue(openai_body("x"), model=GPT, task_type=TASK, client_format="gemini")
    with pytest.raises(InvalidInput, match="messages"):
        await batches.enqueue({"model": GPT}, model=GPT, task_type=TASK, client_format="openai")
    assert batches.wants_batch(TASK) and batches.wants_batch("code_review", "1")
    assert not batches.wants_batch("code_review", None) and not batches.wants_batch("code_review", "0")
    assert batches.interval == 5
    # A request stranded on a provider without a batch API (the config changed after it was queued) fails.
    await svc.store.transaction(lambda conn: conn.execute(
        "INSERT INTO batch_requests (id, task_type, model, provider, client_format, body, status, created_at) "
        "VALUES ('batch_req_x', ?, 'gemini-2.5-flash', 'google', 'anthropic', '{}', 'queued', '2026-01-01')", (TASK,)))
    assert (await batches.submit_pending()).submitted == 0
    stranded = await batches.get("batch_req_x")
    assert stranded.status == "failed" and stranded.error and stranded.error["type"] == "error"
    assert stranded.error_message and "no batch API" in stranded.error_message
    (home / "config.toml").write_text(_config_bad())
    bad = await PrismService.open(Settings.from_env({}, home=home))
    try:
        with pytest.raises(ConfigError, match="unknown task types"):
            BatchService(bad)
    finally:
        await bad.close()


def _config_bad() -> str:
    return '[batch]\ntask_types = ["no_such_task"]\n'


@pytest.mark.anyio
async def test_transient_submit_failure_keeps_requests_queued(svc: PrismService, batches: BatchService,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rid = await batches.enqueue(openai_body("x"), model=GPT, task_type=TASK, client_format="openai")
    monkeypatch.setitem(batches.providers.endpoints, "openai", batches.providers.endpoints["openai"].__class__(
        batches.providers.endpoints["openai"].provider, "sk-wrong"))
    r = await batches.submit_pending()
    assert (r.submitted, r.requeued, r.failed) == (0, 1, 0) and "401" in r.errors[0]
    assert (await batches.get(rid)).status == "queued"


@pytest.mark.anyio
async def test_background_loop(svc: PrismService, batches: BatchService) -> None:
    rid = await batches.enqueue(openai_body("loop"), model=GPT, task_type=TASK, client_format="openai")
    stop = asyncio.Event()
    task = asyncio.create_task(run_batch_loop(batches, 0.05, stop))
    for _ in range(200):
        if (await batches.get(rid)).status == "completed":
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert (await batches.get(rid)).status == "completed"


# ==================================================================== CLI
def test_cli_smoke(home: Path, fake: FakeProviders, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    if "mcp_prism.cli_batch" not in cli.LOOP_CLI_MODULES:  # until cli.py lists it
        monkeypatch.setattr(cli, "LOOP_CLI_MODULES", (*cli.LOOP_CLI_MODULES, "mcp_prism.cli_batch"))

    async def enqueue() -> str:
        service = await PrismService.open(Settings.from_env({}, home=home))
        try:
            return await BatchService(service).enqueue(openai_body("from the cli"), model=GPT, task_type=TASK,
                                                       client_format="openai")
        finally:
            await service.close()

    rid = asyncio.run(enqueue())

    def run(*args: str) -> str:
        assert cli.main([*args, "--home", str(home)]) == 0
        return capsys.readouterr().out

    assert rid in run("batch", "list") and "queued" in run("batch", "status", rid)
    assert "1 request(s) submitted" in run("batch", "submit")
    assert "1 answered" in run("batch", "poll")
    status = json.loads(run("batch", "status", rid, "--json"))
    assert status["status"] == "completed" and status["result"]["choices"][0]["message"]["content"] == \
        "echo: from the cli"
    assert Decimal(status["cost_usd"]) > 0
    listing = json.loads(run("batch", "list", "--status", "completed", "--json"))
    assert listing["counts"] == {"completed": 1} and listing["requests"][0]["id"] == rid
    assert cli.main(["batch", "cancel", rid, "--home", str(home)]) == 2
    assert "already completed" in capsys.readouterr().err


@pytest.mark.anyio
async def test_a_malformed_usage_block_in_a_batch_result_is_recorded_as_such(svc: PrismService,
                                                                             batches: BatchService) -> None:
    """Issue 12 case 1, batch side: the bad count never reaches the store; the event says why."""
    ok = await batches.enqueue(openai_body("fine"), model=GPT, task_type=TASK, client_format="openai")
    bad = await batches.enqueue(openai_body('bad [usage=-5000]'), model=GPT, task_type=TASK, client_format="openai")
    await batches.submit_pending()
    assert (await batches.poll()).events_recorded == 2
    rows = {r["request_id"]: r for r in await events(svc)}
    assert rows[ok]["status"] == "ok" and rows[ok]["input_tokens"] > 0
    assert rows[bad]["status"] == "invalid_usage" and rows[bad]["input_tokens"] == 0
    assert Decimal(rows[bad]["cost_usd"]) >= 0
