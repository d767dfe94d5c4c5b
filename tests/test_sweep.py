"""The resumable sweep runner: interruption and resume, damaged files, executors, validation.

The central property: a sweep interrupted at any point (an exception in-process, or the process
killed with ``os._exit`` in a subprocess) and then resumed produces bit-for-bit the same arrays
and scalars as an uninterrupted run in another directory, recomputing only the cells that were
not complete; a process pool gives the same result as the serial run.  A negative control (a
different root seed) checks that the comparison can fail.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from analysis.sweep import (
    CELL_FORMAT,
    LabelledSweep,
    Sweep,
    SweepResult,
    TaskOutput,
    _example_task,
    cell_seed,
    load,
    load_sweep,
    run_sweep,
)

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------
# module-level tasks (picklable) and their instrumentation
# ----------------------------------------------------------------------------------------

#: calls of the instrumented tasks in this process; ``interrupt_at``: raise KeyboardInterrupt
#: on that call number (1-based), None for never.
CALLS: list[tuple] = []
CONTROL: dict = {"interrupt_at": None}


def noisy_task(params: dict, seed: int) -> TaskOutput:
    """Random arrays of two shapes and several scalars, all functions of (params, seed)."""
    CALLS.append((params["a"], params["b"]))
    if CONTROL["interrupt_at"] is not None and len(CALLS) >= CONTROL["interrupt_at"]:
        raise KeyboardInterrupt("simulated Ctrl-C")
    rng = np.random.default_rng(seed)
    n = params["n"]
    x = params["a"] + params["b"] * rng.standard_normal(n)
    outcomes = rng.random((n, 2)) < 1.0 / (1.0 + np.exp(-params["a"]))
    return TaskOutput(arrays={"x": x, "outcomes": outcomes, "counts": np.bincount(
        rng.integers(0, 3, n), minlength=3)},
        scalars={"p": float(outcomes[:, 0].mean()), "mean": float(x.mean()),
                 "label": f"a={params['a']}", "k": int(outcomes.sum())})


def killing_task(params: dict, seed: int) -> TaskOutput:
    """``noisy_task``, but the process dies (no cleanup at all) on call number
    ``$MFVI_TEST_KILL_AT``."""
    kill_at = os.environ.get("MFVI_TEST_KILL_AT")
    out = noisy_task(params, seed)
    if kill_at is not None and len(CALLS) >= int(kill_at):
        os._exit(17)
    return out


def make_sweep(task=noisy_task, seed: int = 2024, **kw) -> Sweep:
    axes = kw.pop("axes", {"a": [-1.0, 0.25, 1.5], "b": [0.5, 1.0, 2.0, 3.0]})
    base = kw.pop("base", {"n": 50, "spec": {"A": 9.0, "weights": [0.5, 0.5]}})
    return Sweep(kw.pop("name", "test"), axes, task, base=base, seed=seed, **kw)


@pytest.fixture(autouse=True)
def _reset_instrumentation():
    CALLS.clear()
    CONTROL["interrupt_at"] = None
    yield
    CALLS.clear()
    CONTROL["interrupt_at"] = None


def assert_same_results(r1: SweepResult, r2: SweepResult) -> None:
    """Every cell complete in both, identical scalars (exactly) and arrays (bitwise)."""
    assert r1.complete and r2.complete
    assert r1.shape == r2.shape
    for m1, m2 in zip(r1.cells, r2.cells):
        assert m1["cell_id"] == m2["cell_id"]
        assert m1["seed"] == m2["seed"]
        assert m1["params"] == m2["params"]
        assert m1["scalars"] == m2["scalars"]
        assert m1["arrays"] == m2["arrays"]
        for name in m1["arrays"]:
            a1 = r1.array(name, m1["flat_index"])
            a2 = r2.array(name, m2["flat_index"])
            assert a1.dtype == a2.dtype and np.array_equal(a1, a2)
        # fixed zip timestamps: identical arrays give identical files
        assert m1["npz"]["sha256"] == m2["npz"]["sha256"]


def results_differ(r1: SweepResult, r2: SweepResult) -> bool:
    try:
        assert_same_results(r1, r2)
    except AssertionError:
        return True
    return False


# ----------------------------------------------------------------------------------------
# basic run, layout, result arrays
# ----------------------------------------------------------------------------------------

def test_run_layout_and_result_arrays(tmp_path):
    sw = make_sweep()
    res = run_sweep(sw, tmp_path / "s", progress=False)
    assert res.complete and res.shape == (3, 4) and res.n_cells == 12
    assert res.computed == tuple(range(12)) and len(CALLS) == 12
    # C order, last axis fastest; each task got base + its axis values
    assert CALLS[:5] == [(-1.0, 0.5), (-1.0, 1.0), (-1.0, 2.0), (-1.0, 3.0), (0.25, 0.5)]
    files = sorted(p.name for p in (tmp_path / "s" / "cells").iterdir())
    assert len(files) == 24 and files[0] == "c0000_0000.json" and files[-1] == "c0002_0003.npz"
    assert not [f for f in files if f.startswith(".tmp_")]

    m = res.manifest((1, 2))
    assert m["format"] == CELL_FORMAT and m["status"] == "done"
    assert m["cell"] == {"a": 0.25, "b": 2.0}
    assert m["params"] == {"n": 50, "spec": {"A": 9.0, "weights": [0.5, 0.5]}, "a": 0.25, "b": 2.0}
    assert m["seed"] == cell_seed(2024, (1, 2))
    assert set(m["versions"]) == {"python", "numpy", "scipy", "numba", "mfvi"}
    assert m["versions"]["numpy"] == np.__version__
    assert m["timing"]["wall_s"] >= 0 and m["hostname"]

    # the manifest and the .npz agree with a direct call of the task
    direct = noisy_task(sw.cell((1, 2)).params, sw.cell((1, 2)).seed)
    assert m["scalars"]["p"] == direct.scalars["p"]
    np.testing.assert_array_equal(res.array("x", (1, 2)), direct.arrays["x"])
    np.testing.assert_array_equal(res.array("outcomes", 6), direct.arrays["outcomes"])
    assert res.array("outcomes", 6).dtype == bool

    p = res.scalar("p")
    assert p.shape == (3, 4) and np.all(np.isfinite(p))
    assert p[1, 2] == direct.scalars["p"]
    assert res.stacked("x").shape == (3, 4, 50)
    assert res.stacked("counts").dtype == np.int64
    np.testing.assert_array_equal(res.stacked("x")[1, 2], direct.arrays["x"])
    with pytest.raises(ValueError, match="not a number"):
        res.scalar("label")
    with pytest.raises(KeyError):
        res.scalar("nope")
    with pytest.raises(KeyError):
        res.array("nope", 0)

    # the sweep definition on disk
    d = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert d["axes"] == [{"name": "a", "dtype": "float64", "values": [-1.0, 0.25, 1.5]},
                         {"name": "b", "dtype": "float64", "values": [0.5, 1.0, 2.0, 3.0]}]
    assert d["seed"] == 2024 and d["task"].endswith("noisy_task") and d["shape"] == [3, 4]

    # a second run computes nothing; load_sweep sees the same
    n_calls = len(CALLS)
    again = run_sweep(sw, tmp_path / "s", progress=False)
    assert again.computed == () and len(CALLS) == n_calls
    assert_same_results(res, again)
    assert_same_results(res, load_sweep(tmp_path / "s"))


def test_cell_seeds_deterministic_and_distinct():
    sw = make_sweep()
    seeds = [c.seed for c in sw.iter_cells()]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)
    assert seeds == [c.seed for c in make_sweep().iter_cells()]
    assert seeds != [c.seed for c in make_sweep(seed=2025).iter_cells()]
    # 1-D: the same entropy as SeedSequence(root).spawn
    child = np.random.SeedSequence(5).spawn(4)[3]
    assert cell_seed(5, (3,)) == int(child.generate_state(1, np.uint64)[0]) >> 1
    # a cell's seed depends on its multi-index only, not on the grid's extent
    bigger = make_sweep(axes={"a": [-1.0, 0.25, 1.5, 7.0], "b": [0.5, 1.0, 2.0, 3.0, 9.0]})
    assert bigger.cell((2, 3)).seed == sw.cell((2, 3)).seed


# ----------------------------------------------------------------------------------------
# interruption and resume
# ----------------------------------------------------------------------------------------

def test_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    sw = make_sweep()
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    CALLS.clear()

    CONTROL["interrupt_at"] = 6  # Ctrl-C inside the 6th task
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, tmp_path / "resumed", progress=False)
    partial = load_sweep(tmp_path / "resumed")
    assert partial.n_done == 5 and not partial.complete
    assert partial.done.ravel().tolist() == [True] * 5 + [False] * 7
    p = partial.scalar("p")
    assert np.all(np.isnan(p.ravel()[5:])) and np.all(np.isfinite(p.ravel()[:5]))
    np.testing.assert_array_equal(p.ravel()[:5], fresh.scalar("p").ravel()[:5])
    with pytest.raises(KeyError, match="not complete"):
        partial.array("x", 5)
    assert np.all(np.isnan(partial.stacked("x")[1, 1:]))

    CONTROL["interrupt_at"] = None
    CALLS.clear()
    resumed = run_sweep(sw, tmp_path / "resumed", progress=False)
    assert resumed.computed == tuple(range(5, 12)) and len(CALLS) == 7  # nothing recomputed
    assert_same_results(fresh, resumed)
    # negative control: the comparison does detect a different sweep
    other = run_sweep(make_sweep(seed=7), tmp_path / "other", progress=False)
    assert results_differ(fresh, other)


def test_killed_process_resumes_to_the_uninterrupted_result(tmp_path):
    """A real hard kill: the sweep runs in a subprocess that calls os._exit during a task."""
    script = textwrap.dedent(f"""
        import importlib.util, sys
        sys.path[:0] = [{str(REPO)!r}]
        spec = importlib.util.spec_from_file_location({__name__!r}, {__file__!r})
        mod = importlib.util.module_from_spec(spec)
        sys.modules[{__name__!r}] = mod
        spec.loader.exec_module(mod)
        from analysis.sweep import run_sweep
        run_sweep(mod.make_sweep(mod.killing_task), sys.argv[1], progress=False)
        """)
    target = tmp_path / "killed"
    env = dict(os.environ, MFVI_TEST_KILL_AT="8")
    proc = subprocess.run([sys.executable, "-c", script, str(target)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr
    partial = load_sweep(target)
    assert partial.n_done == 7  # the 8th cell died with its process

    sw = make_sweep(killing_task)  # no kill in this process
    resumed = run_sweep(sw, target, progress=False)
    assert resumed.computed == tuple(range(7, 12))
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    assert_same_results(fresh, resumed)


def test_damaged_and_half_written_files_are_recomputed(tmp_path):
    sw = make_sweep()
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    run_sweep(sw, tmp_path / "damaged", progress=False)
    cells = tmp_path / "damaged" / "cells"
    # killed between the .npz and the manifest, with a half-written .npz
    (cells / "c0000_0002.json").unlink()
    (cells / "c0000_0002.npz").write_bytes(b"PK\x03\x04 half of a zip")
    # an .npz altered after its manifest was written (same size, different bytes)
    data = bytearray((cells / "c0001_0001.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (cells / "c0001_0001.npz").write_bytes(bytes(data))
    # an .npz truncated
    (cells / "c0002_0000.npz").write_bytes((cells / "c0002_0000.npz").read_bytes()[:40])
    # a manifest truncated mid-write (not possible with atomic writes, but be robust)
    (cells / "c0002_0003.json").write_text('{"format": "mfvi.sweep.cell/1", "status": "do')
    # a manifest from a different parameter set (e.g. copied in by hand)
    m = json.loads((cells / "c0000_0000.json").read_text())
    m["params"]["n"] = 49
    (cells / "c0000_0000.json").write_text(json.dumps(m))
    # debris of interrupted atomic writes
    (cells / ".tmp_c0000_0003.npz.123.abcd").write_bytes(b"garbage")
    (cells / ".tmp_c0000_0003.json.123.abcd").write_text("{")

    loaded = load_sweep(tmp_path / "damaged")
    assert loaded.n_done == 12 - 5
    for idx in [(0, 0), (0, 2), (1, 1), (2, 0), (2, 3)]:
        assert not loaded.done[idx]

    CALLS.clear()
    resumed = run_sweep(sw, tmp_path / "damaged", progress=False)
    assert sorted(resumed.computed) == [0, 2, 5, 8, 11] and len(CALLS) == 5
    assert not list(cells.glob(".tmp_*"))
    assert_same_results(fresh, resumed)
    assert_same_results(fresh, load_sweep(tmp_path / "damaged"))


def test_size_only_verification_skips_hashing_but_catches_truncation(tmp_path):
    sw = make_sweep(axes={"a": [0.0, 1.0], "b": [1.0]})
    run_sweep(sw, tmp_path, progress=False)
    cells = tmp_path / "cells"
    data = bytearray((cells / "c0000_0000.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (cells / "c0000_0000.npz").write_bytes(bytes(data))
    (cells / "c0001_0000.npz").write_bytes(b"short")
    assert load_sweep(tmp_path, verify=False).done.ravel().tolist() == [True, False]
    assert load_sweep(tmp_path).done.ravel().tolist() == [False, False]


def test_directory_of_a_different_sweep_is_refused(tmp_path):
    sw = make_sweep(axes={"a": [0.0, 1.0], "b": [1.0, 2.0]})
    run_sweep(sw, tmp_path / "s", progress=False)
    changes = {
        "axes": make_sweep(axes={"a": [0.0, 1.0], "b": [1.0, 2.5]}),
        "seed": make_sweep(axes={"a": [0.0, 1.0], "b": [1.0, 2.0]}, seed=1),
        "base": make_sweep(axes={"a": [0.0, 1.0], "b": [1.0, 2.0]},
                           base={"n": 51, "spec": {"A": 9.0, "weights": [0.5, 0.5]}}),
        "name": make_sweep(axes={"a": [0.0, 1.0], "b": [1.0, 2.0]}, name="other"),
        "task": make_sweep(killing_task, axes={"a": [0.0, 1.0], "b": [1.0, 2.0]}),
    }
    for key, other in changes.items():
        with pytest.raises(ValueError, match=f"different sweep.*{key}"):
            run_sweep(other, tmp_path / "s", progress=False)
    # an int axis is not the same sweep as the float axis with equal values
    ints = make_sweep(axes={"a": [0, 1], "b": [1.0, 2.0]})
    with pytest.raises(ValueError, match="different sweep.*axes"):
        run_sweep(ints, tmp_path / "s", progress=False)
    # a non-empty directory that is not a sweep
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not empty"):
        run_sweep(sw, tmp_path / "junk", progress=False)
    with pytest.raises(ValueError, match="not a sweep directory"):
        load_sweep(tmp_path / "junk")
    # the original is untouched and still resumable
    assert run_sweep(sw, tmp_path / "s", progress=False).computed == ()


# ----------------------------------------------------------------------------------------
# executors
# ----------------------------------------------------------------------------------------

def example_sweep(**kw) -> Sweep:
    return Sweep("example", {"mu": [-1.0, 0.0, 0.5, 2.0], "sigma": [0.5, 1.0, 3.0]},
                 _example_task, base=kw.pop("base", {"n": 64}), seed=11, **kw)


def test_process_pool_matches_serial(tmp_path):
    sw = example_sweep()
    serial = run_sweep(sw, tmp_path / "serial", progress=False)
    ctx = multiprocessing.get_context("spawn")  # no inherited state: real pickling round trip
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
        pooled = run_sweep(sw, tmp_path / "pool", executor=ex, progress=False, max_in_flight=3)
    assert sorted(pooled.computed) == list(range(12))
    assert_same_results(serial, pooled)
    pids = {m["pid"] for m in pooled.cells}
    assert os.getpid() not in pids  # the work really ran in the workers


def test_thread_pool_resume_after_partial_serial_run(tmp_path):
    sw = make_sweep()
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    CALLS.clear()
    CONTROL["interrupt_at"] = 4
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, tmp_path / "mixed", progress=False)
    CONTROL["interrupt_at"] = None
    with ThreadPoolExecutor(max_workers=3) as ex:
        resumed = run_sweep(sw, tmp_path / "mixed", executor=ex, progress=False)
    assert sorted(resumed.computed) == list(range(3, 12))
    assert_same_results(fresh, resumed)


def test_task_error_raise_and_record(tmp_path):
    # mu > 0.25 fails: cells with mu in {0.5, 2.0} (flat 6..11)
    failing = example_sweep(base={"n": 64, "fail_above": 0.25})
    with ThreadPoolExecutor(max_workers=2) as ex:
        with pytest.raises(RuntimeError, match="asked to fail"):
            run_sweep(failing, tmp_path / "raise", executor=ex, progress=False, max_in_flight=1)
    part = load_sweep(tmp_path / "raise")
    assert part.done.ravel().tolist()[:6] == [True] * 6  # everything before the failure kept
    assert not part.done[2:].any()
    with pytest.raises(RuntimeError, match="asked to fail"):
        run_sweep(failing, tmp_path / "raise-serial", progress=False)
    assert load_sweep(tmp_path / "raise-serial").n_done == 6

    rec = run_sweep(failing, tmp_path / "record", progress=False, on_error="record")
    assert rec.n_done == 6 and len(rec.failed) == 6
    assert all(m["status"] == "failed" and "asked to fail" in m["traceback"] for m in rec.failed)
    mean = rec.scalar("mean")
    assert np.all(np.isfinite(mean[:2])) and np.all(np.isnan(mean[2:]))
    loaded = load_sweep(tmp_path / "record")
    assert loaded.n_done == 6 and len(loaded.failed) == 6
    with ThreadPoolExecutor(max_workers=2) as ex:
        rec2 = run_sweep(failing, tmp_path / "record", executor=ex, progress=False,
                         on_error="record")
    assert sorted(rec2.computed) == [] and len(rec2.failed) == 6  # retried, failed again


class SynchronousExecutor(Executor):
    """A minimal third-party-style executor: runs each call at submit time."""

    def __init__(self):
        self.n_submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        self.n_submitted += 1
        fut = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


def test_results_that_arrived_before_an_error_are_kept(tmp_path):
    """All 12 futures are complete when the driver first looks; whichever failure it meets
    first, the 6 successful results must all be written (not only those handled before it)."""
    failing = example_sweep(base={"n": 64, "fail_above": 0.25})
    ex = SynchronousExecutor()
    with pytest.raises(RuntimeError, match="asked to fail"):
        run_sweep(failing, tmp_path / "s", executor=ex, progress=False)
    assert ex.n_submitted == 12
    part = load_sweep(tmp_path / "s")
    assert part.done.ravel().tolist() == [True] * 6 + [False] * 6
    serial = run_sweep(example_sweep(), tmp_path / "serial", progress=False)
    np.testing.assert_array_equal(part.scalar("mean")[:2], serial.scalar("mean")[:2])


def test_unpicklable_task_is_refused_for_process_executors(tmp_path):
    sw = Sweep("closure", {"mu": [0.0]}, lambda params, seed: _example_task(params, seed))
    with ProcessPoolExecutor(max_workers=1) as ex:
        with pytest.raises(ValueError, match="task: .*cannot be pickled"):
            run_sweep(sw, tmp_path / "p", executor=ex, progress=False)
    # serially (or with threads) a closure is fine
    assert run_sweep(sw, tmp_path / "s", progress=False).complete


def test_task_must_return_task_output(tmp_path):
    sw = Sweep("bad", {"mu": [0.0]}, _returns_dict)
    with pytest.raises(TypeError, match="expected TaskOutput"):
        run_sweep(sw, tmp_path, progress=False)
    assert load_sweep(tmp_path).n_done == 0


def _returns_dict(params, seed):
    return {"x": np.zeros(3)}


# ----------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("axes, match", [
    ({}, "at least one axis"),
    ({"a": []}, r"axes\['a'\].*non-empty"),
    ({"a": [1.0, np.nan]}, r"axes\['a'\].*finite"),
    ({"a": [1.0, np.inf]}, r"axes\['a'\].*finite"),
    ({"a": [[1.0, 2.0]]}, r"axes\['a'\].*1-dimensional"),
    ({"a": 3.0}, r"axes\['a'\].*1-dimensional"),
    ({"a": ["x", "y"]}, r"axes\['a'\].*real numbers"),
    ({"a": [True, False]}, r"axes\['a'\].*real numbers"),
    ({"a": [1.0, 1.0]}, r"axes\['a'\].*distinct"),
    ({"1a": [1.0]}, "identifiers"),
    ({"a b": [1.0]}, "identifiers"),
    ([("a", [1.0]), ("a", [2.0])], "more than once"),
    ([("a", [1.0], 3)], "pairs"),
    (5, "mapping"),
])
def test_axes_validation(axes, match):
    with pytest.raises(ValueError, match=match):
        Sweep("v", axes, _example_task)


def test_other_validation(tmp_path):
    ok = {"mu": [0.0, 1.0]}
    with pytest.raises(ValueError, match="name"):
        Sweep("", ok, _example_task)
    with pytest.raises(ValueError, match="task"):
        Sweep("v", ok, "not callable")
    with pytest.raises(ValueError, match="seed"):
        Sweep("v", ok, _example_task, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        Sweep("v", ok, _example_task, seed=1.5)
    with pytest.raises(ValueError, match="seed"):
        Sweep("v", ok, _example_task, seed=True)
    with pytest.raises(ValueError, match=r"base\['x'\].*finite"):
        Sweep("v", ok, _example_task, base={"x": float("nan")})
    with pytest.raises(ValueError, match=r"base.*keys must be strings"):
        Sweep("v", ok, _example_task, base={1: 2})
    with pytest.raises(ValueError, match=r"base\['obj'\].*not JSON"):
        Sweep("v", ok, _example_task, base={"obj": object()})
    with pytest.raises(ValueError, match="also appear as keys of base"):
        Sweep("v", ok, _example_task, base={"mu": 1.0})
    with pytest.raises(ValueError, match="on_error"):
        run_sweep(Sweep("v", ok, _example_task), tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="max_in_flight"):
        run_sweep(Sweep("v", ok, _example_task), tmp_path, executor=ThreadPoolExecutor(1),
                  max_in_flight=0)
    with pytest.raises(ValueError, match="sweep"):
        run_sweep({"name": "v"}, tmp_path)
    # NumPy values in base and int axes are normalised to JSON types
    sw = Sweep("v", {"n": np.array([3, 5])}, _example_task,
               base={"mu": np.float64(0.5), "w": np.array([0.25, 0.75]), "t": (1, 2)})
    c = sw.cell((1,))
    assert c.params == {"mu": 0.5, "w": [0.25, 0.75], "t": [1, 2], "n": 5}
    assert type(c.params["n"]) is int and type(c.params["mu"]) is float
    with pytest.raises(IndexError):
        sw.cell((2,))
    with pytest.raises(IndexError):
        sw.cell(2)


def test_task_output_validation():
    with pytest.raises(ValueError, match="arrays: names"):
        TaskOutput(arrays={"not valid": np.zeros(2)})
    with pytest.raises(ValueError, match=r"arrays\['x'\].*dtype"):
        TaskOutput(arrays={"x": np.array(["a", "b"])})
    with pytest.raises(ValueError, match=r"arrays\['x'\].*dtype"):
        TaskOutput(arrays={"x": np.array([{}, None], dtype=object)})
    with pytest.raises(ValueError, match="scalars.*not JSON"):
        TaskOutput(scalars={"f": object()})
    out = TaskOutput(arrays={"file": [1, 2]}, scalars={"p": np.float64(np.nan), "k": np.int64(3)})
    assert out.scalars == {"p": out.scalars["p"], "k": 3} and np.isnan(out.scalars["p"])
    assert type(out.scalars["k"]) is int


def test_names_that_collide_with_numpy_savez_arguments(tmp_path):
    sw = Sweep("names", {"mu": [0.0]}, _savez_names_task)
    res = run_sweep(sw, tmp_path, progress=False)
    np.testing.assert_array_equal(res.array("file", 0), [1, 2, 3])
    np.testing.assert_array_equal(res.array("allow_pickle", 0), [[1.5]])
    assert np.isnan(res.scalar("p")[0])


def _savez_names_task(params, seed):
    return TaskOutput(arrays={"file": np.array([1, 2, 3]), "allow_pickle": np.array([[1.5]])},
                      scalars={"p": float("nan")})


class _FakeTerminal:
    """A text stream that claims to be a terminal."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    term = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", term)
    run_sweep(example_sweep(), tmp_path / "a", progress=True)
    assert "12/12" in term.text
    term.text = ""
    run_sweep(example_sweep(), tmp_path / "b", progress=False)
    assert term.text == ""
    monkeypatch.setattr(term, "isatty", lambda: False)
    run_sweep(example_sweep(), tmp_path / "c", progress=True)
    assert term.text == ""


# ----------------------------------------------------------------------------------------
# corruption: each kind of damage is detected on its own and the cell recomputed
# ----------------------------------------------------------------------------------------

def _truncate_npz(cells: Path) -> None:
    f = cells / "c0001_0002.npz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _truncate_manifest(cells: Path) -> None:
    f = cells / "c0001_0002.json"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garbage_manifest(cells: Path) -> None:
    (cells / "c0001_0002.json").write_bytes(b"\x00\xffnot json at all\n")


def _empty_manifest(cells: Path) -> None:
    (cells / "c0001_0002.json").write_bytes(b"")


def _list_manifest(cells: Path) -> None:
    (cells / "c0001_0002.json").write_text("[1, 2, 3]")


def _wrong_sha_in_manifest(cells: Path) -> None:
    # the .npz is intact and of the recorded size; only the recorded hash disagrees
    f = cells / "c0001_0002.json"
    m = json.loads(f.read_text())
    sha = m["npz"]["sha256"]
    m["npz"]["sha256"] = ("0" if sha[0] != "0" else "1") + sha[1:]
    f.write_text(json.dumps(m))


def _manifest_without_scalars(cells: Path) -> None:
    f = cells / "c0001_0002.json"
    m = json.loads(f.read_text())
    del m["scalars"]
    f.write_text(json.dumps(m))


def _npz_missing(cells: Path) -> None:
    (cells / "c0001_0002.npz").unlink()


@pytest.mark.parametrize("damage", [_truncate_npz, _truncate_manifest, _garbage_manifest,
                                    _empty_manifest, _list_manifest, _wrong_sha_in_manifest,
                                    _manifest_without_scalars, _npz_missing],
                         ids=lambda f: f.__name__.lstrip("_"))
def test_each_kind_of_damage_is_detected_and_the_cell_recomputed(tmp_path, damage):
    sw = make_sweep()
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    run_sweep(sw, tmp_path / "d", progress=False)
    cells = tmp_path / "d" / "cells"
    damage(cells)
    damaged_flat = sw.cell((1, 2)).flat
    expected_done = [flat != damaged_flat for flat in range(sw.n_cells)]
    assert load_sweep(tmp_path / "d").done.ravel().tolist() == expected_done
    assert load(tmp_path / "d").complete.ravel().tolist() == expected_done
    if damage is not _wrong_sha_in_manifest:  # only the hash check can see a wrong hash
        assert load_sweep(tmp_path / "d", verify=False).done.ravel().tolist() == expected_done
    CALLS.clear()
    resumed = run_sweep(sw, tmp_path / "d", progress=False)
    assert resumed.computed == (damaged_flat,) and CALLS == [(0.25, 2.0)]
    assert_same_results(fresh, resumed)
    assert_same_results(fresh, load_sweep(tmp_path / "d"))


def test_leftover_tmp_files_are_removed_and_ignored(tmp_path):
    sw = make_sweep()
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    run_sweep(sw, tmp_path / "d", progress=False)
    cells = tmp_path / "d" / "cells"
    # killed mid-write of cell (0, 3): the new .npz and manifest only exist as temporaries,
    # the old pair had already been unlinked
    (cells / "c0000_0003.json").unlink()
    (cells / "c0000_0003.npz").rename(cells / ".tmp_c0000_0003.npz.999.deadbeef")
    (cells / ".tmp_c0000_0003.json.999.deadbeef").write_text('{"format": "mfvi.sw')
    # and debris next to a complete cell
    (cells / ".tmp_c0002_0001.npz.998.cafecafe").write_bytes(b"PK\x03\x04")
    assert load_sweep(tmp_path / "d").n_done == sw.n_cells - 1
    CALLS.clear()
    resumed = run_sweep(sw, tmp_path / "d", progress=False)
    assert resumed.computed == (3,) and len(CALLS) == 1
    assert sorted(p.name for p in cells.iterdir() if p.name.startswith(".tmp_")) == []
    assert_same_results(fresh, resumed)


def test_sweep_killed_while_creating_its_directory_can_be_started(tmp_path):
    """A kill during the atomic write of sweep.json leaves only its temporary file; the
    directory is then not a sweep yet, but must not be refused as 'not empty'."""
    sw = make_sweep(axes={"a": [0.0, 1.0], "b": [1.0]})
    fresh = run_sweep(sw, tmp_path / "fresh", progress=False)
    target = tmp_path / "d"
    target.mkdir()
    (target / ".tmp_sweep.json.4242.0badf00d").write_text('{"format": "mfvi.sweep/1", "na')
    res = run_sweep(sw, target, progress=False)
    assert res.complete and not list(target.glob(".tmp_*"))
    assert_same_results(fresh, res)
    # any other file still makes the directory refuse
    other = tmp_path / "other"
    other.mkdir()
    (other / ".tmp_notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        run_sweep(sw, other, progress=False)


# ----------------------------------------------------------------------------------------
# labelled arrays: load() and to_xarray()
# ----------------------------------------------------------------------------------------

def labelled_task(params: dict, seed: int) -> TaskOutput:
    """Scalars of every kind: numbers, an int, a bool, None in some cells, a [low, high]
    list, a _low/_high pair, a vector, a string and a dict; one array."""
    CALLS.append((params["x"], params["y"]))
    if CONTROL["interrupt_at"] is not None and len(CALLS) >= CONTROL["interrupt_at"]:
        raise KeyboardInterrupt("simulated Ctrl-C")
    rng = np.random.default_rng(seed)
    u = rng.random(3)
    p = float(u[0])
    return TaskOutput(
        arrays={"u": u},
        scalars={"p": p, "k": int(rng.integers(0, 1000)), "flag": bool(u[1] > 0.5),
                 "maybe": None if params["x"] == 2 else float(u[2]),
                 "ci": [p - 0.1, p + 0.1], "q_low": p / 2, "q_high": p * 2,
                 "vec3": [float(v) for v in u], "method": f"m{params['y']}",
                 "details": {"x": params["x"], "list": [1, [2]]}})


def labelled_sweep(**kw) -> Sweep:
    return Sweep("lab", {"x": [0, 1, 2], "y": [0.5, 1.5]}, labelled_task,
                 base={"spec": {"A": 4.0}}, seed=99, **kw)


def test_load_gives_labelled_arrays_equal_to_direct_task_calls(tmp_path):
    sw = labelled_sweep()
    CONTROL["interrupt_at"] = 5  # cells 0..3 complete, 4 and 5 missing
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, tmp_path, progress=False)
    CONTROL["interrupt_at"] = None
    lab = load(tmp_path)
    assert isinstance(lab, LabelledSweep)
    assert lab.shape == (3, 2) and lab.dims == ("x", "y")
    assert list(lab.axes) == ["x", "y"]
    assert lab.axes["x"].dtype.kind == "i" and lab.axes["x"].tolist() == [0, 1, 2]
    assert lab.axes["y"].tolist() == [0.5, 1.5]
    assert lab.name == "lab" and lab.seed == 99 and lab.task.endswith("labelled_task")
    assert lab.base == {"spec": {"A": 4.0}}
    assert lab.definition == {k: v for k, v in json.loads((tmp_path / "sweep.json").read_text())
                              .items() if k in ("format", "name", "task", "seed", "axes", "base")}
    complete = np.array([[True, True], [True, True], [False, False]])
    np.testing.assert_array_equal(lab.complete, complete)
    assert set(lab.values) == {"p", "k", "flag", "maybe", "ci", "q_low", "q_high", "vec3"}
    assert set(lab.objects) == {"method", "details"}
    assert lab.values["p"].shape == (3, 2) and lab.values["p"].dtype == np.float64
    assert lab.values["ci"].shape == (3, 2, 2) and lab.values["vec3"].shape == (3, 2, 3)
    for i, x in enumerate([0, 1, 2]):
        for j, y in enumerate([0.5, 1.5]):
            cell = sw.cell((i, j))
            assert lab.specs[i, j] == {"spec": {"A": 4.0}, "x": x, "y": y} == cell.params
            assert lab.cell_seeds[i, j] == cell.seed
            if not complete[i, j]:
                for name, arr in lab.values.items():
                    assert np.all(np.isnan(arr[i, j])), name
                assert lab.objects["method"][i, j] is None
                continue
            s = labelled_task(cell.params, cell.seed).scalars
            for name in ("p", "k", "q_low", "q_high"):
                assert lab.values[name][i, j] == s[name]
            assert lab.values["flag"][i, j] == float(s["flag"])
            assert lab.values["ci"][i, j].tolist() == s["ci"]
            assert lab.values["vec3"][i, j].tolist() == s["vec3"]
            if x == 2:
                assert np.isnan(lab.values["maybe"][i, j])
            else:
                assert lab.values["maybe"][i, j] == s["maybe"]
            assert lab.objects["method"][i, j] == f"m{y}"
            assert lab.objects["details"][i, j] == {"x": x, "list": [1, [2]]}
    # intervals: the [low, high] list and the _low/_high pair
    assert set(lab.intervals) == {"ci", "q"}
    lo, hi = lab.intervals["ci"]
    np.testing.assert_array_equal(lo, lab.values["ci"][..., 0])
    np.testing.assert_array_equal(hi, lab.values["ci"][..., 1])
    assert lab.intervals["q"][0] is lab.values["q_low"]
    assert lab.intervals["q"][1] is lab.values["q_high"]
    # read-only views: a LabelledSweep is a snapshot
    with pytest.raises(ValueError):
        lab.values["p"][0, 0] = 1.0
    # the SweepResult is underneath; a full run fills the missing row
    assert lab.result.n_done == 4
    full = LabelledSweep.from_result(run_sweep(sw, tmp_path, progress=False))
    assert full.complete.all() and np.all(np.isfinite(full.values["p"]))
    np.testing.assert_array_equal(full.values["p"][:2], lab.values["p"][:2])
    with pytest.raises(ValueError, match="SweepResult"):
        LabelledSweep.from_result(tmp_path)
    with pytest.raises(ValueError, match="not a sweep directory"):
        load(tmp_path / "cells")


def test_load_of_a_sweep_with_no_complete_cell(tmp_path):
    sw = labelled_sweep()
    CONTROL["interrupt_at"] = 1
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, tmp_path, progress=False)
    lab = load(tmp_path)
    assert lab.values == {} and lab.objects == {} and lab.intervals == {}
    assert not lab.complete.any() and lab.complete.shape == (3, 2)
    assert lab.specs[2, 1] == sw.cell((2, 1)).params


def test_to_xarray_dataset(tmp_path):
    xr = pytest.importorskip("xarray", reason="to_xarray needs the optional extra mfvi[xarray]")
    sw = labelled_sweep()
    CONTROL["interrupt_at"] = 6  # the last cell missing
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sw, tmp_path, progress=False)
    CONTROL["interrupt_at"] = None
    ds = load(tmp_path).to_xarray()
    assert isinstance(ds, xr.Dataset)
    assert dict(ds.sizes) == {"x": 3, "y": 2, "ci_dim": 2, "vec3_dim": 3}
    assert ds["x"].values.tolist() == [0, 1, 2] and ds["y"].values.tolist() == [0.5, 1.5]
    assert set(ds.data_vars) == {"p", "k", "flag", "maybe", "ci", "q_low", "q_high", "vec3"}
    assert ds["p"].dims == ("x", "y") and ds["ci"].dims == ("x", "y", "ci_dim")
    for i, j in [(0, 0), (1, 1), (2, 0)]:
        cell = sw.cell((i, j))
        s = labelled_task(cell.params, cell.seed).scalars
        sel = ds.sel(x=cell.params["x"], y=cell.params["y"])
        assert float(sel["p"]) == s["p"] and float(sel["k"]) == s["k"]
        assert sel["ci"].values.tolist() == s["ci"]
        assert bool(sel["cell_complete"])
    missing = ds.sel(x=2, y=1.5)
    assert not bool(missing["cell_complete"]) and np.isnan(float(missing["p"]))
    definition = json.loads(ds.attrs["definition"])
    on_disk = json.loads((tmp_path / "sweep.json").read_text())
    assert definition == {k: on_disk[k] for k in ("format", "name", "task", "seed", "axes",
                                                  "base")}
    assert ds.attrs["name"] == "lab" and ds.attrs["seed"] == 99
    assert json.loads(ds.attrs["base"]) == {"spec": {"A": 4.0}}
    assert json.loads(ds.attrs["intervals"]) == {"ci": ["ci", 0, 1], "q": ["q_low", "q_high"]}
    # every attribute is netCDF-safe (a string or a number), and the whole Dataset survives a
    # netCDF-3 round trip (scipy backend: no 64-bit integers)
    assert all(isinstance(v, (str, int, float)) for v in ds.attrs.values())
    ds.to_netcdf(tmp_path / "lab.nc", engine="scipy")
    with xr.open_dataset(tmp_path / "lab.nc", engine="scipy") as back:
        back.load()
    xr.testing.assert_identical(back, ds)


def test_to_xarray_renames_a_scalar_that_clashes_with_an_axis(tmp_path):
    pytest.importorskip("xarray", reason="to_xarray needs the optional extra mfvi[xarray]")
    sw = Sweep("clash", {"mean": [0.0, 1.0]}, _echo_task, seed=3)
    run_sweep(sw, tmp_path, progress=False)
    ds = load(tmp_path).to_xarray()
    assert "mean_scalar" in ds.data_vars and "cell_complete_scalar" in ds.data_vars
    assert ds["mean_scalar"].values.tolist() == [0.0, 2.0]
    assert ds["cell_complete_scalar"].values.tolist() == [3.0, 3.0]
    assert ds["cell_complete"].values.tolist() == [True, True]


def _echo_task(params, seed):
    return TaskOutput(scalars={"mean": 2 * params["mean"], "cell_complete": 3})


def test_to_xarray_without_xarray_names_the_extra(tmp_path, monkeypatch):
    run_sweep(labelled_sweep(), tmp_path, progress=False)
    lab = load(tmp_path)
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'mfvi\[xarray\]'"):
        lab.to_xarray()


def test_the_sweep_modules_do_not_import_xarray_or_dask():
    code = ("import sys, analysis.sweep, analysis.phase; "
            "bad = [m for m in ('xarray', 'dask', 'distributed', 'pandas') if m in sys.modules]; "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
