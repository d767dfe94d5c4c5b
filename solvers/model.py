"""The compiled-model protocol: what every solver needs from a model (DESIGN.md section 5).

:class:`CompiledModelProtocol` is the one description of a compiled model used by
:func:`solvers.ensemble.solve` / :func:`~solvers.ensemble.solve_ensemble`, the fixed-point
search, continuation, stability and the collapse estimators.
``derivations.codegen.CompiledModel`` provides it; so does :class:`ModelFunctions` (for
callers holding the compiled functions only) and any object with the same attributes.

The protocol (numbered rules; :func:`require_model` checks 1, 2 and the presence of 3-4):

1. ``structure``: the :class:`derivations.spec.ModelStructure` the functions were generated
   for; the state layout is :class:`solvers.layout.StateLayout` of it and theta is ordered as
   ``structure.parameter_names``.
2. ``state_names``: the state names, equal to ``structure.state_names`` (canonical order).
3. ``rhs``: a Numba function compiled for :data:`solvers.signatures.RHS_SIG`,
   ``rhs(y, beta, theta, out)`` writes ``out = dy/dt`` (gradient-flow time).
4. ``jac``: compiled for :data:`solvers.signatures.JAC_SIG`, ``jac(y, beta, theta, J)`` writes
   ``J = d(dy/dt)/dy``; may be None for models used only for plain integration (solve without
   the tangent propagator).
5. ``objective`` (optional): compiled for :data:`solvers.signatures.OBJ_SIG`,
   ``objective(y, beta, theta) -> F`` up to state-independent terms.
6. ``gradient`` (optional; needed by the finite-step engines, :mod:`solvers.gd`): compiled
   for :data:`solvers.signatures.GRAD_SIG`, ``gradient(y, beta, theta, G, H, dF_dalpha)``
   writes the chain-rule matrices G (M, M), H (M, K) and dF/dalpha (M,; length 0 with fixed
   weights) of DESIGN.md section 2, so that ``grad_{m_k} F = sum_l G_kl m_l + sum_a H_ka mu_a``.

Attributes are read lazily (``CompiledModel`` generates each function on first access), so a
solver touches ``jac`` / ``objective`` only when it needs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from derivations.spec import ModelStructure

from .layout import StateLayout, state_layout

__all__ = ["CompiledModelProtocol", "ModelFunctions", "require_model", "evaluate_rhs",
           "evaluate_jacobian"]


class CompiledModelProtocol(Protocol):
    """Structural type of a compiled model (see the module docstring for the rules)."""

    @property
    def structure(self) -> ModelStructure: ...

    @property
    def state_names(self) -> Sequence[str]: ...

    @property
    def rhs(self) -> Callable[..., None]: ...

    @property
    def jac(self) -> Callable[..., None] | None: ...


@dataclass(frozen=True)
class ModelFunctions:
    """The compiled functions of a model without the model object (a minimal implementation
    of :class:`CompiledModelProtocol`).

    rhs, jac : compiled with the signatures of :mod:`solvers.signatures`.
    structure : the :class:`ModelStructure` they were generated for.
    objective : optional compiled objective ``F(y, beta, theta)``.
    gradient : optional compiled chain-rule matrices (rule 6 of the protocol).
    """

    rhs: Callable
    jac: Callable
    structure: ModelStructure
    objective: Callable | None = None
    gradient: Callable | None = None

    @property
    def state_names(self) -> list[str]:
        return self.structure.state_names

    @property
    def n_state(self) -> int:
        return self.structure.n_state


def _has(obj: Any, name: str) -> bool:
    """Whether obj has attribute ``name``, found without evaluating it (a lazily generated
    function of ``CompiledModel`` is a descriptor on the class and is not triggered)."""
    if name in getattr(obj, "__dict__", ()) or hasattr(type(obj), name):
        return True
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True


@lru_cache(maxsize=64)
def _canonical_names(structure: ModelStructure) -> list[str]:
    return structure.state_names


def require_model(model: Any, *, structure: ModelStructure | None = None,
                  need_jac: bool = False, need_gradient: bool = False) -> StateLayout:
    """Check ``model`` against :class:`CompiledModelProtocol`; returns its state layout.

    structure : if given, the model must have been compiled for it (e.g. ``spec.structure``).
    need_jac : the caller uses ``model.jac`` (Newton, continuation, tangent propagator).
    need_gradient : the caller uses ``model.gradient`` (the finite-step engines).
    Raises ValueError naming ``model`` and the broken rule.  Does not load ``jac`` unless
    ``need_jac`` (CompiledModel generates functions lazily).
    """
    for attr in (("rhs", "structure", "state_names") + (("jac",) if need_jac else ())
                 + (("gradient",) if need_gradient else ())):
        if not _has(model, attr):
            raise ValueError(f"model: needs attribute {attr!r} (a compiled model: "
                             f"derivations.compile_model(structure) or a "
                             f"solvers.model.ModelFunctions)")
    st = model.structure
    if not isinstance(st, ModelStructure):
        raise ValueError(f"model: .structure must be a derivations.spec.ModelStructure, got "
                         f"{type(st).__name__}")
    if structure is not None and st != structure:
        raise ValueError(f"model: compiled for structure {st.key()}, but the problem has "
                         f"{structure.key()}")
    names = model.state_names
    if isinstance(names, str) or not isinstance(names, Sequence) \
            or list(names) != _canonical_names(st):
        raise ValueError(f"model: state names {names!r} do not match its structure "
                         f"({st.state_names})")
    if model.rhs is None:
        raise ValueError("model: .rhs must be a compiled function (RHS_SIG), got None")
    if need_jac and model.jac is None:
        raise ValueError("model: .jac must be a compiled function (JAC_SIG), got None")
    if need_gradient and model.gradient is None:
        raise ValueError("model: .gradient must be a compiled function (GRAD_SIG), got None")
    return state_layout(st)


def evaluate_rhs(rhs: Callable, y: np.ndarray, beta: float, theta: np.ndarray) -> np.ndarray:
    """``f(y)`` (n,) from a compiled ``rhs(y, beta, theta, out)``."""
    out = np.empty(y.shape[0])
    rhs(np.ascontiguousarray(y, dtype=float), float(beta), theta, out)
    return out


def evaluate_jacobian(jac: Callable, y: np.ndarray, beta: float, theta: np.ndarray) -> np.ndarray:
    """``J = df/dy`` (n, n) from a compiled ``jac(y, beta, theta, J)``."""
    n = y.shape[0]
    J = np.empty((n, n))
    jac(np.ascontiguousarray(y, dtype=float), float(beta), theta, J)
    return J
