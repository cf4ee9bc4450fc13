"""Small linear-algebra helpers shared by the recovery and the alignment."""

from __future__ import annotations

import torch

__all__ = ["project_so3"]


def project_so3(m: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (Frobenius) to each matrix.

    Parameters
    ----------
    m : (..., 3, 3) real matrices.

    Returns
    -------
    (..., 3, 3) rotation matrices (determinant +1), same dtype and device.
    """
    u, _, vh = torch.linalg.svd(m)
    det = torch.linalg.det(u @ vh)
    u = torch.cat((u[..., :2], u[..., 2:] * det[..., None, None]), dim=-1)
    return u @ vh
