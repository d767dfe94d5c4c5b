r"""The collapse-estimator contract and its registry (DESIGN.md sections 3 and 5).

A collapse estimator turns a problem specification and a dimension d into an estimate of
P(mode collapse) over the random initialisation (and, for stochastic training, the noise).
Estimators are small classes registered by name; :func:`analysis.collapse.collapse_probability`
and the command line (``mfvi collapse --method``, ``mfvi phase-diagram --method``) dispatch
through :data:`ESTIMATORS`, and the command line builds each estimator's options from its
options dataclass.  Adding an estimator is one module with one subclass plus its test (the
README's "How to add an estimator" and ``tests/test_estimators.py`` show a worked example).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from derivations.spec import ProblemSpec

from ..validate import format_bytes, format_seconds

__all__ = ["CollapseResult", "CollapseEstimator", "EstimatorOptions", "Cost", "ESTIMATORS",
           "register_estimator", "get_estimator", "parse_options", "CostError",
           "MAX_BYTES", "MAX_SECONDS"]

#: Requests estimated to need more memory than this (bytes) are refused unless forced:
#: half the machine's physical memory (24 GiB on the project's machines).
MAX_BYTES = int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) \
    if hasattr(os, "sysconf") else 8 << 30
#: ... or an estimated wall time above this (seconds): six hours.
MAX_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class CollapseResult:
    """A collapse-probability estimate.

    Attributes
    ----------
    method : the estimator's registry name.
    p : estimated probability of mode collapse.
    ci : (low, high): Wilson 95% interval for sampling estimators; a numerical error bound
        for ``separatrix`` and closed-form ``linear``.
    k, n : collapsed draws and draws (None for the deterministic estimators).
    d : dimension.
    params : the full specification (``spec.to_dict()``).
    options : the estimator's settings (its options dataclass as a dict, plus seed and chunking).
    outcomes : (n,) bool per draw, or None.  mechanisms : (n,) int8 codes of
        :mod:`analysis.classify`, or None.
    details : method-specific diagnostics (JSON-serialisable).
    notes : caveats of the estimator.
    wall_time : seconds.
    """

    method: str
    p: float
    ci: tuple[float, float]
    k: int | None
    n: int | None
    d: int
    params: dict
    options: dict = field(default_factory=dict)
    outcomes: Any | None = field(default=None, repr=False)
    mechanisms: Any | None = field(default=None, repr=False)
    details: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        """The JSON form: ``p, ci, k, n, d, method, params, options, details, notes,
        wall_time`` and ``mechanisms`` (counts by name) where there are draws."""
        from analysis.classify import mechanism_counts
        out = {"p": self.p, "ci": [self.ci[0], self.ci[1]], "k": self.k, "n": self.n,
               "d": self.d, "method": self.method, "params": self.params,
               "options": self.options, "details": self.details, "notes": list(self.notes),
               "wall_time": self.wall_time}
        if self.mechanisms is not None:
            out["mechanisms"] = mechanism_counts(self.mechanisms)
        return out


@dataclass(frozen=True)
class Cost:
    """Up-front estimate of what a request needs: peak memory (bytes) and wall time (s).

    ``refusal``: a reason other than size to refuse the request unless forced (e.g. an SGD
    step above the stability bound), as the message of the ValueError naming the parameter.
    """

    bytes: float
    seconds: float
    what: str = ""
    refusal: str | None = None

    def check(self, force: bool, name: str) -> None:
        """Raise :class:`CostError` if the estimate exceeds :data:`MAX_BYTES` or
        :data:`MAX_SECONDS`, or the request carries a ``refusal``, and ``force`` is not set."""
        if force:
            return
        if self.refusal is not None:
            raise CostError(f"{self.refusal} (--force)")
        if self.bytes > MAX_BYTES:
            raise CostError(f"{name}: the request needs about {format_bytes(self.bytes)} of memory "
                            f"({self.what}), more than the limit {format_bytes(MAX_BYTES)}; "
                            "reduce it or pass force=True (--force)")
        if self.seconds > MAX_SECONDS:
            raise CostError(f"{name}: the request needs about {format_seconds(self.seconds)} "
                            f"({self.what}), more than the limit {format_seconds(MAX_SECONDS)}; "
                            "reduce it or pass force=True (--force)")


class CostError(ValueError):
    """A request refused for its estimated cost (a ValueError: bad input, named)."""


@dataclass(frozen=True)
class EstimatorOptions:
    """Base of every estimator's options: frozen, typed, validated.

    Fields carry ``metadata={"help": "..."}`` (shown by ``mfvi collapse --help``) and
    optionally ``"choices"``.  Subclasses validate in ``__post_init__`` (call
    ``super().__post_init__()``), raising ``ValueError`` naming the option.  ``progress`` is
    common to all estimators.
    """

    progress: bool = field(default=False, metadata={"help": "progress bar on stderr"})

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices is not None and v not in choices:
                raise ValueError(f"{f.name}: must be one of {list(choices)}, got {v!r}")
            kind = _field_type(type(self), f.name)
            if v is None:
                continue
            if kind is bool and not isinstance(v, bool):
                raise ValueError(f"{f.name}: must be a bool, got {v!r}")
            if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"{f.name}: must be an integer, got {v!r}")
            if kind is float:
                if isinstance(v, (bool, str)) or not isinstance(v, (int, float)):
                    raise ValueError(f"{f.name}: must be a real number, got {v!r}")
                if not math.isfinite(v):
                    raise ValueError(f"{f.name}: must be finite, got {v!r}")
                object.__setattr__(self, f.name, float(v))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _field_type(cls: type, name: str) -> type | None:
    """The plain type (bool, int, float, str) of an options field; ``Optional[X]`` -> X."""
    t = typing.get_type_hints(cls).get(name)
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        t = args[0] if len(args) == 1 else None
    return t if t in (bool, int, float, str) else None


def parse_options(options_cls: type, method: str, options: dict) -> EstimatorOptions:
    """``options_cls(**options)``; an unknown option is a ValueError naming it and the
    estimator's valid options."""
    names = [f.name for f in dataclasses.fields(options_cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"{unknown[0]}: not an option of the {method!r} estimator "
                         f"(its options: {', '.join(names)})")
    return options_cls(**options)


#: The estimator registry: name -> estimator class (filled by :func:`register_estimator`).
ESTIMATORS: dict[str, type[CollapseEstimator]] = {}


def register_estimator(cls: type[CollapseEstimator]) -> type[CollapseEstimator]:
    """Class decorator: add an estimator to :data:`ESTIMATORS` under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"estimator: {cls.__name__} needs a class attribute name")
    if name in ESTIMATORS and ESTIMATORS[name] is not cls:
        raise ValueError(f"estimator: the name {name!r} is registered already "
                         f"({ESTIMATORS[name].__name__})")
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, EstimatorOptions)):
        raise ValueError(f"estimator: {cls.__name__}.Options must subclass EstimatorOptions")
    ESTIMATORS[name] = cls
    return cls


def get_estimator(method: Any) -> type[CollapseEstimator]:
    if method not in ESTIMATORS:
        raise ValueError(f"method: must be one of {tuple(ESTIMATORS)}, got {method!r}")
    return ESTIMATORS[method]


class CollapseEstimator:
    """Base class of the collapse estimators.  The contract:

    1. A subclass sets ``name`` (the registry key, ``--method`` on the command line), a
       one-line ``summary``, and ``Options``, a frozen dataclass subclassing
       :class:`EstimatorOptions` whose fields are all its settings, with defaults and
       ``metadata["help"]``; it is registered with :func:`register_estimator`.
    2. ``check(spec, d, options)`` refuses, with a ValueError naming ``spec`` (or the option)
       and the reason, every problem the estimator's derivation does not cover.  It runs
       before any work.  The class attributes ``objectives`` and ``variances`` declare the
       objectives (:data:`derivations.spec.OBJECTIVES`) and variance treatments
       (:data:`derivations.spec.VARIANCES`) the estimator covers (default: the reverse KL with
       fixed variances); the base ``check`` refuses the others by estimator name, so an
       override calls ``super().check(spec, d, options)`` first.
    3. ``cost(spec, d, draws, options) -> Cost`` estimates peak memory and wall time without
       doing the work; :func:`~analysis.collapse.collapse_probability` refuses requests above
       :data:`MAX_BYTES` / :data:`MAX_SECONDS` unless ``force``.
    4. ``estimate(spec, d, draws, seed, executor, options) -> CollapseResult``.  ``draws`` is
       the number of independent draws of a sampling estimator (ignored otherwise, and then
       ``k = n = None``); ``seed`` a non-negative int or None (fresh entropy, recorded in
       ``options``); ``executor`` an optional ``concurrent.futures.Executor`` to which
       independent chunks may be submitted (functions and arguments picklable).  The same
       (spec, d, draws, seed, options) give the same result for any executor and thread count.
    5. Sampling estimators return per-draw ``outcomes`` (bool, collapsed) and ``mechanisms``
       (:mod:`analysis.classify` codes) and a Wilson 95% ``ci`` of ``k`` of ``n``;
       deterministic ones a numerical error bound as ``ci`` and say so in ``notes``.  Every
       approximation the estimator makes is stated in ``notes``.
    6. ``estimate`` never mutates its inputs and does not print except a progress bar on
       stderr when ``options.progress``.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Options: ClassVar[type[EstimatorOptions]] = EstimatorOptions
    #: True if ``draws`` matters (sampling estimators).
    uses_draws: ClassVar[bool] = True
    #: The objectives (``spec.objective``) the estimator's derivation covers.
    objectives: ClassVar[tuple[str, ...]] = ("reverse-kl",)
    #: The variance treatments (``spec.family.variances``) it covers.
    variances: ClassVar[tuple[str, ...]] = ("fixed",)

    def check(self, spec: ProblemSpec, d: int, options: EstimatorOptions) -> None:
        """Rule 2: refuse what the estimator does not cover (here: an objective or a variance
        treatment outside :attr:`objectives` / :attr:`variances`)."""
        if spec.objective not in self.objectives:
            raise ValueError(f"objective: the {self.name} estimator covers "
                             f"{' and '.join(self.objectives)} only, got {spec.objective}")
        if spec.family.variances not in self.variances:
            raise ValueError(f"variances: the {self.name} estimator covers variances="
                             f"{' or '.join(self.variances)} only, got "
                             f"{spec.family.variances}")

    def cost(self, spec: ProblemSpec, d: int, draws: int, options: EstimatorOptions) -> Cost:
        """Rule 3: the up-front estimate (default: negligible)."""
        return Cost(0.0, 0.0)

    def estimate(self, spec: ProblemSpec, d: int, draws: int, seed: int | None,
                 executor: Executor | None, options: EstimatorOptions
                 ) -> CollapseResult:  # pragma: no cover - abstract
        raise NotImplementedError
