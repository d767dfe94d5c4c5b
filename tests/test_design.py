"""Schedule design (analysis.design, ``mfvi design-schedule``; issue 11 section 2).

Small, fast setting: A = 9, d = 1000, budget 20 (short trajectories), a handful of search
evaluations at the designer's reduced separatrix accuracy and a moderately reduced final
accuracy.  Expected values come from independent evaluations (the ode ensemble, a grid computed
here, the command line), never from the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis.cli import main
from analysis.collapse import collapse_probability
from analysis.design import FAMILIES, design_schedule, family_schedule
from analysis.stats import wilson_interval
from derivations.spec import (
    ExponentialSchedule,
    LinearSchedule,
    PiecewiseConstantSchedule,
    ProblemSpec,
    TabulatedSchedule,
    TargetMixture,
    symmetric_bimodal,
)

A, D, BUDGET, TOL = 9.0, 1000, 20.0, 1e-3
SEARCH = {"n_eps_per_decade": 4, "tol": 1e-3, "rel_tol": 1e-2, "n_coarse": 8}
FINAL = {"n_eps_per_decade": 6, "tol": 3e-4, "rel_tol": 3e-3, "n_coarse": 8}
SMALL = dict(max_evaluations=8, grid_T0=(3.0, 20.0), grid_fractions=(1.0,), n_initial=2,
             n_refine=2, search_options=SEARCH, final_options=FINAL)


@pytest.fixture(scope="module")
def designs():
    spec = symmetric_bimodal(A)
    return {fam: design_schedule(spec, D, BUDGET, fam, **{
        **SMALL, "max_evaluations": 14 if fam in ("exponential", "linear") else 8})
        for fam in FAMILIES}


def _monotone_and_within_budget(s, budget, tol=TOL):
    t = np.linspace(0.0, 3.0 * budget, 30001)
    b = np.asarray(s.beta(t))
    assert np.all(np.diff(b) >= -1e-14), s
    assert s.beta_final == 1.0
    assert s.settle_time(tol) <= budget, s
    assert np.all(b[t >= budget] >= 1.0 - tol), s
    assert np.all((b > 0) & (b <= 1.0))


def test_parameterisations_respect_the_budget_and_are_monotone_by_construction():
    rng = np.random.default_rng(7)
    for fam in FAMILIES:
        n = {"exponential": 2, "linear": 2, "piecewise": 6, "free": 8}[fam]
        for _ in range(200):
            # the box and beyond it (values are clipped)
            x = rng.uniform(-0.5, 3.5, n)
            s = family_schedule(fam, x, 37.0)
            _monotone_and_within_budget(s, 37.0)


def test_designed_schedules_respect_the_budget_and_are_monotone(designs):
    kinds = {"exponential": ExponentialSchedule, "linear": LinearSchedule,
             "piecewise": PiecewiseConstantSchedule, "free": TabulatedSchedule}
    for fam, r in designs.items():
        assert isinstance(r.schedule, kinds[fam])
        _monotone_and_within_budget(r.schedule, BUDGET)
        if fam in ("piecewise", "free"):
            assert np.all(np.diff(r.schedule.betas) >= 0)
        assert r.n_evaluations == sum(r.evaluations.values())
        search = r.evaluations["grid"] + r.evaluations["initial"] + r.evaluations["optimizer"]
        assert search <= (14 if fam in ("exponential", "linear") else 8)


def test_optimum_agrees_with_an_independent_ode_ensemble(designs):
    r = designs["exponential"]
    n = 3000
    ode = collapse_probability(r.spec, D, "ode", draws=n, seed=2024)
    # 99.9% Wilson interval of the ensemble (a 1e-3 chance of a false alarm per run, and the
    # seed is fixed), widened by the separatrix's numerical error bound and its neglected
    # O(d^-1/2) fluctuations of Q(0) (relative 1/sqrt(d) of p)
    lo, hi = wilson_interval(ode.k, n, confidence=0.999)
    slack = r.error_bound + r.p / math.sqrt(D)
    assert lo - slack <= r.p <= hi + slack, (r.p, ode.k, n, lo, hi)


def test_optimum_no_worse_than_an_independent_grid_of_the_same_family(designs):
    spec = symmetric_bimodal(A)
    for fam in ("exponential", "linear"):
        r = designs[fam]
        cells = []
        for T0 in (4.0, 8.0, 30.0):
            if fam == "linear":
                s = LinearSchedule(T0, BUDGET)
            else:
                L = math.log((T0 - 1) * (1 - TOL) / TOL)      # settle time / tau
                s = ExponentialSchedule(T0, BUDGET / L * 0.999)
            assert s.settle_time(TOL) <= BUDGET
            c = collapse_probability(spec.replace(schedule=s), D, "separatrix", **FINAL)
            cells.append((c.p, c.details["error_bound"]))
        p_cell, e_cell = min(cells)
        # up to the error bounds of both final values and the resolution of the search
        # (candidates closer than twice its error bound are indistinguishable to it)
        tol = e_cell + r.error_bound + 2 * r.search_uncertainty
        assert r.p <= p_cell + tol, (fam, r.p, cells, r.search_uncertainty)
    # the free family contains the linear one: no worse than the linear grid either
    p_cell, e_cell = min(
        (c.p, c.details["error_bound"]) for c in
        (collapse_probability(spec.replace(schedule=LinearSchedule(T0, BUDGET)), D,
                              "separatrix", **FINAL) for T0 in (4.0, 8.0, 30.0)))
    r = designs["free"]
    assert r.p <= p_cell + e_cell + r.error_bound + 2 * r.search_uncertainty


def test_reported_p_is_that_of_the_returned_specification(designs):
    for r in designs.values():
        again = collapse_probability(ProblemSpec.from_json(r.spec.to_json()), D, "separatrix",
                                     **FINAL)
        assert abs(again.p - r.p) <= 1e-12
        assert r.ci[0] <= r.p <= r.ci[1]


def test_ode_objective_uses_fresh_draws_for_the_final_value():
    # unequal target weights: the separatrix does not apply, auto picks ode
    base = symmetric_bimodal(A)
    t = base.target
    spec = base.replace(target=TargetMixture(t.gram, (0.6, 0.4), t.variance))
    r = design_schedule(spec, 200, 10.0, "linear", max_evaluations=3, grid_T0=(5.0,),
                        grid_fractions=(1.0,), n_initial=2, search_draws=200,
                        final_draws=600, seed=5)
    assert r.method == "ode"
    _monotone_and_within_budget(r.schedule, 10.0)
    again = collapse_probability(r.spec, 200, "ode", draws=600, seed=6)
    assert (r.k, r.n) == (again.k, 600)
    lo, hi = wilson_interval(again.k, 600)
    assert r.ci == pytest.approx((lo, hi))
    with pytest.raises(ValueError, match="^spec:"):
        design_schedule(spec, 200, 10.0, "linear", method="separatrix")


def test_command_json_round_trips_and_collapse_verifies_it(tmp_path, capsys):
    spec_file = tmp_path / "designed.json"
    rc = main(["design-schedule", "--preset", "symmetric-bimodal", "--A", "9", "--d", str(D),
               "--budget", str(BUDGET), "--family", "linear", "--max-evaluations", "3",
               "--n-refine", "1", "--json", "--spec-out", str(spec_file)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    spec = ProblemSpec.from_json(spec_file.read_text())
    assert spec == ProblemSpec.from_dict(out["spec"])
    assert ProblemSpec.from_json(spec.to_json()) == spec
    assert spec.schedule.to_dict() == out["schedule"]
    assert spec.schedule.settle_time(out["beta_tol"]) <= BUDGET
    assert out["family"] == "linear" and out["budget"] == BUDGET
    assert out["n_evaluations"] == sum(out["evaluations"].values())
    assert {"T0", "tau", "p"} <= set(out["grid"]["best"])
    rc = main(["collapse", "--spec", str(spec_file), "--method", "separatrix", "--d", str(D),
               "--json"])
    assert rc == 0
    check = json.loads(capsys.readouterr().out)
    assert abs(check["p"] - out["p"]) <= out["error_bound"] + check["details"]["error_bound"]


@pytest.mark.parametrize("argv, flag", [
    (["--budget", "0"], "--budget"),
    (["--budget", "-5"], "--budget"),
    (["--budget", "10", "--family", "cosine"], "--family"),
    (["--budget", "10", "--method", "gd"], "--method"),
])
def test_command_bad_input_exits_2_naming_the_parameter(argv, flag, capsys):
    rc = main(["design-schedule", "--A", "9", *argv])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err


def test_command_separatrix_on_a_non_antipodal_spec_exits_2(tmp_path, capsys):
    base = symmetric_bimodal(A)
    t = base.target
    f = tmp_path / "skewed.json"
    f.write_text(base.replace(target=TargetMixture(t.gram, (0.7, 0.3), t.variance)).to_json())
    rc = main(["design-schedule", "--spec", str(f), "--budget", "10", "--method", "separatrix"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--method" in err and "separatrix" in err, err


@pytest.mark.parametrize("kwargs, name", [
    ({"budget": 0.0}, "budget"), ({"budget": -1.0}, "budget"),
    ({"budget": float("nan")}, "budget"), ({"budget": "10"}, "budget"),
    ({"family": "cosine"}, "family"), ({"method": "gd"}, "method"),
    ({"optimizer": "bfgs"}, "optimizer"), ({"max_evaluations": 0}, "max_evaluations"),
    ({"n_knots": 1}, "n_knots"), ({"d": 0}, "d"),
])
def test_library_bad_input_names_the_parameter(kwargs, name):
    args = {"d": D, "budget": 10.0, "family": "exponential", **kwargs}
    with pytest.raises(ValueError, match=f"^{name}:"):
        design_schedule(symmetric_bimodal(A), args.pop("d"), args.pop("budget"),
                        args.pop("family"), **args)


# ----------------------------------------------------------------------------------------
# multi-start and the geometric path's base variance
# ----------------------------------------------------------------------------------------

def test_distinct_starts_are_the_best_separated_points():
    from analysis.design import _distinct_starts
    lo, hi = np.zeros(2), np.array([2.0, 1.0])
    hist = [(0.3, np.array([1.0, 0.5])), (0.1, np.array([0.0, 0.0])),
            (0.11, np.array([0.1, 0.05])),      # within 0.1 of the box of the best: skipped
            (2.0, np.array([2.0, 1.0])),        # refused candidate (P = 2): never a start
            (0.2, np.array([0.0, 0.2]))]
    out = _distinct_starts(hist, lo, hi, 3)
    assert [list(x) for x in out] == [[0.0, 0.0], [0.0, 0.2], [1.0, 0.5]]
    assert len(_distinct_starts(hist, lo, hi, 1)) == 1


def test_multi_start_runs_share_the_budget_and_are_deterministic():
    spec = symmetric_bimodal(A)
    kw = dict(max_evaluations=9, grid_T0=(20.0,), grid_fractions=(1.0,), n_initial=0,
              n_refine=1, search_options=SEARCH, final=False, n_starts=2)
    r = design_schedule(spec, D, 10.0, "piecewise", n_stages=1, **kw)
    runs = r.optimizer["starts"]
    assert len(runs) == 2
    # distinct starts; the second search starts no better than the first
    assert max(abs(a - b) for a, b in zip(runs[0]["x0"], runs[1]["x0"])) > 0.0
    assert runs[0]["p0"] <= runs[1]["p0"]
    assert sum(x["evaluations"] for x in runs) == r.evaluations["optimizer"]
    search = r.evaluations["grid"] + r.evaluations["initial"] + r.evaluations["optimizer"]
    assert search <= 9
    # the result is the best point any search saw
    assert r.p <= min(x["p0"] for x in runs)
    again = design_schedule(spec, D, 10.0, "piecewise", n_stages=1, **kw)
    assert again.schedule == r.schedule and again.p == r.p


def test_geometric_path_base_variance_is_searched():
    """sigma0^2 of the geometric path's base as one more parameter (problem sigma0^2 = 3,
    searched in [1, 8]; a narrower base lowers P steeply at A = 9): the designed problem
    carries it, its P is that of the returned spec and below the grid cell's at sigma0^2 = 3,
    and no sigma0^2 of an independent scan at interior values with the designed schedule does
    better (up to the final error bounds and the search's resolution)."""
    from derivations.spec import AnnealingPath
    spec = symmetric_bimodal(A).replace(path=AnnealingPath("geometric", 3.0))
    r = design_schedule(spec, D, 10.0, "exponential", max_evaluations=6,
                        grid_T0=(20.0,), grid_fractions=(1.0,), n_refine=1,
                        search_options=SEARCH, final_options=FINAL,
                        base_variance=(1.0, 8.0))
    bv = r.spec.path.base_variance
    assert r.spec.path.kind == "geometric" and 1.0 <= bv <= 8.0
    assert len(r.parameters) == 3 and r.parameters[-1] == pytest.approx(math.log10(bv))
    again = collapse_probability(ProblemSpec.from_json(r.spec.to_json()), D, "separatrix",
                                 **FINAL)
    assert abs(again.p - r.p) <= 1e-12
    assert r.p < r.grid["best"]["p"]
    scan = [collapse_probability(r.spec.replace(path=AnnealingPath("geometric", v)), D,
                                 "separatrix", **FINAL) for v in (1.4, 2.5)]
    p_scan, e_scan = min((c.p, c.details["error_bound"]) for c in scan)
    assert r.p <= p_scan + e_scan + r.error_bound + 2 * r.search_uncertainty
    with pytest.raises(ValueError, match="^base_variance:"):
        design_schedule(symmetric_bimodal(A), D, 10.0, base_variance=(0.1, 10.0))
    with pytest.raises(ValueError, match="^base_variance:"):
        design_schedule(spec, D, 10.0, base_variance=(1.0, 0.5))


def test_hold_scaling_escape_time_and_one_cell():
    """analysis.design_scaling: T_esc(beta) scales as 1/beta on the tempering path (the rates
    are proportional to beta), and one optimised hold is no worse than holds at the ends of
    a bracket evaluated here independently."""
    from analysis.design_scaling import SCAN_OPTIONS, escape_time_at, hold_scaling, hold_schedule
    spec = symmetric_bimodal(A)
    t1, t02 = escape_time_at(spec, 1.0, D), escape_time_at(spec, 0.2, D)
    assert t02 == pytest.approx(5.0 * t1, rel=1e-6)
    assert escape_time_at(spec, 1.0, 100 * D) - t1 == pytest.approx(
        math.log(100.0) / (2 * _lambda_s(spec)), rel=1e-6)
    [row] = hold_scaling(spec, [D], multiples=(5.0,), beta_bounds=(0.2, 0.8), xatol=0.05)
    assert row["budget"] == pytest.approx(5.0 * t1)
    ends = [collapse_probability(spec.replace(schedule=hold_schedule(b, row["budget"])), D,
                                 "separatrix", **SCAN_OPTIONS).p for b in (0.2, 0.8)]
    assert row["P"] <= min(ends) and row["P"] < row["P_constant"]
    assert row["k"] == pytest.approx(row["budget"] / escape_time_at(spec, row["beta_h"], D))


def _lambda_s(spec):
    """lambda_s at beta = 1 by a central difference of the compiled rhs along e_s (R_k1 =
    -R_k2 = u/2 for both k) at the symmetric state Q = 0, R = 0."""
    from derivations.codegen import compile_model
    model = compile_model(spec.structure)
    names = list(model.state_names)
    v = np.zeros(len(names))
    for k in (1, 2):
        v[names.index(f"R_{k}_1")], v[names.index(f"R_{k}_2")] = 0.5, -0.5
    h, out_p, out_m = 1e-6, np.empty(v.size), np.empty(v.size)
    model.rhs(h * v, 1.0, spec.theta(), out_p)
    model.rhs(-h * v, 1.0, spec.theta(), out_m)
    return float(v @ (out_p - out_m) / (2 * h))
