r"""``run_flows``: RealNVP VI on the annealed reverse KL from many seeds, and its collapse.

The experiment of issue 13: the problem specification's target (any K, means placed in R^d by
:func:`analysis.montecarlo.realise_geometry`, the same random frame for the same seed as the
d-dimensional mixture Monte Carlo), its annealing path (tempering or geometric) and its schedule
``beta(t)`` (any registered family, read from the spec object at ``t = dt * step``,
:mod:`analysis.flows.config`); the variational family is a RealNVP flow in place of the spec's
mixture (its M, s and weights are not used).  All seeds train at once, stacked in one pytree
(:mod:`analysis.flows.realnvp`, :mod:`analysis.flows.train`); the final flows are classified
from ``eval_samples`` fresh samples each (:mod:`analysis.flows.classify`).

Random streams: run i of base seed S has the root key ``fold_in(key(S), i)``; from it
``fold_in(root, 0)`` initialises the flow, ``fold_in(fold_in(root, 1), step)`` draws the samples
of each step and ``fold_in(root, 2)`` the evaluation samples.  A run is the same whichever runs
share its batch (up to float32 rounding of batched XLA kernels).

Still moving: the runs are also classified at the start of the final window (the last fifth
of the chunks, same evaluation keys); ``changed_final_window`` counts the runs whose collapse
verdict differs, and a note says so.  (Measured: A = 9, d = 10, beta = 1, 64 seeds: 20 of 64
collapsed at t_end = 10, 6 of 64 at t_end = 40 -- flows return mass to the second mode slowly.)

Without the ``[flows]`` extra this module imports, and :func:`run_flows` raises
:class:`analysis.flows.FlowsUnavailable` naming ``pip install -e ".[flows]"``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from derivations.spec import ProblemSpec, require_spec

from ..classify import mechanism_counts
from ..stats import Proportion, collapse_fraction
from . import require_flows
from .classify import FlowCollapse, classify_counts
from .config import FlowConfig

__all__ = ["FlowResult", "run_flows", "flow_notes"]


def flow_notes(spec: ProblemSpec, config: FlowConfig) -> tuple[str, ...]:
    """The caveats every flow result carries."""
    notes = ["the variational family is a RealNVP flow: the spec's mixture family (M, s, "
             "weights) is not used; collapse means some target mode holds statistically none "
             "of the flow's samples (mechanism shown as mean_alignment)"]
    if config.optimizer == "adam":
        notes.append("Adam: t = dt * steps is a nominal clock (dt = lr by default), not a "
                     "gradient-flow time; compare schedules by shape, not duration")
    if spec.init.sigma_init != 1.0 or spec.init.centre_gram is not None:
        notes.append("spec.init (sigma_init, centres) does not apply to a flow: its "
                     "initialisation is the network's (init_scale)")
    return tuple(notes)


@dataclass(frozen=True)
class FlowResult:
    """Result of :func:`run_flows`.

    Arrays over the S runs: ``counts`` (S, K) final samples nearest each mode; ``kl`` (S,) the
    estimate of KL(q || p) at the end (nats; p the untempered target); ``objective`` (S,) the
    estimate of F at the final (beta, gamma); ``loss_trace`` (n_chunks, S) the per-seed
    objective averaged over each chunk of steps, at ``trace_times`` (n_chunks,) (chunk ends).
    ``classification`` holds the per-run collapse (:class:`~.classify.FlowCollapse`).
    """

    spec: ProblemSpec
    config: FlowConfig
    run_ids: np.ndarray
    mu: np.ndarray
    steps: int
    t_end: float
    t_end_rule: str
    counts: np.ndarray
    classification: FlowCollapse
    kl: np.ndarray
    objective: np.ndarray
    loss_trace: np.ndarray
    trace_times: np.ndarray
    wall_time: float
    first_chunk_time: float
    notes: tuple[str, ...] = field(default=())
    #: (S,) bool: runs whose collapse classification differs between the start of the final
    #: window (the last fifth of the run, from ``window_start_time``) and the end
    changed_final_window: np.ndarray | None = field(default=None, repr=False)
    window_start_time: float | None = None
    #: the trained stacked flows (a flowjax pytree), with ``run_flows(..., keep_flows=True)``
    flows: object = field(default=None, repr=False)

    @property
    def collapsed(self) -> np.ndarray:
        return self.classification.collapsed

    @property
    def fraction(self) -> Proportion:
        """Collapse fraction over the non-diverged runs, with its Wilson 95% interval."""
        valid = ~self.classification.diverged
        if not valid.any():
            raise ValueError("run_flows: every run diverged; lower lr")
        return collapse_fraction(self.collapsed, valid=valid)

    def summary(self) -> dict:
        """The JSON form (``mfvi flows --json``): ``p, ci, k, n, d, params, flow, ...``."""
        c = self.classification
        valid = ~c.diverged
        prop = self.fraction if valid.any() else None
        minfrac = c.fractions.min(axis=1)[valid]

        def med(mask: np.ndarray) -> float | None:
            m = mask & valid & np.isfinite(self.kl)
            return float(np.median(self.kl[m])) if m.any() else None

        out = {
            "p": None if prop is None else prop.p,
            "ci": None if prop is None else [prop.ci[0], prop.ci[1]],
            "k": None if prop is None else prop.k,
            "n": int(valid.sum()), "d": self.config.d, "method": "flow",
            "params": self.spec.to_dict(), "flow": self.config.to_dict(),
            "runs": int(self.run_ids.size), "n_diverged": int(c.diverged.sum()),
            "n_undecided": int(c.undecided.sum()),
            "changed_final_window": None if self.changed_final_window is None
            else int(self.changed_final_window.sum()),
            "window_start_time": self.window_start_time,
            "mechanisms": mechanism_counts(c.mechanism),
            "steps": self.steps, "step_time": self.config.step_time, "t_end": self.t_end,
            "t_end_rule": self.t_end_rule,
            "min_mode_fraction": {q: float(np.quantile(minfrac, float(q)))
                                  for q in ("0.1", "0.5", "0.9")} if minfrac.size else None,
            "kl": {"median": med(np.ones_like(valid)), "collapsed_median": med(c.collapsed),
                   "not_collapsed_median": med(~c.collapsed)},
            "final_objective_mean": float(np.nanmean(self.objective[valid])) if valid.any()
            else None,
            "wall_time": self.wall_time, "first_chunk_time": self.first_chunk_time,
            # after the first chunk (which carries the compilation)
            "steps_per_second": (self.steps - self.config.chunk_steps)
            / (self.wall_time - self.first_chunk_time)
            if self.steps > self.config.chunk_steps else None,
            "versions": _versions(), "notes": list(self.notes),
        }
        return out

    def save(self, path: str | Path, summary: dict | None = None) -> tuple[Path, Path]:
        """Write ``PATH.json`` (the summary) and ``PATH.npz`` (the arrays), atomically."""
        from derivations.atomic import atomic_write
        p = Path(path)
        base = p.with_suffix("") if p.suffix in (".json", ".npz") else p
        jpath, npath = base.with_suffix(".json"), base.with_suffix(".npz")
        atomic_write(jpath, json.dumps(summary or self.summary()) + "\n")
        tmp = npath.with_suffix(".tmp.npz")
        np.savez(tmp, run_ids=self.run_ids, mu=self.mu, counts=self.counts, kl=self.kl,
                 objective=self.objective, loss_trace=self.loss_trace,
                 trace_times=self.trace_times, collapsed=self.collapsed,
                 mechanism=self.classification.mechanism)
        tmp.replace(npath)
        return jpath, npath


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("jax", "jaxlib", "flowjax", "equinox", "optax", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def run_flows(spec: ProblemSpec, config: FlowConfig, *, progress: bool | None = None,
              keep_flows: bool = False) -> FlowResult:
    """Train ``config.seeds`` RealNVP flows on the annealed reverse KL of ``spec`` in R^d.

    Parameters
    ----------
    spec : the problem (target, path, schedule; the family is replaced by the flow).
    config : the flow, its training and the collapse test (:class:`FlowConfig`).
    progress : progress bar on stderr (None: only if stderr is a terminal).
    keep_flows : keep the trained flows in the result (``result.flows``).

    Returns a :class:`FlowResult`; time is the schedule time t = dt * steps.
    """
    spec = require_spec(spec)
    if not isinstance(config, FlowConfig):
        raise ValueError(f"config: must be a FlowConfig, got {type(config).__name__}")
    require_flows()
    from ..montecarlo import realise_geometry
    from ..progress import progress_bar

    t_start = time.perf_counter()
    d, S, C = config.d, config.seeds, config.chunk_steps
    steps = config.n_steps(spec.schedule)
    t_end_raw, rule = config.resolved_t_end(spec.schedule)
    dt = config.step_time
    mu, _ = realise_geometry(spec, d, config.seed)
    run_ids = np.arange(config.run_offset, config.run_offset + S, dtype=np.int64)

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    from . import realnvp, train

    roots = realnvp.run_keys(config.seed, run_ids)
    sub = jax.vmap(lambda k, i: jr.fold_in(k, i), in_axes=(0, None))
    flows = realnvp.build_flows(sub(roots, 0), d, config.layers, config.width,
                                config.nn_depth, config.init_scale)
    params, static = realnvp.split_flows(flows)
    opt_state = train.init_optimizer(config.optimizer, config.lr, params)
    runner = train.chunk_runner(config.n, config.estimator, config.optimizer, config.lr)
    sigma0_sq = spec.path.base_variance if spec.path.kind == "geometric" else 1.0
    target = train.Target(jnp.asarray(mu, jnp.float32),
                          jnp.asarray(np.log(spec.target.pi), jnp.float32),
                          jnp.float32(spec.target.variance), jnp.float32(sigma0_sq))
    step_roots = sub(roots, 1)

    n_chunks = steps // C
    trace = np.empty((n_chunks, S))
    bar = progress_bar(steps, f"flows d={d}", "step", progress)
    first = 0.0
    # the final window: the last fifth of the chunks (at least one); the classification at its
    # start is compared with the final one, on samples from the same keys
    window_start = n_chunks - max(1, n_chunks // 5)
    eval_keys = sub(roots, 2)
    early = None
    try:
        for c in range(n_chunks):
            if c == window_start and n_chunks > 1:
                b_w = float(spec.schedule.beta(c * C * dt))
                ev_w = train.evaluate(params, static, eval_keys, target, config.eval_samples,
                                      jnp.float32(b_w), jnp.float32(spec.gamma(b_w)))
                early = classify_counts(np.asarray(ev_w["counts"]).astype(np.int64),
                                        config.mass_threshold,
                                        finite=np.asarray(ev_w["finite"]))
            idx = np.arange(c * C, (c + 1) * C)
            betas = np.asarray(spec.schedule.beta(idx * dt), dtype=float)
            gammas = np.asarray(spec.gamma(betas), dtype=float)
            params, opt_state, losses = runner(
                params, static, opt_state, step_roots, jnp.asarray(idx, jnp.uint32),
                jnp.asarray(betas, jnp.float32), jnp.asarray(gammas, jnp.float32), target)
            trace[c] = np.asarray(losses).mean(axis=0)
            if c == 0:
                first = time.perf_counter() - t_start
            if bar is not None:
                bar.update(C)
    finally:
        if bar is not None:
            bar.close()
    t_final = steps * dt
    beta_f = float(spec.schedule.beta(t_final))
    ev = train.evaluate(params, static, eval_keys, target, config.eval_samples,
                        jnp.float32(beta_f), jnp.float32(spec.gamma(beta_f)))
    ev = {k: np.asarray(v) for k, v in ev.items()}
    counts = ev["counts"].astype(np.int64)
    cls = classify_counts(counts, config.mass_threshold, finite=ev["finite"])
    notes = flow_notes(spec, config)
    changed = (np.zeros(S, bool) if early is None
               else (early.collapsed != cls.collapsed) & ~cls.diverged)
    if changed.any():
        notes += (f"{int(changed.sum())} run(s) changed their classification in the final "
                  f"window (t from {window_start * C * dt:g} to {steps * dt:g}): the runs are "
                  "still moving; a longer relax_time or t_end may change the fraction",)
    if cls.undecided.any():
        notes += (f"{int(cls.undecided.sum())} run(s) hold a mode's mass near mass_threshold "
                  f"= {config.mass_threshold:g} (neither empty nor covered at "
                  f"{config.eval_samples} samples): counted as not collapsed",)
    if cls.diverged.any():
        notes += (f"{int(cls.diverged.sum())} run(s) diverged (non-finite samples): left "
                  "out of the fraction; lower lr",)
    if abs(beta_f - spec.schedule.beta_final) > config.beta_tol:
        notes += (f"the run ended at beta = {beta_f:.4g}, short of the schedule's final "
                  f"{spec.schedule.beta_final:.4g}",)
    return FlowResult(
        spec=spec, config=config, run_ids=run_ids, mu=mu, steps=steps, t_end=float(t_final),
        t_end_rule=rule + (f", rounded up to whole chunks from {t_end_raw:g}"
                           if not math.isclose(t_final, t_end_raw) else ""),
        counts=counts, classification=cls, kl=ev["kl"].astype(float),
        objective=ev["objective"].astype(float), loss_trace=trace,
        trace_times=(np.arange(1, n_chunks + 1) * C) * dt,
        wall_time=time.perf_counter() - t_start, first_chunk_time=first, notes=notes,
        changed_final_window=changed, window_start_time=window_start * C * dt,
        flows=eqx.combine(params, static) if keep_flows else None)
