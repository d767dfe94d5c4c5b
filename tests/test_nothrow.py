"""Exceptions inside compiled integrators (Numba's first-class calls swallow them).

A kernel that refuses (ValueError) inside an rhs called by the compiled integrators would be
printed as "Exception ignored" and the integration would go on with the stale output array.
Functions carrying a ``nothrow`` twin (the generated loop-form rhs and jac) are replaced by it
in :func:`solvers.integrate.as_first_class`: NaN output, so the run ends as non-finite."""

from __future__ import annotations

import numpy as np
from numba import njit

from analysis.estimators.common import compiled_model
from derivations.spec import ConstantSchedule, orthogonal
from solvers.ensemble import run_ensemble
from solvers.integrate import STATUS_NONFINITE, STATUS_SUCCESS, as_first_class
from solvers.signatures import RHS_SIG


@njit(RHS_SIG)
def _refusing(y, beta, theta, out):
    if y[0] > 1.0:
        raise ValueError("refused")
    out[0] = 1.0          # dy/dt = 1: crosses y = 1 at t = 1 - y0


@njit(RHS_SIG)
def _refusing_nothrow(y, beta, theta, out):
    try:
        _refusing(y, beta, theta, out)
    except Exception:
        out[:] = np.nan


def test_a_refusal_inside_the_integrator_ends_the_run_as_non_finite():
    _refusing.nothrow = _refusing_nothrow
    assert as_first_class(_refusing, RHS_SIG) is as_first_class(_refusing_nothrow, RHS_SIG)
    run = run_ensemble(_refusing, np.array([[0.0], [0.5]]), (0.0, 0.4), np.zeros(1),
                       schedule=ConstantSchedule(1.0), progress=False)
    assert list(run.status) == [STATUS_SUCCESS, STATUS_SUCCESS]
    run = run_ensemble(_refusing, np.array([[0.0], [0.5]]), (0.0, 3.0), np.zeros(1),
                       schedule=ConstantSchedule(1.0), progress=False)
    assert list(run.status) == [STATUS_NONFINITE, STATUS_NONFINITE]
    assert np.all(run.Z_final[:, 0] <= 1.0 + 1e-12)   # stopped where the rhs refused


def test_generated_loop_functions_carry_their_nothrow_twins():
    spec = orthogonal(2, 4, 9.0)
    m = compiled_model(spec)
    theta = spec.theta()
    y = np.random.default_rng(0).normal(0.0, 0.3, m.n_state)
    a, b = np.empty(m.n_state), np.empty(m.n_state)
    m.rhs(y, 1.0, theta, a)
    m.rhs.nothrow(y, 1.0, theta, b)
    np.testing.assert_array_equal(a, b)
    J1, J2 = np.empty((m.n_state, m.n_state)), np.empty((m.n_state, m.n_state))
    m.jac(y, 1.0, theta, J1)
    m.jac.nothrow(y, 1.0, theta, J2)
    np.testing.assert_array_equal(J1, J2)
