r"""``montecarlo``: real VI in R^d (DESIGN.md section 3, estimator 4).

Both objectives (reverse and forward KL, with their annealing paths) and every variance
treatment (fixed, tied, adiabatic) of :mod:`analysis.mc_objectives`.

SGD (or Adam) on d-dimensional means with reparameterised samples, from many seeds
(:mod:`analysis.montecarlo`); collapse fraction with a Wilson 95% interval.  SGD noise at
finite step size is an extra source of overlap and typically raises collapse above the
gradient flow's value.  Runs are split into chunks (one :func:`analysis.montecarlo.simulate`
call each, submitted to the executor if one is given); every run's random stream depends only
on (seed, run index), so the result does not depend on the chunking.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from derivations.spec import ProblemSpec

from ..stats import proportion
from .base import CollapseEstimator, CollapseResult, Cost, EstimatorOptions, register_estimator

__all__ = ["MonteCarloEstimator", "MonteCarloOptions"]


@dataclass(frozen=True)
class MonteCarloOptions(EstimatorOptions):
    eta: float | None = field(default=None, metadata={
        "help": "SGD step; t = eta * steps (default: analysis.mc_config.default_eta, "
                "min(0.02, stable step / 10))"})
    n: int = field(default=8, metadata={"help": "samples per component per step"})
    estimator: str = field(default="stl", metadata={
        "help": "gradient estimator", "choices": ("stl", "reparam")})
    optimizer: str = field(default="sgd", metadata={
        "help": "optimiser", "choices": ("sgd", "adam")})
    t_end: float | None = field(default=None, metadata={
        "help": "final time (default: schedule settled + relaxation, extended while outcomes "
                "change)"})
    weight_threshold: float = field(default=1e-3, metadata={
        "help": "ignore components with weight below this in the classification"})
    chunk: int | None = field(default=None, metadata={
        "help": "runs per simulate call (default: all, or draws/8 with an executor)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta is not None and self.eta <= 0:
            raise ValueError(f"eta: must be > 0, got {self.eta}")
        if self.n < 1:
            raise ValueError(f"n: must be >= 1, got {self.n}")
        if self.t_end is not None and self.t_end <= 0:
            raise ValueError(f"t_end: must be > 0, got {self.t_end}")
        if not 0 <= self.weight_threshold < 1:
            raise ValueError(f"weight_threshold: must lie in [0, 1), got {self.weight_threshold}")
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"chunk: must be >= 1, got {self.chunk}")


@register_estimator
class MonteCarloEstimator(CollapseEstimator):
    name = "montecarlo"
    summary = "real SGD/Adam VI in R^d from many seeds"
    Options = MonteCarloOptions
    #: Objectives and variance treatments the simulator runs (:mod:`analysis.mc_objectives`).
    objectives = ("reverse-kl", "forward-kl")
    variances = ("fixed", "tied", "adiabatic")

    def check(self, spec: ProblemSpec, d: int, options: MonteCarloOptions) -> None:
        """Refuse the combinations the simulator does not implement (ValueError naming the
        option): reparam with the forward KL or trainable variances."""
        from ..montecarlo import check_objective_support
        check_objective_support(spec, self._config(spec, d, 1, 0, 0, options))

    def _config(self, spec: ProblemSpec, d: int, seeds: int, seed: int, offset: int,
                options: MonteCarloOptions):
        from ..montecarlo import MonteCarloConfig
        kw = {k: getattr(options, k) for k in ("eta", "n", "estimator", "optimizer", "t_end",
                                                "weight_threshold")
              if getattr(options, k) is not None}
        # the cost guard already ran in collapse_probability (or was forced there)
        return MonteCarloConfig(d=d, seeds=seeds, seed=seed, run_offset=offset, force=True, **kw)

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: MonteCarloOptions) -> Cost:
        """The simulator's own estimate (:func:`analysis.mc_config.estimate_cost`), for the
        largest chunk of runs held in memory at once."""
        from ..mc_config import check_step, estimate_cost
        cfg = self._config(spec, d, draws, 0, 0, options).resolved(spec)
        runs = min(draws, options.chunk or draws)
        c = estimate_cost(spec, cfg, runs=runs)
        refusal = None
        if cfg.optimizer == "sgd":
            try:
                check_step(spec, cfg.eta)
            except ValueError as exc:     # unstable steps run only when forced
                refusal = str(exc)
        return Cost(c.bytes, c.seconds,
                    f"seeds = {draws} runs of n = {cfg.n} samples, d = {d}: {c.steps} steps "
                    f"of eta = {cfg.eta:g} on {c.threads} threads", refusal)

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: MonteCarloOptions) -> CollapseResult:
        from ..montecarlo import simulate
        chunk = options.chunk or (draws if executor is None else max(1, math.ceil(draws / 8)))
        offsets = list(range(0, draws, chunk))
        if seed is None:                    # fresh entropy, recorded in the options
            seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
        configs = [self._config(spec, d, min(chunk, draws - o), seed, o, options)
                   for o in offsets]
        if executor is None:
            results = [simulate(spec, c, progress=options.progress) for c in configs]
        else:
            futures = [executor.submit(simulate, spec, c, progress=False) for c in configs]
            results = [f.result() for f in futures]
        collapsed = np.concatenate([r.collapsed for r in results])
        mech = np.concatenate([r.mechanism for r in results])
        prop = proportion(int(collapsed.sum()), int(collapsed.size))
        return CollapseResult(
            self.name, prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
            options={**configs[0].to_dict(), "seeds": draws, "run_offset": 0,
                     "chunk": chunk},
            outcomes=collapsed, mechanisms=mech,
            details={"t_end": float(results[0].t_end),
                     "objective": spec.objective, "variances": spec.family.variances,
                     "n_undecided": int(sum(r.n_undecided for r in results)),
                     "eta": float(results[0].config.eta)},
            notes=("SGD with finite step and samples: its noise adds overlap beyond the "
                   "gradient flow",) + tuple(dict.fromkeys(
                       n for r in results for n in r.notes)))
