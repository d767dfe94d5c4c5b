"""``mfvi phase-diagram``: a resumable collapse-probability sweep over one or two axes."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import add_problem_arguments, spec_from_args


def _axis(text: str) -> tuple[str, list[float]]:
    """``NAME=v1,v2,...`` or ``NAME=start:stop:num[:log]``."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"axis {text!r}: expected NAME=values")
    name, values = text.split("=", 1)
    try:
        if ":" in values:
            import numpy as np
            parts = values.split(":")
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
            log = len(parts) > 3 and parts[3] == "log"
            vals = (np.geomspace if log else np.linspace)(start, stop, num).tolist()
        else:
            vals = [float(v) for v in values.split(",") if v]
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"axis {text!r}: bad values") from None
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
    p.add_argument("--d", type=int, default=1000, help="dimension (default 1000)")
    p.add_argument("--method", choices=("ode", "separatrix", "linear", "montecarlo"),
                   default="separatrix", help="estimator (default separatrix)")
    p.add_argument("--draws", type=int, default=2000, help="draws per cell (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="root seed (default 0)")
    p.add_argument("--out", required=True, help="sweep directory")
    p.add_argument("--workers", type=int, default=0,
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
        raise SystemExit("mfvi phase-diagram --stability: give the axes beta and A")
    try:
        res = stability_sweep(spec, axes["beta"], axes["A"], out_dir=args.out,
                              progress=not args.json and sys.stderr.isatty())
    except ValueError as exc:
        raise SystemExit(f"mfvi phase-diagram: {exc}") from None
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
        raise SystemExit("mfvi phase-diagram: give one or two distinct --axis")
    if args.stability:
        return _run_stability(args, spec, axes)
    executor = None
    if args.workers > 0:
        from concurrent.futures import ProcessPoolExecutor
        executor = ProcessPoolExecutor(max_workers=args.workers)
    try:
        res = collapse_sweep(spec, axes, d=args.d, method=args.method, draws=args.draws,
                             out_dir=args.out, seed=args.seed, executor=executor,
                             progress=not args.json and sys.stderr.isatty())
    except ValueError as exc:
        raise SystemExit(f"mfvi phase-diagram: {exc}") from None
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
