"""Phase diagrams: collapse probability and fixed-point stability over parameter grids.

Every grid cell is a task of :mod:`analysis.sweep` (one .npz + JSON manifest per cell,
written atomically; a killed sweep resumes where it stopped; an optional executor runs the
cells).  Axes a collapse sweep understands (:data:`COLLAPSE_AXES`):

* ``T0``, ``tau`` — the schedule's initial temperature and time scale (linear or exponential
  schedules; the family is the one of the base specification);
* ``A`` — ``|mu_1|^2`` of a symmetric target: T is rescaled so that ``T_11 = A``;
* ``sigma_init`` — the initialisation scale;
* ``pi_1`` — the first target weight of a two-mode target (``pi_2 = 1 - pi_1``).

The stability diagram over (beta, A) counts, in every cell, the stable fixed points by label
(:func:`solvers.fixedpoints.find_fixed_points`), and :func:`fold_curve` traces, by
pseudo-arclength continuation in beta at each A, where the stable collapsed state is born.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from derivations.spec import ProblemSpec, TargetMixture

from .sweep import Sweep, SweepResult, TaskOutput, run_sweep

__all__ = ["COLLAPSE_AXES", "apply_cell", "collapse_task", "collapse_sweep", "stability_task",
           "stability_sweep", "fold_curve", "LABELS"]

COLLAPSE_AXES = ("T0", "tau", "A", "sigma_init", "pi_1")
LABELS = ("split", "collapsed", "symmetric")


def apply_cell(spec: ProblemSpec, cell: Mapping[str, float]) -> ProblemSpec:
    """The specification with the axis values of one cell applied (see the module docstring)."""
    unknown = set(cell) - set(COLLAPSE_AXES)
    if unknown:
        raise ValueError(f"axes: unknown axis {sorted(unknown)}; known: {COLLAPSE_AXES}")
    for k, v in cell.items():
        if isinstance(v, (bool, str)) or not np.isfinite(v):
            raise ValueError(f"{k}: must be a finite number, got {v!r}")
    if "A" in cell and not cell["A"] > 0:
        raise ValueError(f"A: must be > 0, got {cell['A']}")
    if "pi_1" in cell and not 0 < cell["pi_1"] < 1:
        raise ValueError(f"pi_1: must lie in (0, 1), got {cell['pi_1']}")
    changes: dict[str, Any] = {}
    sched_changes = {k: float(cell[k]) for k in ("T0", "tau") if k in cell}
    if sched_changes:
        sch = spec.schedule
        names = {f.name for f in dataclasses.fields(sch)}
        if not set(sched_changes) <= names:
            raise ValueError(f"axes: {', '.join(sorted(set(sched_changes) - names))} is not a "
                             f"parameter of the {sch.kind} schedule of the base specification "
                             f"(its parameters: {', '.join(sorted(names)) or 'none'})")
        changes["schedule"] = dataclasses.replace(sch, **sched_changes)
    t = spec.target
    T, weights = t.T, t.weights
    if "A" in cell:
        if not T[0, 0] > 0:
            raise ValueError("axes: A rescales the target so that T_11 = A and needs T_11 > 0")
        T = T * (float(cell["A"]) / T[0, 0])
    if "pi_1" in cell:
        if t.K != 2:
            raise ValueError("axes: pi_1 needs a two-mode target")
        weights = (float(cell["pi_1"]), 1.0 - float(cell["pi_1"]))
    if "A" in cell or "pi_1" in cell:
        changes["target"] = TargetMixture(gram=T, weights=weights, variance=t.variance)
    if "sigma_init" in cell:
        i = spec.init
        changes["init"] = type(i)(float(cell["sigma_init"]), i.centre_gram, i.centre_overlaps)
    return spec.replace(**changes) if changes else spec


def collapse_task(params: dict, seed: int) -> TaskOutput:
    """One cell: ``collapse_probability`` at the cell's specification (picklable task)."""
    from .collapse import collapse_probability
    spec = apply_cell(ProblemSpec.from_dict(params["spec"]),
                      {k: params[k] for k in COLLAPSE_AXES if k in params})
    res = collapse_probability(spec, int(params["d"]), params["method"],
                               draws=int(params["draws"]), seed=seed,
                               **params.get("options", {}))
    arrays = {}
    if res.outcomes is not None:
        arrays["outcomes"] = res.outcomes.astype(bool)
        arrays["mechanisms"] = res.mechanisms.astype(np.int8)
    scalars = {"p": res.p, "ci_low": res.ci[0], "ci_high": res.ci[1], "k": res.k, "n": res.n,
               "method": res.method, "wall_time": res.wall_time, "details": res.details}
    return TaskOutput(arrays=arrays, scalars=scalars)


def collapse_sweep(spec: ProblemSpec, axes: Mapping[str, Sequence[float]], *, d: int,
                   method: str = "separatrix", draws: int = 2000,
                   out_dir: str | os.PathLike, seed: int = 0,
                   executor: Executor | None = None, options: dict | None = None,
                   progress: bool = True, name: str = "collapse") -> SweepResult:
    """Collapse probability on the grid ``axes`` (ordered mapping axis -> values).

    Returns the :class:`analysis.sweep.SweepResult`; ``result.scalar("p")`` has shape
    ``tuple(len(v) for v in axes.values())``.
    """
    for a in axes:
        if a not in COLLAPSE_AXES:
            raise ValueError(f"axes: unknown axis {a!r}; known: {COLLAPSE_AXES}")
    apply_cell(spec, {a: v[0] for a, v in axes.items()})  # fail early on a bad combination
    base = {"spec": spec.to_dict(), "d": int(d), "method": method, "draws": int(draws),
            "options": dict(options or {})}
    sweep = Sweep(name=name, axes={a: np.asarray(v, dtype=float) for a, v in axes.items()},
                  task=collapse_task, base=base, seed=seed)
    return run_sweep(sweep, out_dir, executor=executor, progress=progress)


def stability_task(params: dict, seed: int) -> TaskOutput:
    """One (beta, A) cell: stable fixed points by label (picklable task)."""
    from derivations.codegen import compile_model
    from solvers.fixedpoints import find_fixed_points
    spec = apply_cell(ProblemSpec.from_dict(params["spec"]), {"A": params["A"]})
    model = compile_model(spec.structure)
    fps = find_fixed_points(model, float(params["beta"]), spec.theta(),
                            n_random=int(params.get("n_random", 24)), seed=seed % (2 ** 31))
    points = list(fps)
    counts = {lab: sum(1 for f in points if f.stability.stable and f.label == lab)
              for lab in LABELS}
    return TaskOutput(arrays={"stable_by_label": np.array([counts[l] for l in LABELS])},
                      scalars={**{f"stable_{l}": c for l, c in counts.items()},
                               "n_fixed_points": len(points)})


def stability_sweep(spec: ProblemSpec, betas: Sequence[float], As: Sequence[float], *,
                    out_dir: str | os.PathLike, executor: Executor | None = None,
                    n_random: int = 24, progress: bool = True) -> SweepResult:
    """Stable fixed points by label on the (beta, A) grid."""
    base = {"spec": spec.to_dict(), "n_random": int(n_random)}
    sweep = Sweep(name="stability", axes={"beta": np.asarray(betas, dtype=float),
                                          "A": np.asarray(As, dtype=float)},
                  task=stability_task, base=base, seed=0)
    return run_sweep(sweep, out_dir, executor=executor, progress=progress)


def fold_curve(spec: ProblemSpec, As: Sequence[float], beta_range: tuple[float, float] = (0.05, 1.0)
               ) -> np.ndarray:
    """beta at which the stable collapsed fixed point is born (a fold), for each A.

    Continuation in beta (:func:`solvers.continuation.trace_branches`) at every A; the result
    is NaN where no such fold lies in ``beta_range``.
    """
    from derivations.codegen import compile_model
    from solvers.continuation import ParameterMap, continue_branch
    from solvers.fixedpoints import find_fixed_points
    lo, hi = float(beta_range[0]), float(beta_range[1])
    out = np.full(len(As), np.nan)
    for i, A in enumerate(As):
        s = apply_cell(spec, {"A": float(A)})
        model = compile_model(s.structure)
        theta = s.theta()
        pmap = ParameterMap.from_spec(s, "beta", hi)
        seeds = [f for f in find_fixed_points(model, hi, theta, n_random=16)
                 if f.stability.stable and f.label == "collapsed"]
        if not seeds:
            continue
        # follow the stable collapsed state towards high temperature until it folds
        br = continue_branch(model, pmap, seeds[0].y, hi, lo, hi, direction=-1)
        folds = [sp.p for sp in br.folds()]
        if folds:
            out[i] = max(folds)
    return out
