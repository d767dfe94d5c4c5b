r"""How the optimal "hold, then jump" schedule scales with the dimension (issue 11 section 2).

At A = 9 the designed piecewise and free schedules hold beta at a low value beta_h for
almost the whole budget, then jump to 1 (:mod:`analysis.design`).  On the tempering path the
rates at the symmetric fixed point scale as beta (``lambda_x(beta) = beta lambda_x``, kappa
unchanged), so the escape from the symmetric state at beta takes

    T_esc(beta, d) = [ln(d / (sigma_init^2 A)) - ln 2 - psi((kappa + 1)/2)] / (2 lambda_s(beta)),

(the time the symmetric overlap needs to grow from its Rayleigh-averaged initial size to order
one; :func:`analysis.asymptotics.symmetric_rates`; the O(1/beta) offset of the nonlinear exit is
left out), and P(collapse) of a hold at beta_h keeps falling as beta_h falls, provided the hold
lasts until the outcome is decided (measured at d = 1e3 with holds of 6 T_esc: P = 0.0106,
0.0075, 0.0060, 0.0052, 0.0043 at beta_h = 0.3, 0.2, 0.14, 0.1, 0.05).  There is therefore
no finite useful budget: for a budget B the optimum holds the *lowest beta whose decision fits
in B*, and the hypothesis to check is ``B ~ k T_esc(beta_h*(B, d), d)`` with k independent of
d and B, i.e. ``beta_h* ~ k ln(d / (sigma_init^2 A)) / (2 lambda_s B)``: the budget needed for
a given held beta (and, up to the beta = 1 log factor of P without annealing, a given benefit)
grows like ln d.

Measured (A = 9, ``python -m analysis.design_scaling 9 1e3,1e4,1e5,1e6,1e7``, about 20 min on
a loaded 2-core machine): at a fixed multiple m = B / T_esc(1, d), i.e. a budget growing like
ln d, the optimal held beta is nearly independent of d, drifting slowly down:

    m =  5:  beta_h* = 0.439, 0.399, 0.365, 0.345, 0.328     (d = 1e3 ... 1e7)
    m = 10:  beta_h* = 0.282, 0.238, 0.217, 0.202, 0.193
    m = 20:  beta_h* = 0.176, 0.150, 0.139, 0.147, 0.185

with k = B / T_esc(beta_h*) = 1.6-3.7 (the hold lasts 2-4 escape times), and the benefit
P*/P(no annealing) at fixed m improving with d (m = 10: 0.23, 0.18, 0.15, 0.13, 0.11), as the
beta = 1 law carries the extra factor L_eff(d)^(1/2) that a hold at beta < 1 (hyperbolic
symmetric state) does not.  At m = 40 (and m = 20, d = 1e7) the optimum moves to a second
branch, a higher beta_h (0.18-0.25) held for 7-10 escape times, with a markedly lower P
(d = 1e5: 6.9e-4 against 1.2e-3 at m = 20): holding beyond the escape still lowers P there,
so the "decision fits in B" picture describes the first branch only.  Brent's method is local:
the branch found can depend on the bracket, and the table is not a global optimum.

Method (separatrix estimator at ``options`` accuracy): for each d and budget
``B = m T_esc(1, d)`` (``m in multiples``), the hold schedule (beta_h on [0, B), then 1)
with beta_h minimised by bounded Brent (:func:`scipy.optimize.minimize_scalar`) on
``beta_bounds``; reported with ``k = B / T_esc(beta_h*, d)`` and ``P*/P(no annealing)``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

from derivations.spec import PiecewiseConstantSchedule, ProblemSpec, require_spec

__all__ = ["hold_schedule", "escape_time_at", "hold_scaling"]

#: Separatrix accuracy of the scan (error bound ~1e-3 relative at d = 1e3..1e7).
SCAN_OPTIONS = {"n_eps_per_decade": 4, "rel_tol": 3e-3, "tol": 1e-4, "n_coarse": 4}


def hold_schedule(beta_h: float, duration: float) -> PiecewiseConstantSchedule:
    """beta = beta_h on [0, duration), then 1."""
    if not 0.0 < beta_h <= 1.0:
        raise ValueError(f"beta_h: must lie in (0, 1], got {beta_h}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration: must be finite and > 0, got {duration}")
    return PiecewiseConstantSchedule(betas=(float(beta_h), 1.0), breakpoints=(float(duration),))


def escape_time_at(spec: ProblemSpec, beta: float, d: float) -> float:
    """``T_esc(beta, d)`` of the module docstring (time units of the flow)."""
    from scipy.special import digamma

    from .asymptotics import symmetric_rates
    r = symmetric_rates(spec, beta)
    if not r.lambda_s > 0:
        raise ValueError(f"beta: lambda_s({beta:g}) = {r.lambda_s:.3g} <= 0: the symmetric "
                         "state does not escape at this beta")
    s2A = spec.init.sigma_init ** 2 * float(spec.target.T[0, 0])
    return float((math.log(d / s2A) - math.log(2.0) - digamma((r.kappa + 1.0) / 2.0))
                 / (2.0 * r.lambda_s))


def hold_scaling(spec: ProblemSpec, ds: Sequence[float], *,
                 multiples: Sequence[float] = (5.0, 10.0, 20.0, 40.0),
                 beta_bounds: tuple[float, float] = (0.02, 1.0), xatol: float = 0.003,
                 options: dict | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """The optimal held beta against the budget and d (module docstring).

    Returns one dict per (d, budget): ``d, multiple, budget`` (= multiple T_esc(1, d)),
    ``beta_h`` (optimal held beta), ``P`` (its P), ``P_constant`` (no annealing),
    ``benefit`` (P / P_constant), ``T_esc`` (at beta_h), ``k`` (= budget / T_esc),
    ``at_bound`` (beta_h within 2 xatol of a bound of ``beta_bounds``), ``n_evaluations``.
    """
    from scipy.optimize import minimize_scalar

    from .collapse import check_d, collapse_probability
    from .estimators.separatrix import check_separatrix_spec
    spec = require_spec(spec)
    check_separatrix_spec(spec)
    if not 0.0 < beta_bounds[0] < beta_bounds[1] <= 1.0:
        raise ValueError(f"beta_bounds: need 0 < lo < hi <= 1, got {beta_bounds!r}")
    if not multiples or any(not (math.isfinite(m) and m > 0) for m in multiples):
        raise ValueError(f"multiples: must be positive numbers, got {list(multiples)!r}")
    opts = dict(SCAN_OPTIONS if options is None else options)
    rows = []
    for d in ds:
        d = check_d(int(d))
        p0 = float(collapse_probability(spec, d, "separatrix", **opts).p)
        T1 = escape_time_at(spec, 1.0, d)
        for m in multiples:
            B = float(m) * T1
            n = [0]

            def P(beta_h: float, d: int = d, B: float = B) -> float:
                n[0] += 1
                return float(collapse_probability(
                    spec.replace(schedule=hold_schedule(beta_h, B)), d, "separatrix",
                    **opts).p)

            res = minimize_scalar(P, bounds=beta_bounds, method="bounded",
                                  options={"xatol": xatol})
            b = float(res.x)
            T = escape_time_at(spec, b, d)
            row = {"d": d, "multiple": float(m), "budget": B, "beta_h": b, "P": float(res.fun),
                   "P_constant": p0, "benefit": float(res.fun) / p0, "T_esc": T, "k": B / T,
                   "at_bound": bool(min(b - beta_bounds[0], beta_bounds[1] - b) < 2 * xatol),
                   "n_evaluations": n[0]}
            rows.append(row)
            if progress:
                print(f"[hold_scaling] d = {d:.0e}, budget {B:.4g} ({m:g} T_esc(1)): beta_h = "
                      f"{b:.4f}, P = {row['P']:.4g} (no annealing {p0:.4g}), k = "
                      f"{row['k']:.3f}", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":      # python -m analysis.design_scaling [A] [d,d,...]
    import json

    from derivations.spec import symmetric_bimodal
    A = float(sys.argv[1]) if len(sys.argv) > 1 else 9.0
    ds = [float(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "1e3,1e4,1e5,1e6,1e7"
                             ).split(",")]
    out = hold_scaling(symmetric_bimodal(A), ds, progress=True)
    print(json.dumps({"A": A, "rows": out}))
    print(f"{'d':>8} {'m':>5} {'budget':>8} {'beta_h':>8} {'P':>10} {'P_const':>10} "
          f"{'benefit':>8} {'k':>7}")
    for r in out:
        print(f"{r['d']:8.0e} {r['multiple']:5g} {r['budget']:8.2f} {r['beta_h']:8.4f} "
              f"{r['P']:10.4g} {r['P_constant']:10.4g} {r['benefit']:8.4f} {r['k']:7.3f}"
              f"{'  (at bound)' if r['at_bound'] else ''}")
