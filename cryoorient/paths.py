"""Where the project reads and writes files: one place instead of ``"../data"`` strings.

Inside a checkout of the repository the folders are the repository's own ``data/``,
``figures/``, ``paper/`` and ``build/``; in an installed copy (Colab, pip) they are under the
current working directory (``data/`` goes to the user cache). Environment variables override each:
``CRYOORIENT_DATA``, ``CRYOORIENT_FIGURES``, ``CRYOORIENT_PAPER`` and ``CRYOORIENT_BUILD``.

``CRYOORIENT_MAPS`` lists extra folders (``os.pathsep``-separated, may be read-only) searched for
named density maps such as ``5j0n.mrc`` before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "CACHE_SCHEMA",
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "build_dir",
    "data_dir",
    "figures_dir",
    "git_commit",
    "map_dirs",
    "paper_dir",
    "repo_root",
    "sha256_file",
    "umask",
]

CACHE_SCHEMA = "0.1.0"
"""The layout and meaning of cached datasets and models, hashed into every cache key.

Bump it when what a cached dataset or model *means* changes (a projector convention, a record's
fields, how a training configuration is interpreted), never for a release: the keys of the shipped
models (``models/registry.json``) and of every cached dataset depend on it, and a release that
changes nothing cached must find them. Until 0.1.0 the keys hashed the package version itself, so
the first schema keeps that string and every existing key stays valid.
"""


def repo_root() -> Path | None:
    """The repository checkout the package is imported from, or ``None`` when installed."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def _folder(variable: str, in_repo: str, installed: Path) -> Path:
    value = os.environ.get(variable)
    root = repo_root()
    path = Path(value) if value else (root / in_repo if root is not None else installed)
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def data_dir() -> Path:
    """Cache folder for generated data (created if missing)."""
    return _folder("CRYOORIENT_DATA", "data", Path.home() / ".cache" / "cryoorient")


def map_dirs() -> list[Path]:
    """Folders searched for named maps: those in ``CRYOORIENT_MAPS`` that exist, then :func:`data_dir`."""
    listed = [Path(p) for p in os.environ.get("CRYOORIENT_MAPS", "").split(os.pathsep) if p]
    return [p.resolve() for p in listed if p.is_dir()] + [data_dir()]


def figures_dir() -> Path:
    """Folder the notebooks write figures to (created if missing)."""
    return _folder("CRYOORIENT_FIGURES", "figures", Path.cwd() / "figures")


def paper_dir() -> Path:
    """Folder of the reproduction report: notebook results, ``numbers.json``, ``numbers.tex`` (created)."""
    return _folder("CRYOORIENT_PAPER", "paper", Path.cwd() / "paper")


def build_dir() -> Path:
    """Folder for executed notebooks and other build products (created if missing)."""
    return _folder("CRYOORIENT_BUILD", "build", Path.cwd() / "build")


# Outputs that `make figures` itself rewrites: a change there does not make the *source* dirty.
GENERATED = (
    "figures",
    "paper/results",
    "paper/README.md",
    "paper/numbers.json",
    "paper/numbers.tex",
    "notebooks/*.ipynb",  # the stored outputs of the .py sources, rewritten by `make notebooks`
    "benchmarks/results",  # written one by one by `make benchmark` before its report
    "paper/benchmarks.md",
)


def git_commit() -> str:
    """Short commit of the checkout, ``-dirty`` when its sources have local changes; else ``"unknown"``.

    Changes to the generated outputs (:data:`GENERATED`, the paired ``.ipynb`` included) and
    untracked files do not count: a ``make figures`` or ``make notebooks`` run rewrites the outputs
    of the notebooks before it, and its stamps should still say that the code was the commit's.
    An installed copy (Colab's ``pip install git+https://...``) has no checkout: the commit pip
    recorded in the distribution's ``direct_url.json`` (PEP 610) is used, without a dirty flag.
    """
    root = repo_root()
    if root is None:
        return _installed_commit() or "unknown"
    excluded = [f":(exclude){path}" for path in GENERATED]
    try:
        head = _git(root, "rev-parse", "--short=12", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if changes else head or "unknown"


def installed_source() -> tuple[str, str] | None:
    """``(repository URL, full commit)`` pip installed this package from, or ``None``.

    Read from the distribution's ``direct_url.json`` (PEP 610: ``url`` and ``vcs_info.commit_id``),
    which pip writes for ``pip install git+https://...`` (Colab's install); ``None`` for a
    checkout's editable install or a package index install.
    """
    from importlib import metadata

    try:
        text = metadata.distribution("cryoorient").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        record = json.loads(text or "{}")
        url, commit = record.get("url"), record.get("vcs_info", {}).get("commit_id")
    except (json.JSONDecodeError, AttributeError):
        return None
    if not (isinstance(url, str) and url and isinstance(commit, str) and commit):
        return None
    return url, commit


def _installed_commit() -> str | None:
    """The commit pip installed this package from (``vcs_info.commit_id`` of ``direct_url.json``)."""
    source = installed_source()
    return source[1][:12] if source is not None else None


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block succeeds.

    For writers that want a file name (``mrcfile``, ``starfile``). The file gets the mode an
    ordinary ``open(path, "w")`` would (``0o666`` minus the umask), not ``mkstemp``'s ``0o600``, so
    outputs in a shared folder stay readable to the group. On any error the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    A reader never sees a half-written ``path``; on any error the temporary file is removed and
    ``path`` is left as it was. The file's mode respects the umask (see :func:`atomic_path`).
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return path


@contextmanager
def atomic_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to fill; renamed onto ``folder`` when the block succeeds.

    ``folder`` must not exist or be an empty folder (``os.replace`` then swaps it in atomically;
    otherwise the ``OSError`` of the rename propagates). The folder gets ``0o777`` minus the umask,
    not ``mkdtemp``'s ``0o700``. On any error the temporary folder is removed.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
