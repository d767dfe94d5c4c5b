r"""``flow``: a RealNVP normalizing flow trained on the annealed reverse KL (issue 13).

Not an estimate of the mixture's collapse probability: the variational family is replaced by a
RealNVP flow (:mod:`analysis.flows`) trained by Adam or SGD from ``draws`` seeds on the same
target, path and schedule, so that the mixture theory's diagram can be set beside a flow's.
Collapse: some target mode holds statistically none of the trained flow's samples (Wilson upper
bound of its sample fraction below ``mass_threshold``; :mod:`analysis.flows.classify`).

This module imports nothing heavy: JAX and flowjax (the optional extra ``[flows]``) are
imported by :meth:`FlowEstimator.estimate`; without them ``check`` refuses (a ValueError naming
``pip install -e ".[flows]"``).
The executor is not used (JAX runs the stacked seeds on its own threads).
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field, fields

from derivations.spec import ProblemSpec

from .base import CollapseEstimator, CollapseResult, Cost, EstimatorOptions, register_estimator

__all__ = ["FlowEstimator", "FlowOptions"]


@dataclass(frozen=True)
class FlowOptions(EstimatorOptions):
    layers: int = field(default=4, metadata={"help": "flow: affine coupling layers"})
    width: int = field(default=32, metadata={"help": "flow: hidden units per conditioner layer"})
    nn_depth: int = field(default=1, metadata={"help": "flow: hidden layers per conditioner"})
    init_scale: float = field(default=1.0, metadata={
        "help": "flow: scale of the conditioners' initial output layers (0: start at N(0, I))"})
    n: int = field(default=64, metadata={"help": "reparameterised samples per seed per step"})
    estimator: str = field(default="reparam", metadata={
        "help": "gradient estimator", "choices": ("reparam", "stl")})
    optimizer: str = field(default="adam", metadata={
        "help": "optimiser", "choices": ("adam", "sgd")})
    lr: float = field(default=0.01, metadata={"help": "flow: learning rate"})
    dt: float | None = field(default=None, metadata={
        "help": "flow: schedule time per step, t = dt * steps (default: lr)"})
    t_end: float | None = field(default=None, metadata={
        "help": "final time (default: schedule settled within beta_tol, plus relax_time)"})
    beta_tol: float = field(default=0.01, metadata={"help": "flow: default t_end tolerance"})
    relax_time: float = field(default=10.0, metadata={
        "help": "flow: default t_end relaxation after the schedule settles"})
    eval_samples: int = field(default=4096, metadata={
        "help": "flow: fresh samples per seed for the collapse test"})
    mass_threshold: float = field(default=0.01, metadata={
        "help": "flow: a mode is empty when the Wilson 95 percent upper bound of its sample "
                "fraction is below this"})
    chunk_steps: int = field(default=100, metadata={
        "help": "flow: optimiser steps per compiled chunk"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.config(2, 1, 0)               # FlowConfig validates every field, naming it

    def config(self, d: int, seeds: int, seed: int):
        from ..flows.config import FlowConfig
        kw = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "progress"}
        return FlowConfig(d=d, seeds=seeds, seed=seed, **kw)


@register_estimator
class FlowEstimator(CollapseEstimator):
    name = "flow"
    summary = ("RealNVP normalizing flow (JAX/flowjax, extra [flows]) on the annealed reverse "
               "KL from many seeds: collapse = a mode with statistically no samples")
    Options = FlowOptions

    def check(self, spec: ProblemSpec, d: int, options: FlowOptions) -> None:
        super().check(spec, d, options)
        from ..flows import FlowsUnavailable, require_flows
        if d < 2:
            raise ValueError(f"d: the flow needs d >= 2 (a coupling layer splits the "
                             f"coordinates), got {d}")
        try:
            require_flows()
        except FlowsUnavailable as exc:     # rule 2: a refusal is a ValueError, named
            raise ValueError(f"method: {exc}") from exc

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: FlowOptions) -> Cost:
        """Measured on 2 loaded cores (d = 10, 32 seeds, n = 64, 4 layers of width 32: 70
        steps/s): about 1.5e-9 s per (seed x sample x layer x width x (d + width x nn_depth))
        and step, plus about 15 s of compilation; memory: the evaluation samples."""
        cfg = options.config(d, draws, 0)
        steps = cfg.n_steps(spec.schedule)
        per_step = 1.5e-9 * draws * cfg.n * cfg.layers * cfg.width * (d + cfg.width
                                                                     * cfg.nn_depth)
        nbytes = 4.0 * draws * cfg.eval_samples * (2 * d + 2 * spec.target.K + 4) + 64e6
        return Cost(nbytes, 15.0 + steps * max(per_step, 2e-4),
                    f"{draws} flows in d = {d}: {steps} steps of {cfg.n} samples")

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: FlowOptions) -> CollapseResult:
        import numpy as np

        from ..flows.run import run_flows
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
        cfg = options.config(d, draws, int(seed))
        r = run_flows(spec, cfg, progress=options.progress)
        s = r.summary()
        prop = r.fraction
        return CollapseResult(
            self.name, prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
            options={**cfg.to_dict(), "seeds": draws},
            outcomes=r.collapsed, mechanisms=r.classification.mechanism,
            details={k: s[k] for k in ("steps", "step_time", "t_end", "t_end_rule",
                                       "n_diverged", "n_undecided", "changed_final_window",
                                       "window_start_time", "min_mode_fraction",
                                       "kl", "steps_per_second", "versions")},
            notes=tuple(r.notes) + (() if executor is None else
                                    ("the executor is not used by the flow estimator",)),
            wall_time=r.wall_time)

