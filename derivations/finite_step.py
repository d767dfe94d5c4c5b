r"""The O(eta) corrected ODE of the finite-step maps (issue 10 s. 2), derived symbolically.

GD and SGD move the summary statistics y = (Q, R, alpha) by one step of the means
``m_k <- m_k - eta g_k``.  With ``g_k = sum_l G_kl m_l + sum_a H_ka mu_a`` the exact gradient
(the chain rule of DESIGN.md section 2; G, H from :func:`derivations.model.derive`),

    Q'_kl = Q_kl - eta (m_k . g_l + g_k . m_l) + eta^2 g_k . g_l,

and the second-order term is ``b_kl = g_k . g_l = (G Q G^T + G R H^T + H R^T G^T + H T H^T)_kl``
(:func:`gd_second_order`); R' and alpha' are linear in the gradient (no eta^2 term).  SGD
replaces g_k by an unbiased estimate whose noise adds ``eta^2 E[dg_k . dg_l]`` to the mean of
Q'_kl.  Its part out of span{mu_a, m_j} is d-dependent: per step ``eta^2 ((d - D) / n)
N_kl(Q, beta)`` (solvers/sgd.py, D = rank T + M), with the coefficients of the out-of-frame
noise ``C_k,(j,i) = delta_jk w_k c sqrt(s) / n + [reparam] w_j rho_k(x_ji) / (sqrt(s) n)``,
``c = -1/s + beta/Delta + gamma/sigma0^2``:

    N_kl = delta_kl w_k^2 c^2 s + [reparam] ( c (w_k^2 E_k rho_l + w_l^2 E_l rho_k)
           + (1/s) sum_j w_j^2 E_j[rho_k rho_l] )                        (:func:`noise_source`)

(E_j over x ~ N(m_j, s I)).  The responsibilities' moments are Gaussian-expectation atoms of
:mod:`derivations.functions`: relative to component j the logits of the others are
``v ~ N(a, C)`` with ``a_i = log(w_i / w_j) - (Q_ii + Q_jj - 2 Q_ij) / (2 s)`` and ``C_ii' =
(Q_ii' - Q_ij - Q_i'j + Q_jj) / s`` (the points of F's own atoms), so ``E_j rho_i = L_{e_i}``,
``E_j[rho_i rho_i'] = delta_ii' L_{e_i} - L_{e_i + e_i'}`` (``L_alpha = E d^alpha LSE(0, v)``)
and rho_j = 1 - sum of the others.

Per unit time (1/eta steps of t = eta) the mean of the chain therefore moves by
``F = f + q N`` (f the flow's rhs, ``q = eta (d - D) / n``, N on the Q entries) plus
``eta (b + in-span noise)``.  Matching the time-eta map of ``dy/dt = F + eta F_1`` to
``y + eta F + eta^2 b`` to O(eta^2) (backward error analysis of the explicit step) gives the
corrected ODE

    dy/dt = F(y, beta(t - eta/2)) + eta [ b(y) - (1/2) J_F(y) F(y) ],   J_F = df/dy + q dN/dy,

where evaluating beta half a step early carries the ``-(eta/2) dF/dbeta dbeta/dt`` term of a
moving schedule (the step uses beta at its start).  For GD (q = 0) this is Euler's modified
equation: it follows the GD map with a global error O(eta^2) at fixed t, against O(eta) for the
flow.  For SGD it is the equation of the chain's mean with the deterministic, d-dependent
drift of the out-of-span noise (the Wishart Gram matrix concentrates: its fluctuation is
O(1/sqrt(d)) of its mean) and the GD correction; what it leaves out is d-independent and
O(eta): the in-span noise of the mean of Q and the fluctuations of the state (E f(y) !=
f(E y)).

Generated code (:func:`generate_corrected_source`, :func:`compile_corrected_rhs`): one module
``corrected_rhs(y, beta, theta, out)`` (``solvers.signatures.RHS_SIG``) per structure and
estimator, with ``theta = (model parameters..., eta, q)``: the codegen's G, H, dG/dy, dH/dy
and J blocks (:mod:`derivations.codegen`), the flow's f, b, N and dN/dy as SymPy blocks, and
the combination ``F + eta (b - J_F F / 2)`` as two loops.  Cached on disk like the model's
modules (key: structure, estimator, the sources of this module and of the code generator).
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from functools import cache
from pathlib import Path

import sympy as sp

from .atomic import atomic_write
from .functions import gauss_lse
from .model import ReducedModel, derive
from .spec import ModelStructure

__all__ = ["ESTIMATORS", "gd_second_order", "noise_source", "generate_corrected_source",
           "compile_corrected_rhs", "corrected_module_path"]

#: Gradient estimators of the SGD chain (solvers/sgd.py) whose noise source is derived here.
ESTIMATORS = ("stl", "reparam")


def _check(structure: ModelStructure, estimator: str) -> None:
    if not isinstance(structure, ModelStructure):
        raise ValueError("structure: must be a ModelStructure (e.g. spec.structure)")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: must be one of {ESTIMATORS}, got {estimator!r}")


def _gh_symbols(model: ReducedModel) -> tuple[sp.Matrix, sp.Matrix]:
    """G (M x M, symmetric) and H (M x K) as the named symbols of the generated code
    (``G_k_l`` k <= l, ``H_k_a``: :mod:`derivations.codegen`)."""
    M, K = model.structure.M, model.structure.K
    G = sp.Matrix(M, M, lambda k, l: sp.Symbol(f"G_{min(k, l) + 1}_{max(k, l) + 1}", real=True))
    H = sp.Matrix(M, K, lambda k, a: sp.Symbol(f"H_{k + 1}_{a + 1}", real=True))
    return G, H


def _q_pairs(M: int) -> list[tuple[int, int]]:
    """The Q entries of the state, in its order (upper triangle, row-major)."""
    return [(k, l) for k in range(M) for l in range(k, M)]


def gd_second_order(model: ReducedModel, G: sp.Matrix | None = None,
                    H: sp.Matrix | None = None) -> list[sp.Expr]:
    """``b_kl = g_k . g_l = (G Q G^T + G R H^T + H R^T G^T + H T H^T)_kl`` for the Q entries
    of the state (upper triangle): the eta^2 coefficient of the GD map's Q'.  G, H default to
    the model's expressions (gamma substituted)."""
    if G is None or H is None:
        sub = {model.gamma: model.gamma_value}
        G, H = model.G.xreplace(sub), model.H.xreplace(sub)
    B = G * model.Q * G.T + G * model.R * H.T + H * model.R.T * G.T + H * model.T * H.T
    return [B[k, l] for k, l in _q_pairs(model.structure.M)]


def _responsibility_moments(model: ReducedModel, j: int
                            ) -> tuple[list[sp.Expr], list[list[sp.Expr]]]:
    """(E_j rho_k (M,), E_j[rho_k rho_l] (M, M)) for x ~ N(m_j, s I) (module docstring)."""
    M = model.structure.M
    s = model.params[[p.name for p in model.params].index("s")]
    Q = model.Q
    logw = [sp.log(w) for w in model.w]
    others = [i for i in range(M) if i != j]
    if not others:
        return [sp.Integer(1)], [[sp.Integer(1)]]
    a = [logw[i] - logw[j] - (Q[i, i] + Q[j, j] - 2 * Q[i, j]) / (2 * s) for i in others]
    C = sp.Matrix(len(others), len(others),
                  lambda u, v: (Q[others[u], others[v]] - Q[others[u], j] - Q[others[v], j]
                                + Q[j, j]) / s)
    n = len(others)

    def L(orders: list[int]) -> sp.Expr:
        return gauss_lse(a, C, orders)

    e1 = {i: L([1 if u == p else 0 for u in range(n)]) for p, i in enumerate(others)}
    e2 = {}
    for p, i in enumerate(others):
        for r, k in enumerate(others):
            orders = [0] * n
            orders[p] += 1
            orders[r] += 1
            e2[i, k] = (e1[i] if i == k else 0) - L(orders)
    m1 = [sp.Integer(0)] * M
    for i in others:
        m1[i] = e1[i]
    m1[j] = 1 - sum(e1[i] for i in others)
    m2 = [[sp.Integer(0)] * M for _ in range(M)]
    for i in others:
        for k in others:
            m2[i][k] = e2[i, k]
        # E[rho_i rho_j] = E rho_i - sum_o E[rho_i rho_o]
        m2[i][j] = m2[j][i] = e1[i] - sum(e2[i, o] for o in others)
    m2[j][j] = (1 - 2 * sum(e1[i] for i in others)
                + sum(e2[i, k] for i in others for k in others))
    return m1, m2


def noise_source(model: ReducedModel, estimator: str) -> list[sp.Expr]:
    """``N_kl(Q, beta)`` for the Q entries of the state (upper triangle): the out-of-span SGD
    noise per step is ``eta^2 ((d - D) / n) N`` (module docstring); gamma substituted."""
    _check(model.structure, estimator)
    M = model.structure.M
    names = [p.name for p in model.params]
    s, Delta = model.params[names.index("s")], model.params[names.index("Delta")]
    c = -1 / s + model.beta / Delta
    if model.structure.path == "geometric":
        c += model.gamma_value / model.params[names.index("sigma0_sq")]
    w = model.w
    out = []
    moments = [_responsibility_moments(model, j) for j in range(M)] \
        if estimator == "reparam" else None
    for k, l in _q_pairs(M):
        e = w[k] ** 2 * c ** 2 * s if k == l else sp.Integer(0)
        if moments is not None:
            e += c * (w[k] ** 2 * moments[k][0][l] + w[l] ** 2 * moments[l][0][k])
            e += sum(w[j] ** 2 * moments[j][1][k][l] for j in range(M)) / s
        out.append(e)
    return out


# ----------------------------------------------------------------------------------------
# generated code
# ----------------------------------------------------------------------------------------

_VERSION = "1"


def generate_corrected_source(structure: ModelStructure, estimator: str) -> str:
    """Source of the module ``corrected_rhs(y, beta, theta, out)`` (RHS_SIG), theta = (model
    parameters..., eta, q): ``out = F + eta (b - J_F F / 2)`` with ``F = f + q N`` (module
    docstring).  The schedule shift by eta/2 is the caller's (:mod:`analysis.finite_step`)."""
    from . import codegen as cg
    _check(structure, estimator)
    model = derive(structure)
    n = len(model.state)
    M = structure.M
    p = len(model.params)
    G, H = _gh_symbols(model)
    jac_blocks = cg._blocks(model, "jac")
    flow = []
    for b in cg._blocks(model, "rhs")[2:]:        # dQ/dt, dR/dt, dalpha/dt in G, H
        flow.append(cg._Block("f = " + b.title, [t.replace("out[", "f[") for t in b.targets],
                              b.exprs))
    qp = _q_pairs(M)
    gsub = {model.gamma: model.gamma_value}
    N = [e.xreplace(gsub) for e in noise_source(model, estimator)]
    dN_t, dN_e = [], []
    for i, e in enumerate(N):
        for jj, y in enumerate(model.state):
            v = sp.diff(e, y)
            if v != 0:
                dN_t.append(f"dN[{i}, {jj}]")
                dN_e.append(v)
    blocks = [cg._Block("work arrays", [], [], prologue=[
        f"J = np.empty(({n}, {n}))", f"f = np.empty({n})", f"b = np.zeros({n})",
        f"nz = np.zeros({n})", f"dN = np.zeros(({n}, {n}))"])]
    blocks += jac_blocks + flow
    blocks.append(cg._Block("b: eta^2 coefficient of the step, g_k . g_l on the Q entries",
                            [f"b[{i}]" for i in range(len(qp))], gd_second_order(model, G, H)))
    blocks.append(cg._Block(f"N: out-of-span noise of {estimator} per unit q = eta (d - D)/n",
                            [f"nz[{i}]" for i in range(len(qp))], N))
    if dN_t:
        blocks.append(cg._Block("dN/dy", dN_t, dN_e))
    blocks.append(cg._Block("out = F + eta (b - J_F F / 2), F = f + q N, J_F = J + q dN/dy",
                            [], [], prologue=[
                                f"eta_ = theta[{p}]", f"q_ = theta[{p + 1}]",
                                f"Fv = np.empty({n})",
                                f"for i in range({n}):",
                                "    Fv[i] = f[i] + q_ * nz[i]",
                                f"for i in range({n}):",
                                "    acc = 0.0",
                                f"    for j in range({n}):",
                                "        acc += (J[i, j] + q_ * dN[i, j]) * Fv[j]",
                                "    out[i] = Fv[i] + eta_ * (b[i] - 0.5 * acc)"]))
    printer = cg.NumbaPrinter()
    printer.module_imports["numpy"].update(("empty", "zeros"))
    constants, lines, used = cg._function_body(blocks, printer)
    unpack = [f"{s.name} = y[{i}]" for i, s in enumerate(model.state) if s in used]
    unpack += [f"{q.name} = theta[{i}]" for i, q in enumerate(model.params) if q in used]
    head = [
        f'"""Generated by derivations.finite_step (version {_VERSION}) -- do not edit.',
        "",
        f"Structure: K={structure.K}, M={structure.M}, train_weights={structure.train_weights}, "
        f"path={structure.path}; estimator {estimator}.",
        "Function: corrected_rhs, the O(eta) corrected ODE of the finite-step maps.",
        f"State: {', '.join(s.name for s in model.state)}.",
        f"Parameters (theta): {', '.join(q.name for q in model.params)}, eta, q.",
        '"""',
        *printer.import_lines("RHS_SIG"),
        *constants,
        "",
        "",
        "@njit(RHS_SIG, cache=True)",
        "def corrected_rhs(y, beta, theta, out):",
    ]
    return "\n".join(head + ["    " + b for b in unpack + lines]) + "\n"


def _digest() -> str:
    from . import codegen as cg
    h = hashlib.sha256(cg._dependency_digest().encode())
    spec = importlib.util.find_spec(__name__)
    assert spec is not None and spec.origin is not None
    h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()


def corrected_module_path(structure: ModelStructure, estimator: str) -> Path:
    """Where the generated module of (structure, estimator) is cached."""
    from . import codegen as cg
    _check(structure, estimator)
    text = "|".join([structure.key(), estimator, _VERSION, ",".join(structure.state_names),
                     ",".join(structure.parameter_names), _digest()])
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    return cg.cache_dir() / f"mfvi_{structure.key()}_corrected_{estimator}_{key}.py"


@cache
def compile_corrected_rhs(structure: ModelStructure, estimator: str = "stl") -> Callable:
    """The compiled ``corrected_rhs(y, beta, theta, out)`` of (structure, estimator),
    generated on first use and cached on disk (theta = model parameters + (eta, q))."""
    from . import codegen as cg
    path = corrected_module_path(structure, estimator)
    if not path.exists():
        atomic_write(path, generate_corrected_source(structure, estimator))
    return cg._load_module(path, path.stem).corrected_rhs
