"""Python source for Numba from the derived equations, and its on-disk module cache.

A generated module defines one function of one structure, ``@njit(<signature from
solvers.signatures>, cache=True)``.  Its body reads like the mathematics of DESIGN.md
section 2, one section per block, each under a comment ``# --- <block>``:

* ``rhs(y, beta, theta, out)``: ``G = dF/dQ + dF/dQ^T`` (symbols ``G_k_l``, k <= l: G is
  symmetric), ``H = dF/dR`` (``H_k_a``), then ``dQ/dt = -(G Q + Q G^T + H R^T + R H^T)`` and
  ``dR/dt = -(G R + H T)`` written in those symbols, and ``dalpha/dt = -dF/dalpha`` when the
  weights train;
* ``jac(y, beta, theta, J)``: G and H, their derivatives ``dG/dy`` and ``dH/dy`` (symbols
  ``dG_k_l_d<y>``, structurally zero ones omitted), then the rows of J by the product rule
  through G and H (``d(dQ/dt)/dy``, ``d(dR/dt)/dy``) and ``d(dalpha/dt)/dy``; J is zeroed
  first when some entries vanish identically;
* ``objective(y, beta, theta)``: F without its state-independent constant;
* ``gradient(y, beta, theta, G, H, dF_dalpha)``: the chain-rule matrices themselves, for the
  finite-step maps (``solvers.gd``): the G and H blocks as in ``rhs``, then the outputs
  ``G`` (M x M, both triangles), ``H`` (M x K) and ``dF_dalpha = dF/dalpha`` (M,; length 0 and
  untouched for fixed weights).  With them ``grad_{m_k} F = sum_l G_kl m_l + sum_a H_ka mu_a``.

Pipeline:

1. collect the Gaussian-expectation atoms ``GaussLSE(n, alpha, a, C)`` of all blocks and group
   them by their point (a, C): every group becomes ONE kernel call, under the first section
   ("Gaussian expectations"), that returns all the derivatives the blocks need
   (``solvers.quadrature.softplus_moments`` for n = 1, ``lse_moments`` otherwise), so one
   quadrature serves e.g. both ``E sigmoid`` and ``E sigmoid'``;
2. ONE ``sympy.cse`` pass over everything the function computes: the kernel arguments (the
   means and the full matrix C, so a shared off-diagonal entry is named once) and every
   block's expressions with each atom replaced by a named symbol.  A common subexpression is
   assigned once, just before the first line needing it; a trivial one (``-x``, ``2*Q_1_2``) is
   written in place; one that is a whole quantity of G, H, dG/dy or dH/dy takes that name;
3. printing with :class:`NumbaPrinter` (a ``PythonCodePrinter``), one assignment per line.
   The printer records every module-level name it prints (``math`` functions, ``numpy``, the
   kernels) and the import lines are written from that record, so a module imports exactly
   what it uses.  Constant arrays (the multi-index tables of ``lse_moments``) are module
   globals, which Numba freezes into the compiled code, not rebuilt per call; only the
   state and parameters the body reads are unpacked from y and theta.

``lambdify`` + ``njit`` cannot be cached across processes; a real file can.  The module is
stored under ``$MFVI_CACHE_DIR`` (default ``~/.cache/mfvi``) in a file named by
:func:`module_key`: a hash of the structure, the package and code-generator versions, the
state layout and the sources of the derivation, this generator and the kernels it calls
(Numba's own cache does not see changes in called functions of other modules, so a kernel
change must change the file name).  Files are written atomically, so concurrent processes can
share the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .atomic import atomic_write
from .functions import GaussLSE
from .model import ReducedModel, derive
from .spec import ModelStructure

__all__ = ["CODEGEN_VERSION", "CompiledModel", "NumbaPrinter", "cache_dir", "compile_model",
           "generate_source", "module_key"]

#: Bump when the generated code changes shape (part of the cache key).
CODEGEN_VERSION = "2"

_KIND_SIGNATURE = {"rhs": "RHS_SIG", "jac": "JAC_SIG", "objective": "OBJ_SIG",
                   "gradient": "GRAD_SIG"}
_KIND_DEF = {"rhs": "def rhs(y, beta, theta, out):", "jac": "def jac(y, beta, theta, J):",
             "objective": "def objective(y, beta, theta):",
             "gradient": "def gradient(y, beta, theta, G, H, dF_dalpha):"}
#: Modules generated code may use: the printer's record of what it printed must stay inside.
_ALLOWED_MODULES = ("math", "numpy", "solvers.quadrature")


class NumbaPrinter(PythonCodePrinter):
    """Prints scalar SymPy expressions as Numba-compatible Python (``math`` functions).

    Every module-level name the printer writes is recorded in ``module_imports`` (module ->
    names; SymPy's own record for ``math``, extended here to ``numpy`` and the kernels of
    ``solvers.quadrature``), and :func:`generate_source` writes its import lines from that
    record.

    ``GaussLSE`` atoms are printed as a call of their kernel (one quadrature per atom); the code
    generator avoids that cost by grouping atoms first, so in generated modules this method
    only serves expressions that were not grouped.
    """

    def __init__(self, settings: dict | None = None) -> None:
        super().__init__({"fully_qualified_modules": True, "standard": "python3",
                          **(settings or {})})

    def _print_GaussLSE(self, expr: GaussLSE) -> str:
        call = self.kernel_call(expr.n, expr.point, [expr.orders])
        return call + (f"[{expr.orders[0]}]" if expr.n == 1 else "[0]")

    def kernel_call(self, n: int, point: Sequence[sp.Expr], orders: Sequence[Sequence[int]]
                    ) -> str:
        """Source of one kernel call at point (a, C) returning the requested derivatives.

        ``point`` holds the n means and the n(n+1)/2 upper-triangle covariance entries (the
        argument layout of ``GaussLSE``).  For n = 1 the result is indexed by the derivative
        order (``softplus_moments`` returns orders 0..max); for n >= 2 by the position in
        ``orders`` (written here as an inline array).
        """
        args = [self._print(x) for x in point]
        from .functions import upper_index
        cov = [[args[n + upper_index(n, i, j)] for j in range(n)] for i in range(n)]
        if n == 1:
            return self.softplus_call(args[0], cov[0][0], max(o[0] for o in orders))
        table = self.int_array_source([list(o) for o in orders])
        return self.lse_call(args[:n], cov, table)

    # -- the pieces of a kernel call, each recording the names it prints ------------------------
    def softplus_call(self, a: str, c: str, max_order: int) -> str:
        """``softplus_moments(a, c, max_order)`` (n = 1): E softplus^(k)(a + sqrt(c) xi)."""
        self.module_imports["solvers.quadrature"].add("softplus_moments")
        return f"softplus_moments({a}, {c}, {max_order})"

    def lse_call(self, a: Sequence[str], cov: Sequence[Sequence[str]], alphas: str) -> str:
        """``lse_moments(a, C, alphas)`` (n >= 2), C given as the full n x n matrix."""
        self.module_imports["solvers.quadrature"].add("lse_moments")
        self.module_imports["numpy"].add("array")
        rows = ", ".join("[" + ", ".join(r) + "]" for r in cov)
        return f"lse_moments(np.array([{', '.join(a)}]), np.array([{rows}]), {alphas})"

    def int_array_source(self, rows: Sequence[Sequence[int]]) -> str:
        """``np.array(rows, dtype=np.int64)`` (a 2-D table of integers)."""
        self.module_imports["numpy"].update(("array", "int64"))
        body = ", ".join("[" + ", ".join(str(int(x)) for x in r) + "]" for r in rows)
        return f"np.array([{body}], dtype=np.int64)"

    def import_lines(self, signature: str) -> list[str]:
        """Import lines of a module whose code this printer printed (PEP 8 groups)."""
        used = {m: sorted(v) for m, v in self.module_imports.items() if v}
        unknown = sorted(set(used) - set(_ALLOWED_MODULES))
        if unknown:
            raise RuntimeError(f"generated code would need modules {unknown}: only "
                               f"{list(_ALLOWED_MODULES)} are allowed (no SymPy at run time)")
        stdlib = ["import math"] if "math" in used else []
        third = (["import numpy as np"] if "numpy" in used else []) + ["from numba import njit"]
        local = ([f"from solvers.quadrature import {', '.join(used['solvers.quadrature'])}"]
                 if "solvers.quadrature" in used else [])
        local.append(f"from solvers.signatures import {signature}")
        out: list[str] = []
        for group in (stdlib, third, local):
            if group:
                out += group + [""]
        return out[:-1]


# ------------------------------------------------------------------------------------------
# the blocks of a generated function
# ------------------------------------------------------------------------------------------

@dataclass
class _Block:
    """One section of a generated function: ``targets[i] = exprs[i]`` under ``# --- title``.

    ``defines`` marks the blocks whose targets are named quantities (G, H, their derivatives)
    that later blocks read as plain symbols; ``prologue`` lines open the section."""

    title: str
    targets: list[str]
    exprs: list[sp.Expr]
    defines: bool = False
    prologue: list[str] = field(default_factory=list)


def _named(title: str, pairs: Sequence[tuple[sp.Symbol, sp.Expr]]) -> _Block:
    return _Block(title, [s.name for s, _ in pairs], [e for _, e in pairs], defines=True)


def _blocks(model: ReducedModel, kind: str) -> list[_Block]:
    """The sections of ``kind`` for ``model`` (see the module docstring)."""
    if kind == "objective":
        return [_Block("F, without the state-independent constant c(beta, gamma, d)", ["F"],
                       [model.objective_state])]
    st = model.structure
    M, K = st.M, st.K
    gsub = {model.gamma: model.gamma_value}
    pairs = [(k, l) for k in range(M) for l in range(k, M)]
    gsym = {kl: sp.Symbol(f"G_{kl[0] + 1}_{kl[1] + 1}", real=True) for kl in pairs}
    hsym = {(k, a): sp.Symbol(f"H_{k + 1}_{a + 1}", real=True)
            for k in range(M) for a in range(K)}
    G = sp.Matrix(M, M, lambda k, l: gsym[(min(k, l), max(k, l))])
    H = sp.Matrix(M, K, lambda k, a: hsym[(k, a)])
    # G is symmetric (one symbol per unordered pair of Q), so its upper triangle defines it
    # (factor_terms: cheap here, and it takes out the 2 of G_kk = 2 dF/dq_kk and the like)
    g_def = [(gsym[kl], sp.factor_terms(model.G[kl].xreplace(gsub))) for kl in pairs]
    h_def = [(hsym[ka], sp.factor_terms(model.H[ka].xreplace(gsub))) for ka in hsym]
    dQ = -(G * model.Q + model.Q * G.T + H * model.R.T + model.R * H.T)
    dR = -(G * model.R + H * model.T)
    ode_q = [dQ[kl] for kl in pairs]                 # ordered as the state: upper triangle,
    ode_r = [dR[ka] for ka in hsym]                  # then R row-major, then alpha
    dalpha = [e.xreplace(gsub) for e in model.dalpha]
    # tied variances: d(log s)/dt (derivations.model.variance_treatment), the last state entry
    dlog_s = [] if model.dlog_s is None else [model.dlog_s.xreplace(gsub)]
    n_q, n_r = len(ode_q), len(ode_r)
    blocks = [_named("G = dF/dQ + dF/dQ^T (symmetric: upper triangle)", g_def),
              _named("H = dF/dR", h_def)]
    if kind == "gradient":
        if dlog_s:
            raise ValueError("kind: the 'gradient' function (finite-step maps) is not "
                             "implemented for tied (trained) variances; use the gradient flow")
        blocks.append(_Block(
            "outputs: G (M x M, both triangles) and H (M x K)",
            [f"G[{k}, {l}]" for k in range(M) for l in range(M)]
            + [f"H[{k}, {a}]" for k in range(M) for a in range(K)],
            [G[k, l] for k in range(M) for l in range(M)]
            + [H[k, a] for k in range(M) for a in range(K)]))
        if dalpha:
            blocks.append(_Block("dF/dalpha", [f"dF_dalpha[{k}]" for k in range(M)],
                                 [-e for e in dalpha]))
        return blocks
    if kind == "rhs":
        blocks += [
            _Block("dQ/dt = -(G Q + Q G^T + H R^T + R H^T)",
                   [f"out[{i}]" for i in range(n_q)], ode_q),
            _Block("dR/dt = -(G R + H T)", [f"out[{n_q + i}]" for i in range(n_r)], ode_r),
        ]
        if dalpha:
            blocks.append(_Block("dalpha/dt = -dF/dalpha",
                                 [f"out[{n_q + n_r + i}]" for i in range(len(dalpha))], dalpha))
        if dlog_s:
            blocks.append(_Block("dlog_s/dt = -inv_d dF/dlog_s (natural time scale of s)",
                                 [f"out[{n_q + n_r + len(dalpha)}]"], dlog_s))
        return blocks

    # Jacobian: the product rule through G and H, with their derivatives as named symbols
    state = model.state
    deriv: dict[sp.Symbol, dict[sp.Symbol, sp.Symbol]] = {}

    def derivative_block(title: str, defs: Sequence[tuple[sp.Symbol, sp.Expr]]) -> _Block:
        out = []
        for sym, expr in defs:
            deriv[sym] = {}
            for y in state:
                e = sp.diff(expr, y)
                if e != 0:
                    deriv[sym][y] = sp.Symbol(f"d{sym.name}_d{y.name}", real=True)
                    out.append((deriv[sym][y], e))
        return _named(title, out)

    blocks += [derivative_block("dG/dy", g_def), derivative_block("dH/dy", h_def)]

    def total(e: sp.Expr, y: sp.Symbol) -> sp.Expr:
        d = sp.diff(e, y)
        for sym in e.free_symbols & deriv.keys():
            if y in deriv[sym]:
                d += sp.diff(e, sym) * deriv[sym][y]
        return d

    n = len(state)
    # (rows, first row index, title, through G and H?)
    row_blocks = [(ode_q, 0, "d(dQ/dt)/dy", True), (ode_r, n_q, "d(dR/dt)/dy", True)]
    if dalpha:
        row_blocks.append((dalpha, n_q + n_r, "d(dalpha/dt)/dy", False))
    if dlog_s:
        row_blocks.append((dlog_s, n_q + n_r + len(dalpha), "d(dlog_s/dt)/dy", False))
    entries = []
    for exprs, first, title, chained in row_blocks:
        targets, values = [], []
        for i, e in enumerate(exprs):
            for j, y in enumerate(state):
                v = total(e, y) if chained else sp.diff(e, y)
                if v != 0:
                    targets.append(f"J[{first + i}, {j}]")
                    values.append(v)
        entries.append(_Block(title, targets, values))
    if sum(len(b.targets) for b in entries) < n * n:
        entries[0].prologue.append("J[:, :] = 0.0")
    return [b for b in blocks + entries if b.targets or b.prologue]


@dataclass
class _Group:
    """Gaussian-expectation atoms sharing one point (a, C): one kernel call."""

    index: int
    n: int
    point: tuple[sp.Expr, ...]
    orders: list[tuple[int, ...]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"E{self.index}"

    def symbol(self, orders: tuple[int, ...]) -> sp.Symbol:
        return sp.Symbol(f"{self.name}_" + "".join(str(o) for o in orders), real=True)

    def arguments(self) -> list[sp.Expr]:
        """The means, then the full covariance matrix row-major (so that CSE names a shared
        off-diagonal entry once)."""
        from .functions import upper_index
        n = self.n
        cov = [self.point[n + upper_index(n, i, j)] for i in range(n) for j in range(n)]
        return list(self.point[:n]) + cov


def _gaussian_groups(exprs: Sequence[sp.Expr]) -> list[_Group]:
    atoms: set[GaussLSE] = set()
    for e in exprs:
        atoms |= e.atoms(GaussLSE)
    groups: dict[tuple, _Group] = {}
    for atom in sorted(atoms, key=sp.default_sort_key):
        key = (atom.n, atom.point)
        if key not in groups:
            groups[key] = _Group(len(groups), atom.n, atom.point)
        if atom.orders not in groups[key].orders:
            groups[key].orders.append(atom.orders)
    for g in groups.values():
        g.orders.sort(key=lambda o: (sum(o), tuple(-x for x in o)))
    return list(groups.values())


def _is_trivial(e: sp.Expr) -> bool:
    """A symbol or a number, or one times a number (``-x``, ``2*Q_1_2``): not worth a line."""
    return e.is_Atom or (e.is_Mul and len(e.args) == 2 and e.args[0].is_Number
                         and e.args[1].is_Atom)


def _function_body(blocks: Sequence[_Block], printer: NumbaPrinter
                   ) -> tuple[list[str], list[str], set[sp.Symbol]]:
    """(module-level constant lines, body lines, free symbols the body reads).

    One ``sympy.cse`` pass covers the kernel arguments and every block.  Each common
    subexpression is assigned once, just before the first kernel call or block that needs it;
    trivial ones (``-x``, ``2*x``) are written in place; one that is a whole quantity of a defining
    block takes that quantity's name (``H_1_1 = ...``, not ``x5 = ...; H_1_1 = x5``); the
    others are named ``x0, x1, ...`` in the order of their assignments.
    """
    groups = _gaussian_groups([e for b in blocks for e in b.exprs])
    atom_sym: dict[GaussLSE, sp.Symbol] = {}
    for g in groups:
        for o in g.orders:
            atom = GaussLSE(sp.Integer(g.n), *[sp.Integer(x) for x in o], *g.point)
            atom_sym[atom] = g.symbol(o)
    arg_exprs = [x for g in groups for x in g.arguments()]
    block_exprs = [e.xreplace(atom_sym) for b in blocks for e in b.exprs]
    repl, red = sp.cse(arg_exprs + block_exprs, symbols=sp.numbered_symbols("_cse"),
                       order="none")
    inline: dict[sp.Symbol, sp.Expr] = {}
    defs: dict[sp.Symbol, sp.Expr] = {}
    for sym, val in repl:
        val = val.xreplace(inline)
        if _is_trivial(val):
            inline[sym] = val
        else:
            defs[sym] = val
    red = [e.xreplace(inline) for e in red]
    rank = {s: i for i, s in enumerate(defs)}
    done: set[sp.Symbol] = set()

    def needed(exprs: Sequence[sp.Expr]) -> list[sp.Symbol]:
        """The not yet assigned common subexpressions ``exprs`` read, in dependency order."""
        todo = [s for e in exprs for s in e.free_symbols if s in defs and s not in done]
        found: set[sp.Symbol] = set()
        while todo:
            s = todo.pop()
            if s not in found:
                found.add(s)
                todo += [t for t in defs[s].free_symbols if t in defs and t not in done]
        done.update(found)
        return sorted(found, key=rank.__getitem__)

    # items: ("#", title), ("raw", line), ("call", group, arguments), ("=", lhs, value) with
    # lhs a common-subexpression symbol or a target string
    items: list[tuple] = []
    alias: dict[sp.Symbol, str] = {}
    pos = 0
    if groups:
        items.append(("#", "Gaussian expectations: one kernel call per point (a, C)"))
    for g in groups:
        k = len(g.arguments())
        args, pos = red[pos:pos + k], pos + k
        items += [("=", s, defs[s]) for s in needed(args)]
        items.append(("call", g, args))
        items += [("raw", f"{g.symbol(o).name} = {g.name}[{o[0] if g.n == 1 else r}]")
                  for r, o in enumerate(g.orders)]
    for b in blocks:
        exprs, pos = red[pos:pos + len(b.exprs)], pos + len(b.exprs)
        items.append(("#", b.title))
        items += [("raw", line) for line in b.prologue]
        if b.defines:
            for t, e in zip(b.targets, exprs):
                if e in defs and e not in done and e not in alias:
                    alias[e] = t
        for t, e in zip(b.targets, exprs):
            # an aliased quantity is assigned where its subexpression is (maybe earlier)
            items += [("=", s, defs[s]) for s in needed([e])]
            if not (b.defines and alias.get(e) == t):
                items.append(("=", t, e))

    rename: dict[sp.Symbol, sp.Symbol] = {}
    numbered = (f"x{i}" for i in range(len(defs)))
    for item in items:
        if item[0] == "=" and isinstance(item[1], sp.Symbol):
            rename[item[1]] = sp.Symbol(alias.get(item[1]) or next(numbered), real=True)
    used: set[sp.Symbol] = set()

    def show(e: sp.Expr) -> str:
        e = sp.sympify(e).xreplace(rename)
        used.update(e.free_symbols)
        return "0.0" if e == 0 else printer.doprint(e)

    constants: list[str] = []                # module level: one table per set of orders
    tables: dict[tuple, str] = {}
    lines: list[str] = []
    for item in items:
        if item[0] == "#":
            lines.append(f"# --- {item[1]}")
        elif item[0] == "raw":
            lines.append(item[1])
        elif item[0] == "call":
            g, args = item[1], [show(a) for a in item[2]]
            if g.n == 1:
                call = printer.softplus_call(args[0], args[1], max(o[0] for o in g.orders))
            else:
                key = tuple(g.orders)
                if key not in tables:
                    tables[key] = f"ALPHAS_{len(tables)}"
                    rows = ", ".join("E*_" + "".join(map(str, o)) for o in g.orders)
                    constants += [f"# lse_moments multi-indices (rows), returned as {rows}",
                                  f"{tables[key]} = {printer.int_array_source(g.orders)}"]
                table = tables[key]
                cov = [args[g.n * (i + 1):g.n * (i + 2)] for i in range(g.n)]
                call = printer.lse_call(args[:g.n], cov, table)
            lines.append(f"{g.name} = {call}")
        else:
            lhs = item[1]
            lines.append(f"{rename[lhs] if isinstance(lhs, sp.Symbol) else lhs} = "
                         f"{show(item[2])}")
    return constants, lines, used


def generate_source(model: ReducedModel, kind: str) -> str:
    """Source of a module defining one compiled function of ``model``.

    ``kind`` is ``"rhs"`` (``rhs(y, beta, theta, out)``), ``"jac"`` (``jac(y, beta, theta, J)``),
    ``"objective"`` (``objective(y, beta, theta) -> F`` without the state-independent
    constant) or ``"gradient"`` (``gradient(y, beta, theta, G, H, dF_dalpha)``: the chain-rule
    matrices G (M, M), H (M, K) and dF/dalpha (M,), empty for fixed weights).  Signatures: ``solvers.signatures``.  Layout of the body: the module docstring.
    """
    if kind not in _KIND_SIGNATURE:
        raise ValueError(f"kind: must be one of {sorted(_KIND_SIGNATURE)}, got {kind!r}")
    st = model.structure
    printer = NumbaPrinter()
    constants, lines, used = _function_body(_blocks(model, kind), printer)
    if kind == "objective":
        lines.append("return F")
    unpack = [f"{s.name} = y[{i}]" for i, s in enumerate(model.state) if s in used]
    unpack += [f"{p.name} = theta[{i}]" for i, p in enumerate(model.params) if p in used]
    head = [
        f'"""Generated by derivations.codegen (version {CODEGEN_VERSION}) -- do not edit.',
        "",
        f"Structure: K={st.K}, M={st.M}, train_weights={st.train_weights}, path={st.path}"
        + (f", objective={st.objective}" if st.objective != "reverse-kl" else "")
        + ("." if st.variances == "fixed" else f", variances={st.variances}."),
        f"Function: {kind}.  State: {', '.join(s.name for s in model.state)}.",
        f"Parameters (theta): {', '.join(p.name for p in model.params)}.",
        '"""',
        *printer.import_lines(_KIND_SIGNATURE[kind]),
        "",
        f"STATE_NAMES = {tuple(s.name for s in model.state)!r}",
        f"PARAMETER_NAMES = {tuple(p.name for p in model.params)!r}",
        *constants,
        "",
        "",
        f"@njit({_KIND_SIGNATURE[kind]}, cache=True)",
        _KIND_DEF[kind],
    ]
    return "\n".join(head + ["    " + b for b in unpack + lines]) + "\n"


# ------------------------------------------------------------------------------------------
# on-disk cache and loading
# ------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Directory of generated modules: ``$MFVI_CACHE_DIR`` or ``~/.cache/mfvi``."""
    root = os.environ.get("MFVI_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "mfvi"
    for q in (path, *path.parents):
        if q.exists() and not q.is_dir():
            raise ValueError(f"MFVI_CACHE_DIR: {q} is a file, not a directory")
    path = path / "generated"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"MFVI_CACHE_DIR: cannot create {path}: {exc.strerror}") from None
    return path


def _package_version() -> str:
    try:
        from importlib.metadata import version
        return version("mfvi")
    except Exception:  # not installed: source checkout
        return "source"


def solvers_digest() -> str:
    """SHA-256 of every module of the ``solvers`` package (sorted by name).

    Numba's cache of a generated module is keyed on that module's own file only, not on the
    kernels it calls: a kernel edited in place (or a new module a kernel calls) would leave a
    stale compiled rhs.  Hashing the whole package into the generated file's name costs a
    recompilation after any solver change and can never miss one."""
    spec = importlib.util.find_spec("solvers")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot locate the solvers package: is mfvi installed?")
    h = hashlib.sha256()
    for root in spec.submodule_search_locations:
        for f in sorted(Path(root).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _dependency_digest() -> str:
    h = hashlib.sha256()
    for mod in ("derivations.codegen", "derivations.model", "derivations.forward_kl",
                "derivations.functions"):
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot locate {mod}: is the package installed?")
        h.update(Path(spec.origin).read_bytes())
    h.update(solvers_digest().encode())
    h.update(sp.__version__.encode())
    return h.hexdigest()


def module_key(structure: ModelStructure, kind: str) -> str:
    """Cache key of a generated module.

    A hash of the structure, the function, the package version, :data:`CODEGEN_VERSION`, the
    layout of y and theta (``spec.state_names`` / ``parameter_names``, which the generated
    code unpacks by position), the SymPy version and the sources of the derivation
    (``derivations.model``, ``derivations.functions``), this generator and every module of
    ``solvers`` (:func:`solvers_digest`: the kernels and signatures the module calls and
    whatever they call), so that any change to them gives a new file.
    """
    text = "|".join([structure.key(), kind, _package_version(), CODEGEN_VERSION,
                     ",".join(structure.state_names), ",".join(structure.parameter_names),
                     _dependency_digest()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_module(path: Path, name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_generated(path: Path, kind: str, make_source: Callable[[], str],
                   timings: dict) -> Callable:
    """Function ``kind`` of the generated module at ``path``, writing ``make_source()`` there
    first if the file is missing; records ``timings[kind]`` (seconds deriving + generating,
    0 when cached, and importing + compiling)."""
    t0 = time.perf_counter()
    generated = not path.exists()
    if generated:
        atomic_write(path, make_source())
    t1 = time.perf_counter()
    module = _load_module(path, path.stem)
    t2 = time.perf_counter()
    timings[kind] = {"generate_s": t1 - t0 if generated else 0.0, "load_s": t2 - t1,
                     "generated": generated}
    fn = getattr(module, kind)
    twin = getattr(module, f"{kind}_nothrow", None)
    if twin is not None:  # see solvers.integrate.as_first_class
        fn.nothrow = twin
    return fn


@dataclass(frozen=True)
class CompiledModel:
    """The compiled functions of one structure, generated and loaded on first access.

    ``rhs``, ``jac``, ``objective`` and ``gradient`` (G, H, dF/dalpha of the chain rule, for
    the finite-step maps of ``solvers.gd``) follow ``solvers.signatures``; the parameter vector is
    ``spec.theta()`` of any specification with this structure.  ``timings`` records, per
    function, the seconds spent deriving + generating source (0 when the module was cached)
    and importing/compiling it.
    """

    structure: ModelStructure
    timings: dict = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def symbolic(self) -> ReducedModel:
        return derive(self.structure)

    @property
    def state_names(self) -> list[str]:
        return self.structure.state_names

    @property
    def parameter_names(self) -> list[str]:
        return self.structure.parameter_names

    @property
    def n_state(self) -> int:
        return self.structure.n_state

    def module_path(self, kind: str) -> Path:
        key = module_key(self.structure, kind)
        return cache_dir() / f"mfvi_{self.structure.key()}_{kind}_{key}.py"

    def _function(self, kind: str) -> Callable:
        return load_generated(self.module_path(kind), kind,
                              lambda: generate_source(self.symbolic, kind), self.timings)

    @cached_property
    def rhs(self) -> Callable:
        return self._function("rhs")

    @cached_property
    def jac(self) -> Callable:
        return self._function("jac")

    @cached_property
    def objective(self) -> Callable:
        return self._function("objective")

    @cached_property
    def gradient(self) -> Callable:
        return self._function("gradient")


_MODELS: dict[ModelStructure, CompiledModel] = {}


def compile_model(structure: ModelStructure) -> CompiledModel:
    """The (process-wide shared) compiled model of a structure; functions load lazily."""
    if not isinstance(structure, ModelStructure):
        raise ValueError("structure: must be a ModelStructure (e.g. spec.structure)")
    if structure not in _MODELS:
        _MODELS[structure] = CompiledModel(structure)
    return _MODELS[structure]
