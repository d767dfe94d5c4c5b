"""Session fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_figures(tmp_path_factory) -> Path:
    """``mfvi reproduce --quick`` run once per session; the figure directory it wrote.

    Every figure module's test reads its own JSON sidecar from here, so the smoke run of the
    whole figure set is paid once.  What the command printed is in ``printed.txt`` beside it.
    """
    import contextlib
    import io

    from analysis.cli import main
    root = tmp_path_factory.mktemp("reproduce-quick")
    out = root / "figures"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["reproduce", "--quick", "--out", str(out), "--results",
                   str(root / "results"), "--no-progress"])
    assert rc == 0, buf.getvalue()
    (root / "printed.txt").write_text(buf.getvalue())
    return out
