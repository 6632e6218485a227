"""Wire formats: each module translates one provider API to and from the neutral model in `wire.py`.

Every format module exposes the same interface: `parse_request`, `build_request`, `parse_response`,
`render_response`, `usage_of`, `StreamDecoder`, `StreamEncoder`, `parse_error`, `render_error`.
The small helpers below are shared by them; they are pure (no I/O).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

from mcp_prism.providers.wire import WireError

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
dumps = _encoder.encode  # compact JSON, the same bytes the providers send


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def now() -> int:
    return int(time.time())


def bad_request(message: str) -> NoReturn:
    raise WireError(400, "invalid_request", message)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a token count


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup that works for plain dicts as well as httpx.Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` (OpenAI) or `retry-after` (seconds or an HTTP date)."""
    ms = header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(float(ms) / 1000.0, 0.0)
        except ValueError:
            pass
    value = header(headers, "retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def body_text(body: bytes, limit: int = 500) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def last_user_text(messages: Any, *, limit: int | None = None, sep: str = " ") -> str:
    """The text of the last user turn of an OpenAI- or Anthropic-shaped conversation; a user turn with no
    text (only tool results) is skipped, since tool results are not the task."""
    if not isinstance(messages, list):
        return ""
    for m in reversed(messages):
        if not isinstance(m, dict) or m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            return content[:limit]
        if isinstance(content, list):
            texts = [p["text"] for p in content
                     if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)]
            if texts:
                return sep.join(texts)[:limit]
    return ""
