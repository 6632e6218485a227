"""A fast fake OpenAI- and Anthropic-compatible upstream for gateway benchmarks.

    python benchmarks/fake_upstream.py --port 18001

Serves over HTTP/1.1 keep-alive:
- `POST /v1/chat/completions` (and `/chat/completions`): non-streaming, one fixed, realistic
  `chat.completion` JSON with usage; `"stream": true`, chunked `text/event-stream`, a role chunk, 20 content
  chunks, a finish chunk, a usage chunk when `stream_options.include_usage` is true, then `data: [DONE]`;
- `POST /v1/responses` (OpenAI's Responses API): a `response` object, or streamed, the events OpenAI sends in
  their order (`response.created`, `response.in_progress`, `response.output_item.added`,
  `response.content_part.added`, 20 `response.output_text.delta`, the `...done` events, `response.completed`
  with usage), each `event: TYPE` + `data: {..., "sequence_number": n}`, as `tests/fakes.py` does;
- `POST /v1/messages` (Anthropic's Messages API): a `message` with usage, or streamed, `message_start`,
  `content_block_start`, `ping`, 20 `content_block_delta`, `content_block_stop`, `message_delta` (usage),
  `message_stop`.
Every streamed response goes out in one write.
Also answers `GET /v1/models` and `GET /healthz`. No sleeps: the point is to measure the gateway,
so every response is pre-rendered bytes and the per-request work is one parse plus one write.
Uses a raw asyncio Protocol with httptools (uvloop when installed); ~10k+ req/s on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time

import httptools

MODEL = "gpt-5-nano-2025-08-07"
CREATED = int(time.time())
TEXT = ("Category: hardware. Priority: medium. The printer on floor 3 has a recurring paper jam; "
        "route to facilities IT and suggest a maintenance check.")
WORDS = TEXT.split(" ")
PROMPT_TOKENS, COMPLETION_TOKENS = 27, 21
STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')


def _usage() -> dict:
    return {
        "prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _response(status: bytes, ctype: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + ctype + b"\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: keep-alive\r\n\r\n" + body)


def _completion() -> bytes:
    body = {
        "id": "chatcmpl-fake0000000000000000000000", "object": "chat.completion", "created": CREATED,
        "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT, "refusal": None,
                                             "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(), "service_tier": "default", "system_fingerprint": None,
    }
    return _response(b"200 OK", b"application/json", json.dumps(body).encode())


def _stream(include_usage: bool) -> bytes:
    base = {"id": "chatcmpl-fake0000000000000000000000", "object": "chat.completion.chunk", "created": CREATED,
            "model": MODEL, "service_tier": "default", "system_fingerprint": None}
    usage = None
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                    "logprobs": None, "finish_reason": None}], "usage": usage}]
    for i, word in enumerate(WORDS[:20]):  # 20 content chunks; the last one carries the rest of the text
        text = (" " if i else "") + (word if i < 19 else " ".join(WORDS[19:]))
        events.append({**base, "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None,
                                            "finish_reason": None}], "usage": usage})
    events.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
                   "usage": usage})
    if include_usage:
        events.append({**base, "choices": [], "usage": _usage()})
    payloads = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    payloads.append(b"data: [DONE]\n\n")
    # One HTTP chunk per SSE event, as real upstreams send them; the whole response goes out in one write.
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n\r\n"
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\nconnection: keep-alive\r\n\r\n")
    return head + chunks


def _sse(head_events: list[tuple[str | None, dict]]) -> bytes:
    payloads = [(f"event: {kind}\n".encode() if kind else b"") + b"data: "
                + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for kind, e in head_events]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in payloads) + b"0\r\n\r\n"
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\nconnection: keep-alive\r\n\r\n")
    return head + chunks


def _pieces() -> list[str]:
    return [(" " if i else "") + (w if i < 19 else " ".join(WORDS[19:])) for i, w in enumerate(WORDS[:20])]


def _responses(stream: bool) -> bytes:
    """OpenAI's Responses API, as `providers/formats/responses.py` and tests/fakes.py read and write it."""
    usage = {"input_tokens": PROMPT_TOKENS, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": COMPLETION_TOKENS, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}
    item = {"id": "msg_fake0000", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT}]}

    def envelope(status: str, output: list, use: dict | None) -> dict:
        return {"id": "resp_fake0000", "object": "response", "created_at": CREATED, "status": status,
                "background": False, "error": None, "incomplete_details": None, "instructions": None,
                "max_output_tokens": 64, "model": MODEL, "output": output, "parallel_tool_calls": True,
                "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
                "service_tier": "default", "store": False, "temperature": 1.0,
                "text": {"format": {"type": "text"}, "verbosity": "medium"}, "tool_choice": "auto", "tools": [],
                "top_p": 1.0, "truncation": "disabled", "usage": use, "user": None, "metadata": {}}

    if not stream:
        return _response(b"200 OK", b"application/json", json.dumps(envelope("completed", [item], usage)).encode())
    seq = iter(range(1000))

    def ev(kind: str, **fields: object) -> tuple[str, dict]:
        return kind, {"type": kind, **fields, "sequence_number": next(seq)}

    ref = {"item_id": item["id"], "output_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    events = [ev("response.created", response=envelope("in_progress", [], None)),
              ev("response.in_progress", response=envelope("in_progress", [], None)),
              ev("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []}),
              ev("response.content_part.added", **ref, content_index=0, part=part)]
    events += [ev("response.output_text.delta", **ref, content_index=0, delta=p, logprobs=[]) for p in _pieces()]
    events += [ev("response.output_text.done", **ref, content_index=0, text=TEXT, logprobs=[]),
               ev("response.content_part.done", **ref, content_index=0, part={**part, "text": TEXT}),
               ev("response.output_item.done", output_index=0, item=item),
               ev("response.completed", response=envelope("completed", [item], usage))]
    return _sse(events)


ANTHROPIC_MODEL = "claude-opus-4-8"


def _messages(stream: bool) -> bytes:
    """Anthropic's Messages API (what Claude Code is answered with)."""
    usage = {"input_tokens": 3, "cache_creation_input_tokens": 2400, "cache_read_input_tokens": 9000,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2400},
             "output_tokens": COMPLETION_TOKENS, "service_tier": "standard"}
    head = {"id": "msg_fake0000", "type": "message", "role": "assistant", "model": ANTHROPIC_MODEL}
    if not stream:
        body = {**head, "content": [{"type": "text", "text": TEXT}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": usage}
        return _response(b"200 OK", b"application/json", json.dumps(body).encode())
    start = {**head, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str | None, dict]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text",
                                                                                            "text": ""}}),
        ("ping", {"type": "ping"})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "text_delta", "text": p}}) for p in _pieces()]
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": COMPLETION_TOKENS}}),
               ("message_stop", {"type": "message_stop"})]
    return _sse(events)


COMPLETION = _completion()
RESPONSES, RESPONSES_STREAM = _responses(False), _responses(True)
MESSAGES, MESSAGES_STREAM = _messages(False), _messages(True)
STREAM = _stream(include_usage=False)
STREAM_USAGE = _stream(include_usage=True)
MODELS = _response(b"200 OK", b"application/json", json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "fake"}]}).encode())
HEALTH = _response(b"200 OK", b"application/json", b'{"status":"ok"}')
NOT_FOUND = _response(b"404 Not Found", b"application/json",
                      b'{"error":{"message":"not found","type":"invalid_request_error"}}')


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("body", "parser", "transport", "url")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_response(b"400 Bad Request", b"text/plain", b"bad request"))
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        method = self.parser.get_method()
        if method == b"POST" and path.endswith(b"/chat/completions"):
            body = b"".join(self.body)
            out = (STREAM_USAGE if USAGE_RE.search(body) else STREAM) if STREAM_RE.search(body) else COMPLETION
        elif method == b"POST" and path.endswith(b"/responses"):
            out = RESPONSES_STREAM if STREAM_RE.search(b"".join(self.body)) else RESPONSES
        elif method == b"POST" and path.endswith(b"/messages"):
            out = MESSAGES_STREAM if STREAM_RE.search(b"".join(self.body)) else MESSAGES
        elif method == b"GET" and path.endswith(b"/models"):
            out = MODELS
        elif method == b"GET" and path in (b"/healthz", b"/health"):
            out = HEALTH
        else:
            out = NOT_FOUND
        self.transport.write(out)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096, reuse_address=True)
    print(f"fake upstream listening on http://{host}:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18001)
    args = ap.parse_args()
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
