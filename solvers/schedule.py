"""Compiled evaluation of the annealing schedules beta(t) (DESIGN.md section 1).

Every schedule class of :mod:`derivations.spec` encodes itself as ``(code, params) =
schedule.encode()``: an integer code from :data:`derivations.spec.SCHEDULE_CODES` and a float64
parameter array.  :func:`beta_at` evaluates ``beta(t)`` from that pair inside compiled code, so
the integrators can evaluate the inverse temperature at every Runge-Kutta stage time without
calling back into Python.  t is the gradient-flow time (``t = eta * steps`` for GD/SGD).

Encodings (see ``derivations/spec.py``):

* constant, ``[beta]``: ``beta``;
* linear, ``[T0, tau]``: ``1/T0 + (1 - 1/T0) max(t, 0)/tau`` for t < tau, else 1;
* exponential, ``[T0, tau]``: ``1 / (1 + (T0 - 1) exp(-max(t, 0)/tau))``;
* piecewise, ``[n, t_1..t_{n-1}, b_1..b_n]``: ``b_{i+1}`` with i = #{breakpoints <= t}
  (right-continuous);
* tabulated, ``[n, t_1..t_n, b_1..b_n]``: linear interpolation, constant beyond both ends.

:func:`schedule_kinks` lists the times at which beta(t) is not smooth (jumps of the piecewise
schedule, kinks of the linear and tabulated ones); the integrators never step across them.

This module imports ``derivations.spec`` (plain NumPy), never SymPy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, types

from derivations.spec import SCHEDULE_CODES

__all__ = [
    "beta_at",
    "schedule_kinks",
    "schedule_end_time",
    "CONSTANT",
    "LINEAR",
    "EXPONENTIAL",
    "PIECEWISE",
    "TABULATED",
    "COMPILED_CODES",
]

CONSTANT = SCHEDULE_CODES["constant"]
LINEAR = SCHEDULE_CODES["linear"]
EXPONENTIAL = SCHEDULE_CODES["exponential"]
PIECEWISE = SCHEDULE_CODES["piecewise"]
TABULATED = SCHEDULE_CODES["tabulated"]

#: The schedule codes :func:`beta_at` has a branch for; encoding any other is refused
#: (:func:`solvers.integrate.encode_schedule`), since beta_at would return NaN.
COMPILED_CODES = frozenset({CONSTANT, LINEAR, EXPONENTIAL, PIECEWISE, TABULATED})

_BETA_SIG = types.float64(types.float64, types.int64, types.float64[::1])
_KINKS_SIG = types.float64[::1](types.int64, types.float64[::1])


@njit(_BETA_SIG, cache=True)
def beta_at(t, code, params):
    """Inverse temperature ``beta(t)`` of the schedule encoded as ``(code, params)``.

    Parameters
    ----------
    t : float, gradient-flow time.
    code : int, schedule family (``SCHEDULE_CODES``).
    params : (p,) float64 array, the family's parameters (``Schedule.encode()[1]``).

    Returns NaN for an unknown code.
    """
    if code == CONSTANT:
        return params[0]
    if code == LINEAR:
        T0 = params[0]
        tau = params[1]
        if t < tau:
            b0 = 1.0 / T0
            return b0 + (1.0 - b0) * max(t, 0.0) / tau
        return 1.0
    if code == EXPONENTIAL:
        T0 = params[0]
        tau = params[1]
        return 1.0 / (1.0 + (T0 - 1.0) * math.exp(-max(t, 0.0) / tau))
    if code == PIECEWISE:
        n = int(params[0])
        # breakpoints: params[1 : n], betas: params[n : 2n]
        # index = number of breakpoints <= t  (np.searchsorted(side="right")), by bisection
        lo = 0
        hi = n - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if params[1 + mid] <= t:
                lo = mid + 1
            else:
                hi = mid
        return params[n + lo]
    if code == TABULATED:
        n = int(params[0])
        # times: params[1 : n+1], betas: params[n+1 : 2n+1]
        if t <= params[1]:
            return params[n + 1]
        if t >= params[n]:
            return params[2 * n]
        # find j with times[j] <= t < times[j+1]
        lo = 0
        hi = n - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if params[1 + mid] <= t:
                lo = mid
            else:
                hi = mid
        t_lo = params[1 + lo]
        t_hi = params[2 + lo]
        b_lo = params[n + 1 + lo]
        b_hi = params[n + 2 + lo]
        if t == t_lo:
            return b_lo
        return b_lo + (b_hi - b_lo) / (t_hi - t_lo) * (t - t_lo)
    return math.nan


@njit(_KINKS_SIG, cache=True)
def schedule_kinks(code, params):
    """Sorted times at which beta(t) is not smooth: jumps (piecewise) or kinks (linear at tau,
    tabulated at its nodes).  Empty for the constant and exponential schedules.

    Returns a (m,) float64 array.
    """
    if code == LINEAR:
        out = np.empty(1)
        out[0] = params[1]
        return out
    if code == PIECEWISE:
        n = int(params[0])
        return params[1:n].copy()
    if code == TABULATED:
        n = int(params[0])
        return params[1:n + 1].copy()
    return np.empty(0)


def schedule_end_time(schedule: Any, beta_tol: float = 1e-12) -> float:
    """First time after which ``beta(t) >= 1 - beta_tol`` for good (``inf`` if never).

    The schedule's own :meth:`settle_time` against its final beta: with ``beta_final = 1``
    the same time; a schedule that settles below ``1 - beta_tol`` never gets there.
    """
    if not 0 <= beta_tol < 1:
        raise ValueError(f"beta_tol: must lie in [0, 1), got {beta_tol}")
    gap = 1.0 - schedule.beta_final
    if gap > beta_tol:
        return math.inf
    return float(schedule.settle_time(beta_tol - gap))
