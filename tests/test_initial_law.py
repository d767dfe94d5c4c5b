"""The exact finite-d initial law against direct sampling in R^d.

The reference sampler (here, not in the module) realises the target means and the centres as
actual d-dimensional vectors with the prescribed joint Gram matrix (in randomly rotated
coordinates, so it shares no construction with the module), draws m_k = c_k + sigma/sqrt(d) z_k
and computes Q = m m^T, R = m mu^T.  The two samples are compared entry by entry (means,
covariances: 5 standard errors; two-sample KS on Q_11, Q_12, R_11: p > 1e-3), and both against
the exact moments.  A deliberately wrong law (Wishart with d instead of d - rank T degrees of
freedom) must be rejected by the same checks.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from analysis.initial_law import (
    exact_moments,
    initial_alpha,
    initial_geometry,
    sample_initial_states,
    sample_overlaps,
    sample_wishart,
    state_vector,
)
from derivations.spec import (
    Initialisation,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    state_names,
    symmetric_bimodal,
)

N = 20_000
N_SE = 5.0
KS_P = 1e-3


# ----------------------------------------------------------------------------------------
# problems and the reference sampler
# ----------------------------------------------------------------------------------------

def bimodal(sigma: float = 1.3, A: float = 4.0) -> ProblemSpec:
    return symmetric_bimodal(A, sigma_init=sigma)


def random_k3_m2(perp_rank: int = 1) -> ProblemSpec:
    """Full-rank K = 3 target, M = 2 with non-zero centres whose perpendicular parts have
    rank ``perp_rank``; built from explicit vectors in R^6 (only their Gram matrices are kept)."""
    g = np.random.default_rng(12345)
    mu = np.zeros((3, 6))
    mu[:, :3] = g.normal(size=(3, 3)) * 1.2
    c = np.zeros((2, 6))
    c[:, :3] = g.normal(size=(2, 3)) * 0.7
    c[0, 3] = 0.8
    c[1, 3] = -0.5
    if perp_rank == 2:
        c[1, 4] = 0.6
    return ProblemSpec(
        target=TargetMixture(gram=mu @ mu.T, weights=[0.2, 0.3, 0.5]),
        family=VariationalFamily(2, weights=[0.3, 0.7], train_weights=True),
        init=Initialisation(sigma_init=0.9, centre_gram=c @ c.T, centre_overlaps=c @ mu.T))


def k2_m3_centres() -> ProblemSpec:
    """K = 2 (full rank), M = 3, centres with one perpendicular direction."""
    mu = np.array([[1.5, 0.3, 0.0], [-0.4, 1.1, 0.0]])
    c = np.array([[0.5, -0.2, 0.3], [0.0, 0.4, -0.6], [-0.3, -0.3, 0.0]])
    return ProblemSpec(
        target=TargetMixture(gram=mu @ mu.T, weights=[0.5, 0.5]),
        family=VariationalFamily(3),
        init=Initialisation(sigma_init=1.1, centre_gram=c @ c.T, centre_overlaps=c @ mu.T))


def realise(spec: ProblemSpec, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vectors mu (K, d), c (M, d) with the spec's joint Gram matrix, randomly rotated."""
    K, M = spec.target.K, spec.family.M
    T = spec.target.T
    if spec.init.centre_gram is None:
        C, P = np.zeros((M, M)), np.zeros((M, K))
    else:
        C, P = np.array(spec.init.centre_gram), np.array(spec.init.centre_overlaps)
    J = np.block([[T, P.T], [P, C]])
    lam, V = np.linalg.eigh(J)
    keep = lam > 1e-9 * max(1.0, np.abs(J).max())
    X = V[:, keep] * np.sqrt(lam[keep])
    assert X.shape[1] <= d, "reference: joint Gram matrix does not fit in R^d"
    X = np.hstack([X, np.zeros((K + M, d - X.shape[1]))])
    O, _ = np.linalg.qr(rng.normal(size=(d, d)))
    X = X @ O.T
    np.testing.assert_allclose(X @ X.T, J, atol=1e-9)
    return X[:K], X[K:]


def direct_overlaps(spec: ProblemSpec, d: int, n: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Reference: sample the d-dimensional means and form Q (n, M, M), R (n, M, K)."""
    mu, c = realise(spec, d, rng)
    M = spec.family.M
    m = c + spec.init.sigma_init / np.sqrt(d) * rng.standard_normal((n, M, d))
    return m @ m.transpose(0, 2, 1), m @ mu.T


def qr_state(spec: ProblemSpec, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """(Q upper, R) part of the state, (n, n_qr)."""
    K, M = spec.target.K, spec.family.M
    return state_vector(spec, Q, R)[:, :M * (M + 1) // 2 + M * K]


# ----------------------------------------------------------------------------------------
# statistics helpers
# ----------------------------------------------------------------------------------------

def mean_se(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return y.mean(0), y.std(0, ddof=1) / np.sqrt(y.shape[0])


def cov_se(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample covariance matrix and the standard error of each entry."""
    yc = y - y.mean(0)
    prod = yc[:, :, None] * yc[:, None, :]
    return prod.mean(0), prod.std(0, ddof=1) / np.sqrt(y.shape[0])


def moment_violations(a: np.ndarray, b: np.ndarray) -> list[str]:
    """Entries whose means or covariances differ by more than N_SE combined standard errors."""
    bad = []
    ma, sa = mean_se(a)
    mb, sb = mean_se(b)
    z = np.abs(ma - mb) / np.sqrt(sa ** 2 + sb ** 2 + 1e-300)
    bad += [f"mean[{i}] z={z[i]:.1f}" for i in np.flatnonzero(z > N_SE)]
    ca, sca = cov_se(a)
    cb, scb = cov_se(b)
    z = np.abs(ca - cb) / np.sqrt(sca ** 2 + scb ** 2 + 1e-300)
    bad += [f"cov[{i},{j}] z={z[i, j]:.1f}" for i, j in zip(*np.nonzero(z > N_SE))]
    return bad


def exact_violations(y: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> list[str]:
    bad = []
    m, se = mean_se(y)
    z = np.abs(m - mean) / np.maximum(se, 1e-300)
    bad += [f"mean[{i}] z={z[i]:.1f}" for i in np.flatnonzero(z > N_SE)]
    c, sc = cov_se(y)
    # entries that are exactly zero in both (e.g. R of a rank-deficient T) have se = 0
    z = np.abs(c - cov) / np.maximum(sc, 1e-12)
    bad += [f"cov[{i},{j}] z={z[i, j]:.1f}" for i, j in zip(*np.nonzero(z > N_SE))]
    return bad


def ks_pvalues(spec: ProblemSpec, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    names = state_names(spec.target.K, spec.family.M, False)
    out = {}
    for name in ("Q_1_1", "Q_1_2", "R_1_1"):
        if name in names:
            i = names.index(name)
            out[name] = ks_2samp(a[:, i], b[:, i]).pvalue
    return out


# ----------------------------------------------------------------------------------------
# the law against direct sampling
# ----------------------------------------------------------------------------------------

CASES = [
    ("bimodal", bimodal, 1),        # d - r = 0: Q = U U^T only
    ("bimodal", bimodal, 2),        # d - r = 1 < M: singular Wishart (d < K + M)
    ("bimodal", bimodal, 5),        # Bartlett with 4 dof
    ("bimodal", bimodal, 50),
    ("k3m2", random_k3_m2, 4),      # r = 3, p = 1, no Wishart part (d < K + M)
    ("k3m2", random_k3_m2, 5),      # one free dimension: singular Wishart
    ("k3m2", random_k3_m2, 50),     # Bartlett with 46 dof
    ("k3m2p2", lambda: random_k3_m2(2), 5),   # r + p = d: no free dimension
    ("k2m3", k2_m3_centres, 5),     # M = 3, n = 2 < M
    ("k2m3", k2_m3_centres, 9),     # M = 3, Bartlett with 6 dof
]


@pytest.mark.parametrize("label, make, d", CASES, ids=[f"{c[0]}-d{c[2]}" for c in CASES])
def test_law_matches_direct_sampling(label, make, d):
    spec = make()
    seed = 1000 * d + len(label)
    Qf, Rf = sample_overlaps(spec, d, N, np.random.default_rng(seed))
    Qd, Rd = direct_overlaps(spec, d, N, np.random.default_rng(seed + 1))
    a, b = qr_state(spec, Qf, Rf), qr_state(spec, Qd, Rd)
    assert np.all(np.isfinite(a))
    # the module's Q is symmetric and PSD draw by draw; R lies in the range of T
    np.testing.assert_array_equal(Qf, Qf.transpose(0, 2, 1))
    assert np.linalg.eigvalsh(Qf).min() > -1e-10
    assert not moment_violations(a, b), moment_violations(a, b)
    mean, cov = exact_moments(spec, d)
    assert not exact_violations(a, mean, cov), exact_violations(a, mean, cov)
    assert not exact_violations(b, mean, cov), exact_violations(b, mean, cov)
    pv = ks_pvalues(spec, a, b)
    assert all(p > KS_P for p in pv.values()), pv


def test_known_moments_zero_centres():
    """E Q_kk = |c_k|^2 + sigma^2 = sigma^2, Var R_ka = sigma^2 T_aa / d (zero centres)."""
    sigma, A, d = 1.3, 4.0, 5
    spec = bimodal(sigma, A)
    Q, R = sample_overlaps(spec, d, 200_000, 7)
    n = Q.shape[0]
    for k in range(2):
        qkk = Q[:, k, k]
        assert abs(qkk.mean() - sigma ** 2) < N_SE * qkk.std() / np.sqrt(n)
        # Var Q_kk = 2 sigma^4 / d exactly (|m_k|^2 = sigma^2/d chi^2_d)
        assert abs(qkk.var() / (2 * sigma ** 4 / d) - 1) < N_SE * np.sqrt(8 / n)
        for a in range(2):
            rka = R[:, k, a]
            var = sigma ** 2 * A / d
            assert abs(rka.mean()) < N_SE * np.sqrt(var / n)
            assert abs(rka.var() / var - 1) < N_SE * np.sqrt(2 / n)
    # rank-1 target: R_k2 = -R_k1 exactly
    np.testing.assert_allclose(R[:, :, 1], -R[:, :, 0], atol=1e-12)


def test_known_means_with_centres():
    """E Q_kk = |c_k|^2 + sigma^2 and E R = c . mu with non-zero centres."""
    spec = random_k3_m2()
    d = 5
    Q, R = sample_overlaps(spec, d, 100_000, 11)
    C, P = np.array(spec.init.centre_gram), np.array(spec.init.centre_overlaps)
    sig2 = spec.init.sigma_init ** 2
    n = Q.shape[0]
    for k in range(2):
        se = Q[:, k, k].std() / np.sqrt(n)
        assert abs(Q[:, k, k].mean() - (C[k, k] + sig2)) < N_SE * se
    se = R.std(0) / np.sqrt(n)
    assert np.all(np.abs(R.mean(0) - P) < N_SE * se)
    # Var R_ka = sigma^2 T_aa / d regardless of the centres
    T = spec.target.T
    var = sig2 * np.diag(T)[None, :] / d
    assert np.all(np.abs(R.var(0) / var - 1) < N_SE * np.sqrt(2 / n))


def test_wrong_dof_is_detected():
    """Using d instead of d - rank(T) Wishart degrees of freedom must fail at d = 5."""
    spec, d = bimodal(), 5
    geo = initial_geometry(spec)
    assert geo.r == 1 and geo.wishart_dof(d) == 4
    rng = np.random.default_rng(3)
    s = spec.init.sigma_init / np.sqrt(d)
    U = s * rng.standard_normal((N, 2, geo.r))
    Qw = U @ U.transpose(0, 2, 1) + s * s * sample_wishart(N, 2, d, rng)   # wrong: d dof
    Rw = U @ geo.e.T
    Qd, Rd = direct_overlaps(spec, d, N, np.random.default_rng(4))
    a, b = qr_state(spec, Qw, Rw), qr_state(spec, Qd, Rd)
    assert moment_violations(a, b)
    pv = ks_pvalues(spec, a, b)
    assert pv["Q_1_1"] < 1e-6, pv


# ----------------------------------------------------------------------------------------
# Wishart sampler
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dim, dof", [(2, 4), (3, 3), (3, 7), (3, 2), (1, 1), (2, 0)])
def test_wishart_against_direct(dim, dof):
    n = 20_000
    W = sample_wishart(n, dim, dof, 5)
    assert W.shape == (n, dim, dim)
    if dof == 0:
        assert not W.any()
        return
    Y = np.random.default_rng(6).standard_normal((n, dim, dof))
    Wd = Y @ Y.transpose(0, 2, 1)
    iu = np.triu_indices(dim)
    a, b = W[:, iu[0], iu[1]], Wd[:, iu[0], iu[1]]
    assert not moment_violations(a, b), moment_violations(a, b)
    for i in range(a.shape[1]):
        assert ks_2samp(a[:, i], b[:, i]).pvalue > KS_P
    # exact mean: dof * I
    m, se = mean_se(a)
    assert np.all(np.abs(m - dof * np.eye(dim)[iu]) < N_SE * se)
    # rank: min(dim, dof)
    assert np.all(np.linalg.matrix_rank(W) == min(dim, dof))


# ----------------------------------------------------------------------------------------
# API, layout, validation, determinism, speed
# ----------------------------------------------------------------------------------------

def test_state_layout_and_alpha():
    spec = random_k3_m2()                        # train_weights=True, w = (0.3, 0.7)
    y = sample_initial_states(spec, 7, 10, 0)
    names = state_names(3, 2, True)
    assert y.shape == (10, len(names))
    Q, R = sample_overlaps(spec, 7, 10, 0)
    assert Q.shape == (10, 2, 2) and R.shape == (10, 2, 3)
    col = {nm: i for i, nm in enumerate(names)}
    for k in range(2):
        for l in range(k, 2):
            np.testing.assert_array_equal(y[:, col[f"Q_{k + 1}_{l + 1}"]], Q[:, k, l])
        for a in range(3):
            np.testing.assert_array_equal(y[:, col[f"R_{k + 1}_{a + 1}"]], R[:, k, a])
    alpha = initial_alpha(spec)
    np.testing.assert_allclose(alpha, np.log([0.3, 0.7]) - np.log([0.3, 0.7]).mean())
    np.testing.assert_allclose(np.exp(alpha) / np.exp(alpha).sum(), [0.3, 0.7])
    for k in range(2):
        np.testing.assert_allclose(y[:, col[f"alpha_{k + 1}"]], alpha[k])
    # fixed weights: no alpha columns
    assert sample_initial_states(bimodal(), 3, 4, 0).shape == (4, len(state_names(2, 2, False)))


def test_seed_and_generator():
    spec = bimodal()
    a = sample_initial_states(spec, 5, 100, 42)
    b = sample_initial_states(spec, 5, 100, np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    c = sample_initial_states(spec, 5, 100, 43)
    assert not np.array_equal(a, c)


def test_zero_target():
    """T = 0 (r = 0): Q = sigma^2/d Wishart_M(d), R = 0."""
    spec = ProblemSpec(target=TargetMixture(gram=[[0.0]], weights=[1.0]),
                       family=VariationalFamily(2), init=Initialisation(sigma_init=2.0))
    Q, R = sample_overlaps(spec, 3, 20_000, 1)
    assert not R.any()
    Qd, Rd = direct_overlaps(spec, 3, 20_000, np.random.default_rng(2))
    assert not moment_violations(qr_state(spec, Q, R)[:, :3], qr_state(spec, Qd, Rd)[:, :3])


@pytest.mark.parametrize("kwargs, name", [
    ({"d": 0}, "d"), ({"d": -3}, "d"), ({"d": 2.5}, "d"), ({"d": True}, "d"),
    ({"d": "5"}, "d"), ({"n_draws": 0}, "n_draws"), ({"n_draws": 1.0}, "n_draws"),
    ({"rng": "seed"}, "rng"), ({"rng": 1.5}, "rng"), ({"rng": -1}, "rng"),
])
def test_validation(kwargs, name):
    args = {"spec": bimodal(), "d": 5, "n_draws": 10, "rng": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"^{name}:"):
        sample_initial_states(**args)
    with pytest.raises(ValueError, match=f"^{name}:"):
        sample_overlaps(**args)


def test_dimension_too_small():
    spec = random_k3_m2()                        # r = 3, p = 1
    assert initial_geometry(spec).min_dimension == 4
    with pytest.raises(ValueError, match="^d:.*need d >= 4"):
        sample_overlaps(spec, 3, 10, 0)
    with pytest.raises(ValueError, match="^spec:"):
        sample_overlaps("not a spec", 3, 10, 0)
