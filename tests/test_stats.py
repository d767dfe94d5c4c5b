"""Wilson intervals and proportion comparisons (analysis.stats).

References: scipy.stats.binomtest(...).proportion_ci(method="wilson") for the Wilson interval,
exact binomial sums for its coverage, and Newcombe (1998, Stat. Med. 17:873, table II,
method 10) for the hybrid-score interval of a difference of proportions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.stats import (
    Proportion,
    binomial_pvalue,
    collapse_fraction,
    compare_proportions,
    proportion,
    wilson_interval,
)


@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_wilson_matches_scipy(confidence):
    for n in [1, 2, 3, 7, 10, 50, 333, 1000]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            if not 0 <= k <= n:
                continue
            ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence,
                                                     method="wilson")
            lo, hi = wilson_interval(k, n, confidence)
            assert lo == pytest.approx(ref.low, abs=1e-12), (k, n)
            assert hi == pytest.approx(ref.high, abs=1e-12), (k, n)


def test_wilson_vectorised():
    k = np.array([0, 3, 10, 7])
    n = np.array([10, 10, 10, 20])
    lo, hi = wilson_interval(k, n)
    assert lo.shape == hi.shape == (4,)
    for i in range(4):
        assert (lo[i], hi[i]) == pytest.approx(wilson_interval(int(k[i]), int(n[i])), abs=1e-15)
    assert lo[0] == 0.0 and hi[2] == 1.0
    assert np.all(lo <= k / n) and np.all(k / n <= hi)


@pytest.mark.parametrize("p,n", [(0.3, 50), (0.05, 200), (0.5, 20)])
def test_wilson_coverage_is_near_nominal(p, n):
    """Exact coverage (sum of binomial probabilities of the k whose interval covers p)."""
    ks = np.arange(n + 1)
    lo, hi = wilson_interval(ks, np.full(n + 1, n))
    cover = float(np.sum(stats.binom.pmf(ks, n, p)[(lo <= p) & (p <= hi)]))
    assert 0.92 <= cover <= 0.99, cover


def test_proportion_and_collapse_fraction():
    c = np.array([True, False, True, True, False, False, False, True])
    f = collapse_fraction(c)
    assert isinstance(f, Proportion)
    assert (f.k, f.n, f.p) == (4, 8, 0.5)
    assert f.ci == pytest.approx(wilson_interval(4, 8))
    g = collapse_fraction(c, valid=np.array([True] * 6 + [False] * 2))
    assert (g.k, g.n) == (3, 6)
    assert proportion(3, 6).to_dict()["ci"] == list(g.ci)
    assert "3/6" in str(g)


def test_newcombe_published_example():
    """Newcombe 1998, table II: 56/70 vs 48/80, hybrid score interval 0.0524 to 0.3339."""
    c = compare_proportions(56, 70, 48, 80)
    assert c.diff == pytest.approx(0.2)
    assert c.ci[0] == pytest.approx(0.0524, abs=5e-5)
    assert c.ci[1] == pytest.approx(0.3339, abs=5e-5)


def test_two_proportion_z_test():
    c = compare_proportions(30, 100, 45, 100)
    pooled = 75 / 200
    z = (0.30 - 0.45) / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert c.z == pytest.approx(z)
    assert c.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))
    d = compare_proportions(45, 100, 30, 100)
    assert d.z == pytest.approx(-c.z) and d.p_value == pytest.approx(c.p_value)
    assert compare_proportions(10, 50, 20, 100).p_value == pytest.approx(1.0)
    assert compare_proportions(0, 50, 0, 80).p_value == 1.0
    assert not compare_proportions(10, 400, 200, 400).consistent(1e-3)
    assert compare_proportions(100, 400, 110, 400).consistent(1e-3)


def test_binomial_pvalue_matches_scipy():
    assert binomial_pvalue(7, 40, 0.3) == pytest.approx(stats.binomtest(7, 40, 0.3).pvalue)


@pytest.mark.parametrize("call,name", [
    (lambda: wilson_interval(5, 4), "k"),
    (lambda: wilson_interval(-1, 4), "k"),
    (lambda: wilson_interval(1, 0), "n"),
    (lambda: wilson_interval(1.5, 4), "k"),
    (lambda: wilson_interval(1, 4, confidence=1.0), "confidence"),
    (lambda: proportion(True, 4), "k"),
    (lambda: collapse_fraction(np.array([0, 1])), "collapsed"),
    (lambda: collapse_fraction(np.array([True]), valid=np.array([False])), "collapsed"),
    (lambda: binomial_pvalue(1, 4, 1.5), "p0"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
