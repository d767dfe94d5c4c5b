r"""Collapse probability: the estimators of :mod:`analysis.estimators` behind one call.

``collapse_probability(spec, d, method, draws, seed, executor, force, **options)`` looks the
estimator up in the registry (:data:`analysis.estimators.ESTIMATORS`), builds its typed options
(an unknown or misspelled option is a ValueError naming it and the valid ones), lets it refuse
problems its derivation does not cover, refuses requests whose estimated memory or time is
absurd (unless ``force``), and returns its :class:`CollapseResult`.

Built-in methods (DESIGN.md section 3; each module's docstring states its mathematics):

ode
    Theory ensemble: exact finite-d law of (Q(0), R(0)), reduced ODE per draw, Wilson interval.
separatrix
    Sharp large-d formula for two components on an antipodal target: critical angle
    theta_c(eps) by bisection, ``P = E_chi[2 theta_c(eps0 chi)/pi]``; refuses where its
    one-switch assumption fails.
linear
    Linearisation around R = 0 mapped to the saturation time; an approximation that
    over-predicts collapse.
montecarlo
    Real SGD/Adam VI in R^d from many seeds.
gd
    Plain gradient descent at finite step eta: the exact reduced map of (Q, R, alpha) per
    draw (:mod:`solvers.gd`), from the ode estimator's initial draws.
sgd
    SGD with n reparameterised samples: the exact reduced Markov chain of (Q, R, alpha)
    (:mod:`solvers.sgd`), whose cost does not depend on d; Adam has no exact reduction.

Every module of :mod:`analysis.estimators` registers itself; ``METHODS`` lists them all.

Executors: ``ode`` and ``montecarlo`` split their draws into chunks submitted to an optional
``concurrent.futures.Executor`` (a ProcessPoolExecutor, dask.distributed's or mpi4py's); by
default they run in-process, where the compiled ensemble already uses all cores.  Each chunk
draws from its own stream derived from (seed, chunk index), so the result does not depend on
the executor.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from typing import Any

import numpy as np

from derivations.spec import ProblemSpec, require_spec

from .classify import MECHANISM_NAMES
from .estimators import (
    ESTIMATORS,
    CollapseResult,
    critical_angles,
    default_ode_t_end,
    get_estimator,
    is_antipodal_pair,
    parse_options,
    separatrix_vs_d,
)
from .estimators.ode import ODE_CHUNK

__all__ = ["METHODS", "CollapseResult", "collapse_probability", "critical_angles",
           "separatrix_vs_d", "default_ode_t_end", "is_antipodal_pair", "MECHANISM_NAMES",
           "ODE_CHUNK", "check_d"]

#: Names of the registered estimators (the built-ins; see ``ESTIMATORS`` for the live set).
METHODS = tuple(ESTIMATORS)


def check_d(d: Any) -> int:
    """``d`` as an int, or a ValueError: an integer >= 1 (a float with an integral value, as
    ``1e6`` from a command line, is accepted)."""
    if isinstance(d, (bool, np.bool_)) or isinstance(d, str):
        raise ValueError(f"d: must be an integer >= 1, got {d!r}")
    if isinstance(d, (float, np.floating)) and np.isfinite(d) and float(d).is_integer():
        d = int(d)
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d: must be an integer >= 1, got {d!r}")
    return int(d)


def collapse_probability(spec: ProblemSpec, d: int, method: str = "ode", draws: int = 1000,
                         seed: int | None = None, executor: Executor | None = None,
                         force: bool = False, **options: Any) -> CollapseResult:
    """Probability of mode collapse over the random initialisation in dimension d.

    Parameters
    ----------
    spec : the problem (schedule, path, initialisation law included).
    d : dimension (>= 1).
    method : a registered estimator (``analysis.estimators.ESTIMATORS``): ``"ode"``,
        ``"separatrix"``, ``"linear"``, ``"montecarlo"``, or one a user registered.
    draws : number of draws for the sampling estimators (ignored by ``separatrix`` and by the
        closed-form ``linear``).
    seed : root seed (None: fresh entropy).
    executor : optional ``concurrent.futures.Executor`` for the draws (``ode``, ``montecarlo``).
    force : run even if the up-front estimate of memory or time exceeds the limits
        (:data:`analysis.estimators.MAX_BYTES`, :data:`~analysis.estimators.MAX_SECONDS`).
    options : the estimator's options (fields of its ``Options`` dataclass), e.g. ``t_end``,
        ``rtol``, ``weight_threshold``, ``progress`` (ode); ``n_eps_per_decade``, ``tol``
        (separatrix); ``orthant``, ``n_times`` (linear); ``eta``, ``n``, ``estimator``,
        ``optimizer`` (montecarlo).  Unknown options are a ValueError.
    """
    spec = require_spec(spec)
    d = check_d(d)
    est_cls = get_estimator(method)
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws: must be an integer >= 1, got {draws!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed: must be a non-negative integer or None, got {seed!r}")
    if executor is not None and not hasattr(executor, "submit"):
        raise ValueError("executor: must be a concurrent.futures.Executor (or have .submit)")
    opts = parse_options(est_cls.Options, method, options)
    est = est_cls()
    est.check(spec, d, opts)
    est.cost(spec, d, int(draws), opts).check(bool(force), method)
    start = time.perf_counter()
    res = est.estimate(spec, d, int(draws), None if seed is None else int(seed), executor, opts)
    return CollapseResult(**{**res.__dict__, "wall_time": time.perf_counter() - start})
