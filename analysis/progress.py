"""The progress meter (its home is :mod:`solvers.progress`, the lowest layer that shows one;
re-exported here for the analysis layer)."""

from solvers.progress import progress_bar, stderr_is_terminal

__all__ = ["progress_bar", "stderr_is_terminal"]
