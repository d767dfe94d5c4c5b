"""Validation of scalar parameters: one home for the checks and their messages.

Every function takes the parameter's ``name`` (as the user wrote it: a field name, an option,
or a command-line flag) and the value, returns the value converted (``int`` / ``float``) and
raises ``ValueError("NAME: must be ..., got X")`` otherwise.  Booleans, strings, ``None``,
NaN and infinities are refused everywhere (``True`` is an ``int`` to Python, not to a user);
NumPy integer and floating scalars are accepted.  An integral float (``1e6`` read from a
command line) is *not* an integer here: callers that want that leniency convert first.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

__all__ = ["positive_int", "finite_float", "positive_float", "fraction", "format_bytes",
           "format_seconds"]


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"     # numpy.bool_ without numpy


def positive_int(name: str, v: Any, minimum: int = 1) -> int:
    """``v`` as an int ``>= minimum`` (``minimum=0``: non-negative)."""
    if _is_bool(v) or not isinstance(v, Integral) or v < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {v!r}")
    return int(v)


def finite_float(name: str, v: Any) -> float:
    """``v`` as a finite float (any sign)."""
    if _is_bool(v) or not isinstance(v, Real):
        raise ValueError(f"{name}: must be a finite real number, got {v!r}")
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{name}: must be a finite real number, got {v!r}")
    return x


def positive_float(name: str, v: Any, allow_zero: bool = False) -> float:
    """``v`` as a finite float ``> 0`` (``>= 0`` with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    if _is_bool(v) or not isinstance(v, Real):
        raise ValueError(f"{name}: must be a finite real number {bound}, got {v!r}")
    x = float(v)
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name}: must be a finite real number {bound}, got {v!r}")
    return x


def fraction(name: str, v: Any) -> float:
    """``v`` as a float in the closed interval [0, 1] (a probability)."""
    if _is_bool(v) or not isinstance(v, Real):
        raise ValueError(f"{name}: must be a number in [0, 1], got {v!r}")
    x = float(v)
    if not 0.0 <= x <= 1.0:          # False for NaN
        raise ValueError(f"{name}: must be a number in [0, 1], got {v!r}")
    return x


# ----------------------------------------------------------------------------------------
# sizes in messages (cost guards)
# ----------------------------------------------------------------------------------------

def format_bytes(b: float) -> str:
    """``b`` bytes with a binary unit, three significant digits: ``"1.5 GiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024:
            return f"{b:.3g} {unit}"
        b /= 1024
    return f"{b:.3g} PiB"


def format_seconds(s: float) -> str:
    """``s`` seconds in s, min, h or days, three significant digits."""
    if s < 120:
        return f"{s:.3g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    if s < 3 * 86400:
        return f"{s / 3600:.3g} h"
    return f"{s / 86400:.3g} days"
