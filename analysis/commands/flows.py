"""``mfvi flows``: RealNVP normalizing flows trained on the annealed reverse KL; collapse fraction.

Example (issue 13)::

    mfvi flows --preset symmetric-bimodal --A 9 --d 10 --seeds 64 --schedule exponential \\
        --T0 20 --tau 100 --json

Trains ``--seeds`` RealNVP flows (flowjax affine coupling layers, optional extra ``[flows]``)
on the target, path and schedule of the problem, beta(t) read at t = dt * steps (dt = lr by
default), and reports the fraction of runs in which some target mode holds statistically none
of the flow's samples, with its Wilson 95% interval.  With ``--json`` one JSON object: ``p``,
``ci``, ``k``, ``n`` (runs counted: the non-diverged ones), ``d``, ``params`` (the problem),
``flow`` (every flow setting), ``steps``, ``t_end``, ``min_mode_fraction``, ``kl`` (medians of the
final KL(q || p) estimate), ``mechanisms``, ``notes``, ``versions``, ``wall_time``.
``--out FILE`` saves FILE.json and FILE.npz (per-run counts, KL, loss traces).  Without the
extra the command prints how to install it and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from ._common import (
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
    p = sub.add_parser("flows", help="RealNVP normalizing flows on the annealed reverse KL from "
                                     "many seeds (extra [flows])",
                       description="Train RealNVP flows (JAX/flowjax) by Adam or SGD on the "
                                   "annealed reverse KL in dimension d from many seeds and "
                                   "report the collapse fraction with a Wilson 95% interval.")
    add_problem_arguments(p, schedule_default="exponential")
    g = p.add_argument_group("flows")
    g.add_argument("--d", type=positive_int, default=10, help="dimension, >= 2 (default 10)")
    g.add_argument("--seeds", type=positive_int, default=64,
                   help="independent runs, trained together (default 64)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="base seed (default 0)")
    g.add_argument("--run-offset", type=nonneg_int, default=0,
                   help="index of the first run (default 0)")
    g.add_argument("--layers", type=positive_int, default=4,
                   help="affine coupling layers (default 4)")
    g.add_argument("--width", type=positive_int, default=32,
                   help="hidden units of each conditioner layer (default 32)")
    g.add_argument("--nn-depth", type=positive_int, default=1,
                   help="hidden layers of each conditioner (default 1)")
    g.add_argument("--init-scale", type=finite_float, default=1.0,
                   help="scale of the conditioners' initial output layers: 1 = flowjax's "
                        "initialisation, 0 = every seed starts at N(0, I) (default 1)")
    g.add_argument("--n", type=positive_int, default=64,
                   help="reparameterised samples per seed per step (default 64)")
    g.add_argument("--estimator", choices=("reparam", "stl"), default="reparam",
                   help="gradient estimator (default reparam)")
    g.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="optimiser (default adam)")
    g.add_argument("--lr", type=positive_float, default=0.01, help="learning rate (default 0.01)")
    g.add_argument("--dt", type=positive_float, default=None,
                   help="schedule time per step, t = dt * steps (default: lr)")
    g.add_argument("--t-end", type=positive_float, default=None,
                   help="final time (default: schedule within --beta-tol of its final beta, "
                        "plus --relax-time; rounded up to whole chunks)")
    g.add_argument("--beta-tol", type=finite_float, default=0.01,
                   help="default t_end: schedule within this of its final beta (default 0.01)")
    g.add_argument("--relax-time", type=finite_float, default=10.0,
                   help="default t_end: relaxation time after that (default 10)")
    g.add_argument("--eval-samples", type=positive_int, default=4096,
                   help="fresh samples per seed for the collapse test (default 4096)")
    g.add_argument("--mass-threshold", type=finite_float, default=0.01,
                   help="a mode is empty when the Wilson 95%% upper bound of its sample "
                        "fraction is below this (default 0.01)")
    g.add_argument("--chunk-steps", type=positive_int, default=100,
                   help="optimiser steps per compiled chunk (default 100)")
    g.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    g.add_argument("--out", default=None, help="save FILE.json (summary) and FILE.npz (arrays)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_force_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.estimators.flow import FlowEstimator, FlowOptions
    from analysis.flows import FlowsUnavailable, require_flows
    from analysis.flows.config import FlowConfig

    spec = spec_from_args(args)
    output_file("--out", args.out)
    config = FlowConfig(
        d=args.d, seeds=args.seeds, seed=args.seed, run_offset=args.run_offset,
        layers=args.layers, width=args.width, nn_depth=args.nn_depth,
        init_scale=args.init_scale, n=args.n, estimator=args.estimator,
        optimizer=args.optimizer, lr=args.lr, dt=args.dt, t_end=args.t_end,
        beta_tol=args.beta_tol, relax_time=args.relax_time, eval_samples=args.eval_samples,
        mass_threshold=args.mass_threshold, chunk_steps=args.chunk_steps)
    opts = {k: v for k, v in config.to_dict().items()
            if k not in ("d", "seeds", "seed", "run_offset")}
    try:
        require_flows()
    except FlowsUnavailable as exc:
        print(f"mfvi flows: {exc}", file=sys.stderr)
        return 2
    FlowEstimator().cost(spec, args.d, args.seeds, FlowOptions(**opts)).check(args.force,
                                                                              "flows")
    from analysis.flows.run import run_flows
    result = run_flows(spec, config, progress=None if not args.no_progress else False)
    summary = result.summary()
    if args.out:
        jpath, npath = result.save(args.out, summary)
        print(f"saved {jpath} and {npath}", file=sys.stderr)
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"collapse fraction: {summary['p']:.4f} [{summary['ci'][0]:.4f}, "
          f"{summary['ci'][1]:.4f}] ({summary['k']}/{summary['n']})")
    print(f"d = {config.d}, runs = {summary['runs']} (diverged: {summary['n_diverged']}, "
          f"undecided: {summary['n_undecided']}), {summary['steps']} steps to t = "
          f"{summary['t_end']:g} (dt = {config.step_time:g})")
    kl = summary["kl"]
    print("final KL(q || p), median: " + ", ".join(
        f"{k} {v:.4f}" for k, v in kl.items() if v is not None))
    for note in summary["notes"]:
        print(f"note: {note}")
    return 0
