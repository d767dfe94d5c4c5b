"""The ``flows`` figure job of ``mfvi reproduce --quick`` (issue 13): its sidecar's numbers."""

from __future__ import annotations

import json
import math

import pytest

from analysis.flows import INSTALL_HINT, flows_available


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval, written out here (independent of analysis.stats)."""
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, c - h), min(1.0, c + h)


def test_the_flows_job_sidecar(quick_figures):
    side = quick_figures / "flows_vs_mixture.json"
    if not flows_available():
        assert not side.exists()
        pytest.skip(f"the optional extra [flows] is not installed: {INSTALL_HINT}")
    assert (quick_figures / "flows_vs_mixture.png").stat().st_size > 1000
    obj = json.loads(side.read_text())
    plan = obj["plan"]
    assert obj["quick"] is True and obj["rows"]
    for row in obj["rows"]:
        f, m = row["flow"], row["mixture"]
        assert f["n"] + f["n_diverged"] == plan["seeds"]
        assert m["n"] == plan["mixture_draws"]
        for side_ in (f, m):
            assert side_["p"] == pytest.approx(side_["k"] / side_["n"])
            lo, hi = _wilson(side_["k"], side_["n"])
            assert side_["ci"] == pytest.approx([lo, hi], abs=1e-9)
        # a flow is a normalised density: KL(q || p) >= 0 up to the sampling noise of its
        # estimate (about std / sqrt(eval_samples) < 0.05 here)
        assert f["kl"]["median"] > -0.05
        assert 0.0 <= f["min_mode_fraction"]["0.1"] <= f["min_mode_fraction"]["0.9"] <= 0.5
