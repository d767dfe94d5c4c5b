"""Figure job ``over_parameterisation`` of ``mfvi reproduce`` (issue 9): does M > K help?

P(collapse) against the number of extra components M - K, for K = 2 (M = 2, 3, 4) and K = 3
(M = 3, 4) equiangular modes (the simplex preset: the antipodal pair at K = 2, the centred
triangle at K = 3), d = 1000, A = 9, fixed equal weights, without annealing and with
exponential annealing (T0 = 20, tau = 100), from the ``ode`` estimator (exact finite-d initial
law, reduced ODE per draw; the loop-form engine for M > 3), with Wilson 95% intervals.  The
orthogonal preset at A = 9 does not collapse at all at beta = 1 (K = 2: 0/400 draws for M = 2
and 3), so it cannot show an effect.  Second panel: what the components do at the end without
annealing, as the distribution of the occupancy pattern (components per mode, sorted: "2+1" =
two components on one mode, one on the other; a 0 = a mode missed).  With fixed weights no
component can vanish; the sidecar also counts the draws with a component left between the
modes.  M = 5, 6 at K = 3 and all of K = 4 are beyond the n-D kernels' speed today (README):
one draw at (3, 4) costs about 1.3 CPU-s at beta = 1 and 5 annealed (the full plan: 13 min on
2 cores).
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
    """``cases``: (K, M, draws) per point; every case runs under every schedule."""
    cases: tuple[tuple[int, int, int], ...] = ((2, 2, 2000), (2, 3, 200), (2, 4, 60),
                                               (3, 3, 400), (3, 4, 100))
    A: float = 9.0
    d: int = 1000
    schedules: tuple[str, ...] = ("constant", "exponential")
    T0: float = 20.0
    tau: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        for case in self.cases:
            if len(case) != 3 or not (1 <= case[0] <= case[1]) or case[2] < 1:
                raise ValueError(f"cases: each case is (K, M, draws) with 1 <= K <= M and "
                                 f"draws >= 1, got {case!r}")
        for sched in self.schedules:
            if sched not in ("constant", "exponential"):
                raise ValueError(f"schedules: 'constant' or 'exponential', got {sched!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def over_parameterisation_table(plan: OverParamPlan, log=lambda msg: None) -> list[dict]:
    """One row per (schedule, K, M): p, ci, k, n, mechanisms, occupancy, between_modes,
    modes_missed, seconds."""
    from analysis.collapse import collapse_probability
    from derivations.spec import ConstantSchedule, ExponentialSchedule, simplex

    rows = []
    for sched in plan.schedules:
        schedule = ConstantSchedule(1.0) if sched == "constant" else \
            ExponentialSchedule(plan.T0, plan.tau)
        for K, M, draws in plan.cases:
            spec = simplex(K, M, plan.A, schedule)
            t0 = time.perf_counter()
            res = collapse_probability(spec, plan.d, "ode", draws=draws, seed=plan.seed)
            out = res.to_dict()
            rows.append({"schedule": sched, "K": K, "M": M, "p": res.p, "ci": list(res.ci),
                         "k": res.k, "n": res.n, "mechanisms": out["mechanisms"],
                         "occupancy": res.details.get("occupancy", {}),
                         "between_modes": res.details.get("between_modes"),
                         "modes_missed": res.details.get("modes_missed", {}),
                         "seconds": time.perf_counter() - t0})
            log(f"over_parameterisation: {sched} K = {K} M = {M}: P = {res.p:.3f} "
                f"({res.k}/{res.n}) in {rows[-1]['seconds']:.0f} s")
    return rows


def _plot(rows: list[dict], plan: OverParamPlan):
    from ..figures import _plt
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    Ks = sorted({x["K"] for x in rows})
    for sched, ls in zip(plan.schedules, ("-", "--")):
        for K, mk in zip(Ks, "os^v"):
            r = [x for x in rows if x["schedule"] == sched and x["K"] == K]
            if not r:
                continue
            shift = 0.04 * (Ks.index(K) - (len(Ks) - 1) / 2) + (0.12 if ls == "--" else 0)
            extra = [x["M"] - K + shift for x in r]
            p = [x["p"] for x in r]
            err = [[x["p"] - x["ci"][0] for x in r], [x["ci"][1] - x["p"] for x in r]]
            name = "beta = 1" if sched == "constant" else \
                f"exp. T0={plan.T0:g}, tau={plan.tau:g}"
            ax.errorbar(extra, p, yerr=err, marker=mk, ls=ls, capsize=4,
                        label=f"K = {K}, {name}")
    ax.set_xlabel("extra components M - K")
    ax.set_ylabel("P(collapse)  (Wilson 95%)")
    ax.set_xticks(sorted({x["M"] - x["K"] for x in rows}))
    ax.set_title(f"simplex modes, A = {plan.A:g}, d = {plan.d}")
    ax.legend(fontsize=8)
    r = [x for x in rows if x["schedule"] == plan.schedules[0]]
    patterns = sorted({k for x in r for k in x["occupancy"]},
                      key=lambda s: (len(s.split("+")), sum(map(int, s.split("+"))), s))
    labels = [f"({x['K']},{x['M']})" for x in r]
    bottom = [0.0] * len(r)
    for pat in patterns:
        frac = [x["occupancy"].get(pat, 0) / x["n"] for x in r]
        bx.bar(labels, frac, bottom=bottom, label=pat)
        bottom = [b + f for b, f in zip(bottom, frac)]
    bx.set_xlabel("(K, M)")
    bx.set_ylabel("fraction of draws")
    bx.set_title(f"final occupancy (components per mode), {plan.schedules[0]}")
    bx.legend(title="pattern", fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


FULL = OverParamPlan()
QUICK = OverParamPlan(cases=((2, 2, 40), (2, 3, 24), (3, 3, 8)), schedules=("constant",))


@figure_job("over_parameterisation", full=FULL, quick=QUICK,
            summary="P(collapse) against M - K (K = 2, 3; with and without annealing), and where "
                    "the components end")
def over_parameterisation(plan: OverParamPlan, ctx: FigureContext) -> Path:
    t0 = time.perf_counter()
    rows = over_parameterisation_table(plan, ctx.log)
    fig = _plot(rows, plan)
    return save_figure(fig, ctx.out_dir / "over_parameterisation.png",
                       {"plan": plan.to_dict(), "rows": rows, "quick": ctx.quick,
                        "wall_time": time.perf_counter() - t0})
