"""Ensembles of trajectories and the problem-level API (DESIGN.md sections 2-4).

Compiled core
-------------
:func:`integrate_ensemble` integrates N independent initial conditions ``Y0`` (N, n) of
``dy/dt = f(y, beta(t); theta)`` with :func:`solvers.integrate.integrate_core` in a
``numba.prange`` loop (one member per iteration, no shared mutable state), so the results do
not depend on the number of threads.  :func:`run_ensemble` calls it chunk by chunk from Python
and updates a tqdm progress bar (stderr) between chunks.

Problem-level API
-----------------
:func:`solve` (one trajectory) and :func:`solve_ensemble` (many) take a
:class:`derivations.spec.ProblemSpec` and a compiled model following
:class:`solvers.model.CompiledModelProtocol` (``model.rhs``, ``model.structure``,
``model.state_names``; ``model.jac`` for the tangent propagator) and return :class:`Trajectory` /
:class:`EnsembleResult` with the summary statistics by name: ``Q`` (..., M, M) symmetric,
``R`` (..., M, K), ``w`` (..., M) (``softmax(alpha)`` when the weights train, else the fixed
weights), ``alpha`` (..., M) or None.  t is the gradient-flow time.

State layout: :class:`solvers.layout.StateLayout` (``Q_k_l`` for k <= l row-major, then
``R_k_a`` row-major, then ``alpha_k`` if the weights train); :func:`pack_state`,
:func:`unpack_state`, :func:`state_layout` and :class:`StateLayout` are re-exported from
:mod:`solvers.layout`.  User-given initial states must be realisable (the joint Gram matrix
``[[T, R^T], [R, Q]]`` PSD within ``psd_tol``, :func:`solvers.geometry.check_realisable`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange, types

from derivations.spec import ProblemSpec

from . import integrate as _integrate_module
from .geometry import DEFAULT_PSD_TOL, check_realisable
from .integrate import (
    CORE_DEPENDENCIES,
    N_INFO_F,
    N_INFO_I,
    STATUS_MESSAGES,
    _as_event,
    as_first_class,
    check_common,
    encode_schedule,
    integrate,
    integrate_core,
    null_jac,
    source_key,
)
from .layout import (
    StateLayout,
    _layout_of_names,  # noqa: F401 (former home)
    _names_tuple,
    pack_state,
    softmax,
    state_layout,
    unpack_state,
)
from .model import (
    CompiledModelProtocol,  # noqa: F401 (documented type of `model`)
    require_model,
)
from .progress import progress_bar, stderr_is_terminal
from .signatures import JAC_SIG, RHS_SIG, EventFn, JacFn, RhsFn

__all__ = [
    "integrate_ensemble",
    "run_ensemble",
    "EnsembleRun",
    "Trajectory",
    "EnsembleResult",
    "solve",
    "solve_ensemble",
    "pack_state",
    "unpack_state",
    "state_layout",
    "StateLayout",
]

_f8 = types.float64
_i8 = types.int64
_v1 = types.float64[::1]
_v2 = types.float64[:, ::1]
_v3 = types.float64[:, :, ::1]

_ENSEMBLE_SIG = types.void(
    _i8, RhsFn, JacFn,                 # mode, rhs, jac
    _v2, _f8, _f8, _v1, _v2,           # Y0 (N, n), t0, t_end, t_eval, Theta (1 or N, p)
    _i8, _v1,                          # schedule code, params
    _v2, _v1, _v1, _v1, _i8, _i8,      # method tableau: A, c, e, d, order, error order
    _f8, _f8, _f8, _f8, _i8,           # rtol, atol, h0, h_max, max_steps
    _i8, _i8, types.boolean, _v1, EventFn,   # event kind, direction, needs_f, params, fn
    _v2, _v3, types.int64[:, ::1], _v2,  # Z_final (N, nz), Z_traj (N, n_eval, nz), info
)


def _build_integrate_ensemble(deps_key: int):
    @njit(_ENSEMBLE_SIG, parallel=True, cache=True)
    def integrate_ensemble(mode, rhs, jac, Y0, t0, t_end, t_eval, Theta, scode, sparams,
                           mA, mc, me, md, morder, meorder, rtol, atol, h0, h_max, max_steps,
                           ekind, edir, eneeds_f, eparams, efn, Z_final, Z_traj, info_i,
                           info_f):
        """Integrate N members in parallel (``numba.prange``); compiled core.

        Arguments as :func:`solvers.integrate.integrate_core`, batched:

        Y0 : (N, n) initial states.  Theta : (1, p) shared or (N, p) per-member parameters.
        Z_final : (N, nz) final states (nz = n, or n + n^2 with the tangent propagator).
        Z_traj : (N, n_eval, nz) dense output at t_eval (n_eval may be 0); NaN after a stop.
        info_i : (N, 5) int64 ``status, n_steps, n_rejected, n_rhs, n_filled``.
        info_f : (N, 3) ``t_final, t_event, h_last``.
        """
        _deps = deps_key  # noqa: F841 (part of the cache key, see source_key)
        N = Y0.shape[0]
        n_theta = Theta.shape[0]
        for i in prange(N):
            j = np.int64(i) * np.int64(n_theta > 1)
            integrate_core(mode, rhs, jac, Y0[i], t0, t_end, t_eval, Theta[j], scode,
                           sparams, mA, mc, me, md, morder, meorder, rtol, atol, h0, h_max,
                           max_steps, ekind, edir, eneeds_f, eparams, efn, Z_final[i],
                           Z_traj[i], info_i[i], info_f[i])

    return integrate_ensemble


integrate_ensemble = _build_integrate_ensemble(
    source_key(_integrate_module, *CORE_DEPENDENCIES))


# ----------------------------------------------------------------------------------------
# chunked driver with a progress bar
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnsembleRun:
    """Raw output of :func:`run_ensemble` (state vectors, no names).

    t_eval (n_t,); Z_final (N, nz); Z_traj (N, n_t, nz) or None when n_t = 0; per-member
    status, n_steps, n_rejected, n_rhs, n_filled (int64 (N,)) and t_final, t_event (N,)."""

    t_eval: np.ndarray
    Z_final: np.ndarray
    Z_traj: np.ndarray | None
    status: np.ndarray
    n_steps: np.ndarray
    n_rejected: np.ndarray
    n_rhs: np.ndarray
    n_filled: np.ndarray
    t_final: np.ndarray
    t_event: np.ndarray


def _progress_enabled(progress: bool) -> bool:
    return bool(progress) and stderr_is_terminal()


def run_ensemble(rhs: Any, Y0: Any, t_span: tuple[float, float], theta: Any, *,
                 jac: Any = None, schedule: Any = None, t_eval: Any = None,
                 method: str = "dopri5", rtol: float = 1e-8, atol: float = 1e-10,
                 h: float | None = None, h_max: float = math.inf,
                 max_steps: int = 1_000_000, event: Any = None, tangent: bool = False,
                 progress: bool = True, chunk_size: int | None = None,
                 desc: str = "ensemble") -> EnsembleRun:
    """Integrate N initial conditions ``Y0`` (N, n) in parallel; Python driver of
    :func:`integrate_ensemble`.

    theta is (p,) shared or (N, p) per member.  t_eval (n_t,) sorted in t_span (default: no
    trajectories, only the final states).  Other arguments as
    :func:`solvers.integrate.integrate`.  The members are processed in chunks of
    ``chunk_size`` (default: one chunk without a progress bar, else about 1% of N but at least
    8 per thread) and a tqdm bar on stderr is updated after each chunk; it is shown only when
    ``progress`` is true and stderr is a terminal.  Results do not depend on the chunking or
    the number of threads.
    """
    t0, t_end = t_span
    Y0 = np.ascontiguousarray(Y0, dtype=float)
    if Y0.ndim != 2 or Y0.shape[1] == 0:
        raise ValueError(f"Y0: must have shape (N, n), got {Y0.shape}")
    if not np.all(np.isfinite(Y0)):
        raise ValueError("Y0: must be finite (found NaN or inf)")
    N, n = Y0.shape
    Theta = np.ascontiguousarray(theta, dtype=float)
    if Theta.ndim == 1:
        Theta = Theta.reshape(1, -1)
    if Theta.ndim != 2 or Theta.shape[0] not in (1, N):
        raise ValueError(f"theta: must have shape (p,) or (N, p) with N = {N}, "
                         f"got {np.shape(theta)}")
    if not np.all(np.isfinite(Theta)):
        raise ValueError("theta: must be finite (found NaN or inf)")
    if Theta.shape[1] == 0:
        Theta = np.zeros((Theta.shape[0], 1))
    t0, t_end, te, meth, h0 = check_common(t0, t_end, t_eval, method, rtol, atol, h, max_steps)
    if not (h_max > 0):
        raise ValueError(f"h_max: must be > 0, got {h_max}")
    if tangent and jac is None:
        raise ValueError("jac: required for the tangent propagator (tangent=True)")
    jac_fn = null_jac if jac is None else jac
    scode, sparams = encode_schedule(schedule)
    ev = _as_event(event, n)
    mA, mc, me, md, morder, meorder = meth.encode()
    mode = 1 if tangent else 0
    nz = n + n * n if tangent else n
    n_t = te.size
    Z_final = np.empty((N, nz))
    Z_traj = np.empty((N, n_t, nz))
    info_i = np.zeros((N, N_INFO_I), dtype=np.int64)
    info_f = np.zeros((N, N_INFO_F))

    show = _progress_enabled(progress)
    if chunk_size is None:
        if show:
            import numba
            chunk_size = max(8 * numba.get_num_threads(), -(-N // 100))
        else:
            chunk_size = max(N, 1)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size: must be an integer >= 1, got {chunk_size!r}")

    rhs_fc = as_first_class(rhs, RHS_SIG)
    jac_fc = as_first_class(jac_fn, JAC_SIG)
    bar = progress_bar(N, desc, unit="traj", enabled=None if show else False, leave=True)
    try:
        for a in range(0, N, chunk_size):
            b = min(N, a + chunk_size)
            Th = Theta if Theta.shape[0] == 1 else Theta[a:b]
            integrate_ensemble(mode, rhs_fc, jac_fc, Y0[a:b], t0, t_end, te, Th, scode,
                               sparams, mA, mc, me, md, morder, meorder, float(rtol),
                               float(atol), h0, float(h_max), int(max_steps), ev.kind,
                               ev.direction, ev.needs_f, ev.params, ev.fn, Z_final[a:b],
                               Z_traj[a:b], info_i[a:b], info_f[a:b])
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
    return EnsembleRun(t_eval=te, Z_final=Z_final, Z_traj=Z_traj if n_t else None,
                       status=info_i[:, 0].copy(), n_steps=info_i[:, 1].copy(),
                       n_rejected=info_i[:, 2].copy(), n_rhs=info_i[:, 3].copy(),
                       n_filled=info_i[:, 4].copy(), t_final=info_f[:, 0].copy(),
                       t_event=info_f[:, 1].copy())


# ----------------------------------------------------------------------------------------
# state packing: the one layout lives in solvers.layout (re-exported here)
# ----------------------------------------------------------------------------------------

_softmax = softmax   # former home (analysis.montecarlo imports it)


def _names_of(names_or_model: Any) -> tuple[str, ...]:
    return _names_tuple(getattr(names_or_model, "state_names", names_or_model))


def _weights(spec: ProblemSpec, alpha: np.ndarray | None, batch: tuple[int, ...]) -> np.ndarray:
    if alpha is not None:
        return softmax(alpha)
    return np.broadcast_to(spec.family.w, batch + (spec.family.M,)).copy()


# ----------------------------------------------------------------------------------------
# problem-level API
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Trajectory:
    """One trajectory of the reduced gradient flow of a :class:`ProblemSpec`.

    Attributes
    ----------
    t : (n_t,) output times reached (gradient-flow time; truncated at an event/failure).
    y : (n_t, n) state vectors (``state_names`` order).
    Q : (n_t, M, M) symmetric, ``Q_kl = m_k . m_l``.  R : (n_t, M, K), ``R_ka = m_k . mu_a``.
    w : (n_t, M) mixture weights (softmax(alpha) if trained, else the fixed weights).
    alpha : (n_t, M) weight logits, or None for fixed weights.
    beta : (n_t,) beta(t) of the schedule.
    G : (n_t, n, n) tangent propagator ``dy(t)/dy(t0)`` if requested, else None.
    t_final, y_final, Q_final, R_final, w_final, G_final : where the integration stopped.
    status, message, t_event : see :data:`solvers.integrate.STATUS_MESSAGES`.
    n_steps, n_rejected, n_rhs : solver statistics.
    """

    t: np.ndarray
    y: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    w: np.ndarray
    alpha: np.ndarray | None
    beta: np.ndarray
    G: np.ndarray | None
    t_final: float
    y_final: np.ndarray
    Q_final: np.ndarray
    R_final: np.ndarray
    w_final: np.ndarray
    G_final: np.ndarray | None
    schedule: Any
    state_names: tuple[str, ...]
    status: int
    message: str
    t_event: float
    n_steps: int
    n_rejected: int
    n_rhs: int

    @property
    def success(self) -> bool:
        return self.status >= 0


@dataclass(frozen=True)
class EnsembleResult:
    """N trajectories of the reduced gradient flow of a :class:`ProblemSpec`.

    Attributes
    ----------
    t : (n_t,) output times (empty when no trajectories were requested).
    y, Q, R, w, alpha : (N, n_t, ...) trajectories (NaN after a member stopped), or None.
    y_final (N, n), Q_final (N, M, M), R_final (N, M, K), w_final (N, M),
    alpha_final (N, M) or None : states where each member stopped (t_final).
    beta : (n_t,) beta(t) on the time grid.
    status, n_steps, n_rejected, n_rhs : int arrays (N,); t_final, t_event : (N,).
    G_final : (N, n, n) tangent propagators at t_final if requested, else None.
    wall_time : seconds spent in the compiled integrations.
    """

    t: np.ndarray
    y: np.ndarray | None
    Q: np.ndarray | None
    R: np.ndarray | None
    w: np.ndarray | None
    alpha: np.ndarray | None
    beta: np.ndarray
    y_final: np.ndarray
    Q_final: np.ndarray
    R_final: np.ndarray
    w_final: np.ndarray
    alpha_final: np.ndarray | None
    G_final: np.ndarray | None
    schedule: Any
    state_names: tuple[str, ...]
    status: np.ndarray
    t_final: np.ndarray
    t_event: np.ndarray
    n_steps: np.ndarray
    n_rejected: np.ndarray
    n_rhs: np.ndarray
    wall_time: float

    @property
    def N(self) -> int:
        return self.y_final.shape[0]

    @property
    def success(self) -> np.ndarray:
        return self.status >= 0

    @property
    def messages(self) -> list:
        return [STATUS_MESSAGES.get(int(s), "unknown") for s in self.status]


def _check_model(spec: ProblemSpec, model: Any, need_jac: bool = False,
                 d: float | None = None) -> tuple[StateLayout, np.ndarray]:
    """(layout, theta) of a spec and a model following :class:`CompiledModelProtocol`
    (``d``: the dimension, needed only with tied variances, :meth:`ProblemSpec.theta`)."""
    if not isinstance(spec, ProblemSpec):
        raise ValueError(f"spec: must be a ProblemSpec, got {type(spec).__name__}")
    return (require_model(model, structure=spec.structure, need_jac=need_jac),
            spec.theta(d=d))


def _initial_states(lay: StateLayout, y0: Any, name: str, ensemble: bool, T: np.ndarray,
                    psd_tol: float) -> np.ndarray:
    """User-given initial state(s) as a float array (n,) or (N, n), checked for shape,
    finiteness and realisability (:func:`solvers.geometry.check_realisable`)."""
    if isinstance(y0, Mapping):
        unknown = set(y0) - {"Q", "R", "alpha"}
        if unknown:
            raise ValueError(f"{name}: unknown keys {sorted(unknown)} (use Q, R, alpha)")
        if "Q" not in y0 or "R" not in y0:
            raise ValueError(f"{name}: a mapping needs 'Q' and 'R'")
        y = pack_state(lay, y0["Q"], y0["R"], y0.get("alpha"))
    else:
        try:
            y = np.array(y0, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name}: must be a numeric array or a mapping ({exc})") from None
    want = 2 if ensemble else 1
    if y.ndim != want or y.shape[-1] != lay.n:
        shape = "(N, n)" if ensemble else "(n,)"
        raise ValueError(f"{name}: must have shape {shape} with n = {lay.n} "
                         f"({', '.join(lay.names)}), got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: must be finite (found NaN or inf)")
    if psd_tol is None or not (float(psd_tol) < math.inf):
        return np.ascontiguousarray(y)
    Q, R, _ = lay.unpack(y)
    check_realisable(Q, R, T, name, psd_tol)
    return np.ascontiguousarray(y)


def solve(spec: ProblemSpec, model: Any, y0: Any, t_end: float, t_eval: Any = None, *,
          t0: float = 0.0, n_points: int = 201, method: str = "dopri5", rtol: float = 1e-8,
          atol: float = 1e-10, h: float | None = None, h_max: float = math.inf,
          max_steps: int = 1_000_000, event: Any = None, tangent: bool = False,
          psd_tol: float = DEFAULT_PSD_TOL, d: float | None = None) -> Trajectory:
    """Integrate the reduced gradient flow of ``spec`` from ``y0`` over [t0, t_end].

    ``dy/dt = f(y, beta(t); theta)`` with f = ``model.rhs`` (compiled for
    ``spec.structure``), theta = ``spec.theta()``, beta(t) = ``spec.schedule``.

    Parameters
    ----------
    y0 : (n,) state in ``model.state_names`` order, or a mapping ``{'Q': (M, M), 'R': (M, K),
        'alpha': (M,)}``.
    t_end : final gradient-flow time (>= t0).
    t_eval : sorted output times in [t0, t_end]; default ``n_points`` equally spaced times.
    method : ``'dopri5'`` (adaptive, rtol/atol) or ``'rk4'`` (fixed step h).
    event : None, ``'converged'``, :class:`solvers.integrate.Event`, or ``(code, params)``.
    tangent : also return the propagator ``G = dy(t)/dy(t0)`` (uses ``model.jac``).
    psd_tol : y0 must be realisable: the joint Gram matrix ``[[T, R^T], [R, Q]]`` of the
        initial state (T = ``spec.target.T``) must be positive semi-definite within psd_tol
        (smallest eigenvalue relative to max(1, max |entry|) >= -psd_tol), else ValueError
        (an unrealisable start is no set of vectors, and the reduced flow from it typically
        diverges).  ``math.inf`` skips the check.
    d : the dimension; required with tied variances (theta's inv_d = 1/d), unused otherwise.
    """
    lay, theta = _check_model(spec, model, need_jac=tangent, d=d)
    y0 = _initial_states(lay, y0, "y0", False, spec.target.T, psd_tol)
    if t_eval is None:
        if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) \
                or n_points < 2:
            raise ValueError(f"n_points: must be an integer >= 2, got {n_points!r}")
        t_end_f = float(t_end)
        if not math.isfinite(t_end_f):
            raise ValueError(f"t_end: must be finite, got {t_end}")
        t_eval = np.linspace(float(t0), t_end_f, n_points) if t_end_f > float(t0) \
            else np.array([float(t0)])
        t_eval[-1] = t_end_f
    sol = integrate(model.rhs, y0, (t0, t_end), theta, jac=model.jac if tangent else None,
                     schedule=spec.schedule, t_eval=t_eval, method=method, rtol=rtol,
                     atol=atol, h=h, h_max=h_max, max_steps=max_steps, event=event,
                     tangent=tangent)
    Q, R, alpha = unpack_state(lay, sol.y)
    Qf, Rf, af = unpack_state(lay, sol.y_final)
    return Trajectory(
        t=sol.t, y=sol.y, Q=Q, R=R, w=_weights(spec, alpha, (sol.t.size,)), alpha=alpha,
        beta=np.asarray(spec.schedule.beta(sol.t), dtype=float).reshape(sol.t.shape),
        G=sol.G, t_final=sol.t_final, y_final=sol.y_final, Q_final=Qf, R_final=Rf,
        w_final=_weights(spec, af, ()), G_final=sol.G_final, schedule=spec.schedule,
        state_names=lay.names, status=sol.status, message=sol.message, t_event=sol.t_event,
        n_steps=sol.n_steps, n_rejected=sol.n_rejected, n_rhs=sol.n_rhs)


def solve_ensemble(spec: ProblemSpec, model: Any, Y0: Any, t_end: float, t_eval: Any = None,
                   *, t0: float = 0.0, method: str = "dopri5", rtol: float = 1e-8,
                   atol: float = 1e-10, h: float | None = None, h_max: float = math.inf,
                   max_steps: int = 1_000_000, event: Any = None, tangent: bool = False,
                   progress: bool = True, chunk_size: int | None = None,
                   psd_tol: float = DEFAULT_PSD_TOL, d: float | None = None) -> EnsembleResult:
    """Integrate N initial conditions of the reduced gradient flow of ``spec`` in parallel.

    Parameters
    ----------
    Y0 : (N, n) states in ``model.state_names`` order, or a mapping ``{'Q': (N, M, M),
        'R': (N, M, K), 'alpha': (N, M)}``.
    t_end : final gradient-flow time (>= t0).
    t_eval : sorted output times in [t0, t_end] for trajectories (N, n_t, ...); default
        None: final states only.
    progress : tqdm bar on stderr (only if stderr is a terminal); chunk_size: members per
        compiled call.  psd_tol : every member of Y0 must be realisable (see :func:`solve`).
    Other arguments as :func:`solve`.  Members are independent: the results do not depend on
    the number of threads or on the chunking.  ``d``: the dimension, required with tied
    variances (it sets inv_d = 1/d of the variance flow).
    """
    import time

    lay, theta = _check_model(spec, model, need_jac=tangent, d=d)
    Y0 = _initial_states(lay, Y0, "Y0", True, spec.target.T, psd_tol)
    start = time.perf_counter()
    run = run_ensemble(model.rhs, Y0, (t0, t_end), theta, jac=model.jac if tangent else None,
                       schedule=spec.schedule, t_eval=t_eval, method=method, rtol=rtol,
                       atol=atol, h=h, h_max=h_max, max_steps=max_steps, event=event,
                       tangent=tangent, progress=progress, chunk_size=chunk_size)
    wall = time.perf_counter() - start
    n = lay.n
    N = Y0.shape[0]
    yf = run.Z_final[:, :n]
    Qf, Rf, af = unpack_state(lay, yf)
    if run.Z_traj is not None:
        y = run.Z_traj[:, :, :n]
        Q, R, alpha = unpack_state(lay, y)
        w = _weights(spec, alpha, y.shape[:2])
    else:
        y = Q = R = alpha = w = None
    return EnsembleResult(
        t=run.t_eval, y=y, Q=Q, R=R, w=w, alpha=alpha,
        beta=np.asarray(spec.schedule.beta(run.t_eval), dtype=float).reshape(run.t_eval.shape),
        y_final=yf, Q_final=Qf, R_final=Rf, w_final=_weights(spec, af, (N,)), alpha_final=af,
        G_final=run.Z_final[:, n:].reshape(N, n, n) if tangent else None,
        schedule=spec.schedule, state_names=lay.names, status=run.status,
        t_final=run.t_final, t_event=run.t_event, n_steps=run.n_steps,
        n_rejected=run.n_rejected, n_rhs=run.n_rhs, wall_time=wall)
