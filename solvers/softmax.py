r"""Gaussian expectations of softmax and log-sum-exp in n dimensions, rows sharing a covariance.

The loop-form engine (:mod:`derivations.loops`, DESIGN.md section 6) needs, for every
component k, the expectations over one Gaussian vector of logits

.. math::

    P_{kj} = E\,\operatorname{softmax}_j(v), \qquad L_k = E \log\sum_j e^{v_j},
    \qquad v \sim N(a_k, C),

where the rows k differ only in their means: the covariance is common (``Q / s`` for the
variational logits, ``s T / Delta^2`` for the target logits).  :func:`gauss_softmax_rows`
computes all rows in one call.

Reduction.  softmax is invariant under a common shift of the logits, and
``LSE(v) = LSE(P v) + mean(v)`` with ``P = I - 1 1^T / n``, so (linearity of E) only the law
of ``P v`` matters: mean ``P a_k``, covariance ``P C P`` of rank <= n - 1.  The number of
non-degenerate directions is n_eff <= n - 1 (the issue's n = K - 1 or M - 1).

Rules, by n (all absolute errors of every entry of P and of L):

* n = 1: exact (P = 1, L = a).
* n = 2 (n_eff <= 1): ``E sigmoid`` and ``E softplus`` of the logit difference by the 1-D
  kernel :func:`solvers.quadrature.softplus_moments` (~1e-14, any variance).
* n = 3 (n_eff <= 2): :func:`solvers.quadrature.lse_moments` relative to logit 0
  (~1e-14).  These two are the kernels of the expanded engine, so the two engines agree to
  rounding for K, M <= 3.
* n >= 4: a product rule in the eigenbasis of ``P C P`` (directions with
  ``lambda <= 1e-14 lambda_max`` dropped).  Direction d, ``v = P a + sum_d sqrt(lambda_d)
  u_d xi_d``, is the 1-D problem with ``b_d = sqrt(lambda_d) (max_j u_dj - min_j u_dj)``
  (the singularities of softmax along u_d sit at ``|Im xi| >= pi / b_d``).  Small b:
  Gauss-Hermite with the fewest nodes N such that ``4 (b/pi)^{2N} (2N-1)!! <= tol`` (the
  Taylor remainder of the N-point rule against derivatives growing like ``(2N)! / pi^{2N}``);
  otherwise the trapezoid rule with step ``h`` solving ``2 pi^2 / (b h) - pi^2 / (2 b^2) =
  T`` (contour shifted to the pole against the Gaussian's growth), ``T = -log(tol) + 3``,
  truncated to the ball ``sum xi_d^2 <= L^2`` over the trapezoid directions,
  ``L^2 = 2 (T + 2)``.  ``tol`` is chosen from n_eff (the issue's targets): 1e-10 for
  n_eff <= 2, 1e-9 for n_eff <= 4 (target 1e-8), 1e-7 above (target 1e-6); the measured
  errors are in tests/test_softmax_kernel.py.  Cost: the product of the node counts times
  rows x n multiply-adds and one log: the node loop is outermost, so all rows share each
  node, and ``e^{v_kj}`` is the product of a per-row factor, a per-outer-node factor and a
  tabulated factor of the innermost direction (no exponential in the inner loop; the plain
  shifted form is used when a displacement could exceed 600).

Grids of more than ``MAX_NODES`` nodes raise ValueError (a covariance so large in so many
directions that the rule would run for minutes).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.polynomial.hermite_e import hermegauss

from .quadrature import lse_moments, softplus_moments

__all__ = ["gauss_softmax_rows", "tolerance_for", "MAX_NODES", "grid_size"]

_PI = math.pi
_PI2 = math.pi * math.pi
_EIG_RTOL = 1e-14
_GH_MAX = 24
#: refuse product grids larger than this
MAX_NODES = 2.0e7


def _gh_tables():
    xs = np.zeros((_GH_MAX + 1, _GH_MAX))
    ws = np.zeros((_GH_MAX + 1, _GH_MAX))
    for n in range(1, _GH_MAX + 1):
        x, w = hermegauss(n)
        xs[n, :n] = x
        ws[n, :n] = w / math.sqrt(2.0 * math.pi)
    return xs, ws


_GH_X, _GH_W = _gh_tables()
_ALPHAS3 = np.array([[0, 0], [1, 0], [0, 1]], dtype=np.int64)


@njit(cache=True)
def tolerance_for(n_eff: int) -> float:
    """Internal absolute tolerance of the product rule for n_eff effective dimensions."""
    if n_eff <= 2:
        return 1e-10
    if n_eff <= 4:
        return 1e-9
    return 1e-7


@njit(cache=True)
def _gh_count(b, tol):
    """Fewest Gauss-Hermite nodes for direction width b (0 if the trapezoid rule is better)."""
    if b <= 0.0:
        return 1
    q = (b / _PI) ** 2
    term = 4.0
    for n in range(1, _GH_MAX + 1):
        term *= q * (2 * n - 1)
        if term <= tol:
            return n
    return 0


@njit(cache=True)
def _directions(C, tol):
    """Eigen-directions of P C P and their 1-D rules.

    Returns (rdir (nd, n), xs (nd, N), ws (nd, N), cnt (nd,), trap (nd,) bool, L2)."""
    n = C.shape[0]
    Cp = np.empty((n, n))
    rm = np.zeros(n)
    tm = 0.0
    for i in range(n):
        for j in range(n):
            c = 0.5 * (C[i, j] + C[j, i])
            rm[i] += c / n
            tm += c / (n * n)
    for i in range(n):
        for j in range(n):
            Cp[i, j] = 0.5 * (C[i, j] + C[j, i]) - rm[i] - rm[j] + tm
    lam, vec = np.linalg.eigh(Cp)
    lmax = 0.0
    for i in range(n):
        lmax = max(lmax, lam[i])
    keep = np.zeros(n, dtype=np.bool_)
    nd = 0
    for i in range(n):
        if lmax > 0.0 and lam[i] > _EIG_RTOL * lmax:
            keep[i] = True
            nd += 1
    T = -math.log(tol) + 3.0
    L2 = 2.0 * (T + 2.0)
    L = math.sqrt(L2)
    bstar = math.sqrt(_PI2 / (2.0 * T))
    hg = math.sqrt(2.0 * _PI2 / (T + 3.0))
    # first pass: node counts
    bs = np.empty(max(nd, 1))
    cnt = np.empty(max(nd, 1), dtype=np.int64)
    trap = np.zeros(max(nd, 1), dtype=np.bool_)
    hs = np.empty(max(nd, 1))
    rdir = np.zeros((max(nd, 1), n))
    d = 0
    nmax = 1
    for i in range(n):
        if not keep[i]:
            continue
        sd = math.sqrt(lam[i])
        umax = -1e300
        umin = 1e300
        for j in range(n):
            umax = max(umax, vec[j, i])
            umin = min(umin, vec[j, i])
            rdir[d, j] = sd * vec[j, i]
        b = sd * (umax - umin)
        bs[d] = b
        g = _gh_count(b, tol / (nd + 1))
        if g > 0:
            cnt[d] = g
        else:
            trap[d] = True
            be = max(b, bstar)
            h = min(hg, 2.0 * _PI2 * be / (T * be * be + 0.5 * _PI2))
            hs[d] = h
            cnt[d] = 2 * int(L / h) + 1
        nmax = max(nmax, cnt[d])
        d += 1
    xs = np.zeros((max(nd, 1), nmax))
    ws = np.zeros((max(nd, 1), nmax))
    for d in range(nd):
        if trap[d]:
            m = cnt[d] // 2
            for i in range(cnt[d]):
                x = (i - m) * hs[d]
                xs[d, i] = x
                ws[d, i] = hs[d] * math.exp(-0.5 * x * x) / math.sqrt(2.0 * _PI)
        else:
            g = cnt[d]
            for i in range(g):
                xs[d, i] = _GH_X[g, i]
                ws[d, i] = _GH_W[g, i]
    return rdir[:nd], xs[:nd], ws[:nd], cnt[:nd], trap[:nd], L2


@njit(cache=True)
def grid_size(C, tol):
    """Number of nodes of the product rule (cube, before the ball cut) for covariance C."""
    rdir, xs, ws, cnt, trap, L2 = _directions(C, tol)
    s = 1.0
    for d in range(cnt.shape[0]):
        s *= cnt[d]
    return s


@njit(cache=True)
def _accumulate(A, v0, wt, P, L, e):
    """Add weight wt x (softmax, LSE) at logits A[r] + v0 for every row r."""
    r, n = A.shape
    for k in range(r):
        m = -1e300
        for j in range(n):
            e[j] = A[k, j] + v0[j]
            if e[j] > m:
                m = e[j]
        s = 0.0
        for j in range(n):
            e[j] = math.exp(e[j] - m)
            s += e[j]
        f = wt / s
        for j in range(n):
            P[k, j] += f * e[j]
        L[k] += wt * (m + math.log(s))


@njit(cache=True)
def _product_rule(A, C, P, L, tol):
    r, n = A.shape
    Ap = np.empty((r, n))
    means = np.empty(r)
    for k in range(r):
        mu = 0.0
        for j in range(n):
            mu += A[k, j] / n
        means[k] = mu
        for j in range(n):
            Ap[k, j] = A[k, j] - mu
    for k in range(r):
        L[k] = 0.0
        for j in range(n):
            P[k, j] = 0.0
    rdir, xs, ws, cnt, trap, L2 = _directions(C, tol)
    nd = cnt.shape[0]
    e = np.empty(n)
    if nd == 0:
        _accumulate(Ap, np.zeros(n), 1.0, P, L, e)
    else:
        total = 1.0
        for d in range(nd):
            total *= cnt[d]
        if total > MAX_NODES:
            raise ValueError("covariance too large for the n-D product rule of gauss_softmax_rows")
        # innermost: the direction with most nodes
        inner = 0
        for d in range(nd):
            if cnt[d] > cnt[inner]:
                inner = d
        order = np.empty(nd, dtype=np.int64)
        order[nd - 1] = inner
        p = 0
        for d in range(nd):
            if d != inner:
                order[p] = d
                p += 1
        idx = np.zeros(max(nd - 1, 1), dtype=np.int64)
        v0 = np.empty(n)
        v1 = np.empty(n)
        dl = order[nd - 1]
        # bound on |displacement| of any logit: exponentials without shifts are safe below 600
        bound = 0.0
        for d in range(nd):
            xm = 0.0
            for i in range(cnt[d]):
                xm = max(xm, abs(xs[d, i]))
            rm_ = 0.0
            for j in range(n):
                rm_ = max(rm_, abs(rdir[d, j]))
            bound += xm * rm_
        fast = bound < 600.0
        # exp-free inner loop: e^{v_kj} = e^{shift_k} ea[k, j] eo[j] ein[i, j]
        shift = np.empty(r)
        ea = np.empty((r, n))
        for k in range(r):
            mx = -1e300
            for j in range(n):
                mx = max(mx, Ap[k, j])
            shift[k] = mx
            for j in range(n):
                ea[k, j] = math.exp(Ap[k, j] - mx)
        ein = np.empty((cnt[dl], n))
        for i in range(cnt[dl]):
            for j in range(n):
                ein[i, j] = math.exp(xs[dl, i] * rdir[dl, j])
        eo = np.empty(n)
        while True:
            wo = 1.0
            rad2 = 0.0
            for j in range(n):
                v0[j] = 0.0
            for q in range(nd - 1):
                d = order[q]
                x = xs[d, idx[q]]
                wo *= ws[d, idx[q]]
                if trap[d]:
                    rad2 += x * x
                for j in range(n):
                    v0[j] += x * rdir[d, j]
            if rad2 <= L2 and wo > 0.0:
                if fast:
                    for j in range(n):
                        eo[j] = math.exp(v0[j])
                for i in range(cnt[dl]):
                    x = xs[dl, i]
                    if trap[dl] and rad2 + x * x > L2:
                        continue
                    wt = wo * ws[dl, i]
                    if fast:
                        for j in range(n):
                            e[j] = eo[j] * ein[i, j]
                        for k in range(r):
                            sm = 0.0
                            for j in range(n):
                                sm += ea[k, j] * e[j]
                            f = wt / sm
                            for j in range(n):
                                P[k, j] += f * ea[k, j] * e[j]
                            L[k] += wt * (shift[k] + math.log(sm))
                    else:
                        for j in range(n):
                            v1[j] = v0[j] + x * rdir[dl, j]
                        _accumulate(Ap, v1, wt, P, L, np.empty(n))
            q = nd - 2
            while q >= 0:
                idx[q] += 1
                if idx[q] < cnt[order[q]]:
                    break
                idx[q] = 0
                q -= 1
            if q < 0:
                break
    # renormalise the truncated weight (the ball cut and the trapezoid rule's sum of weights)
    for k in range(r):
        s = 0.0
        for j in range(n):
            s += P[k, j]
        for j in range(n):
            P[k, j] /= s
        L[k] = L[k] / s + means[k]


@njit(cache=True)
def gauss_softmax_rows(A, C, P, L):
    r"""``P[k, j] = E softmax_j(v)``, ``L[k] = E log sum_j exp(v_j)``, ``v ~ N(A[k], C)``.

    A : (r, n) float64, the means of the rows.  C : (n, n) symmetric PSD covariance shared by
    all rows (small negative eigenvalues from rounding are dropped).  P : (r, n) and L : (r,)
    outputs.  Rules and accuracy by n: the module docstring.
    """
    r, n = A.shape
    if n == 1:
        for k in range(r):
            P[k, 0] = 1.0
            L[k] = A[k, 0]
        return
    if n == 2:
        c = max(C[0, 0] + C[1, 1] - C[0, 1] - C[1, 0], 0.0)
        for k in range(r):
            m = softplus_moments(A[k, 1] - A[k, 0], c, 1)
            P[k, 1] = m[1]
            P[k, 0] = 1.0 - m[1]
            L[k] = A[k, 0] + m[0]
        return
    if n == 3:
        Cr = np.empty((2, 2))
        for i in range(2):
            for j in range(2):
                Cr[i, j] = C[i + 1, j + 1] - C[i + 1, 0] - C[0, j + 1] + C[0, 0]
        ar = np.empty(2)
        for k in range(r):
            ar[0] = A[k, 1] - A[k, 0]
            ar[1] = A[k, 2] - A[k, 0]
            out = lse_moments(ar, Cr, _ALPHAS3)
            P[k, 1] = out[1]
            P[k, 2] = out[2]
            P[k, 0] = 1.0 - out[1] - out[2]
            L[k] = A[k, 0] + out[0]
        return
    _product_rule(A, C, P, L, tolerance_for(n - 1))


@njit(cache=True)
def gauss_softmax_rows_tol(A, C, P, L, tol):
    """:func:`gauss_softmax_rows` by the product rule at a given tolerance, for any n >= 2
    (for measurements and tests of the rule itself)."""
    _product_rule(A, C, P, L, tol)
