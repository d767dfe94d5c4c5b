"""Figure job ``over_parameterisation`` of ``mfvi reproduce`` (issue 9): does M > K help?

P(collapse) against the number of components M = K .. 2K for K = 2 modes, d = 1000, A = 9,
fixed equal weights, without annealing (``schedules=("constant", "exponential")`` adds
exponential annealing, T0 = 20, tau = 100: about 7 CPU-s per draw at M = 4, too slow for the
headline run),
from the ``ode`` estimator (exact finite-d initial law, reduced ODE per draw; the loop-form
engine for M > 3), with Wilson 95% intervals.  The target is the antipodal pair (the simplex
preset at K = 2): the orthogonal preset at K = 2, A = 9 does not collapse at all (0/400 draws
for M = 2 and M = 3 without annealing), so it cannot show an effect.  Second panel: what the
components do at the end, as the distribution of the occupancy pattern (components per mode,
sorted: "2+1" = two components on one mode, one on the other; a 0 = a mode missed).  With
fixed weights no component can vanish; the sidecar also counts the draws with a component
left between the modes.  K = 3, 4 are beyond the n-D kernels' speed today (README).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..figures import save_figure
from .registry import FigureContext, figure_job

__all__ = ["OverParamPlan", "over_parameterisation_table"]


@dataclass(frozen=True)
class OverParamPlan:
    K: int = 2
    Ms: tuple[int, ...] = (2, 3, 4)
    draws: tuple[int, ...] = (2000, 200, 60)
    A: float = 9.0
    d: int = 1000
    schedules: tuple[str, ...] = ("constant",)
    T0: float = 20.0
    tau: float = 100.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def over_parameterisation_table(plan: OverParamPlan, log=lambda msg: None) -> list[dict]:
    """One row per (schedule, M): p, ci, k, n, mechanisms, occupancy, between_modes, seconds."""
    from analysis.collapse import collapse_probability
    from derivations.spec import ConstantSchedule, ExponentialSchedule, simplex

    rows = []
    for sched in plan.schedules:
        schedule = ConstantSchedule(1.0) if sched == "constant" else \
            ExponentialSchedule(plan.T0, plan.tau)
        for M, draws in zip(plan.Ms, plan.draws):
            spec = simplex(plan.K, M, plan.A, schedule)
            t0 = time.perf_counter()
            res = collapse_probability(spec, plan.d, "ode", draws=draws, seed=plan.seed)
            out = res.to_dict()
            rows.append({"schedule": sched, "K": plan.K, "M": M, "p": res.p, "ci": list(res.ci),
                         "k": res.k, "n": res.n, "mechanisms": out["mechanisms"],
                         "occupancy": res.details.get("occupancy", {}),
                         "between_modes": res.details.get("between_modes"),
                         "modes_missed": res.details.get("modes_missed", {}),
                         "seconds": time.perf_counter() - t0})
            log(f"over_parameterisation: {sched} M = {M}: P = {res.p:.3f} "
                f"({res.k}/{res.n}) in {rows[-1]['seconds']:.0f} s")
    return rows


def _plot(rows: list[dict], plan: OverParamPlan):
    from ..figures import _plt
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    for sched, mk in zip(plan.schedules, "os"):
        r = [x for x in rows if x["schedule"] == sched]
        Ms = [x["M"] for x in r]
        p = [x["p"] for x in r]
        err = [[x["p"] - x["ci"][0] for x in r], [x["ci"][1] - x["p"] for x in r]]
        label = "beta = 1" if sched == "constant" else f"exponential T0={plan.T0:g}, tau={plan.tau:g}"
        ax.errorbar(Ms, p, yerr=err, marker=mk, capsize=4, label=label)
    ax.set_xlabel("components M")
    ax.set_ylabel("P(collapse)  (Wilson 95%)")
    ax.set_xticks(list(plan.Ms))
    ax.set_title(f"K = {plan.K} antipodal modes, A = {plan.A:g}, d = {plan.d}")
    ax.legend()
    r = [x for x in rows if x["schedule"] == plan.schedules[0]]
    patterns = sorted({k for x in r for k in x["occupancy"]},
                      key=lambda s: (sum(map(int, s.split("+"))), s))
    bottom = [0.0] * len(r)
    for pat in patterns:
        frac = [x["occupancy"].get(pat, 0) / x["n"] for x in r]
        bx.bar([str(x["M"]) for x in r], frac, bottom=bottom, label=pat)
        bottom = [b + f for b, f in zip(bottom, frac)]
    bx.set_xlabel("components M")
    bx.set_ylabel("fraction of draws")
    bx.set_title(f"final occupancy (components per mode), {plan.schedules[0]}")
    bx.legend(title="pattern", fontsize=8)
    fig.tight_layout()
    return fig


FULL = OverParamPlan()
QUICK = OverParamPlan(Ms=(2, 3), draws=(40, 24), schedules=("constant",))


@figure_job("over_parameterisation", full=FULL, quick=QUICK,
            summary="P(collapse) against M = K..2K (K = 2), and where the components end")
def over_parameterisation(plan: OverParamPlan, ctx: FigureContext) -> Path:
    t0 = time.perf_counter()
    rows = over_parameterisation_table(plan, ctx.log)
    fig = _plot(rows, plan)
    return save_figure(fig, ctx.out_dir / "over_parameterisation.png",
                       {"plan": plan.to_dict(), "rows": rows, "quick": ctx.quick,
                        "wall_time": time.perf_counter() - t0})
