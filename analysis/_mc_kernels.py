"""Numba kernels of the d-dimensional Monte Carlo (kept for the old import path).

The kernels now live by concern: the Gaussian generator in :mod:`analysis.mc_random`, the
gradient estimators in :mod:`analysis.mc_estimators`, the optimisers and the multi-run step
kernel in :mod:`analysis.mc_optimisers`.  Every name this module exported is re-exported.
"""

from __future__ import annotations

from .mc_estimators import WORK_ROWS, grad_from_noise, qr_stats
from .mc_optimisers import sgd_block
from .mc_random import FASTMATH, LANES, draw_normals, fill_normals

__all__ = ["LANES", "FASTMATH", "WORK_ROWS", "fill_normals", "draw_normals", "grad_from_noise",
           "sgd_block", "qr_stats"]
