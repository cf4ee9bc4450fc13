"""Hand freed heap memory back to the operating system after a large temporary workload.

CPython, NumPy and PyTorch (on the CPU) allocate through the C library's ``malloc``. On Linux
(glibc), memory freed in the middle of the heap stays in the process: simulating one 5,000-image
dataset of 64 px left about 0.18 GB resident after every array of it was freed. In a notebook that
simulates five datasets and runs ASPIRE three times one after the other (notebook 08), that
resident-but-unused memory raises the baseline every later peak stacks on. glibc's
``malloc_trim(0)`` returns it; nothing else changes. (Notebook 08's own peak, 2.09 GB in a
Colab-like runtime, was the gauge search's temporaries: see :func:`cryoorient.gauge.fix_gauge`.)
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
