"""Per-component variances s_k in the R^d simulator (analysis.mc_objectives, issue 12).

* The gradients (grad_m F, dF/dalpha, dF/dlog s_k) against finite differences of a direct
  d-dimensional Monte Carlo objective written here, with common random numbers:
  - reverse KL, exactly: the ``stl`` estimate is the derivative of the CRN objective in which
    the samples x = m_k + sqrt(s_k) eps move with the parameters but log q is frozen at the
    current ones (the path derivative); checked to 1e-6 relative;
  - reverse KL, unbiased: against the full CRN objective (log q not frozen: its score term has
    zero mean but not zero sample value), means within 5 standard errors over batches;
  - forward KL, exactly: the samples of p_beta do not depend on q, so the estimate is the
    derivative of the CRN objective -mean log q(x_i).
  With all s_k equal the estimates are the tied kernel's (g equal, sum_k dF/dlog s_k = the tied
  dF/dlog s), to rounding.
* K = M = 1 tempering at beta = 0.5: s -> Delta/beta (closed-form flow as for tied).
* K = 1, M = 2 from s_k(0) = (0.6, 3.0), both components on the one mode: the weighted mean of
  log s_k relaxes to log(Delta/beta), the difference decays algebraically, 4/sqrt(d t).
* K = M = 2 split state from s_k(0) = (0.5, 2) (O(1) apart): the final spread log s_1 - log s_2
  shrinks like 1/d (d = 50 against 200); P(collapse) per-component equals tied on the same
  seeds (Newcombe).
* The refusals: the reduced engine and the other commands name per-component.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.mc_objectives import (
    forward_gradient_per_component,
    reverse_gradient_per_component,
    reverse_gradient_tied,
)
from analysis.montecarlo import MonteCarloConfig, simulate
from derivations.spec import (
    AnnealingPath,
    ConstantSchedule,
    ModelStructure,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)

N_SE = 5.0


def _lse(x, axis=-1):
    mx = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(mx, axis) + np.log(np.sum(np.exp(x - mx), axis=axis))


def _logmix(x, centres, logw, var):
    """log sum_j w_j N(x; c_j, var_j I), straight in R^d: x (..., d), centres (C, d), var (C,)."""
    d = x.shape[-1]
    sq = np.sum((x[..., None, :] - centres) ** 2, -1)                       # (..., C)
    return _lse(logw - 0.5 * sq / var - 0.5 * d * np.log(2 * np.pi * var))


def _crn_reverse(spec, m, mu, eps, logs, alpha, beta, frozen=None):
    """F = sum_k w_k mean_i phi(m_k + sqrt(s_k) eps_ki), phi = log q - beta log p - gamma log p0.

    frozen = (m, logs, alpha) evaluates log q at those parameters (the stl path derivative)."""
    M, n, d = eps.shape
    w = np.exp(alpha - _lse(alpha))
    x = m[:, None, :] + np.exp(0.5 * logs)[:, None, None] * eps           # (M, n, d)
    fm, fl, fa = (m, logs, alpha) if frozen is None else frozen
    logq = _logmix(x, fm, fa - _lse(fa), np.exp(fl))
    delta = spec.target.variance
    logp = _logmix(x, mu, np.log(spec.target.pi), np.full(mu.shape[0], delta))
    gamma = float(spec.gamma(beta))
    phi = logq - beta * logp
    if gamma:
        s0 = spec.path.base_variance
        phi -= gamma * (-0.5 * np.sum(x * x, -1) / s0 - 0.5 * d * math.log(2 * math.pi * s0))
    return float(np.sum(w * phi.mean(1)))


def _problem(path: str, train_w: bool, d: int = 6, seed: int = 3):
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((2, d)) * 1.2
    kind = AnnealingPath("geometric", 2.0) if path == "geometric" else AnnealingPath()
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[0.35, 0.65], variance=0.9),
        family=VariationalFamily(3, weights=[0.3, 0.45, 0.25], variance=1.0,
                                 train_weights=train_w, variances="per-component"),
        path=kind, schedule=ConstantSchedule(0.7))
    m = rng.standard_normal((3, d))
    logs = np.log([0.5, 1.3, 0.8])
    alpha = np.array([0.2, -0.1, 0.3])
    return spec, m, mu, logs, alpha


def _fd(f, x, h):
    """Central differences of f at x (1-d array) along every coordinate."""
    out = np.empty(x.size)
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


@pytest.mark.parametrize("path,train_w", [("tempering", False), ("geometric", True)])
def test_reverse_gradient_is_the_path_derivative_of_the_crn_objective(path, train_w):
    spec, m, mu, logs, alpha = _problem(path, train_w)
    beta, (M, d), n = 0.7, m.shape, 64
    eps = np.random.default_rng(11).standard_normal((M, n, d))
    g, galpha, glogs = reverse_gradient_per_component(spec, m, mu, eps, beta, np.exp(logs),
                                                      alpha)
    frozen = (m, logs, alpha)
    h = 1e-5
    fd_logs = _fd(lambda v: _crn_reverse(spec, m, mu, eps, v, alpha, beta, frozen), logs, h)
    np.testing.assert_allclose(glogs, fd_logs, rtol=1e-6, atol=1e-8)
    fd_m = _fd(lambda v: _crn_reverse(spec, v.reshape(M, d), mu, eps, logs, alpha, beta,
                                      frozen), m.ravel(), h)
    np.testing.assert_allclose(g.ravel(), fd_m, rtol=1e-6, atol=1e-8)
    if train_w:
        fd_a = _fd(lambda v: _crn_reverse(spec, m, mu, eps, logs, v, beta, frozen), alpha, h)
        np.testing.assert_allclose(galpha, fd_a, rtol=1e-6, atol=1e-8)
    else:
        np.testing.assert_array_equal(galpha, 0.0)
    assert np.min(np.abs(glogs)) > 1e-3                           # a non-trivial gradient


def test_reverse_logs_gradient_unbiased_against_the_full_crn_objective():
    """Without freezing log q the CRN derivative adds the score term sum_k' w_k' mean
    d log q / d log s_k (zero mean): agreement of the means over independent batches."""
    spec, m, mu, logs, alpha = _problem("tempering", False)
    beta, (M, d), n = 0.7, m.shape, 2048
    rng = np.random.default_rng(5)
    est, ref = [], []
    h = 1e-4
    for _ in range(30):
        eps = rng.standard_normal((M, n, d))
        est.append(reverse_gradient_per_component(spec, m, mu, eps, beta, np.exp(logs),
                                                  alpha)[2])
        eps2 = rng.standard_normal((M, n, d))                    # independent reference
        ref.append(_fd(lambda v: _crn_reverse(spec, m, mu, eps2, v, alpha, beta), logs, h))
    est, ref = np.array(est), np.array(ref)
    se = np.sqrt(est.var(0, ddof=1) / len(est) + ref.var(0, ddof=1) / len(ref))
    assert np.all(np.abs(est.mean(0) - ref.mean(0)) < N_SE * se), (est.mean(0), ref.mean(0), se)
    assert np.all(np.abs(est.mean(0)) > 10 * se)


def test_equal_variances_give_the_tied_kernel():
    spec, m, mu, _, _ = _problem("tempering", False)
    tied = spec.replace(family=VariationalFamily(3, spec.family.weights, 0.8, variances="tied"))
    eps = np.random.default_rng(2).standard_normal((3, 16, m.shape[1]))
    g_t, _, gl_t = reverse_gradient_tied(tied, m, mu, eps, 0.7, 0.8)
    g_p, _, gl_p = reverse_gradient_per_component(spec, m, mu, eps, 0.7, [0.8] * 3)
    np.testing.assert_allclose(g_p, g_t, rtol=1e-9, atol=1e-11)
    assert abs(gl_p.sum() - gl_t) < 1e-9 * max(1.0, abs(gl_t))


@pytest.mark.parametrize("kind", ["inflation", "mixture"])
def test_forward_gradient_is_the_derivative_of_the_crn_objective(kind):
    rng = np.random.default_rng(9)
    d, beta = 5, 0.6
    mu = rng.standard_normal((2, d)) * 1.5
    path = AnnealingPath("mixture", 2.5) if kind == "mixture" else AnnealingPath("inflation")
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[0.4, 0.6], variance=0.8),
        family=VariationalFamily(2, weights=[0.55, 0.45], train_weights=True,
                                 variances="per-component"),
        path=path, schedule=ConstantSchedule(beta), objective="forward-kl")
    m = rng.standard_normal((2, d))
    logs, alpha = np.log([0.7, 1.6]), np.array([0.1, -0.2])
    N = 200
    eps, sel = rng.standard_normal((N, d)), rng.standard_normal(N)
    # the samples of p_beta, built here from the same numbers (component by inversion of Phi)
    from scipy.stats import norm
    u = norm.cdf(sel)
    if kind == "inflation":
        probs, sd = spec.target.pi, math.sqrt(0.8 / beta)
        comp = np.minimum(np.searchsorted(np.cumsum(probs), u, side="right"), 1)
        x = mu[comp] + sd * eps
    else:
        cum = np.cumsum(beta * spec.target.pi)
        comp = np.searchsorted(cum, u, side="right")                   # 2 = the base
        x = np.where((comp < 2)[:, None], mu[np.minimum(comp, 1)] + math.sqrt(0.8) * eps,
                     math.sqrt(2.5) * eps)

    def F(mm, ll, aa):
        return -float(np.mean(_logmix(x, mm, aa - _lse(aa), np.exp(ll))))

    g, galpha, glogs = forward_gradient_per_component(spec, m, mu, eps, sel, beta,
                                                      np.exp(logs), alpha)
    h = 1e-5
    np.testing.assert_allclose(glogs, _fd(lambda v: F(m, v, alpha), logs, h), rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(g.ravel(), _fd(lambda v: F(v.reshape(2, d), logs, alpha),
                                              m.ravel(), h), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(galpha, _fd(lambda v: F(m, logs, v), alpha, h), rtol=1e-6,
                               atol=1e-8)


def _single_mode(M, s_init, beta=0.5, delta=1.5, d=50):
    mu = np.zeros((1, d))
    mu[0, 0] = 2.0
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[1.0], variance=delta),
        family=VariationalFamily(M, variance=1.0, variances="per-component"),
        schedule=ConstantSchedule(beta))
    return spec, mu


def test_single_gaussian_tempering_s_to_delta_over_beta():
    """K = M = 1: with w = 1 the per-component flow is the tied one, u = log(s beta/Delta),
    du/dt = (1 - e^u)/2 exactly; tolerance as in the tied test (5 SE of the runs' mean final
    log s plus twice the flow's own remainder |u(t_end)|)."""
    from scipy.optimize import brentq
    spec, _ = _single_mode(1, None)
    beta, delta, s_init, t_end = 0.5, 1.5, 0.6, 40.0
    res = simulate(spec, MonteCarloConfig(d=50, seeds=8, seed=4, t_end=t_end, n=4),
                   progress=False, s_init=[s_init])
    assert res.s.shape == (8, res.t.size, 1)
    target = math.log(delta / beta)
    u0 = math.log(s_init) - target
    c = u0 - math.log(1 - math.exp(u0))
    u_flow = brentq(lambda u: u - math.log(1 - math.exp(u)) - t_end / 2 - c, u0, -1e-15)
    u = np.log(res.s_final[:, 0])
    se = u.std(ddof=1) / math.sqrt(u.size)
    assert abs(u.mean() - target) < N_SE * se + 2 * abs(u_flow), (u, target, u_flow)
    np.testing.assert_allclose(res.s[:, 0, 0], s_init)


def test_two_components_on_one_mode_mean_relaxes_difference_decays_algebraically():
    """K = 1, M = 2 (w = 1/2, 1/2), tempering beta = 0.5, s_k(0) = (0.6, 3.0): q = p^beta
    (both means at mu, s_k = Delta/beta = 3) is the exact minimiser.  Sharing a mode the two
    components see each other, and with u_k = log(s_k/s*), a_k = sqrt(d/2) u_k the limit
    d -> infinity of F is the KL of the 1-d location mixture sum_k w_k N(a_k, 1) from N(0, 1)
    (README snippet), ``KL = abar^2/2 + sigma^4/4 + ...`` (abar = sum w_k a_k, sigma^2 =
    sum w_k (a_k - abar)^2), and da_k/dt = -(1/2) dKL/da_k.  So the mean abar relaxes
    exponentially but the difference is flat at quadratic order:
    d delta/dt = -(w_1 w_2)^2 delta^3, |u_1 - u_2| -> 1/(w_1 w_2 sqrt(d t)) = 4/sqrt(d t), not
    exponentially and not to O(1/d).  Checked at t = 240 for d = 50 and 200: the ratio to
    4/sqrt(d t) within [0.9, 1.15] (the asymptote's relative correction is ~ t_s/(2t) with a
    time shift t_s ~ 16 from the initial invisible phase: ~3%; measured 0.99 and 1.03), and
    the d = 50 / d = 200 ratio within [1.7, 2.3] (sqrt 4 = 2; an O(1/d) spread would give 4).
    """
    spread = {}
    for d in (50, 200):
        mu = np.zeros((1, d))
        mu[0, 0] = 2.0
        spec = ProblemSpec(
            target=TargetMixture.from_means(mu, weights=[1.0], variance=1.5),
            family=VariationalFamily(2, variance=1.0, variances="per-component"),
            schedule=ConstantSchedule(0.5))
        t_end = 240.0
        res = simulate(spec, MonteCarloConfig(d=d, seeds=4, seed=1, t_end=t_end, n=4),
                       progress=False, s_init=[0.6, 3.0])
        u = np.log(res.s_final / 3.0)                                     # (S, 2)
        assert np.all(np.abs(u.mean(1)) < 2e-3), u                        # the mean: relaxed
        du = np.abs(u[:, 0] - u[:, 1]).mean()
        ratio = du / (4.0 / math.sqrt(d * t_end))
        assert 0.9 < ratio < 1.15, (d, du, ratio)
        spread[d] = du
    assert 1.7 < spread[50] / spread[200] < 2.3, spread


def _pair(d, A=4.0, w1=0.7, seeds=8, t_end=80.0):
    mu = np.zeros((2, d))
    mu[0, 0], mu[1, 0] = math.sqrt(A), -math.sqrt(A)
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, weights=[0.5, 0.5], variance=1.0),
        family=VariationalFamily(2, weights=[w1, 1 - w1], variances="per-component"),
        schedule=ConstantSchedule(1.0))
    m0 = np.broadcast_to(mu, (seeds, 2, d)).copy()
    return simulate(spec, MonteCarloConfig(d=d, seeds=seeds, seed=2, t_end=t_end, n=8),
                    progress=False, target_means=mu, m0=m0, s_init=[0.5, 2.0])


def test_spread_of_log_s_k_shrinks_like_one_over_d():
    """K = M = 2, split state (m_k started on mu_k), A = 4, w = (0.7, 0.3), beta = 1, s_k(0) =
    (0.5, 2): log s_1 - log s_2 starts at -1.39 and relaxes to its fixed-point value, which is
    O(1/d) (the leading term (w_k/2)(1 - s_k/s*) is the same for both; the O(1) part of F
    differs between them).  With c/d + O(1/d^2) the ratio of the spreads at d = 50 and 200
    is 4 (1 + O(1/50)); the runs' means have relative standard errors ~1-2% (measured:
    5.6e-3 +- 5e-5 and 1.3e-3 +- 2e-5, ratio 4.3).  Accepted: a ratio in [3, 5.5], i.e. an
    exponent log(ratio)/log 4 in [0.79, 1.23]; 1/sqrt(d) would give 2, 1/d^2 16, no decay 1."""
    spreads = {}
    for d in (50, 200):
        res = _pair(d)
        ls = np.log(res.s_final)                                          # (S, 2)
        diff = ls[:, 0] - ls[:, 1]
        assert np.all(np.abs(np.log(res.s[:, 0, 0] / res.s[:, 0, 1])) > 1.3)
        assert not res.collapsed.any()
        se = diff.std(ddof=1) / math.sqrt(diff.size)
        assert abs(diff.mean()) > 10 * se                                 # resolved
        spreads[d] = abs(diff.mean())
    ratio = spreads[50] / spreads[200]
    assert 3.0 < ratio < 5.5, spreads
    assert spreads[50] < 0.02                                             # O(1) -> O(1/d)


def test_collapse_per_component_equals_tied_on_the_same_seeds():
    """Symmetric bimodal, A = 9, beta = 1, s_k(0) = s = Delta = s*: the s_k stay within O(1/d)
    of each other and of the tied s, so P(collapse) agrees; the Newcombe 95% interval of the
    difference must contain 0 (same seeds, hence same target frames and initial means)."""
    from analysis.stats import compare_proportions
    base = symmetric_bimodal(9.0)
    cfg = MonteCarloConfig(d=50, seeds=160, seed=3, t_end=40.0, n=4)
    out = {}
    for v in ("tied", "per-component"):
        spec = base.replace(family=VariationalFamily(2, base.family.weights, 1.0, variances=v))
        out[v] = simulate(spec, cfg, progress=False)
    a, b = out["per-component"], out["tied"]
    cmp = compare_proportions(a.fraction.k, a.fraction.n, b.fraction.k, b.fraction.n)
    assert cmp.ci[0] <= 0.0 <= cmp.ci[1], cmp
    np.testing.assert_allclose(a.Q[:, 0], b.Q[:, 0])                      # same starts
    assert a.fraction.n == b.fraction.n == 160


def test_refusals_name_per_component():
    with pytest.raises(ValueError, match="per-component.*tied.*adiabatic.*Trainable variances"):
        ModelStructure(2, 2, variances="per-component")
    from types import SimpleNamespace

    import sympy as sp

    from derivations.model import variance_treatment
    fake = SimpleNamespace(variances="per-component", path="tempering")   # past the spec
    x = sp.Symbol("x")
    with pytest.raises(ValueError, match="per-component.*tied.*adiabatic"):
        variance_treatment(fake, x, x, {"Delta": x}, x, x, x)
    spec = symmetric_bimodal(9.0)
    pc = spec.replace(family=VariationalFamily(2, variances="per-component"))
    with pytest.raises(ValueError, match="per-component"):
        pc.structure
    with pytest.raises(ValueError, match="s_init"):
        simulate(spec, MonteCarloConfig(d=10, seeds=2), progress=False, s_init=[1.0, 2.0])
    with pytest.raises(ValueError, match="estimator"):
        simulate(pc, MonteCarloConfig(d=10, seeds=2, estimator="reparam"), progress=False)


def _cli(argv, capsys):
    from analysis.cli import main
    code = main(argv)
    return code, capsys.readouterr()


def test_cli(capsys):
    import json
    code, cap = _cli(["montecarlo", "--variances", "per-component", "--s-init", "0.6,3",
                      "--K", "1", "--M", "2", "--preset", "orthogonal", "--schedule",
                      "constant", "--beta", "0.5", "--d", "20", "--seeds", "2", "--t-end",
                      "60", "--json", "--no-progress"], capsys)
    assert code == 0, cap.err
    data = json.loads(cap.out)
    assert data["variances"] == "per-component"
    s1, s2 = data["s_final_per_component"]
    assert abs(0.5 * math.log(s1 * s2) - math.log(2.0)) < 5e-3     # mean log s_k: Delta/beta
    # the difference on a shared mode: 4/sqrt(d t) (the test above), within 20% at d t = 1200
    assert abs(math.log(s2 / s1) / (4.0 / math.sqrt(20 * 60.0)) - 1.0) < 0.2, (s1, s2)
    assert abs(data["log_s_spread_final"]["median"] - abs(math.log(s2 / s1))) < 0.02
    for argv in (["fixed-points", "--variances", "per-component", "--json"],
                 ["collapse", "--variances", "per-component", "--method", "ode"],
                 ["derive", "--variances", "per-component"]):
        code, cap = _cli(argv, capsys)
        assert code == 2
        assert "per-component" in cap.err and "tied" in cap.err and "adiabatic" in cap.err
        assert "Trainable variances" in cap.err
    code, cap = _cli(["montecarlo", "--s-init", "1,2", "--d", "10", "--seeds", "2"], capsys)
    assert code == 2 and "--s-init" in cap.err


def test_logit_difference_law():
    """The theory of the README snippet, sampled straight in R^d.  Under x = m_k + sqrt(s_k) z,
    with equal means and weights and r = s_j/s_k, the logit difference of log q is exactly
    ``D = -(d/2) log r - (|z|^2/2)(1/r - 1)``: mean -(d/2)(log r + 1/r - 1), variance
    (d/2)(1 - 1/r)^2 (|z|^2 ~ chi^2_d).  (a) r = 2: E rho_j <= sqrt(w_j/w_k) BC^(d/2) with the
    Bhattacharyya coefficient BC = 2 sqrt(r)/(1 + r).  (b) s_j = s(1 + eps_j/sqrt d): D ->
    -(de)^2/4 + de xi/sqrt 2, de = eps_j - eps_k, xi ~ N(0, 1)."""
    rng = np.random.default_rng(0)
    n = 4000
    for d, sk, sj in ((200, 1.0, 2.0), (400, 1.0 - 1.0 / 20.0, 1.0 + 1.0 / 20.0)):
        z = rng.standard_normal((n, d))
        x = math.sqrt(sk) * z                                    # m_k = m_j = 0
        lk = -0.5 * d * math.log(2 * math.pi * sk) - 0.5 * np.sum(x * x, 1) / sk
        lj = -0.5 * d * math.log(2 * math.pi * sj) - 0.5 * np.sum(x * x, 1) / sj
        D = lj - lk
        r = sj / sk
        mean, var = -0.5 * d * (math.log(r) + 1 / r - 1), 0.5 * d * (1 - 1 / r) ** 2
        assert abs(D.mean() - mean) < N_SE * math.sqrt(var / n)
        assert abs(D.var(ddof=1) / var - 1) < N_SE * math.sqrt(2.0 / n) * 1.5   # near-Gaussian
        if r == 2.0:
            rho_j = 1.0 / (1.0 + np.exp(-D))
            bound = (2 * math.sqrt(r) / (1 + r)) ** (d / 2)
            assert rho_j.mean() <= bound < 1e-2                     # mutually invisible
        else:
            de = 2.0                                                 # eps = (1, -1) / sqrt(d)
            # the limits -1 and 2, up to O(d^-1/2) = 0.05 relative (times O(1) constants):
            # exactly -0.969 and 1.814 here (1 - 1/r = 0.0952 against de/sqrt d = 0.1)
            assert abs(mean / (-de ** 2 / 4) - 1) < 0.05
            assert abs(var / (de ** 2 / 2) - 1) < 0.15
