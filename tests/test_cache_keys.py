"""Generated-module cache keys see every solver module (Numba's own cache does not).

Numba keys the cache of a generated rhs on the generated file alone; a kernel it calls, or a
module that kernel calls, edited in place would leave a stale compiled rhs.  The keys hash the
whole ``solvers`` package: edit any file of a copy of it and both engines' keys change."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

import derivations.codegen as cg
import derivations.loopgen as lg
from derivations.spec import orthogonal, symmetric_bimodal


@pytest.fixture
def solvers_copy(tmp_path, monkeypatch):
    real = importlib.util.find_spec("solvers")
    src = Path(list(real.submodule_search_locations)[0])
    dst = tmp_path / "solvers"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    find = importlib.util.find_spec

    def fake(name, *args):
        if name == "solvers":
            return importlib.util.spec_from_file_location(
                "solvers", dst / "__init__.py", submodule_search_locations=[str(dst)])
        return find(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    return dst


def test_every_solver_module_is_in_both_keys(solvers_copy):
    exp = symmetric_bimodal(9.0).structure
    loop = orthogonal(4, 4, 9.0).structure
    before = (cg.solvers_digest(), cg.module_key(exp, "rhs"), lg.loop_module_key(loop))
    files = sorted(solvers_copy.glob("*.py"))
    assert len(files) >= 10
    seen = {before}
    for f in files:
        text = f.read_text()
        f.write_text(text + "\n# edited\n")
        now = (cg.solvers_digest(), cg.module_key(exp, "rhs"), lg.loop_module_key(loop))
        assert all(a != b for a, b in zip(now, before)), f"{f.name} is not in the cache keys"
        seen.add(now)
        f.write_text(text)
    assert (cg.solvers_digest(), cg.module_key(exp, "rhs"), lg.loop_module_key(loop)) == before
    # a new module (e.g. one a kernel starts to call) changes the keys too
    (solvers_copy / "newkernel.py").write_text("X = 1\n")
    assert cg.solvers_digest() != before[0] and lg.loop_module_key(loop) != before[2]
    assert len(seen) == len(files) + 1
