"""``mfvi reproduce``: compute the headline figure set into figures/ (the main job)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="compute the headline figures into figures/",
                       description="Compute the headline figure set (every registered figure "
                                   "job: phase diagrams, P(collapse) against d, trajectories, "
                                   "bifurcation and stability diagrams, further sweeps and "
                                   "the topics of analysis/reproduce/) into --out; --list "
                                   "names them. --quick runs each job's small plan (a smoke "
                                   "test).")
    p.add_argument("--out", default="figures", help="figure directory (default figures)")
    p.add_argument("--results", default=None,
                   help="directory of the resumable intermediate sweeps "
                        "(default: <out>/../results/reproduce[-quick])")
    p.add_argument("--quick", action="store_true", help="small grids: a smoke test")
    p.add_argument("--only", nargs="*", default=None, metavar="NAME",
                   help="make only these figures (names: --list)")
    p.add_argument("--list", action="store_true",
                   help="print the figure jobs (name: summary) and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at registration: every mfvi command would pay numpy's import
    from analysis.reproduce import FIGURES, registered_jobs, reproduce
    if args.list:
        for name, job in registered_jobs().items():
            print(f"{name}: {job.summary}")
        return 0
    unknown = sorted(set(args.only or ()) - set(FIGURES))
    if unknown:
        raise ValueError(f"--only: unknown figure(s) {unknown}; "
                         f"choose from {list(FIGURES)}")
    from ._common import output_dir
    output_dir("--out", args.out)
    if args.results is not None:
        output_dir("--results", args.results)
    made = reproduce(args.out, args.results, quick=args.quick, progress=not args.no_progress,
                     only=set(args.only) if args.only else None)
    for name, paths in made.items():
        if not paths:
            print(f"{name}: skipped")
        for path in paths:
            print(f"{name}: {path}")
    sys.stdout.flush()
    return 0
