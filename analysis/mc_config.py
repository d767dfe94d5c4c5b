r"""Configuration, default rules, resource estimates and results of the d-dimensional Monte Carlo.

Everything here is decided before a single d-dimensional array is allocated: the settings
(:class:`MonteCarloConfig`), the default step (:func:`default_eta`, :func:`stable_step`), the
default end time (:func:`default_t_end`), the up-front cost estimate and its guard
(:func:`estimate_cost`, :func:`check_cost`); plus the result container with its JSON / npz
I/O (:class:`MonteCarloResult`).  The simulation itself is :func:`analysis.montecarlo.simulate`.
Time is the gradient-flow time t = eta * steps throughout.

Step size (:func:`stable_step`)
-------------------------------
SGD is gradient descent on F plus noise; gradient descent with step eta on a direction of
curvature lambda is stable only for ``eta < 2 / lambda``.  The Hessian of F with respect to a
mean m_k is bounded by the three terms of DESIGN.md section 2:

* target cross-entropy ``-beta E_q log p``: ``E_k[grad^2 (-log p)] = (1/Delta)(I - Cov_r(mu) /
  Delta) <= I / Delta``, weighted: ``<= w_k beta / Delta``;
* base cross-entropy: ``w_k gamma / sigma0^2``;
* entropy ``E_q log q``: zero for components far apart (the entropy does not depend on their
  positions), ``-1/(4 s)`` along the separation of two coincident equal-weight components
  (repulsion: a negative curvature, harmless for stability), and at most ``+0.09 / s`` at a
  separation of about ``3 sqrt(s)`` (one-dimensional quadrature of the two-component entropy);
  we bound its modulus by ``1 / (4 s)``.

Hence ``lambda_max <= L = 1 / (4 s) + w_max max_{0 < beta <= 1} (beta / Delta + gamma(beta) /
sigma0^2)`` (w_max = 1 if the weights train; gamma is affine in beta, so the maximum is
``max(1/Delta, 1/sigma0^2)`` on the geometric path and ``1/Delta`` for tempering, whatever the
schedule), and ``stable_step(spec) = 2 / L``. For s = Delta = 1 (equal weights) this is 2.67;
for s = 0.1, Delta = 10 it is 0.78; ``0.02 <= stable_step / 10`` unless s < about 0.025.
:func:`default_eta` is ``min(0.02, stable_step / 10)``; an explicit SGD step above
``stable_step`` is refused (:func:`check_step`) unless ``force``. Adam normalises its steps
coordinate-wise and is not checked.

This bound is about the deterministic part.  The noise of the ``stl`` estimator is a separate
effect (DESIGN.md section 7) that can dominate for small s at any stable step: out of
span{mu, m}, a component far from the others sees the noise ``w_k (1/s - beta/Delta -
gamma/sigma0^2) sqrt(s) ebar`` (ebar ~ N(0, I/n)) against the restoring rate ``w_k (beta/Delta
+ gamma/sigma0^2)``, so SGD (an Ornstein-Uhlenbeck chain) inflates ``|m_k|^2`` by about

    (d - r) eta w_k (1/s - beta/Delta - gamma/sigma0^2)^2 s / (2 n (beta/Delta + gamma/sigma0^2))

once stationary, and by the solution of the OU variance equation along the schedule before
(:func:`stl_noise_inflation`). Two components at squared distance D^2 overlap as exp(-D^2/(8s)),
and D^2 is about twice the inflation: when the inflation at the end of the run exceeds about 12
s, the components no longer see each other, the entropy's repulsion is lost, and both can settle
where a single component would (for a target with overlapping modes: between them, where the
nearest-mode assignment is a coin flip). ``reparam`` (whose score term cancels the 1/s part for
a component far from the others) has the noise ``w_k (beta/Delta + gamma/sigma0^2) sqrt(s)
ebar`` instead (:func:`noise_inflation`): smaller than stl's at high temperature, larger once
beta/Delta + gamma/sigma0^2 > 1/(2 s) (at beta = 1 with Delta = s, where stl's vanishes). Measured (s = 0.1, Delta = 10, T =
[[9, -9], [-9, 9]], exponential T0 = 20, tau = 100, d = 100, n = 8, default t_end): the gradient
flow from the same starts collapses in 0 of 30 runs; SGD with ``stl``, eta = 0.02 (inflation
predicted 33 at t = 74 and 6.0 at t_end, measured medians 34 and 6.0) in 11 of 30, 23 of them
still changing at t_end; ``stl`` with eta = 0.002 (3.3 and 0.60 predicted, 3.2 and 0.59
measured) in 0 of 20: the peak inflation is harmless once the components overlap again at the
end; ``reparam`` with eta = 0.02 in 0 of 30.

Default end time (:func:`default_t_end`)
----------------------------------------
``t_end = t_beta + t_relax``: ``t_beta = spec.schedule.settle_time(beta_tol)``, the first time
after which beta(t) stays within ``beta_tol`` (1e-3) of its final value, and ``t_relax = min(25
Delta / (beta_final min_k w_k(0)), MAX_RELAX_TIME)``: 25 time constants of the attraction of a
component by a mode (``dm_k/dt ~ -(w_k beta/Delta)(m_k - mu_a)``), capped at
:data:`MAX_RELAX_TIME` (1000) so that the default stays finite as beta_final -> 0 (at beta_final
= 1e-3 the uncapped rule asks for 50000 time units). :func:`analysis.montecarlo.simulate`
extends a run by t_relax while classifications still change in the final half relaxation period
(at most ``max_extensions`` times); runs that still changed are reported as undecided
(``MonteCarloResult.undecided``, JSON ``n_undecided``, and a note): they are classified at
t_end like the others, but never silently.

Resource guard (:func:`check_cost`)
-----------------------------------
Memory: the means, the optimiser moments, the records and one step's noise and work buffers
per thread (:func:`estimate_cost`, formula in its docstring).  Time: steps x runs x M n d
Gaussian numbers at an optimistic 1 ns each per thread (the kernel's measured all-inclusive
cost is about 4 ns; ``benchmarks/bench_montecarlo.py``), so that a refusal means the request
is certainly too long.  Both are compared with the toolkit's limits
(:data:`analysis.estimators.MAX_BYTES`, :data:`analysis.estimators.MAX_SECONDS`); above them
:func:`analysis.montecarlo.simulate` raises a ValueError naming the parameter, the estimate
and the limit unless ``config.force``.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from derivations.atomic import atomic_write
from derivations.spec import ProblemSpec, require_spec

from .classify import mechanism_counts
from .mc_estimators import gradient_estimator
from .mc_optimisers import optimiser
from .stats import Proportion
from .validate import format_bytes, format_seconds, fraction, positive_float, positive_int

__all__ = ["MonteCarloConfig", "MonteCarloResult", "MonteCarloCost", "DEFAULT_ETA",
           "MAX_RELAX_TIME", "RELAX_FACTOR", "NS_PER_NORMAL", "stable_step", "default_eta",
           "check_step", "stl_noise_inflation", "noise_inflation", "noise_inflation_note",
           "relaxation_time", "default_relax_time",
           "default_t_end", "estimate_cost", "check_cost"]

#: The default SGD step when it is stable with a margin of 10 (:func:`default_eta`).
DEFAULT_ETA = 0.02
#: Relaxation times in the default relaxation period.
RELAX_FACTOR = 25.0
#: Cap of the default relaxation period (gradient-flow time units).
MAX_RELAX_TIME = 1000.0
#: Optimistic cost of one Gaussian number (and its share of the step) per thread, seconds.
NS_PER_NORMAL = 1e-9
#: Estimates below both of these are accepted without consulting the toolkit's limits.
_CHEAP_BYTES, _CHEAP_SECONDS = float(1 << 30), 60.0


# ----------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonteCarloConfig:
    """Settings of a d-dimensional VI Monte Carlo run (see :mod:`analysis.montecarlo`).

    Attributes
    ----------
    d : dimension (>= rank of the joint Gram matrix of target means and centres).
    seeds : number of independent runs.
    eta : optimiser step; SGD time t = eta * steps.  None: :func:`default_eta` of the spec
        (0.02 unless s is tiny); an SGD step above :func:`stable_step` is refused unless force.
    n : reparameterised samples per component per step.
    estimator : a name in :data:`analysis.mc_estimators.GRADIENT_ESTIMATORS` (``"stl"``,
        ``"reparam"``).  optimizer : a name in :data:`analysis.mc_optimisers.OPTIMISERS`
        (``"sgd"``, ``"adam"``).
    t_end : final time, or None for the default rule (:func:`default_t_end`).
    seed : base seed; run_offset : index of the first run (runs are
        ``run_offset .. run_offset + seeds - 1``).
    n_records : points of the recorded time grid (>= 2, including t = 0 and t_end).
    weight_threshold : components with w below it are ignored in the classification.
    beta_tol, relax_time, max_extensions : the default end-time rule (relax_time None: the
        default ``min(25 Delta / (beta_final min w), MAX_RELAX_TIME)``).
    adam_b1, adam_b2, adam_eps : Adam's constants.
    force : run even if the up-front estimate of memory or time exceeds the toolkit's limits
        or the SGD step exceeds the stability bound.

    Every float must be finite (NaN and inf are ValueErrors naming the field).
    """

    d: int
    seeds: int = 100
    eta: float | None = None
    n: int = 8
    estimator: str = "stl"
    optimizer: str = "sgd"
    t_end: float | None = None
    seed: int = 0
    run_offset: int = 0
    n_records: int = 101
    weight_threshold: float = 1e-3
    beta_tol: float = 1e-3
    relax_time: float | None = None
    max_extensions: int = 4
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    force: bool = False

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("d", positive_int("d", self.d))
        put("seeds", positive_int("seeds", self.seeds))
        if self.eta is not None:
            put("eta", positive_float("eta", self.eta))
        put("n", positive_int("n", self.n))
        gradient_estimator(self.estimator)
        optimiser(self.optimizer)
        if self.t_end is not None:
            put("t_end", positive_float("t_end", self.t_end))
        put("seed", positive_int("seed", self.seed, 0))
        put("run_offset", positive_int("run_offset", self.run_offset, 0))
        put("n_records", positive_int("n_records", self.n_records, 2))
        wt = fraction("weight_threshold", self.weight_threshold)
        if wt >= 1:
            raise ValueError(f"weight_threshold: must lie in [0, 1), got {self.weight_threshold!r}")
        put("weight_threshold", wt)
        bt = positive_float("beta_tol", self.beta_tol)
        if bt >= 1:
            raise ValueError(f"beta_tol: must lie in (0, 1), got {self.beta_tol!r}")
        put("beta_tol", bt)
        if self.relax_time is not None:
            put("relax_time", positive_float("relax_time", self.relax_time))
        put("max_extensions", positive_int("max_extensions", self.max_extensions, 0))
        for name in ("adam_b1", "adam_b2"):
            v = fraction(name, getattr(self, name))
            if v >= 1:
                raise ValueError(f"{name}: must lie in [0, 1), got {v!r}")
            put(name, v)
        put("adam_eps", positive_float("adam_eps", self.adam_eps))
        if not isinstance(self.force, (bool, np.bool_)):
            raise ValueError(f"force: must be True or False, got {self.force!r}")
        put("force", bool(self.force))

    def to_dict(self) -> dict:
        return asdict(self)

    def resolved(self, spec: ProblemSpec) -> MonteCarloConfig:
        """This configuration with ``eta`` filled in (:func:`default_eta`) and checked
        (:func:`check_step`, unless force)."""
        spec = require_spec(spec)
        if self.eta is None:
            return replace(self, eta=default_eta(spec))
        if optimiser(self.optimizer).name == "sgd" and not self.force:
            check_step(spec, self.eta)
        return self


# ----------------------------------------------------------------------------------------
# step size
# ----------------------------------------------------------------------------------------

def _attraction_max(spec: ProblemSpec) -> float:
    """``max over beta in (0, 1] of beta/Delta + gamma(beta)/sigma0^2`` (gamma is affine in
    beta, so the maximum is at an end; no property of the schedule is assumed)."""
    delta = float(spec.target.variance)
    s0 = float(spec.path.base_variance) if spec.path.kind == "geometric" else 1.0
    ends = (1.0, 1e-12)
    return max(b / delta + float(spec.gamma(b)) / s0 for b in ends)


def stable_step(spec: ProblemSpec) -> float:
    """``2 / L``, L = ``1/(4 s) + w_max max_beta (beta/Delta + gamma(beta)/sigma0^2)``: the
    largest gradient-descent step that is stable on every curvature of F (module docstring;
    w_max = 1 when the weights train).  Conservative: the entropy's largest positive
    curvature is about 0.09/s, not 1/(4 s)."""
    spec = require_spec(spec)
    s = float(spec.family.variance)
    w = float(np.max(spec.family.w)) if not spec.family.train_weights else 1.0
    L = 0.25 / s + w * _attraction_max(spec)
    return 2.0 / L


def default_eta(spec: ProblemSpec) -> float:
    """``min(DEFAULT_ETA, stable_step(spec) / 10)``: 0.02 unless s is below about 0.025."""
    return min(DEFAULT_ETA, 0.1 * stable_step(spec))


def check_step(spec: ProblemSpec, eta: float) -> float:
    """``eta`` if it is at most :func:`stable_step`, else a ValueError naming eta."""
    bound = stable_step(spec)
    if eta > bound:
        raise ValueError(
            f"eta: the SGD step {eta:g} exceeds the stability bound 2 / (1/(4 s) + w beta/Delta "
            f"+ w gamma/sigma0^2) = {bound:.4g} of this problem (s = {spec.family.variance:g}, "
            f"Delta = {spec.target.variance:g}); use eta <= {bound:.4g} (default "
            f"{default_eta(spec):.4g}) or force=True")
    return eta


def noise_inflation(spec: ProblemSpec, d: int, eta: float, n: int,
                    t_end: float | None = None, peak: bool = False, n_grid: int = 4000,
                    estimator: str = "stl") -> float:
    """Excess of ``|m_k|^2`` out of span{mu, m} that the gradient noise of SGD with the
    gradient ``estimator`` has built up at ``t_end`` (default :func:`default_t_end`;
    ``peak``: its largest value on [0, t_end]), for a component far from the others.

    Per coordinate out of the span the SGD chain is an Ornstein-Uhlenbeck process,
    ``dv/dt = -2 lambda(t) v + eta sigma(t)^2`` with ``lambda = w a``, ``a = beta/Delta +
    gamma/sigma0^2`` and ``sigma^2 = w^2 c(s, a)^2 s / n`` along the schedule (w the smallest
    weight, v(0) = 0), where ``c`` is the estimator's far-component noise coefficient
    (``GradientEstimator.far_noise``: ``1/s - a`` for stl, ``a`` for reparam), integrated
    exactly between the points of a grid of ``n_grid`` times; the result is
    ``(d - K - M) v(t_end)`` (or ``max_t v``).  Once stationary it is
    ``(d - r) eta w c^2 s / (2 n a)``.  Two components at squared distance D^2 ~ 2 x this
    overlap as exp(-D^2 / (8 s)): above about 12 s at the end of the run their mutual
    repulsion is below 5 % of its value and cannot separate them any more (module docstring).
    stl's noise is smaller when ``a > 1/(2 s)`` (late in an annealing, beta Delta ~ s), reparam's
    when ``a < 1/(2 s)`` (early, at high temperature).
    """
    spec = require_spec(spec)
    far = gradient_estimator(estimator).far_noise
    if far is None:
        raise ValueError(f"estimator: {estimator!r} states no far-component noise coefficient")
    t_end = default_t_end(spec) if t_end is None else positive_float("t_end", t_end)
    s, delta = float(spec.family.variance), float(spec.target.variance)
    s0 = float(spec.path.base_variance) if spec.path.kind == "geometric" else 1.0
    w = float(np.min(spec.family.w))
    t = np.linspace(0.0, t_end, n_grid + 1)
    beta = np.asarray(np.broadcast_to(spec.schedule.beta(t), t.shape), dtype=float)
    gamma = np.asarray(np.broadcast_to(spec.gamma(beta), t.shape), dtype=float)
    a = beta / delta + gamma / s0
    lam = w * a
    sig2 = w * w * np.array([far(s, x) for x in a]) ** 2 * s / n
    v, vmax = 0.0, 0.0
    for i in range(n_grid):                      # exact for lambda, sigma frozen on a cell
        h = t[i + 1] - t[i]
        la = 0.5 * (lam[i] + lam[i + 1])
        q = eta * 0.5 * (sig2[i] + sig2[i + 1])
        x = 2.0 * la * h
        decay = math.exp(-x)
        v = v * decay + q * (h if x < 1e-12 else -math.expm1(-x) / (2.0 * la))
        vmax = max(vmax, v)
    r = spec.target.K + spec.family.M
    return max(d - r, 0) * (vmax if peak else v)


def stl_noise_inflation(spec: ProblemSpec, d: int, eta: float, n: int,
                        t_end: float | None = None, peak: bool = False,
                        n_grid: int = 4000) -> float:
    """:func:`noise_inflation` of the ``stl`` estimator."""
    return noise_inflation(spec, d, eta, n, t_end, peak, n_grid, estimator="stl")


def noise_inflation_note(spec: ProblemSpec, d: int, eta: float, n: int, estimator: str,
                         t_end: float) -> str | None:
    """The warning that SGD and its reduced chain attach to a result when the out-of-span
    noise (:func:`noise_inflation`) exceeds 12 s at ``t_end``, else None."""
    infl = noise_inflation(spec, d, eta, n, t_end, estimator=estimator)
    s = float(spec.family.variance)
    if infl <= 12.0 * s:
        return None
    other = "reparam" if estimator == "stl" else "stl"
    return (f"{estimator} noise: at t_end SGD has inflated |m_k|^2 out of span by about "
            f"{infl:.3g} (> 12 s = {12 * s:g}), so the components stop overlapping and the "
            f"entropy's repulsion is lost; collapse can exceed the gradient flow's (a smaller "
            f"eta, or estimator={other!r} where its noise is smaller, avoids it)")


# ----------------------------------------------------------------------------------------
# the default end time
# ----------------------------------------------------------------------------------------

def relaxation_time(spec: ProblemSpec) -> float:
    """``Delta / (beta_final min_k w_k(0))``: one time constant of the mode attraction."""
    spec = require_spec(spec)
    return spec.target.variance / (spec.schedule.beta_final * float(np.min(spec.family.w)))


def default_relax_time(spec: ProblemSpec) -> float:
    """``min(25 Delta / (beta_final min_k w_k(0)), MAX_RELAX_TIME)``: 25 time constants of the
    mode attraction, capped (module docstring)."""
    return min(RELAX_FACTOR * relaxation_time(spec), MAX_RELAX_TIME)


def default_t_end(spec: ProblemSpec, beta_tol: float = 1e-3,
                  relax_time: float | None = None) -> float:
    """Default final time: the schedule has settled within beta_tol, plus a relaxation period.

    ``t_end = spec.schedule.settle_time(beta_tol) + t_relax`` with ``t_relax =
    min(25 Delta / (beta_final min w), MAX_RELAX_TIME)`` (1000) unless ``relax_time`` is given:
    the cap keeps the default finite as beta_final -> 0, at the price of runs that may not have
    settled; :func:`analysis.montecarlo.simulate` extends while classifications still change and
    reports the runs that never settled as undecided.
    """
    spec = require_spec(spec)
    tb = float(spec.schedule.settle_time(positive_float("beta_tol", beta_tol)))
    tr = default_relax_time(spec) if relax_time is None else positive_float("relax_time",
                                                                            relax_time)
    return tb + tr


# ----------------------------------------------------------------------------------------
# resource estimate and guard
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonteCarloCost:
    """Up-front estimate of a :func:`analysis.montecarlo.simulate` call.

    bytes : peak memory; steps : optimiser steps at most (extensions included); seconds : wall
    time at :data:`NS_PER_NORMAL` per Gaussian number per thread; threads : threads assumed;
    normals_per_step : M n d per run times the runs.
    """

    bytes: float
    steps: int
    seconds: float
    threads: int
    normals_per_step: float


def _threads() -> int:
    try:
        import numba
        return max(1, int(numba.get_num_threads()))
    except Exception:  # pragma: no cover
        return 1


def estimate_cost(spec: ProblemSpec, config: MonteCarloConfig, keep_means: bool = False,
                  threads: int | None = None, runs: int | None = None) -> MonteCarloCost:
    """Memory and time of a simulation, from the sizes alone (nothing is allocated).

    Memory (8-byte floats), S runs, P threads, r = K + M, n_t = n_records:
    ``S M d (2 + 2 [moments] + [keep_means])`` (means, their contiguous copy, optimiser moments)
    ``+ P d (M n + M + M^2 [score] + 2 M + K)`` (one step's noise and work per thread)
    ``+ 3 S n_t (M^2 + M K + M)`` (records, stacked) ``+ d (2 r + K)`` (geometry).
    Time: ``steps * S M n d`` Gaussian numbers at :data:`NS_PER_NORMAL` per thread, steps =
    ``ceil(t_end / eta) + max_extensions * ceil(t_relax / eta)`` for the default end time.
    ``runs`` overrides S for the memory (a chunk of an executor run).
    """
    spec = require_spec(spec)
    cfg = config
    eta = cfg.eta if cfg.eta is not None else default_eta(spec)
    M, K = spec.family.M, spec.target.K
    S, d, n, nt = cfg.seeds, cfg.d, cfg.n, cfg.n_records
    S_mem = S if runs is None else runs
    P = _threads() if threads is None else threads
    moments = 2.0 if optimiser(cfg.optimizer).moments else 0.0
    score = float(M * M) if gradient_estimator(cfg.estimator).score_buffer else 0.0
    r = K + M
    mem = 8.0 * (float(S_mem) * M * d * (2.0 + moments + (1.0 if keep_means else 0.0))
                 + min(P, S_mem) * float(d) * (M * n + M + score + 2 * M + K)
                 + 3.0 * S_mem * nt * (M * M + M * K + M)
                 + float(d) * (2 * r + K))
    relax = cfg.relax_time if cfg.relax_time is not None else default_relax_time(spec)
    if cfg.t_end is None:
        t_end = default_t_end(spec, cfg.beta_tol, relax)
        steps = math.ceil(t_end / eta) + cfg.max_extensions * math.ceil(relax / eta)
    else:
        steps = math.ceil(cfg.t_end / eta)
    normals = float(S) * M * n * d
    seconds = steps * normals * NS_PER_NORMAL / P
    return MonteCarloCost(bytes=mem, steps=int(steps), seconds=seconds, threads=P,
                          normals_per_step=normals)


def _culprit(pairs: list[tuple[str, float, float]]) -> str:
    """The parameter whose value is largest relative to its ordinary size."""
    return max(pairs, key=lambda p: p[1] / p[2])[0]


def check_cost(spec: ProblemSpec, config: MonteCarloConfig, keep_means: bool = False,
               runs: int | None = None) -> MonteCarloCost:
    """:func:`estimate_cost`, and a ValueError naming the dominant parameter, the estimate and
    the limit if it exceeds :data:`analysis.estimators.MAX_BYTES` or
    :data:`~analysis.estimators.MAX_SECONDS` (unless ``config.force``)."""
    cost = estimate_cost(spec, config, keep_means, runs=runs)
    if config.force or (cost.bytes < _CHEAP_BYTES and cost.seconds < _CHEAP_SECONDS):
        return cost
    from .estimators.base import MAX_BYTES, MAX_SECONDS
    cfg = config
    sizes = (f"seeds = {cfg.seeds}, d = {cfg.d}, n = {cfg.n}, M = {spec.family.M}")
    if cost.bytes > MAX_BYTES:
        name = _culprit([("d", cfg.d, 1000), ("seeds", runs or cfg.seeds, 100),
                         ("n", cfg.n, 8), ("n_records", cfg.n_records, 101)])
        raise ValueError(f"{name}: the Monte Carlo needs about {format_bytes(cost.bytes)} "
                         f"({cost.bytes:.3g} bytes) of memory ({sizes}), more than the limit "
                         f"{format_bytes(MAX_BYTES)}; reduce {name} or pass force=True")
    if cost.seconds > MAX_SECONDS:
        eta = cfg.eta if cfg.eta is not None else default_eta(spec)
        t_name = "t_end" if cfg.t_end is not None else "t_end (default rule)"
        name = _culprit([(t_name, cost.steps, 5e4), ("seeds", cfg.seeds, 100),
                         ("d", cfg.d, 1000), ("n", cfg.n, 8)])
        raise ValueError(
            f"{name}: the Monte Carlo needs {cost.steps:.3g} steps of eta = {eta:g} for "
            f"{sizes}, about {format_seconds(cost.seconds)} ({cost.seconds:.3g} s at an "
            f"optimistic {NS_PER_NORMAL * 1e9:g} ns per Gaussian number on {cost.threads} "
            f"thread(s)), more than the limit {format_seconds(MAX_SECONDS)}; reduce {name} or "
            f"pass force=True")
    return cost


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------

def _s_summary(s_final: np.ndarray | None) -> dict | None:
    """Median, min and max of the final variances over the finite runs."""
    if s_final is None:
        return None
    x = np.asarray(s_final, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    return {"median": float(np.median(x)), "min": float(x.min()), "max": float(x.max())}


@dataclass(frozen=True)
class MonteCarloResult:
    """Outcome of :func:`analysis.montecarlo.simulate`.

    Attributes
    ----------
    spec, config : the problem and the settings (``config.eta`` resolved).
    run_ids : (S,) int, run indices (``run_offset + arange(seeds)``).
    t : (n_t,) recorded times (gradient-flow time), beta : (n_t,) beta(t).
    Q : (S, n_t, M, M), R : (S, n_t, M, K), w : (S, n_t, M): statistics computed from the
        d-dimensional vectors at the recorded times (NaN after a run diverged).
    collapsed : (S,) bool; mechanism : (S,) int8 codes of :mod:`analysis.classify`;
    assignment : (S, M) nearest mode of every component at t_end.
    fraction : :class:`analysis.stats.Proportion` of collapsed runs among the finite ones
        (undecided runs included, classified at t_end).
    steps : optimiser steps taken; t_end : final time (= eta * steps).
    t_end_rule : how t_end was chosen; extensions : stability extensions made;
    changed_final_window : runs whose classification changed in the final window
        (the last half relaxation period, or the last half of the run if that is shorter).
    target_means : (K, d); final_means : (S, M, d) or None (``keep_means``).
    wall_time : seconds spent stepping.
    undecided : (S,) bool, the runs of ``changed_final_window``: their outcome had not
        settled at t_end (None: not computed).
    notes : warnings about the run (capped relaxation, strong stl noise, ...).
    s : (S, n_t) the component variance s(t) of every run at the recorded times (constant for
        fixed variances; trained for ``tied``; s(beta(t)) for ``adiabatic``), or (S, n_t, M)
        for ``per-component`` (one s_k per component); None for results made before it was
        recorded.  ``s_final`` = ``s[:, -1]``.
    """

    spec: ProblemSpec
    config: MonteCarloConfig
    run_ids: np.ndarray
    t: np.ndarray
    beta: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    w: np.ndarray
    collapsed: np.ndarray
    mechanism: np.ndarray
    assignment: np.ndarray
    fraction: Proportion
    steps: int
    t_end: float
    t_end_rule: str
    extensions: int
    changed_final_window: int
    target_means: np.ndarray
    final_means: np.ndarray | None
    wall_time: float
    undecided: np.ndarray | None = None
    notes: tuple = field(default=())
    s: np.ndarray | None = None

    @property
    def s_final(self) -> np.ndarray | None:
        """(S,) the variance at t_end ((S, M) per component; None if s was not recorded)."""
        return None if self.s is None else self.s[:, -1]

    @property
    def s_ratio(self) -> np.ndarray | None:
        """(S, n_t) [or (S, n_t, M)] s(t) / s_final, the relaxation of the variance (None if not
        recorded)."""
        return None if self.s is None else self.s / self.s[:, -1:]

    @property
    def n_diverged(self) -> int:
        return int(np.count_nonzero(self.mechanism == 3))

    @property
    def n_undecided(self) -> int:
        """Runs whose outcome had not settled at t_end."""
        if self.undecided is None:
            return int(self.changed_final_window)
        return int(np.count_nonzero(self.undecided))

    @property
    def Q0(self) -> np.ndarray:
        """(S, M, M) initial Q (from the d-dimensional initial means)."""
        return self.Q[:, 0]

    @property
    def R0(self) -> np.ndarray:
        """(S, M, K) initial R."""
        return self.R[:, 0]

    def summary(self) -> dict:
        """JSON-ready summary: p, ci, k, n, d, params (the full specification), and more
        (``n_undecided``: runs whose outcome had not settled at t_end; ``notes``)."""
        import numba
        import scipy

        steps_per_s = self.steps / self.wall_time if self.wall_time > 0 else None
        return {
            "p": self.fraction.p, "ci": list(self.fraction.ci), "k": self.fraction.k,
            "n": self.fraction.n, "d": self.config.d,
            "confidence": self.fraction.confidence,
            "params": self.spec.to_dict(),
            "simulation": self.config.to_dict(),
            "mechanisms": mechanism_counts(self.mechanism),
            "n_runs": int(self.run_ids.size), "n_diverged": self.n_diverged,
            "n_undecided": self.n_undecided,
            "run_ids": [int(self.run_ids[0]), int(self.run_ids[-1])],
            "t_end": self.t_end, "steps": self.steps, "t_end_rule": self.t_end_rule,
            "extensions": self.extensions, "changed_final_window": self.changed_final_window,
            "notes": list(self.notes),
            "objective": self.spec.objective, "variances": self.spec.family.variances,
            "s_final": _s_summary(self.s_final),
            "wall_time": self.wall_time, "steps_per_second": steps_per_s,
            "threads": int(numba.get_num_threads()),
            "versions": {"numpy": np.__version__, "scipy": scipy.__version__,
                         "numba": numba.__version__, "python": sys.version.split()[0]},
        }

    def save(self, path: str | os.PathLike,
             summary: dict | None = None) -> tuple[Path, Path]:
        """Write ``<path>.json`` (``summary``, default :meth:`summary`) and ``<path>.npz``
        (the arrays), each atomically (:func:`derivations.atomic.atomic_write`).  ``path`` may
        end in .json or .npz; returns both paths.
        """
        p = Path(path)
        if p.suffix in (".json", ".npz"):
            p = p.with_suffix("")
        # append (not replace) the suffixes: "run_eta0.02" must not become "run_eta0.json"
        jpath, npath = p.parent / (p.name + ".json"), p.parent / (p.name + ".npz")
        jpath.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(run_ids=self.run_ids, t=self.t, beta=self.beta, Q=self.Q, R=self.R,
                      w=self.w, collapsed=self.collapsed, mechanism=self.mechanism,
                      assignment=self.assignment, target_means=self.target_means)
        if self.undecided is not None:
            arrays["undecided"] = self.undecided
        if self.final_means is not None:
            arrays["final_means"] = self.final_means
        if self.s is not None:
            arrays["s"] = self.s
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write(npath, buf.getvalue())
        summary = self.summary() if summary is None else summary
        atomic_write(jpath, json.dumps(summary, indent=2) + "\n")
        return jpath, npath
