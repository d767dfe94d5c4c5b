r"""Schedule design: minimise P(collapse) over annealing schedules with a time budget
(DESIGN.md section 8; issue 11 section 2).

Problem
-------
Given a problem (its schedule is replaced), a dimension d and a budget B, find a schedule of
one family whose annealing *ends by B* and whose collapse probability is smallest.  "Ends by B"
means ``schedule.settle_time(beta_tol) <= B`` (beta within ``beta_tol`` of 1 for good from
t = B on; ``beta_tol = 1e-3`` by default, the toolkit's settling rule), and the families are
parameterised so that this holds by construction:

``exponential``
    ``T(t) = 1 + (T0 - 1) e^{-t/tau}``, ``x = (log10 T0, f)``, ``tau = f B / ln((T0 - 1)(1 -
    tol)/tol)``: the settle time at ``tol`` is ``f B``.
``linear``
    linear in beta from ``1/T0`` to 1 at ``tau = f B``; ``x = (log10 T0, f)``.
``piecewise``
    ``n_stages`` constant stages then beta = 1 from ``t_n = D <= B`` on; first beta ``1/T0``,
    each next ``b_{i+1} = b_i + z_i (1 - b_i)``, ``z_i in [0, 1]`` (non-decreasing), stage
    durations by stick-breaking of D (``v_i in [0, 1]``); ``x = (log10 T0, z, f = D/B, v)``.
``free``
    monotone piecewise-linear beta(t) (:class:`~derivations.spec.TabulatedSchedule`) through
    ``n_knots`` knots ``(0, 1/T0), ..., (D, 1)``, ``D = f B``, betas and knot spacings
    parameterised as for ``piecewise``; linear interpolation keeps it monotone.

Every parameter lives in a box (``log10 T0 in [0, log10 T0_max]``, fractions in [0, 1]).
On the geometric path the base variance sigma0^2 of ``p0 = N(0, sigma0^2 I)`` can be searched
too (``base_variance = (lo, hi)``: one more parameter, ``log10 sigma0^2``).

Objective and accuracy
----------------------
``method="separatrix"`` (the default where it applies: the antipodal two-component problem with
fixed weights) evaluates the large-d formula with reduced accuracy during the search
(:data:`SEARCH_SEPARATRIX`, about 0.3 s per candidate at d = 1e3, budget 100) and re-evaluates
the optimum at the estimator's default accuracy; the result carries its numerical error bound.
``method="ode"`` uses the theory ensemble with common random numbers (every candidate the same
``search_draws`` initial states, ``seed``), so that differences between candidates are not
sampling noise, and re-evaluates the optimum with ``final_draws`` *fresh* draws (``seed + 1``):
the reported P and its Wilson interval are free of the selection bias of the minimum.

Optimiser
---------
1. A comparison grid of (T0, tau) cells of the ``grid_family`` (the family itself for linear
   and exponential; exponential for piecewise, linear for free): ``T0 in grid_T0``,
   ``tau`` the fractions ``grid_fractions`` of the longest tau the budget allows.
2. ``n_initial`` Latin-hypercube points of the box (seeded) plus the best grid cells translated
   into the family (a staircase for piecewise; the other families contain their grid),
   for piecewise and free the "hold, then jump" schedules (beta = :data:`HOLD_BETAS` until
   the budget, then 1), any ``initial`` schedules given, and when sigma0^2 is searched the
   best member so far at both ends of its range.
3. Multi-start bounded Nelder-Mead (:func:`scipy.optimize.minimize`): ``n_starts`` local
   searches, in turn, from the best evaluated points that are at least a tenth of the box
   apart in some coordinate (deterministic given ``seed``), each with an equal share of the
   evaluations left of ``max_evaluations``; or ``optimizer="differential-evolution"``
   (:func:`scipy.optimize.differential_evolution`, seeded, no polishing) on the same box.
   (At A = 9 the free family has two local optima a single search can stall between: the
   staircase of the best grid cell and "hold beta low, then jump".)
4. Final re-evaluation at full accuracy: separatrix (deterministic) re-evaluates the
   ``n_refine`` best candidates and keeps the smallest (the search values differ by less than
   their reduced-accuracy error near a flat optimum), and the best grid cell if the family
   contains it; ode re-evaluates the winner only, on
   fresh draws.  The best grid cell is re-evaluated the same way, for comparison.
Evaluations are counted (cache hits are not) and reported by stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from derivations.spec import (
    AnnealingPath,
    ExponentialSchedule,
    LinearSchedule,
    PiecewiseConstantSchedule,
    ProblemSpec,
    ScheduleBase,
    TabulatedSchedule,
    require_spec,
)

__all__ = ["FAMILIES", "N_STARTS", "SEARCH_SEPARATRIX", "DesignResult", "design_schedule", "pareto_front",
           "family_schedule", "schedule_parameters", "METHODS", "OPTIMIZERS"]

#: Schedule families the designer searches.
FAMILIES = ("exponential", "linear", "piecewise", "free")
#: Objective estimators: "auto" is separatrix where it applies, else ode.
METHODS = ("auto", "separatrix", "ode")
OPTIMIZERS = ("nelder-mead", "differential-evolution")
#: Reduced separatrix accuracy for the search (error bound ~1e-4 at d = 1e3).
SEARCH_SEPARATRIX = {"n_eps_per_decade": 4, "tol": 1e-3, "rel_tol": 1e-2, "n_coarse": 8}

#: Constant betas of the "hold, then jump to 1 at the budget" starts (piecewise, free).
HOLD_BETAS = (0.15, 0.3)

#: Default number of local searches for the piecewise and free families.
N_STARTS = 2

#: Shortest knot interval / stage kept, relative to the budget (shorter ones are merged).
_MIN_SPAN = 1e-9
#: Smallest annealing fraction f (tau > 0).
_F_MIN = 1e-3


# ----------------------------------------------------------------------------------------
# parameterisations
# ----------------------------------------------------------------------------------------

def _check_family(family: Any) -> str:
    if family not in FAMILIES:
        raise ValueError(f"family: must be one of {FAMILIES}, got {family!r}")
    return family


def _check_budget(budget: Any) -> float:
    if isinstance(budget, (bool, np.bool_, str)) or not isinstance(budget, (int, float,
                                                                               np.number)):
        raise ValueError(f"budget: must be a positive number, got {budget!r}")
    b = float(budget)
    if not (math.isfinite(b) and b > 0):
        raise ValueError(f"budget: must be a finite number > 0, got {budget!r}")
    return b


def _exp_log(T0: float, tol: float) -> float:
    """``ln((T0 - 1)(1 - tol)/tol)``: settle time of the exponential schedule over tau."""
    return math.log((T0 - 1.0) * (1.0 - tol) / tol) if T0 - 1.0 > tol / (1.0 - tol) else 0.0


def _dim(family: str, n_stages: int, n_knots: int) -> int:
    if family in ("exponential", "linear"):
        return 2
    n = n_stages if family == "piecewise" else n_knots - 1   # intervals before beta = 1
    return 2 * n


def _bounds(family: str, n_stages: int, n_knots: int, T0_max: float) -> list[tuple[float, float]]:
    dim = _dim(family, n_stages, n_knots)
    b = [(0.0, math.log10(T0_max))] + [(0.0, 1.0)] * (dim - 1)
    if family in ("exponential", "linear"):
        b[1] = (_F_MIN, 1.0)
    else:
        n = dim // 2
        b[n] = (_F_MIN, 1.0)                       # f = D / B
    return b


def _stick(v: Sequence[float]) -> np.ndarray:
    """Stick-breaking: fractions ``p_1 = v_1, p_2 = (1 - v_1) v_2, ...`` and the remainder
    (len(v) + 1 fractions summing to 1)."""
    out, rest = [], 1.0
    for x in v:
        out.append(rest * x)
        rest *= 1.0 - x
    out.append(rest)
    return np.array(out)


def _unstick(p: Sequence[float]) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    v, rest = [], 1.0
    for x in p[:-1]:
        v.append(float(np.clip(x / rest, 0.0, 1.0)) if rest > 0 else 0.0)
        rest -= x
    return np.array(v)


def _betas(b0: float, z: Sequence[float]) -> list[float]:
    out = [b0]
    for x in z:
        out.append(out[-1] + float(x) * (1.0 - out[-1]))
    return out


def family_schedule(family: str, x: Sequence[float], budget: float, *, beta_tol: float = 1e-3,
                    n_stages: int = 3, n_knots: int = 5) -> ScheduleBase:
    """The schedule of ``family`` at parameter vector ``x`` (the box of the module docstring;
    values outside it are clipped).  Its annealing ends by ``budget`` by construction."""
    family, budget = _check_family(family), _check_budget(budget)
    bounds = _bounds(family, n_stages, n_knots, 10.0 ** 9)
    x = np.asarray(x, dtype=float)
    if x.shape != (len(bounds),):
        raise ValueError(f"x: the {family} family has {len(bounds)} parameters, got shape "
                         f"{x.shape}")
    x = np.array([min(max(v, lo), hi) for v, (lo, hi) in zip(x, bounds)])
    T0 = 10.0 ** x[0]
    if family == "exponential":
        L = _exp_log(T0, beta_tol)
        tau = x[1] * budget / L if L > 0 else x[1] * budget
        return ExponentialSchedule(T0, tau * (1.0 - 1e-12))
    if family == "linear":
        return LinearSchedule(T0, x[1] * budget)
    n = len(x) // 2
    z, f, v = x[1:n], x[n], x[n + 1:]
    D = f * budget
    ts = np.concatenate([[0.0], D * np.cumsum(_stick(v))])    # n + 1 times, last = D
    ts[-1] = D
    if family == "piecewise":
        betas = _betas(1.0 / T0, z) + [1.0]                     # n stages + the final one
        # stage i lasts [ts[i], ts[i + 1]); drop empty stages
        keep_b, keep_t = [betas[0]], []
        for i in range(1, n + 1):
            if ts[i] - (keep_t[-1] if keep_t else 0.0) > _MIN_SPAN * budget:
                keep_t.append(float(ts[i]))
                keep_b.append(betas[i])
            else:
                keep_b[-1] = betas[i]
        return PiecewiseConstantSchedule(betas=tuple(keep_b), breakpoints=tuple(keep_t))
    betas = _betas(1.0 / T0, z) + [1.0]                         # n + 1 knots
    kt, kb = [0.0], [betas[0]]
    for i in range(1, n + 1):
        if ts[i] - kt[-1] > _MIN_SPAN * budget:
            kt.append(float(ts[i]))
            kb.append(betas[i])
        else:
            kb[-1] = betas[i]
    if len(kt) == 1:                                            # everything at t = 0
        kt.append(_MIN_SPAN * budget * 2)
        kb.append(1.0)
    kb[-1] = 1.0
    return TabulatedSchedule(times=tuple(kt), betas=tuple(kb))


def schedule_parameters(family: str, schedule: ScheduleBase, budget: float, *,
                        beta_tol: float = 1e-3, n_stages: int = 3, n_knots: int = 5,
                        T0_max: float = 1e3) -> np.ndarray | None:
    """A parameter vector of ``family`` whose schedule equals (exponential, linear, and free
    from a linear schedule) or approximates ``schedule``; None if the schedule does not end by
    the budget.  Used to start the search from a grid cell or a user's schedule."""
    budget = _check_budget(budget)
    if schedule.beta_final != 1.0 or schedule.settle_time(beta_tol) > budget * (1 + 1e-9):
        return None
    b0 = float(schedule.beta(0.0))
    lt0 = float(np.clip(math.log10(1.0 / b0), 0.0, math.log10(T0_max)))
    if family == "exponential" and isinstance(schedule, ExponentialSchedule):
        L = _exp_log(schedule.T0, beta_tol)
        f = schedule.tau * L / budget if L > 0 else schedule.tau / budget
        return np.array([lt0, float(np.clip(f, _F_MIN, 1.0))])
    if family == "linear" and isinstance(schedule, LinearSchedule):
        return np.array([lt0, float(np.clip(schedule.tau / budget, _F_MIN, 1.0))])
    if family in ("exponential", "linear"):
        return None
    n = n_stages if family == "piecewise" else n_knots - 1
    ts = bs = None
    if family == "piecewise" and isinstance(schedule, PiecewiseConstantSchedule) \
            and len(schedule.breakpoints) >= 1:
        ts = [0.0, *schedule.breakpoints]
        bs = list(schedule.betas[:-1])                      # the stages before beta = 1
    elif family == "free" and isinstance(schedule, (TabulatedSchedule, LinearSchedule)):
        if isinstance(schedule, LinearSchedule):
            ts, bs = [0.0, schedule.tau], [1.0 / schedule.T0, 1.0]
        else:
            m = int(np.argmax(np.asarray(schedule.betas) >= 1.0))   # first knot at beta = 1
            ts, bs = list(schedule.times[:m + 1]), list(schedule.betas[:m + 1])
            if ts[0] > 0:
                ts, bs = [0.0, *ts], [bs[0], *bs]
    if ts is not None and 2 <= len(ts) <= n + 1 and ts[-1] > 0:
        # exact: split the longest interval until there are n (splitting is exact for both)
        while len(ts) < n + 1:
            k = int(np.argmax(np.diff(ts)))
            ts.insert(k + 1, 0.5 * (ts[k] + ts[k + 1]))
            if family == "piecewise":
                bs.insert(k + 1, bs[k])
            else:
                bs.insert(k + 1, 0.5 * (bs[k] + bs[k + 1]))
        ts_a, bs_a = np.array(ts), np.array(bs[:n])
        D = float(ts_a[-1])
    else:
        D = min(max(schedule.settle_time(beta_tol), _F_MIN * budget), budget)
        ts_a = D * np.linspace(0.0, 1.0, n + 1) ** 1.5      # knots denser early
        if family == "piecewise":
            at = 0.5 * (ts_a[:-1] + ts_a[1:])
            at[0] = 0.0
        else:
            at = ts_a[:-1]
        bs_a = np.maximum.accumulate(np.asarray(schedule.beta(at), dtype=float))
    bs_a[0] = max(bs_a[0], 1.0 / T0_max)
    z = [0.0 if bs_a[i - 1] >= 1 else
         float(np.clip((bs_a[i] - bs_a[i - 1]) / (1 - bs_a[i - 1]), 0.0, 1.0))
         for i in range(1, n)]
    lt0 = float(np.clip(math.log10(1.0 / bs_a[0]), 0.0, math.log10(T0_max)))
    v = _unstick(np.diff(ts_a) / D)
    return np.concatenate([[lt0], z, [float(np.clip(D / budget, _F_MIN, 1.0))], v])


# ----------------------------------------------------------------------------------------
# objective
# ----------------------------------------------------------------------------------------

class _Objective:
    """P(collapse) of candidate schedules, counted and cached by stage."""

    def __init__(self, spec: ProblemSpec, d: int, method: str, options: dict, draws: int,
                 seed: int) -> None:
        self.spec, self.d, self.method, self.options = spec, d, method, options
        self.draws, self.seed = draws, seed
        self.cache: dict[str, tuple[float, float | None]] = {}
        self.counts: dict[str, int] = {}
        self.refused = 0
        self.stage = "search"

    def evaluate(self, schedule: ScheduleBase, path: AnnealingPath | None = None
                 ) -> tuple[float, float | None]:
        """(p, error bound or Wilson half-width) at search accuracy; p = 1 + 1 for a candidate
        the estimator refuses (e.g. the separatrix one-switch check fails).  ``path``: the
        candidate's annealing path (default the problem's)."""
        from .collapse import collapse_probability
        key = _key(schedule, path)
        if key in self.cache:
            return self.cache[key]
        self.counts[self.stage] = self.counts.get(self.stage, 0) + 1
        cand = self.spec.replace(schedule=schedule, **({"path": path} if path else {}))
        try:
            r = collapse_probability(cand, self.d, self.method,
                                     draws=self.draws, seed=self.seed, **self.options)
            out = (float(r.p), _uncertainty(r))
        except ValueError:
            self.refused += 1
            out = (2.0, None)
        self.cache[key] = out
        return out


def _key(schedule: ScheduleBase, path: AnnealingPath | None = None) -> str:
    """Cache key of a candidate (schedule, and the path when the base variance is searched)."""
    return repr(schedule) if path is None else repr((schedule, path))


def _distinct_starts(history: Any, lo: np.ndarray, hi: np.ndarray, n: int,
                     sep: float = 0.1) -> list[np.ndarray]:
    """Up to ``n`` start points for the local searches: the best evaluated points (history
    values ``(p, x)``, feasible ones, p <= 1) in increasing p, each at least ``sep`` of the box
    width from every one taken before in some coordinate (so that two searches do not start in
    the same basin's neighbourhood).  Deterministic: ties keep the evaluation order."""
    width = np.where(hi > lo, hi - lo, 1.0)
    ranked = sorted((h for h in history if h[0] <= 1.0), key=lambda h: h[0])
    out: list[np.ndarray] = []
    for _, x in ranked:
        if all(np.max(np.abs(x - y) / width) >= sep for y in out):
            out.append(np.asarray(x, dtype=float).copy())
        if len(out) == n:
            break
    return out


def _uncertainty(r: Any) -> float:
    if r.method == "separatrix":
        return float(r.details["error_bound"])
    return 0.5 * float(r.ci[1] - r.ci[0])


# ----------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DesignResult:
    """The designed schedule and its collapse probability.

    ``spec``: the problem with the optimal schedule (``spec.to_json()`` is the ``--spec``
    format).  ``p``, ``ci``: the final re-evaluation (separatrix at default accuracy: ``ci`` is
    ``p +- error_bound``; ode: Wilson 95% interval of ``k`` of ``n`` fresh draws).
    ``search_p``: the optimum's value in the search (reduced accuracy / common draws) and
    ``search_uncertainty`` its error bound (separatrix) or Wilson half-width (ode): the
    resolution at which the search told candidates apart.
    ``evaluations``: objective evaluations by stage (``grid``, ``initial``, ``optimizer``,
    ``final``); ``n_evaluations`` their total.  ``grid``: the comparison grid (cells with
    T0, tau, search p) and its best cell re-evaluated like the optimum.  ``optimizer``: name,
    dimension, bounds and, for Nelder-Mead, ``starts`` (one entry per local search: ``x0``,
    ``p0``, the end point ``x`` and value ``p``, ``evaluations``, ``message``).
    """

    family: str
    budget: float
    beta_tol: float
    d: int
    method: str
    spec: ProblemSpec
    p: float
    ci: tuple[float, float]
    error_bound: float | None
    k: int | None
    n: int | None
    search_p: float
    search_uncertainty: float | None
    parameters: tuple[float, ...]
    evaluations: dict
    grid: dict
    optimizer: dict
    search_options: dict
    final_options: dict
    refused: int = 0
    wall_time: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def schedule(self) -> ScheduleBase:
        return self.spec.schedule

    @property
    def n_evaluations(self) -> int:
        return int(sum(self.evaluations.values()))

    def to_dict(self) -> dict:
        return {"family": self.family, "budget": self.budget, "beta_tol": self.beta_tol,
                "d": self.d, "method": self.method, "p": self.p, "ci": list(self.ci),
                "error_bound": self.error_bound, "k": self.k, "n": self.n,
                "search_p": self.search_p, "search_uncertainty": self.search_uncertainty,
                "schedule": self.schedule.to_dict(),
                "settle_time": self.schedule.settle_time(self.beta_tol),
                "parameters": list(self.parameters), "n_evaluations": self.n_evaluations,
                "evaluations": dict(self.evaluations), "refused": self.refused,
                "grid": self.grid, "optimizer": self.optimizer,
                "search_options": self.search_options, "final_options": self.final_options,
                "wall_time": self.wall_time, "notes": list(self.notes),
                "spec": self.spec.to_dict()}


# ----------------------------------------------------------------------------------------
# the designer
# ----------------------------------------------------------------------------------------

def _resolve_method(spec: ProblemSpec, method: str) -> str:
    from .estimators.separatrix import check_separatrix_spec
    if method not in METHODS:
        raise ValueError(f"method: must be one of {METHODS}, got {method!r}")
    if method == "ode":
        return "ode"
    try:
        check_separatrix_spec(spec)
    except ValueError:
        if method == "separatrix":
            raise
        return "ode"
    return "separatrix"


def _grid_schedules(grid_family: str, budget: float, beta_tol: float, T0s: Sequence[float],
                    fractions: Sequence[float]) -> list[tuple[float, float, ScheduleBase]]:
    cells = []
    for T0 in T0s:
        for f in fractions:
            if grid_family == "exponential":
                L = _exp_log(float(T0), beta_tol)
                tau = f * budget / L * (1 - 1e-12) if L > 0 else f * budget
                s: ScheduleBase = ExponentialSchedule(float(T0), tau)
            else:
                s = LinearSchedule(float(T0), f * budget)
            cells.append((float(T0), float(s.tau), s))
    return cells


def design_schedule(spec: ProblemSpec, d: int, budget: float, family: str = "exponential", *,
                    method: str = "auto", beta_tol: float = 1e-3, max_evaluations: int = 120,
                    optimizer: str = "nelder-mead", n_initial: int | None = None,
                    n_stages: int = 3, n_knots: int = 5, T0_max: float = 1e3,
                    grid_T0: Sequence[float] = (2.0, 5.0, 10.0, 20.0, 50.0, 200.0),
                    grid_fractions: Sequence[float] = (0.25, 0.5, 1.0),
                    grid_family: str | None = None,
                    initial: Sequence[ScheduleBase] = (),
                    search_options: dict | None = None, final_options: dict | None = None,
                    search_draws: int = 2000, final_draws: int = 20000, seed: int = 0,
                    n_refine: int = 3, final: bool = True, n_starts: int | None = None,
                    base_variance: tuple[float, float] | None = None) -> DesignResult:
    """Minimise P(collapse) in dimension ``d`` over the schedules of ``family`` whose
    annealing ends by ``budget`` (``settle_time(beta_tol) <= budget``); see the module
    docstring for the parameterisations, the objective and the optimiser.

    ``max_evaluations`` bounds the search evaluations (grid + initial points + optimiser),
    except that at least one member of the family is evaluated even when the grid used them
    all; the final re-evaluations (``n_refine`` candidates and the best grid cell,
    ``final=True``) come on top.
    ``search_options`` / ``final_options``: estimator options during the search / for the
    re-evaluation (separatrix: default :data:`SEARCH_SEPARATRIX` / the estimator defaults).
    ``n_starts``: local searches (Nelder-Mead) from that many distinct best points of the grid
    and initial stages, the evaluations left shared equally (default 1 for the two-parameter
    families, :data:`N_STARTS` for piecewise and free, whose boxes have several local optima).
    ``base_variance = (lo, hi)``: geometric path only; sigma0^2 of its base ``p0`` is searched
    too, on a log scale in [lo, hi] (one more parameter, the last; the grid is evaluated at the
    problem's own sigma0^2).
    """
    from scipy.optimize import differential_evolution, minimize
    from scipy.stats import qmc

    from .collapse import check_d, collapse_probability
    start = time.perf_counter()
    spec = require_spec(spec)
    d = check_d(d)
    budget = _check_budget(budget)
    family = _check_family(family)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: must be one of {OPTIMIZERS}, got {optimizer!r}")
    if not (isinstance(beta_tol, (int, float)) and 0 < beta_tol < 0.5):
        raise ValueError(f"beta_tol: must lie in (0, 0.5), got {beta_tol!r}")
    for name, v, lo in (("max_evaluations", max_evaluations, 1), ("n_stages", n_stages, 1),
                        ("n_knots", n_knots, 2), ("search_draws", search_draws, 1),
                        ("final_draws", final_draws, 1), ("seed", seed, 0),
                        ("n_refine", n_refine, 1),
                        ("n_starts", 1 if n_starts is None else n_starts, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}, got {v!r}")
    if not (isinstance(T0_max, (int, float)) and T0_max > 1 and math.isfinite(T0_max)):
        raise ValueError(f"T0_max: must be a finite number > 1, got {T0_max!r}")
    grid_family = grid_family or {"exponential": "exponential", "linear": "linear",
                                  "piecewise": "exponential", "free": "linear"}[family]
    if grid_family not in ("exponential", "linear"):
        raise ValueError(f"grid_family: must be 'exponential' or 'linear', got {grid_family!r}")
    if any(not (isinstance(t, (int, float)) and t >= 1) for t in grid_T0) or not grid_T0:
        raise ValueError(f"grid_T0: must be numbers >= 1, got {list(grid_T0)!r}")
    if any(not (isinstance(f, (int, float)) and 0 < f <= 1) for f in grid_fractions) \
            or not grid_fractions:
        raise ValueError(f"grid_fractions: must lie in (0, 1], got {list(grid_fractions)!r}")
    if base_variance is not None:
        if spec.path.kind != "geometric":
            raise ValueError("base_variance: the base variance sigma0^2 is a parameter of the "
                             f"geometric path only; the problem's path is {spec.path.kind!r}")
        try:
            bv_lo, bv_hi = (float(v) for v in base_variance)
        except (TypeError, ValueError):
            raise ValueError(f"base_variance: must be a pair (lo, hi), got "
                             f"{base_variance!r}") from None
        if not (0 < bv_lo < bv_hi and math.isfinite(bv_hi)):
            raise ValueError(f"base_variance: need 0 < lo < hi < inf, got {base_variance!r}")
    resolved = _resolve_method(spec, method)
    if resolved == "separatrix":
        s_opts = dict(SEARCH_SEPARATRIX if search_options is None else search_options)
        f_opts = dict(final_options or {})
    else:
        s_opts, f_opts = dict(search_options or {}), dict(final_options or {})
    obj = _Objective(spec, d, resolved, s_opts, int(search_draws), int(seed))
    kw = {"beta_tol": beta_tol, "n_stages": n_stages, "n_knots": n_knots}
    bounds = _bounds(family, n_stages, n_knots, T0_max)
    nf = len(bounds)                                # the family's own parameters
    lbv0 = None
    path0 = None                                    # the problem's path, when it is searched
    if base_variance is not None:
        bounds.append((math.log10(bv_lo), math.log10(bv_hi)))
        path0 = spec.path
        lbv0 = float(np.clip(math.log10(spec.path.base_variance), *bounds[-1]))
    dim = len(bounds)
    lo_b = np.array([b[0] for b in bounds])
    hi_b = np.array([b[1] for b in bounds])
    if n_starts is None:
        n_starts = 1 if family in ("exponential", "linear") else N_STARTS

    def build(x: np.ndarray) -> ScheduleBase:
        return family_schedule(family, np.clip(x, lo_b, hi_b)[:nf], budget, **kw)

    def path_of(x: np.ndarray) -> AnnealingPath | None:
        if base_variance is None:
            return None
        return AnnealingPath("geometric", float(10.0 ** np.clip(x[nf], lo_b[nf], hi_b[nf])))

    def ext(xf: np.ndarray | None) -> np.ndarray | None:
        """A family parameter vector with the problem's own base variance appended."""
        return xf if xf is None or lbv0 is None else np.append(xf, lbv0)

    left = [int(max_evaluations)]
    best: dict[str, Any] = {"p": math.inf, "x": None}

    history: dict[str, tuple[float, np.ndarray]] = {}

    def f(x: np.ndarray) -> float:
        sch, pth = build(np.asarray(x, dtype=float)), path_of(np.asarray(x, dtype=float))
        p, _ = obj.evaluate(sch, pth)
        history.setdefault(_key(sch, pth), (p, np.clip(np.asarray(x, dtype=float), lo_b, hi_b)))
        if p < best["p"]:
            best["p"], best["x"] = p, np.clip(np.asarray(x, dtype=float), lo_b, hi_b)
        return p

    # 1. the comparison grid; cells the family contains are evaluated as its members
    obj.stage = "grid"
    cells = []
    exact = family == grid_family or (family == "free" and grid_family == "linear")
    for T0, tau, s in _grid_schedules(grid_family, budget, beta_tol, grid_T0, grid_fractions):
        if left[0] <= 0:
            break
        n_before = sum(obj.counts.values())
        orig = s
        x = ext(schedule_parameters(family, s, budget, T0_max=T0_max, **kw)) if exact \
            else None
        if x is not None and T0 <= T0_max:
            s = build(x)
            f(x)
        p, u = obj.evaluate(s, path0)
        left[0] -= sum(obj.counts.values()) - n_before
        cells.append({"T0": T0, "tau": tau, "p": p, "uncertainty": u, "schedule": s,
                      "grid_schedule": orig})
    starts: list[np.ndarray] = []
    if cells and not exact:
        order = sorted(range(len(cells)), key=lambda i: cells[i]["p"])
        for i in order[:2]:
            x = schedule_parameters(family, cells[i]["schedule"], budget, T0_max=T0_max, **kw)
            if x is not None:
                starts.append(ext(x))
    if family in ("piecewise", "free"):
        # "hold, then jump": a constant beta for (almost) the whole budget, then 1 -- the
        # shape the optimum takes at A = 9 (escape during annealing at moderate beta)
        for b in HOLD_BETAS:
            hold: ScheduleBase = (
                PiecewiseConstantSchedule(betas=(b, 1.0), breakpoints=(budget,))
                if family == "piecewise" else
                TabulatedSchedule(times=(0.0, 0.99 * budget, budget), betas=(b, b, 1.0)))
            x = schedule_parameters(family, hold, budget, T0_max=T0_max, **kw)
            if x is not None:
                starts.append(ext(x))
    if base_variance is not None and history:
        # the new coordinate: the best member evaluated so far at both ends of its range
        xb = min(history.values(), key=lambda h: h[0])[1]
        for end in (lo_b[nf], hi_b[nf]):
            starts.append(np.append(xb[:nf], end))
    for s in initial:
        x = schedule_parameters(family, s, budget, T0_max=T0_max, **kw)
        if x is None:
            if s.beta_final != 1.0 or s.settle_time(beta_tol) > budget * (1 + 1e-9):
                raise ValueError(f"initial: {s!r} does not end by the budget {budget:g} "
                                 f"(settle time at {beta_tol:g} is "
                                 f"{s.settle_time(beta_tol):g}, final beta {s.beta_final:g})")
            raise ValueError(f"initial: a {s.kind} schedule is not a member of the {family} "
                             f"family")
        starts.append(ext(x))
    # 2. initial design: the starts, then Latin-hypercube points of the box
    obj.stage = "initial"
    n_init = (2 * dim if family in ("piecewise", "free") else 0) if n_initial is None \
        else int(n_initial)
    pts = list(starts)
    if n_init > 0:
        sob = qmc.LatinHypercube(dim, seed=seed).random(n_init)
        pts += list(qmc.scale(sob, lo_b, hi_b))
    for x in pts:
        if left[0] <= 0 and best["x"] is not None:
            break
        n_before = sum(obj.counts.values())
        f(x)
        left[0] -= sum(obj.counts.values()) - n_before
    # 3. local search
    obj.stage = "optimizer"
    info: dict[str, Any] = {"name": optimizer, "dimension": dim,
                            "bounds": [list(b) for b in bounds]}
    if left[0] > 0 and (best["x"] is not None or optimizer != "nelder-mead"):

        class _Stop(Exception):
            pass

        def limited(n_allowed: int) -> Any:
            n_before = sum(obj.counts.values())

            def g(x: np.ndarray) -> float:
                x = np.asarray(x, dtype=float)
                if sum(obj.counts.values()) - n_before >= n_allowed and \
                        _key(build(x), path_of(x)) not in obj.cache:
                    raise _Stop
                return f(x)
            return g

        if optimizer == "nelder-mead":
            x0s = _distinct_starts(history.values(), lo_b, hi_b, int(n_starts))
            runs = []
            for i, x0 in enumerate(x0s):
                n_allowed = left[0] // (len(x0s) - i)      # an equal share of what is left
                if n_allowed <= 0:
                    break
                p0 = history[_key(build(x0), path_of(x0))][0]
                run: dict[str, Any] = {"x0": [float(v) for v in x0], "p0": float(p0)}
                n_before = sum(obj.counts.values())
                step = 0.15 * (hi_b - lo_b)
                simplex = [x0.copy()]
                for j in range(dim):
                    y = x0.copy()
                    y[j] = y[j] + step[j] if y[j] + step[j] <= hi_b[j] else y[j] - step[j]
                    simplex.append(y)
                try:
                    r = minimize(limited(n_allowed), x0, method="Nelder-Mead", bounds=bounds,
                                 options={"initial_simplex": np.array(simplex), "xatol": 1e-3,
                                          "fatol": 1e-7, "maxfev": 10 * n_allowed,
                                          "adaptive": dim > 2})
                    run.update(nit=int(r.nit), message=str(r.message), success=bool(r.success),
                               p=float(r.fun), x=[float(v) for v in
                                                  np.clip(r.x, lo_b, hi_b)])
                except _Stop:
                    run.update(message="evaluation budget exhausted", success=False)
                used = sum(obj.counts.values()) - n_before
                run["evaluations"] = int(used)
                left[0] -= used
                runs.append(run)
            info["starts"] = runs
            if runs:
                info.update({k: runs[-1][k] for k in ("message", "success")})
                info["nit"] = sum(int(r.get("nit", 0)) for r in runs)
        else:
            budget_left = left[0]
            try:
                popsize = max(2, budget_left // (dim * 6))
                r = differential_evolution(limited(budget_left), bounds, popsize=popsize,
                                           maxiter=1000, seed=seed, polish=False, tol=1e-6,
                                           x0=best["x"])
                info.update(nit=int(r.nit), message=str(r.message), success=bool(r.success))
            except _Stop:
                info.update(message="evaluation budget exhausted", success=False)
    if best["x"] is None:
        raise ValueError("max_evaluations: no candidate was evaluated; raise it")
    notes = []
    if obj.refused:
        notes.append(f"{obj.refused} candidate(s) refused by the {resolved} estimator "
                     "(scored as P = 2)")
    best_cell = min(cells, key=lambda c: c["p"]) if cells else None
    if best_cell is not None and best_cell["p"] < best["p"]:
        notes.append("the best grid cell beat every candidate of the family at search "
                     "accuracy (the family cannot represent it)")
    # 4. final re-evaluation.  separatrix (deterministic): the n_refine best candidates at
    # full accuracy, the smallest wins.  ode: the winner only, on fresh draws (no selection
    # among re-evaluations, hence no winner's-curse bias in the reported P and interval)
    obj.stage = "final"
    finals: dict[str, Any] = {}

    def final_eval(s: ScheduleBase, pth: AnnealingPath | None = None) -> Any:
        key = _key(s, pth)
        if key not in finals:
            s_spec = spec.replace(schedule=s, **({"path": pth} if pth else {}))
            if resolved == "separatrix":
                finals[key] = collapse_probability(s_spec, d, "separatrix", **f_opts)
            else:
                finals[key] = collapse_probability(s_spec, d, "ode", draws=int(final_draws),
                                                   seed=int(seed) + 1, **f_opts)
        return finals[key]

    ranked = sorted(history.values(), key=lambda h: h[0])
    x_best = best["x"]
    if final:
        n_ref = n_refine if resolved == "separatrix" else 1
        cands = [h[1] for h in ranked[:n_ref] if h[0] <= 1.0] or [x_best]
        if resolved == "separatrix" and best_cell is not None:
            hc = history.get(_key(best_cell["schedule"], path0))    # evaluated as a member?
            xc = None if hc is None else hc[1]
            if xc is not None and not any(np.array_equal(xc, c) for c in cands):
                cands.append(xc)        # the grid's best, as a member of the family
        results = []
        for x in cands:
            try:
                results.append((final_eval(build(x), path_of(x)).p, x))
            except ValueError:      # refused at full accuracy: not a valid optimum
                pass
        if not results:
            raise ValueError("spec: the estimator refused every refined candidate at full "
                             "accuracy; use method='ode'")
        x_best = min(results, key=lambda t: t[0])[1]
        sched = build(x_best)
        r = final_eval(sched, path_of(x_best))
        p, ci, k, n = float(r.p), (float(r.ci[0]), float(r.ci[1])), r.k, r.n
        err = float(r.details["error_bound"]) if resolved == "separatrix" else None
        final_used = {**f_opts, **({"draws": int(final_draws), "seed": int(seed) + 1}
                                   if resolved == "ode" else {"refined": len(results)})}
    else:
        sched = build(x_best)
        p = best["p"]
        u = obj.cache.get(_key(sched, path_of(x_best)), (None, None))[1]
        ci = (max(0.0, p - (u or 0.0)), min(1.0, p + (u or 0.0)))
        k = n = None
        err = u if resolved == "separatrix" else None
        final_used = {}
        notes.append("final=False: P is the search value (reduced accuracy / common draws)")
    opt_path = path_of(x_best)
    opt_spec = spec.replace(schedule=sched, **({"path": opt_path} if opt_path else {}))
    search_p_best, search_u_best = obj.cache.get(_key(sched, opt_path), (math.nan, None))
    grid_out: dict[str, Any] = {
        "family": grid_family, "T0": [float(t) for t in grid_T0],
        "fractions": [float(x) for x in grid_fractions],
        "cells": [{"T0": c["T0"], "tau": c["tau"], "p": c["p"], "uncertainty": c["uncertainty"]}
                  for c in cells]}
    if best_cell is not None:
        bc = {"T0": best_cell["T0"], "tau": best_cell["tau"], "search_p": best_cell["p"],
              "schedule": best_cell["grid_schedule"].to_dict()}
        if final:
            rb = final_eval(best_cell["schedule"], path0)
            bc.update(p=float(rb.p), ci=[float(rb.ci[0]), float(rb.ci[1])],
                      error_bound=(float(rb.details["error_bound"])
                                   if resolved == "separatrix" else None), k=rb.k, n=rb.n)
        grid_out["best"] = bc
    evaluations = {stage: int(obj.counts.get(stage, 0))
                   for stage in ("grid", "initial", "optimizer")}
    evaluations["final"] = len(finals)
    return DesignResult(
        family=family, budget=budget, beta_tol=float(beta_tol), d=d, method=resolved,
        spec=opt_spec, p=p, ci=ci, error_bound=err, k=k, n=n, search_p=float(search_p_best),
        search_uncertainty=None if search_u_best is None else float(search_u_best),
        parameters=tuple(float(v) for v in x_best), evaluations=evaluations, grid=grid_out,
        optimizer=info,
        search_options={**s_opts, **({"draws": int(search_draws), "seed": int(seed)}
                                     if resolved == "ode" else {})},
        final_options=final_used, refused=obj.refused,
        wall_time=time.perf_counter() - start, notes=tuple(notes))


def pareto_front(spec: ProblemSpec, d: int, budgets: Sequence[float],
                 families: Sequence[str] = FAMILIES, **kwargs: Any) -> list[dict]:
    """The speed-accuracy trade-off: the designed P(collapse) against the budget, per family.

    Budgets are taken in increasing order and each search also starts from the previous
    budget's optimum (still feasible: a schedule that ends by B ends by every B' > B), so the
    front is non-increasing at search accuracy.  Returns one row per (family, budget):
    ``family, budget, p, ci, error_bound, search_p, n_evaluations, schedule, grid_best``.
    ``kwargs`` go to :func:`design_schedule`.
    """
    extra = list(kwargs.pop("initial", ()))
    rows = []
    for fam in families:
        prev: ScheduleBase | None = None
        for B in sorted(float(b) for b in budgets):
            init = list(extra) + ([prev] if prev is not None else [])
            r = design_schedule(spec, d, B, fam, initial=init, **kwargs)
            prev = r.schedule
            gb = r.grid.get("best", {})
            rows.append({"family": fam, "budget": B, "p": r.p, "ci": list(r.ci),
                         "error_bound": r.error_bound, "search_p": r.search_p,
                         "n_evaluations": r.n_evaluations, "schedule": r.schedule.to_dict(),
                         "grid_best": {k: gb.get(k) for k in ("T0", "tau", "p", "ci")},
                         "wall_time": r.wall_time})
    return rows
