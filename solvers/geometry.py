"""Geometry of the reduced state space (DESIGN.md sections 2 and 4).

Realisability
-------------
A state (Q, R) with target Gram matrix T is the Gram data of vectors mu_1..mu_K,
m_1..m_M in some R^d iff the joint Gram matrix

    ``G = [[T, R^T], [R, Q]]``   ((K + M) x (K + M))

is positive semi-definite; in particular ``|R_ka| <= sqrt(Q_kk T_aa)`` and
``|Q_kl| <= sqrt(Q_kk Q_ll)``.  The flow keeps realisable states realisable; from an
unrealisable start the reduced ODE has no meaning (and typically diverges).  The measure used
everywhere is the smallest eigenvalue of G divided by ``max(1, max |G_ij|)``
(:func:`gram_min_eigenvalue`); a state is accepted when it is ``>= -psd_tol``.  This module
is the one home of that rule: the fixed-point search, continuation and the checks of
user-given initial states (:func:`check_realisable`, used by :func:`solvers.ensemble.solve`
and :func:`~solvers.ensemble.solve_ensemble`) call it.

Physical subspace
-----------------
The weight gauge (``alpha -> alpha + c``) and, for rank-deficient T, the unrealisable
directions ``R N != 0`` (T N = 0) are removed by working on ``V = {y : R N = 0, sum alpha = 0}``
with the orthonormal basis of :func:`reduced_basis` (see :mod:`solvers.stability`).

Invariant subspaces and symmetries
----------------------------------
Coinciding components and (for targets symmetric under mu -> -mu) R = 0 are linear invariant
subspaces (:func:`invariant_constraints`, :func:`subspace_basis`, :func:`merge_coincident`,
:func:`zero_R`); signed permutations of components and modes under which the vector field is
equivariant are :class:`StateSymmetry` (:func:`find_symmetries`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layout import StateLayout
from .model import evaluate_rhs

__all__ = [
    "DEFAULT_PSD_TOL",
    "joint_gram",
    "gram_min_eigenvalue",
    "gram_min_eigenvalues",
    "is_realisable",
    "check_realisable",
    "realise",
    "factor_T",
    "null_space_of_T",
    "reduced_basis",
    "restricted_jacobian",
    "project_to_subspace",
    "invariant_constraints",
    "subspace_basis",
    "merge_coincident",
    "zero_R",
    "StateSymmetry",
    "state_symmetry",
    "random_realisable_states",
    "find_symmetries",
]

#: Default tolerance of the realisability test of user-given states (relative smallest
#: eigenvalue of the joint Gram matrix).  Loose enough for states that came out of an
#: integration at rtol ~ 1e-8 near the boundary of the PSD cone (rank-deficient Gram
#: matrices: d < K + M, coinciding components), tight enough to reject every state whose
#: overlaps no vectors realise by more than round-off.
DEFAULT_PSD_TOL = 1e-6


def joint_gram(Q: Any, R: Any, T: Any) -> np.ndarray:
    """``[[T, R^T], [R, Q]]`` (..., K + M, K + M) for Q (..., M, M), R (..., M, K), T (K, K)."""
    Q, R, T = (np.asarray(x, float) for x in (Q, R, T))
    batch = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2])
    K, M = T.shape[-1], Q.shape[-1]
    G = np.empty(batch + (K + M, K + M))
    G[..., :K, :K] = T
    G[..., :K, K:] = np.swapaxes(R, -1, -2)
    G[..., K:, :K] = R
    G[..., K:, K:] = Q
    return G


def _joint_gram(Q: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    return joint_gram(Q, R, T)


def gram_min_eigenvalues(Q: Any, R: Any, T: Any) -> np.ndarray:
    """Batched :func:`gram_min_eigenvalue`: Q (..., M, M), R (..., M, K) -> (...,)."""
    G = joint_gram(Q, R, T)
    G += np.swapaxes(G, -1, -2)
    G *= 0.5
    scale = np.maximum(np.abs(G).max(axis=(-2, -1)), 1.0)
    return np.linalg.eigvalsh(G)[..., 0] / scale


def check_realisable(Q: Any, R: Any, T: Any, name: str,
                     psd_tol: float = DEFAULT_PSD_TOL) -> None:
    """Raise ValueError naming ``name`` unless every state of the batch is realisable.

    Q (..., M, M), R (..., M, K), T (K, K): the joint Gram matrix ``[[T, R^T], [R, Q]]`` must
    be PSD within ``psd_tol`` (smallest eigenvalue / max(1, max |entry|) >= -psd_tol).
    """
    psd_tol = float(psd_tol)
    if not (psd_tol >= 0):
        raise ValueError(f"psd_tol: must be >= 0, got {psd_tol}")
    Q, R, Tm = (np.asarray(x, float) for x in (Q, R, T))
    lam = np.atleast_1d(gram_min_eigenvalues(Q, R, Tm))
    if lam.min() >= -psd_tol:
        return
    batch = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2])
    Q = np.broadcast_to(Q, batch + Q.shape[-2:]).reshape((-1,) + Q.shape[-2:])
    R = np.broadcast_to(R, batch + R.shape[-2:]).reshape((-1,) + R.shape[-2:])
    lam = lam.ravel()
    bad = np.flatnonzero(~(lam >= -psd_tol))
    i = int(bad[0])
    Qi, Ri = Q[i], R[i]
    ratio = np.abs(Ri) / np.sqrt(np.maximum(np.outer(np.diag(Qi), np.diag(Tm)), 1e-300))
    hint = ""
    if np.max(ratio) > 1.0:
        k, a = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        hint = (f"; e.g. |R_{k + 1}_{a + 1}| = {abs(Ri[k, a]):.4g} > sqrt(Q_{k + 1}_{k + 1} "
                f"T_{a + 1}_{a + 1}) = {math.sqrt(max(Qi[k, k] * Tm[a, a], 0.0)):.4g}")
    where = f" (member {i}; {bad.size} of {lam.size} members)" if lam.size > 1 else ""
    raise ValueError(
        f"{name}: not realisable{where}: no vectors have these overlaps, the joint Gram "
        f"matrix [[T, R^T], [R, Q]] must be positive semi-definite, but its smallest "
        f"eigenvalue relative to max(1, max |entry|) is {lam[i]:.3g} < -psd_tol = "
        f"{-psd_tol:.3g}{hint}")


def gram_min_eigenvalue(Q: Any, R: Any, T: Any) -> float:
    """Smallest eigenvalue of ``[[T, R^T], [R, Q]]`` divided by ``max(1, max |entry|)``.

    Q (M, M), R (M, K), T (K, K).  Non-negative (up to round-off) iff the state is the Gram
    data of vectors mu_1..mu_K, m_1..m_M in some R^d.
    """
    return float(gram_min_eigenvalues(Q, R, T))


def is_realisable(Q: Any, R: Any, T: Any, psd_tol: float = 1e-8) -> bool:
    """Whether the joint Gram matrix is PSD up to ``psd_tol`` (relative)."""
    return gram_min_eigenvalue(Q, R, T) >= -psd_tol


def realise(Q: Any, R: Any, T: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vectors with the given Gram data: ``(mu (K, D), m (M, D))``, D = K + M.

    Factorises the joint Gram matrix ``G = V diag(lam) V^T`` (negative round-off eigenvalues
    clipped to 0) as ``X = V diag(sqrt(lam))``; rows 0..K-1 are mu, the rest m.
    """
    Q, R, T = (np.asarray(x, float) for x in (Q, R, T))
    G = _joint_gram(Q, R, T)
    lam, V = np.linalg.eigh(0.5 * (G + G.T))
    X = V * np.sqrt(np.clip(lam, 0.0, None))
    K = T.shape[0]
    return X[:K].copy(), X[K:].copy()


def factor_T(T: np.ndarray) -> np.ndarray:
    """Means mu (K, K) with mu mu^T = T (eigen-factorisation, negative round-off clipped)."""
    lam, U = np.linalg.eigh(0.5 * (T + T.T))
    return U * np.sqrt(np.clip(lam, 0.0, None))


def project_to_subspace(y: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Orthogonal projection ``B B^T y`` onto the physical subspace V (fixes the gauge)."""
    return basis @ (basis.T @ y)


@dataclass(frozen=True, eq=False)
class StateSymmetry:
    """A signed permutation of the state: ``(g y)[i] = signs[i] * y[index[i]]``.

    component_perm s, mode_perm t, sign: ``Q'_kl = Q_{s(k) s(l)}``,
    ``R'_ka = sign R_{s(k) t(a)}``, ``alpha'_k = alpha_{s(k)}``.
    """

    component_perm: tuple[int, ...]
    mode_perm: tuple[int, ...]
    sign: int
    index: np.ndarray
    signs: np.ndarray

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return self.signs * np.asarray(y)[self.index]

    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.index == np.arange(self.index.size)) and np.all(self.signs == 1))


def state_symmetry(layout: StateLayout, s: Sequence[int], t: Sequence[int],
                    sign: int) -> StateSymmetry:
    n = layout.n_state
    index = np.empty(n, dtype=np.int64)
    signs = np.ones(n)
    M, K = layout.M, layout.K
    for k in range(M):
        for l in range(k, M):
            index[layout.q_index[k, l]] = layout.q_index[s[k], s[l]]
        for a in range(K):
            index[layout.r_index[k, a]] = layout.r_index[s[k], t[a]]
            signs[layout.r_index[k, a]] = sign
    if layout.train_weights:
        start = layout.alpha_slice().start
        for k in range(M):
            index[start + k] = start + s[k]
    if layout.log_s_index is not None:      # the common variance is invariant
        index[layout.log_s_index] = layout.log_s_index
    return StateSymmetry(tuple(int(x) for x in s), tuple(int(x) for x in t), int(sign),
                         index, signs)


def random_realisable_states(layout: StateLayout, theta: np.ndarray, n: int,
                              rng: np.random.Generator) -> np.ndarray:
    T = layout.T(theta)
    mu = factor_T(T)
    K, M = layout.K, layout.M
    D = K + M
    mu = np.hstack([mu, np.zeros((K, D - mu.shape[1]))])
    scale = math.sqrt(max(1.0, float(np.max(np.diag(T)))))
    out = np.empty((n, layout.n_state))
    for i in range(n):
        m = rng.normal(size=(M, D)) * scale * 0.6
        alpha = rng.normal(size=M) * 0.7 if layout.train_weights else None
        log_s = rng.normal() * 0.5 if layout.log_s_index is not None else None
        out[i] = layout.pack(m @ m.T, m @ mu.T, None if alpha is None else alpha - alpha.mean(),
                             log_s=log_s)
    return out


def find_symmetries(rhs: Callable, layout: StateLayout, beta: float, theta: Any, *,
                    seed: int = 12345, rtol: float = 1e-9,
                    max_candidates: int = 5000) -> list[StateSymmetry]:
    """Signed state permutations g with ``f(g y) = g f(y)`` (checked at 3 random states).

    The identity is always first.  Candidates: all component permutations x mode permutations
    x sign in {+1, -1} (skipped beyond ``max_candidates``, then only the identity is returned).
    """
    theta = layout.check_theta(theta)
    M, K = layout.M, layout.K
    n_cand = math.factorial(M) * math.factorial(K) * 2
    ident = state_symmetry(layout, range(M), range(K), 1)
    if n_cand > max_candidates:
        return [ident]
    rng = np.random.default_rng(seed)
    Y = random_realisable_states(layout, theta, 3, rng)
    F = np.array([evaluate_rhs(rhs, y, beta, theta) for y in Y])
    found = [ident]
    for s in itertools.permutations(range(M)):
        for t in itertools.permutations(range(K)):
            for sign in (1, -1):
                g = state_symmetry(layout, s, t, sign)
                if g.is_identity:
                    continue
                ok = True
                for y, f in zip(Y, F):
                    fg = evaluate_rhs(rhs, g(y), beta, theta)
                    if np.max(np.abs(fg - g(f))) > rtol * max(1.0, float(np.max(np.abs(f)))):
                        ok = False
                        break
                if ok:
                    found.append(g)
    return found


def merge_coincident(y: np.ndarray, layout: StateLayout, theta: np.ndarray,
                      rel_tol: float) -> np.ndarray | None:
    """y with nearly coinciding components (|m_k - m_l|^2 <= rel_tol * scale) made to coincide
    exactly (each group replaced by its mean vector), or None if there are none."""
    Q, R, alpha = layout.unpack(y)
    T = layout.T(theta)
    M = layout.M
    scale = max(1.0, float(np.max(np.abs(Q))))
    parent = list(range(M))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    merged = False
    for k in range(M):
        for l in range(k + 1, M):
            c = Q[k, k] - 2.0 * Q[k, l] + Q[l, l]
            if not (c <= rel_tol * scale):
                continue
            # Cauchy-Schwarz bounds that hold when |m_k - m_l|^2 = c (realisable states):
            # |Q_kk - Q_ll| <= sqrt(c) (|m_k| + |m_l|), |R_ka - R_la| <= sqrt(c T_aa)
            sc = np.sqrt(max(c, 0.0))
            slack = 1e-9 * scale
            if abs(Q[k, k] - Q[l, l]) > sc * (np.sqrt(max(Q[k, k], 0.0))
                                              + np.sqrt(max(Q[l, l], 0.0))) + slack:
                continue
            if np.any(np.abs(R[k] - R[l]) > sc * np.sqrt(np.clip(np.diag(T), 0.0, None))
                      + slack):
                continue
            parent[root(l)] = root(k)
            merged = True
    if not merged:
        return None
    mu, m = realise(Q, R, T)
    groups: dict[int, list[int]] = {}
    for k in range(M):
        groups.setdefault(root(k), []).append(k)
    for g in groups.values():
        m[g] = m[g].mean(axis=0)
    if alpha is not None:
        # coinciding components form one Gaussian with their total weight: only the sum
        # matters (a neutral direction), so the representative splits it equally
        w = np.exp(alpha - alpha.max())
        w /= w.sum()
        for g in groups.values():
            w[g] = w[g].mean()
        alpha = np.log(w)
    return layout.pack(m @ m.T, m @ mu.T, alpha, log_s=layout.log_s_of(y))


def zero_R(y: np.ndarray, layout: StateLayout, rel_tol: float) -> np.ndarray | None:
    """y with R set to 0 exactly if max |R| <= rel_tol * max(1, |y|_inf), else None."""
    Q, R, alpha = layout.unpack(y)
    if not (0 < float(np.max(np.abs(R))) <= rel_tol * max(1.0, float(np.max(np.abs(y))))):
        return None
    return layout.pack(Q, np.zeros_like(R), alpha, log_s=layout.log_s_of(y))


def invariant_constraints(layout: StateLayout, y: Any, theta: Any,
                          rtol: float = 1e-13) -> np.ndarray:
    """Linear constraints C (r, n) of the invariant subspaces that y lies in exactly.

    Candidates: coinciding components k, l with equal weights (``Q_kk = Q_kl = Q_ll``,
    ``Q_kj = Q_lj``, ``R_k. = R_l.``, and ``alpha_k = alpha_l`` when the weights train;
    equal components with equal weights follow the same flow) and ``R = 0`` (invariant when
    the target is symmetric under mu -> -mu; callers check invariance).  Equalities are
    tested to ``rtol * max(1, |y|_inf)``.  Returns an array with r = 0 rows if none.
    """
    y = np.asarray(y, dtype=float)
    Q, R, alpha = layout.unpack(y)
    w = layout.weights(y, theta)
    n = layout.n_state
    eq = rtol * max(1.0, float(np.max(np.abs(y))))

    def e(i: int) -> np.ndarray:
        v = np.zeros(n)
        v[i] = 1.0
        return v

    rows = []
    M, K = layout.M, layout.K
    for k in range(M):
        for l in range(k + 1, M):
            if (abs(Q[k, k] - Q[k, l]) <= eq and abs(Q[l, l] - Q[k, l]) <= eq
                    and float(np.max(np.abs(R[k] - R[l]))) <= eq
                    and abs(w[k] - w[l]) <= 1e-13):
                rows.append(e(layout.q_index[k, k]) - e(layout.q_index[k, l]))
                rows.append(e(layout.q_index[l, l]) - e(layout.q_index[k, l]))
                for j in range(M):
                    if j not in (k, l):
                        rows.append(e(layout.q_index[k, j]) - e(layout.q_index[l, j]))
                for a in range(K):
                    rows.append(e(layout.r_index[k, a]) - e(layout.r_index[l, a]))
                if layout.train_weights:
                    start = layout.alpha_slice().start
                    rows.append(e(start + k) - e(start + l))
    if float(np.max(np.abs(R))) <= 1e-300:
        rows += [e(layout.r_index[k, a]) for k in range(M) for a in range(K)]
    return np.array(rows) if rows else np.zeros((0, n))


def subspace_basis(C: np.ndarray, B: np.ndarray) -> np.ndarray | None:
    """Orthonormal basis (n_red, k) of ``{z : C B z = 0}`` (None if C has no rows)."""
    if C.shape[0] == 0:
        return None
    Cz = C @ B
    _, sv, Vt = np.linalg.svd(Cz)
    rank = int(np.sum(sv > 1e-12 * max(1.0, float(sv[0]))))
    N = Vt[rank:].T
    return N if N.shape[1] else None




def null_space_of_T(T: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis (K, K - rank) of the null space of the PSD matrix T."""
    lam, U = np.linalg.eigh(0.5 * (T + T.T))
    scale = max(1.0, float(np.max(np.abs(lam))) if lam.size else 1.0)
    return U[:, lam <= rtol * scale]


def reduced_basis(layout: StateLayout, theta: Any) -> np.ndarray:
    """Orthonormal basis B (n, n_red) of ``V = {y : R N = 0, sum(alpha) = 0}``.

    N (K, K - rank T) spans the null space of T.  ``n_red = n - M (K - rank T) - (1 if the
    weights train)``.  For full-rank T and fixed weights B is the identity.
    """
    theta = layout.check_theta(theta)
    n = layout.n_state
    N = null_space_of_T(layout.T(theta))
    rows = []
    # constraints: for each component k and null vector N_j: sum_a R_ka N_aj = 0
    for k in range(layout.M):
        for j in range(N.shape[1]):
            c = np.zeros(n)
            for a in range(layout.K):
                c[layout.r_index[k, a]] = N[a, j]
            rows.append(c)
    if layout.train_weights:
        c = np.zeros(n)
        c[layout.alpha_slice()] = 1.0
        rows.append(c)
    if not rows:
        return np.eye(n)
    C = np.array(rows)
    # orthonormal complement of the row space of C
    _, sv, Vt = np.linalg.svd(C, full_matrices=True)
    rank = int(np.sum(sv > 1e-12 * max(1.0, sv[0])))
    B = Vt[rank:].T.copy()
    # make the basis as close to coordinate axes as possible (stable, readable): for columns
    # that can be coordinate vectors (unconstrained entries) use them exactly
    free = [i for i in range(n) if np.all(np.abs(C[:, i]) < 1e-15)]
    if free:
        E = np.eye(n)[:, free]
        P = B @ B.T                      # projector onto V
        rest = P - E @ E.T               # projector onto V minus free coordinates
        w, U = np.linalg.eigh(0.5 * (rest + rest.T))
        extra = U[:, w > 0.5]
        B = np.hstack([E, extra])
    return np.ascontiguousarray(B)


def restricted_jacobian(J: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``B^T J B`` (n_red, n_red): the Jacobian of the flow on the invariant subspace V."""
    return B.T @ J @ B




# old private names (kept for callers of the former homes)
_factor_T = factor_T
_null_space_of_T = null_space_of_T
_merge_coincident = merge_coincident
_zero_R = zero_R
_state_symmetry = state_symmetry
_random_realisable_states = random_realisable_states
