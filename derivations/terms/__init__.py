r"""Objective terms of the loop-form engine (DESIGN.md sections 5-6), a registry.

The annealed reverse KL is a sum of terms, ``F = sum_t F_t``; each term is one module of this
package providing its summary-statistic form with symbolic indices (SymPy ``Indexed``,
component indices k, l, mode index a):

* ``per_component(ctx)``: ``f^t_k`` with ``F_t = sum_k w_k f^t_k`` (+ constants), written in
  the Gaussian expectations of :class:`LoopContext` (``Lq[k] = E_k LSE_j(u_j)``,
  ``Lp[k] = E_k LSE_a(v_a)``) and the statistics;
* ``G(ctx)``: its part of ``G_kl`` and ``H(ctx)``: of ``H_ka`` in
  ``grad_{m_k} F = sum_l G_kl m_l + sum_a H_ka mu_a`` (route 2 of DESIGN.md section 2:
  Stein's lemma and ``E_q grad log q = 0``), in ``Erho[k, l] = E_k[rho_l]`` and
  ``Er[k, a] = E_k[r_a]``;
* ``applies(structure)``: whether the term is present (the base cross-entropy only on the
  geometric path).

The contract (numbered rules):

1. A term is a subclass of :class:`ObjectiveTerm` with a unique ``name``, registered with
   :func:`register_term`, in its own module of this package (imported by
   :func:`load_terms`).
2. Its expressions use only the symbols of :class:`LoopContext`; k, l range over components
   0..M-1, a over modes 0..K-1; ``KroneckerDelta`` is allowed.
3. ``G`` and ``H`` must be the exact gradient of ``sum_k w_k f^t_k`` with respect to the means
   (tests/test_loops.py checks the sum of all terms against the expanded engine and against a
   direct R^d computation); ``G`` must be symmetric in (k, l).
4. Constants independent of the state may be dropped from ``per_component`` (they cancel in
   the weight dynamics ``dalpha_k/dt = -w_k (f_k - sum_j w_j f_j)``).

A new objective (e.g. the forward KL) is a new set of terms; the reduction to (Q, R, alpha)
and the code generation (:mod:`derivations.loops`) do not change.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import ClassVar

import sympy as sp

from ..spec import ModelStructure

__all__ = ["LoopContext", "ObjectiveTerm", "TERMS", "register_term", "load_terms",
           "active_terms"]


@dataclass(frozen=True)
class LoopContext:
    """The symbols a term may use (rule 2)."""

    k: sp.Idx
    l: sp.Idx
    a: sp.Idx
    w: sp.IndexedBase          # w[k], the mixture weights
    Q: sp.IndexedBase          # Q[k, l]
    R: sp.IndexedBase          # R[k, a]
    T: sp.IndexedBase          # T[a, b]
    Erho: sp.IndexedBase       # Erho[k, l] = E_{x ~ N(m_k, s I)} rho_l(x)
    Er: sp.IndexedBase         # Er[k, a] = E_k r_a(x)
    Lq: sp.IndexedBase         # Lq[k] = E_k log sum_j exp(u_j), u_j = log w_j + (x.m_j - Q_jj/2)/s
    Lp: sp.IndexedBase         # Lp[k] = E_k log sum_a exp(v_a), v_a = log pi_a + (x.mu_a - T_aa/2)/Delta
    beta: sp.Symbol
    gamma: sp.Symbol
    s: sp.Symbol
    Delta: sp.Symbol
    sigma0_sq: sp.Symbol


class ObjectiveTerm:
    """One term of the objective (rules: the package docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""

    def applies(self, structure: ModelStructure) -> bool:
        return True

    def per_component(self, c: LoopContext) -> sp.Expr:  # pragma: no cover - abstract
        raise NotImplementedError

    def G(self, c: LoopContext) -> sp.Expr:  # pragma: no cover - abstract
        raise NotImplementedError

    def H(self, c: LoopContext) -> sp.Expr:
        return sp.Integer(0)


#: name -> term class
TERMS: dict[str, type[ObjectiveTerm]] = {}


def register_term(cls: type[ObjectiveTerm]) -> type[ObjectiveTerm]:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"term: {cls.__name__} needs a class attribute name")
    if name in TERMS and TERMS[name] is not cls:
        raise ValueError(f"term: the name {name!r} is registered already")
    TERMS[name] = cls
    return cls


def load_terms() -> dict[str, type[ObjectiveTerm]]:
    """Import every module of this package (each registers its terms); returns TERMS."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return TERMS


def active_terms(structure: ModelStructure) -> list[ObjectiveTerm]:
    """The registered terms present in ``structure``'s objective, in name order."""
    load_terms()
    return [TERMS[n]() for n in sorted(TERMS) if TERMS[n]().applies(structure)]
