"""Agreement between human raters: Cohen's kappa per pair of raters (pure, no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class PairAgreement:
    rater_a: str
    rater_b: str
    shared: int  # items both rated
    observed: float | None  # share of shared items with the same label
    kappa: float | None  # None: fewer than 2 shared items, or chance agreement is total (kappa undefined)


def cohen_kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items, in order: (p_o - p_e) / (1 - p_e).
    None when undefined (no items, or both raters used one and the same label throughout: p_e = 1)."""
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def pairwise(labels: Mapping[object, Mapping[str, str]]) -> list[PairAgreement]:
    """Kappa for every pair of raters over the items both rated. `labels`: item -> {rater: label}."""
    raters = sorted({r for by in labels.values() for r in by})
    out = []
    for ra, rb in combinations(raters, 2):
        both = [(by[ra], by[rb]) for by in labels.values() if ra in by and rb in by]
        a, b = [x for x, _ in both], [y for _, y in both]
        observed = sum(x == y for x, y in both) / len(both) if both else None
        out.append(PairAgreement(ra, rb, len(both), observed, cohen_kappa(a, b) if len(both) >= 2 else None))
    return out
