"""The estimator registry and contract (analysis.estimators), with the worked example of the
README: a new estimator is one class registered in its own module (here, in this test)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from analysis.collapse import collapse_probability
from analysis.estimators import (
    ESTIMATORS,
    CollapseEstimator,
    CollapseResult,
    Cost,
    EstimatorOptions,
    register_estimator,
)
from analysis.stats import proportion
from derivations.spec import symmetric_bimodal


def test_builtins_are_registered_with_typed_options():
    assert {"ode", "separatrix", "linear", "montecarlo"} <= set(ESTIMATORS)
    for name, cls in ESTIMATORS.items():
        assert cls.name == name and issubclass(cls.Options, EstimatorOptions)
        opts = cls.Options()
        with pytest.raises(Exception):          # frozen
            opts.progress = True


def test_unknown_option_names_it_and_the_valid_ones():
    with pytest.raises(ValueError) as info:
        collapse_probability(symmetric_bimodal(9.0), 1000, "separatrix", n_eps=3)
    msg = str(info.value)
    assert "n_eps" in msg and "n_eps_per_decade" in msg and "separatrix" in msg


@pytest.mark.parametrize("method, bad", [("ode", {"rtol": -1.0}), ("ode", {"chunk": 0}),
                                         ("linear", {"orthant": "half"}),
                                         ("montecarlo", {"eta": float("nan")}),
                                         ("montecarlo", {"n": 1.5}),
                                         ("separatrix", {"tol": "small"})])
def test_bad_option_values_are_value_errors_naming_the_option(method, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        collapse_probability(symmetric_bimodal(9.0), 100, method, draws=2, **bad)


def test_cost_guard_refuses_before_working_and_force_is_honoured():
    with pytest.raises(ValueError, match="memory"):
        collapse_probability(symmetric_bimodal(9.0), 1000, "ode", draws=10**10)
    assert Cost(1e30, 0).bytes == 1e30
    Cost(1e30, 1e30).check(force=True, name="x")     # forced: no error


@dataclass(frozen=True)
class _InitialOptions(EstimatorOptions):
    weight_threshold: float = field(default=1e-3, metadata={"help": "weight threshold"})


class _InitialAssignment(CollapseEstimator):
    """Worked example: P(collapse) of the initial nearest-mode assignment (no training), from
    the exact initial law -- a baseline, 1/2 for two components on two modes at any d."""

    name = "test-initial-assignment"
    summary = "collapse of the nearest-mode assignment at t = 0"
    Options = _InitialOptions

    def estimate(self, spec, d, draws, seed, executor, options):
        from analysis.classify import classify
        from analysis.initial_law import sample_overlaps
        Q, R = sample_overlaps(spec, d, draws, np.random.default_rng(seed))
        collapsed, mech = classify(Q, R, spec.target.T, None, options.weight_threshold)
        prop = proportion(int(collapsed.sum()), draws)
        return CollapseResult(self.name, prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
                              options=options.to_dict(), outcomes=collapsed, mechanisms=mech,
                              notes=("no training: the assignment at t = 0",))


def test_a_new_estimator_is_one_registered_class():
    register_estimator(_InitialAssignment)
    try:
        res = collapse_probability(symmetric_bimodal(9.0), 1000, "test-initial-assignment",
                                   draws=4000, seed=1)
        # two components, two antipodal modes, isotropic initial law: each component picks a
        # mode with probability 1/2 independently, so P(both the same) = 1/2
        assert res.ci[0] <= 0.5 <= res.ci[1]
        assert res.method == "test-initial-assignment" and res.n == 4000
        with pytest.raises(ValueError, match="eta"):
            collapse_probability(symmetric_bimodal(9.0), 10, "test-initial-assignment", eta=1)
        with pytest.raises(ValueError, match="registered already"):
            @register_estimator
            class _Clash(_InitialAssignment):
                pass
    finally:
        ESTIMATORS.pop("test-initial-assignment", None)
