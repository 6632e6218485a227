"""CLI commands of the optimisation loop: experiments (`mcp-prism experiment start|run|report|promote|list|show`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from mcp_prism.cli import aligned
from mcp_prism.errors import InvalidInput
from mcp_prism.loop.experiments import (
    METHODS,
    ExperimentService,
    info_markdown,
    list_markdown,
    promote_markdown,
    report_markdown,
    run_markdown,
)
from mcp_prism.service import PrismService

BAR = 30


def _settings(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value` method settings; values are JSON when they parse (numbers, true, lists), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise InvalidInput(f"--set takes key=value (e.g. --set judge=claude-sonnet-4-5), not {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


async def cmd_start(svc: PrismService, a: argparse.Namespace) -> Any:
    evaluation: dict[str, Any] = {**_settings(a.set), "method": a.method}
    if a.threshold is not None:
        evaluation["threshold"] = a.threshold
    candidates = [c.strip() for c in a.candidates.split(",") if c.strip()]
    info = await ExperimentService(svc).start(a.task_type, candidates, samples=a.samples, evaluation=evaluation,
                                              from_file=a.from_file, seed=a.seed, baseline_model=a.baseline)
    return info, f"started {info.id}\n" + info_markdown(info)


class ProgressBar:
    """A progress bar on stderr (a line per tenth when stderr is not a terminal)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.shown = -1
        self.done = 0

    def __call__(self, done: int, total: int, message: str) -> None:
        self.done = done
        if self.tty:
            filled = BAR * done // total if total else BAR
            self.stream.write(f"\r[{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} {message[:60]:<60}")
            if done >= total:
                self.stream.write("\n")
        else:
            tenth = 10 * done // total if total else 10
            if tenth == self.shown:
                return
            self.shown = tenth
            self.stream.write(f"{done}/{total} answers: {message}\n")
        self.stream.flush()


async def cmd_run(svc: PrismService, a: argparse.Namespace) -> Any:
    bar = ProgressBar()
    try:
        summary = await ExperimentService(svc).run(a.experiment_id, concurrency=a.concurrency, progress=bar)
    except asyncio.CancelledError:  # Ctrl-C: every answer paid for so far is saved
        print(f"\nstopped after {bar.done} answer(s); nothing paid for is lost. Resume with "
              f"`mcp-prism experiment run {a.experiment_id}`", file=sys.stderr)
        raise
    if summary.calls_made and not summary.succeeded:  # every call failed: a script must not read success
        a.exit_code = 1
        print(f"error: every one of the {summary.calls_made} call(s) failed; see the errors below, fix them "
              f"(often a missing API key) and run again", file=sys.stderr)
    return summary, run_markdown(summary)


async def cmd_report(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await ExperimentService(svc).report(a.experiment_id)
    return r, aligned(report_markdown(r))


async def cmd_promote(svc: PrismService, a: argparse.Namespace) -> Any:
    from mcp_prism.install_sync import after_rule_change

    r = await ExperimentService(svc).promote(a.experiment_id, a.candidate, author=a.author, reason=a.reason,
                                             monitor_days=a.monitor_days, auto_rollback=a.auto_rollback)
    note = await after_rule_change(svc)  # the promoted model reaches installed agents that skip the gateway
    return r, promote_markdown(r) + (f"\n\n{note}" if note else "")


async def cmd_list(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await ExperimentService(svc).list(a.task_type)
    return r, aligned(list_markdown(r))


async def cmd_show(svc: PrismService, a: argparse.Namespace) -> Any:
    r = await ExperimentService(svc).show(a.experiment_id)
    return r, info_markdown(r)


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"{value} must be from {lo} to {hi}")
        return n

    return parse


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add this area's subcommands: `add(name, help)` returns an argparse parser; set `handler=`."""
    exp = add("experiment", "experiments: try cheaper models on sampled requests, qualify them, promote one")
    esub = exp.add_subparsers(dest="experiment_command", metavar="ACTION", required=True)

    p = add("start", "draw 50-100 samples of a task type and set up candidates against the current model", esub)
    p.add_argument("task_type")
    p.add_argument("--candidates", required=True, help="comma-separated models or aliases (1 to 5)")
    p.add_argument("--samples", type=_int_in(50, 100), default=50, help="how many samples, 50..100 (default 50)")
    p.add_argument("--method", choices=METHODS, default="human", help="how answers will be evaluated")
    p.add_argument("--threshold", type=float, default=None,
                   help="acceptance rate to clear (default 0.95 human and automated, 0.90 judge)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an evaluation setting kept for the evaluator (repeatable), e.g. --set judge=gpt-5")
    p.add_argument("--from-file", metavar="JSONL", help='samples from a file: one {"prompt", "expected", '
                                                        '"response", "edge_case"} object per line')
    p.add_argument("--seed", type=int, default=7, help="random seed of the draw")
    p.add_argument("--baseline", help="the model to compare with (default: the rule's primary)")
    p.set_defaults(handler=cmd_start)

    p = add("run", "call the models for every answer still missing (resumable; Ctrl-C stops cleanly)", esub)
    p.add_argument("experiment_id")
    p.add_argument("--concurrency", type=_int_in(1, 32), default=4, help="calls in flight at once (default 4)")
    p.set_defaults(handler=cmd_run)

    p = add("report", "each candidate's verdict, latency, cost and saving, and the failed examples", esub)
    p.add_argument("experiment_id")
    p.set_defaults(handler=cmd_report)

    p = add("promote", "make a qualified candidate the task type's primary model, under a monitor", esub)
    p.add_argument("experiment_id")
    p.add_argument("candidate")
    p.add_argument("--author", required=True, help="who promotes it (name or email)")
    p.add_argument("--reason", required=True, help="why")
    p.add_argument("--monitor-days", type=_int_in(1, 365), default=14, help="days to watch the new rule")
    p.add_argument("--auto-rollback", action="store_true", help="roll back by itself if quality regresses")
    p.set_defaults(handler=cmd_promote)

    p = add("list", "every experiment, newest first", esub)
    p.add_argument("--task-type", help="only this task type's experiments")
    p.set_defaults(handler=cmd_list)

    p = add("show", "one experiment's set-up and progress", esub)
    p.add_argument("experiment_id")
    p.set_defaults(handler=cmd_show)
