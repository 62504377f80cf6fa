"""The paper rule builds a PDF with latexmk and fails on an undefined macro or reference."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from poolbench import jobs

from conftest import need

DOC = r"""\documentclass{article}
\begin{document}
%s
\end{document}
"""


def build(tmp_path, body: str):
    need(shutil.which("latexmk") is not None, "latexmk (Debian: apt-get install latexmk texlive-latex-recommended)")
    tex = tmp_path / "main.tex"
    tex.write_text(DOC % body)
    smk = SimpleNamespace(input=SimpleNamespace(tex=str(tex)), log=[str(tmp_path / "paper.log")])
    jobs.paper(smk)
    return tmp_path / "main.pdf"


def test_a_clean_paper_builds(tmp_path):
    assert build(tmp_path, r"Hello \LaTeX.\label{x} See \ref{x}.").stat().st_size > 1000


@pytest.mark.parametrize("body", [r"A macro nobody defined: \poolbenchNoSuchNumber.", r"See Table~\ref{tab:missing}."])
def test_an_undefined_macro_or_reference_fails_the_build(tmp_path, body):
    with pytest.raises(RuntimeError, match="latexmk failed|undefined|Undefined"):
        build(tmp_path, body)
