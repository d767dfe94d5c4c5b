r"""Numba source of the loop-form engine (:mod:`derivations.loops`) and its module cache.

One generated module per structure defines, with the signatures of :mod:`solvers.signatures`,

* ``rhs(y, beta, theta, out)``: dQ/dt, dR/dt, dalpha/dt (gradient-flow time);
* ``objective(y, beta, theta)``: ``F = sum_k w_k f_k`` without its state-independent
  constant (the same normalisation as the expanded engine's ``objective``);
* ``gradient(y, beta, theta, G, H, dF_dalpha)``: the chain-rule matrices;

and, in a module of its own, ``jac(y, beta, theta, J)``: ``J = d(dy/dt)/dy`` by a
Richardson-extrapolated central finite difference of that module's copy of ``rhs``
(:data:`JAC_FD_DOC`; Newton, continuation, stability and the tangent propagator of the
``linear`` estimator use it for any K, M).  The body of every function is: unpack y and theta into arrays (``Q`` (M, M),
``R`` (M, K), ``T`` (K, K), ``pi``, ``w``), the Gaussian expectations (two calls of
:func:`solvers.softmax.gauss_softmax_rows`), then ``# --- G``, ``# --- H``, ``# --- f``
(each term's expression printed once inside loops over k, l / k, a / k), then the
reduction, each ``sympy.Sum`` printed as an inner loop with an accumulator.

Cache: ``$MFVI_CACHE_DIR/generated/mfvi_loops_<structure>_<hash>.py``, the hash covering the
structure, the state and parameter layout, and the sources of this generator, the loop model,
the terms and the kernels (Numba's cache does not see changes in called modules).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import sympy as sp

from .codegen import NumbaPrinter, cache_dir, load_generated
from .loops import LoopModel, derive_loops
from .spec import ModelStructure

__all__ = ["LOOPGEN_VERSION", "JAC_FD_STEP", "JAC_FD_DOC", "CompiledLoopModel", "compile_loop_model", "generate_loop_source"]

LOOPGEN_VERSION = "1"


class _LoopPrinter(NumbaPrinter):
    """NumbaPrinter plus ``KroneckerDelta`` (a branch) and integer index arithmetic."""

    def _print_KroneckerDelta(self, expr: sp.KroneckerDelta) -> str:
        i, j = (self._print(x) for x in expr.args)
        return f"(1.0 if {i} == {j} else 0.0)"

    def _print_Indexed(self, expr: sp.Indexed) -> str:
        return f"{self._print(expr.base.label)}[{', '.join(self._print(i) for i in expr.indices)}]"


def _assign(target: str, expr: sp.Expr, printer: _LoopPrinter, indent: str) -> list[str]:
    """``target = expr`` with every Sum written as a loop accumulating into ``acc<i>``."""
    expr = sp.sympify(expr)
    sums = sorted(expr.atoms(sp.Sum), key=sp.default_sort_key)
    lines: list[str] = []
    repl = {}
    for i, s in enumerate(sums):
        (var, lo, hi), = s.limits
        acc = sp.Symbol(f"acc{i}", real=True)
        lines += [f"{indent}{acc} = 0.0",
                  f"{indent}for {printer._print(var)} in range({int(lo)}, {int(hi) + 1}):",
                  f"{indent}    {acc} += {printer.doprint(s.function)}"]
        repl[s] = acc
    lines.append(f"{indent}{target} = {printer.doprint(expr.xreplace(repl))}")
    return lines


_KINDS = ("rhs", "objective", "gradient", "jac")
_SIG = {"rhs": "RHS_SIG", "objective": "OBJ_SIG", "gradient": "GRAD_SIG",
        "jac": "RHS_SIG, JAC_SIG"}

#: Relative base step of the finite-difference Jacobian (see :data:`JAC_FD_DOC`).
JAC_FD_STEP = 2e-3

JAC_FD_DOC = r"""The loop-form Jacobian (kind ``jac``): ``J = d f / d y`` (f = dy/dt, gradient-flow
time) by Richardson-extrapolated finite differences of the generated ``rhs``, with a step
chosen per entry, ``h_j = JAC_FD_STEP (1 + |y_j|)``.

* Central (every column when the smallest eigenvalue of Q exceeds ``max_j h_j``; always for
  the R and alpha columns): ``D(h) = (f(y + h e_j) - f(y - h e_j)) / (2 h)``,
  ``J[:, j] = (4 D(h/2) - D(h)) / 3 = f'(y) e_j + O(h^4)``.
* One-sided, for the Q columns when Q is (nearly) singular -- coinciding components, a
  component at the origin: there ``Q +- h e_j`` leaves the PSD cone, where the kernels of
  :mod:`solvers.softmax` read the covariance ``Q / s`` with its negative part dropped (a
  kink).  Directions that keep Q PSD are used instead, ``Q + t e_k e_k^T`` and
  ``Q + t (e_k + e_l)(e_k + e_l)^T``, each differentiated forward,
  ``D(h) = (f(y + h d) - f(y)) / h`` at h, h/2, h/4, h/8 with three Richardson levels
  (error O(h^4)), and ``dQ_kl = D_{kl} - D_{kk} - D_{ll}`` (the rank-one direction of the
  pair minus its diagonal parts).  The vector field is analytic in Q up to the boundary of
  the cone (an even function of each standard deviation), so this is its derivative there.

2e-3 relative balances the O(h^4) truncation against the kernels' evaluation noise delta / h
(delta ~ 1e-14 for K, M <= 3 and up to ~1e-9 for the product rules at n >= 4).  Cost: 4 n
evaluations of rhs (plus one).  Accuracy (tests/test_loop_jacobian.py): agrees with the
expanded engine's analytic Jacobian to ~1e-12 (relative to max |J|) at (K, M) <= (3, 3),
with 4th-order central differences of the chain-rule matrices (the ``gradient`` function)
to ~1e-9 at (2, 4), (4, 4), and at coinciding components to ~1e-8."""

# A kernel that refuses (ValueError) inside a compiled integrator, which calls rhs/jac as
# first-class functions, would be swallowed by Numba ("Exception ignored") and the integration
# would go on with whatever the output array held.  The integrators take these twins instead
# (solvers.integrate.as_first_class): an exception fills the output with NaN, which every
# integrator reports as a non-finite right-hand side.  Python callers keep the raising rhs.
_NOTHROW = """

@njit({sig}, cache=True)
def {kind}_nothrow({args}):
    try:
        {kind}({args})
    except Exception:
        {out} = np.nan
"""

_JAC_ENTRY = """

@njit(cache=True)
def _fd_col(y, beta, theta, d, h, f0, fa, fb, fc, fd, yp, col, central):
    \"\"\"Richardson derivative of rhs along d (n,) with step h into col (n,).\"\"\"
    n = y.shape[0]
    if central:
        for i in range(n):
            yp[i] = y[i] + h * d[i]
        rhs(yp, beta, theta, fa)
        for i in range(n):
            yp[i] = y[i] - h * d[i]
        rhs(yp, beta, theta, fb)
        for i in range(n):
            yp[i] = y[i] + 0.5 * h * d[i]
        rhs(yp, beta, theta, fc)
        for i in range(n):
            yp[i] = y[i] - 0.5 * h * d[i]
        rhs(yp, beta, theta, fd)
        for i in range(n):
            col[i] = (4.0 * (fc[i] - fd[i]) / h - (fa[i] - fb[i]) / (2.0 * h)) / 3.0
        return
    # forward differences at h, h/2, h/4, h/8, three Richardson levels (error O(h^4))
    tab = np.empty((4, n))
    for r in range(4):
        t = h / 2.0 ** r
        for i in range(n):
            yp[i] = y[i] + t * d[i]
        rhs(yp, beta, theta, fa)
        for i in range(n):
            tab[r, i] = (fa[i] - f0[i]) / t
    for m in range(1, 4):
        c = 2.0 ** m
        for r in range(3, m - 1, -1):
            for i in range(n):
                tab[r, i] = (c * tab[r, i] - tab[r - 1, i]) / (c - 1.0)
    for i in range(n):
        col[i] = tab[3, i]


@njit(JAC_SIG, cache=True)
def jac(y, beta, theta, J):
    n = y.shape[0]
    yp = y.copy()
    f0 = np.empty(n)
    fa = np.empty(n)
    fb = np.empty(n)
    fc = np.empty(n)
    fd = np.empty(n)
    col = np.empty(n)
    d = np.zeros(n)
    Q = np.empty((M, M))
    qi = np.empty((M, M), dtype=np.int64)
    p = 0
    hmax = 0.0
    for k in range(M):
        for l in range(k, M):
            Q[k, l] = y[p]
            Q[l, k] = y[p]
            qi[k, l] = p
            qi[l, k] = p
            hmax = max(hmax, {STEP} * (1.0 + abs(y[p])))
            p += 1
    n_q = p
    lmin = np.linalg.eigvalsh(Q)[0]
    central_q = lmin > 1.01 * hmax
    rhs(y, beta, theta, f0)
    for j in range(n):
        if j < n_q and not central_q:
            continue
        d[j] = 1.0
        _fd_col(y, beta, theta, d, {STEP} * (1.0 + abs(y[j])), f0, fa, fb, fc, fd, yp, col,
                True)
        d[j] = 0.0
        for i in range(n):
            J[i, j] = col[i]
    if central_q:
        return
    # Q (nearly) singular: PSD-preserving one-sided directions
    diag = np.empty((M, n))
    for k in range(M):
        j = qi[k, k]
        d[j] = 1.0
        _fd_col(y, beta, theta, d, {STEP} * (1.0 + abs(y[j])), f0, fa, fb, fc, fd, yp, col,
                False)
        d[j] = 0.0
        for i in range(n):
            diag[k, i] = col[i]
            J[i, j] = col[i]
    for k in range(M):
        for l in range(k + 1, M):
            j = qi[k, l]
            jk = qi[k, k]
            jl = qi[l, l]
            d[j] = 1.0
            d[jk] = 1.0
            d[jl] = 1.0
            h = {STEP} * (1.0 + max(abs(y[j]), abs(y[jk]), abs(y[jl])))
            _fd_col(y, beta, theta, d, h, f0, fa, fb, fc, fd, yp, col, False)
            d[j] = 0.0
            d[jk] = 0.0
            d[jl] = 0.0
            for i in range(n):
                J[i, j] = col[i] - diag[k, i] - diag[l, i]
"""

_PROLOGUE = """    Q = np.empty((M, M))
    R = np.empty((M, K))
    T = np.empty((K, K))
    pi = np.empty(K)
    w = np.empty(M)
    f = np.empty(M)
    U = np.empty((M, M))
    Cq = np.empty((M, M))
    V = np.empty((M, K))
    Cp = np.empty((K, K))
    Erho = np.empty((M, M))
    Lq = np.empty(M)
    Er = np.empty((M, K))
    Lp = np.empty(M)
    Delta, s, sigma0_sq = _unpack(y, theta, Q, R, T, pi, w)
    _logits(Q, R, T, pi, w, Delta, s, U, Cq, V, Cp)
    # --- Gaussian expectations: Erho[k, j] = E_k rho_j, Lq[k] = E_k LSE(u) (covariance Q / s);
    # Er[k, a] = E_k r_a, Lp[k] = E_k LSE(v) (covariance s T / Delta^2)
    gauss_softmax_rows(U, Cq, Erho, Lq)
    gauss_softmax_rows(V, Cp, Er, Lp)
    gamma = {GAMMA}
    _chain(beta, gamma, Q, R, T, w, Delta, s, sigma0_sq, Erho, Er, Lq, Lp, G, H, f)
"""


def generate_loop_source(model: LoopModel, kind: str = "rhs") -> str:
    """Source of the generated module of ``model`` defining the function ``kind`` ("rhs",
    "objective" or "gradient"; layout: the module docstring)."""
    if kind not in _KINDS:
        raise ValueError(f"kind: must be one of {list(_KINDS)}, got {kind!r}")
    st = model.structure
    K, M = st.K, st.M
    c = model.ctx
    pr = _LoopPrinter()
    k, l, a = (pr._print(x) for x in (c.k, c.l, c.a))
    geo = st.path == "geometric"
    tw = st.train_weights
    n_T = K * (K + 1) // 2
    # theta layout (derivations.spec.parameter_names): T upper, pi, Delta, s, [sigma0_sq], [w]
    i_delta = n_T + K
    i_s0 = i_delta + 2
    i_w = i_s0 + (1 if geo else 0)
    chain = ["@njit(cache=True)",
             "def _chain(beta, gamma, Q, R, T, w, Delta, s, sigma0_sq, Erho, Er, Lq, Lp, G, H, f):",
             "    # --- G_kl = " + ", ".join(f"{t.name}" for t in model.terms),
             f"    for {k} in range(M):",
             f"        for {l} in range(M):"]
    chain += _assign(f"G[{k}, {l}]", model.G, pr, "            ")
    chain += ["    # --- H_ka", f"    for {k} in range(M):", f"        for {a} in range(K):"]
    chain += _assign(f"H[{k}, {a}]", model.H, pr, "            ")
    chain += ["    # --- f_k (F = sum_k w_k f_k + const)", f"    for {k} in range(M):"]
    chain += _assign(f"f[{k}]", model.f, pr, "        ")
    red = ["@njit(cache=True)",
           "def _reduce(Q, R, T, w, G, H, f, out):",
           "    # --- dQ/dt (upper triangle, row-major)",
           "    p = 0",
           f"    for {k} in range(M):",
           f"        for {l} in range({k}, M):"]
    red += _assign("out[p]", model.dQ, pr, "            ")
    red += ["            p += 1", "    # --- dR/dt (row-major)",
            f"    for {k} in range(M):", f"        for {a} in range(K):"]
    red += _assign("out[p]", model.dR, pr, "            ")
    red += ["            p += 1"]
    if tw:
        red += ["    # --- dalpha/dt = -dF/dalpha", f"    for {k} in range(M):"]
        red += _assign("out[p]", model.dalpha, pr, "        ")
        red += ["        p += 1"]
    dalpha_grad = []
    if tw:
        dalpha_grad = ["    # --- dF/dalpha_k = w_k (f_k - sum_j w_j f_j)",
                       "    fm = 0.0", "    for j in range(M):", "        fm += w[j] * f[j]",
                       "    for k in range(M):", "        dF_dalpha[k] = w[k] * (f[k] - fm)"]
    terms = ", ".join(t.name for t in model.terms)
    pro = _PROLOGUE.replace("{GAMMA}", "1.0 - beta" if geo else "0.0")
    ENTRY = {
        "rhs": "@njit(RHS_SIG, cache=True)\ndef rhs(y, beta, theta, out):\n"
               "    G = np.empty((M, M))\n    H = np.empty((M, K))\n" + pro
               + "    _reduce(Q, R, T, w, G, H, f, out)\n",
        "objective": "@njit(OBJ_SIG, cache=True)\ndef objective(y, beta, theta):\n"
                     "    G = np.empty((M, M))\n    H = np.empty((M, K))\n" + pro
                     + "    F = 0.0\n    for k in range(M):\n        F += w[k] * f[k]\n"
                       "    return F\n",
        "gradient": "@njit(GRAD_SIG, cache=True)\ndef gradient(y, beta, theta, G, H, dF_dalpha):\n"
                    + pro + "\n".join(dalpha_grad) + "\n",
    }
    ENTRY["jac"] = ENTRY["rhs"] + _JAC_ENTRY.replace("{STEP}", repr(JAC_FD_STEP)) \
        + _NOTHROW.format(kind="jac", sig="JAC_SIG", args="y, beta, theta, J", out="J[:, :]")
    ENTRY["rhs"] += _NOTHROW.format(kind="rhs", sig="RHS_SIG", args="y, beta, theta, out",
                                    out="out[:]")
    src = f'''"""Generated by derivations.loopgen (version {LOOPGEN_VERSION}) -- do not edit.

Loop-form engine (route 2), function {kind}, structure K={K}, M={M}, train_weights={tw}, path={st.path}.
Terms: {terms}.  State: {", ".join(st.state_names)}.
Parameters (theta): {", ".join(st.parameter_names)}.
"""
import math

import numpy as np
from numba import njit

from solvers.signatures import {_SIG[kind]}
from solvers.softmax import gauss_softmax_rows

K = {K}
M = {M}
STATE_NAMES = {tuple(st.state_names)!r}
PARAMETER_NAMES = {tuple(st.parameter_names)!r}


@njit(cache=True)
def _unpack(y, theta, Q, R, T, pi, w):
    """Statistics and parameters into arrays; returns (Delta, s, sigma0_sq)."""
    p = 0
    for k in range(M):
        for l in range(k, M):
            Q[k, l] = y[p]
            Q[l, k] = y[p]
            p += 1
    for k in range(M):
        for a in range(K):
            R[k, a] = y[p]
            p += 1
    q = 0
    for a in range(K):
        for b in range(a, K):
            T[a, b] = theta[q]
            T[b, a] = theta[q]
            q += 1
    for a in range(K):
        pi[a] = theta[q]
        q += 1
    Delta = theta[{i_delta}]
    s = theta[{i_delta + 1}]
    sigma0_sq = {f"theta[{i_s0}]" if geo else "1.0"}
    if {tw}:
        m = -1e300
        for k in range(M):
            m = max(m, y[p + k])
        z = 0.0
        for k in range(M):
            w[k] = math.exp(y[p + k] - m)
            z += w[k]
        for k in range(M):
            w[k] /= z
    else:
        for k in range(M):
            w[k] = theta[{i_w} + k]
    return Delta, s, sigma0_sq


@njit(cache=True)
def _logits(Q, R, T, pi, w, Delta, s, U, Cq, V, Cp):
    """Means and covariances of the variational logits u (rows k: U[k], common Q / s) and of
    the target logits v (rows k: V[k], common s T / Delta^2)."""
    for k in range(M):
        for j in range(M):
            U[k, j] = math.log(w[j]) + (Q[k, j] - 0.5 * Q[j, j]) / s
            Cq[k, j] = Q[k, j] / s
    for k in range(M):
        for a in range(K):
            V[k, a] = math.log(pi[a]) + (R[k, a] - 0.5 * T[a, a]) / Delta
    for a in range(K):
        for b in range(K):
            Cp[a, b] = s * T[a, b] / (Delta * Delta)


{chr(10).join(chain)}


{chr(10).join(red)}


{ENTRY[kind]}
'''
    return src


def _digest() -> str:
    h = hashlib.sha256()
    mods = ["derivations.loopgen", "derivations.loops", "derivations.terms",
            "derivations.codegen"]
    from .terms import load_terms
    load_terms()
    mods += sorted(m for m in sys.modules if m.startswith("derivations.terms."))
    for mod in mods:
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot locate {mod}: is the package installed?")
        h.update(Path(spec.origin).read_bytes())
    from .codegen import solvers_digest
    h.update(solvers_digest().encode())  # every kernel the loops call, and what they call
    h.update(sp.__version__.encode())
    return h.hexdigest()


def loop_module_key(structure: ModelStructure, kind: str = "rhs") -> str:
    text = "|".join([structure.key(), kind, LOOPGEN_VERSION, ",".join(structure.state_names),
                     ",".join(structure.parameter_names), _digest()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CompiledLoopModel:
    """The loop-form engine of one structure (:class:`solvers.model.CompiledModelProtocol`;
    ``jac`` by finite differences of ``rhs``, :data:`JAC_FD_DOC`).  ``timings``: seconds spent deriving + generating (0 when cached) and
    importing + compiling."""

    structure: ModelStructure
    timings: dict = field(default_factory=dict, compare=False, repr=False)
    engine = "loops"

    @property
    def state_names(self) -> list[str]:
        return self.structure.state_names

    @property
    def parameter_names(self) -> list[str]:
        return self.structure.parameter_names

    @property
    def n_state(self) -> int:
        return self.structure.n_state

    def module_path(self, kind: str = "rhs") -> Path:
        key = loop_module_key(self.structure, kind)
        return cache_dir() / f"mfvi_loops_{self.structure.key()}_{kind}_{key}.py"

    def _function(self, kind: str) -> Callable:
        return load_generated(
            self.module_path(kind), kind,
            lambda: generate_loop_source(derive_loops(self.structure), kind), self.timings)

    @cached_property
    def rhs(self) -> Callable:
        return self._function("rhs")

    @cached_property
    def objective(self) -> Callable:
        return self._function("objective")

    @cached_property
    def gradient(self) -> Callable:
        return self._function("gradient")

    @cached_property
    def jac(self) -> Callable:
        return self._function("jac")


_MODELS: dict[ModelStructure, CompiledLoopModel] = {}


def compile_loop_model(structure: ModelStructure) -> CompiledLoopModel:
    """The (process-wide shared) loop-form engine of a structure; loads on first access."""
    if not isinstance(structure, ModelStructure):
        raise ValueError("structure: must be a ModelStructure (e.g. spec.structure)")
    if structure not in _MODELS:
        _MODELS[structure] = CompiledLoopModel(structure)
    return _MODELS[structure]
