"""The headline figure jobs of ``mfvi reproduce``: the K = M = 2 gradient-flow set.

Figures (each PNG has a JSON sidecar with its parameters and numbers):

1. ``phase_T0_tau.png`` — collapse probability over (T0, tau) of the exponential schedule,
   symmetric bimodal target A = 9, d = 1000, from the separatrix formula (heat map), with the
   theory ensemble (``ode``) and real SGD in R^d (``montecarlo``) at a few cells.
2. ``collapse_vs_d.png`` — P(collapse) against d from 10^2 to 10^6 with and without
   annealing (separatrix, one table of critical angles per schedule), ``ode`` points with
   Wilson intervals, and fitted power laws.
3. ``trajectories.png`` — Q(t), R(t): reduced ODE against the deterministic d-dimensional
   flow from the same initial means, and a few SGD runs in R^d.
4. ``bifurcation_beta.png`` — fixed points of the symmetric bimodal model against beta
   (continuation), stable solid, unstable dashed, folds and branch points marked.
5. ``stability_beta_A.png`` — number of stable collapsed fixed points over (beta, A), with
   the fold curve from continuation.
6. ``phase_linear_T0_tau.png``, ``phase_A_sigma.png``, ``phase_pi_A.png`` — the other
   sweeps: (T0, tau) of the linear schedule and (A, sigma_init) under the exponential one
   (separatrix, d = 1000), and (pi_1, A) of an unbalanced target without annealing (theory
   ensemble, where the separatrix formula does not apply).

All eight jobs share one :class:`Plan` (``FULL`` for the headline run, ``QUICK`` for the smoke
test); intermediate results are resumable sweeps (:mod:`analysis.sweep`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from derivations.spec import (
    ConstantSchedule,
    ExponentialSchedule,
    LinearSchedule,
    symmetric_bimodal,
)

from ..figures import (
    fit_power_law,
    plot_collapse_heatmap,
    plot_collapse_vs_d,
    plot_stability_diagram,
    plot_trajectories,
    save_figure,
)
from .registry import FigureContext, figure_job

__all__ = ["Plan", "FULL", "QUICK"]

@dataclass(frozen=True)
class Plan:
    """Sizes of the reproduce run."""

    A: float = 9.0
    d: int = 1000
    T0s: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 25.0, 50.0)
    taus: tuple[float, ...] = (3.0, 10.0, 30.0, 100.0, 300.0)
    sep_tol: float = 1e-4
    sep_eps_per_decade: int = 8
    ode_cells: tuple[tuple[float, float], ...] = ((6.0, 10.0), (25.0, 30.0), (25.0, 3.0))
    ode_draws: int = 2000
    mc_cells: tuple[tuple[float, float], ...] = ((6.0, 3.0), (25.0, 3.0))
    mc_seeds: int = 200
    mc_d: int = 1000
    eta: float = 0.02
    ds: tuple[float, ...] = tuple(float(x) for x in np.logspace(2, 6, 9))
    ode_ds: tuple[int, ...] = (100, 1000, 10000)
    traj_d: int = 1000
    traj_sgd_runs: int = 4
    traj_samples: int = 2 ** 14
    bif_A: float = 9.0
    betas: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.1, 1.0, 10))
    As: tuple[float, ...] = (3.0, 4.5, 6.0, 7.5, 9.0, 12.0, 15.0)
    fold_As: tuple[float, ...] = (5.5, 6.0, 7.5, 9.0, 12.0, 15.0)
    lin_T0s: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 25.0, 50.0)
    lin_taus: tuple[float, ...] = (3.0, 10.0, 30.0, 100.0, 300.0)
    sweep_As: tuple[float, ...] = (4.0, 6.0, 9.0, 12.0, 16.0)
    sigmas: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    pis: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
    pi_As: tuple[float, ...] = (4.0, 9.0, 16.0)
    pi_draws: int = 1000


FULL = Plan()
QUICK = Plan(T0s=(3.0, 25.0), taus=(3.0, 30.0), sep_tol=1e-3, sep_eps_per_decade=4,
             ode_cells=((25.0, 3.0),), ode_draws=300, mc_cells=((25.0, 3.0),), mc_seeds=40,
             mc_d=200, ds=(1e2, 1e4, 1e6), ode_ds=(1000,), traj_d=200, traj_sgd_runs=2,
             traj_samples=2 ** 11, betas=(0.2, 0.6, 1.0), As=(4.0, 9.0), fold_As=(9.0,),
             lin_T0s=(3.0, 25.0), lin_taus=(3.0, 30.0), sweep_As=(4.0, 9.0), sigmas=(0.5, 1.0),
             pis=(0.5, 0.8), pi_As=(9.0,), pi_draws=300)


@figure_job("phase", full=FULL, quick=QUICK,
            summary="P(collapse) over (T0, tau), exponential schedule: separatrix heat map, ode and R^d SGD cells")
def _phase(plan: Plan, ctx: FigureContext) -> Path:
    from ..collapse import collapse_probability
    from ..phase import apply_cell, collapse_sweep
    base = symmetric_bimodal(plan.A, ExponentialSchedule(20.0, 100.0))
    opts = {"n_eps_per_decade": plan.sep_eps_per_decade, "tol": plan.sep_tol}
    res = collapse_sweep(base, {"T0": plan.T0s, "tau": plan.taus}, d=plan.d,
                         method="separatrix", out_dir=ctx.results("phase_T0_tau"),
                         options=opts, progress=ctx.progress)
    p = res.scalar("p")
    overlay, points = [], []
    for i, (T0, tau) in enumerate(plan.ode_cells):
        spec = apply_cell(base, {"T0": T0, "tau": tau})
        r = collapse_probability(spec, plan.d, "ode", draws=plan.ode_draws, seed=100 + i)
        overlay.append({"x": T0, "y": tau, "p": r.p, "lo": r.ci[0], "hi": r.ci[1],
                        "label": "ode ensemble", "color": "C1"})
    for i, (T0, tau) in enumerate(plan.mc_cells):
        spec = apply_cell(base, {"T0": T0, "tau": tau})
        r = collapse_probability(spec, plan.mc_d, "montecarlo", draws=plan.mc_seeds,
                                 seed=200 + i, eta=plan.eta, n=8, progress=ctx.progress)
        overlay.append({"x": T0, "y": tau, "p": r.p, "lo": r.ci[0], "hi": r.ci[1],
                        "label": f"SGD in R^d (eta={plan.eta}, d={plan.mc_d})", "color": "C3",
                        "offset": 30})
        points.append(r.to_dict() | {"T0": T0, "tau": tau})
    cut = int(np.argmin(np.abs(np.asarray(plan.taus) - 3.0)))
    fig = plot_collapse_heatmap(
        np.asarray(plan.T0s), np.asarray(plan.taus), p, xlabel="T0 (initial temperature)",
        ylabel="tau (schedule time scale)",
        title=f"P(collapse), exponential schedule, A={plan.A:g}, d={plan.d} (separatrix)",
        overlay=overlay, cut_index=cut, cut_label=f"cut at tau = {plan.taus[cut]:g}")
    return save_figure(fig, ctx.out_dir / "phase_T0_tau.png", {
        "plan": asdict(plan), "spec": base.to_dict(), "T0": plan.T0s, "tau": plan.taus,
        "p_separatrix": p, "overlay": overlay, "montecarlo": points})


@figure_job("vs_d", full=FULL, quick=QUICK,
            summary="P(collapse) against d, with and without annealing, with power-law fits")
def _vs_d(plan: Plan, ctx: FigureContext) -> Path:
    from ..collapse import collapse_probability, separatrix_vs_d
    curves, points, params = [], [], {"plan": asdict(plan)}
    for label, sch in (("no annealing", ConstantSchedule(1.0)),
                       ("exponential T0=20, tau=100", ExponentialSchedule(20.0, 100.0))):
        spec = symmetric_bimodal(plan.A, sch)
        p, err, table = separatrix_vs_d(spec, plan.ds, tol=plan.sep_tol * 0.1,
                                        n_eps_per_decade=plan.sep_eps_per_decade)
        fit = fit_power_law(np.asarray(plan.ds), p)
        curves.append({"d": plan.ds, "p": p, "label": f"separatrix, {label}", "fit": fit})
        ode = [collapse_probability(spec, d, "ode", draws=plan.ode_draws, seed=300 + j)
               for j, d in enumerate(plan.ode_ds)]
        points.append({"d": list(plan.ode_ds), "p": [r.p for r in ode],
                       "lo": [r.ci[0] for r in ode], "hi": [r.ci[1] for r in ode],
                       "label": f"ode ensemble, {label}"})
        params[label] = {"spec": spec.to_dict(), "d": plan.ds, "p_separatrix": p,
                         "error_bound": err, "power_law": {"exponent": fit[0], "prefactor": fit[1]},
                         "ode": [r.to_dict() for r in ode], "monotone": bool(table["monotone"].all())}
    fig = plot_collapse_vs_d(curves, points, title=f"symmetric bimodal, A={plan.A:g}")
    return save_figure(fig, ctx.out_dir / "collapse_vs_d.png", params)


@figure_job("trajectories", full=FULL, quick=QUICK,
            summary="Q(t), R(t): reduced ODE against the d-dimensional flow and SGD runs")
def _trajectories(plan: Plan, ctx: FigureContext) -> Path:
    from ..montecarlo import (
        MonteCarloConfig,
        cross_check,
        initial_means,
        realise_geometry,
        simulate,
    )
    spec = symmetric_bimodal(plan.A, ExponentialSchedule(5.0, 10.0))
    d = plan.traj_d
    mu, centres = realise_geometry(spec, d, seed=7)
    m0 = initial_means(spec, d, [0], seed=7, centres=centres)[0]
    t_end = 80.0
    cc = cross_check(spec, m0, mu, t_end, n_samples=plan.traj_samples, n_points=81)
    sgd = simulate(spec, MonteCarloConfig(d=d, seeds=plan.traj_sgd_runs, eta=plan.eta, n=8,
                                          t_end=t_end, n_records=81, seed=7),
                   target_means=mu, m0=np.broadcast_to(m0, (plan.traj_sgd_runs,) + m0.shape),
                   progress=False)
    fig = plot_trajectories(cc.t, cc.Q_ode, cc.R_ode, cc.t, cc.Q_mc, cc.R_mc,
                            title=f"reduced ODE (lines) vs deterministic flow in R^{d} "
                                  f"(markers); max deviation {cc.max_deviation:.1e}",
                            sim_label=f"deterministic flow, d={d}")
    axq, axr = fig.axes[:2]
    for k in range(2):
        axr.plot(sgd.t, sgd.R[:, :, k, 0].T, color="0.5", lw=0.6, alpha=0.6)
    axr.plot([], [], color="0.5", lw=0.6, label=f"SGD runs (eta={plan.eta}, n=8): R_k1")
    axr.legend(fontsize=7, ncol=2)
    return save_figure(fig, ctx.out_dir / "trajectories.png", {
        "plan": asdict(plan), "spec": spec.to_dict(), "d": d, "t_end": t_end,
        "max_deviation": cc.max_deviation, "sgd_collapsed": sgd.collapsed})


@figure_job("bifurcation", full=FULL, quick=QUICK,
            summary="fixed points against beta (continuation), folds and branch points")
def _bifurcation(plan: Plan, ctx: FigureContext) -> Path:
    from derivations.codegen import compile_model
    from solvers.continuation import ParameterMap, trace_branches

    from ..bifurcation import plot_bifurcation
    spec = symmetric_bimodal(plan.bif_A)
    model = compile_model(spec.structure)
    pmap = ParameterMap.from_spec(spec, "beta", 1.0)
    diagram = trace_branches(model, pmap, 0.05, 1.0, seed_values=[0.05, 0.5, 1.0],
                             max_branches=16)
    fig = plot_bifurcation(diagram, title=f"fixed points vs beta, symmetric bimodal A={plan.bif_A:g}")
    folds = [sp.p for _, sp in diagram.special_points("fold")]
    return save_figure(fig, ctx.out_dir / "bifurcation_beta.png", {
        "spec": spec.to_dict(), "beta_range": [0.05, 1.0], "folds": folds,
        "branches": len(diagram.branches)})


@figure_job("stability", full=FULL, quick=QUICK,
            summary="number of stable collapsed fixed points over (beta, A) with the fold curve")
def _stability(plan: Plan, ctx: FigureContext) -> Path:
    from ..phase import fold_curve, stability_sweep
    spec = symmetric_bimodal(plan.A)
    res = stability_sweep(spec, plan.betas, plan.As, out_dir=ctx.results("stability_beta_A"),
                          progress=ctx.progress)
    stable_collapsed = res.scalar("stable_collapsed")
    fold_As = np.asarray(plan.fold_As)
    fold_betas = fold_curve(spec, fold_As)
    fig = plot_stability_diagram(np.asarray(plan.betas), np.asarray(plan.As), stable_collapsed,
                                 fold_As, fold_betas,
                                 title="stable collapsed fixed points (symmetric bimodal)")
    return save_figure(fig, ctx.out_dir / "stability_beta_A.png", {
        "spec": spec.to_dict(), "beta": plan.betas, "A": plan.As,
        "stable_collapsed": stable_collapsed, "fold_A": fold_As, "fold_beta": fold_betas})


def _separatrix_heatmap(plan: Plan, ctx: FigureContext, spec, axes: dict, name: str,
                        xlabel: str, ylabel: str, title: str) -> Path:
    """A two-axis separatrix sweep at d = plan.d, drawn as a heat map into ``name``.png."""
    from ..phase import collapse_sweep
    opts = {"n_eps_per_decade": plan.sep_eps_per_decade, "tol": plan.sep_tol}
    res = collapse_sweep(spec, axes, d=plan.d, method="separatrix",
                         out_dir=ctx.results(name), options=opts, progress=ctx.progress)
    (xn, xv), (yn, yv) = axes.items()
    fig = plot_collapse_heatmap(np.asarray(xv), np.asarray(yv), res.scalar("p"),
                                xlabel=xlabel, ylabel=ylabel, title=title)
    return save_figure(fig, ctx.out_dir / f"{name}.png", {
        "plan": asdict(plan), "spec": spec.to_dict(), xn: xv, yn: yv,
        "p_separatrix": res.scalar("p")})


@figure_job("linear_schedule", full=FULL, quick=QUICK,
            summary="P(collapse) over (T0, tau) of the linear schedule (separatrix)")
def _linear_schedule(plan: Plan, ctx: FigureContext) -> Path:
    return _separatrix_heatmap(
        plan, ctx, symmetric_bimodal(plan.A, LinearSchedule(20.0, 100.0)),
        {"T0": plan.lin_T0s, "tau": plan.lin_taus}, "phase_linear_T0_tau",
        "T0 (initial temperature)", "tau (time to reach beta = 1)",
        f"P(collapse), linear schedule, A={plan.A:g}, d={plan.d} (separatrix)")


@figure_job("A_sigma", full=FULL, quick=QUICK,
            summary="P(collapse) over (A, sigma_init) under the exponential schedule (separatrix)")
def _A_sigma(plan: Plan, ctx: FigureContext) -> Path:
    return _separatrix_heatmap(
        plan, ctx, symmetric_bimodal(plan.A, ExponentialSchedule(20.0, 100.0)),
        {"A": plan.sweep_As, "sigma_init": plan.sigmas}, "phase_A_sigma", "A = |mu|^2",
        "sigma_init",
        f"P(collapse), exponential T0=20, tau=100, d={plan.d} (separatrix)")


@figure_job("pi_A", full=FULL, quick=QUICK,
            summary="P(collapse) over (pi_1, A) of an unbalanced target (ode ensemble)")
def _pi_A(plan: Plan, ctx: FigureContext) -> Path:
    from ..phase import collapse_sweep
    cold = symmetric_bimodal(plan.A, ConstantSchedule(1.0))
    res = collapse_sweep(cold, {"pi_1": plan.pis, "A": plan.pi_As}, d=plan.d, method="ode",
                         draws=plan.pi_draws, seed=400, out_dir=ctx.results("phase_pi_A"),
                         progress=ctx.progress)
    p = res.scalar("p")
    lo, hi = res.scalar("ci_low"), res.scalar("ci_high")
    fig = plot_collapse_heatmap(
        np.asarray(plan.pis), np.asarray(plan.pi_As), p, xlabel="pi_1 (weight of mode 1)",
        ylabel="A = |mu|^2", logx=False,
        title=f"P(collapse), no annealing, d={plan.d} (ode ensemble, {plan.pi_draws} draws)")
    return save_figure(fig, ctx.out_dir / "phase_pi_A.png", {
        "plan": asdict(plan), "spec": cold.to_dict(), "pi_1": plan.pis, "A": plan.pi_As,
        "p_ode": p, "ci_low": lo, "ci_high": hi})
