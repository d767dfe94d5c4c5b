"""Sidecar of the ``over_parameterisation`` figure job (quick plan): physical sense."""

from __future__ import annotations

import json
import math


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def test_over_parameterisation_sidecar(quick_figures):
    side = json.loads((quick_figures / "over_parameterisation.json").read_text())
    assert (quick_figures / "over_parameterisation.png").stat().st_size > 0
    plan, rows = side["plan"], side["rows"]
    assert len(rows) == len(plan["cases"]) * len(plan["schedules"])
    assert {(r["K"], r["M"], r["n"]) for r in rows} == {tuple(c) for c in plan["cases"]}
    for r in rows:
        n, k, M, K = r["n"], r["k"], r["M"], r["K"]
        assert abs(r["p"] - k / n) <= 1e-12
        lo, hi = _wilson(k, n)
        assert abs(r["ci"][0] - lo) <= 1e-6 and abs(r["ci"][1] - hi) <= 1e-6
        # every draw has an occupancy pattern with M components over K modes
        assert sum(r["occupancy"].values()) == n
        assert all(sum(map(int, pat.split("+"))) == M and len(pat.split("+")) == K
                   for pat in r["occupancy"])
        # fixed weights: collapsed exactly when some mode has no component
        missed = sum(c for pat, c in r["occupancy"].items() if "0" in pat.split("+"))
        assert missed == k
        assert r["mechanisms"]["vanishing_weight"] == 0 and r["mechanisms"]["diverged"] == 0
        assert r["mechanisms"]["none"] + r["mechanisms"]["mean_alignment"] == n
