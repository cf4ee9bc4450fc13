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


@pytest.fixture(scope="session")
def toy_projections() -> tuple[torch.Tensor, torch.Tensor]:
    """(48, 16, 16) unit-variance projections of a small blobby volume, and their (48, 4) orientations."""
    from cryoorient.geometry import quaternion_to_matrix
    from cryoorient.projection import project

    rng = np.random.default_rng(0)
    volume = torch.zeros(16, 16, 16)
    for _ in range(4):
        z, y, x = rng.integers(5, 11, 3)
        volume[z - 1 : z + 2, y - 2 : y + 1, x - 1 : x + 1] += 1.0
    q = sample_orientations(48, seed=1)
    images = project(volume, quaternion_to_matrix(q).float())
    return (images - images.mean()) / images.std(), q


@pytest.fixture(params=["cpu", "cuda"])
def device(request) -> str:
    """Each torch device a test runs on: the CPU, and CUDA where this machine has it (skipped else)."""
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    return request.param
