r"""Final-state classification: which target mode each component covers, and mode collapse.

DESIGN.md section 3.  Component k is assigned to its nearest target mode

    a*(k) = argmin_a |m_k - mu_a|^2 = argmin_a (Q_kk - 2 R_ka + T_aa),

which needs only the summary statistics, so the same function serves the d-dimensional Monte
Carlo, the reduced-ODE ensembles and any other estimator.  *Mode collapse*: some target mode
receives no component.  With trainable weights, components whose weight fell below
``weight_threshold`` are ignored (they no longer carry mass), and the mechanism is reported:

================  ====  =========================================================================
name              code  meaning
================  ====  =========================================================================
none              0     every target mode is covered by a component of non-negligible weight
mean_alignment    1     some mode is not covered even counting every component: the *means*
                        ended near the same mode(s)
vanishing_weight  2     every mode has a component nearby, but on some mode all of them have
                        weight < ``weight_threshold``: the mode was abandoned through its weight
diverged          3     the statistics are not finite (e.g. SGD with too large a step); such
                        members are reported as not collapsed and should be counted separately
================  ====  =========================================================================

A member in which both happen (one mode uncovered by any mean, another abandoned through its
weights) is reported as mean_alignment: the means alone already collapse it.  Without weights
(``w=None``: fixed equal weights) no component is ignored.

Ties in the argmin go to the lowest mode index (numpy's argmin), so the result is a
deterministic function of (Q, R, T, w).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NONE", "MEAN_ALIGNMENT", "VANISHING_WEIGHT", "DIVERGED", "MECHANISM_NAMES",
           "assign", "classify", "mechanism_counts", "undecided", "modes_missed", "occupancy",
           "between_modes", "occupancy_counts"]

NONE = 0
MEAN_ALIGNMENT = 1
VANISHING_WEIGHT = 2
DIVERGED = 3
#: Names of the mechanism codes, indexed by code.
MECHANISM_NAMES = ("none", "mean_alignment", "vanishing_weight", "diverged")


def _check(Q: np.ndarray, R: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    Q = np.asarray(Q, dtype=float)
    R = np.asarray(R, dtype=float)
    T = np.asarray(T, dtype=float)
    if T.ndim != 2 or T.shape[0] != T.shape[1]:
        raise ValueError(f"T: must have shape (K, K), got {T.shape}")
    K = T.shape[0]
    if Q.ndim < 2 or Q.shape[-1] != Q.shape[-2]:
        raise ValueError(f"Q: must have shape (..., M, M), got {Q.shape}")
    M = Q.shape[-1]
    if R.shape[-2:] != (M, K):
        raise ValueError(f"R: must have shape (..., {M}, {K}) to match Q and T, got {R.shape}")
    if R.shape[:-2] != Q.shape[:-2]:
        raise ValueError(f"R: leading shape {R.shape[:-2]} differs from Q's {Q.shape[:-2]}")
    return Q, R, T


def assign(Q: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Nearest target mode of every component.

    Parameters
    ----------
    Q : (..., M, M) array, ``Q_kl = m_k . m_l``.
    R : (..., M, K) array, ``R_ka = m_k . mu_a``.
    T : (K, K) array, ``T_ab = mu_a . mu_b``.

    Returns
    -------
    (..., M) int array: ``argmin_a (Q_kk - 2 R_ka + T_aa)`` (squared distances |m_k - mu_a|^2).
    """
    Q, R, T = _check(Q, R, T)
    qd = np.diagonal(Q, axis1=-2, axis2=-1)                     # (..., M)
    dist = qd[..., :, None] - 2.0 * R + np.diagonal(T)          # (..., M, K)
    return np.argmin(dist, axis=-1)


def classify(Q: np.ndarray, R: np.ndarray, T: np.ndarray, w: np.ndarray | None = None,
             weight_threshold: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Mode collapse and its mechanism, vectorised over leading axes.

    Parameters
    ----------
    Q : (..., M, M), R : (..., M, K), T : (K, K) as in :func:`assign`.
    w : (..., M) mixture weights, or None (all components count; fixed weights).
    weight_threshold : components with ``w_k < weight_threshold`` are ignored (>= 0; 0 keeps
        every component).

    Returns
    -------
    collapsed : (...) bool array, True when some target mode has no (non-negligible) component.
    mechanism : (...) int8 array of codes :data:`NONE`, :data:`MEAN_ALIGNMENT`,
        :data:`VANISHING_WEIGHT`, :data:`DIVERGED` (see the module docstring).
    """
    Q, R, T = _check(Q, R, T)
    thr = float(weight_threshold)
    if not np.isfinite(thr) or thr < 0:
        raise ValueError(f"weight_threshold: must be a finite number >= 0, "
                         f"got {weight_threshold!r}")
    batch = Q.shape[:-2]
    M, K = R.shape[-2], R.shape[-1]
    if w is None:               # fixed weights: no component can vanish
        w = np.full(batch + (M,), 1.0 / M)
        thr = 0.0
    else:
        w = np.asarray(w, dtype=float)
        if w.shape != batch + (M,):
            raise ValueError(f"w: must have shape {batch + (M,)}, got {w.shape}")
    finite = (np.all(np.isfinite(Q), axis=(-2, -1)) & np.all(np.isfinite(R), axis=(-2, -1))
              & np.all(np.isfinite(w), axis=-1))
    Qs = np.where(finite[..., None, None], Q, 0.0)
    Rs = np.where(finite[..., None, None], R, 0.0)
    a = assign(Qs, Rs, T)                                       # (..., M)
    onehot = a[..., :, None] == np.arange(K)                    # (..., M, K)
    covered_all = np.all(np.any(onehot, axis=-2), axis=-1)
    alive = (w >= thr)[..., :, None]
    covered_alive = np.all(np.any(onehot & alive, axis=-2), axis=-1)
    collapsed = ~covered_alive & finite
    mech = np.full(batch, NONE, dtype=np.int8)
    mech[collapsed & ~covered_all] = MEAN_ALIGNMENT
    mech[collapsed & covered_all] = VANISHING_WEIGHT
    mech[~finite] = DIVERGED
    return collapsed, mech


def modes_missed(Q: np.ndarray, R: np.ndarray, T: np.ndarray, w: np.ndarray | None = None,
                 weight_threshold: float = 1e-3) -> np.ndarray:
    """Number of target modes that receive no component of weight >= ``weight_threshold``
    (all components count when ``w`` is None), vectorised over leading axes: (...) int array,
    0 where :func:`classify` says not collapsed; -1 where the statistics are not finite."""
    Q, R, T = _check(Q, R, T)
    M, K = R.shape[-2], R.shape[-1]
    batch = Q.shape[:-2]
    finite = np.all(np.isfinite(Q), axis=(-2, -1)) & np.all(np.isfinite(R), axis=(-2, -1))
    a = assign(np.where(finite[..., None, None], Q, 0.0), np.where(finite[..., None, None], R, 0.0), T)
    alive = np.ones(batch + (M,), dtype=bool) if w is None else (np.asarray(w) >= weight_threshold)
    covered = np.any((a[..., :, None] == np.arange(K)) & alive[..., :, None], axis=-2)
    out = K - np.count_nonzero(covered, axis=-1)
    return np.where(finite, out, -1)


def occupancy(Q: np.ndarray, R: np.ndarray, T: np.ndarray, w: np.ndarray | None = None,
              weight_threshold: float = 1e-3) -> np.ndarray:
    """(..., K) int: the number of components of weight >= ``weight_threshold`` (all when
    ``w`` is None) assigned to each target mode (:func:`assign`; non-finite members count 0)."""
    Q, R, T = _check(Q, R, T)
    K = R.shape[-1]
    finite = np.all(np.isfinite(Q), axis=(-2, -1)) & np.all(np.isfinite(R), axis=(-2, -1))
    a = assign(np.where(finite[..., None, None], Q, 0.0), np.where(finite[..., None, None], R, 0.0), T)
    alive = np.ones(a.shape, dtype=bool) if w is None else (np.asarray(w) >= weight_threshold)
    occ = np.count_nonzero((a[..., :, None] == np.arange(K)) & alive[..., :, None], axis=-2)
    return np.where(finite[..., None], occ, 0)


def between_modes(Q: np.ndarray, R: np.ndarray, T: np.ndarray, fraction: float = 0.125
                  ) -> np.ndarray:
    """(...) bool: some component sits between modes, i.e. its squared distance to the nearest
    mode exceeds ``fraction`` times the smallest squared distance between two modes (1/8: a
    point on the segment between two modes at more than ~35% of the way to the midpoint).
    False for K = 1."""
    Q, R, T = _check(Q, R, T)
    K = T.shape[0]
    if K < 2:
        return np.zeros(Q.shape[:-2], dtype=bool)
    dT = np.diagonal(T)[:, None] + np.diagonal(T)[None, :] - 2 * T
    sep = np.min(dT[~np.eye(K, dtype=bool)])
    qd = np.diagonal(Q, axis1=-2, axis2=-1)
    dist = np.min(qd[..., :, None] - 2.0 * R + np.diagonal(T), axis=-1)      # (..., M)
    return np.any(dist > fraction * sep, axis=-1)


def occupancy_counts(occ: np.ndarray) -> dict[str, int]:
    """Histogram of occupancy patterns (sorted, e.g. ``"2+1+0"``) over the members of (N, K)."""
    occ = np.sort(np.asarray(occ), axis=-1)[..., ::-1]
    keys = ["+".join(str(int(x)) for x in row) for row in occ.reshape(-1, occ.shape[-1])]
    return {k: keys.count(k) for k in sorted(set(keys), key=lambda s: [-int(x) for x in s.split("+")])}


def mechanism_counts(mechanism: np.ndarray) -> dict[str, int]:
    """Number of members per mechanism name (all names present, zeros included)."""
    mech = np.asarray(mechanism).ravel()
    return {name: int(np.count_nonzero(mech == code)) for code, name in enumerate(MECHANISM_NAMES)}


def undecided(Q_end: np.ndarray, R_end: np.ndarray, w_end: np.ndarray | None,
              Q_back: np.ndarray, R_back: np.ndarray, w_back: np.ndarray | None,
              T: np.ndarray, weight_threshold: float = 1e-3
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs whose outcome is not settled over a final window: the classification
    (:func:`classify`) or the nearest-mode assignment (:func:`assign`, NaN read as 0) at the
    end differs from the one at the window's start, among the runs that did not diverge.

    Q_*, R_*, w_* : (S, M, M), (S, M, K), (S, M) or None, at the end and at the start of the
    window.  Returns ``(undecided (S,) bool, collapsed_end (S,), mechanism_end (S,))``.
    """
    c_end, m_end = classify(Q_end, R_end, T, w_end, weight_threshold)
    c_back, _ = classify(Q_back, R_back, T, w_back, weight_threshold)
    a_end = assign(np.nan_to_num(Q_end), np.nan_to_num(R_end), T)
    a_back = assign(np.nan_to_num(Q_back), np.nan_to_num(R_back), T)
    moved = (c_end != c_back) | np.any(a_end != a_back, axis=-1)
    return (m_end != DIVERGED) & moved, c_end, m_end
