"""Problem specification and symbolic derivations (SymPy) of the reduced equations.

``derivations.spec`` is plain Python + NumPy and is imported eagerly; the SymPy-backed parts
(objective, ODEs, emitters, code generation) are loaded on first use, so that the compiled
layers can use the specification without importing SymPy.
"""

from importlib import import_module
from typing import Any

from .spec import (  # noqa: F401
    AnnealingPath,
    ConstantSchedule,
    ExponentialSchedule,
    Initialisation,
    LinearSchedule,
    ModelStructure,
    PiecewiseConstantSchedule,
    ProblemSpec,
    TabulatedSchedule,
    TargetMixture,
    VariationalFamily,
    parameter_names,
    schedule_from_dict,
    state_names,
    symmetric_bimodal,
)

_LAZY = {
    "ReducedModel": "model",
    "derive": "model",
    "GaussLSE": "functions",
    "to_latex": "emit",
    "to_markdown": "emit",
    "generate_source": "codegen",
    "compile_model": "codegen",
    "CompiledModel": "codegen",
}

__all__ = [
    "AnnealingPath", "ConstantSchedule", "ExponentialSchedule", "Initialisation", "LinearSchedule",
    "ModelStructure", "PiecewiseConstantSchedule", "ProblemSpec", "TabulatedSchedule",
    "TargetMixture", "VariationalFamily", "parameter_names", "schedule_from_dict", "state_names",
    "symmetric_bimodal", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'derivations' has no attribute {name!r}")
