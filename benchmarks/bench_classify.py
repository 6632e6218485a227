"""Accuracy and speed of the offline task classifier on the labelled request set.

    python benchmarks/bench_classify.py            # figures
    python benchmarks/bench_classify.py --misses   # also list misclassified tuning-split requests
    python benchmarks/bench_classify.py --misses=all

Split: within each task type, the first two thirds of its lines (in file order) are the tuning
split the patterns were adjusted on; the last third is held out.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_prism.core.classify import Classifier  # noqa: E402

DATA = ROOT / "tests" / "data" / "labelled_requests.jsonl"
REPEAT = 50


def load() -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_type[row["task_type"]].append(row)
    for items in by_type.values():
        cut = len(items) * 2 // 3
        for i, row in enumerate(items):
            row["split"] = "tune" if i < cut else "holdout"
    return rows


def acc(rows: list[dict]) -> str:
    if not rows:
        return "n/a"
    ok = sum(r["predicted"] == r["task_type"] for r in rows)
    return f"{ok / len(rows):.3f} ({ok}/{len(rows)})"


def main(argv: list[str]) -> None:
    show = next((a.split("=", 1)[1] if "=" in a else "tune" for a in argv if a.startswith("--misses")), None)
    clf = Classifier()
    rows = load()
    for row in rows:
        result = clf.classify(row["text"])
        row["predicted"] = result.task_type
        row["result"] = result

    print(f"labelled requests: {len(rows)}  ({DATA.relative_to(ROOT)})")
    print(f"accuracy overall:          {acc(rows)}")
    print(f"accuracy hard:             {acc([r for r in rows if r['hard']])}")
    print(f"accuracy tuning split:     {acc([r for r in rows if r['split'] == 'tune'])}")
    print(f"accuracy held-out third:   {acc([r for r in rows if r['split'] == 'holdout'])}")
    print(f"accuracy held-out hard:    {acc([r for r in rows if r['split'] == 'holdout' and r['hard']])}")
    print(f"fell back to default:      {sum(r['result'].fell_back for r in rows)}")
    print()
    print(f"{'task type':<24}{'all':>16}{'hard':>16}{'held-out':>16}   confused with")
    for name in sorted({r["task_type"] for r in rows}):
        mine = [r for r in rows if r["task_type"] == name]
        confused = Counter(r["predicted"] for r in mine if r["predicted"] != name)
        conf = ", ".join(f"{k} x{v}" for k, v in confused.most_common())
        print(f"{name:<24}{acc(mine):>16}{acc([r for r in mine if r['hard']]):>16}"
              f"{acc([r for r in mine if r['split'] == 'holdout']):>16}   {conf}")

    if show:
        print()
        for r in rows:
            if r["predicted"] != r["task_type"] and (show == "all" or r["split"] == show):
                res = r["result"]
                tag = r["split"] + (" hard" if r["hard"] else "")
                print(f"[{tag}] want {r['task_type']} got {r['predicted']}"
                      f" ({res.confidence:.2f}, runner-up {res.runner_up}): {r['text']!r}")
                for s in res.signals:
                    print(f"      {s}")

    texts = [r["text"] for r in rows]
    for t in texts:  # warm up
        clf.classify(t)
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(REPEAT):
        for t in texts:
            t0 = clock()
            clf.classify(t)
            samples.append((clock() - t0) / 1000.0)
    samples.sort()
    p50 = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print()
    print(f"timing over {len(samples)} calls ({len(texts)} requests x {REPEAT}):")
    mean = statistics.fmean(samples)
    print(f"  p50 {p50:.1f} us   p99 {p99:.1f} us   mean {mean:.1f} us   max {samples[-1]:.1f} us")

    big = "\n".join(texts) * 40
    t0 = clock()
    clf.classify(big)
    print(f"  one {len(big):,}-character request: {(clock() - t0) / 1000.0:.1f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
