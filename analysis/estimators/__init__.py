"""Collapse estimators behind one registry (DESIGN.md sections 3 and 5).

``ESTIMATORS`` maps a name to its :class:`CollapseEstimator` subclass; the contract is in that
class's docstring.  The built-in estimators register themselves when this package is imported:
``ode`` (theory ensemble), ``separatrix`` (sharp large-d formula), ``linear`` (linearised
theory), ``montecarlo`` (real VI in R^d).
"""

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
