"""Pseudo-arclength continuation (solvers.continuation) and the bifurcation plot.

Independent checks:

1. the fold where the stable collapsed state of the symmetric bimodal preset (A = 9) is born
   lies where a brute-force scan in beta -- integrating the ODE with scipy from one collapsed
   initial state at each beta on a grid -- switches from ending split to ending collapsed;
2. the branch point on the trivial branch (both components at the origin) in A at beta = 1
   equals the threshold of the linearised single-Gaussian dynamics derived independently
   from Stein's lemma: the mean m = a mu / |mu| obeys da/dt ~ (A E[sech^2(sqrt(A) xi)] - 1) a,
   so A_c solves A E[sech^2(sqrt(A) xi)] = 1 (computed here with scipy quad);
3. the perpendicular splitting of two coinciding components at the origin is neutral exactly
   at beta Delta = s (target variance along a direction orthogonal to the means Delta/beta
   equals the component variance s), where a branch point must appear, and branch switching
   must find the split branch on the realisable side (beta < 1);
4. every continued point is a fixed point (compiled vector field evaluated here).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.integrate import quad, solve_ivp
from scipy.optimize import brentq

from derivations.codegen import compile_model
from derivations.spec import ProblemSpec, TargetMixture, VariationalFamily, symmetric_bimodal
from solvers.continuation import BifurcationDiagram, ParameterMap, continue_branch, trace_branches
from solvers.fixedpoints import find_fixed_points

A = 9.0


@pytest.fixture(scope="module")
def spec():
    return symmetric_bimodal(A)


@pytest.fixture(scope="module")
def model(spec):
    return compile_model(spec.structure)


def f_of(model, y, beta, theta):
    out = np.empty(len(y))
    model.rhs(np.ascontiguousarray(y, dtype=float), float(beta), theta, out)
    return out


@pytest.fixture(scope="module")
def fold_branch(model, spec):
    """The branch through the stable collapsed state at beta = 0.4, continued down in beta."""
    fps = find_fixed_points(model, 0.4, spec.theta(), n_random=8)
    seed = [fp for fp in fps if fp.stable and fp.label == "collapsed"][0]
    pmap = ParameterMap.from_spec(spec, "beta")
    return continue_branch(model, pmap, seed.y, 0.4, 0.25, 0.4), pmap


# ------------------------------------------------------------------------------------------
# parameter map
# ------------------------------------------------------------------------------------------

def test_parameter_map(spec):
    names = spec.structure
    pm = ParameterMap.from_spec(spec, "A", beta=0.5)
    beta, th = pm(4.0)
    assert beta == 0.5
    assert np.allclose(th[:3], [4.0, -4.0, 4.0]) and np.allclose(th[3:], spec.theta()[3:])
    assert pm.value0 == A
    beta, th = ParameterMap.from_spec(spec, "beta")(0.3)
    assert beta == 0.3 and np.allclose(th, spec.theta())
    _, th = ParameterMap.from_spec(spec, "pi_1")(0.3)
    assert np.allclose(th[3:5], [0.3, 0.7])
    _, th = ParameterMap.from_spec(spec, "w_1")(0.2)
    assert np.allclose(th[-2:], [0.2, 0.8])
    _, th = ParameterMap.from_spec(spec, "s")(2.0)
    assert th[6] == 2.0 and th[5] == 1.0
    with pytest.raises(ValueError, match="name"):
        ParameterMap.from_spec(spec, "bogus")
    with pytest.raises(ValueError, match="name"):
        ParameterMap.from_spec(symmetric_bimodal(A, train_weights=True), "w_1")
    with pytest.raises(ValueError, match="sigma0_sq"):
        ParameterMap.from_spec(spec, "sigma0_sq")
    with pytest.raises(ValueError, match="value"):
        ParameterMap.from_spec(spec, "pi_1").check(1.5)
    assert names == pm.structure


def test_continuation_argument_errors(model, spec):
    pm = ParameterMap.from_spec(spec, "beta")
    with pytest.raises(ValueError, match="stop"):
        trace_branches(model, pm, 0.5, 0.5)
    with pytest.raises(ValueError, match="start"):
        trace_branches(model, pm, -0.5, 0.5)
    with pytest.raises(ValueError, match="y0"):
        continue_branch(model, pm, np.full(7, 3.0), 0.5, 0.4, 0.6)
    with pytest.raises(ValueError, match="p0"):
        continue_branch(model, pm, np.zeros(7), 0.9, 0.4, 0.6)


# ------------------------------------------------------------------------------------------
# 1. fold versus a brute-force scan
# ------------------------------------------------------------------------------------------

def _ends_collapsed(model, theta, beta):
    """Integrate from m_1 = 1.3 mu_1, m_2 = 0.4 mu_1 (plus a perpendicular offset) and
    report whether both components end nearest to the same mode."""
    mu = np.array([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    m = np.array([[3.9, 0.1, 0.0], [1.2, -0.1, 0.0]])
    Q, R = m @ m.T, m @ mu.T
    y0 = np.array([Q[0, 0], Q[0, 1], Q[1, 1], R[0, 0], R[0, 1], R[1, 0], R[1, 1]])
    sol = solve_ivp(lambda t, y: f_of(model, y, beta, theta), (0.0, 3000.0), y0,
                    method="LSODA", rtol=1e-9, atol=1e-12)
    y = sol.y[:, -1]
    assert np.max(np.abs(f_of(model, y, beta, theta))) < 1e-6  # settled
    d2 = np.array([[y[0] - 2 * y[3 + a] + A for a in range(2)],
                   [y[2] - 2 * y[5 + a] + A for a in range(2)]])
    a1, a2 = np.argmin(d2, axis=1)
    return a1 == a2


def test_fold_agrees_with_brute_force_scan(model, spec, fold_branch):
    branch, _ = fold_branch
    folds = branch.folds()
    assert len(folds) == 1
    p_fold = folds[0].p
    # brute force: the outcome of the flow from one collapsed start on a beta grid
    grid = np.round(np.arange(0.27, 0.3351, 0.005), 6)
    outcome = [_ends_collapsed(model, spec.theta(), b) for b in grid]
    switches = [i for i in range(len(grid) - 1) if outcome[i] != outcome[i + 1]]
    assert len(switches) == 1
    i = switches[0]
    assert not outcome[i] and outcome[i + 1]  # collapsed basin appears with increasing beta
    assert grid[i] < p_fold < grid[i + 1]


def test_fold_branch_structure(model, spec, fold_branch):
    branch, _ = fold_branch
    fold = branch.folds()[0]
    k = fold.index
    # a fold is a turning point: beta >= beta_fold on the whole branch (within [0.25, 0.4])
    assert np.all(branch.p >= fold.p - 1e-12)
    # one side stable (the collapsed node), the other a saddle with one unstable direction
    sides = {bool(branch.stable[k - 3]), bool(branch.stable[k + 3])}
    assert sides == {True, False}
    unstable_side = k - 3 if not branch.stable[k - 3] else k + 3
    assert branch.n_unstable[unstable_side] == 1
    # at the fold the Jacobian (on the physical subspace) has a zero eigenvalue
    assert np.min(np.abs(fold.eigenvalues)) < 1e-6
    # every point of the branch is a fixed point
    for p, y in zip(branch.p, branch.y):
        assert np.max(np.abs(f_of(model, y, p, spec.theta()))) < 1e-9


# ------------------------------------------------------------------------------------------
# 2. branch point versus the linear threshold A_c
# ------------------------------------------------------------------------------------------

def test_branch_point_in_A_matches_linear_threshold(model, spec):
    def g(a):
        integrand = lambda x: np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi) \
            / np.cosh(min(np.sqrt(a) * abs(x), 350.0)) ** 2
        return a * quad(integrand, -np.inf, np.inf, epsabs=1e-14, epsrel=1e-13)[0] - 1.0

    A_c = brentq(g, 1.01, 5.0, xtol=1e-13)
    pm = ParameterMap.from_spec(spec, "A", beta=1.0)
    branch = continue_branch(model, pm, np.zeros(7), 2.0, 1.5, 3.0)
    bps = branch.branch_points()
    assert len(bps) == 1
    assert bps[0].p == pytest.approx(A_c, abs=1e-7)
    assert np.allclose(branch.y, 0.0, atol=1e-12)  # the trivial branch stays trivial
    # one more unstable direction beyond the threshold
    assert branch.n_unstable[branch.p > A_c + 0.05].min() == \
        branch.n_unstable[branch.p < A_c - 0.05].max() + 1


# ------------------------------------------------------------------------------------------
# 3. branch point at beta Delta = s and branch switching
# ------------------------------------------------------------------------------------------

def test_perpendicular_split_branch_point_and_switching(model, spec):
    pm = ParameterMap.from_spec(spec, "beta")
    diagram = trace_branches(model, pm, 0.7, 1.3, seeds=[(0.8, np.zeros(7))])
    assert isinstance(diagram, BifurcationDiagram)
    trivial = diagram.branches[0]
    bps = trivial.branch_points()
    assert len(bps) == 1 and bps[0].p == pytest.approx(1.0, abs=1e-6)
    switched = [b for b in diagram.branches[1:] if "branch point" in b.origin]
    assert len(switched) >= 1
    b = switched[0]
    # the bifurcating branch: components split perpendicular to the means, on the
    # realisable side beta < 1, |m_1 - m_2|^2 > 0, R = 0
    assert np.all(b.p <= 1.0 + 1e-9) and b.p.min() == pytest.approx(0.7)
    assert np.all(np.abs(b.y[:, 3:]) < 1e-9)
    assert np.all(b.y[1:, 0] - 2 * b.y[1:, 1] + b.y[1:, 2] > 0)
    assert set(b.labels) == {"symmetric"}
    for p, y in zip(b.p, b.y):
        assert np.max(np.abs(f_of(model, y, p, spec.theta()))) < 1e-9


def test_general_structure_is_accepted():
    # an asymmetric target (K = M = 2, unequal weights, full-rank T): continuation in pi_1
    spec = ProblemSpec(target=TargetMixture(gram=[[4.0, 1.0], [1.0, 3.0]],
                                            weights=[0.6, 0.4]),
                       family=VariationalFamily(2, [0.5, 0.5]))
    mdl = compile_model(spec.structure)
    pm = ParameterMap.from_spec(spec, "pi_1", beta=1.0)
    fps = find_fixed_points(mdl, 1.0, spec.theta(), n_random=8)
    seed = fps.stable()[0]
    br = continue_branch(mdl, pm, seed.y, 0.6, 0.5, 0.7)
    assert br.p.min() == pytest.approx(0.5) and br.p.max() == pytest.approx(0.7)
    for p, y in zip(br.p, br.y):
        beta, th = pm(p)
        assert np.max(np.abs(f_of(mdl, y, beta, th))) < 1e-9


# ------------------------------------------------------------------------------------------
# plotting and command line
# ------------------------------------------------------------------------------------------

def test_plot_bifurcation_writes_png(tmp_path, model, fold_branch):
    from analysis.bifurcation import plot_bifurcation, summary_values
    branch, _ = fold_branch
    diagram = BifurcationDiagram("beta", 0.25, 0.4, (branch,), tuple(model.state_names))
    path = tmp_path / "bif.png"
    fig = plot_bifurcation(diagram, path=path)
    assert path.exists() and path.stat().st_size > 1000
    styles = {line.get_linestyle() for ax in fig.axes for line in ax.get_lines()}
    assert "-" in styles and "--" in styles  # stable and unstable parts
    import matplotlib.pyplot as plt
    plt.close(fig)
    s = summary_values(branch.y, "split", diagram.state_names)
    assert np.allclose(s, 0.5 * (branch.y[:, 3] - branch.y[:, 5]))
    with pytest.raises(ValueError, match="summary"):
        summary_values(branch.y, "nonsense", diagram.state_names)


def test_cli_continue_json(capsys, tmp_path):
    from analysis.cli import main
    plot = tmp_path / "diagram.png"
    assert main(["fixed-points", "--A", "9", "--beta", "0.35", "--continue", "beta", "0.28",
                 "0.35", "--starts", "8", "--max-branches", "8", "--no-switch",
                 "--plot", str(plot), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["continuation"]["parameter"] == "beta"
    assert len(obj["fixed_points"]) >= 4 and obj["branches"]
    folds = [sp["p"] for b in obj["branches"] for sp in b["special_points"]
             if sp["kind"] == "fold"]
    assert folds and all(0.30 < p < 0.305 for p in folds)
    assert plot.exists()


def test_cli_rejects_bad_continuation(capsys):
    from analysis.cli import main
    assert main(["fixed-points", "--continue", "gamma", "0", "1"]) == 2
    assert "gamma" in capsys.readouterr().err
    assert main(["fixed-points", "--continue", "beta", "0.5", "0.5"]) == 2
    assert "STOP must differ" in capsys.readouterr().err
