"""Sidecar checks of the figure jobs ``pi_A_trainable`` and ``kl_vs_M`` (quick reproduce run).

Expectations are derived here, independently of the code under test:

* Wilson 95% interval recomputed from (k, n) with the closed form;
* KL(q || p) >= 0 and, at s = Delta, the state-independent constant
  (d/2)(s/Delta - 1 - log(s/Delta)) vanishes;
* M = K = 2 split state with equal weights: q = p exactly, so KL = 0;
* a state whose components sit exactly on the target means, with W_a the total weight on mode a,
  has KL <= KL(W || pi) (data processing: the marginal KL is at most the KL of the joint over
  (component, x) with p's mass on mode a shared among its components in proportion to w), and a
  stable fixed point is a local minimum next to that state, so KL_fp <= KL(W || pi): log 2 for
  the collapsed M = 2 state, (2/3) log(4/3) + (1/3) log(2/3) for the 2+1 state at M = 3;
* the collapsed state with both means at mu_1 has, with x = mu_1 + z,
  log p(x)/q(x) = -log 2 + log(1 + exp(-2A - 2 sqrt(A) g)), g ~ N(0, 1), so
  KL(mu_1) = log 2 - E log(1 + exp(-2A - 2 sqrt(A) g)) (quadrature below) -> log 2; the fixed
  point lies below it and, its displacement from mu_1 being driven by the same exponentially
  small tail, within that tail of it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

Z95 = 1.959963984540054


def _wilson(k: int, n: int) -> tuple[float, float]:
    p = k / n
    den = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / den
    return centre - half, centre + half


def _load(quick_figures, name):
    path = quick_figures / f"{name}.json"
    assert path.exists(), f"{name}.json missing from the quick reproduce run"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def trainable(quick_figures):
    return _load(quick_figures, "pi_A_trainable")


@pytest.fixture(scope="module")
def kl(quick_figures):
    return _load(quick_figures, "kl_vs_M")


def test_trainable_counts_and_wilson(trainable):
    assert trainable["spec"]["family"]["train_weights"] is True
    n = np.asarray(trainable["n"])
    assert n.shape == (len(trainable["pi_1"]), len(trainable["A"]))
    assert (n == trainable["plan"]["draws"]).all()
    for key in ("collapse", "alignment", "vanishing"):
        k = np.asarray(trainable[f"k_{key}"])
        p = np.asarray(trainable[f"p_{key}"])
        ci = np.asarray(trainable[f"ci_{key}"])
        assert ((0 <= k) & (k <= n)).all()
        np.testing.assert_allclose(p, k / n)
        for idx in np.ndindex(k.shape):
            lo, hi = _wilson(int(k[idx]), int(n[idx]))
            np.testing.assert_allclose(ci[idx], [lo, hi], atol=1e-9)
            assert lo - 1e-12 <= p[idx] <= hi + 1e-12
    ka, kv, kc = (np.asarray(trainable[f"k_{x}"]) for x in ("alignment", "vanishing", "collapse"))
    # the two mechanisms are exclusive and each is a collapse
    assert (ka + kv <= kc).all()
    assert (np.asarray(trainable["p_alignment"]) + np.asarray(trainable["p_vanishing"])
            <= 1 + 1e-12).all()


def test_trainable_imbalance_promotes_collapse(trainable):
    """The heavier mode attracts both components more often: P(collapse) at the largest pi_1
    exceeds that at pi_1 = 1/2 beyond both Wilson intervals, at every A."""
    pis = trainable["pi_1"]
    i0, i1 = int(np.argmin(pis)), int(np.argmax(pis))
    assert pis[i0] == pytest.approx(0.5) and pis[i1] >= 0.8
    ci = np.asarray(trainable["ci_collapse"])
    for j in range(len(trainable["A"])):
        assert ci[i0, j, 1] < ci[i1, j, 0], (trainable["A"][j], ci[i0, j], ci[i1, j])


def _kl_weights(W, pi):
    return sum(w * math.log(w / p) for w, p in zip(W, pi) if w > 0)


def _kl_collapsed_on_mean(A: float) -> float:
    from scipy import integrate
    r = math.sqrt(A)

    def f(g):
        return np.logaddexp(0.0, -2 * A - 2 * r * g) * math.exp(-g * g / 2) / math.sqrt(2 * math.pi)
    return math.log(2) - integrate.quad(f, -np.inf, np.inf, epsabs=1e-14, limit=200)[0]


def test_kl_rows_physical(kl):
    rows = kl["rows"]
    assert {r["M"] for r in rows} == {2, 3}
    d = kl["plan"]["d"]
    for r in rows:
        # simplex preset: s = Delta = 1, so the constant (d/2)(s/Delta - 1 - log(s/Delta)) is 0
        assert r["constant"] == pytest.approx(0.0, abs=1e-9 * d)
        assert r["kl"] == pytest.approx(r["objective"] + r["constant"])
        assert r["kl"] >= -1e-10
        occ = [int(c) for c in r["occupancy"].split("+")]
        assert sum(occ) == r["M"]
        W = [c / r["M"] for c in occ]           # fixed equal weights 1/M
        assert r["kl"] <= _kl_weights(W, [0.5, 0.5]) + 1e-9


def test_kl_split_state_is_exact_at_M2(kl):
    split = [r for r in kl["rows"] if r["M"] == 2 and r["label"] == "split"]
    assert {r["A"] for r in split} == set(kl["plan"]["As"]), "a split state missing at M = 2"
    for r in split:
        assert abs(r["kl"]) < 1e-9, r


def test_kl_collapsed_approaches_log2(kl):
    coll = sorted((r for r in kl["rows"] if r["M"] == 2 and r["label"] == "collapsed"),
                  key=lambda r: r["A"])
    # at beta = 1 the stable collapsed state is born in a fold near A = 5.5 (stability diagram)
    found = {r["A"] for r in coll}
    assert {A for A in kl["plan"]["As"] if A >= 9} <= found, found
    assert not {A for A in found if A <= 4}, found
    gaps = []
    for r in coll:
        ref = _kl_collapsed_on_mean(r["A"])
        tail = math.log(2) - ref
        assert r["kl"] <= ref + 1e-9
        assert ref - r["kl"] <= tail
        gaps.append(math.log(2) - r["kl"])
    assert all(g > 0 for g in gaps)
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-3


def test_kl_split_M3_tends_to_weight_kl(kl):
    """M = 3, weights 1/3: the 2+1 split state costs KL(W || pi), W = (2/3, 1/3), as A grows."""
    split3 = sorted((r for r in kl["rows"] if r["M"] == 3 and r["label"] == "split"),
                    key=lambda r: r["A"])
    assert split3 and all(r["occupancy"] == "2+1" for r in split3)
    target = _kl_weights([2 / 3, 1 / 3], [0.5, 0.5])
    assert split3[-1]["A"] >= 16
    assert target - 1e-3 < split3[-1]["kl"] <= target + 1e-9
