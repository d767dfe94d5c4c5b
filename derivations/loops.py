r"""The loop-form engine: route 2 of DESIGN.md section 2, with symbolic indices (SymPy).

Where :mod:`derivations.model` writes the fully expanded objective and differentiates it entry
by entry (code size and derivation time grow combinatorially with K and M), this module writes
the per-component gradient once, with symbolic indices k, l (components) and a, b (modes):

.. math::

    \nabla_{m_k} F = \sum_l G_{kl} m_l + \sum_a H_{ka} \mu_a, \qquad
    G_{kl} = \sum_t G^t_{kl}, \quad H_{ka} = \sum_t H^t_{ka},

each term t (:mod:`derivations.terms`: entropy, target cross-entropy, base cross-entropy)
giving its part in the Gaussian expectations ``Erho[k, l] = E_k[rho_l]`` and
``Er[k, a] = E_k[r_a]``.  The reduction to the summary statistics is derived symbolically from
``dm_k/dt = -(sum_j G_kj m_j + sum_b H_kb mu_b)`` by bilinearity of the dot product
(``m_k . m_l = Q_kl``, ``m_k . mu_a = R_ka``, ``mu_a . mu_b = T_ab``):

    dQ_kl/dt = m_k' . m_l + m_k . m_l' = -sum_j (G_kj Q_jl + G_lj Q_kj) - sum_b (H_kb R_lb + H_lb R_kb),
    dR_ka/dt = m_k' . mu_a = -sum_j G_kj R_ja - sum_b H_kb T_ba,
    dalpha_k/dt = -dF/dalpha_k = -w_k (f_k - sum_j w_j f_j),      F = sum_k w_k f_k + const,

with ``f_k = sum_t f^t_k``.  Time t is the gradient-flow time.  These expressions are printed
as loops over components and modes (:mod:`derivations.loopgen`), so the generated code has
O(1) lines in K, M and its cost is O(M^2 (M + K)) plus the Gaussian expectations
(:mod:`solvers.softmax`, two calls per evaluation: the M rows of variational logits share
the covariance ``Q / s``, the M rows of target logits share ``s T / Delta^2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import sympy as sp

from .spec import ModelStructure, require_reverse_kl_fixed
from .terms import LoopContext, ObjectiveTerm, active_terms

__all__ = ["LoopModel", "derive_loops", "loop_context"]


def loop_context() -> LoopContext:
    """The symbols of the loop form (one set for every structure)."""
    idx = [sp.Symbol(n, integer=True, nonnegative=True) for n in ("k", "l", "a")]
    base = {n: sp.IndexedBase(n, real=True) for n in ("w", "Q", "R", "T", "Erho", "Er", "Lq",
                                                       "Lp")}
    sym = {n: sp.Symbol(n, positive=True) for n in ("beta", "s", "Delta", "sigma0_sq")}
    return LoopContext(*idx, **base, gamma=sp.Symbol("gamma", nonnegative=True), **sym)


@dataclass(frozen=True)
class LoopModel:
    """The loop form of one structure.

    terms : the objective terms present.  ctx : the symbols.
    G, H, f : ``G_kl`` (in k, l), ``H_ka`` (in k, a), ``f_k`` (in k), summed over the terms.
    Gb, Hb, fb : IndexedBase symbols under which the reduction reads G, H, f.
    dQ, dR, dalpha : the reduced equations in k, l / k, a / k (``sympy.Sum`` over j and b with
        concrete ranges), read from Gb, Hb, fb and the statistics.
    j, b : the summation indices.
    """

    structure: ModelStructure
    terms: tuple[ObjectiveTerm, ...]
    ctx: LoopContext
    G: sp.Expr
    H: sp.Expr
    f: sp.Expr
    Gb: sp.IndexedBase
    Hb: sp.IndexedBase
    fb: sp.IndexedBase
    j: sp.Symbol
    b: sp.Symbol
    dQ: sp.Expr
    dR: sp.Expr
    dalpha: sp.Expr


# --- vectors as linear forms: lists of (coefficient, kind, index, limits or None) -----------

def _gram(c: LoopContext, kind1: str, i1: sp.Expr, kind2: str, i2: sp.Expr) -> sp.Expr:
    if kind1 == "m" and kind2 == "m":
        return c.Q[i1, i2]
    if kind1 == "m" and kind2 == "mu":
        return c.R[i1, i2]
    if kind1 == "mu" and kind2 == "m":
        return c.R[i2, i1]
    return c.T[i1, i2]


def _dot(c: LoopContext, form: list, kind: str, idx: sp.Expr) -> sp.Expr:
    """``form . v`` with v the vector (kind, idx) ('m', k) = m_k or ('mu', a) = mu_a."""
    out = sp.Integer(0)
    for coef, fk, fi, limits in form:
        term = coef * _gram(c, fk, fi, kind, idx)
        out += sp.Sum(term, limits) if limits is not None else term
    return out


@cache
def derive_loops(structure: ModelStructure) -> LoopModel:
    """The loop form of ``structure`` (memoised)."""
    if structure.objective != "reverse-kl":
        raise ValueError(f"structure: the loop-form engine (K or M > 3) implements only the "
                         f"reverse-kl objective, got {structure.objective!r}; the forward KL is "
                         "derived by the expanded engine for K, M <= 3")
    require_reverse_kl_fixed("structure", structure.objective, structure.variances)
    c = loop_context()
    K, M = structure.K, structure.M
    terms = tuple(active_terms(structure))
    G = sp.Add(*[t.G(c) for t in terms])
    H = sp.Add(*[t.H(c) for t in terms])
    f = sp.Add(*[t.per_component(c) for t in terms])
    Gb, Hb, fb = (sp.IndexedBase(n, real=True) for n in ("G", "H", "f"))
    j = sp.Symbol("j", integer=True, nonnegative=True)
    b = sp.Symbol("b", integer=True, nonnegative=True)
    k, l, a = c.k, c.l, c.a

    def velocity(i: sp.Expr) -> list:
        """dm_i/dt = -(sum_j G_ij m_j + sum_b H_ib mu_b) as a linear form."""
        return [(-Gb[i, j], "m", j, (j, 0, M - 1)), (-Hb[i, b], "mu", b, (b, 0, K - 1))]

    dQ = _dot(c, velocity(k), "m", l) + _dot(c, velocity(l), "m", k)
    dR = _dot(c, velocity(k), "mu", a)
    dalpha = -c.w[k] * (fb[k] - sp.Sum(c.w[j] * fb[j], (j, 0, M - 1)))
    return LoopModel(structure, terms, c, G, H, f, Gb, Hb, fb, j, b, dQ, dR, dalpha)
