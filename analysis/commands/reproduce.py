"""``mfvi reproduce``: compute the headline figure set into figures/ (the main job)."""

from __future__ import annotations

import argparse
import sys

from analysis.reproduce import FIGURES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="compute the headline figures into figures/",
                       description="Compute the headline figure set (phase diagram over "
                                   "(T0, tau), P(collapse) against d, trajectories, "
                                   "bifurcation and stability diagrams) into --out. About "
                                   "10 minutes on 2 cores; --quick about a minute.")
    p.add_argument("--out", default="figures", help="figure directory (default figures)")
    p.add_argument("--results", default=None,
                   help="directory of the resumable intermediate sweeps "
                        "(default: <out>/../results/reproduce[-quick])")
    p.add_argument("--quick", action="store_true", help="small grids: a smoke test")
    p.add_argument("--only", nargs="*", default=None,
                   choices=FIGURES,
                   help="make only these figures")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.reproduce import reproduce
    made = reproduce(args.out, args.results, quick=args.quick, progress=not args.no_progress,
                     only=set(args.only) if args.only else None)
    for name, path in made.items():
        print(f"{name}: {path}")
    sys.stdout.flush()
    return 0
