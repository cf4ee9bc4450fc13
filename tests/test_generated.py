"""Guards on the committed generated files (issue 14, "Provenance").

They check what the last `make figures` / `make notebooks` / `make benchmark` left in the
repository: no machine paths, no stamp of a dirty checkout, and no number that two generated
files state differently. They fail until those files are regenerated from a clean commit; the
fix is to regenerate them (never to edit them by hand).
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

from cryoorient import report
from cryoorient.provenance import MACHINE_PATH

ROOT = Path(__file__).resolve().parent.parent
DIRTY = re.compile(r"\b[0-9a-f]{7,40}-dirty\b")


def generated_files() -> list[Path]:
    """Every committed file that a make target writes (the README only between its results markers)."""
    patterns = [
        "figures/*.json",
        "figures/*/*.json",  # profiles other than default
        "paper/README.md",
        "paper/numbers.json",
        "paper/numbers.tex",
        "paper/benchmarks.md",
        "paper/results/*/*.json",
        "benchmarks/results/*.json",
        "notebooks/*.ipynb",
    ]
    return sorted(p for pattern in patterns for p in ROOT.glob(pattern)) + [ROOT / "README.md"]


def generated_text(path: Path) -> str:
    """What a make target wrote into ``path``: a notebook's outputs, the README's results section."""
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return "\n".join(
            json.dumps(output, ensure_ascii=False)
            for cell in nb.cells
            if cell.cell_type == "code"
            for output in cell.outputs
        )
    text = path.read_text(encoding="utf-8")
    if path == ROOT / "README.md":
        return text.split(report.BEGIN, 1)[-1].split(report.END, 1)[0]
    return text


def offending_lines(path: Path, pattern: re.Pattern) -> list[str]:
    """Each match of ``pattern`` in what was generated into ``path``, with some text around it."""
    text = generated_text(path)
    return [
        f"{path.relative_to(ROOT)}: …{text[max(m.start() - 60, 0) : m.end() + 60]}…".replace("\n", " ")
        for m in pattern.finditer(text)
    ]


FILES = generated_files()


def file_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", FILES, ids=file_id)
def test_no_machine_paths(path):
    found = offending_lines(path, MACHINE_PATH)
    assert found == [], (
        "a generated file records where this machine keeps things; record names, SHA-256 and "
        "repository-relative paths (cryoorient.provenance) and regenerate:\n" + "\n".join(found)
    )


@pytest.mark.parametrize("path", FILES, ids=file_id)
def test_no_dirty_stamps(path):
    found = offending_lines(path, DIRTY)
    assert found == [], (
        "a generated file was stamped by a checkout with uncommitted source changes; commit, "
        "then regenerate:\n" + "\n".join(found)
    )


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in ``text`` (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(\s*-+\s*\|)+", line.replace(" ", "")):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def figures_notebook_table() -> str:
    nb = nbformat.read(ROOT / "notebooks" / "99_figures.ipynb", as_version=4)
    tables = [
        output["data"]["text/markdown"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "text/markdown" in output.get("data", {})
        and "| claim | method | paper |" in output["data"]["text/markdown"]
    ]
    assert len(tables) == 1, "notebook 99 should store exactly one claims table"
    return tables[0]


def disagreements(a: tuple[str, str], b: tuple[str, str]) -> list[str]:
    """Cells where two tables (name, text) state different things, named by row and column."""
    (name_a, text_a), (name_b, text_b) = a, b
    rows_a, rows_b = markdown_rows(text_a), markdown_rows(text_b)
    if len(rows_a) != len(rows_b) or rows_a[:1] != rows_b[:1]:
        return [f"{name_a} and {name_b} have different tables: {rows_a[:1]} vs {rows_b[:1]}"]
    header = rows_a[0]
    return [
        f"{row_a[0]!r}, {column!r}: {name_a} says {cell_a!r}, {name_b} says {cell_b!r}"
        for row_a, row_b in zip(rows_a[1:], rows_b[1:], strict=True)
        for column, cell_a, cell_b in zip(header, row_a, row_b, strict=True)
        if cell_a != cell_b
    ]


def test_figures_notebook_readme_and_numbers_json_state_the_same_claims():
    numbers = json.loads((ROOT / "paper" / "numbers.json").read_text(encoding="utf-8"))
    from_json = ("paper/numbers.json", report.readme_table(numbers))
    readme = ("README.md", generated_text(ROOT / "README.md"))
    notebook = ("notebooks/99_figures.ipynb", figures_notebook_table())
    report_md = (
        "paper/README.md",
        # the claims section only: the sections after it hold tables of their own
        (ROOT / "paper" / "README.md").read_text(encoding="utf-8").split("## Claims")[1].split("\n## ")[0],
    )
    found = (
        disagreements(from_json, readme)
        + disagreements(from_json, notebook)
        + disagreements(from_json, report_md)
    )
    assert found == [], "generated files disagree (regenerate them from one run):\n" + "\n".join(found)


def test_numbers_json_agrees_with_itself():
    numbers = json.loads((ROOT / "paper" / "numbers.json").read_text(encoding="utf-8"))
    found = [
        f"{claim['key']} ({profile}): claims say {value!r}, profiles say {ours!r}"
        for claim in numbers["claims"]
        for profile, value in claim["ours"].items()
        if value != (ours := numbers["profiles"].get(profile, {}).get("numbers", {}).get(claim["key"]))
    ]
    assert found == []
