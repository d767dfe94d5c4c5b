"""Helpers shared by the built-in estimators: the compiled model, the stationarity event, the
default end time, the antipodal-pair test."""

from __future__ import annotations

from derivations.spec import ProblemSpec

__all__ = ["compiled_model", "stationary_event", "default_ode_t_end", "is_antipodal_pair",
           "chunked_initial_states", "run_chunks", "merge_chunks"]


#: Largest K and M served by the expanded engine (derivations.codegen); beyond, the loop-form
#: engine (derivations.loopgen: route 2, no Jacobian), whose derivation scales.
EXPANDED_MAX = 3


def compiled_model(spec: ProblemSpec):
    """The generated, compiled model of ``spec.structure`` (cached on disk): the expanded
    engine for K, M <= :data:`EXPANDED_MAX`, the loop-form engine above."""
    st = spec.structure
    if max(st.K, st.M) > EXPANDED_MAX:
        from derivations.loopgen import compile_loop_model
        return compile_loop_model(st)
    from derivations.codegen import compile_model
    return compile_model(st)


def stationary_event(spec: ProblemSpec, tol: float = 1e-7):
    """Stationarity (max |dy/dt| < tol) once beta is within 1e-3 of its final value."""
    from solvers.integrate import Event
    return Event.converged(tol, beta_min=spec.schedule.beta_final - 1e-3)


def default_ode_t_end(spec: ProblemSpec) -> float:
    """Final time of the theory ensemble: the schedule settles within 1e-3 of its final beta,
    then 25 relaxation times ``Delta / (beta_final min_k w_k)`` (the rule of the Monte Carlo,
    :func:`analysis.montecarlo.default_t_end`); members stop earlier once converged."""
    from analysis.montecarlo import default_t_end
    return default_t_end(spec)


def is_antipodal_pair(spec: ProblemSpec) -> bool:
    """K = M = 2, mu_2 = -mu_1, pi_1 = pi_2, w_1 = w_2, zero centres: the separatrix setting."""
    T, K, M = spec.target.T, spec.target.K, spec.family.M
    if K != 2 or M != 2 or spec.init.centre_gram is not None:
        return False
    A = T[0, 0]
    return bool(A > 0 and abs(T[1, 1] - A) <= 1e-12 * A and abs(T[0, 1] + A) <= 1e-12 * A
                and spec.target.weights[0] == spec.target.weights[1]
                and spec.family.weights[0] == spec.family.weights[1])


def chunked_initial_states(spec: ProblemSpec, d: int, draws: int, seed: int | None,
                           chunk: int) -> list:
    """The draws' exact finite-d initial states (:func:`analysis.initial_law.sample_initial_states`),
    chunk by chunk: ``n_chunks = ceil(draws / chunk)``, chunk i has ``draws // n_chunks`` (+1
    for the first ``draws % n_chunks``) states from ``SeedSequence(seed).spawn(n_chunks)[i]``.
    The scheme of the theory-ensemble estimators (ode, gd): the same seed and chunk give the
    same draws, whatever executor runs the chunks.  Returns a list of (n_i, n_state) arrays."""
    import math

    import numpy as np

    from ..initial_law import sample_initial_states
    root = np.random.SeedSequence(seed)
    n_chunks = max(1, math.ceil(draws / chunk))
    sizes = [draws // n_chunks + (1 if i < draws % n_chunks else 0) for i in range(n_chunks)]
    return [sample_initial_states(spec, d, s, np.random.default_rng(st))
            for s, st in zip(sizes, root.spawn(n_chunks))]


def run_chunks(fn, spec: ProblemSpec, chunks: list, args: tuple, progress: bool,
               max_extensions: int, executor=None) -> list:
    """``[fn(spec_json, Y0, *args, progress, max_extensions) for Y0 in chunks]``, in process or
    on ``executor`` (then without progress bars; ``fn`` must be picklable, i.e. module-level,
    and gets the specification as JSON so that workers rebuild it)."""
    text = spec.to_json()
    if executor is None:
        return [fn(text, Y0, *args, progress, max_extensions) for Y0 in chunks]
    futures = [executor.submit(fn, text, Y0, *args, False, max_extensions) for Y0 in chunks]
    return [f.result() for f in futures]


def merge_chunks(parts: list, running_status: int) -> tuple:
    """Merge the chunk results ``(collapsed, mechanism, status, extensions, changed)`` of a
    theory ensemble (ode, gd): returns ``(collapsed, mechanism, status, details, notes)``
    with ``details`` = status counts, extensions used, draws still ``running_status`` at the
    end (``unconverged``) and those whose outcome changed in the last extension, and a note
    if any draw was still moving."""
    import numpy as np
    collapsed = np.concatenate([p[0] for p in parts])
    mech = np.concatenate([p[1] for p in parts])
    status = np.concatenate([p[2] for p in parts])
    extensions = int(max(p[3] for p in parts))
    unconverged = int(np.count_nonzero(status == running_status))
    changed = int(sum(p[4] for p in parts))
    details = {"status_counts": {str(int(s)): int(np.count_nonzero(status == s))
                                 for s in np.unique(status)},
               "extensions": extensions, "unconverged": unconverged,
               "changed_in_last_extension": changed}
    notes = []
    if unconverged:
        notes.append(f"{unconverged} draws still moving after {extensions} extension(s) of "
                     f"t_end; {changed} of them changed outcome in the last extension "
                     "(classified where they stand)")
    return collapsed, mech, status, details, notes
