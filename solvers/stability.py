"""Linear stability of fixed points of the reduced gradient flow.

The reduced state ``y`` (n,) (Q upper triangle, R, optionally the logits alpha; layout of
:func:`derivations.spec.state_names`) obeys ``dy/dt = f(y)``.  Two linear constraints make the
plain n x n Jacobian ``J = df/dy`` the wrong object to classify:

* **weight gauge** (trainable weights): ``w = softmax(alpha)`` is unchanged by
  ``alpha -> alpha + c (1, ..., 1)``, so ``f(y + c g) = f(y)`` with ``g`` the indicator of the
  alpha entries: ``J g = 0`` (a zero eigenvalue at every state).  Because F depends on alpha
  only through w, also ``sum_k dalpha_k/dt = -sum_k dF/dalpha_k = 0`` identically: the image of
  J lies in the hyperplane ``{sum_k alpha_k = 0}``.  That hyperplane is a *slice*: it meets
  every gauge orbit exactly once and is invariant under the flow, so we fix the gauge by
  ``sum_k alpha_k = 0`` and work in it.
* **rank-deficient target Gram matrix** T (e.g. the symmetric bimodal target,
  ``mu_2 = -mu_1``, rank 1): a realisable state has ``R_k. = m_k . (mu_1, ..., mu_K)``, so
  ``R N = 0`` for every null vector ``N`` of T (``T N = 0`` means ``sum_a N_a mu_a = 0``).
  The set ``{R N = 0}`` is invariant (``d(RN)/dt = -G (RN) - H T N = -G (RN)``), and the
  directions leaving it are not realisable in any dimension d; their eigenvalues would only
  duplicate those of ``-G``.

Both constraints are linear, so the physical state space is a linear subspace
``V = {y : R N = 0, sum(alpha) = 0}`` with an orthonormal basis ``B`` (n, n_red).  V is
invariant under the flow and under J at states in V, hence the linearisation restricted to V
is exactly ``J_red = B^T J B`` (n_red, n_red), whose eigenvalues are the eigenvalues of J on V
(the gauge eigenvalue 0 and the unrealisable directions removed).  Newton's method
(:mod:`solvers.fixedpoints`) and continuation (:mod:`solvers.continuation`) solve
``B^T f(B z) = 0`` in the coordinates ``y = B z`` for the same reason: the Jacobian of that
system is ``J_red``, which is generically non-singular.

Classification (tolerance ``tol`` on the real parts, relative to ``max(1, max |lambda|)``;
default 1e-6: at degenerate fixed points, e.g. coinciding components at beta Delta = s where
the perpendicular splitting is exactly neutral, Newton converges only linearly and the
zero eigenvalue comes out at ~1e-8 with either sign, so a smaller tolerance would classify
such points at random):
``stable`` (all Re < -tol: asymptotically stable), ``saddle`` (some Re > tol and some
Re < -tol; the unstable dimension is the number with Re > tol), ``unstable`` (all Re > tol),
``non-hyperbolic`` (some |Re| <= tol and none > tol: linearisation inconclusive).  A state is
reported ``stable=True`` only in the first case.

This module never imports SymPy; it uses the structure (:class:`derivations.spec.ModelStructure`,
plain Python) only for the index layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from derivations.spec import ModelStructure

__all__ = [
    "StateLayout",
    "Stability",
    "classify_eigenvalues",
    "reduced_basis",
    "restricted_jacobian",
    "linear_stability",
    "evaluate_jacobian",
    "evaluate_rhs",
]


# ----------------------------------------------------------------------------------------
# state layout
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StateLayout:
    """Index bookkeeping of the reduced state and parameter vectors of one structure.

    ``y = (Q_kl for k <= l row-major, R_ka row-major, alpha_k if train_weights)``;
    theta ordered as :func:`derivations.spec.parameter_names`.
    """

    structure: ModelStructure

    def __post_init__(self) -> None:
        if not isinstance(self.structure, ModelStructure):
            raise ValueError("structure: must be a derivations.spec.ModelStructure")

    @property
    def K(self) -> int:
        return self.structure.K

    @property
    def M(self) -> int:
        return self.structure.M

    @property
    def train_weights(self) -> bool:
        return self.structure.train_weights

    @property
    def state_names(self) -> list[str]:
        return self.structure.state_names

    @property
    def parameter_names(self) -> list[str]:
        return self.structure.parameter_names

    @property
    def n_state(self) -> int:
        return self.structure.n_state

    @property
    def n_params(self) -> int:
        return len(self.parameter_names)

    @property
    def n_q(self) -> int:
        return self.M * (self.M + 1) // 2

    def q_index(self, k: int, l: int) -> int:
        """State index of Q_kl (0-based k, l; symmetric)."""
        if k > l:
            k, l = l, k
        M = self.M
        return k * M - k * (k - 1) // 2 + (l - k)

    def r_index(self, k: int, a: int) -> int:
        """State index of R_ka (0-based)."""
        return self.n_q + k * self.K + a

    def alpha_slice(self) -> slice:
        """Slice of the alpha entries (empty if the weights are fixed)."""
        start = self.n_q + self.M * self.K
        return slice(start, start + (self.M if self.train_weights else 0))

    def check_state(self, y: Any, name: str = "y") -> np.ndarray:
        arr = np.ascontiguousarray(y, dtype=float)
        if arr.shape != (self.n_state,):
            raise ValueError(f"{name}: must have shape ({self.n_state},), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: must be finite (found NaN or inf)")
        return arr

    def check_theta(self, theta: Any, name: str = "theta") -> np.ndarray:
        arr = np.ascontiguousarray(theta, dtype=float)
        if arr.shape != (self.n_params,):
            raise ValueError(f"{name}: must have shape ({self.n_params},) "
                             f"({', '.join(self.parameter_names)}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: must be finite (found NaN or inf)")
        return arr

    def unpack(self, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(Q (M, M) symmetric, R (M, K), alpha (M,) or None)`` from a state (n,)."""
        from .ensemble import unpack_state
        Q, R, alpha = unpack_state(self.state_names, y)
        return Q, R.copy(), None if alpha is None else alpha.copy()

    def pack(self, Q: Any, R: Any, alpha: Any = None) -> np.ndarray:
        """State (n,) from Q (M, M), R (M, K) and alpha (M,) (zeros if None and trainable)."""
        from .ensemble import pack_state
        M, K = self.M, self.K
        Q = np.asarray(Q, dtype=float)
        R = np.asarray(R, dtype=float)
        if Q.shape != (M, M):
            raise ValueError(f"Q: must have shape ({M}, {M}), got {Q.shape}")
        if R.shape != (M, K):
            raise ValueError(f"R: must have shape ({M}, {K}), got {R.shape}")
        if self.train_weights and alpha is None:
            alpha = np.zeros(M)
        return pack_state(self.state_names, 0.5 * (Q + Q.T), R,
                          alpha if self.train_weights else None)

    def T(self, theta: Any) -> np.ndarray:
        """Target Gram matrix T (K, K) from theta."""
        theta = np.asarray(theta, dtype=float)
        names = self.parameter_names
        K = self.K
        T = np.empty((K, K))
        for a in range(K):
            for b in range(a, K):
                T[a, b] = T[b, a] = theta[names.index(f"T_{a + 1}_{b + 1}")]
        return T

    def weights(self, y: Any, theta: Any) -> np.ndarray:
        """Mixture weights w (M,): softmax(alpha) if trainable, else from theta."""
        if self.train_weights:
            a = np.asarray(y, dtype=float)[self.alpha_slice()]
            e = np.exp(a - a.max())
            return e / e.sum()
        names = self.parameter_names
        theta = np.asarray(theta, dtype=float)
        return np.array([theta[names.index(f"w_{k + 1}")] for k in range(self.M)])

    def fix_gauge(self, y: Any) -> np.ndarray:
        """Representative of the gauge orbit with ``sum(alpha) = 0`` (copy)."""
        y = np.array(y, dtype=float)
        if self.train_weights:
            sl = self.alpha_slice()
            y[sl] -= y[sl].mean()
        return y


# ----------------------------------------------------------------------------------------
# reduced basis and classification
# ----------------------------------------------------------------------------------------

def _null_space_of_T(T: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
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
    N = _null_space_of_T(layout.T(theta))
    rows = []
    # constraints: for each component k and null vector N_j: sum_a R_ka N_aj = 0
    for k in range(layout.M):
        for j in range(N.shape[1]):
            c = np.zeros(n)
            for a in range(layout.K):
                c[layout.r_index(k, a)] = N[a, j]
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


def classify_eigenvalues(eigenvalues: Any, tol: float = 1e-6) -> tuple[str, int, int]:
    """Classify a spectrum: ``(kind, n_unstable, n_marginal)``.

    ``n_unstable`` = #{Re lambda > tol * scale}, ``n_marginal`` = #{|Re lambda| <= tol * scale},
    scale = max(1, max |lambda|).  kind: 'stable', 'saddle', 'unstable' or 'non-hyperbolic'
    (see the module docstring).
    """
    ev = np.asarray(eigenvalues, dtype=complex).ravel()
    if not (tol >= 0):
        raise ValueError(f"tol: must be >= 0, got {tol}")
    if ev.size == 0:
        return "stable", 0, 0
    scale = max(1.0, float(np.max(np.abs(ev))))
    re = ev.real
    n_unst = int(np.sum(re > tol * scale))
    n_marg = int(np.sum(np.abs(re) <= tol * scale))
    n_stab = ev.size - n_unst - n_marg
    if n_unst == 0 and n_marg == 0:
        kind = "stable"
    elif n_unst > 0 and n_stab > 0:
        kind = "saddle"
    elif n_unst == ev.size:
        kind = "unstable"
    elif n_unst > 0:
        kind = "saddle"  # unstable and marginal directions, no stable ones
    else:
        kind = "non-hyperbolic"
    return kind, n_unst, n_marg


@dataclass(frozen=True, eq=False)
class Stability:
    """Linear stability of one state.

    eigenvalues : (n_red,) complex, sorted by decreasing real part (eigenvalues of J on V).
    eigenvectors : (n, n_red) complex, column i the eigenvector of ``eigenvalues[i]`` in the
        full state coordinates (``B v``).
    kind : 'stable' | 'saddle' | 'unstable' | 'non-hyperbolic'.
    n_unstable : number of eigenvalues with Re > tol (the unstable dimension).
    n_marginal : number with |Re| <= tol.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    kind: str
    n_unstable: int
    n_marginal: int

    @property
    def stable(self) -> bool:
        """True only for asymptotic (linear) stability: every Re lambda < -tol."""
        return self.kind == "stable"

    @property
    def leading(self) -> complex:
        """The eigenvalue with the largest real part."""
        return complex(self.eigenvalues[0]) if self.eigenvalues.size else complex(-np.inf)


def evaluate_rhs(rhs: Callable, y: np.ndarray, beta: float, theta: np.ndarray) -> np.ndarray:
    """``f(y)`` (n,) from a compiled ``rhs(y, beta, theta, out)``."""
    out = np.empty(y.shape[0])
    rhs(np.ascontiguousarray(y, dtype=float), float(beta), theta, out)
    return out


def evaluate_jacobian(jac: Callable, y: np.ndarray, beta: float, theta: np.ndarray) -> np.ndarray:
    """``J = df/dy`` (n, n) from a compiled ``jac(y, beta, theta, J)``."""
    n = y.shape[0]
    J = np.empty((n, n))
    jac(np.ascontiguousarray(y, dtype=float), float(beta), theta, J)
    return J


def spectrum(J_red: np.ndarray, B: np.ndarray, tol: float = 1e-6) -> Stability:
    """Eigen-decomposition and classification of a restricted Jacobian ``J_red = B^T J B``."""
    if J_red.size == 0:
        return Stability(np.zeros(0, complex), np.zeros((B.shape[0], 0), complex), "stable", 0, 0)
    ev, V = np.linalg.eig(J_red)
    order = np.lexsort((-ev.imag, -ev.real))
    ev, V = ev[order], V[:, order]
    kind, n_unst, n_marg = classify_eigenvalues(ev, tol)
    return Stability(ev, B @ V, kind, n_unst, n_marg)


def linear_stability(jac: Callable, y: Any, beta: float, theta: Any, *,
                     layout: StateLayout | None = None, basis: np.ndarray | None = None,
                     tol: float = 1e-6) -> Stability:
    """Linear stability of the state ``y`` (n,) at inverse temperature ``beta``.

    ``jac`` is the compiled Jacobian ``jac(y, beta, theta, J)``.  Give either ``basis``
    (B (n, n_red) from :func:`reduced_basis`) or ``layout`` (the basis is then computed); with
    neither the full Jacobian is classified (only correct for fixed weights and full-rank T).
    """
    theta = np.ascontiguousarray(theta, dtype=float)
    y = np.ascontiguousarray(y, dtype=float)
    if basis is None:
        basis = reduced_basis(layout, theta) if layout is not None else np.eye(y.shape[0])
    if basis.shape[0] != y.shape[0]:
        raise ValueError(f"basis: must have {y.shape[0]} rows, got shape {basis.shape}")
    J = evaluate_jacobian(jac, y, beta, theta)
    return spectrum(restricted_jacobian(J, basis), basis, tol)


__all__.append("spectrum")
