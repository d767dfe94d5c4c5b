r"""E softmax and E log-sum-exp of independent Gaussian logits by a 1-D integral (O(n) per node).

For independent logits ``v_b ~ N(m_b, sigma_b^2)`` (diagonal covariance) the Laplace
representation ``softmax_a(v) = int_0^inf e^{v_a} e^{-u sum_b e^{v_b}} du`` factorises the
expectation into 1-D Gaussian integrals (lognormal Laplace transforms).  With ``u = e^{-z}``
it is the Gumbel-max form used here:

.. math::

    E\,\mathrm{softmax}_a(v) = \int f_a(z) \prod_{b \ne a} F_b(z)\, dz, \qquad
    E\,\mathrm{LSE}(v) = \int z \sum_a f_a(z) \prod_{b \ne a} F_b(z)\, dz - \gamma_{Euler},

    F_b(z) = E_\xi\, G(z - m_b - \sigma_b \xi), \quad f_b = F_b', \quad
    G(x) = e^{-e^{-x}}\ (\text{Gumbel cdf}), \quad \xi \sim N(0, 1),

since ``softmax_a(v) = P(argmax_b (v_b + g_b) = a)`` and ``LSE(v) = E max_b (v_b + g_b) -
gamma`` for iid standard Gumbel g_b.  Softmax and LSE - mean depend on the logits only
through their differences, so a covariance ``D + c 1^T + 1 c^T`` (any vector c) is
equivalent to ``D``: :func:`diagonal_part` detects that form (the target logits of the
orthogonal and simplex presets have it exactly).

Quadrature (all trapezoid rules, exponentially accurate; ``T = -log(tol) + 3``):

* z: step ``h = 0.8 pi^2 / T``.  ``F_b`` and ``f_b`` are analytic and bounded (|F| <= 1,
  |f| <= 1.2) in the strip ``|Im z| < 0.8 pi / 2``, so the error is ~ ``exp(-0.8 pi^2 / h)
  = e^{-T}``.  Range ``[max_b (m_b - X sigma_b) - log T, max_b (m_b + min(sigma_b^2 / 2 + T,
  max(2 T, 2 X sigma_b))) + 2]`` with ``X = sqrt(2 (T + 2))`` (left: some ``F_b < e^{-T}``;
  right: every ``f_a`` below ``e^{-T}``).
* xi, for each logit: the sub-lattice ``sigma_b xi_j = j h / J_b``, ``J_b = ceil(h /
  (0.6 sigma_b))`` (so ``h_xi <= 0.6``: Gaussian error ``exp(-2 pi^2 / h_xi^2)``), at least
  2 when the Gaussian's growth ``exp(a^2 / 2)`` in the strip ``a = 0.8 pi / (2 sigma_b)`` of
  G exceeds e (then ``h / J <= h / 2`` keeps the error below ``e^{-T}``), truncated at
  ``|xi| <= X``.  Because the xi-nodes fall on the z sub-lattice, ``G`` is tabulated once per
  (row, logit) on that sub-lattice (2 exponentials per point) and ``F_b, f_b`` at the z-nodes
  are discrete convolutions (multiply-adds only).  For tiny ``sigma_b`` (``J_b > 64``) the
  xi-rule is Gauss-Hermite with the node count of :func:`solvers.softmax._gh_count` for the
  strip ``0.8 pi / (2 sigma_b)`` (exponentials per z-node and xi-node).

Cost per row: ``sum_b [2 ((nz - 1) J_b + 2 j_b + 1) exp + 2 nz (2 j_b + 1) mult-add] + 3 n nz``
with ``nz ~ range / h`` (about 100-250) and ``j_b = X sigma_b J_b / h``:
:func:`diag_cost` returns this count.  The results are renormalised so that ``sum_a P_a = 1``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.polynomial.hermite_e import hermegauss

__all__ = ["diag_softmax_rows", "diagonal_part", "diag_cost"]

EULER_GAMMA = 0.5772156649015329
_THETA = 0.8
_J_MAX = 64
_GH_TABLE_MAX = 24


def _gh_tables():
    xs = np.zeros((_GH_TABLE_MAX + 1, _GH_TABLE_MAX))
    ws = np.zeros((_GH_TABLE_MAX + 1, _GH_TABLE_MAX))
    for q in range(1, _GH_TABLE_MAX + 1):
        x, w = hermegauss(q)
        xs[q, :q] = x
        ws[q, :q] = w / math.sqrt(2.0 * math.pi)
    return xs, ws


_GH_X, _GH_W = _gh_tables()


@njit(cache=True)
def _params(tol):
    T = -math.log(tol) + 3.0
    h = _THETA * math.pi * math.pi / T
    X = math.sqrt(2.0 * (T + 2.0))
    return T, h, X


@njit(cache=True)
def _gh_count_strip(a, tol):
    """Fewest Gauss-Hermite nodes for an integrand analytic in |Im xi| < a (0: none fits)."""
    q = (1.0 / a) ** 2
    term = 4.0
    for n in range(1, _GH_TABLE_MAX + 1):
        term *= q * (2 * n - 1)
        if term <= tol:
            return n
    return 0


@njit(cache=True)
def _rule(sd, h, X, tol):
    """xi-rule of one logit: (J, jmax, ngh); J = 0 means Gauss-Hermite with ngh nodes."""
    if sd <= 0.0:
        return 0, 0, 1
    J = max(1, int(math.ceil(h / (0.6 * sd))))
    a = _THETA * 0.5 * math.pi / sd
    if 0.5 * a * a > 1.0:
        J = max(J, 2)
    if J <= _J_MAX:
        hs = h / J
        jmax = int(math.ceil(X * sd / hs))
        return J, jmax, 0
    g = _gh_count_strip(_THETA * 0.5 * math.pi / sd, tol)
    if g == 0:
        g = _GH_TABLE_MAX
    return 0, 0, g


@njit(cache=True)
def _zrange(m, sd, T, X):
    lo = -1e300
    hi = -1e300
    for b in range(m.shape[0]):
        lo = max(lo, m[b] - X * sd[b] - math.log(T))
        hi = max(hi, m[b] + min(0.5 * sd[b] * sd[b] + T, max(2.0 * T, 2.0 * X * sd[b])) + 2.0)
    return lo, hi


@njit(cache=True)
def diag_cost(A, var, tol):
    """Operation count (exponentials count 1, multiply-adds 0.1) of :func:`diag_softmax_rows`
    for means A (r, n) and variances var (n,)."""
    r, n = A.shape
    T, h, X = _params(tol)
    sd = np.sqrt(np.maximum(var, 0.0))
    tot = 0.0
    for k in range(r):
        lo, hi = _zrange(A[k], sd, T, X)
        nz = int((hi - lo) / h) + 2
        for b in range(n):
            J, jmax, g = _rule(sd[b], h, X, tol)
            if J > 0:
                tot += 2.0 * ((nz - 1) * J + 2 * jmax + 1) + 0.2 * nz * (2 * jmax + 1)
            else:
                tot += 2.0 * nz * g
        tot += 0.3 * n * nz
    return tot


@njit(cache=True)
def diag_softmax_rows(A, var, P, L, tol):
    r"""``P[k, a] = E softmax_a(v)``, ``L[k] = E LSE(v)``, ``v_b ~ N(A[k, b], var[b])``
    independent (the module docstring: Gumbel-max / Laplace representation, absolute error
    ~ tol).  A : (r, n), var : (n,) >= 0, P : (r, n), L : (r,) outputs; tol > 0."""
    r, n = A.shape
    T, h, X = _params(tol)
    sd = np.empty(n)
    for b in range(n):
        sd[b] = math.sqrt(max(var[b], 0.0))
    Js = np.empty(n, dtype=np.int64)
    jm = np.empty(n, dtype=np.int64)
    ng = np.empty(n, dtype=np.int64)
    jmx = 0
    for b in range(n):
        J, jmax, g = _rule(sd[b], h, X, tol)
        Js[b] = J
        jm[b] = jmax
        ng[b] = g
        jmx = max(jmx, jmax)
    # Gaussian weights of each logit's lattice rule (normalised to sum 1)
    wts = np.zeros((n, 2 * jmx + 1))
    for b in range(n):
        if Js[b] > 0:
            hx = h / Js[b] / sd[b]
            s = 0.0
            for j in range(-jm[b], jm[b] + 1):
                x = j * hx
                wv = math.exp(-0.5 * x * x)
                wts[b, j + jm[b]] = wv
                s += wv
            for j in range(2 * jm[b] + 1):
                wts[b, j] /= s
    vmax = 0.0
    for b in range(n):
        vmax = max(vmax, var[b])
    if vmax == 0.0:
        # deterministic logits: softmax and LSE themselves
        for k in range(r):
            mx = -1e300
            for b in range(n):
                mx = max(mx, A[k, b])
            s = 0.0
            for b in range(n):
                P[k, b] = math.exp(A[k, b] - mx)
                s += P[k, b]
            for b in range(n):
                P[k, b] /= s
            L[k] = mx + math.log(s)
        return
    m = np.empty(n)
    for k in range(r):
        mref = -1e300
        for b in range(n):
            mref = max(mref, A[k, b])
        for b in range(n):
            m[b] = A[k, b] - mref
        lo, hi = _zrange(m, sd, T, X)
        nz = int((hi - lo) / h) + 2
        F = np.empty((n, nz))
        f = np.empty((n, nz))
        for b in range(n):
            x0 = lo - m[b]
            if Js[b] > 0:
                J = Js[b]
                hs = h / J
                jb = jm[b]
                ln = (nz - 1) * J + 2 * jb + 1
                g = np.empty(ln)
                gp = np.empty(ln)
                for ll in range(ln):
                    x = x0 + (ll - jb) * hs
                    if x < -700.0:
                        g[ll] = 0.0
                        gp[ll] = 0.0
                    else:
                        e = math.exp(-x)
                        gv = math.exp(-e)
                        g[ll] = gv
                        gp[ll] = e * gv
                for i in range(nz):
                    sF = 0.0
                    sf = 0.0
                    c = i * J + jb
                    for j in range(2 * jb + 1):
                        wv = wts[b, j]
                        sF += wv * g[c - (j - jb)]
                        sf += wv * gp[c - (j - jb)]
                    F[b, i] = sF
                    f[b, i] = sf
            else:
                gq = ng[b]
                for i in range(nz):
                    sF = 0.0
                    sf = 0.0
                    for j in range(gq):
                        x = x0 + i * h - sd[b] * _GH_X[gq, j]
                        if x >= -700.0:
                            e = math.exp(-x)
                            gv = math.exp(-e)
                            sF += _GH_W[gq, j] * gv
                            sf += _GH_W[gq, j] * e * gv
                    F[b, i] = sF
                    f[b, i] = sf
        pre = np.empty(n + 1)
        for a in range(n):
            P[k, a] = 0.0
        lz = 0.0
        for i in range(nz):
            z = lo + i * h
            pre[0] = 1.0
            for b in range(n):
                pre[b + 1] = pre[b] * F[b, i]
            suf = 1.0
            dens = 0.0
            for a in range(n - 1, -1, -1):
                v = f[a, i] * pre[a] * suf
                P[k, a] += v
                dens += v
                suf *= F[a, i]
            lz += z * dens
        s = 0.0
        for a in range(n):
            s += P[k, a]
        for a in range(n):
            P[k, a] /= s
        L[k] = lz / s - EULER_GAMMA + mref


@njit(cache=True)
def diagonal_part(C, D, rtol):
    """If ``C = D + c 1^T + 1 c^T`` for a diagonal ``D >= 0`` and some vector c (to
    ``rtol x max|C|``), write diag(D) into D and return True (n >= 3; for n <= 2 every C
    qualifies).  Softmax and LSE - mean see only the law of the differences, which is the
    same under C and under D."""
    n = C.shape[0]
    scale = 0.0
    for i in range(n):
        for j in range(n):
            scale = max(scale, abs(C[i, j]))
    if scale == 0.0:
        for i in range(n):
            D[i] = 0.0
        return True
    c = np.empty(n)
    if n == 1:
        D[0] = max(C[0, 0], 0.0)
        return True
    if n == 2:
        D[0] = max(C[0, 0] + C[1, 1] - C[0, 1] - C[1, 0], 0.0)
        D[1] = 0.0
        return True
    c[0] = 0.5 * (C[0, 1] + C[0, 2] - C[1, 2])
    for i in range(1, n):
        c[i] = C[0, i] - c[0]
    tol = rtol * scale
    for i in range(n):
        for j in range(n):
            if i != j and abs(0.5 * (C[i, j] + C[j, i]) - c[i] - c[j]) > tol:
                return False
    for i in range(n):
        d = C[i, i] - 2.0 * c[i]
        if d < -tol:
            return False
        D[i] = max(d, 0.0)
    return True
