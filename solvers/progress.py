"""The progress meter: one home for every tqdm bar of the toolkit (solvers and analysis;
``analysis.progress`` re-exports it).

``progress_bar(total, desc, unit, enabled, initial)`` returns a tqdm bar on stderr, or None when
it is not wanted: ``enabled=False``; ``enabled=None`` (automatic) and stderr is not a terminal;
or tqdm is not installed. ``enabled=True`` forces a bar even when stderr is not a terminal
(``analysis.sweep``'s "only on a terminal" is ``enabled=None if flag else False``). Callers
write ``if bar is not None: bar.update(k)`` and close it in a ``finally``. Bars never go to
stdout (which carries ``--json`` output).
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar", "stderr_is_terminal"]


def stderr_is_terminal() -> bool:
    """True if ``sys.stderr`` is an interactive terminal (False when it cannot tell)."""
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool | None = None,
                 initial: int = 0, leave: bool = False) -> Any:
    """A tqdm bar on stderr of ``total`` units (``initial`` done already), or None.

    enabled : True (always), False (never), None (only if stderr is a terminal, so that logs
        and pipes stay clean).
    leave : keep the final state of the bar on the terminal when it closes.
    """
    if enabled is None:
        enabled = stderr_is_terminal()
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                leave=leave, dynamic_ncols=True)
