"""Tests for solvers.quadrature (Gaussian expectations of softplus / LSE).

All references are independent of the code under test: scipy.integrate.quad
/ dblquad, a fine numpy trapezoid rule in Cholesky coordinates with sympy-derived
derivative formulas, closed forms, or finite differences.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import warnings

import numpy as np
import pytest
from scipy import integrate, special

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from solvers.quadrature import (  # noqa: E402
    lse_moments,
    softplus_moments,
    softplus_moments_into,
)

SQRT2PI = math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------
def sp_deriv(x, k):
    """k-th derivative of softplus from the brief's formulas (scipy expit)."""
    s = special.expit(x)
    q = special.expit(-x)
    if k == 0:
        return np.logaddexp(0.0, x)
    if k == 1:
        return s
    d = s * q
    if k == 2:
        return d
    if k == 3:
        return d * (q - s)
    return d * (1.0 - 6.0 * d)


def quad_1d(g, a, b):
    """E g(a + b xi) by adaptive quadrature, with break points where g varies."""
    if b == 0.0:
        return float(g(a))

    def f(t):
        return math.exp(-0.5 * t * t) / SQRT2PI * float(g(a + b * t))

    t0 = -a / b
    pts = sorted({t0 + s * d / b for d in (0, 1, 3, 8, 20, 40) for s in (-1, 1)})
    pts = [p for p in pts if -13.0 < p < 13.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        val, _ = integrate.quad(f, -13.0, 13.0, points=pts or None,
                                epsabs=1e-15, epsrel=1e-14, limit=500)
    return val


_SYMPY_CACHE = {}


def lse_derivative_funcs(n):
    """numpy callables d^alpha log(1 + sum_j exp v_j), |alpha| <= 4, via sympy."""
    if n in _SYMPY_CACHE:
        return _SYMPY_CACHE[n]
    import sympy as sp

    v = sp.symbols(f"v0:{n}")
    F = sp.log(1 + sum(sp.exp(x) for x in v))
    funcs = {}
    for alpha in itertools.product(range(5), repeat=n):
        if sum(alpha) > 4:
            continue
        expr = F
        for j, aj in enumerate(alpha):
            if aj:
                expr = sp.diff(expr, v[j], aj)
        funcs[alpha] = sp.lambdify(v, expr, "numpy")
    _SYMPY_CACHE[n] = funcs
    return funcs


def fine_trapezoid_ref(a, C, alphas, h, L):
    """E d^alpha LSE by a fine tensor trapezoid rule in Cholesky coordinates."""
    n = len(a)
    funcs = lse_derivative_funcs(n)
    chol = np.linalg.cholesky(C)
    m = int(L / h)
    x = h * np.arange(-m, m + 1)
    grids = np.meshgrid(*([x] * n), indexing="ij")
    r2 = sum(g * g for g in grids)
    w = np.exp(-0.5 * r2) * (h / SQRT2PI) ** n
    vs = [a[i] + sum(chol[i, j] * grids[j] for j in range(n)) for i in range(n)]
    out = []
    for alpha in alphas:
        val = funcs[tuple(int(t) for t in alpha)](*vs)
        out.append(float(np.sum(w * np.broadcast_to(val, w.shape))))
    return np.array(out)


def all_alphas(n, maxdeg=4):
    return np.array([al for al in itertools.product(range(maxdeg + 1), repeat=n)
                     if sum(al) <= maxdeg], dtype=np.int64)


def rot(t):
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


# ---------------------------------------------------------------------------
# softplus_moments
# ---------------------------------------------------------------------------
A_GRID = [-50.0, -31.0, -12.5, -3.0, -0.6, 0.0, 0.4, 2.0, 7.5, 19.0, 37.0, 50.0]
B_GRID = [0.05, 0.2, 0.35, 0.49, 0.5, 0.8, 1.3, 2.5, 4.0, 6.5, 11.0, 20.0]


def test_softplus_moments_vs_quad():
    worst = 0.0
    for a in A_GRID:
        for b in B_GRID:
            got = softplus_moments(a, b * b, 4)
            for k in range(5):
                ref = quad_1d(lambda x, k=k: sp_deriv(x, k), a, b)
                err = abs(got[k] - ref)
                worst = max(worst, err)
                assert err <= 1e-12, (a, b, k, got[k], ref)
    print("max |error| vs quad:", worst)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_softplus_lower_orders_are_prefix(order):
    full = softplus_moments(1.3, 2.7, 4)
    part = softplus_moments(1.3, 2.7, order)
    assert part.shape == (order + 1,)
    np.testing.assert_array_equal(part, full[: order + 1])


def test_softplus_point_values_exact():
    for a in [-800.0, -40.0, -1.5, 0.0, 0.3, 12.0, 800.0]:
        got = softplus_moments(a, 0.0, 4)
        ref = np.array([sp_deriv(a, k) for k in range(5)])
        np.testing.assert_allclose(got, ref, rtol=1e-14, atol=1e-300)
    # tiny positive variance: continuity with the point value (E f = f + c f''/2 + ...)
    for a in [-2.0, 0.0, 1.0]:
        c = 1e-10
        got = softplus_moments(a, c, 2)
        ref = np.array([sp_deriv(a, k) + 0.5 * c * sp_deriv(a, k + 2) for k in range(3)])
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)


def test_softplus_extreme_arguments_stable():
    # fully saturated: closed forms E max(x,0) = a Phi(z) + b phi(z), E H = Phi(z)
    for a, c in [(1e4, 1e4), (-1e4, 1e4), (1e300, 1.0), (-1e300, 1e-300),
                 (0.0, 1e300), (3e5, 1e12), (-7.0, 1e8), (1e10, 1e20)]:
        got = softplus_moments(a, c, 4)
        assert np.all(np.isfinite(got)), (a, c, got)
        b = math.sqrt(c)
        z = a / b
        e_relu = a * special.ndtr(z) + b * math.exp(-0.5 * z * z) / SQRT2PI
        # sp - max(x, 0) = log1p(e^-|x|) lies in [0, log 2]
        tol = 1e-13 * max(1.0, abs(e_relu))
        assert -tol <= got[0] - e_relu <= math.log(2.0) + tol, (a, c)
        # |E(sigma - H)| <= sup|phi_b'| * int |x| |sigma - H| dx = (pi^2/6) * 0.242 / b^2
        assert abs(got[1] - special.ndtr(z)) <= 0.5 / b**2 + 1e-15
        # |E sp^(k)| <= min(sup|sp^(k)|, sup(phi_b) * int|sp^(k)|) <= min(1/4, 1/b), k >= 2
        assert np.all(np.abs(got[2:]) <= min(0.25, 1.0 / b) + 1e-16), (a, c)
    # exact values in the fully saturated regime
    got = softplus_moments(1e4, 1e4, 4)
    np.testing.assert_allclose(got, [1e4, 1.0, 0.0, 0.0, 0.0], rtol=1e-15, atol=1e-16)
    got = softplus_moments(-1e4, 1e4, 4)
    np.testing.assert_allclose(got, np.zeros(5), atol=1e-16)
    # large-b asymptotics: Taylor-expanding the N(a, b^2) density around x = 0,
    # E sp'' = sum_j (mu_2j / (2j)!) He_2j(z) phi(z) / b^(2j+1), mu_m = int x^m sigma',
    # mu_0 = 1, mu_2 = pi^2/3, mu_4 = 7 pi^4/15
    for a, b in [(3.0, 1e4), (-2e3, 1e3)]:
        z = a / b
        phz = math.exp(-0.5 * z * z) / SQRT2PI
        got = softplus_moments(a, b * b, 2)
        ref = phz / b * (1.0 + (math.pi**2 / 6) * (z * z - 1) / b**2
                         + (7 * math.pi**4 / 360) * (z**4 - 6 * z * z + 3) / b**4)
        assert abs(got[2] - ref) <= 1e-13 * ref


def test_softplus_derivative_identities_fd():
    # d/da M_k = M_{k+1} and d/dc M_k = M_{k+2} / 2 (heat equation), central FD
    for a, c in [(0.3, 0.1), (-2.0, 0.3), (1.0, 0.6), (4.0, 3.0), (-9.0, 40.0), (25.0, 500.0)]:
        da = 1e-4
        dc = 1e-4 * max(c, 1.0)
        m = softplus_moments(a, c, 4)
        gp = softplus_moments(a + da, c, 4)
        gm = softplus_moments(a - da, c, 4)
        cp = softplus_moments(a, c + dc, 4)
        cm = softplus_moments(a, c - dc, 4)
        for k in range(4):
            assert abs((gp[k] - gm[k]) / (2 * da) - m[k + 1]) <= 2e-8, (a, c, k)
        for k in range(3):
            assert abs((cp[k] - cm[k]) / (2 * dc) - 0.5 * m[k + 2]) <= 2e-8, (a, c, k)


def test_softplus_moments_into_and_validation():
    out = np.full(5, np.nan)
    softplus_moments_into(0.7, 1.9, 2, out)
    np.testing.assert_array_equal(out[:3], softplus_moments(0.7, 1.9, 2))
    assert np.all(np.isnan(out[3:]))  # untouched beyond order
    with pytest.raises(ValueError):
        softplus_moments(0.0, 1.0, 5)
    with pytest.raises(ValueError):
        softplus_moments(0.0, 1.0, -1)


# ---------------------------------------------------------------------------
# lse_moments
# ---------------------------------------------------------------------------
def test_lse_n1_matches_softplus():
    al = np.array([[3], [0], [1], [4], [2], [1]], dtype=np.int64)
    for a, c in [(0.0, 0.0), (0.3, 0.05), (-1.0, 0.7), (4.0, 2.0), (-15.0, 30.0), (2.0, 150.0)]:
        got = lse_moments(np.array([a]), np.array([[c]]), al)
        ref = softplus_moments(a, c, 4)[al[:, 0]]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)
        quad = [quad_1d(lambda x, k=int(k): sp_deriv(x, k), a, math.sqrt(c)) for k in al[:, 0]]
        np.testing.assert_allclose(got, quad, rtol=0, atol=1e-12)


CASES_2D = [
    ("correlated", np.array([0.3, -0.5]), np.array([[1.0, 0.3], [0.3, 0.5]])),
    ("isotropic", np.array([0.0, 0.0]), 4.0 * np.eye(2)),
    ("anisotropic", np.array([2.0, 2.0]), rot(0.7) @ np.diag([16.0, 0.01]) @ rot(0.7).T),
    ("anticorrelated", np.array([5.0, 5.0]), np.array([[2.0, -1.9], [-1.9, 2.0]])),
    ("small", np.array([-3.0, 1.0]), np.array([[0.1, 0.02], [0.02, 0.2]])),
    ("shifted", np.array([10.0, -4.0]), np.array([[6.0, 2.0], [2.0, 3.0]])),
]


@pytest.mark.parametrize("name,a,C", CASES_2D, ids=[c[0] for c in CASES_2D])
def test_lse_2d_vs_fine_trapezoid(name, a, C):
    al = all_alphas(2)
    got = lse_moments(a, C, al)
    ref = fine_trapezoid_ref(a, C, al, h=0.04, L=9.0)
    err = np.abs(got - ref)
    assert err.max() <= 1e-12, (name, al[err.argmax()], err.max())


def test_lse_2d_vs_dblquad():
    a = np.array([0.3, -0.5])
    C = np.array([[1.0, 0.3], [0.3, 0.5]])
    chol = np.linalg.cholesky(C)
    funcs = lse_derivative_funcs(2)
    al = np.array([[0, 0], [1, 1], [0, 3], [2, 2]], dtype=np.int64)
    got = lse_moments(a, C, al)
    for i, alpha in enumerate(al):
        f = funcs[tuple(int(t) for t in alpha)]

        def integrand(y, x, f=f):
            v = a + chol @ np.array([x, y])
            return math.exp(-0.5 * (x * x + y * y)) / (2 * math.pi) * float(f(v[0], v[1]))

        ref, _ = integrate.dblquad(integrand, -9.0, 9.0, -9.0, 9.0,
                                   epsabs=1e-14, epsrel=1e-13)
        assert abs(got[i] - ref) <= 1e-11, (alpha, got[i], ref)


def test_lse_rank1_axis_aligned_matches_1d():
    # C = diag(c, 0): log(1 + e^a2 + e^v1) = s + sp(v1 - s), s = log1p(e^a2)
    a1, a2, c = 0.4, -0.8, 2.3
    a = np.array([a1, a2])
    C = np.array([[c, 0.0], [0.0, 0.0]])
    al = np.array([[k, 0] for k in range(5)], dtype=np.int64)
    got = lse_moments(a, C, al)
    s = math.log1p(math.exp(a2))
    ref = softplus_moments(a1 - s, c, 4)
    ref[0] += s
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_lse_rank1_general_direction_vs_quad():
    # C = c u u^T: a 1-D integral along the line v = a + sqrt(c) u xi
    a = np.array([0.5, 1.5])
    u = np.array([0.6, -0.8])
    c = 3.0
    C = c * np.outer(u, u)
    al = all_alphas(2)
    got = lse_moments(a, C, al)
    funcs = lse_derivative_funcs(2)
    for i, alpha in enumerate(al):
        f = funcs[tuple(int(t) for t in alpha)]

        def g(s, f=f):
            return f(a[0] + s * u[0], a[1] + s * u[1])

        ref = quad_1d(g, 0.0, math.sqrt(c))
        assert abs(got[i] - ref) <= 1e-12, (alpha, got[i], ref)
    # a numerically singular perturbation gives the same numbers
    C2 = C + 1e-17 * np.array([[1.0, 0.2], [0.2, 0.3]])
    np.testing.assert_allclose(lse_moments(a, C2, al), got, rtol=0, atol=1e-13)


def test_lse_zero_covariance_point_values():
    a = np.array([0.7, -1.2])
    al = all_alphas(2)
    got = lse_moments(a, np.zeros((2, 2)), al)
    funcs = lse_derivative_funcs(2)
    ref = np.array([funcs[tuple(int(t) for t in alpha)](a[0], a[1]) for alpha in al], dtype=float)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15)


def test_lse_permutation_symmetry_2d_and_3d():
    a = np.array([0.3, -0.5])
    C = np.array([[1.0, 0.3], [0.3, 0.5]])
    al = all_alphas(2)
    perm = [1, 0]
    got = lse_moments(a, C, al)
    got_p = lse_moments(a[perm].copy(), C[np.ix_(perm, perm)].copy(), al[:, perm].copy())
    np.testing.assert_allclose(got_p, got, rtol=0, atol=1e-13)

    a3 = np.array([0.2, -0.4, 0.9])
    C3 = np.array([[0.8, 0.2, -0.1], [0.2, 0.5, 0.15], [-0.1, 0.15, 0.6]])
    al3 = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 2], [1, 1, 0], [1, 1, 1],
                    [2, 1, 1], [0, 3, 1], [4, 0, 0]], dtype=np.int64)
    got3 = lse_moments(a3, C3, al3)
    for perm in itertools.permutations(range(3)):
        perm = list(perm)
        gp = lse_moments(a3[perm].copy(), C3[np.ix_(perm, perm)].copy(), al3[:, perm].copy())
        np.testing.assert_allclose(gp, got3, rtol=0, atol=1e-13)


def test_lse_3d_degenerate_category_reduces_to_2d():
    # v3 deterministic: log(1 + e^a3 + e^v1 + e^v2) = s + LSE(0, v1 - s, v2 - s)
    a = np.array([0.4, -0.3, 0.8])
    C = np.zeros((3, 3))
    C[:2, :2] = [[1.2, 0.4], [0.4, 0.7]]
    al2 = all_alphas(2)
    al3 = np.hstack([al2, np.zeros((len(al2), 1), dtype=np.int64)])
    got = lse_moments(a, C, al3)
    s = math.log1p(math.exp(a[2]))
    ref = lse_moments(a[:2] - s, C[:2, :2].copy(), al2)
    ref[np.all(al2 == 0, axis=1)] += s
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-13)


def test_lse_3d_vs_fine_trapezoid():
    a = np.array([0.2, -0.4, 0.9])
    C = np.array([[0.8, 0.2, -0.1], [0.2, 0.5, 0.15], [-0.1, 0.15, 0.6]])
    al = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1], [2, 0, 1], [1, 1, 2], [0, 0, 4]],
                  dtype=np.int64)
    got = lse_moments(a, C, al)
    ref = fine_trapezoid_ref(a, C, al, h=0.15, L=8.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_lse_first_derivatives_fd_in_mean():
    # d/da_i E LSE = E p_i = E d_i LSE
    a = np.array([0.3, -0.5])
    C = np.array([[1.0, 0.3], [0.3, 0.5]])
    al0 = np.array([[0, 0]], dtype=np.int64)
    al1 = np.array([[1, 0], [0, 1]], dtype=np.int64)
    ep = lse_moments(a, C, al1)
    da = 1e-4
    for i in range(2):
        e = np.zeros(2)
        e[i] = da
        fd = (lse_moments(a + e, C, al0)[0] - lse_moments(a - e, C, al0)[0]) / (2 * da)
        assert abs(fd - ep[i]) <= 1e-8


@pytest.mark.parametrize("base", [(0, 0), (1, 0), (0, 2)])
def test_lse_heat_equation_fd_in_covariance(base):
    # d/dC_ii E f = E d_ii f / 2;  d/dC_ij (C_ij = C_ji moved together) E f = E d_ij f
    a = np.array([0.3, -0.5])
    C = np.array([[1.0, 0.3], [0.3, 0.5]])
    base = np.array(base, dtype=np.int64)
    al = np.array([base, base + [2, 0], base + [0, 2], base + [1, 1]], dtype=np.int64)
    vals = lse_moments(a, C, al)
    dc = 1e-4
    f = np.array([base])
    for (i, j), target in [((0, 0), 0.5 * vals[1]), ((1, 1), 0.5 * vals[2]), ((0, 1), vals[3])]:
        E = np.zeros((2, 2))
        E[i, j] = E[j, i] = dc
        fd = (lse_moments(a, C + E, f)[0] - lse_moments(a, C - E, f)[0]) / (2 * dc)
        assert abs(fd - target) <= 1e-8, (base, i, j, fd, target)


def test_lse_alpha_handling():
    a = np.array([0.1, 0.2])
    C = np.array([[0.5, 0.1], [0.1, 0.4]])
    al = np.array([[1, 1], [0, 0], [1, 1], [2, 0]], dtype=np.int64)
    got = lse_moments(a, C, al)
    assert got.shape == (4,)
    assert got[0] == got[2]
    single = lse_moments(a, C, np.array([[2, 0]], dtype=np.int64))
    assert abs(single[0] - got[3]) <= 1e-15
    with pytest.raises(ValueError):
        lse_moments(a, C, np.array([[3, 2]], dtype=np.int64))
    with pytest.raises(ValueError):
        lse_moments(a, C, np.array([[-1, 0]], dtype=np.int64))
    with pytest.raises(ValueError):
        lse_moments(a, C, np.array([[1, 0, 0]], dtype=np.int64))


def test_lse_2d_large_variance_vs_fine_trapezoid():
    # b_eff ~ 14: a few hundred nodes per direction
    a = np.array([-3.0, 4.0])
    C = rot(0.4) @ np.diag([100.0, 2.0]) @ rot(0.4).T
    al = np.array([[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2], [1, 2], [2, 2]],
                  dtype=np.int64)
    got = lse_moments(a, C, al)
    ref = fine_trapezoid_ref(a, C, al, h=0.01, L=9.0)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_lse_refuses_huge_grids():
    al = np.array([[1, 0]], dtype=np.int64)
    for C in [1e12 * np.eye(2), np.diag([1e300, 0.0])]:
        with pytest.raises(ValueError):
            lse_moments(np.zeros(2), C, al)


def test_lse_large_arguments_stable():
    a = np.array([800.0, -1000.0])
    C = np.array([[1e4, 0.0], [0.0, 1e4]])
    al = np.array([[0, 0], [1, 0], [0, 1], [2, 0], [1, 1]], dtype=np.int64)
    got = lse_moments(a, C, al)
    assert np.all(np.isfinite(got))
    # v1 ~ N(800, 1e4) dominates: E LSE ~ E max(0, v1, v2) ~ 800, p1 ~ 1
    assert abs(got[0] - 800.0) < 1e-6
    assert abs(got[1] - 1.0) < 1e-12
    assert abs(got[2]) < 1e-12 and abs(got[3]) < 1e-12 and abs(got[4]) < 1e-12
