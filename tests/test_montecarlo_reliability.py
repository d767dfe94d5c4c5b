"""Reliability of the d-dimensional Monte Carlo (analysis.montecarlo, analysis.mc_*).

* Non-finite settings are ValueErrors naming the field.
* Absurd requests are refused up front, with the estimate and the limit, before anything
  d-dimensional is allocated (tracemalloc), unless forced.
* The default end time is capped as beta_final -> 0; runs whose classification still changes
  at t_end are flagged undecided (checked against the records, recomputed here).
* The SGD step: the curvature bound behind ``stable_step`` (checked by independent quadrature
  of the two-component entropy) and the refusal above it; the ``stl`` noise inflation formula
  against SGD in R^d (statistical tolerance from the number of runs).
* ``compare_with_ode`` returns what ``mfvi montecarlo --compare-ode`` printed.
* The estimator and optimiser registries.
"""

from __future__ import annotations

import io
import json
import math
import tracemalloc
from contextlib import redirect_stdout

import numpy as np
import pytest
from scipy import integrate

from analysis.classify import assign, classify
from analysis.montecarlo import (
    ESTIMATORS,
    MAX_RELAX_TIME,
    OPTIMIZERS,
    GradientEstimator,
    MonteCarloConfig,
    Optimiser,
    check_cost,
    compare_with_ode,
    default_eta,
    default_t_end,
    estimate_cost,
    noise_inflation,
    ode_outcomes,
    realise_geometry,
    register_gradient_estimator,
    register_optimiser,
    simulate,
    stable_step,
    stl_noise_inflation,
)
from derivations.spec import (
    ConstantSchedule,
    ExponentialSchedule,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)

N_SE = 5.0


# ----------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------

FLOAT_FIELDS = ["eta", "t_end", "weight_threshold", "beta_tol", "relax_time", "adam_b1",
                "adam_b2", "adam_eps"]


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "0.1", True])
def test_config_refuses_non_finite_and_non_numbers(name, bad):
    with pytest.raises(ValueError, match=name):
        MonteCarloConfig(d=5, **{name: bad})


def test_config_refuses_thresholds_outside_their_range():
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="weight_threshold"):
            MonteCarloConfig(d=5, weight_threshold=bad)


def test_config_force_is_a_bool():
    assert MonteCarloConfig(d=5, force=True).force is True
    with pytest.raises(ValueError, match="force"):
        MonteCarloConfig(d=5, force="yes")


# ----------------------------------------------------------------------------------------
# resource guard
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,name,what", [
    (dict(d=10 ** 9, seeds=4), "d", "bytes"),
    (dict(d=100, seeds=10 ** 9), "seeds", "bytes"),
    (dict(d=100, seeds=4, n=10 ** 9), "n", "bytes"),
    (dict(d=100, seeds=4, t_end=1e12), "t_end", "steps")])
def test_absurd_requests_are_refused_before_allocating(kw, name, what):
    spec = symmetric_bimodal(9.0, ConstantSchedule(1.0))
    cfg = MonteCarloConfig(**kw)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as exc:
            simulate(spec, cfg, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(exc.value)
    assert msg.startswith(name + ":"), msg
    assert what in msg and "limit" in msg and "force=True" in msg, msg
    if what == "steps":
        assert " s at an optimistic" in msg          # an estimate in seconds
    assert peak < 50e6, peak                          # nothing d-dimensional was allocated
    # forced, the guard lets it through (not run here: the estimate is returned)
    forced = check_cost(spec, MonteCarloConfig(**kw, force=True))
    assert forced.bytes > 0 and forced.steps > 0


def test_cost_estimate_scales_with_the_sizes():
    spec = symmetric_bimodal(9.0, ConstantSchedule(1.0))
    a = estimate_cost(spec, MonteCarloConfig(d=1000, seeds=100, t_end=10.0, eta=0.02), threads=1)
    b = estimate_cost(spec, MonteCarloConfig(d=2000, seeds=100, t_end=20.0, eta=0.02), threads=1)
    assert a.steps == 500 and b.steps == 1000
    assert b.seconds == pytest.approx(4 * a.seconds)
    # the means alone: seeds * M * d * 8 bytes, twice (the means and their contiguous copy)
    assert a.bytes >= 2 * 100 * 2 * 1000 * 8


# ----------------------------------------------------------------------------------------
# default end time: capped; undecided runs flagged
# ----------------------------------------------------------------------------------------

def test_default_t_end_is_capped_as_beta_goes_to_zero():
    spec = symmetric_bimodal(9.0, ConstantSchedule(1e-3))
    uncapped = 25.0 * 1.0 / (1e-3 * 0.5)                   # 25 Delta / (beta min w) = 50000
    assert default_t_end(spec) == pytest.approx(MAX_RELAX_TIME) and MAX_RELAX_TIME < uncapped
    # an annealed schedule keeps its settle time, only the relaxation part is capped
    exp = symmetric_bimodal(9.0, ExponentialSchedule(20.0, 100.0))
    assert default_t_end(exp) == pytest.approx(
        100.0 * math.log(19.0 * (1 - 1e-3) / 1e-3) + 25.0 / 0.5)
    # the run of the report (beta = 1e-3) now ends, and says the relaxation was capped
    res = simulate(spec, MonteCarloConfig(d=4, seeds=2, n=1, n_records=11, max_extensions=0),
                   progress=False)
    assert res.t_end == pytest.approx(MAX_RELAX_TIME)
    assert any("capped" in note for note in res.notes)
    assert res.summary()["n_undecided"] == res.n_undecided


def test_undecided_runs_are_the_ones_still_changing():
    """Runs whose classification (or assignment) at t_end differs from the one half the window
    earlier are flagged; recomputed here from the recorded (Q, R)."""
    spec = symmetric_bimodal(9.0, ConstantSchedule(1e-3))        # weak attraction: undecided
    res = simulate(spec, MonteCarloConfig(d=10, seeds=40, eta=0.02, n=2, t_end=2.0,
                                          n_records=5, seed=1), progress=False)
    T = spec.target.T
    back = int(np.flatnonzero(res.t <= res.t_end / 2 + 1e-12)[-1])   # window = t_end / 2
    cf, _ = classify(res.Q[:, -1], res.R[:, -1], T)
    cb, _ = classify(res.Q[:, back], res.R[:, back], T)
    changed = (cf != cb) | np.any(assign(res.Q[:, -1], res.R[:, -1], T)
                                  != assign(res.Q[:, back], res.R[:, back], T), axis=-1)
    assert changed.any()                                  # the check has something to see
    assert np.array_equal(res.undecided, changed)
    assert res.n_undecided == int(changed.sum()) == res.summary()["n_undecided"]
    assert any("undecided" in note for note in res.notes)


# ----------------------------------------------------------------------------------------
# step size
# ----------------------------------------------------------------------------------------

def _two_component_entropy(delta: float) -> float:
    """Entropy of 0.5 N(delta/2, 1) + 0.5 N(-delta/2, 1) in one dimension (quadrature)."""
    def f(x):
        q = 0.5 * (np.exp(-(x - delta / 2) ** 2 / 2) + np.exp(-(x + delta / 2) ** 2 / 2)) \
            / math.sqrt(2 * math.pi)
        return -q * math.log(q) if q > 0 else 0.0
    return integrate.quad(f, -30, 30, epsabs=1e-13, epsrel=1e-13, limit=200)[0]


def test_entropy_curvature_is_within_the_stability_bound():
    """d^2 (E_q log q) / d m_1^2 along the separation (s = 1): within [-1/4, 1/4], reaching
    -1/4 at coincidence (the bound is tight there) and a positive maximum of about 0.09."""
    h = 0.05
    grid = np.arange(0.0, 7.0, h)
    H = np.array([_two_component_entropy(x) for x in grid])
    curv = -(H[2:] - 2 * H[1:-1] + H[:-2]) / h ** 2
    assert curv.min() == pytest.approx(-0.25, abs=5e-3)
    assert 0.05 < curv.max() <= 0.25


def test_stable_step_and_default_eta():
    # s = Delta = 1, equal weights, tempering: L = 1/4 + 1/2
    spec = symmetric_bimodal(9.0, ConstantSchedule(1.0))
    assert stable_step(spec) == pytest.approx(2.0 / 0.75)
    assert default_eta(spec) == 0.02
    small_s = ProblemSpec(target=TargetMixture([[9.0, -9.0], [-9.0, 9.0]], [0.5, 0.5]),
                          family=VariationalFamily(2, variance=1e-3))
    assert default_eta(small_s) == pytest.approx(0.1 * 2.0 / (250.0 + 0.5))
    assert simulate(small_s, MonteCarloConfig(d=4, seeds=1, n=1, t_end=0.01),
                    progress=False).config.eta == pytest.approx(default_eta(small_s))
    with pytest.raises(ValueError, match="eta: .*stability bound"):
        simulate(small_s, MonteCarloConfig(d=4, seeds=1, eta=0.02, t_end=0.1), progress=False)
    # Adam's normalised steps are not checked
    simulate(small_s, MonteCarloConfig(d=4, seeds=1, eta=0.02, t_end=0.04, optimizer="adam"),
             progress=False)


@pytest.mark.parametrize("estimator", ["stl", "reparam"])
def test_noise_inflation_matches_sgd(estimator):
    """Components sitting on two well-separated modes (rho_kk = 1): out of span{mu} each
    coordinate of m_k is the AR(1) chain x <- (1 - eta lam) x - eta w c sqrt(s) ebar,
    lam = w beta/Delta, ebar ~ N(0, 1/n), c = 1/s - beta/Delta for stl (grad_x log q at frozen
    parameters is -(x - m_k)/s) and c = beta/Delta for reparam (x - m_k = sqrt(s) eps is fixed
    in the pathwise log q term), whose stationary variance is
    eta w^2 c^2 s / (n lam (2 - eta lam)); SGD in R^d must reproduce it."""
    s, delta, beta, w, d, n, eta = 0.5, 1.0, 1.0, 0.5, 40, 4, 0.05
    spec = ProblemSpec(target=TargetMixture([[25.0, 0.0], [0.0, 25.0]], [0.5, 0.5], delta),
                       family=VariationalFamily(2, variance=s), schedule=ConstantSchedule(beta))
    lam = w * beta / delta
    c = 1.0 / s - beta / delta if estimator == "stl" else beta / delta
    v = eta * w * w * c * c * s / (n * lam * (2.0 - eta * lam))
    S = 40
    mu, _ = realise_geometry(spec, d, seed=0)
    res = simulate(spec, MonteCarloConfig(d=d, seeds=S, eta=eta, n=n, t_end=30.0, n_records=4,
                                          seed=5, estimator=estimator),
                   target_means=mu, m0=np.broadcast_to(mu, (S, 2, d)).copy(), progress=False)
    Tinv = np.linalg.inv(spec.target.T)
    R = res.R[:, -1]
    out = np.einsum("skk->sk", res.Q[:, -1]) - np.einsum("ska,ab,skb->sk", R, Tinv, R)
    expected = (d - 2) * v                              # d - rank(T) coordinates out of span
    se = out.std(ddof=1) / math.sqrt(out.size)
    assert abs(out.mean() - expected) < N_SE * se, (out.mean(), expected, se)
    # the library's formula (continuous time, d - K - M coordinates) is the same to O(eta lam)
    pred = noise_inflation(spec, d, eta, n, t_end=30.0, estimator=estimator)
    assert pred == pytest.approx(expected * (d - 4) / (d - 2), rel=0.02)
    if estimator == "stl":
        assert stl_noise_inflation(spec, d, eta, n, t_end=30.0) == pred


# ----------------------------------------------------------------------------------------
# compare_with_ode
# ----------------------------------------------------------------------------------------

def test_compare_with_ode_is_what_the_command_reports():
    spec = symmetric_bimodal(9.0, ConstantSchedule(1.0))
    cfg = MonteCarloConfig(d=6, seeds=8, eta=0.05, n=4, t_end=3.0)
    res = simulate(spec, cfg, progress=False)
    out = compare_with_ode(spec, cfg, res)
    assert set(out) == {"p", "ci", "k", "n", "comparison", "agreement", "note"}
    collapsed, _ = ode_outcomes(spec, res.Q0, res.R0, res.t_end)
    assert out["k"] == int(collapsed.sum()) and out["n"] == 8
    assert out["agreement"] == pytest.approx(np.mean(collapsed == res.collapsed))
    json.dumps(out)
    from analysis.cli import main
    buf = io.StringIO()
    with redirect_stdout(buf):
        main(["montecarlo", "--d", "6", "--seeds", "8", "--eta", "0.05", "--n", "4",
              "--schedule", "constant", "--t-end", "3", "--json", "--no-progress",
              "--compare-ode"])
    cli = json.loads(buf.getvalue())["ode"]
    for key in ("p", "k", "n", "agreement"):
        assert cli[key] == out[key]


# ----------------------------------------------------------------------------------------
# registries
# ----------------------------------------------------------------------------------------

def test_registries():
    assert {"stl", "reparam"} <= set(ESTIMATORS) and {"sgd", "adam"} <= set(OPTIMIZERS)
    assert len({e.code for e in ESTIMATORS.values()}) == len(ESTIMATORS)
    with pytest.raises(ValueError, match="estimator"):
        MonteCarloConfig(d=5, estimator="score")
    with pytest.raises(ValueError, match="optimizer"):
        MonteCarloConfig(d=5, optimizer="lbfgs")
    with pytest.raises(ValueError, match="code"):
        register_gradient_estimator(GradientEstimator("other", ESTIMATORS["stl"].code, "x"))
    with pytest.raises(ValueError, match="registered"):
        register_optimiser(Optimiser("sgd", 99, "x"))
    assert "other" not in ESTIMATORS and "sgd" in OPTIMIZERS
