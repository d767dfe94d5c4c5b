"""``mfvi fixed-points``: fixed points of the reduced flow, their stability and labels, and
(with ``--continue``) their branches under one parameter.

Examples::

    mfvi fixed-points --A 9 --beta 0.5
    mfvi fixed-points --A 9 --continue beta 0.05 1 --plot figures/bifurcation_beta.png
    mfvi fixed-points --A 9 --json

With ``--json`` one JSON object is printed: ``problem`` (the specification), ``beta``,
``state_names``, ``fixed_points`` (a list of objects with ``label``, ``stable``, ``kind``,
``n_unstable``, ``eigenvalues`` as ``[re, im]`` pairs, ``Q``, ``R``, ``w``, ``assignment``
(1-based nearest mode of each component), ``residual``, ``realisable``, ``objective``,
``orbit``, ``state``), and with ``--continue`` also ``continuation`` (parameter, start, stop)
and ``branches`` (per branch: ``p``, ``state``, ``stable``, ``n_unstable``, ``labels``,
``realisable``, ``special_points``, ``status``, ``origin``).
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


def _fmt_matrix(A: Any) -> str:
    return "[" + "; ".join(" ".join(f"{v:8.4f}" for v in row) for row in A) + "]"


def _print_fixed_points(fps: Any, beta: float) -> None:
    out = sys.stdout
    out.write(f"Fixed points at beta = {beta:g}: {len(fps)} found "
              f"({fps.n_starts} starts, {fps.n_converged} converged"
              f"{f', {fps.n_unrealisable} unrealisable discarded' if fps.n_unrealisable else ''})"
              "\n")
    out.write(f"{'#':>3} {'label':<10} {'stability':<17} {'orbit':>5} {'F':>10}  "
              f"{'leading eigenvalues':<34} Q / R\n")
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
        if not fp.realisable:
            extra += "  (not realisable)"
        out.write(f"{i:>3} {fp.label:<10} {stab:<17} {fp.orbit:>5} {obj}  {ev:<34} "
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
    from derivations.codegen import compile_model
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
    model = compile_model(spec.structure)
    theta = spec.theta(d=args.d)
    fps = find_fixed_points(model, beta, theta, n_random=args.starts, seed=args.seed,
                            include_unrealisable=args.include_unrealisable)
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
               "fixed_points": [fp.to_dict() for fp in fps]}
        if diagram is not None:
            obj["continuation"] = {"parameter": diagram.parameter, "start": diagram.start,
                                   "stop": diagram.stop}
            obj["branches"] = [b.to_dict() for b in diagram.branches]
            if args.plot is not None:
                obj["plot"] = str(args.plot)
        sys.stdout.write(json.dumps(_finite(obj)) + "\n")
        return 0
    _print_fixed_points(fps, beta)
    if diagram is not None:
        _print_branches(diagram)
        if args.plot is not None:
            sys.stdout.write(f"\nbifurcation diagram written to {args.plot}\n")
    return 0
