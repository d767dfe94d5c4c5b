"""The speed-accuracy trade-off of schedule design: the designed P(collapse) against the time
budget, per family (:func:`analysis.design.pareto_front`), on the symmetric bimodal preset.

    python benchmarks/bench_design.py --A 9 --d 1000 --budgets 10,25,50,100,200 \
        [--families exponential,linear,piecewise,free] [--evals 60,120] [--out rows.jsonl]

``--evals E2,E4``: search evaluations for the two-parameter families (exponential, linear) and
for the others (piecewise, free).  Prints a table (P with its error bound, the schedule, the
best (T0, tau) grid cell, evaluations, wall time) and appends one JSON row per design to
``--out`` as it goes.

Measured (``--budgets 10,30,100 --evals 40,80``, multi-start designer), P at budgets
10 / 30 / 100:

    A   d     exponential              linear                   piecewise                free
    9   1e3   0.0404 0.0290 0.0163     0.0346 0.0205 0.0127     0.0286 0.0128 0.00717    0.0288 0.0128 0.00722
    9   1e5   0.00917 0.00692 0.00364  0.00828 0.00454 0.00255  0.00733 0.00284 0.00135  0.00733 0.00278 0.00135
    16  1e3   0.103 0.0744 0.0483      0.0881 0.0605 0.0443     0.0688 0.0404 0.0277     0.0688 0.0407 0.0281
    16  1e5   0.0469 0.0339 0.0203     0.0399 0.0249 0.0170     0.0324 0.0158 0.0103     0.0328 0.0159 0.0104

(no annealing: 0.0531, 0.0110, 0.151, 0.0619).
"""

from __future__ import annotations

import argparse
import json
import time

from analysis.design import FAMILIES, pareto_front
from derivations.spec import symmetric_bimodal


def _schedule_text(s: dict) -> str:
    if s["kind"] in ("exponential", "linear"):
        return f"{s['kind']} T0={s['T0']:.3g} tau={s['tau']:.3g}"
    if s["kind"] == "piecewise":
        return "stages " + " ".join(f"{t:.3g}:{b:.3g}" for t, b in
                                    zip([0.0, *s["breakpoints"]], s["betas"]))
    return "knots " + " ".join(f"({t:.3g},{b:.3g})" for t, b in zip(s["times"], s["betas"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--A", type=float, default=9.0)
    ap.add_argument("--d", type=float, default=1000)
    ap.add_argument("--budgets", default="10,25,50,100,200")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--evals", default="60,120")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    budgets = [float(b) for b in a.budgets.split(",")]
    e2, e4 = (int(x) for x in a.evals.split(","))
    spec = symmetric_bimodal(a.A)
    print(f"A = {a.A:g}, d = {a.d:g}")
    print(f"{'family':<12}{'budget':>7}{'P':>10}{'+-':>9}{'grid best P':>12}  "
          f"{'(T0, tau)':<16}{'evals':>6}{'s':>6}  schedule")
    for fam in a.families.split(","):
        t0 = time.perf_counter()
        rows = pareto_front(spec, int(a.d), budgets, families=[fam],
                            max_evaluations=e2 if fam in ("exponential", "linear") else e4)
        for r in rows:
            g = r["grid_best"]
            print(f"{fam:<12}{r['budget']:>7g}{r['p']:>10.5f}{r['error_bound'] or 0:>9.1e}"
                  f"{g['p']:>12.5f}  ({g['T0']:g}, {g['tau']:.3g}){'':<4}"
                  f"{r['n_evaluations']:>6}{r['wall_time']:>6.0f}  "
                  f"{_schedule_text(r['schedule'])}", flush=True)
            if a.out:
                with open(a.out, "a") as fh:
                    fh.write(json.dumps({"A": a.A, "d": a.d, **r}) + "\n")
        print(f"# {fam}: {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
