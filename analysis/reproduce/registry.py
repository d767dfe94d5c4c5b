"""The figure-job registry of ``mfvi reproduce``.

A figure job is a function ``job(plan, ctx) -> Path | Sequence[Path] | None`` registered with
:func:`figure_job` under a name (what ``mfvi reproduce --only NAME`` takes), with two plans
(frozen dataclasses holding every size of the figure: ``full`` for the headline run, ``quick``
for the smoke test that CI runs).  A new figure is one module in this package that registers
its jobs; :mod:`analysis.reproduce` imports every module of the package, so nothing else is
edited.  A job that needs an optional extra which is not installed returns ``None`` after
logging why: the run goes on and reports the figure as skipped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FigureContext", "FigureJob", "figure_job", "registered_jobs"]


@dataclass(frozen=True)
class FigureContext:
    """What a figure job may use besides its plan.

    ``out_dir``: where the PNG and its JSON sidecar go.  ``results_dir``: root of the resumable
    intermediate results (:meth:`results` gives a job its own subdirectory).  ``progress``:
    whether to report on stderr.  ``quick``: the smoke-test plan is in use.
    """

    out_dir: Path
    results_dir: Path
    progress: bool = True
    quick: bool = False

    def results(self, name: str) -> Path:
        """The resumable-results directory of one sweep, ``results_dir / name``."""
        return self.results_dir / name

    def log(self, msg: str) -> None:
        """One progress line on stderr (when ``progress``)."""
        if self.progress:
            print(f"[mfvi reproduce] {msg}", file=sys.stderr, flush=True)


JobResult = Path | Sequence[Path] | None


@dataclass(frozen=True)
class FigureJob:
    """One registered figure job: ``func(plan, ctx)`` with the plan chosen by ``ctx.quick``."""

    name: str
    func: Callable[[Any, FigureContext], JobResult]
    full: Any
    quick: Any
    summary: str

    def plan(self, quick: bool) -> Any:
        return self.quick if quick else self.full

    def run(self, ctx: FigureContext) -> list[Path]:
        """Run the job; the paths it made (empty when it skipped itself)."""
        made = self.func(self.plan(ctx.quick), ctx)
        if made is None:
            return []
        if isinstance(made, (str, Path)):
            return [Path(made)]
        return [Path(p) for p in made]


_JOBS: dict[str, FigureJob] = {}


def figure_job(name: str, *, full: Any, quick: Any,
               summary: str) -> Callable[[Callable[[Any, FigureContext], JobResult]],
                                         Callable[[Any, FigureContext], JobResult]]:
    """Register ``func(plan, ctx)`` as the figure job ``name`` (decorator).

    ``name`` must be a new identifier (ASCII letters, digits, ``_``); ``full`` and ``quick`` are
    the plans of the headline and the smoke-test run; ``summary`` is one line for
    ``mfvi reproduce --list``.
    """
    if not name.isascii() or not name.isidentifier():
        raise ValueError(f"figure_job: name {name!r} must be ASCII letters, digits and _, "
                         "not starting with a digit")
    if name in _JOBS:
        raise ValueError(f"figure_job: {name!r} is registered twice "
                         f"({_JOBS[name].func.__module__} and this one)")

    def register(func: Callable[[Any, FigureContext], JobResult]):
        _JOBS[name] = FigureJob(name, func, full, quick, summary)
        return func

    return register


def registered_jobs() -> dict[str, FigureJob]:
    """The registered jobs in registration order (a copy)."""
    return dict(_JOBS)
