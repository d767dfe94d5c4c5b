"""Emitters: LaTeX parses, committed equations are current, the derive command works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis.cli import main
from derivations.emit import equations, render_standard_models, to_latex
from derivations.model import derive
from derivations.spec import ModelStructure


def _mathtext_parse(tex: str) -> None:
    from matplotlib.mathtext import MathTextParser
    MathTextParser("agg").parse(f"${tex}$")


@pytest.mark.parametrize("structure,preset", [
    (ModelStructure(2, 2, False, "tempering"), "symmetric-bimodal"),
    (ModelStructure(2, 2, True, "geometric"), None),
    (ModelStructure(2, 3, False, "tempering"), None),
])
def test_every_equation_parses_as_mathtext(structure, preset):
    from derivations.emit import preset_substitutions
    model = derive(structure)
    subs = preset_substitutions(model, preset) if preset else None
    eqs = equations(model, subs, expanded=structure.M <= 2)
    assert len(eqs) > 5
    for eq in eqs:
        _mathtext_parse(eq.latex)


def test_mathtext_check_can_fail():
    with pytest.raises(ValueError):
        _mathtext_parse(r"\frac{1}{")


def test_latex_document_is_balanced():
    doc = to_latex(derive(ModelStructure(2, 2, True, "tempering")))
    assert doc.count(r"\begin{equation*}") == doc.count(r"\end{equation*}") > 5
    body = re.sub(r"\\[a-zA-Z]+", "", doc)
    assert body.count("{") == body.count("}")
    assert r"\begin{document}" in doc and doc.rstrip().endswith(r"\end{document}")


def test_committed_equations_are_current():
    folder = Path(__file__).resolve().parents[1] / "derivations" / "equations"
    for stem, texts in render_standard_models().items():
        for ext, text in texts.items():
            committed = (folder / f"{stem}.{ext}").read_text()
            assert committed == text, f"{stem}.{ext} is stale: run python -m derivations.emit"


def test_derive_command_prints_latex(capsys):
    assert main(["derive", "--preset", "symmetric-bimodal", "--format", "latex"]) == 0
    out = capsys.readouterr().out
    assert r"\begin{document}" in out and r"\frac{dR_{11}}{dt}" in out
    assert "A" in out and "T_{11}" not in out  # the preset substitutes T = A [[1,-1],[-1,1]]


def test_derive_command_prints_python(capsys):
    assert main(["derive", "--K", "2", "--M", "3", "--trainable-weights", "--format", "python"]) == 0
    out = capsys.readouterr().out
    compile(out, "<generated>", "exec")
    assert "@njit(RHS_SIG, cache=True)" in out and "alpha_3 = y[" in out


def test_derive_command_rejects_bad_structure(capsys):
    assert main(["derive", "--K", "0"]) == 2
    assert "structure.K" in capsys.readouterr().err


def test_derive_command_trainable_variances(capsys):
    # K = M = 1 tied: the log s equation at the 1/d rate, whose fixed point is s = Delta / beta
    assert main(["derive", "--K", "1", "--M", "1", "--trainable-variances",
                 "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert r"-\frac{1}{d} \frac{\partial F}{\partial \log s}" in out
    assert r"0 = \frac{1}{2} - \frac{\beta e^{\log s}}{2 \Delta}" in out
    assert main(["derive", "--trainable-variances", "--variances", "adiabatic"]) == 2
    assert "--trainable-variances" in capsys.readouterr().err
