"""Integrator methods: Butcher tableaux and the method registry (DESIGN.md sections 4, 5).

The compiled driver (:func:`solvers.integrate.integrate_core`) knows no method by name: it
runs the generic explicit Runge-Kutta step of :mod:`solvers.rk` on the arrays of a
:class:`Tableau`.  A method is a small subclass of :class:`IntegratorMethod`; defining it
registers it in :data:`METHODS` under its ``name`` (the ``method=`` argument of
:func:`solvers.integrate.integrate`, :func:`solvers.ensemble.solve`, ...).  Adding a method
needs no change to the compiled code and does not invalidate its disk cache (the tableau is
data passed at run time).

Built-in methods
----------------
``dopri5``
    The explicit Runge-Kutta pair of Dormand and Prince, order 5 with an embedded order-4
    error estimate, 7 stages, first-same-as-last (6 new right-hand-side evaluations per
    accepted step); Hairer's order-4 continuous extension (``contd5``) as dense output.
``rk4``
    Classical fixed-step Runge-Kutta of order 4: 4 stages plus one evaluation at the step end
    (written as a fifth stage, see rule 3), used as the next step's first stage and for the
    cubic Hermite dense output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["Tableau", "IntegratorMethod", "METHODS", "get_method", "Dopri5", "RK4",
           "DOPRI5_TABLEAU", "RK4_TABLEAU"]

#: Registry of integrator methods: name -> :class:`IntegratorMethod` subclass.
METHODS: dict[str, type[IntegratorMethod]] = {}


def _vector(name: str, v: Any, S: int) -> np.ndarray:
    arr = np.ascontiguousarray(v, dtype=float)
    if arr.shape != (S,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"tableau.{name}: must be a finite vector of length S = {S}, "
                         f"got shape {arr.shape}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Tableau:
    """An explicit Runge-Kutta tableau in first-same-as-last form (see
    :class:`IntegratorMethod` for the rules it must satisfy; checked on construction).

    A (S, S) strictly lower triangular stage matrix, c (S,) stage nodes, e (S,) weights of the
    embedded error estimate ``err = h sum_j e_j k_j`` (None: fixed step only), d (S,) weights
    of the dense-output term ``r5 = h sum_j d_j k_j`` (None: cubic Hermite), order p of the
    method, error_order q of the embedded estimate (the lower order of the pair).
    """

    A: Any
    c: Any
    order: int
    e: Any = None
    d: Any = None
    error_order: int = 0
    b: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        A = np.ascontiguousarray(self.A, dtype=float)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 2 \
                or not np.all(np.isfinite(A)):
            raise ValueError(f"tableau.A: must be a finite (S, S) matrix with S >= 2, got "
                             f"shape {A.shape}")
        S = A.shape[0]
        if np.any(np.triu(A) != 0.0):
            raise ValueError("tableau.A: must be strictly lower triangular (explicit method)")
        c = _vector("c", self.c, S)
        if np.max(np.abs(A.sum(axis=1) - c)) > 1e-14:
            raise ValueError("tableau.c: must equal the row sums of A (c_i = sum_j a_ij)")
        if c[-1] != 1.0 or A[-1, -1] != 0.0 or abs(A[-1].sum() - 1.0) > 1e-14:
            raise ValueError("tableau: the last stage must be the step end (first same as "
                             "last): c_S = 1 and the last row of A = b with sum(b) = 1")
        if isinstance(self.order, bool) or not isinstance(self.order, int) or self.order < 1:
            raise ValueError(f"tableau.order: must be an integer >= 1, got {self.order!r}")
        eo = self.error_order
        if self.e is not None:
            e = _vector("e", self.e, S)
            if abs(e.sum()) > 1e-14:
                raise ValueError("tableau.e: error weights (b - b_hat) must sum to 0")
            if isinstance(eo, bool) or not isinstance(eo, int) or not (1 <= eo):
                raise ValueError(f"tableau.error_order: an embedded estimate needs an "
                                 f"integer order >= 1, got {eo!r}")
        else:
            if eo != 0:
                raise ValueError("tableau.error_order: must be 0 without error weights e")
            e = np.zeros(S)
            e.flags.writeable = False
        d = _vector("d", self.d, S) if self.d is not None else np.zeros(S)
        d.flags.writeable = False
        A.flags.writeable = False
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "e", e)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "b", A[-1])

    @property
    def stages(self) -> int:
        return self.A.shape[0]

    @property
    def adaptive(self) -> bool:
        return self.error_order > 0

    def order_conditions(self, up_to: int | None = None) -> float:
        """Largest defect of the order conditions ``sum b_i c_i^(k-1) = 1/k`` (quadrature
        conditions, k = 1..min(order, up_to)); a cheap consistency check of the data."""
        p = self.order if up_to is None else min(self.order, up_to)
        return max(abs(float(self.b @ self.c ** (k - 1)) - 1.0 / k) for k in range(1, p + 1))


class IntegratorMethod:
    """An integration method of the compiled driver (:func:`solvers.integrate.integrate_core`).

    The method contract (a new method is one subclass in its own place plus its test; the
    compiled code does not change):

    1. A subclass has a class attribute ``name`` (the ``method=`` string) and a class
       attribute ``tableau`` (a :class:`Tableau`); defining the subclass registers it in
       :data:`METHODS` (a name may be registered once).
    2. The tableau is explicit: A (S, S) strictly lower triangular, ``c_i = sum_j a_ij``.
       Stage s is ``k_s = f(t + c_s h, y + h sum_{j<s} a_sj k_j)`` at ``beta(t + c_s h)``
       (inside a piece of a piecewise-constant schedule: the piece's beta).
    3. First same as last: the last stage is the new state, ``c_S = 1`` and the last row of
       A is the weight vector b, so ``y_new = y + h sum_j b_j k_j`` and ``k_S = f(y_new)``
       becomes the next step's ``k_1``.  A method without that property is written with one
       extra stage (as ``rk4``).  Each step costs S - 1 new right-hand-side evaluations.
    4. Adaptive methods give error weights e (``err_i = h sum_j e_j k_j``, ``e = b - b_hat``)
       and ``error_order`` q, the order of the lower-order member of the pair.  The step is
       accepted when the mixed RMS norm
       ``sqrt(mean_i (err_i / (atol + rtol max(|y_i|, |y_new_i|)))^2) <= 1``; the PI
       controller of Hairer, Norsett & Wanner (Solving ODEs I, sec. II.4) proposes
       ``h_new = h / clip(err^(1/(q+1) - 0.75 b) err_old^(-b) / 0.9, 1/10, 5)``, b = 0.04, no
       increase right after a rejection; the first step is Hairer's ``hinit`` with the
       method's ``order`` p (``h = (0.01 / max(||f'||, ||f0||))^(1/p)``) unless given.
    5. Methods without error weights are fixed-step: ``h`` is required and each smooth piece
       of the schedule is divided into equal steps no longer than h.
    6. Dense output on every step, continuous across steps and exact at step points:
       ``y(t + th h) = r1 + th (r2 + (1-th) (r3 + th (r4 + (1-th) r5)))`` with
       ``r1 = y, r2 = y_new - y, r3 = h k_1 - r2, r4 = r2 - h k_S - r3`` (the cubic Hermite
       interpolant of (y, f) at both ends) and ``r5 = h sum_j d_j k_j`` (zero without d).
    """

    name: ClassVar[str]
    tableau: ClassVar[Tableau]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        if not isinstance(name, str) or not name:
            raise ValueError(f"method.name: must be a non-empty string, got {name!r}")
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method.name: {name!r} is registered already")
        if not isinstance(cls.__dict__.get("tableau"), Tableau):
            raise ValueError(f"method.tableau: {cls.__name__} needs a Tableau")
        METHODS[name] = cls

    @classmethod
    def adaptive(cls) -> bool:
        return cls.tableau.adaptive

    @classmethod
    def encode(cls) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int]:
        """``(A, c, e, d, order, error_order)`` for the compiled driver (private writeable
        copies made once per class: the compiled signature takes mutable arrays)."""
        enc = cls.__dict__.get("_encoded")
        if enc is None:
            tb = cls.tableau
            enc = (tb.A.copy(), tb.c.copy(), tb.e.copy(), tb.d.copy(), int(tb.order),
                   int(tb.error_order))
            cls._encoded = enc
        return enc


def get_method(method: Any) -> type[IntegratorMethod]:
    """The registered method class of a name (or the class itself)."""
    if isinstance(method, type) and issubclass(method, IntegratorMethod) \
            and getattr(method, "name", None) in METHODS:
        return method
    if isinstance(method, str) and method in METHODS:
        return METHODS[method]
    raise ValueError(f"method: must be one of {sorted(METHODS)}, got {method!r}")


def _rows(rows: Sequence[Sequence[float]]) -> np.ndarray:
    S = len(rows)
    A = np.zeros((S, S))
    for i, r in enumerate(rows):
        A[i, :len(r)] = r
    return A


# ----------------------------------------------------------------------------------------
# Dormand-Prince 5(4) and Hairer's dense-output coefficients
# ----------------------------------------------------------------------------------------
DOPRI5_TABLEAU = Tableau(
    A=_rows([
        [],
        [1.0 / 5.0],
        [3.0 / 40.0, 9.0 / 40.0],
        [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
        [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
        [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
        [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
    ]),
    c=[0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0],
    order=5,
    e=[71.0 / 57600.0, 0.0, -71.0 / 16695.0, 71.0 / 1920.0, -17253.0 / 339200.0,
       22.0 / 525.0, -1.0 / 40.0],
    d=[-12715105075.0 / 11282082432.0, 0.0, 87487479700.0 / 32700410799.0,
       -10690763975.0 / 1880347072.0, 701980252875.0 / 199316789632.0,
       -1453857185.0 / 822651844.0, 69997945.0 / 29380423.0],
    error_order=4,
)

RK4_TABLEAU = Tableau(
    A=_rows([
        [],
        [0.5],
        [0.0, 0.5],
        [0.0, 0.0, 1.0],
        [1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
    ]),
    c=[0.0, 0.5, 0.5, 1.0, 1.0],
    order=4,
)


class Dopri5(IntegratorMethod):
    """Dormand-Prince 5(4), adaptive, FSAL, order-4 dense output (Hairer's ``contd5``)."""

    name = "dopri5"
    tableau = DOPRI5_TABLEAU


class RK4(IntegratorMethod):
    """Classical Runge-Kutta of order 4, fixed step, cubic Hermite dense output."""

    name = "rk4"
    tableau = RK4_TABLEAU

