r"""Closed forms of the large-d law of mode collapse (DESIGN.md section 8; issue 11 section 1).

Two components on the antipodal target.  Near the symmetric state (R = 0, Q at its symmetric
fixed point Q*) the overlaps ``u = (R_11, R_21)`` obey a linear flow in which
``u_s = u . e_s`` grows at rate ``lambda_s`` and ``u_a = u . e_a`` at ``lambda_a``
(``e_s = (1, 1)/sqrt 2``, ``e_a = (1, -1)/sqrt 2``).  The invariant curves of the linear flow are
``u_a = c' u_s^kappa`` with

    kappa = lambda_a / lambda_s,

so the basin of collapse (a cusp around e_s) has the critical angle

    theta_c(eps) = c eps^(kappa - 1) L(eps)^p,      L(eps) = ln(1/eps)/lambda_s + t_1,

where ``L`` is the escape time.  ``p = 0`` when Q* is hyperbolic; ``p != 0`` in the degenerate
case ``beta Delta = s`` (the preset at beta = 1), where Q relaxes to Q* = 0 only algebraically,
``q(t) ~ 1/(b t)``, and ``lambda_a(q) = lambda_a - a_a q + ...`` (``lambda_s(q)`` similarly with
``a_s``), so the antisymmetric growth lags by ``t^(-a_a/b)``:

    p = (a_a - kappa a_s) / b.

With ``eps = eps0 chi``, ``eps0 = sigma_init sqrt(A/d)``, chi ~ Rayleigh,
``E[chi^q] = 2^(q/2) Gamma(1 + q/2)`` and
``E[chi^q ln chi] / E[chi^q] = (ln 2 + psi(1 + q/2)) / 2``:

    P(collapse) = E[2 theta_c(eps0 chi) / pi] = C d^(-alpha) L_eff(d)^p (1 + O(L^-2)),
    alpha = (kappa - 1)/2,
    C = (2 c / pi) 2^((kappa-1)/2) Gamma((kappa+1)/2) (sigma_init^2 A)^alpha,
    L_eff(d) = [ln(d / (sigma_init^2 A)) - ln 2 - psi((kappa+1)/2)] / (2 lambda_s) + t_1.

Under a schedule that has settled before the escape, the ratio ``u_a / u_s^kappa`` is
multiplied by ``g_a / g_s^kappa`` (the propagators of the linearised overlaps along the
symmetric trajectory, relative to those at constant beta = 1): ``C -> F C`` with
``F = lim_T [g_s^kappa / g_a]_schedule / [g_s^kappa / g_a]_constant`` and the escape time is
delayed by ``Delta_S`` (``t_1 -> t_1 + Delta_S``).

This module is SymPy only (no solvers/analysis imports); the numbers come from
:mod:`analysis.asymptotics`.
"""

from __future__ import annotations

import functools

import sympy as sp

__all__ = ["SYMBOLS", "law_expressions", "law_latex", "exponential_schedule_budget"]

lambda_s, lambda_a, c, p, t_1 = sp.symbols("lambda_s lambda_a c p t_1", positive=True)
a_s, a_a, b = sp.symbols("a_s a_a b", real=True)
d, F, Delta_S = sp.symbols("d F Delta_S", positive=True)
#: sigma_init^2 A (eps0^2 d); named by its LaTeX
sigma2A = sp.Symbol(r"\sigma_{\mathrm{init}}^{2} A", positive=True)
T0, x = sp.symbols("T_0 x", positive=True)

#: The symbols of the closed forms, by name.
SYMBOLS = {"lambda_s": lambda_s, "lambda_a": lambda_a, "c": c, "p": p, "t_1": t_1,
           "a_s": a_s, "a_a": a_a, "b": b, "d": d, "sigma2A": sigma2A, "F": F,
           "Delta_S": Delta_S, "T0": T0, "x": x}


def law_expressions() -> dict[str, sp.Expr]:
    """The closed forms as SymPy expressions (see the module docstring).

    Keys: ``kappa``, ``alpha``, ``moment`` (E[chi^(kappa-1)]), ``mean_log_chi``
    (E[chi^(kappa-1) ln chi]/E[chi^(kappa-1)]), ``C``, ``L_eff``, ``P`` (constant schedule),
    ``P_schedule`` (settled schedule: C -> F C, t_1 -> t_1 + Delta_S), ``p`` (log exponent from
    the neutral-direction coefficients a_s, a_a, b), ``local_slope`` (d ln P / d ln d).
    """
    kappa = lambda_a / lambda_s
    alpha = (kappa - 1) / 2
    q = kappa - 1
    moment = 2 ** (q / 2) * sp.gamma(1 + q / 2)
    mean_log = sp.simplify(sp.diff(sp.log(moment), lambda_a) / sp.diff(q, lambda_a))
    C = 2 * c / sp.pi * moment * sigma2A ** alpha
    L_eff = (sp.log(d / sigma2A) - 2 * mean_log) / (2 * lambda_s) + t_1
    P = C * d ** (-alpha) * L_eff ** p
    P_sched = F * C * d ** (-alpha) * (L_eff + Delta_S) ** p
    slope = -alpha + p / (2 * lambda_s * L_eff)     # = d ln P / d ln d
    return {"kappa": kappa, "alpha": alpha, "moment": moment, "mean_log_chi": mean_log,
            "C": C, "L_eff": L_eff, "P": P, "P_schedule": P_sched,
            "p": (a_a - kappa * a_s) / b, "local_slope": slope}


def law_latex() -> dict[str, str]:
    """LaTeX of the closed forms (``alpha``, ``C``, ``P``, ``L_eff``, ``p``, ``P_schedule``)."""
    return dict(_law_latex())


@functools.lru_cache(maxsize=1)
def _law_latex() -> tuple[tuple[str, str], ...]:
    e = law_expressions()
    return tuple((k, sp.latex(e[k])) for k in ("alpha", "C", "P", "L_eff", "p", "P_schedule",
                                                 "local_slope"))


def exponential_schedule_budget() -> dict[str, sp.Expr]:
    r"""The exponential schedule ``T(t) = 1 + (T0 - 1) exp(-t/tau)`` with tempering.

    ``B(x) = (1/tau) int_0^{x tau} beta dt = ln((e^x + T0 - 1)/T0)`` (tau-independent), and
    since ``lambda_s(beta) = beta lambda_s`` on the tempering path, the symmetric overlap has
    grown by ``exp(lambda_s tau B(x))`` at ``t = x tau``.  The escape (``u_s`` of order one)
    happens at the stage x* of the schedule iff ``lambda_s tau B(x*) = ln(1/eps0)``: keeping the
    escape at a fixed stage (fixed ``beta* = e^x*/(e^x* + T0 - 1)``) as d grows needs

        tau(d) = ln(d / (sigma_init^2 A)) / (2 lambda_s B(x*)),

    i.e. ``tau ~ ln d / (2 lambda_s B)``; with tau fixed the schedule is over before the escape
    once ``ln(d/(sigma_init^2 A)) / (2 lambda_s) > t_settle - Delta_S``
    (``Delta_S = tau ln T0``), and then annealing changes only C.
    Keys: ``B``, ``beta_star``, ``tau_of_d``, ``Delta_S``.
    """
    tau = sp.Symbol("tau", positive=True)
    B = sp.log((sp.exp(x) + T0 - 1) / T0)
    return {"B": B, "beta_star": sp.exp(x) / (sp.exp(x) + T0 - 1),
            "tau_of_d": sp.log(d / sigma2A) / (2 * lambda_s * B),
            "Delta_S": tau * sp.log(T0)}
