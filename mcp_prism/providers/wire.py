"""The neutral chat model every wire format translates to and from.

The gateway forwards a request unchanged (but for the model name) when the client and the provider
speak the same format; only when routing crosses formats (an OpenAI client sent to Claude, an
Anthropic client sent to Gemini) does a request go client format -> `ChatRequest` -> provider format,
and the answer come back the same way. Streams translate event by event through `StreamEvent`s.

Pure data: no I/O. Token counts follow `core.pricing.TokenUsage`: `input_tokens` includes cached
reads and cache writes, `output_tokens` includes reasoning tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mcp_prism.core.pricing import TokenUsage

Role = Literal["user", "assistant"]
StopReason = Literal["end", "length", "tool_use", "stop_sequence", "content_filter", "error"]


# ---------------------------------------------------------------- content parts
@dataclass(slots=True)
class Text:
    text: str
    cache_control: dict[str, Any] | None = None  # Anthropic prompt-caching marker, kept across hops


@dataclass(slots=True)
class Image:
    media_type: str | None = None  # e.g. image/png (with `data`)
    data: str | None = None  # base64, no data: prefix
    url: str | None = None  # remote image


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


@dataclass(slots=True)
class ToolResult:
    tool_call_id: str
    content: list[Text | Image]
    is_error: bool = False
    name: str | None = None  # Gemini needs the function name beside the result


@dataclass(slots=True)
class Thinking:
    """Reasoning a provider returned (Anthropic thinking blocks, OpenAI Responses reasoning items). Dropped
    when crossing to a format with no place for it; `signature` lets Anthropic verify it on the next turn,
    `encrypted` (a Responses item's `encrypted_content`, with its `id`) lets OpenAI resume it: each is
    meaningful to its own provider only."""

    text: str
    signature: str | None = None
    redacted: bool = False
    encrypted: str | None = None
    id: str | None = None


Part = Text | Image | ToolCall | ToolResult | Thinking


@dataclass(slots=True)
class Message:
    role: Role  # tool results travel in a user message, as Anthropic and Gemini have them
    content: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None
    parameters: dict[str, Any]  # JSON Schema of the arguments


# "auto" | "none" | "required" (any tool) | a tool name (that tool)
ToolChoice = str


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    stream_usage: bool = False  # OpenAI stream_options.include_usage: the client wants the usage chunk
    user: str | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None  # OpenAI-style {"type": "json_object" | "json_schema", ...}
    reasoning_effort: str | None = None  # low | medium | high, when the client asked for reasoning


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached reads and cache writes included
    output_tokens: int = 0  # all completion tokens, reasoning included
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the one-hour part of cache_write_tokens (Anthropic)
    invalid: bool = False  # the provider's block held a bad count (providers/usage_check.py): never trust it

    def tokens(self) -> TokenUsage:
        return TokenUsage(self.input_tokens, self.cached_input_tokens, self.cache_write_tokens,
                          self.output_tokens, self.reasoning_tokens, self.cache_write_1h_tokens)


@dataclass(slots=True)
class ChatResponse:
    id: str
    model: str
    content: list[Text | ToolCall | Thinking]
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None
    created: int | None = None  # unix seconds

    def text(self) -> str:
        """The answer's text parts, joined (tool calls and reasoning left out)."""
        return "".join(p.text for p in self.content if isinstance(p, Text))


# ---------------------------------------------------------------- stream events
@dataclass(slots=True)
class StreamStart:
    id: str
    model: str
    usage: Usage | None = None  # Anthropic reports input tokens at the start


@dataclass(slots=True)
class TextDelta:
    index: int  # content block index, counted over the whole response
    text: str


@dataclass(slots=True)
class ThinkingDelta:
    index: int
    text: str
    signature: str | None = None


@dataclass(slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(slots=True)
class ToolArgsDelta:
    index: int
    arguments: str  # a fragment of the JSON text


@dataclass(slots=True)
class BlockStop:
    index: int


@dataclass(slots=True)
class StreamEnd:
    stop_reason: StopReason
    usage: Usage | None
    stop_sequence: str | None = None


StreamEvent = StreamStart | TextDelta | ThinkingDelta | ToolCallStart | ToolArgsDelta | BlockStop | StreamEnd


# ---------------------------------------------------------------- errors
ErrorKind = Literal["invalid_request", "authentication", "permission", "not_found", "rate_limited",
                    "overloaded", "timeout", "provider_error", "request_too_large"]

STATUS_OF_KIND: dict[str, int] = {
    "invalid_request": 400, "authentication": 401, "permission": 403, "not_found": 404,
    "request_too_large": 413, "rate_limited": 429, "provider_error": 500, "timeout": 504, "overloaded": 529,
}


@dataclass(slots=True)
class WireError(Exception):
    """An error to hand to the client in its own format, with the provider's status code."""

    status: int
    kind: ErrorKind
    message: str
    retry_after: float | None = None  # seconds, from the provider's retry-after header
    provider_type: str | None = None  # the provider's own error type string, when it gave one

    def __str__(self) -> str:
        return f"{self.status} {self.kind}: {self.message}"


def kind_for_status(status: int) -> ErrorKind:
    return {400: "invalid_request", 401: "authentication", 403: "permission", 404: "not_found",
            408: "timeout", 413: "request_too_large", 422: "invalid_request", 429: "rate_limited",
            503: "overloaded", 504: "timeout", 529: "overloaded"}.get(status, "provider_error" if status >= 500
                                                                         else "invalid_request")
