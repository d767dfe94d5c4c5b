"""The R^d simulator beyond the fixed-variance reverse KL (analysis.mc_objectives).

* The forward-KL estimator (grad_m F, dF/dalpha, dF/dlog s) is unbiased: the mean of many
  independent estimates agrees, within 5 standard errors of the batch means, with the exact
  expectations under p_beta computed here independently (tensor Gauss-Hermite in the span of
  the means, plus the exact out-of-span part), on both paths (inflation, mixture); the same
  check rejects a deliberately wrong gradient.
* The fixed point q = p_beta of the forward KL (M = K, w = pi, m = mu, s = Delta / beta on the
  inflation path) is stationary: the mean estimate is within 5 SE of zero.
* The reverse KL's dF/dlog s estimate is unbiased against an independent finite difference in
  log s of a common-random-numbers Monte Carlo of F written here in R^d.
* Tied variances, K = M = 1 tempering: s -> Delta / beta.
* The new kernel runs the reverse KL exactly as before: with adiabatic variances at beta = 1
  (s = Delta = the fixed s) it follows the original kernel's trajectories run for run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.mc_objectives import forward_gradient, reverse_gradient_tied
from analysis.montecarlo import MonteCarloConfig, simulate, stochastic_gradient
from derivations.spec import (
    AnnealingPath,
    ConstantSchedule,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)

N_SE = 5.0


def _lse(x, axis=-1):
    mx = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(mx, axis) + np.log(np.sum(np.exp(x - mx), axis=axis))


def _gh(r, n):
    x, wt = np.polynomial.hermite_e.hermegauss(n)
    wt = wt / math.sqrt(2 * math.pi)
    grid = np.stack(np.meshgrid(*([x] * r), indexing="ij"), -1).reshape(-1, r)
    W = np.prod(np.stack(np.meshgrid(*([wt] * r), indexing="ij"), -1).reshape(-1, r), axis=1)
    return grid, W


def exact_forward(spec, m, mu, alpha, beta, s, n_gh=20):
    """Exact grad_m F (M, d), dF/dalpha (M,), dF/dlog s of the forward KL under p_beta.

    p_beta is a mixture of Gaussians N(c, sd^2 I) (inflation: c = mu_a, sd^2 = Delta/beta,
    weight pi_a; mixture: also c = 0, sd^2 = sigma0^2 with weight 1 - beta).  With B an
    orthonormal basis (r, d) of span{mu_a, m_j}: rho depends on x only through B x, the
    out-of-span part of x - m_k has mean 0, and E|P_perp x|^2 = sd^2 (d - r).
    """
    M, d = m.shape
    K = mu.shape[0]
    delta = spec.target.variance
    pi = spec.target.pi
    if spec.path.kind == "inflation":
        comps = [(mu[a], delta / beta, pi[a]) for a in range(K)]
    else:
        comps = [(mu[a], delta, beta * pi[a]) for a in range(K)]
        comps.append((np.zeros(d), spec.path.base_variance, 1.0 - beta))
    w = np.exp(alpha - _lse(alpha))
    _, sv, vt = np.linalg.svd(np.concatenate([mu, m]), full_matrices=False)
    B = vt[sv > 1e-10 * sv[0]]
    r = B.shape[0]
    grid, W = _gh(r, n_gh)
    Bm = m @ B.T
    g = np.zeros((M, d))
    erho = np.zeros(M)
    e2 = 0.0
    for c, v, p in comps:
        y = c @ B.T + math.sqrt(v) * grid                                  # (G, r)
        lq = np.log(w) - 0.5 * np.sum((y[:, None, :] - Bm[None]) ** 2, -1) / s
        rho = np.exp(lq - _lse(lq)[:, None])                               # (G, M)
        er = W @ rho
        ey = (W[:, None] * rho).T @ y                                      # (M, r) E[rho y]
        g -= p * (ey @ B - er[:, None] * m) / s
        erho += p * er
        dist = np.sum((y[:, None, :] - Bm[None]) ** 2, -1)                # (G, M)
        e2 += p * (W @ np.sum(rho * dist, 1) + v * (d - r))
    return g, -(erho - w), 0.5 * d - 0.5 * e2 / s


def _forward_problem(path):
    rng = np.random.default_rng(5)
    d = 6
    mu = rng.standard_normal((2, d)) * 1.2
    kw = dict(path=AnnealingPath("inflation")) if path == "inflation" else \
        dict(path=AnnealingPath("mixture", 2.5))
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[0.7, 0.3], variance=0.8),
        family=VariationalFamily(2, weights=[0.4, 0.6], variance=1.3, train_weights=True),
        schedule=ConstantSchedule(0.6), objective="forward-kl", **kw)
    m = rng.standard_normal((2, d))
    return spec, m, mu


def _batches(fn, n_batches, rng):
    out = [fn(rng) for _ in range(n_batches)]
    flat = [np.concatenate([np.ravel(g), np.ravel(ga), [gl]]) for g, ga, gl in out]
    X = np.array(flat)
    return X.mean(0), X.std(0, ddof=1) / math.sqrt(n_batches)


@pytest.mark.parametrize("path", ["inflation", "mixture"])
def test_forward_estimator_unbiased(path):
    spec, m, mu = _forward_problem(path)
    beta, s = 0.6, 1.3
    alpha = np.log(spec.family.w)
    d = m.shape[1]
    N = 2048

    def one(rng):
        return forward_gradient(spec, m, mu, rng.standard_normal((N, d)),
                                rng.standard_normal(N), beta, s, alpha)

    mean, se = _batches(one, 200, np.random.default_rng(1))
    g, ga, gl = exact_forward(spec, m, mu, alpha, beta, s)
    ref = np.concatenate([g.ravel(), ga, [gl]])
    z = np.abs(mean - ref) / se
    assert np.all(z < N_SE), (path, z.max(), mean, ref)
    # power: the gradient without the responsibilities (rho = w) is rejected
    ex = np.sum(spec.target.pi[:, None] * mu, 0) * (1.0 if path == "inflation" else beta)
    wrong = ref.copy()
    wrong[:g.size] = (-(spec.family.w[:, None] / s) * (ex - m)).ravel()
    assert np.any(np.abs(mean - wrong) / se > 20)


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_forward_fixed_point_q_equals_p_is_stationary(beta):
    """M = K, w = pi, m = mu, s = Delta/beta: q = p_beta (inflation path) is a zero of grad F."""
    rng = np.random.default_rng(2)
    d = 20
    mu = rng.standard_normal((2, d)) * 0.6                 # overlapping modes: rho is not 0/1
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[0.65, 0.35], variance=1.0),
        family=VariationalFamily(2, weights=[0.65, 0.35], variance=1.0 / beta,
                                 train_weights=True),
        path=AnnealingPath("inflation"), schedule=ConstantSchedule(beta),
        objective="forward-kl")
    alpha = np.log(spec.family.w)
    N = 2048

    def one(r):
        return forward_gradient(spec, mu, mu, r.standard_normal((N, d)),
                                r.standard_normal(N), beta, None, alpha)

    mean, se = _batches(one, 100, np.random.default_rng(3))
    assert np.all(np.abs(mean) < N_SE * se), np.max(np.abs(mean) / se)
    # and away from it (s too small) the variance gradient is far from zero
    g, ga, gl = forward_gradient(spec, mu, mu, rng.standard_normal((N, d)),
                                 rng.standard_normal(N), beta, 0.5 / beta, alpha)
    assert gl < -5.0


def _crn_F(spec, m, mu, eps, logs, beta):
    """Reverse KL F = E_q[log q - beta log p] by common random numbers, straight in R^d."""
    s = math.exp(logs)
    delta = spec.target.variance
    w = spec.family.w
    M, n, d = eps.shape
    x = m[:, None, :] + math.sqrt(s) * eps                                  # (M, n, d)

    def logmix(x, centres, weights, var):
        sq = np.sum((x[..., None, :] - centres) ** 2, -1)                   # (..., C)
        return _lse(np.log(weights) - 0.5 * sq / var) - 0.5 * d * math.log(2 * math.pi * var)

    phi = logmix(x, m, w, s) - beta * logmix(x, mu, spec.target.pi, delta)
    return float(np.sum(w * phi.mean(1)))


def test_reverse_tied_logs_gradient_unbiased():
    rng = np.random.default_rng(7)
    d = 6
    mu = rng.standard_normal((2, d))
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[0.4, 0.6], variance=0.9),
        family=VariationalFamily(2, weights=[0.45, 0.55], variance=0.7, variances="tied"),
        schedule=ConstantSchedule(0.8))
    m = rng.standard_normal((2, d))
    s, beta, n = 0.7, 0.8, 4096
    r2 = np.random.default_rng(8)
    est, ref = [], []
    h = 1e-4
    for _ in range(40):
        eps = r2.standard_normal((2, n, d))
        est.append(reverse_gradient_tied(spec, m, mu, eps, beta, s)[2])
        eps2 = r2.standard_normal((2, n, d))                  # independent reference samples
        ref.append((_crn_F(spec, m, mu, eps2, math.log(s) + h, beta)
                    - _crn_F(spec, m, mu, eps2, math.log(s) - h, beta)) / (2 * h))
    est, ref = np.array(est), np.array(ref)
    se = math.sqrt(est.var(ddof=1) / est.size + ref.var(ddof=1) / ref.size)
    assert abs(est.mean() - ref.mean()) < N_SE * se, (est.mean(), ref.mean(), se)
    assert abs(est.mean()) > 10 * se                          # a non-trivial gradient
    # the means' gradient is the stl estimator of the original kernel, to rounding
    eps = r2.standard_normal((2, 8, d))
    g_new = reverse_gradient_tied(spec, m, mu, eps, beta, s)[0]
    fixed = spec.replace(family=VariationalFamily(2, spec.family.weights, s))
    g_old = stochastic_gradient(fixed, m, mu, eps, beta)[0]
    np.testing.assert_allclose(g_new, g_old, rtol=1e-10, atol=1e-12)


def test_tied_variance_single_gaussian_tempering():
    """K = M = 1, p^beta = N(mu, Delta/beta I): s -> Delta/beta.  With u = log(s beta/Delta),
    d u/dt = -(1/d) dF/dlog s = (1/2)(1 - e^u) exactly, solved here in closed form
    (u - log(1 - e^u) = t/2 + const for u < 0).  Tolerance: 5 standard errors of the mean of
    the runs' final log s, plus twice the gradient flow's own remainder |u(t_end)|."""
    from scipy.optimize import brentq

    d, beta, delta, s_init = 50, 0.5, 1.5, 0.6
    mu = np.zeros((1, d))
    mu[0, 0] = 2.0
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[1.0], variance=delta),
        family=VariationalFamily(1, variance=s_init, variances="tied"),
        schedule=ConstantSchedule(beta))
    t_end = 40.0
    res = simulate(spec, MonteCarloConfig(d=d, seeds=8, seed=4, t_end=t_end, n=4),
                   progress=False)
    target = math.log(delta / beta)
    u0 = math.log(s_init) - target
    c = u0 - math.log(1 - math.exp(u0))
    u_flow = brentq(lambda u: u - math.log(1 - math.exp(u)) - t_end / 2 - c, u0, -1e-15)
    u = np.log(res.s_final)
    se = u.std(ddof=1) / math.sqrt(u.size)
    assert abs(u.mean() - target) < N_SE * se + 2 * abs(u_flow), (u, target, u_flow)
    # s(t) recorded from s(0) = s_init, and the ratio to s_final ends at 1
    np.testing.assert_allclose(res.s[:, 0], s_init)
    np.testing.assert_allclose(res.s_ratio[:, -1], 1.0)
    # halfway along the relaxation (t ~ 2 log 2 for the mean log-distance) s is still moving
    i = int(np.searchsorted(res.t, 1.0))
    assert np.all(np.abs(np.log(res.s[:, i]) - target) > 0.1 * abs(math.log(s_init) - target))


def test_new_kernel_reproduces_the_reverse_kl():
    """Adiabatic s at beta = 1 on tempering is 1/(1/Delta) = Delta = the fixed s: the kernel of
    analysis.mc_objectives then follows the original kernel's runs (same noise) to rounding."""
    spec = symmetric_bimodal(9.0)
    cfg = MonteCarloConfig(d=30, seeds=6, seed=9, t_end=20.0, n=4)
    old = simulate(spec, cfg, progress=False)
    ad = spec.replace(family=VariationalFamily(2, spec.family.weights, 1.0,
                                               variances="adiabatic"))
    new = simulate(ad, cfg, progress=False)
    np.testing.assert_allclose(new.Q, old.Q, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(new.R, old.R, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(new.collapsed, old.collapsed)
    np.testing.assert_allclose(new.s, 1.0)


def test_refusals_name_the_parameter():
    spec = symmetric_bimodal(9.0).replace(objective="forward-kl",
                                          path=AnnealingPath("inflation"))
    with pytest.raises(ValueError, match="estimator"):
        simulate(spec, MonteCarloConfig(d=10, seeds=2, estimator="reparam"), progress=False)
    with pytest.raises(ValueError, match="estimator"):
        simulate(spec.replace(family=VariationalFamily(2, variances="tied")),
                 MonteCarloConfig(d=10, seeds=2, estimator="reparam"), progress=False)


def test_forward_kl_mixture_path_adiabatic_variance_is_the_tied_optimum():
    """Mixture path ``p_beta = beta N(mu, Delta I) + (1 - beta) N(0, sigma0^2 I)``, K = M = 1.
    The forward KL's single Gaussian fits the mean and per-coordinate variance of p_beta:
    m = beta mu and ``s = E|x - m|^2 / d = D_beta + beta (1 - beta) |mu|^2 / d`` with
    ``D_beta = beta Delta + (1 - beta) sigma0^2``.  The adiabatic simulation holds s at D_beta
    (the d -> infinity optimum) and must find m = beta mu; the tied one must find the finite-d
    optimum.  Tolerances: 5 standard errors of the runs' means, plus the remaining relaxation
    e^{-t/s} of the means (s = 1.5, t = 40)."""
    d, beta, delta, sig0, A = 10, 0.5, 1.0, 2.0, 4.0
    mu = np.zeros((1, d))
    mu[0, 0] = math.sqrt(A)
    base = ProblemSpec(target=TargetMixture.from_means(mu, weights=[1.0], variance=delta),
                       family=VariationalFamily(1, variance=1.0, variances="adiabatic"),
                       schedule=ConstantSchedule(beta), objective="forward-kl",
                       path=AnnealingPath("mixture", sig0))
    cfg = MonteCarloConfig(d=d, seeds=12, seed=3, t_end=40.0, n=32)
    d_beta = beta * delta + (1 - beta) * sig0
    adia = simulate(base, cfg, progress=False)
    np.testing.assert_allclose(adia.s, d_beta, rtol=1e-12)
    R = adia.R[:, -1, 0, 0]
    assert abs(R.mean() - beta * A) < N_SE * R.std(ddof=1) / math.sqrt(R.size) + 1e-6, R
    tied = simulate(base.replace(family=VariationalFamily(1, variance=1.0, variances="tied")),
                    cfg, progress=False)
    s_fin = tied.s_final
    want = d_beta + beta * (1 - beta) * A / d
    se = s_fin.std(ddof=1) / math.sqrt(s_fin.size)
    assert abs(s_fin.mean() - want) < N_SE * se, (s_fin, want)
    # the test resolves the O(1/d) shift: the d -> infinity value is excluded
    assert abs(d_beta - want) > 2 * N_SE * se


def _cli(argv):
    import io
    import json
    from contextlib import redirect_stdout

    from analysis.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(argv)
    return code, json.loads(buf.getvalue())


def test_cli_forward_kl_and_tied_variances():
    code, data = _cli(["montecarlo", "--objective", "forward-kl", "--d", "20", "--seeds", "4",
                       "--t-end", "3", "--seed", "1", "--json", "--no-progress"])
    assert code == 0 and data["objective"] == "forward-kl" and data["n"] == 4
    assert data["params"]["path"]["kind"] == "inflation"
    code, data = _cli(["montecarlo", "--trainable-variances", "--K", "1", "--M", "1",
                       "--schedule", "constant", "--beta", "0.5", "--d", "20", "--seeds", "3",
                       "--t-end", "30", "--json", "--no-progress"])
    assert code == 0 and data["variances"] == "tied"
    assert abs(data["s_final"]["median"] - 2.0) < 1e-3          # Delta / beta
    code, data = _cli(["collapse", "--method", "montecarlo", "--objective", "forward-kl",
                       "--path", "mixture", "--d", "20", "--draws", "4", "--t-end", "3",
                       "--json"])
    assert code == 0 and data["details"]["objective"] == "forward-kl" and data["n"] == 4


def test_same_seed_same_initial_conditions_for_both_objectives():
    """What the objectives_collapse figure relies on: run i of either objective starts from
    the same target frame and initial means."""
    from analysis.reproduce.objectives import ObjectivesPlan, _specs
    rev, fwd = _specs(ObjectivesPlan(), (0.8, 0.2), (20.0, 10.0))
    assert rev.objective == "reverse-kl" and rev.path.kind == "tempering"
    assert fwd.objective == "forward-kl" and fwd.path.kind == "inflation"
    assert fwd.schedule == rev.schedule
    cfg = MonteCarloConfig(d=20, seeds=3, seed=5, t_end=0.1)
    a = simulate(rev, cfg, progress=False)
    b = simulate(fwd, cfg, progress=False)
    np.testing.assert_array_equal(a.Q[:, 0], b.Q[:, 0])
    np.testing.assert_array_equal(a.R[:, 0], b.R[:, 0])
    np.testing.assert_array_equal(a.target_means, b.target_means)


def _wilson(k, n, z=1.959963984540054):
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def test_same_seed_same_initial_states_in_the_ode_ensemble():
    """The objectives_collapse_flow figure's claim: draw i of the ode ensemble starts from the
    same initial state under both objectives (same seed, same chunking)."""
    from analysis.estimators.common import chunked_initial_states
    from analysis.reproduce.objectives import ObjectivesPlan, _specs
    rev, fwd = _specs(ObjectivesPlan(), (0.5, 0.5), None)
    a = chunked_initial_states(rev, 1000, 7, 3, 4)
    b = chunked_initial_states(fwd, 1000, 7, 3, 4)
    assert [x.shape for x in a] == [x.shape for x in b]
    assert [x.shape[0] for x in a] == [4, 3]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["objectives_collapse", "objectives_collapse_flow"])
def test_objectives_collapse_sidecar(quick_figures, name):
    import json
    side = json.loads((quick_figures / f"{name}.json").read_text())
    assert (quick_figures / f"{name}.png").stat().st_size > 0
    if name.endswith("_flow"):
        assert side["engine"] == "ode"
    plan = side["plan"]
    assert side["engine"] in ("montecarlo", "ode") and side["engine_reason"]
    assert len(side["rows"]) == len(plan["pis"]) * (1 + len(plan["annealings"]))
    for r in side["rows"]:
        (both, rev_only), (fwd_only, neither) = r["table"]
        rv, fw = r["reverse"], r["forward"]
        assert both + rev_only + fwd_only + neither == rv["n"] == fw["n"] == plan["seeds"]
        assert both + rev_only == rv["k"] and both + fwd_only == fw["k"]
        for x in (rv, fw):
            lo, hi = _wilson(x["k"], x["n"])
            assert abs(x["ci"][0] - lo) < 1e-6 and abs(x["ci"][1] - hi) < 1e-6
        assert fw["path"] == "inflation" and rv["path"] == "tempering"
    # the unbalanced target without annealing: the reverse KL puts both components on the
    # heavy mode in most draws (README: always from pi_1 = 0.7 on, ode ensemble)
    r = next(r for r in side["rows"] if r["pi"] == [0.8, 0.2] and r["T0"] is None)
    assert r["reverse"]["ci"][1] > 0.5 and r["reverse"]["k"] > r["forward"]["k"]


def test_forward_tied_runs_do_not_depend_on_chunking():
    from concurrent.futures import ThreadPoolExecutor
    spec = symmetric_bimodal(9.0).replace(
        objective="forward-kl", path=AnnealingPath("mixture", 2.0),
        family=VariationalFamily(2, variance=0.7, variances="tied", train_weights=True),
        schedule=ConstantSchedule(0.7))
    cfg = MonteCarloConfig(d=16, seeds=4, seed=2, t_end=2.0)
    whole = simulate(spec, cfg, progress=False)
    with ThreadPoolExecutor(2) as ex:
        split = simulate(spec, cfg, progress=False, executor=ex, chunk_size=2)
    np.testing.assert_array_equal(whole.R, split.R)
    np.testing.assert_array_equal(whole.s, split.s)
    np.testing.assert_array_equal(whole.w, split.w)
    assert np.all(np.isfinite(whole.s)) and not np.allclose(whole.s[:, -1], 0.7)
