"""Compiled ODE integrators for the reduced gradient flow (DESIGN.md sections 2 and 4).

The equations are ``dy/dt = f(y, beta(t); theta)``: y (n,) the summary statistics (Q upper
triangle, R, optionally the weight logits alpha), theta (p,) the numeric parameters, beta(t)
the annealing schedule, t the gradient-flow time (t = eta * steps for GD/SGD).  f is a compiled
model function ``rhs(y, beta, theta, out)`` and its Jacobian ``jac(y, beta, theta, J)``
(signatures in :mod:`solvers.signatures`).

Methods
-------
``dopri5`` (method code 0)
    The explicit Runge-Kutta pair of Dormand and Prince, order 5 with an embedded order-4
    error estimate, 7 stages, first-same-as-last (6 new right-hand-side evaluations per
    accepted step).  Local error estimate ``err_i = h sum_j e_j k_j`` with
    ``e = b5 - b4``, measured in the mixed RMS norm

        ``||err|| = sqrt( mean_i ( err_i / (atol + rtol * max(|y_i|, |y_new_i|)) )^2 )``;

    a step is accepted when ``||err|| <= 1``.  Step sizes come from the PI controller of
    Hairer, Norsett & Wanner (Solving ODEs I, sec. II.4; Gustafsson's controller)
    ``h_new = h / clip(err^(0.2 - 0.75 b) * err_old^(-b) / 0.9, 1/10, 5)`` with b = 0.04, no
    step-size increase directly after a rejection.  The initial step is chosen by Hairer's
    algorithm (``hinit``: ``h = 0.01 ||y0|| / ||f0||``, refined by an Euler step and a
    second-derivative estimate ``h = (0.01 / max(||f'||, ||f0||))^(1/5)``) unless given.
    Dense output: Hairer's continuous extension of order 4 (``contd5``) on every accepted
    step, ``y(t + theta h) = r1 + theta (r2 + (1-theta) (r3 + theta (r4 + (1-theta) r5)))``,
    which is continuous across steps and exact at the step points.

``rk4`` (method code 1)
    Classical fixed-step Runge-Kutta of order 4 (4 stages plus one evaluation at the step end
    used for the dense output and as the next step's first stage).  The step is the largest
    ``h' <= h`` that divides each smooth piece of the schedule into equal steps.  Dense output:
    the cubic Hermite interpolant through (y, f) at both ends of each step (order 3,
    continuous).

Schedules
---------
beta(t) is evaluated inside the compiled code at every stage time from the encoded schedule
``(code, params)`` (:func:`solvers.schedule.beta_at`).  The integrators never step across a
time where beta(t) is not smooth (:func:`solvers.schedule.schedule_kinks`); inside a piece of a
piecewise-constant schedule the piece's beta is used at every stage (also at the piece's right
end), and f is re-evaluated at the start of each piece.

Tangent propagator (mode 1)
---------------------------
The augmented system ``y' = f(y, beta(t))``, ``G' = J(y, beta(t)) G``, ``G(t0) = I`` (n, n),
``J = df/dy``, is integrated by the same stepper on the state ``z = (y, G.ravel())`` of
length n + n^2 (G row-major, ``G[i, j] = d y_i(t) / d y_j(t0)``); the error norm covers all
n + n^2 components.

Events
------
An optional terminal event is an integer code with a float64 parameter array (no Python
closures, so that everything stays cacheable):

* ``0`` none;
* ``1`` converged, params ``[tol, beta_min]``: once ``beta >= beta_min`` (default
  ``1 - 1e-12``), stop at the first accepted
  step point (or at t0) where ``max_i |dy_i/dt| < tol``;
* ``2`` threshold crossing, params ``[c0, direction, c_1, ..., c_n]``: stop where
  ``g(y) = c . y - c0`` crosses zero (direction +1: from negative to non-negative only,
  -1: from positive to non-positive only, 0: either way).  The crossing time is located on
  the dense output by the Illinois method to ``~1e-12`` relative; the returned state is the
  dense-output state at the end of the final bracket on the crossed side.

* ``3`` predicate, params ``[direction, p_1, ..., p_m]`` and a compiled function
  ``g(t, y, f, beta, p)`` with :data:`solvers.signatures.EVENT_SIG` (e.g. "the outcome is
  decided"): stop where g crosses zero in ``direction``, located like a threshold crossing.
  g is passed as a first-class function, so the integrator stays cached on disk.

Built-in events are added in :func:`_event_value` (and :func:`_event_kind`,
:func:`_event_direction`, :func:`_event_needs_f`).

Status codes: 0 success (reached t_end), 1 terminal event fired, -1 ``max_steps`` attempted
steps exceeded, -2 step-size underflow, -3 non-finite values (the right-hand side returned
NaN/inf and the step size underflowed while rejecting).
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, types
from numba.core.dispatcher import Dispatcher
from numba.core.types.function_type import CompileResultWAP

from . import schedule as _schedule_module
from .schedule import PIECEWISE, beta_at, schedule_kinks
from .signatures import EVENT_SIG, JAC_SIG, RHS_SIG, EventFn, JacFn, RhsFn

__all__ = [
    "METHOD_CODES",
    "EVENT_CODES",
    "STATUS_MESSAGES",
    "STATUS_SUCCESS",
    "STATUS_EVENT",
    "STATUS_MAX_STEPS",
    "STATUS_UNDERFLOW",
    "STATUS_NONFINITE",
    "INFO_I_FIELDS",
    "INFO_F_FIELDS",
    "Event",
    "Solution",
    "integrate",
    "propagator",
    "integrate_core",
    "null_jac",
    "null_event",
    "encode_schedule",
    "as_first_class",
    "source_key",
]

METHOD_CODES = {"dopri5": 0, "rk4": 1}
EVENT_CODES = {"none": 0, "converged": 1, "threshold": 2, "predicate": 3}

STATUS_SUCCESS = 0
STATUS_EVENT = 1
STATUS_MAX_STEPS = -1
STATUS_UNDERFLOW = -2
STATUS_NONFINITE = -3
STATUS_MESSAGES = {
    STATUS_SUCCESS: "success: reached t_end",
    STATUS_EVENT: "terminal event fired",
    STATUS_MAX_STEPS: "max_steps exceeded",
    STATUS_UNDERFLOW: "step size underflow",
    STATUS_NONFINITE: "non-finite right-hand side (step size underflow while rejecting)",
}

#: Layout of the integer / float statistics arrays filled by :func:`integrate_core`.
INFO_I_FIELDS = ("status", "n_steps", "n_rejected", "n_rhs", "n_filled")
INFO_F_FIELDS = ("t_final", "t_event", "h_last")
N_INFO_I = len(INFO_I_FIELDS)
N_INFO_F = len(INFO_F_FIELDS)

_EVENT_KIND_NONE = 0
_EVENT_KIND_CONDITION = 1   # fires at the first accepted point where value <= 0 (not located)
_EVENT_KIND_CROSSING = 2    # fires on a sign change, located on the dense output

# ----------------------------------------------------------------------------------------
# Dormand-Prince 5(4) tableau and Hairer's dense-output coefficients
# ----------------------------------------------------------------------------------------
_C2, _C3, _C4, _C5 = 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0
_A21 = 1.0 / 5.0
_A31, _A32 = 3.0 / 40.0, 9.0 / 40.0
_A41, _A42, _A43 = 44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0
_A51, _A52, _A53, _A54 = 19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0
_A61, _A62, _A63, _A64, _A65 = (9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0,
                                -5103.0 / 18656.0)
_A71, _A73, _A74, _A75, _A76 = (35.0 / 384.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0,
                                11.0 / 84.0)
_E1, _E3, _E4, _E5, _E6, _E7 = (71.0 / 57600.0, -71.0 / 16695.0, 71.0 / 1920.0,
                                -17253.0 / 339200.0, 22.0 / 525.0, -1.0 / 40.0)
_D1, _D3, _D4, _D5, _D6, _D7 = (-12715105075.0 / 11282082432.0, 87487479700.0 / 32700410799.0,
                                -10690763975.0 / 1880347072.0, 701980252875.0 / 199316789632.0,
                                -1453857185.0 / 822651844.0, 69997945.0 / 29380423.0)

# PI controller (Hairer's DOPRI5 defaults)
_SAFE = 0.9
_BETA_PI = 0.04
_EXPO1 = 0.2 - 0.75 * _BETA_PI
_FACC1 = 1.0 / 0.2   # largest decrease: h_new >= h / 5
_FACC2 = 1.0 / 10.0  # largest increase: h_new <= 10 h
_EPS = 2.220446049250313e-16

# ----------------------------------------------------------------------------------------
# small compiled helpers
# ----------------------------------------------------------------------------------------
_f8 = types.float64
_i8 = types.int64
_b1 = types.boolean
_v1 = types.float64[::1]
_v2 = types.float64[:, ::1]


@njit(JAC_SIG, cache=True)
def null_jac(y, beta, theta, J):
    """Placeholder Jacobian (fills NaN) for plain integrations of models without one."""
    J[:, :] = np.nan


@njit(EVENT_SIG, cache=True)
def null_event(t, y, f, beta, params):
    """Placeholder event predicate for integrations without a user event (never fires)."""
    return 1.0


@njit(types.void(_v1, _v1), cache=True)
def _copy(src, dst):
    """dst[:] = src (an explicit loop: cheaper to compile than slice assignment)."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@njit(_f8(_f8, _i8, _v1, _f8), cache=True)
def _beta_stage(t, scode, sparams, tmid):
    """beta at a stage time t of a step inside the smooth piece whose midpoint is tmid.

    Piecewise-constant schedules use the piece's value throughout (also at its right end)."""
    if scode == PIECEWISE:
        return beta_at(tmid, scode, sparams)
    return beta_at(t, scode, sparams)


@njit(types.void(_i8, RhsFn, JacFn, _v1, _f8, _v1, _v1, _v2), cache=True)
def _feval(mode, rhs, jac, z, beta, theta, out, J):
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


@njit(_i8(_i8), cache=True)
def _event_kind(code):
    """0: no event; 1: condition (fires where value <= 0); 2: sign-change crossing."""
    if code == 1:
        return _EVENT_KIND_CONDITION
    if code == 2 or code == 3:
        return _EVENT_KIND_CROSSING
    return _EVENT_KIND_NONE


@njit(_i8(_i8, _v1), cache=True)
def _event_direction(code, params):
    """Direction of a crossing event: +1 upward only, -1 downward only, 0 both."""
    if code == 2 or code == 3:
        d = params[1] if code == 2 else params[0]
        if d > 0:
            return 1
        if d < 0:
            return -1
    return 0


@njit(_b1(_i8), cache=True)
def _event_needs_f(code):
    """Whether :func:`_event_value` reads f = dy/dt (then f is evaluated while locating)."""
    return code == 1 or code == 3


@njit(_f8(_i8, EventFn, _v1, _f8, _v1, _v1, _f8), cache=True)
def _event_value(code, efn, params, t, y, f, beta):
    """Event function; its sign change (crossing events) or non-positivity (condition events)
    means firing.  y (n,), f = dy/dt (n,), beta = beta(t).

    * 1 converged: ``max |f| - params[0]`` once ``beta >= params[1]``, else +inf;
    * 2 threshold: ``sum_i params[2 + i] y_i - params[0]``;
    * 3 predicate: ``efn(t, y, f, beta, params[1:])``.
    """
    if code == 1:
        if beta < params[1]:
            return math.inf
        m = 0.0
        for i in range(y.shape[0]):
            a = abs(f[i])
            if a > m or a != a:
                m = a
        return m - params[0]
    if code == 2:
        acc = -params[0]
        for i in range(y.shape[0]):
            acc += params[2 + i] * y[i]
        return acc
    if code == 3:
        return efn(t, y, f, beta, params[1:])
    return 1.0


@njit(types.void(_v2, _f8, _v1), cache=True)
def _dense_eval(D, theta, out):
    """Dense output ``r1 + th (r2 + (1-th) (r3 + th (r4 + (1-th) r5)))`` at fraction th."""
    th1 = 1.0 - theta
    for i in range(out.shape[0]):
        out[i] = D[0, i] + theta * (D[1, i] + th1 * (D[2, i] + theta * (D[3, i] + th1 * D[4, i])))


@njit(_f8(_v1, _v1, _v1, _f8, _f8), cache=True)
def _err_norm(err, y, ynew, rtol, atol):
    """Mixed RMS norm ``sqrt(mean((err / (atol + rtol max(|y|, |ynew|)))^2))``."""
    acc = 0.0
    m = err.shape[0]
    for i in range(m):
        sk = atol + rtol * max(abs(y[i]), abs(ynew[i]))
        r = err[i] / sk
        acc += r * r
    return math.sqrt(acc / m)


@njit(_f8(_i8, RhsFn, JacFn, _v1, _v1, _f8, _f8, _v1, _i8, _v1, _f8, _f8, _f8, _v1, _v1, _v2),
      cache=True)
def _initial_step(mode, rhs, jac, z, f0, t, t_span, theta, scode, sparams, tmid, rtol, atol,
                  z1, f1, J):
    """Hairer's starting step (``hinit`` of DOPRI5, order 5) with RMS norms."""
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
    _feval(mode, rhs, jac, z1, _beta_stage(t + h, scode, sparams, tmid), theta, f1, J)
    der2 = 0.0
    for i in range(m):
        sk = atol + rtol * abs(z[i])
        der2 += ((f1[i] - f0[i]) / sk) ** 2
    der2 = math.sqrt(der2 / m) / h
    der12 = max(abs(der2), math.sqrt(dnf))
    if der12 <= 1e-15:
        h1 = max(1.0e-6, h * 1.0e-3)
    else:
        h1 = (0.01 / der12) ** 0.2
    return min(100.0 * h, h1)


# ----------------------------------------------------------------------------------------
# the driver: one stepper core for both methods and both modes
# ----------------------------------------------------------------------------------------
_INTEGRATE_SIG = types.void(
    _i8, _i8, RhsFn, JacFn,            # method, mode, rhs, jac
    _v1, _f8, _f8, _v1, _v1,           # y0, t0, t_end, t_eval, theta
    _i8, _v1,                          # schedule code, params
    _f8, _f8, _f8, _f8, _i8,           # rtol, atol, h0, h_max, max_steps
    _i8, _v1, EventFn,                 # event code, params, predicate
    _v1, _v2, types.int64[::1], _v1,   # z_out, Z_eval, info_i, info_f
)


def source_key(*modules: Any) -> int:
    """Integer digest of the source files of ``modules``.

    Numba's on-disk cache only watches the file that defines a function, yet a cached function
    contains the machine code of the compiled functions it calls from other modules.  Compiled
    entry points that call into other modules are therefore built inside a factory that closes
    over this digest: Numba hashes closure variables into the cache key, so editing a
    dependency invalidates the cached entry point.
    """
    h = hashlib.sha256()
    for m in modules:
        h.update(Path(m.__file__).read_bytes())
    return int(h.hexdigest()[:15], 16)


def _build_integrate_core(deps_key: int):
    @njit(_INTEGRATE_SIG, cache=True)
    def integrate_core(method, mode, rhs, jac, y0, t0, t_end, t_eval, theta, scode, sparams,
                       rtol, atol, h0, h_max, max_steps, ecode, eparams, efn, z_out, Z_eval,
                       info_i, info_f):
        """Integrate ``dy/dt = f(y, beta(t); theta)`` from t0 to t_end (compiled core).

        Parameters
        ----------
        method : 0 DOPRI5 (adaptive), 1 RK4 (fixed step h0).
        mode : 0 plain, 1 augmented with the tangent propagator G (see the module docstring).
        rhs, jac : compiled model functions (``RhsFn``, ``JacFn``); jac is only called in mode 1.
        y0 : (n,) initial state.
        t0, t_end : time interval, t_end >= t0 (gradient-flow time).
        t_eval : (n_eval,) sorted output times in [t0, t_end]; rows of Z_eval.
        theta : (p,) model parameters.
        scode, sparams : encoded schedule (``Schedule.encode()``).
        rtol, atol : tolerances of the mixed error norm (DOPRI5).
        h0 : initial step (DOPRI5; <= 0: automatic) or the fixed step (RK4; must be > 0).
        h_max : largest step (DOPRI5).
        max_steps : largest number of attempted steps (accepted + rejected).
        ecode, eparams : terminal event (code, parameters); ecode 0 for none.
        efn : event predicate (``EventFn``), only called for ecode 3.

        Outputs (written in place)
        --------------------------
        z_out : (nz,) state at t_final, nz = n (mode 0) or n + n^2 (mode 1, G row-major).
        Z_eval : (n_eval, nz) dense output at t_eval; rows after an event or failure are NaN.
        info_i : int64 (5,) ``status, n_steps (accepted), n_rejected, n_rhs, n_filled``.
        info_f : float64 (3,) ``t_final, t_event (NaN if none), h_last``.
        """
        _deps = deps_key  # noqa: F841 (part of the cache key, see source_key)
        n = y0.shape[0]
        nz = z_out.shape[0]
        n_eval = t_eval.shape[0]
        for i in range(n_eval):
            for j in range(nz):
                Z_eval[i, j] = np.nan
        for k in range(info_i.shape[0]):
            info_i[k] = 0
        info_f[0] = t0
        info_f[1] = np.nan
        info_f[2] = 0.0

        Jm = np.zeros((n, n)) if mode == 1 else np.zeros((0, 0))
        z = np.empty(nz)
        for i in range(n):
            z[i] = y0[i]
        if mode == 1:
            for i in range(n, nz):
                z[i] = 0.0
            for i in range(n):
                z[n + i * n + i] = 1.0
        znew = np.empty(nz)
        ztmp = np.empty(nz)
        errv = np.empty(nz)
        k2 = np.empty(nz)   # Runge-Kutta stages (k1 = fa)
        k3 = np.empty(nz)
        k4 = np.empty(nz)
        k5 = np.empty(nz)
        k6 = np.empty(nz)
        k7 = np.empty(nz)
        D = np.zeros((5, nz))
        fa = np.empty(nz)   # f at the step start (FSAL)
        fb = np.empty(nz)   # f at the step end
        zd = np.empty(nz)   # dense-output state
        fd = np.empty(nz)   # f at a dense-output state (events needing f)
        fzero = np.zeros(n)

        kinks = schedule_kinks(scode, sparams)
        n_kinks = kinks.shape[0]
        i_kink = 0
        while i_kink < n_kinks and kinks[i_kink] <= t0:
            i_kink += 1

        t = t0
        n_steps = 0
        n_rej = 0
        n_rhs = 0
        n_att = 0
        status = STATUS_SUCCESS
        t_event = np.nan
        i_ev = 0
        # output points at t0
        while i_ev < n_eval and t_eval[i_ev] <= t0:
            if t_eval[i_ev] == t0:
                _copy(z, Z_eval[i_ev])
            i_ev += 1

        # first smooth piece [seg_lo, seg_hi]
        seg_lo = t0
        seg_hi = t_end
        if i_kink < n_kinks and kinks[i_kink] < t_end:
            seg_hi = kinks[i_kink]
        tmid = 0.5 * (seg_lo + seg_hi) if seg_hi > seg_lo else seg_lo
        beta = _beta_stage(t, scode, sparams, tmid)
        _feval(mode, rhs, jac, z, beta, theta, fa, Jm)
        n_rhs += 1
        finite = True
        for i in range(nz):
            if not math.isfinite(fa[i]) or not math.isfinite(z[i]):
                finite = False
        if not finite:
            status = STATUS_NONFINITE

        ekind = _event_kind(ecode)
        edir = _event_direction(ecode, eparams)
        needs_f = _event_needs_f(ecode)
        g_old = 1.0
        fired = False
        if ekind != _EVENT_KIND_NONE and status == STATUS_SUCCESS:
            g_old = _event_value(ecode, efn, eparams, t, z[:n], fa[:n], beta)
            if ekind == _EVENT_KIND_CONDITION and g_old <= 0.0:
                fired = True
                status = STATUS_EVENT
                t_event = t

        # step-size initialisation
        h = 0.0
        rk_nsub = 1
        rk_i = 0
        if method == 0:
            if h0 > 0:
                h = h0
            elif t_end > t0 and status == STATUS_SUCCESS:
                h = _initial_step(mode, rhs, jac, z, fa, t, t_end - t0, theta, scode, sparams, tmid,
                                  rtol, atol, ztmp, fb, Jm)
                n_rhs += 1
            h = min(h, h_max)
        else:
            h = h0
            if seg_hi > seg_lo:
                rk_nsub = max(1, int(math.ceil((seg_hi - seg_lo) / h - 1e-9)))
        facold = 1.0e-4
        reject_prev = False
        last_nonfinite = False

        while status == STATUS_SUCCESS and t < t_end:
            # ---- move to the next smooth piece of the schedule -------------------------------
            if t >= seg_hi:
                seg_lo = seg_hi
                while i_kink < n_kinks and kinks[i_kink] <= seg_lo:
                    i_kink += 1
                seg_hi = t_end
                if i_kink < n_kinks and kinks[i_kink] < t_end:
                    seg_hi = kinks[i_kink]
                tmid = 0.5 * (seg_lo + seg_hi)
                beta = _beta_stage(t, scode, sparams, tmid)
                _feval(mode, rhs, jac, z, beta, theta, fa, Jm)
                n_rhs += 1
                if method == 1:
                    rk_nsub = max(1, int(math.ceil((seg_hi - seg_lo) / h0 - 1e-9)))
                    rk_i = 0
            if n_att >= max_steps:
                status = STATUS_MAX_STEPS
                break
            # ---- step end ----------------------------------------------------------------------
            if method == 0:
                if t + 1.01 * h >= seg_hi:
                    t_new = seg_hi
                else:
                    t_new = t + h
            else:
                if rk_i + 1 >= rk_nsub:
                    t_new = seg_hi
                else:
                    t_new = seg_lo + (rk_i + 1) * ((seg_hi - seg_lo) / rk_nsub)
            hs = t_new - t
            if hs <= 16.0 * _EPS * abs(t) or hs <= 0.0:
                status = STATUS_NONFINITE if last_nonfinite else STATUS_UNDERFLOW
                break
            n_att += 1

            # ---- one step ---------------------------------------------------------------------
            if method == 0:
                for i in range(nz):
                    ztmp[i] = z[i] + hs * _A21 * fa[i]
                _feval(mode, rhs, jac, ztmp, _beta_stage(t + _C2 * hs, scode, sparams, tmid),
                       theta, k2, Jm)
                for i in range(nz):
                    ztmp[i] = z[i] + hs * (_A31 * fa[i] + _A32 * k2[i])
                _feval(mode, rhs, jac, ztmp, _beta_stage(t + _C3 * hs, scode, sparams, tmid),
                       theta, k3, Jm)
                for i in range(nz):
                    ztmp[i] = z[i] + hs * (_A41 * fa[i] + _A42 * k2[i] + _A43 * k3[i])
                _feval(mode, rhs, jac, ztmp, _beta_stage(t + _C4 * hs, scode, sparams, tmid),
                       theta, k4, Jm)
                for i in range(nz):
                    ztmp[i] = z[i] + hs * (_A51 * fa[i] + _A52 * k2[i] + _A53 * k3[i]
                                           + _A54 * k4[i])
                _feval(mode, rhs, jac, ztmp, _beta_stage(t + _C5 * hs, scode, sparams, tmid),
                       theta, k5, Jm)
                for i in range(nz):
                    ztmp[i] = z[i] + hs * (_A61 * fa[i] + _A62 * k2[i] + _A63 * k3[i]
                                           + _A64 * k4[i] + _A65 * k5[i])
                beta_new = _beta_stage(t_new, scode, sparams, tmid)
                _feval(mode, rhs, jac, ztmp, beta_new, theta, k6, Jm)
                for i in range(nz):
                    znew[i] = z[i] + hs * (_A71 * fa[i] + _A73 * k3[i] + _A74 * k4[i]
                                           + _A75 * k5[i] + _A76 * k6[i])
                _feval(mode, rhs, jac, znew, beta_new, theta, k7, Jm)
                n_rhs += 6
                for i in range(nz):
                    errv[i] = hs * (_E1 * fa[i] + _E3 * k3[i] + _E4 * k4[i]
                                    + _E5 * k5[i] + _E6 * k6[i] + _E7 * k7[i])
                err = _err_norm(errv, z, znew, rtol, atol)
                if not math.isfinite(err):
                    # NaN/inf somewhere: reject hard
                    last_nonfinite = True
                    n_rej += 1
                    reject_prev = True
                    h = 0.2 * hs
                    continue
                last_nonfinite = False
                fac11 = err ** _EXPO1
                if err > 1.0:
                    n_rej += 1
                    reject_prev = True
                    h = hs / min(_FACC1, fac11 / _SAFE)
                    continue
                fac = fac11 / facold ** _BETA_PI
                fac = max(_FACC2, min(_FACC1, fac / _SAFE))
                hnew = hs / fac
                if reject_prev:
                    hnew = min(hnew, hs)
                reject_prev = False
                facold = max(err, 1.0e-4)
                if t_new == seg_hi and h > hs:
                    # the step was shortened to hit the end of the piece: keep the longer proposal
                    hnew = max(hnew, h)
                h = min(hnew, h_max)
                for i in range(nz):
                    fb[i] = k7[i]
                    dz = znew[i] - z[i]
                    bspl = hs * fa[i] - dz
                    D[0, i] = z[i]
                    D[1, i] = dz
                    D[2, i] = bspl
                    D[3, i] = dz - hs * fb[i] - bspl
                    D[4, i] = hs * (_D1 * fa[i] + _D3 * k3[i] + _D4 * k4[i]
                                    + _D5 * k5[i] + _D6 * k6[i] + _D7 * k7[i])
            else:
                th = t + 0.5 * hs
                bmid = _beta_stage(th, scode, sparams, tmid)
                beta_new = _beta_stage(t_new, scode, sparams, tmid)
                for i in range(nz):
                    ztmp[i] = z[i] + 0.5 * hs * fa[i]
                _feval(mode, rhs, jac, ztmp, bmid, theta, k2, Jm)
                for i in range(nz):
                    ztmp[i] = z[i] + 0.5 * hs * k2[i]
                _feval(mode, rhs, jac, ztmp, bmid, theta, k3, Jm)
                for i in range(nz):
                    ztmp[i] = z[i] + hs * k3[i]
                _feval(mode, rhs, jac, ztmp, beta_new, theta, k4, Jm)
                for i in range(nz):
                    znew[i] = z[i] + hs / 6.0 * (fa[i] + 2.0 * k2[i] + 2.0 * k3[i]
                                                 + k4[i])
                _feval(mode, rhs, jac, znew, beta_new, theta, fb, Jm)
                n_rhs += 4
                rk_i += 1
                for i in range(nz):
                    dz = znew[i] - z[i]
                    bspl = hs * fa[i] - dz
                    D[0, i] = z[i]
                    D[1, i] = dz
                    D[2, i] = bspl
                    D[3, i] = dz - hs * fb[i] - bspl
                    D[4, i] = 0.0
                ok = True
                for i in range(nz):
                    if not math.isfinite(znew[i]):
                        ok = False
                if not ok:
                    status = STATUS_NONFINITE
                    break
            n_steps += 1
            info_f[2] = hs

            # ---- events ------------------------------------------------------------------------
            t_stop = t_new
            if ekind != _EVENT_KIND_NONE:
                g_new = _event_value(ecode, efn, eparams, t_new, znew[:n], fb[:n],
                                     beta_new)
                if ekind == _EVENT_KIND_CONDITION:
                    if g_new <= 0.0:
                        fired = True
                else:
                    up = g_old < 0.0 and g_new >= 0.0
                    down = g_old > 0.0 and g_new <= 0.0
                    if (up and edir >= 0) or (down and edir <= 0):
                        fired = True
                        if g_new != 0.0:
                            # Illinois on [a, b]: a keeps the pre-crossing sign, b the crossed one
                            a = t
                            ga = g_old
                            b = t_new
                            gb = g_new
                            tol = 1e-12 * max(abs(t), abs(t_new)) + 1e-14 * hs
                            side = 0
                            for _it in range(200):
                                if b - a <= tol:
                                    break
                                c = b - gb * (b - a) / (gb - ga)
                                if not (c > a and c < b):
                                    c = 0.5 * (a + b)
                                _dense_eval(D, (c - t) / hs, zd)
                                if needs_f:
                                    _feval(mode, rhs, jac, zd,
                                           _beta_stage(c, scode, sparams, tmid), theta, fd, Jm)
                                    n_rhs += 1
                                    gc = _event_value(ecode, efn, eparams, c, zd[:n], fd[:n],
                                                      _beta_stage(c, scode, sparams, tmid))
                                else:
                                    gc = _event_value(ecode, efn, eparams, c, zd[:n], fzero,
                                                      _beta_stage(c, scode, sparams, tmid))
                                if gc == 0.0:
                                    b = c
                                    gb = gc
                                    break
                                if (gc > 0.0) == (ga > 0.0):
                                    a = c
                                    ga = gc
                                    if side == 1:
                                        gb *= 0.5
                                    side = 1
                                else:
                                    b = c
                                    gb = gc
                                    if side == -1:
                                        ga *= 0.5
                                    side = -1
                            t_stop = b
                g_old = g_new

            # ---- dense output at the requested times ------------------------------------------
            while i_ev < n_eval and t_eval[i_ev] <= t_stop:
                te = t_eval[i_ev]
                if te == t_new:
                    _copy(znew, Z_eval[i_ev])
                elif te == t:
                    _copy(z, Z_eval[i_ev])
                elif te > t:
                    _dense_eval(D, (te - t) / hs, Z_eval[i_ev])
                i_ev += 1

            if fired:
                status = STATUS_EVENT
                t_event = t_stop
                if t_stop == t_new:
                    _copy(znew, z)
                else:
                    _dense_eval(D, (t_stop - t) / hs, zd)
                    _copy(zd, z)
                t = t_stop
                break
            z, znew = znew, z
            fa, fb = fb, fa
            t = t_new

        _copy(z, z_out)
        info_i[0] = status
        info_i[1] = n_steps
        info_i[2] = n_rej
        info_i[3] = n_rhs
        info_i[4] = i_ev
        info_f[0] = t
        info_f[1] = t_event

    return integrate_core


integrate_core = _build_integrate_core(source_key(_schedule_module))


# ----------------------------------------------------------------------------------------
# Python layer
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """A terminal event: integer ``code`` (see :data:`EVENT_CODES`), float ``params`` and, for
    a user predicate, the compiled function ``fn``."""

    code: int = 0
    params: tuple[float, ...] = ()
    fn: Any = None

    @classmethod
    def none(cls) -> Event:
        return cls(0, ())

    @classmethod
    def converged(cls, tol: float = 1e-8, beta_min: float = 1.0 - 1e-12) -> Event:
        """Stop once beta(t) >= beta_min and ``max_i |dy_i/dt| < tol``.

        The default waits for beta = 1; a schedule that settles at another final value (or
        only approaches 1, like the exponential one) needs ``beta_min`` a little below its
        final beta.  While beta still moves, |dy/dt| carries the drift of the quasi-static
        state, so ``tol`` itself keeps the event from firing early.
        """
        tol = float(tol)
        beta_min = float(beta_min)
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"event tol: must be a finite number > 0, got {tol}")
        if not math.isfinite(beta_min):
            raise ValueError(f"event beta_min: must be finite, got {beta_min}")
        return cls(EVENT_CODES["converged"], (tol, beta_min))

    @classmethod
    def threshold(cls, c: Sequence[float], c0: float = 0.0, direction: int = 0) -> Event:
        """Stop where ``c . y - c0`` crosses zero (direction +1 upward, -1 downward, 0 both)."""
        c = np.asarray(c, dtype=float)
        if c.ndim != 1 or not np.all(np.isfinite(c)) or not math.isfinite(float(c0)):
            raise ValueError("event c, c0: need a finite 1-d coefficient vector and a finite c0")
        if direction not in (-1, 0, 1):
            raise ValueError(f"event direction: must be -1, 0 or +1, got {direction!r}")
        return cls(EVENT_CODES["threshold"], (float(c0), float(direction), *map(float, c)))

    @classmethod
    def predicate(cls, fn: Any, params: Sequence[float] = (), direction: int = 0) -> Event:
        """Stop where the compiled ``fn(t, y, f, beta, params) -> float`` crosses zero.

        ``fn`` must be compiled for :data:`solvers.signatures.EVENT_SIG`, e.g.
        ``@njit(EVENT_SIG, cache=True)``; y (n,) is the state, f (n,) = dy/dt, beta = beta(t).
        direction +1 fires on upward crossings only, -1 on downward ones, 0 on both.  The
        crossing time is located on the dense output like a threshold crossing.
        """
        if not isinstance(fn, Dispatcher) or fn.overloads.get(EVENT_SIG.args) is None:
            raise ValueError("event fn: must be a Numba function compiled for "
                             "solvers.signatures.EVENT_SIG (@njit(EVENT_SIG))")
        if direction not in (-1, 0, 1):
            raise ValueError(f"event direction: must be -1, 0 or +1, got {direction!r}")
        p = np.asarray(params, dtype=float).ravel()
        if not np.all(np.isfinite(p)):
            raise ValueError("event params: must be finite")
        return cls(EVENT_CODES["predicate"], (float(direction), *map(float, p)), fn)

    def encode(self, n: int) -> tuple[int, np.ndarray]:
        """(code, params) for the compiled core; checks the parameter count for state size n."""
        p = np.array(self.params, dtype=float)
        if self.code == 2 and p.size != n + 2:
            raise ValueError(f"event: threshold coefficients must have length n = {n}, "
                             f"got {p.size - 2}")
        if self.code == 1 and p.size != 2:
            raise ValueError("event: converged takes two parameters (tol, beta_min)")
        if p.size == 0:
            p = np.zeros(1)
        return int(self.code), p


def encode_schedule(schedule: Any) -> tuple[int, np.ndarray]:
    """(code, params) from a schedule object, an already-encoded pair, or None (beta = 1)."""
    if schedule is None:
        return 0, np.array([1.0])
    if hasattr(schedule, "encode"):
        code, params = schedule.encode()
    else:
        try:
            code, params = schedule
        except (TypeError, ValueError):
            raise ValueError("schedule: must be a Schedule, a (code, params) pair, or None") \
                from None
    params = np.ascontiguousarray(params, dtype=float)
    if params.ndim != 1 or params.size == 0:
        raise ValueError("schedule: params must be a non-empty 1-d array")
    return int(code), params


def _as_event(event: Any, n: int) -> tuple[int, np.ndarray, Any]:
    """(code, params, predicate as a first-class function) of an event argument."""
    code, params = _encode_event(event, n)
    fn = event.fn if isinstance(event, Event) and event.fn is not None else null_event
    if code == EVENT_CODES["predicate"] and fn is null_event:
        raise ValueError("event: a predicate event needs its function (use Event.predicate)")
    return code, params, as_first_class(fn, EVENT_SIG)


def _encode_event(event: Any, n: int) -> tuple[int, np.ndarray]:
    if event is None:
        return 0, np.zeros(1)
    if isinstance(event, str):
        if event == "converged":
            event = Event.converged()
        elif event == "none":
            event = Event.none()
        else:
            raise ValueError(f"event: unknown event name {event!r} (use 'converged' or an Event)")
    if isinstance(event, Event):
        return event.encode(n)
    try:
        code, params = event
    except (TypeError, ValueError):
        raise ValueError("event: must be None, 'converged', an Event or a (code, params) pair") \
            from None
    p = np.ascontiguousarray(params, dtype=float).ravel()
    if int(code) == EVENT_CODES["converged"]:
        return Event.converged(*p).encode(n)      # validates, fills the default beta_min
    return int(code), (p if p.size else np.zeros(1))


class _FirstClassFunction(CompileResultWAP):
    """Numba's ``CompileResultWAP`` with its Numba type precomputed (``_numba_type_`` is read
    by ``typeof`` before anything else), so that passing it costs no signature analysis."""

    def __init__(self, cres: Any, numba_type: Any) -> None:
        super().__init__(cres)
        self._numba_type_ = numba_type


_FIRST_CLASS_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_first_class(fn: Any, sig: Any) -> Any:
    """A cheap-to-pass first-class function for the compiled entry points.

    Passing a Numba dispatcher as a ``FunctionType`` argument costs ~0.1-0.2 ms per call
    (Numba looks up the compiled overload and its addresses every time).  For a dispatcher
    already compiled for ``sig`` this returns (and memoises) Numba's
    ``CompileResultWAP`` of that overload, a wrapper-address-protocol object that is
    unboxed by reading one stored address.  Anything else is returned unchanged.
    """
    if not isinstance(fn, Dispatcher):
        return fn
    try:
        per_fn = _FIRST_CLASS_CACHE.setdefault(fn, {})
    except TypeError:  # pragma: no cover - not weak-referenceable
        per_fn = {}
    wap = per_fn.get(sig)
    if wap is None:
        cres = fn.overloads.get(sig.args)
        if cres is None:
            return fn
        wap = _FirstClassFunction(cres, types.FunctionType(sig))
        per_fn[sig] = wap
    return wap


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return v


def check_common(t0: float, t_end: float, t_eval: Any, method: str, rtol: float, atol: float,
                 h: float | None, max_steps: int) -> tuple[float, float, np.ndarray, int, float]:
    """Validate the common integration arguments; returns (t0, t_end, t_eval, method, h0)."""
    t0 = float(t0)
    t_end = float(t_end)
    if not math.isfinite(t0):
        raise ValueError(f"t0: must be finite, got {t0}")
    if not math.isfinite(t_end):
        raise ValueError(f"t_end: must be finite, got {t_end}")
    if t_end < t0:
        raise ValueError(f"t_end: must be >= t0 = {t0}, got {t_end}")
    if method not in METHOD_CODES:
        raise ValueError(f"method: must be one of {sorted(METHOD_CODES)}, got {method!r}")
    _check_positive("rtol", rtol)
    _check_positive("atol", atol)
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) \
            or max_steps < 1:
        raise ValueError(f"max_steps: must be an integer >= 1, got {max_steps!r}")
    te = np.ascontiguousarray(np.zeros(0) if t_eval is None else t_eval, dtype=float)
    if te.ndim == 0:
        te = te.reshape(1)
    if te.ndim != 1:
        raise ValueError(f"t_eval: must be 1-dimensional, got shape {te.shape}")
    if not np.all(np.isfinite(te)):
        raise ValueError("t_eval: must be finite (found NaN or inf)")
    if te.size and (np.any(np.diff(te) < 0)):
        raise ValueError("t_eval: must be sorted in increasing order")
    if te.size and (te[0] < t0 or te[-1] > t_end):
        raise ValueError(f"t_eval: must lie within [t0, t_end] = [{t0}, {t_end}]")
    mcode = METHOD_CODES[method]
    if mcode == 1:
        if h is None:
            raise ValueError("h: the fixed step of method 'rk4' is required")
        h0 = _check_positive("h", h)
    else:
        h0 = 0.0 if h is None else _check_positive("h", h)
    return t0, t_end, te, mcode, h0


@dataclass(frozen=True)
class Solution:
    """One integration.

    Attributes
    ----------
    t : (n_t,) output times actually reached (t_eval truncated at an event or failure).
    y : (n_t, n) states at t.
    G : (n_t, n, n) tangent propagator ``dy(t)/dy(t0)`` at t (tangent mode), else None.
    t_final, y_final, G_final : where the integration stopped (t_end, or the event time).
    status, message : see :data:`STATUS_MESSAGES`.
    t_event : event time (NaN if none fired).
    n_steps, n_rejected, n_rhs : accepted steps, rejected steps, right-hand-side evaluations.
    """

    t: np.ndarray
    y: np.ndarray
    G: np.ndarray | None
    t_final: float
    y_final: np.ndarray
    G_final: np.ndarray | None
    status: int
    message: str
    t_event: float
    n_steps: int
    n_rejected: int
    n_rhs: int

    @property
    def success(self) -> bool:
        return self.status >= 0


def integrate(rhs: Any, y0: Any, t_span: tuple[float, float], theta: Any, *,
              jac: Any = None, schedule: Any = None, t_eval: Any = None,
              method: str = "dopri5", rtol: float = 1e-8, atol: float = 1e-10,
              h: float | None = None, h_max: float = math.inf, max_steps: int = 1_000_000,
              event: Any = None, tangent: bool = False) -> Solution:
    """Integrate ``dy/dt = rhs(y, beta(t); theta)`` over ``t_span = (t0, t_end)``.

    Parameters
    ----------
    rhs : compiled ``rhs(y, beta, theta, out)`` with signature ``RHS_SIG``.
    y0 : (n,) initial state.
    t_span : (t0, t_end), gradient-flow time, t_end >= t0.
    theta : (p,) model parameters.
    jac : compiled ``jac(y, beta, theta, J)`` (``JAC_SIG``); required when ``tangent``.
    schedule : a schedule of :mod:`derivations.spec`, an encoded ``(code, params)`` pair, or
        None (beta = 1).
    t_eval : sorted output times within t_span (default: ``[t0, t_end]``).
    method : ``'dopri5'`` (adaptive) or ``'rk4'`` (fixed step ``h``, required).
    rtol, atol : DOPRI5 tolerances; h : DOPRI5 initial step (default automatic).
    h_max : DOPRI5 largest step.  max_steps : largest number of attempted steps.
    event : None, ``'converged'``, an :class:`Event` or an encoded ``(code, params)`` pair.
    tangent : also integrate ``G' = J G``, ``G(t0) = I`` and return G.
    """
    t0, t_end = t_span
    y0 = np.ascontiguousarray(y0, dtype=float)
    if y0.ndim != 1 or y0.size == 0:
        raise ValueError(f"y0: must be a non-empty 1-d array, got shape {y0.shape}")
    if not np.all(np.isfinite(y0)):
        raise ValueError("y0: must be finite (found NaN or inf)")
    theta = np.ascontiguousarray(theta, dtype=float)
    if theta.ndim != 1:
        raise ValueError(f"theta: must be 1-dimensional, got shape {theta.shape}")
    if theta.size == 0:
        theta = np.zeros(1)
    if t_eval is None:
        t_eval = np.array([float(t0), float(t_end)]) if float(t_end) > float(t0) \
            else np.array([float(t0)])
    t0, t_end, te, mcode, h0 = check_common(t0, t_end, t_eval, method, rtol, atol, h, max_steps)
    if not (h_max > 0):
        raise ValueError(f"h_max: must be > 0, got {h_max}")
    if tangent and jac is None:
        raise ValueError("jac: required for the tangent propagator (tangent=True)")
    jac_fn = null_jac if jac is None else jac
    scode, sparams = encode_schedule(schedule)
    n = y0.size
    ecode, eparams, efn = _as_event(event, n)
    mode = 1 if tangent else 0
    nz = n + n * n if tangent else n
    z_out = np.empty(nz)
    Z = np.empty((te.size, nz))
    info_i = np.zeros(N_INFO_I, dtype=np.int64)
    info_f = np.zeros(N_INFO_F)
    integrate_core(mcode, mode, as_first_class(rhs, RHS_SIG), as_first_class(jac_fn, JAC_SIG),
                   y0, t0, t_end, te, theta, scode, sparams, float(rtol), float(atol), h0,
                   float(h_max), int(max_steps), ecode, eparams, efn, z_out, Z, info_i, info_f)
    k = int(info_i[4])
    status = int(info_i[0])
    G = Z[:k, n:].reshape(k, n, n) if tangent else None
    return Solution(t=te[:k].copy(), y=Z[:k, :n].copy(), G=G, t_final=float(info_f[0]),
                    y_final=z_out[:n].copy(),
                    G_final=z_out[n:].reshape(n, n).copy() if tangent else None,
                    status=status, message=STATUS_MESSAGES.get(status, "unknown"),
                    t_event=float(info_f[1]), n_steps=int(info_i[1]),
                    n_rejected=int(info_i[2]), n_rhs=int(info_i[3]))


def propagator(rhs: Any, jac: Any, y0: Any, t_span: tuple[float, float], theta: Any,
               **kwargs: Any) -> Solution:
    """Tangent propagator ``G(t) = dy(t)/dy(t0)`` (n, n) along the trajectory from y0.

    Integrates ``y' = f(y, beta(t))``, ``G' = J(y, beta(t)) G``, ``G(t0) = I`` with the same
    stepper (DOPRI5 by default; error control over y and G); keyword arguments as
    :func:`integrate`.  ``Solution.G`` has shape (n_t, n, n).
    """
    return integrate(rhs, y0, t_span, theta, jac=jac, tangent=True, **kwargs)
