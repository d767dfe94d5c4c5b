"""Phase-diagram sweeps: cell specifications, resume after interruption, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from analysis.cli import main
from analysis.phase import apply_cell, collapse_sweep
from analysis.sweep import load_sweep
from derivations.spec import ConstantSchedule, ExponentialSchedule, symmetric_bimodal


def test_apply_cell_changes_exactly_the_named_parameters():
    base = symmetric_bimodal(9.0, ExponentialSchedule(20.0, 100.0))
    s = apply_cell(base, {"T0": 5.0, "tau": 7.0, "A": 4.0, "sigma_init": 0.5})
    assert s.schedule == ExponentialSchedule(5.0, 7.0)
    np.testing.assert_allclose(s.target.T, [[4.0, -4.0], [-4.0, 4.0]])
    assert s.init.sigma_init == 0.5 and s.family == base.family and s.path == base.path
    s2 = apply_cell(base, {"pi_1": 0.3})
    assert s2.target.weights == (0.3, 0.7)
    with pytest.raises(ValueError, match="unknown axis"):
        apply_cell(base, {"bogus": 1.0})
    with pytest.raises(ValueError, match="T0 is not a parameter of the constant schedule"):
        apply_cell(symmetric_bimodal(9.0, ConstantSchedule(1.0)), {"T0": 3.0})


def test_interrupted_collapse_sweep_resumes_to_the_same_result(tmp_path):
    spec = symmetric_bimodal(9.0, ExponentialSchedule(5.0, 5.0))
    axes = {"T0": [2.0, 8.0], "A": [4.0, 9.0]}
    kw = dict(d=100, method="ode", draws=150, seed=4, progress=False)
    fresh = collapse_sweep(spec, axes, out_dir=tmp_path / "fresh", **kw)
    # a run killed after two cells: only their files exist
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "fresh", partial)
    cells = sorted((partial / "cells").glob("*.json"))
    for manifest in cells[2:]:
        manifest.unlink()
        manifest.with_suffix(".npz").unlink()
    before = load_sweep(partial)
    assert before.n_done == 2 and np.isnan(before.scalar("p")).sum() == 2
    resumed = collapse_sweep(spec, axes, out_dir=partial, **kw)
    assert sorted(resumed.computed) == [2, 3]
    np.testing.assert_array_equal(resumed.scalar("p"), fresh.scalar("p"))
    np.testing.assert_array_equal(resumed.stacked("outcomes"), fresh.stacked("outcomes"))
    # and the cells are genuinely different computations
    assert len(np.unique(fresh.scalar("p"))) > 1


def test_phase_diagram_command(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["phase-diagram", "--A", "9", "--schedule", "exponential", "--axis",
                 "T0=3,20", "--axis", "tau=3:30:2:log", "--method", "separatrix", "--d", "1000",
                 "--out", str(out), "--plot", str(tmp_path / "p.png"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    p = np.array(payload["p"], dtype=float)
    assert p.shape == (2, 2) and np.all((p > 0) & (p < 1))
    assert payload["axes"]["tau"] == pytest.approx([3.0, 30.0])
    assert (tmp_path / "p.png").exists() and (tmp_path / "p.json").exists()


def test_phase_diagram_stability_command(tmp_path, capsys):
    out = tmp_path / "stab"
    assert main(["phase-diagram", "--stability", "--axis", "beta=0.2,1", "--axis", "A=4,9",
                 "--out", str(out), "--plot", str(tmp_path / "s.png"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    c = np.array(payload["stable_collapsed"])
    # no stable collapsed state at A = 4 or at beta = 0.2 (below the fold near 0.30 for A = 9);
    # at A = 9, beta = 1 the four images of the stable collapsed state
    assert c.shape == (2, 2) and c[0].tolist() == [0, 0] and c[1].tolist() == [0, 4]
    assert np.array(payload["stable_split"]).min() >= 2
    assert (tmp_path / "s.png").exists()
    assert main(["phase-diagram", "--stability", "--axis", "T0=2,3", "--out", str(out)]) == 2
    assert "--stability" in capsys.readouterr().err
