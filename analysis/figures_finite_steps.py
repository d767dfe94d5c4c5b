"""Plots of the finite-step figures (issue 10): SGD collapse against (eta, d) and eta.

Plotting only: the numbers come from :mod:`analysis.reproduce.finite_steps` (the reduced SGD
engine through the ``sgd`` estimator, the effective-overlap theory of
:mod:`analysis.finite_step`).  Every function returns a matplotlib figure; saving (PNG plus
JSON sidecar) is :func:`analysis.figures.save_figure`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .figures import _grid_ticks, _plt

__all__ = ["plot_sgd_eta_d", "plot_sgd_vs_eta"]


def _errorbar(ax: Any, x: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              **kw: Any) -> None:
    ax.errorbar(x, p, yerr=[p - lo, hi - p], fmt="o", ms=4, capsize=2.5, lw=1, **kw)


def plot_sgd_eta_d(ds: Sequence[float], etas: Sequence[float], engine: Mapping[str, np.ndarray],
                   theory_ds: Sequence[float], theory_p: np.ndarray, flow_p: np.ndarray, *,
                   title: str, theory_mod: np.ndarray | None = None) -> Any:
    """Two panels over the grid ``etas`` x ``ds``.

    Left: P(collapse) against d, one colour per eta: the engine's points with their Wilson
    intervals (``engine['p'], ['lo'], ['hi']``, shape (len(etas), len(ds))), the
    effective-overlap prediction ``theory_p`` (len(etas), len(theory_ds)) as lines, the
    gradient flow's separatrix value ``flow_p`` (len(theory_ds),) in black; ``theory_mod``
    (same shape as theory_p, optional): the prediction on the O(eta) corrected ODE, dashed.
    Right: the grid cells, each with the engine's and the theories' values, green where the
    (corrected, if given) theory lies inside the engine's interval, red where it does not (the
    colour is the ratio engine / that theory).
    """
    plt = _plt()
    ds = np.asarray(ds, dtype=float)
    etas = np.asarray(etas, dtype=float)
    td = np.asarray(theory_ds, dtype=float)
    p, lo, hi = (np.asarray(engine[k], dtype=float) for k in ("p", "lo", "hi"))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.8),
                                  gridspec_kw={"width_ratios": [1.15, 1.0]})
    cmap = plt.get_cmap("viridis")
    for i, eta in enumerate(etas):
        c = cmap(i / max(len(etas) - 1, 1))
        _errorbar(ax, ds * (1.0 + 0.06 * (i - 0.5 * (len(etas) - 1))), p[i], lo[i], hi[i],
                  color=c, label=f"SGD engine, eta = {eta:g}")
        ax.plot(td, theory_p[i], "-", color=c, lw=1.3)
        if theory_mod is not None:
            ax.plot(td, theory_mod[i], "--", color=c, lw=1.1)
    ax.plot(td, flow_p, "k:", lw=1.8, label="gradient flow (separatrix)")
    ax.plot([], [], "-", color="0.4", lw=1.3, label="effective-overlap prediction")
    if theory_mod is not None:
        ax.plot([], [], "--", color="0.4", lw=1.1, label="... on the O(eta) corrected ODE")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("d")
    ax.set_ylabel("P(collapse)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, loc="lower left")
    # right: the grid, where the theory holds
    def at_grid(curves: np.ndarray) -> np.ndarray:
        return np.array([np.interp(np.log(ds), np.log(td), curves[i]) for i in range(len(etas))])

    th = at_grid(theory_p)
    tm = at_grid(theory_mod) if theory_mod is not None else None
    ref = tm if tm is not None else th
    inside = (lo <= ref) & (ref <= hi)
    inside_plain = (lo <= th) & (th <= hi)
    ratio = np.log2(np.maximum(p, 1e-3) / np.maximum(ref, 1e-3))
    ax2.imshow(ratio, origin="lower", cmap="coolwarm", vmin=-1.5, vmax=1.5, aspect="auto")
    for i in range(len(etas)):
        for j in range(len(ds)):
            txt = f"{p[i, j]:.3f}\n{th[i, j]:.3f}" + (f"\n{tm[i, j]:.3f}" if tm is not None
                                                        else "")
            ax2.text(j, i, txt, ha="center", va="center", fontsize=7.5,
                     color="darkgreen" if inside[i, j] else "darkred", fontweight="bold")
    ax2.set_xticks(range(len(ds)), [f"{v:g}" for v in ds])
    ax2.set_yticks(range(len(etas)), [f"{v:g}" for v in etas])
    ax2.set_xlabel("d")
    ax2.set_ylabel("eta")
    if tm is None:
        head = (f"engine (top) / theory (bottom): theory inside the 95% interval at "
                f"{int(inside.sum())} of {inside.size} (green)")
    else:
        head = (f"engine / theory / theory on the corrected ODE: inside the 95% interval at "
                f"{int(inside_plain.sum())} and {int(inside.sum())} of {inside.size}\n"
                "(green: the corrected one inside)")
    ax2.set_title(head + "; colour: log2(engine / theory)", fontsize=8.5)
    fig.tight_layout()
    return fig


def plot_sgd_vs_eta(etas: Sequence[float], engines: Sequence[Mapping[str, Any]],
                    theories: Sequence[Mapping[str, Any]], flow_p: float, *,
                    title: str) -> Any:
    """P(collapse) against eta at one d: per estimator the engine's points with Wilson
    intervals (``engines[i] = {'label', 'p', 'lo', 'hi', 'color'}`` over ``etas``), the
    theory's curves (``theories[i] = {'label', 'eta', 'p', 'color', 'style'}``) and the
    gradient flow's value (horizontal line)."""
    plt = _plt()
    etas = np.asarray(etas, dtype=float)
    fig, ax = plt.subplots(figsize=(6.6, 4.6))
    for k, e in enumerate(engines):
        _errorbar(ax, etas * (1.0 + 0.04 * (k - 0.5 * (len(engines) - 1))),
                  np.asarray(e["p"], dtype=float), np.asarray(e["lo"], dtype=float),
                  np.asarray(e["hi"], dtype=float), color=e["color"], label=e["label"])
    for t in theories:
        ax.plot(t["eta"], t["p"], t.get("style", "-"), color=t["color"], lw=1.3,
                label=t["label"])
    ax.axhline(flow_p, color="k", ls="--", lw=1.3, label=f"gradient flow ({flow_p:.3f})")
    ax.set_xscale("log")
    _grid_ticks(ax.xaxis, etas)
    ax.set_xlabel("SGD step eta")
    ax.set_ylabel("P(collapse)")
    ax.set_ylim(bottom=0.0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
