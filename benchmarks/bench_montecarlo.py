"""Benchmark of the d-dimensional SGD Monte Carlo (analysis.montecarlo / analysis._mc_kernels).

Measures SGD steps per second (one step = one optimiser step of *every* run) for d = 1000,
M = K = 2, n = 8 samples per component, 1000 runs, ``stl`` estimator, against

1. a plain vectorised NumPy implementation of the same step, written below (numpy's default
   generator for the noise, batched matmul for the projections), checked to compute the same
   gradient as the kernel from the same noise;
2. the arithmetic floor: the floating-point operations of one step (counted below, the
   Gaussian generation excluded) divided by this machine's dense matmul rate, measured in the
   same run (``A @ B`` with 2000 x 2000 float64 matrices, BLAS, all cores);
3. the noise floor: M n d S standard normals per step at the best rate this machine reaches
   with the kernel's own generator alone (all cores), i.e. what the step would cost if
   everything but the random numbers were free.

Usage: ``python benchmarks/bench_montecarlo.py [--d 1000] [--seeds 1000] [--steps 20] [--json]``.
The machine may be shared; every rate is the best of several repetitions.
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
from numba import njit, prange  # noqa: E402

from analysis import _mc_kernels as K  # noqa: E402
from analysis.montecarlo import initial_means, realise_geometry, rng_states, stochastic_gradient  # noqa: E402
from derivations.spec import ConstantSchedule, symmetric_bimodal  # noqa: E402


def best_of(fn, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ----------------------------------------------------------------------------------------
# plain vectorised NumPy implementation of one SGD step (stl estimator, fixed weights)
# ----------------------------------------------------------------------------------------

def numpy_gradient(m, mu, eps, w, logpi, beta, s, delta):
    """g (S, M, d) from m (S, M, d), mu (K, d), eps (S, M, n, d); same estimator as the kernel."""
    S, M, d = m.shape
    n = eps.shape[2]
    ss = math.sqrt(s)
    Q = m @ m.transpose(0, 2, 1)                                   # (S, M, M)
    R = m @ mu.T                                                   # (S, M, K)
    Bt = np.concatenate([m, np.broadcast_to(mu, (S,) + mu.shape)], axis=1).transpose(0, 2, 1)
    P = eps.reshape(S, M * n, d) @ Bt                              # (S, M n, M + K)
    P = P.reshape(S, M, n, -1)
    em, emu = P[..., :M], P[..., M:]
    qd = np.diagonal(Q, axis1=1, axis2=2)                          # (S, M)
    lq = np.log(w) + (Q[:, :, None, :] + ss * em - 0.5 * qd[:, None, None, :]) / s
    lp = logpi + (R[:, :, None, :] + ss * emu - 0.5 * np.einsum("ad,ad->a", mu, mu)) / delta
    rho = np.exp(lq - lq.max(-1, keepdims=True))
    rho /= rho.sum(-1, keepdims=True)
    r = np.exp(lp - lp.max(-1, keepdims=True))
    r /= r.sum(-1, keepdims=True)
    rhobar, rbar = rho.mean(2), r.mean(2)                          # (S, M, M), (S, M, K)
    ebar = eps.mean(2)                                             # (S, M, d)
    c = -1.0 / s + beta / delta
    return w[None, :, None] * (c * (m + ss * ebar) + (rhobar @ m) / s
                               - (beta / delta) * (rbar @ mu))


def numpy_step(m, mu, rng, w, logpi, beta, s, delta, n, eta):
    S, M, d = m.shape
    eps = rng.standard_normal((S, M, n, d))
    m -= eta * numpy_gradient(m, mu, eps, w, logpi, beta, s, delta)


# ----------------------------------------------------------------------------------------
# floors
# ----------------------------------------------------------------------------------------

def step_flops(S: int, M: int, K: int, n: int, d: int) -> int:
    """Floating-point operations of one kernel step (stl, SGD, fixed weights), noise excluded.

    per run: Q and R (M(M+1)/2 + M K dot products, 2d each); projections of the M n samples on
    the M + K means (2 d each) and their running sum (d each); the gradient assembly
    (per component: c m + c' ebar (3 d), M + K axpys (2 d each)); ebar scaling (M d); the
    update (2 M d).  Per-sample scalar work (softmaxes, O(M + K)) is negligible at d = 1000.
    """
    per_run = ((M * (M + 1) // 2 + M * K) * 2 * d
               + M * n * ((M + K) * 2 * d + d)
               + M * (3 * d + (M + K) * 2 * d)
               + M * d
               + 2 * M * d)
    return S * per_run


def matmul_rate(size: int = 2000, reps: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((size, size))
    b = np.random.default_rng(1).standard_normal((size, size))
    a @ b
    t = best_of(lambda: a @ b, reps)
    return 2.0 * size ** 3 / t


@njit(parallel=True, cache=True)
def _noise_only(state, size):
    """The kernel's noise generation alone: ``size`` normals per run into a per-run buffer."""
    total = 0.0
    for r in prange(state.shape[0]):
        out = np.empty(size)
        tmp = np.empty(2 * state.shape[2])
        K.draw_normals(state[r, 0], state[r, 1], out, tmp)
        total += out[0]
    return total


# ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20, help="kernel steps per timing")
    ap.add_argument("--numpy-steps", type=int, default=2, help="NumPy steps per timing")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    d, S, n = a.d, a.seeds, a.n
    spec = symmetric_bimodal(9.0, ConstantSchedule(0.8))
    M, Kk = spec.family.M, spec.target.K
    beta, s, delta, eta = 0.8, 1.0, 1.0, 0.01
    mu, _ = realise_geometry(spec, d, 0)
    ids = np.arange(S)
    m0 = initial_means(spec, d, ids, 0)
    w = spec.family.w
    logpi = np.log(spec.target.pi)
    tdiag = np.einsum("ad,ad->a", mu, mu)

    # --- correctness of the baseline: same gradient as the kernel from the same noise -------
    eps1 = np.random.default_rng(9).standard_normal((1, M, n, d))
    g_np = numpy_gradient(m0[:1], mu, eps1, w, logpi, beta, s, delta)[0]
    g_k, _ = stochastic_gradient(spec, m0[0], mu, eps1[0], beta)
    assert np.allclose(g_np, g_k, rtol=1e-10, atol=1e-12), np.max(np.abs(g_np - g_k))

    # --- kernel -----------------------------------------------------------------------------
    m = m0.copy()
    alpha = np.zeros((S, M))
    z3, z2 = np.zeros((S, 1, 1)), np.zeros((S, M))
    state = rng_states(0, ids)
    active = np.ones(S, dtype=bool)
    Qo, Ro = np.empty((S, M, M)), np.empty((S, M, Kk))

    def kernel(nsteps):
        betas = np.full(nsteps, beta)
        K.sgd_block(m, alpha, z3, z3, z2, z2, state, active, mu, tdiag, logpi, betas,
                    np.zeros(nsteps), 0, eta, n, s, delta, 1.0, False, False, False, 0.9, 0.999,
                    1e-8, Qo, Ro)

    kernel(1)                                                     # compile / load cache
    t_kernel = best_of(lambda: kernel(a.steps), a.reps) / a.steps

    # --- NumPy baseline ---------------------------------------------------------------------
    mn = m0.copy()
    rng = np.random.default_rng(0)
    numpy_step(mn, mu, rng, w, logpi, beta, s, delta, n, eta)
    t_numpy = best_of(lambda: [numpy_step(mn, mu, rng, w, logpi, beta, s, delta, n, eta)
                               for _ in range(a.numpy_steps)], a.reps) / a.numpy_steps
    t_np_noise = best_of(lambda: rng.standard_normal((S, M, n, d)), a.reps)

    # --- floors -----------------------------------------------------------------------------
    rate = matmul_rate()
    flops = step_flops(S, M, Kk, n, d)
    t_floor = flops / rate
    _noise_only(state, M * n * d)
    t_noise = best_of(lambda: _noise_only(state, M * n * d), a.reps)
    normals = S * M * n * d

    res = {
        "d": d, "seeds": S, "M": M, "K": Kk, "n": n, "threads": numba.get_num_threads(),
        "kernel_steps_per_s": 1.0 / t_kernel,
        "numpy_steps_per_s": 1.0 / t_numpy,
        "speedup_vs_numpy": t_numpy / t_kernel,
        "flops_per_step": flops,
        "matmul_gflops": rate / 1e9,
        "arithmetic_floor_steps_per_s": 1.0 / t_floor,
        "kernel_time_over_arithmetic_floor": t_kernel / t_floor,
        "normals_per_step": normals,
        "noise_floor_steps_per_s": 1.0 / t_noise,
        "kernel_ns_per_normal_per_core": t_noise / normals * numba.get_num_threads() * 1e9,
        "numpy_ns_per_normal": t_np_noise / normals * 1e9,
        "kernel_time_over_noise_plus_arithmetic_floor": t_kernel / (t_noise + t_floor),
        "kernel_effective_gflops": flops / t_kernel / 1e9,
    }
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"d = {d}, M = K = {M}, n = {n}, runs = {S}, threads = {res['threads']}")
        print(f"  kernel               {res['kernel_steps_per_s']:8.2f} steps/s")
        print(f"  NumPy baseline       {res['numpy_steps_per_s']:8.2f} steps/s   "
              f"(kernel is {res['speedup_vs_numpy']:.1f}x faster)")
        print(f"  arithmetic floor     {res['arithmetic_floor_steps_per_s']:8.2f} steps/s   "
              f"({flops / 1e6:.0f} Mflop/step at the matmul rate {res['matmul_gflops']:.1f} "
              f"GFlop/s; kernel time = {res['kernel_time_over_arithmetic_floor']:.1f}x floor)")
        print(f"  noise floor          {res['noise_floor_steps_per_s']:8.2f} steps/s   "
              f"({normals / 1e6:.0f}M normals/step at "
              f"{res['kernel_ns_per_normal_per_core']:.2f} ns/normal/core; NumPy "
              f"{res['numpy_ns_per_normal']:.1f} ns/normal)")
        print(f"  kernel time / (noise + arithmetic floor) = "
              f"{res['kernel_time_over_noise_plus_arithmetic_floor']:.2f}")
        print("Targets:")
        sp_np = res["speedup_vs_numpy"]
        r_ar = res["kernel_time_over_arithmetic_floor"]
        r_nf = res["kernel_time_over_noise_plus_arithmetic_floor"]
        print(f"  >= 3x the NumPy baseline:            {sp_np:.1f}x  "
              f"{'OK' if sp_np >= 3 else f'MISSED by {3 / sp_np:.2f}x'}")
        print(f"  within 3x of the arithmetic floor:   {r_ar:.2f}x  "
              f"{'OK' if r_ar <= 3 else f'MISSED by {r_ar / 3:.2f}x'} (the floor counts the "
              "step's flops but not the generation of its normals)")
        print(f"  within 3x of noise + arithmetic:     {r_nf:.2f}x  "
              f"{'OK' if r_nf <= 3 else f'MISSED by {r_nf / 3:.2f}x'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
