r"""Plain gradient descent at finite step: the exact reduced map (DESIGN.md section 7).

GD with exact gradients on the means and step eta,

    m_k <- m_k - eta g_k,   g_k = grad_{m_k} F = sum_l G_kl m_l + sum_a H_ka mu_a,

(the chain rule of DESIGN.md section 2, ``G_kl = dF/dQ_kl + dF/dQ_lk``, ``H_ka = dF/dR_ka``,
both evaluated at the current state and at beta = beta(t_n)) keeps every m_k in span{mu_a,
m_l}, so with ``A = I - eta G`` (M x M), i.e. ``m' = A m - eta H mu`` row-wise,

    R' = A R - eta H T,
    Q' = A Q A^T - eta (A R H^T + H R^T A^T) + eta^2 H T H^T,
    alpha' = alpha - eta dF/dalpha          (trainable weight logits),

all from the state before the step (simultaneous update).  This map is exact for every d: d
enters only through the initial state.  It is the explicit Euler step of the reduced gradient
flow ``dy/dt = f(y, beta(t))`` (the flow's ``dQ/dt = -(G Q + Q G^T + H R^T + R H^T)`` is its
first order in eta), so GD follows the flow with a global error O(eta) at fixed t.

Unit of time: the gradient-flow time, ``t_n = n eta`` after n steps; step n (n = 0, 1, ...)
uses ``beta(t_n)`` of the schedule.

Compiled core
-------------
:func:`gd_step` (one step of one state) and :func:`gd_ensemble_core` (N states for up to
``n_steps`` steps, a ``numba.prange`` loop over members, no shared mutable state, so the
result does not depend on the number of threads) take the model's compiled
``gradient(y, beta, theta, G, H, dF_dalpha)`` (:data:`solvers.signatures.GRAD_SIG`, generated
by ``derivations.codegen``) as a first-class function.

Python layer
------------
:func:`gd_map` (one step, for tests and exploration), :func:`run_gd` (arrays in, arrays out,
chunked with a progress bar) and :func:`solve_gd` (a :class:`derivations.spec.ProblemSpec` and a
compiled model providing ``gradient``; returns :class:`GDResult` with Q, R, w by name).  State
layout: :class:`solvers.layout.StateLayout`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange, types

from derivations.spec import ProblemSpec

from . import schedule as _schedule_module
from . import signatures as _signatures_module
from .integrate import as_first_class, encode_schedule, source_key
from .layout import StateLayout, state_layout
from .progress import progress_bar, stderr_is_terminal
from .schedule import beta_at
from .signatures import GRAD_SIG, GradFn

__all__ = ["GD_RUNNING", "GD_CONVERGED", "GD_NONFINITE", "GD_STATUS_MESSAGES", "gd_step",
           "gd_ensemble_core", "gd_map", "run_gd", "GDRun", "GDResult", "solve_gd",
           "gd_indices"]

#: Member statuses: all steps done / stopped as stationary / stopped on a non-finite state.
GD_RUNNING = 0
GD_CONVERGED = 1
GD_NONFINITE = -3
GD_STATUS_MESSAGES = {
    GD_RUNNING: "success: all steps done",
    GD_CONVERGED: "stationary: max |y' - y| / eta < tol once beta >= beta_min",
    GD_NONFINITE: "non-finite state (step too large for stability?)",
}

_f8 = types.float64
_i8 = types.int64
_v1 = types.float64[::1]
_v2 = types.float64[:, ::1]
_v3 = types.float64[:, :, ::1]
_iv1 = types.int64[::1]
_iv2 = types.int64[:, ::1]

_STEP_SIG = types.void(GradFn, _v1, _f8, _v1, _f8, _iv2, _iv2, _iv1, _iv2, _v1,
                       _v2, _v2, _v1, _v2, _v2, _v2, _v2)


@njit(_STEP_SIG, cache=True)
def gd_step(grad, y, beta, theta, eta, q_index, r_index, alpha_index, t_index, out,
            G, H, dFa, Q, R, T, A):
    """One GD step of one reduced state, ``out = y'`` (see the module docstring).

    grad : the model's compiled ``gradient`` (GRAD_SIG).  y (n,), out (n,) states in the
    layout of :class:`solvers.layout.StateLayout`; theta (p,); eta the step; beta = beta(t_n).
    q_index (M, M), r_index (M, K), alpha_index (M,) (length 0 for fixed weights): positions
    in y; t_index (K, K): positions of T_ab in theta.  G (M, M), H (M, K), dFa (M,), Q (M, M),
    R (M, K), T (K, K), A (M, M): work arrays (overwritten).
    """
    M = q_index.shape[0]
    K = r_index.shape[1]
    grad(y, beta, theta, G, H, dFa)
    for k in range(M):
        for l in range(M):
            Q[k, l] = y[q_index[k, l]]
            A[k, l] = (1.0 if k == l else 0.0) - eta * G[k, l]
        for a in range(K):
            R[k, a] = y[r_index[k, a]]
    for a in range(K):
        for b in range(K):
            T[a, b] = theta[t_index[a, b]]
    # R' = A R - eta H T  (row k: the overlaps of m_k' = sum_l A_kl m_l - eta sum_a H_ka mu_a)
    for k in range(M):
        for a in range(K):
            acc = 0.0
            for l in range(M):
                acc += A[k, l] * R[l, a]
            for b in range(K):
                acc -= eta * H[k, b] * T[b, a]
            out[r_index[k, a]] = acc
    # Q'_kl = m_k' . m_l' with m_k' = sum_i A_ki m_i - eta sum_a H_ka mu_a:
    # (A Q A^T)_kl - eta ((A R H^T)_kl + (A R H^T)_lk) + eta^2 (H T H^T)_kl
    for k in range(M):
        for l in range(k, M):
            aqa = 0.0
            arh_kl = 0.0
            arh_lk = 0.0
            for i in range(M):
                qa = 0.0
                for j in range(M):
                    qa += Q[i, j] * A[l, j]
                aqa += A[k, i] * qa
                for a in range(K):
                    arh_kl += A[k, i] * R[i, a] * H[l, a]
                    arh_lk += A[l, i] * R[i, a] * H[k, a]
            hth = 0.0
            for a in range(K):
                for b in range(K):
                    hth += H[k, a] * T[a, b] * H[l, b]
            out[q_index[k, l]] = aqa - eta * (arh_kl + arh_lk) + eta * eta * hth
    for k in range(alpha_index.shape[0]):
        out[alpha_index[k]] = y[alpha_index[k]] - eta * dFa[k]


_CORE_SIG = types.void(
    GradFn, _v2, _v2, _f8, _i8, _i8,     # gradient, Y0 (N, n), Theta (1 or N, p), eta,
                                         # step0 (index of the first step), n_steps
    _i8, _v1, _f8, _f8, _i8,             # schedule code, params, beta_min, tol, record_every
    _iv2, _iv2, _iv1, _iv2,              # q_index, r_index, alpha_index, t_index
    _v2, _v3, _iv2,                      # Y_final (N, n), Y_traj (N, n_rec, n), info (N, 2)
)


def _build_gd_ensemble_core(deps_key: int):
    @njit(_CORE_SIG, parallel=True, cache=True)
    def gd_ensemble_core(grad, Y0, Theta, eta, step0, n_steps, scode, sparams, beta_min, tol,
                         record_every, q_index, r_index, alpha_index, t_index, Y_final,
                         Y_traj, info):
        """Run N members for up to n_steps GD steps each (``numba.prange`` over members).

        Step n (n = step0 .. step0 + n_steps - 1; Y0 is the state at t = step0 eta) maps the
        state at t_n = n eta with beta(t_n) to the state at t_{n+1}.  A member stops early when the new state is not finite (status
        GD_NONFINITE, Y_final holds that state) or, if tol > 0, when beta(t_n) >= beta_min and
        max_i |y'_i - y_i| / eta < tol (GD_CONVERGED); else status GD_RUNNING.
        Y_traj[i, r] is the state after r * record_every steps (r = 0 .. n_rec - 1), NaN after
        a stop.  info[i] = (status, steps done in this call).
        """
        _deps = deps_key  # noqa: F841 (part of the cache key, see solvers.integrate.source_key)
        N = Y0.shape[0]
        n = Y0.shape[1]
        n_theta = Theta.shape[0]
        M = q_index.shape[0]
        K = r_index.shape[1]
        n_rec = Y_traj.shape[1]
        for i in prange(N):
            j = np.int64(i) * np.int64(n_theta > 1)
            theta = Theta[j]
            G = np.empty((M, M))
            H = np.empty((M, K))
            dFa = np.empty(max(alpha_index.shape[0], 1))
            Q = np.empty((M, M))
            R = np.empty((M, K))
            T = np.empty((K, K))
            A = np.empty((M, M))
            y = Y0[i].copy()
            y_new = np.empty(n)
            if n_rec > 0:
                Y_traj[i, 0, :] = y
            status = GD_RUNNING
            done = 0
            for step in range(n_steps):
                beta = beta_at((step0 + step) * eta, scode, sparams)
                gd_step(grad, y, beta, theta, eta, q_index, r_index, alpha_index, t_index,
                        y_new, G, H, dFa, Q, R, T, A)
                change = 0.0
                finite = True
                for m in range(n):
                    v = y_new[m]
                    if not math.isfinite(v):
                        finite = False
                    d = abs(v - y[m])
                    if d > change:
                        change = d
                    y[m] = v
                done = step + 1
                if record_every > 0 and done % record_every == 0 and done // record_every < n_rec:
                    Y_traj[i, done // record_every, :] = y
                if not finite:
                    status = GD_NONFINITE
                    break
                if tol > 0.0 and beta >= beta_min and change < tol * eta:
                    status = GD_CONVERGED
                    break
            if record_every > 0:
                for r in range(done // record_every + 1, n_rec):
                    Y_traj[i, r, :] = math.nan
            Y_final[i, :] = y
            info[i, 0] = status
            info[i, 1] = done

    return gd_ensemble_core


gd_ensemble_core = _build_gd_ensemble_core(
    source_key(_schedule_module, _signatures_module))


# ----------------------------------------------------------------------------------------
# Python layer
# ----------------------------------------------------------------------------------------

def gd_indices(layout: StateLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(q_index (M, M), r_index (M, K), alpha_index (M,) or (0,), t_index (K, K)) as
    contiguous int64 arrays: positions of Q, R, alpha in y and of T in theta."""
    names = layout.parameter_names
    K = layout.K
    t_index = np.empty((K, K), dtype=np.int64)
    for a in range(K):
        for b in range(a, K):
            t_index[a, b] = t_index[b, a] = names.index(f"T_{a + 1}_{b + 1}")
    ai = layout.alpha_index if layout.alpha_index is not None else np.zeros(0, dtype=np.int64)
    # copies: the layout's index arrays are read-only (shared), Numba types those apart
    return (np.array(layout.q_index, dtype=np.int64, order="C"),
            np.array(layout.r_index, dtype=np.int64, order="C"),
            np.array(ai, dtype=np.int64, order="C"), t_index)


def check_eta(eta: Any) -> float:
    """``eta`` as a float, or a ValueError naming eta: a finite number > 0."""
    if isinstance(eta, (bool, str)) or eta is None:
        raise ValueError(f"eta: the GD step must be a finite number > 0, got {eta!r}")
    try:
        v = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"eta: the GD step must be a finite number > 0, got {eta!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"eta: the GD step must be a finite number > 0, got {eta!r}")
    return v


def _gradient_of(model_or_grad: Any) -> Any:
    fn = getattr(model_or_grad, "gradient", model_or_grad)
    if fn is None or not callable(fn):
        raise ValueError("model: needs a compiled gradient(y, beta, theta, G, H, dF_dalpha) "
                         "(GRAD_SIG; derivations.compile_model(structure).gradient)")
    return as_first_class(fn, GRAD_SIG)


def _steps(eta: float, n_steps: Any, t_end: Any, step0: int = 0) -> int:
    """Number of steps from exactly one of n_steps, t_end (round(t_end / eta) - step0)."""
    if (n_steps is None) == (t_end is None):
        raise ValueError("n_steps: give exactly one of n_steps and t_end")
    if n_steps is None:
        te = float(t_end)
        if not (math.isfinite(te) and te >= 0):
            raise ValueError(f"t_end: must be a finite number >= 0, got {t_end!r}")
        return max(int(round(te / eta)) - step0, 0)
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 0:
        raise ValueError(f"n_steps: must be an integer >= 0, got {n_steps!r}")
    return int(n_steps)


def gd_map(model_or_grad: Any, y: Any, beta: float, theta: Any, eta: float,
           layout: Any = None) -> np.ndarray:
    """One GD step ``y -> y'`` (n,) at inverse temperature ``beta`` (module docstring).

    model_or_grad : a compiled model with ``.gradient`` (its layout is used if ``layout`` is
    None) or the compiled gradient function itself (then ``layout`` is required).
    """
    eta = check_eta(eta)
    lay = state_layout(layout if layout is not None else model_or_grad)
    grad = _gradient_of(model_or_grad)
    y = lay.check_state(y)
    theta = lay.check_theta(theta)
    qi, ri, ai, ti = gd_indices(lay)
    M, K = lay.M, lay.K
    out = np.empty(lay.n)
    gd_step(grad, y, float(beta), theta, eta, qi, ri, ai, ti, out, np.empty((M, M)),
            np.empty((M, K)), np.empty(max(M, 1)), np.empty((M, M)), np.empty((M, K)),
            np.empty((K, K)), np.empty((M, M)))
    return out


@dataclass(frozen=True)
class GDRun:
    """Raw output of :func:`run_gd`: t_rec (n_rec,) recorded times, Y_final (N, n),
    Y_traj (N, n_rec, n) or None, status (N,) (``GD_*``), steps (N,) steps done in this
    call, t_final (N,) = (step0 + steps) * eta."""

    eta: float
    n_steps: int
    t_rec: np.ndarray
    Y_final: np.ndarray
    Y_traj: np.ndarray | None
    status: np.ndarray
    steps: np.ndarray
    t_final: np.ndarray


def run_gd(model_or_grad: Any, Y0: Any, theta: Any, eta: float, *, n_steps: int | None = None,
           t_end: float | None = None, step0: int = 0, schedule: Any = None,
           layout: Any = None,
           tol: float = 0.0, beta_min: float = 1.0, record_every: int = 0,
           progress: bool = False, chunk_size: int | None = None, desc: str = "gd") -> GDRun:
    """Run N reduced states ``Y0`` (N, n) through the GD map in parallel.

    theta (p,) shared or (N, p) per member; eta the step (> 0); ``n_steps`` steps, or
    ``t_end`` (gradient-flow time, ``round(t_end / eta)`` steps); schedule beta(t) (None:
    beta = 1), evaluated at t_n = n eta for step n.  ``step0``: Y0 is the state at
    t0 = step0 * eta (to continue earlier runs); then ``t_end`` is the final time, as well.  ``tol > 0`` stops a member once
    beta(t_n) >= beta_min and max |y' - y| / eta < tol.  ``record_every = r > 0`` records the
    state every r steps (t_rec = 0, r eta, ...).  Members are processed in chunks (a tqdm bar
    on stderr between chunks if ``progress`` and stderr is a terminal); results do not
    depend on the chunking or the number of threads.
    """
    eta = check_eta(eta)
    if isinstance(step0, bool) or not isinstance(step0, (int, np.integer)) or step0 < 0:
        raise ValueError(f"step0: must be an integer >= 0, got {step0!r}")
    steps = _steps(eta, n_steps, t_end, int(step0))
    lay = state_layout(layout if layout is not None else model_or_grad)
    grad = _gradient_of(model_or_grad)
    Y0 = np.ascontiguousarray(Y0, dtype=float)
    if Y0.ndim != 2 or Y0.shape[1] != lay.n:
        raise ValueError(f"Y0: must have shape (N, {lay.n}), got {Y0.shape}")
    if not np.all(np.isfinite(Y0)):
        raise ValueError("Y0: must be finite (found NaN or inf)")
    N = Y0.shape[0]
    Theta = np.ascontiguousarray(theta, dtype=float)
    if Theta.ndim == 1:
        Theta = Theta.reshape(1, -1)
    if Theta.ndim != 2 or Theta.shape[0] not in (1, N) or Theta.shape[1] != lay.n_params:
        raise ValueError(f"theta: must have shape ({lay.n_params},) or ({N}, {lay.n_params}), "
                         f"got {np.shape(theta)}")
    if not np.all(np.isfinite(Theta)):
        raise ValueError("theta: must be finite (found NaN or inf)")
    tol = float(tol)
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValueError(f"tol: must be a finite number >= 0, got {tol!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) \
            or record_every < 0:
        raise ValueError(f"record_every: must be an integer >= 0, got {record_every!r}")
    scode, sparams = encode_schedule(schedule)
    qi, ri, ai, ti = gd_indices(lay)
    n_rec = steps // record_every + 1 if record_every else 0
    Y_final = np.empty((N, lay.n))
    Y_traj = np.empty((N, n_rec, lay.n))
    info = np.zeros((N, 2), dtype=np.int64)
    show = bool(progress) and stderr_is_terminal()
    if chunk_size is None:
        chunk_size = max(N, 1)
        if show:
            import numba
            chunk_size = max(8 * numba.get_num_threads(), -(-N // 100))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size: must be an integer >= 1, got {chunk_size!r}")
    bar = progress_bar(N, desc, unit="traj", enabled=None if show else False)
    try:
        for a in range(0, N, chunk_size):
            b = min(N, a + chunk_size)
            Th = Theta if Theta.shape[0] == 1 else Theta[a:b]
            gd_ensemble_core(grad, Y0[a:b], Th, eta, int(step0), steps, scode, sparams,
                             float(beta_min),
                             tol, int(record_every), qi, ri, ai, ti, Y_final[a:b],
                             Y_traj[a:b], info[a:b])
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
    return GDRun(eta=eta, n_steps=steps,
                 t_rec=eta * (step0 + record_every * np.arange(n_rec, dtype=float)),
                 Y_final=Y_final, Y_traj=Y_traj if n_rec else None, status=info[:, 0].copy(),
                 steps=info[:, 1].copy(), t_final=eta * (step0 + info[:, 1].astype(float)))


@dataclass(frozen=True)
class GDResult:
    """N reduced GD runs of a :class:`ProblemSpec`.

    y_final (N, n), Q_final (N, M, M), R_final (N, M, K), w_final (N, M), alpha_final (N, M)
    or None: the states where each member stopped (after ``steps`` steps, t_final = steps *
    eta).  t (n_rec,), y, Q, R, w, alpha (N, n_rec, ...): the recorded trajectories (NaN
    after a stop) or None.  status (N,): ``GD_RUNNING`` (all n_steps done), ``GD_CONVERGED``,
    ``GD_NONFINITE``.  wall_time: seconds in the compiled runs.
    """

    eta: float
    n_steps: int
    t: np.ndarray
    y: np.ndarray | None
    Q: np.ndarray | None
    R: np.ndarray | None
    w: np.ndarray | None
    alpha: np.ndarray | None
    y_final: np.ndarray
    Q_final: np.ndarray
    R_final: np.ndarray
    w_final: np.ndarray
    alpha_final: np.ndarray | None
    status: np.ndarray
    steps: np.ndarray
    t_final: np.ndarray
    state_names: tuple[str, ...]
    wall_time: float

    @property
    def N(self) -> int:
        return self.y_final.shape[0]


def solve_gd(spec: ProblemSpec, model: Any, Y0: Any, eta: float, *, n_steps: int | None = None,
             t_end: float | None = None, step0: int = 0, tol: float = 0.0,
             beta_min: float | None = None,
             record_every: int = 0, progress: bool = False, chunk_size: int | None = None,
             psd_tol: float | None = None) -> GDResult:
    """Run N initial states of the reduced GD map of ``spec`` (schedule, theta from the spec).

    model : a compiled model of ``spec.structure`` with ``gradient``
    (``derivations.compile_model(spec.structure)``).  Y0 : (N, n) states or a mapping
    ``{'Q': (N, M, M), 'R': (N, M, K), 'alpha': (N, M)}``, each realisable (see
    :func:`solvers.ensemble.solve`; ``psd_tol`` as there, default
    :data:`solvers.geometry.DEFAULT_PSD_TOL`).  eta, n_steps / t_end, step0, tol, record_every as
    :func:`run_gd`; ``beta_min`` defaults to ``spec.schedule.beta_final - 1e-3`` (the ode
    estimator's stationarity rule).
    """
    from .ensemble import _check_model, _initial_states, _weights
    from .geometry import DEFAULT_PSD_TOL
    eta = check_eta(eta)
    lay, theta = _check_model(spec, model)
    grad = getattr(model, "gradient", None)
    if grad is None:
        raise ValueError("model: needs attribute 'gradient' (GRAD_SIG; "
                         "derivations.compile_model(structure))")
    Y0 = _initial_states(lay, Y0, "Y0", True, spec.target.T,
                         DEFAULT_PSD_TOL if psd_tol is None else psd_tol)
    if beta_min is None:
        beta_min = spec.schedule.beta_final - 1e-3
    start = time.perf_counter()
    run = run_gd(grad, Y0, theta, eta, n_steps=n_steps, t_end=t_end, step0=step0,
                 schedule=spec.schedule,
                 layout=lay, tol=tol, beta_min=beta_min, record_every=record_every,
                 progress=progress, chunk_size=chunk_size)
    wall = time.perf_counter() - start
    N = Y0.shape[0]
    Qf, Rf, af = lay.unpack(run.Y_final)
    if run.Y_traj is not None:
        Q, R, alpha = lay.unpack(run.Y_traj)
        w = _weights(spec, alpha, run.Y_traj.shape[:2])
    else:
        Q = R = alpha = w = None
    return GDResult(eta=eta, n_steps=run.n_steps, t=run.t_rec, y=run.Y_traj, Q=Q, R=R, w=w,
                    alpha=alpha, y_final=run.Y_final, Q_final=Qf, R_final=Rf,
                    w_final=_weights(spec, af, (N,)), alpha_final=af, status=run.status,
                    steps=run.steps, t_final=run.t_final, state_names=lay.names,
                    wall_time=wall)
