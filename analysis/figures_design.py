"""Plots of the large-d law and of schedule design (issue 11 section 4).

Plotting only: the functions take computed numbers (dicts of arrays, as
:mod:`analysis.reproduce.design` builds them) and return a matplotlib figure; the physics is in
:mod:`analysis.asymptotics` and :mod:`analysis.design`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_large_d_law", "plot_pareto", "local_slopes"]


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def local_slopes(ds: Sequence[float], P: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(d_mid, s)``: the local slope ``s_i = ln(P_{i+1}/P_i) / ln(d_{i+1}/d_i)`` at the
    geometric midpoints ``d_mid = sqrt(d_i d_{i+1})`` (arrays of len(ds) - 1)."""
    d, p = np.asarray(ds, float), np.asarray(P, float)
    return np.sqrt(d[1:] * d[:-1]), np.log(p[1:] / p[:-1]) / np.log(d[1:] / d[:-1])


def plot_large_d_law(curves: Sequence[Mapping[str, Any]], alpha: float,
                     scaling: Mapping[str, Any] | None = None, *, title: str = "") -> Any:
    """P(collapse) against d, the local slope, and (optional) the annealing benefit.

    curves : per schedule ``label``, ``ds``, ``P_separatrix``, ``error_bound`` (points),
        ``d_dense``, ``P_law`` (the law on a dense grid) and ``color``.
    alpha : the closed-form exponent (the slope panel's asymptote ``-alpha``).
    scaling : ``ds``, ``ratio_fixed``, ``ratio_scaled`` (P with the schedule over P without
        annealing, fixed tau and tau ~ ln d), ``tau_fixed``, ``tau_scaled``, ``ratio_law``
        (optional: the predicted trend), for a third panel.
    """
    plt = _plt()
    n = 3 if scaling is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.3))
    ax, bx = axes[0], axes[1]
    for c in curves:
        ds, P = np.asarray(c["ds"]), np.asarray(c["P_separatrix"])
        ax.errorbar(ds, P, yerr=np.asarray(c["error_bound"]), fmt="o", ms=4,
                    color=c["color"], label=f"{c['label']}: separatrix")
        ax.plot(c["d_dense"], c["P_law"], "-", color=c["color"], lw=1.2,
                label=f"{c['label']}: law C d^-alpha L_eff^p")
        dm, s = local_slopes(ds, P)
        bx.plot(dm, s, "o-", ms=4, color=c["color"], label=f"{c['label']}: separatrix")
        dl = np.asarray(c["d_dense"])
        dm, s = local_slopes(dl, c["P_law"])
        bx.plot(dm, s, ":", color=c["color"], lw=1.2, label=f"{c['label']}: law")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_ylabel("P(collapse)")
    ax.set_title("P(collapse) against d")
    ax.legend(fontsize=7)
    ax.grid(True, which="major", alpha=0.3)
    bx.axhline(-alpha, color="k", lw=1, ls="--", label=f"-alpha = {-alpha:.4f}")
    bx.set_xscale("log")
    bx.set_xlabel("d")
    bx.set_ylabel("local slope d ln P / d ln d")
    bx.set_title("local slope -> -alpha like 1/ln d")
    bx.legend(fontsize=7)
    bx.grid(True, alpha=0.3)
    if scaling is not None:
        cx = axes[2]
        ds = np.asarray(scaling["ds"])
        cx.plot(ds, scaling["ratio_fixed"], "s-", color="C1",
                label=f"tau fixed = {scaling['tau_fixed']:.3g}")
        cx.plot(ds, scaling["ratio_scaled"], "o-", color="C2",
                label="tau(d) = ln(d/(sigma^2 A)) / (2 lambda_s B(x*))")
        if scaling.get("ratio_law") is not None:
            cx.plot(ds, scaling["ratio_law"], "--", color="C2", lw=1,
                    label="trend r(1e2) (L_eff(1e2)/L_eff(d))^p")
        for d, t in zip(ds, scaling["tau_scaled"]):
            cx.annotate(f"{t:.3g}", (d, 0), xytext=(0, 3), textcoords="offset points",
                        fontsize=6, ha="center", color="C2",
                        xycoords=("data", "axes fraction"))
        cx.axhline(1.0, color="k", lw=0.8)
        cx.set_xscale("log")
        cx.set_ylim(0, 1.1)
        cx.set_xlabel("d (numbers: tau(d))")
        cx.set_ylabel("P(annealed) / P(no annealing)")
        cx.set_title(f"exponential T0 = {scaling['T0']:g}: keeping the benefit")
        cx.legend(fontsize=7, loc="upper left")
        cx.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_pareto(rows: Sequence[Mapping[str, Any]], *, no_annealing: float | None = None,
                title: str = "") -> Any:
    """The Pareto fronts (designed P against the budget per family) and the optimal free-form
    schedules beta(t).

    rows : :func:`analysis.design.pareto_front` rows (``family, budget, p, error_bound,
        schedule, grid_best``).
    no_annealing : P at constant beta = 1 (a horizontal reference).
    """
    from derivations.spec import schedule_from_dict
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.3))
    fams = list(dict.fromkeys(r["family"] for r in rows))
    for i, fam in enumerate(fams):
        rs = sorted((r for r in rows if r["family"] == fam), key=lambda r: r["budget"])
        B = [r["budget"] for r in rs]
        ax.errorbar(B, [r["p"] for r in rs], yerr=[r["error_bound"] or 0.0 for r in rs],
                    fmt="o-", ms=4, color=f"C{i}", label=f"designed: {fam}")
    grid = {}
    for r in rows:
        g = r.get("grid_best") or {}
        if g.get("p") is not None and r["family"] == "exponential":
            grid[r["budget"]] = g["p"]
    if grid:
        B = sorted(grid)
        ax.plot(B, [grid[b] for b in B], "x--", color="0.4",
                label="best (T0, tau) cell, exponential grid")
    if no_annealing is not None:
        ax.axhline(no_annealing, color="k", ls=":", lw=1, label="no annealing")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("budget (time by which annealing ends)")
    ax.set_ylabel("P(collapse)")
    ax.set_title("Pareto fronts")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    free = sorted((r for r in rows if r["family"] == "free"), key=lambda r: r["budget"])
    if not free:
        free = sorted((r for r in rows if r["family"] == fams[-1]), key=lambda r: r["budget"])
    for j, r in enumerate(free):
        s = schedule_from_dict(r["schedule"])
        x = np.linspace(0.0, 1.15, 800)
        bx.plot(x, s.beta(x * r["budget"]), "-", lw=1.5,
                color=plt.cm.viridis(0.85 * j / max(1, len(free) - 1)),
                label=f"budget {r['budget']:g}: P = {r['p']:.3g}")
    bx.axvline(1.0, color="k", ls=":", lw=0.8)
    bx.set_xlabel("t / budget")
    bx.set_ylabel("beta(t)")
    bx.set_ylim(0, 1.05)
    bx.set_title(f"optimal {free[0]['family'] if free else ''} schedules")
    bx.legend(fontsize=7, loc="lower right")
    bx.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
