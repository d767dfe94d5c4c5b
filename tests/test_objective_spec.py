"""The objective, path and variance fields of the specification, and their command-line flags."""

from __future__ import annotations

import argparse
import json

import pytest

from analysis.commands._common import CommandError, add_problem_arguments, spec_from_args
from derivations.spec import (
    AnnealingPath,
    ModelStructure,
    ProblemSpec,
    VariationalFamily,
    symmetric_bimodal,
)


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_problem_arguments(p)
    return p.parse_args(list(argv))


def test_default_is_reverse_kl_fixed_variances_and_old_keys_unchanged():
    spec = symmetric_bimodal(9.0)
    assert spec.objective == "reverse-kl" and spec.family.variances == "fixed"
    assert spec.structure.key() == "K2_M2_fw_tempering"
    fwd = spec.replace(objective="forward-kl", path=AnnealingPath("mixture", 2.0))
    assert fwd.structure.key() == "K2_M2_fw_mixture_forwardkl"
    assert "sigma0_sq" in fwd.structure.parameter_names


def test_json_round_trip_and_old_json_without_objective():
    spec = symmetric_bimodal(9.0).replace(objective="forward-kl",
                                          path=AnnealingPath("inflation"))
    assert ProblemSpec.from_json(spec.to_json()) == spec
    old = json.loads(symmetric_bimodal(9.0).to_json())
    del old["objective"]
    del old["family"]["variances"]
    assert ProblemSpec.from_dict(old) == symmetric_bimodal(9.0)


@pytest.mark.parametrize("objective, path", [("forward-kl", "tempering"),
                                             ("forward-kl", "geometric"),
                                             ("reverse-kl", "inflation"),
                                             ("reverse-kl", "mixture")])
def test_objective_refuses_other_paths(objective, path):
    with pytest.raises(ValueError, match="objective.*takes the paths"):
        symmetric_bimodal(9.0).replace(objective=objective, path=AnnealingPath(path))
    with pytest.raises(ValueError, match="structure.objective"):
        ModelStructure(2, 2, False, path, objective)


def test_unknown_objective_and_variances_are_named():
    with pytest.raises(ValueError, match="objective: the objective must be one of"):
        symmetric_bimodal(9.0).replace(objective="chi-square")
    with pytest.raises(ValueError, match="family.variances"):
        VariationalFamily(2, variances="untied")
    with pytest.raises(ValueError, match="objective: must be a string"):
        d = json.loads(symmetric_bimodal(9.0).to_json())
        d["objective"] = 3
        ProblemSpec.from_dict(d)


def test_cli_forward_kl_defaults_to_the_inflation_path():
    spec = spec_from_args(_args("--objective", "forward-kl"))
    assert spec.objective == "forward-kl" and spec.path.kind == "inflation"
    spec = spec_from_args(_args("--objective", "forward-kl", "--path", "mixture",
                                "--sigma0-sq", "4"))
    assert spec.path == AnnealingPath("mixture", 4.0)
    with pytest.raises(CommandError, match="--path: the forward-kl objective takes"):
        spec_from_args(_args("--objective", "forward-kl", "--path", "geometric"))
    with pytest.raises(CommandError, match="--sigma0-sq"):
        spec_from_args(_args("--objective", "forward-kl", "--sigma0-sq", "4"))


def test_cli_trainable_variances_and_sizes_select_orthogonal():
    spec = spec_from_args(_args("--trainable-variances", "--K", "1", "--M", "1"))
    assert spec.family.variances == "tied" and (spec.target.K, spec.family.M) == (1, 1)
    assert spec_from_args(_args("--variances", "adiabatic")).family.variances == "adiabatic"
    with pytest.raises(CommandError, match="--trainable-variances: contradicts"):
        spec_from_args(_args("--trainable-variances", "--variances", "adiabatic"))
    # K = M = 2 without a preset stays the symmetric bimodal
    assert spec_from_args(_args("--K", "2")) == spec_from_args(_args())
