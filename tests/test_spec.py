"""Validation of the problem specification and its JSON round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from derivations.spec import (
    AnnealingPath,
    ConstantSchedule,
    ExponentialSchedule,
    Initialisation,
    LinearSchedule,
    ModelStructure,
    PiecewiseConstantSchedule,
    ProblemSpec,
    TabulatedSchedule,
    TargetMixture,
    VariationalFamily,
    schedule_from_dict,
    symmetric_bimodal,
)

GOOD_T = [[2.0, -1.0], [-1.0, 2.0]]


@pytest.mark.parametrize("make, field, phrase", [
    (lambda: TargetMixture(gram=[[1.0, 0.5], [0.4, 1.0]], weights=[0.5, 0.5]),
     "target.gram", "symmetric"),
    (lambda: TargetMixture(gram=[[1.0, 2.0], [2.0, 1.0]], weights=[0.5, 0.5]),
     "target.gram", "positive semi-definite"),
    (lambda: TargetMixture(gram=[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], weights=[0.5, 0.5]),
     "target.gram", "square"),
    (lambda: TargetMixture(gram=np.zeros((0, 0)), weights=[]), "target.gram", ">= 1"),
    (lambda: TargetMixture(gram=GOOD_T, weights=[0.5, 0.5], variance=0.0),
     "target.variance", "> 0"),
    (lambda: TargetMixture(gram=GOOD_T, weights=[0.5, 0.5], variance=-1.0),
     "target.variance", "> 0"),
    (lambda: TargetMixture(gram=GOOD_T, weights=[1.2, -0.2]), "target.weights", "non-negative"),
    (lambda: TargetMixture(gram=GOOD_T, weights=[0.5, 0.6]), "target.weights", "sum to 1"),
    (lambda: TargetMixture(gram=GOOD_T, weights=[1.0]), "target.weights", "length 2"),
    (lambda: TargetMixture(gram=[[1.0, math.nan], [math.nan, 1.0]], weights=[0.5, 0.5]),
     "target.gram", "finite"),
    (lambda: TargetMixture(gram=GOOD_T, weights=[0.5, 0.5], variance=math.inf),
     "target.variance", "finite"),
    (lambda: VariationalFamily(0), "family.n_components", ">= 1"),
    (lambda: VariationalFamily(2, weights=[0.3, 0.3]), "family.weights", "sum to 1"),
    (lambda: VariationalFamily(2, weights=[1.5, -0.5]), "family.weights", "non-negative"),
    (lambda: VariationalFamily(2, variance=0), "family.variance", "> 0"),
    (lambda: VariationalFamily(2, weights=[math.nan, 0.5]), "family.weights", "finite"),
    (lambda: AnnealingPath("geometric", -1.0), "path.base_variance", "> 0"),
    (lambda: AnnealingPath("bogus"), "path.kind", "tempering"),
    (lambda: LinearSchedule(0.5, 10), "schedule.T0", ">= 1"),
    (lambda: ExponentialSchedule(20, 0), "schedule.tau", "> 0"),
    (lambda: ExponentialSchedule(20, -3), "schedule.tau", "> 0"),
    (lambda: ExponentialSchedule(math.nan, 3), "schedule.T0", "finite"),
    (lambda: ConstantSchedule(1.5), "schedule.beta_value", "(0, 1]"),
    (lambda: ConstantSchedule(0.0), "schedule.beta_value", "(0, 1]"),
    (lambda: PiecewiseConstantSchedule([0.5, 1.2], [10.0]), "schedule.betas", "(0, 1]"),
    (lambda: PiecewiseConstantSchedule([0.5, 1.0], [10.0, 20.0]), "schedule.breakpoints",
     "breakpoints"),
    (lambda: TabulatedSchedule([0.0, 5.0, 3.0], [0.1, 0.5, 1.0]), "schedule.times",
     "increasing"),
    (lambda: TabulatedSchedule([0.0, 5.0], [0.0, 1.0]), "schedule.betas", "(0, 1]"),
    (lambda: TabulatedSchedule([0.0, math.inf], [0.5, 1.0]), "schedule.times", "finite"),
    (lambda: Initialisation(sigma_init=0.0), "init.sigma_init", "> 0"),
    (lambda: ModelStructure(0, 2), "structure.K", ">= 1"),
    (lambda: ModelStructure(2, 2, "no"), "structure.train_weights", "bool"),
    (lambda: ProblemSpec.from_dict({**symmetric_bimodal(4.0).to_dict(),
                                    "family": {"n_components": 2, "bogus": 1}}),
     "family.bogus", "unknown field"),
    (lambda: ProblemSpec.from_dict({k: v for k, v in symmetric_bimodal(4.0).to_dict().items()
                                    if k != "init"}),
     "specification", "missing section 'init'"),
    (lambda: ProblemSpec.from_dict({**symmetric_bimodal(4.0).to_dict(), "family": {}}),
     "family.n_components", "required field is missing"),
    (lambda: symmetric_bimodal(-1.0), "A", "> 0"),
    (lambda: symmetric_bimodal(True), "A", "real number"),
    (lambda: symmetric_bimodal("9"), "A", "real number"),
    (lambda: ExponentialSchedule(T0=2), "schedule.tau", "missing"),
    (lambda: LinearSchedule(tau=2), "schedule.T0", "missing"),
    (lambda: schedule_from_dict({"kind": "exponential", "T0": 2.0}), "schedule.tau", "missing"),
    (lambda: schedule_from_dict({"kind": "exponential", "T0": 2.0, "tau": 1.0, "x": 1}),
     "schedule.x", "unknown field"),
    (lambda: schedule_from_dict({"kind": "cosine"}), "schedule.kind", "one of"),
    (lambda: PiecewiseConstantSchedule.from_stages([(1.0, 0.5)]), "schedule.stages", "t = 0"),
    (lambda: ConstantSchedule(math.nan), "schedule.beta_value", "finite"),
])
def test_validation_errors_name_field_and_constraint(make, field, phrase):
    with pytest.raises(ValueError) as info:
        make()
    msg = str(info.value)
    assert field in msg and phrase in msg, msg


def test_means_and_gram_must_agree():
    means = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    t = TargetMixture.from_means(means, [0.3, 0.7])
    np.testing.assert_allclose(t.T, means @ means.T)
    with pytest.raises(ValueError, match="target.means"):
        TargetMixture(gram=np.eye(2), weights=[0.5, 0.5], means=means)


def test_centres_must_be_consistent_with_target():
    spec = symmetric_bimodal(4.0)
    bad = Initialisation(centre_gram=[[0.0, 0.0], [0.0, 0.0]],
                         centre_overlaps=[[1.0, -1.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="positive semi-definite"):
        spec.replace(init=bad)


ALL_SCHEDULES = [ConstantSchedule(0.4), LinearSchedule(5.0, 30.0), ExponentialSchedule(20, 100),
                 PiecewiseConstantSchedule([0.1, 0.5, 1.0], [10.0, 25.0]),
                 TabulatedSchedule([0.0, 4.0, 9.0], [0.2, 0.7, 1.0])]


@pytest.mark.parametrize("schedule", ALL_SCHEDULES)
def test_json_round_trip_is_exact(schedule):
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 5)) / 3
    spec = ProblemSpec(
        target=TargetMixture.from_means(means, [0.2, 0.3, 0.5], variance=0.7),
        family=VariationalFamily(2, [1 / 3, 2 / 3], 1.1, train_weights=True),
        path=AnnealingPath("geometric", 2.5), schedule=schedule,
        init=Initialisation(0.9, centre_gram=[[0.1, 0.0], [0.0, 0.2]],
                            centre_overlaps=[[0.01, 0.0, 0.0], [0.0, 0.02, 0.0]]))
    back = ProblemSpec.from_json(spec.to_json())
    assert back == spec
    assert back.to_json() == spec.to_json()
    np.testing.assert_array_equal(back.theta(), spec.theta())


def test_schedules_values():
    lin = LinearSchedule(4.0, 10.0)
    assert lin.beta(0.0) == pytest.approx(0.25) and lin.beta(5.0) == pytest.approx(0.625)
    assert lin.beta(10.0) == 1.0 and lin.beta(50.0) == 1.0
    exp = ExponentialSchedule(20.0, 100.0)
    assert exp.beta(0.0) == pytest.approx(1 / 20)
    assert exp.beta(100.0) == pytest.approx(1 / (1 + 19 / math.e))
    t_hit = exp.time_to_reach(1e-3)
    assert 1 - exp.beta(t_hit) == pytest.approx(1e-3, rel=1e-9)
    pw = PiecewiseConstantSchedule([0.1, 0.5, 1.0], [10.0, 25.0])
    assert [pw.beta(t) for t in (0, 9.99, 10, 24, 25, 1e6)] == [0.1, 0.1, 0.5, 0.5, 1.0, 1.0]
    assert pw.t_final == 25.0
    tab = TabulatedSchedule([0.0, 4.0, 9.0], [0.2, 0.7, 1.0])
    assert tab.beta(2.0) == pytest.approx(0.45) and tab.beta(100.0) == 1.0


def test_symmetric_bimodal_preset():
    spec = symmetric_bimodal(9.0)
    np.testing.assert_array_equal(spec.target.T, [[9.0, -9.0], [-9.0, 9.0]])
    assert spec.target.weights == (0.5, 0.5) and spec.family.weights == (0.5, 0.5)
    assert spec.target.variance == 1.0 and spec.family.variance == 1.0
    assert spec.path.kind == "tempering" and spec.init.sigma_init == 1.0


def test_spec_import_does_not_import_sympy():
    import subprocess
    import sys
    code = ("import sys, derivations, solvers.signatures; "
            "derivations.symmetric_bimodal(2.0); print('sympy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_schedules_know_their_final_beta():
    """beta_final is where beta(t) settles: checked against beta at a very late time."""
    for sch, final in ((ConstantSchedule(0.4), 0.4), (LinearSchedule(5.0, 10.0), 1.0),
                       (ExponentialSchedule(20.0, 3.0), 1.0),
                       (PiecewiseConstantSchedule([0.2, 0.7], [5.0]), 0.7),
                       (TabulatedSchedule([0.0, 5.0], [0.1, 0.9]), 0.9)):
        assert sch.beta_final == final
        assert float(sch.beta(1e4)) == pytest.approx(final, abs=1e-12)
