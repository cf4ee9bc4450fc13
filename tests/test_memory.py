import ctypes.util

import numpy as np

from cryoorient import _memory
from cryoorient._memory import release_free_memory


def test_release_free_memory_asks_the_c_library_and_leaves_live_data_alone():
    kept = np.arange(1_000_000, dtype=np.float64)
    freed = [np.ones(50_000) for _ in range(100)]  # many heap blocks, then freed
    del freed
    asked = release_free_memory()
    assert asked is (_memory._malloc_trim() is not None)
    assert kept[-1] == 999_999.0 and kept.sum() == 999_999 * 1_000_000 / 2


def test_release_free_memory_does_nothing_without_glibc(monkeypatch):
    _memory._malloc_trim.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        assert release_free_memory() is False
    finally:
        _memory._malloc_trim.cache_clear()
