"""The committed figures and paper/ agree with each other and with what generates them.

These check the outputs of the last `make figures` (committed): the figure list, the references
of paper/main.tex, and that the generated report, macros and README table are up to date.
"""

import json
import re
from pathlib import Path

import pytest

from cryoorient import report

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "figures"
PAPER = ROOT / "paper"


@pytest.fixture
def committed_paper(monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(PAPER))
    return json.loads((PAPER / "numbers.json").read_text())


def listed_figures() -> set[str]:
    """Figure stems linked from figures/README.md (a file may answer several paper figures)."""
    return set(re.findall(r"\]\(([\w.-]+)\.pdf\)", (FIGURES / "README.md").read_text()))


def test_figures_readme_lists_exactly_the_figures_in_the_folder():
    listed = listed_figures()
    present = {p.stem for p in FIGURES.glob("*.pdf")}
    assert sorted(present - set(listed)) == [], "figures/ holds figures that figures/README.md does not list"
    assert sorted(set(listed) - present) == [], "figures/README.md lists figures not written"
    for stem in listed:
        for suffix in (".png", ".json"):
            assert (FIGURES / f"{stem}{suffix}").is_file(), f"{stem}{suffix} missing"
        stamp = json.loads((FIGURES / f"{stem}.json").read_text())
        assert stamp["figure"] == stem and stamp["profile"] and stamp["commit"]


def test_main_tex_uses_only_existing_figures_and_defined_numbers():
    tex = (PAPER / "main.tex").read_text()
    figures = re.findall(r"\\includegraphics(?:\[[^]]*\])?\{([^}]+)\}", tex)
    assert figures, "main.tex includes no figure"
    assert [f for f in figures if not (FIGURES / f).is_file()] == []
    assert {Path(f).stem for f in figures} <= listed_figures()
    defined = set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", (PAPER / "numbers.tex").read_text()))
    latex = {"AA"}  # LaTeX's own capitalised commands used in main.tex
    used = set(re.findall(r"\\([A-Z][A-Za-z]*)", tex)) - latex
    assert sorted(used - defined) == [], "main.tex uses number macros that numbers.tex does not define"
    assert {n.macro for n in report.load_claims().numbers} <= defined


def test_generated_report_macros_and_readme_are_up_to_date(committed_paper):
    document = committed_paper
    assert "default" in document["profiles"], "paper/numbers.json has no default-profile run"
    numbers = document["profiles"]["default"]["numbers"]
    measured = [n.key for n in report.load_claims().numbers if n.notebook is not None]
    assert sorted(k for k in measured if k not in numbers) == [], "numbers missing from the run"
    assert document["profiles"]["default"]["missing"] == []
    assert (PAPER / "README.md").read_text() == report.render_report(document)
    assert (PAPER / "numbers.tex").read_text() == report.render_tex(document)
    assert report.main(["--check"]) == 0, "README results table out of date: run python -m cryoorient.report"


def test_numbers_json_matches_the_saved_results(committed_paper):
    fresh = report.numbers_document()
    assert fresh["profiles"] == committed_paper["profiles"]
    assert fresh["claims"] == committed_paper["claims"]
