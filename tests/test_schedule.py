"""solvers.schedule: the compiled beta(t) against the NumPy schedules of derivations.spec."""

import math

import numpy as np
import pytest

from derivations.spec import (
    SCHEDULE_CODES,
    ConstantSchedule,
    ExponentialSchedule,
    LinearSchedule,
    PiecewiseConstantSchedule,
    TabulatedSchedule,
)
from solvers.schedule import beta_at, schedule_end_time, schedule_kinks

SCHEDULES = [
    ConstantSchedule(1.0),
    ConstantSchedule(0.37),
    LinearSchedule(20.0, 100.0),
    LinearSchedule(1.0, 5.0),
    LinearSchedule(3.5, 0.25),
    ExponentialSchedule(20.0, 100.0),
    ExponentialSchedule(1.0, 3.0),
    ExponentialSchedule(1000.0, 0.5),
    PiecewiseConstantSchedule((1.0,)),
    PiecewiseConstantSchedule((0.1, 0.5, 1.0), (10.0, 20.0)),
    PiecewiseConstantSchedule((0.2, 0.9), (3.0,)),
    PiecewiseConstantSchedule((0.05, 0.1, 0.2, 0.4, 0.8, 1.0), (1.0, 2.0, 4.0, 8.0, 16.0)),
    TabulatedSchedule((0.0,), (0.3,)),
    TabulatedSchedule((0.0, 10.0), (0.1, 1.0)),
    TabulatedSchedule((2.0, 3.0, 7.5, 8.0, 50.0), (0.05, 0.5, 0.5, 0.9, 1.0)),
    TabulatedSchedule((0.0, 1.0, 2.0, 3.0), (1.0, 0.5, 0.25, 1.0)),
]


def _times(schedule):
    t = list(np.linspace(-5.0, 200.0, 2001)) + [0.0, 1e-300, -1e-300, 1e6, -1e6]
    # the schedule's own special times, and points next to them
    code, params = schedule.encode()
    for tk in schedule_kinks(code, params):
        t += [tk, np.nextafter(tk, -np.inf), np.nextafter(tk, np.inf), tk - 1e-9, tk + 1e-9]
    if code in (SCHEDULE_CODES["linear"], SCHEDULE_CODES["exponential"]):
        tau = params[1]
        t += list(np.linspace(0.0, 10 * tau, 501))
    return np.array(t)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: repr(s))
def test_beta_at_matches_numpy(schedule):
    code, params = schedule.encode()
    params = np.ascontiguousarray(params, dtype=float)
    t = _times(schedule)
    ref = np.asarray(schedule.beta(t), dtype=float)
    got = np.array([beta_at(float(x), code, params) for x in t])
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, ref, rtol=2e-15, atol=0)
    assert np.all((got > 0) & (got <= 1))


def test_piecewise_is_right_continuous_at_breakpoints():
    s = PiecewiseConstantSchedule((0.1, 0.5, 1.0), (10.0, 20.0))
    code, params = s.encode()
    assert beta_at(10.0, code, params) == 0.5
    assert beta_at(np.nextafter(10.0, 0.0), code, params) == 0.1
    assert beta_at(20.0, code, params) == 1.0
    assert beta_at(-3.0, code, params) == 0.1


def test_unknown_code_gives_nan():
    assert math.isnan(beta_at(1.0, 99, np.array([1.0])))


def test_schedule_kinks():
    assert schedule_kinks(*ConstantSchedule(0.5).encode()).size == 0
    assert schedule_kinks(*ExponentialSchedule(20, 100).encode()).size == 0
    np.testing.assert_array_equal(schedule_kinks(*LinearSchedule(20, 100).encode()), [100.0])
    np.testing.assert_array_equal(
        schedule_kinks(*PiecewiseConstantSchedule((0.1, 0.5, 1.0), (10.0, 20.0)).encode()),
        [10.0, 20.0])
    np.testing.assert_array_equal(
        schedule_kinks(*TabulatedSchedule((2.0, 3.0, 7.5), (0.1, 0.5, 1.0)).encode()),
        [2.0, 3.0, 7.5])


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: repr(s))
@pytest.mark.parametrize("tol", [0.0, 1e-12, 1e-3, 0.3])
def test_schedule_end_time(schedule, tol):
    t_end = schedule_end_time(schedule, tol)
    thr = 1.0 - tol
    if math.isinf(t_end):
        if isinstance(schedule, ExponentialSchedule):
            assert tol == 0.0 and schedule.T0 > 1.0  # beta only tends to 1
        else:
            # beta stays below the threshold for ever (constant last stage)
            assert schedule.beta(1e9) < thr
        return
    # beta >= thr from t_end on (up to rounding at t_end itself) ...
    # (1 - beta is computed with absolute rounding ~1e-16, hence the wider margin when beta
    # only approaches 1 asymptotically)
    margin = 1e-3 * schedule.tau if isinstance(schedule, ExponentialSchedule) else 1e-12
    after = t_end * (1 + 1e-9) + margin + np.concatenate([[0.0], np.geomspace(1e-6, 1e6, 200)])
    assert np.all(np.asarray(schedule.beta(after)) >= thr)
    # ... and not just before
    if t_end > 0:
        assert schedule.beta(t_end * (1 - 1e-9) - margin) < thr


def test_schedule_end_time_exponential_formula():
    s = ExponentialSchedule(20.0, 100.0)
    tol = 1e-12
    t = schedule_end_time(s, tol)
    # 1 - 1/(1 + 19 e^{-t/100}) = 1e-12  <=>  t = 100 log(19 (1 - tol) / tol)
    assert t == pytest.approx(100 * math.log(19 * (1 - tol) / tol), rel=1e-14)
    with pytest.raises(ValueError, match="beta_tol"):
        schedule_end_time(s, 1.5)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: repr(s))
@pytest.mark.parametrize("tol", [1e-6, 1e-3, 0.05, 0.3])
def test_settle_time_against_a_scan(schedule, tol):
    """settle_time(tol): |beta - beta_final| <= tol from then on, and not just before.

    The reference is a direct scan of the NumPy beta(t) on a fine grid, independent of the
    closed forms in the classes."""
    t_s = schedule.settle_time(tol)
    bf = schedule.beta_final
    assert math.isfinite(t_s) and t_s >= 0
    after = t_s + np.concatenate([[1e-9 * max(1.0, t_s)], np.geomspace(1e-6, 1e6, 400)])
    assert np.all(np.abs(np.asarray(schedule.beta(after)) - bf) <= tol * (1 + 1e-9))
    if t_s > 0:
        before = t_s * (1 - 1e-7) - 1e-9
        assert abs(schedule.beta(before) - bf) > tol


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: repr(s))
def test_registry_round_trip_and_codes(schedule):
    from derivations.spec import SCHEDULE_CODES, SCHEDULES, schedule_from_dict
    assert SCHEDULES[schedule.kind] is type(schedule)
    assert schedule.encode()[0] == SCHEDULE_CODES[schedule.kind] == type(schedule).code
    assert schedule_from_dict(schedule.to_dict()) == schedule
    assert len(set(SCHEDULE_CODES.values())) == len(SCHEDULE_CODES)


def test_a_new_family_is_one_class():
    """The worked example of the README: a schedule family added by subclassing alone
    registers itself (JSON, settle time, spec validation); its compiled twin is a branch of
    solvers.schedule.beta_at (here it has none, so beta_at returns NaN: the test shows the
    contract, it does not ship a family), and the solvers refuse to encode it."""
    from dataclasses import dataclass
    from typing import ClassVar

    from derivations.spec import SCHEDULES, ScheduleBase, schedule_from_dict, symmetric_bimodal

    @dataclass(frozen=True)
    class HalfThenOne(ScheduleBase):
        switch: float = 1.0
        kind: ClassVar[str] = "test-half-then-one"
        code: ClassVar[int] = 901

        def beta(self, t):
            return np.where(np.asarray(t, dtype=float) < self.switch, 0.5, 1.0)[()]

        def params(self):
            return np.array([self.switch])

        def settle_time(self, beta_tol):
            return 0.0 if beta_tol >= 0.5 else self.switch

    try:
        s = HalfThenOne(3.0)
        assert schedule_from_dict(s.to_dict()) == s
        assert s.t_final == 3.0
        spec = symmetric_bimodal(4.0, s)
        assert spec.schedule is s
        assert math.isnan(beta_at(1.0, *s.encode()))
        # ... and a solver refuses to integrate with it rather than produce NaN
        from solvers.integrate import encode_schedule
        with pytest.raises(ValueError, match="schedule: code 901 .*no compiled twin"):
            encode_schedule(s)
        with pytest.raises(ValueError, match="new integer code"):
            @dataclass(frozen=True)
            class Clash(ScheduleBase):
                kind: ClassVar[str] = "test-clash"
                code: ClassVar[int] = 901
    finally:
        SCHEDULES.pop("test-half-then-one", None)
        from derivations.spec import SCHEDULE_CODES
        SCHEDULE_CODES.pop("test-half-then-one", None)
