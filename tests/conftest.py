import numpy as np
import pytest
import torch

from cryoorient import sample_orientations


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20210413)


@pytest.fixture
def quaternions() -> torch.Tensor:
    """(500, 4) Haar-random unit quaternions, float64, with random signs."""
    q = sample_orientations(500, "uniform", seed=1)
    signs = torch.from_numpy(np.random.default_rng(2).choice([-1.0, 1.0], size=(500, 1)))
    return q * signs


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of many small problems: extra threads only add
    synchronisation, which costs seconds when the two cores of a shared machine are busy
    (timings belong to benchmarks/)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
