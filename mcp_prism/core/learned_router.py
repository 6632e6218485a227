"""A learned per-request router: which prompts of one task type need the strong model.

Pure python (no numpy in the product's dependencies), deterministic for a seed, and cheap to apply:
scoring one prompt reads at most `MAX_CHARS` characters and touches a few hundred weights, well inside
route_task's 1 ms budget (benchmarks/bench_route.py).

Features: sublinear TF-IDF of hashed word unigrams and bigrams (1 + log tf, times the idf learned on
the training prompts, L2-normalised), a few length/number signals and, optionally, the category (a task
type known at routing time). Two labelings, picked by cross-validation on the training data only:

- `ok`: binary, P(the weak model is as good as the strong one, within `tolerance`); hardness = 1 - P;
- `gap`: three classes of strong - weak (weak better / within tolerance / strong better);
  hardness = P(strong better) - P(weak better).

A request goes to the strong model when its hardness is >= the threshold. The threshold is frozen on
out-of-fold scores of the training data (the calibration set): the lowest strong-call share whose
out-of-fold mean quality reaches `target` of the strong model's. It is never chosen on the data the
router is judged on.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

BITS = 14
DENSE = 8  # indices below this are dense features; hashed grams start here
MAX_CHARS = 4_000  # the router reads the head of a prompt: bounded cost per request
FORMAT = 1
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?")
Mode = Literal["ok", "gap"]
MODES: tuple[Mode, ...] = ("ok", "gap")


@dataclass(frozen=True, slots=True)
class Example:
    """One prompt with both models' outcomes (a 0/1 correctness or a 1-10 score) and costs."""

    text: str
    weak_score: float
    strong_score: float
    weak_cost: Decimal | None = None
    strong_cost: Decimal | None = None
    group: str | None = None  # a task type / category, known at routing time: used as a feature

    def weak_ok(self, tolerance: float = 0.0) -> bool:
        return self.weak_score >= self.strong_score - tolerance

    def gap_class(self, tolerance: float = 0.0) -> int:
        """0: the weak model is better, 1: within tolerance, 2: the strong model is better."""
        d = self.strong_score - self.weak_score
        return 2 if d > tolerance else 0 if d < -tolerance else 1


# ---------------------------------------------------------------- features
def grams(text: str, bits: int = BITS) -> dict[int, int]:
    """Hashed unigram and bigram counts of the head of `text` (crc32: stable across processes)."""
    words = ["<num>" if w[0].isdigit() else w for w in _TOKEN.findall(text[:MAX_CHARS].lower())]
    mask = (1 << bits) - 1
    counts: dict[int, int] = {}
    for g in itertools.chain(words, (f"{a} {b}" for a, b in itertools.pairwise(words))):
        k = DENSE + (zlib.crc32(g.encode()) & mask)
        counts[k] = counts.get(k, 0) + 1
    return counts


def dense(text: str) -> dict[int, float]:
    head = text[:MAX_CHARS]
    words = _TOKEN.findall(head.lower())
    return {0: 1.0, 1: math.log1p(len(text)) / 8, 2: math.log1p(len(words)) / 6,
            3: math.log1p(sum(1 for w in words if w[0].isdigit())) / 3, 4: min(head.count("?"), 9) / 3,
            5: min(head.count("\n"), 20) / 20}


def group_index(group: str, bits: int = BITS) -> int:
    return DENSE + (zlib.crc32(f"__group={group}".encode()) & ((1 << bits) - 1))


def vector(counts: dict[int, int], text: str, idf: dict[int, float] | None, group: str | None,
           bits: int = BITS) -> list[tuple[int, float]]:
    """Sublinear TF-IDF of the grams (L2-normalised), then the dense signals and the group. Without an idf:
    raw counts, L2-normalised (the earlier features, kept as the measured baseline)."""
    if idf is None:
        tfidf = {k: float(c) for k, c in counts.items()}
    else:
        tfidf = {k: (1 + math.log(c)) * idf.get(k, 0.0) for k, c in counts.items()}
    norm = math.sqrt(sum(v * v for v in tfidf.values())) or 1.0
    out = [(k, v / norm) for k, v in tfidf.items() if v]
    out += dense(text).items()
    if group:
        out.append((group_index(group, bits), 1.0))
    return out


def learn_idf(docs: Sequence[dict[int, int]]) -> dict[int, float]:
    """Smoothed idf of the training prompts: log((1 + n) / (1 + df)) + 1; unseen grams weigh 0."""
    df: dict[int, int] = {}
    for d in docs:
        for k in d:
            df[k] = df.get(k, 0) + 1
    n = len(docs)
    return {k: math.log((1 + n) / (1 + c)) + 1 for k, c in df.items()}


# ---------------------------------------------------------------- models
def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


def fit_weights(xs: Sequence[list[tuple[int, float]]], ys: Sequence[int], classes: int, seed: int, *,
                epochs: int = 12, rate: float = 0.2, l2: float = 1e-4) -> list[dict[int, float]]:
    """Seeded SGD with L2: a logistic regression (classes 2: one weight vector, P(y = 1)) or a softmax
    regression (classes 3: one vector a class). Sparse weights: only features seen in training. The
    result is the average of the iterates over the second half of training (Polyak averaging): the
    last iterate of SGD wanders with the last examples seen, and a threshold frozen on one model's
    scores must mean the same on the next one's."""
    rng = random.Random(seed)
    order = list(range(len(xs)))
    heads = 1 if classes == 2 else classes
    ws: list[dict[int, float]] = [{} for _ in range(heads)]
    us: list[dict[int, float]] = [{} for _ in range(heads)]  # sum of (step - start) * update, for the average
    start = (epochs // 2) * len(order)
    step = 0
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            step += 1
            lr = rate / math.sqrt(1 + step / len(order))
            x = xs[i]
            if heads == 1:
                grads = [_sigmoid(sum(ws[0].get(k, 0.0) * v for k, v in x)) - ys[i]]
            else:
                zs = [sum(w.get(k, 0.0) * v for k, v in x) for w in ws]
                top = max(zs)
                es = [math.exp(z - top) for z in zs]
                total = sum(es)
                grads = [e / total - (c == ys[i]) for c, e in enumerate(es)]
            decay = lr * l2
            t = step - start
            for w, u, g in zip(ws, us, grads, strict=True):
                for k, v in x:
                    old = w.get(k, 0.0)
                    delta = -old * decay - lr * g * v
                    w[k] = old + delta
                    if t > 0:
                        u[k] = u.get(k, 0.0) + t * delta
    span = step - start
    if span <= 0:
        return ws
    return [{k: v - u.get(k, 0.0) / span for k, v in w.items()} for w, u in zip(ws, us, strict=True)]


def hardness_of(ws: Sequence[dict[int, float]], x: list[tuple[int, float]]) -> float:
    """How much the strong model is needed: 1 - P(weak ok) (binary) or P(strong better) - P(weak better)."""
    if len(ws) == 1:
        return 1 - _sigmoid(sum(ws[0].get(k, 0.0) * v for k, v in x))
    zs = [sum(w.get(k, 0.0) * v for k, v in x) for w in ws]
    top = max(zs)
    es = [math.exp(z - top) for z in zs]
    return (es[2] - es[0]) / sum(es)


def labels(examples: Sequence[Example], mode: Mode, tolerance: float) -> list[int]:
    if mode == "ok":
        return [int(e.weak_ok(tolerance)) for e in examples]
    return [e.gap_class(tolerance) for e in examples]


# ---------------------------------------------------------------- routing arithmetic
@dataclass(frozen=True, slots=True)
class Routed:
    """What a threshold does on scored outcomes: quality kept and cost cut against always-strong."""

    n: int
    strong_calls: int
    quality: float  # mean score of the routed answers
    quality_strong: float
    quality_weak: float
    cost: Decimal | None
    cost_strong: Decimal | None

    @property
    def strong_share(self) -> float:
        return self.strong_calls / self.n if self.n else 0.0

    @property
    def quality_kept(self) -> float | None:
        return self.quality / self.quality_strong if self.quality_strong else None

    @property
    def cost_cut(self) -> float | None:
        if self.cost is None or not self.cost_strong:
            return None
        return float(1 - self.cost / self.cost_strong)


def route_outcomes(examples: Sequence[Example], hardness: Sequence[float], threshold: float) -> Routed:
    n = len(examples)
    strong = [h >= threshold for h in hardness]
    priced = all(e.weak_cost is not None and e.strong_cost is not None for e in examples)
    cost = sum(((e.strong_cost if s else e.weak_cost) for e, s in zip(examples, strong, strict=True)),
               Decimal(0)) if priced else None
    return Routed(n=n, strong_calls=sum(strong),
                  quality=sum((e.strong_score if s else e.weak_score) for e, s in zip(examples, strong,
                                                                                      strict=True)) / n,
                  quality_strong=sum(e.strong_score for e in examples) / n,
                  quality_weak=sum(e.weak_score for e in examples) / n,
                  cost=cost, cost_strong=sum((e.strong_cost for e in examples), Decimal(0)) if priced else None)  # type: ignore[misc]


def calibrate(examples: Sequence[Example], hardness: Sequence[float], target: float, z: float = 0.0) -> float:
    """The threshold giving the fewest strong calls whose mean quality reaches `target` of the strong
    model's on these (out-of-fold) scores; the hardest prompts go to the strong model first. With `z` > 0
    the one-sided normal lower bound (mean - z * standard error of the per-prompt differences routed -
    target * strong) must reach it: a margin for the noise of the calibration set. +inf sends everything
    to the weak model (it already reaches the target); -inf everything to the strong one."""
    n = len(examples)
    order = sorted(range(n), key=lambda i: (-hardness[i], i))
    d = [e.weak_score - target * e.strong_score for e in examples]
    s1, s2 = sum(d), sum(v * v for v in d)

    def reached() -> bool:
        mean = s1 / n
        if z <= 0 or n < 2:
            return mean >= -1e-12
        var = max(s2 / n - mean * mean, 0.0) * n / (n - 1)
        return mean - z * math.sqrt(var / n) >= -1e-12

    if reached():
        return math.inf
    for k, i in enumerate(order):
        e = examples[i]
        new = e.strong_score - target * e.strong_score
        s1 += new - d[i]
        s2 += new * new - d[i] * d[i]
        if reached():
            # Between this prompt's score and the next one's, so ties below stay on the weak model.
            nxt = hardness[order[k + 1]] if k + 1 < n else -math.inf
            h = hardness[i]
            return h if nxt == h else (h + nxt) / 2 if nxt > -math.inf else h
    return -math.inf


def apgr(examples: Sequence[Example], hardness: Sequence[float]) -> float | None:
    """Area under the performance-gap-recovered curve (RouteLLM); None without a gap."""
    n = len(examples)
    q_weak = sum(e.weak_score for e in examples) / n
    gap = sum(e.strong_score for e in examples) / n - q_weak
    if gap <= 0:
        return None
    order = sorted(range(n), key=lambda i: (-hardness[i], i))
    area, total, prev = 0.0, 0.0, 0.0
    for i in order:
        total += examples[i].strong_score - examples[i].weak_score
        pgr = total / n / gap
        area += (prev + pgr) / 2 / n
        prev = pgr
    return area


# ---------------------------------------------------------------- the router
@dataclass(frozen=True, slots=True)
class Calibration:
    """What the frozen threshold did on the out-of-fold training scores (the calibration set)."""

    n: int
    target: float
    strong_share: float
    quality_kept: float | None
    cost_cut: float | None
    apgr: dict[str, float | None]  # per labeling, out of fold: how the mode was chosen
    margin_z: float = 0.0


@dataclass(frozen=True, slots=True)
class LearnedRouter:
    mode: Mode
    weights: tuple[dict[int, float], ...]
    idf: dict[int, float]
    threshold: float
    tolerance: float
    use_group: bool
    calibration: Calibration | None = None
    bits: int = BITS
    tfidf: bool = True  # False: raw counts (the baseline features)

    def hardness(self, text: str, group: str | None = None) -> float:
        x = vector(grams(text, self.bits), text, self.idf if self.tfidf else None,
                   group if self.use_group else None, self.bits)
        return hardness_of(self.weights, x)

    def needs_strong(self, text: str, group: str | None = None) -> tuple[bool, float]:
        h = self.hardness(text, group)
        return h >= self.threshold, h

    def to_json(self) -> dict[str, Any]:
        c = self.calibration
        return {
            "format": FORMAT, "bits": self.bits, "mode": self.mode, "tolerance": self.tolerance, "tfidf": self.tfidf,
            "use_group": self.use_group, "threshold": _finite(self.threshold),
            "idf": {str(k): round(v, 6) for k, v in self.idf.items()},
            "weights": [{str(k): round(v, 6) for k, v in w.items() if v} for w in self.weights],
            "calibration": None if c is None else {
                "n": c.n, "target": c.target, "strong_share": c.strong_share, "quality_kept": c.quality_kept,
                "cost_cut": c.cost_cut, "apgr": c.apgr, "margin_z": c.margin_z},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LearnedRouter:
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown router format {data.get('format')!r} (this version reads {FORMAT})")
        c = data.get("calibration")
        return cls(
            mode=data["mode"], weights=tuple({int(k): float(v) for k, v in w.items()} for w in data["weights"]),
            idf={int(k): float(v) for k, v in data["idf"].items()}, threshold=_unfinite(data["threshold"]),
            tolerance=float(data["tolerance"]), use_group=bool(data["use_group"]), bits=int(data["bits"]),
            tfidf=bool(data.get("tfidf", True)),
            calibration=None if c is None else Calibration(c["n"], c["target"], c["strong_share"],
                                                           c["quality_kept"], c["cost_cut"], c["apgr"],
                                                           c.get("margin_z", 0.0)))


def _finite(v: float) -> float | str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else v


def _unfinite(v: float | str) -> float:
    return float(v)


def _folds(n: int, k: int, seed: int, keys: Sequence[str] | None = None) -> list[list[int]]:
    """k folds of range(n), seeded; items sharing a key (a duplicate prompt) stay in one fold."""
    groups: dict[str, list[int]] = {}
    for i in range(n):
        groups.setdefault(keys[i] if keys is not None else str(i), []).append(i)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    out: list[list[int]] = [[] for _ in range(k)]
    for j, name in enumerate(names):
        out[j % k].extend(groups[name])
    return out


def normalised(text: str) -> str:
    """The duplicate key: case and whitespace folded."""
    return " ".join(text.lower().split())


def _fit_mode(xs: Sequence[list[tuple[int, float]]], examples: Sequence[Example], mode: Mode, tolerance: float,
              seed: int) -> list[dict[int, float]]:
    return fit_weights(xs, labels(examples, mode, tolerance), 2 if mode == "ok" else 3, seed)


def train(examples: Sequence[Example], *, target: float = 0.95, tolerance: float = 0.0, use_group: bool = False,
          seed: int = 0, folds: int = 5, modes: Sequence[Mode] = MODES, margin_z: float = 0.0,
          tfidf: bool = True) -> LearnedRouter:
    """Fit a router on `examples` (its training data, all of it): pick the labeling by out-of-fold APGR,
    freeze the threshold on the out-of-fold scores, then fit the chosen labeling on everything."""
    n = len(examples)
    if n < 2 * folds:
        raise ValueError(f"{n} examples are too few to train a router with {folds}-fold calibration "
                         f"(need at least {2 * folds})")
    if not 0 < target <= 1:
        raise ValueError(f"target must be a share of the strong model's quality in (0, 1], got {target}")
    counts = [grams(e.text) for e in examples]
    keys = [normalised(e.text) for e in examples]
    parts = _folds(n, folds, seed, keys)
    oof: dict[Mode, list[float]] = {m: [0.0] * n for m in modes}
    for f, held in enumerate(parts):
        held_set = set(held)
        train_idx = [i for i in range(n) if i not in held_set]
        idf = learn_idf([counts[i] for i in train_idx]) if tfidf else None
        xs = {i: vector(counts[i], examples[i].text, idf, examples[i].group if use_group else None)
              for i in range(n)}
        for m in modes:
            ws = _fit_mode([xs[i] for i in train_idx], [examples[i] for i in train_idx], m, tolerance, seed + f)
            for i in held:
                oof[m][i] = hardness_of(ws, xs[i])
    scores = {m: apgr(examples, oof[m]) for m in modes}
    mode = max(modes, key=lambda m: (scores[m] if scores[m] is not None else -1.0, m == "ok"))
    threshold = calibrate(examples, oof[mode], target, margin_z)
    done = route_outcomes(examples, oof[mode], threshold)
    idf = learn_idf(counts) if tfidf else {}
    xs_all = [vector(c, e.text, idf if tfidf else None, e.group if use_group else None)
              for c, e in zip(counts, examples, strict=True)]
    ws = _fit_mode(xs_all, examples, mode, tolerance, seed)
    return LearnedRouter(mode=mode, weights=tuple(ws), idf=idf, threshold=threshold, tolerance=tolerance,
                         use_group=use_group, tfidf=tfidf, calibration=Calibration(
                             n=n, target=target, strong_share=done.strong_share, quality_kept=done.quality_kept,
                             cost_cut=done.cost_cut, apgr=dict(scores), margin_z=margin_z))


def ratio_bounds(num: Sequence[float], den: Sequence[float], z: float = 1.959963984540054
                 ) -> tuple[float, float, float] | None:
    """sum(num) / sum(den) with a two-sided normal interval (delta method on paired items; z = 1.96 for 95%).
    None when the denominator sums to 0."""
    total = sum(den)
    if not total:
        return None
    r = sum(num) / total
    se = math.sqrt(sum((a - r * b) ** 2 for a, b in zip(num, den, strict=True))) / abs(total)
    return r, r - z * se, r + z * se


def expected(examples: Sequence[Example], router: LearnedRouter) -> dict[str, Any]:
    """What `router`, threshold frozen, does on held-out `examples`: quality kept and cost cut against
    always-strong with 95% intervals, and the share of calls sent to the strong model."""
    strong = [router.needs_strong(e.text, e.group)[0] for e in examples]
    routed = [e.strong_score if s else e.weak_score for e, s in zip(examples, strong, strict=True)]
    q = ratio_bounds(routed, [e.strong_score for e in examples])
    out: dict[str, Any] = {"n": len(examples), "strong_share": sum(strong) / len(examples) if examples else None,
                           "quality_kept": q[0] if q else None, "quality_kept_95": [q[1], q[2]] if q else None,
                           "cost_cut": None, "cost_cut_95": None}
    if all(e.weak_cost is not None and e.strong_cost is not None for e in examples):
        spent = [float(e.strong_cost if s else e.weak_cost) for e, s in zip(examples, strong, strict=True)]  # type: ignore[arg-type]
        c = ratio_bounds(spent, [float(e.strong_cost) for e in examples])  # type: ignore[arg-type]
        if c:
            out["cost_cut"], out["cost_cut_95"] = 1 - c[0], [1 - c[2], 1 - c[1]]
    return out
