"""The exact reduced SGD chain (solvers.sgd) and the ``sgd`` collapse estimator.

* Law: the reduced chain against the d-dimensional simulator (``analysis.montecarlo.simulate``,
  the reference) from one common fixed start, after a fixed number of steps: two-sample
  Kolmogorov-Smirnov tests on seven statistics of (Q, R, w), for both gradient estimators, a
  constant beta < 1 (tempering, fixed weights) and an annealed linear schedule on the
  geometric path with trainable weights, at d = 100 and d = 1000; Bonferroni over the whole
  family at a family-wise level of 1e-3.  The same comparison must reject a wrong chain
  (the reduced chain run with half the dimension, i.e. half the out-of-span noise).
* Collapse fraction: the ``sgd`` and ``montecarlo`` estimators, two-proportion z-test at 1e-3.
* One step, exactly: with d = rank T + M there is no out-of-frame noise, and one engine step
  from given in-frame noise must equal one SGD step in R^d computed here from the sample
  objective by central finite differences (not with the simulator's code).
* Determinism: the same seed gives identical results on 1 and 2 Numba threads, and with an
  executor and chunks.
* Bad input: Adam, eta <= 0, n < 1, d < rank T + M are ValueErrors naming the parameter.
"""

from __future__ import annotations

import io
import json
import math
from concurrent.futures import Executor, Future
from contextlib import redirect_stdout

import numba
import numpy as np
import pytest
from scipy import stats

from analysis.collapse import collapse_probability
from analysis.initial_law import initial_alpha
from analysis.montecarlo import MonteCarloConfig, overlaps, realise_geometry, simulate
from analysis.stats import compare_proportions
from derivations.spec import (
    AnnealingPath,
    ConstantSchedule,
    Initialisation,
    LinearSchedule,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)
from solvers import sgd as R
from solvers.layout import softmax

FAMILY_LEVEL = 1e-3
#: (case, estimator, d) of the law comparison; every one contributes N_STATS tests.
LAW_CASES = [(c, e, d) for c in ("constant", "annealed") for e in ("stl", "reparam")
             for d in (100, 1000)]
N_STATS = 7
PER_TEST_LEVEL = FAMILY_LEVEL / (len(LAW_CASES) * N_STATS)
#: runs per side of a law comparison, SGD steps, step, samples per component
RUNS = {100: 3000, 1000: 1200}
STEPS, ETA, N_SAMPLES = 50, 0.02, 4


def _spec(case: str) -> ProblemSpec:
    if case == "constant":     # beta = 1/2 < 1: the stl out-of-span noise is on (c = -1/2)
        return ProblemSpec(
            target=TargetMixture(gram=[[4.0, -4.0], [-4.0, 4.0]], weights=[0.5, 0.5],
                                 variance=1.0),
            family=VariationalFamily(n_components=2, weights=[0.5, 0.5], variance=1.0),
            path=AnnealingPath("tempering"), schedule=ConstantSchedule(0.5),
            init=Initialisation(sigma_init=1.0))
    return ProblemSpec(             # beta from 1/4 to 1 over the run, geometric path, weights
        target=TargetMixture(gram=[[4.0, 1.0], [1.0, 3.0]], weights=[0.6, 0.4], variance=1.0),
        family=VariationalFamily(n_components=2, weights=[0.5, 0.5], variance=0.5,
                                 train_weights=True),
        path=AnnealingPath("geometric", 2.0), schedule=LinearSchedule(4.0, STEPS * ETA),
        init=Initialisation(sigma_init=1.0))


def _start(spec: ProblemSpec, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Target means in R^d and one fixed start m0 (M, d), with O(1) overlaps."""
    mu, _ = realise_geometry(spec, d, seed=11)
    g = np.random.default_rng(12)
    u = mu[0] / np.linalg.norm(mu[0])
    m0 = 0.5 * g.standard_normal((spec.family.M, d)) / math.sqrt(d)
    m0 += np.array([0.4, -0.25])[:, None] * u
    return mu, m0


def _reduced(spec: ProblemSpec, Q0: np.ndarray, R0: np.ndarray, S: int, d: int,
             estimator: str, seed: int) -> R.SgdRun:
    t = ETA * np.arange(STEPS)
    betas = np.broadcast_to(spec.schedule.beta(t), t.shape).astype(float)
    s0 = spec.path.base_variance if spec.path.kind == "geometric" else 1.0
    M, K = spec.family.M, spec.target.K
    return R.run_sgd(spec.target.T, np.log(spec.target.pi), np.broadcast_to(Q0, (S, M, M)),
                     np.broadcast_to(R0, (S, M, K)), initial_alpha(spec), betas,
                     np.asarray(spec.gamma(betas), dtype=float), eta=ETA, n=N_SAMPLES,
                     s=spec.family.variance, delta=spec.target.variance, sigma0_sq=s0, d=d,
                     estimator=estimator, train_w=spec.family.train_weights, seed=seed)


def _statistics(Q: np.ndarray, Rm: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    st = {"Q11": Q[:, 0, 0], "Q12": Q[:, 0, 1], "Q22": Q[:, 1, 1], "R11": Rm[:, 0, 0],
          "R21": Rm[:, 1, 0], "|m1-m2|^2": Q[:, 0, 0] + Q[:, 1, 1] - 2 * Q[:, 0, 1]}
    st["w1" if np.ptp(w[:, 0]) > 0 else "R22"] = w[:, 0] if np.ptp(w[:, 0]) > 0 else Rm[:, 1, 1]
    assert len(st) == N_STATS
    return st


def _pvalues(a: dict, b: dict) -> dict[str, float]:
    return {k: float(stats.ks_2samp(a[k], b[k]).pvalue) for k in a}


@pytest.fixture(scope="module")
def simulated():
    """The d-dimensional simulator's runs of every law case (the reference), computed once."""
    out = {}
    for case, est, d in LAW_CASES:
        spec = _spec(case)
        mu, m0 = _start(spec, d)
        S = RUNS[d]
        res = simulate(spec, MonteCarloConfig(d=d, seeds=S, eta=ETA, n=N_SAMPLES, estimator=est,
                                              t_end=ETA * STEPS, n_records=2, seed=21),
                       target_means=mu, m0=np.broadcast_to(m0, (S,) + m0.shape).copy())
        assert res.steps == STEPS
        Q0, R0 = overlaps(m0, mu)
        out[case, est, d] = (Q0, R0, _statistics(res.Q[:, -1], res.R[:, -1], res.w[:, -1]))
    return out


@pytest.mark.parametrize("case,estimator,d", LAW_CASES)
def test_law_matches_the_d_dimensional_simulator(simulated, case, estimator, d):
    spec = _spec(case)
    Q0, R0, ref = simulated[case, estimator, d]
    run = _reduced(spec, Q0, R0, RUNS[d], d, estimator, seed=5)
    assert run.active.all()
    w = softmax(run.alpha) if spec.family.train_weights else np.broadcast_to(
        spec.family.w, run.alpha.shape)
    p = _pvalues(ref, _statistics(run.Q, run.R, w))
    assert min(p.values()) > PER_TEST_LEVEL, (
        f"{case}/{estimator}/d={d}: KS p-values {p} (Bonferroni level {PER_TEST_LEVEL:.2g})")


def test_law_comparison_rejects_a_wrong_chain(simulated):
    """Power: the reduced chain in half the dimension (half the out-of-span noise variance)
    must be rejected by the same test, or the comparisons above could not fail."""
    Q0, R0, ref = simulated["constant", "stl", 1000]
    spec = _spec("constant")
    run = _reduced(spec, Q0, R0, RUNS[1000], 500, "stl", seed=5)
    w = np.broadcast_to(spec.family.w, run.alpha.shape)
    p = _pvalues(ref, _statistics(run.Q, run.R, w))
    assert min(p.values()) < PER_TEST_LEVEL, p


@pytest.mark.parametrize("estimator,train,annealed,d,mc_draws", [
    ("stl", False, False, 100, 1000), ("reparam", True, False, 100, 1000),
    ("stl", False, True, 1000, 400)])
def test_collapse_fraction_matches_montecarlo(estimator, train, annealed, d, mc_draws):
    """Constant beta = 1 at d = 100 (both estimators) and a linear schedule from T0 = 4 over
    tau = 10 at d = 1000 (the R^d simulator's cost there limits it to 400 runs)."""
    spec = symmetric_bimodal(9.0, LinearSchedule(4.0, 10.0) if annealed else None,
                             train_weights=train)
    kw = dict(eta=0.05, n=4, estimator=estimator, t_end=20.0)
    mc = collapse_probability(spec, d, "montecarlo", draws=mc_draws, seed=3, **kw)
    sg = collapse_probability(spec, d, "sgd", draws=3000 if d == 100 else 2000, seed=4, **kw)
    cmp = compare_proportions(sg.k, sg.n, mc.k, mc.n)
    assert 0.03 < mc.p < 0.97, mc.p           # the test has power only away from 0 and 1
    assert cmp.p_value > FAMILY_LEVEL, (sg.p, mc.p, cmp)
    assert sg.details["steps"] == 400 and sg.ci[0] <= sg.p <= sg.ci[1]


# ----------------------------------------------------------------------------------------
# one step, exactly, against finite differences of the sample objective
# ----------------------------------------------------------------------------------------

def _sample_objective(spec, beta, mu, m, alpha, m_q, alpha_q, eps, d):
    """``sum_j w_j mean_i phi(x_ji)``, x_ji = m_j + sqrt(s) eps_ji, with q's parameters
    (m_q, alpha_q) inside log q and every normalising constant (DESIGN.md sections 1, 7)."""
    s, delta = spec.family.variance, spec.target.variance
    gamma = float(spec.gamma(beta))
    s0 = spec.path.base_variance if spec.path.kind == "geometric" else 1.0
    w = softmax(alpha)
    lw_q = np.log(softmax(alpha_q))
    x = m[:, None, :] + math.sqrt(s) * eps                          # (M, n, d)

    def log_mix(logw, means, var):
        sq = np.sum((x[:, :, None, :] - means[None, None]) ** 2, axis=-1)   # (M, n, comps)
        return (np.logaddexp.reduce(logw - 0.5 * sq / var, axis=-1)
                - 0.5 * d * math.log(2 * math.pi * var))

    phi = (log_mix(lw_q, m_q, s) - beta * log_mix(np.log(spec.target.pi), mu, delta)
           - gamma * log_mix(np.zeros(1), np.zeros((1, d)), s0))
    return float(np.sum(w * phi.mean(axis=1)))


def _fd_step(spec, beta, eta, mu, m, alpha, eps, estimator):
    """One SGD step in R^d from the gradient of the sample objective (central differences):
    stl holds q's parameters fixed inside log q, reparam differentiates through them."""
    d = m.shape[1]
    train = spec.family.train_weights
    theta = np.concatenate([m.ravel(), alpha])

    def f(th):
        mm, aa = th[:m.size].reshape(m.shape), th[m.size:]
        if not train:
            aa = alpha
        if estimator == "stl":
            return _sample_objective(spec, beta, mu, mm, aa, m, alpha, eps, d)
        return _sample_objective(spec, beta, mu, mm, aa, mm, aa, eps, d)

    h = 1e-5
    grad = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        grad[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    g, ga = grad[:m.size].reshape(m.shape), grad[m.size:]
    return m - eta * g, alpha - eta * ga if train else alpha


@pytest.mark.parametrize("estimator", ["stl", "reparam"])
@pytest.mark.parametrize("path,train", [("tempering", False), ("geometric", True)])
def test_one_step_equals_the_d_dimensional_step(estimator, path, train):
    g = np.random.default_rng(7)
    K, M, n = 3, 2, 3
    A = g.standard_normal((K, K))
    spec = ProblemSpec(
        target=TargetMixture(gram=(A @ A.T + 0.5 * np.eye(K)).tolist(),
                             weights=[0.5, 0.3, 0.2], variance=0.8),
        family=VariationalFamily(n_components=M, weights=[0.6, 0.4], variance=0.5,
                                 train_weights=train),
        path=AnnealingPath(path, 1.5) if path == "geometric" else AnnealingPath(path),
        schedule=ConstantSchedule(0.7), init=Initialisation(sigma_init=1.0))
    T = spec.target.T
    beta, eta = 0.7, 0.05
    E, X0 = R.initial_frame(T, *(a[None] for a in _random_overlaps(g, T, M)))
    X = X0[0].copy()
    D = X.shape[1]
    mu = np.zeros((K, D))
    mu[:, :E.shape[1]] = E                         # R^d with d = D: the frame itself
    alpha = initial_alpha(spec) + (0.3 * g.standard_normal(M) if train else 0.0)
    Z = g.standard_normal((M * n, D))
    m1, a1 = _fd_step(spec, beta, eta, mu, X, alpha, Z.reshape(M, n, D), estimator)
    Xr, ar = X.copy(), alpha.copy()
    R.step_given_noise(E, np.ascontiguousarray(np.diag(T)), np.log(spec.target.pi), Xr, ar,
                       R.rng_states(0, [0])[0], Z, beta=beta, gamma=float(spec.gamma(beta)),
                       eta=eta, n=n, s=spec.family.variance, delta=spec.target.variance,
                       sigma0_sq=1.5 if path == "geometric" else 1.0, d=D,
                       estimator=estimator, train_w=train)
    Q1, R1 = overlaps(m1, mu)
    Qr, Rr = R.frame_overlaps(E, Xr)
    # finite differences with h = 1e-5 on O(1) quantities: error ~ 1e-9; the step moves the
    # state by ~ eta |g| ~ 1e-1, so 1e-6 separates agreement from any formula error
    assert np.max(np.abs(Qr - Q1)) < 1e-6 and np.max(np.abs(Rr - R1)) < 1e-6
    assert np.max(np.abs(ar - a1)) < 1e-6
    assert np.max(np.abs(Q1 - X @ X.T)) > 1e-3        # the step did move


@pytest.mark.parametrize("estimator", ["stl", "reparam"])
@pytest.mark.parametrize("dof", [2, 40])
def test_out_of_frame_noise_has_the_d_dimensional_moments(estimator, dof):
    """d = rank T + M + dof: given the in-frame noise Z, the out-of-frame noise adds
    ``-eta sum C_{k,(j,i)} xi_perp_ji`` to m_k and ``|xi_perp_ji|^2`` to phi, with C fixed by Z.
    The d-dimensional step (finite differences of the sample objective, one extra axis for the
    out-of-frame part) gives C column by column, hence the exact moments
    ``E Q' = Q'_in + eta^2 dof C C^T``, ``Var Q'_kk = 2 dof eta^4 (C C^T)_kk^2``, R' = R'_in, and
    ``E alpha'`` (phi is linear in |xi_perp|^2, whose mean is dof).  The engine's sample moments
    over 4000 draws of the out-of-frame noise must match within 5 standard errors (dof = 2 <
    M min(M, n) takes the singular-Wishart branch, dof = 40 the Bartlett one)."""
    g = np.random.default_rng(8)
    K, M, n = 2, 2, 3
    spec = ProblemSpec(
        target=TargetMixture(gram=[[3.0, 0.5], [0.5, 2.0]], weights=[0.6, 0.4], variance=0.8),
        family=VariationalFamily(n_components=M, weights=[0.5, 0.5], variance=0.5,
                                 train_weights=True),
        path=AnnealingPath("geometric", 1.5), schedule=ConstantSchedule(0.6),
        init=Initialisation(sigma_init=1.0))
    T, beta, eta = spec.target.T, 0.6, 0.1
    E, X0 = R.initial_frame(T, *(a[None] for a in _random_overlaps(g, T, M)))
    X = X0[0]
    D = X.shape[1]
    alpha = np.array([0.2, -0.2])
    Z = g.standard_normal((M * n, D))
    # R^(D+1): the frame plus one axis carrying the out-of-frame part of every sample
    mu1 = np.zeros((K, D + 1))
    mu1[:, :E.shape[1]] = E
    m1 = np.concatenate([X, np.zeros((M, 1))], axis=1)

    def fd(perp):
        eps = np.concatenate([Z.reshape(M, n, D), perp.reshape(M, n, 1)], axis=2)
        return _fd_step(spec, beta, eta, mu1, m1, alpha, eps, estimator)

    m_in, _ = fd(np.zeros(M * n))
    C = np.empty((M, M * n))
    for c in range(M * n):
        C[:, c] = -fd(np.eye(M * n)[c])[0][:, D] / eta
    _, a_mean = fd(np.full(M * n, math.sqrt(dof)))     # |xi_perp|^2 = dof at every sample
    CC = C @ C.T
    Q_mean = m_in[:, :D] @ m_in[:, :D].T + eta ** 2 * dof * CC
    Q_var = 2.0 * dof * eta ** 4 * np.diag(CC) ** 2
    reps = 4000
    states = R.rng_states(1, np.arange(reps))
    Qs, Rs, As = np.empty((reps, M, M)), np.empty((reps, M, K)), np.empty((reps, M))
    for r in range(reps):
        Xr, ar = X.copy(), alpha.copy()
        R.step_given_noise(E, np.ascontiguousarray(np.diag(T)), np.log(spec.target.pi), Xr, ar,
                           states[r], Z, beta=beta, gamma=float(spec.gamma(beta)), eta=eta,
                           n=n, s=0.5, delta=0.8, sigma0_sq=1.5, d=D + dof,
                           estimator=estimator, train_w=True)
        Qs[r], Rs[r] = R.frame_overlaps(E, Xr)
        As[r] = ar
    assert np.max(np.abs(Rs - m_in[:, :D] @ mu1[:, :D].T)) < 1e-6
    se = Qs.std(axis=0) / math.sqrt(reps)
    assert np.all(np.abs(Qs.mean(axis=0) - Q_mean) < 5 * se + 1e-9), (Qs.mean(axis=0), Q_mean)
    assert np.all(np.abs(As.mean(axis=0) - a_mean) < 5 * As.std(axis=0) / math.sqrt(reps))
    # Q'_kk - E = eta^2 (C C^T)_kk (chi^2_dof - dof): the sample variance has standard error
    # Var sqrt((2 + 12 / dof) / reps) (kurtosis of chi^2_dof: 3 + 12 / dof)
    v = np.array([Qs[:, k, k].var() for k in range(M)])
    se_v = Q_var * math.sqrt((2.0 + 12.0 / dof) / reps)
    assert np.all(np.abs(v - Q_var) < 5 * se_v + 1e-12), (v, Q_var)
    assert np.all(eta ** 2 * dof * np.diag(CC) > 1e-4)   # the out-of-frame noise is not nil


def _random_overlaps(g, T, M):
    """A realisable (Q, R): means with random coordinates in span{mu} plus M more axes."""
    E, _, _ = R._target_factor(T)
    mu = np.concatenate([E, np.zeros((T.shape[0], M))], axis=1)
    m = g.standard_normal((M, E.shape[1] + M))
    return m @ m.T, m @ mu.T


# ----------------------------------------------------------------------------------------
# determinism and bad input
# ----------------------------------------------------------------------------------------

class _Inline(Executor):
    """An executor that runs each task at submission (chunking and merging without threads:
    Numba's default threading layer must not be entered from several threads at once)."""

    def submit(self, fn, /, *args, **kwargs):
        f = Future()
        f.set_result(fn(*args, **kwargs))
        return f


def test_same_seed_same_result_for_any_thread_count_and_executor():
    spec = _spec("annealed")
    Q0, R0 = overlaps(*_start(spec, 50)[::-1])
    old = numba.get_num_threads()
    try:
        runs = []
        for th in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(th)
            runs.append(_reduced(spec, Q0, R0, 64, 50, "reparam", seed=9))
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(runs[0].Q, runs[1].Q) and np.array_equal(runs[0].alpha, runs[1].alpha)
    kw = dict(draws=40, seed=2, eta=0.05, n=2, t_end=2.0)
    plain = collapse_probability(symmetric_bimodal(9.0), 200, "sgd", **kw)
    split = collapse_probability(symmetric_bimodal(9.0), 200, "sgd", executor=_Inline(),
                                 chunk=7, **kw)
    assert np.array_equal(plain.outcomes, split.outcomes)
    assert plain.details == split.details


@pytest.mark.parametrize("options,name", [
    ({"optimizer": "adam"}, "optimizer"), ({"eta": 0.0}, "eta"), ({"eta": -0.1}, "eta"),
    ({"eta": 5.0}, "eta"), ({"n": 0}, "n"), ({"estimator": "score"}, "estimator")])
def test_bad_estimator_options(options, name):
    with pytest.raises(ValueError, match=rf"^{name}:") as info:
        collapse_probability(symmetric_bimodal(9.0), 100, "sgd", draws=10, **options)
    if name == "optimizer":
        assert "rotation invariant" in str(info.value)
    if options.get("eta") == 5.0:                 # above the stability bound: refused
        assert "stability bound" in str(info.value)


def test_bad_engine_input():
    spec = symmetric_bimodal(4.0)
    E, X = R.initial_frame(spec.target.T, np.eye(2)[None], np.zeros((1, 2, 2)))
    args = (E, np.diag(spec.target.T).copy(), np.log(spec.target.pi), X, np.zeros((1, 2)),
            R.rng_states(0, [0]), np.ones(1, dtype=bool), np.ones(3), np.zeros(3))
    good = dict(eta=0.1, n=2, s=1.0, delta=1.0, sigma0_sq=1.0, d=10)
    for bad, name in [({"optimizer": "adam"}, "optimizer"), ({"eta": 0.0}, "eta"),
                      ({"n": 0}, "n"), ({"d": 2}, "d"), ({"estimator": "adam"}, "estimator")]:
        with pytest.raises(ValueError, match=rf"^{name}:"):
            R.advance(*args, **{**good, **bad})
    with pytest.raises(ValueError, match=r"^d:"):
        collapse_probability(spec, 2, "sgd", draws=10)


def test_command_line_flags_are_shared_with_montecarlo():
    from analysis.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main("collapse --preset symmetric-bimodal --A 9 --schedule constant --d 1000000 "
                  "--draws 20 --method sgd --eta 0.05 --n 2 --estimator reparam --t-end 1 "
                  "--json".split())
    assert rc == 0
    out = json.loads(buf.getvalue())
    assert out["method"] == "sgd" and out["n"] == 20 and out["d"] == 10 ** 6
    assert out["options"]["eta"] == 0.05 and out["options"]["n"] == 2
    assert out["options"]["estimator"] == "reparam" and out["details"]["steps"] == 20


def test_householder_survives_tiny_and_denormal_columns():
    """Noise coefficients of components far apart are ~1e-160 or denormal; the QR factor must
    stay finite and satisfy R^T R = A^T A (a NaN here once froze runs at d = 1e6).  The
    function carries the step's fastmath flags, so this is the code the step runs."""
    g = np.random.default_rng(3)
    for trial in range(200):
        m, nc = int(g.integers(1, 9)), int(g.integers(1, 5))
        A = g.standard_normal((m, nc)) * 10.0 ** g.integers(-320, 3, size=(1, nc)).astype(float)
        if trial % 3 == 0:
            A[:, 0] = 0.0
        if trial % 5 == 0:
            A[int(g.integers(0, m)), :] = 5e-324
        B = A.copy()
        R._householder_r(B, m, nc, np.empty(m))
        Rm = np.triu(B[:min(m, nc)])
        assert np.all(np.isfinite(B))
        # columns below 1e-290 are dropped by design: absolute error <= 1e-290 * 1e3
        np.testing.assert_allclose(Rm.T @ Rm, A.T @ A, rtol=1e-10, atol=1e-280)


def test_far_apart_components_stay_finite_at_d_1e6():
    """d = 1e6, beta = 0.8: the noise drives |m_k|^2 to several hundred and the components'
    mutual responsibilities to ~1e-300; every run must stay finite."""
    spec = symmetric_bimodal(9.0, ConstantSchedule(0.8), train_weights=True)
    Q0, R0 = np.eye(2)[None].repeat(200, 0), np.zeros((200, 2, 2))
    run = R.run_sgd(spec.target.T, np.log(spec.target.pi), Q0, R0, initial_alpha(spec),
                    np.full(300, 0.8), np.zeros(300), eta=0.02, n=8, s=1.0, delta=1.0,
                    sigma0_sq=1.0, d=10 ** 6, estimator="reparam", train_w=True, seed=1)
    assert run.active.all() and np.all(np.isfinite(run.Q))
    assert np.median(run.Q[:, 0, 0]) > 100.0       # the regime was reached
