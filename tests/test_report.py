import re

import pytest

from cryoorient import report
from cryoorient.report import CLAIMS, NUMBERS, update_readme, verdict
from cryoorient.results import save_results


@pytest.mark.parametrize(
    ("paper", "ours", "better", "expected"),
    [
        ((0.16, 0.20), 0.18, "lower", "reproduced"),
        ((0.16, 0.20), 0.16, "lower", "reproduced"),
        ((0.16, 0.20), 0.07, "lower", "better"),
        ((0.16, 0.20), 1.2, "lower", "worse"),
        (12.2, 13.0, "lower", "reproduced"),  # within 10 %
        (12.2, 8.6, "lower", "better"),
        (12.2, 33.9, "lower", "worse"),
        (0.9, 0.5, "higher", "worse"),
        (0.9, 0.99, "higher", "reproduced"),
        (0.9, 1.2, "higher", "better"),
        (0.2, None, "lower", "not run"),
    ],
)
def test_verdict(paper, ours, better, expected):
    assert verdict(paper, ours, better) == expected


def test_verdict_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="better"):
        verdict(1.0, 1.0, "smaller")


def test_every_claim_names_a_number_and_macros_are_letters_only():
    keys = {n.key for n in NUMBERS}
    assert all(c.key in keys for c in CLAIMS)
    macros = [n.macro for n in NUMBERS]
    assert len(set(macros)) == len(macros)
    assert all(re.fullmatch(r"[A-Za-z]+", m) for m in macros)


def test_update_readme_replaces_only_the_marked_part():
    text = "intro\n<!-- results:begin -->\nold\n<!-- results:end -->\noutro\n"
    assert update_readme(text, "new") == "intro\n<!-- results:begin -->\nnew\n<!-- results:end -->\noutro\n"
    with pytest.raises(ValueError, match="results:begin"):
        update_readme("no markers", "new")


def test_report_from_saved_results(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    save_results(
        "04_orientation_recovery",
        {
            "map": "5j0n",
            "exact": {"e_or": 1e-15, "recovery_seconds": 1.0, "alignment_seconds": 0.2},
            "perturbed": [{"variance": 0.0, "e_or": 0.0}, {"variance": 0.8, "e_or": 0.065}],
            "learned": {"0": {"e_or": 0.073}, "16": {"e_or": 1.18}},
        },
        profile="default",
    )
    document = report.numbers_document()
    numbers = document["profiles"]["default"]["numbers"]
    assert numbers["eor_perturbed"] == 0.065 and numbers["eor_learned_noisy"] == 1.18
    assert "02_distance_learning" in document["profiles"]["default"]["missing"]
    claims = {c["key"]: c for c in document["claims"]}
    assert claims["eor_learned_clean"]["verdict"] == {"default": "better", "paper": "not run"}
    assert claims["eor_learned_noisy"]["verdict"]["default"] == "worse"
    assert claims["res_clean"]["verdict"]["default"] == "not run"  # notebook 05 did not run
    text = report.render_report(document)
    row = "| E_OR from learned distances, 5j0n at σ² = 16 | 0.25–0.42 rad | 1.180 rad | worse | not run |"
    assert row in text
    assert "3.75 h" in text  # the paper's recovery time, in a unit a reader expects
    tex = report.render_tex(document)
    assert "\\newcommand{\\EorLearnedNoisy}{1.180}" in tex
    assert "\\newcommand{\\ResClean}{n/a}" in tex and "\\newcommand{\\PaperResClean}{12.2}" in tex
    written = report.write_report()
    assert [p.name for p in written] == ["numbers.json", "README.md", "numbers.tex"]
