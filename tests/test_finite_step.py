"""The effective-initial-overlap theory of the SGD-flow gap (analysis.finite_step, issue 10 s. 2).

Every tolerance comes from a sample size (standard errors of sample variances, binomial /
Wilson intervals) or from the separatrix estimator's own error bound; the references are
independent computations (the reduced SGD engine, direct sampling, the separatrix estimator).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.finite_step import (
    accumulated_noise,
    anisotropic_rayleigh,
    effective_overlap_prediction,
    overlap_noise_covariance,
)
from derivations.spec import ConstantSchedule, symmetric_bimodal

ES = np.array([1.0, 1.0]) / math.sqrt(2.0)
EA = np.array([1.0, -1.0]) / math.sqrt(2.0)


@pytest.fixture(scope="module")
def spec():
    return symmetric_bimodal(9.0)


@pytest.fixture(scope="module")
def pred_1000(spec):
    """The prediction at d = 1000, eta = 0.02, n = 8 (stl), the command's grid step."""
    return effective_overlap_prediction(spec, 1000, 0.02, 8, dt=0.05)


def _engine(spec, Q0, R0, steps, eta, n, estimator, S, seed, beta=1.0, d=10 ** 6):
    from solvers.sgd import run_sgd
    T = spec.target.T
    return run_sgd(T, np.log(spec.target.pi), np.broadcast_to(Q0, (S, 2, 2)),
                   np.broadcast_to(R0, (S, 2, 2)), np.zeros(2), np.full(steps, beta),
                   np.zeros(steps), eta=eta, n=n, s=1.0, delta=1.0, sigma0_sq=1.0, d=d,
                   estimator=estimator, seed=seed)


def _var_and_se(y):
    """Sample variance and its standard error sqrt((m4 - v^2)/S)."""
    y = y - y.mean()
    v = float(np.mean(y ** 2))
    return v, math.sqrt(max(float(np.mean(y ** 4)) - v * v, 0.0) / y.size)


@pytest.mark.parametrize("estimator,beta", [("stl", 1.0), ("reparam", 1.0), ("stl", 0.3)])
def test_one_step_noise_covariance_matches_engine(spec, estimator, beta):
    """Closed-form Sigma at R = 0 against the empirical covariance of one engine step."""
    S, eta, n = 20000, 0.01, 2
    Q0 = np.array([[1.0, -0.3], [-0.3, 0.8]]) if estimator == "reparam" else np.eye(2)
    run = _engine(spec, Q0, np.zeros((2, 2)), 1, eta, n, estimator, S, seed=7, beta=beta)
    g = -run.R[:, :, 0] / eta                      # (S, 2): g_k . mu_1
    cov = overlap_noise_covariance(spec, Q0, beta, n, estimator)
    for e, pred in ((ES, cov.sigma_s2), (EA, cov.sigma_a2)):
        v, se = _var_and_se(g @ e)
        assert abs(v - pred) < 5.0 * se, (estimator, beta, v, pred, se)
    if estimator == "reparam":                     # anisotropic, resolvably so
        assert cov.sigma_a2 - cov.sigma_s2 > 0.2 * cov.sigma_a2


@pytest.mark.parametrize("estimator,d", [("stl", 10 ** 6), ("reparam", 100)])
def test_accumulated_variance_matches_engine_in_linear_phase(spec, estimator, d):
    """Var u_x(t) of SGD started on R = 0 against g_x(t)^2 V_x(t) at an early time.

    reparam at d = 100: its out-of-span noise (d eta w^2 s / n per unit time at beta = 1)
    would otherwise inflate Q away from the flow's, which the theory does not follow."""
    eta, n, t1, S = 0.005, 8, 1.0, 4000
    steps = int(round(t1 / eta))
    acc = accumulated_noise(spec, eta, n, estimator, t_max=t1, dt=eta)   # the flow's path
    i = int(np.argmin(np.abs(acc["t"] - t1)))
    pred_s = math.exp(2 * acc["ln_gs"][i]) * acc["V_s"][i]
    pred_a = math.exp(2 * acc["ln_ga"][i]) * acc["V_a"][i]
    run = _engine(spec, np.eye(2), np.zeros((2, 2)), steps, eta, n, estimator, S, seed=11,
                  d=d)
    u = run.R[:, :, 0]
    for e, pred in ((ES, pred_s), (EA, pred_a)):
        v, se = _var_and_se(u @ e)
        # sampling (5 SE) plus the O(eta) gap between the map and the flow's growth factor
        assert abs(v - pred) < 5.0 * se + 0.02 * pred, (estimator, v, pred, se)
    assert pred_a > pred_s * 1.05 or estimator == "reparam"   # the rates differ: resolvable


@pytest.mark.parametrize("estimator,beta", [("stl", 0.5), ("reparam", 1.0)])
def test_inflation_corrected_flow_matches_engine_mean_of_Q(estimator, beta):
    """The out-of-span source (inflation_source) makes the corrected flow's Q(t) the engine's
    mean at d = 1e5 (stl at beta = 0.5; reparam at beta = 1, where its shared samples also
    correlate the components: Q_12 > 0); the uncorrected flow is far off."""
    sp = symmetric_bimodal(9.0, ConstantSchedule(beta))
    d, eta, n, S, t1 = 10 ** 5, 0.005, 8, 400, 1.0
    steps = int(round(t1 / eta))
    acc = accumulated_noise(sp, eta, n, estimator, d=d, t_max=t1, dt=eta)
    flow = accumulated_noise(sp, eta, n, estimator, t_max=t1, dt=eta)
    assert acc["corrected"] and not flow["corrected"]
    run = _engine(sp, np.eye(2), np.zeros((2, 2)), steps, eta, n, estimator, S, seed=5,
                  beta=beta, d=d)
    for k, l in ((0, 0), (0, 1)):
        q = run.Q[:, k, l]
        m, se = float(q.mean()), float(q.std(ddof=1)) / math.sqrt(S)
        pred, bare = float(acc["Q"][-1, k, l]), float(flow["Q"][-1, k, l])
        # sampling (5 SE) and the O(eta) gap between the SGD map and the flow
        tol = 5.0 * se + 2.0 * eta * abs(pred)
        assert abs(m - pred) < tol, (k, l, m, pred, se)
        assert abs(m - bare) > 5.0 * tol, (k, l, m, bare)


def test_anisotropic_rayleigh_against_sampling():
    """The 2-D integral against direct sampling of u ~ N(0, diag(es^2, ea^2))."""
    le = np.log(np.geomspace(1e-3, 10.0, 60))
    tc = 0.5 * math.pi / (1.0 + np.exp(-2.0 * (le - math.log(0.2))))   # a smooth theta_c(r)
    es, ea = 0.3, 0.12
    p = anisotropic_rayleigh(es, ea, le, tc)
    rng = np.random.default_rng(3)
    N = 400_000
    u = rng.standard_normal((N, 2)) * [es, ea]
    r = np.hypot(u[:, 0], u[:, 1])
    ang = np.abs(np.arctan(u[:, 1] / u[:, 0]))       # angle from the e_s axis, mod pi
    lim = np.interp(np.log(r), le, tc)
    ph = float(np.mean(ang < lim))
    assert abs(p - ph) < 5.0 * math.sqrt(ph * (1 - ph) / N)
    iso = anisotropic_rayleigh(0.2, 0.2, le, tc)           # isotropic: the Rayleigh formula
    chi = np.linspace(0.0, 9.0, 20001)
    ray = np.trapezoid(2 / math.pi * np.interp(np.log(np.maximum(0.2 * chi, 1e-300)), le, tc)
                       * chi * np.exp(-0.5 * chi ** 2), chi)
    assert abs(iso - ray) < 1e-3


def test_vanishing_step_gives_the_flow(spec, pred_1000):
    """eta -> 0: eps_eff -> eps0 and p -> the separatrix estimator's value."""
    from analysis.collapse import collapse_probability
    d = 1000
    r = effective_overlap_prediction(spec, d, 1e-8, 8, n_eps_per_decade=6)
    assert r.eps0 == pytest.approx(3.0 / math.sqrt(d), rel=1e-12)
    assert max(abs(e / r.eps0 - 1.0) for e in r.eps_eff) < 1e-4
    sep = collapse_probability(spec, d, "separatrix", n_eps_per_decade=6)
    bound = 0.5 * (sep.ci[1] - sep.ci[0])
    assert abs(r.p - sep.p) < bound + 2e-3, (r.p, sep.p, sep.ci)
    big = pred_1000
    assert big.eps_eff[0] > 1.5 * r.eps0 and big.p > r.p + 0.02   # the gap is resolved


def test_prediction_against_reduced_engine_where_it_holds(spec):
    """At d = 1e6, beta = 1, eta = 0.02, n = 8 (stl) the prediction lies in the sgd
    estimator's 99.7% Wilson interval; the flow's value does not."""
    from analysis.collapse import collapse_probability
    from analysis.stats import wilson_interval
    d, draws = 10 ** 6, 1000
    pred = effective_overlap_prediction(spec, d, 0.02, 8, n_eps_per_decade=6)
    res = collapse_probability(spec, d, "sgd", draws=draws, seed=2024, eta=0.02, n=8,
                               estimator="stl", progress=False)
    lo, hi = wilson_interval(res.k, res.n, confidence=0.997)
    assert lo <= pred.p <= hi, (pred.p, res.p, lo, hi)
    assert not lo <= pred.p_flow <= hi


@pytest.mark.parametrize("kw,match", [
    (dict(eta=0.0), "eta"), (dict(eta=float("nan")), "eta"), (dict(n=0), "n"),
    (dict(n=2.5), "n"), (dict(estimator="adam"), "estimator"), (dict(d=2), "d"),
    (dict(d=True), "d"), (dict(u_nl=-1.0), "u_nl")])
def test_bad_input(spec, kw, match):
    args = dict(d=1000, eta=0.02, n=8, estimator="stl")
    args.update(kw)
    u_nl = args.pop("u_nl", 1.0)
    with pytest.raises(ValueError, match=match):
        effective_overlap_prediction(spec, args["d"], args["eta"], args["n"], args["estimator"],
                                     u_nl=u_nl)


def test_bad_spec():
    from derivations.spec import ProblemSpec  # noqa: F401  (the spec type)
    lop = symmetric_bimodal(9.0, train_weights=True)
    with pytest.raises(ValueError, match="spec"):
        effective_overlap_prediction(lop, 1000, 0.02, 8)
    with pytest.raises(ValueError, match="Q"):
        overlap_noise_covariance(symmetric_bimodal(9.0, ConstantSchedule(1.0)), np.eye(3),
                                 1.0, 8)


def _cli(capsys, *args):
    from analysis.cli import main
    try:
        rc = main(["finite-step", *args])
    except SystemExit as exc:      # argparse errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_json_matches_library(capsys, pred_1000):
    import json
    rc, out, _ = _cli(capsys, "--A", "9", "--d", "1000", "--eta", "0.02", "--n", "8",
                      "--dt", "0.05", "--json")
    assert rc == 0
    res = json.loads(out)
    lib = pred_1000
    assert res["p"] == pytest.approx(lib.p, rel=1e-9)
    assert res["eps_eff"] == pytest.approx(list(lib.eps_eff), rel=1e-9)


@pytest.mark.parametrize("args", [["--d", "1000", "--eta", "-1"], ["--eta", "0.02"],
                                  ["--d", "1000", "--eta", "0.02", "--trainable-weights"],
                                  ["--d", "1000", "--eta", "0.02", "--estimator", "adam"]])
def test_cli_bad_input_exits_2_one_line(capsys, args):
    rc, _, err = _cli(capsys, *args)
    assert rc == 2
    assert err.strip().count("\n") == 0 and "finite-step" in err


def test_inflated_flow_against_engine_mean_off_the_symmetric_state():
    """From R != 0 (stl, beta = 0.5, d = 1e5) the corrected (Q, R) equations follow the engine
    mean of Q and R at t = 1 (sampling 5 SE plus the O(eta) map-flow gap)."""
    from analysis.finite_step import inflated_flow
    sp = symmetric_bimodal(9.0, ConstantSchedule(0.5))
    d, eta, n, S = 10 ** 5, 0.005, 8, 400
    Q0 = np.array([[1.0, 0.1], [0.1, 1.0]])
    R0 = np.array([[0.9, -0.9], [0.3, -0.3]])
    Q, R = inflated_flow(sp, d, eta, n, "stl", Q0, R0, [0.0, 1.0])
    Qb, Rb = inflated_flow(sp, 3, eta, n, "stl", Q0, R0, [0.0, 1.0])   # d = D: no source
    run = _engine(sp, Q0, R0, 200, eta, n, "stl", S, seed=9, beta=0.5, d=d)
    for name, pred, bare, samp in (("Q11", Q[-1, 0, 0], Qb[-1, 0, 0], run.Q[:, 0, 0]),
                                   ("R11", R[-1, 0, 0], Rb[-1, 0, 0], run.R[:, 0, 0]),
                                   ("R21", R[-1, 1, 0], Rb[-1, 1, 0], run.R[:, 1, 0])):
        m, se = float(samp.mean()), float(samp.std(ddof=1)) / math.sqrt(S)
        tol = 5.0 * se + 2.0 * eta * abs(pred)
        assert abs(m - pred) < tol, (name, m, pred, se)
        assert abs(m - bare) > tol, (name, m, bare)      # the correction is resolved
    with pytest.raises(ValueError, match="t_eval"):
        inflated_flow(sp, d, eta, n, "stl", Q0, R0, [1.0, 0.5])


def test_grid_shares_one_table_and_matches_the_pointwise_prediction(spec, pred_1000):
    """stl at beta = 1 (no inflation source): one path and one theta_c table serve the grid;
    its value at (d = 1000, eta = 0.02) equals the point-wise prediction (``pred_1000``, tol
    1e-4) up to the grid's bisection tolerance (tol = 1e-3 in the angle moves P by at most
    2 tol / pi < 1e-3) and interpolation on another grid.  A table that does not cover a
    point's amplitudes is refused."""
    from analysis.finite_step import effective_overlap_grid
    kw = dict(n_eps_per_decade=4, tol=1e-3, dt=0.05)
    g = effective_overlap_grid(spec, [1000, 10 ** 5], [0.02, 0.05], 8, "stl", **kw)
    assert g.shared_table and not g.corrected.any() and g.p.shape == (2, 2)
    assert abs(g.p[0, 0] - pred_1000.p) < 2e-3, (g.p, pred_1000.p)
    assert g.eps_eff[0, 0] == pytest.approx(pred_1000.eps_eff, rel=1e-9)   # V scales with eta
    assert np.all(g.p > g.p_flow) and np.all(g.p[1] > g.p[0])
    again = effective_overlap_prediction(spec, 10 ** 5, 0.05, 8, "stl", table=g.table, **kw)
    assert again.p == pytest.approx(g.p[1, 1], abs=1e-12)            # the same table reused
    short = (g.table[0][:3], g.table[1][:3], g.table[2][:3])
    with pytest.raises(ValueError, match="^table:"):
        effective_overlap_prediction(spec, 10 ** 5, 0.05, 8, "stl", table=short, **kw)
