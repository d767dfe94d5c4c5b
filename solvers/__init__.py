"""Compiled solvers (Numba): Gaussian-expectation kernels, integrators, ensembles, fixed points.

Solvers receive arrays and compiled functions; they never import SymPy.

Module map (flat package):

* contracts: :mod:`~solvers.signatures` (Numba signatures of the model and event functions),
  :mod:`~solvers.model` (the compiled-model protocol), :mod:`~solvers.layout` (the one state
  layout);
* kernels: :mod:`~solvers.quadrature`, :mod:`~solvers.schedule` (compiled beta(t));
* integrators: :mod:`~solvers.tableaux` (method registry, Butcher data), :mod:`~solvers.rk`
  (generic explicit Runge-Kutta step), :mod:`~solvers.events` (event registry, locator),
  :mod:`~solvers.integrate` (driver), :mod:`~solvers.ensemble` (parallel ensembles,
  problem-level ``solve`` / ``solve_ensemble``);
* equilibria: :mod:`~solvers.geometry` (realisability, physical and invariant subspaces,
  symmetries), :mod:`~solvers.newton`, :mod:`~solvers.stability`,
  :mod:`~solvers.fixedpoints` (multi-start search), :mod:`~solvers.continuation`;
* finite steps: :mod:`~solvers.gd` (the exact reduced map of plain gradient descent at step
  eta, ensembles of it; ``solve_gd``, ``run_gd``, ``gd_map``) and :mod:`~solvers.sgd` (the
  exact reduced Markov chain of SGD with reparameterised samples; ``run_sgd``,
  ``initial_frame``, ``frame_overlaps``, ``frame_dimension``), re-exported here and imported
  on first access so that ``import solvers`` compiles nothing.
"""

from importlib import import_module as _import_module
from typing import Any as _Any

_LAZY = {"solve_gd": "gd", "run_gd": "gd", "gd_map": "gd", "GDResult": "gd", "GDRun": "gd",
         "run_sgd": "sgd", "SgdRun": "sgd", "initial_frame": "sgd", "frame_overlaps": "sgd",
         "frame_dimension": "sgd"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        return getattr(_import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'solvers' has no attribute {name!r}")
