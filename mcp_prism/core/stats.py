"""Qualification statistics: is a candidate's acceptance rate good enough, with what confidence, and
how many more samples would decide it. Pure functions, no dependencies beyond `math`.

A point estimate is never enough: 48/50 is 96%, but the one-sided 95% lower bound of that rate is
about 88%, so 48/50 does not certify 95% (../shared/notes/evaluation.md has the worked figures).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

MAX_SAMPLES = 1000
# The team's policy by how quality was judged: a human's verdict is trusted to certify 95%, an LLM judge
# (or outcomes someone else measured) only 90% (../shared/notes/evaluation.md).
DEFAULT_THRESHOLDS: dict[str, float] = {"human": 0.95, "judge": 0.90, "automated": 0.95, "imported": 0.90}


def z_one_sided(confidence: float) -> float:
    if not 0.5 < confidence < 1:
        raise ValueError("confidence must be between 0.5 and 1")
    return NormalDist().inv_cdf(confidence)


def wilson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Wilson score lower bound of a binomial rate."""
    _check(successes, n)
    if n == 0:
        return 0.0
    z = z_one_sided(confidence)
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Bin(n, p), summed exactly (n is at most a few thousand here)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for i in range(k, n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p
                          + (n - i) * log_q)
    return min(1.0, total)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Bin(n, p)."""
    return 1.0 - binom_sf(k + 1, n, p)


def clopper_pearson_lower(successes: int, n: int, confidence: float = 0.95) -> float:
    """Exact one-sided lower bound: the smallest p with P(X >= successes | n, p) >= 1 - confidence.
    With every item passing it is (1 - confidence) ** (1 / n)."""
    _check(successes, n)
    if successes == 0 or n == 0:
        return 0.0
    alpha = 1 - confidence
    if successes == n:
        return alpha ** (1 / n)
    lo, hi = 0.0, successes / n
    for _ in range(60):  # bisection to ~1e-18: P(X >= x) rises with p
        mid = (lo + hi) / 2
        if binom_sf(successes, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def lower_bound(successes: int, n: int, confidence: float = 0.95, method: str = "clopper-pearson") -> float:
    if method == "wilson":
        return wilson_lower(successes, n, confidence)
    if method == "clopper-pearson":
        return clopper_pearson_lower(successes, n, confidence)
    raise ValueError("method must be clopper-pearson or wilson")


def samples_needed(rate: float, threshold: float, confidence: float = 0.95, *, method: str = "clopper-pearson",
                   max_n: int = MAX_SAMPLES) -> int | None:
    """The smallest n at which an observed acceptance rate of `rate` would certify `threshold`
    (None when even `max_n` samples would not, e.g. a rate at or below the threshold).

    Searched, not scanned: with k = floor(rate n) successes the bound is not monotone in n (k steps), but it
    lies between two monotone envelopes, the bound at the continuous k = rate n and at rate n - 1 (the bound
    rises with k). Exponential then binary search on those envelopes brackets the answer; only the few n
    between them are checked exactly, so the result is the one a scan from 1 would give."""
    if rate <= threshold:
        return None

    def envelope(n: int, shift: float) -> float:
        k = rate * n + 1e-9 - shift
        return _continuous_lower(k, n, confidence, method) if k > 0 else 0.0

    if envelope(max_n, 0) < threshold - 1e-12:  # the upper envelope never reaches it: no n does
        return None
    first = _first_reaching(lambda n: envelope(n, 0) >= threshold - 1e-12, max_n)
    last = _first_reaching(lambda n: envelope(n, 1) >= threshold + 1e-12, max_n) or max_n
    assert first is not None
    for n in range(max(1, first - 2), min(max_n, last + 2) + 1):  # +-2 guards the envelopes' rounding
        if lower_bound(math.floor(rate * n + 1e-9), n, confidence, method) >= threshold:
            return n
    return None


def _first_reaching(ok: Callable[[int], bool], max_n: int) -> int | None:
    """The smallest n in 1..max_n with ok(n), for a monotone ok: exponential, then binary search."""
    hi = 1
    while hi < max_n and not ok(hi):
        hi = min(hi * 2, max_n)
    if not ok(hi):
        return None
    lo = hi // 2  # ok(lo) is false (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _continuous_lower(k: float, n: int, confidence: float, method: str) -> float:
    """The one-sided lower bound with a real number of successes `k` (0 < k <= n): monotone in k and, at a
    fixed rate k/n, in n. Clopper-Pearson through the regularised incomplete beta (P(X >= k) = I_p(k, n-k+1))."""
    k = min(k, float(n))
    if method == "wilson":
        z = z_one_sided(confidence)
        p = k / n
        centre = p + z * z / (2 * n)
        margin = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
        return max(0.0, (centre - margin) / (1 + z * z / n))
    if method != "clopper-pearson":
        raise ValueError("method must be clopper-pearson or wilson")
    alpha = 1 - confidence
    lo, hi = 0.0, k / n
    for _ in range(60):
        mid = (lo + hi) / 2
        if _betainc(k, n - k + 1, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast on this side only
        return 1.0 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 10_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f / a


@dataclass(frozen=True, slots=True)
class Qualification:
    n: int
    acceptable: int
    rate: float
    lower_bound: float
    threshold: float
    confidence: float
    qualified: bool
    # When not qualified: how many samples in all would certify the threshold if the observed rate
    # held (None: it cannot, at this rate) — "add N more" is this minus n.
    samples_needed: int | None
    method: str = "clopper-pearson"

    @property
    def more_needed(self) -> int | None:
        if self.qualified or self.samples_needed is None:
            return None
        return max(self.samples_needed - self.n, 1)

    def summary(self) -> str:
        head = (f"{self.acceptable}/{self.n} acceptable ({self.rate:.1%}); {self.confidence:.0%} lower bound "
                f"{self.lower_bound:.1%} vs threshold {self.threshold:.0%}")
        if self.qualified:
            return f"{head}: qualifies"
        if self.more_needed is not None:
            return f"{head}: not yet — about {self.more_needed} more samples at this rate would decide it"
        if self.rate > self.threshold:
            return f"{head}: not decided — at this rate it would take more than {MAX_SAMPLES} samples"
        return f"{head}: does not qualify (the observed rate is not above the threshold)"


def qualify(acceptable: int, n: int, threshold: float, confidence: float = 0.95, *,
            method: str = "clopper-pearson") -> Qualification:
    """Qualified only when the one-sided lower confidence bound clears the threshold."""
    _check(acceptable, n)
    if not 0 < threshold < 1:
        raise ValueError("threshold must be between 0 and 1")
    rate = acceptable / n if n else 0.0
    lb = lower_bound(acceptable, n, confidence, method)
    ok = n > 0 and lb >= threshold
    need = None if ok else samples_needed(rate, threshold, confidence, method=method)
    return Qualification(n, acceptable, rate, lb, threshold, confidence, ok, need, method)


def max_failures_to_certify(n: int, threshold: float, confidence: float = 0.95) -> int | None:
    """How many failures n samples may contain and still certify `threshold` (None: not even zero)."""
    for failures in range(n + 1):
        if clopper_pearson_lower(n - failures, n, confidence) < threshold:
            return failures - 1 if failures else None
    return n


# ---------------------------------------------------------------- paired comparison
def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value on the discordant pairs: b = only A acceptable, c = only B."""
    if b < 0 or c < 0:
        raise ValueError("counts must be >= 0")
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2 * binom_cdf(min(b, c), m, 0.5))


def non_inferior(b: int, c: int, n: int, margin: float, confidence: float = 0.95) -> tuple[bool, float, float]:
    """Is B no worse than A by more than `margin` (paired, n items; b = A-only wins, c = B-only wins)?
    Returns (accepted, difference d = (c - b)/n, its lower bound)."""
    if n <= 0 or b + c > n:
        raise ValueError("need n >= b + c > 0 items")
    d = (c - b) / n
    se = math.sqrt(max(b + c - (c - b) ** 2 / n, 0.0)) / n
    low = d - z_one_sided(confidence) * se
    return low > -margin, d, low


# ---------------------------------------------------------------- sequential test
@dataclass(slots=True)
class SPRT:
    """Wald's sequential probability ratio test of p0 (not good enough) against p1 (good), so an
    experiment can stop early without inflating its error rates."""

    p0: float = 0.90
    p1: float = 0.97
    alpha: float = 0.05
    beta: float = 0.05
    cap: int = 100
    llr: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.p0 < self.p1 < 1:
            raise ValueError("need 0 < p0 < p1 < 1")

    @property
    def accept_at(self) -> float:
        return math.log((1 - self.beta) / self.alpha)

    @property
    def reject_at(self) -> float:
        return math.log(self.beta / (1 - self.alpha))

    def add(self, acceptable: bool) -> str:
        self.n += 1
        if acceptable:
            self.llr += math.log(self.p1 / self.p0)
        else:
            self.llr += math.log((1 - self.p1) / (1 - self.p0))
        return self.decision

    @property
    def decision(self) -> str:
        """accept | reject | continue | undecided (the cap was reached)."""
        if self.llr >= self.accept_at:
            return "accept"
        if self.llr <= self.reject_at:
            return "reject"
        return "undecided" if self.n >= self.cap else "continue"


def _check(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
