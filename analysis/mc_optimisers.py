r"""Optimisers of the d-dimensional Monte Carlo: the registry and the multi-run Numba kernel.

Time is the gradient-flow time t = eta * steps (for Adam the same convention defines a
nominal time axis).  Updates of the parameters theta = (m, alpha) from the gradient estimate g
(:mod:`analysis.mc_estimators`):

* ``sgd``: ``theta <- theta - eta g`` (for small eta, the gradient flow d theta / dt = -grad F).
* ``adam`` (Kingma & Ba 2015): ``v1 <- b1 v1 + (1 - b1) g``, ``v2 <- b2 v2 + (1 - b2) g^2``,
  ``theta <- theta - eta (v1 / (1 - b1^k)) / (sqrt(v2 / (1 - b2^k)) + adam_eps)`` at step k.
  Its coordinate-wise scaling breaks rotation invariance (DESIGN.md section 7).

:data:`OPTIMISERS` maps a name to an :class:`Optimiser` (contract in its docstring);
:func:`sgd_block` advances S independent runs by a block of steps, one run per ``prange``
iteration, and branches on the optimiser's integer code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from .mc_estimators import REPARAM_CODE, WORK_ROWS, _axpy, grad_from_noise, qr_stats
from .mc_random import FASTMATH, draw_normals
from .registry import CodeRegistry

__all__ = ["Optimiser", "OPTIMISERS", "register_optimiser", "optimiser", "SGD", "ADAM",
           "sgd_block"]


@dataclass(frozen=True)
class Optimiser:
    """A first-order optimiser of the means (and logits) of every run.

    Contract:

    1. ``name`` is the configuration / command-line name, ``code`` the integer on which
       :func:`sgd_block` branches; both unique in :data:`OPTIMISERS`.
    2. ``moments``: the optimiser keeps two per-coordinate state arrays of the shape of the
       parameters (``mom1, mom2`` (S, M, d), ``amom1, amom2`` (S, M)), zero at the start;
       otherwise (1, 1) placeholders per run are passed.
    3. One step reads the gradient estimate of the step (computed with beta, gamma at the
       *start* of the step, t = eta * step) and the step count (for bias corrections) only.
    4. A new optimiser is one registry entry plus one ``elif`` on its code in
       :func:`sgd_block`, and a test that it runs and reduces F on a smooth problem.
    """

    name: str
    code: int
    summary: str
    moments: bool = False


#: Name -> :class:`Optimiser` (:class:`analysis.registry.CodeRegistry`).
OPTIMISERS: CodeRegistry[Optimiser] = CodeRegistry("optimizer", Optimiser)


def register_optimiser(opt: Optimiser) -> Optimiser:
    """Add ``opt`` to :data:`OPTIMISERS` (name and code must be new)."""
    return OPTIMISERS.register(opt)


def optimiser(name: Any) -> Optimiser:
    """The registered optimiser called ``name``, or a ValueError naming ``optimizer``."""
    return OPTIMISERS.lookup(name)


SGD_CODE = 0
ADAM_CODE = 1

SGD = register_optimiser(Optimiser("sgd", SGD_CODE, "plain stochastic gradient descent"))
ADAM = register_optimiser(Optimiser("adam", ADAM_CODE, "Adam with bias correction",
                                    moments=True))


# ----------------------------------------------------------------------------------------
# the kernels
# ----------------------------------------------------------------------------------------

@njit(fastmath=FASTMATH, cache=True)
def _sgd_update(mr, ar, g, galpha, eta, train_w):
    M = mr.shape[0]
    for k in range(M):
        _axpy(-eta, g[k], mr[k])
    if train_w:
        for k in range(M):
            ar[k] -= eta * galpha[k]


@njit(fastmath=FASTMATH, cache=True)
def _adam_update(mr, ar, g, galpha, m1, m2, a1, a2, tstep, eta, b1, b2, adam_eps, train_w):
    M, d = mr.shape
    c1 = 1.0 / (1.0 - b1 ** tstep)
    c2 = 1.0 / (1.0 - b2 ** tstep)
    for k in range(M):
        for i in range(d):
            gi = g[k, i]
            v1 = b1 * m1[k, i] + (1.0 - b1) * gi
            v2 = b2 * m2[k, i] + (1.0 - b2) * gi * gi
            m1[k, i] = v1
            m2[k, i] = v2
            mr[k, i] -= eta * (v1 * c1) / (math.sqrt(v2 * c2) + adam_eps)
    if train_w:
        for k in range(M):
            gi = galpha[k]
            v1 = b1 * a1[k] + (1.0 - b1) * gi
            v2 = b2 * a2[k] + (1.0 - b2) * gi * gi
            a1[k] = v1
            a2[k] = v2
            ar[k] -= eta * (v1 * c1) / (math.sqrt(v2 * c2) + adam_eps)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def sgd_block(m, alpha, mom1, mom2, amom1, amom2, rng_state, active, mu, tdiag, logpi, betas,
              gammas, step0, eta, n, s, delta, sigma0_sq, estimator_code, train_w,
              optimiser_code, b1, b2, adam_eps, Q_out, R_out):
    """Advance S independent runs by ``len(betas)`` optimiser steps (in place).

    m (S, M, d), alpha (S, M): parameters; mom1, mom2 (S, M, d), amom1, amom2 (S, M): the
    optimiser's moments (for an optimiser without moments any (S, 1, 1) / (S, M) arrays);
    rng_state (S, 2, LANES) uint64; active (S,) bool: runs that are still finite (a run whose
    parameters stop being finite is frozen and marked inactive); betas, gammas (nsteps,): beta
    and gamma at the *start* of each step (t = eta * step); step0: number of steps already
    taken (bias corrections).  estimator_code, optimiser_code: the registry codes
    (:data:`analysis.mc_estimators.GRADIENT_ESTIMATORS`, :data:`OPTIMISERS`; booleans read as
    0 / 1, i.e. ``reparam`` and ``adam`` flags).  On return Q_out (S, M, M), R_out (S, M, K)
    hold the statistics of the new m.
    """
    S, M, d = m.shape
    K = mu.shape[0]
    nsteps = betas.shape[0]
    L = rng_state.shape[2]
    score = estimator_code == REPARAM_CODE
    for run in prange(S):
        if active[run]:
            eps = np.empty((M * n, d))
            flat = eps.reshape(M * n * d)
            tmp = np.empty(2 * L)
            g = np.empty((M, d))
            galpha = np.empty(M)
            Q = np.empty((M, M))
            R = np.empty((M, K))
            ebar = np.empty((M, d))
            V = np.empty((M, M, d)) if score else np.empty((M, M, 1))
            rhobar = np.empty((M, M))
            rbar = np.empty((M, K))
            fbar = np.empty(M)
            work = np.empty((WORK_ROWS, M + K))
            Bw = np.empty((M + K, d))
            mr = m[run]
            ar = alpha[run]
            s0 = rng_state[run, 0]
            s1 = rng_state[run, 1]
            for st in range(nsteps):
                draw_normals(s0, s1, flat, tmp)
                grad_from_noise(mr, ar, mu, tdiag, logpi, betas[st], gammas[st], s, delta,
                                sigma0_sq, eps, n, estimator_code, train_w, g, galpha, Q, R,
                                ebar, V, rhobar, rbar, fbar, work, Bw)
                if optimiser_code == ADAM_CODE:
                    _adam_update(mr, ar, g, galpha, mom1[run], mom2[run], amom1[run],
                                 amom2[run], step0 + st + 1, eta, b1, b2, adam_eps, train_w)
                else:
                    _sgd_update(mr, ar, g, galpha, eta, train_w)
            ok = True
            for k in range(M):
                if not math.isfinite(ar[k]):
                    ok = False
                for i in range(d):
                    if not math.isfinite(mr[k, i]):
                        ok = False
            if not ok:
                active[run] = False
        qr_stats(m[run], mu, Q_out[run], R_out[run])
