"""Accuracy and speed of the offline task classifier (the shipped model, mcp_prism/data/classifier.bin).

    python benchmarks/bench_classify.py            # figures
    python benchmarks/bench_classify.py --misses   # also list the labelled set's misclassified requests

Sets:
- tests/data/labelled_requests.jsonl: the repository's labelled set (232 requests). The model was not
  trained on it (the training corpus is tools/classifier/corpus.jsonl).
- tests/data/heldout_requests.jsonl: the frozen held-out set (381 requests, 33 per type + 18 general),
  committed before the model was trained and never used to choose anything. Its misses are not listed.
- Cross-validated accuracy and confusion matrix: from the model's training run (tools/classifier/train.py,
  template-grouped 5-fold CV on the training corpus); this script prints what the model file recorded.
Latency: wall clock per `classify` call (p50/p99) and, to separate the work from a loaded machine's
scheduling, the thread's CPU time per call.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mcp_prism.config import shipped_classifier_model  # noqa: E402
from mcp_prism.core.classify import Classifier  # noqa: E402
from mcp_prism.core.tasks import GENERAL  # noqa: E402

LABELLED = ROOT / "tests" / "data" / "labelled_requests.jsonl"
HELDOUT = ROOT / "tests" / "data" / "heldout_requests.jsonl"
REPEAT = 30


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def acc(rows: list[dict]) -> str:
    if not rows:
        return "n/a"
    ok = sum(r["predicted"] == r["task_type"] for r in rows)
    return f"{ok / len(rows):.3f} ({ok}/{len(rows)})"


def confusion(rows: list[dict]) -> str:
    labels = sorted({r["task_type"] for r in rows} | {r["predicted"] for r in rows})
    lines = ["true \\ predicted".ljust(24) + "".join(f"{lab[:5]:>6}" for lab in labels)]
    for lab in labels:
        got = Counter(r["predicted"] for r in rows if r["task_type"] == lab)
        if got:
            lines.append(f"{lab:<24}" + "".join(f"{got[c]:>6}" for c in labels))
    return "\n".join(lines)


def report(name: str, rows: list[dict]) -> None:
    typed = [r for r in rows if r["task_type"] != GENERAL]
    general = [r for r in rows if r["task_type"] == GENERAL]
    print(f"{name}: {len(rows)} requests")
    print(f"  accuracy on the 11 task types:  {acc(typed)}")
    print(f"  accuracy overall:               {acc(rows)}")
    if any("hard" in r for r in rows):
        print(f"  accuracy hard:                  {acc([r for r in rows if r.get('hard')])}")
    print(f"  typed requests sent to general: {sum(r['result'].fell_back for r in typed)}")
    print(f"  general recognised:             {sum(r['result'].fell_back for r in general)}/{len(general)}")
    flagged = [r for r in rows if r["result"].uncertain]
    print(f"  reported uncertain:             {len(flagged)} (accuracy among them {acc(flagged)}, "
          f"among the rest {acc([r for r in rows if not r['result'].uncertain])})")
    print(confusion(rows))
    print()


def main(argv: list[str]) -> None:
    model = shipped_classifier_model()
    clf = Classifier(model=model)
    sets = {"labelled set": load(LABELLED), "held-out set": load(HELDOUT)}
    for rows in sets.values():
        for row in rows:
            row["result"] = clf.classify(row["text"])
            row["predicted"] = row["result"].task_type

    meta = model.meta
    print(f"model: {len(model.classes)} classes, {model.buckets:,} buckets, tf={meta.get('tf')}, C={meta.get('C')}, "
          f"trained on {meta.get('corpus_rows')} requests (seed {meta.get('seed')}); fallback threshold "
          f"{model.threshold}, uncertain below {model.uncertain_below}")
    print(f"cross-validated accuracy (template-grouped 5-fold, training corpus): {meta.get('cv_accuracy')}")
    print("  (the CV confusion matrix and per-seed figures: tools/classifier/report.json)")
    print()
    for name, rows in sets.items():
        report(name, rows)

    if any(a.startswith("--misses") for a in argv):
        for r in sets["labelled set"]:
            if r["predicted"] != r["task_type"]:
                res = r["result"]
                print(f"want {r['task_type']} got {r['predicted']} ({res.confidence:.2f}, runner-up "
                      f"{res.runner_up}): {r['text']!r}")
        print()

    texts = [r["text"] for rows in sets.values() for r in rows]
    for t in texts:  # warm up (the per-word n-gram cache)
        clf.classify(t)
    wall: list[float] = []
    cpu: list[float] = []
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for _ in range(REPEAT):
        for t in texts:
            c0, t0 = cpu_clock(), clock()
            clf.classify(t)
            wall.append((clock() - t0) / 1000.0)
            cpu.append((cpu_clock() - c0) / 1000.0)
    for label, samples in (("wall", wall), ("cpu", cpu)):
        samples.sort()
        p50 = samples[len(samples) // 2]
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        print(f"{label:>4} per call over {len(samples)} calls ({len(texts)} requests x {REPEAT}): p50 {p50:.1f} us   "
              f"p99 {p99:.1f} us   mean {statistics.fmean(samples):.1f} us   max {samples[-1]:.1f} us")

    big = "\n".join(texts) * 40
    t0 = clock()
    clf.classify(big)
    print(f"one {len(big):,}-character request: {(clock() - t0) / 1000.0:.1f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
