"""The layering (DESIGN.md section 4-5): derivations -> solvers -> analysis, never upward;
solvers and the generated modules never import SymPy.  Read from the import statements of
every module (parsed with ast, so an import inside a function counts too), generated ones
included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: package -> top-level modules it must not import
FORBIDDEN = {
    "derivations": {"solvers", "analysis"},
    "solvers": {"analysis", "sympy"},
    "generated": {"analysis", "sympy", "derivations"},
}
#: heavy optional extras the core never imports at module level
EXTRAS = {"xarray", "dask", "distributed", "jax", "jaxlib", "flowjax", "equinox", "optax",
          "paramax"}
#: the flows extra's own home: its modules import JAX at module level by design, and only
#: ``analysis.flows.run_flows`` (behind ``require_flows``) imports them
EXTRA_HOMES = {("jax", "jaxlib", "flowjax", "equinox", "optax", "paramax"): "analysis/flows"}


def _imports(source: str) -> list[tuple[str, int, bool]]:
    """(top-level module, line, at module level?) of every import; relative imports
    resolved to their package by the caller (they stay inside the package)."""
    tree = ast.parse(source)
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((a.name.split(".")[0], node.lineno, id(node) in top_level))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], node.lineno, id(node) in top_level))
    return out


def _violations(package: str, files: list[Path]) -> list[str]:
    bad = []
    for f in files:
        for mod, line, _ in _imports(f.read_text()):
            if mod in FORBIDDEN[package]:
                bad.append(f"{f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}:{line} "
                           f"imports {mod}")
    return bad


@pytest.mark.parametrize("package", ["derivations", "solvers"])
def test_lower_layers_never_import_upper_ones(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    assert _violations(package, files) == []


def test_generated_modules_import_neither_sympy_nor_upper_layers():
    from derivations.codegen import generate_source
    from derivations.model import derive
    from derivations.spec import ModelStructure
    bad = []
    for st in (ModelStructure(2, 2), ModelStructure(2, 2, True, "geometric")):
        model = derive(st)
        for kind in ("rhs", "jac", "objective"):
            for mod, line, _ in _imports(generate_source(model, kind)):
                if mod in FORBIDDEN["generated"]:
                    bad.append(f"{st.key()} {kind}:{line} imports {mod}")
    assert bad == []


def test_the_core_does_not_import_the_extras_at_module_level():
    bad = []
    for package in ("derivations", "solvers", "analysis"):
        for f in sorted((ROOT / package).rglob("*.py")):
            rel = f.relative_to(ROOT).as_posix()
            for mod, line, top in _imports(f.read_text()):
                home = [h for mods, h in EXTRA_HOMES.items() if mod in mods]
                if mod in EXTRAS and top and not (home and rel.startswith(home[0] + "/")):
                    bad.append(f"{rel}:{line} imports {mod}")
    assert bad == []


def test_the_flows_package_imports_jax_only_below_its_entry_points():
    """``import analysis.flows`` (the package) must stay light: JAX only in its submodules."""
    init = (ROOT / "analysis" / "flows" / "__init__.py").read_text()
    heavy = [m for m, _, top in _imports(init) if top and m in EXTRAS]
    assert heavy == []


def test_the_checker_sees_a_violation(tmp_path):
    """The checker itself: an upward import, also one hidden in a function, is found."""
    f = tmp_path / "m.py"
    f.write_text("import numpy\n\ndef g():\n    from analysis.collapse import x\n")
    assert _violations("solvers", [f]) == [f"{f}:4 imports analysis"]
    f.write_text("import sympy as sp\n")
    assert _violations("solvers", [f]) == [f"{f}:1 imports sympy"]
