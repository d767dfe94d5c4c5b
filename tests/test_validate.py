"""The shared scalar validators (analysis.validate) and the progress meter (analysis.progress)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.progress import progress_bar
from analysis.validate import finite_float, fraction, positive_float, positive_int

NOT_NUMBERS = [True, False, np.bool_(True), "3", b"3", None, [1], 1j]


@pytest.mark.parametrize("bad", NOT_NUMBERS + [float("nan"), float("inf"), -float("inf"),
                                              1.5, 1.0, 0, -2])
def test_positive_int_refuses(bad):
    with pytest.raises(ValueError, match=r"^seeds: must be an integer >= 1, got "):
        positive_int("seeds", bad)


def test_positive_int_accepts():
    assert positive_int("n", 3) == 3 and type(positive_int("n", np.int64(3))) is int
    assert positive_int("seed", 0, minimum=0) == 0
    with pytest.raises(ValueError, match="seed: must be an integer >= 0"):
        positive_int("seed", -1, minimum=0)


@pytest.mark.parametrize("fn", [finite_float, positive_float, fraction])
@pytest.mark.parametrize("bad", NOT_NUMBERS + [float("nan"), float("inf"), -float("inf"),
                                              np.float64("nan")])
def test_float_validators_refuse(fn, bad):
    with pytest.raises(ValueError, match=r"^eta: must be "):
        fn("eta", bad)


def test_float_validators_ranges():
    assert finite_float("x", -3) == -3.0 and type(finite_float("x", np.float32(2))) is float
    assert positive_float("eta", 0.5) == 0.5
    with pytest.raises(ValueError, match="> 0"):
        positive_float("eta", 0.0)
    assert positive_float("eta", 0.0, allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        positive_float("eta", -1e-300, allow_zero=True)
    assert fraction("p", 0) == 0.0 and fraction("p", 1) == 1.0
    for bad in (-1e-12, 1 + 1e-12):
        with pytest.raises(ValueError, match=r"p: must be a number in \[0, 1\]"):
            fraction("p", bad)
    assert math.isclose(fraction("p", np.float64(0.25)), 0.25)


def test_progress_bar():
    assert progress_bar(10, "x", enabled=False) is None
    bar = progress_bar(10, "x", enabled=True)       # forced even when stderr is no terminal
    assert bar is not None
    bar.update(3)
    assert bar.n == 3
    bar.close()


def test_sizes_in_messages():
    from analysis.validate import format_bytes, format_seconds
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2 ** 30) == "3 GiB"
    assert format_bytes(2 ** 60) == "1.02e+03 PiB"
    assert format_seconds(90) == "90 s"
    assert format_seconds(600) == "10 min"
    assert format_seconds(7200) == "2 h"
    assert format_seconds(10 * 86400) == "10 days"


def test_code_registry_rules():
    from dataclasses import dataclass

    from analysis.registry import CodeRegistry

    @dataclass(frozen=True)
    class Entry:
        name: str
        code: int

    reg = CodeRegistry("thing", Entry)
    a = reg.register(Entry("a", 0))
    assert reg.register(Entry("a", 0)) is not None and list(reg) == ["a"]
    assert reg.lookup("a") is a and reg.lookup(a) is a
    with pytest.raises(ValueError, match="thing: 'a' is registered already"):
        reg.register(Entry("a", 1))
    with pytest.raises(ValueError, match="thing: code 0 is taken"):
        reg.register(Entry("b", 0))
    with pytest.raises(ValueError, match="thing: must be an Entry"):
        reg.register(("c", 2))
    with pytest.raises(ValueError, match=r"thing: must be one of \('a',\), got 'z'"):
        reg.lookup("z")
    with pytest.raises(ValueError, match="thing: must be one of"):
        reg.lookup(["a"])
