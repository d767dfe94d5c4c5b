r"""Entropy term ``E_q log q`` (DESIGN.md section 2, route 2).

With ``x ~ N(m_k, s I)`` and ``u_j = log w_j + (x . m_j - Q_jj / 2) / s``,
``log q(x) = LSE_j(u_j) - |x|^2 / (2 s) + const`` and ``E_k |x|^2 = Q_kk + d s``, so

    f_k = Lq_k - Q_kk / (2 s)                        (Lq_k = E_k LSE_j(u_j)),

and by Stein's lemma with ``E_q grad_m log q = 0``, ``grad_{m_k} = (w_k / s)
(sum_l E_k[rho_l] m_l - m_k)``:

    G_kl = (w_k / s) (E_k[rho_l] - delta_kl),   H_ka = 0.

G is symmetric because ``w_k E_k[rho_l] = int w_k N_k w_l N_l / q``.  The term repels
distinct components and is blind to the target.
"""

from __future__ import annotations

import sympy as sp

from . import LoopContext, ObjectiveTerm, register_term


@register_term
class Entropy(ObjectiveTerm):
    name = "entropy"
    summary = "E_q log q: repulsion through the variational responsibilities E_k[rho_l]"

    def per_component(self, c: LoopContext) -> sp.Expr:
        return c.Lq[c.k] - c.Q[c.k, c.k] / (2 * c.s)

    def G(self, c: LoopContext) -> sp.Expr:
        return c.w[c.k] / c.s * (c.Erho[c.k, c.l] - sp.KroneckerDelta(c.k, c.l))
