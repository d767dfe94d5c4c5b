r"""Settings of a flow experiment (:class:`FlowConfig`) and its clock (no JAX here).

Clock.  The schedule ``beta(t)`` of the problem specification is read at ``t = dt * step``,
``step`` = 0, 1, ... the optimiser steps; ``dt`` defaults to the learning rate, so that
``t = lr * steps`` as for the SGD simulations of the mixture (DESIGN.md section 7: for plain
SGD on a parameter that acts as a location, such as the shift of a coupling layer, one unit of
t moves it as far as a unit of gradient-flow time moves a mixture mean).  With Adam, whose
steps are normalised coordinate-wise, ``t`` is a nominal clock: the (T0, tau) of a flow run and
of the mixture theory are compared as schedules of the same shape, not as equal durations.

End time (``t_end`` None): ``schedule.settle_time(beta_tol) + relax_time`` (beta within
``beta_tol`` of its final value, then a relaxation period), rounded up to whole chunks of
``chunk_steps`` steps (the compiled unit of work).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..validate import finite_float, fraction, positive_float, positive_int

__all__ = ["FlowConfig", "ESTIMATORS", "OPTIMIZERS"]

ESTIMATORS = ("reparam", "stl")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class FlowConfig:
    """A flow experiment: ``seeds`` independent RealNVP runs in dimension ``d``.

    Flow: ``layers`` affine coupling layers, conditioners with ``nn_depth`` hidden layers of
    ``width`` units, output layers scaled by ``init_scale`` at initialisation
    (:mod:`analysis.flows.realnvp`).  Training: ``n`` reparameterised samples per step and
    seed, gradient ``estimator`` (``reparam`` or ``stl``), ``optimizer`` (``adam``/``sgd``) with
    learning rate ``lr``; ``dt`` schedule time per step (default ``lr``); ``t_end`` (default
    from ``beta_tol`` and ``relax_time``, module docstring).  Collapse: ``eval_samples`` fresh
    samples per seed after training; a mode is empty when the Wilson 95% upper bound of its
    sample fraction is below ``mass_threshold`` (:mod:`analysis.flows.classify`).  Runs are
    ``run_offset .. run_offset + seeds - 1`` of base ``seed``; run i's random stream depends on
    (seed, i) only.
    """

    d: int
    seeds: int = 64
    seed: int = 0
    run_offset: int = 0
    layers: int = 4
    width: int = 32
    nn_depth: int = 1
    init_scale: float = 1.0
    n: int = 64
    estimator: str = "reparam"
    optimizer: str = "adam"
    lr: float = 0.01
    dt: float | None = None
    t_end: float | None = None
    beta_tol: float = 0.01
    relax_time: float = 10.0
    eval_samples: int = 4096
    mass_threshold: float = 0.01
    chunk_steps: int = 100

    def __post_init__(self) -> None:
        positive_int("d", self.d, 2)
        for name in ("seeds", "layers", "width", "nn_depth", "n", "eval_samples", "chunk_steps"):
            positive_int(name, getattr(self, name))
        for name in ("seed", "run_offset"):
            positive_int(name, getattr(self, name), 0)
        if self.seed >= 2 ** 32 or self.run_offset + self.seeds > 2 ** 31:
            raise ValueError(f"seed: must be < 2**32 and run_offset + seeds <= 2**31, got "
                             f"seed = {self.seed}, run_offset = {self.run_offset}")
        object.__setattr__(self, "init_scale",
                           positive_float("init_scale", self.init_scale, allow_zero=True))
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator: must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        object.__setattr__(self, "lr", positive_float("lr", self.lr))
        for name in ("dt", "t_end"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, positive_float(name, getattr(self, name)))
        bt = finite_float("beta_tol", self.beta_tol)
        if not 0 < bt < 1:
            raise ValueError(f"beta_tol: must lie in (0, 1), got {self.beta_tol!r}")
        object.__setattr__(self, "beta_tol", bt)
        object.__setattr__(self, "relax_time",
                           positive_float("relax_time", self.relax_time, allow_zero=True))
        mt = fraction("mass_threshold", self.mass_threshold)
        if not 0 < mt < 1:
            raise ValueError(f"mass_threshold: must lie in (0, 1), got {self.mass_threshold!r}")
        object.__setattr__(self, "mass_threshold", mt)
        # the smallest count a mode can have and still be "empty" must exist: k = 0 is empty
        # only if the Wilson upper bound of 0 of N, about z^2 / N, is below the threshold
        from ..stats import wilson_interval
        if wilson_interval(0, self.eval_samples)[1] >= mt:
            raise ValueError(f"eval_samples: {self.eval_samples} samples cannot show a mode's "
                             f"mass below mass_threshold = {mt:g} (the Wilson 95% upper bound "
                             f"of 0 of N is about 3.84 / N); use eval_samples >= "
                             f"{math.ceil(3.85 / mt)}")

    @property
    def step_time(self) -> float:
        """Schedule time per optimiser step: ``dt``, or ``lr`` by default."""
        return self.dt if self.dt is not None else self.lr

    def resolved_t_end(self, schedule: Any) -> tuple[float, str]:
        """(t_end, rule): the given ``t_end``, or settle time + relaxation (unrounded)."""
        if self.t_end is not None:
            return self.t_end, "given"
        t = schedule.settle_time(self.beta_tol) + self.relax_time
        if not math.isfinite(t) or t <= 0:
            raise ValueError(f"t_end: the schedule does not settle within beta_tol = "
                             f"{self.beta_tol:g} (settle time {t}); give t_end")
        return float(t), f"settle_time(beta_tol={self.beta_tol:g}) + relax_time"

    def n_steps(self, schedule: Any) -> int:
        """Optimiser steps: ``ceil(t_end / dt)`` rounded up to whole chunks."""
        t_end, _ = self.resolved_t_end(schedule)
        steps = max(1, math.ceil(t_end / self.step_time - 1e-9))
        return self.chunk_steps * math.ceil(steps / self.chunk_steps)

    def replace(self, **changes: Any) -> FlowConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
