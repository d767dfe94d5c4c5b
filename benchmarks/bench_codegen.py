"""Derivation, code generation and compilation times of the generated models.

For each structure and each generated function (rhs, jac), in fresh subprocesses:
cold = empty cache directory (SymPy derivation + CSE/printing + Numba compilation), then
warm = the same cache again (load the generated module and Numba's cached machine code).

    python benchmarks/bench_codegen.py [--jac] [--structures K2M2tw K3M3]

Prints a table; times are wall-clock seconds on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from derivations.spec import ModelStructure
from derivations.codegen import compile_model
import numpy as np
K, M, tw, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
model = compile_model(ModelStructure(K, M, tw, "tempering"))
t1 = time.perf_counter()
fn = getattr(model, kind)
t2 = time.perf_counter()
n = model.n_state
y = np.full(n, 0.1); theta = np.ones(len(model.parameter_names)) * 0.5
out = np.empty(n) if kind == "rhs" else np.empty((n, n))
fn(y, 0.7, theta, out)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_access_s": t2 - t1, "first_call_s": t3 - t2,
                  **model.timings[kind]}))
"""

STRUCTURES = {"K2M2tw": (2, 2, True), "K3M3": (3, 3, False), "K2M2": (2, 2, False),
              "K2M3": (2, 3, False)}


def run(K: int, M: int, tw: bool, kind: str, cache: str) -> dict:
    # a cold run must also recompile the kernels and solvers, whose Numba caches otherwise sit
    # warm in the package's __pycache__: send every Numba cache into the same fresh folder
    env = dict(os.environ, MFVI_CACHE_DIR=cache, NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
    out = subprocess.run([sys.executable, "-c", CHILD, str(K), str(M), "1" if tw else "0", kind],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--structures", nargs="*", default=["K2M2tw", "K3M3"],
                    choices=sorted(STRUCTURES))
    ap.add_argument("--kinds", nargs="*", default=["rhs", "jac"], choices=["rhs", "jac"])
    args = ap.parse_args()
    print(f"{'model':8s} {'fn':4s} {'cache':5s} {'derive+gen s':>12s} {'load+compile s':>14s}"
          f" {'first call s':>12s}")
    for name in args.structures:
        K, M, tw = STRUCTURES[name]
        for kind in args.kinds:
            with tempfile.TemporaryDirectory() as cache:
                for label in ("cold", "warm"):
                    r = run(K, M, tw, kind, cache)
                    print(f"{name:8s} {kind:4s} {label:5s} {r['generate_s']:12.2f} "
                          f"{r['load_s']:14.2f} {r['first_call_s']:12.3f}", flush=True)


if __name__ == "__main__":
    main()
