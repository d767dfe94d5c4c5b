r"""Exact finite-d law of the initial overlaps (Q(0), R(0)) and of alpha(0).

Model (DESIGN.md section 1)
---------------------------
Target means ``mu_a`` in R^d (a = 1..K) with Gram matrix ``T = (mu_a . mu_b)``, PSD of rank r.
Initial means ``m_k = c_k + s z_k`` (k = 1..M), ``s = sigma_init / sqrt(d)``, ``z_k ~ N(0, I_d)``
independent.  The centres c_k are known only through ``C = (c_k . c_l)`` (``centre_gram``,
M x M) and ``P = (c_k . mu_a)`` (``centre_overlaps``, M x K), both zero by default.  We want the
law of ``Q_kl = m_k . m_l`` and ``R_ka = m_k . mu_a`` without ever forming d-vectors.

1. Only the joint Gram matrix matters
-------------------------------------
The joint Gram matrix ``J = [[T, P^T], [P, C]]`` fixes the configuration (mu, c) up to an
orthogonal map O of R^d.  Since ``O^T z_k`` has the same law as ``z_k`` (isotropy), the law of
(Q, R) is the same for every realisation of J in R^d.  A realisation exists iff
``d >= rank(J) = r + p`` (p defined below); otherwise :class:`ValueError` names ``d``.  So we may
pick the most convenient coordinates.

2. Coordinates
--------------
Factor ``T = e e^T`` with ``e = V_r diag(lambda_r)^{1/2}`` (K x r), from the eigenpairs of T
with ``lambda > tol``.  Choose an orthonormal basis of R^d whose first r vectors span
V = span{mu_a}: then ``mu_a = (e_a, 0)``.  The V-part of ``c_k`` has coordinates ``v_k`` (rows of
the M x r matrix v) fixed by ``v e^T = P``, i.e. ``v = P V_r diag(lambda_r)^{-1/2}``; this is
consistent iff the rows of P lie in the range of T, which PSD-ness of J guarantees.  The
perpendicular parts ``c_k^perp`` have Gram matrix ``C_perp = C - v v^T`` (PSD, rank p <= M);
factor ``C_perp = f f^T`` (f: M x p).  Choose the next p basis vectors (inside V_perp) so that
``c_k^perp = (f_k, 0)``.  The last ``n = d - r - p`` basis vectors are orthogonal to every mu_a
and every c_k.  In these coordinates

    m_k = ( v_k + s g_k  |  f_k + s h_k  |  s y_k ),     g_k in R^r, h_k in R^p, y_k in R^n,

with all of g, h, y independent standard Gaussians.  Writing ``U = v + s G`` (M x r),
``N = f + s H`` (M x p) and Y (M x n):

    R = U e^T,        Q = U U^T + N N^T + s^2 Y Y^T.

U and N are sampled explicitly (r <= K and p <= M columns, cheap).  ``W = Y Y^T`` is a
standard Wishart matrix ``W_M(n, I)``, independent of U and N, and is the only place where d
enters besides s -- with ``n = d - rank(J)`` degrees of freedom, *not* d.

3. Bartlett decomposition
-------------------------
If ``n >= M``, ``W = L L^T`` in law, with L lower triangular (M x M) and independent entries
``L_ii = sqrt(chi^2_{n-i+1})`` (i = 1..M) and ``L_ij ~ N(0, 1)`` for i > j (Bartlett 1933: L is
the Cholesky factor of Y Y^T, i.e. the transposed R factor of the QR decomposition of Y^T,
obtained by Gram-Schmidt on the rows of Y; rotational invariance makes each new row's component
orthogonal to the previous ones a chi with the remaining degrees of freedom).  The cost is
O(M^2) per draw, independent of d.  If ``n < M`` the Wishart matrix is singular and we sample
the small M x n Gaussian matrix Y directly (cost O(M^2 n) with n < M).  If n = 0 there is no
such term.  Every step is an identity in law, so the sampler is exact for every d >= r + p
(including d = 1 and d < K + M); there is no large-d approximation anywhere.

The only numerical choice is the rank tolerance (eigenvalues of T and of C_perp below
``_RANK_RTOL * max(1, max|entry|)`` are treated as zero, matching the PSD tolerance of
``derivations.spec``); it moves the degrees of freedom only for matrices that are singular to
that precision.

4. Weights
----------
alpha(0) is deterministic: ``alpha_k = log w_k - mean_l(log w_l)`` with w the family's
(initial) weights, so softmax(alpha) = w and sum(alpha) = 0 (the gauge of the logits).

Exact moments
-------------
With ``s^2 = sigma_init^2 / d``:  ``E R = P``, ``E Q = C + sigma_init^2 I``,
``Cov(R_ka, R_lb) = s^2 delta_kl T_ab``,
``Cov(Q_kl, R_ma) = s^2 (delta_lm P_ka + delta_km P_la)``,
``Cov(Q_kl, Q_mn) = s^2 (delta_ln C_km + delta_lm C_kn + delta_kn C_lm + delta_km C_ln)
+ s^4 d (delta_km delta_ln + delta_kn delta_lm)``; see :func:`exact_moments`.

API
---
* :func:`sample_overlaps` -- (Q, R) arrays of shapes (n, M, M), (n, M, K).
* :func:`sample_initial_states` -- (n, n_state) in the layout of
  ``derivations.spec.state_names(K, M, train_weights)``.
* :func:`initial_alpha`, :func:`initial_geometry`, :func:`sample_wishart`,
  :func:`exact_moments`.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

from derivations.spec import ProblemSpec, require_spec, state_names

__all__ = [
    "InitialGeometry",
    "initial_geometry",
    "initial_alpha",
    "sample_wishart",
    "sample_overlaps",
    "sample_initial_states",
    "exact_moments",
    "state_vector",
]

RNGLike = int | np.integer | np.random.Generator | np.random.SeedSequence | None

_RANK_RTOL = 1e-10
_CONSISTENCY_RTOL = 1e-7


# ----------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------

def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    return int(value)


def _as_generator(rng: RNGLike) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, Integral):
        raise ValueError(f"rng: must be an int seed or a numpy Generator, got {rng!r}")
    if rng < 0:
        raise ValueError(f"rng: a seed must be >= 0, got {rng!r}")
    return np.random.default_rng(int(rng))


# ----------------------------------------------------------------------------------------
# geometry: factors of the joint Gram matrix
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InitialGeometry:
    """Coordinates of the target means and the centres (module docstring, section 2).

    Attributes
    ----------
    e : (K, r) array, ``T = e e^T``; coordinates of mu_a in V = span{mu}.
    v : (M, r) array, coordinates of the centres' V-parts, ``v e^T = centre_overlaps``.
    f : (M, p) array, ``f f^T = centre_gram - v v^T`` (perpendicular parts of the centres).
    sigma_init : float.
    """

    e: np.ndarray
    v: np.ndarray
    f: np.ndarray
    sigma_init: float

    @property
    def r(self) -> int:
        """rank(T) = dim span{mu_a}."""
        return self.e.shape[1]

    @property
    def p(self) -> int:
        """Rank of the centres' perpendicular parts."""
        return self.f.shape[1]

    @property
    def min_dimension(self) -> int:
        """Smallest d in which the target means and the centres can be realised (r + p)."""
        return max(1, self.r + self.p)

    def wishart_dof(self, d: int) -> int:
        """Degrees of freedom ``d - r - p`` of the Wishart part of Q."""
        return d - self.r - self.p


def _psd_factor(G: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigen-factor of a symmetric PSD matrix: (factor (n, rank), eigvecs kept, eigvals kept)."""
    G = 0.5 * (G + G.T)
    lam, V = np.linalg.eigh(G)
    scale = max(1.0, float(np.max(np.abs(G)))) if G.size else 1.0
    keep = lam > _RANK_RTOL * scale
    lam_k, V_k = lam[keep], V[:, keep]
    return V_k * np.sqrt(lam_k), V_k, lam_k


def initial_geometry(spec: ProblemSpec) -> InitialGeometry:
    """Factor the joint Gram matrix of (mu_a, c_k) as described in the module docstring."""
    spec = require_spec(spec)
    T = spec.target.T
    M = spec.family.M
    e, V_r, lam_r = _psd_factor(T)
    if spec.init.centre_gram is None:
        v = np.zeros((M, e.shape[1]))
        f = np.zeros((M, 0))
    else:
        C = np.array(spec.init.centre_gram, dtype=float)
        P = np.array(spec.init.centre_overlaps, dtype=float)
        v = (P @ V_r) / np.sqrt(lam_r) if lam_r.size else np.zeros((M, 0))
        scale = max(1.0, float(np.max(np.abs(T))), float(np.max(np.abs(C))))
        if np.max(np.abs(v @ e.T - P), initial=0.0) > _CONSISTENCY_RTOL * scale:
            raise ValueError("init.centre_overlaps: inconsistent with target.gram (the overlaps "
                             "c_k . mu_a must lie in the range of T)")
        C_perp = C - v @ v.T
        f, _, _ = _psd_factor(C_perp)
    return InitialGeometry(e=e, v=v, f=f, sigma_init=float(spec.init.sigma_init))


# ----------------------------------------------------------------------------------------
# samplers
# ----------------------------------------------------------------------------------------

def sample_wishart(n_draws: int, dim: int, dof: int, rng: RNGLike = None) -> np.ndarray:
    """Draws of the standard Wishart matrix ``W = Y Y^T``, Y a (dim, dof) N(0, 1) matrix.

    Bartlett decomposition when ``dof >= dim`` (O(dim^2) per draw, independent of dof);
    direct sampling of Y when ``0 < dof < dim`` (singular Wishart); zeros when dof = 0.

    Returns
    -------
    (n_draws, dim, dim) array.
    """
    n_draws = _check_positive_int("n_draws", n_draws)
    dim = _check_positive_int("dim", dim)
    if isinstance(dof, (bool, np.bool_)) or not isinstance(dof, Integral) or dof < 0:
        raise ValueError(f"dof: must be an integer >= 0, got {dof!r}")
    rng = _as_generator(rng)
    if dof == 0:
        return np.zeros((n_draws, dim, dim))
    if dof < dim:
        Y = rng.standard_normal((n_draws, dim, dof))
        return Y @ Y.transpose(0, 2, 1)
    L = np.zeros((n_draws, dim, dim))
    idx = np.arange(dim)
    # L_ii^2 ~ chi^2 with dof - i degrees of freedom (i = 0..dim-1, 0-based)
    L[:, idx, idx] = np.sqrt(rng.chisquare(dof - idx, size=(n_draws, dim)))
    il, jl = np.tril_indices(dim, -1)
    if il.size:
        L[:, il, jl] = rng.standard_normal((n_draws, il.size))
    return L @ L.transpose(0, 2, 1)


def sample_overlaps(spec: ProblemSpec, d: int, n_draws: int,
                    rng: RNGLike = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact draws of the initial overlaps in dimension d.

    Parameters
    ----------
    spec : ProblemSpec (target Gram T, family size M, ``spec.init``).
    d : int >= 1, the ambient dimension; must be at least rank of the joint Gram matrix of the
        target means and the centres.
    n_draws : int >= 1.
    rng : int seed, numpy Generator (or SeedSequence / None).

    Returns
    -------
    Q : (n_draws, M, M) array, ``Q_kl = m_k . m_l`` (symmetric).
    R : (n_draws, M, K) array, ``R_ka = m_k . mu_a``.
    """
    spec = require_spec(spec)
    d = _check_positive_int("d", d)
    n_draws = _check_positive_int("n_draws", n_draws)
    rng = _as_generator(rng)
    geo = initial_geometry(spec)
    M = spec.family.M
    n_free = geo.wishart_dof(d)
    if n_free < 0:
        raise ValueError(f"d: the target means and the centres span {geo.r + geo.p} dimensions "
                         f"(rank T = {geo.r}, perpendicular centre rank = {geo.p}); "
                         f"need d >= {geo.r + geo.p}, got {d}")
    s = geo.sigma_init / np.sqrt(d)
    U = geo.v + s * rng.standard_normal((n_draws, M, geo.r))          # (n, M, r)
    R = U @ geo.e.T                                                   # (n, M, K)
    Q = U @ U.transpose(0, 2, 1)                                      # (n, M, M)
    if geo.p:
        N = geo.f + s * rng.standard_normal((n_draws, M, geo.p))      # (n, M, p)
        Q += N @ N.transpose(0, 2, 1)
    if n_free:
        Q += (s * s) * sample_wishart(n_draws, M, n_free, rng)
    Q = 0.5 * (Q + Q.transpose(0, 2, 1))
    return Q, R


def initial_alpha(spec: ProblemSpec) -> np.ndarray:
    """Deterministic initial logits ``alpha = log w - mean(log w)``, shape (M,)."""
    spec = require_spec(spec)
    lw = np.log(spec.family.w)
    return lw - lw.mean()


def state_vector(spec: ProblemSpec, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Pack (Q (n, M, M), R (n, M, K)) into states (n, n_state) ordered as ``state_names``.

    alpha(0) (:func:`initial_alpha`) is appended when the weights train, and log s(0) =
    log(family.variance) when the variances are tied (trained).
    """
    spec = require_spec(spec)
    K, M, tw = spec.target.K, spec.family.M, spec.family.train_weights
    Q, R = np.asarray(Q, dtype=float), np.asarray(R, dtype=float)
    if Q.ndim != 3 or Q.shape[1:] != (M, M):
        raise ValueError(f"Q: must have shape (n, {M}, {M}), got {Q.shape}")
    if R.shape != (Q.shape[0], M, K):
        raise ValueError(f"R: must have shape ({Q.shape[0]}, {M}, {K}), got {R.shape}")
    from solvers.layout import state_layout
    alpha = np.broadcast_to(initial_alpha(spec), (Q.shape[0], M)) if tw else None
    if spec.family.variances != "tied":
        from solvers.ensemble import pack_state
        return pack_state(state_names(K, M, tw), Q, R, alpha)
    lay = state_layout(spec.structure)
    return lay.pack(Q, R, alpha, strict=True,
                    log_s=np.full(Q.shape[0], np.log(spec.family.variance)))


def sample_initial_states(spec: ProblemSpec, d: int, n_draws: int,
                          rng: RNGLike = None) -> np.ndarray:
    """Exact draws of the initial reduced state y(0) in dimension d.

    Returns
    -------
    (n_draws, n_state) array in the layout of
    ``derivations.spec.state_names(K, M, spec.family.train_weights)``:
    ``Q_k_l`` (k <= l, row-major), ``R_k_a`` (row-major), then ``alpha_k`` if weights train.
    """
    Q, R = sample_overlaps(spec, d, n_draws, rng)
    return state_vector(spec, Q, R)


# ----------------------------------------------------------------------------------------
# exact first and second moments
# ----------------------------------------------------------------------------------------

def exact_moments(spec: ProblemSpec, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of the (Q upper triangle, R) part of the state.

    Returns
    -------
    mean : (n_qr,) array, ``n_qr = M (M + 1) / 2 + M K``, ordered as ``state_names``.
    cov : (n_qr, n_qr) array.  (alpha(0) is deterministic and not included.)
    """
    spec = require_spec(spec)
    d = _check_positive_int("d", d)
    K, M = spec.target.K, spec.family.M
    T = spec.target.T
    sig2 = spec.init.sigma_init ** 2
    s2 = sig2 / d
    if spec.init.centre_gram is None:
        C, P = np.zeros((M, M)), np.zeros((M, K))
    else:
        C = np.array(spec.init.centre_gram, dtype=float)
        P = np.array(spec.init.centre_overlaps, dtype=float)
    I = np.eye(M)
    q_idx = list(zip(*np.triu_indices(M)))
    r_idx = [(k, a) for k in range(M) for a in range(K)]
    mean = np.array([C[k, l] + sig2 * I[k, l] for k, l in q_idx]
                    + [P[k, a] for k, a in r_idx])
    nq = len(q_idx)
    cov = np.zeros((nq + len(r_idx),) * 2)
    for i, (k, l) in enumerate(q_idx):
        for j, (m, n) in enumerate(q_idx):
            cov[i, j] = (s2 * (I[l, n] * C[k, m] + I[l, m] * C[k, n]
                               + I[k, n] * C[l, m] + I[k, m] * C[l, n])
                         + s2 * s2 * d * (I[k, m] * I[l, n] + I[k, n] * I[l, m]))
        for j, (m, a) in enumerate(r_idx):
            cov[i, nq + j] = cov[nq + j, i] = s2 * (I[l, m] * P[k, a] + I[k, m] * P[l, a])
    for i, (k, a) in enumerate(r_idx):
        for j, (l, b) in enumerate(r_idx):
            cov[nq + i, nq + j] = s2 * I[k, l] * T[a, b]
    return mean, cov
