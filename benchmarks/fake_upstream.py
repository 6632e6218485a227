"""A fast fake OpenAI-compatible upstream for gateway benchmarks.

    python benchmarks/fake_upstream.py --port 18001

Serves `POST /v1/chat/completions` (and `/chat/completions`) over HTTP/1.1 keep-alive:
- non-streaming: one fixed, realistic `chat.completion` JSON with usage;
- `"stream": true`: chunked `text/event-stream`, a role chunk, 20 content chunks, a finish chunk,
  a usage chunk when `stream_options.include_usage` is true, then `data: [DONE]` — all in one write.
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


COMPLETION = _completion()
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
