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

The state layout is :class:`solvers.layout.StateLayout`; the subspace V and its basis are
computed in :mod:`solvers.geometry` (:func:`~solvers.geometry.reduced_basis`,
:func:`~solvers.geometry.restricted_jacobian`).  Both, and the evaluation helpers of
:mod:`solvers.model`, are re-exported here under their former names.  This module never
imports SymPy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry import null_space_of_T as _null_space_of_T  # noqa: F401 (former home)
from .geometry import reduced_basis, restricted_jacobian
from .layout import StateLayout
from .model import evaluate_jacobian, evaluate_rhs

__all__ = [
    "StateLayout",
    "Stability",
    "classify_eigenvalues",
    "reduced_basis",
    "restricted_jacobian",
    "linear_stability",
    "evaluate_jacobian",
    "evaluate_rhs",
    "spectrum",
]


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

