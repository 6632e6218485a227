"""Usage blocks from upstreams are checked before anything trusts them.

A provider (or a compatible server, or a proxy in between) can send a count that is a string, a
fraction, negative or absurd (`"prompt_tokens": "many"`, `1.5e300`, `10**20`). Such a count must
never reach pricing, the store or a budget: each format's usage parser is wrapped in
`checked_usage`, which drops the bad counts (the parser reads a missing count as 0) and marks the
result `invalid`; the gateway then records the request as `invalid_usage` with estimated tokens.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from mcp_prism.providers.wire import Usage

# Per request, far above any model's context plus output: a larger count is garbage, not a bill.
MAX_TOKENS = 100_000_000


def token_count(v: Any) -> int | None:
    """`v` as a token count, or None when it is not one. JSON `12.0` is accepted as 12."""
    if type(v) is int:
        return v if 0 <= v <= MAX_TOKENS else None
    if type(v) is float and v.is_integer() and 0 <= v <= MAX_TOKENS:
        return int(v)
    return None


def _is_count(key: str) -> bool:
    return "tokens" in key or key.endswith("Count")  # OpenAI/Anthropic `*_tokens`, Gemini `*TokenCount`


def sane_block(raw: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A copy of a usage block without its bad counts (nested blocks too), and whether any was bad.
    Fields that are not counts (e.g. `service_tier`) pass unchanged; a null count means none."""
    out: dict[str, Any] = {}
    bad = False
    for k, v in raw.items():
        # an object where a count belongs (`"input_tokens": {...}`) is a bad count, not a nested block
        if isinstance(v, Mapping) and not (isinstance(k, str) and k.endswith(("tokens", "Count"))):
            v, inner = sane_block(v)
            bad = bad or inner
        elif isinstance(k, str) and k.lower().endswith("details") and not isinstance(v, (list, type(None))):
            bad = True  # e.g. "prompt_tokens_details": "x" where an object of counts belongs
            continue
        elif v is not None and isinstance(k, str) and _is_count(k):
            n = token_count(v)
            if n is None:
                bad = True
                continue
            v = n
        out[k] = v
    return out, bad


def checked_usage(parse: Callable[[Any], Usage]) -> Callable[[Any], Usage]:
    """Wrap a format's parser of a usage block (or of a body holding one): bad counts are dropped and the
    Usage is marked invalid; a block whose counts do not add up (cached reads above the prompt) too."""

    @functools.wraps(parse)
    def wrapper(raw: Any) -> Usage:
        if not isinstance(raw, Mapping):
            return parse(raw)
        clean, bad = sane_block(raw)
        u = parse(clean)
        if bad or u.tokens().problems():
            u.invalid = True
        return u

    return wrapper
