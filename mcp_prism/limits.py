"""Bounds on what callers may send, shared by the adapters (MCP tools, CLI arguments) and the service.

Every string has a length limit, every integer a range SQLite can store, every number is finite and every flag a
real boolean: a 1 MB user id, a token count of 10^30 or `dry_run = "yes"` is refused with a message naming the
argument, never stored, never a crash. Echoed input is cut (`clip`), so an error cannot carry a megabyte back.

`harden_tools(mcp)` applies these bounds to the arguments of every registered MCP tool (a tool's own, tighter
constraints still apply); `check_text` is the service-side check for values that reach the store from any adapter.
"""

from __future__ import annotations

import json
import types
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import AfterValidator, Field, Strict, create_model

from mcp_prism.errors import InvalidInput

NAME_MAX = 256  # ids, names, authors, subjects: anything used as a key or shown in a table
TEXT_MAX = 10_000  # reasons, descriptions, notes, evidence
PATH_MAX = 4096  # Linux PATH_MAX
CONTENT_MAX = 4_000_000  # captured prompts and responses (about a million tokens)
INT_MAX = 10**15  # far inside SQLite's signed 64-bit INTEGER; no count or id mcp_prism keeps comes near it
MONEY_MAX = Decimal(10**12)  # USD
ITEMS_MAX = 1000  # list arguments
JSON_MAX = 100_000  # a JSON object argument (rules, checks, settings), serialised
ECHO_MAX = 120  # characters of a caller's value quoted back in an error

# Free-text arguments (longer limit) and captured content, by argument name; every other string is a name.
_TEXT_ARGS = frozenset({"description", "reason", "evidence", "note"})
_CONTENT_ARGS = frozenset({"prompt", "response"})
_PATH_ARGS = frozenset({"path", "from_file", "file", "folder"})


def clip(value: object, limit: int = ECHO_MAX) -> str:
    """`repr` of a caller's value, cut to `limit` characters (errors quote input; they must not carry it all)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def clip_message(message: str, limit: int = 4000) -> str:
    """An error message cut to `limit` characters (a last guard: messages quote names the caller chose)."""
    return message if len(message) <= limit else message[:limit] + f"... ({len(message) - limit} more characters)"


def string_limit(name: str) -> int:
    if name in _CONTENT_ARGS:
        return CONTENT_MAX
    if name in _PATH_ARGS:
        return PATH_MAX
    if name in _TEXT_ARGS:
        return TEXT_MAX
    return NAME_MAX


def check_text(name: str, value: str | None, limit: int | None = None) -> list[str]:
    """Problems with one string argument (too long, or a NUL that SQLite and file names refuse)."""
    if value is None:
        return []
    if not isinstance(value, str):
        return [f"{name} must be text, not {type(value).__name__}"]
    limit = limit or string_limit(name)
    if len(value) > limit:
        return [f"{name} is {len(value)} characters; the limit is {limit} ({clip(value, 40)})"]
    if "\x00" in value:
        return [f"{name} contains a NUL character"]
    return []


def require_text(name: str, value: str | None, limit: int | None = None) -> None:
    problems = check_text(name, value, limit)
    if problems:
        raise InvalidInput(problems[0])


# ---------------------------------------------------------------- MCP tool arguments
def bounded(tp: Any, name: str) -> Any:
    """`tp` with the bounds of an argument called `name` added (recursively through Optional, lists, Annotated)."""
    origin = get_origin(tp)
    if tp is bool:
        return Annotated[bool, Strict()]
    if tp is str:
        return Annotated[str, Field(max_length=string_limit(name), pattern=r"^[^\x00]*$")]
    if tp is int:
        return Annotated[int, Field(ge=-INT_MAX, le=INT_MAX)]
    if tp is float:
        return Annotated[float, Field(allow_inf_nan=False, ge=-1e15, le=1e15)]
    if tp is Decimal:
        return Annotated[Decimal, Field(allow_inf_nan=False, ge=-MONEY_MAX, le=MONEY_MAX)]
    if origin is Annotated:
        inner, *meta = get_args(tp)
        return Annotated[(bounded(inner, name), *meta)]  # type: ignore[return-value]
    if origin in (Union, types.UnionType):
        return Union[tuple(bounded(a, name) for a in get_args(tp))]  # noqa: UP007 - built at run time
    if origin is list:
        return Annotated[list[bounded(get_args(tp)[0], name)], Field(max_length=ITEMS_MAX)]  # type: ignore[misc]
    if origin is dict:  # a JSON object (a rule, a check, settings): its content is the service's; its size is ours
        return Annotated[tp, AfterValidator(_small_json)]
    return tp  # Literal, models


def _small_json(value: Any) -> Any:
    size = len(json.dumps(value, default=str))
    if size > JSON_MAX:
        raise ValueError(f"this JSON object is {size} characters; the limit is {JSON_MAX}")
    return value


def harden_tools(mcp: Any) -> None:
    """Rebuild each registered tool's argument model with the bounds above (and its advertised JSON Schema)."""
    for tool in mcp._tool_manager.list_tools():
        model = tool.fn_metadata.arg_model
        # the tool's own constraints go last, so a tighter bound it declares wins over the general one
        fields = {name: (_with_own(bounded(f.annotation, name), f.metadata), f)
                  for name, f in model.model_fields.items()}
        hardened = create_model(model.__name__, __base__=model, **fields)  # type: ignore[call-overload]
        tool.fn_metadata.arg_model = hardened
        tool.parameters = hardened.model_json_schema(by_alias=True)


def _with_own(tp: Any, metadata: list[Any]) -> Any:
    return Annotated[(tp, *metadata)] if metadata else tp  # type: ignore[return-value]


# ---------------------------------------------------------------- CLI arguments
def usd_amount(value: str) -> Decimal:
    """A USD amount from the command line: `400`, `400.50` or `$400`; finite, >= 0, at most MONEY_MAX."""
    import argparse
    from decimal import InvalidOperation

    text = value.strip().removeprefix("$").replace(",", "").strip()
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError):
        raise argparse.ArgumentTypeError(f"{clip(value, 40)} is not an amount in USD; write it like 400 or "
                                         "400.50") from None
    if not amount.is_finite() or amount < 0 or amount > MONEY_MAX:
        raise argparse.ArgumentTypeError(f"{clip(value, 40)} must be an amount from 0 to {MONEY_MAX:,} USD")
    return amount


def harden_parser(parser: Any) -> None:
    """Bound every argument of every (sub)command: strings by length and no NUL, integers to +-INT_MAX,
    numbers finite, `Decimal` amounts through `usd_amount`, and any error a type raises turned into a usage error
    (argparse only catches ValueError and TypeError; Decimal raises ArithmeticError)."""
    import argparse

    seen: set[int] = set()

    def walk(p: argparse.ArgumentParser) -> None:
        if id(p) in seen:
            return
        seen.add(id(p))
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.nargs != 0 and action.option_strings != ["-h", "--help"]:
                action.type = _bounded_type(action.type, action.dest)

    walk(parser)


def _bounded_type(kind: Any, name: str) -> Any:
    import argparse
    import math

    if kind is Decimal:
        return usd_amount
    limit = string_limit(name)

    def convert(value: str) -> Any:
        problems = check_text(name.replace("_", "-"), value, limit)
        if problems:
            raise argparse.ArgumentTypeError(problems[0])
        if kind is None or kind is str:
            return value
        try:
            out = kind(value)
        except argparse.ArgumentTypeError:
            raise
        except (ArithmeticError, OverflowError, UnicodeError) as e:
            raise argparse.ArgumentTypeError(f"{clip(value, 40)} is not a valid value ({type(e).__name__})") from None
        if isinstance(out, bool):
            return out
        if isinstance(out, int) and not -INT_MAX <= out <= INT_MAX:
            raise argparse.ArgumentTypeError(f"{clip(value, 40)} is out of range (at most {INT_MAX:,})")
        if isinstance(out, float) and (not math.isfinite(out) or abs(out) > 1e15):
            raise argparse.ArgumentTypeError(f"{clip(value, 40)} must be a finite number")
        return out

    convert.__name__ = getattr(kind, "__name__", "str")  # argparse names the type in "invalid int value" errors
    return convert
