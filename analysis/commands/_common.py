"""Argument helpers shared by the subcommands: the problem (``--spec`` or a preset with
overrides), schedules from the schedule registry, estimator options from the estimator
registry, output paths, the cost guard."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

PRESETS = ("symmetric-bimodal", "orthogonal", "simplex")
# the spec module is plain Python + NumPy: cheap to import for the choices of the flags
from derivations.spec import OBJECTIVE_PATHS, OBJECTIVES, PATHS, VARIANCES  # noqa: E402

#: Figure formats ``--plot`` accepts (matplotlib's raster and vector writers).
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".eps", ".ps", ".jpg", ".jpeg")


class CommandError(ValueError):
    """A bad command-line value: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------------------
# argparse types: they reject NaN and inf at the door (the spec would too, but naming the flag)
# ----------------------------------------------------------------------------------------

def finite_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return x


def positive_float(text: str) -> float:
    x = finite_float(text)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return x


def _integer(text: str, minimum: int) -> int:
    try:
        x = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if isinstance(x, float):
        if not (math.isfinite(x) and x.is_integer()):
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}")
        x = int(x)
    if x < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text!r}")
    return x


def positive_int(text: str) -> int:
    """An integer >= 1 (``1e6`` accepted)."""
    return _integer(text, 1)


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    return _integer(text, 0)


# ----------------------------------------------------------------------------------------
# the problem
# ----------------------------------------------------------------------------------------

def add_problem_arguments(p: argparse.ArgumentParser, schedule_default: str = "constant") -> None:
    """--spec, --preset and the overrides of the problem; the schedule options."""
    from derivations.spec import SCHEDULES
    g = p.add_argument_group("problem (--spec FILE, or a preset; the options override it)")
    g.add_argument("--spec", default=None, metavar="FILE.json",
                   help="problem specification in the ProblemSpec.to_json format (write one "
                        "with `mfvi spec`); the options below override its fields")
    g.add_argument("--preset", choices=PRESETS, default=None,
                   help="problem preset (default symmetric-bimodal unless --spec, or "
                        "orthogonal if --K or --M is given other than 2); "
                        "orthogonal: K orthogonal modes T = A I; simplex: K equiangular "
                        "centred modes; both with --K modes and --M components")
    g.add_argument("--K", type=positive_int, default=None,
                   help="number of target modes of the orthogonal / simplex presets (default 2)")
    g.add_argument("--M", type=positive_int, default=None,
                   help="number of components of the orthogonal / simplex presets (default K)")
    g.add_argument("--A", type=positive_float, default=None,
                   help="|mu_1|^2: the preset's, or the target Gram matrix of --spec rescaled "
                        "so that T_11 = A (default 9)")
    g.add_argument("--Delta", type=positive_float, default=None,
                   help="target variance Delta (default 1)")
    g.add_argument("--s", type=positive_float, default=None,
                   help="component variance s (default 1)")
    g.add_argument("--sigma-init", type=positive_float, default=None,
                   help="initialisation scale: m_k(0) ~ N(0, sigma_init^2/d I) (default 1)")
    g.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="objective: reverse-kl KL(q || p_beta) or forward-kl KL(p_beta || q) "
                        "(default reverse-kl, or that of --spec)")
    g.add_argument("--path", choices=PATHS, default=None,
                   help="annealing path: tempering or geometric for the reverse KL (default "
                        "tempering); inflation (p_beta = sum_a pi_a N(mu_a, Delta/beta I)) or "
                        "mixture (p_beta = beta p + (1 - beta) p0) for the forward KL "
                        "(default inflation)")
    g.add_argument("--sigma0-sq", type=positive_float, default=None,
                   help="base variance sigma0^2 of the geometric and mixture paths (default 1)")
    g.add_argument("--trainable-weights", action="store_true", default=None,
                   help="train the mixture weights")
    g.add_argument("--variances", choices=VARIANCES, default=None,
                   help="component variance: fixed (s, the default), tied (one common "
                        "variance trained through log s, starting at s), adiabatic (s at its "
                        "instantaneous optimum) or per-component (mfvi montecarlo only: one "
                        "variance s_k per component, each trained through log s_k)")
    g.add_argument("--trainable-variances", action="store_true", default=None,
                   help="train the variance: the same as --variances tied")
    s = p.add_argument_group("schedule")
    s.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                   help=f"annealing schedule (default {schedule_default}, or that of --spec)")
    s.add_argument("--beta", type=finite_float, default=1.0,
                   help="beta of the constant schedule (default 1)")
    s.add_argument("--T0", type=finite_float, default=20.0,
                   help="initial temperature (linear, exponential; default 20)")
    s.add_argument("--tau", type=finite_float, default=100.0,
                   help="time scale (linear, exponential; default 100)")
    s.add_argument("--stages", default=None, metavar="T:BETA,...",
                   help='piecewise: start time and beta of each stage, e.g. "0:0.2,10:0.5,30:1"')
    s.add_argument("--table", default=None, metavar="FILE.csv",
                   help="tabulated: CSV file of two columns t, beta (linear interpolation)")
    p.set_defaults(_schedule_default=schedule_default)


def _stages(text: str) -> list[tuple[float, float]]:
    out = []
    for item in text.split(","):
        if item.strip() == "":
            continue
        parts = item.split(":")
        if len(parts) != 2:
            raise CommandError(f"--stages: each stage is START:BETA, got {item!r}")
        try:
            out.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise CommandError(f"--stages: not numbers: {item!r}") from None
    return out


def schedule_from_args(args: argparse.Namespace, kind: str) -> Any:
    """The schedule ``kind`` built from the schedule options (registry classes: each field is
    read from the option of the same name; ``beta_value`` from --beta; the piecewise schedule
    from --stages, the tabulated one from --table)."""
    from derivations.spec import SCHEDULES, PiecewiseConstantSchedule, TabulatedSchedule
    cls = SCHEDULES[kind]
    if cls is PiecewiseConstantSchedule:
        if not args.stages:
            raise CommandError("--stages: the piecewise schedule needs --stages T:BETA,...")
        return cls.from_stages(_stages(args.stages))
    if cls is TabulatedSchedule:
        if not args.table:
            raise CommandError("--table: the tabulated schedule needs --table FILE.csv")
        return cls.from_csv(args.table)
    aliases = {"beta_value": "beta"}
    kw = {}
    for f in dataclasses.fields(cls):
        v = getattr(args, aliases.get(f.name, f.name), None)
        if v is not None:
            kw[f.name] = v
    return cls(**kw)


def spec_from_args(args: argparse.Namespace) -> Any:
    """The specification: ``--spec`` (or the preset) with the given options applied."""
    from derivations.spec import (
        ProblemSpec,
        TargetMixture,
        VariationalFamily,
        symmetric_bimodal,
    )
    if args.spec is not None and args.preset is not None:
        raise CommandError("--preset: give --spec or --preset, not both")
    if args.spec is not None and (args.K is not None or args.M is not None):
        raise CommandError("--K/--M: only with --preset orthogonal or simplex")
    if args.spec is not None:
        try:
            text = Path(args.spec).read_text()
        except OSError as exc:
            raise CommandError(f"--spec: cannot read {args.spec}: {exc.strerror}") from None
        try:
            spec = ProblemSpec.from_json(text)
        except ValueError as exc:
            raise CommandError(f"--spec: {args.spec}: {exc}") from None
    else:
        preset = args.preset
        if preset is None:
            # --K/--M other than 2 without a preset: the orthogonal preset has any K and M
            sizes_given = {args.K, args.M} - {None, 2}
            preset = "orthogonal" if sizes_given else "symmetric-bimodal"
        A = 9.0 if args.A is None else args.A
        if preset == "symmetric-bimodal":
            if args.K not in (None, 2) or args.M not in (None, 2):
                raise CommandError("--K/--M: the symmetric-bimodal preset has K = M = 2 (use "
                                   "--preset orthogonal or simplex)")
            spec = symmetric_bimodal(A)
        else:
            from derivations.spec import PRESETS as SPEC_PRESETS
            K = 2 if args.K is None else args.K
            M = K if args.M is None else args.M
            try:
                spec = SPEC_PRESETS[preset](K, M, A)
            except ValueError as exc:
                raise CommandError(f"--preset {preset}: {exc}") from None
        if args.schedule is None:
            args.schedule = args._schedule_default
    if args.schedule is not None:
        spec = spec.replace(schedule=schedule_from_args(args, args.schedule))
    t, f = spec.target, spec.family
    if args.spec is not None and args.A is not None:
        from analysis.phase import apply_cell
        spec = apply_cell(spec, {"A": args.A})
        t = spec.target
    if args.Delta is not None:
        spec = spec.replace(target=TargetMixture(t.gram, t.weights, args.Delta))
    if args.sigma_init is not None:
        i = spec.init
        spec = spec.replace(init=type(i)(args.sigma_init, i.centre_gram, i.centre_overlaps))
    variances = getattr(args, "variances", None)
    if getattr(args, "trainable_variances", None):
        if variances not in (None, "tied"):
            raise CommandError(f"--trainable-variances: contradicts --variances {variances}")
        variances = "tied"
    if args.s is not None or args.trainable_weights or variances is not None:
        spec = spec.replace(family=VariationalFamily(
            f.n_components, f.weights, f.variance if args.s is None else args.s,
            bool(args.trainable_weights) or f.train_weights,
            f.variances if variances is None else variances))
    objective = getattr(args, "objective", None) or spec.objective
    if objective != spec.objective or args.path is not None or args.sigma0_sq is not None:
        spec = _with_objective_and_path(spec, objective, args)
    if spec.family.variances == "per-component" and not getattr(args, "_per_component", False):
        command = getattr(args, "command", None) or "this command"
        raise CommandError(
            f"--variances: per-component variances are implemented only by the R^d simulator "
            f"(mfvi montecarlo --variances per-component), not by {command}: they have no "
            f"exact reduced equations at finite d (the logit differences contain |x|^2 "
            f"(1/s_k - 1/s_j)/2, not Gaussian).  Use --variances tied (what they relax to "
            f"after the transient) or adiabatic; see the README section 'Trainable "
            f"variances'")
    return spec


def _with_objective_and_path(spec: Any, objective: str, args: argparse.Namespace) -> Any:
    """``spec`` with the objective and the path of the options: a path the objective does not
    take is an error naming --path; without --path the objective's first path is used when the
    spec's own path does not suit it (the forward KL: inflation)."""
    from derivations.spec import BASE_PATHS, AnnealingPath
    kind = args.path
    if kind is None:
        kind = spec.path.kind
        if kind not in OBJECTIVE_PATHS[objective]:
            kind = OBJECTIVE_PATHS[objective][0]
    elif kind not in OBJECTIVE_PATHS[objective]:
        raise CommandError(f"--path: the {objective} objective takes "
                           f"{' or '.join(OBJECTIVE_PATHS[objective])}, got {kind}")
    if kind in BASE_PATHS:
        bv = args.sigma0_sq if args.sigma0_sq is not None else (spec.path.base_variance or 1.0)
        path = AnnealingPath(kind, bv)
    elif args.sigma0_sq is not None:
        raise CommandError(f"--sigma0-sq: only with --path {' or '.join(BASE_PATHS)}")
    else:
        path = AnnealingPath(kind)
    try:
        return spec.replace(objective=objective, path=path)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


# ----------------------------------------------------------------------------------------
# estimators, outputs, cost
# ----------------------------------------------------------------------------------------

def add_estimator_arguments(p: argparse.ArgumentParser, default: str) -> None:
    """--method from the estimator registry and every estimator's options as flags
    (``--field-name``).  A flag several estimators share is added once, in a group of shared
    options, with each estimator's own help and default; they must agree on its type."""
    from analysis.estimators import ESTIMATORS
    from analysis.estimators.base import _field_type
    p.add_argument("--method", choices=tuple(ESTIMATORS), default=default,
                   help=f"estimator (default {default}): " + "; ".join(
                       f"{n}: {c.summary}" for n, c in ESTIMATORS.items()))
    users: dict[str, list[tuple[str, Any]]] = {}
    for name, cls in ESTIMATORS.items():
        for f in dataclasses.fields(cls.Options):
            if f.name != "progress":
                users.setdefault(f.name, []).append((name, cls, f))
    groups: dict[str, Any] = {}

    def group(title: str) -> Any:
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        return groups[title]

    for field_name, owners in users.items():
        kinds = {_field_type(cls.Options, field_name) for _, cls, _ in owners}
        if len(kinds) > 1:
            raise TypeError(f"estimator option {field_name!r}: its type differs between "
                            f"{', '.join(n for n, _, _ in owners)}")
        kind = kinds.pop()
        choices: list = []
        for _, _, f in owners:
            choices += [c for c in f.metadata.get("choices", ()) if c not in choices]
        texts: dict[str, list[str]] = {}       # one entry per distinct help and default
        for n, _, f in owners:
            h = f.metadata.get("help", "")
            if not (f.default is None and "default" in h):    # no "(default None)" after it
                h += f" (default {f.default})"
            texts.setdefault(h, []).append(n)
        if len(owners) == 1:
            title = f"{owners[0][0]} options"
            text = next(iter(texts))
        else:
            title = "options of several estimators"
            text = "; ".join(f"{', '.join(ns)}: {t}" for t, ns in texts.items())
        kw: dict[str, Any] = {"dest": f"opt_{field_name}", "default": None, "help": text}
        if kind is not bool and not choices:
            kw["metavar"] = field_name.upper()
        if kind is bool:
            kw["action"] = "store_true"
        else:
            kw["type"] = {int: nonneg_int, float: finite_float}.get(kind, str)
            if choices:
                kw["choices"] = tuple(choices)
        group(title).add_argument("--" + field_name.replace("_", "-"), **kw)


def estimator_options(args: argparse.Namespace, method: str) -> dict:
    """The estimator options given on the command line; one that the chosen estimator does not
    have is an error naming the flag."""
    from analysis.estimators import get_estimator
    names = {f.name for f in dataclasses.fields(get_estimator(method).Options)}
    opts = {}
    for key, v in vars(args).items():
        if key.startswith("opt_") and v is not None:
            name = key[4:]
            if name not in names:
                raise CommandError(f"--{name.replace('_', '-')}: not an option of the "
                                   f"{method} estimator")
            opts[name] = v
    return opts


def add_json_arguments(p: argparse.ArgumentParser) -> None:
    """``--json`` (one JSON object on stdout) and ``--out FILE`` (the same object, saved)."""
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="also write the JSON result to this file")


def emit_json(args: argparse.Namespace, obj: dict, out: Path | None) -> bool:
    """Write ``obj`` atomically to ``out`` (the checked ``--out``, if any) and print it if
    ``--json``; returns whether it was printed (the command then prints nothing else)."""
    text = json.dumps(obj)
    if out is not None:
        from derivations.atomic import atomic_write
        atomic_write(out, text + "\n")
    if args.json:
        print(text)
    return bool(args.json)


def add_force_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="run even if the estimated memory or time exceeds the limits")


def output_file(flag: str, path: str | None, suffixes: tuple[str, ...] | None = None
                ) -> Path | None:
    """Check an output file path before any work: not a directory, a known suffix if
    ``suffixes``; a missing parent directory is created (as the sweeps do)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir() or str(path).endswith(os.sep):
        raise CommandError(f"{flag}: {path} is a directory; give a file name")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise CommandError(f"{flag}: unknown file type {p.suffix or '(none)'!r} of {path}; "
                           f"use one of {', '.join(suffixes)}")
    output_dir(flag, str(p.parent) if str(p.parent) else ".")
    return p


def output_dir(flag: str, path: str) -> Path:
    """Check (and create) an output directory: it must not be an existing file, nor lie
    below one."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() and not q.is_dir():
            raise CommandError(f"{flag}: {q} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"{flag}: cannot create {path}: {exc.strerror}") from None
    return p
