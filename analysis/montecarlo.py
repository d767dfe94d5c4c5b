r"""Monte Carlo in finite dimension d: real variational inference in R^d (DESIGN.md 3, item 4).

This module is the ground truth the theory is judged against, so it never uses the reduced
equations: it works with d-dimensional vectors and samples, as a practitioner's VI code would.

Problem (DESIGN.md section 1)
-----------------------------
Target ``p(x) = sum_a pi_a N(x; mu_a, Delta I)`` (mu_a in R^d with Gram matrix T), family
``q(x) = sum_k w_k N(x; m_k, s I)``, annealed reverse KL at inverse temperature beta(t)

    F = E_q log q - beta E_q log p - gamma E_q log p0,    p0 = N(0, sigma0^2 I),

gamma = 1 - beta (geometric path) or 0 (tempering).  Time t is the gradient-flow time: SGD with
step eta takes ``t / eta`` steps (t = eta * steps); for Adam the same convention defines a
nominal time axis (the schedule is evaluated at t = eta * steps).

Simulation (:func:`simulate`)
-----------------------------
1. Geometry: the target means are placed with Gram matrix T in a random orthonormal frame of
   R^d (or taken from ``spec.target.means`` / the ``target_means`` argument when their dimension
   is d); the centres c_k of the initialisation are realised in the same frame consistently with
   ``init.centre_gram`` and ``init.centre_overlaps`` (:func:`realise_geometry`).
2. Initialisation of run i: ``m_k(0) = c_k + (sigma_init / sqrt(d)) z_k``, z_k ~ N(0, I_d);
   logits ``alpha(0) = log w - mean(log w)``.
3. Training: at every step, n reparameterised samples per component
   ``x_ki = m_k + sqrt(s) eps_ki`` and the estimator ``stl`` or ``reparam`` of
   :mod:`analysis.mc_estimators` (both unbiased for grad F; weights through logits when
   ``spec.family.train_weights``); optimiser SGD (``theta -= eta g``) or Adam
   (:mod:`analysis.mc_optimisers`).  beta and gamma
   are evaluated from ``spec.schedule`` at the start of every step, the same schedule object as
   the theory uses.
4. Records: Q = m m^T (M, M), R = m mu^T (M, K) and w on a time grid, computed from the
   d-dimensional vectors, and the final classification (:mod:`analysis.classify`, DESIGN.md 3).

Other objectives and variance treatments (DESIGN.md section 9)
--------------------------------------------------------------
``spec.objective == "forward-kl"`` (paths ``inflation`` and ``mixture``, sampled exactly: the
component of p_beta first, then the Gaussian; M n samples of p_beta per step) and
``spec.family.variances`` in ``("tied", "adiabatic", "per-component")`` (tied: ``d(log s)/dt
= -(1/d) dF/dlog s``; adiabatic: s at its single-component optimum every step; per-component:
``d(log s_k)/dt = -(1/d) dF/dlog s_k`` for every component, starting at ``s_init`` or the
family's variance) run the kernels of :mod:`analysis.mc_objectives`, whose docstring states the
estimators; the fixed-variance reverse KL keeps the kernels above unchanged.  Every result
records s(t) (``result.s``, (S, n_t), or (S, n_t, M) with per-component variances;
``result.s_final``, ``result.s_ratio`` = s(t) / s_final).  Only the ``stl`` estimator is
implemented for them, and the stl noise-inflation warning (a fixed-variance reverse-KL formula)
is not computed for them.

Randomness and reproducibility
------------------------------
Run i of base seed S uses ``SeedSequence(S, spawn_key=(i, 0))`` for its initial means and
``SeedSequence(S, spawn_key=(i, 1))`` to seed its own SGD noise generators; the frame of the
target means comes from ``SeedSequence(S)``.  A run is therefore the same whatever the number of
threads, the number of other runs in the batch, or ``run_offset`` used to split a batch
(``seeds=10, run_offset=0`` contains exactly the runs of ``seeds=5, run_offset=5`` as its last
five).

Default step and end time, resource guard (:mod:`analysis.mc_config`)
----------------------------------------------------------------------
``eta=None`` takes ``default_eta(spec) = min(0.02, stable_step(spec) / 10)``, with
``stable_step = 2 / (1/(4 s) + w max_beta (beta/Delta + gamma/sigma0^2))`` the gradient-descent
stability bound on the curvature of F; an explicit SGD step above it is refused unless
``force``.  ``t_end = t_beta + t_relax``: ``t_beta = spec.schedule.settle_time(beta_tol)``
(beta within ``beta_tol`` = 1e-3 of its final value for good) and ``t_relax = min(25 Delta /
(beta_final min_k w_k(0)), 1000)``, 25 time constants of the attraction of a component by a
mode, capped so that the default stays finite as beta_final -> 0.  The outcome must then be
stable: if any run's classification at t_end differs from its classification half a
relaxation period earlier, the run is extended by another t_relax, up to ``max_extensions``
times; runs that still changed are flagged ``undecided`` (JSON ``n_undecided``).  Memory and
time are estimated before anything is allocated and refused above the toolkit's limits unless
``force`` (:func:`analysis.mc_config.check_cost`).

Module map
----------
:mod:`analysis.mc_config` (settings, default rules, cost guard, results and their I/O),
:mod:`analysis.mc_estimators` (gradient estimators: registry and kernels),
:mod:`analysis.mc_optimisers` (SGD / Adam: registry and the multi-run kernel),
:mod:`analysis.mc_random` (the per-run Gaussian generator), and this module (geometry,
initialisation, the simulation driver, deterministic mode, comparisons with the reduced ODE).
Every name is re-exported here; :mod:`analysis._mc_kernels` keeps the old kernel path.

Deterministic mode (:func:`deterministic_flow`) and cross-check (:func:`cross_check`)
-------------------------------------------------------------------------------------
Expectations are sample means over one fixed set of antithetic pairs ``{+eps_i, -eps_i}`` in
R^d (common random numbers: the same set for every component and every time); the resulting
deterministic vector field is the gradient flow of F with the Gaussian expectations replaced by
that sample average, integrated with classical RK4.  Two sample sets: ``"gaussian"``, i.i.d.
N(0, I_d) whitened to sample covariance exactly I (error ~ 1/sqrt(N): about 5e-3 of the drift
for 2^15 points), and ``"subspace"`` (default), where the part of each point inside
span{mu_a, m_k(0)} -- the only part the integrands see, since the field is a combination of the
m_j and mu_a and the means never leave that span -- is a scrambled Sobol set (randomised
quasi-Monte Carlo) and the rest i.i.d. Gaussian: about 3e-6 of the drift for 2^15 points.
:func:`cross_check` starts the reduced ODE of the compiled model (``derivations.compile_model``,
integrated by ``solvers``) from the same (Q(0), R(0), alpha(0)) and reports both trajectories
and their largest deviation.  :func:`ode_outcomes` classifies the reduced-ODE outcome from the
initial overlaps of a Monte Carlo result (a paired theory-versus-simulation comparison).

Parallelism
-----------
The runs of one :func:`simulate` call are spread over Numba threads (``numba.set_num_threads``).
``simulate(..., executor=...)`` splits them into chunks for a ``concurrent.futures`` executor
(process pool, dask, mpi4py) and merges the results; because every run owns its random streams,
the merged result equals the unsplit one.

Speed (d = 1000, M = K = 2, n = 8, 1000 runs, 2 cores; ``benchmarks/bench_montecarlo.py``):
about 25 SGD steps/s (of all 1000 runs), 11x a vectorised NumPy implementation; two thirds of
the time goes to the 16 million Gaussian numbers a step needs (about 3 ns each per core).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from derivations.spec import ProblemSpec, require_spec

from . import mc_objectives as _obj
from . import mc_optimisers as _opt
from .classify import assign, classify
from .classify import undecided as undecided_runs
from .mc_config import (
    DEFAULT_ETA,
    MAX_RELAX_TIME,
    MonteCarloConfig,
    MonteCarloCost,
    MonteCarloResult,
    check_cost,
    check_step,
    default_eta,
    default_relax_time,
    default_t_end,
    estimate_cost,
    noise_inflation,
    noise_inflation_note,
    relaxation_time,
    stable_step,
    stl_noise_inflation,
)
from .mc_estimators import (
    GRADIENT_ESTIMATORS,
    GradientEstimator,
    check_means,
    gradient_estimator,
    initial_logits,
    problem_numbers,
    register_gradient_estimator,
    stochastic_gradient,
)
from .mc_optimisers import OPTIMISERS, Optimiser, optimiser, register_optimiser
from .mc_random import rng_states
from .progress import progress_bar
from .stats import Proportion, collapse_fraction
from .validate import positive_float as _positive_float
from .validate import positive_int as _positive_int

try:                                   # the one softmax of the toolkit (solvers layer)
    from solvers.layout import softmax as _softmax
except ImportError:  # pragma: no cover - older solvers package
    from solvers.ensemble import _softmax

__all__ = [
    "ESTIMATORS", "OPTIMIZERS", "GRADIENT_ESTIMATORS", "OPTIMISERS", "GradientEstimator",
    "Optimiser", "register_gradient_estimator", "register_optimiser", "gradient_estimator",
    "optimiser", "MonteCarloConfig", "MonteCarloResult", "MonteCarloCost", "DeterministicFlow",
    "CrossCheck", "realise_geometry", "initial_means", "initial_logits", "rng_states",
    "stochastic_gradient", "default_t_end", "default_relax_time", "relaxation_time",
    "default_eta", "stable_step", "check_step", "stl_noise_inflation", "noise_inflation",
    "estimate_cost", "check_cost", "DEFAULT_ETA", "MAX_RELAX_TIME", "simulate", "deterministic_flow",
    "cross_check", "ode_outcomes", "compare_with_ode", "overlaps", "SAMPLE_SETS",
    "check_objective_support",
]

#: The registries under their old names (``name in ESTIMATORS``, ``tuple(ESTIMATORS)`` work).
ESTIMATORS = GRADIENT_ESTIMATORS
OPTIMIZERS = OPTIMISERS

_check_means = check_means
_problem_numbers = problem_numbers


def _pos_int(name: str, value: Any, minimum: int = 1) -> int:
    return _positive_int(name, value, minimum)


def _pos_float(name: str, value: Any, allow_zero: bool = False) -> float:
    return _positive_float(name, value, allow_zero)


# ----------------------------------------------------------------------------------------
# geometry, initialisation, random streams
# ----------------------------------------------------------------------------------------

def realise_geometry(spec: ProblemSpec, d: int, seed: int = 0,
                     target_means: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Target means and initialisation centres as vectors in R^d.

    The target means get Gram matrix T and the centres the overlaps ``centre_gram`` (M, M) and
    ``centre_overlaps`` (M, K) of ``spec.init``.  Means are taken from ``target_means`` (K, d),
    else from ``spec.target.means`` when those have dimension d, else placed in a random
    orthonormal frame drawn from ``SeedSequence(seed)``; the centres' components outside
    span{mu} use random orthonormal directions from the same stream.

    Returns
    -------
    mu : (K, d) target means; centres : (M, d) (zeros unless spec.init gives centres).
    """
    from .initial_law import initial_geometry

    spec = require_spec(spec)
    d = _pos_int("d", d)
    geo = initial_geometry(spec)
    r, p = geo.r, geo.p
    if d < r + p:
        raise ValueError(f"d: the target means and the centres span {r + p} dimensions; need "
                         f"d >= {r + p}, got {d}")
    rng = np.random.default_rng(np.random.SeedSequence(_pos_int("seed", seed, 0)))
    T = spec.target.T
    if target_means is None and spec.target.means is not None:
        given = np.array(spec.target.means, dtype=float)
        if given.shape[1] == d:
            target_means = given
    if target_means is not None:
        mu = np.array(target_means, dtype=float)
        K = spec.target.K
        if mu.shape != (K, d):
            raise ValueError(f"target_means: must have shape ({K}, {d}), got {mu.shape}")
        scale = max(1.0, float(np.max(np.abs(T))))
        if np.max(np.abs(mu @ mu.T - T)) > 1e-8 * scale:
            raise ValueError("target_means: their Gram matrix differs from spec.target.gram")
        if r:
            B_r = np.linalg.solve(geo.e.T @ geo.e, geo.e.T @ mu)       # (r, d), orthonormal rows
        else:
            B_r = np.zeros((0, d))
        G = rng.standard_normal((d, p))
        G -= B_r.T @ (B_r @ G)
        B_p = np.linalg.qr(G)[0].T if p else np.zeros((0, d))
    else:
        O = np.linalg.qr(rng.standard_normal((d, r + p)))[0] if r + p else np.zeros((d, 0))
        B_r, B_p = O[:, :r].T, O[:, r:].T
        mu = geo.e @ B_r
    centres = geo.v @ B_r + geo.f @ B_p
    return np.ascontiguousarray(mu), np.ascontiguousarray(centres)


def _run_ids(seeds: int, run_offset: int) -> np.ndarray:
    return np.arange(run_offset, run_offset + seeds, dtype=np.int64)


def initial_means(spec: ProblemSpec, d: int, run_ids: Sequence[int], seed: int = 0,
                  centres: np.ndarray | None = None) -> np.ndarray:
    """Initial means of the given runs: ``m_k(0) = c_k + (sigma_init/sqrt(d)) z_k``.

    Run i draws z from ``SeedSequence(seed, spawn_key=(i, 0))``.  Returns (S, M, d).
    """
    spec = require_spec(spec)
    d = _pos_int("d", d)
    M = spec.family.M
    c = np.zeros((M, d)) if centres is None else np.asarray(centres, dtype=float)
    if c.shape != (M, d):
        raise ValueError(f"centres: must have shape ({M}, {d}), got {c.shape}")
    scale = spec.init.sigma_init / math.sqrt(d)
    ids = np.asarray(run_ids, dtype=np.int64).ravel()
    out = np.empty((ids.size, M, d))
    for j, i in enumerate(ids):
        g = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(i), 0)))
        out[j] = c + scale * g.standard_normal((M, d))
    return out


def overlaps(m: np.ndarray, mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Q = m m^T`` (..., M, M) and ``R = m mu^T`` (..., M, K) from m (..., M, d), mu (K, d)."""
    m = np.asarray(m, dtype=float)
    Q = m @ np.swapaxes(m, -1, -2)
    R = m @ np.asarray(mu, dtype=float).T
    return 0.5 * (Q + np.swapaxes(Q, -1, -2)), R


# ----------------------------------------------------------------------------------------
# the simulator
# ----------------------------------------------------------------------------------------

def _default_rule(spec: ProblemSpec, cfg: MonteCarloConfig, relax: float) -> tuple[float, str]:
    """(t_end, rule text) of the default end time."""
    t_end = default_t_end(spec, cfg.beta_tol, relax)
    rule = (f"default: schedule within beta_tol={cfg.beta_tol:g} of its final beta at "
            f"t={t_end - relax:.6g}, plus relax_time={relax:.6g}")
    return t_end, rule


def _notes(spec: ProblemSpec, cfg: MonteCarloConfig, relax: float, t_end: float,
           n_undecided: int, extended: bool) -> tuple[str, ...]:
    notes = []
    if cfg.relax_time is None and relax < 25.0 * relaxation_time(spec) * (1 - 1e-12):
        notes.append(f"relax_time capped at MAX_RELAX_TIME = {MAX_RELAX_TIME:g}, "
                     f"{relax / relaxation_time(spec):.3g} relaxation times "
                     f"Delta/(beta_final min w) = {relaxation_time(spec):.4g} instead of 25")
    if n_undecided:
        notes.append(f"{n_undecided} run(s) undecided: their classification changed in the "
                     f"final window{' after the last extension' if extended else ''} "
                     f"(counted as classified at t_end; see undecided / n_undecided)")
    if spec.objective != "reverse-kl" or spec.family.variances != "fixed":
        notes.append(f"{spec.objective}, variances {spec.family.variances}: the stl noise "
                     f"inflation check of the fixed-variance reverse KL does not apply and was "
                     f"not made")
    elif optimiser(cfg.optimizer).name == "sgd":
        note = noise_inflation_note(spec, cfg.d, cfg.eta, cfg.n,
                                    gradient_estimator(cfg.estimator).name, t_end)
        if note is not None:
            notes.append(note)
    return tuple(notes)


def check_objective_support(spec: ProblemSpec, config: MonteCarloConfig) -> bool:
    """True if ``spec`` is the fixed-variance reverse KL (the original kernels), False if it is
    one the kernels of :mod:`analysis.mc_objectives` run; a ValueError naming the parameter for
    a combination that is not implemented: the ``reparam`` estimator with the forward KL or
    with trainable variances (``stl`` only there)."""
    if spec.objective == "reverse-kl" and spec.family.variances == "fixed":
        return True
    est = gradient_estimator(config.estimator).name
    if est != "stl":
        what = ("the forward KL" if spec.objective == "forward-kl" else
                f"variances={spec.family.variances!r}")
        raise ValueError(f"estimator: {what} is simulated with the stl estimator only "
                         f"(the forward KL's is the sample mean of its exact gradient under "
                         f"p_beta), got {est!r}")
    if spec.family.variances == "adiabatic":
        _obj.adiabatic_variance(spec.objective, spec.path.kind, 1.0, 1.0, 1.0)
    return False


def simulate(spec: ProblemSpec, config: MonteCarloConfig, *, progress: bool | None = None,
             target_means: np.ndarray | None = None, m0: np.ndarray | None = None,
             keep_means: bool = False, executor: Any = None,
             chunk_size: int | None = None, s_init: Any = None) -> MonteCarloResult:
    """Train q by SGD/Adam in R^d from ``config.seeds`` independent initialisations.

    Parameters
    ----------
    spec : the problem (target, family, path, schedule, initialisation law).
    config : :class:`MonteCarloConfig` (``eta=None``: :func:`default_eta`; an SGD step above
        :func:`stable_step` is refused unless ``config.force``).
    progress : tqdm bar on stderr (None: only if stderr is a terminal).
    target_means : optional (K, d) target means (else :func:`realise_geometry`).
    m0 : optional (S, M, d) initial means overriding the initialisation law.
    keep_means : keep the final d-dimensional means in the result.
    s_init : per-component variances only: the initial s_k, (M,) or (S, M) positive values
        (default ``spec.family.variance`` for every component).
    executor : optional ``concurrent.futures.Executor`` (process pool, dask, mpi4py...): the
        runs are split into chunks of ``chunk_size`` (default: seeds / 8, at least 1) simulated
        by the executor's workers and merged.  Runs are identical to an unsplit simulation
        with the same t_end; with the default end time the chunks use
        :func:`default_t_end` without extensions (the extension rule needs all runs at once).

    Before anything is allocated the memory and time are estimated (:func:`check_cost`): above
    the toolkit's limits a ValueError names the parameter, the estimate and the limit, unless
    ``config.force``.

    Objectives: the reverse KL (any path and variance treatment) and the forward KL
    (inflation or mixture path; :mod:`analysis.mc_objectives`); combinations not implemented
    are a ValueError naming the parameter (:func:`check_objective_support`).

    Returns
    -------
    :class:`MonteCarloResult`.  Time is the gradient-flow time t = eta * steps.  Runs whose
    classification still changed in the final window are flagged ``undecided``; ``s`` holds
    every run's variance at the recorded times.
    """
    spec = require_spec(spec)
    if not isinstance(config, MonteCarloConfig):
        raise ValueError(f"config: must be a MonteCarloConfig, got {type(config).__name__}")
    legacy = check_objective_support(spec, config)
    cfg = config.resolved(spec)
    if executor is not None:
        return _simulate_chunked(spec, cfg, executor, chunk_size, target_means, m0,
                                 keep_means, s_init)
    check_cost(spec, cfg, keep_means)
    d, S, M, K = cfg.d, cfg.seeds, spec.family.M, spec.target.K
    est = gradient_estimator(cfg.estimator)
    opt = optimiser(cfg.optimizer)
    ids = _run_ids(S, cfg.run_offset)
    if m0 is not None:
        m0 = np.asarray(m0, dtype=float)
        if m0.shape != (S, M, d):
            raise ValueError(f"m0: must have shape ({S}, {M}, {d}), got {m0.shape}")
    mu, centres = realise_geometry(spec, d, cfg.seed, target_means)
    if m0 is None:
        m = initial_means(spec, d, ids, cfg.seed, centres)
    else:
        m = np.array(m0, dtype=float)
    m = np.ascontiguousarray(m)
    alpha = np.ascontiguousarray(np.broadcast_to(initial_logits(spec), (S, M)).copy())
    mom_shape = (S, M, d) if opt.moments else (S, 1, 1)
    mom1, mom2 = np.zeros(mom_shape), np.zeros(mom_shape)
    amom1, amom2 = np.zeros((S, M)), np.zeros((S, M))
    state = rng_states(cfg.seed, ids)
    active = np.ones(S, dtype=bool)
    tdiag, logpi, s, delta, s0 = problem_numbers(spec, mu)
    if spec.path.base_variance is not None:          # the forward KL's mixture path too
        s0 = float(spec.path.base_variance)
    train_w = spec.family.train_weights
    T = spec.target.T
    variances = spec.family.variances
    logs = np.full((S, M), math.log(s))
    if s_init is not None:
        if variances != "per-component":
            raise ValueError(f"s_init: initial per-component variances need "
                             f"variances='per-component', got {variances!r} (the common "
                             f"variance starts at family.variance)")
        si = np.asarray(s_init, dtype=float)
        if si.shape not in ((M,), (S, M)) or not np.all(np.isfinite(si)) or np.any(si <= 0):
            raise ValueError(f"s_init: must be finite positive values of shape ({M},) or "
                             f"({S}, {M}), got {si.shape}")
        logs[:] = np.log(si)
    smom = np.zeros((S, M, 2))
    codes = (_obj.OBJECTIVE_CODES[spec.objective], _obj.FKL_PATH_CODES[spec.path.kind],
             _obj.VARIANCE_CODES[variances])

    def s_of(beta: np.ndarray) -> np.ndarray:
        """The prescribed s at these beta (fixed or adiabatic; tied: the initial s)."""
        if variances == "adiabatic":
            return np.asarray(_obj.adiabatic_variance(spec.objective, spec.path.kind, beta,
                                                      delta, s0), dtype=float)
        return np.full(np.shape(beta), s)

    def advance(nb: int, betas: np.ndarray, gammas: np.ndarray, step: int) -> None:
        if legacy:
            _opt.sgd_block(m, alpha, mom1, mom2, amom1, amom2, state, active, mu, tdiag,
                           logpi, betas, gammas, step, cfg.eta, cfg.n, s, delta, s0,
                           est.code, train_w, opt.code, cfg.adam_b1, cfg.adam_b2,
                           cfg.adam_eps, Qo, Ro)
        else:
            _obj.objective_block(m, alpha, logs, mom1, mom2, amom1, amom2, smom, state,
                                 active, mu, tdiag, logpi, betas, gammas,
                                 np.ascontiguousarray(s_of(betas)), step, cfg.eta, cfg.n,
                                 delta, s0, codes[0], codes[1], codes[2], train_w, opt.code,
                                 cfg.adam_b1, cfg.adam_b2, cfg.adam_eps, Qo, Ro)

    def current_s(step: int) -> np.ndarray:
        if variances == "adiabatic":
            b = float(spec.schedule.beta(cfg.eta * step))
            return np.full(S, float(s_of(np.array(b))))
        if variances == "per-component":
            return np.exp(logs)
        return np.exp(logs[:, 0]) if variances == "tied" else np.full(S, s)

    relax = default_relax_time(spec) if cfg.relax_time is None else cfg.relax_time
    if cfg.t_end is None:
        t_end, rule = _default_rule(spec, cfg, relax)
        rule += (f"; extended by relax_time while any classification changed in the last "
                 f"relax_time/2 (at most {cfg.max_extensions} times)")
        max_ext = cfg.max_extensions
    else:
        t_end = cfg.t_end
        rule = "given"
        max_ext = 0
    total = max(1, int(round(t_end / cfg.eta)))
    rec_every = max(1, int(math.ceil(total / (cfg.n_records - 1))))
    ext_steps = max(1, int(round(relax / cfg.eta)))

    Qo, Ro = np.empty((S, M, M)), np.empty((S, M, K))
    Q0, R0 = overlaps(m, mu)
    rec_steps = [0]
    rec_Q, rec_R, rec_a = [Q0], [R0], [alpha.copy()]
    rec_s = [current_s(0)]
    bar = progress_bar(total, f"mfvi montecarlo d={d} S={S}", "step", progress)
    step = 0
    extensions = 0
    wall = 0.0
    undecided = np.zeros(S, dtype=bool)
    try:
        while True:
            while step < total:
                nb = min(rec_every - step % rec_every, total - step)
                tgrid = cfg.eta * (step + np.arange(nb))
                betas = np.ascontiguousarray(np.broadcast_to(spec.schedule.beta(tgrid), (nb,)),
                                             dtype=float)
                gammas = np.ascontiguousarray(np.broadcast_to(spec.gamma(betas), (nb,)),
                                              dtype=float)
                t0 = time.perf_counter()
                advance(nb, betas, gammas, step)
                wall += time.perf_counter() - t0
                step += nb
                if step % rec_every == 0 or step == total:
                    rec_steps.append(step)
                    rec_Q.append(Qo.copy())
                    rec_R.append(Ro.copy())
                    rec_a.append(alpha.copy())
                    rec_s.append(current_s(step))
                if bar is not None:
                    bar.update(nb)
            # stability of the outcome over the final window: the latest record at least
            # half a relaxation period (half the run, if shorter) before the end
            steps_arr = np.array(rec_steps)
            window = 0.5 * min(ext_steps, step)
            back = int(np.searchsorted(steps_arr, step - window, side="right")) - 1
            back = min(max(back, 0), len(rec_steps) - 2)
            wf = _softmax(rec_a[-1]) if train_w else None
            wb = _softmax(rec_a[back]) if train_w else None
            undecided, cf, mf = undecided_runs(rec_Q[-1], rec_R[-1], wf, rec_Q[back],
                                               rec_R[back], wb, T, cfg.weight_threshold)
            if not undecided.any() or extensions >= max_ext:
                break
            extensions += 1
            total += ext_steps
            if bar is not None:
                bar.total = total
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()

    t = cfg.eta * np.array(rec_steps, dtype=float)
    Qs = np.stack(rec_Q, axis=1)
    Rs = np.stack(rec_R, axis=1)
    al = np.stack(rec_a, axis=1)
    w = _softmax(al) if train_w else np.broadcast_to(spec.family.w, (S, t.size, M)).copy()
    collapsed, mech = classify(Qs[:, -1], Rs[:, -1], T, w[:, -1], cfg.weight_threshold)
    asg = assign(np.nan_to_num(Qs[:, -1]), np.nan_to_num(Rs[:, -1]), T)
    valid = mech != 3
    if np.any(valid):
        frac = collapse_fraction(collapsed, valid=valid)
    else:
        frac = Proportion(k=0, n=0, p=float("nan"), ci=(float("nan"), float("nan")))
    n_und = int(np.count_nonzero(undecided))
    return MonteCarloResult(
        spec=spec, config=cfg, run_ids=ids, t=t,
        beta=np.asarray(np.broadcast_to(spec.schedule.beta(t), t.shape), dtype=float),
        Q=Qs, R=Rs, w=w, collapsed=collapsed, mechanism=mech, assignment=asg, fraction=frac,
        steps=step, t_end=cfg.eta * step, t_end_rule=rule, extensions=extensions,
        changed_final_window=n_und, target_means=mu,
        final_means=m.copy() if keep_means else None, wall_time=wall, undecided=undecided,
        notes=_notes(spec, cfg, relax, cfg.eta * step, n_und,
                     max_ext > 0 and extensions == max_ext),
        s=np.stack(rec_s, axis=1))


def _simulate_chunked(spec: ProblemSpec, cfg: MonteCarloConfig, executor: Any,
                      chunk_size: int | None, target_means: np.ndarray | None,
                      m0: np.ndarray | None, keep_means: bool,
                      s_init: Any = None) -> MonteCarloResult:
    S = cfg.seeds
    size = max(1, S // 8) if chunk_size is None else _pos_int("chunk_size", chunk_size)
    t_end = cfg.t_end
    rule_note = "given"
    relax = default_relax_time(spec) if cfg.relax_time is None else cfg.relax_time
    if t_end is None:
        t_end, rule_note = _default_rule(spec, cfg, relax)
        rule_note = rule_note.replace("default:", "default without extensions (chunked over "
                                                  "an executor):")
    # the whole request's time, one chunk's memory (per worker)
    check_cost(spec, replace(cfg, t_end=t_end), keep_means, runs=min(size, S))
    mu, _ = realise_geometry(spec, cfg.d, cfg.seed, target_means)
    start = time.perf_counter()
    futures = []
    for off in range(0, S, size):
        n_here = min(size, S - off)
        sub = replace(cfg, seeds=n_here, run_offset=cfg.run_offset + off, t_end=t_end,
                      force=True)              # checked above, as a whole
        m_here = None if m0 is None else np.asarray(m0)[off:off + n_here]
        s_here = s_init
        if s_init is not None and np.ndim(s_init) == 2:
            s_here = np.asarray(s_init)[off:off + n_here]
        futures.append(executor.submit(simulate, spec, sub, progress=False, target_means=mu,
                                       m0=m_here, keep_means=keep_means, s_init=s_here))
    parts = [f.result() for f in futures]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts], axis=0)  # noqa: E731
    collapsed, mech = cat("collapsed"), cat("mechanism")
    valid = mech != 3
    frac = collapse_fraction(collapsed, valid=valid) if np.any(valid) else \
        Proportion(k=0, n=0, p=float("nan"), ci=(float("nan"), float("nan")))
    first = parts[0]
    undecided = cat("undecided")
    n_und = int(np.count_nonzero(undecided))
    return MonteCarloResult(
        spec=spec, config=cfg, run_ids=cat("run_ids"), t=first.t, beta=first.beta,
        Q=cat("Q"), R=cat("R"), w=cat("w"), collapsed=collapsed, mechanism=mech,
        assignment=cat("assignment"), fraction=frac, steps=first.steps, t_end=first.t_end,
        t_end_rule=rule_note, extensions=0, changed_final_window=n_und,
        target_means=mu, final_means=cat("final_means") if keep_means else None,
        wall_time=time.perf_counter() - start, undecided=undecided,
        notes=_notes(spec, cfg, relax, first.t_end, n_und, False),
        s=cat("s") if all(p.s is not None for p in parts) else None)


# ----------------------------------------------------------------------------------------
# deterministic mode
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeterministicFlow:
    """Trajectory of the d-dimensional gradient flow with sample-average expectations.

    t : (n_t,); Q : (n_t, M, M); R : (n_t, M, K); w : (n_t, M); alpha : (n_t, M);
    m_final : (M, d); n_samples : size of the antithetic sample set (2 N); dt : RK4 step.
    """

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    w: np.ndarray
    alpha: np.ndarray
    m_final: np.ndarray
    n_samples: int
    dt: float


SAMPLE_SETS = ("subspace", "gaussian")


def _sample_set(kind: str, d: int, n_base: int, seed: int, whiten: bool,
                span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base samples E (n_base, d) (used with both signs) and their squared norms (n_base,).

    ``gaussian``: i.i.d. N(0, I_d), whitened (if ``whiten`` and n_base >= d) so that the sample
    covariance of {+E, -E} is exactly I.  ``subspace``: with B an orthonormal basis (r, d) of
    ``span`` (rows: the target means and the initial means), ``eps = B^T z + (I - B^T B) g``
    with z a scrambled Sobol point set in R^r mapped through the normal quantile function and g
    i.i.d. N(0, I_d): each eps has exactly the law N(0, I_d) when z does, but the part the
    integrands depend on is stratified (randomised quasi-Monte Carlo).
    """
    ss = np.random.SeedSequence(seed, spawn_key=(2 ** 32,))
    rng = np.random.default_rng(ss)
    if kind == "gaussian":
        E = rng.standard_normal((n_base, d))
        if whiten and n_base >= d:
            C = (E.T @ E) / n_base                # covariance of the antithetic set {+E, -E}
            L = np.linalg.cholesky(C)
            E = np.linalg.solve(L, E.T).T         # E L^{-T}: sample covariance exactly I
    elif kind == "subspace":
        from scipy.stats import norm, qmc
        u, sv, vt = np.linalg.svd(np.atleast_2d(span), full_matrices=False)
        B = vt[sv > 1e-10 * max(sv[0], 1e-300)] if sv.size else np.zeros((0, d))
        r = B.shape[0]
        G = rng.standard_normal((n_base, d))
        G -= (G @ B.T) @ B
        if r:
            try:
                sob = qmc.Sobol(r, scramble=True, rng=rng)
            except TypeError:  # scipy < 1.15 calls it seed
                sob = qmc.Sobol(r, scramble=True, seed=rng)
            m = int(math.ceil(math.log2(max(n_base, 2))))
            U = sob.random_base2(m)[:n_base]
            z = norm.ppf(np.clip(U, 1e-300, 1.0 - 2 ** -53))
            E = z @ B + G
        else:
            E = G
    else:
        raise ValueError(f"samples: must be one of {SAMPLE_SETS}, got {kind!r}")
    E = np.ascontiguousarray(E)
    return E, np.einsum("nd,nd->n", E, E)


def _lse_rows(x: np.ndarray) -> np.ndarray:
    """log-sum-exp over the first axis of x (n, N) -> (N,); rows are contiguous."""
    mx = x[0].copy()
    for j in range(1, x.shape[0]):
        np.maximum(mx, x[j], out=mx)
    acc = np.zeros_like(mx)
    for j in range(x.shape[0]):
        acc += np.exp(x[j] - mx)
    return mx + np.log(acc)


def _sample_means(P: np.ndarray, sq: np.ndarray, Q: np.ndarray, R: np.ndarray,
                  alpha: np.ndarray, logpi: np.ndarray, tdiag: np.ndarray, s: float,
                  delta: float, beta: float, gamma: float, s0: float, d: int,
                  train_w: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample means of rho_j, r_a and phi at ``x = m_k + sqrt(s) eps`` over a sample set.

    P (M + K, N): rows ``eps . m_j`` then ``eps . mu_a``; sq (N,) = |eps|^2.  The same samples
    serve every component k (common random numbers).  Returns rhobar (M, M) [k, j], rbar (M, K),
    fbar (M,) (zeros unless train_w); the formulas are those of ``_mc_kernels._sample_terms``.
    """
    M = Q.shape[0]
    K = R.shape[1]
    ss = math.sqrt(s)
    logw = alpha - (np.max(alpha) + np.log(np.sum(np.exp(alpha - np.max(alpha)))))
    em, emu = P[:M], P[M:]
    rhobar, rbar, fbar = np.empty((M, M)), np.empty((M, K)), np.zeros(M)
    for k in range(M):
        lq = ((logw + (Q[k] - 0.5 * np.diag(Q)) / s)[:, None] + (ss / s) * em)      # (M, N)
        lp = ((logpi + (R[k] - 0.5 * tdiag) / delta)[:, None] + (ss / delta) * emu)  # (K, N)
        lse_q, lse_p = _lse_rows(lq), _lse_rows(lp)
        rhobar[k] = np.mean(np.exp(lq - lse_q), axis=1)
        rbar[k] = np.mean(np.exp(lp - lse_p), axis=1)
        if train_w:
            x2 = Q[k, k] + 2.0 * ss * em[k] + s * sq
            logq = lse_q - 0.5 * x2 / s - 0.5 * d * math.log(2 * math.pi * s)
            logp = lse_p - 0.5 * x2 / delta - 0.5 * d * math.log(2 * math.pi * delta)
            phi = logq - beta * logp
            if gamma != 0.0:
                phi = phi - gamma * (-0.5 * x2 / s0 - 0.5 * d * math.log(2 * math.pi * s0))
            fbar[k] = np.mean(phi)
    return rhobar, rbar, fbar


def deterministic_flow(spec: ProblemSpec, m0: np.ndarray, mu: np.ndarray, t_end: float, *,
                       t_eval: np.ndarray | None = None, n_samples: int = 2 ** 14,
                       dt: float = 0.02, samples: str = "subspace", seed: int = 0,
                       whiten: bool = True,
                       alpha0: np.ndarray | None = None) -> DeterministicFlow:
    """Follow the d-dimensional gradient flow ``dm/dt = -grad_m F`` with a fixed sample set.

    Expectations under N(m_k, s I) are plain averages over one fixed set of
    ``n_samples`` points ``{+eps_i, -eps_i}`` in R^d (antithetic pairs; common to every
    component and every time: common random numbers).  ``samples`` chooses the base points
    (see ``_sample_set``): ``"subspace"`` (default) stratifies them by randomised quasi-Monte
    Carlo inside span{mu_a, m_k(0)} and draws the orthogonal part i.i.d. Gaussian;
    ``"gaussian"`` draws them i.i.d. N(0, I_d), whitened to sample covariance I.  The sample
    field ``-g_k = -w_k [c m_k + (1/s) sum_j rhobar_kj m_j - (beta/Delta) sum_a rbar_ka mu_a]``
    (the ``stl`` form; the mean of the set is exactly 0) is a combination of the m_j and mu_a,
    so the means stay in span{mu_a, m_k(0)} and the stratified set keeps its accuracy along
    the whole trajectory.  Weights (if they train): ``dalpha_k/dt = -w_k (fbar_k - w . fbar)``.
    Integration: classical RK4 with step ``<= dt`` (gradient-flow time).

    Accuracy (symmetric bimodal, A = 9, d = 10, relative to exact Gaussian expectations):
    about 3e-6 for 2^15 ``subspace`` samples against 5e-3 for 2^15 ``gaussian`` ones.

    Parameters
    ----------
    m0 : (M, d) initial means; mu : (K, d) target means; alpha0 : (M,) initial logits
        (default ``log w - mean log w``).
    t_end : final time; t_eval : output times in [0, t_end] (default 101 equally spaced).
    n_samples : size of the antithetic set (2 * base points); seed : its random stream.
    """
    spec = require_spec(spec)
    m, mu = _check_means(spec, m0, mu, "m0")
    m = m.copy()
    M, d = spec.family.M, m.shape[1]
    t_end = _pos_float("t_end", t_end, allow_zero=True)
    n_samples = _pos_int("n_samples", n_samples, 2)
    dt = _pos_float("dt", dt)
    if t_eval is None:
        t_eval = np.linspace(0.0, t_end, 101)
    t_eval = np.asarray(t_eval, dtype=float)
    if t_eval.ndim != 1 or np.any(np.diff(t_eval) < 0) or t_eval[0] < 0 or t_eval[-1] > t_end:
        raise ValueError("t_eval: must be sorted times in [0, t_end]")
    if samples not in SAMPLE_SETS:
        raise ValueError(f"samples: must be one of {SAMPLE_SETS}, got {samples!r}")
    E, sq = _sample_set(samples, d, n_samples // 2, seed, whiten, np.concatenate([mu, m], 0))
    sq2 = np.concatenate([sq, sq])
    ebar = np.zeros(d)                           # antithetic: the sample mean is exactly 0
    tdiag, logpi, s, delta, s0 = _problem_numbers(spec, mu)
    train_w = spec.family.train_weights
    alpha = initial_logits(spec) if alpha0 is None else np.array(alpha0, dtype=float)
    inv_s = 1.0 / s
    ss = math.sqrt(s)

    def field_(mm: np.ndarray, aa: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        beta = float(spec.schedule.beta(t))
        gamma = float(spec.gamma(beta))
        P = np.concatenate([mm, mu], axis=0) @ E.T             # (M + K, N)
        P = np.concatenate([P, -P], axis=1)                    # antithetic pairs
        Q = mm @ mm.T
        R = mm @ mu.T
        rhobar, rbar, fbar = _sample_means(P, sq2, Q, R, aa, logpi, tdiag, s, delta, beta,
                                           gamma, s0, d, train_w)
        w = _softmax(aa)
        c = -inv_s + beta / delta + (gamma / s0 if gamma != 0.0 else 0.0)
        g = w[:, None] * (c * (mm + ss * ebar) + inv_s * (rhobar @ mm)
                          - (beta / delta) * (rbar @ mu))
        ga = w * (fbar - w @ fbar) if train_w else np.zeros(M)
        return -g, -ga

    outs_m, outs_a = [], []
    t = 0.0
    idx = 0
    while idx < t_eval.size and t_eval[idx] <= 0.0:
        outs_m.append(m.copy())
        outs_a.append(alpha.copy())
        idx += 1
    while idx < t_eval.size:
        target = t_eval[idx]
        nsteps = max(1, int(math.ceil((target - t) / dt - 1e-12)))
        h = (target - t) / nsteps
        for _ in range(nsteps):
            k1m, k1a = field_(m, alpha, t)
            k2m, k2a = field_(m + 0.5 * h * k1m, alpha + 0.5 * h * k1a, t + 0.5 * h)
            k3m, k3a = field_(m + 0.5 * h * k2m, alpha + 0.5 * h * k2a, t + 0.5 * h)
            k4m, k4a = field_(m + h * k3m, alpha + h * k3a, t + h)
            m = m + (h / 6.0) * (k1m + 2 * k2m + 2 * k3m + k4m)
            alpha = alpha + (h / 6.0) * (k1a + 2 * k2a + 2 * k3a + k4a)
            t += h
        t = target
        outs_m.append(m.copy())
        outs_a.append(alpha.copy())
        idx += 1
    ms = np.stack(outs_m)
    als = np.stack(outs_a)
    Q, R = overlaps(ms, mu)
    w = _softmax(als) if train_w else np.broadcast_to(spec.family.w, (t_eval.size, M)).copy()
    return DeterministicFlow(t=t_eval.copy(), Q=Q, R=R, w=w, alpha=als, m_final=m,
                             n_samples=2 * E.shape[0], dt=dt)


# ----------------------------------------------------------------------------------------
# cross-check against the reduced ODE
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CrossCheck:
    """d-dimensional deterministic flow vs reduced ODE from the same start.

    t : (n_t,); Q_mc, Q_ode : (n_t, M, M); R_mc, R_ode : (n_t, M, K); w_mc, w_ode : (n_t, M);
    deviation : (n_t,) max over entries of |Q|, |R|, |w| differences at each time;
    max_deviation : its maximum.
    """

    t: np.ndarray
    Q_mc: np.ndarray
    R_mc: np.ndarray
    w_mc: np.ndarray
    Q_ode: np.ndarray
    R_ode: np.ndarray
    w_ode: np.ndarray
    deviation: np.ndarray
    max_deviation: float


def _compiled_model(spec: ProblemSpec) -> Any:
    from derivations import compile_model
    return compile_model(spec.structure)


def _solve_reduced(spec: ProblemSpec, model: Any, Q0: np.ndarray, R0: np.ndarray,
                   alpha0: np.ndarray | None, t_eval: np.ndarray, rtol: float,
                   atol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduced ODE from (Q0, R0, alpha0) on t_eval: (Q (n_t, M, M), R (n_t, M, K), w (n_t, M))."""
    from solvers.ensemble import pack_state, solve
    y0 = pack_state(model, Q0, R0, alpha0 if spec.family.train_weights else None)
    traj = solve(spec, model, y0, float(t_eval[-1]), t_eval=t_eval, rtol=rtol, atol=atol)
    if not traj.success or traj.t.size != t_eval.size:
        raise RuntimeError(f"reduced ODE failed: {traj.message}")
    return traj.Q, traj.R, traj.w


def cross_check(spec: ProblemSpec, m0: np.ndarray, mu: np.ndarray, t_end: float, *,
                n_points: int = 101, n_samples: int = 2 ** 14, dt: float = 0.02,
                samples: str = "subspace", seed: int = 0, whiten: bool = True,
                rtol: float = 1e-10, atol: float = 1e-12,
                model: Any = None) -> CrossCheck:
    """Deterministic d-dimensional flow and reduced ODE from the same initial means.

    (Q(0), R(0)) are computed from m0 (M, d) and mu (K, d), the compiled reduced model of
    ``spec.structure`` is integrated from them (DOPRI5, rtol/atol) and compared with
    :func:`deterministic_flow` on ``n_points`` equally spaced times of [0, t_end].
    """
    spec = require_spec(spec)
    n_points = _pos_int("n_points", n_points, 2)
    t_eval = np.linspace(0.0, _pos_float("t_end", t_end), n_points)
    alpha0 = initial_logits(spec)
    det = deterministic_flow(spec, m0, mu, t_end, t_eval=t_eval, n_samples=n_samples, dt=dt,
                             samples=samples, seed=seed, whiten=whiten, alpha0=alpha0)
    model = _compiled_model(spec) if model is None else model
    Q0, R0 = overlaps(np.asarray(m0, dtype=float), mu)
    Qo, Ro, wo = _solve_reduced(spec, model, Q0, R0, alpha0, t_eval, rtol, atol)
    dev = np.maximum.reduce([
        np.max(np.abs(det.Q - Qo), axis=(-2, -1)),
        np.max(np.abs(det.R - Ro), axis=(-2, -1)),
        np.max(np.abs(det.w - wo), axis=-1)])
    return CrossCheck(t=t_eval, Q_mc=det.Q, R_mc=det.R, w_mc=det.w, Q_ode=Qo, R_ode=Ro,
                      w_ode=wo, deviation=dev, max_deviation=float(np.max(dev)))


def ode_outcomes(spec: ProblemSpec, Q0: np.ndarray, R0: np.ndarray, t_end: float, *,
                 weight_threshold: float = 1e-3, model: Any = None, progress: bool = False,
                 rtol: float = 1e-8, atol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Classify the reduced-ODE outcome from each initial (Q0 (S, M, M), R0 (S, M, K)).

    Pairs naturally with a :class:`MonteCarloResult` (``result.Q0``, ``result.R0``,
    ``result.t_end``): the gradient flow from exactly the d-dimensional runs' starting points.
    Returns (collapsed (S,) bool, mechanism (S,) int8).
    """
    from solvers.ensemble import pack_state, solve_ensemble
    spec = require_spec(spec)
    model = _compiled_model(spec) if model is None else model
    Q0 = np.asarray(Q0, dtype=float)
    S = Q0.shape[0]
    alpha0 = np.broadcast_to(initial_logits(spec), (S, spec.family.M)) \
        if spec.family.train_weights else None
    Y0 = pack_state(model, 0.5 * (Q0 + np.swapaxes(Q0, -1, -2)), R0, alpha0)
    res = solve_ensemble(spec, model, Y0, float(t_end), rtol=rtol, atol=atol, progress=progress)
    return classify(res.Q_final, res.R_final, spec.target.T, res.w_final, weight_threshold)


def compare_with_ode(spec: ProblemSpec, config: MonteCarloConfig, result: MonteCarloResult, *,
                     model: Any = None, progress: bool = False) -> dict:
    """The gradient flow from the very runs' starting points, next to their SGD outcome.

    The reduced ODE is integrated from every run's initial (Q(0), R(0)) (``result.Q0``,
    ``result.R0``) to ``result.t_end`` and classified with ``config.weight_threshold``
    (:func:`ode_outcomes`); runs that diverged under SGD are left out of both fractions.
    Returns the JSON-ready dict that ``mfvi montecarlo --compare-ode`` reports under ``"ode"``:
    ``p``, ``ci`` (Wilson 95%), ``k``, ``n`` of the ODE outcomes; ``comparison`` (the
    two-proportion test of SGD against ODE, :func:`analysis.stats.compare_proportions`,
    ``to_dict()``); ``agreement`` (fraction of runs with the same outcome, None if no run
    is finite); ``note``.
    """
    from .stats import compare_proportions

    spec = require_spec(spec)
    if not isinstance(result, MonteCarloResult):
        raise ValueError(f"result: must be a MonteCarloResult, got {type(result).__name__}")
    if not isinstance(config, MonteCarloConfig):
        raise ValueError(f"config: must be a MonteCarloConfig, got {type(config).__name__}")
    collapsed, _ = ode_outcomes(spec, result.Q0, result.R0, result.t_end,
                                weight_threshold=config.weight_threshold, model=model,
                                progress=progress)
    valid = result.mechanism != 3
    ode = collapse_fraction(collapsed, valid=valid)
    cmp = compare_proportions(result.fraction.k, result.fraction.n, ode.k, ode.n)
    return {
        "p": ode.p, "ci": list(ode.ci), "k": ode.k, "n": ode.n,
        "comparison": cmp.to_dict(),
        "agreement": float((result.collapsed[valid] == collapsed[valid]).mean())
        if valid.any() else None,
        "note": "reduced ODE (gradient flow) from the same initial (Q(0), R(0)) as the "
                "d-dimensional runs, integrated to the same t_end",
    }
