r"""Collapse probability: four estimators behind one API (DESIGN.md section 3).

``collapse_probability(spec, d, method, draws, seed, executor)`` returns a
:class:`CollapseResult` with the estimate, its uncertainty and, where there are draws, the
per-draw outcomes.

ode
    Theory ensemble.  Draw ``(Q(0), R(0), alpha(0))`` from their exact law in dimension d
    (:mod:`analysis.initial_law`: Gaussian projections + Bartlett-Wishart, no d-dimensional
    vectors), integrate the reduced ODE of every draw (compiled, batched, DOPRI5) until the
    schedule has settled and the flow has converged, classify (:mod:`analysis.classify`).
    Uncertainty: Wilson 95% interval of k collapsed out of n draws.  Exact up to the ODE
    tolerance for every d; the cost is one trajectory per draw.

separatrix
    Sharp large-d formula for two components on a symmetric antipodal target
    (``mu_2 = -mu_1``, equal target and component weights).  For large d, ``Q(0) -> sigma_init^2 I``
    and only the initial overlaps ``u = (R_11, R_21)(0)`` matter, an isotropic Gaussian of scale
    ``eps0 = sigma_init sqrt(A / d)``.  Write ``u = eps (cos theta e_s + sin theta e_a)``,
    ``e_s = (1, 1)/sqrt 2`` (both components towards mode 1), ``e_a = (1, -1)/sqrt 2``.  The flow
    collapses exactly when ``|theta| < theta_c(eps)`` (mod pi), so

        P = E_{chi ~ Rayleigh}[ 2 theta_c(eps0 chi) / pi ].

    ``theta_c`` is found by bisection in theta with the compiled integrator on a log-spaced
    grid of eps (all grid points advance together as one ensemble), interpolated (PCHIP in
    log eps) and integrated against the Rayleigh density by composite Simpson quadrature.
    A coarse scan first checks that the outcome is monotone in |theta| (reported in
    ``details['monotone']``).  Neglected: the O(d^-1/2) fluctuations of Q(0) around
    ``sigma_init^2 I`` (Var Q_kk = 2 sigma^4/d, Var Q_12 = sigma^4/d) and of R_k2 + R_k1 (zero
    here by antipodality).  Uncertainty: a numerical error bound (bisection width plus the
    change under halving the eps grid), not a sampling interval.

linear
    Linearised theory for targets with the invariant manifold R = 0.  Integrate the symmetric
    trajectory ``y_s(t)`` (R = 0, ``Q(0) = sigma_init^2 I``) together with its tangent
    propagator ``G(t) = dy(t)/dy(0)``; the initial overlaps are mapped through the R-block of
    G and classified by their signs at the saturation time t*, where the RMS linearised
    overlap reaches half the target overlap ``T_11 / 2``.  For two components on an antipodal
    target the orthant probability is closed form, ``P = 1/2 + arcsin(rho)/pi`` with rho the
    correlation of the mapped pair; otherwise (or with option ``orthant="sampled"``) the
    Gaussian law of the mapped overlaps is sampled (``draws``; factored by ``eigh``, since it is
    singular whenever T is) and classified, with a Wilson interval; the closed form's ``ci``
    is the point itself.  The propagator is integrated only up to t* (over doubling horizons):
    beyond it G grows without bound and the tangent system turns stiff.  This is
    an approximation: it treats the flow as linear up to t* although the basin boundary is
    set by the nonlinear flow; it maps the axes through G and over-predicts collapse when the
    symmetric (collapsing) direction grows fastest, and its d-dependence enters only through
    t*.  The result carries these caveats in ``notes``.

montecarlo
    Real VI in R^d (:mod:`analysis.montecarlo`): SGD on d-dimensional means with
    reparameterised samples.  Wilson 95% interval.  SGD noise at finite step size is an extra
    source of overlap and typically raises collapse above the gradient flow's value.

Executors: ``ode`` and ``montecarlo`` split their draws into chunks that are submitted to an
optional ``concurrent.futures.Executor`` (e.g. a ProcessPoolExecutor, dask.distributed's or
mpi4py's); by default they run in-process, where the compiled ensemble already uses all
cores.  Seeds: each chunk draws from its own stream derived from (seed, chunk index), so the
result does not depend on the executor.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from derivations.spec import ProblemSpec, require_spec

from .classify import MECHANISM_NAMES, classify, mechanism_counts
from .stats import proportion

__all__ = ["METHODS", "CollapseResult", "collapse_probability", "critical_angles",
           "separatrix_vs_d",
           "default_ode_t_end", "is_antipodal_pair"]

METHODS = ("ode", "separatrix", "linear", "montecarlo")

#: Draws per chunk of the theory ensemble: one compiled call / executor task each.
ODE_CHUNK = 2000


@dataclass(frozen=True)
class CollapseResult:
    """A collapse-probability estimate.

    Attributes
    ----------
    method : one of :data:`METHODS`.
    p : estimated probability of mode collapse.
    ci : (low, high): Wilson 95% interval for sampling estimators; a numerical error bound
        for ``separatrix`` and closed-form ``linear``.
    k, n : collapsed draws and draws (None for the deterministic estimators).
    d : dimension.
    params : the full specification (``spec.to_dict()``).
    options : the estimator's settings.
    outcomes : (n,) bool per draw, or None.  mechanisms : (n,) int8 codes of
        :mod:`analysis.classify`, or None.
    details : method-specific diagnostics (JSON-serialisable).
    notes : caveats of the estimator.
    wall_time : seconds.
    """

    method: str
    p: float
    ci: tuple[float, float]
    k: Optional[int]
    n: Optional[int]
    d: int
    params: dict
    options: dict = field(default_factory=dict)
    outcomes: Optional[np.ndarray] = field(default=None, repr=False)
    mechanisms: Optional[np.ndarray] = field(default=None, repr=False)
    details: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        out = {"p": self.p, "ci": [self.ci[0], self.ci[1]], "k": self.k, "n": self.n,
               "d": self.d, "method": self.method, "params": self.params,
               "options": self.options, "details": self.details, "notes": list(self.notes),
               "wall_time": self.wall_time}
        if self.mechanisms is not None:
            out["mechanisms"] = mechanism_counts(self.mechanisms)
        return out


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def _check_d(d: Any) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d: must be an integer >= 1, got {d!r}")
    return int(d)


def is_antipodal_pair(spec: ProblemSpec) -> bool:
    """K = M = 2, mu_2 = -mu_1, pi_1 = pi_2, w_1 = w_2, zero centres: the separatrix setting."""
    T, K, M = spec.target.T, spec.target.K, spec.family.M
    if K != 2 or M != 2 or spec.init.centre_gram is not None:
        return False
    A = T[0, 0]
    return (A > 0 and abs(T[1, 1] - A) <= 1e-12 * A and abs(T[0, 1] + A) <= 1e-12 * A
            and spec.target.weights[0] == spec.target.weights[1]
            and spec.family.weights[0] == spec.family.weights[1])


def default_ode_t_end(spec: ProblemSpec) -> float:
    """Final time of the theory ensemble: the schedule settles within 1e-3 of its final beta,
    then 25 relaxation times ``Delta / (beta_final min_k w_k)`` (the rule of the Monte Carlo,
    :func:`analysis.montecarlo.default_t_end`); members stop earlier once converged."""
    from .montecarlo import default_t_end
    return default_t_end(spec)


def _model(spec: ProblemSpec):
    from derivations.codegen import compile_model
    return compile_model(spec.structure)


def _converged_event(spec: ProblemSpec, tol: float = 1e-7):
    """Stationarity (max |dy/dt| < tol) once beta is within 1e-3 of its final value."""
    from solvers.integrate import Event
    return Event.converged(tol, beta_min=spec.schedule.beta_final - 1e-3)


def _solve_chunk(spec_json: str, Y0: np.ndarray, t_end: float, rtol: float, atol: float,
                 weight_threshold: float, progress: bool, max_extensions: int = 3
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Integrate one chunk of initial states to their outcome and classify (module-level:
    picklable).

    Members stop once stationary (:func:`_converged_event`).  Those still moving at
    ``t_end`` (slow escapes from near a saddle) are integrated on, from where they stand, for
    another ``t_end`` at a time, at most ``max_extensions`` times.  Returns (collapsed,
    mechanism, status, extensions used, members whose classification still changed in the
    last extension).
    """
    from solvers.ensemble import solve_ensemble
    from solvers.integrate import STATUS_SUCCESS
    spec = ProblemSpec.from_json(spec_json)
    model = _model(spec)
    event = _converged_event(spec)
    T = spec.target.T
    res = solve_ensemble(spec, model, Y0, t_end, rtol=rtol, atol=atol, event=event,
                         progress=progress)
    y = res.y_final.copy()
    status = res.status.copy()
    collapsed, mech = classify(res.Q_final, res.R_final, T, res.w_final, weight_threshold)
    t_now, used, changed = t_end, 0, 0
    while used < max_extensions:
        moving = np.nonzero(status == STATUS_SUCCESS)[0]
        if moving.size == 0:
            break
        ext = solve_ensemble(spec, model, y[moving], t_now + t_end, t0=t_now, rtol=rtol,
                             atol=atol, event=event, progress=False)
        c_new, m_new = classify(ext.Q_final, ext.R_final, T, ext.w_final, weight_threshold)
        changed = int(np.count_nonzero(c_new != collapsed[moving]))
        y[moving], status[moving] = ext.y_final, ext.status
        collapsed[moving], mech[moving] = c_new, m_new
        t_now += t_end
        used += 1
    return collapsed, mech, status, used, changed


# ------------------------------------------------------------------------------------------
# the estimators
# ------------------------------------------------------------------------------------------

def _ode(spec: ProblemSpec, d: int, draws: int, seed: Optional[int],
         executor: Optional[Executor], opts: dict) -> CollapseResult:
    from solvers.integrate import STATUS_SUCCESS
    from .initial_law import sample_initial_states
    t_end = float(opts.get("t_end") or default_ode_t_end(spec))
    rtol, atol = float(opts.get("rtol", 1e-8)), float(opts.get("atol", 1e-10))
    thr = float(opts.get("weight_threshold", 1e-3))
    progress = bool(opts.get("progress", False))
    root = np.random.SeedSequence(seed)
    n_chunks = max(1, math.ceil(draws / ODE_CHUNK))
    sizes = [draws // n_chunks + (1 if i < draws % n_chunks else 0) for i in range(n_chunks)]
    streams = root.spawn(n_chunks)
    Y0s = [sample_initial_states(spec, d, s, np.random.default_rng(st))
           for s, st in zip(sizes, streams)]
    text = spec.to_json()
    if executor is None:
        parts = [_solve_chunk(text, Y0, t_end, rtol, atol, thr, progress) for Y0 in Y0s]
    else:
        futures = [executor.submit(_solve_chunk, text, Y0, t_end, rtol, atol, thr, False)
                   for Y0 in Y0s]
        parts = [f.result() for f in futures]
    collapsed = np.concatenate([p[0] for p in parts])
    mech = np.concatenate([p[1] for p in parts])
    status = np.concatenate([p[2] for p in parts])
    unconverged = int(np.count_nonzero(status == STATUS_SUCCESS))
    changed = int(sum(p[4] for p in parts))
    notes = ["exact finite-d initial law; reduced ODE integrated until stationary "
             "(|dy/dt| < 1e-7 after the schedule settled)"]
    if unconverged:
        notes.append(f"{unconverged} draws still moving after {max(p[3] for p in parts)} "
                     f"extension(s) of t_end; {changed} of them changed outcome in the last "
                     "extension (classified where they stand)")
    prop = proportion(int(collapsed.sum()), int(collapsed.size))
    return CollapseResult(
        "ode", prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
        options={"t_end": t_end, "rtol": rtol, "atol": atol, "weight_threshold": thr,
                 "seed": seed, "chunk": ODE_CHUNK},
        outcomes=collapsed, mechanisms=mech,
        details={"status_counts": {str(int(s)): int(np.count_nonzero(status == s))
                                   for s in np.unique(status)},
                 "extensions": int(max(p[3] for p in parts)), "unconverged": unconverged,
                 "changed_in_last_extension": changed},
        notes=tuple(notes))


def _antipodal_state(spec: ProblemSpec, model, u: np.ndarray, q0: float) -> np.ndarray:
    """States with Q = q0 I and R_k1 = u_k, R_k2 = -u_k; u (N, 2)."""
    from solvers.ensemble import pack_state
    N = u.shape[0]
    Q = np.broadcast_to(q0 * np.eye(2), (N, 2, 2)).copy()
    R = np.stack([u, -u], axis=-1)
    alpha = np.zeros((N, 2)) if spec.family.train_weights else None
    return pack_state(model, Q, R, alpha)


def critical_angles(spec: ProblemSpec, eps: Sequence[float], *, t_end: Optional[float] = None,
                    n_coarse: int = 24, tol: float = 1e-4, rtol: float = 1e-9,
                    atol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Critical angle ``theta_c(eps)`` of the antipodal two-component problem.

    For each amplitude eps (array (E,)), the outcome from ``Q = sigma_init^2 I``,
    ``u = eps (cos theta e_s + sin theta e_a)`` is collapse for ``theta < theta_c`` and split
    for ``theta_c < theta <= pi/2`` (theta in [0, pi/2]; the other quadrants follow by the
    symmetries u -> -u and component exchange).  A coarse scan of ``n_coarse + 1`` angles
    locates the switch and checks monotonicity; bisection then narrows it to ``tol``.

    Returns (theta_c (E,), monotone (E,) bool).  A non-monotone amplitude keeps the first
    switch of the scan.
    """
    from solvers.ensemble import solve_ensemble
    if not is_antipodal_pair(spec):
        raise ValueError("spec: the separatrix estimator needs K = M = 2, mu_2 = -mu_1, "
                         "equal target weights, equal component weights and zero centres")
    model = _model(spec)
    eps = np.asarray(eps, dtype=float)
    if eps.ndim != 1 or eps.size == 0 or np.any(eps <= 0) or not np.all(np.isfinite(eps)):
        raise ValueError("eps: must be a non-empty 1-D array of positive amplitudes")
    q0 = spec.init.sigma_init ** 2
    t_end = float(t_end or default_ode_t_end(spec))
    T = spec.target.T
    e_s = np.array([1.0, 1.0]) / math.sqrt(2)
    e_a = np.array([1.0, -1.0]) / math.sqrt(2)
    event = _converged_event(spec, 1e-8)

    def collapsed_at(eps_v: np.ndarray, theta_v: np.ndarray) -> np.ndarray:
        u = eps_v[:, None] * (np.cos(theta_v)[:, None] * e_s + np.sin(theta_v)[:, None] * e_a)
        Y0 = _antipodal_state(spec, model, u, q0)
        res = solve_ensemble(spec, model, Y0, t_end, rtol=rtol, atol=atol,
                             event=event, progress=False)
        return classify(res.Q_final, res.R_final, T, res.w_final)[0]

    angles = np.linspace(0.0, 0.5 * math.pi, n_coarse + 1)
    E = eps.size
    grid = collapsed_at(np.repeat(eps, angles.size), np.tile(angles, E)).reshape(E, angles.size)
    monotone = np.ones(E, dtype=bool)
    lo = np.zeros(E)
    hi = np.full(E, 0.5 * math.pi)
    for i in range(E):
        row = grid[i]
        switches = np.nonzero(row[:-1] != row[1:])[0]
        monotone[i] = row[0] and not row[-1] and switches.size == 1
        if not row[0]:
            lo[i] = hi[i] = 0.0           # never collapses, even along e_s
        elif row[-1]:
            lo[i] = hi[i] = 0.5 * math.pi  # collapses even along e_a
        else:
            j = switches[0]
            lo[i], hi[i] = angles[j], angles[j + 1]
    active = hi - lo > tol
    while np.any(active):
        idx = np.nonzero(active)[0]
        mid = 0.5 * (lo[idx] + hi[idx])
        c = collapsed_at(eps[idx], mid)
        lo[idx] = np.where(c, mid, lo[idx])
        hi[idx] = np.where(c, hi[idx], mid)
        active = hi - lo > tol
    return 0.5 * (lo + hi), monotone


def _rayleigh_average(eps0: float, log_eps: np.ndarray, theta_c: np.ndarray) -> float:
    """``E_{chi ~ Rayleigh}[2 theta_c(eps0 chi)/pi]`` by composite Simpson on chi in [0, 9]."""
    from scipy.integrate import simpson
    from scipy.interpolate import PchipInterpolator
    f = PchipInterpolator(log_eps, theta_c, extrapolate=False)
    chi = np.linspace(0.0, 9.0, 4001)
    le = np.log(np.maximum(eps0 * chi, 1e-300))
    th = f(np.clip(le, log_eps[0], log_eps[-1]))
    dens = chi * np.exp(-0.5 * chi ** 2)
    return float(simpson(2.0 * th / math.pi * dens, x=chi))


def separatrix_vs_d(spec: ProblemSpec, ds: Sequence[float], *, n_eps_per_decade: int = 12,
                    chi_min: float = 0.02, chi_max: float = 9.0, tol: float = 1e-4,
                    t_end: Optional[float] = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Separatrix estimate for many dimensions from ONE table of critical angles.

    theta_c(eps) does not depend on d; only ``eps0 = sigma_init sqrt(A/d)`` does.  The eps
    grid (log-spaced, ``n_eps_per_decade``) covers ``eps0(d) [chi_min, chi_max]`` for every d.
    Returns (p (len(ds),), error bound (len(ds),), table with eps, theta_c, monotone).
    """
    ds = np.asarray(ds, dtype=float)
    if ds.ndim != 1 or ds.size == 0 or np.any(ds < 1):
        raise ValueError("ds: must be a non-empty 1-D array of dimensions >= 1")
    A = spec.target.T[0, 0]
    eps0 = spec.init.sigma_init * np.sqrt(A / ds)
    lo, hi = eps0.min() * chi_min, eps0.max() * chi_max
    n_eps = max(9, int(math.ceil(n_eps_per_decade * math.log10(hi / lo))) + 1)
    eps = np.geomspace(lo, hi, n_eps)
    theta_c, monotone = critical_angles(spec, eps, t_end=t_end, tol=tol)
    log_eps = np.log(eps)
    p = np.array([_rayleigh_average(e, log_eps, theta_c) for e in eps0])
    p_half = np.array([_rayleigh_average(e, log_eps[::2], theta_c[::2]) for e in eps0])
    err = np.abs(p - p_half) + 2.0 * tol / math.pi
    return p, err, {"eps": eps, "theta_c": theta_c, "monotone": monotone}


def _separatrix(spec: ProblemSpec, d: int, opts: dict) -> CollapseResult:
    n_eps = int(opts.get("n_eps_per_decade", 12))
    chi_min, chi_max = float(opts.get("chi_min", 0.02)), float(opts.get("chi_max", 9.0))
    tol = float(opts.get("tol", 1e-4))
    p_arr, err_arr, table = separatrix_vs_d(spec, [d], n_eps_per_decade=n_eps, chi_min=chi_min,
                                            chi_max=chi_max, tol=tol, t_end=opts.get("t_end"))
    p, err = float(p_arr[0]), float(err_arr[0])
    eps, theta_c, monotone = table["eps"], table["theta_c"], table["monotone"]
    eps0 = spec.init.sigma_init * math.sqrt(spec.target.T[0, 0] / d)
    notes = ["large-d formula: Q(0) fluctuations of order d^-1/2 are neglected",
             "ci is a numerical error bound (bisection + interpolation), not a sampling interval"]
    if not monotone.all():
        notes.append(f"outcome not monotone in |theta| at {int((~monotone).sum())} of "
                     f"{monotone.size} amplitudes: first switch used")
    return CollapseResult(
        "separatrix", p, (max(0.0, p - err), min(1.0, p + err)), None, None, d, spec.to_dict(),
        options={"n_eps_per_decade": n_eps, "chi_min": chi_min, "chi_max": chi_max, "tol": tol},
        details={"eps0": eps0, "eps": eps.tolist(), "theta_c": theta_c.tolist(),
                 "monotone": bool(monotone.all()), "error_bound": err},
        notes=tuple(notes))


def _linear(spec: ProblemSpec, d: int, draws: int, seed: Optional[int],
            opts: dict) -> CollapseResult:
    from solvers.ensemble import pack_state, solve, state_layout

    model = _model(spec)
    M, K = spec.family.M, spec.target.K
    lay = state_layout(model)
    q0 = spec.init.sigma_init ** 2
    alpha0 = np.zeros(M) if spec.family.train_weights else None
    y_s0 = pack_state(model, q0 * np.eye(M), np.zeros((M, K)), alpha0)
    t_end = float(opts.get("t_end") or default_ode_t_end(spec))
    n_t = int(opts.get("n_times", 801))
    dt = t_end / (n_t - 1)
    r_idx = np.asarray(lay.r_index).reshape(M, K)
    T = spec.target.T
    # covariance of the initial overlaps R(0) for zero centres: (sigma^2/d) I_M (x) T
    C0 = np.kron(np.eye(M), T) * spec.init.sigma_init ** 2 / d
    sat = 0.5 * float(np.max(np.diag(T)))
    # The propagator grows exponentially and is only needed up to saturation: integrate over
    # doubling horizons until the RMS linearised overlap reaches `sat` (or t_end), instead of
    # following G to ~1e20 at t_end, which costs 10^5 steps for nothing.
    horizon = min(t_end, 4.0)
    while True:
        n_h = max(2, int(round(horizon / dt)) + 1)
        traj = solve(spec, model, y_s0, horizon, np.linspace(0.0, horizon, n_h), tangent=True,
                     rtol=1e-10, atol=1e-12)
        if np.max(np.abs(traj.R)) > 1e-9:
            raise ValueError("spec: the linear estimator needs a target for which R = 0 is an "
                             "invariant manifold (a symmetric target); R left zero by "
                             f"{np.max(np.abs(traj.R)):.2e}")
        G_RR = traj.G[:, r_idx.ravel()][:, :, r_idx.ravel()]           # (n_h, MK, MK)
        cov_t = G_RR @ C0 @ np.swapaxes(G_RR, 1, 2)                   # (n_h, MK, MK)
        rms = np.sqrt(np.trace(cov_t, axis1=1, axis2=2) / (M * K))
        hit = np.nonzero(rms >= sat)[0]
        if hit.size or horizon >= t_end:
            break
        horizon = min(t_end, 2.0 * horizon)
    i_star = int(hit[0]) if hit.size else traj.t.size - 1
    t_star = float(traj.t[i_star])
    notes = ["linearisation around the symmetric trajectory R = 0, mapped to the saturation "
             "time t* (RMS linearised overlap = T_11/2); approximation: the nonlinear basin "
             "boundary is replaced by the linear map of the axes, which over-predicts collapse "
             "when the collapsing direction grows fastest"]
    if not hit.size:
        notes.append("the linearised overlaps never reached saturation: t* = t_end")
    Qs = traj.Q[i_star]
    orthant = opts.get("orthant", "auto")
    if orthant not in ("auto", "closed", "sampled"):
        raise ValueError(f"orthant: must be 'auto', 'closed' or 'sampled', got {orthant!r}")
    if orthant == "closed" and not is_antipodal_pair(spec):
        raise ValueError("orthant: the closed form needs the antipodal two-component problem")
    if orthant != "sampled" and is_antipodal_pair(spec):
        # R_k2 = -R_k1: the pair (R_11, R_21)(t*) is Gaussian; collapse iff equal signs.
        Ssub = cov_t[i_star][np.ix_([0, K], [0, K])]
        rho = float(Ssub[0, 1] / math.sqrt(Ssub[0, 0] * Ssub[1, 1]))
        p = 0.5 + math.asin(max(-1.0, min(1.0, rho))) / math.pi
        return CollapseResult(
            "linear", p, (p, p), None, None, d, spec.to_dict(),
            options={"t_end": t_end, "n_times": n_t},
            details={"t_star": t_star, "rho": rho, "orthant": "closed form"},
            notes=tuple(notes))
    rng = np.random.default_rng(seed)
    # the covariance is singular whenever T is (rank(T) < K): factor it by eigh
    lam, V = np.linalg.eigh(cov_t[i_star])
    L = V * np.sqrt(np.clip(lam, 0.0, None))
    z = rng.standard_normal((draws, M * K)) @ L.T
    R = z.reshape(draws, M, K)
    collapsed, mech = classify(np.broadcast_to(Qs, (draws, M, M)), R, T)
    prop = proportion(int(collapsed.sum()), draws)
    return CollapseResult(
        "linear", prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
        options={"t_end": t_end, "n_times": n_t, "seed": seed},
        outcomes=collapsed, mechanisms=mech,
        details={"t_star": t_star, "orthant": "sampled"}, notes=tuple(notes))


def _montecarlo(spec: ProblemSpec, d: int, draws: int, seed: Optional[int],
                executor: Optional[Executor], opts: dict) -> CollapseResult:
    from .montecarlo import MonteCarloConfig, simulate
    keys = ("eta", "n", "estimator", "optimizer", "t_end", "weight_threshold")
    cfg_kw = {k: opts[k] for k in keys if opts.get(k) is not None}
    chunk = int(opts.get("chunk", draws if executor is None else max(1, math.ceil(draws / 8))))
    offsets = list(range(0, draws, chunk))
    if seed is None:                    # fresh entropy, recorded in the options
        seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    configs = [MonteCarloConfig(d=d, seeds=min(chunk, draws - o), seed=seed, run_offset=o,
                                **cfg_kw) for o in offsets]
    progress = bool(opts.get("progress", False))
    if executor is None:
        results = [simulate(spec, c, progress=progress) for c in configs]
    else:
        futures = [executor.submit(simulate, spec, c, progress=False) for c in configs]
        results = [f.result() for f in futures]
    collapsed = np.concatenate([r.collapsed for r in results])
    mech = np.concatenate([r.mechanism for r in results])
    prop = proportion(int(collapsed.sum()), int(collapsed.size))
    return CollapseResult(
        "montecarlo", prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
        options={**configs[0].to_dict(), "seeds": draws, "run_offset": 0},
        outcomes=collapsed, mechanisms=mech,
        details={"t_end": float(results[0].t_end)},
        notes=("SGD with finite step and samples: its noise adds overlap beyond the "
               "gradient flow",))


def collapse_probability(spec: ProblemSpec, d: int, method: str = "ode", draws: int = 1000,
                         seed: Optional[int] = None, executor: Optional[Executor] = None,
                         **options: Any) -> CollapseResult:
    """Probability of mode collapse over the random initialisation in dimension d.

    Parameters
    ----------
    spec : the problem (schedule, path, initialisation law included).
    d : dimension (>= 1).
    method : ``"ode"``, ``"separatrix"``, ``"linear"`` or ``"montecarlo"`` (module docstring).
    draws : number of draws for the sampling estimators (ignored by ``separatrix`` and by the
        closed-form ``linear``).
    seed : root seed (None: fresh entropy).
    executor : optional ``concurrent.futures.Executor`` for the draws (``ode``, ``montecarlo``).
    options : estimator settings, e.g. ``t_end``, ``rtol``, ``weight_threshold``,
        ``progress`` (ode); ``n_eps``, ``tol`` (separatrix); ``eta``, ``n``, ``estimator``,
        ``optimizer`` (montecarlo).
    """
    spec = require_spec(spec)
    d = _check_d(d)
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws: must be an integer >= 1, got {draws!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed: must be a non-negative integer or None, got {seed!r}")
    if executor is not None and not isinstance(executor, Executor) \
            and not hasattr(executor, "submit"):
        raise ValueError("executor: must be a concurrent.futures.Executor (or have .submit)")
    start = time.perf_counter()
    if method == "ode":
        res = _ode(spec, d, int(draws), seed, executor, options)
    elif method == "separatrix":
        res = _separatrix(spec, d, options)
    elif method == "linear":
        res = _linear(spec, d, int(draws), seed, options)
    else:
        res = _montecarlo(spec, d, int(draws), seed, executor, options)
    return CollapseResult(**{**res.__dict__, "wall_time": time.perf_counter() - start})


__all__ += ["MECHANISM_NAMES"]
