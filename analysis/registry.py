"""Registries of named, coded entries: one implementation of the rules they share.

The Monte Carlo's gradient estimators (:mod:`analysis.mc_estimators`) and optimisers
(:mod:`analysis.mc_optimisers`) are frozen dataclasses with a ``name`` (the configuration and
command-line spelling) and an integer ``code`` (what the compiled kernels branch on).
:class:`CodeRegistry` holds them:

1. ``register(entry)`` adds an instance of the registry's entry type; re-registering an
   equal entry is a no-op, a different entry under a taken name or a taken code is a
   ValueError naming the registry's parameter.
2. ``lookup(x)`` returns ``x`` if it is an entry, the entry named ``x`` if there is one, and
   otherwise a ValueError naming the parameter and the registered names.
3. It is a ``dict`` name -> entry otherwise (iteration order = registration order).
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

__all__ = ["CodeRegistry"]

E = TypeVar("E")


class CodeRegistry(dict, Generic[E]):
    """``name -> entry`` for entries of type ``entry_type`` with unique ``name`` and ``code``;
    ``param`` is the parameter the messages name (``"estimator"``, ``"optimizer"``)."""

    def __init__(self, param: str, entry_type: type) -> None:
        super().__init__()
        self.param = param
        self.entry_type = entry_type

    def register(self, entry: E) -> E:
        """Add ``entry`` (rule 1); returns the registered entry."""
        kind = self.entry_type.__name__
        if not isinstance(entry, self.entry_type):
            article = "an" if kind[0].lower() in "aeiou" else "a"
            raise ValueError(f"{self.param}: must be {article} {kind}, got "
                             f"{type(entry).__name__}")
        old = self.get(entry.name)
        if old is not None:
            if old != entry:
                raise ValueError(f"{self.param}: {entry.name!r} is registered already")
            return old
        if any(e.code == entry.code and e.name != entry.name for e in self.values()):
            raise ValueError(f"{self.param}: code {entry.code} is taken")
        self[entry.name] = entry
        return entry

    def lookup(self, name: Any) -> E:
        """The entry ``name`` stands for (rule 2)."""
        if isinstance(name, self.entry_type):
            return name
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"{self.param}: must be one of {tuple(self)}, got {name!r}")
        return self[name]
