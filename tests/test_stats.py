"""Qualification statistics against the worked figures in ../shared/notes/evaluation.md and textbook values."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_prism.core.stats import (
    SPRT,
    binom_cdf,
    clopper_pearson_lower,
    lower_bound,
    max_failures_to_certify,
    mcnemar_exact,
    non_inferior,
    qualify,
    samples_needed,
    wilson_lower,
)


def test_clopper_pearson_with_every_item_passing_is_alpha_to_the_one_over_n() -> None:
    for n in (10, 50, 60, 100):
        assert clopper_pearson_lower(n, n) == pytest.approx(0.05 ** (1 / n))


@pytest.mark.parametrize(("n", "threshold", "failures"), [
    (50, 0.90, 1), (50, 0.95, None),  # 50 samples can never certify 95%
    (60, 0.90, 1), (60, 0.95, 0),
    (100, 0.90, 4), (100, 0.95, 1),
])
def test_how_many_failures_a_sample_size_tolerates(n: int, threshold: float, failures: int | None) -> None:
    assert max_failures_to_certify(n, threshold) == failures


def test_clopper_pearson_matches_the_binomial_tail_it_inverts() -> None:
    # the bound p solves P(X >= x | n, p) = alpha
    for x, n in ((48, 50), (95, 100), (7, 10), (1, 3)):
        p = clopper_pearson_lower(x, n)
        assert 1 - binom_cdf(x - 1, n, p) == pytest.approx(0.05, abs=1e-9)


def test_wilson_textbook_value() -> None:
    # 48/50, one-sided 95% (z = 1.645): ~0.886
    assert wilson_lower(48, 50) == pytest.approx(0.8861, abs=5e-4)
    assert wilson_lower(0, 10) == 0.0


def test_48_of_50_is_96_percent_but_does_not_certify_95() -> None:
    q = qualify(48, 50, 0.95)
    assert q.rate == 0.96 and not q.qualified and q.lower_bound < 0.90
    assert "not decided" in q.summary() or "more samples" in q.summary()


def test_qualification_and_the_samples_needed_advice() -> None:
    assert qualify(58, 60, 0.90).qualified is False  # 2 failures at n=60 is one too many for 90%
    assert qualify(59, 60, 0.90).qualified is True
    q = qualify(48, 50, 0.90)
    assert not q.qualified and q.samples_needed is not None and q.more_needed == q.samples_needed - 50
    # at the observed rate, the advised size does certify the threshold
    n = q.samples_needed
    assert qualify(math.floor(0.96 * n + 1e-9), n, 0.90).qualified
    assert qualify(40, 50, 0.90).samples_needed is None  # 80% can never certify 90%
    assert "does not qualify" in qualify(40, 50, 0.90).summary()


def test_samples_needed_for_a_perfect_record() -> None:
    assert samples_needed(1.0, 0.95) == 59  # 0.05 ** (1/59) > 0.95 > 0.05 ** (1/58)
    assert samples_needed(1.0, 0.90) == 29


def test_mcnemar_exact() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(5, 5) == 1.0


def test_non_inferiority() -> None:
    ok, d, low = non_inferior(b=2, c=2, n=100, margin=0.05)
    assert ok and d == 0
    ok, d, low = non_inferior(b=12, c=1, n=60, margin=0.05)
    assert not ok and d < 0 and low < -0.05


def test_sprt_steps_and_decisions() -> None:
    s = SPRT()
    assert math.log(s.p1 / s.p0) == pytest.approx(0.0749, abs=1e-4)
    assert math.log((1 - s.p1) / (1 - s.p0)) == pytest.approx(-1.204, abs=1e-3)
    assert s.accept_at == pytest.approx(2.944, abs=1e-3)
    decisions = [s.add(True) for _ in range(40)]
    assert decisions[-1] == "accept" and decisions.index("accept") == 39  # 40 * 0.0749 >= 2.944
    s = SPRT()
    assert [s.add(False) for _ in range(3)][-1] == "reject"
    s = SPRT(cap=5)
    assert [s.add(True) for _ in range(5)][-1] == "undecided"


@given(st.integers(1, 200).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_bounds_are_below_the_rate_and_ordered(xn: tuple[int, int]) -> None:
    x, n = xn
    cp, w = clopper_pearson_lower(x, n), wilson_lower(x, n)
    assert 0 <= cp <= x / n + 1e-12 and 0 <= w <= x / n + 1e-12
    if x < n:
        assert clopper_pearson_lower(x + 1, n) >= cp


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError):
        qualify(5, 4, 0.9)
    with pytest.raises(ValueError):
        qualify(1, 2, 1.5)


def _scan(rate: float, threshold: float, confidence: float, method: str, max_n: int) -> int | None:
    """The definition, scanned: the smallest n whose floor(rate n) successes certify the threshold."""
    if rate <= threshold:
        return None
    for n in range(1, max_n + 1):
        if lower_bound(math.floor(rate * n + 1e-9), n, confidence, method) >= threshold:
            return n
    return None


@pytest.mark.parametrize("method", ["clopper-pearson", "wilson"])
def test_samples_needed_searches_yet_matches_the_scan(method: str) -> None:
    for rate in (1.0, 0.99, 0.97, 0.96, 0.95, 0.93, 0.9, 0.85, 0.75):
        for threshold in (0.95, 0.9, 0.85, 0.8, 0.7):
            for confidence in (0.9, 0.95):
                want = _scan(rate, threshold, confidence, method, 300)
                assert samples_needed(rate, threshold, confidence, method=method, max_n=300) == want, \
                    (rate, threshold, confidence)


def test_samples_needed_near_the_threshold_answers() -> None:
    # issue 12.13: this took 12.5 s of CPU scanning n (a bisection each); the search answers at once
    assert samples_needed(0.50, 0.49) is None  # it would take ~25,000 samples, past MAX_SAMPLES
    assert samples_needed(0.50, 0.49, max_n=100_000) is not None
