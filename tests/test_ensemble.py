"""solvers.ensemble: parallel ensembles, progress bar, state packing, the spec-level API."""

import io
import math
import sys
from types import SimpleNamespace

import numba
import numpy as np
import pytest
import scipy.integrate
from numba import njit

from derivations.spec import (
    ConstantSchedule,
    ExponentialSchedule,
    LinearSchedule,
    ModelStructure,
    PiecewiseConstantSchedule,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    state_names,
    symmetric_bimodal,
)
from solvers.ensemble import (
    pack_state,
    run_ensemble,
    solve,
    solve_ensemble,
    state_layout,
    unpack_state,
)
from solvers.integrate import STATUS_EVENT, STATUS_SUCCESS, Event, integrate
from solvers.signatures import JAC_SIG, RHS_SIG

# ----------------------------------------------------------------------------------------
# hand-written models
# ----------------------------------------------------------------------------------------

@njit(RHS_SIG, cache=True)
def rhs_k1(y, beta, theta, out):
    """K = M = 1 tempering flow in (Q_1_1, R_1_1); theta = (T_1_1, pi_1, Delta, s, w_1)."""
    b = beta / theta[2]
    out[0] = 2.0 * b * (y[1] - y[0])
    out[1] = b * (theta[0] - y[1])


@njit(JAC_SIG, cache=True)
def jac_k1(y, beta, theta, J):
    b = beta / theta[2]
    J[0, 0] = -2.0 * b
    J[0, 1] = 2.0 * b
    J[1, 0] = 0.0
    J[1, 1] = -b


@njit(RHS_SIG, cache=True)
def rhs_decay(y, beta, theta, out):
    """y_i' = -beta (i + 1) y_i / 4: a stand-in with the K = 1, M = 2, trained-weights layout."""
    for i in range(y.shape[0]):
        out[i] = -beta * (i + 1) * y[i] / 4.0


@njit(RHS_SIG, cache=True)
def rhs_vdp(y, beta, theta, out):
    """beta times a Van der Pol field (nonlinear, so member cost varies with y0)."""
    out[0] = beta * y[1]
    out[1] = beta * (theta[0] * (1.0 - y[0] * y[0]) * y[1] - y[0])


def k1_spec(schedule=None):
    T = 9.0
    return ProblemSpec(target=TargetMixture(gram=[[T]], weights=[1.0], variance=1.0),
                       family=VariationalFamily(n_components=1),
                       schedule=schedule if schedule is not None else ConstantSchedule(1.0))


def k1_model():
    st = ModelStructure(1, 1)
    return SimpleNamespace(rhs=rhs_k1, jac=jac_k1, structure=st, n_state=2,
                           state_names=state_names(1, 1, False))


def k1_exact_const_beta(beta, t, Q0, R0, T=9.0):
    e = np.exp(-beta * t)
    return T + 2 * (R0 - T) * e + (Q0 - 2 * R0 + T) * e * e, T + (R0 - T) * e


# ----------------------------------------------------------------------------------------
# compiled ensemble core
# ----------------------------------------------------------------------------------------

def _vdp_inputs(N=37):
    rng = np.random.default_rng(7)
    return rng.normal(size=(N, 2)) * 2.0, np.array([1.7]), LinearSchedule(4.0, 3.0)


def test_ensemble_equals_single_runs_bitwise():
    Y0, theta, sched = _vdp_inputs()
    t_eval = np.linspace(0.0, 6.0, 13)
    run = run_ensemble(rhs_vdp, Y0, (0.0, 6.0), theta, schedule=sched, t_eval=t_eval,
                       rtol=1e-9, atol=1e-11, progress=False)
    assert run.Z_traj.shape == (Y0.shape[0], 13, 2) and run.Z_final.shape == Y0.shape
    for i in range(Y0.shape[0]):
        sol = integrate(rhs_vdp, Y0[i], (0.0, 6.0), theta, schedule=sched, t_eval=t_eval,
                        rtol=1e-9, atol=1e-11)
        assert np.array_equal(run.Z_final[i], sol.y_final)
        assert np.array_equal(run.Z_traj[i], sol.y)
        assert run.n_steps[i] == sol.n_steps and run.n_rhs[i] == sol.n_rhs
    assert np.all(run.status == STATUS_SUCCESS)


def test_ensemble_independent_of_threads_and_chunks():
    Y0, theta, sched = _vdp_inputs(101)
    kw = dict(schedule=sched, t_eval=np.linspace(0, 8, 5), rtol=1e-8, atol=1e-10,
              progress=False)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        r1 = run_ensemble(rhs_vdp, Y0, (0.0, 8.0), theta, **kw)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        r2 = run_ensemble(rhs_vdp, Y0, (0.0, 8.0), theta, **kw)
        r3 = run_ensemble(rhs_vdp, Y0, (0.0, 8.0), theta, chunk_size=7, **kw)
    finally:
        numba.set_num_threads(old)
    for r in (r2, r3):
        assert np.array_equal(r1.Z_final, r.Z_final)
        assert np.array_equal(r1.Z_traj, r.Z_traj)
        assert np.array_equal(r1.n_steps, r.n_steps)


def test_ensemble_per_member_theta_and_events():
    """theta (N, p): each member has its own T; the event R = T/2 fires at t = log 2 (R0 = 0)."""
    N = 6
    T = np.linspace(1.0, 6.0, N)
    theta = np.stack([T, np.ones(N), np.ones(N), np.ones(N), np.ones(N)], axis=1)
    Y0 = np.zeros((N, 2))
    run = run_ensemble(rhs_k1, Y0, (0.0, 10.0), theta, rtol=1e-12, atol=1e-14,
                       event=Event.threshold([0.0, 1.0], 0.0), progress=False)
    assert np.all(run.status == STATUS_SUCCESS)
    np.testing.assert_allclose(run.Z_final[:, 1], T * (1 - math.exp(-10.0)), rtol=1e-10)
    # now an event at c . y = 1.5 (crossed by members with T > 1.5 only)
    run = run_ensemble(rhs_k1, Y0, (0.0, 10.0), theta, rtol=1e-12, atol=1e-14,
                       event=Event.threshold([0.0, 1.0], 1.5, direction=1), progress=False)
    crossed = T * (1 - math.exp(-10.0)) > 1.5
    assert np.array_equal(run.status == STATUS_EVENT, crossed)
    np.testing.assert_allclose(run.t_event[crossed], -np.log(1 - 1.5 / T[crossed]), atol=1e-10)
    assert np.all(np.isnan(run.t_event[~crossed]))


def test_ensemble_tangent():
    Y0 = np.array([[0.3, 0.1], [1.0, -2.0]])
    theta = np.array([9.0, 1.0, 1.0, 1.0, 1.0])
    run = run_ensemble(rhs_k1, Y0, (0.0, 2.0), theta, jac=jac_k1, tangent=True,
                       rtol=1e-12, atol=1e-14, progress=False)
    import scipy.linalg
    G = scipy.linalg.expm(np.array([[-2.0, 2.0], [0.0, -1.0]]) * 2.0)
    for i in range(2):
        np.testing.assert_allclose(run.Z_final[i, 2:].reshape(2, 2), G, rtol=1e-9, atol=1e-12)


def test_progress_bar(monkeypatch):
    class TTY(io.StringIO):
        def isatty(self):
            return True

    Y0, theta, sched = _vdp_inputs(40)
    fake = TTY()
    monkeypatch.setattr(sys, "stderr", fake)
    r1 = run_ensemble(rhs_vdp, Y0, (0.0, 2.0), theta, schedule=sched, progress=True,
                      chunk_size=10, desc="vdp-members")
    assert "vdp-members" in fake.getvalue() and "40/40" in fake.getvalue()
    # no bar when progress=False, nor when stderr is not a terminal
    fake2 = TTY()
    monkeypatch.setattr(sys, "stderr", fake2)
    r2 = run_ensemble(rhs_vdp, Y0, (0.0, 2.0), theta, schedule=sched, progress=False)
    assert fake2.getvalue() == ""
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    run_ensemble(rhs_vdp, Y0, (0.0, 2.0), theta, schedule=sched, progress=True)
    assert plain.getvalue() == ""
    assert np.array_equal(r1.Z_final, r2.Z_final)


@pytest.mark.parametrize("kwargs, match", [
    (dict(Y0=np.zeros(2)), "Y0"),
    (dict(Y0=np.full((3, 2), np.nan)), "Y0"),
    (dict(theta=np.ones((2, 1))), "theta"),
    (dict(t_span=(0.0, -1.0)), "t_end"),
    (dict(rtol=-1e-3), "rtol"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_run_ensemble_validation(kwargs, match):
    args = dict(Y0=np.zeros((3, 2)), theta=np.array([1.0]), t_span=(0.0, 1.0))
    args.update(kwargs)
    Y0, theta, t_span = args.pop("Y0"), args.pop("theta"), args.pop("t_span")
    with pytest.raises(ValueError, match=match):
        run_ensemble(rhs_vdp, Y0, t_span, theta, progress=False, **args)


# ----------------------------------------------------------------------------------------
# packing
# ----------------------------------------------------------------------------------------

def test_pack_unpack_roundtrip():
    names = state_names(3, 2, True)
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 2, 2))
    Q = A @ np.swapaxes(A, -1, -2)
    R = rng.normal(size=(4, 2, 3))
    alpha = rng.normal(size=(4, 2))
    y = pack_state(names, Q, R, alpha)
    assert y.shape == (4, len(names))
    # by name
    assert y[1, names.index("Q_1_2")] == Q[1, 0, 1]
    assert y[2, names.index("R_2_3")] == R[2, 1, 2]
    assert y[3, names.index("alpha_2")] == alpha[3, 1]
    Q2, R2, a2 = unpack_state(names, y)
    np.testing.assert_array_equal(Q2, Q)
    np.testing.assert_array_equal(R2, R)
    np.testing.assert_array_equal(a2, alpha)
    lay = state_layout(names)
    assert (lay.M, lay.K, lay.n, lay.train_weights) == (2, 3, len(names), True)
    # fixed weights: no alpha
    names_fw = state_names(2, 2, False)
    assert names_fw == ["Q_1_1", "Q_1_2", "Q_2_2", "R_1_1", "R_1_2", "R_2_1", "R_2_2"]
    y = pack_state(names_fw, [[1.0, 0.01], [0.01, 1.0]], [[0.1, -0.1], [-0.05, 0.05]])
    np.testing.assert_array_equal(y, [1.0, 0.01, 1.0, 0.1, -0.1, -0.05, 0.05])
    assert unpack_state(names_fw, y)[2] is None


@pytest.mark.parametrize("args, match", [
    (dict(Q=[[1.0, 0.5], [0.4, 1.0]]), "Q: must be symmetric"),
    (dict(Q=np.eye(3)), "Q: must have shape"),
    (dict(R=np.zeros((2, 3))), "R: must have shape"),
    (dict(R=[[np.nan, 0.0], [0.0, 0.0]]), "R: must be finite"),
    (dict(alpha=[0.0, 0.0]), "alpha"),
])
def test_pack_validation(args, match):
    kw = dict(Q=np.eye(2), R=np.zeros((2, 2)), alpha=None)
    kw.update(args)
    with pytest.raises(ValueError, match=match):
        pack_state(state_names(2, 2, False), kw["Q"], kw["R"], kw["alpha"])
    with pytest.raises(ValueError, match="names"):
        state_layout(["Q_1_1", "X_1"])


# ----------------------------------------------------------------------------------------
# spec-level API with a hand-written K = M = 1 model
# ----------------------------------------------------------------------------------------

def test_solve_k1_closed_form():
    spec = k1_spec(ConstantSchedule(0.6))
    model = k1_model()
    tr = solve(spec, model, {"Q": [[0.3]], "R": [[0.1]]}, 8.0, rtol=1e-11, atol=1e-13)
    assert tr.t.shape == (201,) and tr.t[-1] == 8.0
    Q, R = k1_exact_const_beta(0.6, tr.t, 0.3, 0.1)
    np.testing.assert_allclose(tr.Q[:, 0, 0], Q, atol=1e-9)
    np.testing.assert_allclose(tr.R[:, 0, 0], R, atol=1e-9)
    assert tr.Q.shape == (201, 1, 1) and tr.R.shape == (201, 1, 1) and tr.w.shape == (201, 1)
    np.testing.assert_array_equal(tr.w, 1.0)
    np.testing.assert_array_equal(tr.beta, 0.6)
    assert tr.alpha is None and tr.status == STATUS_SUCCESS and tr.success
    assert tr.state_names == ("Q_1_1", "R_1_1")
    np.testing.assert_array_equal(tr.y_final, tr.y[-1])
    # tangent propagator through the spec API
    tr = solve(spec, model, [0.3, 0.1], 2.0, [2.0], tangent=True, rtol=1e-12, atol=1e-14)
    import scipy.linalg
    G = scipy.linalg.expm(np.array([[-2.0, 2.0], [0.0, -1.0]]) * 0.6 * 2.0)
    np.testing.assert_allclose(tr.G_final, G, rtol=1e-9)
    # RK4
    tr = solve(spec, model, [0.3, 0.1], 8.0, method="rk4", h=0.01)
    np.testing.assert_allclose(tr.Q_final[0, 0], k1_exact_const_beta(0.6, 8.0, 0.3, 0.1)[0],
                               atol=1e-8)


def test_generated_k1_model_matches_closed_form():
    """The generated (SymPy -> Numba) K = M = 1 model under constant beta relaxes exactly as
    R(t) = T + (R0 - T) e^{-beta t}, Q(t) = T + 2 (R0 - T) e^{-beta t} + (Q0 - 2 R0 + T) e^{-2 beta t}."""
    from derivations.codegen import compile_model
    spec = k1_spec(ConstantSchedule(0.6))
    model = compile_model(spec.structure)
    tr = solve(spec, model, {"Q": [[0.3]], "R": [[0.1]]}, 8.0, rtol=1e-12, atol=1e-14)
    Q, R = k1_exact_const_beta(0.6, tr.t, 0.3, 0.1)
    np.testing.assert_allclose(tr.Q[:, 0, 0], Q, rtol=0, atol=1e-10)
    np.testing.assert_allclose(tr.R[:, 0, 0], R, rtol=0, atol=1e-10)


def test_solve_event_truncates_trajectory():
    spec = k1_spec(PiecewiseConstantSchedule((0.2, 1.0), (3.0,)))
    tr = solve(spec, k1_model(), [0.0, 0.0], 50.0, event="converged", rtol=1e-10, atol=1e-12)
    assert tr.status == STATUS_EVENT and tr.t_event >= 3.0
    assert np.all(tr.t <= tr.t_event) and tr.t.size < 201
    assert tr.beta[-1] == 1.0 and tr.beta[0] == 0.2


def test_solve_ensemble_k1():
    spec = k1_spec(ConstantSchedule(1.0))
    rng = np.random.default_rng(5)
    N = 50
    Q0 = rng.uniform(0.5, 2.0, N)
    R0 = rng.uniform(-2.0, 2.0, N)     # realisable: R0^2 < 4 < Q0 T = 9 Q0
    Y0 = {"Q": Q0[:, None, None], "R": R0[:, None, None]}
    t_eval = np.linspace(0, 3, 7)
    res = solve_ensemble(spec, k1_model(), Y0, 3.0, t_eval, rtol=1e-11, atol=1e-13,
                         progress=False)
    assert res.N == N and res.Q.shape == (N, 7, 1, 1) and res.w.shape == (N, 7, 1)
    Qe, Re = k1_exact_const_beta(1.0, t_eval[None, :], Q0[:, None], R0[:, None])
    np.testing.assert_allclose(res.Q[..., 0, 0], Qe, atol=1e-9)
    np.testing.assert_allclose(res.R[..., 0, 0], Re, atol=1e-9)
    np.testing.assert_array_equal(res.Q_final, res.Q[:, -1])
    assert np.all(res.success) and res.wall_time > 0 and res.messages[0].startswith("success")
    # final states only
    res2 = solve_ensemble(spec, k1_model(), Y0, 3.0, rtol=1e-11, atol=1e-13, progress=False)
    assert res2.y is None and res2.Q is None
    np.testing.assert_array_equal(res2.y_final, res.y_final)


def test_solve_trained_weights_layout():
    """K = 1, M = 2 with trained weights: w = softmax(alpha(t)),
    alpha_k(t) = alpha_k(0) e^{-c_k t}."""
    st = ModelStructure(1, 2, train_weights=True)
    names = state_names(1, 2, True)
    model = SimpleNamespace(rhs=rhs_decay, jac=None, structure=st, n_state=len(names),
                            state_names=names)
    spec = ProblemSpec(target=TargetMixture(gram=[[4.0]], weights=[1.0]),
                       family=VariationalFamily(2, train_weights=True))
    Q0 = np.array([[2.0, 0.5], [0.5, 1.0]])
    R0 = np.array([[0.3], [-0.2]])
    a0 = np.array([1.0, -1.0])
    tr = solve(spec, model, {"Q": Q0, "R": R0, "alpha": a0}, 2.0, [0.0, 1.0, 2.0],
               rtol=1e-12, atol=1e-14)
    rates = (np.arange(len(names)) + 1) / 4.0
    y_exact = pack_state(names, Q0, R0, a0)[None, :] * np.exp(-np.outer(tr.t, rates))
    Qe, Re, ae = unpack_state(names, y_exact)
    np.testing.assert_allclose(tr.Q, Qe, rtol=1e-10)
    np.testing.assert_allclose(tr.Q, np.swapaxes(tr.Q, -1, -2), rtol=0, atol=0)
    np.testing.assert_allclose(tr.R, Re, rtol=1e-10)
    np.testing.assert_allclose(tr.alpha, ae, rtol=1e-10)
    w = np.exp(ae) / np.exp(ae).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(tr.w, w, rtol=1e-10)
    np.testing.assert_allclose(tr.w.sum(axis=-1), 1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(y0=[0.1, 0.2, 0.3]), "y0"),
    (dict(y0=[np.nan, 0.2]), "y0"),
    (dict(y0={"Q": [[1.0]]}), "y0"),
    (dict(rtol=0.0), "rtol"),
    (dict(t_end=-1.0), "t_end"),
    (dict(t_end=math.inf), "t_end"),
    (dict(t_eval=[0.0, 20.0]), "t_eval"),
    (dict(method="bdf"), "method"),
    (dict(n_points=1), "n_points"),
])
def test_solve_validation(kwargs, match):
    args = dict(y0=[0.1, 0.2], t_end=5.0)
    args.update(kwargs)
    y0, t_end = args.pop("y0"), args.pop("t_end")
    with pytest.raises(ValueError, match=match):
        solve(k1_spec(), k1_model(), y0, t_end, **args)


def test_solve_rejects_wrong_model():
    spec = symmetric_bimodal(9.0)
    with pytest.raises(ValueError, match="model"):
        solve(spec, k1_model(), np.zeros(7), 1.0)
    with pytest.raises(ValueError, match="spec"):
        solve("not a spec", k1_model(), np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="Y0"):
        solve_ensemble(k1_spec(), k1_model(), np.zeros(2), 1.0, progress=False)


# ----------------------------------------------------------------------------------------
# the real compiled model (derivations.compile_model)
# ----------------------------------------------------------------------------------------

def _real_model():
    try:
        from derivations import compile_model
    except ImportError:  # pragma: no cover - before the code generator exists
        pytest.skip("derivations.compile_model not available")
    spec = symmetric_bimodal(9.0, ExponentialSchedule(20, 100))
    return spec, compile_model(spec.structure)


Q_START = np.array([[1.0, 0.01], [0.01, 1.0]])
R_START = np.array([[0.1, -0.1], [-0.05, 0.05]])


def _scipy_reference(spec, model, y0, t_eval, method):
    theta = spec.theta()
    out = np.empty(model.n_state)

    def f(t, y):
        model.rhs(np.ascontiguousarray(y), float(spec.schedule.beta(t)), theta, out)
        return out.copy()

    ref = scipy.integrate.solve_ivp(f, (0.0, t_eval[-1]), y0, method=method, t_eval=t_eval,
                                    rtol=1e-11, atol=1e-13)
    assert ref.success
    return ref.y.T


def test_real_model_symmetric_bimodal_against_scipy():
    spec, model = _real_model()
    y0 = pack_state(model, Q_START, R_START)
    t_eval = np.array([50.0, 500.0])
    tr = solve(spec, model, y0, 500.0, t_eval, rtol=1e-11, atol=1e-13)
    assert tr.status == STATUS_SUCCESS
    ref = _scipy_reference(spec, model, y0, t_eval, "DOP853")
    np.testing.assert_allclose(tr.y, ref, rtol=0, atol=1e-8)
    assert tr.Q.shape == (2, 2, 2) and tr.R.shape == (2, 2, 2)
    np.testing.assert_array_equal(tr.w, 0.5)
    # the schedule is evaluated inside the compiled stepper: beta(50) = 1/(1 + 19 e^{-1/2})
    assert tr.beta[0] == pytest.approx(1.0 / (1.0 + 19.0 * math.exp(-0.5)), rel=1e-15)


def test_real_model_ensemble_matches_solve():
    spec, model = _real_model()
    rng = np.random.default_rng(11)
    N = 8
    Q = np.broadcast_to(Q_START, (N, 2, 2)).copy()
    u = 0.05 * rng.normal(size=(N, 2))
    R = R_START[None] + np.stack([u, -u], axis=-1)   # mu_2 = -mu_1: realisable iff R_k2 = -R_k1
    Y0 = pack_state(model, Q, R)
    res = solve_ensemble(spec, model, Y0, 300.0, [50.0, 300.0], rtol=1e-9, atol=1e-11,
                         progress=False)
    assert np.all(res.status == STATUS_SUCCESS)
    for i in (0, N - 1):
        tr = solve(spec, model, Y0[i], 300.0, [50.0, 300.0], rtol=1e-9, atol=1e-11)
        assert np.array_equal(tr.y, res.y[i])
    ref = _scipy_reference(spec, model, Y0[0], np.array([50.0, 300.0]), "Radau")
    np.testing.assert_allclose(res.y[0], ref, rtol=0, atol=1e-6)


def test_real_model_tangent_propagator_vs_finite_differences():
    spec, model = _real_model()
    y0 = pack_state(model, Q_START, R_START)
    t_end = 40.0
    tr = solve(spec, model, y0, t_end, [t_end], tangent=True, rtol=1e-11, atol=1e-13)
    assert tr.status == STATUS_SUCCESS and tr.G.shape == (1, 7, 7)
    eps = 1e-6
    G_fd = np.empty((7, 7))
    for j in range(7):
        dy = np.zeros(7)
        dy[j] = eps
        yp = solve(spec, model, y0 + dy, t_end, [t_end], rtol=1e-12, atol=1e-14).y_final
        ym = solve(spec, model, y0 - dy, t_end, [t_end], rtol=1e-12, atol=1e-14).y_final
        G_fd[:, j] = (yp - ym) / (2 * eps)
    np.testing.assert_allclose(tr.G_final, G_fd, rtol=0, atol=1e-5 * np.max(np.abs(G_fd)))
