"""``mfvi montecarlo``: real variational inference in R^d from many seeds; collapse fraction.

Example::

    mfvi montecarlo --preset symmetric-bimodal --A 9 --d 1000 --seeds 500 --eta 0.02 --n 8 \\
        --estimator stl --optimizer sgd --schedule exponential --T0 20 --tau 100 --json

With ``--json`` one JSON object is printed on stdout with (at least) ``p`` (collapse fraction),
``ci`` (Wilson 95% interval), ``k`` (collapsed runs), ``n`` (runs counted: the non-diverged
ones), ``d`` and ``params`` (the full problem specification); ``simulation`` holds the
Monte Carlo settings (note: ``simulation.n`` is the number of samples per component, ``--n``,
while the top-level ``n`` is the number of runs).  Without ``--t-end`` the final time follows
the default rule of :mod:`analysis.montecarlo` (schedule within 1e-3 of its final beta, plus a
relaxation period, extended while classifications still change); ``t_end_rule`` says what was
done.  Progress goes to stderr.  ``--out FILE`` saves the summary (FILE.json) and the arrays
(FILE.npz).  ``--compare-ode`` also integrates the reduced ODE from every run's initial
(Q(0), R(0)) and reports the gradient-flow collapse fraction next to the SGD one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from ._common import (
    CommandError,
    add_force_argument,
    add_problem_arguments,
    finite_float,
    nonneg_int,
    output_file,
    positive_float,
    positive_int,
    spec_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("montecarlo", help="SGD/Adam variational inference in R^d from many seeds",
                       description="Train q by stochastic gradient on the annealed reverse KL in "
                                   "dimension d from many independent seeds and report the "
                                   "collapse fraction with a Wilson 95% interval.")
    add_problem_arguments(p, schedule_default="exponential")
    g = p.add_argument_group("Monte Carlo")
    g.add_argument("--d", type=positive_int, default=1000, help="dimension (default 1000)")
    g.add_argument("--seeds", type=positive_int, default=100,
                   help="number of independent runs (default 100)")
    g.add_argument("--eta", type=positive_float, default=None,
                   help="step size; t = eta * steps (default min(0.02, stable step / 10), "
                        "analysis.mc_config.default_eta); a step above the stability bound "
                        "is refused unless --force")
    g.add_argument("--n", type=positive_int, default=8,
                   help="reparameterised samples per component per step (default 8)")
    g.add_argument("--estimator", choices=("stl", "reparam"), default="stl",
                   help="gradient estimator (default stl)")
    g.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                   help="optimiser (default sgd)")
    g.add_argument("--t-end", type=positive_float, default=None,
                   help="final time (default: schedule settled + relaxation, extended while "
                        "outcomes change)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="base seed (default 0)")
    g.add_argument("--run-offset", type=nonneg_int, default=0,
                   help="index of the first run: runs run_offset..run_offset+seeds-1 (default 0)")
    g.add_argument("--records", type=positive_int, default=101,
                   help="points of the recorded time grid (default 101)")
    g.add_argument("--weight-threshold", type=finite_float, default=1e-3,
                   help="ignore components with weight below this in the classification")
    g.add_argument("--beta-tol", type=finite_float, default=1e-3,
                   help="default t_end: schedule within this of its final beta (default 1e-3)")
    g.add_argument("--relax-time", type=positive_float, default=None,
                   help="default t_end: relaxation period (default 25 Delta / (beta_final min w))")
    g.add_argument("--s-init", default=None, metavar="S1,S2,...",
                   help="--variances per-component only: the initial variances s_k, one per "
                        "component (default --s for every component)")
    g.add_argument("--threads", type=positive_int, default=None, help="Numba threads (default: all)")
    g.add_argument("--compare-ode", action="store_true",
                   help="also integrate the reduced ODE from every run's initial overlaps")
    g.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    g.add_argument("--out", default=None, help="save FILE.json (summary) and FILE.npz (arrays)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_force_argument(p)
    # the one command that runs per-component variances (spec_from_args refuses them elsewhere)
    p.set_defaults(func=run, _per_component=True)


def _s_init(args: argparse.Namespace, spec) -> list[float] | None:
    """The initial per-component variances of --s-init (None without it)."""
    if args.s_init is None:
        return None
    if spec.family.variances != "per-component":
        raise CommandError("--s-init: needs --variances per-component (a common variance "
                           "starts at --s)")
    try:
        vals = [float(x) for x in args.s_init.split(",")]
    except ValueError:
        raise CommandError(f"--s-init: must be comma-separated numbers, got "
                           f"{args.s_init!r}") from None
    if len(vals) != spec.family.M or not all(math.isfinite(v) and v > 0 for v in vals):
        raise CommandError(f"--s-init: needs {spec.family.M} finite positive values (one per "
                           f"component), got {args.s_init!r}")
    return vals


def run(args: argparse.Namespace) -> int:
    from analysis.montecarlo import MonteCarloConfig, compare_with_ode, simulate

    spec = spec_from_args(args)
    output_file("--out", args.out)
    config = MonteCarloConfig(
        d=args.d, seeds=args.seeds, eta=args.eta, n=args.n, estimator=args.estimator,
        optimizer=args.optimizer, t_end=args.t_end, seed=args.seed,
        run_offset=args.run_offset, n_records=args.records,
        weight_threshold=args.weight_threshold, beta_tol=args.beta_tol,
        relax_time=args.relax_time, force=args.force)
    if args.threads is not None:
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    progress = None if not args.no_progress else False
    # simulate checks the step against the stability bound and the cost before allocating
    result = simulate(spec, config, progress=progress, s_init=_s_init(args, spec))
    config = result.config
    summary = result.summary()
    if spec.family.variances == "per-component" and result.s is not None:
        sk = result.s[:, -1, :]                            # (S, M) s_k at t_end
        ok = np.all(np.isfinite(sk), axis=1)
        ls = np.log(sk[ok]) if ok.any() else np.full((1, sk.shape[1]), np.nan)
        summary["s_final_per_component"] = [float(x) for x in np.median(sk[ok], axis=0)] \
            if ok.any() else None
        summary["log_s_spread_final"] = {           # max_kj |log s_k - log s_j| at t_end
            "median": float(np.median(ls.max(axis=1) - ls.min(axis=1))),
            "max": float(np.max(ls.max(axis=1) - ls.min(axis=1)))}
    if args.out:  # save the (possibly long) simulation before anything else can fail
        jpath, npath = result.save(args.out, summary)
        print(f"saved {jpath} and {npath}", file=sys.stderr)
    if args.compare_ode:
        summary["ode"] = compare_with_ode(spec, config, result)
        if args.out:  # add the ODE comparison to the saved summary
            result.save(args.out, summary)
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        f = result.fraction
        print(f"collapse fraction: {f}")
        print(f"d = {config.d}, runs = {result.run_ids.size} (diverged: {result.n_diverged}), "
              f"t_end = {result.t_end:g} ({result.steps} steps of eta = {config.eta:g}), "
              f"{summary['steps_per_second']:.1f} steps/s")
        print(f"mechanisms: {summary['mechanisms']}")
        if summary["s_final"] is not None and result.spec.family.variances != "fixed":
            sf = summary["s_final"]
            print(f"{result.spec.objective}, variances {result.spec.family.variances}: s at "
                  f"t_end median {sf['median']:.6g} [min {sf['min']:.6g}, max {sf['max']:.6g}]")
        if summary.get("s_final_per_component") is not None:
            sp = summary["log_s_spread_final"]
            print("per-component s_k at t_end (medians over runs): "
                  + ", ".join(f"{x:.6g}" for x in summary["s_final_per_component"])
                  + f"; max_kj |log s_k - log s_j| median {sp['median']:.3g}, "
                    f"max {sp['max']:.3g}")
        print(f"t_end rule: {result.t_end_rule}; extensions: {result.extensions}; runs changed "
              f"in the final window: {result.changed_final_window}; undecided at t_end: "
              f"{result.n_undecided}")
        for note in result.notes:
            print(f"note: {note}")
        if args.compare_ode:
            o = summary["ode"]
            print(f"reduced ODE from the same starts: {o['p']:.4f} [{o['ci'][0]:.4f}, "
                  f"{o['ci'][1]:.4f}] ({o['k']}/{o['n']}); SGD - ODE = "
                  f"{o['comparison']['diff']:+.4f} [{o['comparison']['ci'][0]:+.4f}, "
                  f"{o['comparison']['ci'][1]:+.4f}], z-test p = "
                  f"{o['comparison']['p_value']:.3g}; per-run agreement {o['agreement']:.3f}")
    return 0
