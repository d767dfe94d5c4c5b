"""Pseudo-arclength continuation of fixed points in one parameter, with fold and branch-point
detection and branch switching.

Problem: follow the solution curves of ``F(z, p) = B^T f(B z; beta(p), theta(p)) = 0``,
``z`` (n_red,) coordinates on the physical subspace ``V`` (``y = B z``, see
:mod:`solvers.stability`: the weight gauge and the unrealisable directions are removed, so
``F_z = B^T J B`` is generically non-singular), p one scalar parameter mapped to
``(beta, theta)`` by a :class:`ParameterMap`.

Method (Keller's pseudo-arclength; Allgower & Georg, *Numerical Continuation Methods*, ch. 2,
8; Govaerts, *Numerical Methods for Bifurcations of Dynamical Equilibria*, ch. 4).
The curve is parametrised in the scaled coordinates ``x = (z, u)``, ``u = c p`` with
``c = y_scale / |stop - start|`` and ``y_scale = max(1, max |T|)``, so that crossing the
parameter interval weighs as much as an O(y_scale) change of the state.

* **Tangent** t (n_red + 1,), unit: ``[F_z  F_u] t = 0``, oriented by ``t . t_prev > 0``
  (computed from the bordered system ``[[F_z, F_u], [t_prev^T]] t = e_last``).
* **Predictor** ``x_pred = x + ds t``; **corrector**: Newton on
  ``[F(x); t . (x - x_pred)] = 0`` (the hyperplane through x_pred orthogonal to t).
* ``F_u = F_p / c`` with ``F_p`` by central finite differences of the compiled vector field
  in p (step ``h = 1e-6 max(1, |p|)``, error O(h^2) + O(eps / h), about 1e-9 relative; the
  residual F itself is exact, so converged points are accurate to the corrector tolerance,
  only the convergence rate sees this error).  ``F_z`` is the analytic Jacobian.
* **Step control**: accepted steps with <= 2 corrector iterations grow ds by 1.5 (up to
  ds_max), steps with >= 5 shrink it by 0.7; a failed corrector, a corrector displacement
  > 0.5 ds or a tangent turning by more than ~25 degrees halves ds (down to ds_min).
* **Test functions** between consecutive points: ``tau_F = t_u`` (the parameter component
  of the oriented tangent) and ``psi = det F_z`` computed from the eigenvalues, deflated by
  structural zeros (eigenvalues below ``1e-6`` (relative) in modulus at both ends of the
  step, which occur along whole branches at special parameters, e.g. the neutral
  perpendicular splitting of coinciding components at beta Delta = s).  At regular points
  ``sign det [[F_z, F_u], [t^T]] = sign(psi) sign(t_u)`` (the classical branch-point test
  function), so: ``t_u`` changes sign and ``psi t_u`` does not -> **fold**; ``psi t_u``
  changes sign -> **branch point** (on the main branch psi changes sign; along the
  bifurcating branch of a pitchfork t_u does).  Roots are located by a safeguarded Illinois
  iteration on the arclength sigma of the parametrisation
  ``x(sigma) = correct(x_i + sigma t_i)``, which reproduces x_i and x_{i+1} at sigma = 0 and
  sigma = ds; the located point is inserted into the branch.  At folds and branch points a
  real eigenvalue of F_z crosses zero.  A change of the number of unstable eigenvalues with
  no fold or branch point in the step is reported as 'hopf' if the crossing eigenvalues are
  complex, else 'stability_change' (e.g. two simultaneous real crossings); these are not
  located (reported at the step's end point).
* **Invariant subspaces**: coinciding components and R = 0 (symmetric targets) are linear
  invariant subspaces of the flow.  Points that nearly lie in one are moved onto it exactly
  (:func:`solvers.fixedpoints.snap_to_invariant`) and, inside one, tangents and Newton steps
  are restricted to it, so that an exactly neutral transverse direction (beta Delta = s) is
  never excited and the neutral eigenvalue stays at round-off level.
* **Branch switching** at a branch point x*: the Jacobian ``[F_z F_u]`` has a (at least)
  two-dimensional null space there, spanned by the branch tangent t and the directions t2
  orthogonal to it (right singular vectors of the smallest singular values).  The other
  branch is reached by correcting ``x* +- delta t2`` on the hyperplane orthogonal to t2 and
  continuing from there; starts that land on a known branch or outside the realisable set
  are dropped.
* A branch ends when p leaves [start, stop] (the end point on the boundary is located by
  the same iteration), when it closes on itself, when |y| diverges, after ``max_steps`` points, or
  when ds falls below ds_min.

:func:`trace_branches` seeds the continuation with all fixed points found by
:func:`solvers.fixedpoints.find_fixed_points` at a few parameter values (default: start,
midpoint, stop), skips seeds that lie on branches already traced, and switches branches at
every branch point found (breadth first, at most ``max_branches`` branches).  Isolated
branches (isolas) that contain none of the seeds are missed.

Parameters (:class:`ParameterMap`): ``beta`` (the rhs argument), ``A`` (= T_11; all of T is
scaled by A / T_11, i.e. all means scaled by a common factor; for the symmetric bimodal
preset this is T = A [[1, -1], [-1, 1]]), ``pi_a`` (pi_a = value, the other pi_b rescaled
proportionally to sum 1 - value; for K = 2, pi_2 = 1 - pi_1), ``w_k`` (same, fixed weights
only), ``s``, ``Delta``, ``sigma0_sq`` (geometric path).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derivations.spec import BASE_PATHS, ModelStructure, ProblemSpec

from .fixedpoints import _model_parts, find_fixed_points, label_state, snap_to_invariant
from .geometry import (
    gram_min_eigenvalue,
    invariant_constraints,
    reduced_basis,
    restricted_jacobian,
    subspace_basis,
)
from .layout import StateLayout
from .model import evaluate_jacobian, evaluate_rhs
from .newton import newton
from .stability import classify_eigenvalues

__all__ = [
    "ParameterMap",
    "SpecialPoint",
    "Branch",
    "BifurcationDiagram",
    "continue_branch",
    "trace_branches",
]


# ----------------------------------------------------------------------------------------
# parameter map
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParameterMap:
    """Maps a scalar parameter value to ``(beta, theta)`` around a base point.

    name : 'beta', 'A', 'pi_<a>', 'w_<k>', 's', 'Delta' or 'sigma0_sq' (see the module
        docstring for how each enters theta).
    structure : the model structure (fixes the layout of theta).
    theta0 : base parameter vector (p,), e.g. ``spec.theta()``.
    beta0 : base inverse temperature (used unless name == 'beta').
    """

    name: str
    structure: ModelStructure
    theta0: tuple[float, ...]
    beta0: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.structure, ModelStructure):
            raise ValueError("structure: must be a derivations.spec.ModelStructure")
        s = self.structure
        names = s.parameter_names
        th = np.asarray(self.theta0, dtype=float).ravel()
        if th.shape != (len(names),) or not np.all(np.isfinite(th)):
            raise ValueError(f"theta0: must be a finite vector of length {len(names)} "
                             f"({', '.join(names)})")
        object.__setattr__(self, "theta0", tuple(float(x) for x in th))
        b = float(self.beta0)
        if not (b > 0 and math.isfinite(b)):
            raise ValueError(f"beta0: must be a finite number > 0, got {self.beta0!r}")
        object.__setattr__(self, "beta0", b)
        name = self.name
        ok = name in ("beta", "A", "Delta") or (name == "s" and s.variances == "fixed")
        if name == "s" and not ok:
            raise ValueError(f"name: s is a parameter only with fixed variances (here "
                             f"{s.variances!r}: s is a state or a function of beta)")
        if name == "sigma0_sq":
            ok = s.path in BASE_PATHS
            if not ok:
                raise ValueError("name: sigma0_sq is a parameter of the geometric and mixture "
                                 "paths only")
        m = re.fullmatch(r"pi_(\d+)", name)
        if m:
            a = int(m.group(1))
            if not (1 <= a <= s.K) or s.K < 2:
                raise ValueError(f"name: {name} needs 1 <= a <= K = {s.K} and K >= 2")
            ok = True
        m = re.fullmatch(r"w_(\d+)", name)
        if m:
            k = int(m.group(1))
            if s.train_weights:
                raise ValueError(f"name: {name} is a parameter only with fixed weights")
            if not (1 <= k <= s.M) or s.M < 2:
                raise ValueError(f"name: {name} needs 1 <= k <= M = {s.M} and M >= 2")
            ok = True
        if not ok:
            raise ValueError(f"name: unknown continuation parameter {name!r} (use beta, A, "
                             f"pi_<a>, w_<k>, s, Delta or sigma0_sq)")
        if name == "A" and th[names.index("T_1_1")] <= 0:
            raise ValueError("name: A = T_11 needs T_11 > 0 in theta0")

    @classmethod
    def from_spec(cls, spec: ProblemSpec, name: str, beta: float | None = None,
                  d: float | None = None) -> ParameterMap:
        """Map around ``spec.theta(d)``; beta0 = ``beta`` or the spec's schedule value at t=0
        (``d``: needed with tied variances, see :meth:`ProblemSpec.parameter_values`)."""
        if not isinstance(spec, ProblemSpec):
            raise ValueError("spec: must be a ProblemSpec")
        b = float(spec.schedule.beta(0.0)) if beta is None else beta
        return cls(name, spec.structure, tuple(spec.theta(d=d)), b)

    @property
    def _names(self) -> list[str]:
        names = self.__dict__.get("_names_cache")
        if names is None:
            names = self.structure.parameter_names
            object.__setattr__(self, "_names_cache", names)
        return names

    @property
    def value0(self) -> float:
        """The parameter's value at the base point."""
        names, th = self._names, self.theta0
        if self.name == "beta":
            return self.beta0
        if self.name == "A":
            return th[names.index("T_1_1")]
        return th[names.index(self.name)]

    @property
    def domain(self) -> tuple[float, float]:
        """Open interval of admissible values."""
        if self.name.startswith(("pi_", "w_")):
            return (0.0, 1.0)
        return (0.0, math.inf)

    def check(self, value: float, what: str = "value", physical: bool = False) -> float:
        """``value`` as a float if it lies in the admissible range, else a ValueError naming
        ``what`` and the range.

        The reduced equations are defined on the open ``domain`` (beta in (0, inf): a
        continuation may step through beta = 1 to locate a branch point there).  With
        ``physical=True`` beta is held to the problem's range (0, 1] instead (tempering
        p^beta, beta = 1 the target itself), as a schedule's beta is.
        """
        v = float(value)
        lo, hi = self.domain
        if physical and self.name == "beta":
            if not (lo < v <= 1.0):
                raise ValueError(f"{what}: beta must lie in (0, 1], got {value!r}")
            return v
        if not (lo < v < hi) or not math.isfinite(v):
            raise ValueError(f"{what}: {self.name} must lie in ({lo}, {hi}), got {value!r}")
        return v

    def __call__(self, value: float) -> tuple[float, np.ndarray]:
        """``(beta, theta)`` at parameter value ``value``."""
        v = float(value)
        names = self._names
        theta = np.array(self.theta0)
        beta = self.beta0
        name = self.name
        if name == "beta":
            beta = v
        elif name == "A":
            factor = v / theta[names.index("T_1_1")]
            for i, nm in enumerate(names):
                if nm.startswith("T_"):
                    theta[i] *= factor
        elif name.startswith(("pi_", "w_")):
            prefix = name.split("_")[0] + "_"
            idx = [i for i, nm in enumerate(names) if nm.startswith(prefix)]
            j = names.index(name)
            others = [i for i in idx if i != j]
            rest0 = sum(theta[i] for i in others)
            for i in others:
                theta[i] *= (1.0 - v) / rest0
            theta[j] = v
        else:
            theta[names.index(name)] = v
        return beta, theta


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SpecialPoint:
    """A located bifurcation on a branch.

    kind : 'fold' | 'branch_point' | 'hopf' | 'stability_change'.
    index : position of the point in the branch arrays.
    p : parameter value.  y : (n,) state.  eigenvalues : (n_red,) complex.
    tangent : (n_red + 1,) unit tangent in the scaled coordinates (z, c p).
    """

    kind: str
    index: int
    p: float
    y: np.ndarray
    eigenvalues: np.ndarray
    tangent: np.ndarray = field(repr=False, default=None)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "index": int(self.index), "p": float(self.p),
                "state": self.y.tolist(),
                "eigenvalues": [[float(e.real), float(e.imag)] for e in self.eigenvalues]}


@dataclass(frozen=True, eq=False)
class Branch:
    """One traced solution curve.

    parameter : name of the continuation parameter.  p : (N,) values.  y : (N, n) states.
    eigenvalues : (N, n_red) complex, decreasing real part.  n_unstable : (N,) int.
    stable : (N,) bool (asymptotically stable).  labels : N labels (symmetric / split /
    collapsed).  realisable : (N,) bool (joint Gram matrix PSD).  special_points : located
    folds / branch points.  status : why the branch ended (both ends, 'start | end').
    origin : how it was seeded.
    """

    parameter: str
    p: np.ndarray
    y: np.ndarray
    eigenvalues: np.ndarray
    n_unstable: np.ndarray
    stable: np.ndarray
    labels: tuple[str, ...]
    realisable: np.ndarray
    special_points: tuple[SpecialPoint, ...]
    status: str
    origin: str

    def __len__(self) -> int:
        return int(self.p.size)

    def folds(self) -> list[SpecialPoint]:
        return [s for s in self.special_points if s.kind == "fold"]

    def branch_points(self) -> list[SpecialPoint]:
        return [s for s in self.special_points if s.kind == "branch_point"]

    def to_dict(self, state_names: Sequence[str] | None = None) -> dict:
        d = {"parameter": self.parameter, "origin": self.origin, "status": self.status,
             "p": self.p.tolist(), "state": self.y.tolist(),
             "stable": [bool(s) for s in self.stable],
             "n_unstable": [int(k) for k in self.n_unstable],
             "labels": list(self.labels),
             "realisable": [bool(r) for r in self.realisable],
             "special_points": [s.to_dict() for s in self.special_points]}
        if state_names is not None:
            d["state_names"] = list(state_names)
        return d


@dataclass(frozen=True, eq=False)
class BifurcationDiagram:
    """All branches traced in [start, stop] of one parameter."""

    parameter: str
    start: float
    stop: float
    branches: tuple[Branch, ...]
    state_names: tuple[str, ...]

    def special_points(self, kind: str | None = None) -> list[tuple[int, SpecialPoint]]:
        """(branch index, point) for every special point (of one kind if given)."""
        return [(i, s) for i, b in enumerate(self.branches) for s in b.special_points
                if kind is None or s.kind == kind]

    def to_dict(self) -> dict:
        return {"parameter": self.parameter, "start": self.start, "stop": self.stop,
                "state_names": list(self.state_names),
                "branches": [b.to_dict() for b in self.branches]}


# ----------------------------------------------------------------------------------------
# the continuation system
# ----------------------------------------------------------------------------------------

class _System:
    """F(x) = B^T f(B z; p) with x = (z, u), u = c p; Jacobians; stability."""

    def __init__(self, rhs: Callable, jac: Callable, layout: StateLayout, pmap: ParameterMap,
                 B: np.ndarray, c: float, stability_tol: float, label_tol: float,
                 include_unrealisable: bool = False) -> None:
        self.rhs, self.jac, self.layout, self.pmap = rhs, jac, layout, pmap
        self.include_unrealisable = include_unrealisable
        self._cache: dict = {}
        self.B, self.c = B, c
        self.n = B.shape[1]
        self.stability_tol = stability_tol
        self.label_tol = label_tol
        self.lo, self.hi = pmap.domain

    def p(self, x: np.ndarray) -> float:
        return float(x[-1] / self.c)

    def y(self, x: np.ndarray) -> np.ndarray:
        return self.B @ x[:-1]

    def x(self, y: np.ndarray, p: float) -> np.ndarray:
        return np.append(self.B.T @ y, p * self.c)

    def F(self, x: np.ndarray) -> np.ndarray:
        p = self.p(x)
        if not (self.lo < p < self.hi):
            return np.full(self.n, np.nan)
        beta, theta = self.pmap(p)
        return self.B.T @ evaluate_rhs(self.rhs, self.y(x), beta, theta)

    def _cached(self, name: str, x: np.ndarray, compute: Callable) -> Any:
        key = (name, x.tobytes())
        cache = self._cache
        if key not in cache:
            if len(cache) > 256:
                cache.clear()
            cache[key] = compute(x)
        return cache[key]

    def DF(self, x: np.ndarray) -> np.ndarray:
        """[F_z, F_u] (n_red, n_red + 1) (memoised on x)."""
        return self._cached("DF", x, self._DF)

    def _DF(self, x: np.ndarray) -> np.ndarray:
        p = self.p(x)
        beta, theta = self.pmap(p)
        y = self.y(x)
        Jz = restricted_jacobian(evaluate_jacobian(self.jac, y, beta, theta), self.B)
        h = 1e-6 * max(1.0, abs(p))
        lo, hi = p - h, p + h
        if lo <= self.lo:
            lo = p
        if hi >= self.hi:
            hi = p
        b1, t1 = self.pmap(hi)
        b0, t0 = self.pmap(lo)
        Fp = self.B.T @ (evaluate_rhs(self.rhs, y, b1, t1) - evaluate_rhs(self.rhs, y, b0, t0))
        Fp /= (hi - lo)
        return np.hstack([Jz, (Fp / self.c)[:, None]])

    def tangent(self, x: np.ndarray, t_prev: np.ndarray | None,
                D: np.ndarray | None = None) -> np.ndarray:
        """Unit tangent at x, oriented by t_prev.

        With t_prev: the minimum-norm solution of ``[[F_z, F_u], [t_prev^T]] t = e_last``
        (singular values below 1e-10 relative ignored, so that a structurally neutral
        direction, e.g. splitting coinciding components at beta Delta = s, does not enter).
        Without: the null vector of [F_z F_u]; if the numerical null space has more than one
        dimension, its vector closest to the parameter axis.
        """
        D = self.DF(x) if D is None else D
        if t_prev is None:
            _, sv, Vt = np.linalg.svd(D)
            sv = np.concatenate([sv, np.zeros(Vt.shape[0] - sv.size)])
            k = max(1, int(np.sum(sv < 1e-6 * max(1.0, float(sv[0])))))
            N = Vt[-k:]
            t = N.T @ N[:, -1]
            if np.linalg.norm(t) < 1e-12:
                t = Vt[-1]
            if t[-1] < 0:
                t = -t
        else:
            A = np.vstack([D, t_prev[None, :]])
            e = np.zeros(self.n + 1)
            e[-1] = 1.0
            try:
                t = np.linalg.lstsq(A, e, rcond=1e-7)[0]
                if not np.all(np.isfinite(t)) or np.linalg.norm(t) == 0:
                    raise np.linalg.LinAlgError
            except np.linalg.LinAlgError:
                _, _, Vt = np.linalg.svd(D)
                t = Vt[-1]
            if t @ t_prev < 0:
                t = -t
        N = self.subspace(x)
        if N is not None:
            tp = N @ (N.T @ t)
            if np.linalg.norm(tp) > 1e-3 * np.linalg.norm(t):
                t = tp
        return t / np.linalg.norm(t)

    def initial_tangent(self, x: np.ndarray, h: float, tol: float) -> np.ndarray:
        """Tangent at a starting point: secant to the solution at parameter p + h found by
        Newton from x (and snapped), which stays inside invariant subspaces; the null vector
        of [F_z F_u] if that fails (e.g. at a fold).  Oriented towards increasing p."""
        p = self.p(x)
        if self.lo < p + h < self.hi:
            beta, theta = self.pmap(p + h)
            r = newton(self.rhs, self.jac, self.y(x), beta, theta, basis=self.B,
                       tol=max(tol, 1e-10), max_iter=20, fallback=False)
            if r.converged:
                x1 = self.snap(self.x(r.y, p + h), tol)
                d = x1 - x
                if np.linalg.norm(d) > 0 and np.linalg.norm(d[:-1]) < 100 * abs(d[-1]):
                    d = d / np.linalg.norm(d)
                    # refine with the bordered system, keeping the secant's orientation
                    return self.tangent(x, d)
        return self.tangent(x, None)

    def subspace(self, x: np.ndarray) -> np.ndarray | None:
        """See :meth:`_subspace` (memoised on x)."""
        return self._cached("sub", x, self._subspace)

    def _subspace(self, x: np.ndarray) -> np.ndarray | None:
        """Orthonormal basis N ((n_red + 1) x k) of the invariant linear subspace that x lies
        in exactly (:func:`solvers.fixedpoints.invariant_constraints`; the parameter
        direction is free), or None.  A candidate is used only if it is numerically invariant
        at x (``C [F_z F_u] N = 0``).  Continuation inside such a subspace keeps tangents and
        Newton steps in it: transverse directions that are exactly neutral (beta Delta = s,
        or the weight split of coinciding components) are then never excited.
        """
        beta, theta = self.pmap(self.p(x))
        C = invariant_constraints(self.layout, self.y(x), theta)
        Nz = subspace_basis(C, self.B)
        if Nz is None:
            return None
        N = np.zeros((self.n + 1, Nz.shape[1] + 1))
        N[:-1, :-1] = Nz
        N[-1, -1] = 1.0
        D = self.DF(x)
        Cz = C @ self.B
        if float(np.max(np.abs(Cz @ D @ N))) > 1e-8 * max(1.0, float(np.max(np.abs(D)))):
            return None
        return N

    def correct(self, x_pred: np.ndarray, normal: np.ndarray, tol: float,
                max_iter: int = 10) -> tuple[np.ndarray, bool, int]:
        """Newton on [F(x); normal . (x - x_pred)] = 0 (steps projected onto the invariant
        subspace of x_pred, if any)."""
        x = x_pred.copy()
        N = self.subspace(x_pred)
        prev = math.inf
        for it in range(1, max_iter + 1):
            F = self.F(x)
            if not np.all(np.isfinite(F)):
                return x, False, it
            if float(np.max(np.abs(F))) <= tol and \
                    abs(float(normal @ (x - x_pred))) <= 1e-12 * (1.0 + float(np.max(np.abs(x)))):
                return x, True, it - 1
            D = self.DF(x)
            A = np.vstack([D, normal[None, :]])
            r = np.append(F, normal @ (x - x_pred))
            try:
                # minimum-norm Newton step: near a branch point the bordered matrix is nearly
                # singular and an exact solve would move the point along the null direction
                if N is None:
                    dx = np.linalg.lstsq(A, -r, rcond=1e-7)[0]
                else:  # Newton inside the invariant subspace
                    dx = N @ np.linalg.lstsq(A @ N, -r, rcond=1e-7)[0]
            except np.linalg.LinAlgError:
                return x, False, it
            if not np.all(np.isfinite(dx)):
                return x, False, it
            x = x + dx
            nd = float(np.max(np.abs(dx)))
            if it > 2 and nd > 0.5 * prev:
                return x, False, it
            prev = nd
            if nd <= 1e-10 * (1.0 + float(np.max(np.abs(x)))):
                F = self.F(x)
                if np.all(np.isfinite(F)) and float(np.max(np.abs(F))) <= tol:
                    return x, True, it
        F = self.F(x)
        ok = bool(np.all(np.isfinite(F)) and float(np.max(np.abs(F))) <= tol)
        return x, ok, max_iter

    def eigenvalues(self, x: np.ndarray) -> np.ndarray:
        """Eigenvalues of F_z at x, sorted by decreasing real part."""
        beta, theta = self.pmap(self.p(x))
        Jz = restricted_jacobian(evaluate_jacobian(self.jac, self.y(x), beta, theta), self.B)
        ev = np.linalg.eigvals(Jz)
        return ev[np.lexsort((-ev.imag, -ev.real))]

    def point_info(self, x: np.ndarray) -> tuple[np.ndarray, int, bool, str, bool]:
        """(eigenvalues sorted, n_unstable, stable, label, realisable) at x (memoised)."""
        return self._cached("info", x, self._point_info)

    def _point_info(self, x: np.ndarray) -> tuple[np.ndarray, int, bool, str, bool]:
        beta, theta = self.pmap(self.p(x))
        y = self.y(x)
        ev = self.eigenvalues(x)
        kind, n_unst, _ = classify_eigenvalues(ev, self.stability_tol)
        lay = self.layout
        Q, R, _ = lay.unpack(y)
        T = lay.T(theta)
        w = lay.weights(y, theta) if lay.train_weights else None
        label, _ = label_state(Q, R, T, weights=w, label_tol=self.label_tol)
        real = gram_min_eigenvalue(Q, R, T) >= -_PSD_TOL
        return ev, n_unst, kind == "stable", label, real

    def snap(self, x: np.ndarray, tol: float) -> np.ndarray:
        """x moved exactly onto an invariant subspace it nearly lies in (coinciding
        components, R = 0) if the residual stays below tol (see
        :func:`solvers.fixedpoints.snap_to_invariant`); else x.  Along branches inside such
        a subspace with a neutral transverse direction (beta Delta = s) the corrector
        cannot control the transverse offset (the residual is quadratic in it), so every
        accepted point is snapped; this keeps the neutral eigenvalue at round-off level."""
        beta, theta = self.pmap(self.p(x))
        y = self.y(x)
        ys = snap_to_invariant(self.rhs, self.jac, self.layout, y, beta, theta, tol, self.B)
        if ys is y:
            return x
        return np.append(self.B.T @ ys, x[-1])

    def gram_min(self, x: np.ndarray) -> float:
        """Smallest relative eigenvalue of the joint Gram matrix at x (< 0: unrealisable)."""
        _, theta = self.pmap(self.p(x))
        Q, R, _ = self.layout.unpack(self.y(x))
        return gram_min_eigenvalue(Q, R, self.layout.T(theta))


# ----------------------------------------------------------------------------------------
# one branch
# ----------------------------------------------------------------------------------------

@dataclass
class _Trace:
    xs: list
    ts: list
    specials: list  # (kind, position in xs, x, t)
    status: str


def _locate(sys: _System, x0: np.ndarray, t0: np.ndarray, ds: float, func: Callable,
            tol: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Root of func(x(sigma), t(sigma)) for sigma in (0, ds), x(sigma) = correct(x0 + sigma t0).

    Safeguarded Illinois iteration on the bracket [0, ds] (func must have opposite signs at
    the ends): a trial point where the corrector fails (it can near a branch point, where
    the hyperplane meets two branches) is replaced by the bracket's midpoint, and failures
    there end the search at the best point found.  Returns (x, t) or None.
    """
    def at(sig: float) -> tuple[np.ndarray, np.ndarray] | None:
        x, ok, _ = sys.correct(x0 + sig * t0, t0, tol, max_iter=15)
        if not ok:
            return None
        x = sys.snap(x, tol)
        return x, sys.tangent(x, t0)

    a, b = 0.0, ds
    pa, pb = at(a), at(b)
    if pa is None or pb is None:
        return None
    fa, fb = func(*pa), func(*pb)
    if not (np.isfinite(fa) and np.isfinite(fb)) or fa * fb > 0:
        return None
    best = pa if abs(fa) <= abs(fb) else pb
    best_f = min(abs(fa), abs(fb))
    for _ in range(100):
        lo, hi = min(a, b), max(a, b)
        if hi - lo <= 1e-13 * max(1.0, ds) or best_f == 0.0:
            break
        c = b - fb * (b - a) / (fb - fa) if fb != fa else 0.5 * (a + b)
        if not (lo < c < hi):
            c = 0.5 * (a + b)
        pc = at(c)
        if pc is None:
            c = 0.5 * (a + b)
            pc = at(c)
            if pc is None:
                break
        fc = func(*pc)
        if not np.isfinite(fc):
            break
        if abs(fc) < best_f:
            best, best_f = pc, abs(fc)
        if fc * fb < 0:
            a, fa = b, fb
        else:
            fa *= 0.5  # Illinois modification
        b, fb = c, fc
    return best


#: |t_u| below this counts as a vertical tangent (no fold is reported: a branch at constant
#: parameter, e.g. a continuum of fixed points, has t_u = 0 up to round-off).
_VERTICAL = 1e-9

#: Eigenvalues with |lambda| < _ZERO * max(1, max |lambda|) at both ends of a step are
#: treated as structural zeros and deflated from the branch-point test function.
_ZERO = 1e-6

#: Relative tolerance of the realisability test along branches (smallest eigenvalue of the
#: joint Gram matrix over max(1, max |entry|)); states with coinciding components lie on the
#: boundary of the realisable set, so round-off must not end a branch.
_PSD_TOL = 1e-6


def _null_space(sys: _System, x: np.ndarray, min_dim: int = 2) -> np.ndarray:
    """Rows spanning the numerical null space of [F_z F_u] at x (at least ``min_dim`` rows:
    the right singular vectors of the smallest singular values, plus every one below
    1e-6 times the largest)."""
    _, sv, Vt = np.linalg.svd(sys.DF(x))
    sv = np.concatenate([sv, np.zeros(Vt.shape[0] - sv.size)])
    k = max(min_dim, int(np.sum(sv < 1e-6 * max(1.0, float(sv[0])))))
    return Vt[-k:]


def _branch_tangent(sys: _System, x: np.ndarray, t_ref: np.ndarray) -> np.ndarray:
    """Tangent of the branch through a branch point x: t_ref projected onto the null space
    of [F_z F_u] there (two-dimensional at a simple branch point), normalised."""
    N = _null_space(sys, x)
    t = N.T @ (N @ t_ref)
    nt = np.linalg.norm(t)
    return t / nt if nt > 0 else t_ref


def _trace(sys: _System, x0: np.ndarray, t0: np.ndarray, *, p_lo: float, p_hi: float,
           ds: float, ds_min: float, ds_max: float, max_steps: int, tol: float,
           y_max: float, detect: bool = True) -> _Trace:
    """Follow the curve from x0 in direction t0 until an end condition."""
    xs = [x0]
    ts = [t0]
    specials: list = []
    x, t = x0, t0
    info = sys.point_info(x)
    status = "max steps"
    u_lo, u_hi = p_lo * sys.c, p_hi * sys.c
    steps = 0
    while steps < max_steps:
        x_pred = x + ds * t
        x_new, ok, iters = sys.correct(x_pred, t, tol)
        if ok:
            x_new = sys.snap(x_new, tol)
            t_new = sys.tangent(x_new, t)
            dist = float(np.linalg.norm(x_new - x_pred))
            if dist > 0.5 * ds or t_new @ t < 0.9:
                ok = False
        if not ok:
            ds *= 0.5
            if ds < ds_min:
                status = "step size underflow"
                break
            continue
        steps += 1
        # leaving the parameter interval: land exactly on the boundary
        u_new = x_new[-1]
        if u_new < u_lo or u_new > u_hi:
            u_b = u_lo if u_new < u_lo else u_hi
            hit = _locate(sys, x, t, ds, lambda xx, tt: xx[-1] - u_b, tol)
            if hit is None:
                status = "left interval"
                break
            xb, tb = hit
            sig_b = float(t @ (xb - x))
            if sig_b > 1e-12 * (1.0 + float(np.max(np.abs(x)))):  # not the point itself
                if detect:
                    _detect(sys, x, t, sig_b, info, xb, tb, tol, xs, ts, specials)
                xs.append(xb)
                ts.append(tb)
            status = "boundary"
            break
        if not sys.include_unrealisable and sys.gram_min(x_new) < -_PSD_TOL:
            # the branch leaves the realisable set: end it where the joint Gram matrix
            # becomes singular (if the previous point was strictly inside)
            hit = None
            if sys.gram_min(x) > 0:
                hit = _locate(sys, x, t, ds, lambda xx, tt: sys.gram_min(xx), tol)
            if hit is not None:
                xh, th = hit
                if detect:
                    _detect(sys, x, t, max(float(t @ (xh - x)), 0.0), info, xh, th, tol,
                            xs, ts, specials)
                xs.append(xh)
                ts.append(th)
            status = "unrealisable"
            break
        if float(np.max(np.abs(sys.y(x_new)))) > y_max:
            xs.append(x_new)
            ts.append(t_new)
            status = "diverged"
            break
        if detect:
            info = _detect(sys, x, t, ds, info, x_new, t_new, tol, xs, ts, specials)
        xs.append(x_new)
        ts.append(t_new)
        # closed loop
        if len(xs) > 10 and np.linalg.norm(x_new - xs[0]) < 0.5 * ds and t_new @ ts[0] > 0.5:
            xs.append(xs[0])
            ts.append(ts[0])
            status = "closed loop"
            break
        x, t = x_new, t_new
        if iters <= 2:
            ds = min(ds * 1.5, ds_max)
        elif iters >= 5:
            ds *= 0.7
    return _Trace(xs, ts, specials, status)


def _n_small(ev: np.ndarray) -> int:
    """Number of eigenvalues with |lambda| < _ZERO * max(1, max |lambda|)."""
    if ev.size == 0:
        return 0
    return int(np.sum(np.abs(ev) < _ZERO * max(1.0, float(np.max(np.abs(ev))))))


def _reduced_det(ev: np.ndarray, m: int) -> float:
    """Sign-carrying product of the eigenvalues without the m smallest in modulus.

    With m = 0 this is det F_z.  Structural zero eigenvalues (present along a whole branch,
    e.g. the neutral perpendicular splitting of coinciding components at beta Delta = s) are
    removed this way, so that the test function still changes sign exactly where another
    real eigenvalue crosses zero.  Complex pairs contribute |lambda|^2 > 0.
    """
    if ev.size == 0:
        return 1.0
    keep = np.argsort(np.abs(ev))[m:]
    prod = complex(np.prod(ev[keep] / max(1.0, float(np.max(np.abs(ev))))))
    return float(prod.real)


def _detect(sys: _System, x: np.ndarray, t: np.ndarray, ds: float, info: tuple,
            x_new: np.ndarray, t_new: np.ndarray, tol: float, xs: list, ts: list,
            specials: list) -> tuple:
    """Test functions on the step x -> x_new; located points are appended to xs / specials.

    ``tau_F = t_u`` and ``psi`` = det F_z deflated by the structural zero eigenvalues (those
    with |lambda| < _ZERO at both ends of the step).  At regular points
    ``sign det [[F_z, F_u], [t^T]] = sign(det F_z) sign(t_u)``, so: t_u changes sign and
    psi t_u does not -> fold; psi t_u changes sign -> branch point (including a pitchfork
    passed along its bifurcating branch, where t_u changes sign but psi does not).
    """
    info_new = sys.point_info(x_new)
    ev0, ev1 = info[0], info_new[0]
    m = min(_n_small(ev0), _n_small(ev1))
    psi0, psi1 = _reduced_det(ev0, m), _reduced_det(ev1, m)
    tu0, tu1 = float(t[-1]), float(t_new[-1])
    found = []
    if tu0 * tu1 < 0 and min(abs(tu0), abs(tu1)) > _VERTICAL:
        hit = _locate(sys, x, t, ds, lambda xx, tt: float(tt[-1]), tol)
        if hit is not None:
            if (psi0 * tu0) * (psi1 * tu1) < 0:
                found.append(("branch_point", (hit[0], _branch_tangent(sys, hit[0], t))))
            else:
                found.append(("fold", hit))
    elif psi0 * psi1 < 0:
        hit = _locate(sys, x, t, ds, lambda xx, tt: _reduced_det(sys.eigenvalues(xx), m), tol)
        if hit is not None:
            found.append(("branch_point", (hit[0], _branch_tangent(sys, hit[0], t))))
    if not found and info[1] != info_new[1]:
        # eigenvalues near the imaginary axis: complex crossing -> Hopf
        k = max(info[1], info_new[1])
        crossing = ev1[:k] if info_new[1] > info[1] else ev0[:k]
        complex_cross = bool(np.any(np.abs(crossing.imag)
                                    > 1e-8 * max(1.0, float(np.max(np.abs(crossing))))))
        kind = "hopf" if complex_cross else "stability_change"
        # not located: reported at the step's end point (the step is small)
        found.append((kind, (x_new.copy(), t_new.copy())))
    for kind, (xf, tf) in found:
        if kind in ("fold", "branch_point"):
            xs.append(xf)
            ts.append(tf)
            specials.append((kind, len(xs) - 1, xf, tf))
        else:
            specials.append((kind, len(xs), x_new, t_new))  # the point appended next
    return info_new


def _assemble(sys: _System, xs: list, ts: list, specials: list, status: str,
              origin: str) -> Branch:
    p = np.array([sys.p(x) for x in xs])
    Y = np.array([sys.y(x) for x in xs])
    infos = [sys.point_info(x) for x in xs]
    ev = np.array([i[0] for i in infos]) if infos else np.zeros((0, sys.n), complex)
    sp = tuple(SpecialPoint(kind, idx, sys.p(xf), sys.y(xf), infos[idx][0], tf)
               for kind, idx, xf, tf in specials)
    return Branch(parameter=sys.pmap.name, p=p, y=Y, eigenvalues=ev,
                  n_unstable=np.array([i[1] for i in infos], dtype=np.int64),
                  stable=np.array([i[2] for i in infos], dtype=bool),
                  labels=tuple(i[3] for i in infos),
                  realisable=np.array([i[4] for i in infos], dtype=bool),
                  special_points=sp, status=status, origin=origin)


def _join(back: _Trace, fwd: _Trace) -> tuple[list, list, list, str]:
    """Concatenate a backward trace (reversed) and a forward trace from the same start."""
    nb = len(back.xs)
    xs = back.xs[::-1] + fwd.xs[1:]
    ts = [-t for t in back.ts[::-1]] + fwd.ts[1:]
    specials = [(k, nb - 1 - i, x, -t) for k, i, x, t in back.specials]
    specials += [(k, nb - 1 + i, x, t) for k, i, x, t in fwd.specials]
    specials.sort(key=lambda s: s[1])
    return xs, ts, specials, f"{back.status} | {fwd.status}"


# ----------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------

def _setup(model: Any, pmap: ParameterMap, start: float, stop: float, ds: float | None,
           ds_max: float | None, stability_tol: float, label_tol: float,
           include_unrealisable: bool = False
           ) -> tuple[_System, float, float, float, float, float]:
    rhs, jac, layout, _ = _model_parts(model)
    if not isinstance(pmap, ParameterMap):
        raise ValueError("pmap: must be a ParameterMap")
    if pmap.structure != layout.structure:
        raise ValueError("pmap: its structure differs from the model's")
    start = pmap.check(start, "start")
    stop = pmap.check(stop, "stop")
    if start == stop:
        raise ValueError("stop: must differ from start")
    beta, theta = pmap(pmap.value0)
    B = reduced_basis(layout, theta)
    y_scale = max(1.0, float(np.max(np.abs(layout.T(theta)))))
    c = y_scale / abs(stop - start)
    sys = _System(rhs, jac, layout, pmap, B, c, stability_tol, label_tol, include_unrealisable)
    ds_max = 0.05 * y_scale if ds_max is None else float(ds_max)
    ds = min(0.01 * y_scale, ds_max) if ds is None else float(ds)
    if not (ds > 0 and ds_max > 0):
        raise ValueError("ds, ds_max: must be > 0")
    return sys, min(start, stop), max(start, stop), ds, ds_max, y_scale


def continue_branch(model: Any, pmap: ParameterMap, y0: Any, p0: float, start: float,
                    stop: float, *, direction: int = 0, ds: float | None = None,
                    ds_max: float | None = None, ds_min: float | None = None,
                    max_steps: int = 3000, tol: float = 1e-11, stability_tol: float = 1e-6,
                    label_tol: float = 1e-6, include_unrealisable: bool = False,
                    origin: str = "seed") -> Branch:
    """Trace the branch through the fixed point ``y0`` (n,) at parameter ``p0``.

    The branch is followed within ``[min(start, stop), max(start, stop)]``: with
    ``direction = 0`` both ways from y0 (joined into one branch ordered by arclength), with
    +1 / -1 only towards increasing / decreasing p (at y0).  y0 is first polished by a few
    Newton steps at p0 (``ValueError`` if that fails or moves it by more than 1e-3
    relative).  See the module docstring for the algorithm; ``tol`` is the corrector's
    tolerance on ``max |F|``.  The branch ends where it leaves the
    realisable set unless ``include_unrealisable``.
    """
    sys, p_lo, p_hi, ds, ds_max, y_scale = _setup(model, pmap, start, stop, ds, ds_max,
                                                  stability_tol, label_tol,
                                                  include_unrealisable)
    if direction not in (-1, 0, 1):
        raise ValueError(f"direction: must be -1, 0 or +1, got {direction!r}")
    p0 = pmap.check(p0, "p0")
    if not (p_lo <= p0 <= p_hi):
        raise ValueError(f"p0: must lie in [{p_lo}, {p_hi}], got {p0}")
    ds_min = 1e-9 * y_scale if ds_min is None else float(ds_min)
    beta, theta = pmap(p0)
    y0 = sys.layout.fix_gauge(sys.layout.check_state(y0, "y0"))
    res = newton(sys.rhs, sys.jac, y0, beta, theta, basis=sys.B, tol=max(tol, 1e-10),
                 max_iter=10, fallback=False)
    if not res.converged or np.max(np.abs(res.y - y0)) > 1e-3 * (1.0 + np.max(np.abs(y0))):
        raise ValueError(f"y0: not (close to) a fixed point at {pmap.name} = {p0} (Newton "
                         f"residual {res.residual:.3g})")
    x0 = sys.snap(sys.x(res.y, p0), tol)
    t0 = sys.initial_tangent(x0, 1e-4 * (p_hi - p_lo), tol)
    kw = dict(p_lo=p_lo, p_hi=p_hi, ds=ds, ds_min=ds_min, ds_max=ds_max, max_steps=max_steps,
              tol=tol, y_max=1e3 * y_scale)
    if direction != 0:
        t0 = t0 if np.sign(t0[-1]) == direction or t0[-1] == 0 else -t0
        tr = _trace(sys, x0, t0, **kw)
        return _assemble(sys, tr.xs, tr.ts, tr.specials, tr.status, origin)
    fwd = _trace(sys, x0, t0, **kw)
    back = _trace(sys, x0, -t0, **kw)
    xs, ts, specials, status = _join(back, fwd)
    return _assemble(sys, xs, ts, specials, status, origin)


def _dist_to_polyline(x: np.ndarray, X: np.ndarray) -> float:
    """Euclidean distance from x to the polyline through the rows of X."""
    if X.shape[0] == 1:
        return float(np.linalg.norm(x - X[0]))
    a, b = X[:-1], X[1:]
    d = b - a
    L2 = np.einsum("ij,ij->i", d, d)
    s = np.where(L2 > 0, np.einsum("ij,ij->i", x - a, d) / np.where(L2 > 0, L2, 1.0), 0.0)
    s = np.clip(s, 0.0, 1.0)
    proj = a + s[:, None] * d
    return float(np.min(np.linalg.norm(x - proj, axis=1)))


def trace_branches(model: Any, pmap: ParameterMap, start: float, stop: float, *,
                   seeds: Sequence[tuple[float, Any]] | None = None,
                   seed_values: Sequence[float] | None = None, switch_branches: bool = True,
                   max_branches: int = 24, ds: float | None = None,
                   ds_max: float | None = None, max_steps: int = 3000, tol: float = 1e-11,
                   stability_tol: float = 1e-6, label_tol: float = 1e-6,
                   n_random: int = 48, seed: int = 0,
                   include_unrealisable: bool = False) -> BifurcationDiagram:
    """The bifurcation diagram of the fixed points in ``[start, stop]`` of one parameter.

    seeds : ``(p, y)`` pairs to start from; default: every fixed point found by
        :func:`find_fixed_points` (``n_random`` random starts, ``seed``) at each value of
        ``seed_values`` (default: start, midpoint, stop).  Unrealisable fixed points are not
        used as seeds unless ``include_unrealisable``.
    switch_branches : follow the second branch at every branch point found.
    max_branches : cap on the number of branches.

    Returns a :class:`BifurcationDiagram`; every branch carries its eigenvalues, stability,
    labels and located special points.
    """
    sys, p_lo, p_hi, ds, ds_max, y_scale = _setup(model, pmap, start, stop, ds, ds_max,
                                                  stability_tol, label_tol,
                                                  include_unrealisable)
    if isinstance(max_branches, bool) or not isinstance(max_branches, int) or max_branches < 1:
        raise ValueError(f"max_branches: must be an integer >= 1, got {max_branches!r}")
    ds_min = 1e-9 * y_scale
    kw = dict(p_lo=p_lo, p_hi=p_hi, ds=ds, ds_min=ds_min, ds_max=ds_max, max_steps=max_steps,
              tol=tol, y_max=1e3 * y_scale)
    if seeds is None:
        values = [start, 0.5 * (start + stop), stop] if seed_values is None else list(seed_values)
        seeds = []
        for v in values:
            v = pmap.check(v, "seed_values")
            beta, theta = pmap(v)
            fps = find_fixed_points(model, beta, theta, n_random=n_random, seed=seed,
                                    include_unrealisable=include_unrealisable)
            seeds.extend((not fp.stability.stable, v, fp.y) for fp in fps)
        # stable points first (at every seed value), so that a cap on the number of branches
        # keeps the attractors' branches
        seeds = [(v, y) for _, v, y in sorted(seeds, key=lambda s: s[0])]
    branches: list[Branch] = []
    polylines: list[np.ndarray] = []
    on_tol = 0.02 * y_scale

    def known(x: np.ndarray, tol_: float) -> bool:
        return any(_dist_to_polyline(x, P) < tol_ for P in polylines)

    def add(xs: list, ts: list, specials: list, status: str, origin: str) -> None:
        if len(xs) < 2:
            return
        b = _assemble(sys, xs, ts, specials, status, origin)
        branches.append(b)
        polylines.append(np.array(xs))

    for p0, y0 in seeds:
        if len(branches) >= max_branches:
            break
        beta, theta = pmap(p0)
        r = newton(sys.rhs, sys.jac, sys.layout.fix_gauge(np.asarray(y0, float)), beta, theta,
                   basis=sys.B, tol=1e-10)
        if not r.converged:
            continue
        x0 = sys.snap(sys.x(r.y, p0), tol)
        if known(x0, on_tol):
            continue
        t0 = sys.initial_tangent(x0, 1e-4 * (p_hi - p_lo), tol)
        fwd = _trace(sys, x0, t0, **kw)
        back = _trace(sys, x0, -t0, **kw)
        xs, ts, specials, status = _join(back, fwd)
        add(xs, ts, specials, status, f"seed at {pmap.name} = {p0:.6g}")

    if switch_branches:
        done_bps: list[np.ndarray] = []
        i_branch = 0
        while i_branch < len(branches) and len(branches) < max_branches:
            b = branches[i_branch]
            i_branch += 1
            for sp in b.branch_points():
                if len(branches) >= max_branches:
                    break
                xb = sys.x(sp.y, sp.p)
                if any(np.linalg.norm(xb - q) < 1e-6 * y_scale for q in done_bps):
                    continue
                done_bps.append(xb)
                N = _null_space(sys, xb)          # (k, n + 1), k = 2 at a simple branch point
                t = N.T @ (N @ sp.tangent)
                t /= np.linalg.norm(t)
                # directions of the null space orthogonal to the branch's own tangent
                c = N @ t
                _, _, W = np.linalg.svd(c[None, :])
                others = [N.T @ w for w in W[1:]]
                delta = 0.5 * ds
                for d in [sgn * o / np.linalg.norm(o) for o in others for sgn in (1.0, -1.0)]:
                    if len(branches) >= max_branches:
                        break
                    x1, ok, _ = sys.correct(xb + delta * d, d, tol, max_iter=15)
                    if not ok or known(x1, 0.2 * delta):
                        continue
                    if not include_unrealisable and sys.gram_min(x1) < -_PSD_TOL:
                        continue
                    if not (p_lo <= sys.p(x1) <= p_hi):
                        continue
                    t1 = sys.tangent(x1, d)
                    tr = _trace(sys, x1, t1, **kw)
                    xs = [xb] + tr.xs
                    ts = [d] + tr.ts
                    specials = [("branch_point", 0, xb, d)]
                    specials += [(k, i + 1, x, tt) for k, i, x, tt in tr.specials]
                    add(xs, ts, specials, f"branch point | {tr.status}",
                        f"branch point at {pmap.name} = {sp.p:.6g}")
    return BifurcationDiagram(pmap.name, float(start), float(stop), tuple(branches),
                              tuple(sys.layout.state_names))
