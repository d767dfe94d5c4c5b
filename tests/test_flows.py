"""Normalizing flows under annealing (analysis.flows, issue 13).

Without the extra: the core does not import JAX; the missing extra gives a message naming the
install command; the sample-count classification and the settings are checked.  With the
extra ``[flows]``: the RealNVP log-density integrates to 1 in d = 2 (quadrature), its samples
follow it (chi-square against the integrated cell masses), the forward and inverse log-dets
agree, a unimodal target is recovered, and a small collapse experiment shows annealing lowering
the collapse of a flow on well-separated modes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats as st

from analysis.flows import INSTALL_HINT, FlowsUnavailable, flows_available
from analysis.flows.classify import classify_counts
from analysis.flows.config import FlowConfig
from derivations.spec import (
    ConstantSchedule,
    ExponentialSchedule,
    LinearSchedule,
    ProblemSpec,
    TargetMixture,
    VariationalFamily,
    symmetric_bimodal,
)

needs_flows = pytest.mark.skipif(
    not flows_available(),
    reason=f"the optional extra [flows] is not installed: {INSTALL_HINT}")


# ------------------------------------------------------------------------------------------
# without the extra
# ------------------------------------------------------------------------------------------

def test_the_core_never_imports_jax():
    code = ("import sys, analysis.cli, analysis.estimators, analysis.reproduce, analysis.flows, "
            "analysis.flows.run, analysis.flows.compare, analysis.commands.flows; "
            "from analysis.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('jax', 'flowjax', 'equinox', 'optax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_extra_names_the_install_command(monkeypatch, capsys):
    import analysis.flows as flows
    from analysis.cli import main
    from analysis.collapse import collapse_probability
    monkeypatch.setattr(flows, "_missing", lambda: ["jax"])
    with pytest.raises(FlowsUnavailable, match=r'pip install -e "\.\[flows\]"'):
        flows.require_flows()
    with pytest.raises(ValueError, match=r"\[flows\]"):
        collapse_probability(symmetric_bimodal(9.0), 10, "flow", draws=4)
    assert main(["flows", "--d", "4", "--seeds", "2"]) == 2
    assert INSTALL_HINT in capsys.readouterr().err
    from analysis.flows.run import run_flows
    with pytest.raises(FlowsUnavailable):
        run_flows(symmetric_bimodal(9.0), FlowConfig(d=2, seeds=1))


def _wilson_upper_lower(k, n, z=1.959963984540054):
    """The Wilson score bounds, written out here (independent of analysis.stats)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_classification_from_counts_uses_the_sample_size():
    N, m = 4096, 0.01
    ks = np.arange(0, 120)
    counts = np.stack([ks, N - ks], axis=1)
    c = classify_counts(counts, m)
    lo, hi = _wilson_upper_lower(ks, N)
    assert np.array_equal(c.empty[:, 0], hi < m)
    assert np.array_equal(c.covered[:, 0], lo > m)
    assert np.array_equal(c.collapsed, hi < m)
    assert np.array_equal(c.undecided, ~(hi < m) & ~(lo > m))
    # the thresholds scale with N: 10 of 4096 is empty, 10 of 400 (2.5 %) is not
    assert classify_counts(np.array([[10, 4086]]), m).collapsed[0]
    assert not classify_counts(np.array([[10, 390]]), m).collapsed[0]
    # three modes, one of them empty; a non-finite run is diverged, not collapsed
    c3 = classify_counts(np.array([[2000, 2096, 0], [1400, 1300, 1396]]), m,
                         finite=np.array([True, False]))
    assert c3.collapsed.tolist() == [True, False] and c3.diverged.tolist() == [False, True]
    assert c3.mechanism.tolist() == [1, 3]
    with pytest.raises(ValueError, match="counts"):
        classify_counts(np.array([1, 2]), m)
    with pytest.raises(ValueError, match="mass_threshold"):
        classify_counts(counts, 1.5)


@pytest.mark.parametrize("bad, name", [({"d": 1}, "d"), ({"seeds": 0}, "seeds"),
                                       ({"optimizer": "rmsprop"}, "optimizer"),
                                       ({"estimator": "score"}, "estimator"),
                                       ({"lr": -1.0}, "lr"), ({"dt": 0.0}, "dt"),
                                       ({"beta_tol": 1.0}, "beta_tol"),
                                       ({"init_scale": -0.5}, "init_scale"),
                                       ({"mass_threshold": 0.0}, "mass_threshold"),
                                       ({"eval_samples": 100}, "eval_samples")])
def test_bad_settings_name_the_parameter(bad, name):
    kw = {"d": 2, **bad}
    with pytest.raises(ValueError, match=name):
        FlowConfig(**kw)


def test_the_clock_and_the_end_time():
    cfg = FlowConfig(d=2, lr=0.02, chunk_steps=50, relax_time=3.0)
    sch = ExponentialSchedule(20.0, 2.0)
    t_end = sch.settle_time(0.01) + 3.0
    assert cfg.step_time == 0.02
    assert cfg.n_steps(sch) == 50 * math.ceil(math.ceil(t_end / 0.02) / 50)
    assert FlowConfig(d=2, dt=0.5, t_end=10.0, chunk_steps=10).n_steps(sch) == 20
    assert FlowConfig(d=2, chunk_steps=100).n_steps(LinearSchedule(5.0, 4.0)) == \
        100 * math.ceil((4.0 * (1 - 0.01 / 0.8) + 10.0) / 0.01 / 100)


# ------------------------------------------------------------------------------------------
# with the extra
# ------------------------------------------------------------------------------------------

def _one_target(A: float, d_means: int = 2) -> ProblemSpec:
    mean = np.zeros((1, d_means))
    mean[0, 0] = math.sqrt(A)
    return ProblemSpec(target=TargetMixture.from_means(mean, [1.0], 1.0),
                       family=VariationalFamily(1), schedule=ConstantSchedule(1.0))


@pytest.fixture(scope="module")
def random_flows():
    """Two RealNVP flows in d = 2 at flowjax's random initialisation (not Gaussian)."""
    if not flows_available():
        pytest.skip(f"the optional extra [flows] is not installed: {INSTALL_HINT}")
    from analysis.flows import realnvp
    keys = realnvp.run_keys(7, np.arange(2))
    return realnvp.build_flows(keys, 2, 3, 16, 1, 1.0)


def _grid(L: float = 16.0, h: float = 0.03):
    x = np.arange(-L, L + h / 2, h)
    X, Y = np.meshgrid(x, x, indexing="ij")
    return x, np.stack([X.ravel(), Y.ravel()], axis=1), h


@needs_flows
def test_the_flow_density_is_normalised_and_its_samples_follow_it(random_flows):
    import jax.numpy as jnp

    from analysis.flows import realnvp
    x, pts, h = _grid()
    n1 = x.size
    lq = np.asarray(realnvp.log_prob(random_flows, jnp.asarray(np.stack([pts, pts]),
                                                             jnp.float32)), float)
    dens = np.exp(lq).reshape(2, n1, n1)
    # trapezoid rule on [-16, 16]^2 (no sample of 40000 below falls outside it)
    w = np.full(n1, h)
    w[[0, -1]] = h / 2
    total = np.einsum("i,sij,j->s", w, dens, w)
    assert np.allclose(total, 1.0, atol=1e-3), total
    # not the base: the density differs from N(0, I) somewhere by a lot
    base = np.exp(-0.5 * (pts ** 2).sum(1)) / (2 * np.pi)
    assert np.max(np.abs(dens - base.reshape(n1, n1)), axis=(1, 2)).min() > 0.03
    # samples against the integrated masses of 6 x 6 cells of [-3, 3]^2 plus the rest
    N = 40000
    keys = realnvp.run_keys(11, np.arange(2))
    xs = np.asarray(realnvp.sample(random_flows, keys, N), float)
    edges = np.linspace(-3, 3, 7)
    cell = lambda v: np.clip(np.searchsorted(edges, v, side="right") - 1, -1, 6)  # noqa: E731
    assert np.all(np.abs(xs).max(axis=2) < x[-1])
    for s in range(2):
        ix, iy = cell(xs[s, :, 0]), cell(xs[s, :, 1])
        inside = (ix >= 0) & (ix < 6) & (iy >= 0) & (iy < 6)
        obs = np.bincount((ix * 6 + iy)[inside], minlength=36).astype(float)
        gx, gy = cell(pts[:, 0]), cell(pts[:, 1])
        gin = (gx >= 0) & (gx < 6) & (gy >= 0) & (gy < 6)
        wts = np.outer(w, w).ravel() * dens[s].ravel()
        mass = np.bincount((gx * 6 + gy)[gin], weights=wts[gin], minlength=36)
        obs = np.append(obs, N - obs.sum())
        exp = np.append(mass, 1.0 - mass.sum()) * N
        keep = exp > 5
        chi2 = float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep]))
        # cell edges on the grid carry O(h) quadrature error: allow it in the expected counts
        assert st.chi2.sf(chi2, keep.sum() - 1) > 1e-4, (s, chi2, keep.sum())


@needs_flows
def test_forward_and_inverse_log_densities_agree(random_flows):
    from analysis.flows import realnvp
    keys = realnvp.run_keys(3, np.arange(2))
    x, lq = realnvp.sample_and_log_prob(random_flows, keys, 500)
    lq_inv = realnvp.log_prob(random_flows, x)
    assert np.allclose(np.asarray(lq), np.asarray(lq_inv), atol=2e-4)


@needs_flows
def test_a_unimodal_target_is_recovered():
    """K = 1, mean at distance 3, Delta = 1 in d = 4: KL(q || p) small, and fresh samples of the
    trained flows have the target's mean and covariance."""
    from analysis.flows import realnvp
    from analysis.flows.run import run_flows
    spec = _one_target(9.0, 4)
    r = run_flows(spec, FlowConfig(d=4, seeds=4, layers=2, width=16, t_end=8.0),
                  progress=False, keep_flows=True)
    assert not r.collapsed.any() and not r.classification.diverged.any()
    assert np.all(r.kl < 0.03), r.kl
    assert r.mu.shape == (1, 4) and abs(np.linalg.norm(r.mu[0]) - 3.0) < 1e-9
    N = 20000
    xs = np.asarray(realnvp.sample(r.flows, realnvp.run_keys(5, np.arange(4)), N), float)
    for x in xs:
        # for a Gaussian q, KL < 0.03 would bound the mean error by sqrt(2 KL) = 0.25;
        # the CLT error of the sample mean is 1/sqrt(N) = 0.007
        assert np.linalg.norm(x.mean(0) - r.mu[0]) < 0.25
        assert np.abs(np.cov(x.T) - np.eye(4)).max() < 0.25


@needs_flows
def test_a_small_collapse_experiment_annealing_helps():
    """Well-separated modes (A = 36, distance 12) in d = 2: without annealing most flows end on
    one mode; exponential annealing from T0 = 20 (tau = 0.5) keeps both in most runs.  The
    Newcombe 95% interval of the difference of the two collapse fractions must exclude 0.
    The cold runs go through the registry estimator, the annealed ones through the command."""
    import contextlib
    import io

    from analysis.cli import main
    from analysis.collapse import collapse_probability
    from analysis.stats import compare_proportions
    cold = collapse_probability(symmetric_bimodal(36.0), 2, "flow", draws=48, seed=1)
    assert cold.n == 48 and set(np.unique(cold.mechanisms)) <= {0, 1}
    assert cold.details["steps"] == 1000          # t_end = relax_time = 10 at dt = lr = 0.01
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["flows", "--preset", "symmetric-bimodal", "--A", "36", "--d", "2",
                   "--seeds", "48", "--seed", "1", "--schedule", "exponential", "--T0", "20",
                   "--tau", "0.5", "--json", "--no-progress"])
    assert rc == 0
    hot = json.loads(out.getvalue())
    assert hot["method"] == "flow" and hot["n"] + hot["n_diverged"] == 48
    assert hot["params"]["schedule"] == {"kind": "exponential", "T0": 20.0, "tau": 0.5}
    assert hot["flow"]["layers"] == 4 and hot["steps"] % 100 == 0
    assert 0 <= hot["changed_final_window"] <= 48
    assert hot["window_start_time"] == pytest.approx(hot["t_end"] - 0.01 * 100 * (
        (hot["steps"] // 100) // 5))
    lo, hi = hot["ci"]
    assert lo <= hot["p"] <= hi
    cmp = compare_proportions(cold.k, cold.n, hot["k"], hot["n"])
    assert cmp.ci[0] > 0, (cold.p, hot["p"])


@needs_flows
def test_the_target_and_base_log_densities():
    """``log_target`` and ``log_base`` against scipy's multivariate normal densities."""
    import jax.numpy as jnp

    from analysis.flows import train
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(3, 5)) * 2
    pi = np.array([0.2, 0.3, 0.5])
    x = rng.normal(size=(7, 5)) * 3
    tg = train.Target(jnp.asarray(mu, jnp.float32), jnp.asarray(np.log(pi), jnp.float32),
                      jnp.float32(1.7), jnp.float32(2.5))
    want = np.log(sum(p * st.multivariate_normal(m, 1.7 * np.eye(5)).pdf(x)
                      for p, m in zip(pi, mu)))
    assert np.allclose(np.asarray(train.log_target(tg, jnp.asarray(x, jnp.float32))), want,
                       rtol=1e-5, atol=1e-4)
    want0 = st.multivariate_normal(np.zeros(5), 2.5 * np.eye(5)).logpdf(x)
    assert np.allclose(np.asarray(train.log_base(tg, jnp.asarray(x, jnp.float32))), want0,
                       rtol=1e-5, atol=1e-4)


@needs_flows
def test_the_geometric_path_with_a_piecewise_schedule():
    """The geometric path (gamma = 1 - beta, base N(0, 2 I)) and a piecewise schedule ending at
    beta = 1: the schedule's stages are followed and the unimodal target is still recovered."""
    from analysis.flows.run import run_flows
    from derivations.spec import AnnealingPath, PiecewiseConstantSchedule
    spec = _one_target(9.0, 4).replace(
        path=AnnealingPath("geometric", 2.0),
        schedule=PiecewiseConstantSchedule.from_stages([(0.0, 0.2), (2.0, 0.6), (4.0, 1.0)]))
    cfg = FlowConfig(d=4, seeds=4, layers=2, width=16, relax_time=4.0)
    assert cfg.n_steps(spec.schedule) == 800          # settles at t = 4, + 4, at dt = 0.01
    r = run_flows(spec, cfg, progress=False)
    assert r.steps == 800 and r.t_end == pytest.approx(8.0)
    assert np.all(r.kl < 0.05), r.kl
    # at the end beta = 1, gamma = 0: the objective is the KL estimate itself
    assert np.allclose(r.objective, r.kl, atol=1e-5)
    # one trace entry per chunk of 100 steps, all finite
    assert r.loss_trace.shape == (8, 4) and np.all(np.isfinite(r.loss_trace))


@pytest.mark.parametrize("command", ["flows", "collapse", "phase-diagram"])
def test_the_help_texts_format(command, capsys):
    """The flow options reach argparse's help (a bare % in a help text would break it)."""
    from analysis.cli import main
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "--mass-threshold" in capsys.readouterr().out
