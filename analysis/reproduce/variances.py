r"""Figure job ``variance_bifurcation``: fixed points against beta with trainable variances.

``variance_bifurcation.png`` -- the bifurcation diagram in beta (tempering, beta from 0.05 to
1) of the symmetric bimodal target (K = M = 2, A = |mu|^2, Delta = 1, equal weights) for

* fixed variances (s = 1, left column), the diagram of ``bifurcation_beta.png``, and
* tied (trained) variances (right column): one common variance s trained through log s at
  the natural time scale ``d(log s)/dt = -(1/d) dF/d(log s)`` (DESIGN.md section 9,
  :func:`derivations.model.variance_treatment`), at dimension ``d`` (inv_d = 1/d enters the
  O(1/d) terms of the variance flow; the fixed points of the means do not depend on d
  otherwise).

Rows: the summaries ``collapse`` = (1/M) sum_k R_k1 and ``split`` = (R_11 - R_21)/2 of
:mod:`analysis.bifurcation`, and, for the tied flow, ``log s`` against the single-Gaussian
value log(Delta / beta) (dotted), to which every tied fixed point is pinned up to O(1/d).

The JSON sidecar holds, per treatment, the folds and branch points in beta, the beta ranges
over which each label has a stable fixed point, and (tied) s at the stable fixed points at a
few values of beta; with ``adiabatic`` in the plan also the folds of the adiabatic flow
(s = s*(beta) = Delta / beta substituted, the d -> infinity limit).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from derivations.spec import VariationalFamily, symmetric_bimodal

from ..figures import save_figure
from .registry import FigureContext, figure_job

__all__ = ["VariancePlan", "FULL", "QUICK"]


@dataclass(frozen=True)
class VariancePlan:
    """Sizes of the ``variance_bifurcation`` job."""

    A: float = 9.0
    d: int = 1000
    beta_range: tuple[float, float] = (0.05, 1.0)
    seed_values: tuple[float, ...] = (0.05, 0.5, 1.0)
    n_random: int = 24
    max_branches: int = 16
    probe_betas: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
    adiabatic: bool = True


FULL = VariancePlan()
QUICK = VariancePlan(seed_values=(0.5,), n_random=4, max_branches=8, probe_betas=(0.5,),
                     adiabatic=False)


def _spec(plan: VariancePlan, variances: str) -> Any:
    spec = symmetric_bimodal(plan.A)
    return spec.replace(family=VariationalFamily(2, weights=(0.5, 0.5), variance=1.0,
                                                 variances=variances))


def _diagram(plan: VariancePlan, variances: str) -> tuple[Any, Any, Any]:
    from derivations.codegen import compile_model
    from solvers.continuation import ParameterMap, trace_branches
    spec = _spec(plan, variances)
    model = compile_model(spec.structure)
    pmap = ParameterMap.from_spec(spec, "beta", 1.0, d=plan.d)
    lo, hi = plan.beta_range
    diagram = trace_branches(model, pmap, lo, hi, seed_values=list(plan.seed_values),
                             n_random=plan.n_random, max_branches=plan.max_branches)
    return spec, model, diagram


def _stable_ranges(diagram: Any) -> dict[str, list[list[float]]]:
    """Per label, the [beta_min, beta_max] of each stable run of a branch (merged)."""
    out: dict[str, list[list[float]]] = {}
    for br in diagram.branches:
        n = len(br)
        i = 0
        while i < n:
            if br.stable[i] and br.realisable[i]:
                j = i
                while j + 1 < n and br.stable[j + 1] and br.labels[j + 1] == br.labels[i]:
                    j += 1
                seg = sorted([float(br.p[i]), float(br.p[j])])
                runs = out.setdefault(br.labels[i], [])
                for r in runs:
                    if seg[0] <= r[1] + 1e-6 and seg[1] >= r[0] - 1e-6:
                        r[0], r[1] = min(r[0], seg[0]), max(r[1], seg[1])
                        break
                else:
                    runs.append(seg)
                i = j + 1
            else:
                i += 1
    return {k: sorted(v) for k, v in out.items()}


def _special(diagram: Any, kind: str) -> list[float]:
    vals = sorted({round(float(sp.p), 6) for _, sp in diagram.special_points(kind)})
    return vals


def _probe(plan: VariancePlan, spec: Any, model: Any) -> list[dict]:
    """s and label of the stable fixed points at the probe betas (tied flow)."""
    from solvers.fixedpoints import find_fixed_points
    theta = spec.theta(d=plan.d)
    rows = []
    for beta in plan.probe_betas:
        fps = find_fixed_points(model, beta, theta, n_random=plan.n_random, seed=0)
        for fp in fps.stable():
            if fp.orbit >= 0 and any(r["beta"] == beta and r["orbit"] == fp.orbit
                                     for r in rows):
                continue
            rows.append({"beta": beta, "label": fp.label, "orbit": fp.orbit, "s": fp.s,
                         "s_minus_Delta_over_beta": fp.s - 1.0 / beta,
                         "Q_11": float(fp.Q[0, 0]), "R_11": float(fp.R[0, 0]),
                         "R_21": float(fp.R[1, 0])})
    return rows


@figure_job("variance_bifurcation", full=FULL, quick=QUICK,
            summary="fixed points against beta with trainable (tied) variances beside fixed")
def _variance_bifurcation(plan: VariancePlan, ctx: FigureContext) -> Path:
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..bifurcation import plot_bifurcation
    ctx.log("variance_bifurcation: continuation in beta, fixed variances")
    _, _, fixed = _diagram(plan, "fixed")
    ctx.log("variance_bifurcation: continuation in beta, tied variances")
    spec_t, model_t, tied = _diagram(plan, "tied")
    fig, axs = plt.subplots(3, 2, figsize=(13, 8.5), sharex=True)
    plot_bifurcation(fixed, ["collapse", "split"], axes=list(axs[:2, 0]),
                     title=f"fixed variance s = 1, A = {plan.A:g}")
    plot_bifurcation(tied, ["collapse", "split", "log_s"], axes=list(axs[:, 1]),
                     title=f"tied trainable variance, d = {plan.d}")
    betas = np.linspace(*plan.beta_range, 200)
    axs[2, 1].plot(betas, np.log(1.0 / betas), ls=":", color="k", lw=1.0,
                   label="log(Delta / beta)")
    axs[2, 1].legend(fontsize=8, loc="upper right")
    axs[2, 0].axis("off")
    axs[2, 0].text(0.02, 0.5, "fixed: s = 1 for every beta\n(the entropy acts only as a "
                   "repulsion\nbetween components)", transform=axs[2, 0].transAxes,
                   fontsize=10, va="center")
    axs[1, 0].set_xlabel("beta")
    axs[1, 0].xaxis.set_tick_params(labelbottom=True)
    fig.tight_layout()
    treatments: dict[str, Any] = {}
    for name, diag in (("fixed", fixed), ("tied", tied)):
        treatments[name] = {"folds": _special(diag, "fold"),
                            "branch_points": _special(diag, "branch_point"),
                            "stable_ranges": _stable_ranges(diag),
                            "branches": len(diag.branches)}
    treatments["tied"]["probes"] = _probe(plan, spec_t, model_t)
    if plan.adiabatic:
        ctx.log("variance_bifurcation: continuation in beta, adiabatic variances")
        _, _, adia = _diagram(plan, "adiabatic")
        treatments["adiabatic"] = {"folds": _special(adia, "fold"),
                                   "branch_points": _special(adia, "branch_point"),
                                   "stable_ranges": _stable_ranges(adia),
                                   "branches": len(adia.branches)}
    return save_figure(fig, ctx.out_dir / "variance_bifurcation.png", {
        "plan": asdict(plan), "spec_fixed": _spec(plan, "fixed").to_dict(),
        "spec_tied": spec_t.to_dict(), "d": plan.d, "inv_d": 1.0 / plan.d,
        "s_star": "Delta / beta (tempering)", "treatments": treatments,
        "log_s_reference": [float(math.log(1.0 / b)) for b in plan.probe_betas]})
