"""The loop-form engine's Jacobian (derivations.loopgen, kind "jac": Richardson finite
differences of the generated rhs) against independent computations, and fixed points at M = 4.

* (K, M) <= (3, 3): against the expanded engine's analytic (SymPy-differentiated) Jacobian, at
  generic states, coinciding components and the origin (where Q is singular and the one-sided
  PSD-preserving differences are used), to 1e-9 relative to max |J| (measured ~1e-11).
* (2, 4), (4, 4): against a Jacobian assembled here from 4th-order central differences of
  the chain-rule matrices G, H (the separately generated ``gradient`` function) and the
  product rule of dQ/dt = -(G Q + Q G^T + H R^T + R H^T), dR/dt = -(G R + H T): 1e-7
  relative (measured ~5e-10).
* Fixed points: the symmetric split of orthogonal K = M = 4 (q = p exactly) is a stable fixed
  point; the origin of the antipodal pair with M = 4 is an unstable one.
"""

from __future__ import annotations

import numpy as np
import pytest

from derivations.codegen import compile_model
from derivations.loopgen import compile_loop_model
from derivations.spec import ModelStructure, orthogonal, simplex
from solvers.fixedpoints import analyse_state
from solvers.layout import state_layout


def _state(st, rng, dim, case="generic"):
    K, M = st.K, st.M
    mu = rng.normal(size=(K, dim)) * 1.2
    m = rng.normal(size=(M, dim)) * 0.9
    if case == "coincide":
        m[1] = m[0]
    if case == "origin":
        m[:] = 0.0
    pi = rng.dirichlet(np.full(K, 4.0))
    w = rng.dirichlet(np.full(M, 4.0))
    lay = state_layout(st)
    alpha = np.log(w) if st.train_weights else None
    y = lay.pack(m @ m.T, m @ mu.T, alpha)
    T = mu @ mu.T
    theta = [T[a, b] for a in range(K) for b in range(a, K)] + list(pi) + [0.9, 0.8]
    if st.path == "geometric":
        theta.append(1.7)
    if not st.train_weights:
        theta += list(w)
    return np.ascontiguousarray(y), np.array(theta), T


def _jac(fn, y, theta, beta=0.7):
    J = np.empty((y.size, y.size))
    fn(y, beta, theta, J)
    return J


@pytest.mark.parametrize("K, M, tw, path", [(2, 2, False, "tempering"), (3, 3, False, "tempering"),
                                            (3, 3, True, "geometric"), (2, 3, False, "tempering")])
@pytest.mark.parametrize("case", ["generic", "coincide", "origin"])
def test_loop_jac_matches_expanded_analytic_jac(K, M, tw, path, case):
    st = ModelStructure(K=K, M=M, train_weights=tw, path=path)
    y, theta, _ = _state(st, np.random.default_rng(K * 10 + M), K + M, case)
    Je = _jac(compile_model(st).jac, y, theta)
    Jl = _jac(compile_loop_model(st).jac, y, theta)
    assert np.max(np.abs(Je - Jl)) <= 1e-9 * np.max(np.abs(Je))


def _chain(model, st, y, theta, beta):
    G = np.empty((st.M, st.M))
    H = np.empty((st.M, st.K))
    dA = np.empty(st.M if st.train_weights else 0)
    model.gradient(y, beta, theta, G, H, dA)
    return G, H, dA


def _jac_from_gradient(model, st, y, theta, T, beta=0.7, h=3e-3):
    lay = state_layout(st)
    Q, R, _ = lay.unpack(y)
    G, H, _ = _chain(model, st, y, theta, beta)
    iu = np.triu_indices(st.M)
    J = np.empty((y.size, y.size))
    for j in range(y.size):
        e = np.zeros(y.size)
        e[j] = 1.0
        parts = [_chain(model, st, y + c * h * e, theta, beta) for c in (2, 1, -1, -2)]
        dG, dH, ddA = [(-a + 8 * b - 8 * c + d) / (12 * h) for a, b, c, d in zip(*parts)]
        eQ, eR, _ = lay.unpack(e)
        dQ = -(dG @ Q + G @ eQ + eQ @ G.T + Q @ dG.T + dH @ R.T + H @ eR.T + eR @ H.T
               + R @ dH.T)
        dR = -(dG @ R + G @ eR + dH @ T)
        col = [dQ[iu], dR.ravel()] + ([-ddA] if st.train_weights else [])
        J[:, j] = np.concatenate(col)
    return J


@pytest.mark.parametrize("K, M, tw, path", [(2, 4, True, "geometric"), (4, 4, False, "tempering")])
def test_loop_jac_matches_differences_of_the_gradient(K, M, tw, path):
    st = ModelStructure(K=K, M=M, train_weights=tw, path=path)
    y, theta, T = _state(st, np.random.default_rng(7), K + M)
    model = compile_loop_model(st)
    Jl = _jac(model.jac, y, theta)
    Jr = _jac_from_gradient(model, st, y, theta, T)
    assert np.max(np.abs(Jl - Jr)) <= 1e-7 * np.max(np.abs(Jr))


def test_symmetric_split_of_orthogonal_4_4_is_stable():
    spec = orthogonal(4, 4, 9.0)
    model = compile_loop_model(spec.structure)
    lay = state_layout(spec.structure)
    y = lay.pack(9.0 * np.eye(4), 9.0 * np.eye(4), None)        # m_k = mu_k: q = p
    fp = analyse_state(model, y, 1.0, spec.theta())
    assert fp.residual < 1e-10
    assert fp.stable and fp.label == "split"


def test_origin_of_antipodal_pair_with_four_components_is_unstable():
    spec = simplex(2, 4, 9.0)
    model = compile_loop_model(spec.structure)
    lay = state_layout(spec.structure)
    y = lay.pack(np.zeros((4, 4)), np.zeros((4, 2)), None)
    fp = analyse_state(model, y, 1.0, spec.theta())
    assert fp.residual < 1e-10
    assert not fp.stable and fp.n_unstable >= 1 and fp.label == "symmetric"
