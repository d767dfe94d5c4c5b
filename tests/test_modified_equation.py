"""The O(eta) corrected ODE of the finite-step maps (derivations/finite_step.py, generated code;
analysis.finite_step.corrected_flow), against the exact GD map and the reduced SGD chain.

1. The eta^2 term b of the generated code is the GD map's: ``(y' - y - eta f) / eta^2`` of
   :func:`solvers.gd.gd_map` (hand-written map, itself tested against GD in R^d), to 1e-9.
2. GD against the plain flow and the corrected ODE as eta -> 0 at fixed t (trainable weights,
   geometric path, a moving schedule, so the half-step schedule shift is exercised): the
   flow's error is first order (fitted slope in [0.8, 1.2]), the corrected ODE's second order
   (slope in [1.8, 2.2]) and at least 20 times smaller at the smallest step.
3. The out-of-span noise source N: one engine step from a fixed state in two dimensions
   d1 > d2 with the same generator (identical in-frame noise): ``E[Q'(d1) - Q'(d2)] =
   eta^2 (d1 - d2) / n N(Q)`` exactly, within 5 standard errors of the paired differences,
   for stl (tempering, beta < 1) and reparam (geometric path, trainable weights, overlapping
   components so the responsibilities' moments matter).  And the generated N equals
   ``analysis.finite_step``'s independent quadrature of the same moments (K = M = 2).
4. The reduced SGD chain's mean at d = 1e6 (stl, beta = 0.5, eta = 0.01, 400 runs, t = 1): the
   corrected ODE lies within 5 standard errors of the engine mean on every entry, while the
   inflation-corrected flow without the eta term is > 10 standard errors off on Q_11 and
   Q_22 (the O(eta) term is resolved); the uncorrected flow is far off.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.finite_step import corrected_flow
from derivations.spec import (
    AnnealingPath,
    ConstantSchedule,
    ExponentialSchedule,
    Initialisation,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)

D = 50


def _moving_spec(seed: int = 2):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(2, D)) * (3.0 / math.sqrt(D))
    mu[1] = -0.6 * mu[0] + 0.5 * mu[1]              # a non-symmetric target
    spec = ProblemSpec(TargetMixture(mu @ mu.T, [0.4, 0.6], 1.0),
                       VariationalFamily(2, [0.5, 0.5], 0.8, True),
                       AnnealingPath("geometric", 2.0), ExponentialSchedule(3.0, 2.0),
                       Initialisation(1.0))
    return spec, mu, rng


def _starts(spec, mu, rng, count=3):
    from solvers.layout import state_layout
    lay = state_layout(spec.structure)
    out = []
    for _ in range(count):
        m = rng.normal(size=(2, D)) / math.sqrt(D) + 0.2 * rng.normal(size=(2, 1)) * mu[:1]
        out.append(lay.pack(m @ m.T, m @ mu.T, rng.normal(scale=0.3, size=2)))
    return np.array(out)


def _corrected(spec, y, beta, eta, q, estimator="stl"):
    from derivations.finite_step import compile_corrected_rhs
    rhs = compile_corrected_rhs(spec.structure, estimator)
    out = np.empty(y.size)
    rhs(np.ascontiguousarray(y, dtype=float), float(beta),
        np.concatenate([spec.theta(), [eta, q]]), out)
    return out


def test_second_order_term_is_the_gd_maps():
    from derivations.codegen import compile_model
    from solvers.gd import gd_map
    from solvers.model import evaluate_jacobian
    spec, mu, rng = _moving_spec(5)
    model = compile_model(spec.structure)
    for y in _starts(spec, mu, rng, 2):
        for beta, eta in ((0.4, 0.1), (0.9, 0.03)):
            f = np.empty(y.size)
            model.rhs(y, beta, spec.theta(), f)
            b_map = (gd_map(model, y, beta, spec.theta(), eta) - y - eta * f) / eta ** 2
            # the generated rhs with q = 0: f + eta (b - J f / 2)
            J = evaluate_jacobian(model.jac, y, beta, spec.theta())
            b_gen = (_corrected(spec, y, beta, eta, 0.0) - f) / eta + 0.5 * J @ f
            assert np.abs(b_map[3:]).max() < 1e-9 * np.abs(b_map).max()   # R, alpha: none
            np.testing.assert_allclose(b_gen, b_map, rtol=0, atol=1e-9 * np.abs(b_map).max())
            assert np.abs(b_map[:3]).max() > 1e-2                # the term is not trivial


def test_corrected_ode_follows_gd_to_second_order():
    from derivations.codegen import compile_model
    from solvers.gd import solve_gd
    spec, mu, rng = _moving_spec(2)
    model = compile_model(spec.structure)
    Y0 = _starts(spec, mu, rng)
    t = 3.0
    flow, _ = corrected_flow(spec, Y0, t, 0.0, rtol=1e-12, atol=1e-13)
    etas = np.array([0.04, 0.02, 0.01, 0.005])            # t / eta integer for every step
    e_flow, e_corr = [], []
    for eta in etas:
        gd = solve_gd(spec, model, Y0, float(eta), t_end=t).y_final
        cor, _ = corrected_flow(spec, Y0, t, float(eta), rtol=1e-12, atol=1e-13)
        e_flow.append(np.abs(gd - flow).max())
        e_corr.append(np.abs(gd - cor).max())
    s_flow = np.polyfit(np.log(etas), np.log(e_flow), 1)[0]
    s_corr = np.polyfit(np.log(etas), np.log(e_corr), 1)[0]
    print(f"GD vs flow {e_flow} (order {s_flow:.2f}); vs corrected ODE {e_corr} "
          f"(order {s_corr:.2f})")
    assert 0.8 <= s_flow <= 1.2, (s_flow, e_flow)
    assert 1.8 <= s_corr <= 2.2, (s_corr, e_corr)
    assert e_corr[-1] < e_flow[-1] / 20


def _one_step_pairs(spec, Q0, R0, alpha0, beta, eta, n, estimator, d1, d2, S):
    from solvers.sgd import run_sgd
    s0 = spec.path.base_variance if spec.path.kind == "geometric" else 1.0
    gamma = float(spec.gamma(beta))
    runs = [run_sgd(spec.target.T, np.log(spec.target.pi), np.broadcast_to(Q0, (S, 2, 2)),
                    np.broadcast_to(R0, (S, 2, 2)), alpha0, np.array([beta]),
                    np.array([gamma]), eta=eta, n=n, s=spec.family.variance,
                    delta=spec.target.variance, sigma0_sq=s0, d=d, estimator=estimator,
                    train_w=spec.family.train_weights, seed=17) for d in (d1, d2)]
    return runs[0].Q - runs[1].Q


@pytest.mark.parametrize("case", ["stl-tempering", "reparam-geometric-trained"])
def test_noise_source_is_the_engines_out_of_span_noise(case):
    from solvers.layout import state_layout
    if case == "stl-tempering":
        spec, est, beta = symmetric_bimodal(9.0, ConstantSchedule(0.5)), "stl", 0.5
        alpha0 = np.zeros(2)
        R0 = np.array([[0.8, -0.8], [0.2, -0.2]])       # T has rank 1: R_k2 = -R_k1
    else:
        spec = ProblemSpec(
            TargetMixture([[4.0, 1.0], [1.0, 3.0]], [0.6, 0.4], 1.0),
            VariationalFamily(2, [0.5, 0.5], 0.7, True), AnnealingPath("geometric", 2.0),
            ConstantSchedule(0.6), Initialisation(1.0))
        est, beta, alpha0 = "reparam", 0.6, np.array([0.3, -0.2])
        R0 = np.array([[0.8, 0.5], [0.2, -0.3]])
    Q0 = np.array([[1.0, 0.7], [0.7, 0.9]])           # components overlap: rho matters
    eta, n, d1, d2, S = 0.05, 3, 200_000, 50_000, 3000
    diff = _one_step_pairs(spec, Q0, R0, alpha0, beta, eta, n, est, d1, d2, S)
    lay = state_layout(spec.structure)
    y = lay.pack(Q0, R0, alpha0 if spec.family.train_weights else None)
    N = (_corrected(spec, y, beta, 0.0, 1.0, est) - _corrected(spec, y, beta, 0.0, 0.0, est))
    assert np.abs(N[3:]).max() == 0.0                  # only Q receives the source
    pred = eta ** 2 * (d1 - d2) / n * N[:3]
    got = np.array([diff[:, 0, 0], diff[:, 0, 1], diff[:, 1, 1]])
    m, se = got.mean(axis=1), got.std(axis=1, ddof=1) / math.sqrt(S)
    assert np.all(np.abs(m - pred) < 5 * se), (m, pred, se)
    assert np.all(np.abs(pred[[0, 2]]) > 20 * se[[0, 2]])    # resolved, not nil
    if est == "reparam":
        assert abs(pred[1]) > 5 * se[1]                         # Q_12 is fed too


@pytest.mark.parametrize("estimator,beta", [("stl", 0.5), ("reparam", 1.0), ("reparam", 0.7)])
def test_generated_source_equals_the_quadrature_of_finite_step(estimator, beta):
    from analysis.finite_step import _corrected_rhs, inflation_source
    from derivations.codegen import compile_model
    from solvers.layout import state_layout
    spec = symmetric_bimodal(9.0, ConstantSchedule(beta))
    lay = state_layout(spec.structure)
    model = compile_model(spec.structure)
    src = inflation_source(spec, 10_000, 0.01, 8, estimator)
    hand = _corrected_rhs(model, spec.theta().size)
    th = np.concatenate([spec.theta(), src])
    for Q0 in (np.eye(2), np.array([[1.2, 0.6], [0.6, 0.8]])):
        y = lay.pack(Q0, np.array([[0.5, -0.5], [0.1, -0.1]]))
        f, h = np.empty(y.size), np.empty(y.size)
        model.rhs(y, beta, spec.theta(), f)
        hand(y, beta, th, h)
        gen = _corrected(spec, y, beta, 0.0, src[0], estimator)
        np.testing.assert_allclose(gen - f, h - f, rtol=1e-7, atol=1e-10)
        assert np.abs(gen - f).max() > 1e-2


def test_sgd_mean_follows_the_corrected_ode_at_large_d():
    from solvers.layout import state_layout
    from solvers.sgd import run_sgd
    spec = symmetric_bimodal(9.0, ConstantSchedule(0.5))
    lay = state_layout(spec.structure)
    d, eta, n, S, t1 = 10 ** 6, 0.01, 8, 400, 1.0
    steps = int(round(t1 / eta))
    Q0 = np.array([[1.0, 0.1], [0.1, 1.0]])
    R0 = np.array([[0.9, -0.9], [0.3, -0.3]])
    run = run_sgd(spec.target.T, np.log(spec.target.pi), np.broadcast_to(Q0, (S, 2, 2)),
                  np.broadcast_to(R0, (S, 2, 2)), np.zeros(2), np.full(steps, 0.5),
                  np.zeros(steps), eta=eta, n=n, s=1.0, delta=1.0, sigma0_sq=1.0, d=d,
                  estimator="stl", seed=3)
    eng = lay.pack(run.Q.mean(axis=0), run.R.mean(axis=0))
    se = lay.pack(run.Q.std(axis=0, ddof=1), run.R.std(axis=0, ddof=1)) / math.sqrt(S)
    y0 = lay.pack(Q0, R0)[None]
    cor, _ = corrected_flow(spec, y0, t1, eta, d=d, n=n, estimator="stl")
    infl, _ = corrected_flow(spec, y0, t1, eta, d=d, n=n, estimator="stl", correction=False)
    flow, _ = corrected_flow(spec, y0, t1, 0.0)
    z_cor, z_infl, z_flow = ((x[0] - eng) / se for x in (cor, infl, flow))
    print(f"(model - engine mean) / SE: corrected {np.round(z_cor, 2)}, inflation only "
          f"{np.round(z_infl, 2)}")
    assert np.all(np.abs(z_cor) < 5), z_cor
    assert np.all(np.abs(z_infl[[0, 2]]) > 10), z_infl
    assert np.all(np.abs(z_flow[[0, 2]]) > 1000), z_flow


@pytest.mark.parametrize("kw,match", [(dict(eta=-0.1), "eta"), (dict(n=0), "n"),
                                      (dict(d=2), "d"), (dict(estimator="adam"), "estimator")])
def test_bad_input(kw, match):
    args = dict(eta=0.01, d=1000, n=8, estimator="stl")
    args.update(kw)
    with pytest.raises(ValueError, match=rf"^{match}:"):
        corrected_flow(symmetric_bimodal(9.0), np.zeros((1, 7)), 1.0, args.pop("eta"), **args)


def test_modified_boundary_predicts_gds_extra_collapse():
    """GD at eta = 0.2 against the flow on the same 2000 draws at d = 1000 (the gd and ode
    estimators with one seed and chunk start from identical states): the draws GD collapses
    and the flow does not are predicted by the separatrix of the corrected ODE
    (``effective_overlap_prediction(..., modified=True).p_flow``, the isotropic initial overlap
    without noise) minus the flow's.  The count is binomial: within 4 standard deviations of
    the prediction, and not 0 (the effect is resolved); GD never un-collapses a draw here."""
    from analysis.collapse import collapse_probability
    from analysis.finite_step import effective_overlap_prediction
    spec = symmetric_bimodal(9.0)
    d, N, eta = 1000, 2000, 0.2
    ode = collapse_probability(spec, d, "ode", draws=N, seed=5)
    gd = collapse_probability(spec, d, "gd", draws=N, seed=5, eta=eta, chunk=ode.options["chunk"])
    up = int(np.sum(gd.outcomes & ~ode.outcomes))
    down = int(np.sum(~gd.outcomes & ode.outcomes))
    kw = dict(n_eps_per_decade=4, tol=1e-3, dt=0.1)
    mod = effective_overlap_prediction(spec, d, eta, 8, modified=True, **kw)
    plain = effective_overlap_prediction(spec, d, eta, 8, **kw)
    excess = mod.p_flow - plain.p_flow
    print(f"GD - flow at eta = {eta}: {up} up, {down} down of {N}; predicted {excess * N:.1f}")
    assert excess > 0 and up > 0 and down <= 1
    assert abs(up - excess * N) < 4 * math.sqrt(excess * N * (1 - excess)), (up, excess * N)
