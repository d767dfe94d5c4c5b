"""The generic explicit Runge-Kutta step and its compiled helpers (DESIGN.md section 4).

One step of any :class:`solvers.tableaux.IntegratorMethod` (rules 2, 3, 4, 6 of its
contract) on the system ``z' = F(z)``: in mode 0 ``F = f(y, beta; theta)`` (z = y, n
components), in mode 1 the system augmented with the tangent propagator,
``z = (y, vec G)``, ``F = (f(y), vec(J(y) G))`` (n + n^2 components, G row-major,
``G[i, j] = d y_i(t) / d y_j(t0)``).  beta at a stage time comes from the encoded schedule
(:func:`solvers.schedule.beta_at`); inside a piece of a piecewise-constant schedule the
piece's value is used at every stage (also at its right end).

All functions are ``@njit(cache=True)`` with explicit signatures; the model functions are
first-class function arguments (:mod:`solvers.signatures`), so nothing here is recompiled
per model or per process.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from .schedule import PIECEWISE, beta_at
from .signatures import JAC_SIG, JacFn, RhsFn

__all__ = ["rk_step", "rk_error", "rk_dense", "dense_eval", "err_norm", "initial_step",
           "feval", "beta_stage", "copy_vector", "null_jac"]

_f8 = types.float64
_i8 = types.int64
_v1 = types.float64[::1]
_v2 = types.float64[:, ::1]


@njit(JAC_SIG, cache=True)
def null_jac(y, beta, theta, J):
    """Placeholder Jacobian (fills NaN) for plain integrations of models without one."""
    J[:, :] = np.nan


@njit(types.void(_v1, _v1), cache=True)
def copy_vector(src, dst):
    """dst[:] = src (an explicit loop: cheaper to compile than slice assignment)."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(_f8(_f8, _i8, _v1, _f8), cache=True)
def beta_stage(t, scode, sparams, tmid):
    """beta at a stage time t of a step inside the smooth piece whose midpoint is tmid.

    Piecewise-constant schedules use the piece's value throughout (also at its right end)."""
    if scode == PIECEWISE:
        return beta_at(tmid, scode, sparams)
    return beta_at(t, scode, sparams)


@njit(types.void(_i8, RhsFn, JacFn, _v1, _f8, _v1, _v1, _v2), cache=True, inline="always")
def feval(mode, rhs, jac, z, beta, theta, out, J):
    """Right-hand side of the plain (mode 0) or augmented (mode 1) system.

    mode 0: ``out = f(z)``; mode 1: z = (y, vec G), ``out = (f(y), vec(J(y) G))``."""
    if mode == 0:
        rhs(z, beta, theta, out)
        return
    n = J.shape[0]
    y = z[:n]
    rhs(y, beta, theta, out[:n])
    jac(y, beta, theta, J)
    for i in range(n):
        for j in range(n):
            acc = 0.0
            for k in range(n):
                acc += J[i, k] * z[n + k * n + j]
            out[n + i * n + j] = acc


@njit(_f8(_i8, RhsFn, JacFn, _v1, _i8, _v1, _f8, _v2, _v1, _v1, _f8, _f8, _f8, _v2, _v1,
          _v1, _v2), cache=True, inline="always")
def rk_step(mode, rhs, jac, theta, scode, sparams, tmid, A, c, z, t, t_new, hs, K, ztmp,
            znew, Jm):
    """Stages 2..S of one explicit Runge-Kutta step from (t, z) to t_new = t + hs.

    On entry ``K[0] = F(z)`` (first same as last).  Stage s (0-based, s >= 1) is
    ``K[s] = F(z + hs sum_{j<s} A[s, j] K[j])`` at ``beta(t + c[s] hs)`` (``t_new`` when
    c[s] = 1; beta is re-evaluated only when c changes).  The last stage's argument is the new
    state (tableau rule 3): it is written to ``znew`` and ``K[S-1] = F(znew)``.  S - 1
    evaluations of F.  Returns beta at the step end (the last stage's beta).
    """
    S = A.shape[0]
    nz = z.shape[0]
    beta = 0.0
    c_prev = -1.0
    for s in range(1, S):
        last = s == S - 1
        for i in range(nz):
            ztmp[i] = 0.0
        for j in range(s):
            a = A[s, j]
            if a != 0.0:
                for i in range(nz):
                    ztmp[i] += a * K[j, i]
        if last:
            for i in range(nz):
                znew[i] = z[i] + hs * ztmp[i]
        else:
            for i in range(nz):
                ztmp[i] = z[i] + hs * ztmp[i]
        cs = c[s]
        if cs != c_prev:
            ts = t_new if cs == 1.0 else t + cs * hs
            beta = beta_stage(ts, scode, sparams, tmid)
            c_prev = cs
        if last:
            feval(mode, rhs, jac, znew, beta, theta, K[s], Jm)
        else:
            feval(mode, rhs, jac, ztmp, beta, theta, K[s], Jm)
    return beta


@njit(types.void(_v1, _v2, _f8, _v1), cache=True, inline="always")
def rk_error(e, K, hs, err):
    """Embedded error estimate ``err = hs sum_j e_j K[j]`` (tableau rule 4)."""
    S = K.shape[0]
    for i in range(err.shape[0]):
        acc = 0.0
        for j in range(S):
            acc += e[j] * K[j, i]
        err[i] = hs * acc


@njit(types.void(_v1, _v2, _v1, _v1, _f8, _v2), cache=True, inline="always")
def rk_dense(d, K, z, znew, hs, D):
    """Dense-output coefficients D (5, nz) of the step (tableau rule 6):
    ``r1 = z, r2 = znew - z, r3 = hs K[0] - r2, r4 = r2 - hs K[S-1] - r3,
    r5 = hs sum_j d_j K[j]``."""
    S = K.shape[0]
    for i in range(z.shape[0]):
        dz = znew[i] - z[i]
        bspl = hs * K[0, i] - dz
        D[0, i] = z[i]
        D[1, i] = dz
        D[2, i] = bspl
        D[3, i] = dz - hs * K[S - 1, i] - bspl
        acc = 0.0
        for j in range(S):
            acc += d[j] * K[j, i]
        D[4, i] = hs * acc


@njit(types.void(_v2, _f8, _v1), cache=True)
def dense_eval(D, theta, out):
    """Dense output ``r1 + th (r2 + (1-th) (r3 + th (r4 + (1-th) r5)))`` at fraction th."""
    th1 = 1.0 - theta
    for i in range(out.shape[0]):
        out[i] = D[0, i] + theta * (D[1, i] + th1 * (D[2, i] + theta * (D[3, i] + th1 * D[4, i])))


@njit(_f8(_v1, _v1, _v1, _f8, _f8), cache=True)
def err_norm(err, y, ynew, rtol, atol):
    """Mixed RMS norm ``sqrt(mean((err / (atol + rtol max(|y|, |ynew|)))^2))``."""
    acc = 0.0
    m = err.shape[0]
    for i in range(m):
        sk = atol + rtol * max(abs(y[i]), abs(ynew[i]))
        r = err[i] / sk
        acc += r * r
    return math.sqrt(acc / m)


@njit(_f8(_i8, RhsFn, JacFn, _v1, _v1, _f8, _f8, _v1, _i8, _v1, _f8, _f8, _f8, _i8, _v1, _v1,
          _v2), cache=True)
def initial_step(mode, rhs, jac, z, f0, t, t_span, theta, scode, sparams, tmid, rtol, atol,
                 order, z1, f1, J):
    """Hairer's starting step (``hinit`` of DOPRI5) for a method of order ``order``, RMS
    norms: ``h0 = 0.01 ||z|| / ||f0||``, one Euler step for a second-derivative estimate,
    ``h1 = (0.01 / max(||f'||, ||f0||))^(1/order)``, returns ``min(100 h0, h1)``."""
    m = z.shape[0]
    dnf = 0.0
    dny = 0.0
    for i in range(m):
        sk = atol + rtol * abs(z[i])
        dnf += (f0[i] / sk) ** 2
        dny += (z[i] / sk) ** 2
    dnf /= m
    dny /= m
    if dnf <= 1e-10 or dny <= 1e-10:
        h = 1.0e-6
    else:
        h = math.sqrt(dny / dnf) * 0.01
    h = min(h, t_span)
    for i in range(m):
        z1[i] = z[i] + h * f0[i]
    feval(mode, rhs, jac, z1, beta_stage(t + h, scode, sparams, tmid), theta, f1, J)
    der2 = 0.0
    for i in range(m):
        sk = atol + rtol * abs(z[i])
        der2 += ((f1[i] - f0[i]) / sk) ** 2
    der2 = math.sqrt(der2 / m) / h
    der12 = max(abs(der2), math.sqrt(dnf))
    if der12 <= 1e-15:
        h1 = max(1.0e-6, h * 1.0e-3)
    else:
        h1 = (0.01 / der12) ** (1.0 / order)
    return min(100.0 * h, h1)
