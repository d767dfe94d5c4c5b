"""The issue-11 figure jobs of ``mfvi reproduce`` (analysis/reproduce/design.py), from the
quick run's JSON sidecars: the numbers must make physical sense.

Tolerances come from the error bounds the separatrix estimator reports with each number (a
local slope between two points is uncertain by the sum of their relative errors over the log
ratio of the dimensions) and, for the designer, from the resolution of its search (the gap
between a candidate's search value and its final value): nothing is tuned to what passed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest


@pytest.fixture(scope="module")
def large_d(quick_figures):
    assert (quick_figures / "large_d_law.png").stat().st_size > 0
    return json.loads((quick_figures / "large_d_law.json").read_text())


@pytest.fixture(scope="module")
def pareto(quick_figures):
    assert (quick_figures / "design_pareto.png").stat().st_size > 0
    return json.loads((quick_figures / "design_pareto.json").read_text())


def test_exponent_is_the_closed_form_of_the_rates(large_d):
    assert large_d["alpha"] == pytest.approx(0.5 * (large_d["lambda_a"] / large_d["lambda_s"]
                                                    - 1.0), rel=1e-12)
    assert 0 < large_d["lambda_s"] < large_d["lambda_a"]
    assert "\\lambda_{a}" in large_d["latex"]["alpha"]


def test_probability_falls_with_d_and_the_slopes_approach_minus_alpha(large_d):
    alpha = large_d["alpha"]
    for c in large_d["curves"]:
        ds = np.asarray(c["ds"])
        P, err = np.asarray(c["P_separatrix"]), np.asarray(c["error_bound"])
        assert np.all((P > 0) & (P < 1))
        assert np.all(np.diff(P) < 0), c["label"]
        rel = err / P
        s = np.log(P[1:] / P[:-1]) / np.log(ds[1:] / ds[:-1])
        ds_err = (rel[1:] + rel[:-1]) / np.log(ds[1:] / ds[:-1])
        # the slope converges to -alpha from above (the log factor L^p, p > 0, flattens it)
        assert np.all(s > -alpha - ds_err), (c["label"], s)
        assert np.all(s < 0)
        assert np.all(np.diff(s) < ds_err[1:] + ds_err[:-1]), (c["label"], s)
        # the law beside the separatrix: within 10% (plus the error bound) at the largest d
        assert abs(c["ratio"][-1] - 1.0) < 0.1 + rel[-1], c["label"]
    const = large_d["curves"][0]
    assert const["label"] == "no annealing" and const["d_10pct"] is not None


def test_fixed_tau_loses_its_benefit_and_tau_growing_with_ln_d_keeps_it(large_d):
    """The annealing-time scaling (issue 11 section 1): with tau fixed the benefit
    P(annealed)/P(no annealing) drifts back towards 1 as d grows; with tau(d) of the
    escape-stage rule it does not."""
    sc = large_d["scaling"]
    ds = np.asarray(sc["ds"])
    assert ds.size >= 2 and np.all(np.diff(ds) > 0)
    taus = np.asarray(sc["tau_scaled"])
    assert taus[0] == pytest.approx(sc["tau_fixed"]) and np.all(np.diff(taus) > 0)
    # tau(d) is linear in ln(d / (sigma_init^2 A)) (sigma_init = 1)
    assert taus[-1] / taus[0] == pytest.approx(math.log(ds[-1] / 9.0) / math.log(ds[0] / 9.0),
                                               rel=1e-9)
    P0, Pf, Ps = (np.asarray(sc[k]) for k in ("P_no_annealing", "P_fixed", "P_scaled"))
    e0, ef, es = (np.asarray(sc[k]) for k in ("error_no_annealing", "error_fixed",
                                              "error_scaled"))
    rf, rs = Pf / P0, Ps / P0
    u_f = rf * (ef / Pf + e0 / P0)                  # error of a ratio, to first order
    u_s = rs * (es / Ps + e0 / P0)
    assert np.all(rf < 1 + u_f) and np.all(rs < 1 + u_s)      # annealing never hurts here
    assert rf[-1] - rf[0] > u_f[-1] + u_f[0]                  # fixed tau: benefit shrinks
    assert rs[-1] <= rs[0] + u_s[-1] + u_s[0]                 # tau(d): benefit kept
    assert rs[-1] < rf[-1] - u_s[-1] - u_f[-1]


def _rows(pareto, fam):
    return sorted((r for r in pareto["rows"] if r["family"] == fam), key=lambda r: r["budget"])


def _resolution(r):
    """What the designer could tell apart: its final error bound and the search/final gap."""
    return (r["error_bound"] or 0.0) + abs(r["search_p"] - r["p"])


def test_pareto_fronts_are_physical(pareto):
    from derivations.spec import schedule_from_dict
    p_none = pareto["no_annealing"]["p"]
    fams = list(dict.fromkeys(r["family"] for r in pareto["rows"]))
    assert "free" in fams and "exponential" in fams
    for fam in fams:
        rows = _rows(pareto, fam)
        assert len(rows) >= 2
        for r in rows:
            assert 0 < r["p"] < p_none, (fam, r["budget"], r["p"])
            s = schedule_from_dict(r["schedule"])
            assert s.beta_final == 1.0 and s.settle_time(1e-3) <= r["budget"] * (1 + 1e-9)
        for a, b in zip(rows, rows[1:]):       # a longer budget is never worse
            assert b["p"] <= a["p"] + _resolution(a) + _resolution(b), (fam, a, b)
    # the free form contains the linear schedules and beats the best (T0, tau) cells
    for e, f in zip(_rows(pareto, "exponential"), _rows(pareto, "free")):
        assert f["p"] <= e["p"] + _resolution(e) + _resolution(f)
        g = e["grid_best"]
        assert e["p"] <= g["p"] + _resolution(e) + (e["error_bound"] or 0.0)
