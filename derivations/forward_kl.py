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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy as sp

from .functions import gauss_lse
from .spec import ModelStructure

__all__ = ["forward_kl_objective", "forward_kl_constant", "entropy_in_closed_form",
           "expected_lse"]


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


def forward_kl_constant(structure: ModelStructure, T: sp.Matrix, pi: Sequence[sp.Expr],
                        Delta: sp.Expr, s: sp.Expr, beta: sp.Expr, gamma: sp.Expr, d: sp.Expr,
                        sigma0_sq: sp.Expr | None) -> sp.Expr:
    """The state-independent part ``c = [E_{p_beta} log p_beta] + (d/2) log(2 pi s) +
    E_{p_beta}|x|^2 / (2 s)``; the bracket only where :func:`entropy_in_closed_form`."""
    K = structure.K
    mean_sq = sum(pi[a] * T[a, a] for a in range(K))
    if structure.path == "inflation":
        ex2 = mean_sq + d * Delta / beta
    else:
        ex2 = beta * (mean_sq + d * Delta) + gamma * d * sigma0_sq
    c = d / 2 * sp.log(2 * sp.pi * s) + ex2 / (2 * s)
    if entropy_in_closed_form(structure):
        c -= d / 2 * (1 + sp.log(2 * sp.pi * Delta / beta))
    return c
