"""``mfvi derive``: print the reduced equations (LaTeX, Markdown) or the generated Numba source."""

from __future__ import annotations

import argparse
import sys

from derivations.spec import OBJECTIVE_PATHS, OBJECTIVES, PATHS, VARIANCES, ModelStructure


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("derive", help="print the objective, ODEs and fixed-point equations",
                       description="Print the equations derived symbolically for a model: "
                                   "LaTeX, Markdown, or the generated Numba module.")
    p.add_argument("--preset", choices=("symmetric-bimodal",), default=None,
                   help="specialise to a preset (K = M = 2, T = A [[1,-1],[-1,1]], "
                        "pi = w = 1/2, Delta = s = 1)")
    p.add_argument("--K", type=int, default=2, help="number of target modes (default 2)")
    p.add_argument("--M", type=int, default=2, help="number of components (default 2)")
    p.add_argument("--trainable-weights", action="store_true", help="train the mixture weights")
    p.add_argument("--objective", choices=OBJECTIVES, default="reverse-kl",
                   help="KL(q || p_beta) (reverse-kl, default) or KL(p_beta || q) (forward-kl)")
    p.add_argument("--path", choices=PATHS, default=None,
                   help="annealing path (default: the objective's first, tempering for the "
                        "reverse KL, inflation for the forward KL)")
    p.add_argument("--variances", choices=VARIANCES, default="fixed",
                   help="the component variance s: fixed (default), tied (one common s trained "
                        "through log s at the natural time scale 1/d) or adiabatic "
                        "(reverse KL: s = 1 / (beta/Delta + gamma/sigma0^2); forward KL: "
                        "s = the per-coordinate variance D_beta of p_beta)")
    p.add_argument("--trainable-variances", action="store_true",
                   help="the same as --variances tied")
    p.add_argument("--format", choices=("latex", "markdown", "python"), default="markdown",
                   help="output format (default markdown)")
    p.add_argument("--function", choices=("rhs", "jac", "objective"), default="rhs",
                   help="which generated function to print with --format python (default rhs); "
                        "the module is the structure's, whatever the preset: its numbers "
                        "(T, pi, Delta, s, w) enter at run time as the parameter vector theta")
    p.add_argument("--no-components", action="store_true",
                   help="omit the component form of the ODEs (long for M >= 3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from derivations.codegen import generate_source
    from derivations.emit import to_latex, to_markdown
    from derivations.model import derive

    if args.preset == "symmetric-bimodal" and (args.K, args.M) != (2, 2):
        raise ValueError("--preset: symmetric-bimodal needs K = M = 2")
    path = OBJECTIVE_PATHS[args.objective][0] if args.path is None else args.path
    if path not in OBJECTIVE_PATHS[args.objective]:
        raise ValueError(f"--path: the {args.objective} objective takes "
                         f"{' or '.join(OBJECTIVE_PATHS[args.objective])}, got {path}")
    variances = args.variances
    if args.trainable_variances:
        if variances not in ("fixed", "tied"):
            raise ValueError(f"--trainable-variances: contradicts --variances {variances}")
        variances = "tied"
    structure = ModelStructure(args.K, args.M, args.trainable_weights, path, args.objective,
                               variances)
    model = derive(structure)
    if args.format == "python":
        text = generate_source(model, args.function)
    elif args.format == "latex":
        text = to_latex(model, args.preset, expanded=not args.no_components)
    else:
        text = to_markdown(model, args.preset, expanded=not args.no_components)
    sys.stdout.write(text)
    return 0
