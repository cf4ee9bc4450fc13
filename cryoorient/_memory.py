"""Hand freed heap memory back to the operating system after a large temporary workload.

CPython, NumPy and PyTorch (on the CPU) allocate through the C library's ``malloc``. On Linux
(glibc), memory freed in the middle of the heap stays in the process: simulating one 5,000-image
dataset left about 0.18 GB resident after every array of it was freed, and ASPIRE's class averaging
about as much. In a notebook that simulates five datasets and averages three stacks one after the
other, that resident-but-unused memory, not the data, set the peak (issue 30: notebook 08 at
2.09 GB in a Colab-like runtime). glibc's ``malloc_trim(0)`` returns it; nothing else changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim():
    """The C library's ``malloc_trim`` (glibc), or ``None`` elsewhere (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return the heap's free pages to the operating system (glibc); elsewhere do nothing.

    Returns
    -------
    Whether the C library could be asked (``True`` on glibc, whether or not it released anything).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
