"""paper/main.tex compiles: `make paper`'s LaTeX run, on a copy, without errors or LaTeX warnings.

Runs where latexmk is installed; `.ci/run` installs it (Debian's latexmk and texlive-latex-base)
when apt-get is available, so CI builds the note on every run.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed (.ci/run installs it)")
def test_companion_note_compiles(tmp_path):
    paper = tmp_path / "paper"
    paper.mkdir()
    for name in ("main.tex", "numbers.tex"):
        shutil.copy(ROOT / "paper" / name, paper / name)
    shutil.copytree(ROOT / "figures", tmp_path / "figures")  # main.tex reads ../figures/
    run = subprocess.run(
        ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
        cwd=paper,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = (paper / "main.log").read_text(errors="replace") if (paper / "main.log").exists() else ""
    assert run.returncode == 0, run.stdout[-3000:] + log[-3000:]
    assert (paper / "main.pdf").stat().st_size > 10_000
    warnings = re.findall(r"^(?:LaTeX|Package \w+) Warning:.*$", log, re.M)
    assert not warnings, warnings
