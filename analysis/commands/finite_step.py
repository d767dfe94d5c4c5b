"""``mfvi finite-step``: the SGD collapse probability predicted from the separatrix with the
effective initial overlap and the out-of-span inflation (:mod:`analysis.finite_step`)."""

from __future__ import annotations

import argparse

from ._common import (
    CommandError,
    add_json_arguments,
    add_problem_arguments,
    emit_json,
    output_file,
    positive_float,
    positive_int,
    spec_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finite-step", help="SGD collapse from the effective initial overlap (theory)",
        description="Predicts the collapse probability of SGD (step --eta, --n samples per "
                    "component) for the antipodal two-component problem: the in-span gradient "
                    "noise, propagated back by the growth factors of the symmetric and "
                    "antisymmetric overlaps, adds to the initial overlap variance (anisotropic), "
                    "and the out-of-span noise inflates Q in the flow; the separatrix criterion "
                    "then gives P.  Compare with `mfvi collapse --method sgd`.")
    add_problem_arguments(p, schedule_default="constant")
    g = p.add_argument_group("finite step")
    g.add_argument("--d", type=positive_int, required=True, help="dimension")
    g.add_argument("--eta", type=positive_float, required=True, help="SGD step")
    g.add_argument("--n", type=positive_int, default=8, help="samples per component (8)")
    g.add_argument("--estimator", choices=("stl", "reparam"), default="stl",
                   help="gradient estimator (default stl)")
    g.add_argument("--no-inflation", action="store_true",
                   help="leave Q to the flow (the effective overlap alone)")
    g.add_argument("--dt", type=positive_float, default=0.05,
                   help="time step of the growth-factor grid (default 0.05)")
    add_json_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.finite_step import effective_overlap_prediction

    spec = spec_from_args(args)
    out = output_file("--out", args.out)
    try:
        r = effective_overlap_prediction(spec, args.d, args.eta, args.n, args.estimator,
                                         inflation=not args.no_inflation, dt=args.dt)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    res = r.to_dict()
    if emit_json(args, res, out):
        return 0
    print(f"SGD collapse (theory): p = {r.p:.4g}   [flow basin with eps0 alone: "
          f"{r.p_flow:.4g}]")
    print(f"  eps0 = {r.eps0:.4g}; effective eps_s = {r.eps_eff[0]:.4g}, eps_a = "
          f"{r.eps_eff[1]:.4g} (noise variance {r.noise_var[0]:.3g}, {r.noise_var[1]:.3g} "
          f"up to t_cut = {r.t_cut:.3g})")
    print(f"  out-of-span inflation of |m_k|^2 by t_cut: {r.inflation:.3g} "
          f"({'in the flow' if r.corrected else 'not in the flow'})")
    for note in r.notes:
        print(f"  note: {note}")
    return 0
