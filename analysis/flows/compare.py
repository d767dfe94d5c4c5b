r"""P(collapse) of a RealNVP flow over a (T0, tau) grid beside the mixture theory (issue 13 s. 2).

For every target (symmetric bimodal, ``|mu|^2 = A``), dimension d and schedule (constant
beta = 1, and exponential ``T(t) = 1 + (T0 - 1) e^{-t/tau}`` for each (T0, tau) of the grid), two
numbers with their Wilson 95% intervals:

* **flow**: :func:`analysis.flows.run.run_flows` from ``seeds`` seeds (the schedule read at
  ``t = dt * step``, dt = lr by default);
* **mixture**: the theory ensemble ``ode`` (:mod:`analysis.estimators.ode`: exact finite-d
  initial law of the two-component mixture, reduced gradient flow per draw) on the same
  specification, the same (T0, tau) in gradient-flow time.

Each cell is saved as one JSON file in ``results_dir`` (named by its parameters, written
atomically), so an interrupted sweep resumes; :func:`comparison_table` gathers them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from derivations.spec import ConstantSchedule, ExponentialSchedule, symmetric_bimodal

__all__ = ["ComparisonPlan", "cell_specs", "comparison_table", "plot_comparison"]


@dataclass(frozen=True)
class ComparisonPlan:
    """The grid: targets ``A_values``, dimensions ``ds``, schedules (``constant`` beta = 1 if
    ``include_constant``, and exponential over ``T0s`` x ``taus``); ``seeds`` flow runs and
    ``mixture_draws`` ode draws per cell; ``flow`` overrides of :class:`FlowConfig` fields."""

    A_values: tuple[float, ...] = (9.0, 36.0)
    ds: tuple[int, ...] = (2, 10)
    T0s: tuple[float, ...] = (5.0, 20.0)
    taus: tuple[float, ...] = (0.5, 2.0)
    include_constant: bool = True
    seeds: int = 64
    mixture_draws: int = 2000
    seed: int = 0
    flow: tuple[tuple[str, Any], ...] = field(default=())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["flow"] = dict(self.flow)
        return d


def cell_specs(plan: ComparisonPlan) -> list[dict]:
    """The cells: dicts with ``A, d, T0, tau`` (T0 = 1, tau = None for the constant schedule)
    and ``spec`` (the problem)."""
    scheds: list[tuple[float, float | None, Any]] = []
    if plan.include_constant:
        scheds.append((1.0, None, ConstantSchedule(1.0)))
    scheds += [(T0, tau, ExponentialSchedule(T0, tau)) for T0 in plan.T0s for tau in plan.taus]
    return [{"A": A, "d": d, "T0": T0, "tau": tau, "spec": symmetric_bimodal(A, sch)}
            for A in plan.A_values for d in plan.ds for T0, tau, sch in scheds]


def _name(kind: str, cell: dict) -> str:
    tau = "const" if cell["tau"] is None else f"{cell['tau']:g}"
    return f"{kind}_A{cell['A']:g}_d{cell['d']}_T0{cell['T0']:g}_tau{tau}.json"


def _load(path: Path, params: dict) -> dict | None:
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if obj.get("cell_params") == params else None


def _flow_cell(cell: dict, plan: ComparisonPlan, progress: bool) -> dict:
    from .config import FlowConfig
    from .run import run_flows
    cfg = FlowConfig(d=cell["d"], seeds=plan.seeds, seed=plan.seed, **dict(plan.flow))
    r = run_flows(cell["spec"], cfg, progress=progress)
    s = r.summary()
    return {k: s[k] for k in ("p", "ci", "k", "n", "n_diverged", "n_undecided",
                              "changed_final_window", "window_start_time", "steps",
                              "t_end", "min_mode_fraction", "kl", "wall_time", "flow")}


def _mixture_cell(cell: dict, plan: ComparisonPlan) -> dict:
    from ..collapse import collapse_probability
    r = collapse_probability(cell["spec"], cell["d"], method="ode", draws=plan.mixture_draws,
                             seed=plan.seed)
    return {"p": r.p, "ci": list(r.ci), "k": r.k, "n": r.n, "wall_time": r.wall_time,
            "method": "ode"}


def comparison_table(plan: ComparisonPlan, results_dir: str | Path | None = None,
                     log: Callable[[str], None] | None = None, progress: bool = False,
                     flows: bool = True) -> list[dict]:
    """Run (or resume) every cell of ``plan``; rows ``{A, d, T0, tau, flow, mixture}``.

    ``flows=False`` computes the mixture side only (``flow`` is then None): what is left when
    the ``[flows]`` extra is missing.  ``results_dir`` None keeps nothing on disk.
    """
    from derivations.atomic import atomic_write
    root = Path(results_dir) if results_dir is not None else None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    rows = []
    cells = cell_specs(plan)
    for i, cell in enumerate(cells):
        row = {k: cell[k] for k in ("A", "d", "T0", "tau")}
        for kind in ("mixture", "flow") if flows else ("mixture",):
            params = {**row, "kind": kind, "seed": plan.seed,
                      **({"seeds": plan.seeds, "flow": dict(plan.flow)} if kind == "flow"
                         else {"draws": plan.mixture_draws})}
            path = None if root is None else root / _name(kind, cell)
            got = None if path is None else _load(path, params)
            if got is None:
                if log is not None:
                    log(f"{kind} cell {i + 1}/{len(cells)}: A = {cell['A']:g}, d = {cell['d']}, "
                        f"T0 = {cell['T0']:g}, tau = {cell['tau']}")
                got = (_flow_cell(cell, plan, progress) if kind == "flow"
                       else _mixture_cell(cell, plan))
                got["cell_params"] = params
                if path is not None:
                    atomic_write(path, json.dumps(got) + "\n")
            row[kind] = {k: v for k, v in got.items() if k != "cell_params"}
        row.setdefault("flow", None)
        rows.append(row)
    return rows


def plot_comparison(rows: list[dict], title: str = "") -> Any:
    """One panel per (A, d): P(collapse) with Wilson 95% bars against the schedule (constant
    beta = 1, then the (T0, tau) cells), flow and mixture side by side."""
    import matplotlib.pyplot as plt
    import numpy as np
    panels = sorted({(r["A"], r["d"]) for r in rows})
    ncol = len({d for _, d in panels})
    nrow = len({A for A, _ in panels})
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False,
                             sharey=True)
    As = sorted({A for A, _ in panels})
    ds = sorted({d for _, d in panels})
    for (A, d) in panels:
        ax = axes[As.index(A)][ds.index(d)]
        sub = [r for r in rows if r["A"] == A and r["d"] == d]
        labels = ["beta = 1" if r["tau"] is None else f"T0={r['T0']:g}\ntau={r['tau']:g}"
                  for r in sub]
        x = np.arange(len(sub))
        for off, kind, color in ((-0.17, "mixture", "tab:blue"), (0.17, "flow", "tab:red")):
            pts = [(i, r[kind]) for i, r in enumerate(sub) if r.get(kind)]
            if not pts:
                continue
            xi = np.array([i for i, _ in pts]) + off
            p = np.array([v["p"] for _, v in pts])
            lo = np.array([v["ci"][0] for _, v in pts])
            hi = np.array([v["ci"][1] for _, v in pts])
            lab = ("mixture theory (ode, M = 2)" if kind == "mixture"
                   else "RealNVP flow (Adam)")
            ax.errorbar(xi, p, yerr=[np.maximum(p - lo, 0), np.maximum(hi - p, 0)], fmt="o", color=color, capsize=3,
                        label=lab)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"A = {A:g}, d = {d}", fontsize=9)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("P(collapse), Wilson 95%")
    axes[0][0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
