"""Plateaus of the forward KL: idle components (solvers.fixedpoints.idle_components)."""

from __future__ import annotations

import numpy as np

from analysis.estimators.common import compiled_model
from derivations.spec import AnnealingPath, symmetric_bimodal
from solvers.fixedpoints import find_fixed_points
from solvers.layout import state_layout


def test_forward_kl_plateaus_are_listed_once_as_idle_components():
    """A forward-KL component far from p_beta gets no responsibility: its flow is flat to
    machine precision and a continuum of states passes the residual test.  They are reported
    once per configuration of the live component, flagged idle; independently of the
    Jacobian test, moving the idle component leaves the flow unchanged."""
    spec = symmetric_bimodal(9.0).replace(objective="forward-kl",
                                          path=AnnealingPath("inflation"))
    model = compiled_model(spec)
    theta = spec.theta()
    fps = find_fixed_points(model, 1.0, theta)
    idle = [fp for fp in fps if fp.idle]
    assert 1 <= len(idle) <= 4 and len(fps) <= 8
    assert sum(fp.label == "split" and fp.stable and not fp.idle for fp in fps) == 2
    for fp in idle:
        (k,) = fp.idle
        live = 1 - k
        assert fp.Q[k, k] > 100 and abs(fp.Q[live, live]) < 1e-6   # live one at the mean 0
        assert abs(fp.objective - np.log(2.0)) < 1e-6
        assert fp.to_dict()["idle_components"] == [k + 1]
        # move the idle component (keep Q PSD): the flow stays zero
        Q, R = fp.Q.copy(), fp.R.copy()
        Q[k, k] *= 1.3
        R[k] *= 0.5
        y = state_layout(spec.structure).pack(Q, R)
        out = np.zeros_like(y)
        model.rhs(y, 1.0, theta, out)
        assert np.max(np.abs(out)) < 1e-10
    # the reverse KL never has idle components (the entropy acts on each one)
    rev = symmetric_bimodal(9.0)
    assert not any(fp.idle for fp in find_fixed_points(compiled_model(rev), 1.0, rev.theta()))
