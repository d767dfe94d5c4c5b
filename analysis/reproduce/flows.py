"""Figure job ``flows`` of ``mfvi reproduce`` (issue 13): a RealNVP flow beside the mixture theory.

P(collapse) of RealNVP flows (Adam, t = lr x steps) and of the two-component mixture theory
(``ode`` estimator) on the symmetric bimodal target with well-separated modes (A = 36, d = 2),
for constant beta = 1 and exponential annealing, with Wilson 95% intervals
(:mod:`analysis.flows.compare`).  The whole (T0, tau) x d x A grid takes too long for
``mfvi reproduce``; ``benchmarks/flow_comparison.py`` makes it (``figures/flow_comparison.png``).

The flows use the default relaxation (10 time units after the schedule settles, as ``mfvi
flows``).  At A = 36 the runs are still moving then: with 30 (the grid's setting) more flows
drop a mode -- beta = 1: 0.73 -> 0.80, T0 = 20, tau = 2: 0.19 -> 0.34 of 64 (d = 2) -- while
the order of the schedules stays the same.

Needs the optional extra ``[flows]``; without it the job logs why and returns None.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..figures import save_figure
from ..flows import INSTALL_HINT, flows_available
from ..flows.compare import ComparisonPlan, comparison_table, plot_comparison
from .registry import FigureContext, figure_job

__all__ = ["FULL", "QUICK"]

#: headline: A = 36 in d = 2, beta = 1 and T0 = 20 at two rates; 32 flows and 1000 ode draws
FULL = ComparisonPlan(A_values=(36.0,), ds=(2,), T0s=(20.0,), taus=(0.5, 2.0), seeds=32,
                      mixture_draws=1000)
#: smoke test: one annealed cell, small flows, few seeds, short relaxation
QUICK = ComparisonPlan(A_values=(36.0,), ds=(2,), T0s=(20.0,), taus=(0.5,), seeds=8,
                       mixture_draws=200, include_constant=False,
                       flow=(("layers", 2), ("width", 8), ("n", 16), ("relax_time", 3.0),
                             ("eval_samples", 1024)))


@figure_job("flows", full=FULL, quick=QUICK,
            summary="P(collapse) of RealNVP flows beside the mixture theory (extra [flows])")
def flows_vs_mixture(plan: ComparisonPlan, ctx: FigureContext) -> Path | None:
    if not flows_available():
        ctx.log(f"flows: skipped, the optional extra [flows] is not installed ({INSTALL_HINT})")
        return None
    t0 = time.perf_counter()
    rows = comparison_table(plan, ctx.results("flows"), log=ctx.log)
    fig = plot_comparison(rows, "RealNVP flow (Adam, t = lr x steps) vs two-component mixture "
                                "theory (ode), symmetric bimodal")
    return save_figure(fig, ctx.out_dir / "flows_vs_mixture.png",
                       {"plan": plan.to_dict(), "rows": rows, "quick": ctx.quick,
                        "wall_time": time.perf_counter() - t0})
