r"""Target cross-entropy ``-beta E_q log p`` (DESIGN.md section 2, route 2).

With ``v_a = log pi_a + (x . mu_a - T_aa / 2) / Delta``, ``log p(x) = LSE_a(v_a) -
|x|^2 / (2 Delta) + const``, so

    f_k = -beta (Lp_k - Q_kk / (2 Delta))            (Lp_k = E_k LSE_a(v_a)),

and ``grad_{m_k} = -(beta w_k / Delta)(sum_a E_k[r_a] mu_a - m_k)``:

    G_kl = w_k beta / Delta delta_kl,   H_ka = -w_k beta / Delta E_k[r_a].

The attraction of every component to the modes, through the target responsibilities.
"""

from __future__ import annotations

import sympy as sp

from . import LoopContext, ObjectiveTerm, register_term


@register_term
class TargetCrossEntropy(ObjectiveTerm):
    name = "target_cross_entropy"
    summary = "-beta E_q log p: attraction through the target responsibilities E_k[r_a]"

    def per_component(self, c: LoopContext) -> sp.Expr:
        return -c.beta * (c.Lp[c.k] - c.Q[c.k, c.k] / (2 * c.Delta))

    def G(self, c: LoopContext) -> sp.Expr:
        return c.w[c.k] * c.beta / c.Delta * sp.KroneckerDelta(c.k, c.l)

    def H(self, c: LoopContext) -> sp.Expr:
        return -c.w[c.k] * c.beta / c.Delta * c.Er[c.k, c.a]
