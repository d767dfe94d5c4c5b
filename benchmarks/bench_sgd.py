"""Benchmark of the exact reduced SGD chain (solvers.sgd) against the d-dimensional simulator.

1. Equal statistics: the same number of runs and SGD steps (K = M = 2 symmetric bimodal,
   A = 9, n = 8, ``stl``, beta = 0.8, fixed weights) with the R^d kernel
   (``analysis._mc_kernels.sgd_block``, what ``analysis.montecarlo.simulate`` runs) and with the
   reduced kernel (``solvers.sgd.sgd_block``), for d = 1e3, 1e4, 1e5, timed in the same process
   (best of ``--reps``; compilation excluded).  The reduced chain's cost does not depend on d,
   the R^d kernel's grows like d, so the ratio grows like d (target: >= 1000 at d = 1e5).
2. Throughput of the reduced kernel: run-steps per second (one step of one run) and SGD steps
   per second of 1000 runs, for K = M = 2 and K = M = 4, ``stl`` / ``reparam``, fixed / trainable
   weights, n = 8.

Usage: ``python benchmarks/bench_sgd.py [--runs 64] [--steps 10] [--reps 3] [--json]``.
The machine may be shared; every time is the best of several repetitions.

Measured (2 cores, 2026-12-03, numba 0.68): R^d / reduced wall-time ratio 17 at d = 1e3,
156 at d = 1e4, 2800 at d = 1e5 (64 runs x 10 steps: 1.83 s against 0.66 ms); reduced
throughput at K = M = 2, n = 8: 9.5e5 run-steps/s (stl, fixed weights) to 6.5e5 (reparam,
trained weights); at K = M = 4: 2.5e5 to 2.0e5.
Rerun 2026-12-03 under a load average of about 9 (five jobs on 2 cores), NUMBA_NUM_THREADS=1,
--reps 5: ratio 13 at d = 1e3, 353 at d = 1e4, 1213 at d = 1e5 (4.34 s against 3.6 ms);
throughput 1.9e5-2.5e5 run-steps/s at K = M = 2 and 3.1e4-5.6e4 at K = M = 4 (one thread).
With 2 threads under that load the ratio at d = 1e5 fell to 607: the reduced kernel's short
parallel calls suffer most from contention.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numba  # noqa: E402

from analysis import _mc_kernels as K  # noqa: E402
from analysis.initial_law import initial_alpha, sample_overlaps  # noqa: E402
from analysis.montecarlo import initial_means, realise_geometry, rng_states  # noqa: E402
from derivations.spec import (  # noqa: E402
    ConstantSchedule,
    Initialisation,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)
from solvers import sgd as R  # noqa: E402

BETA, ETA, N = 0.8, 0.02, 8


def best_of(fn, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def rd_time(spec: ProblemSpec, d: int, S: int, steps: int, reps: int) -> float:
    """Wall time of ``steps`` R^d SGD steps of S runs (the simulator's kernel)."""
    M, Kk = spec.family.M, spec.target.K
    mu, _ = realise_geometry(spec, d, 0)
    m = initial_means(spec, d, np.arange(S), 0)
    alpha = np.zeros((S, M))
    z3, z2 = np.zeros((S, 1, 1)), np.zeros((S, M))
    state = rng_states(0, np.arange(S))
    active = np.ones(S, dtype=bool)
    Qo, Ro = np.empty((S, M, M)), np.empty((S, M, Kk))
    tdiag = np.einsum("ad,ad->a", mu, mu)
    logpi = np.log(spec.target.pi)

    def go(nsteps: int) -> None:
        K.sgd_block(m, alpha, z3, z3, z2, z2, state, active, mu, tdiag, logpi,
                    np.full(nsteps, BETA), np.zeros(nsteps), 0, ETA, N, 1.0, 1.0, 1.0, 0, False,
                    0, 0.9, 0.999, 1e-8, Qo, Ro)

    go(1)                                                         # compile / load the cache
    return best_of(lambda: go(steps), reps)


def reduced_setup(spec: ProblemSpec, d: int, S: int, estimator: str):
    Q0, R0 = sample_overlaps(spec, d, S, 0)
    E, X = R.initial_frame(spec.target.T, Q0, R0)
    M = spec.family.M
    alpha = np.ascontiguousarray(np.broadcast_to(initial_alpha(spec), (S, M)).copy())
    state = R.rng_states(0, np.arange(S))
    active = np.ones(S, dtype=bool)
    tdiag = np.ascontiguousarray(np.diag(spec.target.T))
    logpi = np.log(spec.target.pi)

    def go(nsteps: int) -> None:
        R.sgd_block(E, tdiag, logpi, X, alpha, state, active, np.full(nsteps, BETA),
                    np.zeros(nsteps), ETA, N, float(spec.family.variance),
                    float(spec.target.variance), 1.0, d, R.ESTIMATOR_CODES[estimator],
                    spec.family.train_weights)
    go(1)
    return go


def reduced_time(spec: ProblemSpec, d: int, S: int, steps: int, reps: int,
                 estimator: str = "stl") -> float:
    go = reduced_setup(spec, d, S, estimator)
    return best_of(lambda: go(steps), reps)


def spec_k(k: int, train: bool) -> ProblemSpec:
    """K = M = k: target means at the vertices of a regular simplex (|mu|^2 = 9)."""
    if k == 2:
        return symmetric_bimodal(9.0, ConstantSchedule(BETA), train_weights=train)
    T = 9.0 * (np.eye(k) - 1.0 / k) * k / (k - 1)
    return ProblemSpec(
        target=TargetMixture(gram=T.tolist(), weights=[1.0 / k] * k, variance=1.0),
        family=VariationalFamily(n_components=k, weights=[1.0 / k] * k, variance=1.0,
                                 train_weights=train),
        schedule=ConstantSchedule(BETA), init=Initialisation(sigma_init=1.0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=64, help="runs of the equal-statistics timing")
    ap.add_argument("--steps", type=int, default=10, help="SGD steps of that timing")
    ap.add_argument("--dims", default="1000,10000,100000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    spec = symmetric_bimodal(9.0, ConstantSchedule(BETA))
    S, steps = a.runs, a.steps
    rows = []
    for d in (int(x) for x in a.dims.split(",")):
        t_rd = rd_time(spec, d, S, steps, a.reps)
        # the reduced chain is too fast to time on one call of this size: repeat it
        go = reduced_setup(spec, d, S, "stl")
        inner = 200
        t_red = best_of(lambda: [go(steps) for _ in range(inner)], a.reps) / inner
        rows.append({"d": d, "runs": S, "steps": steps, "rd_seconds": t_rd,
                     "reduced_seconds": t_red, "ratio": t_rd / t_red})
    thr = []
    S_thr, steps_thr = 1000, 200
    for k in (2, 4):
        for est in ("stl", "reparam"):
            for train in (False, True):
                sp = spec_k(k, train)
                t = reduced_time(sp, 10 ** 6, S_thr, steps_thr, a.reps, est)
                thr.append({"K": k, "M": k, "estimator": est, "train_weights": train,
                            "run_steps_per_s": S_thr * steps_thr / t,
                            "steps_per_s_of_1000_runs": steps_thr / t * S_thr / 1000})
    res = {"threads": numba.get_num_threads(), "n": N, "equal_statistics": rows,
           "throughput_d_1e6": thr}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"threads {res['threads']}, n = {N}, K = M = 2, stl, beta = {BETA}")
        print("equal statistics (same runs and steps):")
        for r in rows:
            print(f"  d = {r['d']:>7}: R^d {r['rd_seconds']:.3g} s, reduced "
                  f"{r['reduced_seconds']:.3g} s, ratio {r['ratio']:.3g}")
        print("reduced kernel throughput (d = 1e6; cost independent of d):")
        for r in thr:
            print(f"  K = M = {r['K']}, {r['estimator']:>7}, weights "
                  f"{'trained' if r['train_weights'] else 'fixed  '}: "
                  f"{r['run_steps_per_s']:.3g} run-steps/s "
                  f"({r['steps_per_s_of_1000_runs']:.3g} steps/s of 1000 runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
