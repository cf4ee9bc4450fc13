"""Argument checks shared by the numerical modules: each raises ``ValueError`` naming the bad value.

Also the one place that turns ``device=None`` into a device (CUDA when available, else CPU).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "Device",
    "check_images",
    "check_positive",
    "check_positive_int",
    "check_rotations",
    "check_shifts",
    "check_volume",
    "resolve_device",
]

Device = torch.device | str | None


def resolve_device(device: Device) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_volume(
    volume: torch.Tensor | np.ndarray,
    name: str = "volume",
    *,
    min_size: int = 2,
    integer_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A finite floating ``(D, D, D)`` tensor with ``D >= min_size``, or ValueError naming ``name``.

    Integer volumes are converted to ``integer_dtype``; floating ones keep their dtype.
    """
    vol = torch.as_tensor(volume)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"{name} must be a cubic (D, D, D) map; got shape {tuple(vol.shape)}")
    if vol.shape[0] < min_size:
        raise ValueError(f"{name} must have D >= {min_size}; got shape {tuple(vol.shape)}")
    if not vol.is_floating_point():
        vol = vol.to(integer_dtype)
    bad = int((~torch.isfinite(vol)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} NaN or infinite values")
    return vol


def check_rotations(rotations: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A finite ``(N, 3, 3)`` tensor, or ValueError."""
    rot = torch.as_tensor(rotations)
    if rot.ndim != 3 or tuple(rot.shape[1:]) != (3, 3):
        raise ValueError(f"rotations must have shape (N, 3, 3); got {tuple(rot.shape)}")
    if not rot.is_floating_point():
        rot = rot.to(torch.float64)
    if not torch.isfinite(rot).all():
        raise ValueError("rotations contain NaN or infinite values")
    return rot


def check_shifts(shifts: torch.Tensor | np.ndarray, n: int) -> torch.Tensor:
    """A finite ``(n, 2)`` tensor, or ValueError."""
    sh = torch.as_tensor(shifts)
    if sh.ndim != 2 or sh.shape[1] != 2:
        raise ValueError(f"shifts must have shape (N, 2) (x, y); got {tuple(sh.shape)}")
    if sh.shape[0] != n:
        raise ValueError(f"got {sh.shape[0]} shifts for {n} images")
    if not sh.is_floating_point():
        sh = sh.to(torch.float64)
    if not torch.isfinite(sh).all():
        raise ValueError("shifts contain NaN or infinite values")
    return sh


def check_images(images: torch.Tensor | np.ndarray, name: str = "images") -> torch.Tensor:
    """A finite floating tensor with at least two dimensions, or ValueError."""
    img = torch.as_tensor(images)
    if img.ndim < 2:
        raise ValueError(f"{name} must have shape (..., H, W); got {tuple(img.shape)}")
    if not img.is_floating_point():
        img = img.to(torch.float32)
    if not torch.isfinite(img).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return img


def check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer ``>= minimum`` (not a bool), or ValueError."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_positive(name: str, value: float) -> float:
    """``value`` as a ``float`` when it is a positive finite number, or ValueError."""
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)
