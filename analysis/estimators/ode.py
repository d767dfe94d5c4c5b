r"""``ode``: the theory ensemble (DESIGN.md section 3, estimator 1).

Draw ``(Q(0), R(0), alpha(0))`` from their exact law in dimension d
(:mod:`analysis.initial_law`: Gaussian projections + Bartlett-Wishart, no d-dimensional
vectors), integrate the reduced ODE of every draw (compiled, batched, DOPRI5) until the
schedule has settled and the flow has converged, classify (:mod:`analysis.classify`).
Uncertainty: Wilson 95% interval of k collapsed out of n draws.  Exact up to the ODE
tolerance for every d; the cost is one trajectory per draw.

Draws still moving at ``t_end`` (slow escapes from near a saddle) are integrated on, from where
they stand, for another ``t_end`` at a time, at most ``max_extensions`` times; what is left is
reported in ``notes`` and ``details``.  Seeds: chunk i draws from ``SeedSequence(seed).spawn``
child i, so the result does not depend on the executor.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from derivations.spec import ProblemSpec

from ..classify import classify
from ..stats import proportion
from ..validate import format_seconds
from .base import CollapseEstimator, CollapseResult, Cost, EstimatorOptions, register_estimator
from .common import (
    EXPANDED_MAX,
    chunked_initial_states,
    compiled_model,
    default_ode_t_end,
    merge_chunks,
    run_chunks,
    stationary_event,
)

__all__ = ["OdeEstimator", "OdeOptions", "ODE_CHUNK"]

#: Draws per chunk of the theory ensemble: one compiled call / executor task each.
ODE_CHUNK = 2000
#: Conservative wall time per draw and bytes per state entry, for the cost estimate (measured:
#: 0.2-2 ms per draw on 2 cores for K = M = 2).
_SECONDS_PER_DRAW = 2e-3


@dataclass(frozen=True)
class OdeOptions(EstimatorOptions):
    t_end: float | None = field(default=None, metadata={
        "help": "final time (default: schedule settled + 25 relaxation times)"})
    rtol: float = field(default=1e-8, metadata={"help": "relative tolerance of DOPRI5"})
    atol: float = field(default=1e-10, metadata={"help": "absolute tolerance of DOPRI5"})
    weight_threshold: float = field(default=1e-3, metadata={
        "help": "ignore components with weight below this in the classification"})
    chunk: int = field(default=ODE_CHUNK, metadata={"help": "draws per compiled call / task"})
    max_extensions: int = field(default=3, metadata={
        "help": "times t_end is extended for draws still moving"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.t_end is not None and self.t_end <= 0:
            raise ValueError(f"t_end: must be > 0, got {self.t_end}")
        for name in ("rtol", "atol"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.weight_threshold < 1:
            raise ValueError(f"weight_threshold: must lie in [0, 1), got {self.weight_threshold}")
        if self.chunk < 1:
            raise ValueError(f"chunk: must be >= 1, got {self.chunk}")
        if self.max_extensions < 0:
            raise ValueError(f"max_extensions: must be >= 0, got {self.max_extensions}")


def _solve_chunk(spec_json: str, Y0: np.ndarray, t_end: float, rtol: float, atol: float,
                 weight_threshold: float, d: int, progress: bool, max_extensions: int = 3
                 ) -> tuple:
    """Integrate one chunk of initial states to their outcome and classify (module-level:
    picklable).

    Members stop once stationary (:func:`~analysis.estimators.common.stationary_event`).
    Those still moving at ``t_end`` are integrated on for another ``t_end`` at a time, at most
    ``max_extensions`` times.  Returns (collapsed, mechanism, status, extensions used, members
    whose classification still changed in the last extension, modes missed per member, the
    occupancy (members, K) and whether some component sits between modes).
    """
    from solvers.ensemble import solve_ensemble
    from solvers.integrate import STATUS_SUCCESS
    spec = ProblemSpec.from_json(spec_json)
    model = compiled_model(spec)
    event = stationary_event(spec)
    from ..classify import between_modes, modes_missed, occupancy
    T = spec.target.T
    res = solve_ensemble(spec, model, Y0, t_end, rtol=rtol, atol=atol, event=event,
                         progress=progress, d=d)
    y = res.y_final.copy()
    status = res.status.copy()
    collapsed, mech = classify(res.Q_final, res.R_final, T, res.w_final, weight_threshold)
    w_end = res.w_final.copy()
    t_now, used, changed = t_end, 0, 0
    while used < max_extensions:
        moving = np.nonzero(status == STATUS_SUCCESS)[0]
        if moving.size == 0:
            break
        ext = solve_ensemble(spec, model, y[moving], t_now + t_end, t0=t_now, rtol=rtol,
                             atol=atol, event=event, progress=False, d=d)
        c_new, m_new = classify(ext.Q_final, ext.R_final, T, ext.w_final, weight_threshold)
        changed = int(np.count_nonzero(c_new != collapsed[moving]))
        y[moving], status[moving] = ext.y_final, ext.status
        w_end[moving] = ext.w_final
        collapsed[moving], mech[moving] = c_new, m_new
        t_now += t_end
        used += 1
    from solvers.layout import unpack_state
    Qf, Rf, _ = unpack_state(model, y)
    wk = w_end if spec.family.train_weights else None
    missed = modes_missed(Qf, Rf, T, wk, weight_threshold)
    return (collapsed, mech, status, used, changed, missed,
            occupancy(Qf, Rf, T, wk, weight_threshold), between_modes(Qf, Rf, T))


def _loop_seconds_per_draw(spec: ProblemSpec, t_end: float) -> float:
    """Rough wall time of one trajectory on the loop-form engine: its n-D kernels' node counts
    (:func:`solvers.softmax.grid_size`) at the target covariance ``s T / Delta^2`` and at two
    variational covariances, ``Q / s`` at the start (``sigma_init^2 I``) and with component
    k on mode k mod K; ~10 ns per node, row and logit (measured with 2 loaded cores), 3000 rhs
    evaluations per 100 time units.  Infinite where a kernel grid would be refused."""
    from solvers.softmax import MAX_NODES, grid_size, tolerance_for
    K, M = spec.structure.K, spec.structure.M
    T, s, D = spec.target.T, spec.family.variance, spec.target.variance

    def nodes(C: np.ndarray) -> float:
        n = C.shape[0]
        return 0.0 if n <= 3 else float(grid_size(np.ascontiguousarray(C), tolerance_for(n - 1)))

    c = np.zeros((M, K))
    c[np.arange(M), np.arange(M) % K] = 1.0
    nt = nodes(s * T / D**2)
    nq = max(nodes(spec.init.sigma_init**2 / s * np.eye(M)), nodes(c @ T @ c.T / s))
    if max(nt, nq) > MAX_NODES:
        return float("inf")
    rhs = 1e-8 * (nt * M * K + nq * M * M) + 2e-6
    return rhs * 3000.0 * max(1.0, t_end / 100.0)


@register_estimator
class OdeEstimator(CollapseEstimator):
    name = "ode"
    summary = "theory ensemble: exact finite-d initial law, reduced ODE per draw"
    Options = OdeOptions
    objectives = ("reverse-kl", "forward-kl")
    variances = ("fixed", "tied", "adiabatic")

    def check(self, spec: ProblemSpec, d: int, options: OdeOptions) -> None:
        super().check(spec, d, options)
        K, M = spec.structure.K, spec.structure.M
        if spec.objective == "forward-kl" and max(K, M) > EXPANDED_MAX:
            raise ValueError(f"K/M: the forward KL is derived by the expanded engine only "
                             f"(K, M <= {EXPANDED_MAX}); got K = {K}, M = {M} (the loop-form "
                             "engine implements the reverse KL)")
        # a kernel grid the n-D softmax rule would refuse mid-run is refused here, by name
        K, M = spec.structure.K, spec.structure.M
        if max(K, M) > EXPANDED_MAX and spec.family.variances != "fixed":
            raise ValueError(f"spec: variances={spec.family.variances!r} needs the expanded "
                             f"engine (K, M <= {EXPANDED_MAX}); the loop-form engine has fixed "
                             "variances only")
        if max(K, M) > EXPANDED_MAX:
            t_end = float(options.t_end or default_ode_t_end(spec))
            if not np.isfinite(_loop_seconds_per_draw(spec, t_end)):
                from solvers.softmax import MAX_NODES
                raise ValueError(
                    f"K/M: the n-D Gaussian softmax kernel cannot integrate this problem "
                    f"(K = {K}, M = {M}: its product grid would exceed {MAX_NODES:.0e} nodes); "
                    "today the loop-form engine reaches about K <= 4 at O(1) overlaps")

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: OdeOptions) -> Cost:
        n_state = spec.structure.n_state
        # initial states of every draw (held at once) + per-chunk ensemble workspace
        mem = 8.0 * draws * n_state * 2 + 8.0 * min(draws, options.chunk) * n_state * 40
        per_draw = _SECONDS_PER_DRAW
        what = f"{draws} trajectories"
        if max(spec.structure.K, spec.structure.M) > EXPANDED_MAX:
            t_end = float(options.t_end or default_ode_t_end(spec))
            per_draw = max(per_draw, _loop_seconds_per_draw(spec, t_end))
            # the n-D softmax kernel dominates; say so, and name the engine that does not
            # integrate Gaussian softmax expectations at all
            what = (f"{draws} trajectories at about {format_seconds(per_draw)} each, the "
                    f"loop-form engine's n-D softmax kernel; method='montecarlo' (real VI in "
                    f"R^d) does not need it")
        return Cost(mem, per_draw * draws, what)

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: OdeOptions) -> CollapseResult:
        from solvers.integrate import STATUS_SUCCESS

        t_end = float(options.t_end or default_ode_t_end(spec))
        Y0s = chunked_initial_states(spec, d, draws, seed, options.chunk)
        args = (t_end, options.rtol, options.atol, options.weight_threshold, d)
        parts = run_chunks(_solve_chunk, spec, Y0s, args, options.progress, options.max_extensions,
                           executor)
        collapsed, mech, status, details, more = merge_chunks(parts, STATUS_SUCCESS)
        missed = np.concatenate([p[5] for p in parts])
        details["modes_missed"] = {str(int(m)): int(np.count_nonzero(missed == m))
                                   for m in np.unique(missed)}
        from ..classify import occupancy_counts
        details["occupancy"] = occupancy_counts(np.concatenate([p[6] for p in parts]))
        details["between_modes"] = int(sum(int(np.count_nonzero(p[7])) for p in parts))
        notes = ["exact finite-d initial law; reduced ODE integrated until stationary "
                 "(|dy/dt| < 1e-7 after the schedule settled)", *more]
        if max(spec.structure.K, spec.structure.M) > EXPANDED_MAX:
            notes.append("loop-form engine (K or M > 3): Gaussian softmax expectations by the "
                         "n-D product rule of solvers.softmax (absolute error <= 1e-8 for "
                         "n - 1 <= 4 logits, <= 1e-6 above)")
        prop = proportion(int(collapsed.sum()), int(collapsed.size))
        return CollapseResult(
            self.name, prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
            options={**options.to_dict(), "t_end": t_end, "seed": seed},
            outcomes=collapsed, mechanisms=mech, details=details,
            notes=tuple(notes))
