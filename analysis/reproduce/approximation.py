"""Figure jobs ``pi_A_trainable`` and ``kl_vs_M`` of ``mfvi reproduce`` (issue 9, K = 2).

``pi_A_trainable`` — the (pi_1, A) diagram of a two-mode target with TRAINABLE mixture weights
(K = M = 2, no annealing, beta = 1, d = 1000, ``ode`` estimator: exact finite-d initial law,
reduced ODE per draw), separating the two collapse mechanisms of :mod:`analysis.classify`:
panel 1 P(mean alignment) (both components on one mode), panel 2 P(vanishing weight) (a
component's weight below the threshold, the mode it sat on lost).  Each cell is a resumable
:func:`analysis.phase.collapse_sweep` cell; the sidecar has the counts and Wilson 95% intervals
of each mechanism.

``kl_vs_M`` — the reverse KL of every STABLE fixed point of the reduced flow at beta = 1, for the
symmetric bimodal target (the simplex preset at K = 2: pi = (1/2, 1/2), mu_2 = -mu_1,
|mu_1|^2 = A, Delta = s = 1) with M = 2, 3 and 4 components of fixed equal weights (the quick plan: M = 2, 3), against A
(= s / Delta-scaled separation |mu|^2 / Delta).  The KL is the objective value at the fixed
point WITH its state-independent constant: ``FixedPoint.objective`` is F without the constant
(derivations/model.py), and at beta = 1 on the tempering path (gamma = 0) that constant is

    c = -d/2 - (d/2) log(2 pi s) + (d/2) (s/Delta + log(2 pi Delta))
      = (d/2) (s/Delta - 1 - log(s/Delta)),

the KL between the isotropic covariances, zero when s = Delta (it is added here, not fitted).
One fixed point per symmetry orbit is kept; "stable" includes non-hyperbolic points without
unstable directions (coinciding components: exactly neutral splits, recorded as ``kind``).  M = 4 uses the loop-form engine
(:func:`analysis.estimators.common.compiled_model`), whose Jacobian is a Richardson finite
difference (:data:`derivations.loopgen.JAC_FD_DOC`) and whose objective has the same
normalisation as the expanded engine's.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..figures import save_figure
from .registry import FigureContext, figure_job

__all__ = ["TrainablePlan", "KLPlan", "kl_constant", "kl_table", "trainable_table"]


# ----------------------------------------------------------------------------- pi_A_trainable
@dataclass(frozen=True)
class TrainablePlan:
    pis: tuple[float, ...] = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
    As: tuple[float, ...] = (4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0)
    draws: int = 300
    d: int = 1000
    seed: int = 900


def trainable_table(plan: TrainablePlan, out_dir: Path, progress: bool = False) -> dict:
    """Counts per (pi_1, A) cell: arrays of shape (len(pis), len(As)).

    Keys: ``n``, ``k_collapse``, ``k_alignment``, ``k_vanishing`` (ints), ``p_*``, ``ci_*``
    (Wilson 95%, ``[low, high]`` per cell) for collapse, alignment, vanishing.
    """
    import dataclasses

    from derivations.spec import ConstantSchedule, symmetric_bimodal

    from ..classify import MEAN_ALIGNMENT, VANISHING_WEIGHT
    from ..phase import collapse_sweep
    from ..stats import wilson_interval

    base = symmetric_bimodal(plan.As[0], ConstantSchedule(1.0))
    base = dataclasses.replace(base, family=dataclasses.replace(base.family, train_weights=True))
    res = collapse_sweep(base, {"pi_1": plan.pis, "A": plan.As}, d=plan.d, method="ode",
                         draws=plan.draws, seed=plan.seed, out_dir=out_dir, progress=progress,
                         name="pi_A_trainable")
    shape = (len(plan.pis), len(plan.As))
    n = np.zeros(shape, int)
    k = {"collapse": np.zeros(shape, int), "alignment": np.zeros(shape, int),
         "vanishing": np.zeros(shape, int)}
    for flat in range(n.size):
        idx = np.unravel_index(flat, shape)
        mech = res.array("mechanisms", flat)
        out = res.array("outcomes", flat)
        n[idx] = mech.size
        k["collapse"][idx] = int(np.count_nonzero(out))
        k["alignment"][idx] = int(np.count_nonzero(mech == MEAN_ALIGNMENT))
        k["vanishing"][idx] = int(np.count_nonzero(mech == VANISHING_WEIGHT))
    table: dict = {"n": n.tolist(), "spec": base.to_dict()}
    for name, kk in k.items():
        lo, hi = wilson_interval(kk, n)
        table[f"k_{name}"] = kk.tolist()
        table[f"p_{name}"] = (kk / n).tolist()
        table[f"ci_{name}"] = np.stack([np.asarray(lo), np.asarray(hi)], axis=-1).tolist()
    return table


def _plot_trainable(table: dict, plan: TrainablePlan):
    from ..figures import _plt
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    x, y = np.asarray(plan.pis), np.asarray(plan.As)

    def edges(v):
        m = (v[1:] + v[:-1]) / 2
        return np.concatenate([[2 * v[0] - m[0]], m, [2 * v[-1] - m[-1]]])

    for ax, key, title in zip(axes, ("alignment", "vanishing"),
                              ("P(mean alignment)", "P(vanishing weight)")):
        p = np.asarray(table[f"p_{key}"])
        im = ax.pcolormesh(edges(x), edges(y), p.T, vmin=0, vmax=1, cmap="viridis")
        for i, xi in enumerate(x):
            for j, yj in enumerate(y):
                ax.text(xi, yj, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if p[i, j] < 0.6 else "k")
        ax.set_xlabel("pi_1 (weight of mode 1)")
        ax.set_title(f"{title}, trainable weights")
        fig.colorbar(im, ax=ax)
    axes[0].set_ylabel("A = |mu|^2")
    fig.suptitle(f"K = M = 2, no annealing, d = {plan.d}, ode ensemble ({plan.draws} draws/cell)",
                 fontsize=10)
    fig.tight_layout()
    return fig


TRAINABLE_FULL = TrainablePlan()
TRAINABLE_QUICK = TrainablePlan(pis=(0.5, 0.7, 0.9), As=(4.0, 16.0), draws=100)


@figure_job("pi_A_trainable", full=TRAINABLE_FULL, quick=TRAINABLE_QUICK,
            summary="(pi_1, A) with trainable weights: P(mean alignment) and P(vanishing weight)")
def pi_A_trainable(plan: TrainablePlan, ctx: FigureContext) -> Path:
    t0 = time.perf_counter()
    table = trainable_table(plan, ctx.results("pi_A_trainable"), ctx.progress)
    fig = _plot_trainable(table, plan)
    ctx.log(f"pi_A_trainable: {len(plan.pis)} x {len(plan.As)} cells in "
            f"{time.perf_counter() - t0:.0f} s")
    return save_figure(fig, ctx.out_dir / "pi_A_trainable.png",
                       {"plan": asdict(plan), "pi_1": plan.pis, "A": plan.As, **table,
                        "quick": ctx.quick, "wall_time": time.perf_counter() - t0})


# ----------------------------------------------------------------------------- kl_vs_M
@dataclass(frozen=True)
class KLPlan:
    K: int = 2
    Ms: tuple[int, ...] = (2, 3, 4)
    As: tuple[float, ...] = (2.0, 4.0, 5.0, 6.0, 7.0, 9.0, 12.0, 16.0)
    n_random: tuple[int, ...] = (24, 8, 4)
    d: int = 1000
    seed: int = 0


def kl_constant(beta: float, s: float, Delta: float, d: int) -> float:
    """State-independent constant of F at beta = 1 on the tempering path (gamma = 0).

    ``c = -d/2 - (d/2) log(2 pi s) + beta (d/2) (s/Delta + log(2 pi Delta))``; only beta = 1
    (the reverse KL to the target itself) is meaningful here.
    """
    if beta != 1.0:
        raise ValueError(f"beta: the reverse KL to the target needs beta = 1, got {beta}")
    return -d / 2 - d / 2 * math.log(2 * math.pi * s) + \
        beta * d / 2 * (s / Delta + math.log(2 * math.pi * Delta))


def kl_table(plan: KLPlan, log=lambda msg: None) -> list[dict]:
    """One row per (M, A, stable orbit): label, occupancy, w, objective, constant, kl."""
    from derivations.spec import ConstantSchedule, simplex
    from solvers.fixedpoints import find_fixed_points

    from ..estimators.common import compiled_model

    rows = []
    for M, n_random in zip(plan.Ms, plan.n_random):
        for A in plan.As:
            spec = simplex(plan.K, M, A, ConstantSchedule(1.0))
            model = compiled_model(spec)
            t0 = time.perf_counter()
            fps = find_fixed_points(model, 1.0, spec.theta(), n_random=n_random, seed=plan.seed)
            c = kl_constant(1.0, spec.family.variance, spec.target.variance, plan.d)
            orbits: dict = {}
            for f in fps:
                # stable, or non-hyperbolic without unstable directions: coinciding components
                # of a split (M > K) have exactly neutral directions (the split of their
                # common weight), e.g. the KL = 0 minimum 2+2 at M = 4
                if f.n_unstable > 0 or f.objective is None:
                    continue
                key = f.orbit if f.orbit >= 0 else (f.label, round(f.objective, 8))
                if key not in orbits or f.residual < orbits[key].residual:
                    orbits[key] = f
            for f in sorted(orbits.values(), key=lambda f: f.objective):
                occ = sorted((sum(1 for a in f.assignment if a == m) for m in range(plan.K)),
                             reverse=True)
                rows.append({"M": M, "A": A, "label": f.label, "kind": f.kind,
                             "mechanism": f.mechanism,
                             "occupancy": "+".join(map(str, occ)), "w": list(map(float, f.w)),
                             "objective": float(f.objective), "constant": c,
                             "kl": float(f.objective) + c, "residual": float(f.residual)})
            log(f"kl_vs_M: M = {M}, A = {A:g}: {len(orbits)} stable orbits "
                f"in {time.perf_counter() - t0:.1f} s")
    return rows


def _plot_kl(rows: list[dict], plan: KLPlan):
    from ..figures import _plt
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for M, color in zip(plan.Ms, ("C0", "C1", "C2")):
        r = [x for x in rows if x["M"] == M]
        for occ in sorted({x["occupancy"] for x in r}):
            pts = [(x["A"], x["kl"]) for x in r if x["occupancy"] == occ]
            lab = next(x["label"] for x in r if x["occupancy"] == occ)
            ls = "-" if lab == "split" else "--"
            ax.plot(*zip(*pts), ls, marker="o", color=color, label=f"M = {M}: {lab} ({occ})")
        best = {}
        for x in r:
            if x["label"] == "split":
                best[x["A"]] = min(best.get(x["A"], np.inf), x["kl"])
        cost = [(x["A"], x["kl"] - best[x["A"]]) for x in r
                if x["label"] == "collapsed" and x["A"] in best]
        if cost:
            bx.plot(*zip(*cost), "--o", color=color, label=f"M = {M}")
    ax.axhline(math.log(2), color="0.5", lw=0.8, ls=":", label="log 2")
    ax.set_xlabel("A = |mu|^2 / Delta  (s = Delta = 1)")
    ax.set_ylabel("reverse KL(q || p) at the stable fixed point (nats)")
    ax.set_title(f"K = {plan.K} antipodal modes, beta = 1, fixed equal weights")
    ax.legend(fontsize=7)
    bx.axhline(math.log(2), color="0.5", lw=0.8, ls=":", label="log 2")
    bx.set_xlabel("A = |mu|^2 / Delta")
    bx.set_ylabel("KL(collapsed) - KL(best split)  (nats)")
    none = [M for M in plan.Ms if not any(x["M"] == M and x["label"] == "collapsed" for x in rows)]
    bx.set_title("cost of collapse" + (f" (no stable collapsed state at M = "
                                       f"{', '.join(map(str, none))})" if none else ""))
    bx.legend(fontsize=7)
    fig.tight_layout()
    return fig


KL_FULL = KLPlan()
KL_QUICK = KLPlan(Ms=(2, 3), As=(4.0, 9.0, 16.0), n_random=(16, 2))


@figure_job("kl_vs_M", full=KL_FULL, quick=KL_QUICK,
            summary="reverse KL of the stable fixed points against A for M = 2, 3, 4 (K = 2)")
def kl_vs_M(plan: KLPlan, ctx: FigureContext) -> Path:
    t0 = time.perf_counter()
    rows = kl_table(plan, ctx.log)
    fig = _plot_kl(rows, plan)
    return save_figure(fig, ctx.out_dir / "kl_vs_M.png",
                       {"plan": asdict(plan), "rows": rows, "quick": ctx.quick,
                        "note": "M = 4 by the loop-form engine (finite-difference Jacobian)",
                        "wall_time": time.perf_counter() - t0})
