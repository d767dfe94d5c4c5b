r"""``separatrix``: the sharp large-d formula (DESIGN.md section 3, estimator 3).

Two components on a symmetric antipodal target (``mu_2 = -mu_1``, equal target and component
weights, zero centres).  For large d, ``Q(0) -> sigma_init^2 I`` and only the initial overlaps
``u = (R_11, R_21)(0)`` matter, an isotropic Gaussian of scale ``eps0 = sigma_init sqrt(A / d)``.
Write ``u = eps (cos theta e_s + sin theta e_a)``, ``e_s = (1, 1)/sqrt 2`` (both components
towards mode 1), ``e_a = (1, -1)/sqrt 2``.  If the flow collapses exactly when
``|theta| < theta_c(eps)`` (mod pi), then

    P = E_{chi ~ Rayleigh}[ 2 theta_c(eps0 chi) / pi ].

``theta_c`` is found by bisection in theta with the compiled integrator on a log-spaced grid of
eps (all grid points advance together as one ensemble), interpolated (PCHIP in log eps) and
integrated against the Rayleigh density by composite Simpson quadrature.

The formula's assumption -- at each amplitude the outcome is collapse on one interval of angles
around e_s and split outside it -- is checked on a coarse scan of ``n_coarse + 1`` angles at
every amplitude; where it fails (e.g. component and target variances far apart) the estimator
refuses with a ValueError instead of returning a number: use ``ode``.

Neglected: the O(d^-1/2) fluctuations of Q(0) around ``sigma_init^2 I``
(Var Q_kk = 2 sigma^4/d, Var Q_12 = sigma^4/d) and of R_k2 + R_k1 (zero here by antipodality).
Uncertainty: a numerical error bound (bisection width plus the change under halving the eps
grid), not a sampling interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from derivations.spec import ProblemSpec

from ..classify import classify
from .base import CollapseEstimator, CollapseResult, Cost, EstimatorOptions, register_estimator
from .common import compiled_model, default_ode_t_end, is_antipodal_pair, stationary_event

__all__ = ["SeparatrixEstimator", "SeparatrixOptions", "critical_angles", "separatrix_vs_d",
           "check_separatrix_spec", "bracket_critical_angles", "polar_overlaps"]


def check_separatrix_spec(spec: ProblemSpec) -> None:
    """ValueError naming ``spec`` unless the problem is the separatrix setting: the antipodal
    two-component problem with fixed equal weights (trainable weights add the logit to the
    state, which the polar reduction in (R_11, R_21) does not cover)."""
    if not is_antipodal_pair(spec):
        raise ValueError("spec: the separatrix estimator needs K = M = 2, mu_2 = -mu_1, "
                         "equal target weights, equal component weights and zero centres "
                         "(use method='ode')")
    if spec.family.train_weights:
        raise ValueError("spec: the separatrix estimator covers fixed component weights only "
                         "(with trainable weights the state has logits besides (R_11, R_21); "
                         "use method='ode')")


def _antipodal_state(spec: ProblemSpec, model, u: np.ndarray, q0: float) -> np.ndarray:
    """States with Q = q0 I and R_k1 = u_k, R_k2 = -u_k; u (N, 2)."""
    from solvers.ensemble import pack_state
    N = u.shape[0]
    Q = np.broadcast_to(q0 * np.eye(2), (N, 2, 2)).copy()
    R = np.stack([u, -u], axis=-1)
    alpha = np.zeros((N, 2)) if spec.family.train_weights else None
    return pack_state(model, Q, R, alpha)


def critical_angles(spec: ProblemSpec, eps: Sequence[float], *, t_end: float | None = None,
                    n_coarse: int = 24, tol: float = 1e-4, rtol: float = 1e-9,
                    atol: float = 1e-12, rel_tol: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Critical angle ``theta_c(eps)`` of the antipodal two-component problem.

    For each amplitude eps (array (E,)), the outcome from ``Q = sigma_init^2 I``,
    ``u = eps (cos theta e_s + sin theta e_a)`` is collapse for ``theta < theta_c`` and split
    for ``theta_c < theta <= pi/2`` (theta in [0, pi/2]; the other quadrants follow by the
    symmetries u -> -u and component exchange).  A coarse scan of ``n_coarse + 1`` angles
    locates the switch and checks that assumption; bisection then narrows it to ``tol``, or
    to ``rel_tol`` times its upper end if that is smaller (theta_c ~ eps^(kappa-1) falls below
    any fixed ``tol`` at large d).

    Returns (theta_c (E,), monotone (E,) bool).  ``monotone[i]`` is False where the scan at
    amplitude i is not of the form collapse...collapse split...split (including all-collapse
    and all-split rows, which are monotone with theta_c = pi/2 and 0); such an amplitude keeps
    the first switch of the scan.
    """
    theta, monotone, _ = _critical_angles(spec, eps, t_end, n_coarse, tol, rtol, atol, rel_tol)
    return theta, monotone


def _critical_angles(spec: ProblemSpec, eps: Sequence[float], t_end: float | None,
                     n_coarse: int, tol: float, rtol: float, atol: float,
                     rel_tol: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`critical_angles` and the final bracket widths hi - lo (E,)."""
    from solvers.ensemble import solve_ensemble
    check_separatrix_spec(spec)
    model = compiled_model(spec)
    eps = np.asarray(eps, dtype=float)
    if eps.ndim != 1 or eps.size == 0 or np.any(eps <= 0) or not np.all(np.isfinite(eps)):
        raise ValueError("eps: must be a non-empty 1-D array of positive amplitudes")
    q0 = spec.init.sigma_init ** 2
    t_end = float(t_end or default_ode_t_end(spec))
    T = spec.target.T
    event = stationary_event(spec, 1e-8)

    def collapsed_at(eps_v: np.ndarray, theta_v: np.ndarray) -> np.ndarray:
        Y0 = _antipodal_state(spec, model, polar_overlaps(eps_v, theta_v), q0)
        res = solve_ensemble(spec, model, Y0, t_end, rtol=rtol, atol=atol,
                             event=event, progress=False)
        return classify(res.Q_final, res.R_final, T, res.w_final)[0]

    return bracket_critical_angles(collapsed_at, eps, n_coarse, tol, rel_tol)


def polar_overlaps(eps: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``u = eps (cos theta e_s + sin theta e_a)`` (N, 2), e_s = (1, 1)/sqrt 2 (both components
    towards mode 1), e_a = (1, -1)/sqrt 2; eps, theta (N,)."""
    e_s = np.array([1.0, 1.0]) / math.sqrt(2)
    e_a = np.array([1.0, -1.0]) / math.sqrt(2)
    return eps[:, None] * (np.cos(theta)[:, None] * e_s + np.sin(theta)[:, None] * e_a)


def bracket_critical_angles(collapsed_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
                            eps: np.ndarray, n_coarse: int, tol: float,
                            rel_tol: float | None
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan and bisection of the critical angle for any flow: ``collapsed_at(eps_v, theta_v)``
    (N,) -> (N,) bool outcomes from the overlaps :func:`polar_overlaps`.

    A coarse scan of ``n_coarse + 1`` angles in [0, pi/2] at every amplitude (E,) locates the
    switch collapse -> split and checks that there is one; bisection then narrows it to
    ``tol`` (or ``rel_tol`` times its upper end if smaller; never below the spacing of doubles).
    Returns (theta_c (E,), monotone (E,) bool, final bracket widths (E,)).
    """
    angles = np.linspace(0.0, 0.5 * math.pi, n_coarse + 1)
    E = eps.size
    grid = collapsed_at(np.repeat(eps, angles.size), np.tile(angles, E)).reshape(E, angles.size)
    monotone = np.ones(E, dtype=bool)
    lo = np.zeros(E)
    hi = np.full(E, 0.5 * math.pi)
    for i in range(E):
        row = grid[i]
        switches = np.nonzero(row[:-1] != row[1:])[0]
        monotone[i] = switches.size == 0 or (switches.size == 1 and bool(row[0]))
        if not row[0]:
            lo[i] = hi[i] = 0.0           # does not collapse even along e_s
        elif switches.size == 0:
            lo[i] = hi[i] = 0.5 * math.pi  # collapses at every angle
        else:
            j = switches[0]
            lo[i], hi[i] = angles[j], angles[j + 1]

    def wide() -> np.ndarray:
        limit = tol if rel_tol is None else np.minimum(tol, rel_tol * hi)
        return hi - lo > np.maximum(limit, 4.0 * np.spacing(hi))

    active = wide()
    while np.any(active):
        idx = np.nonzero(active)[0]
        mid = 0.5 * (lo[idx] + hi[idx])
        c = collapsed_at(eps[idx], mid)
        lo[idx] = np.where(c, mid, lo[idx])
        hi[idx] = np.where(c, hi[idx], mid)
        active = wide()
    return 0.5 * (lo + hi), monotone, hi - lo


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
                    t_end: float | None = None, n_coarse: int = 24,
                    rel_tol: float | None = 1e-3) -> tuple[np.ndarray, np.ndarray, dict]:
    """Separatrix estimate for many dimensions from ONE table of critical angles.

    theta_c(eps) does not depend on d; only ``eps0 = sigma_init sqrt(A/d)`` does.  The eps
    grid (log-spaced, ``n_eps_per_decade``) covers ``eps0(d) [chi_min, chi_max]`` for every d,
    but stops at the largest realisable amplitude ``eps_max = sigma_init sqrt(A)``: with
    ``Q = sigma_init^2 I`` and ``R_k1 = u_k`` the joint Gram matrix is PSD iff
    ``|u|^2 <= sigma_init^2 A``, i.e. ``chi <= sqrt(d)``.  Beyond the table's last amplitude
    theta_c is held at its last value; since ``0 <= 2 theta_c / pi <= 1`` this changes p by at
    most the Rayleigh mass beyond it, ``exp(-chi_edge^2 / 2)``, which the error bound includes
    (negligible for d >= chi_max^2 = 81; the large-d formula is meant for d >> 1 anyway).
    The bisection stops at width ``min(tol, rel_tol theta_c)`` (:func:`critical_angles`); its
    share of the error bound is the Rayleigh average of ``width / pi`` (theta_c is the midpoint
    of its bracket), so the bound stays relative where p is small (large d).
    Returns (p (len(ds),), error bound (len(ds),), table with eps, theta_c, monotone, width).
    """
    ds = np.asarray(ds, dtype=float)
    if ds.ndim != 1 or ds.size == 0 or np.any(ds < 1) or not np.all(np.isfinite(ds)):
        raise ValueError("ds: must be a non-empty 1-D array of finite dimensions >= 1")
    A = spec.target.T[0, 0]
    eps0 = spec.init.sigma_init * np.sqrt(A / ds)
    eps_max = spec.init.sigma_init * math.sqrt(A) * (1.0 - 1e-9)   # |u| realisable
    lo, hi = eps0.min() * chi_min, min(eps0.max() * chi_max, eps_max)
    if not lo < hi:
        raise ValueError(f"ds: d = {ds.max():g} leaves no realisable amplitude above "
                         f"chi_min eps0 (chi_min = {chi_min:g} > sqrt(d))")
    n_eps = max(9, int(math.ceil(n_eps_per_decade * math.log10(hi / lo))) + 1)
    eps = np.geomspace(lo, hi, n_eps)
    theta_c, monotone, width = _critical_angles(spec, eps, t_end, n_coarse, tol, 1e-9, 1e-12,
                                                rel_tol)
    log_eps = np.log(eps)
    p = np.array([_rayleigh_average(e, log_eps, theta_c) for e in eps0])
    p_half = np.array([_rayleigh_average(e, log_eps[::2], theta_c[::2]) for e in eps0])
    bisection = np.array([_rayleigh_average(e, log_eps, 0.5 * width) for e in eps0])
    tail = np.exp(-0.5 * np.minimum(hi / eps0, chi_max) ** 2)   # Rayleigh mass past the table
    err = np.abs(p - p_half) + bisection + tail
    return p, err, {"eps": eps, "theta_c": theta_c, "monotone": monotone, "width": width}


@dataclass(frozen=True)
class SeparatrixOptions(EstimatorOptions):
    n_eps_per_decade: int = field(default=12, metadata={
        "help": "amplitudes per decade of the critical-angle table"})
    chi_min: float = field(default=0.02, metadata={
        "help": "smallest Rayleigh amplitude tabulated (units of eps0)"})
    chi_max: float = field(default=9.0, metadata={
        "help": "largest Rayleigh amplitude tabulated (units of eps0)"})
    tol: float = field(default=1e-4, metadata={"help": "bisection width in the angle"})
    rel_tol: float = field(default=1e-3, metadata={
        "help": "bisection width relative to the critical angle, if smaller than tol"})
    n_coarse: int = field(default=24, metadata={
        "help": "angles of the coarse scan that checks the one-switch assumption"})
    t_end: float | None = field(default=None, metadata={
        "help": "final time (default: schedule settled + 25 relaxation times)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_eps_per_decade < 2:
            raise ValueError(f"n_eps_per_decade: must be >= 2, got {self.n_eps_per_decade}")
        if not 0 < self.chi_min < self.chi_max:
            raise ValueError(f"chi_min: must satisfy 0 < chi_min < chi_max, got "
                             f"{self.chi_min}, {self.chi_max}")
        if not 0 < self.tol < 0.1:
            raise ValueError(f"tol: must lie in (0, 0.1), got {self.tol}")
        if not 0 < self.rel_tol < 0.5:
            raise ValueError(f"rel_tol: must lie in (0, 0.5), got {self.rel_tol}")
        if self.n_coarse < 2:
            raise ValueError(f"n_coarse: must be >= 2, got {self.n_coarse}")
        if self.t_end is not None and self.t_end <= 0:
            raise ValueError(f"t_end: must be > 0, got {self.t_end}")


@register_estimator
class SeparatrixEstimator(CollapseEstimator):
    name = "separatrix"
    summary = "sharp large-d formula: critical angle by bisection, Rayleigh average"
    Options = SeparatrixOptions
    uses_draws = False

    def check(self, spec: ProblemSpec, d: int, options: SeparatrixOptions) -> None:
        super().check(spec, d, options)
        check_separatrix_spec(spec)

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: SeparatrixOptions) -> Cost:
        decades = math.log10(options.chi_max / options.chi_min)
        n_eps = max(9, math.ceil(options.n_eps_per_decade * decades) + 1)
        n_traj = n_eps * (options.n_coarse + 1
                          + math.ceil(math.log2(0.08 / (options.tol * options.rel_tol))))
        return Cost(8.0 * n_traj * 64, 2e-3 * n_traj, f"{n_traj} trajectories")

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: SeparatrixOptions) -> CollapseResult:
        p_arr, err_arr, table = separatrix_vs_d(
            spec, [d], n_eps_per_decade=options.n_eps_per_decade, chi_min=options.chi_min,
            chi_max=options.chi_max, tol=options.tol, t_end=options.t_end,
            n_coarse=options.n_coarse, rel_tol=options.rel_tol)
        eps, theta_c, monotone = table["eps"], table["theta_c"], table["monotone"]
        if not monotone.all():
            bad = eps[~monotone]
            raise ValueError(
                f"spec: the separatrix formula does not apply: the outcome is not a single "
                f"interval of angles at {int((~monotone).sum())} of {monotone.size} amplitudes "
                f"(eps from {bad.min():.3g} to {bad.max():.3g}); use method='ode'")
        p, err = float(p_arr[0]), float(err_arr[0])
        eps0 = spec.init.sigma_init * math.sqrt(spec.target.T[0, 0] / d)
        notes = ["large-d formula: Q(0) fluctuations of order d^-1/2 are neglected",
                 *(["d < chi_max^2: the amplitudes stop at the realisable |u| = sigma_init "
                    "sqrt(A) (chi = sqrt(d)); the Rayleigh mass beyond is in the error bound"]
                   if d < options.chi_max ** 2 else []),
                 "ci is a numerical error bound (bisection + interpolation), not a sampling "
                 "interval"]
        return CollapseResult(
            self.name, p, (max(0.0, p - err), min(1.0, p + err)), None, None, d,
            spec.to_dict(), options=options.to_dict(),
            details={"eps0": eps0, "eps": eps.tolist(), "theta_c": theta_c.tolist(),
                     "monotone": True, "error_bound": err},
            notes=tuple(notes))
