r"""Mode collapse of a flow, from its samples (numpy only).

A mixture's component is assigned to its nearest mode (:mod:`analysis.classify`); a flow has no
components, so its *mass* is: each of N fresh samples x_i of the trained flow goes to its
nearest target mode ``argmin_a |x_i - mu_a|^2`` (the same rule), giving counts ``n_a``, and
``n_a / N`` estimates the flow's mass ``q_a`` in mode a's Voronoi cell.

Tolerance from the sample size.  With the Wilson 95% interval ``[l_a, u_a]`` of ``n_a`` of N
(:func:`analysis.stats.wilson_interval`) and a mass threshold ``m`` (default 0.01):

* mode a is **empty** when ``u_a < m``: the flow's mass there is statistically below m (for
  N = 4096 and m = 0.01: n_a <= 28);
* it is **covered** when ``l_a > m`` (n_a >= 54 for the same N and m);
* otherwise the sample cannot tell (``undecided``).

The flow has **collapsed** when some mode is empty.  A run with an undecided mode and no empty
one is counted as not collapsed and reported in ``undecided``.  Runs whose samples are not
finite are ``diverged`` (codes of :mod:`analysis.classify`: 0 none, 1 collapsed -- shown as
``mean_alignment``, the only mechanism a flow of fixed total mass has -- and 3 diverged); they
are left out of the collapse fraction, as the d-dimensional Monte Carlo does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..classify import DIVERGED, MEAN_ALIGNMENT, NONE
from ..stats import wilson_interval

__all__ = ["FlowCollapse", "classify_counts"]


@dataclass(frozen=True)
class FlowCollapse:
    """Per-run classification of S flows over K modes.

    fractions : (S, K) sample fractions n_a / N.  empty, covered : (S, K) bool.
    collapsed, undecided, diverged : (S,) bool.  mechanism : (S,) int8 codes (module docstring).
    """

    fractions: np.ndarray
    empty: np.ndarray
    covered: np.ndarray
    collapsed: np.ndarray
    undecided: np.ndarray
    diverged: np.ndarray
    mechanism: np.ndarray


def classify_counts(counts: Any, mass_threshold: float, finite: Any = None,
                    confidence: float = 0.95) -> FlowCollapse:
    """Classify S runs from their per-mode sample counts.

    Parameters
    ----------
    counts : (S, K) non-negative integers, the samples nearest each mode (each row sums to N).
    mass_threshold : m in (0, 1) (module docstring).
    finite : optional (S,) bool, False for runs whose samples were not finite (diverged).
    confidence : level of the Wilson interval.
    """
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[1] < 1:
        raise ValueError(f"counts: must have shape (S, K), got {c.shape}")
    if not np.issubdtype(c.dtype, np.integer) or np.any(c < 0):
        raise ValueError("counts: must be non-negative integers")
    if not 0 < mass_threshold < 1:
        raise ValueError(f"mass_threshold: must lie in (0, 1), got {mass_threshold!r}")
    S, K = c.shape
    N = c.sum(axis=1, keepdims=True)
    fin = np.ones(S, bool) if finite is None else np.asarray(finite, bool).reshape(S)
    diverged = ~fin | (N[:, 0] == 0)
    Nsafe = np.where(N > 0, N, 1)
    lo, hi = wilson_interval(np.minimum(c, Nsafe), np.broadcast_to(Nsafe, c.shape), confidence)
    empty = (hi < mass_threshold) & ~diverged[:, None]
    covered = (lo > mass_threshold) & ~diverged[:, None]
    collapsed = empty.any(axis=1)
    undecided = ~collapsed & ~diverged & ~covered.all(axis=1)
    mech = np.full(S, NONE, np.int8)
    mech[collapsed] = MEAN_ALIGNMENT
    mech[diverged] = DIVERGED
    return FlowCollapse(fractions=c / Nsafe, empty=empty, covered=covered, collapsed=collapsed,
                        undecided=undecided, diverged=diverged, mechanism=mech)
