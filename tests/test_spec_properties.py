"""Property-based tests (hypothesis) of the problem specification, derivations/spec.py.

1. Every valid specification (K, M in 1..4, Gram matrices of random vectors, normalised
   positive weights, either annealing path, every registered schedule family, optional
   initial centres from a joint Gram matrix) round-trips exactly through JSON and dict.
2. Corrupting one field of a valid specification dict (NaN, inf, negative, zero, bool,
   string, wrong length, unknown key, missing required key, ...) raises ValueError whose
   message names the dotted field (``target.weights``, ``schedule.T0``, ...), never TypeError.
3. ``settle_time(tol)`` of every schedule family: ``|beta(t) - beta_final| <= tol`` for all
   t >= settle_time (checked on a grid) and ``> tol`` just before it when settle_time > 0.

No expected number is taken from the code under test: the oracles are the definitions
(Gram = B B^T, weights sum to 1, the band condition on beta(t) evaluated pointwise).
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from derivations.spec import (
    SCHEDULES,
    AnnealingPath,
    ConstantSchedule,
    ExponentialSchedule,
    Initialisation,
    LinearSchedule,
    PiecewiseConstantSchedule,
    ProblemSpec,
    TabulatedSchedule,
    TargetMixture,
    VariationalFamily,
    schedule_from_dict,
)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------------------
# strategies of valid objects
# ----------------------------------------------------------------------------------------

coords = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)
positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
beta_values = st.floats(0.0, 1.0, exclude_min=True, allow_nan=False)
increments = st.floats(1e-3, 10.0, allow_nan=False, allow_infinity=False)


@st.composite
def vectors(draw, n: int) -> np.ndarray:
    """n random vectors in R^D, D in 1..4, as an (n, D) array."""
    D = draw(st.integers(1, 4))
    return np.array(draw(st.lists(st.lists(coords, min_size=D, max_size=D),
                                  min_size=n, max_size=n)), dtype=float).reshape(n, D)


@st.composite
def prob_vectors(draw, n: int) -> list[float]:
    x = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n)))
    return [float(v) for v in x / x.sum()]


@st.composite
def increasing(draw, n: int, start: float) -> list[float]:
    """n strictly increasing times, the first = start + an increment."""
    out, t = [], start
    for dt in draw(st.lists(increments, min_size=n, max_size=n)):
        t = t + dt
        out.append(float(t))
    return out


@st.composite
def schedules(draw, kind: str | None = None):
    kind = kind if kind is not None else draw(st.sampled_from(sorted(SCHEDULES)))
    if kind == "constant":
        return ConstantSchedule(draw(beta_values))
    if kind in ("linear", "exponential"):
        cls = LinearSchedule if kind == "linear" else ExponentialSchedule
        return cls(T0=draw(st.floats(1.0, 1e3)), tau=draw(positive))
    n = draw(st.integers(1, 5))
    betas = draw(st.lists(beta_values, min_size=n, max_size=n))
    if kind == "piecewise":
        return PiecewiseConstantSchedule(betas=tuple(betas),
                                         breakpoints=tuple(draw(increasing(n - 1, 0.0))))
    assert kind == "tabulated", kind
    t0 = draw(st.one_of(st.just(0.0), st.floats(0.0, 5.0)))
    times = [t0] + draw(increasing(n - 1, t0))
    return TabulatedSchedule(times=tuple(times), betas=tuple(betas))


@st.composite
def specs(draw) -> ProblemSpec:
    K, M = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    V = draw(vectors(K + M))                      # rows: K target means, then M centres
    mu, c = V[:K], V[K:]
    weights = draw(prob_vectors(K))
    variance = draw(positive)
    if draw(st.booleans()):
        target = TargetMixture.from_means(mu, weights, variance)
    else:
        target = TargetMixture(gram=mu @ mu.T, weights=weights, variance=variance)
    family = VariationalFamily(
        n_components=M,
        weights=draw(st.one_of(st.none(), prob_vectors(M))),
        variance=draw(positive),
        train_weights=draw(st.booleans()))
    if draw(st.booleans()):
        path = AnnealingPath("geometric", draw(st.one_of(st.none(), positive)))
    else:
        path = AnnealingPath("tempering")
    if draw(st.booleans()):
        init = Initialisation(sigma_init=draw(positive), centre_gram=c @ c.T,
                              centre_overlaps=c @ mu.T)
    else:
        init = Initialisation(sigma_init=draw(positive))
    return ProblemSpec(target=target, family=family, path=path,
                       schedule=draw(schedules()), init=init)


# ----------------------------------------------------------------------------------------
# 1. exact round trip
# ----------------------------------------------------------------------------------------

@settings(max_examples=150, **SETTINGS)
@given(specs())
def test_valid_spec_round_trips_exactly(spec: ProblemSpec) -> None:
    text = spec.to_json()
    back = ProblemSpec.from_json(text)
    assert back == spec
    assert back.to_dict() == spec.to_dict()
    assert back.to_json() == text
    assert ProblemSpec.from_dict(spec.to_dict()) == spec
    assert schedule_from_dict(spec.schedule.to_dict()) == spec.schedule
    # the dict is plain JSON data: no tuples / NumPy scalars left to surprise a consumer
    assert json.loads(text) == spec.to_dict()


@settings(max_examples=60, **SETTINGS)
@given(specs())
def test_valid_spec_stores_what_was_given(spec: ProblemSpec) -> None:
    """Independent checks of the stored numbers against their definitions."""
    T = np.array(spec.target.gram)
    assert np.allclose(T, T.T, atol=1e-12 * max(1.0, np.abs(T).max()))
    assert abs(sum(spec.target.weights) - 1.0) <= 1e-9
    assert abs(sum(spec.family.weights) - 1.0) <= 1e-9
    assert len(spec.target.weights) == spec.target.K
    assert len(spec.family.weights) == spec.family.M
    if spec.path.kind == "geometric":
        assert spec.path.base_variance > 0
    else:
        assert spec.path.base_variance is None


# ----------------------------------------------------------------------------------------
# 2. one corrupted field -> ValueError naming it
# ----------------------------------------------------------------------------------------

DELETE = object()        # marker: remove the key
NAN, INF = float("nan"), float("inf")
BAD_POSITIVE = [NAN, INF, -INF, -1.0, 0.0, -0.0, True, False, "1.0", "abc", None, [1.0], {}]


def _get(d: dict, path: tuple):
    for k in path:
        d = d[k]
    return d


def _entry(value, idx):
    """A copy of nested list ``value`` with entry ``idx`` (tuple of ints) replaced by f(old)."""
    def setter(f):
        v = copy.deepcopy(value)
        node = v
        for i in idx[:-1]:
            node = node[i]
        node[idx[-1]] = f(node[idx[-1]])
        return v
    return setter


def _scalar_cases(path, bad, names):
    return [(path, b, names) for b in bad]


def _prob_vector_cases(path, w, names, required: bool):
    n = len(w)
    e = _entry(w, (0,))
    cases = [(path, e(lambda _: NAN), names), (path, e(lambda _: INF), names),
             (path, e(lambda _: -0.1), names), (path, e(lambda _: 0.0), names),
             (path, w + [0.0], names), (path, w + [1.0], names), (path, [], names),
             (path, [2.0 * x for x in w], names), (path, True, names), (path, "abc", names),
             (path, 0.5, names), (path, [w], names), (path, {"a": 1}, names)]
    if n >= 2:
        cases.append((path, w[:-1], names))
    if required:
        cases += [(path, DELETE, names), (path, None, names)]
    return cases


def _gram_cases(path, g, names, required: bool):
    n = len(g)
    cases = [(path, _entry(g, (0, 0))(lambda _: NAN), names),
             (path, _entry(g, (n - 1, 0))(lambda _: INF), names),
             (path, _entry(g, (0, 0))(lambda _: -1.0), names),          # negative diagonal
             (path, [row[:-1] for row in g], names),                    # not square
             (path, g + [[0.0] * n], names),                            # not square
             (path, [], names), (path, [g], names), (path, 1.0, names), (path, True, names),
             (path, "abc", names), (path, {"a": 1}, names)]
    if n >= 2:
        cases += [(path, _entry(g, (0, 1))(lambda x: x + 1.0), names),  # not symmetric
                  (path, [g[0][:-1]] + g[1:], names)]                   # ragged
    if required:
        cases += [(path, DELETE, names), (path, None, names)]
    return cases


def _beta_list_cases(path, b, names, length_names):
    e = _entry(b, (len(b) - 1,))
    return [(path, e(lambda _: 0.0), names), (path, e(lambda _: -0.2), names),
            (path, e(lambda _: 1.5), names), (path, e(lambda _: NAN), names),
            (path, e(lambda _: INF), names), (path, [], names + length_names),
            (path, b + [0.5], length_names), (path, "abc", names), (path, True, names),
            (path, [b], names), (path, DELETE, names), (path, None, names)]


def _time_list_cases(path, t, names, length_names, strictly_positive):
    cases = [(path, t + [t[-1] + 1.0] if t else [1.0], length_names), (path, "abc", names),
             (path, [t], names), (path, True, names)]
    if t:
        e0 = _entry(t, (0,))
        cases += [(path, e0(lambda _: NAN), names), (path, e0(lambda _: INF), names),
                  (path, e0(lambda _: -1.0), names)]
        if strictly_positive:
            cases.append((path, e0(lambda _: 0.0), names))
    if len(t) >= 2:
        cases += [(path, _entry(t, (1,))(lambda _: t[0]), names),     # not increasing
                  (path, list(reversed(t)), names)]
    return cases


def corruptions(d: dict) -> list[tuple[tuple, object, list[str]]]:
    """Every applicable one-field corruption of the valid spec dict d: (key path, new value
    or DELETE, acceptable field names that the ValueError message must contain)."""
    tgt, fam, path, sch, ini = d["target"], d["family"], d["path"], d["schedule"], d["init"]
    M = fam["n_components"]
    cases: list = []
    # top level
    for sec in ("target", "family", "path", "schedule", "init"):
        cases += [((sec,), DELETE, [f"'{sec}'"]), ((sec,), [], [sec]), ((sec,), "x", [sec]),
                  ((sec,), None, [sec])]
    cases.append((("extra",), {}, ["'extra'"]))
    for sec in ("target", "family", "path", "schedule", "init"):
        cases.append(((sec, "bogus"), 1.0, [f"{sec}.bogus"]))
    # target
    cases += _gram_cases(("target", "gram"), tgt["gram"], ["target.gram"], required=True)
    cases += _prob_vector_cases(("target", "weights"), tgt["weights"], ["target.weights"],
                                required=True)
    cases += _scalar_cases(("target", "variance"), BAD_POSITIVE, ["target.variance"])
    K = len(tgt["gram"])
    if tgt["means"] is None:
        cases += [(("target", "means"), [[9.0]] * K, ["target.means"]),
                  (("target", "means"), [[9.0]] * (K + 1), ["target.means"])]
    else:
        m = tgt["means"]
        cases += [(("target", "means"), _entry(m, (0, 0))(lambda x: x + 100.0), ["target.means"]),
                  (("target", "means"), _entry(m, (0, 0))(lambda _: NAN), ["target.means"]),
                  (("target", "means"), m + [m[0]], ["target.means"]),
                  (("target", "means"), m[0], ["target.means"]),
                  (("target", "means"), "abc", ["target.means"])]
    # family
    cases += _scalar_cases(("family", "n_components"),
                           [0, -1, 2.5, float(M), True, "2", None, NAN, INF, [M], DELETE],
                           ["family.n_components"])
    cases += _prob_vector_cases(("family", "weights"), fam["weights"], ["family.weights"],
                                required=False)
    cases += _scalar_cases(("family", "variance"), BAD_POSITIVE, ["family.variance"])
    cases += _scalar_cases(("family", "train_weights"),
                           [1, 0, 1.0, "true", "false", None, NAN, [True]],
                           ["family.train_weights"])
    # path
    cases += _scalar_cases(("path", "kind"), ["foo", "", "Tempering", None, 1, True, NAN],
                           ["path.kind"])
    if path["kind"] == "tempering":
        cases += _scalar_cases(("path", "base_variance"), [1.0, 0.0, "1", True],
                               ["path.base_variance"])
    else:
        cases += _scalar_cases(("path", "base_variance"),
                               [b for b in BAD_POSITIVE if b is not None], ["path.base_variance"])
    # schedule
    cases += _scalar_cases(("schedule", "kind"), ["foo", "", None, 1, True, NAN, DELETE],
                           ["schedule.kind"])
    kind = sch["kind"]
    if kind == "constant":
        cases += _scalar_cases(("schedule", "beta_value"),
                               [0.0, -0.5, 1.5, 1.0 + 1e-12, NAN, INF, True, "1", None, [1.0]],
                               ["schedule.beta_value"])
    elif kind in ("linear", "exponential"):
        cases += _scalar_cases(("schedule", "T0"),
                               [0.5, 1.0 - 1e-12, 0.0, -2.0, NAN, INF, True, "2", None, [2.0],
                                DELETE], ["schedule.T0"])
        cases += _scalar_cases(("schedule", "tau"),
                               [0.0, -0.0, -1.0, NAN, INF, True, "1", None, [1.0], DELETE],
                               ["schedule.tau"])
    elif kind == "piecewise":
        cases += _beta_list_cases(("schedule", "betas"), sch["betas"], ["schedule.betas"],
                                  ["schedule.breakpoints"])
        cases += _time_list_cases(("schedule", "breakpoints"), sch["breakpoints"],
                                  ["schedule.breakpoints"], ["schedule.breakpoints"],
                                  strictly_positive=True)
        if sch["breakpoints"]:
            cases += [(("schedule", "breakpoints"), DELETE, ["schedule.breakpoints"]),
                      (("schedule", "breakpoints"), sch["breakpoints"][:-1],
                       ["schedule.breakpoints"])]
    else:
        assert kind == "tabulated", kind
        cases += _beta_list_cases(("schedule", "betas"), sch["betas"], ["schedule.betas"],
                                  ["schedule.times", "schedule.betas"])
        cases += _time_list_cases(("schedule", "times"), sch["times"], ["schedule.times"],
                                  ["schedule.times"], strictly_positive=False)
        cases += [(("schedule", "times"), DELETE, ["schedule.times"]),
                  (("schedule", "times"), None, ["schedule.times"])]
    # init
    cases += _scalar_cases(("init", "sigma_init"), BAD_POSITIVE, ["init.sigma_init"])
    # the both-or-neither message is "init.centre_gram: give both centre_gram and centre_overlaps"
    either = ["init.centre_gram", "init.centre_overlaps"]
    if ini["centre_gram"] is None:
        cases += [(("init", "centre_gram"), [[1.0] * M] * M, either),
                  (("init", "centre_overlaps"), [[0.0] * K] * M, either)]
    else:
        cg, co = ini["centre_gram"], ini["centre_overlaps"]
        cases += _gram_cases(("init", "centre_gram"), cg, ["init.centre_gram"], required=False)
        cases += [(("init", "centre_gram"), None, either),
                  (("init", "centre_gram"), [r + [0.0] for r in cg] + [[0.0] * (M + 1)],
                   ["init.centre_gram"]),
                  (("init", "centre_overlaps"), None, either),
                  (("init", "centre_overlaps"), _entry(co, (0, 0))(lambda _: NAN),
                   ["init.centre_overlaps"]),
                  (("init", "centre_overlaps"), [r + [0.0] for r in co],
                   ["init.centre_overlaps"]),
                  (("init", "centre_overlaps"), co + [[0.0] * K], ["init.centre_overlaps"]),
                  (("init", "centre_overlaps"), co[0], ["init.centre_overlaps"]),
                  (("init", "centre_overlaps"), "abc", ["init.centre_overlaps"])]
    return cases


def _apply(d: dict, key: tuple, value) -> dict:
    bad = copy.deepcopy(d)
    parent = _get(bad, key[:-1])
    if value is DELETE:
        del parent[key[-1]]
    else:
        parent[key[-1]] = copy.deepcopy(value)
    return bad


def _assert_names_field(bad: dict, names: list[str], label: str) -> None:
    with pytest.raises(ValueError) as info:     # a TypeError propagates and fails the test
        ProblemSpec.from_dict(bad)
    msg = str(info.value)
    assert any(n in msg for n in names), f"{label}: message {msg!r} names none of {names}"
    try:
        text = json.dumps(bad)
    except (TypeError, ValueError):
        return
    with pytest.raises(ValueError) as info:
        ProblemSpec.from_json(text)
    msg = str(info.value)
    assert any(n in msg for n in names), f"{label} (JSON): message {msg!r} names none of {names}"


@settings(max_examples=400, **SETTINGS)
@given(specs(), st.data())
def test_one_corrupted_field_is_a_value_error_naming_it(spec: ProblemSpec, data) -> None:
    d = spec.to_dict()
    key, value, names = data.draw(st.sampled_from(corruptions(d)), label="corruption")
    _assert_names_field(_apply(d, key, value), names, f"{'.'.join(key)} = {value!r}")


@settings(max_examples=40, **SETTINGS)
@given(specs())
def test_every_listed_corruption_of_one_spec_is_refused(spec: ProblemSpec) -> None:
    """Exhaustive over the corruption list of each drawn spec (the sampled test above
    shrinks better; this one makes sure no listed case goes unexercised)."""
    d = spec.to_dict()
    for key, value, names in corruptions(d):
        _assert_names_field(_apply(d, key, value), names, f"{'.'.join(key)} = {value!r}")


# joint Gram matrix of (target means, centres) not PSD: |c_1 . mu_1| > |c_1| |mu_1|
@settings(max_examples=10, **SETTINGS)
@given(specs())
def test_cauchy_schwarz_violating_overlap_names_centre_overlaps(spec: ProblemSpec) -> None:
    d = spec.to_dict()
    M, K = spec.family.M, spec.target.K
    cg = d["init"]["centre_gram"] or [[0.0] * M for _ in range(M)]
    co = d["init"]["centre_overlaps"] or [[0.0] * K for _ in range(M)]
    co = _entry(co, (0, 0))(lambda _: 1e3)      # |c.mu| <= 36 for coordinates in [-3, 3]^4
    bad = _apply(_apply(d, ("init", "centre_gram"), cg), ("init", "centre_overlaps"), co)
    _assert_names_field(bad, ["init.centre_overlaps", "init.centre_gram"], "overlap 1e3")


@settings(max_examples=10, **SETTINGS)
@given(specs(), st.sampled_from([[], ["linear"], {}, {"a": 1}]))
def test_unhashable_schedule_kind_is_a_value_error(spec: ProblemSpec, kind) -> None:
    bad = _apply(spec.to_dict(), ("schedule", "kind"), kind)
    _assert_names_field(bad, ["schedule.kind"], f"schedule.kind = {kind!r}")


def _numeric_array_fields(d: dict) -> list[tuple]:
    out = [("target", "gram"), ("target", "weights"), ("family", "weights")]
    if d["target"]["means"] is not None:
        out.append(("target", "means"))
    if d["init"]["centre_gram"] is not None:
        out += [("init", "centre_gram"), ("init", "centre_overlaps")]
    if d["schedule"]["kind"] in ("piecewise", "tabulated"):
        out.append(("schedule", "betas"))
    if d["schedule"]["kind"] == "tabulated":
        out.append(("schedule", "times"))
    return out


@settings(max_examples=20, **SETTINGS)
@given(specs(), st.data())
def test_string_entry_in_numeric_array_is_a_value_error(spec: ProblemSpec, data) -> None:
    d = spec.to_dict()
    key = data.draw(st.sampled_from(_numeric_array_fields(d)), label="field")
    value = _get(d, key)
    idx = (0, 0) if isinstance(value[0], list) else (0,)
    bad = _apply(d, key, _entry(value, idx)(repr))        # same number, written as a string
    _assert_names_field(bad, [".".join(key)], f"{'.'.join(key)} with a string entry")


# ----------------------------------------------------------------------------------------
# 3. settle_time: the first time after which beta stays within tol of beta_final
# ----------------------------------------------------------------------------------------

tols = st.floats(1e-6, 0.5, exclude_min=True, exclude_max=True)
ROUNDING = 1e-12        # beta(t) at t = settle_time equals the band edge only to rounding


def _deviation(sched, t) -> np.ndarray:
    return np.abs(np.asarray(sched.beta(np.asarray(t, dtype=float))) - sched.beta_final)


def _well_conditioned(sched, tol: float) -> bool:
    """No beta level of the schedule within 1e-9 of the band edge |beta - beta_final| = tol
    (there the first crossing is decided by rounding, not by the schedule)."""
    if isinstance(sched, (PiecewiseConstantSchedule, TabulatedSchedule)):
        levels = sched.betas
    else:
        levels = (float(sched.beta(0.0)),)
    return all(abs(abs(b - sched.beta_final) - tol) > 1e-9 for b in levels)


@settings(max_examples=300, **SETTINGS)
@given(st.data(), st.sampled_from(sorted(SCHEDULES)), tols)
def test_settle_time_is_the_first_time_beta_stays_in_the_band(data, kind: str,
                                                             tol: float) -> None:
    sched = data.draw(schedules(kind), label="schedule")
    assume(_well_conditioned(sched, tol))
    ts = sched.settle_time(tol)
    assert isinstance(ts, float) and math.isfinite(ts) and ts >= 0.0
    # after: on a grid from ts to far beyond every time scale of the schedule
    scale = max(1.0, ts)
    after = np.concatenate([[ts, np.nextafter(ts, math.inf)],
                            ts + scale * np.logspace(-12, 4, 200),
                            ts + np.linspace(0.0, 10.0 * scale, 101)])
    dev = _deviation(sched, after)
    assert np.all(dev <= tol + ROUNDING), (ts, after[dev > tol + ROUNDING][:3],
                                          dev[dev > tol + ROUNDING][:3])
    # just before: outside the band (settle_time is the *first* such time)
    # (on the last piece of the schedule before ts: between the previous knot and ts,
    # where beta is constant or linear in t, so 1e-4 of the way back is resolvable)
    if ts > 0.0:
        knots = [0.0] + [float(k) for k in _knots(sched) if k < ts]
        before = np.array([ts - f * (ts - max(knots)) for f in (1e-4, 1e-2, 0.5)])
        assert np.all(_deviation(sched, before) > tol), (ts, before, _deviation(sched, before))


def _knots(sched) -> tuple[float, ...]:
    if isinstance(sched, PiecewiseConstantSchedule):
        return sched.breakpoints
    if isinstance(sched, TabulatedSchedule):
        return sched.times
    return ()


@settings(max_examples=100, **SETTINGS)
@given(st.data(), st.sampled_from(sorted(SCHEDULES)), tols)
def test_settle_time_is_monotone_in_tol(data, kind: str, tol: float) -> None:
    """A wider band is entered no later: tol1 < tol2 => settle_time(tol1) >= settle_time(tol2)."""
    sched = data.draw(schedules(kind), label="schedule")
    tol2 = data.draw(st.floats(tol, 0.5, exclude_max=True), label="tol2")
    assert sched.settle_time(tol) >= sched.settle_time(tol2) - 1e-12 * max(1.0, sched.settle_time(tol))


@settings(max_examples=50, **SETTINGS)
@given(st.data(), st.sampled_from(sorted(SCHEDULES)),
       st.sampled_from([NAN, INF, -INF, -1e-9, 1.0, 1.5, True, "0.1", None, [0.1]]))
def test_settle_time_refuses_bad_tol(data, kind: str, bad) -> None:
    sched = data.draw(schedules(kind), label="schedule")
    with pytest.raises(ValueError, match="beta_tol"):
        sched.settle_time(bad)
