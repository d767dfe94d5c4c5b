"""The compiled reduced equations against two independent computations.

1. Route 1 consistency: the compiled vector field equals minus the gradient of the compiled
   objective F, with the gradient taken by finite differences in (Q, R, alpha) and mapped
   through the chain rule of DESIGN.md section 2.
2. Route 2: the vector field equals the direct d-dimensional formula (Stein's lemma),
   evaluated here in R^7 with random means by a separate code path: Gauss-Hermite quadrature
   over an orthonormal basis of the relevant span, full d-dimensional densities.
3. The compiled Jacobian equals finite differences of the compiled vector field.
"""

from __future__ import annotations

import numpy as np
import pytest

from derivations.codegen import compile_model
from derivations.spec import (
    AnnealingPath,
    Initialisation,
    ModelStructure,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    state_names,
)

D = 7


def make_problem(K: int, M: int, tw: bool, path: str, rng: np.random.Generator):
    """Random means in R^7 (moderate norms, so the reference quadrature converges fast)."""
    mu = rng.normal(size=(K, D)) * 0.3
    m = rng.normal(size=(M, D)) * 0.3
    pi = rng.dirichlet(np.full(K, 3.0))
    w = rng.dirichlet(np.full(M, 3.0))
    alpha = np.log(w) - np.log(w).mean()
    Delta, s, s0 = 1.3, 0.7, 1.9
    spec = ProblemSpec(
        target=TargetMixture.from_means(mu, pi, Delta),
        family=VariationalFamily(M, w, s, train_weights=tw),
        path=AnnealingPath("geometric", s0) if path == "geometric" else AnnealingPath(),
        init=Initialisation())
    return spec, mu, m, alpha


def pack(spec: ProblemSpec, Q, R, alpha) -> np.ndarray:
    s = spec.structure
    y = [Q[k, l] for k in range(s.M) for l in range(k, s.M)]
    y += list(R.ravel())
    if s.train_weights:
        y += list(alpha)
    assert len(y) == len(state_names(s.K, s.M, s.train_weights))
    return np.array(y, dtype=float)


# ------------------------------------------------------------------------------------------
# route 2, written independently of the package
# ------------------------------------------------------------------------------------------

def _hermite(n: int):
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / np.sqrt(2 * np.pi)


def span_expectation(f, centre, vectors, s, n_nodes=None):
    """E f(x) for x = centre + sqrt(s) xi, xi ~ N(0, I_d), f depending on x only through its
    inner products with ``vectors`` and with ``centre`` (which must lie in their span), and
    through |x|^2: f receives (X, extra) with X (N, d) points of the span and ``extra`` the
    expected squared norm of the orthogonal part, s (d - r)."""
    U, sv, _ = np.linalg.svd(np.asarray(vectors).T, full_matrices=False)
    U = U[:, sv > 1e-12 * sv.max()]
    r = U.shape[1]
    # Gauss-Hermite converges geometrically here (softmax is analytic in a strip); the node
    # counts keep the quadrature error below 1e-11 for the vector norms of make_problem
    x1, w1 = _hermite(n_nodes or {1: 80, 2: 80, 3: 56}.get(r, 32))
    grids = np.meshgrid(*([x1] * r), indexing="ij")
    eta = np.stack([g.ravel() for g in grids], axis=1)
    wts = np.prod(np.stack(np.meshgrid(*([w1] * r), indexing="ij"), 0).reshape(r, -1), axis=0)
    X = centre[None, :] + np.sqrt(s) * eta @ U.T
    return np.tensordot(wts, f(X, s * (D - r)), axes=(0, 0))


def _lse(Z):
    zmax = Z.max(axis=1, keepdims=True)
    return (zmax + np.log(np.exp(Z - zmax).sum(axis=1, keepdims=True)))[:, 0]


def direct_rhs(spec: ProblemSpec, mu, m, alpha, beta):
    """(dQ/dt, dR/dt, dalpha/dt) from DESIGN.md section 2, route 2, in R^d."""
    M = m.shape[0]
    pi, Delta = spec.target.pi, spec.target.variance
    s = spec.family.variance
    geometric = spec.path.kind == "geometric"
    gamma = 1.0 - beta if geometric else 0.0
    s0 = spec.path.base_variance if geometric else 1.0
    w = np.exp(alpha - _lse(alpha[None, :])[0]) if spec.family.train_weights else spec.family.w

    def resp_p(X, extra):
        Z = np.log(pi)[None, :] + (X @ mu.T - 0.5 * (mu * mu).sum(1)[None, :]) / Delta
        return np.exp(Z - _lse(Z)[:, None])

    def resp_q(X, extra):
        Z = np.log(w)[None, :] + (X @ m.T - 0.5 * (m * m).sum(1)[None, :]) / s
        return np.exp(Z - _lse(Z)[:, None])

    dm = np.zeros_like(m)
    for k in range(M):
        Er = span_expectation(resp_p, m[k], np.vstack([mu, m[k]]), s)
        Erho = span_expectation(resp_q, m[k], m, s)
        dm[k] = w[k] * ((beta / Delta) * (Er @ mu - m[k]) - (1 / s) * (Erho @ m - m[k])
                        - (gamma / s0) * m[k])
    dQ = dm @ m.T + m @ dm.T
    dR = dm @ mu.T

    dalpha = None
    if spec.family.train_weights:
        def log_q(X, extra):
            sq = (X * X).sum(1) + extra
            Z = np.log(w)[None, :] + (X @ m.T - 0.5 * (m * m).sum(1)[None, :]) / s
            return -sq / (2 * s) - D / 2 * np.log(2 * np.pi * s) + _lse(Z)

        def log_p(X, extra):
            sq = (X * X).sum(1) + extra
            Z = np.log(pi)[None, :] + (X @ mu.T - 0.5 * (mu * mu).sum(1)[None, :]) / Delta
            return -sq / (2 * Delta) - D / 2 * np.log(2 * np.pi * Delta) + _lse(Z)

        f = np.empty(M)
        for j in range(M):
            Elogq = span_expectation(log_q, m[j], m, s)
            Elogp = span_expectation(log_p, m[j], np.vstack([mu, m[j]]), s)
            Elogp0 = -((m[j] @ m[j]) + D * s) / (2 * s0) - D / 2 * np.log(2 * np.pi * s0)
            f[j] = Elogq - beta * Elogp - gamma * Elogp0
        dalpha = -w * (f - w @ f)
    return dQ, dR, dalpha


CASES = [(K, M, tw, path) for (K, M) in [(2, 2), (2, 3), (3, 2)]
         for tw in (False, True) for path in ("tempering", "geometric")]


@pytest.mark.parametrize("K,M,tw,path", CASES)
def test_vector_field_matches_direct_formula_in_Rd(K, M, tw, path):
    rng = np.random.default_rng(1000 * K + 100 * M + 10 * tw + (path == "geometric"))
    spec, mu, m, alpha = make_problem(K, M, tw, path, rng)
    model = compile_model(spec.structure)
    theta = spec.theta()
    for beta in (0.37, 1.0):
        y = pack(spec, m @ m.T, m @ mu.T, alpha)
        out = np.empty_like(y)
        model.rhs(y, beta, theta, out)
        dQ, dR, dalpha = direct_rhs(spec, mu, m, alpha, beta)
        expected = pack(spec, dQ, dR, dalpha if tw else None)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)


# ------------------------------------------------------------------------------------------
# route 1 consistency: rhs = -grad F through the chain rule
# ------------------------------------------------------------------------------------------

def _fd(f, x, i, h):
    """Fourth-order central difference of f in coordinate i."""
    def at(t):
        z = x.copy()
        z[i] += t
        return f(z)
    return (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)


@pytest.mark.parametrize("K,M,tw,path", [(2, 2, True, "geometric"), (2, 3, True, "tempering"),
                                         (3, 2, False, "geometric"), (2, 2, False, "tempering")])
def test_vector_field_is_minus_gradient_of_objective(K, M, tw, path):
    rng = np.random.default_rng(7 + K + 10 * M)
    spec, mu, m, alpha = make_problem(K, M, tw, path, rng)
    model = compile_model(spec.structure)
    theta = spec.theta()
    names = state_names(K, M, tw)
    T = spec.target.T
    for trial in range(3):
        mm = m + 0.3 * rng.normal(size=m.shape)
        Q, R = mm @ mm.T, mm @ mu.T
        y = pack(spec, Q, R, alpha + 0.5 * rng.normal(size=M))
        beta = rng.uniform(0.2, 1.0)
        F = lambda z: model.objective(z, beta, theta)  # noqa: E731
        grad = np.array([_fd(F, y, i, 1e-3) for i in range(len(y))])
        G = np.zeros((M, M))
        H = np.zeros((M, K))
        for i, name in enumerate(names):
            kind, *idx = name.split("_")
            if kind == "Q":
                k, l = int(idx[0]) - 1, int(idx[1]) - 1
                # one symbol per unordered pair: dF/dq_kl = G_kl (k != l), = G_kk / 2 (k == l)
                G[k, l] = G[l, k] = grad[i] * (2 if k == l else 1)
            elif kind == "R":
                H[int(idx[0]) - 1, int(idx[1]) - 1] = grad[i]
        dQ = -(G @ Q + Q @ G.T + H @ R.T + R @ H.T)
        dR = -(G @ R + H @ T)
        dalpha = -grad[len(y) - M:] if tw else None
        expected = pack(spec, dQ, dR, dalpha)
        out = np.empty_like(y)
        model.rhs(y, beta, theta, out)
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-8)


@pytest.mark.parametrize("K,M,tw,path", [(2, 2, True, "geometric"), (2, 2, False, "tempering"),
                                         (2, 3, False, "tempering")])
def test_jacobian_matches_finite_differences(K, M, tw, path):
    rng = np.random.default_rng(3 + K * M)
    spec, mu, m, alpha = make_problem(K, M, tw, path, rng)
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
        col = _fd(rhs, y, j, 1e-3)
        np.testing.assert_allclose(J[:, j], col, rtol=0, atol=1e-7)


def test_one_compiled_model_serves_all_parameter_values():
    a = compile_model(ModelStructure(2, 2, False, "tempering"))
    b = compile_model(ModelStructure(2, 2, False, "tempering"))
    assert a is b and a.rhs is b.rhs


def test_generated_modules_are_cached_on_disk(tmp_path, monkeypatch):
    """A second process-level load of the same structure reuses the generated module; the key
    changes with the structure, the function and the package version."""
    import derivations.codegen as cg
    from derivations.spec import ModelStructure
    monkeypatch.setenv("MFVI_CACHE_DIR", str(tmp_path))
    st = ModelStructure(1, 1)
    first = cg.CompiledModel(st)
    first.rhs
    assert first.timings["rhs"]["generated"] is True
    assert first.module_path("rhs").parent == tmp_path / "generated"
    second = cg.CompiledModel(st)           # a fresh model object: nothing shared in memory
    second.rhs
    assert second.timings["rhs"]["generated"] is False
    keys = {cg.module_key(st, "rhs"), cg.module_key(st, "jac"),
            cg.module_key(ModelStructure(1, 1, True), "rhs"),
            cg.module_key(ModelStructure(1, 1, False, "geometric"), "rhs")}
    assert len(keys) == 4
    before = cg.module_key(st, "rhs")
    monkeypatch.setattr(cg, "_package_version", lambda: "999.0")
    assert cg.module_key(st, "rhs") != before
