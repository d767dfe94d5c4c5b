"""``mfvi fixed-points``: fixed points of the reduced flow, their stability and labels, and
(with ``--continue``) their branches under one parameter.

Examples::

    mfvi fixed-points --A 9 --beta 0.5
    mfvi fixed-points --A 9 --continue beta 0.05 1 --plot figures/bifurcation_beta.png
    mfvi fixed-points --A 9 --json

With ``--json`` one JSON object is printed: ``problem`` (the specification), ``beta``,
``state_names``, ``fixed_points`` (a list of objects with ``label``, ``stable``, ``kind``,
``n_unstable``, ``eigenvalues`` as ``[re, im]`` pairs, ``Q``, ``R``, ``w``, ``assignment``
(1-based nearest mode of each component), ``occupancy`` (the number of components of weight
>= 1e-3 on each mode, :func:`analysis.classify.occupancy`), ``occupancy_pattern`` (the same,
sorted, e.g. ``"2+1+1+0"``), ``residual``, ``realisable``, ``objective``, ``orbit``,
``state``), and with ``--continue`` also ``continuation`` (parameter, start, stop)
and ``branches`` (per branch: ``p``, ``state``, ``stable``, ``n_unstable``, ``labels``,
``realisable``, ``special_points``, ``status``, ``origin``, and ``occupancy``: per point
the components on each mode).

Engines: :func:`analysis.estimators.common.compiled_model` (the expanded engine for K, M <= 3,
the loop-form engine, whose Jacobian is a Richardson finite difference, up to K, M = 4 and
beyond).  For K or M >= 4 the search is cut to the scale of the problem
(:func:`search_options`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ._common import (
    PLOT_SUFFIXES,
    CommandError,
    add_force_argument,
    add_problem_arguments,
    nonneg_int,
    output_file,
    positive_int,
    spec_from_args,
)

#: Most random Newton starts accepted without --force.
MAX_STARTS = 10_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fixed-points", help="fixed points, their stability and bifurcation branches",
        description="Find the fixed points of the reduced gradient flow at inverse temperature "
                    "--beta (damped Newton from many starts), classify them by the eigenvalues "
                    "of the Jacobian and label them (split / collapsed / symmetric); with "
                    "--continue, trace their branches in one parameter.")
    add_problem_arguments(p)
    p.add_argument("--continue", dest="cont", nargs=3, metavar=("PARAM", "START", "STOP"),
                   default=None,
                   help="pseudo-arclength continuation in PARAM (beta, A, pi_1, w_1, s, Delta, "
                        "sigma0_sq) from START to STOP; the other parameters stay at their "
                        "values (beta from --beta)")
    p.add_argument("--d", type=positive_int, default=1000,
                   help="dimension (default 1000): with --trainable-variances (--variances tied) "
                        "it sets the parameter inv_d = 1/d of the variance flow, so the fixed "
                        "points of the tied flow are d-dependent through O(1/d) terms; the "
                        "other treatments do not depend on d")
    p.add_argument("--starts", type=nonneg_int, default=48,
                   help="number of random Newton starts (besides the structured ones; default 48)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random starts (default 0)")
    p.add_argument("--include-unrealisable", action="store_true",
                   help="also list fixed points whose joint Gram matrix is not PSD")
    p.add_argument("--max-branches", type=positive_int, default=24,
                   help="cap on the number of branches with --continue (default 24)")
    p.add_argument("--no-switch", action="store_true",
                   help="do not follow the second branch at branch points")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="with --continue: save the bifurcation diagram to PATH (.png, .pdf)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_force_argument(p)
    p.set_defaults(func=run)


def _finite(x: Any) -> Any:
    """Replace non-finite floats (not valid JSON) by None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    return x


def _counted_weights(fp: Any, train_weights: bool) -> Any:
    """Weights for the occupancy count: idle components (plateaus) count as weight 0."""
    if getattr(fp, "idle", ()):
        import numpy as np
        w = np.array(fp.w, dtype=float)
        w[list(fp.idle)] = 0.0
        return w
    return fp.w if train_weights else None


def occupancy_of(Q: Any, R: Any, T: Any, w: Any = None) -> list[int]:
    """Components (of weight >= 1e-3; all when ``w`` is None) nearest to each target mode:
    the label of a fixed point by how many components sit on each mode (length K)."""
    import numpy as np

    from analysis.classify import occupancy
    return [int(x) for x in occupancy(np.asarray(Q), np.asarray(R), np.asarray(T),
                                      None if w is None else np.asarray(w))]


def occupancy_pattern(occ: list[int]) -> str:
    """The occupancy sorted in decreasing order, e.g. ``"2+1+1+0"`` (the label up to the
    symmetry of the modes)."""
    return "+".join(str(x) for x in sorted(occ, reverse=True))


def _fp_dict(fp: Any, T: Any, train_weights: bool) -> dict:
    d = fp.to_dict()
    occ = occupancy_of(fp.Q, fp.R, T, _counted_weights(fp, train_weights))
    d["occupancy"] = occ
    d["occupancy_pattern"] = occupancy_pattern(occ)
    return d


def _branch_dict(br: Any, layout: Any, pmap: Any) -> dict:
    """A branch's JSON with the occupancy of every point (T read at the point's parameter)."""
    d = br.to_dict()
    occ = []
    for p, y in zip(br.p, br.y):
        _, theta = pmap(float(p))
        Q, R, _ = layout.unpack(y)
        w = layout.weights(y, theta) if layout.train_weights else None
        occ.append(occupancy_of(Q, R, layout.T(theta), w))
    d["occupancy"] = occ
    return d


def search_options(spec: Any, n_random: int) -> dict:
    """Keyword arguments of :func:`solvers.fixedpoints.find_fixed_points` for ``spec``.

    K, M <= 3: the defaults (every assignment of components to modes as a start, each start
    also relaxed along the flow, symmetric images added).  K or M >= 4 (the loop-form engine:
    rhs evaluations cost up to ~10 ms at (4, 4), A = 9, and each Jacobian 4 n of them): one
    start per occupancy pattern up to the symmetries of equal weights (components sorted,
    modes sorted when the target weights are equal), the structured centre starts and the
    ``n_random`` random ones, no relaxation and no search for symmetric images."""
    import itertools

    import numpy as np

    from solvers.fixedpoints import default_starts
    from solvers.layout import state_layout
    st = spec.structure
    if max(st.K, st.M) <= 3:
        return {"n_random": n_random}
    layout = state_layout(st)
    theta = spec.theta()
    full = default_starts(layout, theta, 0)
    n_assign = min(256, st.K ** st.M)
    keep = []
    pis = np.asarray(spec.target.weights)
    modes_equal = bool(np.allclose(pis, pis[0]))
    seen = set()
    for count, assign in enumerate(itertools.product(range(st.K), repeat=st.M)):
        if count >= n_assign:
            break
        key = tuple(sorted(assign))
        if modes_equal:
            key = tuple(sorted(np.bincount(assign, minlength=st.K)))
        if key in seen:
            continue
        seen.add(key)
        keep += [3 * count, 3 * count + 1, 3 * count + 2]
    keep += list(range(3 * n_assign, full.shape[0]))
    starts = full[keep]
    rnd = default_starts(layout, theta, n_random, 0)[full.shape[0]:]
    return {"starts": np.concatenate([starts, rnd]), "relax_time": 0.0,
            "use_symmetries": False}


def _fmt_matrix(A: Any) -> str:
    return "[" + "; ".join(" ".join(f"{v:8.4f}" for v in row) for row in A) + "]"


def _print_fixed_points(fps: Any, beta: float, T: Any = None, train_weights: bool = False
                        ) -> None:
    out = sys.stdout
    out.write(f"Fixed points at beta = {beta:g}: {len(fps)} found "
              f"({fps.n_starts} starts, {fps.n_converged} converged"
              f"{f', {fps.n_unrealisable} unrealisable discarded' if fps.n_unrealisable else ''})"
              "\n")
    out.write(f"{'#':>3} {'label':<10} {'occupancy':<10} {'stability':<17} {'orbit':>5} "
              f"{'F':>10}  {'leading eigenvalues':<34} Q / R\n")
    for i, fp in enumerate(fps):
        ev = ", ".join(f"{e.real:+.4f}" + (f"{e.imag:+.3f}i" if abs(e.imag) > 1e-12 else "")
                       for e in fp.eigenvalues[:3])
        stab = fp.kind if fp.kind != "saddle" else f"saddle ({fp.n_unstable} unst.)"
        obj = f"{fp.objective:10.4f}" if fp.objective is not None else f"{'-':>10}"
        extra = "" if fp.s is None else f"  s={fp.s:.6g}"
        if fp.alpha is not None:
            extra += "  w=[" + " ".join(f"{w:.4f}" for w in fp.w) + "]"
        if fp.vanishing:
            extra += "  (vanishing weight: component " + ", ".join(
                str(k + 1) for k in fp.vanishing) + ")"
        if fp.idle:
            extra += "  (plateau: component " + ", ".join(
                str(k + 1) for k in fp.idle) + " idle, its flow is flat)"
        if not fp.realisable:
            extra += "  (not realisable)"
        occ = "-" if T is None else ",".join(
            str(x) for x in occupancy_of(fp.Q, fp.R, T, _counted_weights(fp, train_weights)))
        out.write(f"{i:>3} {fp.label:<10} {occ:<10} {stab:<17} {fp.orbit:>5} {obj}  {ev:<34} "
                  f"Q={_fmt_matrix(fp.Q)}  R={_fmt_matrix(fp.R)}{extra}\n")


def _print_branches(diagram: Any) -> None:
    out = sys.stdout
    out.write(f"\nContinuation in {diagram.parameter} from {diagram.start:g} to "
              f"{diagram.stop:g}: {len(diagram.branches)} branches\n")
    for i, br in enumerate(diagram.branches):
        out.write(f"[{i}] {br.origin}; {len(br)} points, ends: {br.status}\n")
        start = 0
        for j in range(1, len(br) + 1):
            if (j == len(br) or br.labels[j] != br.labels[start]
                    or br.n_unstable[j] != br.n_unstable[start]):
                st = "stable" if br.stable[start] else f"{br.n_unstable[start]} unstable"
                out.write(f"      {diagram.parameter} {br.p[start]:.5g} .. {br.p[j - 1]:.5g}: "
                          f"{br.labels[start]}, {st}\n")
                start = j
        for sp in br.special_points:
            out.write(f"      * {sp.kind.replace('_', ' ')} at {diagram.parameter} = "
                      f"{sp.p:.6g}\n")


def run(args: argparse.Namespace) -> int:
    from analysis.estimators.common import compiled_model
    from solvers.continuation import ParameterMap, trace_branches
    from solvers.fixedpoints import find_fixed_points

    spec = spec_from_args(args)
    if args.starts > MAX_STARTS and not args.force:
        raise CommandError(f"--starts: {args.starts} random starts (each a damped Newton solve "
                           f"and a relaxation; about {args.starts * 5e-3 / 60:.3g} min at 5 ms "
                           f"each, more with --continue), more than {MAX_STARTS}; pass --force")
    beta = float(args.beta)
    if not 0 < beta <= 1:
        raise CommandError(f"--beta: must lie in (0, 1], got {args.beta}")
    pmap = start = stop = None
    if args.cont is not None:
        name = args.cont[0]
        try:
            start, stop = float(args.cont[1]), float(args.cont[2])
        except ValueError:
            raise CommandError(f"--continue: START and STOP must be numbers, got "
                               f"{args.cont[1]!r} {args.cont[2]!r}") from None
        pmap = ParameterMap.from_spec(spec, name, beta=beta, d=args.d)
        pmap.check(start, "--continue START", physical=True)
        pmap.check(stop, "--continue STOP", physical=True)
        if start == stop:
            raise CommandError("--continue: STOP must differ from START")
    if args.plot is not None and args.cont is None:
        raise CommandError("--plot: needs --continue")
    output_file("--plot", args.plot, PLOT_SUFFIXES)
    model = compiled_model(spec)
    theta = spec.theta(d=args.d)
    T, tw = spec.target.T, spec.structure.train_weights
    fps = find_fixed_points(model, beta, theta, **search_options(spec, args.starts),
                            seed=args.seed, include_unrealisable=args.include_unrealisable)
    diagram = None
    if pmap is not None:
        diagram = trace_branches(model, pmap, start, stop, n_random=args.starts, seed=args.seed,
                                 switch_branches=not args.no_switch,
                                 max_branches=args.max_branches,
                                 include_unrealisable=args.include_unrealisable)
        if args.plot is not None:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            from analysis.bifurcation import plot_bifurcation
            fig = plot_bifurcation(diagram, path=args.plot,
                                   title=f"symmetric bimodal, A = {args.A:g}"
                                         + ("" if pmap.name == "beta" else f", beta = {beta:g}"))
            plt.close(fig)

    if args.json:
        obj = {"problem": spec.to_dict(), "beta": beta, "d": args.d,
               "state_names": model.state_names,
               "fixed_points": [_fp_dict(fp, T, tw) for fp in fps]}
        if diagram is not None:
            obj["continuation"] = {"parameter": diagram.parameter, "start": diagram.start,
                                   "stop": diagram.stop}
            from solvers.layout import state_layout
            obj["branches"] = [_branch_dict(b, state_layout(spec.structure), pmap)
                               for b in diagram.branches]
            if args.plot is not None:
                obj["plot"] = str(args.plot)
        sys.stdout.write(json.dumps(_finite(obj)) + "\n")
        return 0
    _print_fixed_points(fps, beta, T, tw)
    if diagram is not None:
        _print_branches(diagram)
        if args.plot is not None:
            sys.stdout.write(f"\nbifurcation diagram written to {args.plot}\n")
    return 0
