"""Fixed points of the reduced gradient flow: damped Newton from many starts.

Problem: find all ``y`` (n,) with ``f(y) = 0``, ``f = rhs(., beta, theta)`` the compiled vector
field of the reduced flow (DESIGN.md section 2), together with their linear stability
(:mod:`solvers.stability`), realisability and, for the mode-collapse question, a label.

Method
------
1. **Coordinates.** Newton works on the physical subspace ``V = {y : R N = 0, sum alpha = 0}``
   (basis ``B`` (n, n_red), :func:`solvers.stability.reduced_basis`): N spans the null space of
   T (unrealisable directions removed when the target means are linearly dependent) and
   ``sum alpha = 0`` fixes the weight gauge (``alpha -> alpha + c`` leaves w = softmax(alpha)
   and hence f unchanged, so the full Jacobian is singular with trainable weights).  In
   ``y = B z`` the system is ``F(z) = B^T f(B z) = 0`` with the non-singular Jacobian
   ``B^T J B`` (J the analytic Jacobian of the compiled model).  Starts are projected onto V
   (``fix_gauge`` and, for rank-deficient T, the orthogonal projection of R).
2. **Damped Newton**: ``dz = -(B^T J B)^{-1} F`` (least squares if singular), the step capped
   at ``max_step`` in max-norm, then backtracking (halving) until the Armijo condition
   ``|F(z + lam dz)|^2 <= (1 - 1e-4 lam) |F(z)|^2`` holds (down to lam = 2^-12, after which the
   start is abandoned).  Iterations stop at ``|F|_inf <= 1e-3 tol`` (polishing) or when the
   step no longer reduces the residual.
3. **Fallback**: starts where Newton fails go to ``scipy.optimize.root`` (MINPACK hybrid
   method ``hybr`` with the analytic Jacobian), followed by two Newton polishing steps.
4. A solution is accepted when ``max_i |f_i(y)| < tol`` (default 1e-10) for the *full* vector
   field.
5. **Deduplication**: solutions closer than ``dedup_tol * (1 + |y|_inf)`` in max-norm are the
   same fixed point (the first one found is kept, ``hits`` counts the starts that reached it).
   Near a singular Jacobian (a degenerate root at a bifurcation, where Newton converges only
   linearly) solutions closer than ``merge_tol * (1 + |y|_inf)`` are merged as well.
   Converged points that nearly lie on an invariant subspace (coinciding components,
   R = 0) are moved onto it exactly when the residual stays below tol
   (:func:`snap_to_invariant`): at degenerate roots this removes the ~1e-6 offsets Newton
   leaves along a neutral direction.
6. **Realisability**: ``y`` is realisable in some R^d iff the joint Gram matrix
   ``[[T, R^T], [R, Q]]`` ((K + M) x (K + M)) is positive semi-definite.  Its smallest
   eigenvalue, relative to ``max(1, max |entry|)``, is reported; fixed points with a value
   below ``-psd_tol`` are discarded unless ``include_unrealisable``.
7. **Symmetries**: the signed permutations ``Q_kl -> Q_{s(k) s(l)}``,
   ``R_ka -> sign R_{s(k) t(a)}``, ``alpha_k -> alpha_{s(k)}`` (s permuting components, t
   modes) under which f is equivariant at the given parameters are detected numerically
   (``f(g y) = g f(y)`` at random realisable states); symmetric copies of a fixed point get
   the same ``orbit`` number.  For the symmetric bimodal preset all 8 candidates pass; on
   realisable states (``R_k2 = -R_k1``) the mode swap and the sign flip act identically, so
   they form 4 distinct maps (component swap x ``R -> -R``).
   Missing fixed points whose symmetric images were found are added (``hits = 0``).
8. **Trainable weights**: besides the gauge (item 1), two more neutral directions occur.
   Coinciding components form one Gaussian whose total weight alone matters (the split is
   neutral: snapped to equal shares), and a component whose weight vanishes stops moving
   (its flow is proportional to w_k), so states with ``w_k < dead_weight`` pass the residual
   test wherever that component sits: these "fixed points at alpha_k = -infinity" (the
   vanishing-weight mechanism) are deduplicated on their live components and listed with
   ``FixedPoint.vanishing``; their zero eigenvalues make them non-hyperbolic.
9. **Idle components** (plateaus): a component that receives no responsibility anywhere the
   objective looks (the forward KL's E_{p_beta}[rho_k] ~ e^{-100} for a component far from
   p_beta) has a flow that is flat in its own statistics to machine precision, so a whole
   continuum of such states passes the residual test.  They are not fixed points but
   plateaus "at infinity".  :func:`idle_components` detects them from the Jacobian: every
   row and column of the component's entries (``Q_k.``, ``Q_.k``, ``R_k.``, ``alpha_k``) below
   ``idle_tol * max(1, max |J|)``.  They are deduplicated on their live components (one
   representative per configuration of the others), labelled from the live components
   only, and listed with ``FixedPoint.idle``.

Labels (DESIGN.md section 3)
----------------------------
Component k is assigned to ``argmin_a (Q_kk - 2 R_ka + T_aa)`` = argmin_a |m_k - mu_a|^2.
Checks in this order: ``symmetric`` if ``max |R_ka| <= label_tol * max(1, max |T|)``
(R = 0: every component is orthogonal to every mean, the assignment is decided by T_aa
alone and carries no information, so this check comes first); otherwise ``split`` if every
mode receives a component, else ``collapsed``.  With trainable weights, components whose
weight is below ``weight_threshold`` do not count; a state whose means cover every mode but
only thanks to such components is ``collapsed`` with ``mechanism = 'vanishing_weight'``
(otherwise 'mean_alignment').  For K = M = 2 these are the three labels of the issue:
collapsed (both components on one mode), split (one per mode), symmetric (on R = 0).

Module map: Newton (items 2-4) is :mod:`solvers.newton`; the geometry of the state space
(physical subspace, realisability, invariant subspaces, symmetries: items 1, 5-7) is
:mod:`solvers.geometry`; this module orchestrates them (starts, deduplication, labels,
orbits) and re-exports the moved names.

Solvers never import SymPy: the ``model`` argument follows
:class:`solvers.model.CompiledModelProtocol` (``rhs``, ``jac``, ``structure``,
``state_names``, optionally ``objective``) -- e.g. the ``CompiledModel`` of
``derivations.compile_model`` or a :class:`ModelFunctions`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import (
    StateSymmetry,
    find_symmetries,
    gram_min_eigenvalue,
    invariant_constraints,
    is_realisable,
    merge_coincident,
    project_to_subspace,
    realise,
    reduced_basis,
    restricted_jacobian,
    subspace_basis,
    zero_R,
)
from .geometry import factor_T as _factor_T  # noqa: F401 (former home)
from .geometry import random_realisable_states as _random_realisable_states  # noqa: F401
from .geometry import state_symmetry as _state_symmetry  # noqa: F401
from .layout import StateLayout
from .model import ModelFunctions, evaluate_jacobian, evaluate_rhs, require_model
from .newton import NewtonResult, newton, polish_in_subspace
from .newton import check_beta as _check_beta
from .stability import Stability, spectrum

__all__ = [
    "ModelFunctions",
    "NewtonResult",
    "FixedPoint",
    "FixedPointSet",
    "StateSymmetry",
    "newton",
    "find_fixed_points",
    "analyse_state",
    "idle_components",
    "component_indices",
    "default_starts",
    "find_symmetries",
    "assign_modes",
    "label_state",
    "gram_min_eigenvalue",
    "is_realisable",
    "realise",
    "project_to_subspace",
    "snap_to_invariant",
    "invariant_constraints",
    "subspace_basis",
]


def _model_parts(model: Any) -> tuple[Callable, Callable, StateLayout, Callable | None]:
    """(rhs, jac, layout, objective or None) of a model (:func:`solvers.model.require_model`)."""
    layout = require_model(model, need_jac=True)
    objective = getattr(model, "objective", None)
    return model.rhs, model.jac, layout, objective


def assign_modes(Q: Any, R: Any, T: Any) -> np.ndarray:
    """Nearest target mode of each component: ``argmin_a (Q_kk - 2 R_ka + T_aa)``, (M,) int."""
    Q, R, T = (np.asarray(x, float) for x in (Q, R, T))
    d2 = np.diag(Q)[:, None] - 2.0 * R + np.diag(T)[None, :]
    return np.argmin(d2, axis=1)


def label_state(Q: Any, R: Any, T: Any, *, weights: Any = None, weight_threshold: float = 1e-3,
                label_tol: float = 1e-6) -> tuple[str, str | None]:
    """``(label, mechanism)`` of a state; label in {'symmetric', 'split', 'collapsed'}.

    See the module docstring for the rules; ``mechanism`` is None unless the label is
    'collapsed', then 'mean_alignment' or 'vanishing_weight'.
    """
    Q, R, T = (np.asarray(x, float) for x in (Q, R, T))
    scale = max(1.0, float(np.max(np.abs(T))))
    if float(np.max(np.abs(R))) <= label_tol * scale:
        return "symmetric", None
    assign = assign_modes(Q, R, T)
    K = T.shape[0]
    covered_all = set(assign.tolist()) == set(range(K))
    if weights is not None:
        w = np.asarray(weights, float)
        live = w >= weight_threshold
        covered_live = set(assign[live].tolist()) == set(range(K))
    else:
        covered_live = covered_all
    if covered_live:
        return "split", None
    return "collapsed", ("vanishing_weight" if covered_all else "mean_alignment")


def default_starts(layout: StateLayout, theta: Any, n_random: int = 48,
                   rng: np.random.Generator | int | None = 0) -> np.ndarray:
    """Realisable starting states (n_starts, n) for the multi-start Newton search.

    Built from explicit vectors in R^D, D = K + M + 1 (target means mu from a factorisation
    of T): every assignment of components to modes (m_k = c mu_{a_k} with c in {1, 0.5},
    plus a small spread so components on one mode do not coincide, and with c alternating
    1.3, 0.6 along the components), all components at the
    origin, components on +-r along a direction orthogonal to the means, and ``n_random``
    random configurations (random convex combinations of the means plus isotropic noise of
    random scale).  Logits (trainable weights): 0, and random for the random starts.
    """
    theta = layout.check_theta(theta)
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 0:
        raise ValueError(f"n_random: must be an integer >= 0, got {n_random!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    K, M = layout.K, layout.M
    T = layout.T(theta)
    D = K + M + 1
    mu = np.zeros((K, D))
    mu[:, :K] = _factor_T(T)
    scale = math.sqrt(max(1.0, float(np.max(np.diag(T)))))
    perp = np.zeros((M, D))
    for k in range(M):
        perp[k, K + k] = 1.0
    starts: list[np.ndarray] = []

    def add(m: np.ndarray, alpha: np.ndarray | None = None, log_s: float | None = None) -> None:
        # tied variances: structured starts at s = 1 (log_s = 0), random ones at random s
        starts.append(layout.pack(m @ m.T, m @ mu.T, alpha, log_s=log_s))

    assignments = itertools.product(range(K), repeat=M)
    for count, assign in enumerate(assignments):
        if count >= 256:
            break
        for c in (1.0, 0.5):
            m = np.array([c * mu[a] for a in assign]) + 0.1 * scale * perp
            add(m)
        # components of one mode spread along its mean (one beyond it, one inside)
        m = np.array([(1.3 if k % 2 == 0 else 0.6) * mu[a] for k, a in enumerate(assign)])
        add(m + 0.05 * scale * perp)
    add(np.zeros((M, D)))
    for r in (0.3, 1.0, 2.0):
        m = np.zeros((M, D))
        for k in range(M):
            m[k, K] = r * scale * (1 if k % 2 == 0 else -1) * (1 + k // 2)
        add(m)
    for _ in range(n_random):
        c = rng.dirichlet(np.ones(K), size=M) * rng.choice([-1.0, 1.0], size=(M, 1))
        m = c @ mu + rng.normal(size=(M, D)) * scale * rng.choice([0.05, 0.3, 1.0])
        alpha = rng.normal(size=M) if layout.train_weights else None
        log_s = rng.normal() if layout.log_s_index is not None else None
        add(m, None if alpha is None else alpha - alpha.mean(), log_s)
    return np.array(starts)


@dataclass(frozen=True, eq=False)
class FixedPoint:
    """One fixed point ``f(y) = 0`` of the reduced flow at (beta, theta).

    y : (n,) state (gauge fixed: sum alpha = 0).  Q (M, M), R (M, K), alpha (M,) or None,
    w (M,) mixture weights.  residual : ``max |f(y)|``.  stability : :class:`Stability` on the
    physical subspace.  label, mechanism : see the module docstring.  assignment : (M,)
    nearest mode (0-based) of each component.  realisable, gram_min_eig : PSD test of the
    joint Gram matrix.  objective : F(y) (state-dependent part) if the model provides it.
    orbit : index of its symmetry orbit in the set.  hits : starts that converged to it.
    vanishing : components (0-based) whose weight is below ``dead_weight`` (trainable
    weights; a fixed point "at infinity" whose dead components' means are arbitrary).
    s : the common component variance at the fixed point (fixed: the parameter; tied: the
    state exp(log_s); adiabatic: s*(beta)).
    idle : components (0-based) on which the flow is flat (:func:`idle_components`; a
    plateau, not an isolated fixed point: the idle components' statistics are arbitrary).
    """

    y: np.ndarray
    beta: float
    Q: np.ndarray
    R: np.ndarray
    alpha: np.ndarray | None
    w: np.ndarray
    residual: float
    stability: Stability
    label: str
    mechanism: str | None
    assignment: tuple[int, ...]
    realisable: bool
    gram_min_eig: float
    objective: float | None = None
    orbit: int = -1
    hits: int = 1
    vanishing: tuple[int, ...] = ()
    s: float | None = None
    idle: tuple[int, ...] = ()

    @property
    def stable(self) -> bool:
        return self.stability.stable

    @property
    def kind(self) -> str:
        return self.stability.kind

    @property
    def eigenvalues(self) -> np.ndarray:
        return self.stability.eigenvalues

    @property
    def n_unstable(self) -> int:
        return self.stability.n_unstable

    def to_dict(self) -> dict:
        """JSON-friendly summary (eigenvalues as [re, im] pairs, matrices as nested lists)."""
        d = {
            "label": self.label,
            "stable": bool(self.stable),
            "kind": self.kind,
            "n_unstable": int(self.n_unstable),
            "eigenvalues": [[float(e.real), float(e.imag)] for e in self.eigenvalues],
            "Q": self.Q.tolist(),
            "R": self.R.tolist(),
            "w": self.w.tolist(),
            "assignment": [int(a) + 1 for a in self.assignment],
            "residual": float(self.residual),
            "realisable": bool(self.realisable),
            "gram_min_eig": float(self.gram_min_eig),
            "objective": None if self.objective is None else float(self.objective),
            "orbit": int(self.orbit),
            "hits": int(self.hits),
            "beta": float(self.beta),
            "state": self.y.tolist(),
        }
        if self.s is not None:
            d["s"] = float(self.s)
        if self.mechanism is not None:
            d["mechanism"] = self.mechanism
        if self.vanishing:
            d["vanishing_weight_components"] = [int(k) + 1 for k in self.vanishing]
        if self.idle:
            d["idle_components"] = [int(k) + 1 for k in self.idle]
        if self.alpha is not None:
            d["alpha"] = self.alpha.tolist()
        return d


@dataclass(frozen=True, eq=False)
class FixedPointSet:
    """All fixed points found at one parameter point, sorted (stable first, then by unstable
    dimension, then by objective).  Iterable and indexable like a tuple of FixedPoint.

    n_starts / n_converged : starts tried / converged (before deduplication).
    n_unrealisable : distinct converged fixed points discarded as not realisable.
    symmetries : the detected state symmetries (identity first).
    """

    points: tuple[FixedPoint, ...]
    beta: float
    theta: np.ndarray
    n_starts: int
    n_converged: int
    n_unrealisable: int
    symmetries: tuple[StateSymmetry, ...] = field(default=(), repr=False)

    def __iter__(self) -> Iterator[FixedPoint]:
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> FixedPoint:
        return self.points[i]

    def stable(self) -> list[FixedPoint]:
        return [p for p in self.points if p.stable]

    def with_label(self, label: str) -> list[FixedPoint]:
        return [p for p in self.points if p.label == label]


def component_indices(layout: StateLayout, k: int, own: bool = False) -> np.ndarray:
    """Positions in y of component k's entries (0-based k): ``Q_k_l``, ``Q_l_k``, ``R_k_a``,
    ``alpha_k`` (names of :mod:`derivations.spec`, 1-based); ``own=True``: only those that
    move with m_k alone (``Q_k_k``, ``R_k_a``, ``alpha_k``)."""
    tag = str(k + 1)
    idx = []
    for i, name in enumerate(layout.names):
        parts = name.split("_")
        if parts[0] == "Q":
            hit = parts[1] == parts[2] == tag if own else tag in parts[1:3]
        else:
            hit = parts[0] in ("R", "alpha") and parts[1] == tag
        if hit:
            idx.append(i)
    return np.array(idx, dtype=np.int64)


def idle_components(J: np.ndarray, layout: StateLayout, idle_tol: float = 1e-9
                    ) -> tuple[int, ...]:
    """Components (0-based) on which the flow is flat: m_k does not move to first order and
    nothing else depends on it.

    With ``I_k`` = all of k's entries and ``O_k`` = its own ones (:func:`component_indices`),
    k is idle when ``max |J[O_k, :]|`` (dQ_kk/dt = 2 m_k . dm_k/dt and dR_ka/dt = mu_a .
    dm_k/dt vanish) and ``max |J[not I_k, I_k]|`` (the other components do not feel k) are
    both ``<= idle_tol * max(1, max |J|)``.  The cross entries Q_kl do move, with m_l.  J : (n,
    n) Jacobian of the flow.  Example: a forward-KL component with no responsibility under
    p_beta.  With the reverse KL no component is idle at finite weight: the entropy acts on
    each component (G_kk contains w_k beta / Delta)."""
    J = np.asarray(J, dtype=float)
    scale = idle_tol * max(1.0, float(np.max(np.abs(J))) if J.size else 1.0)
    out = []
    for k in range(layout.M):
        I = component_indices(layout, k)
        O = component_indices(layout, k, own=True)
        rest = np.setdiff1d(np.arange(J.shape[0]), I)
        if O.size and float(np.max(np.abs(J[O, :]))) <= scale and (
                rest.size == 0 or float(np.max(np.abs(J[np.ix_(rest, I)]))) <= scale):
            out.append(k)
    return tuple(out)


def analyse_state(model: Any, y: Any, beta: float, theta: Any, *,
                  basis: np.ndarray | None = None, stability_tol: float = 1e-6,
                  label_tol: float = 1e-6, weight_threshold: float = 1e-3,
                  idle_tol: float = 1e-9) -> FixedPoint:
    """Residual, stability, label and realisability of a state y (n,) (a FixedPoint record).

    Does not solve anything: y should already be a fixed point (see ``residual``).  Idle
    components (:func:`idle_components`) are left out of the label.
    """
    rhs, jac, layout, objective = _model_parts(model)
    beta = _check_beta(beta)
    theta = layout.check_theta(theta)
    y = layout.fix_gauge(layout.check_state(y))
    B = reduced_basis(layout, theta) if basis is None else basis
    res = float(np.max(np.abs(evaluate_rhs(rhs, y, beta, theta))))
    J = evaluate_jacobian(jac, y, beta, theta)
    stab = spectrum(restricted_jacobian(J, B), B, stability_tol)
    Q, R, alpha = layout.unpack(y)
    T = layout.T(theta)
    w = layout.weights(y, theta)
    idle = idle_components(J, layout, idle_tol) if layout.M > 1 else ()
    live = np.setdiff1d(np.arange(layout.M), np.array(idle, dtype=np.int64))
    if idle and live.size:
        label, mech = label_state(Q[np.ix_(live, live)], R[live], T,
                                  weights=w[live] if layout.train_weights else None,
                                  weight_threshold=weight_threshold, label_tol=label_tol)
    else:
        label, mech = label_state(Q, R, T, weights=w if layout.train_weights else None,
                                  weight_threshold=weight_threshold, label_tol=label_tol)
    gmin = gram_min_eigenvalue(Q, R, T)
    obj = None
    if objective is not None:
        try:
            obj = float(objective(np.ascontiguousarray(y), beta, theta))
        except Exception:  # objective not generated / failed: optional information
            obj = None
    return FixedPoint(y=y, beta=beta, Q=Q, R=R, alpha=alpha, w=w, residual=res, stability=stab,
                      label=label, mechanism=mech,
                      assignment=tuple(int(a) for a in assign_modes(Q, R, T)),
                      realisable=bool(gmin >= -1e-8), gram_min_eig=gmin, objective=obj,
                      s=float(layout.variance(y, beta, theta)), idle=idle)


def _live_key(fp: FixedPoint, idle: tuple[int, ...]) -> np.ndarray:
    live = np.setdiff1d(np.arange(fp.Q.shape[0]), np.array(idle, dtype=np.int64))
    return np.concatenate([fp.Q[np.ix_(live, live)].ravel(), fp.R[live].ravel(), fp.w[live]])


def _same(y1: np.ndarray, y2: np.ndarray, tol: float) -> bool:
    return float(np.max(np.abs(y1 - y2))) <= tol * (1.0 + max(float(np.max(np.abs(y1))),
                                                              float(np.max(np.abs(y2)))))


def _relaxed(rhs: Any, starts: np.ndarray, beta: float, theta: np.ndarray,
              t_relax: float) -> np.ndarray:
    """End points of the gradient flow at constant beta from every start (finite ones)."""
    from derivations.spec import ConstantSchedule

    from .ensemble import run_ensemble
    run = run_ensemble(rhs, starts, (0.0, t_relax), theta, schedule=ConstantSchedule(beta),
                       rtol=1e-8, atol=1e-10, max_steps=20_000, progress=False)
    Z = run.Z_final[:, :starts.shape[1]]
    return Z[np.all(np.isfinite(Z), axis=1)]


def find_fixed_points(model: Any, beta: float, theta: Any, *, starts: Any = None,
                      n_random: int = 48, seed: int = 0, tol: float = 1e-10,
                      include_unrealisable: bool = False, psd_tol: float = 1e-8,
                      dedup_tol: float = 1e-7, merge_tol: float = 1e-4,
                      stability_tol: float = 1e-6,
                      label_tol: float = 1e-6, weight_threshold: float = 1e-3,
                      dead_weight: float = 1e-6, use_symmetries: bool = True,
                      max_iter: int = 60, relax_time: float = 200.0) -> FixedPointSet:
    """All fixed points reachable from many starts, with stability, labels and orbits.

    Parameters
    ----------
    model : object with ``rhs``, ``jac``, ``structure`` (and optionally ``objective``).
    beta : inverse temperature (> 0).  theta : (p,) parameter vector (``spec.theta()``).
    starts : (n_starts, n) starting states; default :func:`default_starts` with
        ``n_random`` random ones (seed ``seed``).  Extra starts can be appended by the caller.
    tol : acceptance threshold on ``max |f(y)|``.
    include_unrealisable : keep fixed points whose joint Gram matrix is not PSD
        (smallest relative eigenvalue < -psd_tol); they are flagged ``realisable=False``.
    dedup_tol : relative max-norm distance below which two solutions are the same point.
    merge_tol : larger distance below which solutions are merged when the Jacobian is
        nearly singular there (degenerate roots, see :func:`_merge_degenerate`).
    use_symmetries : detect the symmetry group, assign orbits and add symmetric images.
    dead_weight : (trainable weights) components with w_k below this are "dead": the flow
        of their mean is proportional to w_k, so every position passes the residual test
        (fixed points at alpha_k -> -infinity, the vanishing-weight mechanism).  Such points
        are compared on their live components only (one representative per configuration
        of the live components) and listed in ``FixedPoint.vanishing``.
    relax_time : every start is also carried along the gradient flow ``dy/dt = f(y, beta)``
        for this long (gradient-flow time units) and its end point used as a further start.
        Stable fixed points attract, so this finds those whose Newton basins the structured
        starts miss (e.g. the stable collapsed states at A = 15, beta = 1); 0 disables it.

    Returns a :class:`FixedPointSet`.  Every returned point has ``residual < tol``.
    """
    rhs, jac, layout, _ = _model_parts(model)
    beta = _check_beta(beta)
    theta = layout.check_theta(theta)
    if starts is None:
        starts = default_starts(layout, theta, n_random, seed)
    else:
        starts = np.asarray(starts, dtype=float)
        if starts.ndim == 1:
            starts = starts[None, :]
        if starts.ndim != 2 or starts.shape[1] != layout.n_state:
            raise ValueError(f"starts: must have shape (n_starts, {layout.n_state}), "
                             f"got {starts.shape}")
        if not np.all(np.isfinite(starts)):
            raise ValueError("starts: must be finite")
    relax_time = float(relax_time)
    if not (relax_time >= 0 and math.isfinite(relax_time)):
        raise ValueError(f"relax_time: must be a finite number >= 0, got {relax_time}")
    if relax_time > 0:
        starts = np.concatenate([starts, _relaxed(rhs, starts, beta, theta, relax_time)])
    B = reduced_basis(layout, theta)

    def canon(y: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
        # with vanishing weights the dead components' means are arbitrary (their gradient is
        # proportional to their weight): compare live components and weights only
        if not layout.train_weights:
            return (), y
        w = layout.weights(y, theta)
        dead = w < dead_weight
        if not dead.any():
            return (), y
        Q, R, _ = layout.unpack(y)
        live = ~dead
        return (tuple(np.flatnonzero(dead).tolist()),
                np.concatenate([Q[np.ix_(live, live)].ravel(), R[live].ravel(), w]))

    def same(a: np.ndarray, b: np.ndarray, tol_: float) -> bool:
        (da, va), (db, vb) = canon(a), canon(b)
        return da == db and va.shape == vb.shape and _same(va, vb, tol_)

    sols: list[np.ndarray] = []
    hits: list[int] = []
    n_conv = 0
    for y0 in starts:
        res = newton(rhs, jac, layout.fix_gauge(y0), beta, theta, basis=B, tol=tol,
                     max_iter=max_iter)
        if not res.converged:
            continue
        n_conv += 1
        y = snap_to_invariant(rhs, jac, layout, layout.fix_gauge(res.y), beta, theta, tol, B)
        for i, s in enumerate(sols):
            if same(y, s, dedup_tol):
                hits[i] += 1
                break
        else:
            sols.append(y)
            hits.append(1)

    symmetries: list[StateSymmetry] = []
    if use_symmetries:
        symmetries = find_symmetries(rhs, layout, beta, theta)
        # add missing symmetric images (verified by a Newton polish from the image)
        for i in range(len(sols)):
            for g in symmetries[1:]:
                img = g(sols[i])
                if any(same(img, s, dedup_tol) for s in sols):
                    continue
                r = newton(rhs, jac, img, beta, theta, basis=B, tol=tol, max_iter=5,
                           fallback=False)
                if r.converged:
                    sols.append(layout.fix_gauge(r.y))
                    hits.append(0)

    sols, hits = _merge_degenerate(rhs, jac, sols, hits, beta, theta, B, merge_tol, same)

    points: list[FixedPoint] = []
    n_unreal = 0
    for y, h in zip(sols, hits):
        fp = analyse_state(model, y, beta, theta, basis=B, stability_tol=stability_tol,
                           label_tol=label_tol, weight_threshold=weight_threshold)
        realisable = fp.gram_min_eig >= -psd_tol
        if not realisable:
            n_unreal += 1
            if not include_unrealisable:
                continue
        vanishing: tuple[int, ...] = ()
        if layout.train_weights:
            vanishing = tuple(int(k) for k in np.flatnonzero(fp.w < dead_weight))
        idle = tuple(k for k in fp.idle if k not in vanishing)
        if idle:
            # a plateau: the idle components' statistics are arbitrary; keep one
            # representative per configuration of the live ones
            key_i = _live_key(fp, idle)
            twin = next((j for j, q in enumerate(points)
                         if q.idle == idle and _same(_live_key(q, idle), key_i, dedup_tol)), None)
            if twin is not None:
                points[twin] = _replace(points[twin], hits=points[twin].hits + h)
                continue
        points.append(_replace(fp, hits=h, realisable=realisable, vanishing=vanishing,
                               idle=idle))

    # orbits
    orbit_of = [-1] * len(points)
    n_orbits = 0
    for i, p in enumerate(points):
        if orbit_of[i] >= 0:
            continue
        orbit_of[i] = n_orbits
        for g in symmetries[1:]:
            img = g(p.y)
            for j in range(i + 1, len(points)):
                if orbit_of[j] < 0 and same(img, points[j].y, dedup_tol):
                    orbit_of[j] = n_orbits
        n_orbits += 1
    points = [_replace(p, orbit=o) for p, o in zip(points, orbit_of)]

    def key(p: FixedPoint) -> tuple:
        return (not p.stable, p.n_unstable, p.objective if p.objective is not None else 0.0,
                p.orbit)

    points.sort(key=key)
    # renumber orbits in display order
    remap: dict[int, int] = {}
    for p in points:
        remap.setdefault(p.orbit, len(remap))
    points = [_replace(p, orbit=remap[p.orbit]) for p in points]
    return FixedPointSet(tuple(points), beta, theta.copy(), int(starts.shape[0]), n_conv,
                         n_unreal, tuple(symmetries))


def snap_to_invariant(rhs: Callable, jac: Callable, layout: StateLayout, y: Any, beta: float,
                      theta: Any, tol: float = 1e-10, basis: np.ndarray | None = None
                      ) -> np.ndarray:
    """Move a converged fixed point exactly onto the invariant subspace it nearly lies in.

    Two linear subspaces are invariant under the flow and contain many fixed points:
    coinciding components (``m_k = m_l``: ``Q_kk = Q_kl = Q_ll``, ``R_k. = R_l.``; with
    trainable weights only their total weight matters, and the representative splits it
    equally) and, for targets symmetric under ``mu -> -mu``, ``R = 0``.  At special
    parameters (``beta Delta = s``) the direction leaving the first one is exactly neutral
    (and with trainable weights the weight split of coinciding components always is);
    Newton then converges only linearly and stops at ``|m_k - m_l|^2 ~ 1e-6``, where the
    neutral eigenvalue is ~1e-8 with a random sign.  Each candidate projection (both snaps,
    then each alone) is polished by Newton steps restricted to its subspace and accepted
    when ``max |f| < tol``; otherwise y is returned unchanged.
    """
    y = np.asarray(y, dtype=float)
    theta = np.asarray(theta, dtype=float)
    B = reduced_basis(layout, theta) if basis is None else basis
    # The merge threshold must stay near Newton's floor (|m_k - m_l|^2 ~ 1e-6): genuine fixed
    # points with nearly coinciding components exist (A = 15, beta = 1: |m_1 - m_2|^2 = 0.01,
    # stable), and a looser threshold moved them onto the coincident saddle next to them.
    yc = merge_coincident(y, layout, theta, 1e-5)
    yr = zero_R(y, layout, 1e-6)
    ycr = zero_R(yc, layout, 1e-6) if yc is not None else None
    for cand in (ycr, yc, yr):
        if cand is None:
            continue
        cand = layout.fix_gauge(cand)
        N = subspace_basis(invariant_constraints(layout, cand, theta), B)
        if N is None:
            continue
        cand, res = polish_in_subspace(rhs, jac, cand, beta, theta, B, N, tol)
        if res < tol:
            return cand
    return y


def _merge_degenerate(rhs: Callable, jac: Callable, sols: list[np.ndarray], hits: list[int],
                      beta: float, theta: np.ndarray, B: np.ndarray, merge_tol: float,
                      same: Callable = _same) -> tuple[list[np.ndarray], list[int]]:
    """Merge solutions closer than ``merge_tol`` (relative) near a singular Jacobian.

    At a degenerate root (a bifurcation point, e.g. the zero state at beta = s / Delta for
    the symmetric bimodal preset) Newton converges only linearly and states at distance
    ~ residual^(1/2) or ^(1/3) from the root already pass the residual test, so strict
    deduplication would list one fixed point several times.  Two solutions are merged (the
    one with the smaller residual kept) when they are closer than ``merge_tol`` and the
    restricted Jacobian at either has a singular value below ``1e-3 max(1, |J|)``.
    """
    if len(sols) < 2 or merge_tol <= 0:
        return sols, hits
    res = [float(np.max(np.abs(evaluate_rhs(rhs, y, beta, theta)))) for y in sols]
    sing = []
    for y in sols:
        Jr = restricted_jacobian(evaluate_jacobian(jac, y, beta, theta), B)
        sv = np.linalg.svd(Jr, compute_uv=False) if Jr.size else np.ones(1)
        sing.append(bool(sv[-1] < 1e-3 * max(1.0, float(sv[0]))))
    order = sorted(range(len(sols)), key=lambda i: res[i])
    kept: list[int] = []
    new_hits: dict[int, int] = {}
    for i in order:
        for j in kept:
            if (sing[i] or sing[j]) and same(sols[i], sols[j], merge_tol):
                new_hits[j] += hits[i]
                break
        else:
            kept.append(i)
            new_hits[i] = hits[i]
    kept.sort()
    return [sols[i] for i in kept], [new_hits[i] for i in kept]


def _replace(fp: FixedPoint, **changes: Any) -> FixedPoint:
    from dataclasses import replace
    return replace(fp, **changes)

