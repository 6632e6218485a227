"""Train the task classifier shipped in mcp_prism/data/classifier.bin (a training-time tool: needs numpy
and scikit-learn, `pip install -e '.[train]'`; the package itself never imports them).

    python tools/classifier/train.py                     # seed 0: CV, fit, write the model
    python tools/classifier/train.py --seeds 0-4 --heldout --report tools/classifier/report.json

Per seed: the corpus is composed by make_corpus.build(seed) (seed 0 is the shipped corpus.jsonl), the
hyperparameters (SVM C, hash buckets, softmax temperature) are chosen by 5-fold cross-validation that holds out whole
templates (StratifiedGroupKFold on the `group` column, shuffled by the seed), and the fallback and
"uncertain" probability thresholds are chosen on the same out-of-fold predictions. Then the model is
fitted on the whole corpus, packed (int8 weights), and — only with --heldout — the packed model is
run through the pure-Python `Classifier` on tests/data/heldout_requests.jsonl and the repository's
labelled set. The held-out set is never used to choose anything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.svm import LinearSVC

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_corpus  # noqa: E402

from mcp_prism.core.classify import Classifier  # noqa: E402
from mcp_prism.core.tasks import GENERAL  # noqa: E402
from mcp_prism.core.text_model import TextModel, quantise_idf, text_counts  # noqa: E402

MODEL_OUT = ROOT / "mcp_prism" / "data" / "classifier.bin"
HELDOUT = ROOT / "tests" / "data" / "heldout_requests.jsonl"
LABELLED = ROOT / "tests" / "data" / "labelled_requests.jsonl"
MAX_BUCKETS = 1 << 17
GRID_C = (0.3, 1.0)
GRID_TF = ("sublinear", "binary")
TEMPERATURES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
GRID_BUCKETS = (1 << 15, 1 << 16)
FOLDS = 5
THRESHOLDS = [round(x * 0.02, 2) for x in range(0, 31)]  # 0.00 .. 0.60
# "uncertain" below u: the highest u whose band [u - BAND, u) of out-of-fold predictions was right at most
# UNRELIABLE of the time (a verdict there is about as likely wrong as right)
UNRELIABLE = 0.60
BAND = 0.10


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def count_matrix(texts: list[str]) -> sparse.csr_matrix:
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        c = text_counts(t, MAX_BUCKETS)
        rows.extend([i] * len(c))
        cols.extend(c.keys())
        vals.extend(c.values())
    return sparse.csr_matrix((np.array(vals, dtype=np.float64), (rows, cols)), shape=(len(texts), MAX_BUCKETS))


def fold_buckets(counts: sparse.csr_matrix, buckets: int) -> sparse.csr_matrix:
    """Counts at MAX_BUCKETS folded to fewer buckets (CRC & mask: the low bits are the smaller hash)."""
    if buckets == MAX_BUCKETS:
        return counts
    coo = counts.tocoo()
    out = sparse.csr_matrix((coo.data, (coo.row, coo.col & (buckets - 1))), shape=(counts.shape[0], buckets))
    out.sum_duplicates()
    return out


def fit_idf(counts: sparse.csr_matrix) -> np.ndarray:
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    return np.array(quantise_idf(idf.tolist()))


def tfidf(counts: sparse.csr_matrix, idf: np.ndarray, tf: str) -> sparse.csr_matrix:
    x = counts.copy().astype(np.float64)
    x.data = np.where(x.data > 1, 1.0 + np.log(x.data), 1.0) if tf == "sublinear" else np.ones_like(x.data)
    x = x @ sparse.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ x


def fit(counts: sparse.csr_matrix, y: np.ndarray, c: float, tf: str) -> tuple[LinearSVC, np.ndarray]:
    """A linear SVM (one-vs-rest, liblinear: seconds, where multinomial logistic regression took minutes on
    the shared 2-core machine); its scores become probabilities through a softmax with a temperature
    fitted on out-of-fold scores."""
    idf = fit_idf(counts)
    clf = LinearSVC(C=c, max_iter=5000)
    clf.fit(tfidf(counts, idf, tf), y)
    return clf, idf


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, classes: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that minimises the out-of-fold negative log-likelihood."""
    truth = np.searchsorted(classes, y)
    rows = np.arange(len(y))

    def nll(t: float) -> float:
        return float(-np.log(softmax(scores, t)[rows, truth] + 1e-12).mean())

    return min(TEMPERATURES, key=nll)


def predict_with_threshold(proba: np.ndarray, classes: np.ndarray, t: float) -> np.ndarray:
    best = proba.argmax(axis=1)
    pred = classes[best].astype(object)
    pred[proba.max(axis=1) < t] = GENERAL
    return pred


def choose_thresholds(proba: np.ndarray, classes: np.ndarray, y: np.ndarray) -> tuple[float, float, dict]:
    accs = {t: float((predict_with_threshold(proba, classes, t) == y).mean()) for t in THRESHOLDS}
    best_t = max(THRESHOLDS, key=lambda t: (accs[t], -t))
    top = proba.max(axis=1)
    right = classes[proba.argmax(axis=1)] == y
    uncertain = best_t
    for u in [round(x * 0.05, 2) for x in range(2, 19)]:  # 0.10 .. 0.90
        band = (top >= u - BAND) & (top < u)
        if band.sum() >= 10 and right[band].mean() <= UNRELIABLE:
            uncertain = max(uncertain, u)
    return best_t, uncertain, accs


def cross_validate(rows: list[dict], counts: sparse.csr_matrix, seed: int) -> dict:
    y = np.array([r["task_type"] for r in rows], dtype=object)
    groups = np.array([r["group"] for r in rows])
    splits = list(StratifiedGroupKFold(n_splits=FOLDS, shuffle=True, random_state=seed).split(counts, y, groups))
    results = {}
    folded_by = {b: fold_buckets(counts, b) for b in GRID_BUCKETS}
    for buckets, tf, c in itertools.product(GRID_BUCKETS, GRID_TF, GRID_C):
        folded = folded_by[buckets]
        oof, classes = None, None
        for train, test in splits:
            clf, idf = fit(folded[train], y[train], c, tf)
            p = clf.decision_function(tfidf(folded[test], idf, tf))
            if oof is None:
                oof = np.zeros((len(rows), len(clf.classes_)))
                classes = clf.classes_
            oof[test] = p
        acc = float((classes[oof.argmax(axis=1)] == y).mean())
        results[(buckets, tf, c)] = (acc, oof, classes)
        print(f"  seed {seed} cv buckets=2^{buckets.bit_length() - 1} tf={tf} C={c:g}: accuracy {acc:.4f}", flush=True)
    # best accuracy; ties to the smaller model, then the stronger regularisation
    (buckets, tf, c), (acc, oof, classes) = max(results.items(),
                                                key=lambda kv: (round(kv[1][0], 4), -kv[0][0], -kv[0][2]))
    temperature = fit_temperature(oof, classes, y)
    proba = softmax(oof, temperature)
    t, u, _ = choose_thresholds(proba, classes, y)
    pred = predict_with_threshold(proba, classes, t)
    return {"buckets": buckets, "C": c, "tf": tf, "temperature": temperature, "cv_accuracy_argmax": acc,
            "cv_accuracy": float((pred == y).mean()),
            "threshold": t, "uncertain_below": u, "oof_pred": pred, "y": y,
            "grid": {f"2^{b.bit_length() - 1},{tt},C={cc:g}": round(v[0], 4) for (b, tt, cc), v in results.items()}}


def confusion(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> str:
    short = [lab[:5] for lab in labels]
    lines = ["true \\ predicted".ljust(24) + "".join(f"{s:>6}" for s in short) + "   recall"]
    for lab in labels:
        mine = pred[y == lab]
        counts = Counter(mine)
        rec = counts[lab] / len(mine) if len(mine) else float("nan")
        lines.append(f"{lab:<24}" + "".join(f"{counts[c]:>6}" for c in labels) + f"   {rec:.3f}")
    return "\n".join(lines)


def train_seed(seed: int, rows: list[dict]) -> tuple[bytes, dict]:
    t0 = time.perf_counter()
    counts = count_matrix([r["text"] for r in rows])
    cv = cross_validate(rows, counts, seed)
    folded = fold_buckets(counts, cv["buckets"])
    y = np.array([r["task_type"] for r in rows], dtype=object)
    clf, idf = fit(folded, y, cv["C"], cv["tf"])
    classes = [str(c) for c in clf.classes_]
    meta = {"threshold": cv["threshold"], "uncertain_below": cv["uncertain_below"], "seed": seed,
            "C": cv["C"], "tf": cv["tf"],
            "temperature": cv["temperature"], "corpus_rows": len(rows), "cv_accuracy": round(cv["cv_accuracy"], 4)}
    # the temperature is folded into the weights: the pure-Python softmax then needs no extra step
    t = cv["temperature"]
    blob = TextModel.to_bytes(classes, cv["buckets"], idf.tolist(), (clf.coef_ / t).tolist(),
                              (clf.intercept_ / t).tolist(), meta)
    cv["seconds"] = round(time.perf_counter() - t0, 1)
    cv["classes"] = classes
    return blob, cv


def evaluate(blob: bytes, path: Path) -> dict:
    clf = Classifier(model=TextModel.from_bytes(blob))
    rows = load_jsonl(path)
    typed = [r for r in rows if r["task_type"] != GENERAL]
    general = [r for r in rows if r["task_type"] == GENERAL]
    got = [(r, clf.classify(r["text"])) for r in rows]
    per_type = Counter()
    for r, c in got:
        per_type[(r["task_type"], c.task_type == r["task_type"])] += 1
    ok_typed = sum(c.task_type == r["task_type"] for r, c in got if r["task_type"] != GENERAL)
    out = {"rows": len(rows), "typed_accuracy": round(ok_typed / len(typed), 4),
           "overall_accuracy": round(sum(c.task_type == r["task_type"] for r, c in got) / len(rows), 4),
           "fell_back_on_typed": sum(c.fell_back for r, c in got if r["task_type"] != GENERAL),
           "uncertain_on_typed": sum(c.uncertain for r, c in got if r["task_type"] != GENERAL)}
    if general:
        out["general_recognised"] = f"{sum(c.fell_back for r, c in got if r['task_type'] == GENERAL)}/{len(general)}"
    labels = sorted({r["task_type"] for r in rows})
    y = np.array([r["task_type"] for r in rows], dtype=object)
    pred = np.array([c.task_type for _, c in got], dtype=object)
    out["confusion"] = confusion(y, pred, labels)
    return out


def parse_seeds(s: str) -> list[int]:
    if "-" in s:
        a, b = s.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(x) for x in s.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0", help="e.g. 0-4 or 0,3; seed 0 is written to the package")
    ap.add_argument("--heldout", action="store_true", help="also report the frozen held-out set (at the end only)")
    ap.add_argument("--report", type=Path, help="write the figures as JSON here")
    ap.add_argument("--no-write", action="store_true", help="do not overwrite mcp_prism/data/classifier.bin")
    args = ap.parse_args()
    report: dict = {"seeds": {}}
    for seed in parse_seeds(args.seeds):
        rows = make_corpus.build(seed)
        blob, cv = train_seed(seed, rows)
        labels = sorted(set(cv["classes"]))
        entry = {k: cv[k] for k in ("buckets", "C", "tf", "temperature", "cv_accuracy_argmax", "cv_accuracy",
                                    "threshold",
                                    "uncertain_below", "grid", "seconds")}
        entry["model_bytes"] = len(blob)
        entry["cv_confusion"] = confusion(cv["y"], cv["oof_pred"], labels)
        print(f"seed {seed}: C={cv['C']:g} tf={cv['tf']} buckets={cv['buckets']} cv accuracy {cv['cv_accuracy']:.4f} "
              f"(argmax {cv['cv_accuracy_argmax']:.4f}) threshold {cv['threshold']} uncertain<{cv['uncertain_below']} "
              f"model {len(blob):,} bytes, {cv['seconds']} s")
        print(entry["cv_confusion"])
        if args.heldout:
            entry["heldout"] = evaluate(blob, HELDOUT)
            entry["labelled_set"] = evaluate(blob, LABELLED)
            for name in ("heldout", "labelled_set"):
                e = entry[name]
                print(f"  {name}: typed accuracy {e['typed_accuracy']:.4f}, overall {e['overall_accuracy']:.4f}, "
                      f"fell back on typed {e['fell_back_on_typed']}, general recognised {e.get('general_recognised')}")
            print(entry["heldout"]["confusion"])
        report["seeds"][seed] = entry
        if seed == 0 and not args.no_write:
            MODEL_OUT.write_bytes(blob)
            print(f"wrote {MODEL_OUT.relative_to(ROOT)} ({len(blob):,} bytes)")
    if args.heldout and len(report["seeds"]) > 1:
        accs = [e["heldout"]["typed_accuracy"] for e in report["seeds"].values()]
        report["heldout_typed_accuracy"] = {"mean": round(sum(accs) / len(accs), 4), "min": min(accs), "max": max(accs)}
        print(f"held-out typed accuracy over {len(accs)} seeds: mean {report['heldout_typed_accuracy']['mean']:.4f} "
              f"range {min(accs):.4f}-{max(accs):.4f}")
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
