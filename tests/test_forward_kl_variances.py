"""The forward KL with trainable (tied) and adiabatic variances (issue 12, parts 1 and 2).

Independent checks, none of them reading numbers from the code under test:

1. Route 2 in R^d: the generated tied-variance field (dQ/dt, dR/dt, dalpha/dt and d(log s)/dt
   at finite d) equals the Monte Carlo drift of the d-dimensional gradient flow of
   ``F = -E_{p_beta} log q`` written here from the density of q:
   ``dm_k/dt = E[rho_k (x - m_k)] / s``, ``dalpha_k/dt = E[rho_k] - w_k`` and
   ``d(log s)/dt = -(1/d) dF/d(log s) = -(1/d) (d/2 - E[sum_j rho_j |x - m_j|^2] / (2 s))``,
   x drawn exactly from p_beta (stratified over its components), for (K, M) = (2, 2), (2, 3),
   both paths; tolerance 5 standard errors of the estimate (Gaussian tail 6e-7 per entry).
2. Route 1: d(log s)/dt equals -inv_d times the derivative of the generated objective in
   log s (finite differences), and the Jacobian equals finite differences of the field.
3. Closed forms, K = M = 1 (forward KL = moment matching): the fixed point is the mean of
   p_beta and its per-coordinate variance, m = mu and s = Delta/beta (inflation), m = beta mu
   and s = beta Delta + (1 - beta) sigma0^2 + beta (1 - beta) |mu|^2 / d (mixture), at every
   d; there the forward KL with its constant is 0 (inflation: p_beta is one Gaussian).
   Adiabatic: s* = Delta/beta and beta Delta + (1 - beta) sigma0^2 (the d -> infinity limit).
4. K = M = 2 symmetric at beta = 1: q = p (s = Delta) is a stable fixed point of the tied flow.
5. The CLI (fixed-points, derive) and the estimators' declarations.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import sympy as sp

from derivations.codegen import compile_model
from derivations.model import derive
from derivations.spec import (
    AnnealingPath,
    ConstantSchedule,
    Initialisation,
    ModelStructure,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    state_names,
)
from solvers.fixedpoints import find_fixed_points

SIGMA0_SQ = 1.7


def _spec(mu, pi, Delta, w, s, *, path, tw=False, variances="tied") -> ProblemSpec:
    return ProblemSpec(
        target=TargetMixture.from_means(mu, pi, Delta),
        family=VariationalFamily(len(w), w, s, train_weights=tw, variances=variances),
        path=AnnealingPath("mixture", SIGMA0_SQ) if path == "mixture" else AnnealingPath(path),
        init=Initialisation(), objective="forward-kl")


def _pack(Q, R, alpha=None, log_s=None) -> np.ndarray:
    M = Q.shape[0]
    y = [Q[k, l] for k in range(M) for l in range(k, M)] + list(np.asarray(R).ravel())
    if alpha is not None:
        y += list(alpha)
    if log_s is not None:
        y.append(log_s)
    return np.array(y, dtype=float)


def _lse(Z: np.ndarray) -> np.ndarray:
    zmax = Z.max(axis=1, keepdims=True)
    return (zmax + np.log(np.exp(Z - zmax).sum(axis=1, keepdims=True)))[:, 0]


def _components(mu, pi, Delta, beta, path):
    """(weight, mean, variance) of the components of p_beta, from the paths' definitions."""
    if path == "inflation":
        return [(pi[a], mu[a], Delta / beta) for a in range(len(pi))]
    comps = [(beta * pi[a], mu[a], Delta) for a in range(len(pi))]
    if beta < 1:
        comps.append((1 - beta, np.zeros(mu.shape[1]), SIGMA0_SQ))
    return comps


def _mc_drift(mu, pi, Delta, m, w, s, beta, path, tw, n, rng):
    """Drift of the d-dimensional flow reduced to the state, and its standard error.

    ``log q(x) = LSE_j [log w_j - (d/2) log(2 pi s) - |x - m_j|^2 / (2 s)]`` in full (no
    summary statistics): ``rho = softmax`` of the bracket, and ``-dF/d(log s) = E[s d log
    q/ds] = E[sum_j rho_j (|x - m_j|^2 / (2 s) - d/2)]``."""
    M, d = m.shape
    mean = 0.0
    var = 0.0
    for weight, nu, var_c in _components(mu, pi, Delta, beta, path):
        n_c = max(int(round(n * weight)), 2000)
        X = nu[None, :] + np.sqrt(var_c) * rng.standard_normal((n_c, d))
        sq = ((X[:, None, :] - m[None, :, :]) ** 2).sum(-1)                 # (n_c, M)
        Z = np.log(w)[None, :] - d / 2 * np.log(2 * np.pi * s) - sq / (2 * s)
        rho = np.exp(Z - _lse(Z)[:, None])
        g = rho[:, :, None] * (X[:, None, :] - m[None, :, :]) / s          # dm_k/dt samples
        dQ = np.einsum("ikd,ld->ikl", g, m)
        dQ = dQ + np.swapaxes(dQ, 1, 2)
        dR = np.einsum("ikd,ad->ika", g, mu)
        cols = [dQ[:, k, l] for k in range(M) for l in range(k, M)]
        cols += [dR[:, k, a] for k in range(M) for a in range(mu.shape[0])]
        if tw:
            cols += [rho[:, k] - w[k] for k in range(M)]
        cols.append((rho * (sq / (2 * s) - d / 2)).sum(1) / d)              # d(log s)/dt
        Y = np.stack(cols, axis=1)
        mean = mean + weight * Y.mean(0)
        var = var + weight**2 * Y.var(0, ddof=1) / n_c
    return mean, np.sqrt(var)


@pytest.mark.parametrize("K,M,tw,path", [(2, 2, False, "inflation"), (2, 2, False, "mixture"),
                                         (2, 3, True, "inflation"), (2, 3, False, "mixture")])
def test_tied_field_matches_monte_carlo_drift_in_Rd(K, M, tw, path):
    rng = np.random.default_rng(7 + 100 * K + 10 * M + tw + (path == "mixture"))
    d = 6
    mu = rng.normal(size=(K, d)) * 0.7
    m = rng.normal(size=(M, d)) * 0.6
    pi = rng.dirichlet(np.full(K, 3.0))
    w = rng.dirichlet(np.full(M, 3.0))
    alpha = np.log(w) - np.log(w).mean()
    Delta, s = 1.3, 0.8
    spec = _spec(mu, pi, Delta, w, s, path=path, tw=tw)
    assert state_names(K, M, tw, "tied")[-1] == "log_s"
    model = compile_model(spec.structure)
    y = _pack(m @ m.T, m @ mu.T, alpha if tw else None, math.log(s))
    for beta in (0.45, 1.0):
        out, limit = np.empty_like(y), np.empty_like(y)
        model.rhs(y, beta, spec.theta(d=d), out)
        model.rhs(y, beta, spec.theta(d=math.inf), limit)
        mean, se = _mc_drift(mu, pi, Delta, m, w, s, beta, path, tw, 60_000, rng)
        z = np.abs(out - mean) / se
        assert np.all(z < 5.0), (beta, z, out, mean)
        assert np.max(np.abs(mean) / se) > 20                 # the comparison has power
        # and the O(1/d) terms of d(log s)/dt are resolved: the d -> infinity field is refuted
        assert abs(limit[-1] - mean[-1]) > 5 * se[-1], (limit[-1], out[-1], mean[-1], se[-1])


@pytest.mark.parametrize("path", ["inflation", "mixture"])
def test_dlog_s_is_minus_inv_d_gradient_of_the_objective_and_jacobian_matches(path):
    rng = np.random.default_rng(3)
    K, M, d = 2, 2, 12
    mu, m = rng.normal(size=(K, d)) * 0.6, rng.normal(size=(M, d)) * 0.6
    spec = _spec(mu, np.array([0.4, 0.6]), 1.1, np.array([0.3, 0.7]), 0.9, path=path)
    model = compile_model(spec.structure)
    theta = spec.theta(d=d)
    y = _pack(m @ m.T, m @ mu.T, None, math.log(0.9))
    beta, h, n = 0.6, 1e-3, len(y)

    def shifted(i, t):
        z = y.copy()
        z[i] += t
        return z

    def fd(f, i):
        return (-f(shifted(i, 2 * h)) + 8 * f(shifted(i, h)) - 8 * f(shifted(i, -h))
                + f(shifted(i, -2 * h))) / (12 * h)

    dF = fd(lambda z: model.objective(z, beta, theta), n - 1)
    out = np.empty(n)
    model.rhs(y, beta, theta, out)
    assert out[-1] == pytest.approx(-dF / d, abs=1e-8)

    def rhs(z):
        o = np.empty(n)
        model.rhs(z, beta, theta, o)
        return o

    J = np.empty((n, n))
    model.jac(y, beta, theta, J)
    for j in range(n):
        np.testing.assert_allclose(J[:, j], fd(rhs, j), rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------
# K = M = 1: moment matching
# ------------------------------------------------------------------------------------------

def _single(path: str, variances: str, A: float = 4.0, Delta: float = 0.7) -> ProblemSpec:
    mu = np.zeros((1, 3))
    mu[0, 0] = math.sqrt(A)
    return _spec(mu, np.array([1.0]), Delta, np.array([1.0]), 1.0, path=path,
                 variances=variances)


def _full_objective(spec: ProblemSpec, y: np.ndarray, beta: float, d: float) -> float:
    """The generated objective plus the symbolic constant at dimension d."""
    model = derive(spec.structure)
    vals = {p: spec.parameter_values(d=d)[p.name] for p in model.params}
    c = model.constant.subs({**vals, model.beta: beta, model.d: d,
                             model.gamma: 1 - beta if spec.path.kind == "mixture" else 0})
    return compile_model(spec.structure).objective(y, beta, spec.theta(d=d)) + float(sp.N(c))


@pytest.mark.parametrize("d", [3, 1000])
@pytest.mark.parametrize("path", ["inflation", "mixture"])
def test_single_gaussian_fixed_point_is_the_mean_and_variance_of_p_beta(path, d):
    A, Delta = 4.0, 0.7
    spec = _single(path, "tied", A, Delta)
    model = compile_model(spec.structure)
    for beta in (0.2, 0.5, 1.0):
        if path == "inflation":
            r, s = 1.0, Delta / beta                                    # m = mu
        else:
            g = 1 - beta                                                # m = beta mu
            r, s = beta, beta * Delta + g * SIGMA0_SQ + beta * g * A / d
        fps = find_fixed_points(model, beta, spec.theta(d=d), n_random=4, seed=1)
        assert len(fps) == 1
        fp = fps.points[0]
        assert fp.stable
        assert fp.s == pytest.approx(s, rel=1e-10)
        assert fp.R[0, 0] == pytest.approx(r * A, rel=1e-10)
        assert fp.Q[0, 0] == pytest.approx(r * r * A, rel=1e-10)
        if path == "inflation":          # p_beta is one Gaussian: F is the KL itself, 0 at q = p
            assert abs(_full_objective(spec, fp.y, beta, d)) < 1e-8 * d
    # adiabatic: the d -> infinity limit of the same s, and the same means
    adia = _single(path, "adiabatic", A, Delta)
    ma = compile_model(adia.structure)
    for beta in (0.2, 0.5):
        fp, = find_fixed_points(ma, beta, adia.theta(), n_random=4, seed=1).points
        s_inf = Delta / beta if path == "inflation" else beta * Delta + (1 - beta) * SIGMA0_SQ
        assert fp.s == pytest.approx(s_inf, rel=1e-12) and fp.stable
        r = 1.0 if path == "inflation" else beta
        assert fp.R[0, 0] == pytest.approx(r * A, rel=1e-10)


def test_first_order_variance_is_exact_for_one_component():
    """``adiabatic_variance_first_order``: s0 + inv_d s1 is the tied flow's stationary s at
    fixed means, exactly for M = 1 (checked at a state off the fixed point) against
    ``E_{p_beta}|x - m|^2 / d`` computed here."""
    from derivations.forward_kl import adiabatic_variance_first_order
    for path in ("inflation", "mixture"):
        tied = derive(_single(path, "tied").structure)
        fixed = derive(_single(path, "fixed").structure)     # F_state written with the symbol s
        sym = {x.name: x for x in tied.params + tied.state + fixed.params}
        s0, s1 = adiabatic_variance_first_order(
            fixed.structure, fixed.objective_without_constant,
            sym["s"], fixed.T, [sym["pi_1"]], sym["Delta"], fixed.beta, fixed.gamma,
            sym.get("sigma0_sq"))
        beta, d = 0.4, 7.0
        Qv, Rv, A = 1.3, 0.5, 4.0                            # |m|^2, m.mu, |mu|^2
        vals = {"T_1_1": A, "pi_1": 1.0, "Delta": 0.7, "w_1": 1.0, "inv_d": 1 / d,
                "sigma0_sq": SIGMA0_SQ, "Q_1_1": Qv, "R_1_1": Rv}
        sub = {sym[k]: v for k, v in vals.items() if k in sym}
        sub.update({fixed.beta: beta, fixed.gamma: 1 - beta if path == "mixture" else 0})
        s_pred = float(sp.N((s0 + sym["inv_d"] * s1).subs(sub)))
        if path == "inflation":
            s_exact = 0.7 / beta + (A - 2 * Rv + Qv) / d
        else:
            s_exact = beta * (0.7 + (A - 2 * Rv + Qv) / d) + (1 - beta) * (SIGMA0_SQ + Qv / d)
        assert s_pred == pytest.approx(s_exact, rel=1e-12)
        # and d(log s)/dt of the tied model vanishes there
        f = sp.lambdify(sym["log_s"], tied.dlog_s.subs(sub).subs(tied.gamma, sub[fixed.gamma]))
        assert abs(f(math.log(s_exact))) < 1e-12


@pytest.mark.parametrize("path", ["inflation", "mixture"])
def test_adiabatic_field_is_the_fixed_one_at_s_star(path):
    """The adiabatic equations are the fixed-variance ones with s = s*(beta) substituted,
    s* written here from the paths: Delta/beta, beta Delta + (1 - beta) sigma0^2."""
    rng = np.random.default_rng(21)
    mu, m = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
    pi, w, Delta, beta = np.array([0.35, 0.65]), np.array([0.6, 0.4]), 1.2, 0.55
    s_star = Delta / beta if path == "inflation" else beta * Delta + (1 - beta) * SIGMA0_SQ
    adia = _spec(mu, pi, Delta, w, 1.0, path=path, variances="adiabatic")
    fixed = _spec(mu, pi, Delta, w, s_star, path=path, variances="fixed")
    y = _pack(m @ m.T, m @ mu.T)
    fa, ff = np.empty_like(y), np.empty_like(y)
    compile_model(adia.structure).rhs(y, beta, adia.theta(), fa)
    compile_model(fixed.structure).rhs(y, beta, fixed.theta(), ff)
    np.testing.assert_allclose(fa, ff, rtol=1e-12, atol=1e-14)
    assert np.max(np.abs(ff)) > 0.1


# ------------------------------------------------------------------------------------------
# K = M = 2 symmetric at beta = 1: q = p
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["inflation", "mixture"])
@pytest.mark.parametrize("d", [20, 1000])
def test_q_equal_p_is_a_stable_fixed_point_of_the_tied_flow(path, d):
    from derivations.spec import symmetric_bimodal
    base = symmetric_bimodal(9.0, ConstantSchedule(1.0))
    spec = base.replace(objective="forward-kl",
                        path=AnnealingPath("mixture", 2.0) if path == "mixture"
                        else AnnealingPath(path),
                        family=VariationalFamily(2, (0.5, 0.5), 1.0, variances="tied"))
    model = compile_model(spec.structure)
    T = spec.target.T
    y = _pack(T, T, None, math.log(spec.target.variance))          # m = mu, s = Delta
    out = np.empty_like(y)
    model.rhs(y, 1.0, spec.theta(d=d), out)
    np.testing.assert_allclose(out, 0.0, atol=1e-10)
    J = np.empty((len(y), len(y)))
    model.jac(y, 1.0, spec.theta(d=d), J)
    assert np.all(np.linalg.eigvals(J).real < -1e-6)
    # away from beta = 1 on the inflation path s moves with beta: s = Delta/beta + O(1/d)
    if path == "inflation":
        fps = find_fixed_points(model, 0.5, spec.theta(d=d), n_random=8, seed=0)
        split = [p for p in fps.points if p.label == "split" and p.stable]
        assert split and all(abs(p.s - 2.0) < 20.0 / d for p in split)


# ------------------------------------------------------------------------------------------
# CLI and estimators
# ------------------------------------------------------------------------------------------

def _cli(argv: list[str]) -> str:
    from analysis.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    assert rc == 0
    return buf.getvalue()


def test_cli_fixed_points_forward_kl_trainable_variances():
    out = json.loads(_cli(["fixed-points", "--objective", "forward-kl", "--trainable-variances",
                           "--K", "1", "--M", "1", "--beta", "0.5", "--json"]))
    assert out["state_names"][-1] == "log_s" and out["problem"]["objective"] == "forward-kl"
    (fp,) = out["fixed_points"]
    A = out["problem"]["target"]["gram"][0][0]
    assert fp["s"] == pytest.approx(2.0, rel=1e-10) and fp["stable"]   # Delta/beta, Delta = 1
    assert fp["R"][0][0] == pytest.approx(A, rel=1e-10)
    # the mixture path at d = 50: s = beta Delta + gamma sigma0^2 + beta gamma A / d
    out = json.loads(_cli(["fixed-points", "--objective", "forward-kl", "--path", "mixture",
                           "--sigma0-sq", "3", "--trainable-variances", "--K", "1", "--M", "1",
                           "--beta", "0.5", "--d", "50", "--json"]))
    (fp,) = out["fixed_points"]
    assert fp["s"] == pytest.approx(0.5 + 1.5 + 0.25 * A / 50, rel=1e-10)
    out = json.loads(_cli(["fixed-points", "--objective", "forward-kl", "--path", "mixture",
                           "--sigma0-sq", "3", "--variances", "adiabatic", "--K", "1", "--M",
                           "1", "--beta", "0.5", "--json"]))
    (fp,) = out["fixed_points"]
    assert fp["s"] == pytest.approx(2.0, rel=1e-12)


def test_cli_derive_prints_the_variance_flow():
    text = _cli(["derive", "--objective", "forward-kl", "--trainable-variances", "--K", "1",
                 "--M", "1", "--format", "markdown"])
    assert r"\frac{d\log s}{dt}" in text and "d^{-1}" in text
    text = _cli(["derive", "--objective", "forward-kl", "--path", "mixture", "--variances",
                 "adiabatic", "--format", "latex"])
    # s* = beta Delta + gamma sigma0^2 substituted for s
    assert r"\begin{document}" in text and r"\Delta \beta + \gamma \sigma_0^2" in text


def test_estimators_accept_the_combination_or_refuse_it_by_name():
    from analysis.collapse import collapse_probability
    from analysis.estimators import ESTIMATORS
    from analysis.estimators.base import parse_options
    from derivations.spec import symmetric_bimodal
    spec = symmetric_bimodal(9.0, ConstantSchedule(0.5)).replace(
        objective="forward-kl", path=AnnealingPath("inflation"),
        family=VariationalFamily(2, (0.5, 0.5), 1.3, variances="tied"))
    assert {"tied", "adiabatic"} <= set(ESTIMATORS["ode"].variances)
    refused = 0
    for name, cls in ESTIMATORS.items():
        if "forward-kl" in cls.objectives and "tied" in cls.variances:
            continue
        refused += 1
        with pytest.raises(ValueError, match=rf"(objective|variances): the {name} estimator"):
            cls().check(spec, 20, parse_options(cls.Options, name, {}))
    assert refused >= 3
    res = collapse_probability(spec, 50, method="ode", draws=8, seed=0)
    assert res.n == 8 and res.params["objective"] == "forward-kl"
    assert res.k == 0          # the mode-covering flow splits from small overlaps
    adia = spec.replace(path=AnnealingPath("mixture", 2.0),
                        family=VariationalFamily(2, (0.5, 0.5), 1.3, variances="adiabatic"))
    assert collapse_probability(adia, 50, method="ode", draws=8, seed=0).n == 8


def test_model_structure_builds_every_combination():
    for path in ("inflation", "mixture"):
        for v in ("tied", "adiabatic"):
            st = ModelStructure(2, 2, path=path, objective="forward-kl", variances=v)
            model = derive(st)
            assert (model.dlog_s is not None) == (v == "tied")
