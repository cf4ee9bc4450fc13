"""The course book (`make book`): built from the notebooks' stored outputs, read in a browser.

The book is built once per session into a temporary folder with `book/build.py`, as `make book`
does. The checks on the HTML files need the `book` extra (`make test` installs it); the checks in
a browser need a Chromium on the PATH (`.ci/run` installs Debian's `chromium`) and skip without one.
Chromium runs headless with every host name unresolvable, so a page that needed the network to
show its images or its maths would fail here.
"""

import base64
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
COLAB = "https://colab.research.google.com/github/cryoorient/cryoorient/blob/main/notebooks/{}.ipynb"
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
BOOK_EXTRA = ("sphinx", "myst_nb", "sphinx_book_theme", "mathjax")

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on the PATH (.ci/run installs Debian's chromium)"
)


def _missing_extra():
    import importlib.util

    return [name for name in BOOK_EXTRA if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="session")
def book(tmp_path_factory):
    missing = _missing_extra()
    if missing:
        pytest.skip(
            f"the book extra is not installed ({', '.join(missing)}): `make book` or `make test` installs it"
            " (Python >= 3.11)"
        )
    tmp = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, str(ROOT / "book" / "build.py"), "--out", str(tmp / "html"),
         "--src", str(tmp / "src")],
        capture_output=True, text=True, timeout=900, check=False,
    )
    print(f"book built in {time.perf_counter() - start:.1f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return tmp / "html"


_FETCHED = ("style", "script", "font")  # what <link rel="preload" as=...> makes the browser fetch


class _Page(HTMLParser):
    """The images, links, scripts and style sheets of one HTML page."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.scripts, self.styles = [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        elif tag == "link" and ("stylesheet" in (attrs.get("rel") or "") or attrs.get("as") in _FETCHED):
            self.styles.append(attrs.get("href", ""))


def parse(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def page_text(path):
    """The text of an HTML page, quotes straightened (Sphinx curls them)."""
    text = html.unescape(re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8")))
    return text.translate({0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'})


def notebook_source_has_maths(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return any("$" in "".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def notebook_images(notebook):
    """SHA-256 of every image a notebook stores in its outputs."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    found = []
    for output in (o for c in cells for o in c.get("outputs", [])):
        for mime, data in output.get("data", {}).items():
            if mime in ("image/png", "image/jpeg", "image/gif"):
                found.append(hashlib.sha256(base64.b64decode("".join(data))).hexdigest())
    return found


ERROR_MARKS = ("Traceback (most recent call last)", 'class="output traceback', "ansi-red")


def test_chapters_are_the_notebooks_in_order(book):
    assert CHAPTERS, "no notebooks/NN_*.ipynb"
    assert any(notebook_images(nb) for nb in CHAPTERS), "no notebook stores a figure: outputs stripped?"
    index = parse(book / "index.html")
    chapters = [link for link in index.links if link.startswith("notebooks/") and "#" not in link]
    chapters = list(dict.fromkeys(chapters))  # the page lists them twice: navigation and contents
    assert chapters == [f"notebooks/{nb.stem}.html" for nb in CHAPTERS]
    for link in ("paper/README.html", "figures/README.html"):
        assert link in index.links


def test_index_shows_the_readme_results_table(book):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- results:begin -->")[1].split("<!-- results:end -->")[0]
    rows = [row for row in table.splitlines() if row.startswith("| ") and "---" not in row]
    claims = [row.split("|")[1].strip() for row in rows]
    assert len(claims) > 2, "no results table in the README"
    text = page_text(book / "index.html")
    for claim in claims[1:]:  # [0] is the header
        assert claim in text, claim


@pytest.mark.parametrize("notebook", CHAPTERS, ids=[nb.stem for nb in CHAPTERS])
def test_chapter_page(book, notebook):
    path = book / "notebooks" / f"{notebook.stem}.html"
    assert path.is_file(), f"no page for {notebook.name}"
    page = parse(path)
    # a launch button for each service, opening this notebook from the repository
    badge = re.search(r"\(https://mybinder\.org/v2/gh/([^)]+)\)", (ROOT / "README.md").read_text()).group(0)
    binder = f"{badge[1:-1]}/{notebook.name}"
    assert COLAB.format(notebook.stem) in page.links
    assert binder in page.links, (binder, [link for link in page.links if "binder" in link])
    # every image the page shows is in the build and not empty; every stored figure is among them
    shown = set()
    for src in page.images:
        image = (path.parent / src).resolve()
        assert image.is_file() and image.stat().st_size > 0, src
        shown.add(hashlib.sha256(image.read_bytes()).hexdigest())
    stored = notebook_images(notebook)  # may be none: a chapter of prose and printed numbers
    assert set(stored) <= shown, f"{len(set(stored) - shown)} of {notebook.name}'s figures not on its page"
    assert not [mark for mark in ERROR_MARKS if mark in path.read_text(encoding="utf-8")]


def test_report_and_figures_pages(book):
    report = (book / "paper" / "README.html").read_text(encoding="utf-8")
    assert "Reproduction report" in report and "<table" in report
    page = parse(book / "figures" / "README.html")
    pngs = sorted((ROOT / "figures").rglob("*.png"))
    shown = {hashlib.sha256((book / "figures" / src).read_bytes()).hexdigest() for src in page.images}
    assert {hashlib.sha256(p.read_bytes()).hexdigest() for p in pngs} <= shown


def test_nothing_is_fetched_from_the_network(book):
    remote = re.compile(r"^(https?:)?//")
    for path in book.rglob("*.html"):
        page = parse(path)
        fetched = [u for u in page.scripts + page.styles if remote.match(u)]
        assert not fetched, (path.relative_to(book), fetched)
    remote_css = re.compile(r"(url\(\s*['\"]?|@import\s+['\"])(https?:)?//")
    for css in (book / "_static").rglob("*.css"):
        assert not remote_css.search(css.read_text(errors="replace")), css
    chapter = parse(book / "notebooks" / f"{CHAPTERS[0].stem}.html")
    assert any(src.split("?")[0].endswith("_static/mathjax/tex-mml-chtml.js") for src in chapter.scripts)


# In the browser: a probe added to a copy of each page waits for MathJax, then loads every image the
# page shows and records its natural width, and counts the maths typeset and MathJax's errors.
PROBE = """<script>
window.addEventListener("load", async () => {
  const out = {};
  try {
    if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
    out.images = await Promise.all([...document.images].map(img => new Promise(done => {
      const probe = new Image();
      probe.onload = () => done([img.getAttribute("src"), probe.naturalWidth]);
      probe.onerror = () => done([img.getAttribute("src"), 0]);
      probe.src = img.src;
    })));
    const maths = [...document.querySelectorAll(".math.notranslate")];
    out.maths = maths.length;
    out.typeset = maths.filter(m => m.querySelector("mjx-container")).length;
    out.merrors = document.querySelectorAll("mjx-merror").length;
  } catch (error) { out.error = String(error); }
  const pre = document.createElement("pre");
  pre.id = "book-probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def render(page, tmp_path):
    """Open a copy of `page` with the probe in headless Chromium; its final DOM and the probe's record."""
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    run = subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium'}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=30000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    probe.unlink()
    found = re.search(r'<pre id="book-probe"[^>]*>(.*?)</pre>', run.stdout, re.S)
    assert found, f"the probe did not report (exit {run.returncode}): {run.stderr[-2000:]}"
    record = json.loads(html.unescape(found.group(1)))
    assert "error" not in record, record["error"]
    return run.stdout, record


PAGES = [f"notebooks/{nb.stem}.html" for nb in CHAPTERS]
PAGES += ["index.html", "paper/README.html", "figures/README.html"]


@needs_chromium
@pytest.mark.parametrize("name", PAGES)
def test_page_renders_in_chromium(book, name, tmp_path):
    dom, record = render(book / name, tmp_path)
    broken = [src for src, width in record["images"] if width == 0]
    assert not broken, f"images that did not load: {broken}"
    assert len(record["images"]) >= len(parse(book / name).images)
    if name.startswith("notebooks/"):
        notebook = ROOT / "notebooks" / Path(name).with_suffix(".ipynb").name
        assert len(record["images"]) >= len(set(notebook_images(notebook)))
        if notebook_source_has_maths(notebook):
            assert record["maths"] > 0, "the notebook has $...$ but its page no maths: is dollarmath on?"
    assert record["typeset"] == record["maths"], f"{record['maths'] - record['typeset']} formulas left as TeX"
    assert record["merrors"] == 0, "MathJax could not typeset some formulas"
    assert not [mark for mark in ERROR_MARKS if mark in dom]
