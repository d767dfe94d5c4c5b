"""Emitters for people: the objective, the ODEs and the fixed-point equations in LaTeX/Markdown.

:func:`equations` lists the displayed equations of a model (each a LaTeX string without
delimiters); :func:`to_latex` wraps them into a standalone LaTeX document and
:func:`to_markdown` into Markdown with ``$$ ... $$`` blocks.  Symbol names are rendered in the
usual notation (``Q_{kl}``, ``\\alpha_k``, ``\\sigma_0^2``).  Optional substitutions
specialise the equations to a preset (e.g. the symmetric bimodal target with ``|mu_1|^2 = A``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .model import ReducedModel
from .spec import BASE_PATHS, ModelStructure

__all__ = ["Equation", "equations", "to_latex", "to_markdown", "preset_substitutions",
           "symbol_latex_names"]


@dataclass(frozen=True)
class Equation:
    """One displayed equation: ``lhs = rhs`` in LaTeX, with a heading it belongs to."""

    section: str
    lhs: str
    rhs: str

    @property
    def latex(self) -> str:
        return f"{self.lhs} = {self.rhs}"


SPECIAL_FUNCTIONS_MD = r"""The Gaussian-expectation functions: for $n \ge 1$, a multi-index $\alpha$, a mean vector
$a \in \mathbb{R}^n$ and a covariance $C$,
$\mathcal{L}_\alpha(a; C) = \mathbb{E}\,\partial^\alpha \mathrm{LSE}(0, v)$ with
$v \sim \mathcal{N}(a, C)$ and $\mathrm{LSE}(0, v) = \log(1 + \sum_i e^{v_i})$. For $n = 1$,
$\mathcal{L}^{(k)}(a; c) = \mathbb{E}\,\mathrm{softplus}^{(k)}(a + \sqrt{c}\,\xi)$,
$\xi \sim \mathcal{N}(0, 1)$; so $\mathcal{L}^{(1)}$ is the Gaussian-averaged sigmoid.
Arguments after the semicolon are the upper triangle of $C$. Derivatives:
$\partial_{a_i} \mathcal{L}_\alpha = \mathcal{L}_{\alpha + e_i}$,
$\partial_{C_{ii}} \mathcal{L}_\alpha = \tfrac12 \mathcal{L}_{\alpha + 2 e_i}$,
$\partial_{C_{ij}} \mathcal{L}_\alpha = \mathcal{L}_{\alpha + e_i + e_j}$ ($i < j$)."""


def symbol_latex_names(model: ReducedModel) -> dict[sp.Symbol, str]:
    """LaTeX names of the state and parameter symbols."""
    names: dict[sp.Symbol, str] = {}
    for sym in model.state + model.params:
        parts = sym.name.split("_")
        head, idx = parts[0], parts[1:]
        if sym.name == "sigma0_sq":
            names[sym] = r"\sigma_0^2"
        elif sym.name in ("log_s", "inv_d"):
            names[sym] = r"\log s" if sym.name == "log_s" else r"d^{-1}"
        elif head in ("alpha", "pi"):
            names[sym] = rf"\{head}_{{{''.join(idx)}}}"
        elif head == "Delta":
            names[sym] = r"\Delta"
        elif idx:
            names[sym] = f"{head}_{{{''.join(idx)}}}"
    return names


def preset_substitutions(model: ReducedModel, preset: str) -> dict[sp.Symbol, sp.Expr]:
    """Substitutions specialising a K = M = 2 model to a preset (``symmetric-bimodal``)."""
    if preset != "symmetric-bimodal":
        raise ValueError(f"preset: unknown preset {preset!r}")
    st = model.structure
    if (st.K, st.M) != (2, 2):
        raise ValueError("preset: symmetric-bimodal needs K = M = 2")
    A = sp.Symbol("A", positive=True)
    by_name = {s.name: s for s in model.params}
    subs = {by_name["T_1_1"]: A, by_name["T_1_2"]: -A, by_name["T_2_2"]: A,
            by_name["pi_1"]: sp.Rational(1, 2), by_name["pi_2"]: sp.Rational(1, 2),
            by_name["Delta"]: sp.Integer(1), by_name["s"]: sp.Integer(1)}
    if not st.train_weights:
        subs[by_name["w_1"]] = sp.Rational(1, 2)
        subs[by_name["w_2"]] = sp.Rational(1, 2)
    return subs


def _tidy(expr: sp.Expr, subs: dict | None) -> sp.Expr:
    if subs:
        expr = expr.subs(subs)
    return sp.expand_log(expr, force=True) if expr.has(sp.log) else expr


def equations(model: ReducedModel, subs: dict | None = None, expanded: bool = True
              ) -> list[Equation]:
    """The displayed equations: objective, G and H, ODEs (matrix and component form), fixed points.

    ``expanded`` adds the component form of every ODE (large for M = 3 and beyond).
    """
    names = symbol_latex_names(model)

    def tex(e: sp.Expr) -> str:
        return sp.latex(_tidy(e, subs), symbol_names=names)

    st = model.structure
    eqs: list[Equation] = [Equation("Objective", "F", tex(model.objective))]
    M, K = st.M, st.K
    for k in range(M):
        for l in range(k, M):
            eqs.append(Equation("Chain rule", f"G_{{{k + 1}{l + 1}}}", tex(model.G[k, l])))
    for k in range(M):
        for a in range(K):
            eqs.append(Equation("Chain rule", f"H_{{{k + 1}{a + 1}}}", tex(model.H[k, a])))
    eqs.append(Equation("ODEs", r"\frac{dQ}{dt}", r"-\left(G Q + Q G^{T} + H R^{T} + R H^{T}\right)"))
    eqs.append(Equation("ODEs", r"\frac{dR}{dt}", r"-\left(G R + H T\right)"))
    if st.train_weights:
        eqs.append(Equation("ODEs", r"\frac{d\alpha_k}{dt}", r"-\frac{\partial F}{\partial \alpha_k}"))
    if st.variances == "tied":
        eqs.append(Equation("ODEs", r"\frac{d\log s}{dt}",
                            r"-\frac{1}{d} \frac{\partial F}{\partial \log s}"))
    if st.path in BASE_PATHS:
        eqs.append(Equation("ODEs", r"\gamma", r"1 - \beta"))
    else:
        eqs.append(Equation("ODEs", r"\gamma", "0"))
    if expanded:
        for sym, rhs in zip(model.state, model.rhs):
            eqs.append(Equation("ODEs (components)", r"\frac{d" + names[sym] + "}{dt}", tex(rhs)))
    eqs.append(Equation("Fixed points", "0", r"G Q + Q G^{T} + H R^{T} + R H^{T}"))
    eqs.append(Equation("Fixed points", "0", r"G R + H T"))
    if st.train_weights:
        alphas = [y for y in model.state if y.name.startswith("alpha_")]
        for k in range(M):
            eqs.append(Equation("Fixed points", "0",
                                tex(sp.diff(model.objective, alphas[k]))))
    if model.dlog_s is not None:
        eqs.append(Equation("Fixed points", "0", tex(model.dlog_s)))
    return eqs


def _title(model: ReducedModel, preset: str | None) -> str:
    st = model.structure
    what = (f"K = {st.K} target modes, M = {st.M} components, "
            f"{'trainable' if st.train_weights else 'fixed'} weights, {st.path} path"
            + (", forward KL" if st.objective == "forward-kl" else ""))
    return f"Preset {preset} ({what})" if preset else what


def to_latex(model: ReducedModel, preset: str | None = None, expanded: bool = True) -> str:
    """A standalone LaTeX document with the model's equations."""
    subs = preset_substitutions(model, preset) if preset else None
    out = [r"\documentclass{article}", r"\usepackage{amsmath,amssymb}",
           r"\allowdisplaybreaks", r"\begin{document}",
           r"\section*{" + _title(model, preset) + "}",
           SPECIAL_FUNCTIONS_MD, ""]
    section = None
    for eq in equations(model, subs, expanded):
        if eq.section != section:
            section = eq.section
            out.append(r"\subsection*{" + section + "}")
        out.append(r"\begin{equation*}")
        out.append(eq.latex)
        out.append(r"\end{equation*}")
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def to_markdown(model: ReducedModel, preset: str | None = None, expanded: bool = True) -> str:
    """Markdown with ``$$ ... $$`` display blocks, headed by the definitions of the symbols."""
    subs = preset_substitutions(model, preset) if preset else None
    st = model.structure
    out = [f"# {_title(model, preset)}", "",
           "Generated by `mfvi derive` from the symbolic derivation (do not edit by hand).", "",
           "State: $Q_{kl} = m_k \\cdot m_l$, $R_{ka} = m_k \\cdot \\mu_a$"
           + (", logits $\\alpha_k$ with $w = \\mathrm{softmax}(\\alpha)$" if st.train_weights else "")
           + "; parameters $T_{ab} = \\mu_a \\cdot \\mu_b$, $\\pi_a$, $\\Delta$, $s$"
           + (", $\\sigma_0^2$" if st.path in BASE_PATHS else "")
           + ". Time $t$ is the gradient-flow time; $G_{kl} = \\partial F/\\partial Q_{kl} + "
             "\\partial F/\\partial Q_{lk}$, $H_{ka} = \\partial F/\\partial R_{ka}$.", "",
           SPECIAL_FUNCTIONS_MD, ""]
    if preset == "symmetric-bimodal":
        out += ["Preset: $T = A\\begin{pmatrix}1&-1\\\\-1&1\\end{pmatrix}$, "
                "$\\pi = (1/2, 1/2)$, $\\Delta = s = 1$"
                + ("" if st.train_weights else ", $w = (1/2, 1/2)$") + ".", ""]
    section = None
    for eq in equations(model, subs, expanded):
        if eq.section != section:
            section = eq.section
            out += [f"## {section}", ""]
        out += ["$$", eq.latex, "$$", ""]
    return "\n".join(out)


#: The standard models whose rendered equations are committed under derivations/equations/.
STANDARD_MODELS = {
    "symmetric_bimodal": (ModelStructure(2, 2, False, "tempering"), "symmetric-bimodal"),
    "K2_M2_fixed_weights": (ModelStructure(2, 2, False, "tempering"), None),
    "K2_M2_trainable_weights": (ModelStructure(2, 2, True, "tempering"), None),
    "K2_M3": (ModelStructure(2, 3, False, "tempering"), None),
}


def render_standard_models() -> dict[str, dict[str, str]]:
    """Markdown and LaTeX of every standard model: {file stem: {"md": text, "tex": text}}
    (``python -m derivations.emit DIR`` writes them)."""
    from .model import derive
    out = {}
    for stem, (structure, preset) in STANDARD_MODELS.items():
        model = derive(structure)
        # the component form of M = 3 runs to pages; its matrix form and G, H are shown
        expanded = structure.M <= 2
        out[stem] = {"md": to_markdown(model, preset, expanded=expanded),
                     "tex": to_latex(model, preset, expanded=expanded)}
    return out


if __name__ == "__main__":
    import sys
    from pathlib import Path

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "equations"
    target.mkdir(parents=True, exist_ok=True)
    for stem, texts in render_standard_models().items():
        for ext, text in texts.items():
            (target / f"{stem}.{ext}").write_text(text)
            print(f"wrote {target / (stem + '.' + ext)}")
