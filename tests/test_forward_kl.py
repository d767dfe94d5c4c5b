"""The forward-KL objective (derivations.forward_kl) against independent computations.

1. Route 2 in R^d: the generated vector field (dQ/dt, dR/dt, dalpha/dt) equals the Monte Carlo
   drift of the d-dimensional gradient flow, ``dm_k/dt = E_{p_beta}[rho_k(x) (x - m_k)] / s``,
   ``dalpha_k/dt = E_{p_beta}[rho_k(x)] - w_k``, with x drawn from p_beta (both paths) by
   stratified sampling over its components; tolerance 5 standard errors of the estimate.
2. Route 1: the vector field equals minus the gradient of the generated objective, by finite
   differences through the chain rule; the Jacobian equals finite differences of the field.
3. Closed form: q = p (M = K, s = Delta, w = pi, Q = R = T) is a fixed point at beta = 1 with
   a stable Jacobian, and the forward KL there is 0, with E_p log p computed here by an
   independent (K - 1)-dimensional Gauss-Hermite quadrature.
4. ``mfvi derive --objective forward-kl --format latex`` prints the forward-KL objective.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import sympy as sp

from derivations.codegen import compile_model
from derivations.model import derive
from derivations.spec import (
    AnnealingPath,
    Initialisation,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    state_names,
)

D = 8


def make_problem(K: int, M: int, tw: bool, path: str, rng: np.random.Generator):
    mu = rng.normal(size=(K, D)) * 0.6
    m = rng.normal(size=(M, D)) * 0.6
    pi = rng.dirichlet(np.full(K, 3.0))
    w = rng.dirichlet(np.full(M, 3.0))
    alpha = np.log(w) - np.log(w).mean()
    Delta, s, s0 = 1.3, 0.8, 1.7
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, pi, Delta),
        family=VariationalFamily(M, w, s, train_weights=tw),
        path=AnnealingPath("mixture", s0) if path == "mixture" else AnnealingPath("inflation"),
        init=Initialisation(), objective="forward-kl")
    return spec, mu, m, alpha


def pack(spec: ProblemSpec, Q, R, alpha) -> np.ndarray:
    s = spec.structure
    y = [Q[k, l] for k in range(s.M) for l in range(k, s.M)]
    y += list(np.asarray(R).ravel())
    if s.train_weights:
        y += list(alpha)
    assert len(y) == len(state_names(s.K, s.M, s.train_weights))
    return np.array(y, dtype=float)


def _lse(Z: np.ndarray) -> np.ndarray:
    zmax = Z.max(axis=1, keepdims=True)
    return (zmax + np.log(np.exp(Z - zmax).sum(axis=1, keepdims=True)))[:, 0]


def annealed_components(spec: ProblemSpec, mu: np.ndarray, beta: float):
    """(weight, mean, variance) of the Gaussian components of p_beta, written from the paths'
    definitions: inflation sum_a pi_a N(mu_a, Delta/beta I); mixture beta p + (1 - beta) p0."""
    pi, Delta = spec.target.pi, spec.target.variance
    if spec.path.kind == "inflation":
        return [(pi[a], mu[a], Delta / beta) for a in range(len(pi))]
    comps = [(beta * pi[a], mu[a], Delta) for a in range(len(pi))]
    if beta < 1:
        comps.append((1 - beta, np.zeros(D), spec.path.base_variance))
    return comps


def mc_drift(spec, mu, m, alpha, beta, n, rng):
    """The d-dimensional drift reduced to the state, and its standard error (stratified over
    the components of p_beta, n draws in all)."""
    M = m.shape[0]
    s = spec.family.variance
    w = np.exp(alpha - _lse(alpha[None, :])[0]) if spec.family.train_weights else spec.family.w
    mean = 0.0
    var = 0.0
    for weight, nu, var_c in annealed_components(spec, mu, beta):
        n_c = max(int(round(n * weight)), 1000)
        X = nu[None, :] + np.sqrt(var_c) * rng.standard_normal((n_c, D))
        Z = np.log(w)[None, :] + (X @ m.T - 0.5 * (m * m).sum(1)[None, :]) / s
        rho = np.exp(Z - _lse(Z)[:, None])                                 # (n_c, M)
        g = rho[:, :, None] * (X[:, None, :] - m[None, :, :]) / s          # (n_c, M, D)
        dQ = np.einsum("ikd,ld->ikl", g, m)
        dQ = dQ + np.swapaxes(dQ, 1, 2)
        dR = np.einsum("ikd,ad->ika", g, mu)
        cols = [dQ[:, k, l] for k in range(M) for l in range(k, M)]
        cols += [dR[:, k, a] for k in range(M) for a in range(mu.shape[0])]
        if spec.family.train_weights:
            cols += [rho[:, k] - w[k] for k in range(M)]
        Y = np.stack(cols, axis=1)
        mean = mean + weight * Y.mean(0)
        var = var + weight**2 * Y.var(0, ddof=1) / n_c
    return mean, np.sqrt(var)


@pytest.mark.parametrize("K,M,tw,path", [(2, 2, False, "inflation"), (2, 2, False, "mixture"),
                                         (2, 3, True, "inflation"), (3, 3, False, "mixture")])
def test_vector_field_matches_monte_carlo_drift_in_Rd(K, M, tw, path):
    rng = np.random.default_rng(100 * K + 10 * M + tw)
    spec, mu, m, alpha = make_problem(K, M, tw, path, rng)
    model = compile_model(spec.structure)
    theta = spec.theta()
    y = pack(spec, m @ m.T, m @ mu.T, alpha)
    for beta in (0.45, 1.0):
        out = np.empty_like(y)
        model.rhs(y, beta, theta, out)
        mean, se = mc_drift(spec, mu, m, alpha, beta, 100_000, rng)
        z = np.abs(out - mean) / se
        assert np.all(z < 5.0), (beta, z, out, mean)
        # the comparison has power: the drift is far from zero in standard errors
        assert np.max(np.abs(mean) / se) > 20


def _fd(f, x, i, h):
    """Fourth-order central difference of f in coordinate i."""
    def at(t):
        z = x.copy()
        z[i] += t
        return f(z)
    return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)


@pytest.mark.parametrize("K,M,tw,path", [(2, 2, False, "mixture"), (2, 3, True, "inflation")])
def test_vector_field_is_minus_gradient_of_objective(K, M, tw, path):
    rng = np.random.default_rng(5 + K + 10 * M)
    spec, mu, m, alpha = make_problem(K, M, tw, path, rng)
    model = compile_model(spec.structure)
    theta = spec.theta()
    names = state_names(K, M, tw)
    T = spec.target.T
    for beta in (0.3, 1.0):
        mm = m + 0.3 * rng.normal(size=m.shape)
        Q, R = mm @ mm.T, mm @ mu.T
        y = pack(spec, Q, R, alpha + 0.5 * rng.normal(size=M))
        grad = np.array([_fd(lambda z: model.objective(z, beta, theta), y, i, 1e-3)
                         for i in range(len(y))])
        G, H = np.zeros((M, M)), np.zeros((M, K))
        for i, name in enumerate(names):
            kind, *idx = name.split("_")
            if kind == "Q":
                k, l = int(idx[0]) - 1, int(idx[1]) - 1
                G[k, l] = G[l, k] = grad[i] * (2 if k == l else 1)
            elif kind == "R":
                H[int(idx[0]) - 1, int(idx[1]) - 1] = grad[i]
        expected = pack(spec, -(G @ Q + Q @ G.T + H @ R.T + R @ H.T), -(G @ R + H @ T),
                        -grad[len(y) - M:] if tw else None)
        out = np.empty_like(y)
        model.rhs(y, beta, theta, out)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-8)


def test_jacobian_matches_finite_differences():
    spec, mu, m, alpha = make_problem(2, 2, False, "inflation", np.random.default_rng(11))
    model = compile_model(spec.structure)
    theta = spec.theta()
    y = pack(spec, m @ m.T, m @ mu.T, alpha)
    n = len(y)
    J = np.empty((n, n))
    model.jac(y, 0.6, theta, J)

    def rhs(z):
        out = np.empty(n)
        model.rhs(z, 0.6, theta, out)
        return out

    for j in range(n):
        np.testing.assert_allclose(J[:, j], _fd(rhs, y, j, 1e-3), rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------
# q = p: fixed point, stability, KL = 0
# ------------------------------------------------------------------------------------------

def neg_entropy(mu: np.ndarray, pi: np.ndarray, Delta: float, n_nodes: int = 200) -> float:
    """E_p log p for p = sum_a pi_a N(mu_a, Delta I_D), by Gauss-Hermite quadrature in the
    K - 1 logit differences v_b = x.(mu_b - mu_1)/Delta, b >= 2 (200 nodes a dimension: the
    softplus converges slowly once |mu_b - mu_1|^2 / Delta ~ 10; error < 1e-11 at K = 2):
    log p = -D/2 log(2 pi Delta) - |x|^2/(2 Delta) + log pi_1 + (x.mu_1 - |mu_1|^2/2)/Delta
    + log(1 + sum_b exp(log(pi_b/pi_1) - (|mu_b|^2 - |mu_1|^2)/(2 Delta) + v_b))."""
    K = len(pi)
    val = 0.0
    x1, w1 = np.polynomial.hermite_e.hermegauss(n_nodes)
    w1 = w1 / np.sqrt(2 * np.pi)
    diff = mu[1:] - mu[0]                              # (K-1, D)
    C = diff @ diff.T / Delta                          # covariance of v under any component
    off = np.log(pi[1:] / pi[0]) - ((mu[1:] ** 2).sum(1) - mu[0] @ mu[0]) / (2 * Delta)
    if K > 1:
        Lc = np.linalg.cholesky(C + 1e-300 * np.eye(K - 1))
        grids = np.meshgrid(*([x1] * (K - 1)), indexing="ij")
        eta = np.stack([g.ravel() for g in grids], axis=1)
        wts = np.prod(np.stack(np.meshgrid(*([w1] * (K - 1)), indexing="ij"), 0)
                      .reshape(K - 1, -1), axis=0)
    for a in range(K):
        ex2 = mu[a] @ mu[a] + D * Delta
        part = (-D / 2 * np.log(2 * np.pi * Delta) - ex2 / (2 * Delta) + np.log(pi[0])
                + (mu[a] @ mu[0] - mu[0] @ mu[0] / 2) / Delta)
        if K > 1:
            V = off[None, :] + (diff @ mu[a])[None, :] / Delta + eta @ Lc.T
            part += wts @ np.logaddexp(0.0, np.log(np.exp(V).sum(1)))
        val += pi[a] * part
    return float(val)


def _q_equals_p(K: int, path: str, tw: bool, rng: np.random.Generator):
    mu = rng.normal(size=(K, D)) * 1.2
    pi = rng.dirichlet(np.full(K, 4.0))
    Delta = 0.9
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, pi, Delta),
        family=VariationalFamily(K, pi, Delta, train_weights=tw),
        path=AnnealingPath("mixture", 2.0) if path == "mixture" else AnnealingPath("inflation"),
        objective="forward-kl")
    T = mu @ mu.T
    alpha = np.log(pi) - np.log(pi).mean()
    return spec, mu, pi, pack(spec, T, T, alpha)


def _full_objective(spec: ProblemSpec, y: np.ndarray, beta: float) -> float:
    """The generated objective plus the symbolic constant, evaluated at dimension D."""
    model = derive(spec.structure)
    vals = {p: spec.parameter_values()[p.name] for p in model.params}
    c = model.constant.subs({**vals, model.beta: beta, model.d: D,
                             model.gamma: 1 - beta if spec.path.kind == "mixture" else 0})
    return compile_model(spec.structure).objective(y, beta, spec.theta()) + float(sp.N(c))


@pytest.mark.parametrize("K,path,tw", [(1, "inflation", False), (2, "inflation", False),
                                       (2, "inflation", True)])
def test_q_equal_p_is_a_stable_fixed_point_with_zero_kl(K, path, tw):
    spec, mu, pi, y = _q_equals_p(K, path, tw, np.random.default_rng(40 + K))
    model = compile_model(spec.structure)
    theta = spec.theta()
    out = np.empty_like(y)
    model.rhs(y, 1.0, theta, out)
    np.testing.assert_allclose(out, 0.0, atol=1e-9)
    J = np.empty((len(y), len(y)))
    model.jac(y, 1.0, theta, J)
    ev = np.linalg.eigvals(J)
    # the only zero mode: a common shift of the logits alpha (w = softmax(alpha) is unchanged)
    n_zero = int(np.sum(np.abs(ev) < 1e-8))
    assert n_zero == (1 if tw else 0), ev
    assert np.all(ev.real[np.abs(ev) >= 1e-8] < -1e-6), ev
    if tw:
        shift = pack(spec, np.zeros((K, K)), np.zeros((K, K)), np.ones(K))
        np.testing.assert_allclose(J @ shift, 0.0, atol=1e-9)
    F = _full_objective(spec, y, 1.0)
    if K == 1:       # the constant carries E_p log p in closed form: F is the KL itself
        assert abs(F) < 1e-9, F
    else:            # F is the cross-entropy -E_p log q; at q = p it is minus E_p log p
        assert abs(F + neg_entropy(mu, pi, spec.target.variance)) < 1e-8


def test_kl_is_zero_at_q_equal_p_for_three_modes_and_the_mixture_path():
    spec, mu, pi, y = _q_equals_p(3, "mixture", False, np.random.default_rng(3))
    # beta = 1: the mixture path is the plain forward KL; E_p log p by a 2-D quadrature
    F = _full_objective(spec, y, 1.0)
    assert abs(F + neg_entropy(mu, pi, spec.target.variance)) < 1e-8
    # and q = p is a critical point of it
    out = np.empty_like(y)
    compile_model(spec.structure).rhs(y, 1.0, spec.theta(), out)
    np.testing.assert_allclose(out, 0.0, atol=1e-9)


def test_derive_latex_prints_the_forward_kl_objective():
    from analysis.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["derive", "--objective", "forward-kl", "--preset", "symmetric-bimodal",
                   "--format", "latex"])
    text = buf.getvalue()
    assert rc == 0
    assert "forward KL" in text and r"\begin{document}" in text
    # the Gaussian expectation under the inflated modes N(mu_a, Delta/beta I): the logit
    # difference's variance (Delta/beta)(Q_11 - 2 Q_12 + Q_22)/s^2, with Delta = s = 1
    obj = text.split(r"\subsection*{Objective}")[1].split(r"\subsection*")[0]
    assert r"\mathcal{L}" in obj
    assert r"\frac{Q_{11}}{\beta} - \frac{2 Q_{12}}{\beta} + \frac{Q_{22}}{\beta}" in obj


# ------------------------------------------------------------------------------------------
# estimators: declared objectives, and the ones that cover the forward KL run
# ------------------------------------------------------------------------------------------

def _symmetric_forward(path: str = "inflation") -> ProblemSpec:
    from derivations.spec import symmetric_bimodal
    return symmetric_bimodal(9.0).replace(
        objective="forward-kl",
        path=AnnealingPath("mixture", 2.0) if path == "mixture" else AnnealingPath(path))


def test_estimators_refuse_objectives_and_variances_they_do_not_declare():
    from analysis.estimators import ESTIMATORS
    from analysis.estimators.base import parse_options
    from derivations.spec import symmetric_bimodal
    fwd = _symmetric_forward()
    base = symmetric_bimodal(9.0)
    tied = base.replace(family=VariationalFamily(2, (0.5, 0.5), 1.0, variances="tied"))
    assert "forward-kl" in ESTIMATORS["ode"].objectives
    assert "forward-kl" in ESTIMATORS["linear"].objectives
    refused = 0
    for name, cls in ESTIMATORS.items():
        opts = parse_options(cls.Options, name, {})
        for spec, attr, value in ((fwd, "objectives", "forward-kl"),
                                  (tied, "variances", "tied")):
            if value in getattr(cls, attr):
                continue
            refused += 1
            key = "objective" if attr == "objectives" else "variances"
            with pytest.raises(ValueError, match=f"{key}: the {name} estimator covers"):
                cls().check(spec, 20, opts)
    assert refused >= 4


def test_ode_and_linear_estimators_run_on_the_forward_kl():
    from analysis.collapse import collapse_probability
    spec = _symmetric_forward()
    res = collapse_probability(spec, 20, method="ode", draws=40, seed=0)
    assert res.n == 40 and res.params["objective"] == "forward-kl"
    # from small overlaps the forward-KL flow reaches q = p (the split state) in every draw:
    # the mode-covering objective has no stable collapsed state on this target
    assert res.k == 0, res
    lin = collapse_probability(spec, 20, method="linear", draws=1)
    assert 0.0 <= lin.p < 0.5
    with pytest.raises(ValueError, match="expanded engine only"):
        from derivations.spec import PRESETS
        four = PRESETS["orthogonal"](4, 4, 9.0).replace(objective="forward-kl",
                                                       path=AnnealingPath("inflation"))
        collapse_probability(four, 20, method="ode", draws=2, seed=0)


def test_fixed_points_command_finds_q_equal_p():
    import json

    from analysis.cli import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["fixed-points", "--objective", "forward-kl", "--json", "--starts", "8"])
    assert rc == 0
    out = json.loads(buf.getvalue())
    pts = out["fixed_points"] if isinstance(out, dict) else out
    stable_split = [p for p in pts if p["label"] == "split" and p["stable"]]
    assert stable_split
    for p in stable_split:                       # q = p: Q = T = R (up to the exchange k <-> l)
        Q = np.array(p["Q"])
        np.testing.assert_allclose(Q, [[9.0, -9.0], [-9.0, 9.0]], atol=1e-6)
