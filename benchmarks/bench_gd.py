"""Speed of the exact reduced GD map (solvers.gd) against one evaluation of the flow's rhs.

For each structure (K = M = 2, fixed and trainable weights): the time of one GD step
(``solvers.gd.gd_step``: the generated ``gradient`` + the map) and of one ``rhs`` call, each in
a compiled loop of one state (one thread), their ratio in the same process, and the
throughput of the parallel ensemble driver (``gd_ensemble_core``, all Numba threads).

    python benchmarks/bench_gd.py [--steps 200000] [--members 2000]

Prints a table; times are wall-clock on this machine (best of 3 after a warm-up call).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit

from derivations.codegen import compile_model
from derivations.spec import ConstantSchedule, symmetric_bimodal
from solvers.gd import gd_indices, gd_step, run_gd
from solvers.integrate import as_first_class
from solvers.layout import state_layout
from solvers.signatures import GRAD_SIG, RHS_SIG


@njit
def _loop_rhs(rhs, y, beta, theta, out, n):
    acc = 0.0
    for _ in range(n):
        rhs(y, beta, theta, out)
        acc += out[0]
    return acc


@njit
def _loop_gd(grad, y, beta, theta, eta, qi, ri, ai, ti, n):
    M, K = qi.shape[0], ri.shape[1]
    G, H, dFa = np.empty((M, M)), np.empty((M, K)), np.empty(max(ai.shape[0], 1))
    Q, R, T, A = np.empty((M, M)), np.empty((M, K)), np.empty((K, K)), np.empty((M, M))
    out = np.empty(y.shape[0])
    acc = 0.0
    for _ in range(n):
        gd_step(grad, y, beta, theta, eta, qi, ri, ai, ti, out, G, H, dFa, Q, R, T, A)
        acc += out[0]
    return acc


def _best(fn, repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200_000, help="calls per timed loop")
    ap.add_argument("--members", type=int, default=2000, help="ensemble members")
    ap.add_argument("--ensemble-steps", type=int, default=2000, help="GD steps per member")
    args = ap.parse_args()
    print(f"{'model':10s} {'rhs us':>8s} {'GD step us':>11s} {'ratio':>6s} "
          f"{'ensemble steps/s':>17s} (threads = {numba.get_num_threads()})")
    for trainable in (False, True):
        spec = symmetric_bimodal(9.0, ConstantSchedule(1.0), train_weights=trainable)
        model = compile_model(spec.structure)
        lay = state_layout(spec.structure)
        theta = spec.theta()
        Q = np.array([[1.0, 0.1], [0.1, 1.2]])
        R = np.array([[0.3, -0.3], [-0.2, 0.2]])
        y = lay.pack(Q, R, np.zeros(2) if trainable else None)
        rhs = as_first_class(model.rhs, RHS_SIG)
        grad = as_first_class(model.gradient, GRAD_SIG)
        qi, ri, ai, ti = gd_indices(lay)
        n = args.steps
        out = np.empty(lay.n)
        t_rhs = _best(lambda: _loop_rhs(rhs, y, 1.0, theta, out, n)) / n
        t_gd = _best(lambda: _loop_gd(grad, y, 1.0, theta, 0.01, qi, ri, ai, ti, n)) / n
        Y0 = np.repeat(y[None], args.members, axis=0)
        t_ens = _best(lambda: run_gd(model, Y0, theta, 0.01, n_steps=args.ensemble_steps),
                      repeat=2)
        rate = args.members * args.ensemble_steps / t_ens
        name = "K2M2" + ("tw" if trainable else "")
        print(f"{name:10s} {1e6 * t_rhs:8.3f} {1e6 * t_gd:11.3f} {t_gd / t_rhs:6.2f} "
              f"{rate:17.3g}")


if __name__ == "__main__":
    main()
