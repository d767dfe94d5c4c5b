r"""Base cross-entropy ``-gamma E_q log p0`` of the geometric path, ``p0 = N(0, sigma0^2 I)``.

``-log p0(x) = |x|^2 / (2 sigma0^2) + const``, ``E_k |x|^2 = Q_kk + d s``:

    f_k = gamma Q_kk / (2 sigma0^2),   G_kl = w_k gamma / sigma0^2 delta_kl,   H_ka = 0,

with gamma = 1 - beta.  Absent on the tempering path (gamma = 0).
"""

from __future__ import annotations

import sympy as sp

from ..spec import ModelStructure
from . import LoopContext, ObjectiveTerm, register_term


@register_term
class BaseCrossEntropy(ObjectiveTerm):
    name = "base_cross_entropy"
    summary = "-gamma E_q log p0: shrinkage towards the base of the geometric path"

    def applies(self, structure: ModelStructure) -> bool:
        return structure.path == "geometric"

    def per_component(self, c: LoopContext) -> sp.Expr:
        return c.gamma * c.Q[c.k, c.k] / (2 * c.sigma0_sq)

    def G(self, c: LoopContext) -> sp.Expr:
        return c.w[c.k] * c.gamma / c.sigma0_sq * sp.KroneckerDelta(c.k, c.l)
