"""CLI commands of the optimisation loop: `mcp-prism evaluate auto | judge | rate | progress`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from mcp_prism.cli import read_json_arg
from mcp_prism.core.judge import HUMAN_RATING_HELP
from mcp_prism.loop.evaluate import EvaluationService, ItemVerdict, RatingPair
from mcp_prism.service import PrismService

# What the rater types -> the rating (symmetric and blind: see EvaluationService.next_for_rating).
KEYS = {"1": "first", "2": "second", "=": "same", "e": "same", "1!": "only_first", "1x": "only_first",
        "2!": "only_second", "2x": "only_second", **{r: r for r in HUMAN_RATING_HELP}}
KEY_HELP = ("1 = first is better | 2 = second is better | = = as good as each other | "
            "1! = only the first is acceptable | 2! = only the second is acceptable | s = skip | q = quit")
MAX_ITEMS_SHOWN = 30
CHECK_EXAMPLE = '{"type": "exact", "normalise": true}'


def _items(items: list[ItemVerdict]) -> str:
    bad = [i for i in items if i.verdict != "acceptable"]
    if not bad:
        return ""
    lines = ["", "", "not acceptable:"]
    lines += [f"  item {i.item} on {i.model}: {i.verdict} - {i.summary}" for i in bad[:MAX_ITEMS_SHOWN]]
    if len(bad) > MAX_ITEMS_SHOWN:
        lines.append(f"  ... and {len(bad) - MAX_ITEMS_SHOWN} more (--json for all)")
    return "\n".join(lines)


def _aligned(text: str) -> str:
    from mcp_prism.cli import aligned  # imported late: mcp_prism.cli loads this module

    return aligned(text)


async def cmd_auto(svc: PrismService, a: argparse.Namespace) -> Any:
    check = read_json_arg(a.check, "check", CHECK_EXAMPLE, inline=True)
    r = await EvaluationService(svc).automated(a.experiment, check)
    return r, _aligned(r.markdown) + _items(r.items)


async def cmd_judge(svc: PrismService, a: argparse.Namespace) -> Any:
    async def progress(done: int, total: int, message: str) -> None:
        if not getattr(a, "quiet", False):
            print(f"[{done}/{total}] {message}", file=sys.stderr)

    r = await EvaluationService(svc).judge(a.experiment, a.judge, concurrency=a.concurrency, progress=progress)
    return r, _aligned(r.markdown) + _items(r.items)


async def cmd_progress(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await EvaluationService(svc).rating_progress(a.experiment)
    return r, _aligned(r.markdown)


def _show_pair(p: RatingPair, out: Callable[[str], None]) -> None:
    rule = "-" * 78
    out(f"\n{rule}\npair {p.rated_by_you + 1} of {p.total} (task type {p.task_type})\n{rule}")
    out(f"TASK:\n{p.prompt}\n\n===== FIRST ANSWER =====\n{p.first}\n\n===== SECOND ANSWER =====\n{p.second}\n")
    out(f"{p.question}\n{KEY_HELP}")


async def cmd_rate(svc: PrismService, a: argparse.Namespace, stdin: TextIO | None = None) -> Any:
    """Interactive blind rating: show a pair, read the rating, until every pair is rated, `q` or end of input."""
    ev = EvaluationService(svc)
    stdin = stdin or sys.stdin
    stream = sys.stderr if getattr(a, "json", False) else sys.stdout  # keep --json output clean

    def out(text: str) -> None:
        print(text, file=stream, flush=True)

    skipped: list[str] = []
    rated = 0
    while True:
        pair = await ev.next_for_rating(a.experiment, a.rater, skip=skipped)
        if pair.done or pair.token is None:
            out("\nnothing left to rate" + (f" (skipped {len(skipped)} for later)" if skipped else "") + ".")
            break
        _show_pair(pair, out)
        answer = None
        while answer is None:
            stream.write("rating> ")
            stream.flush()
            line = stdin.readline()
            if not line:  # end of input
                answer = "q"
                break
            key = line.strip().lower()
            if key in ("q", "s") or key in KEYS:
                answer = key
            else:
                out(f"not a rating: {key!r}. {KEY_HELP}")
        if answer == "q":
            break
        if answer == "s":
            skipped.append(pair.token)
            continue
        note = None
        if getattr(a, "notes", False):
            stream.write("note (optional)> ")
            stream.flush()
            note = stdin.readline().strip() or None
        await ev.submit_rating(pair.token, KEYS[answer], a.rater, note)
        rated += 1
    progress = await ev.rating_progress(a.experiment)
    mine = next((r.rated for r in progress.raters if r.rater == a.rater), 0)
    # Counts only: verdicts per model would let a rater work out which side a candidate was on.
    progress = progress.model_copy(update={"candidates": [], "markdown": ""})
    others = ", ".join(f"{r.rater}: {r.rated}" for r in progress.raters if r.rater != a.rater)
    text = (f"{a.rater}: rated {rated} pair(s) this session, {mine} of {progress.total} in all; "
            f"{progress.rated} pair(s) rated by anyone" + (f" ({others})" if others else "") + ".\n"
            f"Verdicts so far: mcp-prism evaluate progress {a.experiment}")
    return progress, text


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add this area's subcommands: `add(name, help)` returns an argparse parser; set `handler=`."""
    group = add("evaluate", "evaluate an experiment's candidate answers: automated checks, an LLM judge, "
                            "blind human rating")
    esub = group.add_subparsers(dest="evaluate_command", metavar="ACTION", required=True)

    p = add("auto", "run an automated check on every candidate answer (JSON Schema, exact, regex, a command)", esub)
    p.add_argument("experiment", help="the experiment id")
    p.add_argument("--check", required=True, metavar="FILE|JSON",
                   help='the check as a JSON file, - for stdin, or inline: {"type": "json_schema", "schema": {...}}, '
                        '{"type": "exact", "normalise": true}, {"type": "regex", "pattern": "..."}, '
                        '{"type": "command", "command": "python check.py {answer_file}", "timeout": 60}')
    p.set_defaults(handler=cmd_auto)

    p = add("judge", "let a judge model compare each candidate answer with the baseline's, in both orders "
                     "(resumable; costs judge calls)", esub)
    p.add_argument("experiment", help="the experiment id")
    p.add_argument("--judge", required=True, metavar="MODEL",
                   help="the judge model; prefer one of another family than the candidates")
    p.add_argument("--concurrency", type=int, default=4, help="judge calls at once (1-32, default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(handler=cmd_judge)

    p = add("rate", "rate candidate answers blind against the baseline's, interactively (reads stdin)", esub)
    p.add_argument("experiment", help="the experiment id")
    p.add_argument("--rater", required=True, help="your name or email (ratings are stored per rater)")
    p.add_argument("--notes", action="store_true", help="ask for an optional note after each rating")
    p.set_defaults(handler=cmd_rate)

    p = add("progress", "how many pairs are rated, by whom, and the human verdicts so far", esub)
    p.add_argument("experiment", help="the experiment id")
    p.set_defaults(handler=cmd_progress)
