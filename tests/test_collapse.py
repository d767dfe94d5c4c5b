"""Collapse-probability estimators against each other (DESIGN.md section 3).

Statistical comparisons use Wilson intervals of the sampled estimator; where several
comparisons are made in one test the confidence level is Bonferroni-corrected so that the
whole test has a false-alarm rate of at most 1% if the estimators agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.cli import main
from analysis.collapse import collapse_probability, critical_angles
from analysis.stats import wilson_interval
from derivations.spec import ConstantSchedule, ExponentialSchedule, symmetric_bimodal

NO_ANNEALING = ConstantSchedule(1.0)
ANNEALING = ExponentialSchedule(20.0, 100.0)


@pytest.mark.parametrize("schedule", [NO_ANNEALING, ANNEALING], ids=["constant", "exponential"])
def test_separatrix_agrees_with_ode_ensemble(schedule):
    spec = symmetric_bimodal(9.0, schedule)
    confidence = 1 - 0.01 / 2            # two dimensions per test
    for i, d in enumerate((1000, 10_000)):
        ode = collapse_probability(spec, d, "ode", draws=5000, seed=11 + i)
        sep = collapse_probability(spec, d, "separatrix")
        lo, hi = wilson_interval(ode.k, ode.n, confidence)
        assert lo <= sep.p <= hi, (d, schedule, ode.p, (lo, hi), sep.p)
        assert sep.details["monotone"]
        assert sep.ci[1] - sep.ci[0] < 0.2 * (hi - lo)   # numerical error << sampling error


def test_separatrix_at_small_d_stays_realisable():
    """d < chi_max^2 = 81: Rayleigh amplitudes up to 9 eps0 would exceed |u| = sigma_init
    sqrt(A) (no vectors realise them); the table stops there and the Rayleigh mass beyond,
    exp(-d/2), enters the error bound.  At d = 20 (mass 4.5e-5) the value must still fall in
    the ode ensemble's 99% Wilson interval."""
    spec = symmetric_bimodal(9.0, NO_ANNEALING)
    small = collapse_probability(spec, 4, "separatrix")
    assert 0 <= small.p <= 1
    assert small.details["error_bound"] >= np.exp(-4 / 2)
    assert any("realisable" in n for n in small.notes)
    sep = collapse_probability(spec, 20, "separatrix")
    ode = collapse_probability(spec, 20, "ode", draws=3000, seed=21)
    lo, hi = wilson_interval(ode.k, ode.n, 0.99)
    assert lo <= sep.p <= hi, (ode.p, (lo, hi), sep.p)


def test_separatrix_error_bound_is_relative_at_large_d():
    """At d = 1e9 theta_c is ~1e-4, below a fixed bisection width of 1e-4: the relative width
    keeps the bound a small fraction of p, and a run 1000x tighter lands inside the bound."""
    spec = symmetric_bimodal(9.0, NO_ANNEALING)
    d = 10 ** 9
    sep = collapse_probability(spec, d, "separatrix")
    bound = sep.details["error_bound"]
    assert 0 < sep.p and bound < 0.01 * sep.p, (sep.p, bound)
    tight = collapse_probability(spec, d, "separatrix", rel_tol=1e-6, tol=1e-9)
    assert abs(tight.p - sep.p) <= bound, (sep.p, tight.p, bound)


def test_ode_without_annealing_is_far_below_no_repulsion_value():
    # without the entropy's repulsion the two components would pick modes independently: 1/2
    res = collapse_probability(symmetric_bimodal(9.0, NO_ANNEALING), 1000, "ode", draws=2000,
                               seed=3)
    assert res.ci[1] < 0.2, res.ci


def test_annealing_lowers_collapse():
    d = 1000
    cold = collapse_probability(symmetric_bimodal(9.0, NO_ANNEALING), d, "ode", draws=3000, seed=5)
    hot = collapse_probability(symmetric_bimodal(9.0, ANNEALING), d, "ode", draws=3000, seed=6)
    assert hot.ci[1] < cold.ci[0], (hot.ci, cold.ci)


def test_linear_estimate_over_predicts():
    spec = symmetric_bimodal(9.0, NO_ANNEALING)
    lin = collapse_probability(spec, 1000, "linear")
    sep = collapse_probability(spec, 1000, "separatrix")
    assert 0 <= lin.p <= 1 and lin.p > sep.p
    assert lin.details["t_star"] > 0 and any("approximation" in n for n in lin.notes)


def test_critical_angle_brackets_outcomes():
    """Integrate directly just inside and outside theta_c: collapse inside, split outside."""
    from analysis.classify import classify
    from derivations.codegen import compile_model
    from solvers.ensemble import pack_state, solve
    spec = symmetric_bimodal(9.0, NO_ANNEALING)
    eps = np.array([0.05, 0.3])
    theta_c, monotone = critical_angles(spec, eps, tol=1e-5)
    assert monotone.all() and np.all((theta_c > 0) & (theta_c < np.pi / 2))
    model = compile_model(spec.structure)
    for e, th in zip(eps, theta_c):
        for dth, expect in ((-1e-3, True), (1e-3, False)):
            a = th + dth
            u = e * (np.cos(a) * np.array([1, 1]) + np.sin(a) * np.array([1, -1])) / np.sqrt(2)
            y0 = pack_state(model, np.eye(2), np.stack([u, -u], axis=-1))
            tr = solve(spec, model, y0, 400.0, rtol=1e-10, atol=1e-12)
            collapsed = classify(tr.Q_final, tr.R_final, spec.target.T)[0]
            assert bool(collapsed) is expect, (e, a)


def test_bad_input_is_rejected():
    spec = symmetric_bimodal(9.0)
    with pytest.raises(ValueError, match="method"):
        collapse_probability(spec, 100, "bogus")
    with pytest.raises(ValueError, match="d:"):
        collapse_probability(spec, 0)
    with pytest.raises(ValueError, match="draws"):
        collapse_probability(spec, 10, draws=0)
    from derivations.spec import TargetMixture
    lopsided = spec.replace(target=TargetMixture([[9.0, -9.0], [-9.0, 9.0]], [0.3, 0.7]))
    with pytest.raises(ValueError, match="separatrix"):
        collapse_probability(lopsided, 100, "separatrix")


def test_collapse_command_prints_json(capsys):
    assert main(["collapse", "--preset", "symmetric-bimodal", "--A", "9", "--schedule",
                 "exponential", "--T0", "20", "--tau", "100", "--d", "1000", "--draws", "200",
                 "--method", "ode", "--seed", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("p", "ci", "k", "n", "d", "method", "params"):
        assert key in out
    assert out["n"] == 200 and out["d"] == 1000 and out["method"] == "ode"
    assert out["params"]["schedule"] == {"kind": "exponential", "T0": 20.0, "tau": 100.0}
    assert out["ci"][0] <= out["p"] <= out["ci"][1]


def test_linear_sampled_orthant_matches_closed_form():
    """The sampled orthant branch (used beyond the antipodal pair) against the arcsin formula."""
    spec = symmetric_bimodal(9.0, NO_ANNEALING)
    closed = collapse_probability(spec, 1000, "linear")
    sampled = collapse_probability(spec, 1000, "linear", draws=20_000, seed=2, orthant="sampled")
    assert closed.details["orthant"] == "closed form" and sampled.details["orthant"] == "sampled"
    lo, hi = wilson_interval(sampled.k, sampled.n, 0.99)
    assert lo <= closed.p <= hi, (closed.p, sampled.p, (lo, hi))
    # beyond the antipodal pair (unequal component weights) the sampled branch runs
    from derivations.spec import VariationalFamily
    lopsided = spec.replace(family=VariationalFamily(2, weights=[0.3, 0.7]))
    res = collapse_probability(lopsided, 1000, "linear", draws=2000, seed=3)
    assert res.details["orthant"] == "sampled" and 0 < res.p < 1
    with pytest.raises(ValueError, match="orthant"):
        collapse_probability(lopsided, 1000, "linear", orthant="closed")


def test_ode_and_montecarlo_agree_through_the_api():
    """Small-step SGD in R^d and the theory ensemble, both through collapse_probability, on an
    annealed case where collapse is common enough to be informative (two-proportion z-test
    at level 1e-3)."""
    from analysis.stats import compare_proportions
    spec = symmetric_bimodal(9.0, ExponentialSchedule(3.0, 3.0))
    d = 100
    ode = collapse_probability(spec, d, "ode", draws=3000, seed=21)
    mc = collapse_probability(spec, d, "montecarlo", draws=400, seed=22, eta=0.005, n=8)
    assert 0.03 < ode.p < 0.5, ode.p
    cmp = compare_proportions(mc.k, mc.n, ode.k, ode.n)
    assert cmp.p_value > 1e-3, (mc.p, ode.p, cmp.to_dict())


def test_executor_gives_the_same_draws():
    from concurrent.futures import ThreadPoolExecutor
    spec = symmetric_bimodal(9.0, NO_ANNEALING)
    local = collapse_probability(spec, 100, "ode", draws=2500, seed=9)
    with ThreadPoolExecutor(2) as ex:
        pooled = collapse_probability(spec, 100, "ode", draws=2500, seed=9, executor=ex)
    np.testing.assert_array_equal(local.outcomes, pooled.outcomes)
    assert local.k == pooled.k and 0 < local.k < local.n
