"""Test oracles: slow, independent implementations that the fast ones are checked against.

Used by ``tests/`` and ``benchmarks/`` only; nothing in the package imports this module
(``make lint`` checks it), so it is free to be slow and plain.

:func:`project_real_space`
    the line sum through the rotated volume, sampled directly in real space: the definition that
    :func:`cryoorient.projection.project` (a Fourier-slice projector) approximates.
:func:`align_orientations_reference`
    the paper's alignment, stochastic gradient descent over the six plane-rotation angles of an
    O(4) transform ``T`` for ``m = ±1``: what :func:`cryoorient.alignment.align_orientations`
    solves in closed form plus a few iterations.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from cryoorient._checks import check_rotations, check_volume
from cryoorient.alignment import AlignmentResult, _check_pair, _result
from cryoorient.geometry import quaternion_distance

__all__ = ["align_orientations_reference", "project_real_space"]

# The six coordinate planes of R⁴ (the paper's R_{x_i x_j}).
_PLANES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def project_real_space(
    volume: torch.Tensor | np.ndarray, rotations: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Reference projector: the line sum through the rotated volume, computed directly.

    Samples ``V`` with trilinear interpolation (zero outside the box) at ``A^T (x, y, z)`` for every
    pixel ``(x, y)`` and every integer ``z`` along a ray long enough to cross the whole box, and
    sums over ``z``. Independent of the Fourier machinery of
    :func:`~cryoorient.projection.project` and slow (``O(N D³)``); used to validate ``project``.

    Parameters
    ----------
    volume : (D, D, D) density, ``[z, y, x]``, origin at index ``D // 2``.
    rotations : (N, 3, 3) RELION matrices ``A``.

    Returns
    -------
    (N, D, D) images ``[y, x]`` on the volume's device, in the volume's floating dtype (float32
    for integer volumes). No shift, CTF or gridding correction.
    """
    vol = check_volume(volume)
    rot = check_rotations(rotations).to(vol.device, vol.dtype)
    d = vol.shape[0]
    c = d // 2
    reach = math.ceil(math.sqrt(3) * d / 2) + 1
    axis = torch.arange(d, device=vol.device, dtype=vol.dtype) - c
    z = torch.arange(-reach, reach + 1, device=vol.device, dtype=vol.dtype)
    gy, gx, gz = torch.meshgrid(axis, axis, z, indexing="ij")
    rays = torch.stack((gx, gy, gz), dim=-1).reshape(d * d, z.numel(), 3)  # (D², L, 3) image (x, y, z)
    batch = max(1, int(4e6 // rays[..., 0].numel()))
    out = []
    for start in range(0, rot.shape[0], batch):
        a = rot[start : start + batch]  # (B, 3, 3)
        # u = A^T r for column vectors r, i.e. r @ A for row vectors
        u = torch.einsum("plj,bjk->bplk", rays, a)  # (B, D², L, 3) volume (x, y, z)
        grid = (u + c) * (2.0 / (d - 1)) - 1.0  # align_corners=True: index 0 -> -1, D-1 -> +1
        sampled = F.grid_sample(
            vol[None, None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
        )  # (1, 1, B, D², L)
        out.append(sampled[0, 0].sum(-1).reshape(-1, d, d))
    if not out:
        return vol.new_zeros(0, d, d)
    return torch.cat(out)


def _plane_rotations(angles: torch.Tensor, det_sign: float) -> torch.Tensor:
    """The paper's ``T = diag(m, 1, 1, 1) Π_{i<j} R_{x_i x_j}(θ_ij)`` from six angles."""
    t = torch.diag(angles.new_tensor([det_sign, 1.0, 1.0, 1.0]))
    for (i, j), theta in zip(_PLANES, angles.unbind(0), strict=True):
        c, s = torch.cos(theta), torch.sin(theta)
        rot = torch.eye(4, dtype=angles.dtype, device=angles.device)
        rot = rot.index_put(
            (torch.tensor([i, j, i, j]), torch.tensor([i, j, j, i])), torch.stack((c, c, -s, s))
        )
        t = t @ rot
    return t


def align_orientations_reference(
    true_q: torch.Tensor | np.ndarray,
    recovered_q: torch.Tensor | np.ndarray,
    *,
    n_runs: int = 3,
    steps: int = 300,
    batch_size: int | None = 256,
    lr: float = 1.0,
    seed: int = 0,
) -> AlignmentResult:
    """The paper's alignment: stochastic gradient descent on six plane-rotation angles, ``m = ±1``.

    ``T = diag(m, 1, 1, 1) Π_{i<j} R_{x_i x_j}(θ_ij)``; for each ``m`` the six angles start uniform
    in ``[0, 2π)`` and minimise the mean ``d_q(q_i, T q̂_i)`` over random batches of orientations.
    The paper used FTRL (learning rate 2, power -2), batches of 256 and 300 steps, and reported the
    lowest of 3 runs per ``m``; PyTorch has no FTRL, so this uses Adam with the same batches, steps
    and runs, its learning rate decayed to zero on a cosine schedule (large early steps explore,
    late ones converge). Kept as a reference to check
    :func:`~cryoorient.alignment.align_orientations` against; it is slower and can end in a local
    minimum.

    Parameters
    ----------
    true_q, recovered_q : (P, 4) unit quaternions, scalar first, ``P >= 4``.
    n_runs : runs per reflection class (random starting angles).
    steps : optimisation steps per run.
    batch_size : orientations per step; ``None`` uses all of them (full-batch gradient descent).
    lr : initial Adam learning rate (radians).
    seed : seed of the :class:`torch.Generator` for starting angles and batches.

    Returns
    -------
    :class:`~cryoorient.alignment.AlignmentResult` of the run with the lowest mean error over all
    orientations.
    """
    for name, value in (("n_runs", n_runs), ("steps", steps)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive; got {lr!r}")
    start = time.perf_counter()
    q, r = _check_pair(true_q, recovered_q)
    device = q.device
    n = q.shape[0]
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    best = None
    for det_sign in (1.0, -1.0):
        for _ in range(int(n_runs)):
            angles = (torch.rand(6, generator=generator, dtype=torch.float64) * 2 * math.pi).to(device)
            angles.requires_grad_(True)
            optimizer = torch.optim.Adam([angles], lr=lr)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, int(steps))
            for _ in range(int(steps)):
                if batch_size is None or batch_size >= n:
                    idx = slice(None)
                else:
                    idx = torch.randint(n, (int(batch_size),), generator=generator).to(device)
                t = _plane_rotations(angles, det_sign)
                loss = quaternion_distance(q[idx], r[idx] @ t.T).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
            with torch.no_grad():
                t = _plane_rotations(angles, det_sign)
                error = float(quaternion_distance(q, r @ t.T).mean())
            if best is None or error < best[0]:
                best = (error, t.detach())
    return _result(q, r, best[1], device, start)
