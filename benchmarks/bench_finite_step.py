"""Benchmark: the finite-step theory (analysis.finite_step) against the reduced SGD engine.

For a few (schedule, d, eta, n, estimator) points of issue 10 section 2 (A = 9, symmetric
bimodal), time and compare

* ``effective_overlap_prediction`` (effective initial overlap + inflation-corrected flow),
* the same with ``inflation=False`` (the effective overlap alone),
* ``collapse_probability(..., "sgd")`` with ``--draws`` draws (Wilson 95% interval),

each after one warm-up call (compilation excluded).  The theory's cost does not depend on the
number of draws; the engine's grows with draws and with t_end / eta (the schedule's t_end is
about 1035, so eta = 0.02 costs 50000 steps per run).

Usage: ``python benchmarks/bench_finite_step.py [--draws 1000] [--quick] [--json]``
(``--quick``: the constant-schedule points only).

Measured (2 cores, shared with another job, 2026-12-03): constant beta = 1, d = 1e6,
eta = 0.02, n = 8 (stl): theory 0.094 in 3.7 s, engine 0.114 [0.096, 0.135] (1000 draws, seed
1) in 9.8 s; reparam there: theory 0.498 in 24 s (the corrected rhs evaluates the
responsibilities' moments), engine 0.528 [0.497, 0.559] in 13 s.  Exponential schedule T0 = 20,
tau = 100, d = 1000, eta = 0.02, n = 8 (stl): theory 0.202 (0.027 without the inflation) in
about 7 s, engine 0.206 [0.182, 0.232] (1000 draws) in 192 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from analysis.collapse import collapse_probability  # noqa: E402
from analysis.finite_step import effective_overlap_prediction  # noqa: E402
from derivations.spec import ExponentialSchedule, symmetric_bimodal  # noqa: E402

POINTS = [("constant", 10 ** 6, 0.02, 8, "stl"), ("constant", 1000, 0.02, 1, "stl"),
          ("constant", 10 ** 6, 0.02, 8, "reparam"),
          ("exponential", 1000, 0.02, 8, "stl"), ("exponential", 1000, 0.02, 8, "reparam")]


def _spec(kind: str):
    return symmetric_bimodal(9.0) if kind == "constant" else \
        symmetric_bimodal(9.0, ExponentialSchedule(T0=20.0, tau=100.0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    points = [p for p in POINTS if p[0] == "constant"] if args.quick else POINTS
    effective_overlap_prediction(symmetric_bimodal(9.0), 1000, 0.02, 8)       # warm-up
    collapse_probability(symmetric_bimodal(9.0), 1000, "sgd", draws=8, seed=0, eta=0.05,
                         n=8, progress=False)
    rows = []
    for kind, d, eta, n, est in points:
        spec = _spec(kind)
        dt = 0.02 if kind == "constant" else 0.1
        t0 = time.perf_counter()
        full = effective_overlap_prediction(spec, d, eta, n, est, dt=dt)
        t1 = time.perf_counter()
        bare = effective_overlap_prediction(spec, d, eta, n, est, dt=dt, inflation=False)
        t2 = time.perf_counter()
        eng = collapse_probability(spec, d, "sgd", draws=args.draws, seed=1, eta=eta, n=n,
                                   estimator=est, progress=False, force=True)
        t3 = time.perf_counter()
        rows.append({"schedule": kind, "d": d, "eta": eta, "n": n, "estimator": est,
                     "theory": full.p, "theory_s": t1 - t0, "overlap_only": bare.p,
                     "overlap_only_s": t2 - t1, "engine": eng.p, "engine_ci": list(eng.ci),
                     "engine_s": t3 - t2, "draws": args.draws})
        if not args.json:
            r = rows[-1]
            print(f"{kind:11s} d={d:<8g} eta={eta:<5g} n={n} {est:7s} theory {r['theory']:.3f} "
                  f"({r['theory_s']:.1f} s; overlap only {r['overlap_only']:.3f})  engine "
                  f"{r['engine']:.3f} [{r['engine_ci'][0]:.3f}, {r['engine_ci'][1]:.3f}] "
                  f"({r['engine_s']:.1f} s)", flush=True)
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
