r"""Resumable, executor-aware parameter sweeps: one task per grid cell, results on disk.

DESIGN.md section 4: *long computations take an optional concurrent.futures.Executor; results are
one .npz plus a JSON manifest per task, written atomically, so sweeps can resume.*  This module
is the generic machinery behind the phase diagrams (collapse probability over (T0, tau),
(A, sigma_init), (pi_1, A), ...); it knows nothing about VI.

Model
-----
A :class:`Sweep` is a named grid: an ordered set of axes ``name -> 1-D values`` spanning
``shape = (len(axis_1), len(axis_2), ...)`` cells (C order, last axis fastest), a ``task``, a
dictionary ``base`` of fixed JSON parameters and a root ``seed``.  Cell ``index = (i_1, i_2, ...)``
calls

    task(params, seed) -> TaskOutput,   params = {**base, axis_1: values_1[i_1], ...},

with its own seed (:func:`cell_seed`)

    seed = SeedSequence(root_seed, spawn_key=index).generate_state(1, uint64)[0] >> 1

(a 63-bit non-negative int, accepted by ``numpy.random.default_rng`` and every seed argument of
mfvi).  It is the seed ``SeedSequence(root_seed).spawn`` gives child ``i`` for a 1-D sweep, and
depends on nothing but (root seed, multi-index): results do not depend on execution order, on
the executor, or on how often the sweep was interrupted and resumed.  Axis names may not repeat
keys of ``base`` (an axis *overrides nothing*, it adds a key).

Files
-----
::

    out_dir/sweep.json                 definition: name, task, seed, axes, base (+ versions, created)
    out_dir/cells/c0003_0012.npz       arrays of cell (3, 12)
    out_dir/cells/c0003_0012.json      its manifest: index, cell values, params, seed, status,
                                       scalars, array shapes, npz size + sha256, wall/cpu time,
                                       timestamps, hostname, pid, versions

Every file is written to ``.tmp_*`` in the same directory, fsynced, then ``os.replace``-d into
place; the manifest is written *after* the .npz.  A cell is complete iff its manifest parses,
says ``status: "done"``, records exactly this cell's index, parameters and seed, and the .npz
exists with the recorded size and SHA-256.  Anything else (no manifest, an .npz without manifest,
a truncated or altered .npz, leftover ``.tmp_*`` files) is ignored and the cell recomputed, so a
sweep killed at any instant (even ``kill -9`` during a write) resumes losing at most the cells
that were running.  ``run_sweep`` on an existing directory whose ``sweep.json`` describes a
different sweep (name, task, seed, axes or base) refuses with a ``ValueError``: use a new
directory.  The .npz files are written with fixed zip timestamps, so identical arrays give
identical files and hashes.

Execution
---------
Serial by default; with ``executor`` (any ``concurrent.futures.Executor``:
``ProcessPoolExecutor``, ``ThreadPoolExecutor``, ``dask.distributed.Client.get_executor()``,
``mpi4py.futures.MPIPoolExecutor``) the pending cells are submitted (at most ``max_in_flight`` at
a time) and collected as they complete.  Workers only compute and return a :class:`TaskOutput`;
**all files are written by the calling process**, so workers need no shared file system, and the
task must be picklable (a module-level function; put parameters in ``base``, not in closures).
Two ``run_sweep`` calls must not share one directory at the same time.

On a task error with ``on_error="raise"`` (default) the not-yet-started cells are cancelled, the
results that had already arrived are still written, and the exception propagates; with
``on_error="record"`` a manifest with ``status: "failed"`` and the traceback is written, the sweep
goes on, and the next ``run_sweep`` retries the failed cells.

Reading results
---------------
:func:`load_sweep` returns the :class:`SweepResult` (the manifests; ``scalar(name)``,
``array(name, index)``, ``stacked(name)``).  :func:`load` returns the same cells as labelled
arrays, a :class:`LabelledSweep`: ``axes`` (name -> 1-D values), ``values`` (scalar name ->
float array of shape ``shape``, or ``shape + (L,)`` for a numeric list of length L; NaN where
missing), ``objects`` (the non-numeric scalars, object arrays), ``intervals`` (``X_low`` /
``X_high`` pairs and ``ci``-like pairs, e.g. ``intervals["ci"]`` of a collapse sweep),
``complete`` (bool mask), ``cell_seeds``, ``specs`` (each cell's parameter dict) and the
definition (name, task, seed, base).  ``load(d).to_xarray()`` converts it to an
``xarray.Dataset`` (dims = axis names, coords = axis values, data variables = ``values``,
attributes = the definition as JSON); xarray is optional (``pip install 'mfvi[xarray]'``) and
imported only inside ``to_xarray``.

A resumed sweep also removes a ``.tmp_sweep.json*`` left by a run killed while creating the
directory, and recomputes a cell whose manifest lacks its ``scalars`` / ``arrays`` records.

Example
-------
>>> from analysis.sweep import Sweep, run_sweep, load_sweep, load, _example_task
>>> sw = Sweep("demo", {"mu": [-1.0, 0.0, 1.0], "sigma": [0.5, 2.0]}, _example_task,
...            base={"n": 100}, seed=7)
>>> res = run_sweep(sw, "/tmp/demo_sweep", progress=False)      # doctest: +SKIP
>>> res.scalar("mean").shape                                      # doctest: +SKIP
(3, 2)
>>> lab = load("/tmp/demo_sweep")                                 # doctest: +SKIP
>>> lab.values["mean"].shape, lab.complete.all()                  # doctest: +SKIP
((3, 2), True)
>>> lab.to_xarray()["mean"].sel(mu=0.0, sigma=2.0)                # doctest: +SKIP
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import math
import os
import platform
import socket
import sys
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from derivations.atomic import TMP_PREFIX, atomic_write

from .progress import progress_bar

__all__ = ["Sweep", "TaskOutput", "Cell", "SweepResult", "LabelledSweep", "run_sweep", "load_sweep",
           "load", "cell_seed", "collect_versions", "SWEEP_FORMAT", "CELL_FORMAT"]

#: Format tags written into ``sweep.json`` and each cell manifest.
SWEEP_FORMAT = "mfvi.sweep/1"
CELL_FORMAT = "mfvi.sweep.cell/1"

_SWEEP_FILE = "sweep.json"
_CELLS_DIR = "cells"
#: Keys of ``sweep.json`` that define a sweep (compared on resume).
_DEFINING_KEYS = ("format", "name", "task", "seed", "axes", "base")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

AxesLike = Mapping[str, Any] | Sequence[tuple[str, Any]]
Task = Callable[[dict, int], "TaskOutput"]


# ----------------------------------------------------------------------------------------
# JSON normalisation and small helpers
# ----------------------------------------------------------------------------------------

def _to_json(obj: Any, where: str, allow_nonfinite: bool = False) -> Any:
    """Return a copy of ``obj`` made of plain JSON types (dict with str keys, list, str, int,
    float, bool, None); NumPy scalars and arrays are converted, tuples become lists.  Raises
    ``ValueError`` naming ``where`` for anything else (and for NaN/inf unless allowed)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (Integral, np.integer)):
        return int(obj)
    if isinstance(obj, (Real, np.floating)):
        x = float(obj)
        if not allow_nonfinite and not math.isfinite(x):
            raise ValueError(f"{where}: must be finite, got {x}")
        return x
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise ValueError(f"{where}: arrays must be numeric or boolean, got dtype {obj.dtype}")
        return _to_json(obj.tolist(), where, allow_nonfinite)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: dictionary keys must be strings, got {k!r}")
            out[k] = _to_json(v, f"{where}[{k!r}]", allow_nonfinite)
        return out
    if isinstance(obj, (list, tuple)):
        return [_to_json(v, f"{where}[{i}]", allow_nonfinite) for i, v in enumerate(obj)]
    hint = " (pass spec.to_dict() for a ProblemSpec)" if hasattr(obj, "to_dict") else ""
    raise ValueError(f"{where}: {type(obj).__name__} is not JSON-serialisable{hint}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _task_identity(task: Callable) -> str:
    """``module.qualname`` of the task (of the wrapped function for a functools.partial)."""
    if isinstance(task, functools.partial):
        return f"functools.partial({_task_identity(task.func)})"
    mod = getattr(task, "__module__", None) or type(task).__module__
    qual = getattr(task, "__qualname__", None) or type(task).__qualname__
    return f"{mod}.{qual}"


def _mfvi_version() -> str | None:
    try:  # the source tree's pyproject.toml (an uninstalled checkout)
        import tomllib  # Python >= 3.11
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        with open(pyproject, "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except Exception:
        return None


@functools.lru_cache(maxsize=1)
def _versions_cached() -> tuple[tuple[str, str | None], ...]:
    from importlib import metadata
    out: list[tuple[str, str | None]] = [("python", platform.python_version())]
    for dist in ("numpy", "scipy", "numba", "mfvi"):
        try:
            v: str | None = metadata.version(dist)
        except Exception:
            v = None
        if v is None:
            if dist == "mfvi":
                v = _mfvi_version()
            elif dist in sys.modules:
                v = getattr(sys.modules[dist], "__version__", None)
        out.append((dist, v))
    return tuple(out)


def collect_versions() -> dict[str, str | None]:
    """Versions of python, numpy, scipy, numba and mfvi in this process (``None`` if unknown).

    Uses ``importlib.metadata``; for an uninstalled mfvi checkout falls back to the version in
    its ``pyproject.toml``.  Cached per process.
    """
    return dict(_versions_cached())


def cell_seed(root_seed: int, index: Sequence[int]) -> int:
    """The seed of the cell with multi-index ``index`` in a sweep with root seed ``root_seed``.

    ``SeedSequence(root_seed, spawn_key=tuple(index)).generate_state(1, uint64)[0] >> 1``: a
    63-bit non-negative int.  For a 1-D sweep, ``index = (i,)`` gives the entropy of
    ``SeedSequence(root_seed).spawn(n)[i]``.
    """
    key = tuple(int(i) for i in index)
    state = np.random.SeedSequence(int(root_seed), spawn_key=key).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def _cell_id(index: Sequence[int]) -> str:
    return "c" + "_".join(f"{int(i):04d}" for i in index)


# ----------------------------------------------------------------------------------------
# task output and the sweep definition
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TaskOutput:
    """What a task returns for one cell.

    Parameters
    ----------
    arrays : mapping name -> array (any shape; numeric or boolean dtype), saved in the cell's
        .npz.  Names must be Python identifiers.
    scalars : mapping name -> JSON value (numbers, bools, strings, None, lists, dicts; NumPy
        scalars and small arrays are converted; NaN/inf allowed), saved in the cell's manifest.
        :meth:`SweepResult.scalar` assembles numeric ones into an array over the grid.
    """

    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    scalars: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.arrays, Mapping):
            raise ValueError(f"arrays: must be a mapping name -> array, got "
                             f"{type(self.arrays).__name__}")
        if not isinstance(self.scalars, Mapping):
            raise ValueError(f"scalars: must be a mapping name -> JSON value, got "
                             f"{type(self.scalars).__name__}")
        arrays: dict[str, np.ndarray] = {}
        for name, value in self.arrays.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"arrays: names must be Python identifiers, got {name!r}")
            arr = np.array(value)  # a copy
            if arr.dtype.kind not in "biufc":
                raise ValueError(f"arrays[{name!r}]: dtype must be numeric or boolean, got "
                                 f"{arr.dtype}")
            arrays[name] = arr
        for name in self.scalars:
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"scalars: names must be Python identifiers, got {name!r}")
        scalars = _to_json(dict(self.scalars), "scalars", allow_nonfinite=True)
        object.__setattr__(self, "arrays", arrays)
        object.__setattr__(self, "scalars", scalars)


@dataclass(frozen=True)
class Cell:
    """One grid cell of a sweep.

    index : multi-index ``(i_1, ..., i_n)`` into the axes; flat : its C-order position;
    cell_id : file stem (``c0003_0012``); values : ``{axis: value}``; params : what the task
    receives (``{**base, **values}``); seed : :func:`cell_seed` of the index.
    """

    index: tuple[int, ...]
    flat: int
    cell_id: str
    values: dict
    params: dict
    seed: int


def _validate_axes(axes: Any) -> dict[str, np.ndarray]:
    if isinstance(axes, Mapping):
        items = list(axes.items())
    else:
        try:
            items = [tuple(it) for it in axes]
        except TypeError:
            raise ValueError(f"axes: must be a mapping name -> 1-D values (or a sequence of "
                             f"(name, values) pairs), got {type(axes).__name__}") from None
        if any(len(it) != 2 for it in items):
            raise ValueError("axes: a sequence of axes must hold (name, values) pairs")
    if not items:
        raise ValueError("axes: at least one axis is required")
    out: dict[str, np.ndarray] = {}
    for name, values in items:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"axes: axis names must be Python identifiers, got {name!r}")
        if name in out:
            raise ValueError(f"axes: axis name {name!r} appears more than once")
        arr = np.array(values)
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"axes[{name!r}]: values must be real numbers (int or float), got "
                             f"dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"axes[{name!r}]: values must be 1-dimensional, got shape "
                             f"{arr.shape}")
        if arr.size == 0:
            raise ValueError(f"axes[{name!r}]: values must be non-empty")
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float64)
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"axes[{name!r}]: values must be finite (found NaN or inf)")
        else:
            arr = arr.astype(np.int64)
        if np.unique(arr).size != arr.size:
            raise ValueError(f"axes[{name!r}]: values must be distinct, got {arr.tolist()}")
        arr.setflags(write=False)
        out[name] = arr
    return out


def _validate_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (Integral, np.integer)):
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    if int(seed) < 0:
        raise ValueError(f"seed: must be >= 0, got {seed!r}")
    return int(seed)


def _axes_json(axes: Mapping[str, np.ndarray]) -> list[dict]:
    return [{"name": n, "dtype": str(v.dtype), "values": v.tolist()} for n, v in axes.items()]


def _axes_from_json(items: list[dict]) -> dict[str, np.ndarray]:
    out = {}
    for it in items:
        arr = np.array(it["values"], dtype=it["dtype"])
        arr.setflags(write=False)
        out[it["name"]] = arr
    return out


class _Grid:
    """Cells of a grid definition (axes, base, seed); shared by Sweep and SweepResult."""

    axes: Mapping[str, np.ndarray]
    base: dict
    seed: int

    @property
    def shape(self) -> tuple[int, ...]:
        """``(len(axis_1), ..., len(axis_n))``."""
        return tuple(int(v.size) for v in self.axes.values())

    @property
    def n_cells(self) -> int:
        """Number of grid cells, ``prod(shape)``."""
        return int(np.prod(self.shape))

    def _flat_of(self, index: int | Sequence[int]) -> int:
        if isinstance(index, (Integral, np.integer)) and not isinstance(index, bool):
            flat = int(index)
            if not 0 <= flat < self.n_cells:
                raise IndexError(f"index: flat cell index {flat} out of range [0, {self.n_cells})")
            return flat
        idx = tuple(int(i) for i in index)
        if len(idx) != len(self.shape) or any(not 0 <= i < n for i, n in zip(idx, self.shape)):
            raise IndexError(f"index: {idx} is not a valid multi-index for shape {self.shape}")
        return int(np.ravel_multi_index(idx, self.shape))

    def cell(self, index: int | Sequence[int]) -> Cell:
        """The :class:`Cell` at a flat (C-order) or multi-index."""
        flat = self._flat_of(index)
        idx = tuple(int(i) for i in np.unravel_index(flat, self.shape))
        values = {name: vals[i].item() for (name, vals), i in zip(self.axes.items(), idx)}
        params = copy.deepcopy(self.base)
        params.update(values)
        return Cell(index=idx, flat=flat, cell_id=_cell_id(idx), values=values, params=params,
                    seed=cell_seed(self.seed, idx))

    def iter_cells(self) -> Iterator[Cell]:
        """All cells in C order (last axis fastest)."""
        for flat in range(self.n_cells):
            yield self.cell(flat)


@dataclass(frozen=True, eq=False)
class Sweep(_Grid):
    """A grid of tasks.

    Parameters
    ----------
    name : a label, recorded in every manifest (part of the sweep's identity).
    axes : ordered mapping ``axis name -> 1-D values`` (or a sequence of ``(name, values)``
        pairs); names are Python identifiers, unique, and not keys of ``base``; values are
        finite, distinct, real (int axes stay int); shape of the grid
        ``(len(axis_1), ..., len(axis_n))``.
    task : ``task(params: dict, seed: int) -> TaskOutput`` with
        ``params = {**base, axis_1: value, ...}``; module-level (picklable) to run on a process
        or cluster executor.  Its identity ``module.qualname`` is part of the sweep's identity.
    base : fixed JSON parameters passed to every cell (e.g. ``{"spec": spec.to_dict(),
        "n_draws": 400}``); NumPy scalars/arrays and tuples are converted to JSON types, keys
        must be strings, numbers finite.
    seed : root seed (int >= 0); cell seeds from :func:`cell_seed`.
    """

    name: str
    axes: Mapping[str, np.ndarray]
    task: Task
    base: dict = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: must be a non-empty string, got {self.name!r}")
        axes = _validate_axes(self.axes)
        if not callable(self.task):
            raise ValueError(f"task: must be callable task(params, seed) -> TaskOutput, got "
                             f"{self.task!r}")
        if not isinstance(self.base, Mapping):
            raise ValueError(f"base: must be a mapping of JSON parameters, got "
                             f"{type(self.base).__name__}")
        base = _to_json(self.base, "base")
        clash = [n for n in axes if n in base]
        if clash:
            raise ValueError(f"axes: axis name(s) {clash} also appear as keys of base; remove "
                             f"them from base (an axis supplies that parameter)")
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "seed", _validate_seed(self.seed))

    @property
    def task_id(self) -> str:
        """``module.qualname`` of the task."""
        return _task_identity(self.task)

    def definition(self) -> dict:
        """The JSON definition compared on resume (format, name, task, seed, axes, base)."""
        return {"format": SWEEP_FORMAT, "name": self.name, "task": self.task_id,
                "seed": self.seed, "axes": _axes_json(self.axes), "base": copy.deepcopy(self.base)}


# ----------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------

def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1) + "\n").encode()


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz (readable by ``np.load``) with fixed zip timestamps: equal arrays, equal bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read().decode())


def _check_cell(cells_dir: Path, cell: Cell, verify: bool) -> tuple[str, dict | None]:
    """Status of a cell on disk: ``("done", manifest)``, ``("failed", manifest)`` or
    ``("missing", None)`` (no manifest, unreadable, stale, or its .npz does not match)."""
    mpath = cells_dir / f"{cell.cell_id}.json"
    if not mpath.is_file():
        return "missing", None
    try:
        m = _read_json(mpath)
    except (OSError, ValueError):
        return "missing", None
    if (not isinstance(m, dict) or m.get("format") != CELL_FORMAT
            or m.get("cell_id") != cell.cell_id or m.get("index") != list(cell.index)
            or m.get("params") != cell.params or m.get("seed") != cell.seed):
        return "missing", None
    if m.get("status") == "failed":
        return "failed", m
    if m.get("status") != "done":
        return "missing", None
    if not isinstance(m.get("scalars"), dict) or not isinstance(m.get("arrays"), dict):
        return "missing", None
    npz = m.get("npz")
    if not isinstance(npz, dict) or npz.get("file") != f"{cell.cell_id}.npz":
        return "missing", None
    path = cells_dir / npz["file"]
    try:
        if path.stat().st_size != npz.get("size"):
            return "missing", None
        if verify and _sha256_file(path) != npz.get("sha256"):
            return "missing", None
    except OSError:
        return "missing", None
    return "done", m


def _write_cell(cells_dir: Path, sweep_name: str, cell: Cell, out: TaskOutput,
                info: dict) -> dict:
    """Write the .npz, then the manifest (both atomically); return the manifest."""
    mpath = cells_dir / f"{cell.cell_id}.json"
    try:  # a stale manifest must never describe the new .npz, even for an instant
        mpath.unlink()
    except FileNotFoundError:
        pass
    data = _npz_bytes(out.arrays)
    npz_name = f"{cell.cell_id}.npz"
    atomic_write(cells_dir / npz_name, data)
    manifest = {
        "format": CELL_FORMAT, "sweep": sweep_name, "cell_id": cell.cell_id,
        "index": list(cell.index), "flat_index": cell.flat, "cell": cell.values,
        "params": cell.params, "seed": cell.seed, "status": "done",
        "scalars": out.scalars,
        "arrays": {n: {"shape": list(a.shape), "dtype": str(a.dtype)} for n, a in out.arrays.items()},
        "npz": {"file": npz_name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        **info,
    }
    atomic_write(mpath, _json_bytes(manifest))
    return manifest


def _write_failure(cells_dir: Path, sweep_name: str, cell: Cell, exc: BaseException) -> dict:
    manifest = {
        "format": CELL_FORMAT, "sweep": sweep_name, "cell_id": cell.cell_id,
        "index": list(cell.index), "flat_index": cell.flat, "cell": cell.values,
        "params": cell.params, "seed": cell.seed, "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        "timestamp": _now(), "hostname": socket.gethostname(),
    }
    atomic_write(cells_dir / f"{cell.cell_id}.json", _json_bytes(manifest))
    return manifest


def _prepare_dir(sweep: Sweep, out: Path) -> Path:
    """Create ``out`` (or check that it holds this very sweep); return the cells directory."""
    definition = sweep.definition()
    sweep_file = out / _SWEEP_FILE
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {str(out)!r} exists and is not a directory")
    if sweep_file.is_file():
        try:
            existing = _read_json(sweep_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"out_dir: cannot read {str(sweep_file)!r} ({exc})") from None
        if not isinstance(existing, dict):
            raise ValueError(f"out_dir: {str(sweep_file)!r} is not a sweep definition")
        diff = [k for k in _DEFINING_KEYS if existing.get(k) != definition[k]]
        if diff:
            details = "; ".join(f"{k}: on disk {_short(existing.get(k))}, now "
                                f"{_short(definition[k])}" for k in diff)
            raise ValueError(f"out_dir: {str(out)!r} holds a different sweep (differs in "
                             f"{', '.join(diff)}: {details}); use a new directory")
    else:
        if out.is_dir():
            # a run killed while writing sweep.json leaves only its .tmp_* file: remove it
            for stale in out.glob(TMP_PREFIX + _SWEEP_FILE + "*"):
                try:
                    stale.unlink()
                except OSError:
                    pass
            if any(out.iterdir()):
                raise ValueError(f"out_dir: {str(out)!r} is not empty and has no {_SWEEP_FILE}; "
                                 f"refusing to write a sweep into it")
        out.mkdir(parents=True, exist_ok=True)
        record = dict(definition, shape=list(sweep.shape), n_cells=sweep.n_cells,
                      created=_now(), hostname=socket.gethostname(), versions=collect_versions())
        atomic_write(sweep_file, _json_bytes(record))
    cells_dir = out / _CELLS_DIR
    cells_dir.mkdir(exist_ok=True)
    return cells_dir


def _short(obj: Any, n: int = 120) -> str:
    s = json.dumps(obj)
    return s if len(s) <= n else s[: n - 3] + "..."


# ----------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------

def _run_cell(task: Task, params: dict, seed: int) -> tuple[TaskOutput, dict]:
    """Run one task (in the worker) and time it; returns (output, run info)."""
    started = _now()
    t0, c0 = time.perf_counter(), time.process_time()
    out = task(params, seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not isinstance(out, TaskOutput):
        raise TypeError(f"task {_task_identity(task)} returned {type(out).__name__}, expected "
                        f"TaskOutput")
    info = {"timing": {"wall_s": wall, "cpu_s": cpu, "started": started, "finished": _now()},
            "hostname": socket.gethostname(), "pid": os.getpid(),
            "platform": platform.platform(), "versions": collect_versions()}
    return out, info


class _Bar:
    """:func:`analysis.progress.progress_bar` (only on a terminal), or a no-op if none."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool) -> None:
        self._bar = progress_bar(total, desc, unit="cell", enabled=None if enabled else False,
                                 initial=initial, leave=True)

    def update(self, k: int) -> None:
        if self._bar is not None:
            self._bar.update(k)

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()


def run_sweep(sweep: Sweep, out_dir: str | os.PathLike, executor: Executor | None = None, *,
              progress: bool = True, max_in_flight: int | None = None,
              on_error: str = "raise", verify: bool = True) -> SweepResult:
    """Run every cell of ``sweep`` that is not already complete in ``out_dir``.

    Parameters
    ----------
    sweep : the :class:`Sweep`.
    out_dir : directory of the sweep; created if missing.  If it already holds a sweep, that
        sweep must have the same definition (name, task, seed, axes, base) or ``ValueError``.
    executor : ``None`` (serial, in this process) or any ``concurrent.futures.Executor``.  The
        caller owns it (it is not shut down here).
    progress : tqdm progress bar on stderr (shown only if stderr is a terminal).
    max_in_flight : at most this many cells submitted to the executor at once (default: all).
    on_error : ``"raise"`` (cancel what has not started, write what has finished, re-raise) or
        ``"record"`` (write a ``failed`` manifest with the traceback and go on; retried on the
        next run).
    verify : check the SHA-256 of existing .npz files (else only their size).

    Returns
    -------
    :class:`SweepResult` of all complete cells (``computed`` lists the flat indices run now).
    """
    if not isinstance(sweep, Sweep):
        raise ValueError(f"sweep: must be a Sweep, got {type(sweep).__name__}")
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error: must be 'raise' or 'record', got {on_error!r}")
    if executor is not None and not isinstance(executor, Executor) and not hasattr(executor,
                                                                                  "submit"):
        raise ValueError(f"executor: must be a concurrent.futures.Executor, got {executor!r}")
    if max_in_flight is not None and (isinstance(max_in_flight, bool)
                                      or not isinstance(max_in_flight, Integral)
                                      or max_in_flight < 1):
        raise ValueError(f"max_in_flight: must be a positive integer or None, got "
                         f"{max_in_flight!r}")
    if executor is not None and not isinstance(executor, ThreadPoolExecutor):
        import pickle
        try:
            pickle.dumps(sweep.task)
        except Exception as exc:
            raise ValueError(f"task: {sweep.task_id} cannot be pickled for the executor ({exc}); "
                             f"use a module-level function and put parameters in base") from None

    out = Path(out_dir)
    cells_dir = _prepare_dir(sweep, out)
    for stale in cells_dir.glob(TMP_PREFIX + "*"):  # debris of a run killed mid-write
        try:
            stale.unlink()
        except OSError:
            pass

    manifests: list[dict | None] = [None] * sweep.n_cells
    failed: dict[int, dict] = {}
    todo: list[Cell] = []
    for cell in sweep.iter_cells():
        status, m = _check_cell(cells_dir, cell, verify)
        if status == "done":
            manifests[cell.flat] = m
        else:
            todo.append(cell)
    computed: list[int] = []

    def finish(cell: Cell, out_info: tuple[TaskOutput, dict]) -> None:
        m = _write_cell(cells_dir, sweep.name, cell, *out_info)
        manifests[cell.flat] = m
        failed.pop(cell.flat, None)
        computed.append(cell.flat)

    def fail(cell: Cell, exc: BaseException) -> None:
        failed[cell.flat] = _write_failure(cells_dir, sweep.name, cell, exc)

    n_done = sweep.n_cells - len(todo)
    with _Bar(sweep.n_cells, n_done, sweep.name, progress) as bar:
        if executor is None:
            for cell in todo:
                try:
                    res = _run_cell(sweep.task, cell.params, cell.seed)
                except Exception as exc:
                    if on_error == "raise":
                        raise
                    fail(cell, exc)
                else:
                    finish(cell, res)
                bar.update(1)
        else:
            _run_on_executor(executor, sweep.task, todo, finish, fail, bar, max_in_flight,
                             on_error)

    return SweepResult(out_dir=out, name=sweep.name, task=sweep.task_id, seed=sweep.seed,
                       axes=sweep.axes, base=sweep.base, cells=tuple(manifests),
                       failed=tuple(failed[k] for k in sorted(failed)),
                       computed=tuple(sorted(computed)))


def _run_on_executor(executor: Executor, task: Task, todo: list[Cell],
                     finish: Callable, fail: Callable, bar: Any, max_in_flight: int | None,
                     on_error: str) -> None:
    pending = iter(todo)
    in_flight: dict[Future, Cell] = {}
    limit = len(todo) if max_in_flight is None else int(max_in_flight)

    def submit_next() -> None:
        cell = next(pending, None)
        if cell is not None:
            in_flight[executor.submit(_run_cell, task, cell.params, cell.seed)] = cell

    try:
        for _ in range(limit):
            submit_next()
        while in_flight:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for fut in done:
                cell = in_flight[fut]
                exc = fut.exception()
                if exc is not None:
                    if on_error == "raise":
                        raise exc
                    fail(cell, exc)
                else:
                    finish(cell, fut.result())
                del in_flight[fut]
                bar.update(1)
                submit_next()
    except BaseException:
        # stop what has not started; keep every result that has already arrived
        for fut in in_flight:
            fut.cancel()
        for fut, cell in list(in_flight.items()):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                try:
                    finish(cell, fut.result())
                except Exception:
                    pass
        raise


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SweepResult(_Grid):
    """The cells of a sweep as found on disk (complete or partial).

    Attributes
    ----------
    out_dir : the sweep directory.
    name, task, seed, axes, base : the definition (``task`` is its ``module.qualname``).
    cells : tuple of length ``n_cells`` in C order: the manifest (dict) of each complete cell,
        ``None`` where the cell is missing or failed.
    failed : manifests of cells whose last run failed (``on_error="record"``).
    computed : flat indices of the cells computed by the ``run_sweep`` call that returned this
        result (empty from :func:`load_sweep`).
    """

    out_dir: Path
    name: str
    task: str
    seed: int
    axes: Mapping[str, np.ndarray]
    base: dict
    cells: tuple
    failed: tuple = ()
    computed: tuple = ()

    @property
    def done(self) -> np.ndarray:
        """Boolean array of shape ``shape``: which cells are complete."""
        return np.array([m is not None for m in self.cells], dtype=bool).reshape(self.shape)

    @property
    def n_done(self) -> int:
        """Number of complete cells."""
        return sum(m is not None for m in self.cells)

    @property
    def complete(self) -> bool:
        """Whether every cell is complete."""
        return self.n_done == self.n_cells

    def manifest(self, index: int | Sequence[int]) -> dict:
        """Manifest of a complete cell (flat or multi-index); ``KeyError`` if it is missing."""
        flat = self._flat_of(index)
        m = self.cells[flat]
        if m is None:
            raise KeyError(f"cell {self.cell(flat).cell_id} (index {index}) is not complete")
        return m

    def scalar(self, name: str) -> np.ndarray:
        """Numeric scalar ``name`` of every cell, as a float array of shape ``shape``.

        NaN where the cell is missing/failed or did not report ``name`` (bools become 0/1,
        ``None`` NaN).  ``KeyError`` if no complete cell reports it; ``ValueError`` if a value
        is not a number.
        """
        out = np.full(self.n_cells, np.nan)
        seen = False
        for flat, m in enumerate(self.cells):
            if m is None or name not in m["scalars"]:
                continue
            seen = True
            v = m["scalars"][name]
            if v is None:
                continue
            if isinstance(v, (list, dict, str)):
                raise ValueError(f"scalar {name!r} of cell {m['cell_id']} is not a number "
                                 f"({type(v).__name__}); save it as an array")
            out[flat] = float(v)
        if not seen:
            raise KeyError(f"no complete cell reports a scalar {name!r}")
        return out.reshape(self.shape)

    def array(self, name: str, index: int | Sequence[int]) -> np.ndarray:
        """Array ``name`` of one cell (flat or multi-index), loaded from its .npz."""
        m = self.manifest(index)
        if name not in m["arrays"]:
            raise KeyError(f"cell {m['cell_id']} has no array {name!r} (has "
                           f"{sorted(m['arrays'])})")
        with np.load(self.out_dir / _CELLS_DIR / m["npz"]["file"], allow_pickle=False) as z:
            return np.array(z[name])

    def stacked(self, name: str, fill: float = np.nan) -> np.ndarray:
        """Array ``name`` of every cell stacked: shape ``shape + array shape`` (float, or the
        common dtype when the sweep is complete), ``fill`` for missing cells.  All cells must
        report ``name`` with the same shape."""
        shapes = {tuple(m["arrays"][name]["shape"]) for m in self.cells
                  if m is not None and name in m["arrays"]}
        if not shapes:
            raise KeyError(f"no complete cell has an array {name!r}")
        if len(shapes) > 1:
            raise ValueError(f"array {name!r} has different shapes across cells: {sorted(shapes)}")
        (shape,) = shapes
        parts = [None if m is None or name not in m["arrays"] else self.array(name, flat)
                 for flat, m in enumerate(self.cells)]
        if all(p is not None for p in parts):
            return np.stack(parts).reshape(self.shape + shape)
        out = np.full((self.n_cells,) + shape, fill, dtype=float)
        for flat, p in enumerate(parts):
            if p is not None:
                out[flat] = p
        return out.reshape(self.shape + shape)

    def __repr__(self) -> str:
        axes = ", ".join(f"{n}[{v.size}]" for n, v in self.axes.items())
        return (f"SweepResult({self.name!r}, axes=({axes}), done={self.n_done}/{self.n_cells}, "
                f"failed={len(self.failed)}, dir={str(self.out_dir)!r})")


def load_sweep(out_dir: str | os.PathLike, *, verify: bool = True) -> SweepResult:
    """Load a finished or partial sweep from ``out_dir`` without running anything.

    Only complete cells (manifest ``done``, matching parameters and seed, .npz of the recorded
    size and, with ``verify``, SHA-256) are included.
    """
    out = Path(out_dir)
    sweep_file = out / _SWEEP_FILE
    if not sweep_file.is_file():
        raise ValueError(f"out_dir: {str(out)!r} has no {_SWEEP_FILE}; not a sweep directory")
    try:
        d = _read_json(sweep_file)
        if d.get("format") != SWEEP_FORMAT:
            raise ValueError(f"unknown format {d.get('format')!r}")
        axes = _axes_from_json(d["axes"])
        res = SweepResult(out_dir=out, name=d["name"], task=d["task"], seed=int(d["seed"]),
                          axes=axes, base=d["base"], cells=())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"out_dir: cannot read the sweep definition {str(sweep_file)!r} "
                         f"({exc})") from None
    cells_dir = out / _CELLS_DIR
    manifests: list[dict | None] = []
    failed = []
    for cell in res.iter_cells():
        status, m = _check_cell(cells_dir, cell, verify)
        manifests.append(m if status == "done" else None)
        if status == "failed":
            failed.append(m)
    object.__setattr__(res, "cells", tuple(manifests))
    object.__setattr__(res, "failed", tuple(failed))
    return res


# ----------------------------------------------------------------------------------------
# labelled arrays (load) and xarray export
# ----------------------------------------------------------------------------------------

#: Suffix pairs that mark two numeric scalars as the bounds of one interval.
_INTERVAL_SUFFIXES = (("_low", "_high"), ("_lo", "_hi"), ("_lower", "_upper"))


def _is_number(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) and not isinstance(v, str)


def _scalar_kind(values: list) -> tuple[str, int]:
    """Kind of one scalar over the cells that report it (``None`` entries ignored):
    ``("number", 0)``, ``("vector", L)`` for numeric lists of one common length L >= 1, or
    ``("object", 0)`` for anything else (strings, dicts, nested or ragged lists, mixtures)."""
    present = [v for v in values if v is not None]
    if all(_is_number(v) for v in present):
        return "number", 0
    if all(isinstance(v, list) and v and all(x is None or _is_number(x) for x in v)
           for v in present):
        lengths = {len(v) for v in present}
        if len(lengths) == 1:
            return "vector", lengths.pop()
    return "object", 0


def _is_interval_vector(name: str) -> bool:
    n = name.lower()
    return n == "ci" or n.endswith("_ci") or n.startswith("ci_") or "interval" in n


@dataclass(frozen=True, eq=False)
class LabelledSweep:
    """A sweep as labelled arrays over its grid (what :func:`load` returns).

    The grid has ``shape = (len(axes[a_1]), ..., len(axes[a_n]))``, C order as in
    :class:`Sweep`.  Only complete cells (manifest ``done`` and a verified .npz, see the module
    docstring) contribute values; every other cell is NaN (numeric) or ``None`` (objects) and
    ``False`` in ``complete``.

    Attributes
    ----------
    name, task, seed, base : the sweep definition (``task`` is its ``module.qualname``).
    axes : ordered mapping axis name -> 1-D array of its values (read-only; int axes stay int).
    values : mapping scalar name -> float64 array.  A scalar that is a number (int, float,
        bool -> 0/1, ``None`` -> NaN) in every cell reporting it has shape ``shape``; a numeric
        list of one common length L in every such cell (e.g. an interval ``[low, high]``) has
        shape ``shape + (L,)``.  NaN where the cell is not complete or did not report it.
        Numbers are exact copies of the manifests' values (ints up to 2**53).
    objects : mapping scalar name -> object array of shape ``shape`` for the other scalars
        (strings, dicts, nested or ragged lists), ``None`` where missing.
    intervals : mapping interval name -> ``(low, high)``, two arrays of ``values`` (same shape):
        from scalar pairs ``X_low``/``X_high`` (also ``_lo``/``_hi``, ``_lower``/``_upper``),
        named ``X``, and from length-2 vectors named ``ci``, ``*_ci``, ``ci_*`` or containing
        ``interval`` (last index 0 = low, 1 = high).  For :func:`analysis.phase.collapse_task`
        sweeps: ``intervals["ci"] == (values["ci_low"], values["ci_high"])``, the Wilson 95%
        interval (ode, montecarlo) or the numerical error bound (separatrix).
    complete : bool array of shape ``shape``: which cells are complete.
    cell_seeds : int64 array of shape ``shape``: each cell's seed (:func:`cell_seed`), for
        every cell, complete or not.
    specs : object array of shape ``shape``: each cell's parameter dict
        ``{**base, axis_1: value_1, ...}`` (what the task receives; for a collapse sweep it
        holds the base ``ProblemSpec`` dict under ``"spec"`` plus the cell's axis values, see
        :func:`analysis.phase.apply_cell`), for every cell, complete or not.
    result : the underlying :class:`SweepResult` (manifests, per-cell arrays via
        ``result.array`` / ``result.stacked``).
    """

    name: str
    task: str
    seed: int
    base: dict
    axes: Mapping[str, np.ndarray]
    values: Mapping[str, np.ndarray]
    objects: Mapping[str, np.ndarray]
    intervals: Mapping[str, tuple[np.ndarray, np.ndarray]]
    complete: np.ndarray
    cell_seeds: np.ndarray
    specs: np.ndarray
    result: SweepResult = field(repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape ``(len(axis_1), ..., len(axis_n))``."""
        return tuple(int(v.size) for v in self.axes.values())

    @property
    def dims(self) -> tuple[str, ...]:
        """Axis names in order (the dimensions of every array)."""
        return tuple(self.axes)

    @property
    def definition(self) -> dict:
        """The JSON sweep definition (format, name, task, seed, axes, base), as in
        ``sweep.json``."""
        return {"format": SWEEP_FORMAT, "name": self.name, "task": self.task,
                "seed": self.seed, "axes": _axes_json(self.axes),
                "base": copy.deepcopy(self.base)}

    @classmethod
    def from_result(cls, res: SweepResult) -> LabelledSweep:
        """Labelled arrays of a :class:`SweepResult` (from :func:`run_sweep` or
        :func:`load_sweep`)."""
        if not isinstance(res, SweepResult):
            raise ValueError(f"res: must be a SweepResult, got {type(res).__name__}")
        shape, n = res.shape, res.n_cells
        names: list[str] = []
        for m in res.cells:
            if m is not None:
                names.extend(k for k in m["scalars"] if k not in names)
        values: dict[str, np.ndarray] = {}
        objects: dict[str, np.ndarray] = {}
        for name in names:
            col = [None if m is None else m["scalars"].get(name) for m in res.cells]
            kind, length = _scalar_kind(col)
            if kind == "number":
                arr = np.full(n, np.nan)
                for flat, v in enumerate(col):
                    if v is not None:
                        arr[flat] = float(v)
                values[name] = arr.reshape(shape)
            elif kind == "vector":
                arr = np.full((n, length), np.nan)
                for flat, v in enumerate(col):
                    if v is not None:
                        arr[flat] = [np.nan if x is None else float(x) for x in v]
                values[name] = arr.reshape(shape + (length,))
            else:
                arr = np.empty(n, dtype=object)
                arr[:] = col
                objects[name] = arr.reshape(shape)
        intervals: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in values:
            for lo_suf, hi_suf in _INTERVAL_SUFFIXES:
                if name.endswith(lo_suf) and len(name) > len(lo_suf):
                    stem = name[: -len(lo_suf)]
                    hi = stem + hi_suf
                    if (hi in values and values[hi].shape == values[name].shape
                            and stem not in intervals):
                        intervals[stem] = (values[name], values[hi])
        for name, arr in values.items():
            if (arr.ndim == len(shape) + 1 and arr.shape[-1] == 2 and _is_interval_vector(name)
                    and name not in intervals):
                intervals[name] = (arr[..., 0], arr[..., 1])
        complete = res.done
        cell_seeds = np.empty(n, dtype=np.int64)
        specs = np.empty(n, dtype=object)
        for cell in res.iter_cells():
            cell_seeds[cell.flat] = cell.seed
            specs[cell.flat] = cell.params
        for arr in (*values.values(), *objects.values(), complete, cell_seeds):
            arr.setflags(write=False)
        specs = specs.reshape(shape)
        specs.setflags(write=False)
        return cls(name=res.name, task=res.task, seed=res.seed, base=copy.deepcopy(res.base),
                   axes=dict(res.axes), values=values, objects=objects, intervals=intervals,
                   complete=complete, cell_seeds=cell_seeds.reshape(shape), specs=specs,
                   result=res)

    def to_xarray(self):
        """The sweep as an ``xarray.Dataset`` (needs the optional dependency xarray).

        Dimensions: the axis names (plus ``<name>_dim`` for a vector scalar ``name``), with the
        axis values as coordinates; data variables: every entry of ``values`` (float64, NaN
        where missing), named as the scalar (``<name>_scalar`` if that would clash with an
        axis or ``cell_complete``); coordinate ``cell_complete`` (bool over the grid).
        ``objects``, ``specs`` and ``cell_seeds`` are not included (the seeds are 63-bit ints,
        which netCDF-3 cannot store; they follow from the definition).  Attributes:
        ``definition``, ``base`` and ``intervals`` as JSON text (``intervals``:
        ``{name: [low variable, high variable]}`` or ``[variable, 0, 1]`` for a vector), and
        ``name``, ``task``, ``seed``, ``format``.  The Dataset can be written with
        ``to_netcdf`` by any backend, netCDF-3 (scipy) included.

        Raises ``ImportError`` naming the extra ``pip install 'mfvi[xarray]'`` if xarray is
        not installed.
        """
        try:
            import xarray as xr
        except ImportError as exc:
            raise ImportError("LabelledSweep.to_xarray needs xarray, an optional dependency of "
                              "mfvi: pip install 'mfvi[xarray]' (or pip install xarray)") from exc
        dims = self.dims
        reserved = set(dims) | {"cell_complete"}
        var_name = {n: (f"{n}_scalar" if n in reserved else n) for n in self.values}
        data_vars = {}
        for name, arr in self.values.items():
            d = dims + ((f"{name}_dim",) if arr.ndim > len(dims) else ())
            data_vars[var_name[name]] = (d, np.array(arr))
        coords: dict[str, Any] = {n: np.array(v) for n, v in self.axes.items()}
        coords["cell_complete"] = (dims, np.array(self.complete))
        intervals_json = {}
        for iname, (lo, hi) in self.intervals.items():
            if iname in self.values:  # a vector [low, high]
                intervals_json[iname] = [var_name[iname], 0, 1]
            else:
                lo_name = next(n for n, a in self.values.items() if a is lo)
                hi_name = next(n for n, a in self.values.items() if a is hi)
                intervals_json[iname] = [var_name[lo_name], var_name[hi_name]]
        attrs = {"format": SWEEP_FORMAT, "name": self.name, "task": self.task,
                 "seed": self.seed, "definition": json.dumps(self.definition),
                 "base": json.dumps(self.base), "intervals": json.dumps(intervals_json)}
        return xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)

    def __repr__(self) -> str:
        axes = ", ".join(f"{n}[{v.size}]" for n, v in self.axes.items())
        return (f"LabelledSweep({self.name!r}, axes=({axes}), values={sorted(self.values)}, "
                f"complete={int(self.complete.sum())}/{self.complete.size})")


def load(out_dir: str | os.PathLike, *, verify: bool = True) -> LabelledSweep:
    """Load the sweep in ``out_dir`` as labelled arrays (:class:`LabelledSweep`).

    ``load(d).values["p"][i, j]`` is the scalar ``p`` of cell ``(i, j)``, at
    ``axes[a_1][i], axes[a_2][j]``; NaN and ``complete[i, j] == False`` where the cell is
    missing, failed or damaged.  Reads the files with :func:`load_sweep` (same checks;
    ``verify``: SHA-256 of every .npz).  ``load(d).to_xarray()`` gives an ``xarray.Dataset``.
    """
    return LabelledSweep.from_result(load_sweep(out_dir, verify=verify))


# ----------------------------------------------------------------------------------------
# example task (tests, documentation)
# ----------------------------------------------------------------------------------------

def _example_task(params: dict, seed: int) -> TaskOutput:
    """Toy task for tests and examples (module-level, hence picklable).

    Draws ``n = params.get("n", 16)`` normals with mean ``params.get("mu", 0)`` and standard
    deviation ``params.get("sigma", 1)`` from ``default_rng(seed)``.  Arrays: ``x`` (n,);
    scalars: ``mean``, ``frac_positive``, ``n``.  If ``params["fail_above"]`` is given and
    ``mu`` exceeds it, raises ``RuntimeError`` (to exercise error handling); with
    ``params["sleep_s"]`` it first sleeps that many seconds (a task slow enough to be killed
    mid-sweep).  The result does not depend on ``sleep_s``.
    """
    mu = float(params.get("mu", 0.0))
    if params.get("sleep_s"):
        time.sleep(float(params["sleep_s"]))
    if params.get("fail_above") is not None and mu > float(params["fail_above"]):
        raise RuntimeError(f"example task asked to fail at mu = {mu}")
    rng = np.random.default_rng(seed)
    x = mu + float(params.get("sigma", 1.0)) * rng.standard_normal(int(params.get("n", 16)))
    return TaskOutput(arrays={"x": x}, scalars={"mean": float(x.mean()),
                                                "frac_positive": float(np.mean(x > 0)),
                                                "n": int(x.size)})
