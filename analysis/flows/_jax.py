"""JAX, configured once for the toolkit: the persistent compilation cache.

Importing this module imports JAX (the ``[flows]`` extra) and points JAX's persistent
compilation cache at ``$MFVI_CACHE_DIR/jax`` (default ``~/.cache/mfvi/jax``), caching every
compiled computation, the small eager ones included: building the flows eagerly compiles some
fifty primitives (about 5-20 s on a loaded 2-core machine), which the cache brings down to about
1 s in every later process.  ``MFVI_JAX_CACHE=0`` switches the cache off.
"""

from __future__ import annotations

import os

import jax

__all__ = ["jax"]


def _configure() -> None:
    if os.environ.get("MFVI_JAX_CACHE", "1") == "0":
        return
    from derivations.codegen import cache_dir
    path = cache_dir().parent / "jax"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_configure()
