"""Scale-out: hard kills, a dask.distributed cluster, and determinism across executors/threads.

* A sweep running in a subprocess is killed with SIGKILL at several seeded points (during the
  imports, after a random number of cells plus a random delay, and as soon as a temporary file
  appears, i.e. mid-write), restarted and killed again on the same directory, then resumed in
  this process: the result must equal an uninterrupted run bit for bit (scalars, arrays, file
  hashes), and no kill may lose a cell that was already complete.
* A small collapse sweep (:func:`analysis.phase.collapse_sweep`, ode estimator) on a
  two-worker ``dask.distributed.LocalCluster`` equals the serial run exactly, and so does
  :func:`analysis.collapse.collapse_probability` with its draws split over the cluster.
* The ode estimator gives identical outcomes serially, on ThreadPoolExecutor(1),
  ThreadPoolExecutor(2), ProcessPoolExecutor(2), and with NUMBA_NUM_THREADS = 1 and 2.

Every comparison has a negative control (another seed differs), so it can fail.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from analysis.sweep import Sweep, SweepResult, _example_task, load, load_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]

#: Scalars that measure time, not results (excluded from the exact comparisons).
TIMING_SCALARS = ("wall_time",)


def assert_same_sweeps(r1: SweepResult, r2: SweepResult, ignore: tuple = ()) -> None:
    """Every cell complete in both; identical parameters, seeds, scalars (except ``ignore``),
    array shapes/dtypes and arrays (bitwise)."""
    assert r1.complete and r2.complete and r1.shape == r2.shape
    for m1, m2 in zip(r1.cells, r2.cells):
        assert (m1["cell_id"], m1["seed"], m1["params"]) == (m2["cell_id"], m2["seed"],
                                                             m2["params"])
        s1 = {k: v for k, v in m1["scalars"].items() if k not in ignore}
        s2 = {k: v for k, v in m2["scalars"].items() if k not in ignore}
        assert s1 == s2
        assert m1["arrays"] == m2["arrays"]
        for name in m1["arrays"]:
            a1, a2 = r1.array(name, m1["flat_index"]), r2.array(name, m2["flat_index"])
            assert a1.dtype == a2.dtype and a1.shape == a2.shape
            assert a1.tobytes() == a2.tobytes()
        assert m1["npz"]["sha256"] == m2["npz"]["sha256"]


# ----------------------------------------------------------------------------------------
# SIGKILL at several points, then resume in-process
# ----------------------------------------------------------------------------------------

KILL_SWEEP = {"name": "killme", "axes": {"mu": [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0],
                                         "sigma": [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]},
              "base": {"n": 4000, "sleep_s": 0.03}, "seed": 31337}

RUNNER = textwrap.dedent("""
    import json, sys
    from concurrent.futures import ThreadPoolExecutor
    from analysis.sweep import Sweep, run_sweep, _example_task
    cfg = json.loads(sys.argv[1])
    sw = Sweep(cfg["name"], cfg["axes"], _example_task, base=cfg["base"], seed=cfg["seed"])
    if cfg["threads"]:
        with ThreadPoolExecutor(cfg["threads"]) as ex:
            run_sweep(sw, cfg["out"], executor=ex, progress=False, max_in_flight=cfg["threads"])
    else:
        run_sweep(sw, cfg["out"], progress=False)
    print("finished")
    """)


def kill_sweep_definition() -> Sweep:
    return Sweep(KILL_SWEEP["name"], KILL_SWEEP["axes"], _example_task, base=KILL_SWEEP["base"],
                 seed=KILL_SWEEP["seed"])


def _n_manifests(out: Path) -> int:
    cells = out / "cells"
    return len(list(cells.glob("c*.json"))) if cells.is_dir() else 0


def _tmp_files(out: Path) -> list[Path]:
    found = list(out.glob(".tmp_*"))
    if (out / "cells").is_dir():
        found += list((out / "cells").glob(".tmp_*"))
    return found


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll ``pred()`` every millisecond until true; fail if the process ends first."""
    t_end = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep subprocess ended (rc {proc.returncode}) before the "
                                 f"kill point: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > t_end:
            proc.kill()
            raise AssertionError("kill point not reached within the timeout")
        time.sleep(0.001)


def test_sigkill_at_seeded_points_then_resume_equals_uninterrupted_run(tmp_path):
    sw = kill_sweep_definition()
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    target = tmp_path / "killed"
    rng = np.random.default_rng(20240611)
    # (trigger, executor threads in the subprocess); every kill is on the same directory
    plan = [("start", 0), ("cells", 0), ("cells", 2), ("tmpfile", 0), ("cells", 0),
            ("tmpfile", 2)]
    history = []
    for trigger, threads in plan:
        cfg = dict(KILL_SWEEP, out=str(target), threads=threads)
        before = load_sweep(target).n_done if (target / "sweep.json").is_file() else 0
        n_before = _n_manifests(target)
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(cfg)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            if trigger == "start":  # during interpreter start-up / imports / sweep.json
                time.sleep(float(rng.uniform(0.0, 0.6)))
            elif trigger == "cells":  # after k more cells, at a random phase of the next one
                k = int(rng.integers(1, 5))
                _wait_for(lambda n0=n_before, k=k: _n_manifests(target) >= n0 + k, proc)
                time.sleep(float(rng.uniform(0.0, 0.03)))
            else:  # as soon as an atomic write is seen under way (else 3 cells later)
                k = int(rng.integers(1, 3))
                _wait_for(lambda n0=n_before, k=k: _n_manifests(target) >= n0 + k, proc)
                _wait_for(lambda n0=n_before, k=k: bool(_tmp_files(target))
                          or _n_manifests(target) >= n0 + k + 3, proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL, "the subprocess was not killed mid-run"
        leftovers = len(_tmp_files(target))
        if not (target / "sweep.json").is_file():
            history.append((trigger, 0, leftovers))
            continue
        partial = load_sweep(target)
        # a kill never loses a complete cell, and never leaves a wrong one
        assert partial.n_done >= before
        assert partial.n_done < sw.n_cells
        for m, ref in zip(partial.cells, fresh.cells):
            if m is not None:
                assert m["scalars"] == ref["scalars"]
                assert m["npz"]["sha256"] == ref["npz"]["sha256"]
        history.append((trigger, partial.n_done, leftovers))
    done_counts = [h[1] for h in history]
    assert sum(1 for h in history if 0 < h[1] < sw.n_cells) >= 3, history
    assert done_counts == sorted(done_counts), history

    resumed = run_sweep(sw, target, progress=False)
    assert len(resumed.computed) == sw.n_cells - done_counts[-1]
    assert not _tmp_files(target)
    assert_same_sweeps(fresh, resumed)
    assert_same_sweeps(fresh, load_sweep(target))
    lab_f, lab_r = load(tmp_path / "fresh"), load(target)
    for name in lab_f.values:
        assert lab_f.values[name].tobytes() == lab_r.values[name].tobytes()
    # negative control: another root seed gives a detectably different sweep
    other = Sweep(KILL_SWEEP["name"], KILL_SWEEP["axes"], _example_task,
                  base=dict(KILL_SWEEP["base"], sleep_s=0), seed=KILL_SWEEP["seed"] + 1)
    with pytest.raises(AssertionError):
        assert_same_sweeps(fresh, run_sweep(other, tmp_path / "other", progress=False))


# ----------------------------------------------------------------------------------------
# collapse estimator: a cheap problem, and its compiled code loaded once in this process
# ----------------------------------------------------------------------------------------

D = 100
ODE_DRAWS = 40
CHUNK = 10  # -> 4 chunks of the ode estimator, i.e. 4 executor tasks


def _spec():
    from derivations.spec import ExponentialSchedule, symmetric_bimodal
    return symmetric_bimodal(9.0, ExponentialSchedule(5.0, 5.0))


@pytest.fixture(scope="module")
def warm():
    """Compile (or load from the on-disk cache) the model once before any worker needs it,
    so that concurrent workers do not all compile it cold."""
    from analysis.collapse import collapse_probability
    collapse_probability(_spec(), D, method="ode", draws=2, seed=0)


@pytest.fixture
def small_chunks(monkeypatch):
    """Split the ode draws into chunks of CHUNK (module constant of the current estimator;
    the ``chunk`` option of the refactored one is passed as well)."""
    import analysis.collapse as collapse
    if hasattr(collapse, "ODE_CHUNK"):
        monkeypatch.setattr(collapse, "ODE_CHUNK", CHUNK)
    return {"chunk": CHUNK}


class CountingExecutor(Executor):
    """Delegates to ``inner`` and counts the submitted tasks."""

    def __init__(self, inner):
        self.inner = inner
        self.n_submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.n_submitted += 1
        return self.inner.submit(fn, *args, **kwargs)


def _ode(executor=None, seed: int = 5, options: dict | None = None):
    from analysis.collapse import collapse_probability
    return collapse_probability(_spec(), D, method="ode", draws=ODE_DRAWS, seed=seed,
                                executor=executor, **(options or {}))


def _same_estimate(r1, r2) -> None:
    assert (r1.p, r1.k, r1.n, tuple(r1.ci)) == (r2.p, r2.k, r2.n, tuple(r2.ci))
    assert r1.outcomes.tobytes() == r2.outcomes.tobytes()
    assert r1.mechanisms.tobytes() == r2.mechanisms.tobytes()
    assert r1.details == r2.details


def test_ode_estimator_is_identical_on_every_executor(warm, small_chunks):
    serial = _ode(options=small_chunks)
    assert serial.n == ODE_DRAWS and 0 < serial.k < ODE_DRAWS  # a non-trivial estimate
    ctx = multiprocessing.get_context("spawn")
    makers = {"threads1": lambda: ThreadPoolExecutor(1), "threads2": lambda: ThreadPoolExecutor(2),
              "processes2": lambda: ProcessPoolExecutor(2, mp_context=ctx)}
    for label, make in makers.items():
        with make() as inner:
            ex = CountingExecutor(inner)
            res = _ode(ex, options=small_chunks)
        assert ex.n_submitted == ODE_DRAWS // CHUNK, label  # really split over the workers
        _same_estimate(serial, res)
    # negative control
    other = _ode(seed=6, options=small_chunks)
    assert other.outcomes.tobytes() != serial.outcomes.tobytes()


NUMBA_RUNNER = textwrap.dedent("""
    import json, sys
    import numba
    from analysis.collapse import collapse_probability
    from derivations.spec import ExponentialSchedule, symmetric_bimodal
    spec = symmetric_bimodal(9.0, ExponentialSchedule(5.0, 5.0))
    r = collapse_probability(spec, int(sys.argv[1]), method="ode", draws=int(sys.argv[2]),
                             seed=int(sys.argv[3]))
    print(json.dumps({"p": r.p, "k": r.k, "ci": list(r.ci), "outcomes": r.outcomes.tolist(),
                      "mechanisms": r.mechanisms.tolist(), "details": r.details,
                      "threads": numba.get_num_threads(), "layer": numba.threading_layer()}))
    """)


def test_ode_estimator_is_identical_for_numba_thread_counts(warm):
    runs = {}
    for n_threads in (1, 2):
        env = dict(os.environ, NUMBA_NUM_THREADS=str(n_threads))
        proc = subprocess.run([sys.executable, "-c", NUMBA_RUNNER, str(D), str(ODE_DRAWS), "5"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs[n_threads] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs[1]["threads"] == 1 and runs[2]["threads"] == 2  # the setting took effect
    one, two = ({k: v for k, v in r.items() if k not in ("threads", "layer")}
                for r in (runs[1], runs[2]))
    assert one == two
    # ... and equal to this process's run (one chunk, as in the subprocesses)
    here = _ode()
    assert one["outcomes"] == here.outcomes.tolist() and one["p"] == here.p
    assert 0 < one["k"] < ODE_DRAWS
    assert _ode(seed=6).outcomes.tolist() != one["outcomes"]  # negative control


# ----------------------------------------------------------------------------------------
# dask.distributed
# ----------------------------------------------------------------------------------------

def test_dask_cluster_collapse_sweep_equals_serial(tmp_path, warm, small_chunks):
    pytest.importorskip("dask.distributed",
                        reason="dask.distributed not installed (optional extra mfvi[dask])")
    import logging

    from dask.distributed import Client, LocalCluster

    from analysis.phase import collapse_sweep
    spec = _spec()
    axes = {"T0": [2.0, 8.0]}
    kw = dict(d=D, method="ode", draws=ODE_DRAWS, seed=4, progress=False)
    serial = collapse_sweep(spec, axes, out_dir=tmp_path / "serial", **kw)
    serial_est = _ode(options=small_chunks)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        ex = client.get_executor()
        on_dask = collapse_sweep(spec, axes, out_dir=tmp_path / "dask", executor=ex, **kw)
        counting = CountingExecutor(client.get_executor())
        est = _ode(counting, options=small_chunks)
        worker_pids = set(client.run(os.getpid).values())
    assert sorted(on_dask.computed) == [0, 1]
    assert {m["pid"] for m in on_dask.cells} <= worker_pids and os.getpid() not in worker_pids
    assert_same_sweeps(serial, on_dask, ignore=TIMING_SCALARS)
    lab_s, lab_d = load(tmp_path / "serial"), load(tmp_path / "dask")
    assert set(lab_s.intervals) >= {"ci"}
    for name in ("p", "ci_low", "ci_high", "k", "n"):
        assert lab_s.values[name].tobytes() == lab_d.values[name].tobytes(), name
    assert np.all(lab_d.intervals["ci"][0] <= lab_d.values["p"])
    assert np.all(lab_d.values["p"] <= lab_d.intervals["ci"][1])
    assert len(np.unique(lab_s.values["p"])) == 2  # two genuinely different cells
    assert counting.n_submitted == ODE_DRAWS // CHUNK
    _same_estimate(serial_est, est)
    # negative control: another root seed changes the sweep
    other = collapse_sweep(spec, axes, out_dir=tmp_path / "other", **dict(kw, seed=5))
    with pytest.raises(AssertionError):
        assert_same_sweeps(serial, other, ignore=TIMING_SCALARS)
