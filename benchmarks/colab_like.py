"""Wall time and peak memory of each notebook as a Colab user runs it: fresh runtime, install cell, downloads.

The notebooks' own ``pytest --nbval`` and ``make notebooks`` runs use a checkout: an editable
install, the repository's ``models/`` and a warm ``data/`` cache. A Colab user has none of that:
Python 3.12 with PyTorch and the scientific stack preinstalled, an empty runtime, the notebook's
second cell (``pip install "cryoorient @ git+https://github.com/..."`` when ``google.colab`` is
imported), and the shipped models and committed results fetched over HTTP from the commit pip
installed (``direct_url.json``). This script reproduces that here, one notebook at a time:

* **Python 3.12 and Colab's image.** A base virtual environment (``build/colab-like/base-*``,
  made once, its wheels kept in ``build/colab-like/wheelhouse``) holds what Colab preinstalls and
  the package uses (:data:`COLAB_IMAGE`: ``torch==2.13.0`` from PyPI, numpy, scipy, matplotlib,
  ...), plus ipykernel and papermill to run the notebook. Never cryoorient.
* **A fresh runtime per notebook.** A new virtual environment layered on the base one (a ``.pth``
  file adds the base's site-packages after its own, so ``pip install`` writes into the new one
  and the base stays clean), a new ``HOME``, an empty pip cache, an empty data cache
  (``CRYOORIENT_DATA``) and an empty working folder (Colab's ``/content``). ``CRYOORIENT_MAPS``
  points to ``../shared/data`` when it exists (the 5j0n map; a Colab user downloads it instead).
* **The install cell as written.** An IPython startup file imports a stub ``google.colab``
  package, so the notebook's ``if "google.colab" in sys.modules`` branch runs ``pip install``;
  git's ``url.<base>.insteadOf`` (in a throwaway ``GIT_CONFIG_GLOBAL``, never ``~/.gitconfig``)
  sends ``https://github.com/OWNER/NAME`` to a local bare clone whose default branch is the
  measured commit, so pip records the GitHub URL and that commit as Colab's install does.
* **Shipped models and results over HTTP.** A local HTTP server serves
  ``/OWNER/NAME/COMMIT/PATH`` from ``git cat-file blob COMMIT:PATH`` (what
  raw.githubusercontent.com serves), and ``CRYOORIENT_RAW_URL`` points the package to it.

Each notebook (``notebooks/NN_*.ipynb`` at the commit, ``-p profile default``) runs under
papermill; its wall time includes starting the kernel and the install cell (whose own time is
reported too). Peak memory is the largest sum of resident set sizes (RSS) over the kernel
process and all its descendants (pip, git, data-loader workers), polled every 0.5 s with psutil
(``resource.getrusage(RUSAGE_CHILDREN)`` would give only the largest single process). Pages
shared between processes count once per process, so the sum can exceed the physical use.

Prints a Markdown table and writes ``benchmarks/results/colab_like.json`` (entries of notebooks
not rerun are kept). Executed notebooks and papermill's logs go to ``build/colab-like/``. Run it
with an interpreter that has psutil (the project's ``.venv``), one notebook at a time, e.g.::

    nice -n 10 .venv/bin/python benchmarks/colab_like.py [--notebooks 01 02] [--commit REV] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "colab-like"
RESULTS = ROOT / "benchmarks" / "results" / "colab_like.json"
SHARED_MAPS = ROOT.parent / "shared" / "data"
DEFAULT_PYTHON = Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python3.12"
DEFAULT_REPOSITORY = "https://github.com/cryoorient/cryoorient"
POLL_SECONDS = 0.5
COLAB_CLONE = Path("/content/cryoorient")
"""Where the install cells that need saved results clone the repository (Colab's working folder)."""

TORCH = "torch==2.13.0"
"""Colab ships a CUDA build of PyTorch; PyPI's Linux wheel for Python 3.12 is one too (about 2.6 GB
of wheels with its NVIDIA libraries), installed once into the base environment."""

COLAB_IMAGE = (TORCH, "numpy", "scipy", "matplotlib", "pandas", "tqdm", "pyyaml", "requests", "pooch",
               "ipywidgets", "ipykernel", "papermill", "pip")
"""What the base environment preinstalls: the part of Colab's image the package depends on (so the
install cell installs only what Colab lacks: mrcfile, starfile, gemmi, ...), ipykernel, and
papermill to run the notebooks (not on Colab, but it runs outside the kernel's process tree)."""

BASE_LAYOUT = 2
"""Bumped when the base environment is made differently, so that an older one is made again."""

MEMORY_METHOD = (
    f"psutil, every {POLL_SECONDS} s: the sum of RSS over the kernel process and all its descendants "
    "(pip, git, workers); the peak of these sums. Shared pages count once per process."
)


@dataclass
class Served:
    """What the local HTTP server answered during one notebook: ``(path, status, bytes)`` per request."""

    requests: list[tuple[str, int, int]] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts, bytes and the paths served or missing, for the JSON."""
        found = [r for r in self.requests if r[1] == 200]
        return {
            "files": len(found),
            "bytes": sum(r[2] for r in found),
            "paths": sorted({r[0] for r in found}),
            "missing": sorted({r[0] for r in self.requests if r[1] != 200}),
        }


@dataclass
class Measurement:
    """One notebook's run: times, memory, outcome and what it downloaded."""

    notebook: str
    commit: str
    ok: bool
    wall_seconds: float
    install_seconds: float | None
    peak_kernel_tree_rss_bytes: int
    peak_total_rss_bytes: int
    peak_cell: str | None
    kernel_python: str | None
    installed_from: list[str] | None
    error: str | None
    warnings: list[str]
    downloads: dict
    output: str
    log: str
    date: str = field(default_factory=lambda: datetime.datetime.now().astimezone().isoformat("T", "seconds"))


def git(*args: str, cwd: Path = ROOT) -> str:
    """Output of ``git ARGS`` in ``cwd`` (read-only commands only on the working repository)."""
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def run(command: list[str], **kwargs) -> None:
    """Run ``command``, echoing it, and fail loudly with its output when it fails."""
    print("$", " ".join(str(c) for c in command), flush=True)
    subprocess.run(command, check=True, **kwargs)


def output_of(python: Path, code: str, *args: str) -> str:
    """What ``python -c CODE ARGS`` prints."""
    command = [str(python), "-c", code, *args]
    done = subprocess.run(command, cwd="/", capture_output=True, text=True, check=True)
    return done.stdout.strip()


def resolve_commit(rev: str) -> str:
    """The full hash of ``rev`` in the repository."""
    return git("rev-parse", "--verify", f"{rev}^{{commit}}")


def notebooks_at(commit: str, wanted: list[str] | None) -> list[str]:
    """Names (``NN_name``) of the notebooks at ``commit``, those starting with one of ``wanted`` if given."""
    listed = git("ls-tree", "--name-only", commit, "notebooks/").splitlines()
    names = sorted(Path(p).stem for p in listed if re.fullmatch(r"notebooks/\d\d_\w+\.ipynb", p))
    if wanted:
        names = [n for n in names if any(n.startswith(w) for w in wanted)]
        if not names:
            raise SystemExit(f"no notebook at {commit[:12]} matches {' '.join(wanted)}")
    return names


def repository_of(notebook: dict) -> str:
    """The ``REPOSITORY = "https://github.com/..."`` URL of a notebook's install cell (default if none)."""
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        match = re.search(r'REPOSITORY\s*=\s*"(https://github\.com/[\w.-]+/[\w.-]+?)/?"', source)
        if match:
            return match[1]
    return DEFAULT_REPOSITORY


def bare_clone(commit: str, work: Path, repository: str) -> Path:
    """A bare clone under ``work/github/OWNER/NAME.git`` whose default branch is ``commit``."""
    owner, name = repository.removeprefix("https://github.com/").split("/")
    bare = work / "github" / owner / f"{name}.git"
    if not bare.exists():
        run(["git", "clone", "--bare", "--quiet", str(ROOT), str(bare)])
    git("cat-file", "-e", f"{commit}^{{commit}}", cwd=bare)
    git("update-ref", "refs/heads/colab-like", commit, cwd=bare)
    git("symbolic-ref", "HEAD", "refs/heads/colab-like", cwd=bare)
    return bare


def write_gitconfig(work: Path) -> Path:
    """A throwaway global git config sending every ``https://github.com/`` URL to ``work/github/``."""
    config = work / "gitconfig"
    local = (work / "github").as_uri() + "/"
    config.write_text(f'[url "{local}"]\n\tinsteadOf = https://github.com/\n'
                      '[advice]\n\tdetachedHead = false\n')
    return config


def raw_handler(bare: Path, served: Served) -> type[BaseHTTPRequestHandler]:
    """A request handler serving ``/OWNER/NAME/COMMIT/PATH`` from ``git cat-file blob COMMIT:PATH``."""

    class RawHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            """Answer with the file at the commit, or 404."""
            parts = self.path.split("?", 1)[0].lstrip("/").split("/", 3)
            body = self._blob(parts[2], parts[3]) if len(parts) == 4 else None
            status = 200 if body is not None else 404
            served.requests.append(("/".join(parts[3:]) or self.path, status, len(body or b"")))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def _blob(self, commit: str, path: str) -> bytes | None:
            if not re.fullmatch(r"[0-9a-f]{7,40}", commit) or ".." in path.split("/"):
                return None
            command = ["git", "cat-file", "blob", f"{commit}:{path}"]
            done = subprocess.run(command, cwd=bare, capture_output=True)
            return done.stdout if done.returncode == 0 else None

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
            """Quiet: requests are recorded in ``served``."""

    return RawHandler


@contextmanager
def raw_server(bare: Path, served: Served) -> Iterator[str]:
    """Serve the bare clone like raw.githubusercontent.com; yield the ``CRYOORIENT_RAW_URL`` template."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), raw_handler(bare, served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{{owner}}/{{name}}/{{commit}}/"
    finally:
        server.shutdown()
        server.server_close()


def site_packages(venv: Path) -> Path:
    """The ``site-packages`` folder of a virtual environment."""
    return next((venv / "lib").glob("python3*/site-packages"))


def base_environment(python: Path, wheelhouse: Path, packages: tuple[str, ...]) -> tuple[Path, float]:
    """The base environment (Colab's image) for ``packages``, made if needed; and the seconds making took.

    Its wheels are kept in ``wheelhouse``: the first time pip downloads them from PyPI (torch's CUDA
    build and its NVIDIA libraries: about 2.6 GB), afterwards it installs from there offline.
    """
    version = output_of(python, "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')")
    torch = next((p.split("==")[1] for p in packages if p.startswith("torch==")), "any")
    venv = BUILD / f"base-py{version}-torch{torch}"
    marker = venv / "colab-like.json"
    wanted = {"packages": list(packages), "layout": BASE_LAYOUT}
    made = json.loads(marker.read_text()) if marker.is_file() else {}
    if {key: made.get(key) for key in wanted} == wanted:
        return venv, 0.0
    start = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    run([str(python), "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    offline = [*pip, "install", "-q", "-U", "--no-index", "--find-links", str(wheelhouse), *packages]
    if subprocess.run(offline).returncode != 0:
        run([*pip, "download", "-q", "--only-binary=:all:", "-d", str(wheelhouse), *packages])
        run(offline)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(wanted | {"seconds": round(seconds, 1)}, indent=1) + "\n")
    return venv, seconds


def package_versions(venv: Path, names: list[str]) -> dict[str, str | None]:
    """Installed versions of ``names`` in a virtual environment (``None`` when missing)."""
    code = ("import json, sys; from importlib import metadata as m\n"
            "def v(n):\n    try: return m.version(n)\n    except m.PackageNotFoundError: return None\n"
            "print(json.dumps({n: v(n) for n in sys.argv[1:]}))")
    return json.loads(output_of(venv / "bin" / "python", code, *names))


def fresh_runtime(base: Path, python: Path, folder: Path) -> Path:
    """A new virtual environment ``folder/venv`` over ``base``, ``google.colab`` imported at kernel start.

    No pip of its own: ``python -m pip`` runs the base's pip, which installs into the running
    interpreter's environment (the new one). The stub ``google/colab`` is a namespace-safe package
    (no ``google/__init__.py``), imported by an IPython startup file in the runtime's ``HOME``.
    """
    venv = folder / "venv"
    run([str(python), "-m", "venv", "--without-pip", str(venv)])
    site = site_packages(venv)
    (site / "colab_like_base.pth").write_text(f"import site; site.addsitedir({str(site_packages(base))!r})\n")
    stub = site / "google" / "colab"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('"""Colab\'s google.colab, a stand-in (benchmarks/colab_like.py)."""\n')
    startup = folder / "home" / ".ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-google-colab.py").write_text("import google.colab  # as Colab's kernel does\n")
    for name in ("data", "content", "pip-cache"):
        (folder / name).mkdir()
    return venv


def kernel_environment(folder: Path, venv: Path, gitconfig: Path, raw_url: str) -> dict[str, str]:
    """The environment papermill and the kernel run in: the runtime's folders, nothing of the checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRYOORIENT_", "JUPYTER", "IPYTHON", "PIP_", "GIT_"))
           and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "MPLCONFIGDIR")}
    env |= {
        "HOME": str(folder / "home"),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "PIP_CACHE_DIR": str(folder / "pip-cache"),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "CRYOORIENT_DATA": str(folder / "data"),
        "CRYOORIENT_RAW_URL": raw_url,
        "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])),
    }
    if SHARED_MAPS.is_dir():
        env["CRYOORIENT_MAPS"] = str(SHARED_MAPS)
    return env


class TreePoller:
    """Peak summed RSS of the kernel's process tree (and of papermill's whole tree), polled in a thread."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_kernel = 0
        self.peak_kernel_time: datetime.datetime | None = None
        self.peak_total = 0
        self.kernel_python: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> TreePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _rss(processes: list[psutil.Process]) -> int:
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _kernel(self, children: list[psutil.Process]) -> psutil.Process | None:
        for child in children:
            try:
                if any("ipykernel_launcher" in part for part in child.cmdline()):
                    self.kernel_python = self.kernel_python or child.cmdline()[0]
                    return child
            except psutil.Error:
                continue
        return None

    def sample(self) -> None:
        """One sample of both sums."""
        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            return
        self.peak_total = max(self.peak_total, self._rss([self.root, *children]))
        kernel = self._kernel(children)
        if kernel is not None:
            try:
                tree = [kernel, *kernel.children(recursive=True)]
            except psutil.Error:
                return
            rss = self._rss(tree)
            if rss > self.peak_kernel:
                self.peak_kernel, self.peak_kernel_time = rss, datetime.datetime.now(datetime.timezone.utc)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(POLL_SECONDS)


def run_papermill(venv: Path, source: Path, output: Path, log: Path, folder: Path, env: dict[str, str],
                  timeout: float) -> tuple[int, float, TreePoller]:
    """Execute the notebook with papermill in the runtime; its exit code, wall seconds and memory poller."""
    command = [str(venv / "bin" / "python"), "-m", "papermill", str(source), str(output),
               "-p", "profile", "default", "-k", "python3", "--cwd", str(folder / "content"),
               "--log-output", "--no-progress-bar"]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    with log.open("w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        with TreePoller(process.pid) as poller:
            try:
                code = process.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                os.killpg(process.pid, 9)
                process.wait()
                code = -9
    return code, time.perf_counter() - start, poller


def install_seconds(notebook: dict) -> float | None:
    """The duration papermill recorded for of the install cell (the one testing ``google.colab``)."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code" and "google.colab" in "".join(cell["source"]):
            return cell.get("metadata", {}).get("papermill", {}).get("duration")
    return None


def peak_cell(notebook: dict | None, when: datetime.datetime | None) -> str | None:
    """Which cell ran at ``when`` (the peak): its number among the code cells and its first code line.

    Papermill stores each cell's start and end (UTC) in its metadata; ``None`` when none spans ``when``.
    """
    if notebook is None or when is None:
        return None
    code_cells = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    for number, cell in enumerate(code_cells, start=1):
        times = cell.get("metadata", {}).get("papermill", {})
        if not times.get("start_time") or not times.get("end_time"):
            continue
        start, end = (datetime.datetime.fromisoformat(times[k].replace("Z", "+00:00"))
                      for k in ("start_time", "end_time"))
        if start <= when <= end:
            lines = [line.strip() for line in "".join(cell["source"]).splitlines()]
            first = next((line for line in lines if line and not line.startswith("#")), "")
            return f"code cell {number}: {first[:80]}"
    return None


def notebook_error(notebook: dict | None, log: Path) -> str | None:
    """The first error output of an executed notebook, else the end of papermill's log."""
    for cell in (notebook or {}).get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename')}: {out.get('evalue')}"[:2000]
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join(lines[-15:]) or None


def notebook_warnings(notebook: dict | None) -> list[str]:
    """Distinct lines of the notebook's stderr that mention a warning (model downloads, fallbacks)."""
    found: list[str] = []
    for cell in (notebook or {}).get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                for line in "".join(out.get("text", "")).splitlines():
                    if "Warning" in line and line.strip() not in found:
                        found.append(line.strip()[:300])
    return found[:30]


def installed_from(venv: Path) -> list[str] | None:
    """``[url, commit]`` of cryoorient's ``direct_url.json`` in the runtime (``None``: not installed)."""
    code = ("import json; from importlib import metadata as m\n"
            "try: d = json.loads(m.distribution('cryoorient').read_text('direct_url.json') or '{}')\n"
            "except m.PackageNotFoundError: d = None\n"
            "print(json.dumps(d and [d.get('url'), d.get('vcs_info', {}).get('commit_id')]))")
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd="/")
    return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


def runtime_path(path: str | None, folder: Path) -> str | None:
    """``path`` inside the throwaway runtime ``folder`` as ``RUNTIME/...`` (no machine path in the JSON)."""
    if path is None:
        return None
    try:
        return str(Path("RUNTIME") / Path(path).relative_to(folder))
    except ValueError:
        return Path(path).name


def measure(name: str, commit: str, base: Path, python: Path, work: Path, gitconfig: Path, raw_url: str,
            served: Served, keep: bool, timeout: float) -> Measurement:
    """Run one notebook in a fresh runtime and measure it."""
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    # the install cells of notebooks 05-08 and 99 clone the repository to Colab's /content/cryoorient
    # for its saved results: a fresh runtime has none from an earlier notebook
    shutil.rmtree(COLAB_CLONE, ignore_errors=True)
    try:
        venv = fresh_runtime(base, python, folder)
        source = folder / f"{name}.ipynb"
        source.write_bytes(subprocess.run(["git", "show", f"{commit}:notebooks/{name}.ipynb"], cwd=ROOT,
                                          capture_output=True, check=True).stdout)
        output, log = BUILD / f"{name}.ipynb", BUILD / f"{name}.log"
        served.requests.clear()
        env = kernel_environment(folder, venv, gitconfig, raw_url)
        code, wall, poller = run_papermill(venv, source, output, log, folder, env, timeout)
        executed = json.loads(output.read_text()) if output.is_file() else None
        return Measurement(
            notebook=name, commit=commit, ok=code == 0, wall_seconds=round(wall, 1),
            install_seconds=None if executed is None else install_seconds(executed),
            peak_kernel_tree_rss_bytes=poller.peak_kernel, peak_total_rss_bytes=poller.peak_total,
            peak_cell=peak_cell(executed, poller.peak_kernel_time),
            kernel_python=runtime_path(poller.kernel_python, folder), installed_from=installed_from(venv),
            error=None if code == 0 else (f"timed out after {timeout:.0f} s" if code == -9 else
                                          notebook_error(executed, log)),
            warnings=notebook_warnings(executed), downloads=served.summary(),
            output=str(output.relative_to(ROOT)), log=str(log.relative_to(ROOT)),
        )
    finally:
        if keep:
            print(f"kept {folder}", flush=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(COLAB_CLONE, ignore_errors=True)


def environment_info(python: Path, base: Path, base_seconds: float) -> dict:
    """The machine and the Colab-like environment, for the JSON."""
    return {
        "python": output_of(python, "import platform; print(platform.python_version())"),
        "preinstalled": list(COLAB_IMAGE),
        "versions": package_versions(base, ["torch", "numpy", "scipy", "matplotlib", "pip", "papermill"]),
        "base_environment": str(base.relative_to(ROOT)),
        "base_environment_seconds": round(base_seconds, 1),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "maps": os.path.relpath(SHARED_MAPS, ROOT) if SHARED_MAPS.is_dir() else None,  # no machine path
        "memory_method": MEMORY_METHOD,
    }


def write_results(path: Path, commit: str, environment: dict, measured: list[Measurement]) -> None:
    """Write the JSON, keeping the entries of notebooks not measured this time."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    entries = {e["notebook"]: e for e in old.get("notebooks", [])}
    entries |= {m.notebook: asdict(m) for m in measured}
    notebooks = [entries[k] for k in sorted(entries)]
    record = {"commit": commit, "environment": environment, "notebooks": notebooks}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def minutes(seconds: float | None) -> str:
    """``95.2`` as ``1 min 35 s``."""
    if seconds is None:
        return "–"
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s"


def print_table(measured: list[Measurement]) -> None:
    """The Markdown table: notebook, wall time, install cell, peak RSS, result."""
    print("\n| notebook | wall time | of which install cell | peak RSS (kernel tree) | result |")
    print("| --- | ---: | ---: | ---: | --- |")
    for m in measured:
        last = (m.error or "").strip().splitlines()[-1:] or [""]
        result = "ok" if m.ok else f"error: {last[0][:80]}"
        gib = m.peak_kernel_tree_rss_bytes / 2**30
        times = f"{minutes(m.wall_seconds)} | {minutes(m.install_seconds)}"
        print(f"| {m.notebook} | {times} | {gib:.2f} GiB | {result} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", nargs="+", metavar="NN", help="notebooks to run (prefixes: 01 02)")
    parser.add_argument("--commit", default="HEAD", help="the commit measured (default HEAD)")
    parser.add_argument("--keep", action="store_true", help="keep each runtime's temporary folder")
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="the Python 3.12 interpreter")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "colab-like",
                        help="where the temporary runtimes and the bare clone go")
    parser.add_argument("--wheelhouse", type=Path, default=BUILD / "wheelhouse",
                        help="wheels of the base environment, downloaded once")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds allowed per notebook")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON written")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Measure the chosen notebooks one after another; print the table and write the JSON."""
    args = parse_args(argv)
    python = args.python if args.python.is_file() else Path(shutil.which("python3.12") or args.python)
    commit = resolve_commit(args.commit)
    names = notebooks_at(commit, args.notebooks)
    BUILD.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.work))
    base, base_seconds = base_environment(python, args.wheelhouse, COLAB_IMAGE)
    print(f"base environment {base} ({'made in ' + minutes(base_seconds) if base_seconds else 'reused'})")
    first = json.loads(git("show", f"{commit}:notebooks/{names[0]}.ipynb"))
    bare = bare_clone(commit, work, repository_of(first))
    gitconfig = write_gitconfig(work)
    environment = environment_info(python, base, base_seconds)
    served = Served()
    measured: list[Measurement] = []
    try:
        with raw_server(bare, served) as raw_url:
            for name in names:
                print(f"\n== {name} at {commit[:12]}", flush=True)
                measured.append(measure(name, commit, base, python, work, gitconfig, raw_url, served,
                                        args.keep, args.timeout))
                write_results(args.output, commit, environment, measured)
                print(json.dumps(asdict(measured[-1]), indent=1), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(measured)
    print(f"\nwritten: {args.output}")
    sys.exit(0 if all(m.ok for m in measured) else 1)


if __name__ == "__main__":
    main()
