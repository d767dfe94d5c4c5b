"""The d-dimensional Monte Carlo (analysis.montecarlo) and the classification (analysis.classify).

* The gradient estimators are unbiased: their mean over many samples equals the exact gradient
  of DESIGN.md section 2 (direct formula), whose Gaussian expectations are computed here by an
  independent tensor Gauss-Hermite rule in the span of the means (not with the estimator).
  Tolerance: 5 standard errors of the batch means, and the same check must reject a
  deliberately wrong gradient.
* The generator's normals have the moments and the distribution of N(0, 1).
* Deterministic mode tracks the reduced ODE (compiled model) from the same start, d in
  {10, 100}, to <= 1e-2.
* Small-eta SGD collapse fraction is statistically consistent with the theory: the reduced ODE
  ensemble from the exact initial law (two-proportion z-test) and, paired, the reduced ODE from
  the very same initial overlaps (McNemar's exact test), both at level 1e-3.
* Reproducibility for a fixed seed (threads, batch composition); the command line.
"""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout

import numpy as np
import pytest
from scipy import stats

from analysis import _mc_kernels as K
from analysis.classify import (
    DIVERGED,
    MEAN_ALIGNMENT,
    NONE,
    VANISHING_WEIGHT,
    assign,
    classify,
    mechanism_counts,
)
from analysis.montecarlo import (
    MonteCarloConfig,
    cross_check,
    default_t_end,
    deterministic_flow,
    initial_logits,
    initial_means,
    overlaps,
    realise_geometry,
    rng_states,
    simulate,
    stochastic_gradient,
)
from analysis.stats import compare_proportions
from derivations.spec import (
    AnnealingPath,
    ConstantSchedule,
    ExponentialSchedule,
    Initialisation,
    LinearSchedule,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)

N_SE = 5.0


def _compile_model(spec):
    try:
        from derivations import compile_model
    except ImportError as exc:  # pragma: no cover - the code generator is another module
        pytest.skip(f"derivations.compile_model not available: {exc}")
    return compile_model(spec.structure)


# ----------------------------------------------------------------------------------------
# exact gradient by independent quadrature (DESIGN.md section 2, direct route)
# ----------------------------------------------------------------------------------------

def _lse(x):
    mx = np.max(x, axis=-1, keepdims=True)
    return (mx + np.log(np.sum(np.exp(x - mx), axis=-1, keepdims=True)))[..., 0]


def exact_gradient(spec, m, mu, alpha, beta, n_gh=24):
    """grad_m F (M, d) and dF/dalpha (M,) with Gauss-Hermite expectations.

    Under x ~ N(m_k, s I) the logits of r and rho depend on x only through its projection on
    span{mu_a, m_j}; with an orthonormal basis B (r, d) of that span, ``B x = B m_k + sqrt(s) z``,
    z ~ N(0, I_r), integrated with a tensor probabilists' Gauss-Hermite rule.  E|x|^2 = Q_kk + d s.
    """
    M, d = m.shape
    s, delta = spec.family.variance, spec.target.variance
    gamma = float(spec.gamma(beta))
    s0 = spec.path.base_variance if spec.path.kind == "geometric" else 1.0
    w = np.exp(alpha - _lse(alpha))
    logw, logpi = np.log(w), np.log(spec.target.pi)
    _, sv, vt = np.linalg.svd(np.concatenate([mu, m]), full_matrices=False)
    B = vt[sv > 1e-10 * sv[0]]
    r = B.shape[0]
    x, wt = np.polynomial.hermite_e.hermegauss(n_gh)
    wt = wt / math.sqrt(2 * math.pi)
    grid = np.stack(np.meshgrid(*([x] * r), indexing="ij"), -1).reshape(-1, r)
    W = np.prod(np.stack(np.meshgrid(*([wt] * r), indexing="ij"), -1).reshape(-1, r), axis=1)
    Bm, Bmu = m @ B.T, mu @ B.T
    Q, T = m @ m.T, mu @ mu.T
    Er, Erho, f = np.zeros((M, mu.shape[0])), np.zeros((M, M)), np.zeros(M)
    for k in range(M):
        y = Bm[k] + math.sqrt(s) * grid
        lq = logw + (y @ Bm.T - 0.5 * np.diag(Q)) / s
        lp = logpi + (y @ Bmu.T - 0.5 * np.diag(T)) / delta
        Lq, Lp = _lse(lq), _lse(lp)
        Erho[k] = W @ np.exp(lq - Lq[:, None])
        Er[k] = W @ np.exp(lp - Lp[:, None])
        ex2 = Q[k, k] + d * s
        f[k] = (W @ Lq - ex2 / (2 * s) - 0.5 * d * math.log(2 * math.pi * s)
                - beta * (W @ Lp - ex2 / (2 * delta) - 0.5 * d * math.log(2 * math.pi * delta))
                - gamma * (-ex2 / (2 * s0) - 0.5 * d * math.log(2 * math.pi * s0)))
    dm = w[:, None] * ((beta / delta) * (Er @ mu - m) - (1.0 / s) * (Erho @ m - m)
                       - (gamma / s0) * m)
    return -dm, w * (f - w @ f), Erho


def _general_problem(train_weights=True):
    """K = 2 non-antipodal modes, M = 2, unequal weights, geometric path: every term is on."""
    rng = np.random.default_rng(11)
    mu = rng.standard_normal((2, 5)) * 0.7
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[0.35, 0.65], variance=0.8),
        family=VariationalFamily(2, weights=[0.3, 0.7], variance=0.6,
                                 train_weights=train_weights),
        path=AnnealingPath("geometric", 2.0), schedule=ConstantSchedule(0.7))
    m = rng.standard_normal((2, 5)) * 0.8
    return spec, m, mu


def test_exact_gradient_reference_converges():
    spec, m, mu = _general_problem()
    a = initial_logits(spec)
    g1, ga1, _ = exact_gradient(spec, m, mu, a, 0.7, n_gh=16)
    g2, ga2, _ = exact_gradient(spec, m, mu, a, 0.7, n_gh=24)
    assert np.max(np.abs(g1 - g2)) < 1e-7 and np.max(np.abs(ga1 - ga2)) < 1e-7


@pytest.mark.parametrize("estimator", ["stl", "reparam"])
def test_estimators_are_unbiased(estimator):
    spec, m, mu = _general_problem()
    beta = 0.7
    alpha = initial_logits(spec) + np.array([0.2, -0.2])
    g_ex, ga_ex, Erho = exact_gradient(spec, m, mu, alpha, beta)
    rng = np.random.default_rng(5)
    batches, n = 30, 2000
    G = np.empty((batches, 2, 5))
    GA = np.empty((batches, 2))
    for b in range(batches):
        G[b], GA[b] = stochastic_gradient(spec, m, mu, rng.standard_normal((2, n, 5)), beta,
                                          alpha=alpha, estimator=estimator)
    se_g = G.std(axis=0, ddof=1) / math.sqrt(batches)
    se_a = GA.std(axis=0, ddof=1) / math.sqrt(batches)
    z_g = np.abs(G.mean(axis=0) - g_ex) / se_g
    z_a = np.abs(GA.mean(axis=0) - ga_ex) / se_a
    assert np.max(z_g) < N_SE, (estimator, z_g)
    assert np.max(z_a) < N_SE, (estimator, z_a)
    # the check has power: a gradient without the entropy (repulsion) term is rejected
    w = np.exp(alpha - _lse(alpha))
    wrong = g_ex - w[:, None] * (1.0 / spec.family.variance) * (Erho @ m - m)
    assert np.max(np.abs(G.mean(axis=0) - wrong) / se_g) > 10 * N_SE


def _sample_objective(spec, eps, beta, m_path, a_path, m_q, a_q, mu):
    """The n-sample reparameterised objective sum_k w_k mean_i phi(x_ki), x_ki = m_k + sqrt(s) eps_ki,
    phi = log q - beta log p - gamma log p0; (m_path, a_path) enter through the samples and the
    mixture weights, (m_q, a_q) only inside log q (so freezing them gives the STL objective)."""
    s, delta = spec.family.variance, spec.target.variance
    s0 = spec.path.base_variance
    gamma = spec.gamma(beta)
    d = m_path.shape[1]
    pi = np.asarray(spec.target.weights)

    def log_normal(x, c, v):
        return -0.5 * np.sum((x - c) ** 2, axis=-1) / v - 0.5 * d * math.log(2 * math.pi * v)

    lw_q = a_q - _lse(a_q)
    w_path = np.exp(a_path - _lse(a_path))
    total = 0.0
    for k in range(m_path.shape[0]):
        x = m_path[k] + math.sqrt(s) * eps[k]
        log_q = _lse(np.stack([lw_q[j] + log_normal(x, m_q[j], s)
                               for j in range(len(lw_q))], axis=-1))
        log_p = _lse(np.stack([math.log(pi[a]) + log_normal(x, mu[a], delta)
                               for a in range(len(pi))], axis=-1))
        phi = log_q - beta * log_p - gamma * log_normal(x, 0.0, s0)
        total += w_path[k] * phi.mean()
    return total


def _central_difference(f, x, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("estimator", ["stl", "reparam"])
def test_estimators_are_gradients_of_the_sample_objective(estimator):
    """At fixed noise, "reparam" is the full pathwise gradient of the sample objective and
    "stl" the gradient with q's parameters frozen inside log q: finite differences of an
    independent log-density implementation, for means and logits."""
    spec, m, mu = _general_problem(train_weights=True)
    beta = 0.7
    alpha = initial_logits(spec) + np.array([0.2, -0.2])
    eps = np.random.default_rng(3).standard_normal((2, 7, 5))
    frozen = estimator == "stl"

    def f_m(mm):
        return _sample_objective(spec, eps, beta, mm, alpha, m if frozen else mm, alpha, mu)

    def f_a(aa):
        return _sample_objective(spec, eps, beta, m, aa, m, alpha if frozen else aa, mu)

    g, ga = stochastic_gradient(spec, m, mu, eps, beta, alpha=alpha, estimator=estimator)
    g_fd, ga_fd = _central_difference(f_m, m), _central_difference(f_a, alpha)
    assert np.max(np.abs(g - g_fd)) < 1e-7 * max(1.0, np.max(np.abs(g_fd))), (g, g_fd)
    assert np.max(np.abs(ga - ga_fd)) < 1e-7 * max(1.0, np.max(np.abs(ga_fd))), (ga, ga_fd)
    # the two estimators differ at fixed noise (the score term), so each check has power
    other = "reparam" if frozen else "stl"
    g_o, _ = stochastic_gradient(spec, m, mu, eps, beta, alpha=alpha, estimator=other)
    assert np.max(np.abs(g_o - g_fd)) > 1e-4


def test_stochastic_gradient_bad_input():
    spec, m, mu = _general_problem()
    eps = np.zeros((2, 3, 5))
    with pytest.raises(ValueError, match="estimator"):
        stochastic_gradient(spec, m, mu, eps, 0.7, estimator="score")
    with pytest.raises(ValueError, match="eps"):
        stochastic_gradient(spec, m, mu, np.zeros((2, 3, 4)), 0.7)
    with pytest.raises(ValueError, match="mu"):
        stochastic_gradient(spec, m, mu[:, :4], eps, 0.7)


# ----------------------------------------------------------------------------------------
# the Gaussian generator
# ----------------------------------------------------------------------------------------

def test_generator_normals():
    st = rng_states(123, [0])[0]
    z = np.empty(2 ** 20)
    K.draw_normals(st[0], st[1], z, np.empty(2 * K.LANES))
    N = z.size
    assert abs(z.mean()) < N_SE / math.sqrt(N)
    assert abs(z.var() - 1.0) < N_SE * math.sqrt(2.0 / N)
    assert abs(np.mean(z ** 3)) < N_SE * math.sqrt(15.0 / N)
    assert abs(np.mean(z ** 4) - 3.0) < N_SE * math.sqrt(96.0 / N)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # neighbouring normals (cos/sin halves of a round, successive rounds) are uncorrelated
    for lag in (1, K.LANES, 2 * K.LANES):
        assert abs(np.mean(z[lag:] * z[:-lag])) < N_SE / math.sqrt(N)
    # the tails: P(|z| > 3) = 0.0027
    p3 = np.mean(np.abs(z) > 3.0)
    assert abs(p3 - 0.0026998) < N_SE * math.sqrt(0.0027 / N)


def test_rng_states_are_distinct_and_reproducible():
    a = rng_states(7, [0, 1, 2])
    b = rng_states(7, [2])
    assert a.shape == (3, 2, K.LANES) and a.dtype == np.uint64
    assert np.array_equal(a[2], b[0])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(rng_states(8, [0]), a[:1])


# ----------------------------------------------------------------------------------------
# geometry and initialisation
# ----------------------------------------------------------------------------------------

def test_geometry_realises_gram_and_centres():
    T = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, -1.0], [0.0, -1.0, 2.0]])
    spec = ProblemSpec(
        target=TargetMixture(T, [0.2, 0.3, 0.5]), family=VariationalFamily(2),
        init=Initialisation(0.5, centre_gram=[[1.0, 0.2], [0.2, 0.5]],
                            centre_overlaps=[[0.5, 0.1, 0.0], [0.0, 0.3, 0.2]]))
    mu, c = realise_geometry(spec, 12, seed=4)
    assert mu.shape == (3, 12) and c.shape == (2, 12)
    assert np.allclose(mu @ mu.T, T, atol=1e-12)
    assert np.allclose(c @ c.T, spec.init.centre_gram, atol=1e-12)
    assert np.allclose(c @ mu.T, spec.init.centre_overlaps, atol=1e-12)
    mu2, c2 = realise_geometry(spec, 12, seed=4, target_means=mu)
    assert np.allclose(mu2, mu) and np.allclose(c2 @ mu.T, spec.init.centre_overlaps)
    m0 = initial_means(spec, 12, np.arange(4000), seed=1, centres=c)
    dev = m0 - c
    assert np.max(np.abs(dev.mean(axis=0))) < N_SE * 0.5 / math.sqrt(12 * 4000)
    assert abs(dev.var() - 0.25 / 12) < N_SE * (0.25 / 12) * math.sqrt(2 / dev.size)
    with pytest.raises(ValueError, match="d"):
        realise_geometry(spec, 4)


# ----------------------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------------------

def test_classify_mechanisms():
    A = 9.0
    T = np.array([[A, -A], [-A, A]])
    mu = np.array([[3.0, 0.0], [-3.0, 0.0]])

    def stats_of(m):
        return overlaps(np.array(m, dtype=float), mu)

    Qs, Rs = stats_of([[2.9, 0.1], [-3.1, 0.0]])        # one component per mode
    Qc, Rc = stats_of([[2.9, 0.1], [3.1, 0.0]])          # both on mode 1
    Q = np.stack([Qs, Qc, Qs, Qs])
    R = np.stack([Rs, Rc, Rs, Rs])
    w = np.array([[0.5, 0.5], [0.5, 0.5], [1 - 1e-5, 1e-5], [0.5, 0.5]])
    Q[3, 0, 0] = np.nan
    collapsed, mech = classify(Q, R, T, w, weight_threshold=1e-3)
    assert collapsed.tolist() == [False, True, True, False]
    assert mech.tolist() == [NONE, MEAN_ALIGNMENT, VANISHING_WEIGHT, DIVERGED]
    assert assign(Qs, Rs, T).tolist() == [0, 1]
    assert assign(Qc, Rc, T).tolist() == [0, 0]
    # threshold 0 keeps every component; w=None means fixed weights
    c0, m0 = classify(Q[:3], R[:3], T, w[:3], weight_threshold=0.0)
    assert c0.tolist() == [False, True, False]
    cn, mn = classify(Q[:2], R[:2], T)
    assert cn.tolist() == [False, True]
    # leading axes are kept
    c2, m2 = classify(np.broadcast_to(Qc, (3, 4, 2, 2)), np.broadcast_to(Rc, (3, 4, 2, 2)), T)
    assert c2.shape == (3, 4) and c2.all()
    assert mechanism_counts(mech) == {"none": 1, "mean_alignment": 1, "vanishing_weight": 1,
                                      "diverged": 1}
    with pytest.raises(ValueError, match="R"):
        classify(Q, R[..., :1], T)
    with pytest.raises(ValueError, match="weight_threshold"):
        classify(Q, R, T, w, weight_threshold=-1)


# ----------------------------------------------------------------------------------------
# deterministic mode vs reduced ODE
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [10, 100])
def test_deterministic_mode_tracks_reduced_ode(d):
    spec = symmetric_bimodal(9.0, ExponentialSchedule(5.0, 2.0))
    model = _compile_model(spec)
    mu, _ = realise_geometry(spec, d, seed=0)
    m0 = initial_means(spec, d, [1], seed=0)[0]
    cc = cross_check(spec, m0, mu, 8.0, n_points=17, n_samples=4096, dt=0.1, model=model)
    assert cc.max_deviation <= 1e-2, cc.deviation
    # the trajectories actually move (a flow that stays put would pass trivially)
    assert np.max(np.abs(cc.R_ode[-1] - cc.R_ode[0])) > 3.0
    assert np.allclose(cc.Q_mc[0], m0 @ m0.T) and np.allclose(cc.Q_ode[0], cc.Q_mc[0])


def test_deterministic_mode_trainable_weights_geometric_path():
    spec = ProblemSpec(
        target=TargetMixture([[4.0, -1.0], [-1.0, 3.0]], [0.4, 0.6]),
        family=VariationalFamily(2, [0.5, 0.5], train_weights=True),
        path=AnnealingPath("geometric", 2.0), schedule=LinearSchedule(3.0, 3.0))
    model = _compile_model(spec)
    d = 10
    mu, _ = realise_geometry(spec, d, seed=2)
    m0 = initial_means(spec, d, [0], seed=2)[0] + 0.3 * mu[0]
    cc = cross_check(spec, m0, mu, 6.0, n_points=13, n_samples=4096, dt=0.05, model=model)
    assert cc.max_deviation <= 1e-2, cc.deviation
    assert np.max(np.abs(cc.w_ode[-1] - cc.w_ode[0])) > 1e-2      # the weights do move


def test_deterministic_flow_gaussian_samples_are_close():
    """The plain i.i.d. antithetic sample set is an unbiased but noisier quadrature."""
    spec = symmetric_bimodal(4.0, ConstantSchedule(1.0))
    mu, _ = realise_geometry(spec, 10, seed=0)
    m0 = initial_means(spec, 10, [0], seed=0)[0] + 0.5 * mu[0] / 2
    a = deterministic_flow(spec, m0, mu, 2.0, t_eval=[0.0, 2.0], n_samples=2 ** 14, dt=0.1,
                           samples="gaussian")
    b = deterministic_flow(spec, m0, mu, 2.0, t_eval=[0.0, 2.0], n_samples=2 ** 12, dt=0.1)
    assert np.max(np.abs(a.R - b.R)) < 0.1
    with pytest.raises(ValueError, match="samples"):
        deterministic_flow(spec, m0, mu, 1.0, samples="sobol")


# ----------------------------------------------------------------------------------------
# SGD against the theory
# ----------------------------------------------------------------------------------------

def test_small_eta_sgd_consistent_with_theory():
    from analysis.initial_law import sample_initial_states
    from analysis.montecarlo import ode_outcomes
    from solvers.ensemble import solve_ensemble

    spec = symmetric_bimodal(9.0, ConstantSchedule(1.0))
    model = _compile_model(spec)
    d, t_end = 10, 30.0
    res = simulate(spec, MonteCarloConfig(d=d, seeds=300, eta=0.01, n=8, t_end=t_end, seed=1),
                   progress=False)
    assert res.n_diverged == 0
    f = res.fraction
    # theory: reduced-ODE ensemble from the exact finite-d initial law (independent draws)
    Y0 = sample_initial_states(spec, d, 1000, 12345)
    ens = solve_ensemble(spec, model, Y0, t_end, progress=False)
    c_th, _ = classify(ens.Q_final, ens.R_final, spec.target.T, ens.w_final)
    cmp = compare_proportions(f.k, f.n, int(c_th.sum()), c_th.size)
    assert 0.05 < cmp.second.p < 0.5                  # an informative (non-trivial) case
    assert cmp.p_value > 1e-3, cmp.to_dict()
    assert not compare_proportions(f.k, f.n, int(0.6 * f.n), f.n).consistent(1e-3)
    # paired: gradient flow from the very same initial overlaps; McNemar exact test
    c_pair, _ = ode_outcomes(spec, res.Q0, res.R0, t_end, model=model)
    b = int(np.sum(res.collapsed & ~c_pair))
    c = int(np.sum(~res.collapsed & c_pair))
    p_mcnemar = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert p_mcnemar > 1e-3, (b, c)
    assert np.mean(res.collapsed == c_pair) > 0.8


# ----------------------------------------------------------------------------------------
# reproducibility, options, validation
# ----------------------------------------------------------------------------------------

def _small(**kw):
    base = dict(d=12, seeds=6, eta=0.05, n=4, t_end=3.0, seed=3, n_records=7)
    base.update(kw)
    return MonteCarloConfig(**base)


def test_reproducible_for_fixed_seed_threads_and_batches():
    import numba

    spec = symmetric_bimodal(9.0, ExponentialSchedule(4.0, 1.0))
    a = simulate(spec, _small(), progress=False)
    b = simulate(spec, _small(), progress=False)
    assert np.array_equal(a.Q, b.Q) and np.array_equal(a.R, b.R)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        c = simulate(spec, _small(), progress=False)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(a.Q, c.Q)
    part = simulate(spec, _small(seeds=2, run_offset=4), progress=False)
    assert np.array_equal(part.Q, a.Q[4:6]) and np.array_equal(part.run_ids, [4, 5])
    other = simulate(spec, _small(seed=4), progress=False)
    assert not np.allclose(other.Q[:, -1], a.Q[:, -1])
    assert a.t[0] == 0.0 and a.t[-1] == pytest.approx(3.0) and a.t.size == 7
    assert np.allclose(a.beta, spec.schedule.beta(a.t))
    # records are the statistics of the d-dimensional vectors
    m0 = initial_means(spec, 12, a.run_ids, 3, realise_geometry(spec, 12, 3)[1])
    assert np.allclose(a.Q[:, 0], np.einsum("skd,sld->skl", m0, m0))


class _SerialExecutor:
    """Minimal Executor: runs each task at once (Numba's parallel kernels are not re-entrant
    from several Python threads with the workqueue layer; process pools work)."""

    def submit(self, fn, *args, **kwargs):
        from concurrent.futures import Future
        f = Future()
        f.set_result(fn(*args, **kwargs))
        return f


def test_executor_chunks_give_the_same_runs():
    spec = symmetric_bimodal(9.0, ExponentialSchedule(4.0, 1.0))
    whole = simulate(spec, _small(seeds=7), progress=False)
    split = simulate(spec, _small(seeds=7), executor=_SerialExecutor(), chunk_size=3)
    assert np.array_equal(whole.Q, split.Q) and np.array_equal(whole.run_ids, split.run_ids)
    assert split.fraction == whole.fraction and split.t_end == whole.t_end


@pytest.mark.parametrize("estimator,optimizer,train", [
    ("reparam", "sgd", False), ("stl", "adam", False), ("reparam", "adam", True),
    ("stl", "sgd", True)])
def test_options_run(estimator, optimizer, train):
    spec = symmetric_bimodal(4.0, LinearSchedule(3.0, 2.0), train_weights=train,
                             path=AnnealingPath("geometric", 2.0))
    res = simulate(spec, _small(estimator=estimator, optimizer=optimizer), progress=False,
                   keep_means=True)
    assert res.final_means.shape == (6, 2, 12)
    assert np.all(np.isfinite(res.Q)) and res.n_diverged == 0
    Qf, Rf = overlaps(res.final_means, res.target_means)
    assert np.allclose(Qf, res.Q[:, -1]) and np.allclose(Rf, res.R[:, -1])
    assert np.allclose(res.w.sum(axis=-1), 1.0)
    if train:
        assert np.max(np.abs(res.w[:, -1] - 0.5)) > 1e-4
    summ = res.summary()
    assert summ["n"] == 6 and summ["simulation"]["n"] == 4


def test_divergence_is_reported():
    spec = symmetric_bimodal(9.0, ConstantSchedule(1.0))
    # a step far above the stability bound is refused unless forced ...
    with pytest.raises(ValueError, match="eta"):
        simulate(spec, _small(eta=50.0, t_end=50.0 * 400), progress=False)
    # ... and, forced, diverges: every run is reported as diverged, none counted
    res = simulate(spec, _small(eta=50.0, t_end=50.0 * 400, force=True), progress=False)
    assert res.n_diverged == 6 and res.fraction.n == 0


def test_default_t_end_rule():
    tol = 1e-3
    spec = symmetric_bimodal(9.0, ExponentialSchedule(20.0, 100.0))
    relax = 25.0 * 1.0 / (1.0 * 0.5)
    assert default_t_end(spec) == pytest.approx(100.0 * math.log(19.0 * (1 - tol) / tol) + relax)
    lin = symmetric_bimodal(9.0, LinearSchedule(4.0, 10.0))
    assert default_t_end(lin) == pytest.approx(10.0 * (1 - tol / 0.75) + relax)
    assert default_t_end(symmetric_bimodal(9.0)) == pytest.approx(relax)
    res = simulate(symmetric_bimodal(9.0), MonteCarloConfig(d=8, seeds=8, eta=0.1, n=2,
                                                            relax_time=4.0, max_extensions=2),
                   progress=False)
    assert res.t_end >= 4.0 - 1e-9 and res.t_end_rule.startswith("default")
    assert res.changed_final_window == 0 or res.extensions == 2


@pytest.mark.parametrize("kw,name", [
    (dict(d=0), "d"), (dict(seeds=0), "seeds"), (dict(eta=0.0), "eta"), (dict(eta=-1), "eta"),
    (dict(n=0), "n"), (dict(estimator="score"), "estimator"),
    (dict(optimizer="lbfgs"), "optimizer"),
    (dict(t_end=-1.0), "t_end"), (dict(n_records=1), "n_records"), (dict(seed=-1), "seed"),
    (dict(beta_tol=1.5), "beta_tol"), (dict(adam_b1=1.0), "adam_b1")])
def test_config_validation(kw, name):
    base = dict(d=5, seeds=2)
    base.update(kw)
    with pytest.raises(ValueError, match=name):
        MonteCarloConfig(**base)


# ----------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------

def _cli(argv):
    from analysis.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


def test_cli_json(tmp_path):
    out = tmp_path / "mc"
    dotted = tmp_path / "run_eta0.05"
    code, text = _cli(["montecarlo", "--preset", "symmetric-bimodal", "--A", "9", "--d", "8",
                       "--seeds", "10", "--eta", "0.05", "--n", "8", "--estimator", "stl",
                       "--optimizer", "sgd", "--schedule", "exponential", "--T0", "20",
                       "--tau", "100", "--t-end", "2", "--seed", "3", "--json",
                       "--no-progress", "--out", str(out)])
    assert code == 0
    data = json.loads(text)
    for key in ("p", "ci", "k", "n", "d", "params"):
        assert key in data
    assert data["n"] == 10 and data["d"] == 8 and data["simulation"]["n"] == 8
    assert data["k"] == round(data["p"] * data["n"])
    assert 0 <= data["ci"][0] <= data["p"] <= data["ci"][1] <= 1
    spec = ProblemSpec.from_dict(data["params"])
    assert spec == symmetric_bimodal(9.0, ExponentialSchedule(20.0, 100.0))
    saved = json.loads((tmp_path / "mc.json").read_text())
    assert saved["p"] == data["p"]
    arrays = np.load(tmp_path / "mc.npz")
    assert arrays["Q"].shape[:1] == (10,) and arrays["collapsed"].sum() == data["k"]
    code, _ = _cli(["montecarlo", "--d", "4", "--seeds", "2", "--eta", "0.05", "--t-end", "0.2",
                    "--no-progress", "--out", str(dotted)])
    assert (tmp_path / "run_eta0.05.json").exists() and (tmp_path / "run_eta0.05.npz").exists()
    # the same seed gives the same answer; the text output works too
    code2, text2 = _cli(["montecarlo", "--d", "8", "--seeds", "10", "--eta", "0.05",
                         "--t-end", "2", "--seed", "3", "--no-progress", "--T0", "20",
                         "--tau", "100"])
    assert code2 == 0 and f"({data['k']}/10" in text2


def test_cli_compare_ode():
    code, text = _cli(["montecarlo", "--d", "6", "--seeds", "8", "--eta", "0.05", "--n", "4",
                       "--schedule", "constant", "--t-end", "3", "--json", "--no-progress",
                       "--compare-ode"])
    data = json.loads(text)
    assert data["ode"]["n"] == 8 and 0 <= data["ode"]["agreement"] <= 1


@pytest.mark.parametrize("argv,name", [(["--d", "0"], "d"), (["--seeds", "0"], "seeds"),
                                       (["--eta", "0"], "eta"), (["--n", "0"], "n")])
def test_cli_bad_input(argv, name, capsys):
    """Exit status 2 and one line naming the parameter (argparse's or the guarded runner's)."""
    try:
        code, _ = _cli(["montecarlo", "--no-progress", "--t-end", "1"] + argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and name in err, (code, err)


def test_small_eta_sgd_mean_tracks_the_reduced_ode_under_annealing():
    """SGD time is eta * steps and the schedule is read at that time: from one initial
    condition, the mean over seeds of R(t) of small-step SGD follows the reduced ODE through
    the annealing (t = 2..10 while beta rises from 1/5), within 5 standard errors plus the
    O(eta) discretisation and noise bias."""
    from solvers.ensemble import solve
    spec = symmetric_bimodal(9.0, ExponentialSchedule(5.0, 5.0))
    model = _compile_model(spec)
    d, S = 100, 16
    mu, centres = realise_geometry(spec, d, seed=3)
    m0 = initial_means(spec, d, [0], seed=3, centres=centres)[0] + 0.15 * mu[0]
    t_end = 10.0
    res = simulate(spec, MonteCarloConfig(d=d, seeds=S, eta=0.002, n=8, t_end=t_end,
                                          n_records=11, seed=4),
                   target_means=mu, m0=np.broadcast_to(m0, (S,) + m0.shape), progress=False)
    Q0, R0 = overlaps(m0[None], mu)
    tr = solve(spec, model, {"Q": Q0[0], "R": R0[0]}, t_end, res.t, rtol=1e-10, atol=1e-12)
    mean, se = res.R.mean(axis=0), res.R.std(axis=0, ddof=1) / math.sqrt(S)
    window = res.t >= 2.0
    dev = np.abs(mean[window] - tr.R[window])
    assert np.all(dev <= 5 * se[window] + 0.05), (dev.max(), se[window].max())
    # the comparison has power: the ODE run with a time scale off by 20% is rejected
    tr_slow = solve(spec, model, {"Q": Q0[0], "R": R0[0]}, t_end / 1.2, res.t[window] / 1.2,
                    rtol=1e-10, atol=1e-12)
    assert np.any(np.abs(mean[window] - tr_slow.R) > 5 * se[window] + 0.05)
    # and the flow really moves through the window
    assert np.max(np.abs(tr.R[-1] - tr.R[res.t.searchsorted(2.0)])) > 1.0
