"""The ``mfvi`` command line: ``mfvi <command> ...``.

Each subcommand lives in its own module under ``analysis.commands`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit code.

One guarded runner for every subcommand (:func:`main`): a bad value -- rejected by argparse,
by the specification's or an estimator's validation (``ValueError``), or by an output path
check -- exits with status 2 and one line ``mfvi <command>: <parameter>: <constraint>`` on
stderr, never a traceback.  ``MFVI_DEBUG=1`` re-raises instead, for a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

#: Subcommand modules listed first in ``mfvi --help``, in this order; every other module of
#: ``analysis.commands`` whose name does not start with "_" follows alphabetically, so a new
#: command is one file there.
COMMANDS = ("spec", "derive", "fixed_points", "montecarlo", "collapse", "phase_diagram",
            "reproduce")


def command_modules() -> tuple[str, ...]:
    """The subcommand modules in ``mfvi --help`` order (:data:`COMMANDS`, then the rest)."""
    import pkgutil

    import analysis.commands as pkg
    found = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                   if not m.name.startswith("_"))
    return tuple(c for c in COMMANDS if c in found) + tuple(c for c in found
                                                              if c not in COMMANDS)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="mfvi",
        description="Exact low-dimensional theory of Gaussian-mixture variational inference.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    for name in command_modules():
        import_module(f"analysis.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:
        if os.environ.get("MFVI_DEBUG"):
            raise
        text = str(exc).replace("\n", " ")
        if isinstance(exc, OSError) and exc.filename is not None:
            text = f"{exc.filename}: {exc.strerror}"
        print(f"mfvi {args.command}: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfvi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
