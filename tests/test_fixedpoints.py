"""Fixed points, their stability and labels (solvers.fixedpoints, solvers.stability).

Checks against independent facts rather than numbers produced by the code:

1. every fixed point returned has max |f| < 1e-10, evaluated here directly with the compiled
   vector field, and is realisable (joint Gram matrix PSD, checked with numpy here);
2. at beta = 1 the target itself belongs to the family (s = Delta, w = pi), so q = p is the
   global minimum of KL(q || p): the state Q = R = T must be found, labelled split, stable;
3. the stability classification agrees with the fate of a small *physical* perturbation
   (the means perturbed as vectors in R^D, then mapped to (Q, R)) integrated forward with
   scipy's solve_ivp: it decays for stable points and grows for unstable ones;
4. labels of hand-made states follow the definition (nearest mode, symmetric when R = 0);
5. trainable weights: the gauge zero mode is removed (one eigenvalue fewer, sum alpha = 0)
   and the model's Jacobian really annihilates the gauge direction;
6. the command line prints one JSON object with the documented keys.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from derivations.codegen import compile_model
from derivations.spec import symmetric_bimodal
from solvers.fixedpoints import (
    assign_modes,
    find_fixed_points,
    gram_min_eigenvalue,
    label_state,
    newton,
)
from solvers.stability import StateLayout, classify_eigenvalues, reduced_basis

A = 9.0


@pytest.fixture(scope="module")
def model():
    return compile_model(symmetric_bimodal(A).structure)


@pytest.fixture(scope="module")
def theta():
    return symmetric_bimodal(A).theta()


@pytest.fixture(scope="module")
def layout():
    return StateLayout(symmetric_bimodal(A).structure)


@pytest.fixture(scope="module")
def fixed_points(model, theta):
    return {beta: find_fixed_points(model, beta, theta) for beta in (0.2, 0.7, 1.0)}


def f_of(model, y, beta, theta):
    out = np.empty(len(y))
    model.rhs(np.ascontiguousarray(y, dtype=float), float(beta), theta, out)
    return out


def gram_data(y):
    """(Q, R) of the symmetric-bimodal layout (M = K = 2), unpacked by hand."""
    Q = np.array([[y[0], y[1]], [y[1], y[2]]])
    R = np.array([[y[3], y[4]], [y[5], y[6]]])
    return Q, R


def T_matrix():
    return A * np.array([[1.0, -1.0], [-1.0, 1.0]])


# ------------------------------------------------------------------------------------------
# 1. residuals and realisability
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.2, 0.7, 1.0])
def test_every_fixed_point_has_tiny_residual_and_is_realisable(model, theta, fixed_points,
                                                               beta):
    fps = fixed_points[beta]
    assert len(fps) >= 4
    for fp in fps:
        assert np.max(np.abs(f_of(model, fp.y, beta, theta))) < 1e-10
        Q, R = gram_data(fp.y)
        G = np.block([[T_matrix(), R.T], [R, Q]])
        assert np.linalg.eigvalsh(G)[0] > -1e-6 * np.max(np.abs(G))
        assert fp.label in ("split", "collapsed", "symmetric")
    # deduplicated: no two listed points coincide
    Y = np.array([fp.y for fp in fps])
    for i in range(len(Y)):
        for j in range(i + 1, len(Y)):
            assert np.max(np.abs(Y[i] - Y[j])) > 1e-6


def test_target_is_the_stable_split_fixed_point_at_beta_one(fixed_points):
    T = T_matrix()
    hits = [fp for fp in fixed_points[1.0]
            if np.allclose(fp.Q, T, atol=1e-7) and np.allclose(fp.R, T, atol=1e-7)]
    assert len(hits) == 1
    fp = hits[0]
    assert fp.label == "split"
    assert fp.stable and fp.kind == "stable"
    assert np.all(fp.eigenvalues.real < 0)
    assert fp.objective == pytest.approx(0.0, abs=1e-9)  # F - const = KL = 0 at q = p


def test_zero_state_is_always_a_symmetric_saddle(fixed_points):
    # both components at the origin: f(0) = 0 by the symmetry of the target
    for beta, fps in fixed_points.items():
        zero = [fp for fp in fps if np.max(np.abs(fp.y)) < 1e-8]
        assert len(zero) == 1, beta
        assert zero[0].label == "symmetric"
        assert not zero[0].stable


# ------------------------------------------------------------------------------------------
# 3. stability versus the growth of a physical perturbation
# ------------------------------------------------------------------------------------------

def _vectors(Q, R, T):
    """Means (K, D) and components (M, D) with the given Gram data (own factorisation)."""
    G = np.block([[T, R.T], [R, Q]])
    lam, V = np.linalg.eigh(0.5 * (G + G.T))
    X = V * np.sqrt(np.clip(lam, 0.0, None))
    X = np.hstack([X, np.zeros((X.shape[0], 2))])  # room for perpendicular perturbations
    return X[:2], X[2:]


def _fate(model, theta, beta, y_star, rng, eps=1e-5, t_max=3000.0):
    """Ratio |y(t) - y*| / |y(0) - y*| when it first leaves [0.01, 100], or at t_max."""
    Q, R = gram_data(y_star)
    mu, m = _vectors(Q, R, T_matrix())
    m = m + eps * np.sqrt(A) * rng.normal(size=m.shape)
    Qp, Rp = m @ m.T, m @ mu.T
    y0 = np.array([Qp[0, 0], Qp[0, 1], Qp[1, 1], Rp[0, 0], Rp[0, 1], Rp[1, 0], Rp[1, 1]])
    d0 = np.max(np.abs(y0 - y_star))

    def grown(t, y):
        return np.max(np.abs(y - y_star)) - 100 * d0
    grown.terminal = True

    def decayed(t, y):
        return np.max(np.abs(y - y_star)) - 0.01 * d0
    decayed.terminal = True

    sol = solve_ivp(lambda t, y: f_of(model, y, beta, theta), (0.0, t_max), y0,
                    method="RK45", rtol=1e-10, atol=1e-13, events=(grown, decayed))
    return np.max(np.abs(sol.y[:, -1] - y_star)) / d0


@pytest.mark.parametrize("beta", [0.2, 0.7])
def test_stability_agrees_with_perturbation_growth(model, theta, fixed_points, beta):
    rng = np.random.default_rng(1)
    seen = {"stable": 0, "unstable": 0}
    done_orbits = set()
    for fp in fixed_points[beta]:
        if fp.orbit in done_orbits:  # symmetric copies behave identically
            continue
        done_orbits.add(fp.orbit)
        assert fp.kind in ("stable", "saddle", "unstable")  # hyperbolic at these beta
        ratio = _fate(model, theta, beta, fp.y, rng)
        if fp.stable:
            assert ratio < 0.1, (fp.label, fp.eigenvalues)
            seen["stable"] += 1
        else:
            assert ratio > 10.0, (fp.label, fp.eigenvalues)
            seen["unstable"] += 1
    assert seen["stable"] >= 1 and seen["unstable"] >= 2


def test_fold_born_collapsed_state_is_stable_only_above_the_fold(fixed_points):
    # at beta = 0.2 the only stable states are the two split ones; at 0.7 stable collapsed
    # states exist as well (reverse KL is mode seeking)
    assert {fp.label for fp in fixed_points[0.2].stable()} == {"split"}
    assert "collapsed" in {fp.label for fp in fixed_points[0.7].stable()}


# ------------------------------------------------------------------------------------------
# 4. labels, realisability, classification helpers
# ------------------------------------------------------------------------------------------

def test_labels_follow_the_definition():
    mu = np.array([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    T = mu @ mu.T

    def lab(m):
        m = np.asarray(m, float)
        return label_state(m @ m.T, m @ mu.T, T)[0], tuple(assign_modes(m @ m.T, m @ mu.T, T))

    assert lab([[2.9, 0.1, 0.0], [-3.2, 0.0, 0.3]]) == ("split", (0, 1))
    assert lab([[2.9, 0.1, 0.0], [2.0, 0.0, 0.3]]) == ("collapsed", (0, 0))
    assert lab([[-2.9, 0.1, 0.0], [-1.0, 0.0, 0.3]]) == ("collapsed", (1, 1))
    assert lab([[0.0, 1.0, 0.0], [0.0, -1.0, 0.5]])[0] == "symmetric"
    # vanishing weight: the component on mode 2 carries no mass
    m = np.array([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    assert label_state(m @ m.T, m @ mu.T, T, weights=[1 - 1e-9, 1e-9]) == \
        ("collapsed", "vanishing_weight")


def test_gram_min_eigenvalue_detects_unrealisable_states():
    T = T_matrix()
    # |m_1|^2 = 1 but m_1 . mu_1 = 5 > |m_1| |mu_1| = 3: impossible in any dimension
    Q = np.array([[1.0, 0.0], [0.0, 1.0]])
    R = np.array([[5.0, -5.0], [0.0, 0.0]])
    assert gram_min_eigenvalue(Q, R, T) < -1e-3
    m = np.array([[1.0, 0.5], [0.2, -0.3]])
    mu = np.array([[3.0, 0.0], [-3.0, 0.0]])
    assert gram_min_eigenvalue(m @ m.T, m @ mu.T, mu @ mu.T) > -1e-12


def test_unrealisable_fixed_points_are_flagged_or_dropped(model, theta):
    all_fps = find_fixed_points(model, 0.5, theta, include_unrealisable=True)
    bad = [fp for fp in all_fps if not fp.realisable]
    assert bad, "the reduced equations have unrealisable fixed points at beta = 0.5"
    for fp in bad:
        Q, R = gram_data(fp.y)
        assert np.linalg.eigvalsh(np.block([[T_matrix(), R.T], [R, Q]]))[0] < -1e-8
    kept = find_fixed_points(model, 0.5, theta)
    assert all(fp.realisable for fp in kept)
    assert kept.n_unrealisable >= 1


def test_classify_eigenvalues():
    assert classify_eigenvalues([-1.0, -0.1 + 2j, -0.1 - 2j]) == ("stable", 0, 0)
    assert classify_eigenvalues([0.3, -1.0, -2.0]) == ("saddle", 1, 0)
    assert classify_eigenvalues([0.3, 1.0]) == ("unstable", 2, 0)
    assert classify_eigenvalues([0.0, -1.0]) == ("non-hyperbolic", 0, 1)


def test_reduced_basis_removes_unrealisable_directions(layout, theta):
    B = reduced_basis(layout, theta)
    # T has rank 1 (mu_2 = -mu_1): R_k1 + R_k2 = 0 for realisable states, two constraints
    assert B.shape == (7, 5)
    assert np.allclose(B.T @ B, np.eye(5))
    for k in range(2):
        c = np.zeros(7)
        c[layout.r_index[k, 0]] = c[layout.r_index[k, 1]] = 1.0
        assert np.allclose(c @ B, 0.0)


# ------------------------------------------------------------------------------------------
# 5. trainable weights: the gauge
# ------------------------------------------------------------------------------------------

def test_trainable_weights_gauge_is_fixed():
    spec = symmetric_bimodal(A, train_weights=True)
    mdl = compile_model(spec.structure)
    th = spec.theta()
    lay = StateLayout(spec.structure)
    fps = find_fixed_points(mdl, 0.7, th, n_random=16)
    target = None
    for fp in fps:
        assert np.max(np.abs(f_of(mdl, fp.y, 0.7, th))) < 1e-10
        assert abs(fp.y[lay.alpha_slice()].sum()) < 1e-12
        # 9 state entries - 1 gauge - 2 unrealisable R directions
        assert fp.eigenvalues.size == 6
        # the model's Jacobian annihilates the gauge direction (1, 1) on alpha
        J = np.empty((9, 9))
        mdl.jac(np.ascontiguousarray(fp.y), 0.7, th, J)
        g = np.zeros(9)
        g[lay.alpha_slice()] = 1.0
        assert np.max(np.abs(J @ g)) < 1e-9
        if fp.label == "split" and np.allclose(fp.w, 0.5, atol=1e-9):
            target = fp
    assert target is not None and target.stable


# ------------------------------------------------------------------------------------------
# input validation and Newton
# ------------------------------------------------------------------------------------------

def test_bad_arguments_raise_value_errors(model, theta):
    with pytest.raises(ValueError, match="beta"):
        find_fixed_points(model, -1.0, theta)
    with pytest.raises(ValueError, match="theta"):
        find_fixed_points(model, 0.5, theta[:3])
    with pytest.raises(ValueError, match="starts"):
        find_fixed_points(model, 0.5, theta, starts=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="model"):
        find_fixed_points(object(), 0.5, theta)
    with pytest.raises(ValueError, match="y0"):
        newton(model.rhs, model.jac, [np.nan] * 7, 0.5, theta)


def test_newton_converges_from_a_nearby_start(model, theta, layout):
    T = T_matrix()
    y0 = layout.pack(T * 1.1, T * 0.95)
    res = newton(model.rhs, model.jac, y0, 1.0, theta, basis=reduced_basis(layout, theta))
    assert res.converged and res.residual < 1e-10
    assert np.allclose(gram_data(res.y)[0], T, atol=1e-8)


# ------------------------------------------------------------------------------------------
# 6. command line
# ------------------------------------------------------------------------------------------

def test_cli_json(capsys):
    from analysis.cli import main
    assert main(["fixed-points", "--preset", "symmetric-bimodal", "--A", "9", "--beta", "0.7",
                 "--starts", "16", "--json"]) == 0
    out = capsys.readouterr().out
    obj = json.loads(out)
    fps = obj["fixed_points"]
    assert len(fps) >= 4
    for fp in fps:
        assert fp["label"] in ("split", "collapsed", "symmetric")
        assert isinstance(fp["stable"], bool)
        assert all(len(e) == 2 for e in fp["eigenvalues"])
        assert np.array(fp["Q"]).shape == (2, 2) and np.array(fp["R"]).shape == (2, 2)
    assert any(fp["stable"] and fp["label"] == "split" for fp in fps)
    assert "branches" not in obj


def test_cli_table(capsys):
    from analysis.cli import main
    assert main(["fixed-points", "--A", "9", "--beta", "0.7", "--starts", "8"]) == 0
    out = capsys.readouterr().out
    assert "split" in out and "stable" in out


def test_nearly_coincident_stable_collapse_is_found_and_kept():
    """A = 15, beta = 1: the stable collapsed state has |m_1 - m_2|^2 ~ 0.01, next to the
    coincident saddle.  It is what the flow converges to from a collapsed start (independent
    check), and the search must neither miss it nor snap it onto the saddle."""
    from derivations.codegen import compile_model
    from derivations.spec import ConstantSchedule, symmetric_bimodal
    from solvers.ensemble import solve
    spec = symmetric_bimodal(15.0, ConstantSchedule(1.0))
    model = compile_model(spec.structure)
    tr = solve(spec, model, {"Q": [[1.2, 1.0], [1.0, 1.2]], "R": [[2.0, -2.0], [1.5, -1.5]]},
               30000.0, rtol=1e-10, atol=1e-12)
    Qf = tr.Q_final
    assert 1e-3 < Qf[0, 0] - 2 * Qf[0, 1] + Qf[1, 1] < 0.1        # distinct but close
    fps = find_fixed_points(model, 1.0, spec.theta(), n_random=24, seed=0)
    stable = [f for f in fps if f.stability.stable and f.label == "collapsed"]
    assert stable
    dist = min(np.max(np.abs(f.y - tr.y_final)) for f in stable)
    assert dist < 1e-4, dist


def test_no_fixed_point_lost_near_beta_one():
    """Away from the bifurcation at beta = 1 the number of fixed points does not change."""
    from derivations.codegen import compile_model
    from derivations.spec import symmetric_bimodal
    spec = symmetric_bimodal(9.0)
    model = compile_model(spec.structure)
    counts = [len(list(find_fixed_points(model, b, spec.theta(), n_random=24, seed=0)))
              for b in (0.9, 0.99, 0.999)]
    assert counts[0] == counts[1] == counts[2], counts
