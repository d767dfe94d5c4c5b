r"""``sgd``: the exact reduced SGD chain (DESIGN.md section 7; issue 10, finite steps).

The same stochastic process as the ``montecarlo`` estimator with the SGD optimiser -- SGD on
the d-dimensional means with n reparameterised samples per component per step (``stl`` or
``reparam``, trainable logits, tempering or the geometric path) -- sampled through its exact
reduced transition law (:mod:`solvers.sgd`): the state is the coordinates of {mu_a, m_k} in an
orthonormal frame of dimension rank(T) + M, the out-of-frame noise enters through a Wishart
matrix drawn by the Bartlett decomposition, and no d-dimensional vector is ever formed.  The
cost per step does not depend on d, so d = 10^6 costs what d = 100 does.

What is shared with ``montecarlo`` (one home per rule, nothing copied):

* initial law: ``(Q(0), R(0))`` from :func:`analysis.initial_law.sample_overlaps` (the exact law
  of the simulator's ``m_k(0) = c_k + (sigma_init / sqrt d) z_k``), ``alpha(0)`` from
  :func:`analysis.initial_law.initial_alpha`;
* step and end time: ``eta`` default :func:`analysis.mc_config.default_eta`, an explicit step
  above :func:`analysis.mc_config.stable_step` refused unless forced (``Cost.refusal``);
  ``t_end`` default :func:`analysis.mc_config.default_t_end` with the relaxation period
  :func:`analysis.mc_config.default_relax_time`, extended by that period while any run's
  outcome changed over the final window (the rule of :func:`analysis.montecarlo.simulate`:
  classification or nearest-mode assignment differing from the record half a relaxation
  period earlier, on the simulator's grid of 101 records), at most ``max_extensions`` times;
* schedule: ``beta, gamma`` at the start of every step, ``t = eta * steps``, from
  ``spec.schedule`` and ``spec.gamma``;
* classification: :func:`analysis.classify.classify` with ``weight_threshold`` (weights
  ``softmax(alpha)`` if they train, else the family's), diverged runs as ``diverged``;
* the result: a Wilson 95% interval of k collapsed of all n draws (as ``montecarlo``).

Adam is refused: its coordinate-wise scaling is not rotation invariant, so the chain has no
exact reduction (use ``--method montecarlo --optimizer adam``).

Randomness: the initial overlaps of all draws come from ``SeedSequence(seed)``; run i's SGD
noise from ``SeedSequence(seed, spawn_key=(i, 2))`` (:func:`solvers.sgd.rng_states`).  With an
executor, every phase of the run (up to the comparison record, then to t_end) is split into
chunks of runs submitted to it; the extension decision is taken over all runs, so the result
is identical for any executor, chunk size and thread count.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from derivations.spec import ProblemSpec

from ..classify import DIVERGED
from ..classify import undecided as undecided_runs
from ..stats import proportion
from .base import CollapseEstimator, CollapseResult, Cost, register_estimator
from .montecarlo import MonteCarloOptions

__all__ = ["SgdEstimator", "SgdOptions", "SECONDS_PER_UNIT"]

#: Optimistic wall time per run, step, sample and frame coordinate, per thread (measured about
#: 5e-9 s to 1e-8 s on the project's machines for K = M = 2, n = 8; benchmarks/bench_sgd.py).
SECONDS_PER_UNIT = 2e-9
#: Records of the simulator's time grid (``MonteCarloConfig.n_records``): the comparison
#: record of the final-window rule lies on this grid.
_N_RECORDS = 101


@dataclass(frozen=True)
class SgdOptions(MonteCarloOptions):
    """The montecarlo estimator's options (the same SGD), with plain SGD only and the
    extension count of the final-window rule."""

    optimizer: str = field(default="sgd", metadata={
        "help": "optimiser (sgd only: Adam has no exact reduction)"})
    max_extensions: int = field(default=4, metadata={
        "help": "times the default t_end is extended while outcomes change"})
    chunk: int | None = field(default=None, metadata={
        "help": "runs per executor task (default: draws/8 with an executor)"})

    def __post_init__(self) -> None:
        if self.optimizer != "sgd":
            if str(self.optimizer).lower() == "adam":
                raise ValueError(
                    "optimizer: Adam is not rotation invariant (its coordinate-wise scaling "
                    "depends on the basis of R^d), so its chain has no exact reduction; the sgd "
                    "estimator supports plain SGD only -- use --method montecarlo for Adam")
            raise ValueError(f"optimizer: must be 'sgd', got {self.optimizer!r}")
        super().__post_init__()
        if self.max_extensions < 0:
            raise ValueError(f"max_extensions: must be >= 0, got {self.max_extensions}")


def _advance_chunk(E, tdiag, logpi, X, alpha, rng, active, betas, gammas, kw):
    """Advance one chunk of runs (module level: picklable for executors); returns the state."""
    from solvers.sgd import advance
    advance(E, tdiag, logpi, X, alpha, rng, active, betas, gammas, **kw)
    return X, alpha, rng, active


@register_estimator
class SgdEstimator(CollapseEstimator):
    name = "sgd"
    summary = "exact reduced SGD chain (same law as montecarlo's SGD, cost independent of d)"
    Options = SgdOptions

    def _eta(self, spec: ProblemSpec, options: SgdOptions) -> float:
        from ..mc_config import default_eta
        return float(options.eta) if options.eta is not None else default_eta(spec)

    def _steps(self, spec: ProblemSpec, options: SgdOptions, eta: float
               ) -> tuple[float, int, int, int]:
        """(t_end, steps, extension steps, max extensions) of the simulator's rule."""
        from ..mc_config import default_relax_time, default_t_end
        relax = default_relax_time(spec)
        if options.t_end is None:
            t_end, max_ext = default_t_end(spec, 1e-3, relax), options.max_extensions
        else:
            t_end, max_ext = float(options.t_end), 0
        return (t_end, max(1, int(round(t_end / eta))), max(1, int(round(relax / eta))),
                max_ext)

    def check(self, spec: ProblemSpec, d: int, options: SgdOptions) -> None:
        super().check(spec, d, options)
        from solvers.sgd import frame_dimension
        D = frame_dimension(spec.target.T, spec.family.M)
        if d < D:
            raise ValueError(f"d: the reduced SGD chain needs d >= rank T + M = {D}, got {d}")

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: SgdOptions) -> Cost:
        import numba

        from solvers.sgd import frame_dimension

        from ..mc_config import check_step
        eta = self._eta(spec, options)
        M, K = spec.family.M, spec.target.K
        D = frame_dimension(spec.target.T, M)
        _, steps, ext, max_ext = self._steps(spec, options, eta)
        steps += max_ext * ext
        per_step = SECONDS_PER_UNIT * M * options.n * (D + M + K)
        threads = max(1, int(numba.get_num_threads()))
        seconds = steps * draws * per_step / threads
        mem = 8.0 * draws * (3 * M * D + 4 * M * M + 4 * M * K + 3 * M + 8)
        refusal = None
        try:
            check_step(spec, eta)
        except ValueError as exc:             # unstable steps run only when forced
            refusal = str(exc)
        return Cost(mem, seconds, f"{draws} runs of n = {options.n} samples: up to {steps} "
                                  f"steps of eta = {eta:g} on {threads} threads", refusal)

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: SgdOptions) -> CollapseResult:
        from solvers.layout import softmax
        from solvers.sgd import frame_overlaps, initial_frame, rng_states

        from ..initial_law import initial_alpha, sample_overlaps
        from ..mc_config import noise_inflation_note
        from ..progress import progress_bar

        if seed is None:                    # fresh entropy, recorded in the options
            seed = int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
        eta = self._eta(spec, options)
        t_end0, total, ext_steps, max_ext = self._steps(spec, options, eta)
        M = spec.family.M
        T = spec.target.T
        train_w = spec.family.train_weights
        Q0, R0 = sample_overlaps(spec, d, draws, np.random.default_rng(
            np.random.SeedSequence(seed)))
        E, X = initial_frame(T, Q0, R0)
        alpha = np.ascontiguousarray(np.broadcast_to(initial_alpha(spec), (draws, M)).copy())
        rng = rng_states(seed, np.arange(draws))
        active = np.ones(draws, dtype=bool)
        tdiag = np.ascontiguousarray(np.diag(T), dtype=float)
        logpi = np.ascontiguousarray(np.log(spec.target.pi), dtype=float)
        s0 = float(spec.path.base_variance) if spec.path.kind == "geometric" else 1.0
        kw = dict(eta=eta, n=options.n, s=float(spec.family.variance),
                  delta=float(spec.target.variance), sigma0_sq=s0, d=int(d),
                  estimator=options.estimator, train_w=train_w)
        chunk = options.chunk or (draws if executor is None else max(1, math.ceil(draws / 8)))
        bounds = [(o, min(o + chunk, draws)) for o in range(0, draws, chunk)]
        bar = progress_bar(total, f"mfvi sgd d={d} draws={draws}", "step", options.progress)

        def run_to(step: int, target: int) -> None:
            if target <= step:
                return
            t = eta * (step + np.arange(target - step))
            betas = np.ascontiguousarray(np.broadcast_to(spec.schedule.beta(t), t.shape),
                                         dtype=float)
            gammas = np.ascontiguousarray(np.broadcast_to(spec.gamma(betas), t.shape),
                                          dtype=float)
            args = [(E, tdiag, logpi, X[a:b], alpha[a:b], rng[a:b], active[a:b])
                    for a, b in bounds]
            if executor is None or len(bounds) == 1:
                # in process: slices of contiguous arrays along the first axis are contiguous
                for a_ in args:
                    _advance_chunk(*a_, betas, gammas, kw)
            else:
                futures = [executor.submit(_advance_chunk, *a_, betas, gammas, kw)
                           for a_ in args]
                for (a, b), f in zip(bounds, futures):
                    X[a:b], alpha[a:b], rng[a:b], active[a:b] = f.result()
            if bar is not None:
                bar.update(target - step)

        def state() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            Q, R = frame_overlaps(E, X)
            Q[~active] = np.nan
            R[~active] = np.nan
            w = softmax(alpha) if train_w else np.broadcast_to(spec.family.w, (draws, M))
            return Q, R, np.ascontiguousarray(w)

        # the simulator's records: every rec_every steps and at the end of every phase
        rec_every = max(1, int(math.ceil(total / (_N_RECORDS - 1))))
        ends: list[int] = [0]
        step, extensions = 0, 0
        thr = options.weight_threshold
        try:
            while True:
                window = 0.5 * min(ext_steps, total)
                grid = int((total - window) // rec_every) * rec_every
                back = max([e for e in ends if e <= total - window] + [grid])
                back = min(max(back, step), total - 1) if total > step else back
                run_to(step, back)
                Qb, Rb, wb = state()
                run_to(back, total)
                step = total
                ends.append(total)
                Qf, Rf, wf = state()
                undecided, cf, mf = undecided_runs(Qf, Rf, wf, Qb, Rb, wb, T, thr)
                if not undecided.any() or extensions >= max_ext:
                    break
                extensions += 1
                total += ext_steps
                if bar is not None:
                    bar.total = total
                    bar.refresh()
        finally:
            if bar is not None:
                bar.close()

        t_end = eta * step
        n_und = int(np.count_nonzero(undecided))
        n_div = int(np.count_nonzero(mf == DIVERGED))
        prop = proportion(int(cf.sum()), int(cf.size))
        notes = ["exact reduced SGD chain (DESIGN.md 7): the law of montecarlo's SGD in R^d, "
                 "sampled without d-dimensional vectors; its noise adds overlap beyond the "
                 "gradient flow"]
        if n_und:
            last = " after the last extension" if extensions and extensions == max_ext else ""
            notes.append(f"{n_und} run(s) undecided: their classification changed in the final "
                         f"window{last} (counted as classified at t_end)")
        if n_div:
            notes.append(f"{n_div} run(s) diverged (counted as not collapsed)")
        note = noise_inflation_note(spec, d, eta, options.n, options.estimator, t_end)
        if note is not None:
            notes.append(note)
        return CollapseResult(
            self.name, prop.p, prop.ci, prop.k, prop.n, d, spec.to_dict(),
            options={**options.to_dict(), "eta": eta, "seed": seed, "chunk": chunk},
            outcomes=cf, mechanisms=mf,
            details={"t_end": float(t_end), "t_end_requested": float(t_end0),
                     "steps": int(step), "extensions": int(extensions),
                     "n_undecided": n_und, "n_diverged": n_div, "eta": float(eta),
                     "frame_dimension": int(X.shape[2])},
            notes=tuple(notes))
