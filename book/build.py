"""Build the course book: static HTML of the executed notebooks, from their stored outputs.

``make book`` runs ``python book/build.py``. It lays out a Sphinx source tree under
``build/book-src/`` that mirrors the repository (so that relative links between the README, the
report and the figures keep working), then runs Sphinx with myst-nb into ``build/book/``. Nothing
is executed (``nb_execution_mode = "off"`` in ``conf.py``) and nothing is fetched: MathJax is copied
from the ``django-static-mathjax`` package of the ``book`` extra.

The chapters are whatever ``notebooks/[0-9][0-9]_*.ipynb`` holds, in order; no notebook is named
here. Both folders are rebuilt from scratch on every run, so a renamed or removed notebook leaves no
stale page behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
CHAPTERS = "[0-9][0-9]_*.ipynb"

# The parts of MathJax 3's es5 distribution that the book's pages use: the TeX-to-CHTML bundle, its
# fonts, the TeX extensions it loads on demand, and the menu and accessibility modules the menu
# loads. (The speech rule maps, 4 MB, are left out: they load only when a reader turns speech on.)
MATHJAX_PARTS = ("tex-mml-chtml.js", "output/chtml/fonts", "input/tex/extensions", "ui", "a11y")


def chapters(root: Path = ROOT) -> list[Path]:
    """The executed notebooks that make the chapters, in reading order."""
    return sorted((root / "notebooks").glob(CHAPTERS))


def mathjax_dir() -> Path:
    """MathJax 3's es5 folder as installed by ``django-static-mathjax`` (the ``book`` extra)."""
    try:
        import mathjax  # django-static-mathjax: a copy of MathJax 3.2, no Django needed to read it
    except ImportError as error:
        raise SystemExit(
            "The book needs the `book` extra: `make book` installs it, "
            "or `pip install -e '.[book]'` (Python >= 3.11)."
        ) from error
    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (es5 / "tex-mml-chtml.js").is_file():
        raise SystemExit(f"MathJax's tex-mml-chtml.js is not in {es5}; reinstall django-static-mathjax.")
    return es5


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def figures_page(figures: Path) -> str:
    """``figures/README.md`` retitled, followed by every figure the folder holds, one per section.

    Top-level figures are the default profile's; each subfolder (``long/``, ``paper/``) is
    another profile's and gets its own section. Each image links its PDF and its JSON sidecar (the
    parameters and the commit that produced it).
    """
    text = (figures / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    if lines and lines[0].startswith("# "):
        lines[0] = "# Figures"
    out = ["\n".join(lines), "", "## Every figure, default profile", ""]
    folders = [figures] + sorted(p for p in figures.iterdir() if p.is_dir() and any(p.glob("*.png")))
    for folder in folders:
        rel = folder.relative_to(figures).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        if prefix:
            out += [f"## Every figure, `{rel}` profile", ""]
        for png in sorted(folder.glob("*.png")):
            links = [f"[{ext[1:].upper()}]({prefix}{png.with_suffix(ext).name})"
                     for ext in (".pdf", ".json") if png.with_suffix(ext).is_file()]
            out += [f"### `{prefix}{png.stem}`", "", f"![{png.stem}]({prefix}{png.name})", ""]
            if links:
                out += [" · ".join(links), ""]
    return "\n".join(out) + "\n"


def assemble(src: Path, root: Path = ROOT) -> list[Path]:
    """Lay out the Sphinx source tree in ``src`` (emptied first); returns the chapters copied.

    ``src`` gets the book's own pages (``book/*.md``, ``conf.py``), the README (for the index to
    include its results table), the chapters under ``notebooks/``, the reproduction report as
    ``paper/README.md`` and the figures with their page as ``figures/README.md``.
    """
    notebooks = chapters(root)
    if not notebooks:
        raise SystemExit(f"No chapter: nothing matches notebooks/{CHAPTERS} under {root}.")
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for page in [*BOOK.glob("*.md"), BOOK / "conf.py"]:
        _copy(page, src / page.name)
    _copy(root / "README.md", src / "_includes" / "README.md")
    for notebook in notebooks:
        _copy(notebook, src / "notebooks" / notebook.name)
    _copy(root / "paper" / "README.md", src / "paper" / "README.md")
    _copy(root / "figures", src / "figures")
    (src / "figures" / "README.md").write_text(figures_page(root / "figures"), encoding="utf-8")
    es5 = mathjax_dir()
    for part in MATHJAX_PARTS:
        _copy(es5 / part, src / "_static" / "mathjax" / part)
    return notebooks


def build(out: Path, src: Path, root: Path = ROOT) -> int:
    """Assemble ``src`` and build the HTML book into ``out`` (emptied first); Sphinx's exit status.

    Warnings are errors: a broken link, a missing image or an unreadable notebook fails the build
    (Sphinx reports them all before it stops).
    """
    assemble(src, root)
    if out.exists():
        shutil.rmtree(out)
    from sphinx.cmd.build import build_main

    return build_main(["-b", "html", "-q", "-W", "-d", str(src / "_doctrees"), str(src), str(out)])


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python book/build.py [--out build/book] [--src build/book-src]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "book", help="HTML output folder")
    parser.add_argument("--src", type=Path, default=ROOT / "build" / "book-src",
                        help="generated Sphinx source tree (intermediate copies)")
    args = parser.parse_args(argv)
    status = build(args.out.resolve(), args.src.resolve())
    if status == 0:
        print(f"The book is in {args.out / 'index.html'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
