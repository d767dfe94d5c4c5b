"""solvers.integrate: DOPRI5 / RK4, dense output, schedules, events, tangent propagator.

References are analytic solutions, scipy (quad, expm, solve_ivp) and finite differences.
"""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import scipy.optimize
from numba import njit

from derivations.spec import (
    ConstantSchedule,
    ExponentialSchedule,
    LinearSchedule,
    PiecewiseConstantSchedule,
    TabulatedSchedule,
)
from solvers.integrate import (
    STATUS_EVENT,
    STATUS_MAX_STEPS,
    STATUS_NONFINITE,
    STATUS_SUCCESS,
    STATUS_UNDERFLOW,
    Event,
    integrate,
    propagator,
)
from solvers.schedule import schedule_end_time, schedule_kinks
from solvers.signatures import JAC_SIG, RHS_SIG

# ----------------------------------------------------------------------------------------
# hand-written compiled models
# ----------------------------------------------------------------------------------------

@njit(RHS_SIG, cache=True)
def rhs_k1(y, beta, theta, out):
    """K = M = 1 reduced flow, y = (Q, R), theta = (T, Delta): R' = b (T - R), Q' = 2 b (R - Q)."""
    b = beta / theta[1]
    out[0] = 2.0 * b * (y[1] - y[0])
    out[1] = b * (theta[0] - y[1])


@njit(JAC_SIG, cache=True)
def jac_k1(y, beta, theta, J):
    b = beta / theta[1]
    J[0, 0] = -2.0 * b
    J[0, 1] = 2.0 * b
    J[1, 0] = 0.0
    J[1, 1] = -b


@njit(RHS_SIG, cache=True)
def rhs_lin(y, beta, theta, out):
    """y' = beta A y, A = theta.reshape(n, n)."""
    n = y.shape[0]
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += theta[i * n + j] * y[j]
        out[i] = beta * acc


@njit(JAC_SIG, cache=True)
def jac_lin(y, beta, theta, J):
    n = y.shape[0]
    for i in range(n):
        for j in range(n):
            J[i, j] = beta * theta[i * n + j]


@njit(RHS_SIG, cache=True)
def rhs_logistic(y, beta, theta, out):
    """y' = beta r y (1 - y), theta = (r, call counter)."""
    theta[1] += 1.0
    out[0] = beta * theta[0] * y[0] * (1.0 - y[0])


@njit(RHS_SIG, cache=True)
def rhs_osc(y, beta, theta, out):
    """Harmonic oscillator x'' = -w^2 x."""
    out[0] = y[1]
    out[1] = -theta[0] * theta[0] * y[0]


@njit(RHS_SIG, cache=True)
def rhs_vdp(y, beta, theta, out):
    """beta times the Van der Pol field, theta = (mu,)."""
    out[0] = beta * y[1]
    out[1] = beta * (theta[0] * (1.0 - y[0] * y[0]) * y[1] - y[0])


@njit(JAC_SIG, cache=True)
def jac_vdp(y, beta, theta, J):
    mu = theta[0]
    J[0, 0] = 0.0
    J[0, 1] = beta
    J[1, 0] = beta * (-2.0 * mu * y[0] * y[1] - 1.0)
    J[1, 1] = beta * mu * (1.0 - y[0] * y[0])


@njit(RHS_SIG, cache=True)
def rhs_blowup(y, beta, theta, out):
    out[0] = y[0] * y[0]


@njit(RHS_SIG, cache=True)
def rhs_nan_beyond_two(y, beta, theta, out):
    out[0] = 1.0 if y[0] < 2.0 else np.nan


# ----------------------------------------------------------------------------------------
# references
# ----------------------------------------------------------------------------------------

def beta_integral(schedule, t):
    """B(t) = int_0^t beta(s) ds by adaptive quadrature split at the schedule's kinks."""
    code, params = schedule.encode()
    kinks = [k for k in schedule_kinks(code, params) if 0 < k < t]
    edges = [0.0] + kinks + [t]
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        mid = 0.5 * (a + b)
        bm = schedule.beta(mid)
        if isinstance(schedule, PiecewiseConstantSchedule):
            total += bm * (b - a)  # constant on the open piece
        else:
            val, _ = scipy.integrate.quad(schedule.beta, a, b, epsabs=1e-14, epsrel=1e-13,
                                          limit=200)
            total += val
    return total


def k1_exact(schedule, t, y0, T, Delta=1.0):
    """Closed form of the K = M = 1 flow: m(t) = mu + (m0 - mu) e^{-B(t)/Delta}."""
    Q0, R0 = y0
    e = np.exp(-np.array([beta_integral(schedule, s) for s in np.atleast_1d(t)]) / Delta)
    R = T + (R0 - T) * e
    Q = T + 2 * (R0 - T) * e + (Q0 - 2 * R0 + T) * e * e
    return np.stack([Q, R], axis=-1)


def k1_rhs_np(y, beta, T, Delta=1.0):
    b = beta / Delta
    return np.stack([2 * b * (y[..., 1] - y[..., 0]), b * (T - y[..., 1])], axis=-1)


SCHEDULES = [
    ConstantSchedule(1.0),
    ConstantSchedule(0.3),
    LinearSchedule(20.0, 7.0),
    ExponentialSchedule(20.0, 5.0),
    PiecewiseConstantSchedule((0.05, 0.3, 1.0), (2.0, 5.5)),
    TabulatedSchedule((1.0, 3.0, 4.0, 9.0), (0.1, 0.6, 0.2, 1.0)),
]

T_K1 = 9.0
THETA_K1 = np.array([T_K1, 1.0])
Y0_K1 = np.array([0.3, 0.1])


# ----------------------------------------------------------------------------------------
# accuracy
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_k1_closed_form_all_schedules(schedule):
    t_eval = np.linspace(0.0, 12.0, 97)
    sol = integrate(rhs_k1, Y0_K1, (0.0, 12.0), THETA_K1, schedule=schedule, t_eval=t_eval,
                    rtol=1e-11, atol=1e-13)
    assert sol.status == STATUS_SUCCESS and sol.success
    ref = k1_exact(schedule, t_eval, Y0_K1, T_K1)
    np.testing.assert_allclose(sol.t, t_eval)
    np.testing.assert_allclose(sol.y, ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sol.y_final, ref[-1], rtol=0, atol=1e-10)
    assert sol.t_final == 12.0 and math.isnan(sol.t_event)
    # jumps/kinks of beta are step points, so they cost (almost) no rejected steps
    assert sol.n_rejected <= 10


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_rk4_fourth_order_all_schedules(schedule):
    """Global error of RK4 drops by ~2^4 when h halves (steps never straddle a jump/kink)."""
    t_end = 12.0
    ref = k1_exact(schedule, [t_end], Y0_K1, T_K1)[0]
    errs = []
    for h in (0.2, 0.1, 0.05):
        sol = integrate(rhs_k1, Y0_K1, (0.0, t_end), THETA_K1, schedule=schedule,
                        method="rk4", h=h)
        assert sol.status == STATUS_SUCCESS
        errs.append(np.max(np.abs(sol.y_final - ref)))
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert all(10.0 < r < 22.0 for r in ratios), (errs, ratios)


def test_dopri5_error_follows_tolerance():
    """Logistic equation y' = r y (1 - y): closed form y = 1 / (1 + (1/y0 - 1) e^{-r t})."""
    r, y0, t_end = 1.3, 0.01, 10.0
    exact = 1.0 / (1.0 + (1.0 / y0 - 1.0) * math.exp(-r * t_end))
    errs = []
    for tol in (1e-5, 1e-8, 1e-11):
        sol = integrate(rhs_logistic, [y0], (0.0, t_end), np.array([r, 0.0]), rtol=tol,
                        atol=tol * 1e-2)
        errs.append(abs(sol.y_final[0] - exact))
    assert errs[0] < 1e-4 and errs[1] < 1e-7 and errs[2] < 1e-10
    assert errs[2] < errs[1] < errs[0]


def test_harmonic_oscillator_long_time():
    w = 2.0
    t_eval = np.linspace(0, 50, 501)
    sol = integrate(rhs_osc, [1.0, 0.0], (0.0, 50.0), np.array([w]), t_eval=t_eval,
                    rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sol.y[:, 0], np.cos(w * t_eval), atol=5e-10)
    np.testing.assert_allclose(sol.y[:, 1], -w * np.sin(w * t_eval), atol=1e-9)


def test_against_scipy_solve_ivp_nonlinear():
    mu = 2.0
    sched = LinearSchedule(4.0, 6.0)
    t_eval = np.linspace(0.0, 15.0, 31)
    sol = integrate(rhs_vdp, [2.0, 0.0], (0.0, 15.0), np.array([mu]), schedule=sched,
                    t_eval=t_eval, rtol=1e-11, atol=1e-13)

    def f(t, y):
        b = sched.beta(t)
        return [b * y[1], b * (mu * (1 - y[0] ** 2) * y[1] - y[0])]

    ref = scipy.integrate.solve_ivp(f, (0, 15), [2.0, 0.0], method="DOP853", t_eval=t_eval,
                                    rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(sol.y, ref.y.T, rtol=0, atol=1e-8)


# ----------------------------------------------------------------------------------------
# dense output
# ----------------------------------------------------------------------------------------

NODES = tuple(float(k) for k in range(1, 11))
FORCED = TabulatedSchedule(NODES, (1.0,) * len(NODES))  # beta = 1, steps forced to end at nodes


def test_dense_output_exact_at_step_points():
    """The tabulated schedule forces step points at t = 1..10; the run to t = k ends at the
    same step point with the same steps, so the dense output there must be bitwise equal."""
    t_eval = np.array(NODES)
    full = integrate(rhs_k1, Y0_K1, (0.0, 10.0), THETA_K1, schedule=FORCED, t_eval=t_eval,
                     rtol=1e-6, atol=1e-8)
    for k, tk in enumerate(NODES):
        part = integrate(rhs_k1, Y0_K1, (0.0, tk), THETA_K1, schedule=FORCED, rtol=1e-6,
                         atol=1e-8)
        assert np.array_equal(full.y[k], part.y_final), (tk, full.y[k], part.y_final)


def test_dense_output_continuous_across_steps():
    delta = 1e-9
    t_eval = np.sort(np.concatenate([np.array(NODES[:-1]) - delta, np.array(NODES[:-1]),
                                     np.array(NODES[:-1]) + delta]))
    sol = integrate(rhs_k1, Y0_K1, (0.0, 10.0), THETA_K1, schedule=FORCED, t_eval=t_eval,
                    rtol=1e-6, atol=1e-8)
    y = sol.y.reshape(-1, 3, 2)
    fmax = np.max(np.abs(k1_rhs_np(y[:, 1], 1.0, T_K1)), axis=-1)
    jump_left = np.max(np.abs(y[:, 1] - y[:, 0]), axis=-1)
    jump_right = np.max(np.abs(y[:, 2] - y[:, 1]), axis=-1)
    assert np.all(jump_left <= 1.5 * delta * fmax + 1e-14)
    assert np.all(jump_right <= 1.5 * delta * fmax + 1e-14)


def test_dense_output_accuracy_between_steps():
    rng = np.random.default_rng(1)
    t_eval = np.sort(rng.uniform(0, 20, 500))
    sched = ExponentialSchedule(20.0, 5.0)
    sol = integrate(rhs_k1, Y0_K1, (0.0, 20.0), THETA_K1, schedule=sched, t_eval=t_eval,
                    rtol=1e-10, atol=1e-12)
    ref = k1_exact(sched, t_eval, Y0_K1, T_K1)
    np.testing.assert_allclose(sol.y, ref, rtol=0, atol=1e-8)
    # only a handful of steps: most outputs come from the interpolant
    assert sol.n_steps < 200


def test_rk4_dense_output_hermite():
    """RK4 output between steps is the cubic Hermite interpolant: error O(h^4) as well."""
    t_eval = np.linspace(0, 10, 1001)
    sol = integrate(rhs_k1, Y0_K1, (0.0, 10.0), THETA_K1, t_eval=t_eval, method="rk4", h=0.05)
    ref = k1_exact(ConstantSchedule(1.0), t_eval, Y0_K1, T_K1)
    assert np.max(np.abs(sol.y - ref)) < 1e-5


# ----------------------------------------------------------------------------------------
# statistics, status codes, validation
# ----------------------------------------------------------------------------------------

def test_rhs_evaluation_count_is_reported():
    theta = np.array([1.0, 0.0])  # theta[1] counts calls inside the compiled rhs
    sol = integrate(rhs_logistic, [0.01], (0.0, 10.0), theta, rtol=1e-9, atol=1e-12,
                    t_eval=np.linspace(0, 10, 11))
    assert sol.n_rhs == int(theta[1])
    # FSAL: 6 evaluations per attempted step + initial f + one for the initial step size
    assert sol.n_rhs == 6 * (sol.n_steps + sol.n_rejected) + 2
    theta[1] = 0.0
    sol = integrate(rhs_logistic, [0.01], (0.0, 10.0), theta, method="rk4", h=0.5)
    assert sol.n_steps == 20 and sol.n_rhs == int(theta[1]) == 1 + 4 * 20


def test_zero_length_interval():
    sol = integrate(rhs_k1, Y0_K1, (3.0, 3.0), THETA_K1)
    assert sol.status == STATUS_SUCCESS and sol.n_steps == 0
    np.testing.assert_array_equal(sol.y_final, Y0_K1)
    np.testing.assert_array_equal(sol.y, [Y0_K1])


def test_max_steps_status():
    sol = integrate(rhs_osc, [1.0, 0.0], (0.0, 1000.0), np.array([1.0]), rtol=1e-10,
                    atol=1e-12, max_steps=50, t_eval=np.linspace(0, 1000, 11))
    assert sol.status == STATUS_MAX_STEPS and not sol.success
    assert sol.n_steps + sol.n_rejected == 50
    assert 0 < sol.t_final < 1000
    assert np.all(sol.t <= sol.t_final) and sol.y.shape == (sol.t.size, 2)


def test_blowup_underflow_status():
    """y' = y^2, y(0) = 1 blows up at t = 1."""
    sol = integrate(rhs_blowup, [1.0], (0.0, 2.0), np.zeros(1), rtol=1e-8, atol=1e-10)
    assert sol.status in (STATUS_UNDERFLOW, STATUS_NONFINITE)
    assert 0.999 < sol.t_final < 1.001
    assert sol.y_final[0] > 1e6


def test_nonfinite_status():
    sol = integrate(rhs_nan_beyond_two, [0.0], (0.0, 5.0), np.zeros(1))
    assert sol.status == STATUS_NONFINITE
    assert sol.t_final == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(t_span=(1.0, 0.0)), "t_end"),
    (dict(rtol=0.0), "rtol"),
    (dict(rtol=-1.0), "rtol"),
    (dict(atol=float("nan")), "atol"),
    (dict(y0=[float("nan"), 0.0]), "y0"),
    (dict(y0=np.zeros((2, 2))), "y0"),
    (dict(t_eval=[0.0, 2.0, 1.0]), "t_eval"),
    (dict(t_eval=[0.0, 11.0]), "t_eval"),
    (dict(method="euler"), "method"),
    (dict(method="rk4"), "h"),
    (dict(max_steps=0), "max_steps"),
    (dict(tangent=True), "jac"),
    (dict(event=Event.threshold([1.0, 2.0, 3.0])), "event"),
])
def test_validation(kwargs, match):
    args = dict(y0=Y0_K1, t_span=(0.0, 10.0))
    args.update(kwargs)
    y0 = args.pop("y0")
    t_span = args.pop("t_span")
    with pytest.raises(ValueError, match=match):
        integrate(rhs_k1, y0, t_span, THETA_K1, **args)


# ----------------------------------------------------------------------------------------
# events
# ----------------------------------------------------------------------------------------

def test_threshold_event_logistic():
    r, y0 = 0.8, 0.01
    t_star = math.log((1 - y0) / y0) / r  # y(t*) = 1/2
    t_eval = np.linspace(0, 20, 41)
    sol = integrate(rhs_logistic, [y0], (0.0, 20.0), np.array([r, 0.0]), t_eval=t_eval,
                    rtol=1e-12, atol=1e-14, event=Event.threshold([1.0], 0.5, direction=+1))
    assert sol.status == STATUS_EVENT
    assert sol.t_event == pytest.approx(t_star, abs=1e-10)
    assert sol.t_final == sol.t_event
    assert abs(sol.y_final[0] - 0.5) < 1e-11
    assert sol.y_final[0] >= 0.5  # returned on the crossed side
    np.testing.assert_array_equal(sol.t, t_eval[t_eval <= sol.t_event])
    # wrong direction: never fires
    sol = integrate(rhs_logistic, [y0], (0.0, 20.0), np.array([r, 0.0]),
                    event=Event.threshold([1.0], 0.5, direction=-1))
    assert sol.status == STATUS_SUCCESS and math.isnan(sol.t_event)


def test_threshold_event_with_schedule():
    """R crosses 4.5 under an exponential schedule: B(t*) = log((R0 - T)/(4.5 - T))."""
    sched = ExponentialSchedule(20.0, 5.0)
    target = math.log((Y0_K1[1] - T_K1) / (4.5 - T_K1))
    t_star = scipy.optimize.brentq(lambda t: beta_integral(sched, t) - target, 0.0, 50.0,
                                   xtol=1e-14)
    sol = integrate(rhs_k1, Y0_K1, (0.0, 50.0), THETA_K1, schedule=sched, rtol=1e-12,
                    atol=1e-14, event=Event.threshold([0.0, 1.0], 4.5))
    assert sol.status == STATUS_EVENT
    assert sol.t_event == pytest.approx(t_star, abs=1e-9)
    assert sol.y_final[1] == pytest.approx(4.5, abs=1e-12)


def test_converged_event_constant_beta():
    tol = 1e-6
    sol = integrate(rhs_k1, Y0_K1, (0.0, 100.0), THETA_K1, rtol=1e-10, atol=1e-12,
                    event=Event.converged(tol))
    assert sol.status == STATUS_EVENT
    assert np.max(np.abs(k1_rhs_np(sol.y_final, 1.0, T_K1))) < tol
    # analytic last time at which max |f| >= tol
    grid = np.linspace(0, 100, 200001)
    fm = np.max(np.abs(k1_rhs_np(_k1_exact_const(grid), 1.0, T_K1)), axis=-1)
    t_last = grid[np.nonzero(fm >= tol)[0][-1]]
    assert t_last < sol.t_event < t_last + 3.0


def _k1_exact_const(t):
    e = np.exp(-t)
    Q0, R0 = Y0_K1
    return np.stack([T_K1 + 2 * (R0 - T_K1) * e + (Q0 - 2 * R0 + T_K1) * e * e,
                     T_K1 + (R0 - T_K1) * e], axis=-1)


def test_converged_event_waits_for_beta_one():
    sched = ExponentialSchedule(20.0, 5.0)
    sol = integrate(rhs_k1, Y0_K1, (0.0, 1000.0), THETA_K1, schedule=sched, rtol=1e-10,
                    atol=1e-12, event="converged")
    assert sol.status == STATUS_EVENT
    assert sol.t_event >= schedule_end_time(sched, 1e-12)
    assert sol.t_event < schedule_end_time(sched, 1e-12) + 20.0
    # constant beta < 1: never fires
    sol = integrate(rhs_k1, Y0_K1, (0.0, 200.0), THETA_K1, schedule=ConstantSchedule(0.5),
                    event=Event.converged(1e-3))
    assert sol.status == STATUS_SUCCESS


def test_converged_event_beta_min():
    """With beta_min below the final beta the event fires for schedules that settle below 1
    or only approach it; it fires once the state is stationary to tol, not at beta_min."""
    sol = integrate(rhs_k1, Y0_K1, (0.0, 200.0), THETA_K1, schedule=ConstantSchedule(0.5),
                    rtol=1e-10, atol=1e-12, event=Event.converged(1e-6, beta_min=0.5 - 1e-3))
    assert sol.status == STATUS_EVENT
    assert np.max(np.abs(k1_rhs_np(sol.y_final, 0.5, T_K1))) < 1e-6
    sched = ExponentialSchedule(20.0, 5.0)
    sol = integrate(rhs_k1, Y0_K1, (0.0, 1000.0), THETA_K1, schedule=sched, rtol=1e-10,
                    atol=1e-12, event=Event.converged(1e-6, beta_min=1 - 1e-3))
    assert sol.status == STATUS_EVENT
    assert schedule_end_time(sched, 1e-3) <= sol.t_event < schedule_end_time(sched, 1e-12)
    # a raw (code, params) pair with only tol still means "wait for beta = 1"
    sol_raw = integrate(rhs_k1, Y0_K1, (0.0, 1000.0), THETA_K1, schedule=sched, rtol=1e-10,
                        atol=1e-12, event=(1, [1e-6]))
    assert sol_raw.t_event >= schedule_end_time(sched, 1e-12)


def test_converged_event_fires_at_start():
    y_fixed = np.array([T_K1, T_K1])
    sol = integrate(rhs_k1, y_fixed, (0.0, 10.0), THETA_K1, event=Event.converged(1e-10),
                    t_eval=[0.0, 5.0])
    assert sol.status == STATUS_EVENT and sol.t_event == 0.0 and sol.n_steps == 0
    np.testing.assert_array_equal(sol.y, [y_fixed])


def test_raw_event_pair_and_rk4_event():
    r, y0 = 0.8, 0.01
    t_star = math.log((1 - y0) / y0) / r
    sol = integrate(rhs_logistic, [y0], (0.0, 20.0), np.array([r, 0.0]), method="rk4",
                    h=0.01, event=(2, [0.5, 0.0, 1.0]))
    assert sol.status == STATUS_EVENT
    assert sol.t_event == pytest.approx(t_star, abs=1e-7)


# ----------------------------------------------------------------------------------------
# tangent propagator
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", [ConstantSchedule(0.7), LinearSchedule(5.0, 2.0)],
                         ids=["constant", "linear"])
def test_propagator_linear_system_is_expm(schedule):
    rng = np.random.default_rng(3)
    n = 3
    A = rng.normal(size=(n, n)) - 1.0 * np.eye(n)
    t_eval = np.array([0.0, 0.5, 1.3, 3.0, 4.0])
    sol = propagator(rhs_lin, jac_lin, rng.normal(size=n), (0.0, 4.0), A.ravel(),
                     schedule=schedule, t_eval=t_eval, rtol=1e-12, atol=1e-14)
    assert sol.status == STATUS_SUCCESS
    for k, t in enumerate(t_eval):
        Gref = scipy.linalg.expm(A * beta_integral(schedule, t))
        np.testing.assert_allclose(sol.G[k], Gref, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(sol.G_final, sol.G[-1], rtol=0, atol=0)


def test_propagator_nonlinear_vs_finite_differences():
    mu = 1.5
    sched = LinearSchedule(3.0, 2.0)
    y0 = np.array([0.5, -0.3])
    t_eval = np.array([1.0, 2.5, 4.0])
    theta = np.array([mu])
    sol = propagator(rhs_vdp, jac_vdp, y0, (0.0, 4.0), theta, schedule=sched, t_eval=t_eval,
                     rtol=1e-12, atol=1e-14)
    plain = integrate(rhs_vdp, y0, (0.0, 4.0), theta, schedule=sched, t_eval=t_eval,
                      rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sol.y, plain.y, rtol=0, atol=1e-10)
    eps = 1e-5
    G_fd = np.empty((t_eval.size, 2, 2))
    for j in range(2):
        dy = np.zeros(2)
        dy[j] = eps
        yp = integrate(rhs_vdp, y0 + dy, (0.0, 4.0), theta, schedule=sched, t_eval=t_eval,
                       rtol=1e-13, atol=1e-15).y
        ym = integrate(rhs_vdp, y0 - dy, (0.0, 4.0), theta, schedule=sched, t_eval=t_eval,
                       rtol=1e-13, atol=1e-15).y
        G_fd[:, :, j] = (yp - ym) / (2 * eps)
    np.testing.assert_allclose(sol.G, G_fd, rtol=1e-6, atol=1e-7)
    assert sol.G.shape == (3, 2, 2)


def test_propagator_rk4_and_piecewise():
    """G of the K = M = 1 system (linear) across beta jumps: expm(A B(t)),
    A = [[-2, 2], [0, -1]]."""
    sched = PiecewiseConstantSchedule((0.2, 1.0), (1.5,))
    A = np.array([[-2.0, 2.0], [0.0, -1.0]])
    sol = propagator(rhs_k1, jac_k1, Y0_K1, (0.0, 3.0), THETA_K1, schedule=sched,
                     method="rk4", h=0.01)
    Gref = scipy.linalg.expm(A * beta_integral(sched, 3.0))
    np.testing.assert_allclose(sol.G_final, Gref, rtol=1e-8, atol=1e-10)


from solvers.signatures import EVENT_SIG  # noqa: E402


@njit(EVENT_SIG, cache=True)
def _r_reaches(t, y, f, beta, p):
    """R - p[0]: a predicate on the state."""
    return y[1] - p[0]


@njit(EVENT_SIG, cache=True)
def _r_speed_below(t, y, f, beta, p):
    """dR/dt - p[0] beta: a predicate on the field and on beta."""
    return f[1] - p[0] * beta


def test_user_predicate_events_fire_at_the_analytic_time():
    """K = M = 1 at constant beta: R(t) = T + (R0 - T) e^{-beta t}, dR/dt = beta (T - R)."""
    beta = 0.7
    R0 = Y0_K1[1]
    sched = ConstantSchedule(beta)
    sol = integrate(rhs_k1, Y0_K1, (0.0, 50.0), THETA_K1, schedule=sched, rtol=1e-12,
                    atol=1e-14, event=Event.predicate(_r_reaches, [4.5], direction=1))
    assert sol.status == STATUS_EVENT
    t_star = math.log((R0 - T_K1) / (4.5 - T_K1)) / beta
    assert sol.t_event == pytest.approx(t_star, abs=1e-9)
    assert sol.y_final[1] == pytest.approx(4.5, abs=1e-10)
    # dR/dt = c beta  <=>  R = T - c; falls through c beta from above
    c = 2.0
    sol = integrate(rhs_k1, Y0_K1, (0.0, 50.0), THETA_K1, schedule=sched, rtol=1e-12,
                    atol=1e-14, event=Event.predicate(_r_speed_below, [c], direction=-1))
    t_star = math.log((R0 - T_K1) / (-c)) / beta
    assert sol.status == STATUS_EVENT and sol.t_event == pytest.approx(t_star, abs=1e-9)
    # the wrong direction never fires
    sol = integrate(rhs_k1, Y0_K1, (0.0, 50.0), THETA_K1, schedule=sched,
                    event=Event.predicate(_r_reaches, [4.5], direction=-1))
    assert sol.status == STATUS_SUCCESS


def test_user_predicate_event_in_an_ensemble():
    from solvers.ensemble import run_ensemble
    Y0 = np.array([[0.3, 0.1], [0.3, -2.0], [0.3, 6.0]])
    ev = Event.predicate(_r_reaches, [7.0], direction=1)
    run = run_ensemble(rhs_k1, Y0, (0.0, 50.0), THETA_K1, rtol=1e-12, atol=1e-14, event=ev,
                       progress=False)
    expect = np.log((Y0[:, 1] - T_K1) / (7.0 - T_K1))
    np.testing.assert_allclose(run.t_event, expect, atol=1e-9)
    assert np.all(run.status == STATUS_EVENT)


def test_user_predicate_event_bad_input():
    with pytest.raises(ValueError, match="EVENT_SIG"):
        Event.predicate(lambda t, y, f, b, p: 1.0)
    with pytest.raises(ValueError, match="direction"):
        Event.predicate(_r_reaches, [1.0], direction=2)
    with pytest.raises(ValueError, match="predicate"):
        integrate(rhs_k1, Y0_K1, (0.0, 1.0), THETA_K1, event=(3, [0.0, 1.0]))
