r"""The objective in summary statistics and the reduced equations derived from it (SymPy).

Objective (DESIGN.md sections 1-2).  With ``x ~ N(m_k, s I)`` the projections ``x . mu_a`` are
Gaussian with mean ``R_ka`` and covariance ``s T``, and ``x . m_j`` Gaussian with mean
``Q_kj`` and covariance ``s Q``.  Writing each log-sum-exp relative to a reference entry
(target mode 1 for p, the component k itself for q), the annealed reverse KL is

.. math::

    F = \sum_k w_k \Big[ \log w_k + \mathcal{L}(a^q_k; C^q_k)
        - \beta \Big( \log\pi_1 + \frac{R_{k1} - T_{11}/2}{\Delta} + \mathcal{L}(a^p_k; C^p_k) \Big)
        + \Big(\frac{\beta}{\Delta} + \frac{\gamma}{\sigma_0^2}\Big) \frac{Q_{kk}}{2} \Big] + c(\beta, \gamma, d)

with, for j != k and b, c >= 2,

* ``a^q_kj = log(w_j / w_k) - (Q_jj + Q_kk - 2 Q_jk) / (2 s)``,
  ``C^q_k,ij = (Q_ij - Q_ik - Q_jk + Q_kk) / s``;
* ``a^p_kb = log(pi_b / pi_1) + (R_kb - R_k1 - (T_bb - T_11) / 2) / Delta``,
  ``C^p_k,bc = s (T_bc - T_b1 - T_1c + T_11) / Delta^2``;
* ``c = -d/2 - (d/2) log(2 pi s) + beta d (s/Delta + log(2 pi Delta)) / 2
  + gamma d (s/sigma0^2 + log(2 pi sigma0^2)) / 2``, independent of the state.

The forward KL (``structure.objective == "forward-kl"``, paths inflation and mixture) is built
by :func:`derivations.forward_kl.forward_kl_objective` in the same symbols; everything below
applies to it unchanged.

Dynamics (route 1 of DESIGN.md): with Q entries treated as independent symbols,
``G_kl = dF/dQ_kl + dF/dQ_lk`` and ``H_ka = dF/dR_ka``,

    dQ/dt = -(G Q + Q G^T + H R^T + R H^T),   dR/dt = -(G R + H T),   dalpha/dt = -dF/dalpha.

The state is stored as the upper triangle of Q (one symbol per unordered pair), so
``G_kl = dF/dq_kl`` for k != l and ``G_kk = 2 dF/dq_kk``.  Time t is the gradient-flow time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import sympy as sp

from .functions import gauss_lse
from .spec import BASE_PATHS, ModelStructure, parameter_names, require_reverse_kl_fixed, state_names

__all__ = ["ReducedModel", "derive"]


@dataclass(frozen=True)
class ReducedModel:
    """Symbolic reduced model of one structure (K, M, trainable weights, path).

    Attributes
    ----------
    structure : the ModelStructure.
    state : state symbols, ordered as :func:`derivations.spec.state_names`.
    params : numeric parameter symbols, ordered as :func:`derivations.spec.parameter_names`.
    beta, gamma, d : inverse temperature, weight of the base (gamma = 1 - beta on the geometric
        path, 0 for tempering), dimension (enters only the constant).
    Q, R, T : SymPy matrices (M x M symmetric, M x K, K x K symmetric) of the symbols.
    w : weights (symbols, or softmax(alpha) expressions when they train).
    objective : F, including the state-independent constant c(beta, gamma, d).
    G, H : the matrices of the chain rule (M x M, M x K).
    rhs : list of dy/dt expressions, ordered as ``state``; gamma already substituted
        (1 - beta or 0) so the right-hand side depends on beta only.
    """

    structure: ModelStructure
    state: tuple[sp.Symbol, ...]
    params: tuple[sp.Symbol, ...]
    beta: sp.Symbol
    gamma: sp.Symbol
    d: sp.Symbol
    Q: sp.Matrix
    R: sp.Matrix
    T: sp.Matrix
    w: tuple[sp.Expr, ...]
    objective: sp.Expr
    G: sp.Matrix
    H: sp.Matrix
    dalpha: tuple[sp.Expr, ...]
    rhs: tuple[sp.Expr, ...]
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def gamma_value(self) -> sp.Expr:
        """gamma as a function of beta on this path."""
        return 1 - self.beta if self.structure.path in BASE_PATHS else sp.Integer(0)

    @property
    def objective_state(self) -> sp.Expr:
        """F without its state-independent constant, with gamma substituted."""
        return self.objective_without_constant.subs(self.gamma, self.gamma_value)

    @property
    def objective_without_constant(self) -> sp.Expr:
        return self.objective - self.constant

    @property
    def constant(self) -> sp.Expr:
        s, bt, g, d = self.params[self._pidx("s")], self.beta, self.gamma, self.d
        Delta = self.params[self._pidx("Delta")]
        if self.structure.objective == "forward-kl":
            from .forward_kl import forward_kl_constant
            s0 = self.params[self._pidx("sigma0_sq")] if self.structure.path in BASE_PATHS else None
            return forward_kl_constant(self.structure, self.T, self._pi(), Delta, s, bt, g, d, s0)
        c = -d / 2 - d / 2 * sp.log(2 * sp.pi * s) + bt * d / 2 * (s / Delta + sp.log(2 * sp.pi * Delta))
        if self.structure.path == "geometric":
            s0 = self.params[self._pidx("sigma0_sq")]
            c += g * d / 2 * (s / s0 + sp.log(2 * sp.pi * s0))
        return c

    def _pidx(self, name: str) -> int:
        return [p.name for p in self.params].index(name)

    def _pi(self) -> list[sp.Symbol]:
        return [self.params[self._pidx(f"pi_{a + 1}")] for a in range(self.structure.K)]

    def jacobian(self) -> sp.Matrix:
        """``J_ij = d(dy_i/dt)/dy_j`` (n x n), derived symbolically and memoised."""
        if "jac" not in self._cache:
            self._cache["jac"] = sp.Matrix(self.rhs).jacobian(sp.Matrix(self.state))
        return self._cache["jac"]

    def fixed_point_equations(self) -> list[sp.Eq]:
        """``0 = dy/dt`` for every state variable."""
        return [sp.Eq(sp.Integer(0), e) for e in self.rhs]


def _symbols(names: list[str]) -> tuple[sp.Symbol, ...]:
    return tuple(sp.Symbol(n, real=True) for n in names)


@cache
def derive(structure: ModelStructure) -> ReducedModel:
    """Derive F, G, H and the reduced ODEs for a structure (memoised per structure)."""
    if structure.objective != "forward-kl":
        require_reverse_kl_fixed("structure", structure.objective, structure.variances)
    elif structure.variances != "fixed":
        raise ValueError(f"structure: variances={structure.variances!r} is not implemented for "
                         "the forward-kl objective (only fixed)")
    K, M, tw, path = structure.K, structure.M, structure.train_weights, structure.path
    state = _symbols(state_names(K, M, tw))
    params = _symbols(parameter_names(K, M, tw, path))
    by_name = {s.name: s for s in state + params}
    beta = sp.Symbol("beta", positive=True)
    gamma = sp.Symbol("gamma", nonnegative=True)
    d = sp.Symbol("d", positive=True)
    Delta, s = by_name["Delta"], by_name["s"]

    def q(k: int, l: int) -> sp.Symbol:
        k, l = min(k, l), max(k, l)
        return by_name[f"Q_{k + 1}_{l + 1}"]

    def t(a: int, b: int) -> sp.Symbol:
        a, b = min(a, b), max(a, b)
        return by_name[f"T_{a + 1}_{b + 1}"]

    Q = sp.Matrix(M, M, lambda k, l: q(k, l))
    R = sp.Matrix(M, K, lambda k, a: by_name[f"R_{k + 1}_{a + 1}"])
    T = sp.Matrix(K, K, lambda a, b: t(a, b))
    pi = [by_name[f"pi_{a + 1}"] for a in range(K)]

    if tw:
        alpha = [by_name[f"alpha_{k + 1}"] for k in range(M)]
        lse_alpha = sp.log(sum(sp.exp(x) for x in alpha))
        logw = [x - lse_alpha for x in alpha]
        w = tuple(sp.exp(lw) for lw in logw)
    else:
        w = tuple(by_name[f"w_{k + 1}"] for k in range(M))
        logw = [sp.log(x) for x in w]

    inv_base = sp.Integer(0)
    if path == "geometric":
        inv_base = gamma / by_name["sigma0_sq"]

    F = sp.Integer(0)
    for k in range(M) if structure.objective == "reverse-kl" else ():
        others = [j for j in range(M) if j != k]
        if others:
            aq = [logw[j] - logw[k] - (q(j, j) + q(k, k) - 2 * q(j, k)) / (2 * s) for j in others]
            Cq = sp.Matrix(len(others), len(others),
                           lambda i, j: (q(others[i], others[j]) - q(others[i], k) - q(others[j], k)
                                         + q(k, k)) / s)
            Lq = gauss_lse(aq, Cq)
        else:
            Lq = sp.Integer(0)
        if K > 1:
            ap = [sp.log(pi[b] / pi[0]) + (R[k, b] - R[k, 0] - (T[b, b] - T[0, 0]) / 2) / Delta
                  for b in range(1, K)]
            Cp = sp.Matrix(K - 1, K - 1,
                           lambda i, j: s * (T[i + 1, j + 1] - T[i + 1, 0] - T[0, j + 1] + T[0, 0])
                           / Delta**2)
            Lp = gauss_lse(ap, Cp)
        else:
            Lp = sp.Integer(0)
        Fk = (logw[k] + Lq
              - beta * (sp.log(pi[0]) + (R[k, 0] - T[0, 0] / 2) / Delta + Lp)
              + (beta / Delta + inv_base) * Q[k, k] / 2)
        F += w[k] * Fk
    if structure.objective == "forward-kl":
        from .forward_kl import forward_kl_objective
        F = forward_kl_objective(structure, Q, R, pi, logw, Delta, s, beta, gamma,
                                 by_name.get("sigma0_sq"))

    model_stub = ReducedModel(structure, state, params, beta, gamma, d, Q, R, T, w,
                              sp.Integer(0), sp.zeros(M, M), sp.zeros(M, K), (), ())
    F_total = F + model_stub.constant

    G = sp.Matrix(M, M, lambda k, l: (2 if k == l else 1) * sp.diff(F, q(k, l)))
    H = sp.Matrix(M, K, lambda k, a: sp.diff(F, R[k, a]))
    dQ = -(G * Q + Q * G.T + H * R.T + R * H.T)
    dR = -(G * R + H * T)
    dalpha = tuple(-sp.diff(F, by_name[f"alpha_{k + 1}"]) for k in range(M)) if tw else ()

    gval = 1 - beta if path in BASE_PATHS else sp.Integer(0)
    rhs = [dQ[k, l] for k in range(M) for l in range(k, M)]
    rhs += [dR[k, a] for k in range(M) for a in range(K)]
    rhs += list(dalpha)
    rhs = tuple(e.subs(gamma, gval) for e in rhs)

    return ReducedModel(structure, state, params, beta, gamma, d, Q, R, T, w, F_total, G, H,
                        dalpha, rhs)
