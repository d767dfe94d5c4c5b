r"""The large-d law of mode collapse in closed form (DESIGN.md section 8; issue 11 section 1).

Setting: two components with fixed equal weights on the antipodal target (``mu_2 = -mu_1``,
``|mu_1|^2 = A``; :func:`derivations.spec.symmetric_bimodal`), initial overlaps
``u = (R_11, R_21)(0)`` isotropic Gaussian of scale ``eps0 = sigma_init sqrt(A/d)``.

Derivation
----------
1. *Linear phase.*  R = 0 is invariant and, by the component-exchange symmetry, so are the
   lines ``u_a = 0`` and ``u_s = 0`` of the linearised overlap flow along the symmetric
   trajectory ``y_sym(t)`` (R = 0, ``Q(0) = sigma_init^2 I``): ``u_s(t) = g_s(t) u_s(0)``,
   ``u_a(t) = g_a(t) u_a(0)`` with

       ln g_x(t) = int_0^t e_x . J_RR(y_sym(t'), beta(t')) e_x dt',     x in {s, a},

   exactly to first order in u for every Q(t) (:func:`growth_exponents`).  At Q* the rates
   are ``lambda_x = e_x . J_RR(Q*) e_x`` (:func:`symmetric_rates`); the entropy's repulsion
   enters lambda_a only, so lambda_s < lambda_a.
2. *Separatrix.*  The invariant curves of the linear flow at Q* are ``u_a = c' u_s^kappa``,
   ``kappa = lambda_a/lambda_s``; the basin boundary of the nonlinear flow is one of them, so
   collapse iff ``u_a(T) < c* u_s(T)^kappa`` at any late time T of the linear phase, i.e.
   ``theta_c(eps) = c* eps^(kappa-1) [g_s^kappa / g_a](T_esc)`` with T_esc the escape time.
3. *The Q transient.*  If Q* is hyperbolic, ``g_s^kappa/g_a -> const`` and the transient only
   changes C (the law of the issue, ``p = 0``).  **For the preset it is not**: at
   ``beta Delta = s`` (here beta = 1, Delta = s = 1) the perpendicular splitting of the two
   components is neutral to second order (F_perp = v^4/4 + ...), Q relaxes to Q* = 0 only
   algebraically, ``q(t) = Q_11 ~ 1/(b t)``, and ``lambda_a(q) = lambda_a - a_a q + O(q^2)``
   (``lambda_s`` does not depend on q: ``a_s = 0`` numerically), so
   ``[g_s^kappa/g_a](T) ~ T^p`` with ``p = (a_a - kappa a_s)/b`` and

       theta_c(eps) = c eps^(kappa - 1) L(eps)^p,   L(eps) = ln(1/eps)/lambda_s + t_1,

   ``t_1`` an O(1) offset of the escape time (transient and nonlinear exit), measured.
4. *Rayleigh average* (:mod:`derivations.asymptotics` for the closed forms):

       P(d) = C d^(-alpha) L_eff(d)^p (1 + O(L^-2)),    alpha = (kappa - 1)/2,
       C = (2c/pi) 2^((kappa-1)/2) Gamma((kappa+1)/2) (sigma_init^2 A)^alpha,
       L_eff(d) = [ln(d/(sigma_init^2 A)) - ln 2 - psi((kappa+1)/2)]/(2 lambda_s) + t_1.

   The exponent alpha is exact; the log factor makes the local slope approach -alpha only as
   ``-alpha + p/(2 lambda_s L_eff(d))`` (an O(1/ln d) correction), which is why a pure power
   law fitted at moderate d (0.549 d^-0.340 at A = 9, d = 1e2..1e6) has a smaller exponent
   than alpha = 0.3865.
5. *Annealing.*  The escape happens when ``ln g_s(T_e) = lambda_s L_eff(d)``; comparing the
   schedule (S) with constant beta (0) at their escape times, the linear race multiplies the
   constant-schedule law by ``exp(Y_S(T_e^S) - Y_0(T_e^0))``, ``Y = kappa ln g_s - ln g_a``
   (:func:`schedule_factor`, ``ratio_table``).  Once the schedule has settled before the
   escape this tends to ``F ((L_eff + Delta_S)/L_eff)^p`` with

       F = lim_T [g_s^kappa/g_a]_S(T) / [g_s^kappa/g_a]_0(T),  C = F C_0,
       Delta_S = -lim_T ln(g_s^S/g_s^0)(T) / lambda_s    (= tau ln T0, exponential, tempering),

   and the exponent alpha is that of beta = 1.  F converges as O(1/T) in the degenerate case
   (both q's ~ 1/(b t)) and is Richardson-extrapolated.  Finding: on the tempering path both
   rates at Q*(beta) scale as beta (kappa(beta) = kappa to 1e-9), so F = 1 up to the transient
   (F = 0.986 for T0 = 20, tau = 100): a schedule of fixed duration has *no* asymptotic
   benefit; it only delays the escape (which even raises P by ``((L + Delta_S)/L)^p``).
   Validity: the escape must come after the schedule settled (beta within 1e-3 of 1),
   ``L_eff(d) + Delta_S > t_settle``, i.e. ``d > d_settled ~ sigma_init^2 A
   exp(2 lambda_s (t_settle - Delta_S - t_1))`` (10^385 for T0 = 20, tau = 100 at A = 9).  For
   smaller d the escape happens during annealing at beta* < 1, where the nonlinear exit (the
   collapsed state is weak or absent at high temperature) gives the benefit.  To keep it as d
   grows, the annealing time must grow like the escape time: for the exponential schedule with
   tempering (``lambda_s(beta) = beta lambda_s``) the escape is at the stage ``x* = t/tau``
   with ``lambda_s tau B(x*) = ln(1/eps0)``, ``B(x) = ln((e^x + T0 - 1)/T0)``, so

       tau(d) = ln(d/(sigma_init^2 A)) / (2 lambda_s B(x*))      (tau ~ ln d / (2 lambda_s B)).

Numerics: rates and the neutral coefficients from the compiled Jacobian/rhs; ``c, t_1`` from a
least-squares fit of ``ln theta_c = ln c + (kappa-1) ln eps + p ln L`` to the nonlinear
critical angles (:func:`analysis.estimators.separatrix.critical_angles`) at small eps, where
the angle is resolved relatively (bisection width ``rel_tol`` times the smallest angle); the
floor of double precision (u_a/u_s below ~1e-16 e^{(lambda_a - lambda_s) T}) limits the table to
eps >~ 1e-8.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from derivations.spec import ConstantSchedule, ExponentialSchedule, ProblemSpec, require_spec

from .estimators.common import compiled_model, default_ode_t_end
from .estimators.separatrix import check_separatrix_spec, critical_angles, separatrix_vs_d

__all__ = ["LargeDLaw", "SymmetricRates", "large_d_law", "symmetric_rates", "growth_exponents",
           "escape_time",
           "schedule_factor", "fit_separatrix_constant", "law_probability", "rayleigh_moment",
           "annealing_time_for_d"]

#: Default amplitudes of the critical-angle fit (small eps, above the rounding floor).
FIT_EPS = tuple(np.geomspace(1e-4, 1e-7, 7).tolist())


# ----------------------------------------------------------------------------------------
# rates at the symmetric state
# ----------------------------------------------------------------------------------------

def _direction_vectors(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """e_s, e_a as unit state vectors (n,): R_k1 = u_k, R_k2 = -u_k, Q untouched."""
    from solvers.layout import state_layout
    lay = state_layout(model)
    r = np.asarray(lay.r_index).reshape(2, 2)
    vs, va = np.zeros(lay.n), np.zeros(lay.n)
    for k, (s_k, a_k) in enumerate(((1.0, 1.0), (1.0, -1.0))):
        vs[r[k, 0]], vs[r[k, 1]] = 0.5 * s_k, -0.5 * s_k
        va[r[k, 0]], va[r[k, 1]] = 0.5 * a_k, -0.5 * a_k
    return vs, va


def _state(model: Any, Q: np.ndarray) -> np.ndarray:
    from solvers.layout import pack_state
    return pack_state(model, np.asarray(Q, float), np.zeros((2, 2)))


def _rates_at(model: Any, y: np.ndarray, beta: float, theta: np.ndarray,
              vs: np.ndarray, va: np.ndarray) -> tuple[float, float, float]:
    """(lambda_s, lambda_a, eigenvector residual) of J at y along e_s, e_a."""
    from solvers.model import evaluate_jacobian
    J = evaluate_jacobian(model.jac, y, beta, theta)
    ls, la = float(vs @ J @ vs), float(va @ J @ va)
    res = max(float(np.linalg.norm(J @ vs - ls * vs)), float(np.linalg.norm(J @ va - la * va)))
    return ls, la, res


@dataclass(frozen=True)
class SymmetricRates:
    """Growth rates of the overlaps at the symmetric fixed point (R = 0, Q = Q*) at beta.

    ``lambda_s, lambda_a``: rates along e_s (collapse) and e_a (split).  ``q_star``: Q*.
    ``k2 = beta/Delta + gamma/sigma0^2 - 1/s``: curvature of the objective in the
    perpendicular splitting ``m_1 = -m_2 = v`` (``F_perp = k2 v^2/2 + ...``); ``neutral`` when
    ``|k2| <= 1e-9`` (then Q -> 0 as ``q ~ 1/(b t)``).  ``a_s, a_a``: ``-d lambda_x/dq`` at
    ``Q = q [[1, -1], [-1, 1]]``, q -> 0; ``b``: ``dq/dt = -b q^2`` there; ``p`` the log
    exponent ``(a_a - kappa a_s)/b`` (0 unless neutral).  ``residual``: how far e_s, e_a are
    from eigenvectors of J at Q* (symmetry check).
    """

    beta: float
    lambda_s: float
    lambda_a: float
    q_star: tuple[tuple[float, float], tuple[float, float]]
    k2: float
    neutral: bool
    a_s: float
    a_a: float
    b: float
    p: float
    residual: float

    @property
    def kappa(self) -> float:
        return self.lambda_a / self.lambda_s


def symmetric_rates(spec: ProblemSpec, beta: float | None = None, *, h: float = 1e-4
                    ) -> SymmetricRates:
    """Rates lambda_s, lambda_a at the symmetric fixed point Q* at ``beta`` (default: the
    schedule's final beta), and the neutral-direction coefficients (see :class:`SymmetricRates`).

    Q* is 0 when ``k2 >= 0`` (the perpendicular splitting is not favoured); otherwise it is
    the end point of the R = 0 flow at constant beta from ``Q = sigma_init^2 I``.
    ``a_x`` and ``b`` are one-sided finite differences at ``q = h, 2h`` with Richardson
    extrapolation (errors O(h^2)).
    """
    spec = require_spec(spec)
    check_separatrix_spec(spec)
    from solvers.ensemble import solve
    from solvers.model import evaluate_rhs
    model = compiled_model(spec)
    theta = spec.theta()
    beta = float(spec.schedule.beta_final if beta is None else beta)
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta: must lie in (0, 1], got {beta}")
    vs, va = _direction_vectors(model)
    Delta, s = spec.target.variance, spec.family.variance
    gamma = float(spec.gamma(beta))
    k2 = beta / Delta - 1.0 / s + (gamma / spec.path.base_variance if gamma else 0.0)
    neutral = abs(k2) <= 1e-9
    if k2 >= -1e-9:
        Q_star = np.zeros((2, 2))
    else:
        sp = spec.replace(schedule=ConstantSchedule(beta))
        y0 = _state(model, spec.init.sigma_init ** 2 * np.eye(2))
        tr = solve(sp, model, y0, 200.0 / abs(k2) + 200.0, n_points=2, rtol=1e-11, atol=1e-13,
                   event="converged")
        Q_star = tr.Q_final
    y_star = _state(model, Q_star)
    ls, la, res = _rates_at(model, y_star, beta, theta, vs, va)
    a_s = a_a = b = p = 0.0
    if neutral:
        N = np.array([[1.0, -1.0], [-1.0, 1.0]])
        i11 = list(model.state_names).index("Q_1_1")
        D_s, D_a, E = [], [], []
        for q in (h, 2 * h):
            y = _state(model, q * N)
            ls_q, la_q, _ = _rates_at(model, y, beta, theta, vs, va)
            D_s.append(-(ls_q - ls) / q)
            D_a.append(-(la_q - la) / q)
            E.append(-evaluate_rhs(model.rhs, y, beta, theta)[i11] / q ** 2)
        a_s, a_a, b = (2 * v[0] - v[1] for v in (D_s, D_a, E))
        p = (a_a - (la / ls) * a_s) / b
    return SymmetricRates(beta, ls, la, tuple(map(tuple, Q_star.tolist())), float(k2),
                          bool(neutral), float(a_s), float(a_a), float(b), float(p), res)


# ----------------------------------------------------------------------------------------
# propagators along the symmetric trajectory, the schedule factor
# ----------------------------------------------------------------------------------------

def growth_exponents(spec: ProblemSpec, t_max: float, dt: float = 0.02
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(t, ln g_s(t), ln g_a(t), q(t))`` along the symmetric trajectory of ``spec``
    (R = 0, ``Q(0) = sigma_init^2 I``, the spec's schedule) on a grid of step ~dt.

    ``ln g_x(t) = int_0^t e_x . J(y_sym, beta) e_x`` (cumulative Simpson); q = Q_11.  Exact
    logarithms of the tangent propagator's e_s, e_a entries, without its overflow.
    """
    from scipy.integrate import cumulative_simpson

    from solvers.ensemble import solve
    if not (math.isfinite(t_max) and t_max > 0):
        raise ValueError(f"t_max: must be finite and > 0, got {t_max}")
    model = compiled_model(spec)
    theta = spec.theta()
    vs, va = _direction_vectors(model)
    n = max(3, int(math.ceil(t_max / dt)) + 1)
    t = np.linspace(0.0, float(t_max), n)
    tr = solve(spec, model, _state(model, spec.init.sigma_init ** 2 * np.eye(2)), t_max, t,
               rtol=1e-11, atol=1e-14)
    beta = np.asarray(spec.schedule.beta(t), float)
    from solvers.model import evaluate_jacobian
    rs, ra = np.empty(n), np.empty(n)
    for i in range(n):
        J = evaluate_jacobian(model.jac, tr.y[i], float(beta[i]), theta)
        rs[i], ra[i] = vs @ J @ vs, va @ J @ va
    ls = cumulative_simpson(rs, x=t, initial=0.0)
    la = cumulative_simpson(ra, x=t, initial=0.0)
    return t, ls, la, tr.Q[:, 0, 0].copy()


def schedule_factor(spec: ProblemSpec, kappa: float, lambda_s: float, *,
                    horizon: float | None = None, dt: float = 0.05) -> dict:
    """The annealing factor on C and the escape delay (module docstring, item 5).

    With ``Y(T) = kappa ln g_s(T) - ln g_a(T)`` along the symmetric trajectory (S: the spec's
    schedule, 0: constant final beta) and ``X(T) = Y_S(T) - Y_0(T)``: ``ln F = lim X(T)``,
    from X at ``T_1 = t_settle + H/2`` and ``T_2 = t_settle + H`` extrapolated as
    ``2 X(T_2) - X(T_1)`` for the O(1/T) tail (H the horizon, default
    ``max(2000, 4 t_settle)``, t_settle = settle_time(1e-6)); ``Delta_S = -(ln g_s^S -
    ln g_s^0)(T_2) / lambda_s`` (for tempering ``lambda_s int (1 - beta) dt / lambda_s``).

    Finite d: the escape happens when ``ln g_s(T_e) = lambda_s L_eff(d)``; the linear race
    then multiplies the constant-schedule probability by
    ``exp(Y_S(T_e^S) - Y_0(T_e^0))``, which tends to ``F ((L + Delta_S)/L)^p`` once the
    schedule has settled before T_e^S.  ``ratio_table`` = ``{"L": [...], "log_ratio": [...]}``
    tabulates it against L_eff (log-spaced, for :meth:`LargeDLaw.probability`).
    Returns ``{"log_F", "log10_F", "F", "Delta_S", "extrapolation", "t_settle",
    "ratio_table"}``; a constant schedule gives ``F = 1, Delta_S = 0`` and no table.
    """
    if isinstance(spec.schedule, ConstantSchedule):
        return {"log_F": 0.0, "log10_F": 0.0, "F": 1.0, "Delta_S": 0.0, "extrapolation": 0.0,
                "t_settle": 0.0, "ratio_table": None}
    t_settle = float(spec.schedule.settle_time(1e-6))
    if not math.isfinite(t_settle):
        raise ValueError("spec: the schedule never settles (settle_time(1e-6) is infinite): "
                         "no large-d schedule factor")
    H = float(horizon or max(2000.0, 4.0 * t_settle))
    T2 = t_settle + H
    ref = spec.replace(schedule=ConstantSchedule(spec.schedule.beta_final))
    t, ls_S, la_S, _ = growth_exponents(spec, T2, dt)
    _, ls_0, la_0, _ = growth_exponents(ref, T2, dt)
    Y_S, Y_0 = kappa * ls_S - la_S, kappa * ls_0 - la_0
    X = Y_S - Y_0
    i1 = int(np.searchsorted(t, t_settle + 0.5 * H))
    log_F = float(2.0 * X[-1] - X[i1])
    # escape at ln g_s(T_e) = lambda_s L (ln g_s increases: lambda_s(beta) > 0 checked)
    L = np.geomspace(0.5, 0.5 * float(min(ls_S[-1], ls_0[-1])) / lambda_s, 300)
    if not (np.all(np.diff(ls_S) > 0) and np.all(np.diff(ls_0) > 0)):
        raise ValueError("spec: the symmetric overlap does not grow monotonically under the "
                         "schedule (lambda_s(beta(t)) <= 0 somewhere): no escape-time map")
    Te_S = np.interp(lambda_s * L, ls_S, t)
    Te_0 = np.interp(lambda_s * L, ls_0, t)
    log_ratio = np.interp(Te_S, t, Y_S) - np.interp(Te_0, t, Y_0)
    return {"log_F": log_F, "log10_F": log_F / math.log(10.0), "F": math.exp(log_F),
            "Delta_S": float(-(ls_S[-1] - ls_0[-1]) / lambda_s),
            "extrapolation": float(X[-1] - X[i1]), "t_settle": t_settle,
            "ratio_table": {"L": L.tolist(), "log_ratio": log_ratio.tolist(),
                            "T_escape": Te_S.tolist(),
                            "beta_escape": np.asarray(spec.schedule.beta(Te_S), float).tolist()}}


# ----------------------------------------------------------------------------------------
# separatrix constant and the law
# ----------------------------------------------------------------------------------------

def rayleigh_moment(q: float) -> float:
    """``E[chi^q] = 2^(q/2) Gamma(1 + q/2)`` for chi ~ Rayleigh(1)."""
    return 2.0 ** (q / 2.0) * math.gamma(1.0 + q / 2.0)


def fit_separatrix_constant(spec: ProblemSpec, rates: SymmetricRates,
                            eps: Sequence[float] = FIT_EPS, *, rel_tol: float = 1e-4,
                            t_end: float | None = None) -> dict:
    """``c`` and ``t_1`` of ``theta_c(eps) = c eps^(kappa-1) (ln(1/eps)/lambda_s + t_1)^p``.

    Critical angles of the nonlinear flow at the amplitudes ``eps`` (bisection width
    ``rel_tol`` times a linear-law guess of the smallest angle, atol 1e-30 so that the tiny
    u_a is integrated relatively), then least squares in ``ln theta_c`` over (ln c, t_1)
    (``t_1 = 0`` and c the last value of ``theta_c eps^(1-kappa)`` if p = 0).
    Returns ``{"c", "t_1", "eps", "theta_c", "ratio", "max_residual"}`` (ratio = theta_c over
    the fitted law; residuals in ln theta_c).
    """
    from scipy.optimize import least_squares
    eps = np.asarray(eps, float)
    if eps.ndim != 1 or eps.size < 3 or np.any(eps <= 0) or np.any(eps >= 1):
        raise ValueError("eps: need at least 3 amplitudes in (0, 1)")
    k, ls, p = rates.kappa, rates.lambda_s, rates.p
    guess = 0.2 * float(eps.min()) ** (k - 1.0) * (math.log(1.0 / eps.min()) / ls) ** p
    t_end = float(t_end or default_ode_t_end(spec) + 3.0 * math.log(1.0 / eps.min()) / ls)
    th, mono = critical_angles(spec, eps, t_end=t_end, n_coarse=2, tol=rel_tol * guess,
                               atol=1e-30, rtol=1e-10)
    if not mono.all() or np.any(th <= 0):
        raise ValueError("spec: the critical angle is not a single interval at small eps; "
                         "the large-d law does not apply")
    y = np.log(th) - (k - 1.0) * np.log(eps)
    L = np.log(1.0 / eps) / ls
    if p == 0.0:
        lc, t1 = float(y[np.argmin(eps)]), 0.0
    else:
        def resid(z: np.ndarray) -> np.ndarray:
            return z[0] + p * np.log(np.maximum(L + z[1], 1e-12)) - y
        sol = least_squares(resid, x0=[float(np.mean(y - p * np.log(L))), 0.0],
                            bounds=([-np.inf, -0.9 * float(L.min())], [np.inf, np.inf]))
        lc, t1 = float(sol.x[0]), float(sol.x[1])
    fitted = lc + p * np.log(L + t1)
    return {"c": math.exp(lc), "t_1": t1, "eps": eps.tolist(), "theta_c": th.tolist(),
            "ratio": np.exp(y - fitted).tolist(),
            "max_residual": float(np.max(np.abs(y - fitted)))}


def escape_time(d: Any, *, lambda_s: float, kappa: float, t_1: float, sigma2A: float
                ) -> np.ndarray:
    """``L_eff(d) = [ln(d/(sigma_init^2 A)) - ln 2 - psi((kappa+1)/2)]/(2 lambda_s) + t_1``."""
    from scipy.special import digamma
    d = np.asarray(d, float)
    return (np.log(d / sigma2A) - math.log(2.0) - float(digamma((kappa + 1) / 2))) \
        / (2 * lambda_s) + t_1


def law_probability(d: Any, *, alpha: float, C: float, p: float, lambda_s: float,
                    kappa: float, t_1: float, sigma2A: float,
                    ratio_table: dict | None = None) -> np.ndarray:
    """Constant schedule: ``P(d) = C d^(-alpha) L_eff(d)^p`` (module docstring, item 4).

    With ``ratio_table`` (:func:`schedule_factor`; C the constant-schedule prefactor) it is
    multiplied by the linear race's schedule ratio at L_eff(d), which tends to
    ``F ((L_eff + Delta_S)/L_eff)^p`` (item 5).
    """
    d = np.asarray(d, float)
    L = escape_time(d, lambda_s=lambda_s, kappa=kappa, t_1=t_1, sigma2A=sigma2A)
    P = C * d ** (-alpha) * np.maximum(L, 1e-300) ** p
    if ratio_table is not None:
        Lt = np.asarray(ratio_table["L"], float)
        if np.any(L > Lt[-1]) or np.any(L < Lt[0]):
            raise ValueError(f"d: the escape time L_eff(d) leaves the tabulated range "
                             f"[{Lt[0]:.3g}, {Lt[-1]:.3g}] of the schedule ratio")
        P = P * np.exp(np.interp(np.log(L), np.log(Lt), ratio_table["log_ratio"]))
    return P


def annealing_time_for_d(d: Any, lambda_s: float, sigma2A: float, T0: float,
                         beta_star: float = 0.5) -> np.ndarray:
    """tau(d) keeping the escape at the stage where the exponential schedule (tempering)
    reaches ``beta_star``: ``tau = ln(d/(sigma_init^2 A)) / (2 lambda_s B(x*))``,
    ``e^x* = beta_star (T0 - 1)/(1 - beta_star)``, ``B(x) = ln((e^x + T0 - 1)/T0)``."""
    if not 0.0 < beta_star < 1.0:
        raise ValueError(f"beta_star: must lie in (0, 1), got {beta_star}")
    if not T0 > 1.0:
        raise ValueError(f"T0: must be > 1, got {T0}")
    ex = beta_star * (T0 - 1.0) / (1.0 - beta_star)
    B = math.log((ex + T0 - 1.0) / T0)
    return np.log(np.asarray(d, float) / sigma2A) / (2.0 * lambda_s * B)


@dataclass(frozen=True)
class LargeDLaw:
    """The large-d law ``P(d) = C d^(-alpha) L(d)^p`` of one problem (module docstring).

    rates: ``lambda_s, lambda_a`` at Q* (final beta); ``kappa = lambda_a/lambda_s``;
    ``alpha = (kappa - 1)/2``; ``p`` the log exponent (0 if Q* is hyperbolic) with its
    coefficients ``a_s, a_a, b``; ``c, t_1`` the separatrix constant and escape-time offset
    (constant schedule); ``C_constant`` the constant-schedule prefactor; ``schedule`` the
    annealing factor dict of :func:`schedule_factor` (F, Delta_S); ``C = F C_constant``;
    ``local_slopes``: ``{"law": {...}, "separatrix": {...}}`` d ln P/d ln d between successive
    checked dimensions; ``slope_1e8_1e10`` that of the separatrix estimate; ``check``: the
    separatrix comparison (ds, P, ratio, ``d_10pct``); ``annealing``: the validity bound
    d_settled and the tau(d) rule; ``latex``; ``notes``; ``params`` = spec.to_dict().
    """

    lambda_s: float
    lambda_a: float
    kappa: float
    alpha: float
    p: float
    a_s: float
    a_a: float
    b: float
    c: float
    t_1: float
    C_constant: float
    C: float
    schedule: dict
    local_slopes: dict
    slope_1e8_1e10: float | None
    check: dict
    fit: dict
    annealing: dict
    latex: dict
    params: dict
    notes: tuple[str, ...] = field(default=())

    def probability(self, d: Any) -> np.ndarray:
        """The law at dimension(s) d."""
        A = self.params["target"]["gram"][0][0]
        s2A = self.params["init"]["sigma_init"] ** 2 * A
        return law_probability(d, alpha=self.alpha, C=self.C_constant, p=self.p,
                               lambda_s=self.lambda_s, kappa=self.kappa, t_1=self.t_1,
                               sigma2A=s2A, ratio_table=self.schedule["ratio_table"])

    def to_dict(self) -> dict:
        """JSON-friendly dict: the fields, ``rates`` = {"lambda_s", "lambda_a"} and
        ``annealing_time_scaling`` (= ``annealing``)."""
        out = asdict(self)
        out["notes"] = list(self.notes)
        out["rates"] = {"lambda_s": self.lambda_s, "lambda_a": self.lambda_a}
        out["annealing_time_scaling"] = self.annealing
        return out


def _local_slopes(ds: np.ndarray, P: np.ndarray) -> dict:
    return {f"{ds[i]:.0e}-{ds[i + 1]:.0e}": float(np.log(P[i + 1] / P[i])
                                                  / np.log(ds[i + 1] / ds[i]))
            for i in range(ds.size - 1) if P[i] > 0 and P[i + 1] > 0}


def large_d_law(spec: ProblemSpec, *, fit_eps: Sequence[float] = FIT_EPS,
                check_ds: Sequence[float] | None = (1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
                                                    1e10),
                n_eps_per_decade: int = 6, rel_tol: float = 1e-4,
                beta_star: float = 0.5, horizon: float | None = None,
                dt: float = 0.05) -> LargeDLaw:
    """The large-d law of collapse of ``spec`` (antipodal pair, fixed equal weights).

    ``P(d) = F C_0 d^(-alpha) (L_eff(d) + Delta_S)^p`` with ``alpha = (lambda_a/lambda_s - 1)/2``
    (module docstring for every symbol).  ``fit_eps``: amplitudes of the critical-angle fit
    of c, t_1 (always at constant final beta).  ``check_ds``: dimensions at which the law is
    compared with :func:`separatrix_vs_d` for the spec itself (None: skip; the slope between
    1e8 and 1e10 is reported when both are in it); ``d_10pct`` is the smallest checked d from
    which on ``|P_law/P_sep - 1| < 0.1``.  ``beta_star``: the stage of the tau(d) rule.
    ``horizon``, ``dt``: of the schedule factor (:func:`schedule_factor`; a shorter horizon
    and a coarser step are cheaper and less accurate in F).
    Raises ValueError naming ``spec`` unless the problem is the separatrix setting, or if
    lambda_s <= 0 or lambda_a <= lambda_s (no collapse race).
    """
    spec = require_spec(spec)
    check_separatrix_spec(spec)
    from derivations.asymptotics import law_latex
    rates = symmetric_rates(spec)
    ls, la = rates.lambda_s, rates.lambda_a
    notes: list[str] = []
    if not ls > 0:
        raise ValueError(f"spec: lambda_s = {ls:.4g} <= 0 at the final beta: the symmetric "
                         "state does not escape towards collapse; no large-d law")
    if not la > ls:
        raise ValueError(f"spec: lambda_a = {la:.4g} <= lambda_s = {ls:.4g}: the split "
                         "direction does not win the race; the large-d law does not apply")
    kappa = la / ls
    alpha = 0.5 * (kappa - 1.0)
    ref = spec.replace(schedule=ConstantSchedule(spec.schedule.beta_final))
    # Is there a collapse basin at all?  Along e_s the flow collapses by symmetry; if the
    # collapsed state is not an attractor (A = 4.5: it is a saddle) the critical angle sits at
    # the rounding floor (~1e-11 at eps = 1e-2) instead of ~eps^(kappa-1).
    th01, _ = critical_angles(ref, [1e-2], n_coarse=4, tol=1e-10, atol=1e-30,
                              t_end=default_ode_t_end(ref) + 3.0 * math.log(100.0) / ls)
    if th01[0] < 1e-7:
        raise ValueError(f"spec: no collapse basin: theta_c(eps = 0.01) = {th01[0]:.2g} is at "
                         f"the rounding floor (collapse only exactly along e_s; the collapsed "
                         f"state is not an attractor), so P(collapse) = 0 at every d (the "
                         f"linear race alone would give alpha = {alpha:.4g}); no large-d law")
    if rates.neutral:
        notes.append(f"beta Delta = s: Q* = 0 is reached only algebraically (q ~ 1/(b t), "
                     f"b = {rates.b:.4g}), which adds the factor L(d)^p, p = {rates.p:.4g}: "
                     "P ~ C d^-alpha (ln d)^p; the local slope tends to -alpha as "
                     "-alpha + p/(2 lambda_s L_eff(d))")
    fit = fit_separatrix_constant(ref, rates, fit_eps, rel_tol=rel_tol)
    c, t1 = fit["c"], fit["t_1"]
    A = float(spec.target.T[0, 0])
    s2A = spec.init.sigma_init ** 2 * A
    C0 = 2.0 * c / math.pi * rayleigh_moment(kappa - 1.0) * s2A ** alpha
    sched = schedule_factor(spec, kappa, ls, horizon=horizon, dt=dt)
    C = sched["F"] * C0

    def law(d: Any) -> np.ndarray:
        return law_probability(d, alpha=alpha, C=C0, p=rates.p, lambda_s=ls, kappa=kappa,
                               t_1=t1, sigma2A=s2A, ratio_table=sched["ratio_table"])

    annealing: dict = {"rule": "escape after the schedule settled iff d > d_settled = "
                               "sigma_init^2 A exp(2 lambda_s (t_settle - Delta_S - t_1)); "
                               "to keep the escape inside the annealing window tau must grow "
                               "like ln d: tau(d) = ln(d/(sigma_init^2 A))/(2 lambda_s B(x*)), "
                               "B(x) = ln((e^x + T0 - 1)/T0) (exponential schedule, tempering)",
                       "tau_per_ln_d": None, "beta_star": beta_star}
    if not isinstance(spec.schedule, ConstantSchedule):
        from scipy.special import digamma
        L_set = float(spec.schedule.settle_time(1e-3)) - sched["Delta_S"]
        ln_d = (2.0 * ls * (L_set - t1) + math.log(s2A) + math.log(2.0)
                + float(digamma((kappa + 1) / 2)))
        annealing["log10_d_settled"] = ln_d / math.log(10.0)
        notes.append(f"the annealed law needs d > 10^{annealing['log10_d_settled']:.1f} (the "
                     "schedule must be over before the escape); below, the escape happens "
                     "during annealing (check['beta_escape']) and the nonlinear exit at "
                     "beta* < 1 changes the prefactor: compare check['ratio']")
    if isinstance(spec.schedule, ExponentialSchedule) and spec.schedule.T0 > 1 \
            and spec.path.kind == "tempering":
        T0 = spec.schedule.T0
        ex = beta_star * (T0 - 1.0) / (1.0 - beta_star)
        annealing["tau_per_ln_d"] = 1.0 / (2.0 * ls * math.log((ex + T0 - 1.0) / T0))
        annealing["tau_for_d"] = {f"{d:.0e}": float(annealing_time_for_d(d, ls, s2A, T0,
                                                                          beta_star))
                                  for d in (1e4, 1e6, 1e8, 1e10)}
    check: dict = {}
    slopes: dict = {}
    slope_8_10 = None
    if check_ds is not None:
        ds = np.asarray(sorted(check_ds), float)
        t_end = default_ode_t_end(spec) + 3.0 * math.log(math.sqrt(ds.max() / s2A) / 0.02) / ls
        guess = float(law(ds.max())) * 0.02 ** (kappa - 1.0)
        P_sep, err, table = separatrix_vs_d(spec, ds, n_eps_per_decade=n_eps_per_decade,
                                            tol=max(1e-13, rel_tol * guess), n_coarse=2,
                                            t_end=t_end)
        if not table["monotone"].all():
            notes.append("separatrix check: the one-interval assumption fails at some "
                         "amplitudes; its numbers there are unreliable")
        P_law = law(ds)
        ratio = P_law / P_sep
        ok = np.abs(ratio - 1.0) < 0.1
        bad = np.nonzero(~ok)[0]
        d10 = None if not ok[-1] else float(ds[bad[-1] + 1] if bad.size else ds[0])
        check = {"ds": ds.tolist(), "P_separatrix": P_sep.tolist(), "error_bound": err.tolist(),
                 "P_law": P_law.tolist(), "ratio": ratio.tolist(), "d_10pct": d10}
        slopes = {"separatrix": _local_slopes(ds, P_sep), "law": _local_slopes(ds, P_law)}
        if sched["ratio_table"] is not None:
            L_d = escape_time(ds, lambda_s=ls, kappa=kappa, t_1=t1, sigma2A=s2A)
            tab = sched["ratio_table"]
            lnL = np.log(tab["L"])
            check["T_escape"] = np.interp(np.log(L_d), lnL, tab["T_escape"]).tolist()
            check["beta_escape"] = np.interp(np.log(L_d), lnL, tab["beta_escape"]).tolist()
        if 1e8 in ds and 1e10 in ds:
            i8, i10 = int(np.nonzero(ds == 1e8)[0][0]), int(np.nonzero(ds == 1e10)[0][0])
            slope_8_10 = float(np.log(P_sep[i10] / P_sep[i8]) / np.log(100.0))
    latex = law_latex()
    return LargeDLaw(lambda_s=ls, lambda_a=la, kappa=kappa, alpha=alpha, p=rates.p,
                     a_s=rates.a_s, a_a=rates.a_a, b=rates.b, c=c, t_1=t1, C_constant=C0, C=C,
                     schedule=sched, local_slopes=slopes, slope_1e8_1e10=slope_8_10,
                     check=check, fit=fit, annealing=annealing,
                     latex={"alpha": latex["alpha"], "C": latex["C"], "P": latex["P"],
                            "P_schedule": latex["P_schedule"], "L_eff": latex["L_eff"],
                            "p": latex["p"]},
                     params=spec.to_dict(), notes=tuple(notes))
