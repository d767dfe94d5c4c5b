"""The flow-versus-mixture comparison of issue 13: P(collapse) of RealNVP over a (T0, tau) grid
at d = 2 and d = 10 beside the mixture theory (ode estimator), both with Wilson 95% intervals.

    python benchmarks/flow_comparison.py [--out figures/flow_comparison.png]
        [--results results/flow_comparison] [--seeds 64] [--draws 2000] [--relax-time 30]

Cells are saved one JSON each under --results (resumable); the figure and its JSON sidecar
(every row of the table and the plan) go to --out.  Needs the [flows] extra.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="figures/flow_comparison.png")
    p.add_argument("--results", default="results/flow_comparison")
    p.add_argument("--seeds", type=int, default=64)
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--relax-time", type=float, default=30.0,
                   help="flow relaxation after the schedule settles (default 30: at 10, some "
                        "beta = 1 runs at A = 9, d = 10 were still returning mass)")
    args = p.parse_args(argv)
    from analysis.figures import save_figure
    from analysis.flows import require_flows
    from analysis.flows.compare import ComparisonPlan, comparison_table, plot_comparison
    require_flows()
    plan = ComparisonPlan(seeds=args.seeds, mixture_draws=args.draws,
                          flow=(("relax_time", args.relax_time),))
    t0 = time.perf_counter()
    rows = comparison_table(plan, args.results, log=lambda m: print(m, file=sys.stderr,
                                                                    flush=True))
    fig = plot_comparison(rows, "P(collapse): RealNVP flow (Adam, t = lr x steps) vs the "
                                "two-component mixture theory, symmetric bimodal targets")
    out = save_figure(fig, Path(args.out), {"plan": plan.to_dict(), "rows": rows,
                                            "wall_time": time.perf_counter() - t0})
    print(f"wrote {out}", file=sys.stderr)
    for r in rows:
        f, m = r["flow"], r["mixture"]
        print(f"A={r['A']:g} d={r['d']} T0={r['T0']:g} tau={r['tau']}: flow {f['p']:.3f} "
              f"[{f['ci'][0]:.3f}, {f['ci'][1]:.3f}] (KL med {f['kl']['median']:.3f}, "
              f"changed in the final window {f.get('changed_final_window')})  "
              f"mixture {m['p']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
