r"""Statistics of collapse fractions: Wilson intervals and two-proportion comparisons.

Wilson score interval (Wilson 1927) for k successes in n trials at confidence 1 - a, with
``z = Phi^{-1}(1 - a/2)`` and ``p = k / n``:

    centre = (k + z^2/2) / (n + z^2),
    half   = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4),

clipped to [0, 1].  Unlike the Wald interval it has close to nominal coverage also for k = 0 or
k = n and small n; it is what ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``
returns.

Comparison of two independent proportions k1/n1 and k2/n2:

* the pooled two-sided z-test, ``z = (p1 - p2) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with the pooled
  ``p = (k1 + k2) / (n1 + n2)`` (z = 0 when p is 0 or 1), p-value ``2 (1 - Phi(|z|))``;
* Newcombe's hybrid score interval for ``p1 - p2`` (Newcombe 1998, method 10), built from the two
  Wilson intervals (l_i, u_i):
  ``[d - sqrt((p1 - l1)^2 + (u2 - p2)^2),  d + sqrt((u1 - p1)^2 + (p2 - l2)^2)]``.

For a fraction against an exactly known value p0, :func:`binomial_pvalue` wraps scipy's exact
two-sided binomial test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from scipy import stats as _st

__all__ = ["Proportion", "ProportionComparison", "wilson_interval", "proportion",
           "collapse_fraction", "compare_proportions", "binomial_pvalue"]


def _z(confidence: float) -> float:
    c = float(confidence)
    if not (0.0 < c < 1.0):
        raise ValueError(f"confidence: must lie in (0, 1), got {confidence!r}")
    return float(_st.norm.ppf(0.5 + 0.5 * c))


def _counts(k: Any, n: Any, kname: str = "k", nname: str = "n") -> tuple[np.ndarray, np.ndarray]:
    k_arr = np.asarray(k)
    n_arr = np.asarray(n)
    for name, arr in ((kname, k_arr), (nname, n_arr)):
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer)
                                     or (np.issubdtype(arr.dtype, np.floating)
                                         and np.all(np.isfinite(arr))
                                         and np.all(arr == np.round(arr)))):
            raise ValueError(f"{name}: must be a whole number (or an array of them), got {arr!r}")
    k_arr = k_arr.astype(np.int64)
    n_arr = n_arr.astype(np.int64)
    if np.any(n_arr < 1):
        raise ValueError(f"{nname}: must be >= 1, got {n!r}")
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError(f"{kname}: must satisfy 0 <= {kname} <= {nname}, got {k!r} of {n!r}")
    return k_arr, n_arr


def wilson_interval(k: Any, n: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """Wilson score interval of a binomial proportion (module docstring).

    Parameters
    ----------
    k : successes (int or int array), 0 <= k <= n.
    n : trials (int or int array, broadcastable with k), >= 1.
    confidence : two-sided level in (0, 1), default 0.95.

    Returns
    -------
    (low, high) : floats, or arrays of the broadcast shape of (k, n).
    """
    k_arr, n_arr = _counts(k, n)
    z = _z(confidence)
    z2 = z * z
    kf = k_arr.astype(float)
    nf = n_arr.astype(float)
    denom = nf + z2
    centre = (kf + 0.5 * z2) / denom
    half = (z / denom) * np.sqrt(kf * (nf - kf) / nf + 0.25 * z2)
    low = np.clip(centre - half, 0.0, 1.0)
    high = np.clip(centre + half, 0.0, 1.0)
    if np.ndim(low) == 0:
        return float(low), float(high)
    return low, high


@dataclass(frozen=True)
class Proportion:
    """A proportion k / n with its Wilson interval at ``confidence``."""

    k: int
    n: int
    p: float
    ci: tuple[float, float]
    confidence: float = 0.95

    def to_dict(self) -> dict:
        return {"k": self.k, "n": self.n, "p": self.p, "ci": list(self.ci),
                "confidence": self.confidence}

    def __str__(self) -> str:
        lo, hi = self.ci
        return (f"{self.p:.4f} [{lo:.4f}, {hi:.4f}] ({self.k}/{self.n}, "
                f"{100 * self.confidence:g}% Wilson)")


def proportion(k: int, n: int, confidence: float = 0.95) -> Proportion:
    """k successes of n trials as a :class:`Proportion` (point estimate and Wilson interval)."""
    if not isinstance(k, Integral) or isinstance(k, (bool, np.bool_)):
        raise ValueError(f"k: must be an integer, got {k!r}")
    if not isinstance(n, Integral) or isinstance(n, (bool, np.bool_)):
        raise ValueError(f"n: must be an integer, got {n!r}")
    lo, hi = wilson_interval(int(k), int(n), confidence)
    return Proportion(k=int(k), n=int(n), p=int(k) / int(n), ci=(lo, hi),
                      confidence=float(confidence))


def collapse_fraction(collapsed: Any, confidence: float = 0.95,
                      valid: Any = None) -> Proportion:
    """Fraction of collapsed members with its Wilson interval.

    Parameters
    ----------
    collapsed : (N,) bool array (one entry per independent run).
    valid : optional (N,) bool mask of the runs to count (e.g. excluding diverged runs).
    """
    c = np.asarray(collapsed)
    if c.dtype != bool:
        raise ValueError(f"collapsed: must be a boolean array, got dtype {c.dtype}")
    c = c.ravel()
    if valid is not None:
        v = np.asarray(valid, dtype=bool).ravel()
        if v.shape != c.shape:
            raise ValueError(f"valid: must have the shape of collapsed {c.shape}, got {v.shape}")
        c = c[v]
    if c.size == 0:
        raise ValueError("collapsed: no (valid) runs to count")
    return proportion(int(np.count_nonzero(c)), int(c.size), confidence)


@dataclass(frozen=True)
class ProportionComparison:
    """Comparison of two independent proportions (module docstring).

    Attributes
    ----------
    first, second : the two :class:`Proportion` s.
    diff : p1 - p2.
    ci : Newcombe hybrid-score interval of p1 - p2 at ``first.confidence``.
    z, p_value : pooled two-sided z-test of p1 = p2.
    """

    first: Proportion
    second: Proportion
    diff: float
    ci: tuple[float, float]
    z: float
    p_value: float

    def consistent(self, level: float = 1e-3) -> bool:
        """True when the z-test does not reject p1 = p2 at significance ``level``."""
        return self.p_value >= level

    def to_dict(self) -> dict:
        return {"first": self.first.to_dict(), "second": self.second.to_dict(),
                "diff": self.diff, "ci": list(self.ci), "z": self.z, "p_value": self.p_value}


def compare_proportions(k1: int, n1: int, k2: int, n2: int,
                        confidence: float = 0.95) -> ProportionComparison:
    """Pooled z-test and Newcombe interval for p1 - p2 of two independent samples."""
    a = proportion(k1, n1, confidence)
    b = proportion(k2, n2, confidence)
    diff = a.p - b.p
    pooled = (a.k + b.k) / (a.n + b.n)
    var = pooled * (1.0 - pooled) * (1.0 / a.n + 1.0 / b.n)
    z = diff / math.sqrt(var) if var > 0 else 0.0
    p_value = float(2.0 * _st.norm.sf(abs(z)))
    (l1, u1), (l2, u2) = a.ci, b.ci
    lo = diff - math.sqrt((a.p - l1) ** 2 + (u2 - b.p) ** 2)
    hi = diff + math.sqrt((u1 - a.p) ** 2 + (b.p - l2) ** 2)
    return ProportionComparison(first=a, second=b, diff=diff, ci=(max(-1.0, lo), min(1.0, hi)),
                                z=float(z), p_value=min(1.0, p_value))


def binomial_pvalue(k: int, n: int, p0: float) -> float:
    """Exact two-sided binomial test of k successes in n trials against probability p0."""
    p0 = float(p0)
    if not (0.0 <= p0 <= 1.0):
        raise ValueError(f"p0: must lie in [0, 1], got {p0!r}")
    k_arr, n_arr = _counts(k, n)
    return float(_st.binomtest(int(k_arr), int(n_arr), p0).pvalue)
