r"""Why SGD collapses more than the gradient flow: the effective initial overlap (issue 10 s. 2).

Setting: the separatrix setting (two components with fixed equal weights on the antipodal
target ``mu_2 = -mu_1``, ``|mu_1|^2 = A``; :func:`analysis.estimators.separatrix.check_separatrix_spec`),
SGD with step eta and n samples per component (``stl`` or ``reparam``, DESIGN.md section 7).

Derivation
----------
1. *Per-step noise of the overlaps at the symmetric state.*  At R = 0 (any Q) the projection
   ``g_k . mu_1`` of the SGD gradient has mean 0 (the flow's R-velocity vanishes) and a noise
   that is a sum over the N = 2n samples ``x_ji = m_j + sqrt(s) xi_ji``.  With
   ``z = xi_ji . mu_1 / sqrt(A)`` ~ N(0, 1), which at R = 0 is independent of every
   ``xi_ji . m_l`` and hence of the variational responsibilities ``rho_l(x_ji)``, sample (j, i)
   contributes to component k (solvers/sgd.py's gradient, projected on mu_1)

       (1/n) [ delta_jk w_j h(z) + [reparam] w_j sqrt(A/s) rho_k(x_ji) z ],
       h(z) = -(beta A/Delta) tanh(b z) + c sqrt(s A) z,   b = sqrt(s A)/Delta,
       c = -1/s + beta/Delta + gamma/sigma0^2

   (``r_1 - r_2 = tanh(b z)`` at R = 0).  Its covariance over k, l (per step, per unit
   eta^2 of the R-increment) is

       Sigma_kl = (1/n) sum_j w_j^2 [ delta_jk delta_jl E h^2
                  + [reparam] sqrt(A/s) E[h z] (delta_jk E_j rho_l + delta_jl E_j rho_k)
                  + [reparam] (A/s) E_j[rho_k rho_l] ],
       E h^2 = (beta A/Delta)^2 E tanh^2(b z) - 2 (beta A/Delta) c sqrt(s A) b E sech^2(b z)
               + c^2 s A,        E[h z] = -(beta A/Delta) b E sech^2(b z) + c sqrt(s A)

   (Stein: E z tanh(b z) = b E sech^2(b z)), with ``E_j`` over ``rho_1 = sigmoid(l_j)``,
   ``l_j = (Q_j1 - Q_j2 - (Q_11 - Q_22)/2)/s + sqrt(|m_1 - m_2|^2 / s) zeta``.  stl's noise is
   isotropic in (R_11, R_21) and does not depend on Q; reparam's couples the components through
   the shared samples (anisotropic, Q-dependent).  By the exchange symmetry, e_s and e_a
   diagonalise Sigma: ``sigma_x^2 = e_x . Sigma e_x``.
2. *Propagation.*  In the linear phase the overlaps follow ``du_x = lambda_x(t) u_x dt +
   sqrt(eta) sigma_x(t) dW_x`` along the flow's symmetric trajectory (per step the increment
   has variance ``eta^2 sigma_x^2``, 1/eta steps per unit time), so with
   ``g_x(t) = exp int_0^t lambda_x`` (:func:`analysis.asymptotics.growth_exponents`)

       u_x(t) = g_x(t) [ u_x(0) + sqrt(eta) int_0^t g_x(t')^{-1} sigma_x(t') dW_x(t') ]:

   the state at t is that of the flow from the *effective initial overlap* in brackets, a
   Gaussian of variance

       eps_x^2 = eps0^2 + eta int_0^{t_*} sigma_x(t')^2 g_x(t')^{-2} dt',   x in {s, a},

   eps0 = sigma_init sqrt(A/d).  The integral is cut at the end of the linear phase t_*, the
   first time the amplitude ``g_s(t) eps_s(t)`` reaches ``u_nl`` (later noise is weighted by
   ``g^-2 <~ (eps/u_nl)^2``).  At constant rates it is ``eta sigma_x^2 / (2 lambda_x)``:
   since lambda_s < lambda_a, the noise adds more variance along e_s (collapse) than along e_a.
3. *Collapse probability.*  The separatrix criterion (collapse iff the angle from e_s is within
   ``theta_c(|u|)`` mod pi) applied to the anisotropic Gaussian ``u ~ N(0, diag(eps_s^2,
   eps_a^2))``:

       P = (2 / (pi eps_s eps_a)) int_0^inf r dr int_0^{theta_c(r)}
           exp(-(r^2/2)(cos^2 th / eps_s^2 + sin^2 th / eps_a^2)) d th,

   which is ``E_{chi ~ Rayleigh}[2 theta_c(eps chi)/pi]`` when eps_s = eps_a.  theta_c from
   :func:`analysis.estimators.separatrix.critical_angles` (the flow's basin boundary).

4. *Out-of-span inflation (mechanism 2).*  The noise out of span{mu, m} adds to every
   ``|m_k|^2`` (and, for reparam, whose components share samples, to ``m_1 . m_2``) at the
   rate ``q N_kl(Q, beta)``, ``q = eta (d - D)/n`` (:func:`inflation_source`): a
   d-dependent source in dQ/dt.  With ``inflation=True`` (default) the symmetric trajectory,
   the growth factors, reparam's in-span noise and the basin boundary theta_c are those of
   the flow with this source (a compiled rhs wrapping the model's).  It vanishes for stl at
   ``beta Delta = s`` (the preset at beta = 1, where mechanism 1 alone acts); under annealing
   (beta < 1) and for reparam at large d it separates the components, weakens the repulsion
   and dominates.

Not included by default: the O(eta) difference between the GD map and the flow (the
modified-equation term; ``modified=True`` takes trajectory, rates and basin boundary from the
O(eta) corrected ODE of :func:`corrected_flow` instead), the in-frame O(eta) noise of Q, noise
after the linear phase (the basin boundary is taken from the noiseless corrected flow).
Measured with ``modified=True`` (figures/sgd_eta_d.json, stl, beta = 1, n = 8, 600 draws per
point): inside the engine's 95% interval at 17 of 20 points of eta in {0.02, 0.05, 0.1, 0.2}
x d in {1e2, ..., 1e6} (13 of 20 without); still under at eta = 0.1, d >= 1e5 (0.150 against
0.180 and 0.192) and at d = 100, eta = 0.05 (eps0 = 0.3 is not small).  Measured against the reduced engine
(issue 10, section 2): within the Wilson intervals for stl at beta = 1 for eta <= 0.05 (n =
8) and eta <= 0.02 (n = 1), d = 1e3..1e6; it under-predicts at eta = 0.05, n = 1, where
``eps_eff ~ 0.6`` is no longer a small initial condition (and at eta = 0.2, n = 8).  With the
exponential schedule (T0 = 20, tau = 100) the effective overlap alone explains a factor 3-8 of
the gap; with the inflation (7.6 at d = 1e3, eta = 0.02, n = 8; 10^4 at d = 1e6, where the
components stop interacting and P -> 1/2) every point of eta in {0.01, 0.02, 0.05}, n in {1,
8}, d in {1e3, 1e6}, stl and reparam, falls within the engine's interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derivations.spec import ProblemSpec, require_spec

__all__ = ["FiniteStepPrediction", "FiniteStepGrid", "NoiseCovariance",
           "effective_overlap_prediction", "effective_overlap_grid", "corrected_flow",
           "overlap_noise_covariance", "accumulated_noise", "anisotropic_rayleigh",
           "inflation_source", "inflated_flow"]

_ESTIMATORS = ("stl", "reparam")
#: Quadrature grid (trapezoid, exponentially accurate for these smooth integrands).
_Z = np.linspace(-12.0, 12.0, 4801)
_WZ = np.exp(-0.5 * _Z ** 2) / math.sqrt(2.0 * math.pi) * (_Z[1] - _Z[0])


def _check_inputs(spec: Any, d: Any, eta: Any, n: Any, estimator: Any) -> ProblemSpec:
    from .estimators.separatrix import check_separatrix_spec
    spec = require_spec(spec)
    check_separatrix_spec(spec)
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 3:
        raise ValueError(f"d: must be an integer >= rank T + M = 3, got {d!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.number)) \
            or not (math.isfinite(float(eta)) and float(eta) > 0):
        raise ValueError(f"eta: must be a finite number > 0, got {eta!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator: must be one of {_ESTIMATORS}, got {estimator!r}")
    return spec


def _gamma_over_s0(spec: ProblemSpec, beta: float) -> float:
    g = float(spec.gamma(beta))
    return g / float(spec.path.base_variance) if g else 0.0


@dataclass(frozen=True)
class NoiseCovariance:
    """Per-step covariance of ``(g_1 . mu_1, g_2 . mu_1)`` at R = 0 (module docstring, 1).

    ``Sigma`` (2, 2); ``sigma_s2, sigma_a2``: along e_s, e_a; ``cross``: e_s . Sigma e_a (0 by
    symmetry at a symmetric Q).  The R-increment of one step has covariance eta^2 Sigma.
    """

    Sigma: np.ndarray
    sigma_s2: float
    sigma_a2: float
    cross: float


def overlap_noise_covariance(spec: ProblemSpec, Q: Any, beta: float, n: int,
                             estimator: str = "stl") -> NoiseCovariance:
    """Closed-form covariance of the SGD gradient's mu_1-projections at R = 0 and Q (2, 2)."""
    spec = require_spec(spec)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator: must be one of {_ESTIMATORS}, got {estimator!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
    from scipy.special import expit
    Q = np.asarray(Q, dtype=float)
    if Q.shape != (2, 2):
        raise ValueError(f"Q: must have shape (2, 2), got {Q.shape}")
    A = float(spec.target.T[0, 0])
    s, Dl = float(spec.family.variance), float(spec.target.variance)
    w = np.asarray(spec.family.w, dtype=float)
    beta = float(beta)
    c = -1.0 / s + beta / Dl + _gamma_over_s0(spec, beta)
    b = math.sqrt(s * A) / Dl
    ba = beta * A / Dl
    th = np.tanh(b * _Z)
    t2 = float(_WZ @ (th * th))
    sech2 = 1.0 - t2                       # E sech^2 = 1 - E tanh^2
    ztanh = b * sech2
    Eh2 = ba * ba * t2 - 2.0 * ba * c * math.sqrt(s * A) * ztanh + c * c * s * A
    Ehz = -ba * ztanh + c * math.sqrt(s * A)
    Sigma = np.zeros((2, 2))
    for j in range(2):
        Sigma[j, j] += w[j] ** 2 * Eh2
    if estimator == "reparam":
        D2 = max(Q[0, 0] + Q[1, 1] - 2.0 * Q[0, 1], 0.0)
        for j in range(2):
            mean = math.log(w[0] / w[1]) + (Q[j, 0] - Q[j, 1] - 0.5 * (Q[0, 0] - Q[1, 1])) / s
            rho1 = expit(mean + math.sqrt(D2 / s) * _Z)
            rho = (rho1, 1.0 - rho1)
            Er = [float(_WZ @ r) for r in rho]
            for k in range(2):
                for m in range(2):
                    v = (A / s) * float(_WZ @ (rho[k] * rho[m]))
                    v += math.sqrt(A / s) * Ehz * ((j == k) * Er[m] + (j == m) * Er[k])
                    Sigma[k, m] += w[j] ** 2 * v
    Sigma /= n
    es = np.array([1.0, 1.0]) / math.sqrt(2.0)
    ea = np.array([1.0, -1.0]) / math.sqrt(2.0)
    return NoiseCovariance(Sigma, float(es @ Sigma @ es), float(ea @ Sigma @ ea),
                           float(es @ Sigma @ ea))


# ----------------------------------------------------------------------------------------
# the flow with the out-of-span inflation of Q (mechanism 2)
# ----------------------------------------------------------------------------------------

def inflation_source(spec: ProblemSpec, d: int, eta: float, n: int, estimator: str
                     ) -> tuple[float, ...]:
    """Parameters ``(q, c1, c0, s, w_1, w_2, reparam)`` of the out-of-span source of dQ/dt.

    Per step the out-of-frame part of ``eta g_k`` is ``eta sum_(j,i) C_k,(j,i) xi_perp_ji``
    (solvers/sgd.py: ``C_k,(j,i) = delta_jk w_k c sqrt(s)/n + [reparam] w_j rho_k(x_ji) /
    (sqrt(s) n)``, ``c = -1/s + beta/Delta + gamma/sigma0^2 = c1 beta + c0``), so per unit
    time (1/eta steps) ``Q_kl`` gains

        q N_kl,   q = eta (d - D) / n,
        N_kl = sum_j E[(delta_jk w_k c sqrt(s) + w_j rho_k / sqrt(s))
                       (delta_jl w_l c sqrt(s) + w_j rho_l / sqrt(s))]

    (reparam terms only for reparam), the expectation over ``rho_1(x_j) = sigmoid(l_j)`` with
    ``l_j`` as in :func:`overlap_noise_covariance` -- it depends on Q only, so the source is
    exact for every state.  stl: ``N = diag(w_k^2 c^2 s)``, which vanishes at
    ``beta Delta = s`` on tempering (the preset at beta = 1); reparam with components far
    apart: ``w_k^2 s (c + 1/s)^2`` (:func:`analysis.mc_config.noise_inflation`'s coefficient).
    """
    from solvers.sgd import frame_dimension
    s, Dl = float(spec.family.variance), float(spec.target.variance)
    w = np.asarray(spec.family.w, dtype=float)
    D = frame_dimension(spec.target.T, spec.family.M)
    geo = spec.path.kind == "geometric"
    s0 = float(spec.path.base_variance) if geo else 1.0
    c1 = 1.0 / Dl - (1.0 / s0 if geo else 0.0)
    c0 = (1.0 / s0 if geo else 0.0) - 1.0 / s
    q = float(eta) * max(int(d) - D, 0) / int(n)
    return (q, c1, c0, s, float(w[0]), float(w[1]), 1.0 if estimator == "reparam" else 0.0)


_RHS_CACHE: dict = {}
#: Trapezoid nodes and weights of E f(x), x ~ N(0, 1), inside the corrected rhs.
_XN = np.linspace(-10.0, 10.0, 241)
_WN = np.exp(-0.5 * _XN ** 2) / math.sqrt(2.0 * math.pi) * (_XN[1] - _XN[0])


def _corrected_rhs(model: Any, n_theta: int) -> Any:
    """``f(y) + q N(Q, beta)`` on the Q entries (:func:`inflation_source`); theta = (model
    theta, q, c1, c0, s, w_1, w_2, reparam)."""
    key = (id(model.rhs), n_theta)
    if key in _RHS_CACHE:
        return _RHS_CACHE[key][1]
    from numba import njit

    from solvers.signatures import RHS_SIG
    base = model.rhs
    names = list(model.state_names)
    i11, i12, i22 = names.index("Q_1_1"), names.index("Q_1_2"), names.index("Q_2_2")
    nth = int(n_theta)
    XN, WN = _XN.copy(), _WN.copy()

    @njit(RHS_SIG)
    def rhs(y, beta, theta, out):
        base(y, beta, theta[:nth], out)
        q = theta[nth]
        c = theta[nth + 1] * beta + theta[nth + 2]
        s = theta[nth + 3]
        w1 = theta[nth + 4]
        w2 = theta[nth + 5]
        ss = math.sqrt(s)
        if theta[nth + 6] == 0.0:
            out[i11] += q * w1 * w1 * c * c * s
            out[i22] += q * w2 * w2 * c * c * s
            return
        q11, q12, q22 = y[i11], y[i12], y[i22]
        sd = math.sqrt(max(q11 + q22 - 2.0 * q12, 0.0) / s)
        n11 = 0.0
        n12 = 0.0
        n22 = 0.0
        for j in range(2):
            wj = w1 if j == 0 else w2
            mean = math.log(w1 / w2) + ((q11 - q12 if j == 0 else q12 - q22)
                                        - 0.5 * (q11 - q22)) / s
            e1 = 0.0
            e11 = 0.0
            for g in range(XN.shape[0]):
                z = mean + sd * XN[g]
                r = 1.0 / (1.0 + math.exp(-z)) if z > -700.0 else 0.0
                e1 += WN[g] * r
                e11 += WN[g] * r * r
            e2 = 1.0 - e1
            e22 = 1.0 - 2.0 * e1 + e11
            e12 = e1 - e11
            a1 = w1 * c * ss if j == 0 else 0.0
            a2 = w2 * c * ss if j == 1 else 0.0
            b = wj / ss
            n11 += a1 * a1 + 2.0 * a1 * b * e1 + b * b * e11
            n22 += a2 * a2 + 2.0 * a2 * b * e2 + b * b * e22
            n12 += a1 * a2 + a1 * b * e2 + a2 * b * e1 + b * b * e12
        out[i11] += q * n11
        out[i12] += q * n12
        out[i22] += q * n22

    _RHS_CACHE[key] = (model, rhs)
    return rhs


class _Flow:
    """The flow of ``spec`` (``source`` None), the inflation-corrected flow, or (``modified =
    (eta, q, estimator)``) the O(eta) corrected ODE of :func:`corrected_flow`, whose schedule
    runs half a step early."""

    def __init__(self, spec: ProblemSpec, source: tuple[float, float, float] | None,
                 modified: tuple[float, float, str] | None = None):
        from .estimators.common import compiled_model
        self.spec = spec
        self.model = compiled_model(spec)
        th = np.asarray(spec.theta(), dtype=float)
        self.base_theta = th
        self.shift, self.modified = 0.0, modified is not None
        if modified is not None:
            from derivations.finite_step import compile_corrected_rhs
            eta, q, est = modified
            self.rhs = compile_corrected_rhs(spec.structure, est)
            self.theta = np.concatenate([th, [float(eta), float(q)]])
            self.corrected, self.shift = True, 0.5 * float(eta)
            return
        if source is not None:        # identically zero along the schedule: the flow itself
            from .mc_config import default_t_end
            tt = np.linspace(0.0, float(default_t_end(spec)), 2001)
            b = np.asarray(np.broadcast_to(spec.schedule.beta(tt), tt.shape), dtype=float)
            if source[0] == 0.0 or (source[6] == 0.0
                                    and np.max(np.abs(source[1] * b + source[2])) == 0.0):
                source = None
        if source is None:
            self.rhs, self.theta, self.corrected = self.model.rhs, th, False
        else:
            self.rhs = _corrected_rhs(self.model, th.size)
            self.theta, self.corrected = np.concatenate([th, source]), True

    def run(self, Y0: np.ndarray, t_end: float, t_eval: Any = None, event: Any = None):
        from solvers.ensemble import run_ensemble
        from solvers.layout import unpack_state
        te = None if t_eval is None else np.asarray(t_eval, dtype=float) - self.shift
        r = run_ensemble(self.rhs, Y0, (-self.shift, float(t_end) - self.shift), self.theta,
                         schedule=self.spec.schedule, t_eval=te, rtol=1e-9, atol=1e-12,
                         event=event, progress=False)
        n = len(self.model.state_names)
        Qf, Rf, _ = unpack_state(self.model, r.Z_final[:, :n])
        return r, Qf, Rf

    def state(self, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
        from solvers.layout import pack_state
        return pack_state(self.model, Q, R)

    def directions(self) -> tuple[np.ndarray, np.ndarray]:
        """e_s, e_a as unit state vectors: R_k1 = u_k, R_k2 = -u_k."""
        names = list(self.model.state_names)
        vs, va = np.zeros(len(names)), np.zeros(len(names))
        for k, sk, ak in ((1, 1.0, 1.0), (2, 1.0, -1.0)):
            vs[names.index(f"R_{k}_1")], vs[names.index(f"R_{k}_2")] = 0.5 * sk, -0.5 * sk
            va[names.index(f"R_{k}_1")], va[names.index(f"R_{k}_2")] = 0.5 * ak, -0.5 * ak
        return vs, va

    def symmetric_path(self, t_max: float, dt: float):
        """(t, ln g_s, ln g_a, Q (T, 2, 2)) along R = 0 from Q = sigma_init^2 I."""
        from scipy.integrate import cumulative_simpson

        from solvers.layout import unpack_state
        from solvers.model import evaluate_jacobian
        n_t = max(3, int(math.ceil(t_max / dt)) + 1)
        t = np.linspace(0.0, float(t_max), n_t)
        y0 = self.state(self.spec.init.sigma_init ** 2 * np.eye(2), np.zeros((2, 2)))
        r, _, _ = self.run(y0[None, :], t_max, t)
        n = len(self.model.state_names)
        y = r.Z_traj[0, :, :n]
        Q = unpack_state(self.model, y)[0]
        beta = np.asarray(np.broadcast_to(self.spec.schedule.beta(t), t.shape), dtype=float)
        vs, va = self.directions()
        rs, ra = np.empty(n_t), np.empty(n_t)
        if self.modified:         # no generated Jacobian: central differences along e_s, e_a
            h = 1e-6
            fp, fm = np.empty(n), np.empty(n)
            bshift = np.asarray(np.broadcast_to(self.spec.schedule.beta(np.maximum(t - self.shift, 0.0)),
                                                t.shape), dtype=float)
            for i in range(n_t):
                for v, out in ((vs, rs), (va, ra)):
                    self.rhs(y[i] + h * v, float(bshift[i]), self.theta, fp)
                    self.rhs(y[i] - h * v, float(bshift[i]), self.theta, fm)
                    out[i] = v @ (fp - fm) / (2 * h)
        else:
            for i in range(n_t):  # the source does not depend on R: J is the flow's
                J = evaluate_jacobian(self.model.jac, y[i], float(beta[i]), self.base_theta)
                rs[i], ra[i] = vs @ J @ vs, va @ J @ va
        return (t, cumulative_simpson(rs, x=t, initial=0.0),
                cumulative_simpson(ra, x=t, initial=0.0), Q)

    def critical_angles(self, eps: np.ndarray, tol: float, rel_tol: float,
                        n_coarse: int = 24) -> tuple[np.ndarray, np.ndarray]:
        """theta_c(eps) of this flow (the scan + bisection of
        :func:`analysis.estimators.separatrix.critical_angles`, which the uncorrected flow
        uses directly)."""
        from .estimators.separatrix import critical_angles
        if not self.corrected:
            return critical_angles(self.spec, eps, tol=tol, rel_tol=rel_tol, n_coarse=n_coarse)
        from .classify import classify
        from .estimators.common import default_ode_t_end, stationary_event
        from .estimators.separatrix import bracket_critical_angles, polar_overlaps
        spec = self.spec
        q0 = spec.init.sigma_init ** 2
        t_end = float(default_ode_t_end(spec))
        event = stationary_event(spec, 1e-8)

        def collapsed_at(eps_v, th_v):
            u = polar_overlaps(eps_v, th_v)
            Q = np.broadcast_to(q0 * np.eye(2), (u.shape[0], 2, 2))
            _, Qf, Rf = self.run(self.state(Q, np.stack([u, -u], axis=-1)), t_end,
                                 event=event)
            return classify(Qf, Rf, spec.target.T, np.broadcast_to(spec.family.w,
                                                                   (u.shape[0], 2)))[0]

        theta, monotone, _ = bracket_critical_angles(collapsed_at, np.asarray(eps, dtype=float),
                                                     n_coarse, tol, rel_tol)
        return theta, monotone


def inflated_flow(spec: ProblemSpec, d: int, eta: float, n: int, estimator: str,
                  Q0: Any, R0: Any, t_eval: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(Q (T, 2, 2), R (T, 2, 2))`` of the flow with the out-of-span source
    (:func:`inflation_source`) from ``(Q0, R0)`` at the times ``t_eval`` (sorted, from 0):
    the d-dependent O(eta) correction of the (Q, R) equations, to compare with the mean of
    the reduced SGD engine (the O(eta) modified-equation term -(eta/2) J f is not included).
    """
    spec = _check_inputs(spec, d, eta, n, estimator)
    from solvers.layout import unpack_state
    t = np.asarray(t_eval, dtype=float)
    if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) < 0) or t[0] < 0:
        raise ValueError("t_eval: must be a non-empty sorted 1-D array of times >= 0")
    flow = _Flow(spec, inflation_source(spec, d, eta, n, estimator))
    y0 = flow.state(np.asarray(Q0, dtype=float), np.asarray(R0, dtype=float))
    r, _, _ = flow.run(y0[None, :], float(t[-1]), t)
    Q, R, _ = unpack_state(flow.model, r.Z_traj[0, :, :len(flow.model.state_names)])
    return Q, R


def accumulated_noise(spec: ProblemSpec, eta: float, n: int, estimator: str = "stl", *,
                      d: int | None = None, t_max: float | None = None,
                      dt: float = 0.02, modified: bool = False) -> dict:
    """``V_x(t) = eta int_0^t sigma_x^2 g_x^-2 dt'`` (x = s, a) along the symmetric trajectory
    on [0, t_max] (default: the SGD estimator's default end time), with the rates and the
    noise.  ``d`` given: along the trajectory of the inflation-corrected flow in dimension d
    (:func:`inflation_source`), else the flow's.  Returns a dict of arrays ``t, ln_gs, ln_ga,
    sigma_s2, sigma_a2, V_s, V_a, Q, beta``, ``corrected`` (bool) and ``modified`` (bool).
    ``modified``: along the O(eta) corrected ODE of :func:`corrected_flow` (with the
    out-of-span source if d is given), its rates from central differences.

    ``V_x(t) g_x(t)^2`` is the variance of the SGD overlap u_x(t) started from u = 0 (the linear
    phase), which tests compare with the reduced engine."""
    from scipy.integrate import cumulative_trapezoid

    from .mc_config import default_t_end
    spec = require_spec(spec)
    t_max = float(default_t_end(spec) if t_max is None else t_max)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator: must be one of {_ESTIMATORS}, got {estimator!r}")
    source = None if d is None else inflation_source(spec, d, eta, n, estimator)
    if modified:
        flow = _Flow(spec, None, (float(eta), 0.0 if source is None else source[0], estimator))
    else:
        flow = _Flow(spec, source)
    t, ls, la, Q = flow.symmetric_path(t_max, dt)
    beta = np.asarray(np.broadcast_to(spec.schedule.beta(t), t.shape), dtype=float)
    if estimator == "stl":      # Q-independent: one evaluation per distinct beta
        cache: dict[float, NoiseCovariance] = {}
        covs = []
        for b in beta:
            key = float(b)
            if key not in cache:
                cache[key] = overlap_noise_covariance(spec, Q[0], key, n, estimator)
            covs.append(cache[key])
    else:
        covs = [overlap_noise_covariance(spec, Q[i], float(beta[i]), n, estimator)
                for i in range(t.size)]
    ss = np.array([c.sigma_s2 for c in covs])
    sa = np.array([c.sigma_a2 for c in covs])
    Vs = float(eta) * cumulative_trapezoid(ss * np.exp(-2.0 * ls), t, initial=0.0)
    Va = float(eta) * cumulative_trapezoid(sa * np.exp(-2.0 * la), t, initial=0.0)
    return {"t": t, "ln_gs": ls, "ln_ga": la, "sigma_s2": ss, "sigma_a2": sa,
            "V_s": Vs, "V_a": Va, "Q": Q, "beta": beta, "corrected": flow.corrected,
            "modified": flow.modified}


def anisotropic_rayleigh(eps_s: float, eps_a: float, log_eps: np.ndarray,
                         theta_c: np.ndarray, n_r: int = 4001, n_th: int = 48) -> float:
    """P(|angle from e_s| < theta_c(|u|) mod pi) for u ~ N(0, diag(eps_s^2, eps_a^2)).

    theta_c tabulated against log eps (PCHIP, clipped to the table); composite Simpson in r
    on [0, 9 max(eps)], Gauss-Legendre in the angle on [0, theta_c(r)]."""
    from scipy.integrate import simpson
    from scipy.interpolate import PchipInterpolator
    if not (eps_s > 0 and eps_a > 0):
        raise ValueError(f"eps_s, eps_a: must be > 0, got {eps_s}, {eps_a}")
    f = PchipInterpolator(log_eps, theta_c, extrapolate=False)
    r = np.linspace(0.0, 9.0 * max(eps_s, eps_a), n_r)
    le = np.log(np.maximum(r, 1e-300))
    tc = f(np.clip(le, log_eps[0], log_eps[-1]))
    x, wx = np.polynomial.legendre.leggauss(n_th)
    th = 0.5 * (x[None, :] + 1.0) * tc[:, None]               # (n_r, n_th)
    expo = np.exp(-0.5 * r[:, None] ** 2 * (np.cos(th) ** 2 / eps_s ** 2
                                            + np.sin(th) ** 2 / eps_a ** 2))
    inner = 0.5 * tc * (expo @ wx)
    return float(simpson(2.0 / (math.pi * eps_s * eps_a) * r * inner, x=r))


@dataclass(frozen=True)
class FiniteStepPrediction:
    """Result of :func:`effective_overlap_prediction`.

    p: predicted SGD collapse probability; p_flow: the same basin boundary with the isotropic
    eps0 (no in-span noise): the separatrix value of the flow, or with ``corrected`` the
    inflation mechanism alone; eps0; eps_eff = (eps_s, eps_a); noise_var = (V_s, V_a) at the
    cut t_cut; sigma2_start = (sigma_s^2, sigma_a^2) at t = 0; inflation: the out-of-span
    excess of |m_k|^2 at t_cut (:func:`analysis.mc_config.noise_inflation`, peak on [0, t_cut]);
    corrected: whether the flow carried the inflation source; notes; table: eps grid, theta_c.
    """

    p: float
    p_flow: float
    eps0: float
    eps_eff: tuple[float, float]
    noise_var: tuple[float, float]
    sigma2_start: tuple[float, float]
    t_cut: float
    inflation: float
    d: int
    eta: float
    n: int
    estimator: str
    corrected: bool = False
    notes: tuple[str, ...] = ()
    table: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"p": self.p, "p_flow": self.p_flow, "eps0": self.eps0,
                "eps_eff": list(self.eps_eff), "noise_var": list(self.noise_var),
                "sigma2_start": list(self.sigma2_start), "t_cut": self.t_cut,
                "inflation": self.inflation, "d": self.d, "eta": self.eta, "n": self.n,
                "estimator": self.estimator, "corrected": self.corrected,
                "notes": list(self.notes)}


def effective_overlap_prediction(spec: ProblemSpec, d: int, eta: float, n: int,
                                 estimator: str = "stl", *, u_nl: float = 1.0,
                                 dt: float = 0.02, n_eps_per_decade: int = 8,
                                 tol: float = 1e-4, rel_tol: float = 1e-3,
                                 inflation: bool = True,
                                 path: dict | None = None,
                                 table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                                 modified: bool = False) -> FiniteStepPrediction:
    """SGD collapse probability from the separatrix with the effective initial overlap.

    Module docstring: ``eps_x^2 = eps0^2 + V_x(t_cut)``, t_cut the first time
    ``g_s eps_s = u_nl`` (else the SGD default end time), then the anisotropic Rayleigh average
    of the critical angle.  ``inflation`` (default): both the symmetric trajectory (rates,
    reparam's noise) and the basin boundary are those of the flow with the out-of-span
    inflation of Q (:func:`inflation_source`, mechanism 2); False: the flow's (mechanism 1
    alone).  ``path``: a precomputed :func:`accumulated_noise` result for the same (spec, eta,
    n, estimator) and, with inflation, the same d.  ``table``: a precomputed
    ``(eps (G,), theta_c (G,), monotone (G,))`` of the same flow (:func:`effective_overlap_grid`
    shares one between points) whose amplitudes cover the range this point needs.
    ``modified``: trajectory, rates and basin boundary of the O(eta) corrected ODE
    (:func:`corrected_flow`: the GD map's own O(eta) departure from the flow, plus the
    out-of-span source if ``inflation``) instead of the flow's.
    """
    from .mc_config import noise_inflation, stable_step
    spec = _check_inputs(spec, d, eta, n, estimator)
    if not (math.isfinite(u_nl) and u_nl > 0):
        raise ValueError(f"u_nl: must be finite and > 0, got {u_nl!r}")
    eta, d, n = float(eta), int(d), int(n)
    A = float(spec.target.T[0, 0])
    sig = float(spec.init.sigma_init)
    eps0 = sig * math.sqrt(A / d)
    source = inflation_source(spec, d, eta, n, estimator) if inflation else None
    if modified:
        flow = _Flow(spec, None, (eta, 0.0 if source is None else source[0], estimator))
    else:
        flow = _Flow(spec, source)
    acc = path if path is not None else accumulated_noise(
        spec, eta, n, estimator, d=d if inflation else None, dt=dt, modified=modified)
    if bool(acc.get("corrected", False)) != flow.corrected \
            or bool(acc.get("modified", False)) != flow.modified:
        raise ValueError("path: computed for another flow (inflation, modified) than requested")
    t, ls = acc["t"], acc["ln_gs"]
    amp = np.exp(ls) * np.sqrt(eps0 ** 2 + acc["V_s"])
    hit = np.nonzero(amp >= u_nl)[0]
    i_cut = int(hit[0]) if hit.size else t.size - 1
    Vs, Va = float(acc["V_s"][i_cut]), float(acc["V_a"][i_cut])
    es, ea = math.sqrt(eps0 ** 2 + Vs), math.sqrt(eps0 ** 2 + Va)
    eps_max = sig * math.sqrt(A) * (1.0 - 1e-9)
    lo = 0.02 * min(es, ea, eps0)
    hi = min(9.0 * max(es, ea), eps_max)
    n_eps = max(9, int(math.ceil(n_eps_per_decade * math.log10(hi / lo))) + 1)
    if table is None:
        grid = np.geomspace(lo, hi, n_eps)
        theta_c, monotone = flow.critical_angles(grid, tol, rel_tol)
    else:
        grid, theta_c, monotone = (np.asarray(a) for a in table)
        if grid.ndim != 1 or grid.shape != theta_c.shape or grid.shape != monotone.shape \
                or grid[0] > lo * (1 + 1e-12) or grid[-1] < hi * (1 - 1e-12):
            raise ValueError(f"table: needs amplitudes covering [{lo:.3g}, {hi:.3g}] with "
                             "theta_c and monotone of the same shape")
    le = np.log(grid)
    p = anisotropic_rayleigh(es, ea, le, theta_c)
    p_flow = anisotropic_rayleigh(eps0, eps0, le, theta_c)
    t_cut = float(t[i_cut])
    infl = float(noise_inflation(spec, d, eta, n, t_end=max(t_cut, 1e-9), peak=True,
                                 estimator=estimator))
    s = float(spec.family.variance)
    notes = []
    if not monotone.all():
        notes.append("the flow's outcome is not one interval of angles at some amplitudes: "
                     "the separatrix criterion is approximate there")
    if not hit.size:
        notes.append(f"the linear-phase amplitude never reached u_nl = {u_nl:g} before "
                     f"t = {t[-1]:g}: the noise was integrated over the whole run")
    tail = math.exp(-0.5 * (eps_max / max(es, ea)) ** 2)
    if tail > 1e-3:
        notes.append(f"the effective amplitude reaches the realisable |u| = sigma_init sqrt(A) "
                     f"(Gaussian mass {tail:.2g} beyond it, where theta_c is held at its last "
                     "value): the initial condition is no longer small")
    if eta > stable_step(spec):
        notes.append(f"eta = {eta:g} is above the stable step {stable_step(spec):.3g}")
    if infl > 0.1 * s:
        what = ("the flow is corrected for it (inflation_source)"
                if flow.corrected else "the prediction ignores this change of Q and its effect "
                "on the repulsion (inflation=False)")
        notes.append(f"out-of-span noise inflates |m_k|^2 by {infl:.3g} during the linear phase "
                     f"(s = {s:g}): {what}" + (" -- it dominates (> 12 s)"
                                                if infl > 12 * s else ""))
    return FiniteStepPrediction(
        p=p, p_flow=p_flow, eps0=eps0, eps_eff=(es, ea), noise_var=(Vs, Va),
        sigma2_start=(float(acc["sigma_s2"][0]), float(acc["sigma_a2"][0])), t_cut=t_cut,
        inflation=infl, d=d, eta=eta, n=n, estimator=estimator, corrected=flow.corrected,
        notes=tuple(notes),
        table={"eps": grid, "theta_c": theta_c, "monotone": monotone})


@dataclass(frozen=True)
class FiniteStepGrid:
    """Result of :func:`effective_overlap_grid`: ``p`` (len(etas), len(ds)) the predicted SGD
    collapse probability, ``p_flow`` (len(etas), len(ds)) the same basin boundary from the
    isotropic eps0 (the flow's separatrix value where the flow is not corrected),
    ``eps_eff`` (len(etas), len(ds), 2), ``corrected`` (len(etas), len(ds)) bool, and the
    per-point :class:`FiniteStepPrediction` objects ``points[i][j]``; ``shared_table``: one
    table of critical angles served every point."""

    ds: tuple[int, ...]
    etas: tuple[float, ...]
    n: int
    estimator: str
    p: np.ndarray
    p_flow: np.ndarray
    eps_eff: np.ndarray
    corrected: np.ndarray
    shared_table: bool
    points: tuple[tuple[FiniteStepPrediction, ...], ...] = field(repr=False, default=())
    table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(repr=False, default=None)


def effective_overlap_grid(spec: ProblemSpec, ds: Any, etas: Any, n: int,
                           estimator: str = "stl", *, u_nl: float = 1.0, dt: float = 0.02,
                           n_eps_per_decade: int = 8, tol: float = 1e-4,
                           rel_tol: float = 1e-3, inflation: bool = True,
                           table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                           modified: bool = False) -> FiniteStepGrid:
    """:func:`effective_overlap_prediction` on the grid ``etas`` x ``ds``, sharing the work.

    Where the flow carries no inflation source at any grid point (stl at ``beta Delta = s``
    along the whole schedule, or ``inflation=False``) the symmetric trajectory, the growth
    factors and the noise covariance do not depend on (eta, d): ``V_x`` is eta times one
    integral and theta_c(eps) is one function, so one :func:`accumulated_noise` path (at
    eta = 1, scaled) and one table of critical angles covering every point's amplitudes serve
    the whole grid (identical numbers to the point-wise calls up to the interpolation of
    theta_c).  Otherwise each point is computed on its own (the corrected flow depends on
    q = eta (d - D) / n), except with ``modified`` and no source anywhere, where one path and
    one table per eta serve every d.  ``table``: the shared ``(eps, theta_c, monotone)`` of an earlier
    grid of the same spec (``FiniteStepGrid.table``), used when it covers every point's
    amplitudes, else a new one is computed.
    """
    spec = require_spec(spec)
    ds_t = tuple(int(d) for d in np.atleast_1d(ds))
    etas_t = tuple(float(e) for e in np.atleast_1d(etas))
    if not ds_t or not etas_t:
        raise ValueError("ds, etas: need at least one value each")
    for d in ds_t:
        for e in etas_t:
            _check_inputs(spec, d, e, n, estimator)
    live = np.array([[inflation and _Flow(spec, inflation_source(spec, d, e, n, estimator))
                      .corrected for d in ds_t] for e in etas_t], dtype=bool)
    corrected = live | modified
    kw = dict(u_nl=u_nl, dt=dt, n_eps_per_decade=n_eps_per_decade, tol=tol, rel_tol=rel_tol,
              inflation=inflation, modified=modified)
    shared = not corrected.any()
    A = float(spec.target.T[0, 0])
    sig = float(spec.init.sigma_init)
    eps_max = sig * math.sqrt(A) * (1.0 - 1e-9)

    def amplitude_range(acc: dict) -> tuple[float, float]:
        """[lo, hi] of the amplitudes every d needs on this path (as the point does)."""
        lo, hi = math.inf, 0.0
        for d in ds_t:
            eps0 = sig * math.sqrt(A / d)
            amp = np.exp(acc["ln_gs"]) * np.sqrt(eps0 ** 2 + acc["V_s"])
            hit = np.nonzero(amp >= u_nl)[0]
            i = int(hit[0]) if hit.size else acc["t"].size - 1
            es = math.sqrt(eps0 ** 2 + float(acc["V_s"][i]))
            ea = math.sqrt(eps0 ** 2 + float(acc["V_a"][i]))
            lo = min(lo, 0.02 * min(es, ea, eps0))
            hi = max(hi, min(9.0 * max(es, ea), eps_max))
        return lo, hi

    def new_table(flow: _Flow, lo: float, hi: float) -> tuple:
        n_eps = max(9, int(math.ceil(n_eps_per_decade * math.log10(hi / lo))) + 1)
        grid = np.geomspace(lo, hi, n_eps)
        theta_c, monotone = flow.critical_angles(grid, tol, rel_tol)
        return grid, theta_c, monotone

    if shared:
        unit = accumulated_noise(spec, 1.0, n, estimator, dt=dt)
        paths = {e: {**unit, "V_s": e * unit["V_s"], "V_a": e * unit["V_a"]} for e in etas_t}
        lo = min(amplitude_range(paths[e])[0] for e in etas_t)
        hi = max(amplitude_range(paths[e])[1] for e in etas_t)
        if table is None or table[0][0] > lo * (1 + 1e-12) or table[0][-1] < hi * (1 - 1e-12):
            table = new_table(_Flow(spec, None), lo, hi)
        pts = tuple(tuple(effective_overlap_prediction(spec, d, e, n, estimator, path=paths[e],
                                                       table=table, **kw)
                          for d in ds_t) for e in etas_t)
    elif modified and not live.any():
        # the corrected ODE without a source depends on eta only: one path and one table
        # per step, shared over d
        rows = []
        for e in etas_t:
            acc = accumulated_noise(spec, e, n, estimator, dt=dt, modified=True)
            tab = new_table(_Flow(spec, None, (e, 0.0, estimator)), *amplitude_range(acc))
            rows.append(tuple(effective_overlap_prediction(
                spec, d, e, n, estimator, path=acc, table=tab,
                **{**kw, "inflation": False}) for d in ds_t))
        pts = tuple(rows)
    else:
        pts = tuple(tuple(effective_overlap_prediction(spec, d, e, n, estimator, **kw)
                          for d in ds_t) for e in etas_t)
    return FiniteStepGrid(
        ds=ds_t, etas=etas_t, n=int(n), estimator=estimator,
        p=np.array([[r.p for r in row] for row in pts]),
        p_flow=np.array([[r.p_flow for r in row] for row in pts]),
        eps_eff=np.array([[list(r.eps_eff) for r in row] for row in pts]),
        corrected=corrected, shared_table=shared, points=pts, table=table if shared else None)


def corrected_flow(spec: ProblemSpec, Y0: Any, t_end: float, eta: float, *,
                   d: int | None = None, n: int = 1, estimator: str = "stl",
                   t_eval: Any = None, correction: bool = True, rtol: float = 1e-10,
                   atol: float = 1e-12) -> tuple[np.ndarray, np.ndarray | None]:
    """The O(eta) corrected ODE of the finite-step maps (:mod:`derivations.finite_step`).

    ``dy/dt = F(y, beta(t - eta/2)) + eta [b - J_F F / 2]``, ``F = f + q N``, integrated from
    the states ``Y0`` (N, n_state) at t = 0 to ``t_end`` (gradient-flow time, t = eta *
    steps): with ``d`` None (q = 0) the modified equation of GD with step eta, else the mean
    equation of SGD with n samples per component and the given estimator in dimension d
    (``q = eta (d - D) / n``, D = rank T + M).  ``eta = 0`` gives the flow (d None) or the
    inflation-corrected flow.  Returns (Y_final (N, n_state), Y (N, len(t_eval), n_state) at
    the times ``t_eval`` or None).  ``correction=False`` drops the eta term and the half-step
    shift (the flow of F alone: the inflation-corrected flow of any structure).  Any structure
    (K, M, weights, path) of the model.
    """
    from derivations.finite_step import compile_corrected_rhs
    from solvers.ensemble import run_ensemble
    from solvers.sgd import frame_dimension
    spec = require_spec(spec)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator: must be one of {_ESTIMATORS}, got {estimator!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.number)) \
            or not (math.isfinite(float(eta)) and float(eta) >= 0):
        raise ValueError(f"eta: must be a finite number >= 0, got {eta!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
    eta = float(eta)
    D = frame_dimension(spec.target.T, spec.family.M)
    if d is None:
        q = 0.0
    else:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < D:
            raise ValueError(f"d: must be an integer >= rank T + M = {D}, got {d!r}")
        q = eta * (int(d) - D) / int(n)
    rhs = compile_corrected_rhs(spec.structure, estimator)
    e1 = eta if correction else 0.0
    theta = np.concatenate([np.asarray(spec.theta(), dtype=float), [e1, q]])
    Y0 = np.atleast_2d(np.asarray(Y0, dtype=float))
    shift = 0.5 * e1
    te = None if t_eval is None else np.asarray(t_eval, dtype=float) - shift
    r = run_ensemble(rhs, Y0, (-shift, float(t_end) - shift), theta, schedule=spec.schedule,
                     t_eval=te, rtol=rtol, atol=atol, progress=False)
    return r.Z_final, r.Z_traj
