"""``mfvi collapse``: the probability of mode collapse by one of the four estimators."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import add_problem_arguments, spec_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collapse", help="collapse probability (ode, separatrix, linear, montecarlo)",
        description="Probability of mode collapse over the random initialisation in dimension "
                    "d, by the theory ensemble (ode), the large-d separatrix formula, the "
                    "linearised theory, or real VI in R^d (montecarlo).")
    add_problem_arguments(p, schedule_default="exponential")
    e = p.add_argument_group("estimator")
    e.add_argument("--d", type=int, default=1000, help="dimension (default 1000)")
    e.add_argument("--draws", type=int, default=5000,
                   help="draws / seeds for ode, montecarlo and sampled linear (default 5000)")
    e.add_argument("--method", choices=("ode", "separatrix", "linear", "montecarlo"),
                   default="ode", help="estimator (default ode)")
    e.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    e.add_argument("--t-end", type=float, default=None,
                   help="final time (default: schedule settled + 25 relaxation times)")
    e.add_argument("--workers", type=int, default=0,
                   help="run ode/montecarlo chunks in a process pool of this size (default: "
                        "in-process, compiled code already uses all cores)")
    m = p.add_argument_group("montecarlo")
    m.add_argument("--eta", type=float, default=0.02, help="SGD step (default 0.02)")
    m.add_argument("--n", type=int, default=8, help="samples per component per step (default 8)")
    m.add_argument("--estimator", choices=("stl", "reparam"), default="stl")
    m.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.collapse import collapse_probability

    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        raise SystemExit(f"mfvi collapse: {exc}") from None
    opts = {"t_end": args.t_end, "progress": not args.json and sys.stderr.isatty()}
    if args.method == "montecarlo":
        opts.update(eta=args.eta, n=args.n, estimator=args.estimator, optimizer=args.optimizer)
    executor = None
    if args.workers > 0:
        from concurrent.futures import ProcessPoolExecutor
        executor = ProcessPoolExecutor(max_workers=args.workers)
    try:
        res = collapse_probability(spec, args.d, args.method, draws=args.draws, seed=args.seed,
                                   executor=executor, **opts)
    except ValueError as exc:
        raise SystemExit(f"mfvi collapse: {exc}") from None
    finally:
        if executor is not None:
            executor.shutdown()
    payload = res.to_dict()
    text = json.dumps(payload)
    if args.out:
        from derivations.atomic import atomic_write
        atomic_write(args.out, text + "\n")
    if args.json:
        print(text)
    else:
        lo, hi = res.ci
        count = f" ({res.k}/{res.n})" if res.k is not None else ""
        print(f"method {res.method}, d = {res.d}: P(collapse) = {res.p:.4f} "
              f"[{lo:.4f}, {hi:.4f}]{count}  in {res.wall_time:.1f} s")
        for note in res.notes:
            print(f"  note: {note}")
    return 0
