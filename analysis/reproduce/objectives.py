r"""Figure job ``objectives_collapse`` of ``mfvi reproduce`` (issue 12): reverse against forward KL.

P(mode collapse) of the reverse KL ``KL(q || p_beta)`` and of the forward KL
``KL(p_beta || q)`` from the SAME initial conditions, K = M = 2, A = |mu|^2 = 9, s = Delta = 1,
fixed equal component weights, for a symmetric target (pi = 0.5, 0.5) and an unbalanced one
(pi = 0.8, 0.2), without annealing (beta = 1) and with the annealings of the plan: the reverse
KL tempers (``p_beta ~ p^beta``) with the exponential schedule ``T(t) = 1 + (T0 - 1)
exp(-t / tau)``; the forward KL follows the inflation path ``p_beta = sum_a pi_a N(mu_a,
(Delta / beta) I)`` (the tempered mixture cannot be sampled; this one can, exactly) with the
same schedule.  Time is the gradient-flow time t = eta * steps.

Engine: real VI in R^d (:func:`analysis.montecarlo.simulate`, SGD with n samples per component
per step, the ``stl`` estimator for the reverse KL and the sample mean of the exact gradient
under p_beta for the forward KL, :mod:`analysis.mc_objectives`), the same (d, seed) for both
objectives: run i of both has the same target frame and the same initial means
``m_k(0) ~ N(0, (sigma_init^2 / d) I)``.  Hence, besides the two Wilson 95% intervals, the
2 x 2 table per target and annealing of (reverse collapsed?, forward collapsed?) on the same
draws.  The ``ode`` estimator (theory ensemble, gradient flow) is used instead when the
registered ``ode`` estimator declares ``"forward-kl"`` in its ``objectives``
(``plan.engine = "auto"``); the sidecar says which engine ran, and why.  The SGD noise at
eta = 0.02 raises the reverse KL's collapse above its gradient-flow value (README: 0.19
against 0.006 at T0 = 20, tau = 100, d = 1000): the comparison is between the two objectives
under the same optimiser, not a gradient-flow statement.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..figures import save_figure
from .registry import FigureContext, figure_job

__all__ = ["ObjectivesPlan", "objectives_table", "FULL", "QUICK", "FULL_FLOW", "QUICK_FLOW",
           "choose_engine"]


@dataclass(frozen=True)
class ObjectivesPlan:
    """Sizes of the ``objectives_collapse`` figure.

    pis : target weights (pi_1, pi_2) of each panel; annealings : (T0, tau) of the exponential
    schedules (beta = 1 is always included first); seeds : runs (or draws) per configuration;
    eta, n : SGD step and samples per component per step (montecarlo engine); engine :
    ``"auto"`` (ode if it supports the forward KL, else montecarlo), ``"montecarlo"`` or
    ``"ode"``.
    """

    A: float = 9.0
    d: int = 1000
    seeds: int = 200
    pis: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.8, 0.2))
    annealings: tuple[tuple[float, float], ...] = ((20.0, 10.0), (20.0, 100.0))
    eta: float = 0.02
    n: int = 8
    seed: int = 0
    engine: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


# the committed figure: real SGD in R^d for both objectives (engine='ode', or 'auto' now that
# ode declares the forward KL, gives the gradient flow)
FULL = ObjectivesPlan(engine="montecarlo")
QUICK = ObjectivesPlan(d=40, seeds=12, annealings=((20.0, 2.0),))
# its gradient-flow counterpart (job objectives_collapse_flow): the ode ensemble, same setup,
# 2000 draws (about 20 s)
FULL_FLOW = ObjectivesPlan(engine="ode", seeds=2000)
QUICK_FLOW = ObjectivesPlan(engine="ode", d=40, seeds=12, annealings=((20.0, 2.0),))


def choose_engine(plan: ObjectivesPlan) -> tuple[str, str]:
    """(engine, reason): ``ode`` where it supports the forward KL (and plan.engine allows),
    else ``montecarlo``."""
    from ..estimators import ESTIMATORS
    ode = ESTIMATORS.get("ode")
    ode_fkl = ode is not None and "forward-kl" in tuple(getattr(ode, "objectives", ()))
    if plan.engine == "montecarlo":
        return "montecarlo", "plan.engine = 'montecarlo'"
    if plan.engine == "ode":
        if not ode_fkl:
            raise ValueError("engine: the ode estimator does not support the forward-kl "
                             "objective here; use 'montecarlo' or 'auto'")
        return "ode", "plan.engine = 'ode'"
    if plan.engine != "auto":
        raise ValueError(f"engine: must be 'auto', 'montecarlo' or 'ode', got {plan.engine!r}")
    if ode_fkl:
        return "ode", "the ode estimator declares the forward-kl objective"
    return "montecarlo", ("the ode estimator does not declare the forward-kl objective (the "
                          "expanded engine for it is not on this branch): real SGD in R^d for "
                          "both objectives")


def _specs(plan: ObjectivesPlan, pi: tuple[float, float], annealing: tuple[float, float] | None):
    from derivations.spec import (
        AnnealingPath,
        ConstantSchedule,
        ExponentialSchedule,
        TargetMixture,
        symmetric_bimodal,
    )
    base = symmetric_bimodal(plan.A)
    t = base.target
    sched = ConstantSchedule(1.0) if annealing is None else ExponentialSchedule(*annealing)
    rev = base.replace(target=TargetMixture(t.gram, tuple(pi), t.variance), schedule=sched)
    fwd = rev.replace(objective="forward-kl", path=AnnealingPath("inflation"))
    return rev, fwd


def _outcomes(engine: str, spec: Any, plan: ObjectivesPlan, progress: bool
              ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(collapsed (S,), valid (S,), details) of one configuration."""
    if engine == "montecarlo":
        from ..montecarlo import MonteCarloConfig, simulate
        r = simulate(spec, MonteCarloConfig(d=plan.d, seeds=plan.seeds, seed=plan.seed,
                                            eta=plan.eta, n=plan.n), progress=progress)
        return r.collapsed, r.mechanism != 3, {
            "t_end": r.t_end, "steps": r.steps, "n_undecided": r.n_undecided,
            "n_diverged": r.n_diverged, "wall_time": r.wall_time, "notes": list(r.notes)}
    from ..collapse import collapse_probability
    res = collapse_probability(spec, plan.d, "ode", draws=plan.seeds, seed=plan.seed)
    mech = np.asarray(res.mechanisms)
    return np.asarray(res.outcomes, dtype=bool), mech != 3, dict(res.details)


def objectives_table(plan: ObjectivesPlan, progress: bool = False,
                     log=lambda msg: None) -> dict:
    """Every (target, annealing): P(collapse) with Wilson 95% intervals for both objectives and
    the 2 x 2 table ``[[both, reverse only], [forward only, neither]]`` on the same draws."""
    from ..stats import proportion
    engine, reason = choose_engine(plan)
    rows = []
    for pi in plan.pis:
        for ann in (None,) + tuple(plan.annealings):
            rev, fwd = _specs(plan, pi, ann)
            t0 = time.perf_counter()
            cr, vr, dr = _outcomes(engine, rev, plan, progress)
            cf, vf, df = _outcomes(engine, fwd, plan, progress)
            both = vr & vf
            a, b = cr[both], cf[both]
            table = [[int(np.sum(a & b)), int(np.sum(a & ~b))],
                     [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
            pr = proportion(int(cr[vr].sum()), int(vr.sum()))
            pf = proportion(int(cf[vf].sum()), int(vf.sum()))
            label = "beta = 1" if ann is None else f"exponential T0={ann[0]:g}, tau={ann[1]:g}"
            rows.append({
                "pi": list(pi), "annealing": label,
                "T0": None if ann is None else ann[0], "tau": None if ann is None else ann[1],
                "reverse": {"p": pr.p, "ci": list(pr.ci), "k": pr.k, "n": pr.n,
                            "path": rev.path.kind, "details": dr},
                "forward": {"p": pf.p, "ci": list(pf.ci), "k": pf.k, "n": pf.n,
                            "path": fwd.path.kind, "details": df},
                "table": table,
                "table_layout": "[[reverse & forward collapsed, reverse only], "
                                "[forward only, neither]] on the draws finite in both",
                "seconds": time.perf_counter() - t0})
            log(f"objectives_collapse: pi = {pi}, {label}: reverse {pr.k}/{pr.n}, forward "
                f"{pf.k}/{pf.n}, table {table} ({rows[-1]['seconds']:.0f} s)")
    return {"engine": engine, "engine_reason": reason, "rows": rows}


def _plot(out: dict, plan: ObjectivesPlan):
    from ..figures import _plt
    plt = _plt()
    npan = len(plan.pis)
    fig, axes = plt.subplots(1, npan, figsize=(5.2 * npan, 4.6), squeeze=False)
    for ax, pi in zip(axes[0], plan.pis):
        rows = [r for r in out["rows"] if tuple(r["pi"]) == tuple(pi)]
        x = np.arange(len(rows))
        for key, off, mk, col, lab in (("reverse", -0.08, "o", "C0", "reverse KL (tempering)"),
                                       ("forward", 0.08, "s", "C3",
                                        "forward KL (inflation path)")):
            p = np.array([r[key]["p"] for r in rows])
            lo = np.array([r[key]["ci"][0] for r in rows])
            hi = np.array([r[key]["ci"][1] for r in rows])
            ax.errorbar(x + off, p, yerr=[np.maximum(p - lo, 0), np.maximum(hi - p, 0)], fmt=mk, color=col, capsize=4,
                        label=lab)
        ax.set_xticks(x, [r["annealing"].replace("exponential ", "exp\n") for r in rows],
                      fontsize=8)
        ax.set_ylim(-0.05, 1.45)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("P(collapse)  (Wilson 95%)")
        ax.set_title(f"pi = ({pi[0]:g}, {pi[1]:g}), A = {plan.A:g}, d = {plan.d}", fontsize=10)
        lines = ["same draws: [[both, rev only], [fwd only, neither]]"]
        for r in rows:
            t = r["table"]
            lines.append(f"{r['annealing']}: [[{t[0][0]}, {t[0][1]}], [{t[1][0]}, {t[1][1]}]]")
        ax.text(0.02, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=7,
                family="monospace")
        ax.legend(loc="center right", fontsize=8)
    eng = (f"real SGD in R^d, eta = {plan.eta:g}, n = {plan.n}, {plan.seeds} seeds"
           if out["engine"] == "montecarlo" else f"ode ensemble, {plan.seeds} draws")
    fig.suptitle(f"reverse vs forward KL from the same initial means, K = M = 2 ({eng})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _save(plan: ObjectivesPlan, ctx: FigureContext, name: str) -> Path:
    t0 = time.perf_counter()
    out = objectives_table(plan, progress=False, log=ctx.log)
    fig = _plot(out, plan)
    return save_figure(fig, ctx.out_dir / f"{name}.png",
                       {"plan": plan.to_dict(), "quick": ctx.quick, **out,
                        "same_initial_conditions": "run i of both objectives uses the same "
                        "seed: the same target frame and the same initial means",
                        "wall_time": time.perf_counter() - t0})


@figure_job("objectives_collapse", full=FULL, quick=QUICK,
            summary="P(collapse) reverse vs forward KL on the same initial conditions, "
                    "symmetric/unbalanced, with and without annealing, 2x2 tables (real SGD "
                    "in R^d)")
def objectives_collapse(plan: ObjectivesPlan, ctx: FigureContext) -> Path:
    return _save(plan, ctx, "objectives_collapse")


@figure_job("objectives_collapse_flow", full=FULL_FLOW, quick=QUICK_FLOW,
            summary="the same comparison under the gradient flow (ode ensemble, 2000 draws)")
def objectives_collapse_flow(plan: ObjectivesPlan, ctx: FigureContext) -> Path:
    return _save(plan, ctx, "objectives_collapse_flow")
