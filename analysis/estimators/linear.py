r"""``linear``: the linearised theory (DESIGN.md section 3, estimator 2).

For targets with the invariant manifold R = 0: integrate the symmetric trajectory ``y_s(t)``
(R = 0, ``Q(0) = sigma_init^2 I``) together with its tangent propagator
``G(t) = dy(t)/dy(0)``; the initial overlaps (covariance ``(sigma_init^2/d) I_M (x) T``) are
mapped through the R-block of G and classified by their signs at the saturation time t*, where
the RMS linearised overlap reaches half the target overlap ``T_11 / 2``.  For two components on
an antipodal target the orthant probability is closed form, ``P = 1/2 + arcsin(rho)/pi`` with
rho the correlation of the mapped pair; otherwise (or with ``orthant="sampled"``) the Gaussian
law of the mapped overlaps is sampled (``draws``; factored by ``eigh``, since it is singular
whenever T is) and classified, with a Wilson interval; the closed form's ``ci`` is the point
itself.

The propagator is integrated only up to t* (over doubling horizons): beyond it G grows without
bound and the tangent system turns stiff.  This is an approximation: it treats the flow as
linear up to t* although the basin boundary is set by the nonlinear flow; it maps the axes
through G and over-predicts collapse when the symmetric (collapsing) direction grows fastest,
and its d-dependence enters only through t*.  A propagator that overflows or a mapped
covariance that is not finite is refused (ValueError), never turned into a probability.
It needs the Jacobian: the expanded engine's analytic one for K, M <= 3, the loop-form
engine's Richardson finite difference (:data:`derivations.loopgen.JAC_FD_DOC`, ~1e-9
relative) above.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from derivations.spec import ProblemSpec

from ..classify import classify
from ..stats import proportion
from .base import CollapseEstimator, CollapseResult, Cost, EstimatorOptions, register_estimator
from .common import compiled_model, default_ode_t_end, is_antipodal_pair

__all__ = ["LinearEstimator", "LinearOptions"]


@dataclass(frozen=True)
class LinearOptions(EstimatorOptions):
    t_end: float | None = field(default=None, metadata={
        "help": "final time (default: schedule settled + 25 relaxation times)"})
    n_times: int = field(default=801, metadata={
        "help": "points of the time grid on [0, t_end] on which saturation is located"})
    orthant: str = field(default="auto", metadata={
        "help": "orthant probability: closed form (antipodal pair), sampled, or auto",
        "choices": ("auto", "closed", "sampled")})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.t_end is not None and self.t_end <= 0:
            raise ValueError(f"t_end: must be > 0, got {self.t_end}")
        if self.n_times < 2:
            raise ValueError(f"n_times: must be >= 2, got {self.n_times}")


@register_estimator
class LinearEstimator(CollapseEstimator):
    name = "linear"
    summary = "linearisation around R = 0, orthant probability at saturation"
    Options = LinearOptions
    objectives = ("reverse-kl", "forward-kl")

    def check(self, spec: ProblemSpec, d: int, options: LinearOptions) -> None:
        super().check(spec, d, options)
        if options.orthant == "closed" and not is_antipodal_pair(spec):
            raise ValueError("orthant: the closed form needs the antipodal two-component "
                             "problem")

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: LinearOptions) -> Cost:
        n = spec.structure.n_state
        M, K = spec.family.M, spec.target.K
        mem = 8.0 * options.n_times * n * n * 3 + 8.0 * draws * M * K * 3
        return Cost(mem, 1.0 + 1e-6 * draws * M * K, "tangent propagator and samples")

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: LinearOptions) -> CollapseResult:
        from solvers.ensemble import pack_state, solve, state_layout

        model = compiled_model(spec)
        M, K = spec.family.M, spec.target.K
        lay = state_layout(model)
        q0 = spec.init.sigma_init ** 2
        alpha0 = np.zeros(M) if spec.family.train_weights else None
        y_s0 = pack_state(model, q0 * np.eye(M), np.zeros((M, K)), alpha0)
        t_end = float(options.t_end or default_ode_t_end(spec))
        n_t = options.n_times
        dt = t_end / (n_t - 1)
        r_idx = np.asarray(lay.r_index).reshape(M, K)
        T = spec.target.T
        # covariance of the initial overlaps R(0) for zero centres: (sigma^2/d) I_M (x) T
        C0 = np.kron(np.eye(M), T) * spec.init.sigma_init ** 2 / d
        sat = 0.5 * float(np.max(np.diag(T)))
        # The propagator grows exponentially and is only needed up to saturation: integrate
        # over doubling horizons until the RMS linearised overlap reaches `sat` (or t_end),
        # instead of following G to ~1e20 at t_end, which costs 10^5 steps for nothing.
        horizon = min(t_end, 4.0)
        while True:
            n_h = max(2, int(round(horizon / dt)) + 1)
            traj = solve(spec, model, y_s0, horizon, np.linspace(0.0, horizon, n_h),
                         tangent=True, rtol=1e-10, atol=1e-12)
            if np.max(np.abs(traj.R)) > 1e-9:
                raise ValueError("spec: the linear estimator needs a target for which R = 0 is "
                                 "an invariant manifold (a symmetric target); R left zero by "
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
        cov_star = cov_t[i_star]
        if not np.all(np.isfinite(cov_star)) or np.all(cov_star == 0):
            raise ValueError(
                f"spec: the linearised overlaps at t* = {t_star:g} are "
                f"{'not finite' if not np.all(np.isfinite(cov_star)) else 'identically zero'}"
                " (the tangent propagator overflowed or vanished): the linear estimator does "
                "not apply here; use method='ode'")
        notes = ["linearisation around the symmetric trajectory R = 0, mapped to the saturation "
                 "time t* (RMS linearised overlap = T_11/2); approximation: the nonlinear basin "
                 "boundary is replaced by the linear map of the axes, which over-predicts "
                 "collapse when the collapsing direction grows fastest"]
        if not hit.size:
            notes.append("the linearised overlaps never reached saturation: t* = t_end")
        Qs = traj.Q[i_star]
        opts = {**options.to_dict(), "t_end": t_end}
        if options.orthant != "sampled" and is_antipodal_pair(spec):
            # R_k2 = -R_k1: the pair (R_11, R_21)(t*) is Gaussian; collapse iff equal signs.
            Ssub = cov_star[np.ix_([0, K], [0, K])]
            denom = math.sqrt(Ssub[0, 0] * Ssub[1, 1])
            if not denom > 0:
                raise ValueError(f"spec: the linearised overlap of a component has zero "
                                 f"variance at t* = {t_star:g}: the correlation is undefined "
                                 "and the linear estimator does not apply; use method='ode'")
            rho = float(Ssub[0, 1] / denom)
            p = 0.5 + math.asin(max(-1.0, min(1.0, rho))) / math.pi
            return CollapseResult(
                self.name, p, (p, p), None, None, d, spec.to_dict(), options=opts,
                details={"t_star": t_star, "rho": rho, "orthant": "closed form"},
                notes=tuple(notes))
        rng = np.random.default_rng(seed)
        # the covariance is singular whenever T is (rank(T) < K): factor it by eigh
        lam, V = np.linalg.eigh(cov_star)
        L = V * np.sqrt(np.clip(lam, 0.0, None))
        z = rng.standard_normal((draws, M * K)) @ L.T
        R = z.reshape(draws, M, K)
        collapsed, mech = classify(np.broadcast_to(Qs, (draws, M, M)), R, T)
        prop = proportion(int(collapsed.sum()), draws)
        return CollapseResult(
            self.name, prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
            options={**opts, "seed": seed}, outcomes=collapsed, mechanisms=mech,
            details={"t_star": t_star, "orthant": "sampled"}, notes=tuple(notes))
