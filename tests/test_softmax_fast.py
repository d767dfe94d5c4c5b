"""solvers.laplace (the 1-D kernel of gauss_softmax_rows for covariances D + c 1^T + 1 c^T)
against independent computations written here.

Contract (issue 9): absolute error of every E softmax entry and of E LSE <= 1e-10 for
n_eff = n - 1 <= 2, <= 1e-8 for n_eff <= 4, <= 1e-6 above.

References:
* ``laplace_ref``: the Laplace-transform form in u = e^t, ``E softmax_a = int e^t
  E[e^{v_a} e^{-e^t e^{v_a}}] prod_{b != a} E[e^{-e^t e^{v_b}}] dt`` and Frullani's
  ``E log S = int (exp(-e^t) - E e^{-e^t S}) dt``, the expectations by a composite
  Gauss-Legendre rule (6000 nodes) and the outer integral by scipy's adaptive quad_vec (the
  kernel uses the Gumbel-max form with lattice trapezoid rules and convolutions: another
  formula for L, other rules).
* n = 3: a brute-force 2-D trapezoid over the logit differences in Cholesky coordinates.
* exact special cases: equal means and variances (P = 1/n), zero variance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad_vec

from derivations.spec import orthogonal, simplex
from solvers.laplace import diag_softmax_rows, diagonal_part
from solvers.softmax import call_seconds, gauss_softmax_rows

# inner rule: Gauss-Legendre, 300 panels x 20 nodes on [-12, 12] (an independent fixed rule)
_GL_X, _GL_W = np.polynomial.legendre.leggauss(20)
_EDGES = np.linspace(-12.0, 12.0, 301)
_XQ = (0.5 * (_EDGES[1:] - _EDGES[:-1])[:, None] * _GL_X[None, :]
       + 0.5 * (_EDGES[1:] + _EDGES[:-1])[:, None]).ravel()
_WQ = ((0.5 * (_EDGES[1:] - _EDGES[:-1]))[:, None] * _GL_W[None, :]).ravel() \
    * np.exp(-0.5 * _XQ ** 2) / math.sqrt(2 * math.pi)


def laplace_ref(a: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, float]:
    """(E softmax, E LSE) of independent logits N(a_b, var_b) (module docstring)."""
    mref = a.max()
    m = a - mref
    sd = np.sqrt(var)
    e = np.exp(m[:, None] + sd[:, None] * _XQ[None, :])          # (n, nodes)

    def integrand(t: float) -> np.ndarray:
        u = math.exp(t)
        g = np.exp(-u * e)
        f0 = g @ _WQ                                              # E exp(-u e^v)
        f1 = (e * g) @ _WQ                                        # E e^v exp(-u e^v)
        tot = np.prod(f0)
        others = np.array([np.prod(np.delete(f0, c)) for c in range(a.size)])
        return np.append(u * f1 * others, math.exp(-u) - tot)

    lo, hi = -40.0 - 8 * sd.max(), 8.0 + 8 * sd.max() - m.min()
    out = quad_vec(integrand, lo, hi, epsabs=1e-14, epsrel=1e-13, limit=2000)[0]
    return out[:-1], out[-1] + mref


def _rows(A: np.ndarray, C: np.ndarray):
    A = np.ascontiguousarray(np.atleast_2d(A), dtype=float)
    P, L = np.empty_like(A), np.empty(A.shape[0])
    gauss_softmax_rows(A, np.ascontiguousarray(C, dtype=float), P, L)
    return P, L


def _shifted(var: np.ndarray, rng) -> np.ndarray:
    """diag(var) + c 1^T + 1 c^T for a random c (PSD is not required of the shift)."""
    c = rng.normal(size=var.size) * 0.7
    return np.diag(var) + c[:, None] + c[None, :]


CASES = [
    # (n, means, variances): large variance, near-singular, very unequal means
    (4, [0.3, -1.1, 0.4, 2.0], [2.0, 0.5, 1.0, 25.0]),
    (5, [3.6, -4.5, -4.5, -4.5, -4.5], [9.0, 9.0, 9.0, 9.0, 9.0]),
    (5, [0.0, 2.0, -3.0, 1.0, 10.0], [1e-7, 0.01, 0.1, 16.0, 3.0]),
    (5, [0.0, -30.0, 1.0, -0.5, 0.2], [0.0, 4.0, 0.3, 0.3, 0.3]),
    (8, [1.0, -2.0, 0.5, 3.0, -1.0, 0.0, 2.5, -4.0], [9.0] * 8),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_against_adaptive_laplace(case):
    n, a, var = CASES[case]
    a, var = np.array(a, float), np.array(var, float)
    rng = np.random.default_rng(case)
    C = _shifted(var, rng)
    D = np.empty(n)
    assert diagonal_part(C, D, 1e-12) and np.allclose(D, var, atol=1e-12)
    # two rows sharing the covariance: the row itself and its means reversed
    A = np.stack([a, a[::-1]])
    P, L = _rows(A, C)
    tol = 1e-8 if n - 1 <= 4 else 1e-6
    for r in range(2):
        Pr, Lr = laplace_ref(A[r], var)
        assert np.abs(P[r] - Pr).max() <= tol, (P[r], Pr)
        assert abs(L[r] - Lr) <= tol, (L[r], Lr)


@pytest.mark.parametrize("var", [[0.5, 2.0, 1.0], [9.0, 9.0, 9.0], [1e-6, 4.0, 0.2]])
def test_three_logits_against_2d_trapezoid(var):
    """n = 3 (n_eff = 2): the 1-D kernel at tol 1e-10 against a fine 2-D trapezoid rule over
    the differences d_b = v_b - v_0 (b = 1, 2) in Cholesky coordinates."""
    var = np.array(var)
    a = np.array([0.4, -1.3, 0.9])
    S = np.array([[var[0] + var[1], var[0]], [var[0], var[0] + var[2]]])
    Lc = np.linalg.cholesky(S)
    x = np.arange(-9.0, 9.0 + 1e-9, 0.02)
    X1, X2 = np.meshgrid(x, x, indexing="ij")
    w = np.exp(-0.5 * (X1 ** 2 + X2 ** 2))
    w /= w.sum()
    d1 = a[1] - a[0] + Lc[0, 0] * X1
    d2 = a[2] - a[0] + Lc[1, 0] * X1 + Lc[1, 1] * X2
    mx = np.maximum(0.0, np.maximum(d1, d2))
    s = np.exp(-mx) + np.exp(d1 - mx) + np.exp(d2 - mx)
    Pr = np.array([np.sum(w * np.exp(-mx) / s), np.sum(w * np.exp(d1 - mx) / s),
                   np.sum(w * np.exp(d2 - mx) / s)])
    Lr = a[0] + np.sum(w * (mx + np.log(s)))
    P, L = np.empty((1, 3)), np.empty(1)
    diag_softmax_rows(a[None, :], var, P, L, 1e-10)
    assert np.abs(P[0] - Pr).max() <= 1e-10 and abs(L[0] - Lr) <= 1e-10


@pytest.mark.parametrize("n,var", [(5, 9.0), (8, 0.3), (8, 20.0)])
def test_equal_means_exact(n, var):
    """Exchangeable logits: E softmax_a = 1 / n exactly."""
    P, _ = _rows(np.full(n, 0.7), var * np.eye(n))
    assert np.abs(P[0] - 1.0 / n).max() <= (1e-8 if n <= 5 else 1e-6) * 1e-2


def test_zero_variance_exact_and_common_shift():
    a = np.array([[0.2, -0.4, 1.0, 0.0, 0.5, 3.0]])
    e = np.exp(a[0] - a[0].max())
    for C in (np.zeros((6, 6)), 2.5 * np.ones((6, 6))):
        P, L = _rows(a, C)
        assert np.abs(P[0] - e / e.sum()).max() <= 1e-15
        assert abs(L[0] - (a[0].max() + np.log(e.sum()))) <= 1e-14


def test_diagonal_part_detection():
    rng = np.random.default_rng(3)
    D = np.empty(6)
    assert diagonal_part(_shifted(np.array([1.0, 2, 3, 4, 5, 6]), rng), D, 1e-12)
    assert np.allclose(D, [1, 2, 3, 4, 5, 6], atol=1e-12)
    C = np.eye(6)
    C[0, 1] = C[1, 0] = 0.3
    assert not diagonal_part(C, D, 1e-12)
    # D + c 1^T + 1 c^T with a negative D entry is not a set of independent logits
    assert not diagonal_part(_shifted(np.array([1.0, -0.5, 1, 1, 1, 1]), rng), D, 1e-12)
    # the presets' target logits s T / Delta^2
    for spec in (orthogonal(6, 6, 9.0), simplex(6, 6, 9.0)):
        Ct = spec.family.variance * spec.target.T / spec.target.variance ** 2
        assert diagonal_part(np.ascontiguousarray(Ct), D, 1e-12)


def test_call_seconds_routes_by_covariance():
    """The cost predictor: the 1-D kernel for K = M = 8 target logits is affordable (well below
    a second per call); a correlated covariance of the same size is refused (inf)."""
    A = np.zeros((8, 8))
    t = call_seconds(A, 9.0 * np.eye(8))
    assert 0.0 < t < 0.05
    C = 50.0 * np.eye(8)
    C[0, 1] = C[1, 0] = 20.0
    assert call_seconds(A, C) == math.inf
