"""Map-to-map alignment: a rotated and/or mirrored map is registered back from the two maps alone."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoorient.density import load_map
from cryoorient.fsc import fourier_shell_correlation
from cryoorient.map_alignment import align_maps, map_correlation, resample_map, transform_map
from cryoorient.projection import project

pytestmark = pytest.mark.usefixtures("one_torch_thread")
J = np.diag([1.0, 1.0, -1.0])


@pytest.fixture(scope="module")
def volume() -> torch.Tensor:
    return torch.from_numpy(load_map("pseudo:1", box_size=24, voxel_size=10.0).data)


def test_transform_map_matches_the_projector(volume):
    m = Rotation.from_rotvec([0.3, -0.5, 0.8]).as_matrix()
    a = torch.from_numpy(Rotation.from_rotvec([1.0, 0.2, -0.4]).as_matrix())
    turned = transform_map(volume, torch.from_numpy(m))
    # project(V(Mᵀ x), A) = project(V, A M)
    left = project(turned, a[None].float(), device="cpu")
    right = project(volume, (a @ torch.from_numpy(m))[None].float(), device="cpu")
    error = float((left - right).norm() / right.norm())
    wrong = project(volume, (a @ torch.from_numpy(m).T)[None].float(), device="cpu")
    assert error < 0.25 < float((left - wrong).norm() / wrong.norm())
    torch.testing.assert_close(transform_map(volume, torch.eye(3)), volume, atol=1e-5, rtol=0)


def test_resample_map_follows_transform_maps_convention_and_keeps_high_frequencies(volume):
    m = Rotation.from_rotvec([0.3, -0.5, 0.8]).as_matrix()
    torch.testing.assert_close(resample_map(volume, np.eye(3)), volume, atol=1e-5, rtol=0)
    spline, linear = resample_map(volume, m), transform_map(volume, torch.from_numpy(m).float())
    assert spline.shape == volume.shape and spline.dtype == volume.dtype
    assert float(map_correlation(spline, linear)) > 0.95  # the same transform, V(Mᵀ x)
    with pytest.raises(ValueError, match="shape"):
        resample_map(volume, np.eye(2))
    # a map with detail up to Nyquist, rotated and rotated back: the cubic spline keeps the outer
    # shells (12-16 of 16) that trilinear interpolation decorrelates
    fine = torch.from_numpy(load_map("pseudo:1", box_size=32, voxel_size=3.0).data)
    turn, unturn = torch.from_numpy(m).float(), torch.from_numpy(m.T).float()
    there_and_back = {
        "spline": resample_map(resample_map(fine, m), m.T),
        "trilinear": transform_map(transform_map(fine, turn), unturn),
    }
    outer = {k: float(fourier_shell_correlation(v, fine)[1][12:17].mean()) for k, v in there_and_back.items()}
    assert outer["spline"] > 0.95 and outer["trilinear"] < outer["spline"] - 0.1, outer


@pytest.mark.parametrize("mirrored", [False, True])
def test_align_maps_registers_a_rotated_map_back(volume, mirrored):
    m = Rotation.from_rotvec([0.9, -1.4, 0.6]).as_matrix() @ (J if mirrored else np.eye(3))
    moved = transform_map(volume, torch.from_numpy(m).float())
    before = float(map_correlation(moved, volume))
    result = align_maps(moved, volume, n_candidates=300, coarse_size=12, seed=1)
    assert result.mirrored == mirrored
    assert result.correlation > 0.9 > before + 0.2
    _, fsc_before = fourier_shell_correlation(moved, volume)
    _, fsc_after = fourier_shell_correlation(result.aligned, volume)
    assert float(fsc_after[1:6].min()) > 0.8 and float(fsc_after[1:6].mean()) > float(fsc_before[1:6].mean())


def test_align_maps_rejects_bad_input(volume):
    with pytest.raises(ValueError, match="different boxes"):
        align_maps(volume, volume[:-2, :-2, :-2])
    with pytest.raises(ValueError, match="cubic"):
        align_maps(volume[:, :, :5], volume)
    with pytest.raises(ValueError, match="n_candidates"):
        align_maps(volume, volume, n_candidates=0)
