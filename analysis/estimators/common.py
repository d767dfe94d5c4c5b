"""Helpers shared by the built-in estimators: the compiled model, the stationarity event, the
default end time, the antipodal-pair test."""

from __future__ import annotations

from derivations.spec import ProblemSpec

__all__ = ["compiled_model", "stationary_event", "default_ode_t_end", "is_antipodal_pair"]


def compiled_model(spec: ProblemSpec):
    """The generated, compiled model of ``spec.structure`` (cached on disk)."""
    from derivations.codegen import compile_model
    return compile_model(spec.structure)


def stationary_event(spec: ProblemSpec, tol: float = 1e-7):
    """Stationarity (max |dy/dt| < tol) once beta is within 1e-3 of its final value."""
    from solvers.integrate import Event
    return Event.converged(tol, beta_min=spec.schedule.beta_final - 1e-3)


def default_ode_t_end(spec: ProblemSpec) -> float:
    """Final time of the theory ensemble: the schedule settles within 1e-3 of its final beta,
    then 25 relaxation times ``Delta / (beta_final min_k w_k)`` (the rule of the Monte Carlo,
    :func:`analysis.montecarlo.default_t_end`); members stop earlier once converged."""
    from analysis.montecarlo import default_t_end
    return default_t_end(spec)


def is_antipodal_pair(spec: ProblemSpec) -> bool:
    """K = M = 2, mu_2 = -mu_1, pi_1 = pi_2, w_1 = w_2, zero centres: the separatrix setting."""
    T, K, M = spec.target.T, spec.target.K, spec.family.M
    if K != 2 or M != 2 or spec.init.centre_gram is not None:
        return False
    A = T[0, 0]
    return bool(A > 0 and abs(T[1, 1] - A) <= 1e-12 * A and abs(T[0, 1] + A) <= 1e-12 * A
                and spec.target.weights[0] == spec.target.weights[1]
                and spec.family.weights[0] == spec.family.weights[1])
