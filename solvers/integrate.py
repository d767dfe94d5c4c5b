"""Compiled ODE integrators for the reduced gradient flow: the driver (DESIGN.md sections 2, 4).

The equations are ``dy/dt = f(y, beta(t); theta)``: y (n,) the summary statistics (Q upper
triangle, R, optionally the weight logits alpha; :class:`solvers.layout.StateLayout`), theta
(p,) the numeric parameters, beta(t) the annealing schedule, t the gradient-flow time
(t = eta * steps for GD/SGD).  f is a compiled model function ``rhs(y, beta, theta, out)`` and
its Jacobian ``jac(y, beta, theta, J)`` (signatures in :mod:`solvers.signatures`).

Module map
----------
* :mod:`solvers.tableaux`: the method registry (:class:`~solvers.tableaux.IntegratorMethod`,
  numbered contract; ``dopri5`` adaptive Dormand-Prince 5(4) with Hairer's dense output,
  ``rk4`` fixed step with cubic Hermite dense output) and their Butcher tableaux.
* :mod:`solvers.rk`: the generic compiled explicit Runge-Kutta step, error norm, dense
  output, starting step.
* :mod:`solvers.events`: the event registry (:class:`~solvers.events.Event`, numbered
  contract; ``none``, ``converged``, ``threshold``, ``predicate``) and the compiled locator.
* this module: the compiled driver :func:`integrate_core` (step-size control, schedule
  pieces, events, output) and the Python entry points :func:`integrate`,
  :func:`propagator`.  The names that used to live here are re-exported.

Step-size control (adaptive methods; method contract rule 4): PI controller of Hairer,
Norsett & Wanner, ``h_new = h / clip(err^(1/(q+1) - 0.75 b) err_old^(-b) / 0.9, 1/10, 5)``,
b = 0.04, no increase directly after a rejection, ``h <= h_max``; a non-finite error rejects
the step with ``h = 0.2 h``.  Fixed-step methods use the largest ``h' <= h`` that divides each
smooth piece of the schedule into equal steps.

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

Status codes: 0 success (reached t_end), 1 terminal event fired, -1 ``max_steps`` attempted
steps exceeded, -2 step-size underflow, -3 non-finite values (the right-hand side returned
NaN/inf and the step size underflowed while rejecting; fixed step: a non-finite state).

Disk caching: every compiled function is ``@njit(cache=True)`` with an explicit signature;
models and events are first-class function arguments, methods are tableau arrays, so one
cached driver serves all of them.  The driver is built by a factory closing over
:func:`source_key` of :data:`CORE_DEPENDENCIES`, the modules whose compiled code it contains.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit, types
from numba.core.dispatcher import Dispatcher
from numba.core.types.function_type import CompileResultWAP

from . import events as _events_module
from . import rk as _rk_module
from . import schedule as _schedule_module
from . import signatures as _signatures_module
from .events import (
    EVENT_CODES,
    EVENTS,
    KIND_CONDITION,
    KIND_CROSSING,
    KIND_NONE,
    ConvergedEvent,
    EncodedEvent,
    Event,
    NoEvent,
    PredicateEvent,
    ThresholdEvent,
    encode_event,
    locate_crossing,
    null_event,
)
from .rk import (
    beta_stage,
    copy_vector,
    dense_eval,
    err_norm,
    feval,
    initial_step,
    null_jac,
    rk_dense,
    rk_error,
    rk_step,
)
from .schedule import COMPILED_CODES, schedule_kinks
from .signatures import EVENT_SIG, JAC_SIG, RHS_SIG, EventFn, JacFn, RhsFn
from .tableaux import METHODS, IntegratorMethod, get_method

__all__ = [
    "METHODS",
    "METHOD_CODES",
    "EVENTS",
    "EVENT_CODES",
    "STATUS_MESSAGES",
    "STATUS_SUCCESS",
    "STATUS_EVENT",
    "STATUS_MAX_STEPS",
    "STATUS_UNDERFLOW",
    "STATUS_NONFINITE",
    "INFO_I_FIELDS",
    "INFO_F_FIELDS",
    "CORE_DEPENDENCIES",
    "Event",
    "IntegratorMethod",
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


#: Registered method names with a running index (historical; the driver takes tableaux).
METHOD_CODES = {name: i for i, name in enumerate(METHODS)}

#: Layout of the integer / float statistics arrays filled by :func:`integrate_core`.
INFO_I_FIELDS = ("status", "n_steps", "n_rejected", "n_rhs", "n_filled")
INFO_F_FIELDS = ("t_final", "t_event", "h_last")
N_INFO_I = len(INFO_I_FIELDS)
N_INFO_F = len(INFO_F_FIELDS)

# PI controller (Hairer's DOPRI5 defaults)
_SAFE = 0.9
_BETA_PI = 0.04
_FACC1 = 1.0 / 0.2   # largest decrease: h_new >= h / 5
_FACC2 = 1.0 / 10.0  # largest increase: h_new <= 10 h
_EPS = 2.220446049250313e-16

_f8 = types.float64
_i8 = types.int64
_b1 = types.boolean
_v1 = types.float64[::1]
_v2 = types.float64[:, ::1]

#: Modules whose compiled functions the driver calls (their source is part of its cache key).
CORE_DEPENDENCIES = (_rk_module, _events_module, _schedule_module, _signatures_module)


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


_INTEGRATE_SIG = types.void(
    _i8, RhsFn, JacFn,                 # mode, rhs, jac
    _v1, _f8, _f8, _v1, _v1,           # y0, t0, t_end, t_eval, theta
    _i8, _v1,                          # schedule code, params
    _v2, _v1, _v1, _v1, _i8, _i8,      # method: A, c, e, d, order, error order (0: fixed)
    _f8, _f8, _f8, _f8, _i8,           # rtol, atol, h0, h_max, max_steps
    _i8, _i8, _b1, _v1, EventFn,       # event kind, direction, needs_f, params, function
    _v1, _v2, types.int64[::1], _v1,   # z_out, Z_eval, info_i, info_f
)


def _build_integrate_core(deps_key: int):
    @njit(_INTEGRATE_SIG, cache=True)
    def integrate_core(mode, rhs, jac, y0, t0, t_end, t_eval, theta, scode, sparams,
                       mA, mc, me, md, morder, meorder, rtol, atol, h0, h_max, max_steps,
                       ekind, edir, eneeds_f, eparams, efn, z_out, Z_eval, info_i, info_f):
        """Integrate ``dy/dt = f(y, beta(t); theta)`` from t0 to t_end (compiled core).

        Parameters
        ----------
        mode : 0 plain, 1 augmented with the tangent propagator G (see the module docstring).
        rhs, jac : compiled model functions (``RhsFn``, ``JacFn``); jac is only called in mode 1.
        y0 : (n,) initial state.
        t0, t_end : time interval, t_end >= t0 (gradient-flow time).
        t_eval : (n_eval,) sorted output times in [t0, t_end]; rows of Z_eval.
        theta : (p,) model parameters.
        scode, sparams : encoded schedule (``Schedule.encode()``).
        mA (S, S), mc (S,), me (S,), md (S,), morder, meorder : the method's tableau
            (:meth:`solvers.tableaux.IntegratorMethod.encode`); meorder 0 means fixed step.
        rtol, atol : tolerances of the mixed error norm (adaptive methods).
        h0 : initial step (adaptive; <= 0: automatic) or the fixed step (must be > 0).
        h_max : largest step (adaptive).
        max_steps : largest number of attempted steps (accepted + rejected).
        ekind, edir, eneeds_f, eparams, efn : terminal event
            (:meth:`solvers.events.Event.encode`); ekind 0 for none.

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
        S = mA.shape[0]
        adaptive = meorder > 0
        expo1 = 1.0 / (meorder + 1) - 0.75 * _BETA_PI if adaptive else 0.0
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
        K = np.empty((S, nz))   # Runge-Kutta stages; K[0] = f at the step start (FSAL)
        D = np.zeros((5, nz))
        zd = np.empty(nz)   # dense-output state
        fd = np.empty(nz)   # f at a dense-output state (events needing f)
        fzero = np.zeros(n)
        fa = K[0]
        fb = K[S - 1]

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
                copy_vector(z, Z_eval[i_ev])
            i_ev += 1

        # first smooth piece [seg_lo, seg_hi]
        seg_lo = t0
        seg_hi = t_end
        if i_kink < n_kinks and kinks[i_kink] < t_end:
            seg_hi = kinks[i_kink]
        tmid = 0.5 * (seg_lo + seg_hi) if seg_hi > seg_lo else seg_lo
        beta = beta_stage(t, scode, sparams, tmid)
        feval(mode, rhs, jac, z, beta, theta, fa, Jm)
        n_rhs += 1
        finite = True
        for i in range(nz):
            if not math.isfinite(fa[i]) or not math.isfinite(z[i]):
                finite = False
        if not finite:
            status = STATUS_NONFINITE

        g_old = 1.0
        fired = False
        if ekind != KIND_NONE and status == STATUS_SUCCESS:
            g_old = efn(t, z[:n], fa[:n], beta, eparams)
            if ekind == KIND_CONDITION and g_old <= 0.0:
                fired = True
                status = STATUS_EVENT
                t_event = t

        # step-size initialisation
        h = 0.0
        rk_nsub = 1
        rk_i = 0
        if adaptive:
            if h0 > 0:
                h = h0
            elif t_end > t0 and status == STATUS_SUCCESS:
                h = initial_step(mode, rhs, jac, z, fa, t, t_end - t0, theta, scode, sparams,
                                 tmid, rtol, atol, morder, ztmp, fb, Jm)
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
                beta = beta_stage(t, scode, sparams, tmid)
                feval(mode, rhs, jac, z, beta, theta, fa, Jm)
                n_rhs += 1
                if not adaptive:
                    rk_nsub = max(1, int(math.ceil((seg_hi - seg_lo) / h0 - 1e-9)))
                    rk_i = 0
            if n_att >= max_steps:
                status = STATUS_MAX_STEPS
                break
            # ---- step end ----------------------------------------------------------------------
            if adaptive:
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

            # ---- one step (solvers.rk) -------------------------------------------------------
            beta_new = rk_step(mode, rhs, jac, theta, scode, sparams, tmid, mA, mc, z, t, t_new,
                               hs, K, ztmp, znew, Jm)
            n_rhs += S - 1
            if adaptive:
                rk_error(me, K, hs, errv)
                err = err_norm(errv, z, znew, rtol, atol)
                if not math.isfinite(err):
                    # NaN/inf somewhere: reject hard
                    last_nonfinite = True
                    n_rej += 1
                    reject_prev = True
                    h = 0.2 * hs
                    continue
                last_nonfinite = False
                fac11 = err ** expo1
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
            else:
                rk_i += 1
                ok = True
                for i in range(nz):
                    if not math.isfinite(znew[i]):
                        ok = False
                if not ok:
                    status = STATUS_NONFINITE
                    break
            rk_dense(md, K, z, znew, hs, D)
            n_steps += 1
            info_f[2] = hs

            # ---- events (solvers.events) -----------------------------------------------------
            t_stop = t_new
            if ekind != KIND_NONE:
                g_new = efn(t_new, znew[:n], fb[:n], beta_new, eparams)
                if ekind == KIND_CONDITION:
                    if g_new <= 0.0:
                        fired = True
                else:
                    up = g_old < 0.0 and g_new >= 0.0
                    down = g_old > 0.0 and g_new <= 0.0
                    if (up and edir >= 0) or (down and edir <= 0):
                        fired = True
                        if g_new != 0.0:
                            t_stop, n_loc = locate_crossing(
                                mode, rhs, jac, theta, scode, sparams, tmid, efn, eparams,
                                eneeds_f, D, t, t_new, hs, g_old, g_new, zd, fd, fzero, Jm)
                            n_rhs += n_loc
                g_old = g_new

            # ---- dense output at the requested times ------------------------------------------
            while i_ev < n_eval and t_eval[i_ev] <= t_stop:
                te = t_eval[i_ev]
                if te == t_new:
                    copy_vector(znew, Z_eval[i_ev])
                elif te == t:
                    copy_vector(z, Z_eval[i_ev])
                elif te > t:
                    dense_eval(D, (te - t) / hs, Z_eval[i_ev])
                i_ev += 1

            if fired:
                status = STATUS_EVENT
                t_event = t_stop
                if t_stop == t_new:
                    copy_vector(znew, z)
                else:
                    dense_eval(D, (t_stop - t) / hs, zd)
                    copy_vector(zd, z)
                t = t_stop
                break
            z, znew = znew, z
            copy_vector(fb, fa)
            t = t_new

        copy_vector(z, z_out)
        info_i[0] = status
        info_i[1] = n_steps
        info_i[2] = n_rej
        info_i[3] = n_rhs
        info_i[4] = i_ev
        info_f[0] = t
        info_f[1] = t_event

    return integrate_core


integrate_core = _build_integrate_core(source_key(*CORE_DEPENDENCIES))


# ----------------------------------------------------------------------------------------
# Python layer
# ----------------------------------------------------------------------------------------

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
    if int(code) not in COMPILED_CODES:
        kind = getattr(schedule, "kind", None)
        raise ValueError(f"schedule: code {int(code)}{f' ({kind})' if kind else ''} has no "
                         f"compiled twin: add its branch to solvers.schedule.beta_at (and "
                         f"to schedule_kinks if beta(t) has kinks) and its code to "
                         f"COMPILED_CODES")
    return int(code), params


def _as_event(event: Any, n: int) -> EncodedEvent:
    """The encoded event (:func:`solvers.events.encode_event`) with its function made cheap to
    pass (:func:`as_first_class`)."""
    enc = encode_event(event, n)
    return enc._replace(fn=as_first_class(enc.fn, EVENT_SIG))


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

    Numba does not propagate exceptions out of first-class calls (it prints "Exception
    ignored" and goes on with whatever the output array held).  A function carrying a
    ``nothrow`` twin (the generated loop-form rhs and jac: same signature, NaN output on an
    exception) is replaced by it, so that a kernel's refusal ends the integration as a
    non-finite right-hand side instead of silently wrong values.
    """
    fn = getattr(fn, "nothrow", fn)
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


def check_common(t0: float, t_end: float, t_eval: Any, method: Any, rtol: float, atol: float,
                 h: float | None, max_steps: int
                 ) -> tuple[float, float, np.ndarray, type[IntegratorMethod], float]:
    """Validate the common integration arguments; returns (t0, t_end, t_eval, method class,
    h0).  ``method``: a name registered in :data:`METHODS` (or the method class)."""
    t0 = float(t0)
    t_end = float(t_end)
    if not math.isfinite(t0):
        raise ValueError(f"t0: must be finite, got {t0}")
    if not math.isfinite(t_end):
        raise ValueError(f"t_end: must be finite, got {t_end}")
    if t_end < t0:
        raise ValueError(f"t_end: must be >= t0 = {t0}, got {t_end}")
    meth = get_method(method)
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
    if not meth.adaptive():
        if h is None:
            raise ValueError(f"h: the fixed step of method {meth.name!r} is required")
        h0 = _check_positive("h", h)
    else:
        h0 = 0.0 if h is None else _check_positive("h", h)
    return t0, t_end, te, meth, h0


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
    method : a name in :data:`METHODS`: ``'dopri5'`` (adaptive) or ``'rk4'`` (fixed step
        ``h``, required), or a registered :class:`IntegratorMethod` subclass.
    rtol, atol : tolerances (adaptive methods); h : initial step (adaptive, default
        automatic) or the fixed step.  h_max : largest adaptive step.
    max_steps : largest number of attempted steps.
    event : None, an event name (``'converged'``), an :class:`Event` (see
        :mod:`solvers.events`) or an encoded ``(code, params)`` pair.
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
    t0, t_end, te, meth, h0 = check_common(t0, t_end, t_eval, method, rtol, atol, h, max_steps)
    if not (h_max > 0):
        raise ValueError(f"h_max: must be > 0, got {h_max}")
    if tangent and jac is None:
        raise ValueError("jac: required for the tangent propagator (tangent=True)")
    jac_fn = null_jac if jac is None else jac
    scode, sparams = encode_schedule(schedule)
    n = y0.size
    ev = _as_event(event, n)
    mA, mc, me, md, morder, meorder = meth.encode()
    mode = 1 if tangent else 0
    nz = n + n * n if tangent else n
    z_out = np.empty(nz)
    Z = np.empty((te.size, nz))
    info_i = np.zeros(N_INFO_I, dtype=np.int64)
    info_f = np.zeros(N_INFO_F)
    integrate_core(mode, as_first_class(rhs, RHS_SIG), as_first_class(jac_fn, JAC_SIG),
                   y0, t0, t_end, te, theta, scode, sparams, mA, mc, me, md, morder, meorder,
                   float(rtol), float(atol), h0, float(h_max), int(max_steps), ev.kind,
                   ev.direction, ev.needs_f, ev.params, ev.fn, z_out, Z, info_i, info_f)
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


# former homes of moved names (tableaux, rk, events) and their historical private aliases
_copy = copy_vector
_beta_stage = beta_stage
_feval = feval
_dense_eval = dense_eval
_err_norm = err_norm
_initial_step = initial_step
_encode_event = encode_event
_EVENT_KIND_NONE = KIND_NONE
_EVENT_KIND_CONDITION = KIND_CONDITION
_EVENT_KIND_CROSSING = KIND_CROSSING
__all__ += ["EncodedEvent", "NoEvent", "ConvergedEvent", "ThresholdEvent", "PredicateEvent",
            "check_common", "get_method", "N_INFO_I", "N_INFO_F"]
