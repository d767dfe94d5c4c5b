r"""The forward KL ``KL(p_beta || q)`` in summary statistics (DESIGN.md section 9).

Objective.  With ``q(x) = sum_j w_j N(x; m_j, s I)``,

.. math::

    \log q(x) = -\frac d2 \log(2\pi s) - \frac{|x|^2}{2s} + \operatorname{LSE}_j u_j(x),
    \qquad u_j(x) = \log w_j + \frac{x\cdot m_j - Q_{jj}/2}{s},

so ``F = E_{p_beta} log p_beta - E_{p_beta} log q`` is

.. math::

    F = -\,E_{p_\beta}\big[\operatorname{LSE}_j u_j(x)\big] + c,\qquad
    c = E_{p_\beta}\log p_\beta + \frac d2 \log(2\pi s) + \frac{E_{p_\beta}|x|^2}{2s}.

``p_beta`` is a Gaussian mixture on both forward-KL paths, and under one of its components
``N(nu, D I)`` the logits are jointly Gaussian: ``u_j`` has mean ``log w_j + (nu.m_j -
Q_jj/2)/s`` and covariance ``D Q / s^2``.  Writing the LSE relative to the reference entry
j = 1 (as :mod:`derivations.model` does for the reverse KL),
``E LSE_j u_j = E u_1 + L(v; C)`` with, for i, j >= 2,

* ``v_j = log(w_j / w_1) + (nu.m_j - nu.m_1 - (Q_jj - Q_11) / 2) / s``,
* ``C_ij = D (Q_ij - Q_i1 - Q_1j + Q_11) / s^2``,

and ``L`` the Gaussian expectation of ``log(1 + sum_j e^{v_j})``
(:func:`derivations.functions.gauss_lse`; absent for M = 1).  The two paths:

* ``"inflation"``: ``p_beta = sum_a pi_a N(mu_a, (Delta / beta) I)``, components
  ``(weight pi_a, nu.m_j = R_ja, D = Delta / beta)``;
* ``"mixture"``: ``p_beta = beta p + gamma p0``, gamma = 1 - beta, ``p0 = N(0, sigma0^2 I)``:
  components ``(beta pi_a, R_ja, Delta)`` and the base ``(gamma, 0, sigma0^2)``.

Both are exactly samplable; the inflated mixture equals ``p^beta`` (normalised) only for K = 1.

The constant c does not depend on the state.  ``E|x|^2`` is ``sum_a pi_a T_aa + d Delta /
beta`` (inflation) or ``beta (sum_a pi_a T_aa + d Delta) + gamma d sigma0^2`` (mixture).  The
negative entropy ``E_{p_beta} log p_beta`` has a closed form only for one Gaussian: K = 1 on
the inflation path, ``-(d/2) (1 + log(2 pi Delta / beta))``.  Otherwise (K >= 2, or the mixture
path) :func:`forward_kl_constant` leaves it out, and the reported objective is the forward KL
*up to the state-independent* ``E_{p_beta} log p_beta`` (the cross-entropy
``-E_{p_beta} log q``); :func:`entropy_in_closed_form` says which.  Gradients, fixed points and
Jacobians do not see the constant.

Gradient (route 2, for the tests): ``-grad_{m_k} F = E_{p_beta}[rho_k(x) (x - m_k)] / s`` with
``rho_k = softmax_k(u)``; weights ``-dF/dalpha_k = E_{p_beta}[rho_k] - w_k``.

Trainable variances (one common s; :func:`derivations.model.variance_treatment`).  The
constant splits as ``c = c0 + c_s(s)``, c0 independent of s (:func:`forward_kl_constant_c0`)
and (:func:`forward_kl_variance_terms`)

.. math::

    c_s(s) = \frac d2 \log s + \frac{E_{p_\beta}|x|^2}{2s}
           = \frac d2 \log s + \frac{d\,D_\beta + m_\beta}{2s},

with the per-coordinate second moment ``D_beta = Delta/beta`` (inflation) or ``beta Delta +
gamma sigma0^2`` (mixture) and the O(1) part ``m_beta = sum_a pi_a T_aa`` (inflation) or
``beta sum_a pi_a T_aa`` (mixture).  ``F = c_s(s) + F_state(Q, R, w; s) + c0`` is exact at
every d: the LSE over j has Gaussian logit differences because the common ``|x|^2/(2s)`` has
been taken out, and the only d-dependence is explicit in c_s.

* Natural time scale (``tied``): ``d(log s)/dt = -(1/d) dF/d(log s)``, i.e.

  .. math::

      \frac{d\log s}{dt} = \frac12\Big(\frac{D_\beta}{s} - 1\Big)
          + \frac{\mathrm{inv\_d}\; m_\beta}{2s} - \mathrm{inv\_d}\; s\,\frac{\partial F_\mathrm{state}}{\partial s},
      \qquad \mathrm{inv\_d} = 1/d,

  exact at every d (unit: the means' gradient-flow time t; log s has learning rate 1/d of the
  means').  At equal learning rates it would be O(d).
* Adiabatic limit (``adiabatic``, :func:`forward_kl_adiabatic_variance`): the d -> infinity
  limit of the tied flow's fast variable, ``s* = D_beta``: ``Delta/beta`` (inflation),
  ``beta Delta + (1 - beta) sigma0^2`` (mixture).  The exact stationary s of the tied flow at
  fixed means solves ``s = D_beta + inv_d (m_beta - 2 s^2 dF_state/ds)``.  For M = 1 it is in
  closed form (``F_state = -sum_c weight_c (nu_c.m_1 - Q_11/2)/s + const`` over the
  components c of p_beta is linear in 1/s), ``s = E_{p_beta}|x - m_1|^2 / d`` (moment
  matching):

  - inflation: ``s = Delta/beta + inv_d sum_a pi_a (T_aa - 2 R_1a + Q_11)``;
  - mixture: ``s = beta Delta + gamma sigma0^2 + inv_d (beta sum_a pi_a (T_aa - 2 R_1a +
    Q_11) + gamma Q_11)``; at the fixed point m = beta mu (K = 1) this is ``beta Delta +
    gamma sigma0^2 + beta gamma |mu|^2 / d``.

  For M >= 2, s enters the logit covariance ``D Q / s^2`` of L and the correction is implicit;
  its first order, ``s = D_beta + inv_d s_1 + O(inv_d^2)`` with ``s_1 = m_beta - 2 D_beta^2
  dF_state/ds |_{s = D_beta}``, is :func:`adiabatic_variance_first_order`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy as sp

from .functions import gauss_lse
from .spec import ModelStructure

__all__ = ["forward_kl_objective", "forward_kl_constant", "forward_kl_constant_c0",
           "forward_kl_variance_terms", "forward_kl_adiabatic_variance",
           "adiabatic_variance_first_order", "entropy_in_closed_form", "expected_lse",
           "second_moments"]


def expected_lse(mean: Sequence[sp.Expr], cov: Callable[[int, int], sp.Expr]) -> sp.Expr:
    """``E LSE_j u_j`` for ``u ~ N(mean, C)``, ``C_ij = cov(i, j)`` (0-based, symmetric),
    relative to the reference entry j = 0: ``mean_0 + L(mean_j - mean_0; C_ij - C_i0 - C_0j +
    C_00)`` over j >= 1."""
    M = len(mean)
    if M == 1:
        return mean[0]
    v = [mean[j] - mean[0] for j in range(1, M)]
    C = sp.Matrix(M - 1, M - 1, lambda i, j: cov(i + 1, j + 1) - cov(i + 1, 0) - cov(0, j + 1)
                  + cov(0, 0))
    return mean[0] + gauss_lse(v, C)


def forward_kl_objective(structure: ModelStructure, Q: sp.Matrix, R: sp.Matrix,
                         pi: Sequence[sp.Expr], logw: Sequence[sp.Expr], Delta: sp.Expr,
                         s: sp.Expr, beta: sp.Expr, gamma: sp.Expr,
                         sigma0_sq: sp.Expr | None) -> sp.Expr:
    """The state-dependent part of the forward KL, ``-E_{p_beta} LSE_j u_j(x)`` (module
    docstring), for ``structure.path`` in ("inflation", "mixture").

    Q (M x M), R (M x K): matrices of the state symbols; pi (K,), logw (M,): target weights and
    log variational weights; gamma the base weight of the mixture path (substituted by
    1 - beta downstream); sigma0_sq the base variance (mixture path only).
    """
    K, M = structure.K, structure.M

    def component(nu_dot: Callable[[int], sp.Expr], D: sp.Expr) -> sp.Expr:
        mean = [logw[j] + (nu_dot(j) - Q[j, j] / 2) / s for j in range(M)]
        return expected_lse(mean, lambda i, j: D * Q[i, j] / s**2)

    if structure.path == "inflation":
        return -sum(pi[a] * component(lambda j, a=a: R[j, a], Delta / beta) for a in range(K))
    if structure.path == "mixture":
        if sigma0_sq is None:
            raise ValueError("sigma0_sq: the mixture path needs the base variance")
        target = sum(pi[a] * component(lambda j, a=a: R[j, a], Delta) for a in range(K))
        base = component(lambda j: sp.Integer(0), sigma0_sq)
        return -(beta * target + gamma * base)
    raise ValueError(f"structure.path: the forward KL takes 'inflation' or 'mixture', "
                     f"got {structure.path!r}")


def entropy_in_closed_form(structure: ModelStructure) -> bool:
    """True when :func:`forward_kl_constant` includes ``E_{p_beta} log p_beta`` (K = 1 on the
    inflation path: p_beta is one Gaussian); otherwise the objective is the forward KL up to
    that state-independent term."""
    return structure.K == 1 and structure.path == "inflation"


def second_moments(structure: ModelStructure, T: sp.Matrix, pi: Sequence[sp.Expr],
                   Delta: sp.Expr, beta: sp.Expr, gamma: sp.Expr,
                   sigma0_sq: sp.Expr | None) -> tuple[sp.Expr, sp.Expr]:
    """``(D_beta, m_beta)`` with ``E_{p_beta}|x|^2 = d D_beta + m_beta``: the per-coordinate
    variance-like part (Delta/beta, or beta Delta + gamma sigma0^2 on the mixture path) and
    the O(1) part (sum_a pi_a T_aa, times beta on the mixture path)."""
    mean_sq = sum(pi[a] * T[a, a] for a in range(structure.K))
    if structure.path == "inflation":
        return Delta / beta, mean_sq
    if structure.path == "mixture":
        if sigma0_sq is None:
            raise ValueError("sigma0_sq: the mixture path needs the base variance")
        return beta * Delta + gamma * sigma0_sq, beta * mean_sq
    raise ValueError(f"structure.path: the forward KL takes 'inflation' or 'mixture', "
                     f"got {structure.path!r}")


def forward_kl_variance_terms(structure: ModelStructure, T: sp.Matrix, pi: Sequence[sp.Expr],
                              Delta: sp.Expr, s: sp.Expr, beta: sp.Expr, gamma: sp.Expr,
                              d: sp.Expr, sigma0_sq: sp.Expr | None) -> sp.Expr:
    """``c_s(s) = (d/2) log s + E_{p_beta}|x|^2 / (2 s)``: the s-dependent part of the
    constant (module docstring), exact at every d."""
    D_beta, m_beta = second_moments(structure, T, pi, Delta, beta, gamma, sigma0_sq)
    return d / 2 * sp.log(s) + (d * D_beta + m_beta) / (2 * s)


def forward_kl_constant_c0(structure: ModelStructure, Delta: sp.Expr, beta: sp.Expr,
                           d: sp.Expr) -> sp.Expr:
    """``c0 = (d/2) log(2 pi) [+ E_{p_beta} log p_beta]``: the s-independent part of the
    constant; the bracket only where :func:`entropy_in_closed_form`."""
    c0 = d / 2 * sp.log(2 * sp.pi)
    if entropy_in_closed_form(structure):
        c0 -= d / 2 * (1 + sp.log(2 * sp.pi * Delta / beta))
    return c0


def forward_kl_constant(structure: ModelStructure, T: sp.Matrix, pi: Sequence[sp.Expr],
                        Delta: sp.Expr, s: sp.Expr, beta: sp.Expr, gamma: sp.Expr, d: sp.Expr,
                        sigma0_sq: sp.Expr | None) -> sp.Expr:
    """The state-independent part ``c = [E_{p_beta} log p_beta] + (d/2) log(2 pi s) +
    E_{p_beta}|x|^2 / (2 s)`` (= c0 + c_s(s)); the bracket only where
    :func:`entropy_in_closed_form`."""
    return (forward_kl_constant_c0(structure, Delta, beta, d)
            + forward_kl_variance_terms(structure, T, pi, Delta, s, beta, gamma, d, sigma0_sq))


def forward_kl_adiabatic_variance(structure: ModelStructure, Delta: sp.Expr, beta: sp.Expr,
                                  gamma: sp.Expr, sigma0_sq: sp.Expr | None) -> sp.Expr:
    """The adiabatic ``s* = D_beta``: Delta/beta (inflation) or beta Delta + gamma sigma0^2
    (mixture), the minimiser of c_s at d -> infinity (module docstring)."""
    return second_moments(structure, sp.zeros(structure.K, structure.K),
                          [sp.Integer(0)] * structure.K, Delta, beta, gamma, sigma0_sq)[0]


def adiabatic_variance_first_order(structure: ModelStructure, F_state: sp.Expr, s: sp.Symbol,
                                   T: sp.Matrix, pi: Sequence[sp.Expr], Delta: sp.Expr,
                                   beta: sp.Expr, gamma: sp.Expr,
                                   sigma0_sq: sp.Expr | None) -> tuple[sp.Expr, sp.Expr]:
    """``(s0, s1)`` of the stationary s of the tied flow at fixed means, ``s = s0 + inv_d s1 +
    O(inv_d^2)``: ``s0 = D_beta`` and ``s1 = m_beta - 2 s0^2 dF_state/ds |_{s = s0}``
    (``F_state`` the state part written with the symbol s).  Exact (no O(inv_d^2)) for
    M = 1, where ``s^2 dF_state/ds`` does not depend on s."""
    D_beta, m_beta = second_moments(structure, T, pi, Delta, beta, gamma, sigma0_sq)
    return D_beta, m_beta - 2 * D_beta**2 * sp.diff(F_state, s).subs(s, D_beta)
