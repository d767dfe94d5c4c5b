"""Terminal events of the integrators: the event registry and the compiled locator.

The compiled driver (:func:`solvers.integrate.integrate_core`) knows no event by name: it
receives a kind (condition / crossing), a direction, whether f is needed, a float64 parameter
vector and a compiled event function g, passed as a first-class function (so every event,
built-in or user-defined, runs in the cached driver).  An event type is a small subclass of
:class:`Event`; defining it registers it in :data:`EVENTS` (and its integer tag in
:data:`EVENT_CODES`, used by encoded ``(code, params)`` pairs).

Built-in events
---------------
* ``none`` (code 0): never fires.
* ``converged`` (code 1, condition), params ``(tol, beta_min)``: once
  ``beta >= beta_min`` (default ``1 - 1e-12``), stop at the first accepted step point (or at
  t0) where ``max_i |dy_i/dt| < tol``.
* ``threshold`` (code 2, crossing): stop where ``c . y - c0`` crosses zero.
  Encoded pair: ``(2, [c0, direction, c_1, ..., c_n])``.
* ``predicate`` (code 3, crossing): a user function ``g(t, y, f, beta, p)`` compiled for
  :data:`solvers.signatures.EVENT_SIG` (e.g. "the outcome is decided") crosses zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numba import njit, types
from numba.core.dispatcher import Dispatcher

from .rk import beta_stage, dense_eval, feval
from .signatures import EVENT_SIG, EventFn, JacFn, RhsFn

__all__ = ["Event", "EVENTS", "EVENT_CODES", "EncodedEvent", "NoEvent", "ConvergedEvent",
           "ThresholdEvent", "PredicateEvent", "encode_event", "locate_crossing",
           "null_event", "converged_g", "threshold_g", "KIND_NONE", "KIND_CONDITION",
           "KIND_CROSSING"]

#: Kinds of events understood by the compiled driver.
KIND_NONE = 0
KIND_CONDITION = 1   # fires at the first accepted point where g <= 0 (not located)
KIND_CROSSING = 2    # fires on a sign change in the given direction, located on the dense output
_KINDS = {"none": KIND_NONE, "condition": KIND_CONDITION, "crossing": KIND_CROSSING}

#: Registry of event types: name -> :class:`Event` subclass.
EVENTS: dict[str, type[Event]] = {}
#: Integer tag of each event type in encoded ``(code, params)`` pairs.
EVENT_CODES: dict[str, int] = {}

_f8 = types.float64
_i8 = types.int64
_b1 = types.boolean
_v1 = types.float64[::1]
_v2 = types.float64[:, ::1]


# ----------------------------------------------------------------------------------------
# compiled event functions of the built-in events
# ----------------------------------------------------------------------------------------

@njit(EVENT_SIG, cache=True)
def null_event(t, y, f, beta, params):
    """Event function of ``none`` (never fires)."""
    return 1.0


@njit(EVENT_SIG, cache=True)
def converged_g(t, y, f, beta, params):
    """``max_i |f_i| - tol`` once ``beta >= beta_min``, else +inf; params = (tol, beta_min).
    A NaN in f makes g NaN (never <= 0: no convergence on non-finite values)."""
    if beta < params[1]:
        return math.inf
    m = 0.0
    for i in range(y.shape[0]):
        a = abs(f[i])
        if a > m or a != a:
            m = a
    return m - params[0]


@njit(EVENT_SIG, cache=True)
def threshold_g(t, y, f, beta, params):
    """``sum_i c_i y_i - c0``; params = (c0, c_1, ..., c_n)."""
    acc = -params[0]
    for i in range(y.shape[0]):
        acc += params[1 + i] * y[i]
    return acc


# ----------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------

class EncodedEvent(NamedTuple):
    """What the compiled driver receives: kind (KIND_*), direction (+1, -1, 0), needs_f,
    params (float64, non-empty) and the compiled event function."""

    kind: int
    direction: int
    needs_f: bool
    params: np.ndarray
    fn: Any


def _check_direction(direction: Any) -> int:
    if isinstance(direction, bool) or direction not in (-1, 0, 1):
        raise ValueError(f"event direction: must be -1, 0 or +1, got {direction!r}")
    return int(direction)


class Event:
    """A terminal event of the integrators (base class and registry).

    The event contract (a new event type is one subclass in its own place plus its test; the
    compiled driver does not change):

    1. A subclass is a frozen dataclass with class attributes ``name`` (its string name),
       ``code`` (a new integer tag for encoded ``(code, params)`` pairs) and ``kind``
       (``'condition'`` or ``'crossing'``); defining it registers it in :data:`EVENTS` and
       :data:`EVENT_CODES`.  Construction validates every field (ValueError naming
       ``event <field>`` and the constraint).
    2. :meth:`function` returns a Numba function compiled for
       :data:`solvers.signatures.EVENT_SIG` with ``cache=True``:
       ``g(t, y, f, beta, params) -> float``, t the time, y (n,) the state, f (n,) = dy/dt,
       beta = beta(t), params the vector of rule 4.  It must not allocate or keep state.
    3. ``kind = 'condition'``: the event fires at the first accepted step point (or at t0)
       where ``g <= 0``; it is not located between step points.  ``kind = 'crossing'``: it
       fires where g changes sign in the event's ``direction`` (+1: from < 0 to >= 0, -1:
       from > 0 to <= 0, 0: either) between two accepted step points; the time is located
       on the dense output by the Illinois method to ~1e-12 relative, and the returned state
       is the dense-output state at the end of the final bracket on the crossed side.
    4. :meth:`parameters` returns the float64 vector passed to g, checked against the state
       size n (ValueError naming ``event``).
    5. ``needs_f`` (class attribute): whether g reads f; if False, f is passed as zeros while
       locating a crossing (no right-hand-side evaluations spent on it).
    6. A NaN value of g never fires the event.
    7. :meth:`decode` builds the event from the params of an encoded ``(code, params)`` pair.
    """

    name: ClassVar[str]
    code: ClassVar[int]
    kind: ClassVar[str]
    needs_f: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        if name in EVENTS and EVENTS[name] is not cls:
            raise ValueError(f"event name: {name!r} is registered already")
        code = cls.__dict__.get("code")
        if isinstance(code, bool) or not isinstance(code, int) \
                or (code in EVENT_CODES.values() and EVENT_CODES.get(name) != code):
            raise ValueError(f"event code: {cls.__name__} needs a new integer code, "
                             f"got {code!r}")
        if cls.__dict__.get("kind", getattr(cls, "kind", None)) not in _KINDS:
            raise ValueError(f"event kind: {cls.__name__} needs kind 'none', 'condition' or "
                             f"'crossing'")
        EVENTS[name] = cls
        EVENT_CODES[name] = code

    # ---- contract ----------------------------------------------------------------------
    @property
    def direction(self) -> int:
        """Crossing direction (+1, -1, 0); 0 for condition events."""
        return 0

    def function(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def parameters(self, n: int) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def decode(cls, params: np.ndarray) -> Event:
        raise ValueError(f"event: {cls.name!r} cannot be given as a (code, params) pair "
                         f"(construct the Event)")

    def encode(self, n: int) -> EncodedEvent:
        """The arguments of the compiled driver for a state of size n."""
        p = np.ascontiguousarray(self.parameters(n), dtype=float).ravel()
        if p.size == 0:
            p = np.zeros(1)
        return EncodedEvent(_KINDS[self.kind], int(self.direction), bool(self.needs_f), p,
                            self.function())

    # ---- constructors of the built-in events (the historical API) -----------------------
    @classmethod
    def none(cls) -> Event:
        return NoEvent()

    @classmethod
    def converged(cls, tol: float = 1e-8, beta_min: float = 1.0 - 1e-12) -> Event:
        """Stop once beta(t) >= beta_min and ``max_i |dy_i/dt| < tol``.

        The default waits for beta = 1; a schedule that settles at another final value (or
        only approaches 1, like the exponential one) needs ``beta_min`` a little below its
        final beta.  While beta still moves, |dy/dt| carries the drift of the quasi-static
        state, so ``tol`` itself keeps the event from firing early.
        """
        return ConvergedEvent(tol, beta_min)

    @classmethod
    def threshold(cls, c: Sequence[float], c0: float = 0.0, direction: int = 0) -> Event:
        """Stop where ``c . y - c0`` crosses zero (direction +1 upward, -1 downward, 0 both)."""
        return ThresholdEvent(c, c0, direction)

    @classmethod
    def predicate(cls, fn: Any, params: Sequence[float] = (), direction: int = 0) -> Event:
        """Stop where the compiled ``fn(t, y, f, beta, params) -> float`` crosses zero.

        ``fn`` must be compiled for :data:`solvers.signatures.EVENT_SIG`, e.g.
        ``@njit(EVENT_SIG, cache=True)``; y (n,) is the state, f (n,) = dy/dt, beta = beta(t).
        direction +1 fires on upward crossings only, -1 on downward ones, 0 on both.  The
        crossing time is located on the dense output like a threshold crossing.
        """
        return PredicateEvent(fn, params, direction)


@dataclass(frozen=True)
class NoEvent(Event):
    """No terminal event."""

    name: ClassVar[str] = "none"
    code: ClassVar[int] = 0
    kind: ClassVar[str] = "none"
    needs_f: ClassVar[bool] = False

    def function(self) -> Any:
        return null_event

    def parameters(self, n: int) -> np.ndarray:
        return np.zeros(1)

    @classmethod
    def decode(cls, params: np.ndarray) -> Event:
        return cls()


@dataclass(frozen=True)
class ConvergedEvent(Event):
    """Stationarity: ``max_i |dy_i/dt| < tol`` once ``beta >= beta_min``."""

    tol: float = 1e-8
    beta_min: float = 1.0 - 1e-12
    name: ClassVar[str] = "converged"
    code: ClassVar[int] = 1
    kind: ClassVar[str] = "condition"
    needs_f: ClassVar[bool] = True

    def __post_init__(self) -> None:
        tol = float(self.tol)
        beta_min = float(self.beta_min)
        if not (tol > 0 and math.isfinite(tol)):
            raise ValueError(f"event tol: must be a finite number > 0, got {tol}")
        if not math.isfinite(beta_min):
            raise ValueError(f"event beta_min: must be finite, got {beta_min}")
        object.__setattr__(self, "tol", tol)
        object.__setattr__(self, "beta_min", beta_min)

    def function(self) -> Any:
        return converged_g

    def parameters(self, n: int) -> np.ndarray:
        return np.array([self.tol, self.beta_min])

    @classmethod
    def decode(cls, params: np.ndarray) -> Event:
        if params.size not in (1, 2):
            raise ValueError("event: converged takes (tol,) or (tol, beta_min)")
        return cls(*params.tolist())


@dataclass(frozen=True)
class ThresholdEvent(Event):
    """``c . y - c0`` crosses zero in ``direction``."""

    c: tuple[float, ...] = ()
    c0: float = 0.0
    direction: int = 0
    name: ClassVar[str] = "threshold"
    code: ClassVar[int] = 2
    kind: ClassVar[str] = "crossing"
    needs_f: ClassVar[bool] = False

    def __post_init__(self) -> None:
        c = np.asarray(self.c, dtype=float)
        if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)) \
                or not math.isfinite(float(self.c0)):
            raise ValueError("event c, c0: need a finite 1-d coefficient vector and a finite c0")
        object.__setattr__(self, "c", tuple(float(x) for x in c))
        object.__setattr__(self, "c0", float(self.c0))
        object.__setattr__(self, "direction", _check_direction(self.direction))

    def function(self) -> Any:
        return threshold_g

    def parameters(self, n: int) -> np.ndarray:
        if len(self.c) != n:
            raise ValueError(f"event: threshold coefficients must have length n = {n}, "
                             f"got {len(self.c)}")
        return np.array((self.c0,) + self.c)

    @classmethod
    def decode(cls, params: np.ndarray) -> Event:
        if params.size < 3:
            raise ValueError("event: threshold takes (c0, direction, c_1, ..., c_n)")
        d = float(params[1])
        return cls(tuple(params[2:].tolist()), float(params[0]),
                   1 if d > 0 else (-1 if d < 0 else 0))


@dataclass(frozen=True)
class PredicateEvent(Event):
    """A user-supplied compiled event function crosses zero in ``direction``."""

    fn: Any = None
    params: tuple[float, ...] = ()
    direction: int = 0
    name: ClassVar[str] = "predicate"
    code: ClassVar[int] = 3
    kind: ClassVar[str] = "crossing"
    needs_f: ClassVar[bool] = True

    def __post_init__(self) -> None:
        fn = self.fn
        if not isinstance(fn, Dispatcher) or fn.overloads.get(EVENT_SIG.args) is None:
            raise ValueError("event fn: must be a Numba function compiled for "
                             "solvers.signatures.EVENT_SIG (@njit(EVENT_SIG))")
        object.__setattr__(self, "direction", _check_direction(self.direction))
        p = np.asarray(self.params, dtype=float).ravel()
        if not np.all(np.isfinite(p)):
            raise ValueError("event params: must be finite")
        object.__setattr__(self, "params", tuple(float(x) for x in p))

    def function(self) -> Any:
        return self.fn

    def parameters(self, n: int) -> np.ndarray:
        return np.array(self.params, dtype=float)

    @classmethod
    def decode(cls, params: np.ndarray) -> Event:
        raise ValueError("event: a predicate event needs its function (use Event.predicate)")


def encode_event(event: Any, n: int) -> EncodedEvent:
    """Encode an event argument for a state of size n: None, an event name (``'none'``,
    ``'converged'``), an :class:`Event`, or an encoded ``(code, params)`` pair."""
    if event is None:
        event = NoEvent()
    elif isinstance(event, str):
        cls = EVENTS.get(event)
        try:
            built = cls() if cls is not None else None
        except (TypeError, ValueError):
            built = None
        if built is None:
            raise ValueError(f"event: unknown event name {event!r} or one that needs "
                             f"arguments (names: 'none', 'converged'; else pass an Event)")
        event = built
    elif not isinstance(event, Event):
        try:
            code, params = event
            code = int(code)
        except (TypeError, ValueError):
            raise ValueError("event: must be None, 'converged', an Event or a (code, params) "
                             "pair") from None
        by_code = {c: EVENTS[nm] for nm, c in EVENT_CODES.items()}
        if code not in by_code:
            raise ValueError(f"event: unknown event code {code} (known: {by_code})")
        event = by_code[code].decode(np.ascontiguousarray(params, dtype=float).ravel())
    return event.encode(n)


# ----------------------------------------------------------------------------------------
# compiled locator of crossing events
# ----------------------------------------------------------------------------------------

@njit(types.Tuple((_f8, _i8))(_i8, RhsFn, JacFn, _v1, _i8, _v1, _f8, EventFn, _v1, _b1, _v2,
                              _f8, _f8, _f8, _f8, _f8, _v1, _v1, _v1, _v2), cache=True)
def locate_crossing(mode, rhs, jac, theta, scode, sparams, tmid, efn, eparams, needs_f, D,
                    t, t_new, hs, g_old, g_new, zd, fd, fzero, Jm):
    """Time of a sign change of g on the step [t, t_new] (rule 3 of :class:`Event`).

    Illinois iteration on ``[a, b]``, a keeping the pre-crossing sign and b the crossed one,
    on the dense output D of the step; g is evaluated at ``zd = y(c)`` with f = F(zd) when
    ``needs_f`` (else zeros, ``fzero`` (n,)).  Stops when ``b - a <= 1e-12 max(|t|, |t_new|)
    + 1e-14 hs``.  Returns ``(b, number of F evaluations)``.
    """
    n = fzero.shape[0]
    a = t
    ga = g_old
    b = t_new
    gb = g_new
    n_f = 0
    tol = 1e-12 * max(abs(t), abs(t_new)) + 1e-14 * hs
    side = 0
    for _it in range(200):
        if b - a <= tol:
            break
        c = b - gb * (b - a) / (gb - ga)
        if not (c > a and c < b):
            c = 0.5 * (a + b)
        dense_eval(D, (c - t) / hs, zd)
        bc = beta_stage(c, scode, sparams, tmid)
        if needs_f:
            feval(mode, rhs, jac, zd, bc, theta, fd, Jm)
            n_f += 1
            gc = efn(c, zd[:n], fd[:n], bc, eparams)
        else:
            gc = efn(c, zd[:n], fzero, bc, eparams)
        if gc == 0.0:
            b = c
            gb = gc
            break
        if (gc > 0.0) == (ga > 0.0):
            a = c
            ga = gc
            if side == 1:
                gb *= 0.5
            side = 1
        else:
            b = c
            gb = gc
            if side == -1:
                ga *= 0.5
            side = -1
    return b, n_f
