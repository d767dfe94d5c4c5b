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
  :mod:`~solvers.fixedpoints` (multi-start search), :mod:`~solvers.continuation`.
"""
