"""The ``mfvi`` command line: ``mfvi <command> ...``.

Each subcommand lives in its own module under ``analysis.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

#: Subcommand modules, in the order they appear in ``mfvi --help``.
COMMANDS = ("derive", "fixed_points", "montecarlo", "collapse", "phase_diagram", "reproduce")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfvi",
        description="Exact low-dimensional theory of Gaussian-mixture variational inference.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = import_module(f"analysis.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"analysis.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
