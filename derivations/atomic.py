"""Atomic file writes, shared by every layer that saves results or generated code.

``atomic_write(path, data)`` writes to a ``.tmp_*`` file in the same directory, fsyncs it and
``os.replace``-s it into place, so a reader (or a resumed sweep) sees either the old file or
the complete new one, never a torn write, even if the process is killed mid-way.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["atomic_write", "TMP_PREFIX"]

#: Prefix of the temporary files (a resumed sweep deletes leftovers with this prefix).
TMP_PREFIX = ".tmp_"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
