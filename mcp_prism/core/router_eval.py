"""Per-request strong/weak routing learned from outcomes, and the routing literature's metrics.

Pure python (no numpy in the product's dependencies), deterministic for a seed. The router is a
logistic regression over hashed word/bigram features of the prompt plus a few length/number features,
predicting P(the weak model is as good as the strong one on this prompt); prompts it doubts go to the
strong model first. Metrics follow RouteLLM (../shared/notes/anchors.md):

- PGR at a strong-call share = (q_router - q_weak) / (q_strong - q_weak)
- APGR = area under PGR over the strong-call share (trapezoids from 0 to 1); a random router has 0.5
- CPT(x) = the smallest strong-call share whose PGR reaches x
- cost cut at 95% = 1 - cost / cost(always strong) at the smallest share whose mean quality is at least
  95% of the strong model's
"""

from __future__ import annotations

import itertools
import math
import random
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from mcp_prism.core import learned_router as lr
from mcp_prism.core.learned_router import Example

# RouteLLM's published figures (anchors.md): cost cut at 95% of GPT-4 quality, and APGR on MT-Bench.
PUBLISHED = {
    "mt-bench": "RouteLLM: -85% cost at 95% of GPT-4 quality; APGR about 0.80",
    "gsm8k": "RouteLLM: -35% cost at 95% of GPT-4 quality",
    "mmlu": "RouteLLM: -45% cost at 95% of GPT-4 quality",
}
HASH_BITS = 14
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?")


# ---------------------------------------------------------------- features and model
def features(text: str, group: str | None = None, bits: int = HASH_BITS) -> dict[int, float]:
    """Sparse features: L2-normalised hashed unigrams and bigrams (crc32: stable across processes,
    unlike hash()), plus length, number count and the group; index 0 is the bias."""
    words = ["<num>" if w[0].isdigit() else w for w in _TOKEN.findall(text.lower())]
    mask = (1 << bits) - 1
    counts: dict[int, float] = {}
    grams = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
    for g in grams:
        k = 8 + (zlib.crc32(g.encode()) & mask)
        counts[k] = counts.get(k, 0.0) + 1.0
    norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
    out = {k: v / norm for k, v in counts.items()}
    numbers = sum(1 for w in words if w == "<num>")
    out[0] = 1.0
    out[1] = math.log1p(len(text)) / 8
    out[2] = math.log1p(len(words)) / 6
    out[3] = math.log1p(numbers) / 3
    out[4] = text.count("?") / 3
    out[5] = min(text.count("\n"), 20) / 20
    if group:
        out[8 + (zlib.crc32(f"__group={group}".encode()) & mask)] = 1.0
    return out


@dataclass(slots=True)
class LogisticRouter:
    """Logistic regression trained by seeded SGD with L2; `predict` is P(weak is as good as strong)."""

    weights: dict[int, float] = field(default_factory=dict)
    epochs: int = 30
    rate: float = 0.1
    l2: float = 1e-3

    def fit(self, xs: Sequence[dict[int, float]], ys: Sequence[int], seed: int = 0) -> LogisticRouter:
        rng = random.Random(seed)
        order = list(range(len(xs)))
        w = self.weights
        step = 0
        for _ in range(self.epochs):
            rng.shuffle(order)
            for i in order:
                step += 1
                lr = self.rate / math.sqrt(1 + step / len(order))
                g = _sigmoid(sum(w.get(k, 0.0) * v for k, v in xs[i].items())) - ys[i]
                for k, v in xs[i].items():
                    w[k] = w.get(k, 0.0) * (1 - lr * self.l2) - lr * g * v
        return self

    def predict(self, x: dict[int, float]) -> float:
        return _sigmoid(sum(self.weights.get(k, 0.0) * v for k, v in x.items()))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


# ---------------------------------------------------------------- curve and metrics
@dataclass(frozen=True, slots=True)
class CurvePoint:
    strong_share: float  # share of prompts sent to the strong model
    quality: float  # mean score of the routed answers
    pgr: float
    cost: Decimal | None


@dataclass(frozen=True, slots=True)
class Curve:
    points: tuple[CurvePoint, ...]  # strong shares 0, 1/n, ..., 1
    q_weak: float
    q_strong: float

    @property
    def apgr(self) -> float:
        pts = self.points
        return sum((b.strong_share - a.strong_share) * (a.pgr + b.pgr) / 2 for a, b in itertools.pairwise(pts))

    def cpt(self, target: float) -> float | None:
        """The smallest strong-call share whose PGR reaches `target` (None: never)."""
        return next((p.strong_share for p in self.points if p.pgr >= target - 1e-12), None)

    def at_quality(self, share_of_strong: float) -> CurvePoint | None:
        """The first point whose quality is at least `share_of_strong` of the strong model's."""
        goal = share_of_strong * self.q_strong
        return next((p for p in self.points if p.quality >= goal - 1e-12), None)

    def cost_cut(self, point: CurvePoint | None) -> float | None:
        full = self.points[-1].cost
        if point is None or point.cost is None or not full:
            return None
        return float(1 - point.cost / full)


def routing_curve(examples: Sequence[Example], p_weak_ok: Sequence[float]) -> Curve:
    """Send prompts to the strong model in order of increasing P(weak ok) (ties by position), one more
    at a time; each prefix is one threshold of the router. Raises ValueError when the strong model is
    not better than the weak one on these examples (PGR is undefined)."""
    n = len(examples)
    if n == 0 or len(p_weak_ok) != n:
        raise ValueError("need one probability per example, and at least one example")
    order = sorted(range(n), key=lambda i: (p_weak_ok[i], i))
    q_weak = sum(e.weak_score for e in examples) / n
    q_strong = sum(e.strong_score for e in examples) / n
    gap = q_strong - q_weak
    if gap <= 0:
        raise ValueError(f"the strong model is not better than the weak one here (mean {q_strong:.3f} vs "
                         f"{q_weak:.3f}): the performance gap PGR measures does not exist")
    priced = all(e.weak_cost is not None and e.strong_cost is not None for e in examples)
    total = sum(e.weak_score for e in examples)
    cost: Decimal | None = sum((e.weak_cost for e in examples), Decimal(0)) if priced else None  # type: ignore[misc]
    pts = [CurvePoint(0.0, q_weak, 0.0, cost)]
    for k, i in enumerate(order, start=1):
        e = examples[i]
        total += e.strong_score - e.weak_score
        if cost is not None:
            cost += e.strong_cost - e.weak_cost  # type: ignore[operator]
        q = total / n
        pts.append(CurvePoint(k / n, q, (q - q_weak) / gap, cost))
    return Curve(tuple(pts), q_weak, q_strong)


@dataclass(frozen=True, slots=True)
class RouterEvaluation:
    method: str  # how train/test were split, in words
    n: int
    n_test: int
    weak_ok_rate: float  # share of test prompts where the weak model is as good as the strong one
    curve: Curve
    apgr_random: float  # mean APGR of seeded random routers on the same test outcomes
    apgr_oracle: float  # the router that knows the outcomes
    tolerance: float

    @property
    def apgr(self) -> float:
        return self.curve.apgr


def oracle_scores(examples: Sequence[Example]) -> list[float]:
    """The router that knows the outcomes: strong-better prompts first, weak-better ones last."""
    return [e.weak_score - e.strong_score for e in examples]


def random_apgr(examples: Sequence[Example], seed: int, trials: int = 100) -> float:
    rng = random.Random(seed)
    total = 0.0
    for _ in range(trials):
        total += routing_curve(examples, [rng.random() for _ in examples]).apgr
    return total / trials


def _train_predict(train: Sequence[Example], test: Sequence[Example], seed: int, tolerance: float) -> list[float]:
    """P(weak ok)-like scores of the test prompts (low = send to the strong model first): the negated
    hardness of a router fitted on `train` (its labeling chosen by cross-validation on `train`)."""
    router = lr.train(train, tolerance=tolerance, seed=seed, folds=min(5, max(2, len(train) // 4)))
    return [-router.hardness(e.text, e.group) for e in test]


def evaluate_router(examples: Sequence[Example], *, seed: int = 0, train_share: float = 0.5,
                    folds: int | None = None, tolerance: float = 0.0) -> RouterEvaluation:
    """Train on a seeded `train_share` split and evaluate on the rest, or (with `folds`) score every
    example out of fold by k-fold cross-validation — the choice for small sets like MT-Bench's 80."""
    n = len(examples)
    rng = random.Random(seed)
    idx = list(range(n))
    rng.shuffle(idx)
    if folds:
        if not 2 <= folds <= n:
            raise ValueError(f"folds must be between 2 and the number of examples ({n})")
        scores = [0.0] * n
        for f in range(folds):
            held = idx[f::folds]
            held_set = set(held)
            train = [examples[i] for i in idx if i not in held_set]
            for i, p in zip(held, _train_predict(train, [examples[i] for i in held], seed + f, tolerance),
                            strict=True):
                scores[i] = p
        test, method = list(examples), f"{folds}-fold cross-validation (every prompt scored out of fold)"
    else:
        if not 0 < train_share < 1:
            raise ValueError("train_share must be between 0 and 1")
        cut = round(n * train_share)
        if cut < 1 or cut >= n:
            raise ValueError(f"a {train_share:.0%} split of {n} examples leaves no training or test prompts")
        train, test = [examples[i] for i in idx[:cut]], [examples[i] for i in idx[cut:]]
        scores = _train_predict(train, test, seed, tolerance)
        method = f"seeded split: {len(train)} training, {len(test)} test prompts (seed {seed})"
    curve = routing_curve(test, scores)
    return RouterEvaluation(
        method=method, n=n, n_test=len(test),
        weak_ok_rate=sum(e.weak_ok(tolerance) for e in test) / len(test),
        curve=curve, apgr_random=random_apgr(test, seed), apgr_oracle=routing_curve(test, oracle_scores(test)).apgr,
        tolerance=tolerance)


# ---------------------------------------------------------------- honest: thresholds chosen out of sample
@dataclass(frozen=True, slots=True)
class SeedResult:
    """One seed's cross-fitting: every prompt routed by a router (labeling and threshold included) trained
    and calibrated without it."""

    seed: int
    quality_kept: float | None  # routed mean quality / always-strong mean quality, on held-out prompts
    cost_cut: float | None
    strong_share: float
    apgr: float | None  # of the held-out hardness scores (threshold-free)
    modes: dict[str, int]  # labeling chosen per outer fold
    cv_apgr: dict[str, float]  # per labeling: inner cross-validation APGR, mean over the outer folds


@dataclass(frozen=True, slots=True)
class OutOfSample:
    target: float
    tolerance: float
    use_group: bool
    margin_z: float
    outer_folds: int
    inner_folds: int
    n: int
    duplicates: int  # prompts whose normalised text repeats another's (kept on one side of every split)
    seeds: tuple[SeedResult, ...]

    def stat(self, name: str) -> tuple[float, float, float] | None:
        """(mean, min, max) of a per-seed figure over the seeds."""
        vals = [getattr(s, name) for s in self.seeds if getattr(s, name) is not None]
        return (sum(vals) / len(vals), min(vals), max(vals)) if vals else None

    @property
    def met_target(self) -> int:
        return sum(1 for s in self.seeds if s.quality_kept is not None and s.quality_kept >= self.target - 1e-12)


def evaluate_out_of_sample(examples: Sequence[Example], *, seeds: Sequence[int] = (0, 1, 2, 3, 4),
                           target: float = 0.95, tolerance: float = 0.0, use_group: bool = False,
                           outer_folds: int = 5, inner_folds: int = 5, margin_z: float = 0.0,
                           modes: Sequence[lr.Mode] = lr.MODES, tfidf: bool = True) -> OutOfSample:
    """Cross-fitting per seed: split the prompts into `outer_folds` (duplicates kept together); for each,
    train a router on the rest — its labeling and threshold picked by `inner_folds` cross-validation on that
    rest only — and route the held-out fold with the frozen threshold. The figures are what the routing did
    on held-out prompts; nothing is read off a test curve."""
    n = len(examples)
    keys = [lr.normalised(e.text) for e in examples]
    duplicates = n - len(set(keys))
    out: list[SeedResult] = []
    for seed in seeds:
        hardness = [0.0] * n
        strong = [False] * n
        chosen: dict[str, int] = {}
        cv: dict[str, list[float]] = {}
        for f, held in enumerate(lr._folds(n, outer_folds, seed, keys)):
            held_set = set(held)
            router = lr.train([examples[i] for i in range(n) if i not in held_set], target=target,
                              tolerance=tolerance, use_group=use_group, seed=seed * 100 + f, folds=inner_folds,
                              margin_z=margin_z, modes=modes, tfidf=tfidf)
            chosen[router.mode] = chosen.get(router.mode, 0) + 1
            for m, v in (router.calibration.apgr if router.calibration else {}).items():
                if v is not None:
                    cv.setdefault(m, []).append(v)
            for i in held:
                strong[i], hardness[i] = router.needs_strong(examples[i].text, examples[i].group)
        # Route by the per-fold decisions: a threshold of 0.5 on 0/1 reproduces them exactly.
        done = lr.route_outcomes(examples, [float(s) for s in strong], 0.5)
        out.append(SeedResult(seed=seed, quality_kept=done.quality_kept, cost_cut=done.cost_cut,
                              strong_share=done.strong_share, apgr=lr.apgr(examples, hardness), modes=chosen,
                              cv_apgr={m: sum(v) / len(v) for m, v in cv.items()}))
    return OutOfSample(target=target, tolerance=tolerance, use_group=use_group, margin_z=margin_z,
                       outer_folds=outer_folds, inner_folds=inner_folds, n=n, duplicates=duplicates, seeds=tuple(out))
