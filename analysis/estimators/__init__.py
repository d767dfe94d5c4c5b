"""Collapse estimators behind one registry (DESIGN.md sections 3 and 5).

``ESTIMATORS`` maps a name to its :class:`CollapseEstimator` subclass; the contract is in that
class's docstring.  The built-in estimators register themselves when this package is imported:
``ode`` (theory ensemble), ``separatrix`` (sharp large-d formula), ``linear`` (linearised
theory), ``montecarlo`` (real VI in R^d).

Every other module of this package is imported here too, so a new estimator is one file in
``analysis/estimators/`` (a ``@register_estimator`` class) plus its test: the registry, the
``--method`` choices and the command-line flags pick it up with no edit elsewhere.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from .base import (
                   ESTIMATORS,
                   MAX_BYTES,
                   MAX_SECONDS,
                   CollapseEstimator,
                   CollapseResult,
                   Cost,
                   CostError,
                   EstimatorOptions,
                   get_estimator,
                   parse_options,
                   register_estimator,
)
from .common import default_ode_t_end, is_antipodal_pair
from .linear import LinearEstimator
from .montecarlo import MonteCarloEstimator
from .ode import OdeEstimator
from .separatrix import SeparatrixEstimator, critical_angles, separatrix_vs_d

__all__ = ["ESTIMATORS", "MAX_BYTES", "MAX_SECONDS", "CollapseEstimator", "CollapseResult",
           "Cost", "CostError", "EstimatorOptions", "get_estimator", "parse_options",
           "register_estimator", "default_ode_t_end", "is_antipodal_pair", "OdeEstimator",
           "SeparatrixEstimator", "LinearEstimator", "MonteCarloEstimator", "critical_angles",
           "separatrix_vs_d"]

# the one-file extension point: import every module of the package (each registers itself)
for _m in _pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_m.name}")
del _m
