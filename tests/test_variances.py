"""Trainable variances (issue 12, part 2): the tied flow and the adiabatic limit.

Independent checks, none of them reading numbers from the code under test:

* the generated tied-variance vector field (dQ/dt, dR/dt and d(log s)/dt at finite d) against
  a direct Monte Carlo computation in R^d written here: reparameterised samples
  ``x = m_k + sqrt(s) eps`` of the d-dimensional gradient of the reverse KL with respect to
  m_k and log s (``grad_x log q``, ``grad_x log p`` written from the densities), mapped to the
  drift of (Q, R) and of log s with the learning-rate ratio 1/d; tolerance from the Monte
  Carlo standard error of the antithetic pairs;
* K = M = 1 (a Gaussian fitting a Gaussian at inverse temperature beta, tempering): the fixed
  point is m = mu, s = Delta / beta exactly for every d, found by the solver and by the CLI;
* the adiabatic substitution s = s*(beta) = 1 / (beta/Delta + gamma/sigma0^2) is the d -> inf
  limit of the tied fixed point (inv_d -> 0), with an O(1/d) shift at finite d.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from derivations.codegen import compile_model
from derivations.spec import ModelStructure, parameter_names, state_names
from solvers.fixedpoints import find_fixed_points

# ----------------------------------------------------------------------------------------
# helpers: a problem in R^d and its parameter vector, written independently of spec.theta
# ----------------------------------------------------------------------------------------

def _theta(structure: ModelStructure, T: np.ndarray, pi: np.ndarray, Delta: float,
           w: np.ndarray, *, s: float | None = None, inv_d: float | None = None,
           sigma0_sq: float | None = None) -> np.ndarray:
    vals = {"Delta": Delta, "s": s, "inv_d": inv_d, "sigma0_sq": sigma0_sq}
    K = structure.K
    for a in range(K):
        vals[f"pi_{a + 1}"] = pi[a]
        for b in range(a, K):
            vals[f"T_{a + 1}_{b + 1}"] = T[a, b]
    for k in range(structure.M):
        vals[f"w_{k + 1}"] = w[k]
    names = parameter_names(structure.K, structure.M, False, structure.path,
                            structure.variances)
    return np.array([vals[n] for n in names], dtype=float)


def _logsumexp(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log sum exp over the last axis, softmax) of z (..., n)."""
    zmax = z.max(axis=-1, keepdims=True)
    e = np.exp(z - zmax)
    tot = e.sum(axis=-1, keepdims=True)
    return (zmax + np.log(tot))[..., 0], e / tot


def _direct_drift(mu: np.ndarray, pi: np.ndarray, Delta: float, m: np.ndarray, w: np.ndarray,
                  s: float, beta: float, gamma: float, sigma0_sq: float, n_pairs: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo drift in R^d of the tied-variance gradient flow of
    ``F = E_q log q - beta E_q log p - gamma E_q log p0``:

        dm_k/dt = -grad_{m_k} F = -w_k E[g(m_k + sqrt(s) eps)],
        dlog_s/dt = -(1/d) dF/dlog s = -(1/d) sum_k w_k E[g(x_k) . eps] sqrt(s) / 2,

    ``g = grad_x (log q - beta log p - gamma log p0)`` (the score terms E_q grad_theta log q
    vanish).  Returns (mean, standard error) of the vector
    ``(dQ_kl for k <= l, dR_ka, dlog_s)`` (``dQ_kl = dm_k . m_l + m_k . dm_l``,
    ``dR_ka = dm_k . mu_a``), over antithetic pairs (eps, -eps).
    """
    M, d = m.shape
    K = mu.shape[0]
    per_pair_dm = np.zeros((n_pairs, M, d))
    per_pair_ls = np.zeros(n_pairs)
    for k in range(M):
        eps = rng.standard_normal((n_pairs, d))
        for sign in (1.0, -1.0):
            x = m[k] + sign * math.sqrt(s) * eps
            # log q: components N(m_j, s I) with weights w_j
            zq = np.log(w) - ((x[:, None, :] - m[None]) ** 2).sum(-1) / (2 * s)
            _, rho = _logsumexp(zq)
            grad_log_q = (rho[:, :, None] * (m[None] - x[:, None, :])).sum(1) / s
            zp = np.log(pi) - ((x[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * Delta)
            _, r = _logsumexp(zp)
            grad_log_p = (r[:, :, None] * (mu[None] - x[:, None, :])).sum(1) / Delta
            g = grad_log_q - beta * grad_log_p + gamma * x / sigma0_sq
            per_pair_dm[:, k] += -w[k] * g / 2
            per_pair_ls += -(w[k] * (g * sign * eps).sum(1) * math.sqrt(s) / 2) / d / 2
    rows = []
    for k in range(M):
        for l in range(k, M):
            rows.append(per_pair_dm[:, k] @ m[l] + per_pair_dm[:, l] @ m[k])
    for k in range(M):
        for a in range(K):
            rows.append(per_pair_dm[:, k] @ mu[a])
    rows.append(per_pair_ls)
    X = np.stack(rows, axis=1)
    return X.mean(0), X.std(0, ddof=1) / math.sqrt(n_pairs)


@pytest.mark.parametrize("K, M, path", [(2, 2, "geometric"), (2, 3, "tempering"),
                                        (3, 3, "tempering")])
def test_tied_vector_field_matches_direct_monte_carlo_in_Rd(K, M, path):
    rng = np.random.default_rng(100 * K + M)
    d = K + M + 2
    mu = rng.normal(size=(K, d)) * 1.3
    m = rng.normal(size=(M, d)) + 0.5 * mu[rng.integers(0, K, size=M)]
    pi = rng.dirichlet(np.ones(K) * 3)
    w = rng.dirichlet(np.ones(M) * 3)
    Delta, s, beta, sigma0_sq = 0.8, 0.6, 0.7, 2.5
    gamma = 1 - beta if path == "geometric" else 0.0
    st = ModelStructure(K, M, path=path, variances="tied")
    T, Q, R = mu @ mu.T, m @ m.T, m @ mu.T
    y = np.array([Q[k, l] for k in range(M) for l in range(k, M)]
                 + [R[k, a] for k in range(M) for a in range(K)] + [math.log(s)])
    assert state_names(K, M, False, "tied")[-1] == "log_s"
    kw = {"sigma0_sq": sigma0_sq} if path == "geometric" else {}
    model = compile_model(st)
    f = np.empty(y.size)
    model.rhs(y, beta, _theta(st, T, pi, Delta, w, inv_d=1.0 / d, **kw), f)
    f_limit = np.empty(y.size)       # the same at inv_d = 0 (d -> infinity)
    model.rhs(y, beta, _theta(st, T, pi, Delta, w, inv_d=0.0, **kw), f_limit)

    mean, se = _direct_drift(mu, pi, Delta, m, w, s, beta, gamma, sigma0_sq, 60_000, rng)
    z = (f - mean) / se
    assert np.max(np.abs(z)) < 5.0, (z, f, mean, se)
    # the test has power: the O(1/d) term of d(log s)/dt is resolved by the Monte Carlo
    assert abs(f_limit[-1] - mean[-1]) > 5.0 * se[-1], (f_limit[-1], f[-1], mean[-1], se[-1])
    # and the d-terms: at the prescribed s the variance is far from its optimum s*
    s_star = 1.0 / (beta / Delta + gamma / sigma0_sq)
    assert abs(0.5 * (1 - s / s_star)) > 0.1


# ----------------------------------------------------------------------------------------
# K = M = 1: the fixed point s = Delta / beta exactly
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [3, 1000])
def test_single_gaussian_fixed_point_is_mu_and_Delta_over_beta(d):
    st = ModelStructure(1, 1, variances="tied")
    model = compile_model(st)
    A, Delta = 4.0, 0.7
    th = _theta(st, np.array([[A]]), np.array([1.0]), Delta, np.array([1.0]), inv_d=1.0 / d)
    for beta in (0.1, 0.35, 0.5, 1.0):
        fps = find_fixed_points(model, beta, th, n_random=4, seed=1)
        assert len(fps) == 1
        fp = fps.points[0]
        assert fp.stable
        assert fp.s == pytest.approx(Delta / beta, rel=1e-10)
        assert fp.Q[0, 0] == pytest.approx(A, rel=1e-10)          # m = mu: |m|^2 = m.mu = A
        assert fp.R[0, 0] == pytest.approx(A, rel=1e-10)


def test_cli_fixed_points_json_carries_s():
    from analysis.cli import main
    for beta in (0.25, 0.5):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["fixed-points", "--trainable-variances", "--K", "1", "--M", "1",
                       "--beta", str(beta), "--starts", "4", "--json"])
        assert rc == 0
        out = json.loads(buf.getvalue())
        assert out["state_names"][-1] == "log_s" and out["d"] == 1000
        (fp,) = out["fixed_points"]
        assert fp["s"] == pytest.approx(1.0 / beta, rel=1e-10)      # Delta = 1 in the preset
        assert fp["state"][-1] == pytest.approx(math.log(1.0 / beta), abs=1e-10)
        assert fp["stable"]


# ----------------------------------------------------------------------------------------
# adiabatic = d -> infinity limit of the tied fixed point
# ----------------------------------------------------------------------------------------

def _k2m1_theta(st: ModelStructure, **kw) -> np.ndarray:
    A = 2.0
    return _theta(st, np.array([[A, -0.5 * A], [-0.5 * A, A]]), np.array([0.3, 0.7]), 1.0,
                  np.array([1.0]), **kw)


def test_adiabatic_is_the_large_d_limit_of_the_tied_fixed_point():
    """K = 2, M = 1 (one Gaussian fitting two modes, geometric path): the O(1) part of F
    depends on s (the target's logits have variance ~ s), so the tied fixed point in s moves
    with d; as inv_d -> 0 it tends to s*(beta) and (Q, R) to the adiabatic fixed point."""
    beta, sigma0_sq = 0.6, 3.0
    tied = ModelStructure(2, 1, path="geometric", variances="tied")
    adia = ModelStructure(2, 1, path="geometric", variances="adiabatic")
    s_star = 1.0 / (beta / 1.0 + (1 - beta) / sigma0_sq)
    fa = find_fixed_points(compile_model(adia), beta, _k2m1_theta(adia, sigma0_sq=sigma0_sq),
                           n_random=8, seed=0).stable()
    assert len(fa) == 1 and fa[0].s == pytest.approx(s_star, rel=1e-12)
    mt = compile_model(tied)
    shifts = []
    for inv_d in (0.0, 1e-3, 1e-2):
        ft = find_fixed_points(mt, beta, _k2m1_theta(tied, inv_d=inv_d, sigma0_sq=sigma0_sq),
                               n_random=8, seed=0).stable()
        assert len(ft) == 1
        shifts.append(ft[0].s - s_star)
        if inv_d == 0.0:
            assert ft[0].s == pytest.approx(s_star, rel=1e-10)
            np.testing.assert_allclose(ft[0].y[:-1], fa[0].y, rtol=1e-8, atol=1e-10)
    # O(1/d): the shift is non-zero and linear in inv_d to leading order
    assert abs(shifts[1]) > 1e-6
    assert shifts[2] / shifts[1] == pytest.approx(10.0, rel=0.1)


def test_adiabatic_vector_field_is_the_fixed_one_at_s_star():
    """The adiabatic equations are the fixed-variance ones with s = s*(beta) substituted."""
    beta, sigma0_sq = 0.45, 2.0
    fixed = ModelStructure(2, 1, path="geometric")
    adia = ModelStructure(2, 1, path="geometric", variances="adiabatic")
    s_star = 1.0 / (beta + (1 - beta) / sigma0_sq)
    y = np.array([1.3, 0.4, -0.2])
    fa, ff = np.empty(3), np.empty(3)
    compile_model(adia).rhs(y, beta, _k2m1_theta(adia, sigma0_sq=sigma0_sq), fa)
    compile_model(fixed).rhs(y, beta, _k2m1_theta(fixed, s=s_star, sigma0_sq=sigma0_sq), ff)
    np.testing.assert_allclose(fa, ff, rtol=1e-12, atol=1e-14)


def test_bad_inputs_are_named():
    from derivations.spec import orthogonal
    spec = orthogonal(1, 1, 4.0)
    tied = spec.replace(family=spec.family.__class__(1, variance=1.0, variances="tied"))
    with pytest.raises(ValueError, match="d: the tied-variance flow"):
        tied.theta()
    assert tied.theta(d=math.inf)[tied.structure.parameter_names.index("inv_d")] == 0.0
    from solvers.continuation import ParameterMap
    with pytest.raises(ValueError, match="s is a parameter only with fixed variances"):
        ParameterMap.from_spec(tied, "s", beta=0.5, d=100)
    with pytest.raises(ValueError, match="gradient"):
        from derivations.codegen import generate_source
        from derivations.model import derive
        generate_source(derive(tied.structure), "gradient")


# ----------------------------------------------------------------------------------------
# the ode estimator and the figure job
# ----------------------------------------------------------------------------------------

def test_ode_estimator_runs_with_tied_variances_and_relaxes_s_to_delta_over_beta():
    """The theory ensemble with tied variances: the initial law carries log s(0) =
    log(family.variance); at constant beta every draw ends with s = Delta/beta + O(1/d)."""
    from analysis.estimators import get_estimator
    from analysis.estimators.ode import OdeOptions
    from analysis.initial_law import sample_initial_states
    from derivations.spec import ConstantSchedule, VariationalFamily, symmetric_bimodal
    from solvers.ensemble import solve_ensemble
    beta, d = 0.5, 200
    base = symmetric_bimodal(9.0, ConstantSchedule(beta))
    spec = base.replace(family=VariationalFamily(2, weights=(0.5, 0.5), variance=1.3,
                                                 variances="tied"))
    Y0 = sample_initial_states(spec, d, 16, np.random.default_rng(0))
    np.testing.assert_allclose(Y0[:, -1], math.log(1.3))
    with pytest.raises(ValueError, match="inv_d"):
        solve_ensemble(spec, compile_model(spec.structure), Y0, 10.0, progress=False)
    res = solve_ensemble(spec, compile_model(spec.structure), Y0, 400.0, d=d, progress=False)
    s_end = np.exp(res.y_final[:, -1])
    assert np.all(np.abs(s_end - 1.0 / beta) < 20.0 / d)       # O(A/d) with A = 9
    r = get_estimator("ode")().estimate(spec, d, 24, 1, None, OdeOptions(progress=False))
    assert r.n == 24 and 0 <= r.k <= 24


def test_variance_bifurcation_sidecar(quick_figures):
    side = json.loads((quick_figures / "variance_bifurcation.json").read_text())
    head = json.loads((quick_figures / "bifurcation_beta.json").read_text())
    tr = side["treatments"]
    # the fixed-variance fold is the headline job's (same model, computed separately)
    assert tr["fixed"]["folds"] and head["folds"]
    assert min(abs(f - head["folds"][0]) for f in tr["fixed"]["folds"]) < 1e-3
    # the split state is stable over the whole beta range with either treatment
    for name in ("fixed", "tied"):
        (lo, hi), = tr[name]["stable_ranges"]["split"]
        assert lo <= side["plan"]["beta_range"][0] + 1e-6 and hi >= 1.0 - 1e-6
    # tied fixed points sit at s = Delta / beta up to O(1/d) (Delta = 1)
    for row in tr["tied"]["probes"]:
        assert abs(row["s"] - 1.0 / row["beta"]) < 20.0 / side["d"]
