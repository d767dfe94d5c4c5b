"""Finite-step figure jobs of ``mfvi reproduce`` (issue 10): SGD collapses more than the flow.

Both jobs: symmetric bimodal target A = 9, constant beta = 1, n = 8 samples per component,
the reduced SGD engine (``sgd`` estimator, exact law of SGD in R^d at any d) with Wilson 95%
intervals, against the effective-overlap prediction of :mod:`analysis.finite_step` and the
gradient flow's separatrix value.

1. ``sgd_eta_d`` -> ``sgd_eta_d.png``: P(collapse) over (eta, d), d from 1e2 to 1e6 (stl),
   with the prediction also on the O(eta) corrected ODE (``modified=True``: the GD map's own
   departure from the flow; one table of critical angles per eta).
2. ``sgd_vs_eta`` -> ``sgd_vs_eta.png``: P(collapse) against eta at d = 1000, stl and reparam.

End time: t_end = 25 instead of the estimator's default 50 (``Plan.t_end``): at beta = 1 the
outcomes are settled long before (400 draws at d = 1e6, 1e3 and 1e2 had identical outcomes at
t = 15, 25 and 50 on the same noise); the sidecar records each point's ``n_undecided`` (runs
whose classification still changed in the final window).  Engine points are memoised within
the process, so the second job reuses the first's stl points at d = 1000.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from derivations.spec import symmetric_bimodal

from ..figures import save_figure
from .registry import FigureContext, figure_job

__all__ = ["EtaDPlan", "EtaPlan", "engine_point"]


@dataclass(frozen=True)
class EtaDPlan:
    """Sizes of ``sgd_eta_d``."""

    A: float = 9.0
    n: int = 8
    ds: tuple[int, ...] = (100, 1000, 10_000, 100_000, 1_000_000)
    etas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    draws: int = 600
    t_end: float = 25.0
    seed: int = 10
    theory_ds: tuple[float, ...] = tuple(float(x) for x in np.logspace(2, 6, 17))
    n_eps_per_decade: int = 8
    tol: float = 1e-4
    modified: bool = True
    modified_eps_per_decade: int = 6
    modified_tol: float = 1e-3


@dataclass(frozen=True)
class EtaPlan:
    """Sizes of ``sgd_vs_eta``."""

    A: float = 9.0
    n: int = 8
    d: int = 1000
    etas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)
    draws: int = 600
    t_end: float = 25.0
    seed: int = 10
    theory_etas: tuple[float, ...] = tuple(float(x) for x in np.geomspace(0.005, 0.2, 12))
    reparam_theory_etas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2)
    n_eps_per_decade: int = 8
    tol: float = 1e-4
    reparam_eps_per_decade: int = 4
    reparam_tol: float = 1e-3
    reparam_dt: float = 0.1


QUICK_ETA_D = EtaDPlan(ds=(100, 10_000), etas=(0.05, 0.2), draws=150,
                       theory_ds=(100.0, 1000.0, 10_000.0), n_eps_per_decade=4, tol=1e-3,
                       modified_eps_per_decade=4)
QUICK_ETA = EtaPlan(etas=(0.05, 0.2), draws=150, theory_etas=(0.02, 0.05, 0.1, 0.2),
                    reparam_theory_etas=(0.2,), n_eps_per_decade=4, tol=1e-3, reparam_dt=0.2)

#: The stl theory's table of critical angles, shared between the two jobs of one process
#: (keyed by A and the table's accuracy; reused only where it covers the amplitudes needed).
_TABLES: dict = {}


@functools.lru_cache(maxsize=256)
def engine_point(A: float, d: int, eta: float, n: int, estimator: str, draws: int,
                 t_end: float, seed: int) -> str:
    """One engine point (JSON string: memoised, immutable): ``collapse_probability(...,
    "sgd")`` at constant beta = 1, with its Wilson interval, counts, undecided runs and wall
    time.  The jobs derive each point's seed from the plan's seed, d, eta and the estimator
    (:func:`_point_seed`): distinct points are independent, a shared point is the same."""
    from ..collapse import collapse_probability
    spec = symmetric_bimodal(A)
    t0 = time.perf_counter()
    r = collapse_probability(spec, int(d), "sgd", draws=int(draws), seed=int(seed), eta=eta,
                             n=int(n), estimator=estimator, t_end=float(t_end), progress=False)
    return json.dumps({"d": int(d), "eta": float(eta), "n": int(n), "estimator": estimator,
                       "p": r.p, "lo": r.ci[0], "hi": r.ci[1], "k": r.k, "draws": r.n,
                       "seed": int(seed), "t_end": r.details["t_end"],
                       "steps": r.details["steps"], "n_undecided": r.details["n_undecided"],
                       "n_diverged": r.details["n_diverged"],
                       "wall_s": time.perf_counter() - t0})


def _point_seed(seed: int, d: int, eta: float, estimator: str) -> int:
    return int(seed) * 1_000_003 + int(d) % 999_983 + int(round(eta * 1e5)) * 7 \
        + (500_009 if estimator == "reparam" else 0)


def _points(A: float, n: int, ds, etas, estimator: str, draws: int, t_end: float, seed: int,
            ctx: FigureContext, label: str) -> list[list[dict]]:
    rows = []
    for eta in etas:
        row = []
        for d in ds:
            r = json.loads(engine_point(float(A), int(d), float(eta), int(n), estimator,
                                        int(draws), float(t_end),
                                        _point_seed(seed, d, eta, estimator)))
            ctx.log(f"{label}: {estimator} d={d:g} eta={eta:g}: P = {r['p']:.3f} "
                    f"[{r['lo']:.3f}, {r['hi']:.3f}] ({r['wall_s']:.1f} s)")
            row.append(r)
        rows.append(row)
    return rows


def _within(theory: float, point: dict) -> bool:
    return bool(point["lo"] <= theory <= point["hi"])


@figure_job("sgd_eta_d", full=EtaDPlan(), quick=QUICK_ETA_D,
            summary="P(collapse) of SGD over (eta, d), d = 1e2..1e6: reduced engine, "
                    "effective-overlap prediction, gradient flow")
def sgd_eta_d(plan: EtaDPlan, ctx: FigureContext) -> Path:
    from ..figures_finite_steps import plot_sgd_eta_d
    from ..finite_step import effective_overlap_grid
    spec = symmetric_bimodal(plan.A)
    t0 = time.perf_counter()
    ds_all = sorted({int(round(x)) for x in plan.theory_ds} | set(plan.ds))
    key = (plan.A, plan.n_eps_per_decade, plan.tol)
    grid = effective_overlap_grid(spec, ds_all, plan.etas, plan.n, "stl",
                                  n_eps_per_decade=plan.n_eps_per_decade, tol=plan.tol,
                                  table=_TABLES.get(key))
    _TABLES[key] = grid.table
    mod = None
    if plan.modified:           # the same on the O(eta) corrected ODE (one table per eta)
        mod = effective_overlap_grid(spec, ds_all, plan.etas, plan.n, "stl", modified=True,
                                     n_eps_per_decade=plan.modified_eps_per_decade,
                                     tol=plan.modified_tol)
    t_theory = time.perf_counter() - t0
    ctx.log(f"sgd_eta_d: effective-overlap theory on {len(plan.etas)} x {len(ds_all)} "
            f"points{' (and on the corrected ODE)' if mod else ''} in {t_theory:.1f} s")
    pts = _points(plan.A, plan.n, plan.ds, plan.etas, "stl", plan.draws, plan.t_end,
                  plan.seed, ctx, "sgd_eta_d")
    cols = [ds_all.index(d) for d in plan.ds]
    th = grid.p[:, cols]
    flow = grid.p_flow[0]
    eng = {k: np.array([[r[k] for r in row] for row in pts]) for k in ("p", "lo", "hi")}
    inside = [[_within(float(th[i, j]), pts[i][j]) for j in range(len(plan.ds))]
              for i in range(len(plan.etas))]
    above_flow = [[bool(pts[i][j]["lo"] > flow[cols[j]]) for j in range(len(plan.ds))]
                  for i in range(len(plan.etas))]
    extra: dict = {"modified": None}
    if mod is not None:
        thm = mod.p[:, cols]
        inside_m = [[_within(float(thm[i, j]), pts[i][j]) for j in range(len(plan.ds))]
                    for i in range(len(plan.etas))]
        extra = {"modified": {"theory_p": thm, "theory_inside_ci": inside_m,
                              "n_inside": int(np.sum(inside_m)),
                              "curve": {"d": ds_all, "p": mod.p, "p_gd": mod.p_flow}}}
    fig = plot_sgd_eta_d(plan.ds, plan.etas, eng, ds_all, grid.p, flow,
                         theory_mod=None if mod is None else mod.p,
                         title=f"SGD (stl, n = {plan.n}, beta = 1) against the flow, "
                               f"A = {plan.A:g}, {plan.draws} draws per point")
    return save_figure(fig, ctx.out_dir / "sgd_eta_d.png", {
        "plan": asdict(plan), "spec": spec.to_dict(), "estimator": "stl",
        "ds": list(plan.ds), "etas": list(plan.etas), "engine": pts,
        "theory_p": th, "flow_p": flow[cols],
        "theory_curve": {"d": ds_all, "p": grid.p, "p_flow": flow,
                         "eps_eff": grid.eps_eff, "shared_table": grid.shared_table},
        "theory_inside_ci": inside, "n_inside": int(np.sum(inside)),
        "n_points": len(plan.ds) * len(plan.etas), "engine_above_flow": above_flow,
        "theory_seconds": t_theory, **extra,
        "engine_seconds": float(sum(r["wall_s"] for row in pts for r in row))})


@figure_job("sgd_vs_eta", full=EtaPlan(), quick=QUICK_ETA,
            summary="P(collapse) against the SGD step eta at d = 1000, stl and reparam, "
                    "with the effective-overlap prediction and the flow")
def sgd_vs_eta(plan: EtaPlan, ctx: FigureContext) -> Path:
    from ..figures_finite_steps import plot_sgd_vs_eta
    from ..finite_step import effective_overlap_grid, effective_overlap_prediction
    spec = symmetric_bimodal(plan.A)
    t0 = time.perf_counter()
    etas_all = sorted(set(plan.theory_etas) | set(plan.etas))
    key = (plan.A, plan.n_eps_per_decade, plan.tol)
    stl = effective_overlap_grid(spec, [plan.d], etas_all, plan.n, "stl",
                                 n_eps_per_decade=plan.n_eps_per_decade, tol=plan.tol,
                                 table=_TABLES.get(key))
    _TABLES[key] = stl.table
    rep = [effective_overlap_prediction(spec, plan.d, e, plan.n, "reparam",
                                        dt=plan.reparam_dt,
                                        n_eps_per_decade=plan.reparam_eps_per_decade,
                                        tol=plan.reparam_tol)
           for e in plan.reparam_theory_etas]
    t_theory = time.perf_counter() - t0
    ctx.log(f"sgd_vs_eta: theory (stl on {len(etas_all)} steps, reparam on "
            f"{len(rep)}) in {t_theory:.1f} s")
    engines, params = [], {}
    stl_at = {e: float(stl.p[etas_all.index(e), 0]) for e in plan.etas}
    rep_at = {e: r.p for e, r in zip(plan.reparam_theory_etas, rep)}
    for est, color in (("stl", "C0"), ("reparam", "C3")):
        pts = [row[0] for row in _points(plan.A, plan.n, [plan.d], plan.etas, est, plan.draws,
                                         plan.t_end, plan.seed, ctx, "sgd_vs_eta")]
        engines.append({"label": f"SGD engine, {est}", "color": color,
                        **{k: [r[k] for r in pts] for k in ("p", "lo", "hi")}})
        theory = stl_at if est == "stl" else rep_at
        params[est] = {"engine": pts, "theory_at_engine_eta": {
            f"{e:g}": theory[e] for e in plan.etas if e in theory},
            "theory_inside_ci": {f"{e:g}": _within(theory[e], r)
                                 for e, r in zip(plan.etas, pts) if e in theory}}
    flow_p = float(stl.p_flow[0, 0])
    theories = [{"label": "effective-overlap prediction, stl", "eta": etas_all,
                 "p": stl.p[:, 0], "color": "C0", "style": "-"},
                {"label": "prediction, reparam (with out-of-span inflation)",
                 "eta": list(plan.reparam_theory_etas), "p": [r.p for r in rep],
                 "color": "C3", "style": "x--"}]
    fig = plot_sgd_vs_eta(plan.etas, engines, theories, flow_p,
                          title=f"SGD at d = {plan.d}, n = {plan.n}, beta = 1, A = {plan.A:g}: "
                                f"{plan.draws} draws per point")
    return save_figure(fig, ctx.out_dir / "sgd_vs_eta.png", {
        "plan": asdict(plan), "spec": spec.to_dict(), "d": plan.d, "etas": list(plan.etas),
        "flow_p": flow_p, "stl_theory_curve": {"eta": etas_all, "p": stl.p[:, 0]},
        "reparam_theory": [r.to_dict() for r in rep], **params,
        "theory_seconds": t_theory})
