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
applies to it unchanged, except the s-dependent constant of the variance treatment
(:func:`variance_treatment`: ``(d/2) log s + E_{p_beta}|x|^2/(2 s)``, s* = Delta/beta or
beta Delta + (1 - beta) sigma0^2).

Dynamics (route 1 of DESIGN.md): with Q entries treated as independent symbols,
``G_kl = dF/dQ_kl + dF/dQ_lk`` and ``H_ka = dF/dR_ka``,

    dQ/dt = -(G Q + Q G^T + H R^T + R H^T),   dR/dt = -(G R + H T),   dalpha/dt = -dF/dalpha.

The state is stored as the upper triangle of Q (one symbol per unordered pair), so
``G_kl = dF/dq_kl`` for k != l and ``G_kk = 2 dF/dq_kk``.  Time t is the gradient-flow time.

Variances (DESIGN.md section 9, :func:`variance_treatment`): F is built with a symbol s, then
s is a parameter (``fixed``), the state ``exp(log_s)`` with the extra equation
``d(log s)/dt = -(1/d) dF/d(log s)`` (``tied``; d = 1/inv_d exactly, so the s-dependent
d-terms of the constant, ``-(d/2) log s + (beta/Delta + gamma/sigma0^2) d s / 2``, enter F) or
``s*(beta) = 1/(beta/Delta + gamma/sigma0^2)`` substituted (``adiabatic``, the d -> infinity
limit).  One common s only: per-component s_k make the logit differences contain
``|x|^2 (1/s_k - 1/s_j) / 2``, not Gaussian at finite d, so they do not reduce exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import sympy as sp

from .functions import gauss_lse
from .spec import (
    BASE_PATHS,
    ModelStructure,
    parameter_names,
    require_reduced_variances,
    state_names,
)

__all__ = ["ReducedModel", "derive", "variance_treatment"]


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
    variance : the expression s stands for (the parameter s, exp(log_s) or s*(beta, gamma)).
    dlog_s : d(log s)/dt (tied variances; gamma not yet substituted), else None.
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
    variance: sp.Expr | None = None
    dlog_s: sp.Expr | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def gamma_value(self) -> sp.Expr:
        """gamma as a function of beta on this path."""
        return 1 - self.beta if self.structure.path in BASE_PATHS else sp.Integer(0)

    @property
    def objective_state(self) -> sp.Expr:
        """F without its state-independent constant, with gamma substituted (tied variances:
        with the d-terms of log s written with d = 1/inv_d, so infinite at inv_d = 0)."""
        F = self.objective_without_constant.subs(self.gamma, self.gamma_value)
        if self.structure.variances == "tied":
            F = F.subs(self.d, 1 / self.params[self._pidx("inv_d")])
        return F

    @property
    def objective_without_constant(self) -> sp.Expr:
        return self.objective - self.constant

    @property
    def constant(self) -> sp.Expr:
        """The state-independent part c of F (with tied variances the s-independent part c0
        of :func:`variance_terms`; the rest depends on the state log s)."""
        bt, g, d = self.beta, self.gamma, self.d
        Delta = self.params[self._pidx("Delta")]
        if self.structure.variances == "tied":
            if self.structure.objective == "forward-kl":
                from .forward_kl import forward_kl_constant_c0
                return forward_kl_constant_c0(self.structure, Delta, bt, d)
            s0 = (self.params[self._pidx("sigma0_sq")] if self.structure.path == "geometric"
                  else None)
            return _tied_constant(bt, g, d, Delta, s0)
        s = self.variance if self.variance is not None else self.params[self._pidx("s")]
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
    require_reduced_variances("structure.variances", structure.variances)
    K, M, tw, path = structure.K, structure.M, structure.train_weights, structure.path
    state = _symbols(state_names(K, M, tw, structure.variances))
    params = _symbols(parameter_names(K, M, tw, path, structure.variances))
    by_name = {s.name: s for s in state + params}
    beta = sp.Symbol("beta", positive=True)
    gamma = sp.Symbol("gamma", nonnegative=True)
    d = sp.Symbol("d", positive=True)
    # s: a parameter (fixed variances) or a placeholder replaced by exp(log_s) or s*(beta)
    Delta, s = by_name["Delta"], by_name.get("s", sp.Symbol("s", real=True))

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

    s_value, F_var, dlog_s = variance_treatment(structure, F, s, by_name, beta, gamma, d)
    model_stub = ReducedModel(structure, state, params, beta, gamma, d, Q, R, T, w,
                              sp.Integer(0), sp.zeros(M, M), sp.zeros(M, K), (), (),
                              variance=s_value)
    F_total = (F + F_var).xreplace({s: s_value}) + model_stub.constant

    G = sp.Matrix(M, M, lambda k, l: (2 if k == l else 1) * sp.diff(F, q(k, l)))
    H = sp.Matrix(M, K, lambda k, a: sp.diff(F, R[k, a]))
    dalpha = tuple(-sp.diff(F, by_name[f"alpha_{k + 1}"]) for k in range(M)) if tw else ()
    if s_value is not s:
        G, H = G.xreplace({s: s_value}), H.xreplace({s: s_value})
        dalpha = tuple(e.xreplace({s: s_value}) for e in dalpha)
    dQ = -(G * Q + Q * G.T + H * R.T + R * H.T)
    dR = -(G * R + H * T)

    gval = 1 - beta if path in BASE_PATHS else sp.Integer(0)
    rhs = [dQ[k, l] for k in range(M) for l in range(k, M)]
    rhs += [dR[k, a] for k in range(M) for a in range(K)]
    rhs += list(dalpha)
    if dlog_s is not None:
        rhs.append(dlog_s)
    rhs = tuple(e.subs(gamma, gval) for e in rhs)

    return ReducedModel(structure, state, params, beta, gamma, d, Q, R, T, w, F_total, G, H,
                        dalpha, rhs, variance=s_value, dlog_s=dlog_s)


def _tied_constant(beta: sp.Expr, gamma: sp.Expr, d: sp.Expr, Delta: sp.Expr,
                   sigma0_sq: sp.Expr | None) -> sp.Expr:
    """c0 = -d/2 - (d/2) log 2 pi + beta (d/2) log(2 pi Delta) [+ gamma (d/2) log(2 pi sigma0^2)]:
    the s-independent part of the constant (see :func:`variance_treatment`)."""
    c0 = -d / 2 - d / 2 * sp.log(2 * sp.pi) + beta * d / 2 * sp.log(2 * sp.pi * Delta)
    if sigma0_sq is not None:
        c0 += gamma * d / 2 * sp.log(2 * sp.pi * sigma0_sq)
    return c0


def variance_treatment(structure: ModelStructure, F: sp.Expr, s: sp.Symbol,
                       by_name: dict[str, sp.Symbol], beta: sp.Symbol, gamma: sp.Symbol,
                       d: sp.Symbol) -> tuple[sp.Expr, sp.Expr, sp.Expr | None]:
    r"""The part of the derivation that depends on the variance treatment (DESIGN.md section 9).

    ``F`` is the state-dependent part of the objective written with the symbol ``s``.  Its
    constant is ``c(s) = c0 + c_s(s)`` with

    .. math::

        c_s(s) = -\frac{d}{2}\log s + \Big(\frac{\beta}{\Delta} + \frac{\gamma}{\sigma_0^2}\Big)
                 \frac{d\,s}{2}

    (entropy ``-(d/2) log s``; target and base cross-entropies through ``E|x|^2 = Q_kk + d s``)
    and c0 independent of s.  Returns ``(s_value, F_var, dlog_s)``:

    * ``"fixed"``: ``(s, 0, None)``, s a parameter;
    * ``"tied"``: ``(exp(log_s), c_s, dlog_s/dt)`` with the natural time scale
      ``d(log s)/dt = -(1/d) dF/d(log s) = (1 - s/s*)/2 - inv_d s dF/ds``, d = 1/inv_d exactly,
      ``s* = 1/(beta/Delta + gamma/sigma0^2)``: at equal learning rates d(log s)/dt would be
      O(d), i.e. the variance moves O(d) faster than the means; the ratio 1/d keeps a limit;
    * ``"adiabatic"``: ``(s*(beta), 0, None)``: s held at the minimiser of c_s, the d -> infinity
      limit of the tied flow's fast variable (the O(1) terms of F shift the optimum by O(1/d)).

    Forward KL (``structure.objective == "forward-kl"``, :mod:`derivations.forward_kl`): ``c_s
    = (d/2) log s + (d D_beta + m_beta)/(2 s)`` from ``E_{p_beta}|x|^2 = d D_beta + m_beta``
    (``D_beta = Delta/beta`` on the inflation path, ``beta Delta + gamma sigma0^2`` on the
    mixture path; ``m_beta`` the O(1) part ``sum_a pi_a T_aa``, times beta on the mixture
    path), so the tied flow is ``d(log s)/dt = (D_beta/s - 1)/2 + inv_d m_beta/(2 s) - inv_d s
    dF/ds``, exact at every d, and the adiabatic ``s* = D_beta``.
    """
    variances = structure.variances
    if variances == "fixed":
        return s, sp.Integer(0), None
    if variances not in ("tied", "adiabatic"):
        require_reduced_variances("structure.variances", variances)   # names per-component
        raise ValueError(f"structure.variances: unknown treatment {variances!r}")
    Delta = by_name["Delta"]
    if structure.objective == "forward-kl":
        from . import forward_kl as fkl
        K = structure.K
        T = sp.Matrix(K, K, lambda a, b: by_name[f"T_{min(a, b) + 1}_{max(a, b) + 1}"])
        pi = [by_name[f"pi_{a + 1}"] for a in range(K)]
        s0 = by_name.get("sigma0_sq")
        if variances == "adiabatic":
            return (fkl.forward_kl_adiabatic_variance(structure, Delta, beta, gamma, s0),
                    sp.Integer(0), None)
        c_s = fkl.forward_kl_variance_terms(structure, T, pi, Delta, s, beta, gamma, d, s0)
    else:
        inv_base = gamma / by_name["sigma0_sq"] if structure.path == "geometric" else sp.Integer(0)
        precision = beta / Delta + inv_base
        if variances == "adiabatic":
            return 1 / precision, sp.Integer(0), None
        c_s = -d / 2 * sp.log(s) + precision * d * s / 2
    log_s, inv_d = by_name["log_s"], by_name["inv_d"]
    # -(1/d) s dc_s/ds: (1 - precision s)/2 (reverse KL), (D_beta/s - 1)/2 + inv_d m_beta/(2s)
    # (forward KL), exactly; written with d = 1/inv_d
    d_part = sp.expand(-inv_d * s * sp.diff(c_s, s)).subs(d, 1 / inv_d)
    dlog_s = d_part - inv_d * s * sp.diff(F, s)
    return sp.exp(log_s), c_s, dlog_s.xreplace({s: sp.exp(log_s)})
