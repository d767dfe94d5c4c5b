"""Bifurcation diagrams of the fixed points of the reduced flow (matplotlib, Agg backend).

:func:`plot_bifurcation` draws the branches of a
:class:`solvers.continuation.BifurcationDiagram` as the continuation parameter against one or
more scalar summaries of the state, one panel per summary:

* line style: solid where the fixed point is (linearly, asymptotically) stable, dashed where
  it is unstable, dotted grey where it is not realisable (joint Gram matrix not PSD);
* colour: the label of the fixed point (split, collapsed, symmetric; see
  :func:`solvers.fixedpoints.label_state`);
* markers: folds (circles), branch points (squares), Hopf points (triangles), other
  stability changes (crosses).

Summaries (:func:`summary_values`) are state names (``'R_1_1'``, ``'Q_1_2'``, ...), the
built-ins

* ``'collapse'`` ``= (1/M) sum_k R_k1`` -- the mean overlap of the components with mode 1:
  ``+-A`` when all components sit on one mode of the symmetric bimodal target, 0 when they
  are split or symmetric;
* ``'split'`` ``= (R_11 - R_21) / 2`` -- half the difference of the overlaps of components 1
  and 2 with mode 1: ``+-A`` for the split state, 0 for coinciding or symmetric components;
* ``'norm_R'`` ``= |R|_F``,

or any callable ``f(Q (M, M), R (M, K), alpha (M,) | None) -> float``.  The default is
``('collapse', 'split')`` when M >= 2 (together they separate the three labels), else
``('R_1_1',)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from solvers.continuation import BifurcationDiagram, Branch
from solvers.layout import StateLayout, state_layout

__all__ = ["summary_values", "plot_bifurcation", "LABEL_COLOURS", "MARKERS"]

Summary = str | Callable[[np.ndarray, np.ndarray, Any], float]

#: Colour of each fixed-point label.
LABEL_COLOURS = {"split": "tab:blue", "collapsed": "tab:red", "symmetric": "tab:green"}

#: Marker of each kind of special point.
MARKERS = {"fold": ("o", "fold"), "branch_point": ("s", "branch point"),
           "hopf": ("^", "Hopf"), "stability_change": ("x", "stability change")}

_BUILTIN = ("collapse", "split", "norm_R")


def _layout_from_names(state_names: Sequence[str]) -> StateLayout:
    try:
        return state_layout(list(state_names))
    except ValueError:
        raise ValueError("state_names: not the state layout of any (K, M) structure") from None


def summary_values(Y: Any, summary: Summary, state_names: Sequence[str]) -> np.ndarray:
    """Scalar summary of each state: Y (N, n) -> (N,).  See the module docstring."""
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    names = list(state_names)
    if Y.shape[1] != len(names):
        raise ValueError(f"Y: must have {len(names)} columns (state_names), got {Y.shape}")
    if isinstance(summary, str) and summary in names:
        return Y[:, names.index(summary)].copy()
    layout = _layout_from_names(names)
    if isinstance(summary, str):
        if summary not in _BUILTIN:
            raise ValueError(f"summary: unknown summary {summary!r} (use a state name, one of "
                             f"{_BUILTIN} or a callable)")
        if summary == "split" and layout.M < 2:
            raise ValueError("summary: 'split' needs M >= 2 components")
        out = np.empty(Y.shape[0])
        for i, y in enumerate(Y):
            _, R, _ = layout.unpack(y)
            if summary == "collapse":
                out[i] = R[:, 0].mean()
            elif summary == "split":
                out[i] = 0.5 * (R[0, 0] - R[1, 0])
            else:
                out[i] = float(np.linalg.norm(R))
        return out
    if callable(summary):
        return np.array([float(summary(*layout.unpack(y))) for y in Y])
    raise ValueError(f"summary: must be a string or a callable, got {summary!r}")


def _summary_label(summary: Summary) -> str:
    if isinstance(summary, str):
        return {"collapse": r"$\frac{1}{M}\sum_k R_{k1}$ (collapse)",
                "split": r"$(R_{11} - R_{21})/2$ (split)",
                "norm_R": r"$\|R\|_F$"}.get(summary, summary)
    return getattr(summary, "__name__", "summary")


def _runs(branch: Branch) -> list[tuple[int, int]]:
    """Index ranges [i, j] of constant (stable, label, realisable) along a branch."""
    n = len(branch)
    key = [(bool(branch.stable[i]), branch.labels[i], bool(branch.realisable[i]))
           for i in range(n)]
    runs, start = [], 0
    for i in range(1, n + 1):
        if i == n or key[i] != key[start]:
            runs.append((start, i - 1))
            start = i
    return runs


def plot_bifurcation(diagram: BifurcationDiagram,
                     summary: Summary | Sequence[Summary] | None = None, *,
                     path: str | Path | None = None, axes: Any = None,
                     title: str | None = None, show_unrealisable: bool = True,
                     dpi: int = 150) -> Any:
    """Draw a bifurcation diagram; returns the matplotlib Figure.

    diagram : from :func:`solvers.continuation.trace_branches` (or a single Branch wrapped in
        a BifurcationDiagram).
    summary : one summary or a sequence (one panel each); see the module docstring.
    path : if given, the figure is saved there (format from the suffix, e.g. .png, .pdf).
    axes : existing matplotlib Axes (one per summary) to draw into; a new figure otherwise.
    show_unrealisable : draw unrealisable segments (dotted grey) or skip them.
    """
    import matplotlib
    if axes is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if not isinstance(diagram, BifurcationDiagram):
        raise ValueError("diagram: must be a BifurcationDiagram")
    names = list(diagram.state_names)
    if summary is None:
        M = _layout_from_names(names).M
        summaries: list[Summary] = ["collapse", "split"] if M >= 2 else ["R_1_1"]
    elif isinstance(summary, str) or callable(summary):
        summaries = [summary]
    else:
        summaries = list(summary)
    if not summaries:
        raise ValueError("summary: needs at least one summary")
    if axes is None:
        fig, axs = plt.subplots(len(summaries), 1, figsize=(8.5, 3.2 * len(summaries)),
                                sharex=True, squeeze=False)
        axs = list(axs[:, 0])
    else:
        axs = list(np.atleast_1d(axes))
        if len(axs) != len(summaries):
            raise ValueError(f"axes: need {len(summaries)} axes (one per summary), "
                             f"got {len(axs)}")
        fig = axs[0].figure

    kinds_seen: set[str] = set()
    labels_seen: set[str] = set()
    for ax, summ in zip(axs, summaries):
        for br in diagram.branches:
            if len(br) == 0:
                continue
            s = summary_values(br.y, summ, names)
            for i, j in _runs(br):
                jj = min(j + 1, len(br) - 1)  # connect to the next run's first point
                if not br.realisable[i]:
                    if not show_unrealisable:
                        continue
                    ax.plot(br.p[i:jj + 1], s[i:jj + 1], ls=":", color="0.6", lw=1.0)
                    continue
                colour = LABEL_COLOURS.get(br.labels[i], "k")
                labels_seen.add(br.labels[i])
                ax.plot(br.p[i:jj + 1], s[i:jj + 1], ls="-" if br.stable[i] else "--",
                        color=colour, lw=1.8 if br.stable[i] else 1.2)
            for sp in br.special_points:
                marker, _ = MARKERS.get(sp.kind, ("*", sp.kind))
                val = summary_values(sp.y[None, :], summ, names)[0]
                ax.plot([sp.p], [val], marker=marker, color="k", ms=6, mfc="none"
                        if marker != "x" else None, ls="none")
                kinds_seen.add(sp.kind)
        ax.set_ylabel(_summary_label(summ))
        ax.grid(True, alpha=0.3)
    axs[-1].set_xlabel(diagram.parameter)
    handles = [Line2D([], [], color="k", ls="-", label="stable"),
               Line2D([], [], color="k", ls="--", label="unstable")]
    handles += [Line2D([], [], color=LABEL_COLOURS[lab], lw=3, label=lab)
                for lab in ("split", "collapsed", "symmetric") if lab in labels_seen]
    handles += [Line2D([], [], color="k", marker=MARKERS[k][0], ls="none", mfc="none",
                       label=MARKERS[k][1]) for k in MARKERS if k in kinds_seen]
    if show_unrealisable and any(not np.all(b.realisable) for b in diagram.branches):
        handles.append(Line2D([], [], color="0.6", ls=":", label="not realisable"))
    axs[0].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0)
    if title is not None:
        axs[0].set_title(title)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig
