"""Compiled solvers (Numba): Gaussian-expectation kernels, integrators, ensembles, fixed points.

Solvers receive arrays and compiled functions; they never import SymPy.
"""
