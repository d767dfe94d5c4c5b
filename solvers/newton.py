"""Damped Newton for fixed points ``f(y) = 0`` of the reduced flow on the physical subspace.

Problem: ``F(z) = B^T f(B z) = 0``, y = B z, with B (n, n_red) the orthonormal basis of the
physical subspace V (:func:`solvers.geometry.reduced_basis`) and f = ``rhs(., beta, theta)``
the compiled vector field.  The Jacobian of this system, ``B^T J B``
(:func:`solvers.geometry.restricted_jacobian`), is generically non-singular where the full J
is not (weight gauge, unrealisable directions).

Method: ``dz = -(B^T J B)^{-1} F`` (least squares if singular), the step capped at
``max_step`` in max-norm, then backtracking (halving) until the Armijo condition
``|F(z + lam dz)|^2 <= (1 - 1e-4 lam) |F(z)|^2`` holds (down to lam = 2^-12, after which the
start is abandoned).  Iterations stop at ``|F|_inf <= 1e-3 tol`` (polishing) or when the step
no longer reduces the residual.  On failure, ``scipy.optimize.root`` (MINPACK ``hybr`` with
the analytic Jacobian) followed by Newton polishing steps.  A solution is accepted when
``max_i |f_i(y)| < tol`` for the full vector field.
:func:`polish_in_subspace` runs the same iteration restricted to a linear subspace
``y in y0 + B N`` (the subspace stays exact).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry import project_to_subspace, restricted_jacobian
from .model import evaluate_jacobian, evaluate_rhs

__all__ = ["NewtonResult", "newton", "polish_in_subspace", "check_beta"]


def _check_beta(beta: Any) -> float:
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta: must be a real number, got {beta!r}") from None
    if not (b > 0 and math.isfinite(b)):
        raise ValueError(f"beta: must be a finite number > 0, got {b}")
    return b


@dataclass(frozen=True, eq=False)
class NewtonResult:
    """Outcome of one Newton solve.

    y : (n,) final state.  residual : ``max_i |f_i(y)|`` of the full vector field.
    converged : ``residual < tol``.  iterations : Newton steps taken.
    method : 'newton' or 'hybr' (scipy fallback).
    """

    y: np.ndarray
    residual: float
    converged: bool
    iterations: int
    method: str


def _newton_core(rhs: Callable, jac: Callable, y0: np.ndarray, beta: float, theta: np.ndarray,
                 B: np.ndarray, target: float, max_iter: int, max_step: float
                 ) -> tuple[np.ndarray, float, int]:
    y = y0.copy()
    f = evaluate_rhs(rhs, y, beta, theta)
    F = B.T @ f
    phi = float(F @ F)
    it = 0
    for it in range(1, max_iter + 1):
        if not np.all(np.isfinite(F)):
            return y, math.inf, it
        if np.max(np.abs(F)) <= target:
            return y, float(np.max(np.abs(f))), it - 1
        Jr = restricted_jacobian(evaluate_jacobian(jac, y, beta, theta), B)
        try:
            dz = np.linalg.solve(Jr, -F)
            if not np.all(np.isfinite(dz)):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            dz = np.linalg.lstsq(Jr, -F, rcond=None)[0]
        size = float(np.max(np.abs(dz)))
        lam = min(1.0, max_step / size) if size > 0 else 1.0
        accepted = False
        while lam >= 2.0 ** -12:
            y_new = y + lam * (B @ dz)
            f_new = evaluate_rhs(rhs, y_new, beta, theta)
            F_new = B.T @ f_new
            phi_new = float(F_new @ F_new)
            if np.isfinite(phi_new) and phi_new <= (1.0 - 1e-4 * lam) * phi:
                accepted = True
                break
            lam *= 0.5
        if not accepted:
            break
        y, f, F, phi = y_new, f_new, F_new, phi_new
    return y, float(np.max(np.abs(f))) if np.all(np.isfinite(f)) else math.inf, it


def newton(rhs: Callable, jac: Callable, y0: Any, beta: float, theta: Any, *,
           basis: np.ndarray | None = None, tol: float = 1e-10, max_iter: int = 60,
           max_step: float | None = None, fallback: bool = True) -> NewtonResult:
    """Solve ``f(y) = 0`` from ``y0`` (n,) by damped Newton on ``B^T f(B z) = 0``.

    basis : B (n, n_red) of the physical subspace (default identity); y0 is projected onto
        it first.  tol : acceptance threshold on ``max |f|`` (full vector field); Newton
        iterates down to ``1e-3 tol`` when it can.  max_step : largest max-norm Newton
        step (default ``10 (1 + |y0|_inf)``).  fallback : on failure, try
        ``scipy.optimize.root(method='hybr')`` with the analytic Jacobian.
    """
    beta = _check_beta(beta)
    theta = np.ascontiguousarray(theta, dtype=float)
    y0 = np.ascontiguousarray(y0, dtype=float)
    if y0.ndim != 1 or not np.all(np.isfinite(y0)):
        raise ValueError("y0: must be a finite 1-d array")
    if not (tol > 0):
        raise ValueError(f"tol: must be > 0, got {tol}")
    B = np.eye(y0.size) if basis is None else np.asarray(basis, dtype=float)
    if B.shape[0] != y0.size:
        raise ValueError(f"basis: must have {y0.size} rows, got shape {B.shape}")
    y0 = project_to_subspace(y0, B)
    if max_step is None:
        max_step = 10.0 * (1.0 + float(np.max(np.abs(y0))))
    y, res, it = _newton_core(rhs, jac, y0, beta, theta, B, 1e-3 * tol, max_iter, max_step)
    if res < tol:
        return NewtonResult(y, res, True, it, "newton")
    if not fallback:
        return NewtonResult(y, res, False, it, "newton")
    from scipy.optimize import root

    def fun(z: np.ndarray) -> np.ndarray:
        return B.T @ evaluate_rhs(rhs, B @ z, beta, theta)

    def jfun(z: np.ndarray) -> np.ndarray:
        return restricted_jacobian(evaluate_jacobian(jac, B @ z, beta, theta), B)

    with np.errstate(all="ignore"):
        try:
            sol = root(fun, B.T @ y0, jac=jfun, method="hybr", options={"xtol": 1e-13})
            z = sol.x
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            return NewtonResult(y, res, False, it, "newton")
    if not np.all(np.isfinite(z)):
        return NewtonResult(y, res, False, it, "newton")
    y2, res2, it2 = _newton_core(rhs, jac, B @ z, beta, theta, B, 1e-3 * tol, 3, max_step)
    return NewtonResult(y2, res2, bool(res2 < tol), it + it2, "hybr")


def _polish_in_subspace(rhs: Callable, jac: Callable, y: np.ndarray, beta: float,
                        theta: np.ndarray, B: np.ndarray, N: np.ndarray, tol: float,
                        max_iter: int = 8) -> tuple[np.ndarray, float]:
    """Newton on ``B^T f = 0`` with steps restricted to ``B N`` (the subspace stays exact)."""
    best, best_res = y, math.inf
    for _ in range(max_iter + 1):
        f = evaluate_rhs(rhs, y, beta, theta)
        if not np.all(np.isfinite(f)):
            break
        res = float(np.max(np.abs(f)))
        if res < best_res:
            best, best_res = y, res
        if res < 1e-3 * tol:
            break
        Jr = restricted_jacobian(evaluate_jacobian(jac, y, beta, theta), B)
        dxi = np.linalg.lstsq(Jr @ N, -(B.T @ f), rcond=1e-10)[0]
        y = y + B @ (N @ dxi)
    return best, best_res



check_beta = _check_beta
polish_in_subspace = _polish_in_subspace
