"""The loop-form engine at many modes and components (issue 9): compile, rhs and ensemble cost.

    python benchmarks/bench_many_modes.py [--quick]

1. Compile: derive + generate + Numba-compile ``rhs`` of the loop-form engine in a fresh
   subprocess with an empty ``MFVI_CACHE_DIR`` (cold), then again with that cache (warm), for
   K = M in 2, 3, 4, 5, 8.  (Numba's own cache of the kernels in ``solvers/`` lives beside
   their sources and is warm in both, as in benchmarks/bench_codegen.py.)
2. rhs: one evaluation of the compiled rhs (orthogonal preset, A = 9) at an initial draw in
   d = 1000 and at a late state (component k at 0.9 mu_k, k <= K: Q/s has O(1) eigenvalues in
   every direction), as a ratio to the expanded engine's rhs at K = M = 2 timed in the same
   process (the baseline), and in microseconds.
3. Ensemble: the ``ode`` estimator, orthogonal preset, constant beta = 1, d = 1000, 8
   draws, t_end = 20, wall seconds per draw, for (K, M) = (2, 2), (3, 3) (expanded engine)
   and (2, 4) (loop-form engine; larger K is out of reach of the n-D kernel, see the rhs
   table).

Prints a table (wall-clock seconds / microseconds on this machine; 2 cores shared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from derivations.spec import ModelStructure
from derivations.loopgen import compile_loop_model
K, M = int(sys.argv[1]), int(sys.argv[2])
m = compile_loop_model(ModelStructure(K, M))
m.rhs
print(json.dumps({"total_s": time.perf_counter() - t0, **m.timings["rhs"]}))
"""


def compile_times(K: int, M: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "MFVI_CACHE_DIR": d}
        out = []
        for _ in range(2):
            p = subprocess.run([sys.executable, "-c", CHILD, str(K), str(M)], env=env,
                               capture_output=True, text=True, check=True)
            out.append(json.loads(p.stdout.strip().splitlines()[-1])["total_s"])
    return out[0], out[1]


def time_call(fn, *args, reps: int = 0) -> float:
    fn(*args)
    if reps == 0:
        t = time.perf_counter()
        fn(*args)
        one = time.perf_counter() - t
        reps = max(1, min(2000, int(0.5 / max(one, 1e-7))))
    t = time.perf_counter()
    for _ in range(reps):
        fn(*args)
    return (time.perf_counter() - t) / reps


def states(spec, d: int):
    from analysis.estimators.common import chunked_initial_states
    K, M = spec.target.K, spec.family.M
    y0 = chunked_initial_states(spec, d, 1, 0, 10)[0][0]
    A = spec.target.T[0, 0]
    c = np.zeros((M, K))
    for k in range(M):
        c[k, k % K] = 0.9
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(M, M)) * 0.05
    Q = c @ c.T * A + noise @ noise.T
    R = c * A
    y1 = np.array([Q[k, l] for k in range(M) for l in range(k, M)] + list(R.ravel()))
    return y0, y1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes")
    args = ap.parse_args()
    from derivations.codegen import compile_model
    from derivations.spec import ConstantSchedule, ModelStructure, orthogonal

    sizes = [2, 3, 4] if args.quick else [2, 3, 4, 5, 8]
    print("# compile (loop-form rhs), seconds")
    print(f"{'K=M':>4} {'cold':>7} {'warm':>7}")
    for n in sizes:
        cold, warm = compile_times(n, n)
        print(f"{n:>4} {cold:7.1f} {warm:7.2f}", flush=True)

    base = compile_model(ModelStructure(2, 2))
    sb = orthogonal(2, 2, 9.0)
    yb, _ = states(sb, 1000)
    outb = np.empty(yb.size)
    tb = time_call(base.rhs, yb, 1.0, sb.theta(), outb)
    print(f"\n# rhs: baseline expanded K=M=2 at the initial draw {tb * 1e6:.1f} us")
    print(f"{'K=M':>4} {'init us':>12} {'ratio':>9} {'late us':>12} {'ratio':>9}")
    from analysis.estimators.common import compiled_model
    for n in sizes:
        spec = orthogonal(n, n, 9.0)
        model = compiled_model(spec) if n > 3 else __import__(
            "derivations.loopgen", fromlist=["x"]).compile_loop_model(spec.structure)
        th = spec.theta()
        y0, y1 = states(spec, 1000)
        out = np.empty(y0.size)
        cells = []
        for y in (y0, y1):
            try:
                t1 = time_call(model.rhs, y, 1.0, th, out, reps=1 if n >= 5 else 0)
                cells.append(f"{t1 * 1e6:12.0f} {t1 / tb:9.0f}")
            except ValueError:
                cells.append(f"{'refused':>12} {'-':>9}")
        print(f"{n:>4} {cells[0]} {cells[1]}", flush=True)

    from analysis.collapse import collapse_probability
    print("\n# ode estimator, orthogonal A=9, beta=1, d=1000, t_end=20: seconds per draw")
    for K, M in [(2, 2), (3, 3), (2, 4)]:
        spec = orthogonal(K, M, 9.0, ConstantSchedule(1.0))
        draws = 8
        collapse_probability(spec, 1000, "ode", draws=1, seed=1, t_end=1.0, max_extensions=0)
        t = time.perf_counter()
        res = collapse_probability(spec, 1000, "ode", draws=draws, seed=0, t_end=20.0,
                                   max_extensions=0)
        dt = time.perf_counter() - t
        print(f"K={K} M={M} {dt / draws:8.2f} s/draw  ({draws} draws, p = {res.p:.2f})",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
