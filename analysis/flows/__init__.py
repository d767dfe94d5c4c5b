r"""Normalizing-flow VI under annealing: RealNVP trained on the annealed reverse KL (issue 13).

The optional extra ``[flows]`` (JAX, flowjax, equinox, optax) carries the flows; the core
toolkit never imports it.  This package's ``__init__`` and its numpy-only modules
(:mod:`.config`, :mod:`.classify`) import without the extra; the JAX modules (:mod:`.realnvp`,
:mod:`.train`) are imported by :func:`.run.run_flows` only when a flow is trained.  Without the
extra, :func:`require_flows` (called first by everything that trains a flow) raises
:class:`FlowsUnavailable` naming ``pip install -e ".[flows]"``.

Layout (one concept per module):

* :mod:`.config`   -- :class:`~.config.FlowConfig` (frozen, validated) and the end-time rule;
* :mod:`.classify` -- collapse of a flow from its samples (per-mode counts, Wilson bounds);
* :mod:`.realnvp`  -- the batched RealNVP (flowjax affine coupling flows, one per seed);
* :mod:`.train`    -- the annealed reverse-KL objective and the compiled training chunks;
* :mod:`.run`      -- :func:`~.run.run_flows`: geometry, training, classification, result;
* :mod:`.compare`  -- P(collapse) of the flow over a (T0, tau) grid beside the mixture theory.
"""

from __future__ import annotations

import importlib.util

__all__ = ["FlowsUnavailable", "INSTALL_HINT", "flows_available", "require_flows"]

#: The command that installs the extra (printed by every "missing extra" message).
INSTALL_HINT = 'pip install -e ".[flows]"'

#: The modules of the extra (import names).
_EXTRA_MODULES = ("jax", "flowjax", "equinox", "optax", "paramax")


class FlowsUnavailable(ImportError):
    """The optional extra ``[flows]`` is not installed."""


def _missing() -> list[str]:
    return [m for m in _EXTRA_MODULES if importlib.util.find_spec(m) is None]


def flows_available() -> bool:
    """True if the ``[flows]`` extra (JAX, flowjax, equinox, optax, paramax) is importable."""
    return not _missing()


def require_flows() -> None:
    """Raise :class:`FlowsUnavailable` (naming the install command) if the extra is missing."""
    missing = _missing()
    if missing:
        raise FlowsUnavailable(
            f"normalizing flows need the optional extra [flows] (missing: {', '.join(missing)}); "
            f"install it with: {INSTALL_HINT}")
