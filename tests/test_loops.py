"""The loop-form engine (derivations.loops / loopgen, issue 9): against the expanded engine for
K, M <= 3, and against a direct computation in R^d written here for (4, 4), (2, 5), (5, 3).

The direct computation does not use the reduced Gaussian logits: it places explicit vectors
mu_a, m_k in R^3, integrates over x = m_k + sqrt(s) xi with a product trapezoid rule in xi
(R^3), differentiates log q, log p, log p0 at the nodes by their closed forms (including the
score term sum_j w_j E_j[d log q / d m_k], which the engine assumes to vanish), maps
dm_k/dt to (Q, R) by dot products, and gets dalpha/dt by central differences of the
directly integrated objective.  The reduced equations are exact for every d, so d = 3 is as
good a test of the algebra as any (the logit covariances then have rank <= 3, so this
also exercises the degenerate directions of the n >= 4 product rule).
"""

from __future__ import annotations

import numpy as np
import pytest

from derivations.codegen import compile_model
from derivations.loopgen import compile_loop_model, generate_loop_source
from derivations.loops import derive_loops
from derivations.spec import ModelStructure

D = 3            # dimension of the explicit vectors of the direct computation
H_XI = 0.25      # trapezoid step in xi (the logit slopes are <= ~3: error ~ exp(-2 pi^2/(3 h)))
L_XI = 7.5


def _problem(st: ModelStructure, rng: np.random.Generator, dim: int):
    """Explicit vectors and the (y, theta) of the engine for them."""
    K, M = st.K, st.M
    mu = rng.normal(size=(K, dim)) * 1.2
    m = rng.normal(size=(M, dim)) * 0.9
    pi = rng.dirichlet(np.full(K, 4.0))
    w = rng.dirichlet(np.full(M, 4.0))
    alpha = np.log(w) + 0.3                      # softmax(alpha) = w
    Delta, s, s0 = 0.9, 0.8, 1.7
    Q, R, T = m @ m.T, m @ mu.T, mu @ mu.T
    y = [Q[k, l] for k in range(M) for l in range(k, M)] + list(R.ravel())
    if st.train_weights:
        y += list(alpha)
    theta = [T[a, b] for a in range(K) for b in range(a, K)] + list(pi) + [Delta, s]
    if st.path == "geometric":
        theta.append(s0)
    if not st.train_weights:
        theta += list(w)
    return dict(mu=mu, m=m, pi=pi, w=w, alpha=alpha, Delta=Delta, s=s, s0=s0,
                y=np.array(y), theta=np.array(theta))


def _grid(dim: int):
    x = np.arange(-L_XI, L_XI + H_XI / 2, H_XI)
    wt = H_XI * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)
    pts = np.stack(np.meshgrid(*([x] * dim), indexing="ij"), -1).reshape(-1, dim)
    W = np.prod(np.stack(np.meshgrid(*([wt] * dim), indexing="ij"), -1).reshape(-1, dim), axis=1)
    keep = W > 1e-18
    return pts[keep], W[keep] / W[keep].sum()


def _logmix(x, means, weights, var):
    """log sum_i weights_i N(x; means_i, var I) and the responsibilities, x (N, D)."""
    dim = x.shape[1]
    lg = (np.log(weights)[None, :] - ((x[:, None, :] - means[None]) ** 2).sum(-1) / (2 * var)
          - dim / 2 * np.log(2 * np.pi * var))
    mx = lg.max(1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(lg - mx).sum(1))
    return lse, np.exp(lg - lse[:, None])


def _direct(st: ModelStructure, P: dict, beta: float, w=None):
    """(F, dQ/dt, dR/dt) by direct integration in R^D."""
    mu, m, pi, Delta, s, s0 = P["mu"], P["m"], P["pi"], P["Delta"], P["s"], P["s0"]
    w = P["w"] if w is None else w
    gamma = 1.0 - beta if st.path == "geometric" else 0.0
    M, dim = m.shape
    xi, W = _grid(dim)
    F = 0.0
    grad = np.zeros_like(m)
    for k in range(M):
        x = m[k] + np.sqrt(s) * xi
        lq, rho = _logmix(x, m, w, s)
        lp, r = _logmix(x, mu, pi, Delta)
        lp0 = -(x ** 2).sum(1) / (2 * s0) - dim / 2 * np.log(2 * np.pi * s0)
        F += w[k] * W @ (lq - beta * lp - gamma * lp0)
        gq = (rho[:, :, None] * (m[None] - x[:, None, :])).sum(1) / s
        gp = (r[:, :, None] * (mu[None] - x[:, None, :])).sum(1) / Delta
        g = gq - beta * gp + gamma * x / s0
        grad[k] += w[k] * W @ g                       # pathwise part
        # score part: sum_j w_j E_{x ~ N_k}[...] realised for every component j below
        for j in range(M):
            grad[j] += w[k] * W @ (rho[:, j, None] * (x - m[j]) / s)
    mdot = -grad
    dQ = mdot @ m.T + m @ mdot.T
    dR = mdot @ mu.T
    return F, dQ, dR


def _direct_rhs(st: ModelStructure, P: dict, beta: float) -> tuple[np.ndarray, float]:
    F, dQ, dR = _direct(st, P, beta)
    M = st.M
    out = [dQ[k, l] for k in range(M) for l in range(k, M)] + list(dR.ravel())
    if st.train_weights:
        h = 1e-4
        for k in range(M):
            Fs = []
            for sgn in (1, -1):
                al = P["alpha"].copy()
                al[k] += sgn * h
                wk = np.exp(al - al.max())
                Fs.append(_direct(st, P, beta, wk / wk.sum())[0])
            out.append(-(Fs[0] - Fs[1]) / (2 * h))
    dim = P["m"].shape[1]
    s, Delta, s0 = P["s"], P["Delta"], P["s0"]
    gamma = 1.0 - beta if st.path == "geometric" else 0.0
    const = -dim / 2 - dim / 2 * np.log(2 * np.pi * s) \
        + beta * dim / 2 * (s / Delta + np.log(2 * np.pi * Delta))
    if st.path == "geometric":
        const += gamma * dim / 2 * (s / s0 + np.log(2 * np.pi * s0))
    return np.array(out), F - const


def _rhs(model, y, beta, theta):
    out = np.empty(y.shape[0])
    model.rhs(y, beta, theta, out)
    return out


@pytest.mark.parametrize("K,M,tw,path", [(2, 2, True, "geometric"), (3, 3, False, "tempering")])
def test_loops_match_expanded_engine(K, M, tw, path):
    st = ModelStructure(K, M, tw, path)
    ex, lo = compile_model(st), compile_loop_model(st)
    rng = np.random.default_rng(10 * K + M)
    worst = 0.0
    for _ in range(4):
        P = _problem(st, rng, K + M + 1)
        a, b = _rhs(ex, P["y"], 0.6, P["theta"]), _rhs(lo, P["y"], 0.6, P["theta"])
        worst = max(worst, np.abs(a - b).max() / max(1.0, np.abs(a).max()))
        if tw:
            Fa = ex.objective(P["y"], 0.6, P["theta"])
            Fb = lo.objective(P["y"], 0.6, P["theta"])
            assert abs(Fa - Fb) <= 1e-12 * max(1.0, abs(Fa))
    assert worst <= 1e-12


@pytest.mark.parametrize("K,M,tw,path", [(4, 4, True, "geometric"), (2, 5, False, "tempering"),
                                          (5, 3, False, "tempering")])
def test_loops_match_direct_computation_in_Rd(K, M, tw, path):
    st = ModelStructure(K, M, tw, path)
    lo = compile_loop_model(st)
    P = _problem(st, np.random.default_rng(K * 7 + M), D)
    beta = 0.7
    want, F_want = _direct_rhs(st, P, beta)
    got = _rhs(lo, P["y"], beta, P["theta"])
    scale = max(1.0, np.abs(want).max())
    # kernels: <= 1e-8 (n_eff <= 4); the direct rule here: ~1e-11; FD in alpha: ~1e-9
    # measured: 6e-12 .. 1.3e-10
    assert np.abs(got - want).max() <= 2e-8 * scale, (got, want)
    if tw:
        F_got = lo.objective(P["y"], beta, P["theta"])
        assert abs(F_got - F_want) <= 1e-7 * max(1.0, abs(F_want))


def test_loop_source_is_loops_not_expansion():
    """The generated code's size does not grow with K, M (the point of the loop form)."""
    small = generate_loop_source(derive_loops(ModelStructure(2, 2)))
    big = generate_loop_source(derive_loops(ModelStructure(8, 8)))
    assert abs(len(big.splitlines()) - len(small.splitlines())) <= 2
    assert "for j in range(0, 8):" in big


def test_terms_registry_and_bad_structure():
    from derivations.terms import TERMS, active_terms, load_terms
    load_terms()
    assert {"entropy", "target_cross_entropy", "base_cross_entropy"} <= set(TERMS)
    assert [t.name for t in active_terms(ModelStructure(2, 2))] == ["entropy",
                                                                   "target_cross_entropy"]
    assert "base_cross_entropy" in [t.name for t in active_terms(ModelStructure(2, 2, False,
                                                                                "geometric"))]
    with pytest.raises(ValueError, match="structure"):
        compile_loop_model((4, 4))
