"""``mfvi phase-diagram``: a resumable collapse-probability sweep over one or two axes."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import (
    PLOT_SUFFIXES,
    CommandError,
    add_force_argument,
    add_problem_arguments,
    estimator_options,
    nonneg_int,
    output_dir,
    output_file,
    positive_int,
    spec_from_args,
)

#: Most grid cells a sweep accepts without --force.
MAX_CELLS = 10_000


def _axis(text: str) -> tuple[str, list[float]]:
    """``NAME=v1,v2,...`` or ``NAME=start:stop:num[:log]`` (num >= 1; log needs start, stop
    > 0); every value finite."""
    import math
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"axis {text!r}: expected NAME=values")
    name, values = text.split("=", 1)
    if not name:
        raise argparse.ArgumentTypeError(f"axis {text!r}: no axis name")
    try:
        if ":" in values:
            import numpy as np
            parts = values.split(":")
            if len(parts) not in (3, 4) or (len(parts) == 4 and parts[3] != "log"):
                raise argparse.ArgumentTypeError(
                    f"axis {name}: expected start:stop:num or start:stop:num:log, got {values!r}")
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
            log = len(parts) == 4
            if num < 1:
                raise argparse.ArgumentTypeError(f"axis {name}: num must be >= 1, got {num}")
            if num > 10 * MAX_CELLS:
                raise argparse.ArgumentTypeError(f"axis {name}: num must be <= "
                                                 f"{10 * MAX_CELLS}, got {num}")
            if log and not (start > 0 and stop > 0):
                raise argparse.ArgumentTypeError(f"axis {name}: a log axis needs start, stop > 0")
            vals = (np.geomspace if log else np.linspace)(start, stop, num).tolist()
        else:
            vals = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"axis {name}: values are not numbers: {values!r}") \
            from None
    if not vals:
        raise argparse.ArgumentTypeError(f"axis {name}: no values given")
    if not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"axis {name}: values must be finite, got {values!r}")
    return name, vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phase-diagram", help="collapse probability over a grid (resumable sweep)",
        description="Sweep the collapse probability over one or two axes among T0, tau, A, "
                    "sigma_init, pi_1 (the separatrix method needs the antipodal target: "
                    "use --method ode for pi_1); or, with --stability, count the stable fixed "
                    "points by label over the axes beta and A. Each cell is written "
                    "atomically to --out; rerunning the same command resumes a killed sweep.")
    add_problem_arguments(p, schedule_default="exponential")
    p.add_argument("--axis", action="append", type=_axis, required=True,
                   metavar="NAME=VALUES",
                   help="an axis: NAME=v1,v2,... or NAME=start:stop:num[:log]; repeat for 2-D")
    p.add_argument("--d", type=positive_int, default=1000, help="dimension (default 1000)")
    from ._common import add_estimator_arguments
    add_estimator_arguments(p, default="separatrix")
    p.add_argument("--draws", type=positive_int, default=2000,
                   help="draws per cell (default 2000)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="root seed (default 0)")
    p.add_argument("--out", required=True, help="sweep directory")
    add_force_argument(p)
    p.add_argument("--workers", type=nonneg_int, default=0,
                   help="run cells in a process pool of this size (default in-process)")
    p.add_argument("--plot", default=None, help="save a heat map (2-D) to this PNG")
    p.add_argument("--json", action="store_true", help="print the grid as one JSON object")
    p.add_argument("--stability", action="store_true",
                   help="fixed-point stability diagram instead: axes beta and A; per cell the "
                        "number of stable split / collapsed / symmetric fixed points")
    p.set_defaults(func=run)


def _run_stability(args: argparse.Namespace, spec, axes: dict) -> int:
    import numpy as np

    from analysis.phase import LABELS, stability_sweep
    if set(axes) != {"beta", "A"}:
        raise CommandError("--stability: give the axes beta and A")
    res = stability_sweep(spec, axes["beta"], axes["A"], out_dir=args.out,
                          progress=not args.json and sys.stderr.isatty())
    counts = {lab: res.scalar(f"stable_{lab}") for lab in LABELS}
    if args.plot:
        from analysis.figures import plot_stability_diagram, save_figure
        fig = plot_stability_diagram(np.asarray(axes["beta"]), np.asarray(axes["A"]),
                                     counts["collapsed"], np.array([]), np.array([]),
                                     title="stable collapsed fixed points")
        save_figure(fig, args.plot, {"axes": axes, "spec": spec.to_dict(), "sweep": args.out,
                                     **{f"stable_{k}": v for k, v in counts.items()}})
    if args.json:
        print(json.dumps({"axes": {"beta": axes["beta"], "A": axes["A"]},
                          **{f"stable_{k}": v.tolist() for k, v in counts.items()},
                          "params": spec.to_dict(), "out": args.out}))
    else:
        for i, b in enumerate(axes["beta"]):
            for j, a in enumerate(axes["A"]):
                print(f"beta={b:g}, A={a:g}: stable " + ", ".join(
                    f"{lab} {int(counts[lab][i, j])}" for lab in LABELS))
    return 0


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from analysis.phase import collapse_sweep
    spec = spec_from_args(args)
    axes = dict(args.axis)
    if len(axes) != len(args.axis) or len(axes) > 2:
        raise CommandError("--axis: give one or two distinct axes")
    n_cells = 1
    for v in axes.values():
        n_cells *= len(v)
    if n_cells > MAX_CELLS and not args.force:
        raise CommandError(f"--axis: {n_cells} grid cells, more than {MAX_CELLS}; reduce the "
                           "grid or pass --force")
    output_dir("--out", args.out)
    output_file("--plot", args.plot, PLOT_SUFFIXES)
    if args.stability:
        return _run_stability(args, spec, axes)
    from analysis.collapse import check_d
    from analysis.estimators import get_estimator, parse_options
    from analysis.phase import apply_cell
    opts = estimator_options(args, args.method)
    est = get_estimator(args.method)()
    parsed = parse_options(est.Options, args.method, opts)
    first = apply_cell(spec, {a: v[0] for a, v in axes.items()})
    est.check(first, check_d(args.d), parsed)
    cell_cost = est.cost(first, args.d, args.draws, parsed)
    from analysis.estimators import Cost
    Cost(cell_cost.bytes, cell_cost.seconds * n_cells,
         f"{n_cells} cells, {cell_cost.what} each").check(args.force, args.method)
    executor = None
    if args.workers > 0:
        from concurrent.futures import ProcessPoolExecutor
        executor = ProcessPoolExecutor(max_workers=args.workers)
    try:
        res = collapse_sweep(spec, axes, d=args.d, method=args.method, draws=args.draws,
                             out_dir=args.out, seed=args.seed, executor=executor,
                             options=opts, progress=not args.json and sys.stderr.isatty())
    finally:
        if executor is not None:
            executor.shutdown()
    p = res.scalar("p")
    if args.plot and len(axes) == 2:
        from analysis.figures import plot_collapse_heatmap, save_figure
        (xn, xv), (yn, yv) = axes.items()
        fig = plot_collapse_heatmap(np.asarray(xv), np.asarray(yv), p, xlabel=xn, ylabel=yn,
                                    title=f"P(collapse), {args.method}, d={args.d}")
        save_figure(fig, args.plot, {"axes": axes, "p": p, "spec": spec.to_dict(),
                                     "method": args.method, "d": args.d, "sweep": args.out})
    payload = {"axes": axes, "p": np.where(np.isfinite(p), p, None).tolist(),
               "ci_low": res.scalar("ci_low").tolist(), "ci_high": res.scalar("ci_high").tolist(),
               "d": args.d, "method": args.method, "params": spec.to_dict(), "out": args.out}
    if args.json:
        print(json.dumps(payload))
    else:
        names = list(axes)
        for idx in np.ndindex(p.shape):
            cell = ", ".join(f"{n}={axes[n][i]:g}" for n, i in zip(names, idx))
            print(f"{cell}: P = {p[idx]:.4f}")
    return 0
