"""Figures (matplotlib, Agg): each saved as PNG with a sidecar JSON of its parameters.

Plotting functions take computed results (arrays, sweep results) and never compute physics
themselves; :mod:`analysis.reproduce` wires computations to figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from derivations.atomic import atomic_write

__all__ = ["save_figure", "plot_collapse_heatmap", "plot_collapse_vs_d", "plot_trajectories",
           "plot_stability_diagram", "fit_power_law"]


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def save_figure(fig: Any, path: str | Path, params: Mapping[str, Any], dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` (PNG) and its parameters to ``path`` with suffix .json."""
    import io
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # no timestamp in the PNG metadata: re-running gives byte-identical files
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    atomic_write(path, buf.getvalue())
    atomic_write(path.with_suffix(".json"), json.dumps(_jsonable(dict(params)), indent=1) + "\n")
    _plt().close(fig)
    return path


def _grid_ticks(axis: Any, values: np.ndarray) -> None:
    """Label an axis at the grid values themselves (log axes otherwise crowd minor labels)."""
    from matplotlib.ticker import NullLocator
    values = np.asarray(values, dtype=float)
    axis.set_minor_locator(NullLocator())
    axis.set_ticks(values, [f"{v:g}" for v in values])


def plot_collapse_heatmap(x: np.ndarray, y: np.ndarray, p: np.ndarray, *, xlabel: str,
                          ylabel: str, title: str, overlay: Sequence[Mapping[str, float]] = (),
                          cut_index: int | None = None, cut_label: str = "",
                          logx: bool = True, logy: bool = True) -> Any:
    """Heat map of the theory's collapse probability ``p`` (len(x), len(y)) with points.

    overlay : cells with keys ``x``, ``y``, ``p``, ``lo``, ``hi`` (e.g. Monte Carlo or the ODE
        ensemble) drawn as circles filled with their own value on the same colour scale and
        labelled with their interval (vertical text offset ``offset`` points, default 9).
        cut_index : also draw a second panel with the theory
        along x at ``y[cut_index]`` and the overlay points of that row with error bars.
    """
    from matplotlib.colors import LogNorm
    plt = _plt()
    ncols = 2 if cut_index is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.6 * ncols, 4.3), squeeze=False)
    ax = axes[0, 0]
    floor = 1e-4
    vals = np.clip(np.asarray(p, dtype=float), floor, 1.0)
    # the colour scale spans the overlay points too, so that a point outside the theory's
    # range shows as a different colour instead of saturating
    span = np.concatenate([vals[np.isfinite(vals)].ravel(),
                           np.clip([o["p"] for o in overlay], floor, 1.0)])
    norm = LogNorm(vmin=max(floor, float(np.min(span))), vmax=max(float(np.max(span)), 2 * floor))
    mesh = ax.pcolormesh(x, y, vals.T, shading="nearest", cmap="viridis", norm=norm)
    fig.colorbar(mesh, ax=ax, label="P(collapse)")
    for o in overlay:
        ax.scatter([o["x"]], [o["y"]], c=[max(o["p"], floor)], cmap="viridis", norm=norm,
                   s=110, edgecolors="white", linewidths=1.6, zorder=3)
        ax.annotate(f"{o['p']:.3f}\n[{o['lo']:.3f},{o['hi']:.3f}]", (o["x"], o["y"]),
                    textcoords="offset points", xytext=(0, o.get("offset", 9)), ha="center",
                    fontsize=6.5,
                    color="white")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    _grid_ticks(ax.xaxis, x)
    _grid_ticks(ax.yaxis, y)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if cut_index is not None:
        ax2 = axes[0, 1]
        ax2.plot(x, p[:, cut_index], "-", color="C0", label="theory")
        yc = y[cut_index]
        row = [o for o in overlay if np.isclose(o["y"], yc)]
        for o in row:
            ax2.errorbar([o["x"]], [o["p"]], yerr=[[o["p"] - o["lo"]], [o["hi"] - o["p"]]],
                         fmt="o", color=o.get("color", "C3"), capsize=3,
                         label=o.get("label"))
        handles, labels = ax2.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax2.legend(uniq.values(), uniq.keys(), fontsize=8)
        if logx:
            ax2.set_xscale("log")
        ax2.set_yscale("log")
        _grid_ticks(ax2.xaxis, x)
        ax2.set_xlabel(xlabel)
        ax2.set_ylabel("P(collapse)")
        ax2.set_title(cut_label, fontsize=9)
    fig.tight_layout()
    return fig


def fit_power_law(d: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Least-squares fit ``p = c d^k`` in log-log; returns (k, c)."""
    d, p = np.asarray(d, float), np.asarray(p, float)
    ok = (p > 0) & np.isfinite(p)
    k, logc = np.polyfit(np.log(d[ok]), np.log(p[ok]), 1)
    return float(k), float(np.exp(logc))


def plot_collapse_vs_d(curves: Sequence[Mapping[str, Any]], points: Sequence[Mapping[str, Any]] = (),
                       title: str = "") -> Any:
    """P(collapse) against d: theory curves (``d``, ``p``, ``label``, optional ``fit`` (k, c))
    and sampled points with intervals (``d``, ``p``, ``lo``, ``hi``, ``label``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for i, c in enumerate(curves):
        ax.plot(c["d"], c["p"], "-", color=f"C{i}", label=c["label"])
        if c.get("fit") is not None:
            k, cc = c["fit"]
            dd = np.asarray(c["d"], float)
            ax.plot(dd, cc * dd ** k, ":", color=f"C{i}", label=f"fit  {cc:.3g} d^{k:.3f}")
    for j, pnt in enumerate(points):
        ax.errorbar(pnt["d"], pnt["p"], yerr=[np.subtract(pnt["p"], pnt["lo"]),
                                              np.subtract(pnt["hi"], pnt["p"])],
                    fmt="o", capsize=3, color=pnt.get("color", f"C{len(curves) + j}"),
                    label=pnt["label"])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("P(collapse)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_trajectories(t_theory: np.ndarray, Q_theory: np.ndarray, R_theory: np.ndarray,
                      t_sim: np.ndarray, Q_sim: np.ndarray, R_sim: np.ndarray, *,
                      title: str = "", sim_label: str = "simulation in R^d") -> Any:
    """Q_kl(t) and R_ka(t): theory as lines, simulation as markers.

    Q_* : (n_t, M, M), R_* : (n_t, M, K).  Simulation arrays may carry a leading run axis
    (n_runs, n_t, ...), drawn as thin lines (each run) in the same colour.
    """
    plt = _plt()
    fig, (axq, axr) = plt.subplots(1, 2, figsize=(10, 4))
    M, K = R_theory.shape[-2], R_theory.shape[-1]
    sims = Q_sim.ndim == 4
    c = 0
    for k in range(M):
        for l in range(k, M):
            axq.plot(t_theory, Q_theory[:, k, l], "-", color=f"C{c}", label=f"Q{k + 1}{l + 1}")
            q = Q_sim[..., k, l]
            if sims:
                axq.plot(t_sim, q.T, color=f"C{c}", alpha=0.25, lw=0.8)
            else:
                axq.plot(t_sim, q, "o", color=f"C{c}", ms=3, mfc="none")
            c += 1
    c = 0
    for k in range(M):
        for a in range(K):
            axr.plot(t_theory, R_theory[:, k, a], "-", color=f"C{c}", label=f"R{k + 1}{a + 1}")
            r = R_sim[..., k, a]
            if sims:
                axr.plot(t_sim, r.T, color=f"C{c}", alpha=0.25, lw=0.8)
            else:
                axr.plot(t_sim, r, "o", color=f"C{c}", ms=3, mfc="none")
            c += 1
    for ax, name in ((axq, "Q"), (axr, "R")):
        ax.set_xlabel("t (gradient-flow time)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7, ncol=2, title=f"lines: theory; {'thin' if sims else 'markers'}: "
                  f"{sim_label}", title_fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_stability_diagram(betas: np.ndarray, As: np.ndarray, stable_collapsed: np.ndarray,
                           fold_As: np.ndarray, fold_betas: np.ndarray, *, title: str = "") -> Any:
    """Number of stable collapsed fixed points over (beta, A) with the continuation fold curve."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 4.3))
    mesh = ax.pcolormesh(betas, As, np.asarray(stable_collapsed).T, shading="nearest",
                         cmap="Reds", vmin=0)
    fig.colorbar(mesh, ax=ax, label="stable collapsed fixed points")
    fold_betas = np.asarray(fold_betas, dtype=float)
    ok = np.isfinite(fold_betas)
    if ok.any():
        ax.plot(fold_betas[ok], np.asarray(fold_As, dtype=float)[ok], "k-o", ms=3,
                label="fold (continuation)")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("beta")
    ax.set_ylabel("A = |mu|^2")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
