r"""Provenance records without machine paths: what a generated file may say about where things came from.

Generated files (results JSON, figure sidecars, the report, benchmark JSON) are committed and
read on other machines, so they must not record where *this* machine keeps things
(``/work/shared/data/5j0n.mrc``, ``/home/me/...``, ``C:\Users\...``). The helpers here rewrite
an absolute path as the path relative to the repository checkout when it lies inside it, else as
its file name (with the file's SHA-256 when asked and the file exists), and a map as its name and
the SHA-256 of its data.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np

from cryoorient.paths import repo_root

if TYPE_CHECKING:
    from cryoorient.density import DensityMap

__all__ = ["MACHINE_PATH", "map_record", "portable", "portable_path", "portable_text"]

# An absolute path inside text: POSIX (``/a/b``, not part of a URL, a ratio or a relative path)
# or Windows (``C:\a``). It ends at white space, quotes, brackets, commas or semicolons.
_ABSOLUTE = re.compile(
    r"(?:(?<![\w:/.~-])/|\b[A-Za-z]:\\)[^\s\"'`()\[\]{},;]+(?<![.:])"  # a final . or : ends a sentence
)

# The absolute paths tests refuse in committed generated files: the usual homes of checkouts,
# data and temporary files on Linux, macOS, Windows and Colab.
MACHINE_PATH = re.compile(
    r"(?<![\w:/.~-])/(?:work|tmp|home|root|Users|private|var/folders|mnt|scratch|content|opt/conda)/"
    r"|\b[A-Za-z]:\\(?:Users|Windows|Temp)\\"
)


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable_path(path: str | Path, *, with_sha256: bool = False) -> str:
    """``path`` as a generated file may record it.

    Parameters
    ----------
    path : a file or folder path; relative paths are returned unchanged.
    with_sha256 : append `` (SHA-256 <hex>)`` when the path is outside the repository and names a
        readable file, so that the record still says *which* file it was.

    Returns
    -------
    The path relative to the repository checkout (POSIX separators) when inside it, else the file
    name alone.
    """
    text = str(path)
    windows = re.match(r"[A-Za-z]:\\", text) is not None
    if not (text.startswith("/") or windows):
        return text
    root = repo_root()
    if root is not None and not windows:
        try:
            return Path(text).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    name = (PureWindowsPath(text) if windows else PurePosixPath(text)).name or text.strip("/\\")
    if with_sha256 and not windows:
        file = Path(text)
        try:
            if file.is_file():
                stat = file.stat()
                return f"{name} (SHA-256 {_file_sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns)})"
        except OSError:
            pass
    return name


def portable_text(text: str, *, with_sha256: bool = False) -> str:
    """``text`` with every absolute path in it replaced by :func:`portable_path`."""
    return _ABSOLUTE.sub(lambda m: portable_path(m.group(0), with_sha256=with_sha256), text)


def portable(value: object, *, with_sha256: bool = False) -> object:
    """``value`` with :func:`portable_text` applied to every string in it, keys included.

    Nested mappings, lists and tuples are rebuilt; a :class:`~pathlib.Path` becomes
    :func:`portable_path`; other values are returned as they are.
    """
    if isinstance(value, str):
        return portable_text(value, with_sha256=with_sha256)
    if isinstance(value, Path):
        return portable_path(value, with_sha256=with_sha256)
    if isinstance(value, Mapping):
        return {portable(k): portable(v, with_sha256=with_sha256) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(portable(v, with_sha256=with_sha256) for v in value)
    return value


def map_record(density: DensityMap) -> dict:
    """What identifies a map in a provenance record, without machine paths.

    Returns
    -------
    ``{"name", "sha256", "source", "voxel_size"}``: the map's name; the SHA-256 of its data as
    used, the ``(z, y, x)`` float32 array in C order (the same for the same map at the same box and
    voxel size on any machine); where it came from, with the file's name and SHA-256 in place of an
    absolute path; and its voxel size in Å.
    """
    data = np.ascontiguousarray(density.data, dtype=np.float32)
    return {
        "name": portable_text(density.name),
        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
        "source": portable_text(density.source, with_sha256=True),
        "voxel_size": density.voxel_size,
    }
