"""``mfvi design-schedule``: the annealing schedule of one family that minimises P(collapse)
within a time budget (:func:`analysis.design.design_schedule`).

Examples::

    mfvi design-schedule --preset symmetric-bimodal --A 9 --d 1000 --budget 100
    mfvi design-schedule --A 9 --budget 100 --family free --json --spec-out best.json
    mfvi collapse --spec best.json --method separatrix      # verify

The problem's own schedule (``--schedule`` etc.) is replaced by the designed one.  With
``--json`` one JSON object is printed: ``family, budget, beta_tol, d, method, p, ci,
error_bound, k, n, search_p, schedule, settle_time, parameters, n_evaluations, evaluations,
refused, grid`` (the comparison cells and ``best``), ``optimizer, search_options,
final_options, wall_time, notes`` and ``spec`` (the problem with the designed schedule, the
``--spec`` format).  ``--spec-out FILE`` writes that specification alone.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._common import (
    CommandError,
    add_json_arguments,
    add_problem_arguments,
    emit_json,
    finite_float,
    nonneg_int,
    output_file,
    positive_int,
    spec_from_args,
)


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LO,HI, got {text!r}") from None
    if not (0 < lo < hi < float("inf")):
        raise argparse.ArgumentTypeError(f"need 0 < LO < HI < inf, got {text!r}")
    return lo, hi


def register(sub: argparse._SubParsersAction) -> None:
    from analysis.design import FAMILIES, METHODS, OPTIMIZERS
    p = sub.add_parser(
        "design-schedule", help="optimal annealing schedule within a time budget",
        description="Minimise the collapse probability in dimension --d over the schedules of "
                    "one family whose annealing ends by --budget (settle time at --beta-tol "
                    "<= budget), with scipy.optimize on a bounded parameterisation; the "
                    "separatrix formula where it applies (reduced accuracy during the search, "
                    "the best candidates re-evaluated at full accuracy), else the ode ensemble "
                    "(common draws during the search, fresh draws for the final value).  The "
                    "problem's own schedule options are ignored: the designed schedule "
                    "replaces it.")
    add_problem_arguments(p, schedule_default="exponential")
    g = p.add_argument_group("design")
    g.add_argument("--d", type=positive_int, default=1000, help="dimension (default 1000)")
    g.add_argument("--budget", type=finite_float, required=True,
                   help="time by which the annealing must end (> 0)")
    g.add_argument("--family", default="exponential", metavar="FAMILY",
                   help=f"schedule family: {', '.join(FAMILIES)} (default exponential)")
    g.add_argument("--method", default="auto", metavar="METHOD",
                   help=f"objective: {', '.join(METHODS)} (default auto: separatrix where it "
                        "applies, else ode)")
    g.add_argument("--optimizer", default="nelder-mead", metavar="NAME",
                   help=f"{', '.join(OPTIMIZERS)} (default nelder-mead)")
    g.add_argument("--max-evaluations", type=positive_int, default=120,
                   help="search evaluations: grid + initial points + optimiser (default 120)")
    g.add_argument("--beta-tol", type=finite_float, default=1e-3,
                   help="'ends' means beta within this of 1 for good (default 1e-3)")
    g.add_argument("--n-stages", type=positive_int, default=3,
                   help="piecewise: stages before beta = 1 (default 3)")
    g.add_argument("--n-knots", type=positive_int, default=5,
                   help="free: knots of the piecewise-linear beta(t), the last at beta = 1 "
                        "(default 5)")
    g.add_argument("--search-draws", type=positive_int, default=2000,
                   help="ode: common draws per candidate during the search (default 2000)")
    g.add_argument("--final-draws", type=positive_int, default=20000,
                   help="ode: fresh draws of the final re-evaluation (default 20000)")
    g.add_argument("--n-refine", type=positive_int, default=3,
                   help="separatrix: best candidates re-evaluated at full accuracy (default 3)")
    g.add_argument("--n-starts", type=positive_int, default=None,
                   help="local searches from distinct best points (default 1 for exponential "
                        "and linear, 2 for piecewise and free)")
    g.add_argument("--base-variance", type=_range, default=None, metavar="LO,HI",
                   help="geometric path: also search sigma0^2 of the base in [LO, HI] "
                        "(log scale)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="root seed (default 0)")
    add_json_arguments(p)
    p.add_argument("--spec-out", default=None, metavar="FILE.json",
                   help="write the problem with the designed schedule (the --spec format)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.design import FAMILIES, METHODS, OPTIMIZERS, design_schedule

    if not args.budget > 0:
        raise CommandError(f"--budget: must be > 0, got {args.budget:g}")
    for flag, value, choices in (("--family", args.family, FAMILIES),
                                 ("--method", args.method, METHODS),
                                 ("--optimizer", args.optimizer, OPTIMIZERS)):
        if value not in choices:
            raise CommandError(f"{flag}: must be one of {', '.join(choices)}, got {value!r}")
    if not 0 < args.beta_tol < 0.5:
        raise CommandError(f"--beta-tol: must lie in (0, 0.5), got {args.beta_tol:g}")
    if args.n_knots < 2:
        raise CommandError(f"--n-knots: must be >= 2, got {args.n_knots}")
    spec = spec_from_args(args)
    if args.base_variance is not None and spec.path.kind != "geometric":
        raise CommandError("--base-variance: needs the geometric path (--path geometric)")
    out = output_file("--out", args.out)
    spec_out = output_file("--spec-out", args.spec_out)
    if args.method == "separatrix":
        from analysis.estimators.separatrix import check_separatrix_spec
        try:
            check_separatrix_spec(spec)
        except ValueError as exc:
            raise CommandError(f"--method: separatrix does not apply: {exc}") from None
    res = design_schedule(spec, args.d, args.budget, args.family, method=args.method,
                          beta_tol=args.beta_tol, max_evaluations=args.max_evaluations,
                          optimizer=args.optimizer, n_stages=args.n_stages,
                          n_knots=args.n_knots, search_draws=args.search_draws,
                          final_draws=args.final_draws, seed=args.seed,
                          n_refine=args.n_refine, n_starts=args.n_starts,
                          base_variance=args.base_variance)
    if spec_out is not None:
        from derivations.atomic import atomic_write
        atomic_write(spec_out, res.spec.to_json() + "\n")
    if emit_json(args, res.to_dict(), out):
        return 0
    lo, hi = res.ci
    what = (f"error bound {res.error_bound:.2g}" if res.error_bound is not None
            else f"Wilson 95%, {res.k}/{res.n}")
    sys.stdout.write(
        f"family {res.family}, budget {res.budget:g} (settle time at {res.beta_tol:g}: "
        f"{res.schedule.settle_time(res.beta_tol):.4g}), d = {res.d}, method {res.method}\n"
        f"  schedule: {json.dumps(res.schedule.to_dict())}\n"
        f"  P(collapse) = {res.p:.5f} [{lo:.5f}, {hi:.5f}] ({what})\n"
        f"  evaluations: {res.n_evaluations} "
        f"({', '.join(f'{k} {v}' for k, v in res.evaluations.items())})"
        f" in {res.wall_time:.1f} s\n")
    best = res.grid.get("best")
    if best is not None:
        pb = best.get("p", best["search_p"])
        sys.stdout.write(f"  best {res.grid['family']} grid cell: T0 = {best['T0']:g}, "
                         f"tau = {best['tau']:.4g}: P = {pb:.5f}\n")
    for note in res.notes:
        sys.stdout.write(f"  note: {note}\n")
    if spec_out is not None:
        sys.stdout.write(f"  specification written to {spec_out}\n")
    return 0
