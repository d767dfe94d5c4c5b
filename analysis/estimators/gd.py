r"""``gd``: the theory ensemble of plain gradient descent at finite step (DESIGN.md section 7).

Draw ``(Q(0), R(0), alpha(0))`` from their exact law in dimension d
(:mod:`analysis.initial_law`), exactly as the ``ode`` estimator does (same chunking and
``SeedSequence(seed).spawn`` streams, so with the same seed and ``chunk`` both estimators start
from identical states), run the exact reduced GD map of :mod:`solvers.gd`

    m_k <- m_k - eta grad_{m_k} F   <=>   R' = A R - eta H T,
    Q' = A Q A^T - eta (A R H^T + H R^T A^T) + eta^2 H T H^T,   A = I - eta G,
    alpha' = alpha - eta dF/dalpha,

with beta(t_n) at t_n = n eta (t = eta * steps, the gradient-flow time), until the schedule has
settled and the state is stationary (the ode estimator's rule:
:func:`~analysis.estimators.common.stationary_event`, here ``max |y' - y| / eta < tol`` once
beta >= beta_final - 1e-3), and classify (:mod:`analysis.classify`).  No approximation: GD with
exact gradients at step eta is this map for every d.  It differs from the gradient flow by
O(eta) at fixed t; outcomes differ from the ``ode`` estimator's only on draws that start
within that distance of the basin boundary.  Uncertainty: Wilson 95% interval of k of n.

Options.  ``eta`` is required (there is no neutral default: the step is what this estimator is
about); omitting it is a ValueError naming eta, raised by ``check`` (``GdOptions()`` itself
constructs, as the estimator contract asks of every options class).  ``t_end`` defaults to the ode estimator's
(:func:`~analysis.estimators.common.default_ode_t_end`); draws still moving at ``t_end`` run on
for another ``t_end`` at a time, at most ``max_extensions`` times.

Stability.  GD diverges on a direction of curvature lambda once ``eta > 2 / lambda``; a step
above the bound :func:`analysis.mc_config.stable_step` (2 / L with L bounding every curvature
of F) is refused unless ``force`` (``--force``).  A forced run classifies a non-finite member
as ``diverged`` (not collapsed) and reports the count in ``notes`` and ``details``.
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
from .common import (
    chunked_initial_states,
    compiled_model,
    default_ode_t_end,
    merge_chunks,
    run_chunks,
    stationary_event,
)
from .ode import ODE_CHUNK

__all__ = ["GdEstimator", "GdOptions", "gd_initial_states"]

#: Measured wall time of one GD step of one draw at K = M = 2 (about 1 us on 2 cores with 2
#: threads, benchmarks/bench_gd.py), scaled by the state size for other structures.
_SECONDS_PER_STEP = 1e-6
_N_STATE_REFERENCE = 7


@dataclass(frozen=True)
class GdOptions(EstimatorOptions):
    eta: float | None = field(default=None, metadata={
        "help": "GD step (required for gd, > 0; t = eta * steps)"})
    t_end: float | None = field(default=None, metadata={
        "help": "final time (default: schedule settled + 25 relaxation times)"})
    tol: float = field(default=1e-7, metadata={
        "help": "stationary once max |y' - y| / eta < tol after the schedule settled"})
    weight_threshold: float = field(default=1e-3, metadata={
        "help": "ignore components with weight below this in the classification"})
    chunk: int = field(default=ODE_CHUNK, metadata={"help": "draws per compiled call / task"})
    max_extensions: int = field(default=3, metadata={
        "help": "times t_end is extended for draws still moving"})

    def __post_init__(self) -> None:
        super().__post_init__()
        # eta=None constructs (contract rule 1: every field has a default); check() refuses it
        if self.eta is not None and not self.eta > 0:
            raise ValueError(f"eta: must be > 0, got {self.eta}")
        if self.t_end is not None and self.t_end <= 0:
            raise ValueError(f"t_end: must be > 0, got {self.t_end}")
        if self.tol <= 0:
            raise ValueError(f"tol: must be > 0, got {self.tol}")
        if not 0 <= self.weight_threshold < 1:
            raise ValueError(f"weight_threshold: must lie in [0, 1), got {self.weight_threshold}")
        if self.chunk < 1:
            raise ValueError(f"chunk: must be >= 1, got {self.chunk}")
        if self.max_extensions < 0:
            raise ValueError(f"max_extensions: must be >= 0, got {self.max_extensions}")


def gd_initial_states(spec: ProblemSpec, d: int, draws: int, seed: int | None, chunk: int
                      ) -> list[np.ndarray]:
    """The initial states of the draws, chunk by chunk: the ``ode`` estimator's scheme
    (:func:`analysis.estimators.common.chunked_initial_states`), so the same seed and chunk
    give the same draws."""
    return chunked_initial_states(spec, d, draws, seed, chunk)


def _gd_chunk(spec_json: str, Y0: np.ndarray, eta: float, t_end: float, tol: float,
              weight_threshold: float, progress: bool, max_extensions: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Run one chunk of initial states to their outcome and classify (module-level:
    picklable).  Returns (collapsed, mechanism, status, extensions used, members whose
    classification still changed in the last extension)."""
    from solvers.gd import GD_RUNNING, solve_gd
    spec = ProblemSpec.from_json(spec_json)
    model = compiled_model(spec)
    event = stationary_event(spec)
    T = spec.target.T
    kw = {"tol": tol, "beta_min": event.beta_min}
    res = solve_gd(spec, model, Y0, eta, t_end=t_end, progress=progress, **kw)
    y, status = res.y_final.copy(), res.status.copy()
    steps = res.steps.copy()
    collapsed, mech = classify(res.Q_final, res.R_final, T, res.w_final, weight_threshold)
    n_end = int(round(t_end / eta))
    used, changed = 0, 0
    while used < max_extensions:
        moving = np.nonzero(status == GD_RUNNING)[0]
        if moving.size == 0:
            break
        step0 = int(steps[moving[0]])          # every moving member did all steps so far
        ext = solve_gd(spec, model, y[moving], eta, n_steps=n_end, step0=step0,
                       psd_tol=math.inf, **kw)
        c_new, m_new = classify(ext.Q_final, ext.R_final, T, ext.w_final, weight_threshold)
        changed = int(np.count_nonzero(c_new != collapsed[moving]))
        y[moving], status[moving] = ext.y_final, ext.status
        steps[moving] += ext.steps
        collapsed[moving], mech[moving] = c_new, m_new
        used += 1
    return collapsed, mech, status, used, changed


@register_estimator
class GdEstimator(CollapseEstimator):
    name = "gd"
    summary = ("theory ensemble of plain GD at step eta: exact finite-d initial law, exact "
               "reduced GD map per draw")
    Options = GdOptions

    def _t_end(self, spec: ProblemSpec, options: GdOptions) -> float:
        return float(options.t_end or default_ode_t_end(spec))

    def check(self, spec: ProblemSpec, d: int, options: GdOptions) -> None:
        """Refuses a missing eta (there is no default step) and a step longer than t_end.
        A step above the stability bound is refused by :meth:`cost` (unless forced)."""
        super().check(spec, d, options)
        if options.eta is None:
            raise ValueError("eta: required for the gd estimator (the GD step, a finite "
                             "number > 0; time t = eta * steps), e.g. eta=0.05 (--eta 0.05)")
        t_end = self._t_end(spec, options)
        if round(t_end / options.eta) < 1:
            raise ValueError(f"eta: the step {options.eta:g} is longer than t_end = {t_end:g} "
                             "(no GD step would be taken)")

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: GdOptions) -> Cost:
        """Memory: the initial states of every draw and per-chunk work; time: the worst case,
        every draw running t_end / eta steps and all ``max_extensions`` extensions (members
        stop earlier once stationary), at the measured rate.  Refuses (unless forced) a step
        above the stability bound."""
        from ..mc_config import stable_step
        n_state = spec.structure.n_state
        steps = round(self._t_end(spec, options) / options.eta) * (1 + options.max_extensions)
        mem = 8.0 * draws * n_state * 2 + 8.0 * min(draws, options.chunk) * n_state * 6
        secs = _SECONDS_PER_STEP * (n_state / _N_STATE_REFERENCE) * draws * steps
        bound = stable_step(spec)
        refusal = None
        if options.eta > bound:
            refusal = (f"eta: the GD step {options.eta:g} exceeds the stability bound 2 / "
                       f"(1/(4 s) + w beta/Delta + w gamma/sigma0^2) = {bound:.4g} of this "
                       f"problem (s = {spec.family.variance:g}, Delta = "
                       f"{spec.target.variance:g}): GD may diverge; use eta <= {bound:.4g} or "
                       "force=True")
        return Cost(mem, secs, f"{draws} draws x at most {steps} GD steps of eta = {options.eta:g}",
                    refusal)

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: GdOptions) -> CollapseResult:
        from solvers.gd import GD_NONFINITE, GD_RUNNING

        from ..classify import DIVERGED
        from ..mc_config import stable_step
        t_end = self._t_end(spec, options)
        eta = float(options.eta)
        Y0s = gd_initial_states(spec, d, draws, seed, options.chunk)
        args = (eta, t_end, options.tol, options.weight_threshold)
        parts = run_chunks(_gd_chunk, spec, Y0s, args, options.progress, options.max_extensions,
                           executor)
        collapsed, mech, status, details, more = merge_chunks(parts, GD_RUNNING)
        diverged = int(np.count_nonzero((status == GD_NONFINITE) | (mech == DIVERGED)))
        bound = stable_step(spec)
        notes = [f"exact finite-d initial law; exact reduced GD map at eta = {eta:g} "
                 f"(t = eta * steps; {eta / bound:.3g} of the stability bound {bound:.4g}) "
                 "until stationary (max |y' - y| / eta < "
                 f"{options.tol:g} after the schedule settled); differs from the gradient "
                 "flow by O(eta)", *more]
        if diverged:
            notes.append(f"{diverged} draws diverged (non-finite state): classified as "
                         "'diverged', not collapsed; the step is too large for them")
        prop = proportion(int(collapsed.sum()), int(collapsed.size))
        return CollapseResult(
            self.name, prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
            options={**options.to_dict(), "t_end": t_end, "seed": seed},
            outcomes=collapsed, mechanisms=mech,
            details={**details, "diverged": diverged, "eta": eta, "stable_step": bound},
            notes=tuple(notes))
