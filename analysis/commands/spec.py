"""``mfvi spec``: print a problem specification as JSON (the ``--spec`` format) to edit."""

from __future__ import annotations

import argparse
import sys

from ._common import add_problem_arguments, output_file, spec_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spec", help="write a problem specification (JSON) to edit",
                       description="Print the specification given by a preset (or --spec) and "
                                   "the options, in the ProblemSpec.to_json format that every "
                                   "command reads with --spec FILE.json.")
    add_problem_arguments(p)
    p.add_argument("--out", default=None, help="write it to this file instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    out = output_file("--out", args.out)
    text = spec.to_json(indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        from derivations.atomic import atomic_write
        atomic_write(out, text)
    return 0
