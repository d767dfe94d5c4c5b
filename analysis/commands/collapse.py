"""``mfvi collapse``: the probability of mode collapse by one of the registered estimators."""

from __future__ import annotations

import argparse
import sys

from ._common import (
    add_estimator_arguments,
    add_force_argument,
    add_json_arguments,
    add_problem_arguments,
    emit_json,
    estimator_options,
    nonneg_int,
    output_file,
    positive_int,
    spec_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collapse", help="collapse probability (ode, separatrix, linear, montecarlo, gd, sgd)",
        description="Probability of mode collapse over the random initialisation in dimension "
                    "d, by a registered estimator: the theory ensemble (ode), the large-d "
                    "separatrix formula, the linearised theory, real VI in R^d (montecarlo), "
                    "or the exact reduced finite-step engines (gd, sgd).")
    add_problem_arguments(p, schedule_default="exponential")
    e = p.add_argument_group("estimator")
    e.add_argument("--d", type=positive_int, default=1000, help="dimension (default 1000)")
    e.add_argument("--draws", type=positive_int, default=5000,
                   help="draws / seeds for ode, montecarlo and sampled linear (default 5000)")
    e.add_argument("--seed", type=nonneg_int, default=0, help="root seed (default 0)")
    e.add_argument("--workers", type=nonneg_int, default=0,
                   help="run ode/montecarlo chunks in a process pool of this size (default: "
                        "in-process, compiled code already uses all cores)")
    add_estimator_arguments(p, default="ode")
    add_force_argument(p)
    add_json_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.collapse import collapse_probability

    spec = spec_from_args(args)
    out = output_file("--out", args.out)
    opts = estimator_options(args, args.method)
    opts.setdefault("progress", not args.json and sys.stderr.isatty())
    executor = None
    if args.workers > 0:
        from concurrent.futures import ProcessPoolExecutor
        executor = ProcessPoolExecutor(max_workers=args.workers)
    try:
        res = collapse_probability(spec, args.d, args.method, draws=args.draws, seed=args.seed,
                                   executor=executor, force=args.force, **opts)
    finally:
        if executor is not None:
            executor.shutdown()
    if not emit_json(args, res.to_dict(), out):
        lo, hi = res.ci
        count = f" ({res.k}/{res.n})" if res.k is not None else ""
        print(f"method {res.method}, d = {res.d}: P(collapse) = {res.p:.4f} "
              f"[{lo:.4f}, {hi:.4f}]{count}  in {res.wall_time:.1f} s")
        for note in res.notes:
            print(f"  note: {note}")
    return 0
