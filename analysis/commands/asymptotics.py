"""``mfvi asymptotics``: the large-d law of collapse ``P ~ C d^-alpha L(d)^p`` in closed form
(:mod:`analysis.asymptotics`), checked against the separatrix estimate."""

from __future__ import annotations

import argparse
import math

from ._common import (
    CommandError,
    add_json_arguments,
    add_problem_arguments,
    emit_json,
    finite_float,
    output_file,
    spec_from_args,
)


def _ds(text: str) -> tuple[float, ...] | None:
    if text.strip().lower() == "none":
        return None
    try:
        ds = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers or 'none', "
                                         f"got {text!r}") from None
    if not ds or any(not (math.isfinite(d) and d >= 10) for d in ds):
        raise argparse.ArgumentTypeError(f"dimensions must be finite and >= 10, got {text!r}")
    return ds


def _eps(text: str) -> tuple[float, ...]:
    try:
        eps = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, got {text!r}") \
            from None
    if len(eps) < 3 or any(not 0 < e < 1 for e in eps):
        raise argparse.ArgumentTypeError(f"need at least 3 amplitudes in (0, 1), got {text!r}")
    return eps


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "asymptotics", help="large-d law of collapse P ~ C d^-alpha L(d)^p (closed form)",
        description="The large-d law of mode collapse for the antipodal two-component problem: "
                    "alpha = (lambda_a/lambda_s - 1)/2 from the rates at the symmetric fixed "
                    "point, the log exponent p of the degenerate case beta Delta = s, C from "
                    "the separatrix constant c (fitted to the nonlinear critical angles), the "
                    "schedule's factor and the annealing-time scaling, compared with the "
                    "separatrix estimate at --check-ds.")
    add_problem_arguments(p, schedule_default="constant")
    g = p.add_argument_group("asymptotics")
    g.add_argument("--check-ds", type=_ds, default=(1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
                                                    1e10),
                   metavar="D,D,...", help="dimensions of the separatrix comparison (default "
                                           "1e2,...,1e10; 'none' skips it)")
    g.add_argument("--fit-eps", type=_eps, default=None, metavar="EPS,EPS,...",
                   help="amplitudes of the fit of c (default 7 from 1e-4 to 1e-7)")
    g.add_argument("--n-eps-per-decade", type=int, default=6,
                   help="amplitudes per decade of the separatrix table (default 6)")
    g.add_argument("--rel-tol", type=finite_float, default=1e-4,
                   help="relative bisection width of the critical angles (default 1e-4)")
    g.add_argument("--beta-star", type=finite_float, default=0.5,
                   help="stage (beta at escape) of the tau(d) rule (default 0.5)")
    add_json_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.asymptotics import FIT_EPS, large_d_law

    spec = spec_from_args(args)
    out = output_file("--out", args.out)
    if args.n_eps_per_decade < 2:
        raise CommandError(f"--n-eps-per-decade: must be >= 2, got {args.n_eps_per_decade}")
    if not 0 < args.rel_tol < 0.1:
        raise CommandError(f"--rel-tol: must lie in (0, 0.1), got {args.rel_tol}")
    if not 0 < args.beta_star < 1:
        raise CommandError(f"--beta-star: must lie in (0, 1), got {args.beta_star}")
    law = large_d_law(spec, fit_eps=args.fit_eps or FIT_EPS, check_ds=args.check_ds,
                      n_eps_per_decade=args.n_eps_per_decade, rel_tol=args.rel_tol,
                      beta_star=args.beta_star)
    res = law.to_dict()
    if emit_json(args, res, out):
        return 0
    sch = law.schedule
    print(f"large-d law: P(d) = C d^-alpha L_eff(d)^p,  L_eff = escape time "
          f"(schedule {spec.schedule.kind})")
    print(f"  rates       lambda_s = {law.lambda_s:.6g}, lambda_a = {law.lambda_a:.6g}, "
          f"kappa = {law.kappa:.6g}")
    print(f"  exponent    alpha = (kappa - 1)/2 = {law.alpha:.6g}; log exponent p = "
          f"{law.p:.4g} (a_a = {law.a_a:.4g}, a_s = {law.a_s:.3g}, b = {law.b:.4g})")
    print(f"  separatrix  c = {law.c:.6g}, t_1 = {law.t_1:.4g} (fit residual "
          f"{law.fit['max_residual']:.2g} in ln theta_c)")
    print(f"  prefactor   C = {law.C:.6g} (constant schedule {law.C_constant:.6g}; schedule "
          f"factor F = {sch['F']:.6g}, escape delay Delta_S = {sch['Delta_S']:.4g})")
    if law.check:
        c = law.check
        print("  check against the separatrix estimate:")
        print("      d          P_sep        P_law      ratio")
        for d, ps, pl, r in zip(c["ds"], c["P_separatrix"], c["P_law"], c["ratio"]):
            print(f"    {d:9.3g}  {ps:11.5g}  {pl:11.5g}  {r:8.4f}")
        d10 = c["d_10pct"]
        print(f"  law within 10% from d = {d10:g}" if d10 is not None else
              "  law not within 10% at the largest checked d")
    if law.slope_1e8_1e10 is not None:
        print(f"  local slope of the separatrix estimate, d = 1e8..1e10: "
              f"{law.slope_1e8_1e10:.5f} (-alpha = {-law.alpha:.5f})")
    a = law.annealing
    if "log10_d_settled" in a:
        print(f"  annealed law valid for d > 10^{a['log10_d_settled']:.1f}")
    if a.get("tau_per_ln_d") is not None:
        print(f"  to keep the escape at beta* = {a['beta_star']:g}: tau ~ "
              f"{a['tau_per_ln_d']:.4g} ln(d/(sigma_init^2 A))")
    for note in law.notes:
        print(f"  note: {note}")
    return 0
