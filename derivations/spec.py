"""Problem specification: frozen, validated dataclasses and their JSON form.

The problem (DESIGN.md section 1):

* target   ``p(x) = sum_a pi_a N(x; mu_a, Delta I)``, a = 1..K, given by the Gram matrix
  ``T_ab = mu_a . mu_b`` (or by the means themselves, from which T is computed);
* family   ``q(x) = sum_k w_k N(x; m_k, s I)``, k = 1..M, means trained, weights optionally
  (through logits alpha, w = softmax(alpha));
* objective ``"reverse-kl"`` (``KL(q || p_beta)``, the default) or ``"forward-kl"``
  (``KL(p_beta || q)``, DESIGN.md section 9);
* path     for the reverse KL: tempering ``p^beta`` (gamma = 0) or geometric
  ``p^beta p0^(1-beta)`` with ``p0 = N(0, sigma0^2 I)`` (gamma = 1 - beta).  The forward KL
  needs samples of the annealed target, so it takes the two paths along which ``p_beta``
  stays an exactly samplable mixture: ``"inflation"`` (every mode's variance inflated,
  ``p_beta = sum_a pi_a N(mu_a, Delta / beta I)``; equal to ``p^beta`` only for K = 1) and
  ``"mixture"`` (``p_beta = beta p + (1 - beta) p0``, the arithmetic path; gamma = 1 - beta is
  the base's weight).  At beta = 1 both are the plain forward KL;
* variances ``"fixed"`` (the default: s is a parameter), ``"tied"`` (one common variance s,
  trained through log s), ``"adiabatic"`` (s held at its instantaneous optimum) or
  ``"per-component"`` (one variance s_k per component, each trained through log s_k: the R^d
  simulator only, since it has no exact reduced equations; see :data:`REDUCED_VARIANCES`);
* schedule ``beta(t)`` in (0, 1], t the gradient-flow time (t = eta * steps for GD/SGD);
* initialisation ``m_k(0) ~ N(c_k, sigma_init^2 / d I)`` with the centres c_k given by their
  overlaps ``c_k . c_l`` and ``c_k . mu_a`` (zero by default).

This module is plain Python + NumPy (no SymPy), so every layer may import it.  Every
constructor validates its input and raises ``ValueError`` naming the field and the violated
constraint.  ``ProblemSpec.to_json`` / ``ProblemSpec.from_json`` round-trip exactly (floats are
written with ``repr`` precision by the json module).

State and parameter names
-------------------------
The reduced state is ``y = (Q_kl for k <= l, row-major; R_ka row-major; alpha_k if the
weights train; log_s if the variances are tied)``.  Names are ``Q_k_l``, ``R_k_a``, ``alpha_k``
(1-based), ``log_s``.  Numeric parameters are ``T_a_b`` (a <= b), ``pi_a``, ``Delta``, ``s``
(fixed variances; ``inv_d`` = 1/d in its place for tied variances, nothing for adiabatic ones),
``sigma0_sq`` (geometric and mixture paths only) and ``w_k`` (fixed weights only).  The symbolic layer and the generated code use exactly these
names (see :func:`state_names`, :func:`parameter_names`), which is how a specification is
turned into the parameter vector of a compiled model.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "require_spec",
    "TargetMixture",
    "VariationalFamily",
    "AnnealingPath",
    "ConstantSchedule",
    "LinearSchedule",
    "ExponentialSchedule",
    "PiecewiseConstantSchedule",
    "TabulatedSchedule",
    "Schedule",
    "ScheduleBase",
    "SCHEDULES",
    "Initialisation",
    "ModelStructure",
    "ProblemSpec",
    "symmetric_bimodal",
    "orthogonal",
    "simplex",
    "PRESETS",
    "state_names",
    "parameter_names",
    "schedule_from_dict",
    "SCHEDULE_CODES",
    "OBJECTIVES",
    "OBJECTIVE_PATHS",
    "PATHS",
    "BASE_PATHS",
    "VARIANCES",
    "REDUCED_VARIANCES",
    "require_reduced_variances",
    "check_objective",
    "require_reverse_kl_fixed",
]

#: The objectives, and the annealing paths each one accepts (DESIGN.md sections 1 and 9).
OBJECTIVE_PATHS: dict[str, tuple[str, ...]] = {
    "reverse-kl": ("tempering", "geometric"),
    "forward-kl": ("inflation", "mixture"),
}
OBJECTIVES: tuple[str, ...] = tuple(OBJECTIVE_PATHS)
#: Every annealing path; those with a base p0 = N(0, sigma0^2 I) (parameter sigma0_sq).
PATHS: tuple[str, ...] = ("tempering", "geometric", "inflation", "mixture")
BASE_PATHS: tuple[str, ...] = ("geometric", "mixture")
#: How the component variance s is treated: a parameter, one trained common variance
#: (log-parameterised), held at its instantaneous optimum, or one trained variance s_k per
#: component (log-parameterised; the R^d simulator only).
VARIANCES: tuple[str, ...] = ("fixed", "tied", "adiabatic", "per-component")
#: The treatments with exact reduced equations (the symbolic engine and everything built on it).
REDUCED_VARIANCES: tuple[str, ...] = ("fixed", "tied", "adiabatic")


def require_reduced_variances(name: str, variances: str) -> None:
    """Raise a ValueError naming ``name`` unless the variance treatment has reduced equations.

    ``"per-component"`` is refused with the reason: under ``x ~ N(m_k, s_k I)`` the logit
    differences of log q contain ``|x|^2 (1/s_k - 1/s_j) / 2``, a chi-square in d dimensions
    and not Gaussian, so they do not close exactly in the summary statistics at finite d; only
    the R^d simulator (``mfvi montecarlo``) trains per-component variances.
    """
    if variances == "per-component":
        raise ValueError(
            f"{name}: variances='per-component' (one trained variance s_k per component) has "
            "no exact reduced equations: the logit differences contain |x|^2 (1/s_k - 1/s_j)/2,"
            " a chi-square in d dimensions, not Gaussian; only the R^d simulator runs it "
            "(mfvi montecarlo --variances per-component).  Use 'tied' (one common s, what the "
            "per-component variances relax to after their transient) or 'adiabatic' here; see "
            "the README section 'Trainable variances'")
    if variances not in REDUCED_VARIANCES:
        raise ValueError(f"{name}: variances must be one of "
                         f"{', '.join(map(repr, REDUCED_VARIANCES))}, got {variances!r}")


def require_reverse_kl_fixed(name: str, objective: str, variances: str) -> None:
    """Raise a ValueError naming ``name`` unless the problem is the reverse KL with fixed
    variances: the guard of the code paths that implement only that objective."""
    if objective != "reverse-kl":
        raise ValueError(f"{name}: the {objective} objective is not implemented here (only "
                         "reverse-kl)")
    if variances != "fixed":
        raise ValueError(f"{name}: variances={variances!r} is not implemented here (only fixed)")


def check_objective(name: str, objective: Any, path: Any, variances: Any = "fixed") -> None:
    """Raise a ValueError naming ``name`` unless the objective is known and accepts the path
    (and the variance treatment)."""
    if objective not in OBJECTIVE_PATHS:
        raise ValueError(f"{name}: the objective must be one of "
                         f"{', '.join(map(repr, OBJECTIVES))}, got {objective!r}")
    if path not in OBJECTIVE_PATHS[objective]:
        hint = ("the forward KL needs samples of the annealed target, which p^beta and the "
                "geometric path do not give; use 'inflation' or 'mixture'"
                if objective == "forward-kl" else
                "the inflation and mixture paths are the forward KL's")
        raise ValueError(f"{name}: the {objective} objective takes the paths "
                         f"{', '.join(map(repr, OBJECTIVE_PATHS[objective]))}, got {path!r} "
                         f"({hint})")
    if variances not in VARIANCES:
        raise ValueError(f"{name}: variances must be one of {', '.join(map(repr, VARIANCES))}, "
                         f"got {variances!r}")


_SYM_TOL = 1e-10
_PSD_TOL = 1e-10
_SUM_TOL = 1e-9


# ----------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------

def _is_not_a_number(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_, str, bytes))


def _finite_array(name: str, value: Any, ndim: int) -> np.ndarray:
    # as in _finite_scalar: np.array(["0.5", True], dtype=float) converts both silently
    if isinstance(value, np.ndarray):
        bad = value.dtype.kind in "bSUO" and any(_is_not_a_number(x) for x in value.flat)
    else:
        stack, bad = [value], False
        while stack and not bad:
            item = stack.pop()
            if isinstance(item, (list, tuple)):
                stack.extend(item)
            elif isinstance(item, np.ndarray):
                stack.extend(item.tolist())
            else:
                bad = _is_not_a_number(item)
    if bad or _is_not_a_number(value):
        raise ValueError(f"{name}: must be a numeric array (an entry is a string or a bool)")
    try:
        arr = np.array(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: must be a numeric array ({exc})") from None
    if arr.ndim != ndim:
        raise ValueError(f"{name}: must be {ndim}-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: must be finite (found NaN or inf)")
    return arr


def _finite_scalar(name: str, value: Any) -> float:
    # float(True) == 1.0 and float("9") == 9.0: a bool or a string is a mistake, not a number
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name}: must be a real number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a real number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name}: must be finite, got {x}")
    return x


def _positive(name: str, value: Any) -> float:
    x = _finite_scalar(name, value)
    if x <= 0:
        raise ValueError(f"{name}: must be > 0, got {x}")
    return x


def _probability_vector(name: str, value: Any, length: int | None = None) -> tuple[float, ...]:
    arr = _finite_array(name, value, 1)
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name}: must have length {length}, got {arr.shape[0]}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name}: must have at least one entry")
    if np.any(arr < 0):
        raise ValueError(f"{name}: weights must be non-negative, got {arr.tolist()}")
    if np.any(arr == 0):
        raise ValueError(f"{name}: weights must be > 0 (their logarithms enter the equations), "
                         f"got {arr.tolist()}")
    if abs(arr.sum() - 1.0) > _SUM_TOL:
        raise ValueError(f"{name}: weights must sum to 1, got sum {float(arr.sum())!r}")
    return tuple(float(x) for x in arr)


def _gram(name: str, value: Any) -> tuple[tuple[float, ...], ...]:
    arr = _finite_array(name, value, 2)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name}: must be square, got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name}: needs at least one row (K, M >= 1)")
    scale = max(1.0, float(np.max(np.abs(arr))) if arr.size else 1.0)
    if np.max(np.abs(arr - arr.T)) > _SYM_TOL * scale:
        raise ValueError(f"{name}: must be symmetric")
    eig = np.linalg.eigvalsh(0.5 * (arr + arr.T))
    if eig.size and eig.min() < -_PSD_TOL * scale:
        raise ValueError(f"{name}: must be positive semi-definite (smallest eigenvalue "
                         f"{eig.min():.3g})")
    return tuple(tuple(float(x) for x in row) for row in arr)


# ----------------------------------------------------------------------------------------
# target, family, path
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetMixture:
    """Target ``p(x) = sum_a pi_a N(x; mu_a, Delta I)`` given by its Gram matrix.

    Parameters
    ----------
    gram : (K, K) array, ``T_ab = mu_a . mu_b``; symmetric positive semi-definite.
    weights : (K,) array, ``pi``; positive, summing to 1.
    variance : float, ``Delta > 0``.
    means : optional (K, D) array of the means themselves (kept for simulations that want
        these exact vectors); when given, ``gram`` must equal ``means @ means.T``.
    """

    gram: tuple[tuple[float, ...], ...]
    weights: tuple[float, ...]
    variance: float = 1.0
    means: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        gram = _gram("target.gram", self.gram)
        K = len(gram)
        if K < 1:
            raise ValueError("target.gram: K (number of target modes) must be >= 1")
        object.__setattr__(self, "gram", gram)
        object.__setattr__(self, "weights", _probability_vector("target.weights", self.weights, K))
        object.__setattr__(self, "variance", _positive("target.variance", self.variance))
        if self.means is not None:
            means = _finite_array("target.means", self.means, 2)
            if means.shape[0] != K:
                raise ValueError(f"target.means: must have K = {K} rows, got {means.shape[0]}")
            G = means @ means.T
            scale = max(1.0, float(np.max(np.abs(G))))
            if np.max(np.abs(G - np.array(gram))) > 1e-9 * scale:
                raise ValueError("target.means: Gram matrix of the means differs from target.gram")
            object.__setattr__(self, "means", tuple(tuple(float(x) for x in r) for r in means))

    @classmethod
    def from_means(cls, means: Any, weights: Any, variance: float = 1.0) -> TargetMixture:
        """Build the target from explicit means, shape (K, D); T is their Gram matrix."""
        m = _finite_array("target.means", means, 2)
        return cls(gram=m @ m.T, weights=weights, variance=variance, means=m)

    @property
    def K(self) -> int:
        return len(self.gram)

    @property
    def T(self) -> np.ndarray:
        """(K, K) Gram matrix of the target means."""
        return np.array(self.gram)

    @property
    def pi(self) -> np.ndarray:
        return np.array(self.weights)


@dataclass(frozen=True)
class VariationalFamily:
    """Family ``q(x) = sum_k w_k N(x; m_k, s I)`` with M components.

    ``weights`` are the (initial, if trainable) mixture weights; ``train_weights`` switches on
    the logit dynamics ``dalpha/dt = -dF/dalpha`` with ``w = softmax(alpha)``.  ``variances``
    (:data:`VARIANCES`): ``"fixed"`` (s = ``variance`` throughout), ``"tied"`` (one common
    variance trained through log s, starting at ``variance``) or ``"adiabatic"`` (s at its
    instantaneous optimum; ``variance`` unused).
    """

    n_components: int
    weights: tuple[float, ...] | None = None
    variance: float = 1.0
    train_weights: bool = False
    variances: str = "fixed"

    def __post_init__(self) -> None:
        M = self.n_components
        if isinstance(M, bool) or not isinstance(M, (int, np.integer)):
            raise ValueError(f"family.n_components: must be an integer, got {M!r}")
        if M < 1:
            raise ValueError(f"family.n_components: M must be >= 1, got {M}")
        object.__setattr__(self, "n_components", int(M))
        w = self.weights if self.weights is not None else np.full(M, 1.0 / M)
        object.__setattr__(self, "weights", _probability_vector("family.weights", w, int(M)))
        object.__setattr__(self, "variance", _positive("family.variance", self.variance))
        if not isinstance(self.train_weights, (bool, np.bool_)):
            raise ValueError(f"family.train_weights: must be a bool, got {self.train_weights!r}")
        object.__setattr__(self, "train_weights", bool(self.train_weights))
        if self.variances not in VARIANCES:
            raise ValueError(f"family.variances: must be one of {', '.join(map(repr, VARIANCES))}"
                             f", got {self.variances!r}")

    @property
    def M(self) -> int:
        return self.n_components

    @property
    def w(self) -> np.ndarray:
        return np.array(self.weights)


@dataclass(frozen=True)
class AnnealingPath:
    """Annealing path (see :data:`PATHS`): ``"tempering"`` (gamma = 0) or ``"geometric"``
    (gamma = 1 - beta) for the reverse KL; ``"inflation"`` (gamma = 0) or ``"mixture"``
    (gamma = 1 - beta, the base's weight in ``beta p + (1 - beta) p0``) for the forward KL.

    ``base_variance`` is sigma0^2 of the base ``p0 = N(0, sigma0^2 I)``; geometric and mixture
    paths only.
    """

    kind: str = "tempering"
    base_variance: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in PATHS:
            raise ValueError(f"path.kind: must be one of {', '.join(map(repr, PATHS))}, "
                             f"got {self.kind!r}")
        if self.kind in BASE_PATHS:
            bv = 1.0 if self.base_variance is None else self.base_variance
            object.__setattr__(self, "base_variance", _positive("path.base_variance", bv))
        elif self.base_variance is not None:
            raise ValueError("path.base_variance: only meaningful for the geometric and mixture "
                             "paths")

    def gamma(self, beta: Any) -> Any:
        """Weight of the base ``p0`` in F: ``gamma(beta) = 1 - beta`` (geometric, mixture) or 0
        (tempering, inflation); beta a float or an array (elementwise, same shape)."""
        b = np.asarray(beta, dtype=float)
        g = (1.0 - b) if self.kind in BASE_PATHS else np.zeros_like(b)
        return float(g) if g.ndim == 0 else g


# ----------------------------------------------------------------------------------------
# schedules
# ----------------------------------------------------------------------------------------

#: Integer codes of the schedule families, used by the compiled evaluator
#: ``solvers.schedule.beta_at(t, code, params)`` (each class's ``code``).
SCHEDULE_CODES: dict[str, int] = {}

#: The schedule registry: ``kind -> class``, filled by subclassing :class:`ScheduleBase`.
SCHEDULES: dict[str, type] = {}

#: Marks a schedule parameter that has no default (dataclass fields default to it so that a
#: missing parameter is a ValueError naming the field, not a TypeError from ``__init__``).
_REQUIRED: Any = None


def _check_T0_tau(prefix: str, T0: Any, tau: Any) -> tuple[float, float]:
    T0 = _finite_scalar(f"{prefix}.T0", _required(f"{prefix}.T0", T0))
    if T0 < 1:
        raise ValueError(f"{prefix}.T0: initial temperature must be >= 1, got {T0}")
    tau = _finite_scalar(f"{prefix}.tau", _required(f"{prefix}.tau", tau))
    if tau <= 0:
        raise ValueError(f"{prefix}.tau: must be > 0, got {tau}")
    return T0, tau


def _required(name: str, value: Any) -> Any:
    if value is _REQUIRED:
        raise ValueError(f"{name}: required parameter is missing")
    return value


def _check_betas(name: str, betas: Any) -> tuple[float, ...]:
    b = _finite_array(name, _required(name, betas), 1)
    if b.size == 0:
        raise ValueError(f"{name}: needs at least one value")
    if np.any(b <= 0) or np.any(b > 1):
        raise ValueError(f"{name}: beta must lie in (0, 1], got {b.tolist()}")
    return tuple(float(x) for x in b)


def _check_times(name: str, times: Any, strictly_positive: bool) -> tuple[float, ...]:
    t = _finite_array(name, _required(name, times), 1)
    if t.size and (np.any(t < 0) or (strictly_positive and np.any(t <= 0))):
        raise ValueError(f"{name}: times must be {'> 0' if strictly_positive else '>= 0'}")
    if t.size > 1 and np.any(np.diff(t) <= 0):
        raise ValueError(f"{name}: times must be strictly increasing")
    return tuple(float(x) for x in t)


def _check_tol(beta_tol: Any) -> float:
    tol = _finite_scalar("beta_tol", beta_tol)
    if not 0 <= tol < 1:
        raise ValueError(f"beta_tol: must lie in [0, 1), got {tol}")
    return tol


def _last_departure(betas: tuple[float, ...], beta_tol: float) -> int:
    """Smallest i such that every ``betas[i:]`` is within ``beta_tol`` of ``betas[-1]``."""
    bf = betas[-1]
    i = len(betas) - 1
    while i > 0 and abs(betas[i - 1] - bf) <= beta_tol:
        i -= 1
    return i


class ScheduleBase:
    """An annealing schedule ``beta(t)``, t the gradient-flow time (``t = eta * steps``).

    The schedule contract (a new family is one subclass of this in its own place plus its
    test; nothing else in the toolkit switches on the family):

    1. A subclass is a frozen dataclass whose fields are its parameters, with a class
       attribute ``kind`` (its JSON / command-line name) and ``code`` (its integer code for the
       compiled evaluator); defining the subclass registers it in :data:`SCHEDULES` and
       :data:`SCHEDULE_CODES`.  Every field must have a default (``_REQUIRED`` for a mandatory
       one) and ``__post_init__`` validates every field, raising ``ValueError`` naming
       ``schedule.<field>`` and the constraint; beta must stay in (0, 1].
    2. ``beta(t)`` evaluates the schedule on a float or an array (NumPy, elementwise).
    3. ``encode() -> (code, params)``: the float64 parameter vector read by
       ``solvers.schedule.beta_at`` (the compiled twin of ``beta``, one branch per code) and
       ``solvers.schedule.schedule_kinks`` (the times at which beta(t) is not smooth).  The two
       must agree with ``beta`` to rounding (tests/test_schedule.py checks every family).
    4. ``beta_final`` is ``lim_{t -> inf} beta(t)``; ``settle_time(beta_tol)`` the first time
       after which ``|beta(t) - beta_final| <= beta_tol`` for good (exact, finite for
       beta_tol > 0); ``t_final`` the time after which beta(t) = 1 exactly (inf if never).
    5. ``to_dict()`` / :func:`schedule_from_dict` round-trip exactly through JSON.
    """

    kind: ClassVar[str]
    code: ClassVar[int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is None:
            return
        code = cls.__dict__.get("code")
        if kind in SCHEDULES and SCHEDULES[kind] is not cls:
            raise ValueError(f"schedule.kind: {kind!r} is registered already")
        if not isinstance(code, int) or code in SCHEDULE_CODES.values():
            raise ValueError(f"schedule.code: {cls.__name__} needs a new integer code, "
                             f"got {code!r}")
        SCHEDULES[kind] = cls
        SCHEDULE_CODES[kind] = code

    def beta(self, t: Any) -> np.ndarray | float:  # pragma: no cover - overridden
        raise NotImplementedError

    def params(self) -> np.ndarray:  # pragma: no cover - overridden
        """The float64 parameter vector of the compiled evaluator."""
        raise NotImplementedError

    def encode(self) -> tuple[int, np.ndarray]:
        return self.code, np.ascontiguousarray(self.params(), dtype=float)

    @property
    def beta_final(self) -> float:
        """The inverse temperature the schedule settles at, lim beta(t) as t -> inf."""
        return 1.0

    def settle_time(self, beta_tol: float) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def t_final(self) -> float:
        """Time after which beta(t) = 1 exactly (inf if only asymptotically or never)."""
        return self.settle_time(0.0) if self.beta_final == 1.0 else math.inf

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


_ScheduleBase = ScheduleBase    # the name used before the registry existed


@dataclass(frozen=True)
class ConstantSchedule(ScheduleBase):
    """``beta(t) = beta`` for all t."""

    beta_value: float = 1.0
    kind: ClassVar[str] = "constant"
    code: ClassVar[int] = 0

    def __post_init__(self) -> None:
        b = _finite_scalar("schedule.beta_value", self.beta_value)
        if not 0 < b <= 1:
            raise ValueError(f"schedule.beta_value: beta must lie in (0, 1], got {b}")
        object.__setattr__(self, "beta_value", b)

    @property
    def beta_final(self) -> float:
        return float(self.beta_value)

    def beta(self, t: Any) -> np.ndarray | float:
        return np.full_like(np.asarray(t, dtype=float), self.beta_value)[()]

    def params(self) -> np.ndarray:
        return np.array([self.beta_value])

    def settle_time(self, beta_tol: float) -> float:
        _check_tol(beta_tol)
        return 0.0


@dataclass(frozen=True)
class LinearSchedule(ScheduleBase):
    """Linear in beta: ``beta(t) = 1/T0 + (1 - 1/T0) t / tau`` for t < tau, 1 afterwards."""

    T0: float = _REQUIRED
    tau: float = _REQUIRED
    kind: ClassVar[str] = "linear"
    code: ClassVar[int] = 1

    def __post_init__(self) -> None:
        T0, tau = _check_T0_tau("schedule", self.T0, self.tau)
        object.__setattr__(self, "T0", T0)
        object.__setattr__(self, "tau", tau)

    def beta(self, t: Any) -> np.ndarray | float:
        t = np.asarray(t, dtype=float)
        b0 = 1.0 / self.T0
        return np.where(t < self.tau, b0 + (1.0 - b0) * np.clip(t, 0, None) / self.tau, 1.0)[()]

    def params(self) -> np.ndarray:
        return np.array([self.T0, self.tau])

    def settle_time(self, beta_tol: float) -> float:
        # b0 + (1 - b0) t / tau = 1 - beta_tol
        tol = _check_tol(beta_tol)
        b0 = 1.0 / self.T0
        if 1.0 - b0 <= tol:
            return 0.0
        return float(self.tau * (1.0 - tol / (1.0 - b0)))


@dataclass(frozen=True)
class ExponentialSchedule(ScheduleBase):
    """Exponential in temperature: ``T(t) = 1 + (T0 - 1) exp(-t / tau)``, ``beta = 1 / T``."""

    T0: float = _REQUIRED
    tau: float = _REQUIRED
    kind: ClassVar[str] = "exponential"
    code: ClassVar[int] = 2

    def __post_init__(self) -> None:
        T0, tau = _check_T0_tau("schedule", self.T0, self.tau)
        object.__setattr__(self, "T0", T0)
        object.__setattr__(self, "tau", tau)

    def beta(self, t: Any) -> np.ndarray | float:
        t = np.clip(np.asarray(t, dtype=float), 0, None)
        return (1.0 / (1.0 + (self.T0 - 1.0) * np.exp(-t / self.tau)))[()]

    def params(self) -> np.ndarray:
        return np.array([self.T0, self.tau])

    def settle_time(self, beta_tol: float) -> float:
        tol = _check_tol(beta_tol)
        if self.T0 == 1.0:
            return 0.0
        if tol == 0.0:
            return math.inf
        return self.time_to_reach(tol)

    def time_to_reach(self, beta_tol: float) -> float:
        """First t with ``1 - beta(t) <= beta_tol`` (beta_tol in (0, 1))."""
        if self.T0 == 1.0:
            return 0.0
        # 1 - 1/T <= eps  <=>  T - 1 <= eps T  <=>  (T0-1) e^{-t/tau} <= eps / (1 - eps)
        return max(0.0, self.tau * math.log((self.T0 - 1.0) * (1.0 - beta_tol) / beta_tol))


@dataclass(frozen=True)
class PiecewiseConstantSchedule(ScheduleBase):
    """Stages: ``beta = betas[i]`` on ``[breakpoints[i-1], breakpoints[i])`` (breakpoints[-1] = 0).

    ``len(breakpoints) == len(betas) - 1``; the last stage lasts forever.
    """

    betas: tuple[float, ...] = _REQUIRED
    breakpoints: tuple[float, ...] = ()
    kind: ClassVar[str] = "piecewise"
    code: ClassVar[int] = 3

    def __post_init__(self) -> None:
        b = _check_betas("schedule.betas", self.betas)
        tb = _check_times("schedule.breakpoints", self.breakpoints, strictly_positive=True)
        if len(tb) != len(b) - 1:
            raise ValueError(f"schedule.breakpoints: need len(betas) - 1 = {len(b) - 1} "
                             f"breakpoints, got {len(tb)}")
        object.__setattr__(self, "betas", b)
        object.__setattr__(self, "breakpoints", tb)

    @classmethod
    def from_stages(cls, stages: Any) -> PiecewiseConstantSchedule:
        """From ``[(t_start, beta), ...]``: each beta holds from its start time; the first
        stage must start at t = 0 (the command line's ``--stages "0:0.2,10:0.5,30:1"``)."""
        try:
            pairs = [(float(t), float(b)) for t, b in stages]
        except (TypeError, ValueError):
            raise ValueError("schedule.stages: must be pairs (start time, beta)") from None
        if not pairs:
            raise ValueError("schedule.stages: needs at least one stage")
        if pairs[0][0] != 0.0:
            raise ValueError(f"schedule.stages: the first stage must start at t = 0, "
                             f"got {pairs[0][0]}")
        return cls(betas=tuple(b for _, b in pairs), breakpoints=tuple(t for t, _ in pairs[1:]))

    @property
    def beta_final(self) -> float:
        return float(self.betas[-1])

    def beta(self, t: Any) -> np.ndarray | float:
        idx = np.searchsorted(np.array(self.breakpoints), np.asarray(t, dtype=float), side="right")
        return np.array(self.betas)[idx][()]

    def params(self) -> np.ndarray:
        return np.concatenate([[float(len(self.betas))], self.breakpoints, self.betas])

    def settle_time(self, beta_tol: float) -> float:
        i = _last_departure(self.betas, _check_tol(beta_tol))
        return 0.0 if i == 0 else float(self.breakpoints[i - 1])


@dataclass(frozen=True)
class TabulatedSchedule(ScheduleBase):
    """User table of (t, beta): linear interpolation, constant beyond both ends."""

    times: tuple[float, ...] = _REQUIRED
    betas: tuple[float, ...] = _REQUIRED
    kind: ClassVar[str] = "tabulated"
    code: ClassVar[int] = 4

    def __post_init__(self) -> None:
        t = _check_times("schedule.times", self.times, strictly_positive=False)
        b = _check_betas("schedule.betas", self.betas)
        if len(t) != len(b):
            raise ValueError(f"schedule.times: need as many times as betas ({len(b)}), "
                             f"got {len(t)}")
        object.__setattr__(self, "times", t)
        object.__setattr__(self, "betas", b)

    @classmethod
    def from_csv(cls, path: Any) -> TabulatedSchedule:
        """From a CSV file of two columns ``t, beta`` (a header line is allowed; ``#``
        comments are skipped)."""
        import csv
        rows: list[tuple[float, float]] = []
        try:
            with open(path, newline="") as fh:
                for lineno, row in enumerate(csv.reader(fh), 1):
                    cells = [c.strip() for c in row]
                    if not cells or not any(cells) or cells[0].startswith("#"):
                        continue
                    if len(cells) != 2:
                        raise ValueError(f"schedule.table: line {lineno} of {path}: need two "
                                         f"columns t, beta, got {len(cells)}")
                    try:
                        rows.append((float(cells[0]), float(cells[1])))
                    except ValueError:
                        if rows:
                            raise ValueError(f"schedule.table: line {lineno} of {path}: not "
                                             f"numbers: {row}") from None
                        # a header line
        except OSError as exc:
            raise ValueError(f"schedule.table: cannot read {path}: {exc.strerror}") from None
        if not rows:
            raise ValueError(f"schedule.table: {path} has no (t, beta) rows")
        return cls(times=tuple(t for t, _ in rows), betas=tuple(b for _, b in rows))

    @property
    def beta_final(self) -> float:
        return float(self.betas[-1])

    def beta(self, t: Any) -> np.ndarray | float:
        return np.interp(np.asarray(t, dtype=float), self.times, self.betas)[()]

    def params(self) -> np.ndarray:
        return np.concatenate([[float(len(self.times))], self.times, self.betas])

    def settle_time(self, beta_tol: float) -> float:
        tol = _check_tol(beta_tol)
        i = _last_departure(self.betas, tol)
        if i == 0:
            return 0.0
        # the segment [times[i-1], times[i]] enters the band |beta - beta_final| <= tol
        t0, t1, b0, b1 = self.times[i - 1], self.times[i], self.betas[i - 1], self.betas[i]
        bf = self.betas[-1]
        thr = bf + tol if b0 > bf else bf - tol
        return float(t0 + (thr - b0) / (b1 - b0) * (t1 - t0))


Schedule = ScheduleBase

#: Kept for code that looked the classes up by kind before :data:`SCHEDULES` existed.
_SCHEDULE_CLASSES = SCHEDULES


def schedule_from_dict(d: Any) -> ScheduleBase:
    """Inverse of ``Schedule.to_dict``: ``{"kind": ..., <field>: ...}``.  An unknown kind, a
    missing or an unknown field is a ValueError naming it."""
    if not isinstance(d, dict):
        raise ValueError(f"schedule: must be a JSON object, got {type(d).__name__}")
    d = dict(d)
    kind = d.pop("kind", None)
    if not isinstance(kind, str) or kind not in SCHEDULES:
        raise ValueError(f"schedule.kind: must be one of {sorted(SCHEDULES)}, got {kind!r}")
    cls = SCHEDULES[kind]
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(names), key=str)
    if unknown:
        raise ValueError(f"schedule.{unknown[0]}: unknown field of the {kind} schedule "
                         f"(fields: {', '.join(names)})")
    return cls(**d)


# ----------------------------------------------------------------------------------------
# initialisation and the whole problem
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Initialisation:
    """Law of the initial means: ``m_k(0) ~ N(c_k, sigma_init^2 / d I)`` independently.

    The centres are given by their overlaps: ``centre_gram[k][l] = c_k . c_l`` (M, M) and
    ``centre_overlaps[k][a] = c_k . mu_a`` (M, K); both None means c_k = 0.
    """

    sigma_init: float = 1.0
    centre_gram: tuple[tuple[float, ...], ...] | None = None
    centre_overlaps: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma_init", _positive("init.sigma_init", self.sigma_init))
        if (self.centre_gram is None) != (self.centre_overlaps is None):
            raise ValueError("init.centre_gram: give both centre_gram and centre_overlaps, or neither")
        if self.centre_gram is not None:
            object.__setattr__(self, "centre_gram", _gram("init.centre_gram", self.centre_gram))
            ov = _finite_array("init.centre_overlaps", self.centre_overlaps, 2)
            object.__setattr__(self, "centre_overlaps", tuple(tuple(float(x) for x in r) for r in ov))


@dataclass(frozen=True)
class ModelStructure:
    """The structural part of a problem: what the symbolic equations depend on.

    Two specifications with the same structure share one generated, compiled model; their
    numbers (T, pi, Delta, s, sigma0^2, fixed w) enter as the parameter vector.
    """

    K: int
    M: int
    train_weights: bool = False
    path: str = "tempering"
    objective: str = "reverse-kl"
    variances: str = "fixed"

    def __post_init__(self) -> None:
        for name in ("K", "M"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"structure.{name}: must be an integer >= 1, got {v!r}")
        if self.path not in PATHS:
            raise ValueError(f"structure.path: must be one of {', '.join(map(repr, PATHS))}, "
                             f"got {self.path!r}")
        if not isinstance(self.train_weights, (bool, np.bool_)):
            raise ValueError(f"structure.train_weights: must be a bool, got {self.train_weights!r}")
        check_objective("structure.objective", self.objective, self.path, self.variances)
        require_reduced_variances("structure.variances", self.variances)

    def key(self) -> str:
        """File-name key of the structure (the reverse KL with fixed variances keeps the keys
        it had before the other objectives and variance treatments existed)."""
        key = f"K{self.K}_M{self.M}_{'tw' if self.train_weights else 'fw'}_{self.path}"
        if self.objective != "reverse-kl":
            key += "_" + self.objective.replace("-", "")
        if self.variances != "fixed":
            key += "_var" + self.variances
        return key

    @property
    def state_names(self) -> list[str]:
        """Names of the reduced state vector (see :func:`state_names`)."""
        return state_names(self.K, self.M, self.train_weights, self.variances)

    @property
    def parameter_names(self) -> list[str]:
        """Names of the parameter vector theta (see :func:`parameter_names`)."""
        return parameter_names(self.K, self.M, self.train_weights, self.path, self.variances)

    @property
    def n_state(self) -> int:
        return len(self.state_names)


def state_names(K: int, M: int, train_weights: bool, variances: str = "fixed") -> list[str]:
    """Names of the reduced state vector, in order: Q upper triangle, R, alpha, and ``log_s``
    (the log of the common variance) when the variances are tied (trained)."""
    require_reduced_variances("variances", variances)
    names = [f"Q_{k}_{l}" for k in range(1, M + 1) for l in range(k, M + 1)]
    names += [f"R_{k}_{a}" for k in range(1, M + 1) for a in range(1, K + 1)]
    if train_weights:
        names += [f"alpha_{k}" for k in range(1, M + 1)]
    if variances == "tied":
        names.append("log_s")
    return names


def parameter_names(K: int, M: int, train_weights: bool, path: str,
                    variances: str = "fixed") -> list[str]:
    """Names of the numeric parameter vector theta of a compiled model, in order.

    The variance entry depends on the treatment of s: ``s`` (fixed), ``inv_d`` = 1/d (tied: s
    is the state ``log_s`` and the flow of log s carries explicit factors of d; inv_d = 0 is
    the d -> infinity limit) or nothing (adiabatic: s = s*(beta) is a function of beta).
    """
    require_reduced_variances("variances", variances)
    names = [f"T_{a}_{b}" for a in range(1, K + 1) for b in range(a, K + 1)]
    names += [f"pi_{a}" for a in range(1, K + 1)]
    names += ["Delta"] + {"fixed": ["s"], "tied": ["inv_d"], "adiabatic": []}[variances]
    if path in BASE_PATHS:
        names.append("sigma0_sq")
    if not train_weights:
        names += [f"w_{k}" for k in range(1, M + 1)]
    return names


@dataclass(frozen=True)
class ProblemSpec:
    """A whole VI problem: target, family, annealing path, schedule, initialisation."""

    target: TargetMixture
    family: VariationalFamily
    path: AnnealingPath = field(default_factory=AnnealingPath)
    schedule: Schedule = field(default_factory=ConstantSchedule)
    init: Initialisation = field(default_factory=Initialisation)
    objective: str = "reverse-kl"

    def __post_init__(self) -> None:
        checks = [("target", TargetMixture), ("family", VariationalFamily),
                  ("path", AnnealingPath), ("init", Initialisation)]
        for name, cls in checks:
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name}: must be a {cls.__name__}")
        if not isinstance(self.schedule, ScheduleBase) or \
                SCHEDULES.get(getattr(self.schedule, "kind", None)) is not type(self.schedule):
            raise ValueError(f"schedule: must be a registered schedule ({sorted(SCHEDULES)}), "
                             f"got {type(self.schedule).__name__}")
        check_objective("objective", self.objective, self.path.kind, self.family.variances)
        if self.init.centre_gram is not None:
            M, K = self.family.M, self.target.K
            cg, co = np.array(self.init.centre_gram), np.array(self.init.centre_overlaps)
            if cg.shape != (M, M):
                raise ValueError(f"init.centre_gram: must have shape ({M}, {M}), got {cg.shape}")
            if co.shape != (M, K):
                raise ValueError(f"init.centre_overlaps: must have shape ({M}, {K}), got {co.shape}")
            joint = np.block([[self.target.T, co.T], [co, cg]])
            # centre_gram and target.gram are PSD on their own here; a failure is the overlaps'
            _gram("init.centre_overlaps (with target.gram and init.centre_gram, the joint "
                  "Gram matrix of target means and centres)", joint)

    # -- derived views ---------------------------------------------------------------------
    @property
    def structure(self) -> ModelStructure:
        return ModelStructure(self.target.K, self.family.M, self.family.train_weights,
                              self.path.kind, self.objective, self.family.variances)

    def parameter_values(self, d: float | None = None) -> dict[str, float]:
        """Numeric parameters by name (see :func:`parameter_names`).

        ``d`` (the dimension) is needed only with tied variances, whose parameter ``inv_d =
        1/d`` it sets (``d = math.inf`` gives inv_d = 0, the d -> infinity limit); ``s`` is then
        the initial variance, reported under ``s`` but not part of theta."""
        K, M = self.target.K, self.family.M
        T = self.target.T
        vals: dict[str, float] = {}
        for a in range(K):
            for b in range(a, K):
                vals[f"T_{a + 1}_{b + 1}"] = float(T[a, b])
        for a in range(K):
            vals[f"pi_{a + 1}"] = self.target.weights[a]
        vals["Delta"] = self.target.variance
        vals["s"] = self.family.variance
        if self.family.variances == "tied":
            if d is None:
                raise ValueError("d: the tied-variance flow depends on the dimension through "
                                 "inv_d = 1/d; pass d (math.inf for the d -> infinity limit)")
            d = _positive("d", d) if d != math.inf else d
            vals["inv_d"] = 0.0 if d == math.inf else 1.0 / d
        if self.path.kind in BASE_PATHS:
            vals["sigma0_sq"] = float(self.path.base_variance)
        if not self.family.train_weights:
            for k in range(M):
                vals[f"w_{k + 1}"] = self.family.weights[k]
        return vals

    def theta(self, d: float | None = None) -> np.ndarray:
        """Parameter vector of the compiled model, ordered as :func:`parameter_names`
        (``d``: see :meth:`parameter_values`; required with tied variances)."""
        vals = self.parameter_values(d)
        return np.array([vals[n] for n in self.structure.parameter_names])

    def gamma(self, beta: Any) -> Any:
        """``gamma(beta)`` of the annealing path (:meth:`AnnealingPath.gamma`)."""
        return self.path.gamma(beta)

    def replace(self, **changes: Any) -> ProblemSpec:
        """A copy with some top-level fields replaced (validated again)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d.update(changes)
        return ProblemSpec(**d)

    # -- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        t, f, p, i = self.target, self.family, self.path, self.init
        return {
            "target": {"gram": [list(r) for r in t.gram], "weights": list(t.weights),
                       "variance": t.variance,
                       "means": None if t.means is None else [list(r) for r in t.means]},
            "family": {"n_components": f.n_components, "weights": list(f.weights),
                       "variance": f.variance, "train_weights": f.train_weights,
                       "variances": f.variances},
            "path": {"kind": p.kind, "base_variance": p.base_variance},
            "objective": self.objective,
            "schedule": self.schedule.to_dict(),
            "init": {"sigma_init": i.sigma_init,
                     "centre_gram": None if i.centre_gram is None else [list(r) for r in i.centre_gram],
                     "centre_overlaps": None if i.centre_overlaps is None
                     else [list(r) for r in i.centre_overlaps]},
        }

    @classmethod
    def from_dict(cls, d: Any) -> ProblemSpec:
        """Inverse of :meth:`to_dict`; a missing section, a missing required field or an
        unknown field is a ValueError naming ``section.field``."""
        if not isinstance(d, dict):
            raise ValueError(f"specification: must be a JSON object, got {type(d).__name__}")
        sections = {"target": TargetMixture, "family": VariationalFamily, "path": AnnealingPath,
                    "init": Initialisation}
        unknown = sorted(set(d) - set(sections) - {"schedule", "objective"}, key=str)
        if unknown:
            raise ValueError(f"specification: unknown section {unknown[0]!r} (sections: "
                             f"target, family, path, schedule, init, objective)")
        parts = {}
        for name, section_cls in sections.items():
            if name not in d:
                raise ValueError(f"specification: missing section '{name}'")
            parts[name] = _section(section_cls, name, d[name])
        if "schedule" not in d:
            raise ValueError("specification: missing section 'schedule'")
        # "objective" may be missing: specifications written before it existed are reverse KL
        objective = d.get("objective", "reverse-kl")
        if not isinstance(objective, str):
            raise ValueError(f"objective: must be a string, got {objective!r}")
        return cls(schedule=schedule_from_dict(d["schedule"]), objective=objective, **parts)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ProblemSpec:
        return cls.from_dict(json.loads(text))


def _section(section_cls: type, name: str, d: Any) -> Any:
    """``section_cls(**d)`` with unknown and missing fields reported as ValueErrors naming
    ``name.field`` (dataclass ``__init__`` would raise a TypeError)."""
    if not isinstance(d, dict):
        raise ValueError(f"{name}: must be a JSON object, got {type(d).__name__}")
    fs = fields(section_cls)
    names = [f.name for f in fs]
    unknown = sorted(set(d) - set(names), key=str)
    if unknown:
        raise ValueError(f"{name}.{unknown[0]}: unknown field (fields: {', '.join(names)})")
    missing = [f.name for f in fs if f.default is MISSING and f.default_factory is MISSING
               and f.name not in d]
    if missing:
        raise ValueError(f"{name}.{missing[0]}: required field is missing")
    return section_cls(**d)


def require_spec(spec: Any, name: str = "spec") -> ProblemSpec:
    """``spec`` itself if it is a :class:`ProblemSpec`, else a ValueError naming ``name``."""
    if not isinstance(spec, ProblemSpec):
        raise ValueError(f"{name}: must be a derivations.spec.ProblemSpec, "
                         f"got {type(spec).__name__}")
    return spec


def symmetric_bimodal(A: float, schedule: Schedule | None = None, *, sigma_init: float = 1.0,
                      path: AnnealingPath | None = None,
                      train_weights: bool = False) -> ProblemSpec:
    """The preset: pi = w = (1/2, 1/2), mu_2 = -mu_1, |mu_1|^2 = A, Delta = s = 1, tempering.

    ``T = [[A, -A], [-A, A]]``.  ``schedule`` defaults to constant beta = 1.
    """
    A = _positive("A", A)
    return ProblemSpec(
        target=TargetMixture(gram=[[A, -A], [-A, A]], weights=[0.5, 0.5], variance=1.0),
        family=VariationalFamily(n_components=2, weights=[0.5, 0.5], variance=1.0,
                                 train_weights=train_weights),
        path=path if path is not None else AnnealingPath("tempering"),
        schedule=schedule if schedule is not None else ConstantSchedule(1.0),
        init=Initialisation(sigma_init=sigma_init),
    )


def _preset_family(K: int, M: int, A: float, gram: np.ndarray, schedule: Schedule | None,
                   sigma_init: float, path: AnnealingPath | None, train_weights: bool
                   ) -> ProblemSpec:
    return ProblemSpec(
        target=TargetMixture(gram=gram, weights=np.full(K, 1.0 / K), variance=1.0),
        family=VariationalFamily(n_components=M, weights=np.full(M, 1.0 / M), variance=1.0,
                                 train_weights=train_weights),
        path=path if path is not None else AnnealingPath("tempering"),
        schedule=schedule if schedule is not None else ConstantSchedule(1.0),
        init=Initialisation(sigma_init=sigma_init),
    )


def _preset_sizes(K: Any, M: Any, K_min: int) -> tuple[int, int]:
    for name, v, lo in (("K", K, K_min), ("M", M, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: must be an integer >= {lo}, got {v!r}")
    return int(K), int(M)


def orthogonal(K: int, M: int, A: float, schedule: Schedule | None = None, *,
               sigma_init: float = 1.0, path: AnnealingPath | None = None,
               train_weights: bool = False) -> ProblemSpec:
    """The preset: K mutually orthogonal modes, ``T = A I`` (``|mu_a|^2 = A``), equal weights
    ``pi = 1/K``, M components of equal weight ``1/M``, Delta = s = 1, tempering."""
    K, M = _preset_sizes(K, M, 1)
    A = _positive("A", A)
    return _preset_family(K, M, A, A * np.eye(K), schedule, sigma_init, path, train_weights)


def simplex(K: int, M: int, A: float, schedule: Schedule | None = None, *,
            sigma_init: float = 1.0, path: AnnealingPath | None = None,
            train_weights: bool = False) -> ProblemSpec:
    """The preset: K equiangular centred modes (vertices of a regular simplex, ``sum_a mu_a =
    0``), ``T = A K/(K-1) (I - 1 1^T / K)``: ``|mu_a|^2 = A``, ``mu_a . mu_b = -A/(K-1)``;
    equal weights, M components, Delta = s = 1, tempering.  K = 2 is the symmetric bimodal."""
    K, M = _preset_sizes(K, M, 2)
    A = _positive("A", A)
    gram = A * K / (K - 1) * (np.eye(K) - np.full((K, K), 1.0 / K))
    return _preset_family(K, M, A, gram, schedule, sigma_init, path, train_weights)


#: Problem presets by command-line name (``--preset``): functions ``(K, M, A) -> ProblemSpec``
#: (keyword arguments schedule, sigma_init, path, train_weights).
PRESETS = {"orthogonal": orthogonal, "simplex": simplex}
