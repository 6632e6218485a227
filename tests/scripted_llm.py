"""A scripted OpenAI-compatible model on 127.0.0.1 that drives an agent (OpenCode) through mcp_prism's
tools: while the request offers a prism tool the script wants and the conversation has not called it
yet, it streams that tool call; otherwise it streams a short text answer. Speaks Chat Completions
with SSE exactly as OpenCode's `@ai-sdk/openai-compatible` provider reads it (OpenCode always streams).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

# (tool name as OpenCode exposes it, arguments) in the order the script calls them
Step = tuple[str, dict[str, Any]]


class ScriptedLLM:
    def __init__(self, steps: Callable[[dict[str, Any]], list[Step]], answer: str = "Done: no blocking issues.",
                 ) -> None:
        self.steps = steps
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.port = 0

    # ------------------------------------------------------------ the script
    def reply(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | str:
        offered = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        called = {c.get("function", {}).get("name") for m in body.get("messages", []) if m.get("role") == "assistant"
                  for c in m.get("tool_calls") or []}
        for name, args in self.steps(body):
            if name in offered and name not in called:
                return name, args
        return self.answer if offered else "Code review"  # a request without tools is OpenCode's title request

    # ------------------------------------------------------------ ASGI
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if scope["path"].endswith("/models"):
            await _send(send, 200, "application/json", json.dumps({"object": "list", "data": [
                {"id": "scripted", "object": "model", "created": 0, "owned_by": "test"}]}).encode())
            return
        body = json.loads(raw or b"{}")
        self.requests.append(body)
        out = self.reply(body)
        model = body.get("model", "scripted")
        usage = {"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280}
        chunks: list[dict[str, Any]] = []
        base = {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}
        if isinstance(out, tuple):
            name, args = out
            call_id = f"call_{len(self.requests)}"
            chunks.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]},
                "finish_reason": None}]})
            text_args = json.dumps(args)
            for i in range(0, len(text_args), 16):
                chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                    {"index": 0, "function": {"arguments": text_args[i:i + 16]}}]}, "finish_reason": None}]})
            chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
        else:
            chunks.append({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": None}]})
            for word in out.split(" "):
                chunks.append({**base, "choices": [{"index": 0, "delta": {"content": word + " "},
                                                    "finish_reason": None}]})
            chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if isinstance(out, tuple) else out}
            if isinstance(out, tuple):
                message["tool_calls"] = [{"id": "call_1", "type": "function",
                                          "function": {"name": out[0], "arguments": json.dumps(out[1])}}]
            await _send(send, 200, "application/json", json.dumps({
                "id": base["id"], "object": "chat.completion", "created": base["created"], "model": model,
                "choices": [{"index": 0, "message": message,
                             "finish_reason": "tool_calls" if isinstance(out, tuple) else "stop"}],
                "usage": usage}).encode())
            return
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        payload = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        await _send(send, 200, "text/event-stream", payload)


async def _send(send: Any, status: int, ctype: str, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype.encode())]})
    await send({"type": "http.response.body", "body": body})


@contextmanager
def run_scripted_llm(llm: ScriptedLLM, port: int) -> Iterator[ScriptedLLM]:
    server = uvicorn.Server(uvicorn.Config(llm, host="127.0.0.1", port=port, log_config=None, access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("scripted LLM did not start")
        time.sleep(0.02)
    llm.port = port
    try:
        yield llm
    finally:
        server.should_exit = True
        thread.join(timeout=10)
