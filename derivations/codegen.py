"""Python source for Numba from the derived equations, and its on-disk module cache.

Pipeline for one function (right-hand side, Jacobian or objective) of one structure:

1. collect the Gaussian-expectation atoms ``GaussLSE(n, alpha, a, C)`` and group them by their
   point (a, C): every group becomes ONE kernel call that returns all the derivatives the
   expressions need (``solvers.quadrature.softplus_moments`` for n = 1, ``lse_moments``
   otherwise), so one quadrature serves e.g. both ``E sigmoid`` and ``E sigmoid'``;
2. common-subexpression elimination (``sympy.cse``) on the kernel arguments, then on the
   expressions with each atom replaced by a named symbol;
3. printing with :class:`NumbaPrinter` (a ``PythonCodePrinter`` whose ``_print_GaussLSE``
   maps an atom to its kernel), one assignment per line, into a real module whose functions
   are ``@njit(<signature from solvers.signatures>, cache=True)``.

``lambdify`` + ``njit`` cannot be cached across processes; a real file can.  The module is
stored under ``$MFVI_CACHE_DIR`` (default ``~/.cache/mfvi``) in a file named by a hash of the
structure, the package version, the code-generator version and the sources of the derivation,
the generator and the kernels it calls (Numba's own cache does not see changes in called functions of other modules, so a kernel
change must change the file name).  Files are written atomically, so concurrent processes can
share the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from .atomic import atomic_write
from .functions import GaussLSE
from .model import ReducedModel, derive
from .spec import ModelStructure

__all__ = ["NumbaPrinter", "generate_source", "compile_model", "CompiledModel", "cache_dir",
           "CODEGEN_VERSION"]

#: Bump when the generated code changes shape (part of the cache key).
CODEGEN_VERSION = "1"

_KIND_SIGNATURE = {"rhs": "RHS_SIG", "jac": "JAC_SIG", "objective": "OBJ_SIG"}


class NumbaPrinter(PythonCodePrinter):
    """Prints scalar SymPy expressions as Numba-compatible Python (``math`` functions).

    ``GaussLSE`` atoms are printed as a call of their kernel (one quadrature per atom); the code
    generator avoids that cost by grouping atoms first, so in generated modules this method
    only serves expressions that were not grouped.
    """

    def _print_GaussLSE(self, expr: GaussLSE) -> str:
        call = self.kernel_call(expr.n, expr.point, [expr.orders])
        return call + (f"[{expr.orders[0]}]" if expr.n == 1 else "[0]")

    def kernel_call(self, n: int, point: Sequence[sp.Expr], orders: Sequence[Sequence[int]]
                    ) -> str:
        """Source of one kernel call at point (a, C) returning the requested derivatives.

        For n = 1 the result is indexed by the derivative order (``softplus_moments`` returns
        orders 0..max); for n >= 2 by the position in ``orders`` (passed as a constant array).
        """
        args = [self._print(x) for x in point]
        if n == 1:
            return f"softplus_moments({args[0]}, {args[1]}, {max(o[0] for o in orders)})"
        a = ", ".join(args[:n])
        C = _full_matrix_source(n, args[n:])
        alphas = ", ".join("(" + ", ".join(str(x) for x in o) + ",)" for o in orders)
        return (f"lse_moments(np.array([{a}]), np.array({C}), "
                f"np.array([{alphas}], dtype=np.int64))")


def _full_matrix_source(n: int, upper: Sequence[str]) -> str:
    from .functions import upper_index
    rows = []
    for i in range(n):
        rows.append("[" + ", ".join(upper[upper_index(n, i, j)] for j in range(n)) + "]")
    return "[" + ", ".join(rows) + "]"


@dataclass
class _Group:
    index: int
    n: int
    point: tuple[sp.Expr, ...]
    orders: list[tuple[int, ...]] = field(default_factory=list)


def _body_lines(exprs: Sequence[sp.Expr], printer: NumbaPrinter) -> tuple[list[str], list[str]]:
    """Assignment lines computing ``exprs``; returns (lines, names of the results)."""
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

    lines: list[str] = []
    # Stage 1: the kernel arguments, with their own common subexpressions.
    arg_exprs = [x for g in groups.values() for x in g.point]
    arg_repl, arg_red = sp.cse(arg_exprs, symbols=sp.numbered_symbols("p"), order="none")
    for sym, val in arg_repl:
        lines.append(f"{sym} = {printer.doprint(val)}")
    subs: dict[sp.Expr, sp.Symbol] = {}
    pos = 0
    for g in groups.values():
        npt = len(g.point)
        red = arg_red[pos:pos + npt]
        pos += npt
        arg_names = []
        for j, val in enumerate(red):
            name = sp.Symbol(f"g{g.index}_{j}")
            lines.append(f"{name} = {printer.doprint(val)}")
            arg_names.append(name)
        g.orders.sort(key=lambda o: (sum(o), tuple(-x for x in o)))
        if g.n == 1:
            lines.append(f"E{g.index} = {printer.kernel_call(1, arg_names, g.orders)}")
            for o in g.orders:
                sym = sp.Symbol(f"E{g.index}_{o[0]}")
                lines.append(f"{sym} = E{g.index}[{o[0]}]")
                subs[GaussLSE(sp.Integer(1), sp.Integer(o[0]), *g.point)] = sym
        else:
            lines.append(f"E{g.index} = {printer.kernel_call(g.n, arg_names, g.orders)}")
            for r, o in enumerate(g.orders):
                sym = sp.Symbol(f"E{g.index}_" + "".join(str(x) for x in o))
                lines.append(f"{sym} = E{g.index}[{r}]")
                subs[GaussLSE(sp.Integer(g.n), *[sp.Integer(x) for x in o], *g.point)] = sym
    # Stage 2: the expressions, the atoms now plain symbols.
    replaced = [e.xreplace(subs) for e in exprs]
    repl, red = sp.cse(replaced, symbols=sp.numbered_symbols("x"), order="none")
    for sym, val in repl:
        lines.append(f"{sym} = {printer.doprint(val)}")
    return lines, [printer.doprint(r) for r in red]


def generate_source(model: ReducedModel, kind: str) -> str:
    """Source of a module defining one compiled function of ``model``.

    ``kind`` is ``"rhs"`` (``rhs(y, beta, theta, out)``), ``"jac"`` (``jac(y, beta, theta, J)``)
    or ``"objective"`` (``objective(y, beta, theta) -> F`` without the state-independent
    constant).  Signatures: ``solvers.signatures``.
    """
    if kind not in _KIND_SIGNATURE:
        raise ValueError(f"kind: must be one of {sorted(_KIND_SIGNATURE)}, got {kind!r}")
    st = model.structure
    printer = NumbaPrinter({"fully_qualified_modules": True, "standard": "python3"})
    if kind == "rhs":
        exprs = list(model.rhs)
    elif kind == "jac":
        exprs = list(model.jacobian())
    else:
        exprs = [model.objective_state]
    lines, results = _body_lines(exprs, printer)

    n = len(model.state)
    kernels = [k for k in ("lse_moments", "softplus_moments")
               if any(k + "(" in line for line in lines + results)]
    kernel_import = (f"from solvers.quadrature import {', '.join(kernels)}" if kernels
                     else "# no Gaussian-expectation kernels needed")
    head = [
        f'"""Generated by derivations.codegen (version {CODEGEN_VERSION}) -- do not edit.',
        "",
        f"Structure: K={st.K}, M={st.M}, train_weights={st.train_weights}, path={st.path}.",
        f"Function: {kind}.  State: {', '.join(s.name for s in model.state)}.",
        f"Parameters (theta): {', '.join(p.name for p in model.params)}.",
        '"""',
        "import math",
        "",
        "import numpy as np",
        "from numba import njit",
        "",
        kernel_import,
        f"from solvers.signatures import {_KIND_SIGNATURE[kind]}",
        "",
        f"STATE_NAMES = {tuple(s.name for s in model.state)!r}",
        f"PARAMETER_NAMES = {tuple(p.name for p in model.params)!r}",
        "",
        "",
        f"@njit({_KIND_SIGNATURE[kind]}, cache=True)",
    ]
    if kind == "rhs":
        head.append("def rhs(y, beta, theta, out):")
    elif kind == "jac":
        head.append("def jac(y, beta, theta, J):")
    else:
        head.append("def objective(y, beta, theta):")
    body = [f"{s.name} = y[{i}]" for i, s in enumerate(model.state)]
    body += [f"{p.name} = theta[{i}]" for i, p in enumerate(model.params)]
    body += lines
    if kind == "rhs":
        body += [f"out[{i}] = {r}" for i, r in enumerate(results)]
    elif kind == "jac":
        body += [f"J[{i // n}, {i % n}] = {r}" for i, r in enumerate(results)]
    else:
        body += [f"return {results[0]}"]
    return "\n".join(head + ["    " + b for b in body]) + "\n"


# ------------------------------------------------------------------------------------------
# on-disk cache and loading
# ------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Directory of generated modules: ``$MFVI_CACHE_DIR`` or ``~/.cache/mfvi``."""
    root = os.environ.get("MFVI_CACHE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "mfvi"
    path = path / "generated"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_version() -> str:
    try:
        from importlib.metadata import version
        return version("mfvi")
    except Exception:  # not installed: source checkout
        return "source"


def _dependency_digest() -> str:
    h = hashlib.sha256()
    for mod in ("solvers.quadrature", "solvers.signatures", "derivations.codegen",
                "derivations.model", "derivations.functions"):
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot locate {mod}: is the package installed?")
        h.update(Path(spec.origin).read_bytes())
    h.update(sp.__version__.encode())
    return h.hexdigest()


def module_key(structure: ModelStructure, kind: str) -> str:
    """Cache key of a generated module: structure, versions, kernel sources."""
    text = "|".join([structure.key(), kind, _package_version(), CODEGEN_VERSION,
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


@dataclass(frozen=True)
class CompiledModel:
    """The compiled functions of one structure, generated and loaded on first access.

    ``rhs``, ``jac`` and ``objective`` follow ``solvers.signatures``; the parameter vector is
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
        path = self.module_path(kind)
        t0 = time.perf_counter()
        generated = False
        if not path.exists():
            atomic_write(path, generate_source(self.symbolic, kind))
            generated = True
        t1 = time.perf_counter()
        module = _load_module(path, path.stem)
        t2 = time.perf_counter()
        self.timings[kind] = {"generate_s": t1 - t0 if generated else 0.0, "load_s": t2 - t1,
                              "generated": generated}
        return getattr(module, kind)

    @cached_property
    def rhs(self) -> Callable:
        return self._function("rhs")

    @cached_property
    def jac(self) -> Callable:
        return self._function("jac")

    @cached_property
    def objective(self) -> Callable:
        return self._function("objective")


_MODELS: dict[ModelStructure, CompiledModel] = {}


def compile_model(structure: ModelStructure) -> CompiledModel:
    """The (process-wide shared) compiled model of a structure; functions load lazily."""
    if not isinstance(structure, ModelStructure):
        raise ValueError("structure: must be a ModelStructure (e.g. spec.structure)")
    if structure not in _MODELS:
        _MODELS[structure] = CompiledModel(structure)
    return _MODELS[structure]
