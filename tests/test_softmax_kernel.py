"""solvers.softmax: E softmax / E LSE of Gaussian logits against independent computations.

Targets (issue 9): absolute error <= 1e-10 for n_eff <= 2, <= 1e-8 for n_eff <= 4, <= 1e-6
above, n_eff = n - 1 the effective dimension.  The references here use another
representation: the Gumbel-max trick, ``E softmax_a(v) = P(argmax_b (v_b + G_b) = a)
= int phi_a(z) prod_{b != a} Phi_b(z) dz`` for independent logits, with ``Phi_b`` the cdf of
``v_b + G_b`` (a Gaussian-smoothed Gumbel cdf) and ``E LSE = E max (v + G) - euler_gamma``;
both integrals by fine trapezoid rules (exponentially accurate: the integrands are entire),
and, for a covariance ``D + t t^T``, an outer fine rule over the common factor.  n = 3 is also
checked against a fine 2-D trapezoid in Cholesky coordinates.
"""

from __future__ import annotations

import numpy as np
import pytest

from solvers.softmax import gauss_softmax_rows, gauss_softmax_rows_tol, grid_size

EULER = 0.5772156649015329


def gumbel_diag(a: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, float]:
    """(E softmax, E LSE) for independent logits v_b ~ N(a_b, var_b) (Gumbel-max, fine grids)."""
    sd = np.sqrt(var)
    smax = sd.max()
    hz = 0.1    # strip |Im z| < pi/2: error ~ exp(-pi^2 / hz)
    z = np.arange(a.max() - 8 * smax - 6, a.max() + 9 * smax + 42, hz)
    hx = min(0.15, 0.15 / max(smax, 1e-9))    # strip pi/(2 sd): error ~ exp(-pi^2/(sd hx))
    xi = np.arange(-9.5, 9.5 + hx / 2, hx)
    wx = hx * np.exp(-0.5 * xi ** 2) / np.sqrt(2 * np.pi)
    wx /= wx.sum()
    Phi = np.empty((a.size, z.size))
    phi = np.empty((a.size, z.size))
    for b in range(a.size):
        e = np.exp(a[b] + sd[b] * xi[None, :] - z[:, None])     # (z, xi)
        g = np.exp(-e)
        Phi[b] = g @ wx
        phi[b] = (e * g) @ wx
    logPhi = np.log(np.maximum(Phi, 1e-300))
    tot = logPhi.sum(0)
    P = np.array([np.sum(phi[b] * np.exp(tot - logPhi[b])) * hz for b in range(a.size)])
    dens = sum(phi[b] * np.exp(tot - logPhi[b]) for b in range(a.size))
    L = np.sum(z * dens) * hz - EULER
    return P, L


def with_factor(a: np.ndarray, var: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float]:
    """Covariance diag(var) + t t^T: condition on the common factor eta ~ N(0, 1)."""
    h = 0.1
    eta = np.arange(-8.5, 8.5 + h / 2, h)
    w = h * np.exp(-0.5 * eta ** 2) / np.sqrt(2 * np.pi)
    w /= w.sum()
    P, L = np.zeros(a.size), 0.0
    for e, we in zip(eta, w):
        if we < 1e-16:
            continue
        p, l_ = gumbel_diag(a + e * t, var)
        P += we * p
        L += we * l_
    return P, L


def _kernel(A: np.ndarray, C: np.ndarray, tol: float | None = None):
    A = np.ascontiguousarray(np.atleast_2d(A), dtype=float)
    P, L = np.empty_like(A), np.empty(A.shape[0])
    if tol is None:
        gauss_softmax_rows(A, np.ascontiguousarray(C, dtype=float), P, L)
    else:
        gauss_softmax_rows_tol(A, np.ascontiguousarray(C, dtype=float), P, L, tol)
    return P, L


def test_reference_itself_on_two_logits():
    """The Gumbel reference against the 1-D kernel path (E sigmoid, E softplus), n = 2."""
    a, var = np.array([0.3, -1.1]), np.array([2.0, 0.5])
    P, L = _kernel(a, np.diag(var))
    Pr, Lr = gumbel_diag(a, var)
    assert np.abs(P - Pr).max() <= 1e-11 and abs(L[0] - Lr) <= 1e-11


@pytest.mark.parametrize("case", range(3))
def test_three_logits_fine_grid(case):
    """n = 3 (n_eff = 2): delegated kernel and the product rule at tol 1e-10 vs a 2-D grid."""
    rng = np.random.default_rng(case)
    B = rng.normal(size=(3, 3)) * [0.3, 1.0, 2.0][case]
    C = B @ B.T
    a = rng.normal(size=3) * 2
    # reference: x = a + L xi with L the Cholesky factor of P C P's nonzero part (2-D)
    Pm = np.eye(3) - 1 / 3
    lam, U = np.linalg.eigh(Pm @ C @ Pm)
    R = U[:, 1:] * np.sqrt(np.maximum(lam[1:], 0))
    h = 0.02
    x = np.arange(-9, 9 + h / 2, h)
    wx = h * np.exp(-0.5 * x ** 2) / np.sqrt(2 * np.pi)
    X1, X2 = np.meshgrid(x, x, indexing="ij")
    W = np.outer(wx, wx).ravel()
    V = (Pm @ a)[None, :] + X1.ravel()[:, None] * R[:, 0] + X2.ravel()[:, None] * R[:, 1]
    mx = V.max(1, keepdims=True)
    E = np.exp(V - mx)
    S = E.sum(1)
    Pr = (W[:, None] * E / S[:, None]).sum(0) / W.sum()
    Lr = (W * (mx[:, 0] + np.log(S))).sum() / W.sum() + a.mean()
    for tol in (None, 1e-10):
        P, L = _kernel(a, C, tol)
        assert np.abs(P[0] - Pr).max() <= 1e-10 and abs(L[0] - Lr) <= 1e-10, (tol, P, Pr)


@pytest.mark.parametrize("n,var", [(4, 1.5), (5, 1.0), (5, 0.2)])
def test_diagonal_covariance_up_to_n_eff_4(n, var):
    rng = np.random.default_rng(n)
    a = rng.normal(size=n) * 1.5
    v = var * (0.6 + 0.8 * rng.random(n))
    P, L = _kernel(a, np.diag(v))
    Pr, Lr = gumbel_diag(a, v)
    assert np.abs(P[0] - Pr).max() <= 1e-8 and abs(L[0] - Lr) <= 1e-8


def test_correlated_covariance_n_eff_4():
    """Full-rank correlated C = D + t t^T in n = 5 (n_eff = 4), two rows sharing C."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(2, 5))
    v = 0.4 + 0.6 * rng.random(5)
    t = rng.normal(size=5) * 0.8
    P, L = _kernel(a, np.diag(v) + np.outer(t, t))
    for r in range(2):
        Pr, Lr = with_factor(a[r], v, t)
        assert np.abs(P[r] - Pr).max() <= 1e-8 and abs(L[r] - Lr) <= 1e-8


@pytest.mark.parametrize("n,var", [(6, 0.3), (8, 0.05)])
def test_diagonal_covariance_above_4(n, var):
    rng = np.random.default_rng(n)
    a = rng.normal(size=n)
    v = var * (0.6 + 0.8 * rng.random(n))
    C = np.diag(v)
    assert grid_size(C, 1e-7) < 2e6
    P, L = _kernel(a, C)
    Pr, Lr = gumbel_diag(a, v)
    assert np.abs(P[0] - Pr).max() <= 1e-6 and abs(L[0] - Lr) <= 1e-6


def test_degenerate_and_zero_covariance():
    a = np.array([[0.2, -0.4, 1.0, 0.0, 0.5]])
    P, L = _kernel(a, np.zeros((5, 5)))
    e = np.exp(a[0] - a[0].max())
    assert np.allclose(P[0], e / e.sum(), atol=1e-15)
    assert abs(L[0] - (a[0].max() + np.log(e.sum()))) <= 1e-14
    # a common shift (C = c 1 1^T) changes neither softmax nor E LSE (E of the shift is 0)
    P2, L2 = _kernel(a, 3.0 * np.ones((5, 5)))
    assert np.allclose(P2, P, atol=1e-14) and abs(L2[0] - L[0]) <= 1e-13


def test_too_large_grid_is_refused():
    with pytest.raises(ValueError, match="too large"):
        _kernel(np.zeros(8), 50.0 * np.eye(8))
