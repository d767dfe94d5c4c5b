"""Figure jobs of ``mfvi reproduce`` for the large-d law and schedule design (issue 11).

Symmetric bimodal target, two components with fixed equal weights, tempering path.

1. ``large_d_law`` -> ``large_d_law.png``: P(collapse) against d from 1e2 to 1e10 from the
   separatrix estimate and the closed-form law ``C d^-alpha L_eff(d)^p``
   (:func:`analysis.asymptotics.large_d_law`), without annealing and with an exponential
   schedule of fixed duration; the local slopes against d with the asymptote -alpha; and the
   annealing benefit ``P(annealed)/P(no annealing)`` against d for a fixed tau and for
   ``tau(d) = ln(d/(sigma_init^2 A)) / (2 lambda_s B(x*))`` (the escape kept at the stage
   beta* of the schedule, :func:`analysis.asymptotics.annealing_time_for_d`), both from the
   separatrix estimate at reduced accuracy (``scale_options``).
2. ``design_pareto`` -> ``design_pareto.png``: the designed P(collapse) against the budget per
   family (:func:`analysis.design.pareto_front`) with the best (T0, tau) cell of the
   exponential grid and the value without annealing, and the optimal free-form beta(t).

Cost: the Pareto optimisation is the expensive part (about 0.3-1 s per candidate).  The full
plan is therefore smaller than the issue's Pareto table (which ``benchmarks/bench_design.py``
prints for A = 9, 16 and d = 1e3, 1e5): one (A, d), three budgets, three families, a small
evaluation budget per design (``evals``) and a 3-cell grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from derivations.spec import ConstantSchedule, ExponentialSchedule, symmetric_bimodal

from ..figures import save_figure
from .registry import FigureContext, figure_job

__all__ = ["LargeDPlan", "ParetoPlan", "large_d_numbers", "pareto_numbers"]

_DECADES = tuple(float(x) for x in np.logspace(2, 10, 9))


@dataclass(frozen=True)
class LargeDPlan:
    """Sizes of ``large_d_law``."""

    A: float = 9.0
    ds: tuple[float, ...] = _DECADES
    T0: float = 20.0
    tau: float = 10.0
    fit_eps: tuple[float, ...] = tuple(np.geomspace(1e-4, 1e-7, 7).tolist())
    n_eps_per_decade: int = 6
    rel_tol: float = 1e-4
    horizon: float | None = None
    dt: float = 0.05
    n_dense: int = 81
    scale_ds: tuple[float, ...] = (1e2, 1e4, 1e6, 1e8, 1e10)
    beta_star: float = 0.5
    scale_options: dict = field(default_factory=lambda: {
        "n_eps_per_decade": 4, "rel_tol": 3e-3, "tol": 1e-4, "n_coarse": 4})


@dataclass(frozen=True)
class ParetoPlan:
    """Sizes of ``design_pareto``."""

    A: float = 9.0
    d: int = 1000
    budgets: tuple[float, ...] = (10.0, 30.0, 100.0)
    families: tuple[str, ...] = ("exponential", "linear", "free")
    evals: dict = field(default_factory=lambda: {"exponential": 8, "linear": 8, "free": 14})
    grid_T0: tuple[float, ...] = (5.0, 20.0, 100.0)
    grid_fractions: tuple[float, ...] = (1.0,)
    n_refine: int = 1
    search_options: dict | None = None          # None: analysis.design.SEARCH_SEPARATRIX
    final_options: dict | None = None           # None: the separatrix defaults
    seed: int = 0


LARGE_D_QUICK = LargeDPlan(ds=(1e2, 1e4, 1e6, 1e8, 1e10), tau=3.0,
                           fit_eps=(1e-4, 3e-6, 1e-7), n_eps_per_decade=3, rel_tol=1e-2,
                           horizon=300.0, dt=0.1, n_dense=21, scale_ds=(1e2, 1e10),
                           scale_options={"n_eps_per_decade": 3, "rel_tol": 1e-2, "tol": 1e-3,
                                          "n_coarse": 3})
PARETO_QUICK = ParetoPlan(budgets=(10.0, 30.0), families=("exponential", "free"),
                          evals={"exponential": 3, "free": 4}, grid_T0=(20.0,),
                          search_options={"n_eps_per_decade": 3, "tol": 3e-3, "rel_tol": 3e-2,
                                          "n_coarse": 3},
                          final_options={"n_eps_per_decade": 4, "tol": 1e-3, "rel_tol": 1e-2,
                                         "n_coarse": 4})


def large_d_numbers(plan: LargeDPlan, ctx: FigureContext | None = None) -> dict:
    """The numbers of ``large_d_law``: the law and its separatrix check per schedule, and the
    annealing-benefit ratios (fixed tau, tau ~ ln d)."""
    from ..asymptotics import annealing_time_for_d, escape_time, large_d_law
    from ..collapse import collapse_probability
    log = ctx.log if ctx is not None else (lambda m: None)
    curves, laws = [], {}
    d_dense = np.geomspace(min(plan.ds), max(plan.ds), plan.n_dense)
    for label, sch, color in (("no annealing", ConstantSchedule(1.0), "C0"),
                              (f"exponential T0={plan.T0:g}, tau={plan.tau:g}",
                               ExponentialSchedule(plan.T0, plan.tau), "C3")):
        log(f"large_d_law: {label}")
        law = large_d_law(symmetric_bimodal(plan.A, sch), fit_eps=plan.fit_eps,
                          check_ds=plan.ds, n_eps_per_decade=plan.n_eps_per_decade,
                          rel_tol=plan.rel_tol, beta_star=plan.beta_star,
                          horizon=plan.horizon, dt=plan.dt)
        laws[label] = law
        c = law.check
        curves.append({"label": label, "color": color, "ds": c["ds"],
                       "P_separatrix": c["P_separatrix"], "error_bound": c["error_bound"],
                       "P_law_at_ds": c["P_law"], "ratio": c["ratio"], "d_10pct": c["d_10pct"],
                       "d_dense": d_dense.tolist(),
                       "P_law": law.probability(d_dense).tolist(),
                       "slope_1e8_1e10": law.slope_1e8_1e10,
                       "local_slopes": law.local_slopes, "C": law.C, "F": law.schedule["F"],
                       "Delta_S": law.schedule["Delta_S"],
                       "log10_d_settled": law.annealing.get("log10_d_settled"),
                       "beta_escape": c.get("beta_escape"), "schedule": sch.to_dict()})
    law0 = laws["no annealing"]
    s2A = symmetric_bimodal(plan.A).init.sigma_init ** 2 * plan.A
    # the annealing benefit against d: fixed tau against tau(d) of the escape-stage rule
    base = symmetric_bimodal(plan.A)
    ds = np.asarray(plan.scale_ds, float)
    taus = np.asarray(annealing_time_for_d(ds, law0.lambda_s, s2A, plan.T0, plan.beta_star))
    tau_fixed = float(taus[0])
    P0, Pf, Ps, E0, Ef, Es = [], [], [], [], [], []

    def sep(spec, d):
        r = collapse_probability(spec, int(d), "separatrix", **plan.scale_options)
        return r.p, r.details["error_bound"]

    for d, tau_d in zip(ds, taus):
        log(f"large_d_law: benefit at d = {d:.0e} (tau fixed {tau_fixed:.3g}, "
            f"tau(d) {tau_d:.3g})")
        if d in law0.check["ds"]:      # no annealing: the law's separatrix check
            i = law0.check["ds"].index(d)
            p, e = law0.check["P_separatrix"][i], law0.check["error_bound"][i]
        else:
            p, e = sep(base, d)
        P0.append(p)
        E0.append(e)
        for P, E, tau in ((Pf, Ef, tau_fixed), (Ps, Es, float(tau_d))):
            p, e = sep(base.replace(schedule=ExponentialSchedule(plan.T0, tau)), d)
            P.append(p)
            E.append(e)
    P0, Pf, Ps, E0, Ef, Es = (np.asarray(x) for x in (P0, Pf, Ps, E0, Ef, Es))
    L = escape_time(ds, lambda_s=law0.lambda_s, kappa=law0.kappa, t_1=law0.t_1, sigma2A=s2A)
    r_s = Ps / P0
    scaling = {"ds": ds.tolist(), "T0": plan.T0, "beta_star": plan.beta_star,
               "tau_fixed": tau_fixed, "tau_scaled": taus.tolist(),
               "tau_per_ln_d": law0.annealing.get("tau_per_ln_d"),
               "P_no_annealing": P0.tolist(), "P_fixed": Pf.tolist(), "P_scaled": Ps.tolist(),
               "error_no_annealing": E0.tolist(), "error_fixed": Ef.tolist(),
               "error_scaled": Es.tolist(),
               "ratio_fixed": (Pf / P0).tolist(), "ratio_scaled": r_s.tolist(),
               "L_eff": L.tolist(),
               "ratio_law": (r_s[0] * (L[0] / L) ** law0.p).tolist(),
               "options": dict(plan.scale_options)}
    return {"alpha": law0.alpha, "kappa": law0.kappa, "p": law0.p,
            "lambda_s": law0.lambda_s, "lambda_a": law0.lambda_a, "c": law0.c,
            "t_1": law0.t_1, "C": law0.C, "latex": law0.latex, "curves": curves,
            "scaling": scaling}


def pareto_numbers(plan: ParetoPlan, ctx: FigureContext | None = None) -> dict:
    """The Pareto rows of ``design_pareto`` and P without annealing at the same d."""
    from ..collapse import collapse_probability
    from ..design import pareto_front
    log = ctx.log if ctx is not None else (lambda m: None)
    spec = symmetric_bimodal(plan.A)
    rows = []
    for fam in plan.families:
        log(f"design_pareto: {fam}, budgets {', '.join(f'{b:g}' for b in plan.budgets)}")
        rows += pareto_front(spec, plan.d, plan.budgets, families=[fam],
                             max_evaluations=plan.evals[fam], grid_T0=plan.grid_T0,
                             grid_fractions=plan.grid_fractions, n_refine=plan.n_refine,
                             search_options=plan.search_options,
                             final_options=plan.final_options, seed=plan.seed)
    p0 = collapse_probability(spec, plan.d, "separatrix", **(plan.final_options or {}))
    return {"rows": rows, "no_annealing": {"p": p0.p,
                                           "error_bound": p0.details["error_bound"]}}


@figure_job("large_d_law", full=LargeDPlan(), quick=LARGE_D_QUICK,
            summary="P(collapse) against d to 1e10: separatrix and the law C d^-alpha L^p, "
                    "local slopes, and how tau must grow with d to keep the benefit")
def _large_d_law(plan: LargeDPlan, ctx: FigureContext) -> Path:
    from ..figures_design import plot_large_d_law
    nums = large_d_numbers(plan, ctx)
    fig = plot_large_d_law(nums["curves"], nums["alpha"], nums["scaling"],
                           title=f"Large-d law, symmetric bimodal A = {plan.A:g}: alpha = "
                                 f"{nums['alpha']:.4f}, p = {nums['p']:.2g}")
    return save_figure(fig, ctx.out_dir / "large_d_law.png", {"plan": asdict(plan), **nums})


@figure_job("design_pareto", full=ParetoPlan(), quick=PARETO_QUICK,
            summary="designed P(collapse) against the annealing budget per family, and the "
                    "optimal free-form beta(t)")
def _design_pareto(plan: ParetoPlan, ctx: FigureContext) -> Path:
    from ..figures_design import plot_pareto
    nums = pareto_numbers(plan, ctx)
    fig = plot_pareto(nums["rows"], no_annealing=nums["no_annealing"]["p"],
                      title=f"Schedule design, symmetric bimodal A = {plan.A:g}, d = {plan.d} "
                            "(separatrix)")
    return save_figure(fig, ctx.out_dir / "design_pareto.png", {"plan": asdict(plan), **nums})
