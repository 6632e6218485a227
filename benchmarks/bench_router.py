"""Learned routing on the shipped RouteLLM outcome data, measured honestly, and the mixed rule's cost per request.

    python benchmarks/bench_router.py                 # everything (several minutes: GSM8K trains ~550 routers)
    python benchmarks/bench_router.py --only mtbench  # MT-Bench figures and the team-level target only
    python benchmarks/bench_router.py --only latency  # route_task p50/p99 with and without a mixed rule
    python benchmarks/bench_router.py --only ablation # raw counts vs TF-IDF, each labeling alone vs picked by CV

1. Per-request routers with thresholds chosen out of sample (router-eval's code path): per seed, 5-fold
   cross-fitting; each held-out fold is routed by a router whose labeling and threshold were chosen by 5-fold
   cross-validation on the other folds. Quality kept and cost cut are what happened on held-out prompts;
   mean and range over 5 seeds; with no margin and with a one-standard-error margin on the threshold.
   Beside them, what the done-when targets would need (the strong-call share a cut allows, the share of the
   quality gap a router must recover there) and what the router's held-out curve recovers at that share.
2. The team-level target on MT-Bench categories: chosen on one half of each category's questions, measured
   on the other half, for 5 seeds.
3. route_task latency with a mixed rule (a router trained on GSM8K scoring every request) vs the same type
   without one. Target: p99 <= 1 ms.

Data: ../shared/data/routellm (see its README). Tolerance 0 throughout (router-eval and import-outcomes).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import shared_data  # noqa: E402

from mcp_prism.config import Settings  # noqa: E402
from mcp_prism.core import learned_router as lr  # noqa: E402
from mcp_prism.core import router_eval  # noqa: E402
from mcp_prism.core.rules import RoutingRule  # noqa: E402
from mcp_prism.loop import importers as imp  # noqa: E402
from mcp_prism.loop import team_target  # noqa: E402
from mcp_prism.loop.importers import evaluate_router_file, import_outcomes  # noqa: E402
from mcp_prism.loop.routers import RouterService  # noqa: E402
from mcp_prism.service import PrismService  # noqa: E402

DATA = shared_data("routellm")
SEEDS = 5
TARGET_CUTS = {"gsm8k": 0.35, "mt-bench": 0.85}


def _span(r: object, fmt: str = "{:.1%}") -> str:
    if r is None:
        return "-"
    return f"{fmt.format(r.mean)} ({fmt.format(r.min)} .. {fmt.format(r.max)})"  # type: ignore[attr-defined]


def _pgr_at(points: list, share: float) -> float:
    """The held-out curve's PGR at a strong-call share (linear between its 10% points)."""
    for a, b in itertools.pairwise(points):
        if a.strong_share <= share <= b.strong_share:
            w = (share - a.strong_share) / (b.strong_share - a.strong_share or 1)
            return a.pgr + w * (b.pgr - a.pgr)
    return points[-1].pgr


async def per_request(svc: PrismService, path: Path, name: str) -> None:
    for margin in (0.0, 1.0):
        t0 = time.perf_counter()
        r = await evaluate_router_file(svc, path, seeds=SEEDS, margin_z=margin)
        print(f"\n## {name}: thresholds chosen out of sample, margin {margin:g} SE ({time.perf_counter() - t0:.0f} s)")
        print(f"n={r.n}, duplicates={r.duplicates}, prompt-only costs={r.prompt_only_costs}, "
              f"tolerance={r.tolerance:g}, "
              f"mean quality on the curve's test part: weak {r.q_weak:.3f} / strong {r.q_strong:.3f} "
              f"({r.q_weak / r.q_strong:.1%})")
        for o in r.out_of_sample:
            print(f"  {o.features:<14} quality kept {_span(o.quality_kept)}  cost cut {_span(o.cost_cut)}  "
                  f"strong calls {_span(o.strong_share)}  APGR {_span(o.apgr, '{:.3f}')}  "
                  f"met 95%: {o.seeds_meeting_target}/{len(o.seeds)}")
            for s in o.seeds:
                print(f"      seed {s.seed}: kept {s.quality_kept:.1%}, cut {s.cost_cut:.1%}, strong "
                      f"{s.strong_share:.1%}, labelings {s.labelings}")
    # What the done-when cut would need, from the held-out curve of the last run.
    pts, cut = r.points, TARGET_CUTS[name]
    weak_share = float(pts[0].cost_usd / pts[-1].cost_usd)  # all-weak cost / all-strong cost
    s_max = (1 - cut - weak_share) / (1 - weak_share)
    need = (0.95 * r.q_strong - r.q_weak) / (r.q_strong - r.q_weak)
    print(f"  a {cut:.0%} cut allows at most {s_max:.1%} strong calls (all-weak costs {weak_share:.1%} of "
          f"all-strong); 95% quality needs {need:.2f} of the quality gap recovered (PGR); the learned router's "
          f"held-out curve ({r.method}) recovers {_pgr_at(pts, s_max):.2f} there; APGR {r.apgr:.3f}, oracle "
          f"{r.apgr_oracle:.3f}, random {r.apgr_random:.3f}")


def _examples(svc: PrismService, path: Path) -> list[router_eval.Example]:
    """The prompts and outcomes router-eval reads (MT-Bench: turn 1's text, both turns' mean score)."""
    book = imp.PriceBook({}, svc.catalog)
    _, sources = imp.open_sources(path, None, None)
    rows, sc = imp.load_rows(sources, False)
    strong, _ = imp._choose_strong(sc, None)
    [weak] = [m for m in sc.counts if m != strong]

    def cost(r: imp.Row, m: str) -> object:
        return book.cost(m, imp._tokens(r.input_chars[m]), imp._tokens(len(r.responses.get(m) or "")))

    return [router_eval.Example(r.text, r.scores[weak], r.scores[strong], cost(r, weak), cost(r, strong),  # type: ignore[arg-type]
                                r.category) for _, r in rows]


def ablation(svc: PrismService, path: Path, name: str) -> None:
    """Features and labelings measured the same honest way (text-only, margin 1 SE, 5 seeds)."""
    examples = _examples(svc, path)
    print(f"\n## {name}: features and labelings, thresholds out of sample (text-only, margin 1 SE, {SEEDS} seeds)")
    for label, tfidf, modes in (("raw counts, both labelings (CV picks)", False, lr.MODES),
                                ("TF-IDF, ok only (weak as good as strong)", True, ("ok",)),
                                ("TF-IDF, gap only (strong-minus-weak, 3 classes)", True, ("gap",)),
                                ("TF-IDF, both labelings (CV picks)", True, lr.MODES)):
        o = router_eval.evaluate_out_of_sample(examples, seeds=range(SEEDS), margin_z=1.0, modes=modes, tfidf=tfidf)
        print(f"  {label:<48} APGR {_fmt(o.stat('apgr'), '{:.3f}')}  quality kept {_fmt(o.stat('quality_kept'))}  "
              f"cost cut {_fmt(o.stat('cost_cut'))}  met 95%: {o.met_target}/{SEEDS}")


def _fmt(st: tuple[float, float, float] | None, fmt: str = "{:.1%}") -> str:
    return "-" if st is None else f"{fmt.format(st[0])} ({fmt.format(st[1])} .. {fmt.format(st[2])})"


async def team_level(svc: PrismService) -> None:
    await import_outcomes(svc, DATA)
    print("\n## Team-level target on MT-Bench categories (keep >= 95% of GPT-4's quality), chosen on one half of "
          "each category's questions, measured on the other")
    kept, cut = [], []
    for seed in range(SEEDS):
        p = await team_target.plan(svc, quality_target=0.95, seed=seed)
        kept.append(p.quality_kept)
        cut.append(p.cost_cut)
        print(f"  seed {seed}: to Mixtral {', '.join(p.to_cheaper)}; selection half kept {p.chosen_quality_kept:.1%} "
              f"cut {p.chosen_cost_cut:.1%}; held out kept {p.quality_kept:.1%} (95% lower bound "
              f"{p.quality_lower_bound:.1%}), cut {p.cost_cut:.1%}")
    print(f"  mean over seeds: held-out quality kept {statistics.mean(kept):.1%} ({min(kept):.1%} .. {max(kept):.1%}), "
          f"cost cut {statistics.mean(cut):.1%} ({min(cut):.1%} .. {max(cut):.1%}); "
          f"{sum(k >= 0.95 for k in kept)}/{SEEDS} seeds at >= 95%")


def _report(label: str, ns: list[int]) -> None:
    s = sorted(ns)
    q = statistics.quantiles(s, n=100, method="inclusive")
    print(f"  {label:<40} n={len(s):>6}  p50={q[49] / 1e3:7.1f} us  p99={q[98] / 1e3:7.1f} us  "
          f"max={s[-1] / 1e6:6.2f} ms")


async def latency(home: str) -> None:
    # GSM8K's models are not in the catalog: the same outcomes under catalog names, so a rule can use them.
    src = (DATA / "gsm8k_responses.csv").read_text(encoding="utf-8")
    renamed = Path(home) / "general.csv"
    renamed.write_text(src.replace("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4o-mini")
                       .replace("gpt-4-1106-preview", "gpt-4o"), encoding="utf-8")
    svc = await PrismService.open(Settings.from_env({}, home=home))
    try:
        await import_outcomes(svc, renamed, task_type="general")
        view = await RouterService(svc).train("general", author="bench", reason="latency")
        rows = await svc.store.fetch("SELECT prompt FROM experiment_items ORDER BY item LIMIT 300")
        prompts = [r["prompt"] for r in rows]
        print("\n## route_task latency (in process, task type given, GSM8K prompts as descriptions)")
        router = await svc.router_for(RoutingRule("general", "gpt-4o-mini", router=(view.version, "gpt-4o")))
        assert router is not None
        samples = []
        for i in range(5000):
            t = time.perf_counter_ns()
            router.needs_strong(prompts[i % len(prompts)])
            samples.append(time.perf_counter_ns() - t)
        _report("the router's score alone (pure core)", samples)
        for label in ("code_review: plain rule", "general: mixed rule (router scores each)"):
            task = label.split(":")[0]
            if task == "general":
                await RouterService(svc).promote("general", view.version, author="bench", reason="latency")
            for p in prompts[:50]:
                await svc.route_task(p, task_type=task)
            samples = []
            for i in range(3000):
                t = time.perf_counter_ns()
                await svc.route_task(prompts[i % len(prompts)], task_type=task)
                samples.append(time.perf_counter_ns() - t)
            _report(label, samples)
        r = await svc.route_task(prompts[0], task_type="general")
        print(f"  e.g. {r.model} (router v{r.router_version}, score {r.router_score})")
    finally:
        await svc.close()


async def main(only: str | None) -> None:
    if not (DATA / "gsm8k_responses.csv").is_file():
        sys.exit(f"the RouteLLM data is not at {DATA}")
    with tempfile.TemporaryDirectory() as home:
        svc = await PrismService.open(Settings.from_env({}, home=home))
        try:
            if only in (None, "mtbench"):
                await per_request(svc, DATA, "mt-bench")
                await team_level(svc)
            if only in (None, "gsm8k"):
                await per_request(svc, DATA / "gsm8k_responses.csv", "gsm8k")
            if only in (None, "ablation", "ablation-mtbench"):
                ablation(svc, DATA, "mt-bench")
            if only in (None, "ablation", "ablation-gsm8k"):
                ablation(svc, DATA / "gsm8k_responses.csv", "gsm8k")
        finally:
            await svc.close()
    if only in (None, "latency"):
        with tempfile.TemporaryDirectory() as home:
            await latency(home)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["mtbench", "gsm8k", "latency", "ablation", "ablation-mtbench",
                                       "ablation-gsm8k"])
    asyncio.run(main(ap.parse_args().only))
