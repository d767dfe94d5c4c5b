"""The one state layout of the reduced flow (DESIGN.md sections 2 and 5).

The reduced state of a structure ``(K, M, train_weights, path, variances)`` is the vector y
(n,)

    ``y = (Q_kl for k <= l row-major, R_ka row-major, alpha_k if the weights train,
    log_s if the variances are tied)``,

named ``Q_k_l``, ``R_k_a``, ``alpha_k``, ``log_s`` (1-based) by
:func:`derivations.spec.state_names`, with ``n = M (M + 1) / 2 + M K (+ M) (+ 1)``.
``Q_kl = m_k . m_l``, ``R_ka = m_k . mu_a``, alpha the weight logits (``w = softmax(alpha)``),
log_s the log of the common component variance s.  The parameter vector theta (p,) is ordered
as :func:`derivations.spec.parameter_names` (T upper triangle, pi, Delta, s -- or inv_d = 1/d
for tied variances, nothing for adiabatic ones --, sigma0^2 for the geometric path, the fixed
weights w).  :meth:`StateLayout.variance` gives s for every treatment.

:class:`StateLayout` is the only place in the toolkit that knows these positions: the
integrators' problem-level API (:mod:`solvers.ensemble`), fixed points, continuation,
stability and the estimators all use it.  A layout is built from a
:class:`derivations.spec.ModelStructure` (``StateLayout(structure)``), from a compiled model
or from state names (:func:`state_layout`, :meth:`StateLayout.from_names`; names must be in
the canonical order above, and a layout built from names alone does not know the path, so
its parameter helpers refuse to run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from derivations.spec import ModelStructure

__all__ = ["StateLayout", "state_layout", "pack_state", "unpack_state", "softmax"]


@lru_cache(maxsize=128)
def _indices(K: int, M: int, train_weights: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read-only index arrays (q_index (M, M) symmetric, r_index (M, K), alpha_index (M,))."""
    qi = np.empty((M, M), dtype=np.int64)
    i = 0
    for k in range(M):
        for l in range(k, M):
            qi[k, l] = qi[l, k] = i
            i += 1
    ri = (i + np.arange(M * K, dtype=np.int64)).reshape(M, K)
    ai = (i + M * K + np.arange(M, dtype=np.int64)) if train_weights else None
    for arr in (qi, ri, ai):
        if arr is not None:
            arr.flags.writeable = False   # shared by every layout of this structure
    return qi, ri, ai


def softmax(a: np.ndarray) -> np.ndarray:
    """``softmax`` over the last axis (overflow-free)."""
    a = np.asarray(a, dtype=float)
    z = a - np.max(a, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


@dataclass(frozen=True)
class StateLayout:
    """Positions of the summary statistics in the state vector of one structure.

    Attributes
    ----------
    structure : the :class:`ModelStructure`.
    q_index : (M, M) symmetric int array, ``Q_kl`` and ``Q_lk`` are ``y[q_index[k, l]]``.
    r_index : (M, K) int array, ``R_ka = y[r_index[k, a]]``.
    alpha_index : (M,) int array of the logits, or None for fixed weights.
    log_s_index : position of ``log_s`` (tied variances), or None.
    names : the state names (tuple, canonical order).
    """

    structure: ModelStructure
    names_only: bool = field(default=False, repr=False)
    q_index: np.ndarray = field(init=False, repr=False, compare=False)
    r_index: np.ndarray = field(init=False, repr=False, compare=False)
    alpha_index: np.ndarray | None = field(init=False, repr=False, compare=False)
    log_s_index: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.structure, ModelStructure):
            raise ValueError("structure: must be a derivations.spec.ModelStructure")
        qi, ri, ai = _indices(self.structure.K, self.structure.M,
                              bool(self.structure.train_weights))
        object.__setattr__(self, "q_index", qi)
        object.__setattr__(self, "r_index", ri)
        object.__setattr__(self, "alpha_index", ai)
        object.__setattr__(self, "log_s_index",
                           self.n - 1 if self.structure.variances == "tied" else None)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_names(cls, names: Sequence[str]) -> StateLayout:
        """Layout of canonical state names ``Q_k_l`` (k <= l), ``R_k_a``, ``alpha_k``."""
        return _layout_of_names(_names_tuple(names))

    # ---- sizes -----------------------------------------------------------------------------
    @property
    def K(self) -> int:
        return self.structure.K

    @property
    def M(self) -> int:
        return self.structure.M

    @property
    def train_weights(self) -> bool:
        return bool(self.structure.train_weights)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.structure.state_names)

    @property
    def state_names(self) -> list[str]:
        return self.structure.state_names

    @property
    def n(self) -> int:
        return (self.n_q + self.M * self.K + (self.M if self.train_weights else 0)
                + (1 if self.structure.variances == "tied" else 0))

    @property
    def n_state(self) -> int:
        return self.n

    @property
    def n_q(self) -> int:
        return self.M * (self.M + 1) // 2

    @property
    def parameter_names(self) -> list[str]:
        self._need_parameters()
        return self.structure.parameter_names

    @property
    def n_params(self) -> int:
        return len(self.parameter_names)

    def alpha_slice(self) -> slice:
        """Slice of the alpha entries (empty if the weights are fixed)."""
        start = self.n_q + self.M * self.K
        return slice(start, start + (self.M if self.train_weights else 0))

    # ---- validation ------------------------------------------------------------------------
    def _need_parameters(self) -> None:
        if self.names_only:
            raise ValueError("layout: built from state names only, the parameter layout "
                             "(annealing path) is unknown; build it from the structure")

    def check_state(self, y: Any, name: str = "y") -> np.ndarray:
        """y as a contiguous float (n,) array; ValueError naming ``name`` otherwise."""
        arr = np.ascontiguousarray(y, dtype=float)
        if arr.shape != (self.n,):
            raise ValueError(f"{name}: must have shape ({self.n},), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: must be finite (found NaN or inf)")
        return arr

    def check_theta(self, theta: Any, name: str = "theta") -> np.ndarray:
        """theta as a contiguous float (p,) array; ValueError naming ``name`` otherwise."""
        arr = np.ascontiguousarray(theta, dtype=float)
        if arr.shape != (self.n_params,):
            raise ValueError(f"{name}: must have shape ({self.n_params},) "
                             f"({', '.join(self.parameter_names)}), got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: must be finite (found NaN or inf)")
        return arr

    # ---- conversion ------------------------------------------------------------------------
    def unpack(self, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``y (..., n)`` -> ``(Q (..., M, M) symmetric, R (..., M, K), alpha (..., M) or None)``
        (new arrays)."""
        y = np.asarray(y, dtype=float)
        if y.ndim < 1 or y.shape[-1] != self.n:
            raise ValueError(f"y: last axis must have length n = {self.n}, got shape {y.shape}")
        Q = y[..., self.q_index]
        R = y[..., self.r_index]
        alpha = None if self.alpha_index is None else y[..., self.alpha_index]
        return Q, R, alpha

    def pack(self, Q: Any, R: Any, alpha: Any = None, *, strict: bool = False,
             log_s: Any = None) -> np.ndarray:
        """``(Q (..., M, M), R (..., M, K), alpha (..., M))`` -> ``y (..., n)``.

        strict=False (internal use): Q is symmetrised, a missing alpha of a trainable state is
        0, a missing log_s of a tied-variance state is 0 (s = 1).  strict=True (user input,
        :func:`pack_state`): Q must be symmetric (to 1e-12 relative) and alpha is required
        exactly when the weights train.  ``log_s`` (scalar or (...,)): tied variances only.
        """
        M, K = self.M, self.K
        Q = np.asarray(Q, dtype=float)
        R = np.asarray(R, dtype=float)
        if Q.ndim < 2 or Q.shape[-2:] != (M, M):
            raise ValueError(f"Q: must have shape (..., {M}, {M}), got {Q.shape}")
        if R.ndim < 2 or R.shape[-2:] != (M, K):
            raise ValueError(f"R: must have shape (..., {M}, {K}), got {R.shape}")
        if not np.all(np.isfinite(Q)):
            raise ValueError("Q: must be finite (found NaN or inf)")
        if not np.all(np.isfinite(R)):
            raise ValueError("R: must be finite (found NaN or inf)")
        QT = np.swapaxes(Q, -1, -2)
        if strict:
            scale = max(1.0, float(np.max(np.abs(Q))) if Q.size else 1.0)
            if Q.size and np.max(np.abs(Q - QT)) > 1e-12 * scale:
                raise ValueError("Q: must be symmetric")
        else:
            Q = 0.5 * (Q + QT)
        batch = np.broadcast_shapes(Q.shape[:-2], R.shape[:-2])
        if self.alpha_index is not None:
            if alpha is None:
                if strict:
                    raise ValueError("alpha: required, the weights train (state has alpha_k)")
                alpha = np.zeros(M)
            alpha = np.asarray(alpha, dtype=float)
            if alpha.ndim < 1 or alpha.shape[-1] != M:
                raise ValueError(f"alpha: must have shape (..., {M}), got {alpha.shape}")
            if not np.all(np.isfinite(alpha)):
                raise ValueError("alpha: must be finite (found NaN or inf)")
            batch = np.broadcast_shapes(batch, alpha.shape[:-1])
        elif alpha is not None:
            raise ValueError("alpha: the weights are fixed (state has no alpha_k); pass None")
        if strict and self.log_s_index is not None and log_s is None:
            raise ValueError("log_s: required, the variances are tied (state has log_s)")
        if self.log_s_index is not None:
            log_s = np.asarray(0.0 if log_s is None else log_s, dtype=float)
            if not np.all(np.isfinite(log_s)):
                raise ValueError("log_s: must be finite (found NaN or inf)")
            batch = np.broadcast_shapes(batch, log_s.shape)
        elif log_s is not None:
            raise ValueError("log_s: the variances are not tied (state has no log_s); pass None")
        y = np.empty(batch + (self.n,))
        if self.log_s_index is not None:
            y[..., self.log_s_index] = log_s
        for k in range(M):
            for l in range(k, M):
                y[..., self.q_index[k, l]] = Q[..., k, l]
            for a in range(K):
                y[..., self.r_index[k, a]] = R[..., k, a]
        if self.alpha_index is not None:
            for k in range(M):
                y[..., self.alpha_index[k]] = alpha[..., k]
        return y

    # ---- parameters ------------------------------------------------------------------------
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
        """Mixture weights w (..., M): softmax(alpha) if trainable, else from theta."""
        if self.train_weights:
            return softmax(np.asarray(y, dtype=float)[..., self.alpha_slice()])
        names = self.parameter_names
        theta = np.asarray(theta, dtype=float)
        return np.array([theta[names.index(f"w_{k + 1}")] for k in range(self.M)])

    def log_s_of(self, y: Any) -> Any:
        """``y[..., log_s]`` for tied variances, else None (pass it on to :meth:`pack`)."""
        if self.log_s_index is None:
            return None
        return np.asarray(y, dtype=float)[..., self.log_s_index]

    def variance(self, y: Any, beta: Any, theta: Any) -> Any:
        """The common component variance s (DESIGN.md section 9): ``theta['s']`` (fixed),
        ``exp(y[log_s])`` (tied; shape (...,)), or ``s*(beta) = 1 / (beta/Delta +
        gamma/sigma0^2)`` (adiabatic; gamma = 1 - beta on the geometric path, else 0; for the
        forward KL ``s* = Delta/beta`` on the inflation path and ``beta Delta + (1 - beta)
        sigma0^2`` on the mixture path, :mod:`derivations.forward_kl`)."""
        names = self.parameter_names
        theta = np.asarray(theta, dtype=float)
        v = self.structure.variances
        if v == "tied":
            return np.exp(np.asarray(y, dtype=float)[..., self.log_s_index])
        if v == "fixed":
            return float(theta[names.index("s")])
        beta = np.asarray(beta, dtype=float)
        if self.structure.objective == "forward-kl":
            if self.structure.path == "mixture":
                return (beta * theta[names.index("Delta")]
                        + (1.0 - beta) * theta[names.index("sigma0_sq")])
            return theta[names.index("Delta")] / beta
        prec = beta / theta[names.index("Delta")]
        if self.structure.path == "geometric":
            prec = prec + (1.0 - beta) / theta[names.index("sigma0_sq")]
        return 1.0 / prec

    def fix_gauge(self, y: Any) -> np.ndarray:
        """Representative of the gauge orbit with ``sum(alpha) = 0`` (copy)."""
        y = np.array(y, dtype=float)
        if self.train_weights:
            sl = self.alpha_slice()
            y[..., sl] -= y[..., sl].mean(axis=-1, keepdims=True)
        return y


def _names_tuple(names: Any) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError("names: need a sequence of state names or a model with .state_names")
    return tuple(str(s) for s in names)


@lru_cache(maxsize=64)
def _layout_of_names(names: tuple[str, ...]) -> StateLayout:
    q, r, al = set(), set(), set()
    tied = "log_s" in names
    for nm in names:
        parts = nm.split("_")
        try:
            if nm == "log_s":
                continue
            if parts[0] == "Q" and len(parts) == 3:
                q.add((int(parts[1]), int(parts[2])))
            elif parts[0] == "R" and len(parts) == 3:
                r.add((int(parts[1]), int(parts[2])))
            elif parts[0] == "alpha" and len(parts) == 2:
                al.add(int(parts[1]))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"names: cannot parse state name {nm!r}") from None
    M = max((max(k) for k in q), default=0)
    K = max((a for _, a in r), default=0)
    if M < 1 or K < 1:
        raise ValueError(f"names: need Q and R entries, got {list(names)}")
    lay = StateLayout(ModelStructure(K, M, bool(al), variances="tied" if tied else "fixed"),
                      names_only=True)
    if names != lay.names:
        raise ValueError(f"names: must be the canonical state names of K = {K}, M = {M} "
                         f"in order ({', '.join(lay.names)}), got {list(names)}")
    return lay


def state_layout(source: Any) -> StateLayout:
    """The layout of a structure, a layout, a compiled model (``.structure``, else
    ``.state_names``) or a sequence of canonical state names."""
    if isinstance(source, StateLayout):
        return source
    if isinstance(source, ModelStructure):
        return _layout_of_structure(source)
    st = getattr(source, "structure", None)
    if isinstance(st, ModelStructure):
        return _layout_of_structure(st)
    names = getattr(source, "state_names", source)
    return _layout_of_names(_names_tuple(names))


@lru_cache(maxsize=64)
def _layout_of_structure(structure: ModelStructure) -> StateLayout:
    return StateLayout(structure)


def unpack_state(layout_or_names: Any, y: Any
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``y`` (..., n) -> ``(Q (..., M, M) symmetric, R (..., M, K), alpha (..., M) or None)``.

    ``layout_or_names``: anything :func:`state_layout` accepts."""
    return state_layout(layout_or_names).unpack(y)


def pack_state(layout_or_names: Any, Q: Any, R: Any, alpha: Any = None) -> np.ndarray:
    """``(Q (..., M, M) symmetric, R (..., M, K), alpha (..., M))`` -> ``y`` (..., n).

    Strict (user input): Q must be symmetric, alpha is required exactly when the state has
    weight logits.  ``layout_or_names``: anything :func:`state_layout` accepts."""
    return state_layout(layout_or_names).pack(Q, R, alpha, strict=True)
