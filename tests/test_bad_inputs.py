"""Every command refuses bad input with exit status 2 and one line naming the parameter,
never a traceback (table-driven, real subprocesses); and the library API the same way."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

# (argv after `mfvi`, a word the message must contain).  Each line is a class of bad input.
CASES = [
    # non-finite numbers, everywhere a number is read
    ("collapse --method separatrix --d 1000 --A nan", "--A"),
    ("collapse --method separatrix --A inf", "--A"),
    ("collapse --method separatrix --sigma-init nan", "--sigma-init"),
    ("collapse --method separatrix --T0 nan", "--T0"),
    ("collapse --method separatrix --tau inf", "--tau"),
    ("collapse --method separatrix --schedule constant --beta nan", "--beta"),
    ("collapse --method separatrix --t-end nan", "--t-end"),
    ("montecarlo --d 100 --seeds 4 --schedule constant --t-end 20 --eta nan", "--eta"),
    ("montecarlo --d 100 --seeds 4 --schedule constant --t-end 20 --eta inf", "--eta"),
    # an SGD step above the stability bound 2/L (L >= 1/(4 s) = 1/4 at s = 1): refused
    ("montecarlo --d 10 --seeds 2 --t-end 1 --eta 9", "eta"),
    ("collapse --method montecarlo --d 10 --draws 2 --t-end 1 --eta 9", "eta"),
    # out of the domain
    ("collapse --method separatrix --A -1", "--A"),
    ("collapse --method separatrix --schedule constant --beta 2", "beta"),
    ("collapse --method separatrix --schedule exponential --T0 0.5", "T0"),
    ("collapse --method separatrix --d 0", "--d"),
    ("collapse --method ode --draws 0", "--draws"),
    ("fixed-points --continue beta 0 1", "beta"),
    ("fixed-points --continue beta 0.5 2", "--continue STOP"),
    ("fixed-points --continue A -1 5", "A"),
    ("fixed-points --continue s 0 2", "s"),
    ("fixed-points --seed -1", "--seed"),
    ("fixed-points --beta 1.5", "beta"),
    ("fixed-points --continue bogus 0 1", "bogus"),
    # options that do not belong to the method, unknown choices
    ("collapse --method separatrix --eta 0.1", "--eta"),
    ("collapse --method bogus", "--method"),
    ("collapse --method linear --n-times 1", "n_times"),
    # schedules from the command line
    ("collapse --method separatrix --schedule piecewise", "--stages"),
    ("collapse --method separatrix --schedule piecewise --stages 5:0.5", "stages"),
    ("collapse --method separatrix --schedule piecewise --stages 0:x", "--stages"),
    ("collapse --method separatrix --schedule tabulated --table /nonexistent.csv", "table"),
    # --spec files
    ("collapse --method separatrix --spec /nonexistent.json", "--spec"),
    ("collapse --method separatrix --spec {badjson}", "--spec"),
    ("collapse --method separatrix --spec {badfield}", "family.bogus"),
    # output paths
    ("collapse --method separatrix --out {dir}", "--out"),
    ("montecarlo --d 10 --seeds 2 --t-end 1 --out {dir}", "--out"),
    ("fixed-points --continue beta 0.5 1 --plot {dir}/x.bogus", "--plot"),
    ("fixed-points --continue beta 0.5 1 --plot {dir}", "--plot"),
    ("reproduce --out {file}", "--out"),
    ("phase-diagram --axis T0=1,2 --out {file}", "--out"),
    # phase-diagram axes
    ("phase-diagram --axis T0= --out {dir}/s", "--axis"),
    ("phase-diagram --axis T0=2:4:0 --out {dir}/s", "--axis"),
    ("phase-diagram --axis T0=1,2 --A -1 --out {dir}/s", "--A"),
    ("phase-diagram --axis T0=1,nan --out {dir}/s", "--axis"),
    ("phase-diagram --axis bogus=1,2 --out {dir}/s", "bogus"),
    ("phase-diagram --axis T0=1,2 --axis T0=3 --out {dir}/s", "--axis"),
    # absurd cost: refused up front with the estimate
    ("collapse --method ode --d 1000 --draws 1000000000", "memory"),
    ("montecarlo --d 1000000000 --seeds 4", "d"),
    ("montecarlo --d 100 --seeds 1000000000", "seeds"),
    ("montecarlo --d 100 --seeds 4 --n 1000000000", "n"),
    ("montecarlo --d 100 --seeds 4 --t-end 1e12", "t_end"),
    ("fixed-points --starts 10000000", "--starts"),
    ("phase-diagram --axis T0=1:100:1000000 --out {dir}/s", "--axis"),
    ("phase-diagram --axis T0=1:100:1000 --axis tau=1:100:100 --out {dir}/s", "cells"),
    # the separatrix formula outside its derivation
    ("collapse --method separatrix --trainable-weights", "spec"),
    ("derive --preset symmetric-bimodal --K 3", "--preset"),
    ("reproduce --only bogus", "--only"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    f = root / "a_file"
    f.write_text("x")
    bad = root / "bad.json"
    bad.write_text("{not json")
    import json

    from derivations.spec import symmetric_bimodal
    d = symmetric_bimodal(9.0).to_dict()
    d["family"]["bogus"] = 1
    field = root / "field.json"
    field.write_text(json.dumps(d))
    return {"dir": str(root), "file": str(f), "badjson": str(bad), "badfield": str(field)}


def _run(argv: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", **(env_extra or {})}
    env.pop("MFVI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "analysis.cli", *argv], capture_output=True,
                          text=True, timeout=240, env=env)


@pytest.mark.parametrize("line, word", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line_exits_2_with_one_line(line, word, places):
    proc = _run(line.format(**places).split())
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], err[-2000:])
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert word in lines[0], lines[0]


def test_cache_dir_naming_a_file_is_refused(places):
    proc = _run("fixed-points --beta 1".split(), {"MFVI_CACHE_DIR": places["file"]})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "MFVI_CACHE_DIR" in proc.stderr


def test_out_in_a_missing_directory_is_created(tmp_path):
    """collapse --out into a directory that does not exist: created, as phase-diagram does."""
    out = tmp_path / "nodir" / "x" / "y.json"
    proc = _run(["collapse", "--method", "linear", "--schedule", "constant", "--d", "1000",
                 "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert out.is_file()


def test_spec_file_round_trip_and_overrides(tmp_path):
    """`mfvi spec` writes a file every command reads; options override its fields."""
    import json

    from derivations.spec import ProblemSpec, symmetric_bimodal
    path = tmp_path / "s.json"
    proc = _run(["spec", "--A", "4", "--schedule", "piecewise", "--stages", "0:0.2,10:0.5,30:1",
                 "--out", str(path)])
    assert proc.returncode == 0, proc.stderr
    spec = ProblemSpec.from_json(path.read_text())
    assert spec.target.T[0, 0] == 4.0
    assert spec.schedule.betas == (0.2, 0.5, 1.0) and spec.schedule.breakpoints == (10.0, 30.0)
    proc = _run(["spec", "--spec", str(path), "--A", "16", "--s", "2", "--sigma-init", "0.5"])
    assert proc.returncode == 0, proc.stderr
    spec2 = ProblemSpec.from_json(proc.stdout)
    assert spec2.target.T[0, 0] == 16.0 and spec2.target.T[0, 1] == -16.0
    assert spec2.family.variance == 2.0 and spec2.init.sigma_init == 0.5
    assert spec2.schedule == spec.schedule          # not overridden: kept from the file
    table = tmp_path / "t.csv"
    table.write_text("t,beta\n0,0.1\n5,0.5\n20,1\n")
    proc = _run(["spec", "--schedule", "tabulated", "--table", str(table)])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schedule"] == {"kind": "tabulated",
                                                   "times": [0.0, 5.0, 20.0],
                                                   "betas": [0.1, 0.5, 1.0]}
    assert ProblemSpec.from_json(_run(["spec"]).stdout) == symmetric_bimodal(9.0).replace(
        schedule=symmetric_bimodal(9.0).schedule)


# ----------------------------------------------------------------------------------------
# the library API
# ----------------------------------------------------------------------------------------

def _api_cases():
    from analysis.collapse import collapse_probability as cp
    from derivations.spec import (
        AnnealingPath,
        ExponentialSchedule,
        ProblemSpec,
        TargetMixture,
        VariationalFamily,
        schedule_from_dict,
        symmetric_bimodal,
    )
    sb = symmetric_bimodal(9.0)
    far = ProblemSpec(TargetMixture([[9, -9], [-9, 9]], [0.5, 0.5], variance=0.1),
                      VariationalFamily(2, variance=10.0), schedule=ExponentialSchedule(20, 100))
    return [
        (lambda: ExponentialSchedule(T0=2), "schedule.tau"),
        (lambda: schedule_from_dict({"kind": "linear", "T0": 2}), "schedule.tau"),
        (lambda: schedule_from_dict({"kind": "linear", "T0": 2, "tau": 1, "extra": 0}),
         "schedule.extra"),
        (lambda: symmetric_bimodal(True), "A"),
        (lambda: symmetric_bimodal("9"), "A"),
        (lambda: cp(sb, 1000, "separatrix", n_eps=3), "n_eps"),
        (lambda: cp(sb, 1000, "linear", n_times=1), "n_times"),
        (lambda: cp(sb, 1000, "ode", rtol=math.nan), "rtol"),
        (lambda: cp(sb, 1000, "ode", draws=10**9), "memory"),
        (lambda: cp(sb, 1000, "bogus"), "method"),
        (lambda: cp(sb.replace(family=VariationalFamily(2, train_weights=True)), 1000,
                    "separatrix"), "spec"),
        (lambda: cp(far, 1000, "separatrix", n_eps_per_decade=3), "spec"),
        (lambda: cp(far, 1000, "linear"), "spec"),
        (lambda: cp(sb.replace(path=AnnealingPath("geometric", 1.0)), True), "d"),
    ]


def test_api_bad_inputs_are_value_errors_naming_the_parameter():
    for make, word in _api_cases():
        with pytest.raises(ValueError) as info:
            make()
        assert word in str(info.value), str(info.value)
