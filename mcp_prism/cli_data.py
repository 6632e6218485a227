"""CLI commands of the optimisation loop: data — import outcomes someone else measured, and measure a
learned per-request router on them (`import-outcomes`, `router-eval`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mcp_prism import render
from mcp_prism.core.report import money
from mcp_prism.loop.importers import ImportResult, RouterEvalResult, evaluate_router_file, import_outcomes
from mcp_prism.service import PrismService


def _table(headers: list[str], rows: list[list[object]]) -> str:
    from mcp_prism.cli import aligned  # imported late: cli loads this module while it builds its parser

    return aligned(render.table(headers, rows))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def show_import(r: ImportResult) -> str:
    lines = [f"imported {sum(e.items for e in r.experiments):,} items from {r.path} ({r.format} format, "
             f"{r.scale} scores) into {len(r.experiments)} experiment(s)",
             f"strong model (baseline): {r.strong} — {r.strong_chosen_by}",
             f"acceptance rule: {r.acceptance_rule}",
             f"qualification: {r.confidence:.0%} Clopper-Pearson lower bound of the acceptance rate >= "
             f"{r.threshold:.0%}", ""]
    lines.append(_table(["model", "$/Mtok in", "$/Mtok out", "price source"],
                        [[m, render.decimal_str(p.input_usd_per_mtok), render.decimal_str(p.output_usd_per_mtok),
                          p.source] for m, p in r.prices.items()]))
    lines += ["", _table(
        ["task type", "candidate", "items", "acceptable", "lower bound", "qualifies", "more samples",
         "mean score cand/base", "cost cand", "cost base"],
        [[s.task_type, s.candidate, s.n, f"{s.acceptable} ({s.rate:.1%})", _pct(s.lower_bound),
          "yes" if s.qualified else "no", "-" if s.more_needed is None else s.more_needed,
          f"{_num(s.candidate_mean_score)} / {_num(s.baseline_mean_score)}", money(s.candidate_cost_usd),
          money(s.baseline_cost_usd)] for s in r.summaries])]
    lines.append("")
    lines += [f"- {s.task_type} / {s.candidate}: {s.verdict}" for s in r.summaries]
    for route in (r.routing, r.routing_point_estimate):
        cheap = sorted(t for t, m in route.routed.items() if m != r.strong)
        lines += ["", f"routing — {route.rule}:",
                  f"  to a cheaper model: {', '.join(cheap) or 'none'}; keeps {_pct(route.quality_kept)} of the "
                  f"strong model's mean quality at {_pct(route.cost_share)} of its cost"]
    replaced = [e.experiment_id for e in r.experiments if e.replaced]
    if replaced:
        lines += ["", f"replaced earlier imports of the same file: {', '.join(replaced)}"]
    skipped = [s for e in r.experiments for s in e.skipped_rows]
    if skipped:
        lines += ["", f"skipped {len(skipped)} bad row(s):", *(f"  {s}" for s in skipped[:20])]
    lines += ["", "experiments: " + ", ".join(e.experiment_id for e in r.experiments)]
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def show_router_eval(r: RouterEvalResult) -> str:
    def share(v: float | None) -> str:
        return "never" if v is None else f"{v:.1%} strong calls"

    def span(v: Any, fmt: str = "{:.1%}") -> str:
        if v is None:
            return "-"
        return f"{fmt.format(v.mean)} ({fmt.format(v.min)} to {fmt.format(v.max)})"

    lines = [f"learned per-request routing on {r.dataset}: {r.weak} (weak) vs {r.strong} (strong)",
             f"label: {r.label_rule} (tolerance {r.tolerance:g}, the same in import-outcomes); the weak model is "
             f"as good on {r.weak_ok_rate:.1%} of test prompts",
             f"mean quality: weak {r.q_weak:.3f}, strong {r.q_strong:.3f}",
             f"duplicates: {r.duplicates} prompt(s) repeat another's text; each group stays on one side of every split",
             "", f"thresholds chosen out of sample, aiming at {r.target:.0%} of the strong model's quality — mean "
             "(range) over seeds, measured on held-out prompts:",
             _table(["features", "seeds", "quality kept", "cost cut", "strong calls", "APGR", "met target"],
                    [[o.features, len(o.seeds), span(o.quality_kept), span(o.cost_cut), span(o.strong_share),
                      span(o.apgr, "{:.3f}"), f"{o.seeds_meeting_target}/{len(o.seeds)}"] for o in r.out_of_sample]),
             *(f"labelings ({o.features}), inner-CV APGR on training folds: "
               + ", ".join(f"{m} {v:.3f}" for m, v in o.labeling_cv_apgr.items())
               + " (ok = weak as good as strong; gap = strong-minus-weak, 3 classes); the higher one is used per "
               "fold" for o in r.out_of_sample),
             "", f"the curve ({r.method}; threshold-free):",
             _table(["metric", "learned router", "random router", "oracle"],
                    [["APGR", f"{r.apgr:.3f}", f"{r.apgr_random:.3f}", f"{r.apgr_oracle:.3f}"]]), "",
             f"CPT(50%): {share(r.cpt_50)}; CPT(80%): {share(r.cpt_80)}; CPT(95%): {share(r.cpt_95)}"]
    if r.cost_cut_at_95_quality is not None:
        lines.append(f"read off the test curve (optimistic: the threshold is picked on the data it is judged on): "
                     f"95% quality at {share(r.strong_share_at_95_quality)}, {r.cost_cut_at_95_quality:.1%} cheaper")
    else:
        lines.append("cost cut: not computable (a model is unpriced; pass --price MODEL=IN,OUT)")
    if r.published:
        lines.append(f"published for comparison: {r.published}")
    lines += ["", _table(["strong calls", "quality", "PGR", "cost"],
                         [[_pct(p.strong_share), f"{p.quality:.3f}", f"{p.pgr:.3f}", money(p.cost_usd)]
                          for p in r.points])]
    lines += [f"price {m}: {p.source}" for m, p in r.prices.items()]
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


async def cmd_import_outcomes(svc: PrismService, a: argparse.Namespace) -> tuple[ImportResult, str]:
    r = await import_outcomes(svc, a.path, fmt=a.format, task_type=a.task_type, strong=a.strong,
                              threshold=a.threshold, tolerance=a.tolerance, skip_bad=a.skip_bad, prices=a.price)
    return r, show_import(r)


async def cmd_router_eval(svc: PrismService, a: argparse.Namespace) -> tuple[RouterEvalResult, str]:
    r = await evaluate_router_file(svc, a.path, fmt=a.format, task_type=a.task_type, strong=a.strong, weak=a.weak,
                                   seed=a.seed, train_share=a.train_share, folds=a.folds, tolerance=a.tolerance,
                                   skip_bad=a.skip_bad, prices=a.price, seeds=a.seeds, target=a.target,
                                   margin_z=a.margin, outer_folds=a.outer_folds, inner_folds=a.inner_folds)
    return r, show_router_eval(r)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a wide outcome file (.csv/.jsonl), a folder of them, or an MT-Bench folder "
                                "(question.jsonl + judgements.jsonl)")
    p.add_argument("--format", choices=["wide", "mtbench"], help="default: mtbench for a folder holding "
                                                                 "question.jsonl and judgements.jsonl, else wide")
    p.add_argument("--task-type", help="task type of a single wide file (default: the file name)")
    p.add_argument("--strong", help="the strong/baseline model (default: the highest mean score)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="numeric scores: the candidate is acceptable at >= baseline - TOLERANCE (default 0)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows (listed) instead of refusing the file")
    p.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                   help="list price in USD per million tokens, overriding the catalog and genai-prices; repeatable")


def register_commands(add: Callable[..., Any], sub: Any) -> None:
    """Add this area's subcommands: `add(name, help)` returns an argparse parser; set `handler=`."""
    p = add("import-outcomes", "import per-prompt outcomes of models (wide CSV/JSONL or MT-Bench) as experiments "
                               "and say which task types the cheaper model qualifies for; re-importing the same "
                               "file replaces its experiments")
    _common(p)
    p.add_argument("--threshold", type=float, default=0.90, help="acceptance rate to certify (default 0.90)")
    p.set_defaults(handler=cmd_import_outcomes)

    p = add("router-eval", "learn a per-request strong/weak router from outcome data and measure it honestly: "
                           "thresholds chosen on training folds, quality and cost cut measured on held-out prompts "
                           "over several seeds, plus APGR and CPT(50/80/95%%)")
    _common(p)
    p.add_argument("--weak", help="the weak model (default: the only other model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and training (default 0)")
    p.add_argument("--train-share", type=float, default=0.5, help="share of prompts to train on (default 0.5)")
    p.add_argument("--folds", type=int, default=None,
                   help="k-fold cross-validation instead of a split (default: 5 folds under 200 prompts)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of the out-of-sample evaluation, from --seed on "
                                                        "(default 5; figures are the mean and range)")
    p.add_argument("--target", type=float, default=0.95,
                   help="share of the strong model's mean quality the thresholds aim at (default 0.95)")
    p.add_argument("--margin", type=float, default=1.0,
                   help="standard errors of margin when freezing a threshold on calibration data (default 1)")
    p.add_argument("--outer-folds", type=int, default=5, help="cross-fitting folds per seed (default 5)")
    p.add_argument("--inner-folds", type=int, default=5,
                   help="cross-validation folds inside each training set (labeling and threshold; default 5)")
    p.set_defaults(handler=cmd_router_eval)
