"""``mfvi reproduce``: the headline figure set, computed from scratch into ``figures/``.

Each figure is a registered job (:mod:`analysis.reproduce.registry`) in a module of this
package: :mod:`~analysis.reproduce.headline` holds the K = M = 2 gradient-flow set (phase
diagrams, P against d, trajectories, bifurcation and stability), the other modules one topic
each.  Every PNG has a JSON sidecar with its parameters and numbers.  Intermediate results are
resumable sweeps under ``results_dir``: a killed run resumes where it stopped.
``quick=True`` uses each job's small plan (a smoke test).
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path

# headline first (the figure order of the README), then every other module of the package
from . import headline
from .headline import FULL, QUICK, Plan
from .registry import FigureContext, FigureJob, figure_job, registered_jobs

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in ("registry", "headline") and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

#: Names of the registered figure jobs, in the order they run.
FIGURES: tuple[str, ...] = tuple(registered_jobs())

__all__ = ["FIGURES", "FULL", "QUICK", "Plan", "FigureContext", "FigureJob", "figure_job",
           "registered_jobs", "reproduce", "headline"]


def reproduce(out_dir: str | Path = "figures", results_dir: str | Path | None = None, *,
              quick: bool = False, progress: bool = True,
              only: set[str] | None = None) -> dict[str, list[Path]]:
    """Run the registered figure jobs into ``out_dir``; returns {job name: paths made}.

    ``results_dir`` (default ``out_dir/../results/reproduce[-quick]``) holds the resumable
    sweeps.  ``only`` restricts to some of :data:`FIGURES` (unknown names: ValueError).
    A job that skipped itself (an optional extra missing) maps to an empty list.
    """
    jobs = registered_jobs()
    if only is not None:
        unknown = sorted(set(only) - set(jobs))
        if unknown:
            raise ValueError(f"only: unknown figure(s) {unknown}; choose from {list(jobs)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if results_dir is None:
        results_dir = out_dir.parent / "results" / ("reproduce-quick" if quick else "reproduce")
    ctx = FigureContext(Path(out_dir), Path(results_dir), progress=progress, quick=quick)
    made: dict[str, list[Path]] = {}
    for name, job in jobs.items():
        if only is not None and name not in only:
            continue
        t0 = time.perf_counter()
        ctx.log(f"{name} ...")
        made[name] = job.run(ctx)
        where = ", ".join(str(p) for p in made[name]) or "skipped"
        ctx.log(f"{name} done in {time.perf_counter() - t0:.1f} s -> {where}")
    return made
