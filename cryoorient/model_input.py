"""What a distance model expects of its images: one preprocessing, recorded beside the model.

The estimators learn from stacks normalised to zero mean and unit variance over the whole stack
(one mean, one standard deviation: :func:`cryoorient.projection.normalize_images`, as the paper
normalises its clean projections), to which training may add white noise of variance ``σ²`` on
the fly. The network therefore sees images of zero mean and standard deviation ``√(1 + σ²)``.
A stack to be oriented is brought to the same statistics, whatever its own scale (a RELION stack
normalised per particle, counts, a simulation at another noise level)::

    x ↦ (x − mean(x)) / std(x) · √(1 + σ²)

over the whole stack (:func:`model_input`). On a stack of the model's own kind (a simulated
dataset at the σ² the model was trained for: clean unit variance plus noise of variance σ²) this
is the identity up to sampling error, which is why the notebooks can feed their datasets as they
are and get the same distances as the command line (``tests/test_model_input.py`` checks it).

The record, ``training_data.json`` beside ``model.pt`` (:class:`InputRecord`), says what the
training images were: box and pixel size (a stack at another box or pixel size is refused, the
network's filters are tied to both), the on-the-fly σ², and the standard deviation the network
saw. Every caller that applies a model reads it: ``cryoorient train`` writes it, the model cache
writes it for the notebooks' models, the shipped models carry theirs, and ``cryoorient recover``
applies :func:`model_input` with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cryoorient.paths import atomic_write

__all__ = [
    "TRAINING_RECORD",
    "InputRecord",
    "model_input",
    "read_record",
    "standardise_stack",
    "write_record",
]

TRAINING_RECORD = "training_data.json"
"""The record's file name, beside ``model.pt``."""

PREPROCESSING = "global standardisation"
"""The name of the one preprocessing, stored in every record (:func:`model_input`)."""


@dataclass(frozen=True)
class InputRecord:
    """The images a model was trained on, and the statistics its network saw.

    Attributes
    ----------
    box_size : D, pixels of the training images (before the network's own downsampling).
    pixel_size : Å per pixel of the training images.
    noise_variance : σ² of the white noise added on the fly in training (relative to the
        standardised stack); 0 when the noise was in the images already.
    input_std : standard deviation of the images at the network's input, ``√(1 + σ²)``.
    n_images : how many images the model was trained on (the training split), or ``None``.
    """

    box_size: int
    pixel_size: float
    noise_variance: float = 0.0
    input_std: float = 1.0
    n_images: int | None = None

    @classmethod
    def of_training(
        cls,
        box_size: int,
        pixel_size: float,
        noise_variance: float,
        n_images: int | None = None,
        stack_std: float = 1.0,
    ) -> InputRecord:
        """The record of a model trained on a stack with on-the-fly noise of variance ``noise_variance``.

        ``stack_std`` is the stack's own standard deviation (1 once standardised), so the network
        saw ``input_std = √(stack_std² + σ²)``.
        """
        std = math.sqrt(float(stack_std) ** 2 + float(noise_variance))
        return cls(
            int(box_size),
            float(pixel_size),
            float(noise_variance),
            std,
            None if n_images is None else int(n_images),
        )

    def __post_init__(self) -> None:
        if int(self.box_size) != self.box_size or self.box_size < 2:
            raise ValueError(f"box_size must be an integer >= 2 pixels; got {self.box_size!r}")
        for name in ("pixel_size", "input_std"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        if not (math.isfinite(self.noise_variance) and self.noise_variance >= 0):
            raise ValueError(f"noise_variance must be >= 0; got {self.noise_variance!r}")

    def to_dict(self) -> dict:
        """JSON-ready: the fields and the name of the preprocessing."""
        return asdict(self) | {"preprocessing": PREPROCESSING}


def standardise_stack(
    images: torch.Tensor | np.ndarray, std: float = 1.0, *, chunk: int = 1024
) -> torch.Tensor:
    """Zero mean and standard deviation ``std`` over the whole stack (one mean, one scale).

    Parameters
    ----------
    images : (N, D, D) images ``[n, y, x]``.
    std : the standard deviation to give the stack.
    chunk : images handled at once: the float64 arithmetic never holds more than ``chunk`` images,
        so a 20,000-particle stack is not copied whole in double precision.

    Returns
    -------
    (N, D, D) float32 tensor ``(images − mean) / s · std`` (population statistics, float64 sums).

    Raises
    ------
    ValueError
        For a constant stack or non-finite values.
    """
    x = torch.as_tensor(images)
    if x.ndim != 3:
        raise ValueError(f"images must be a stack (N, D, D); got shape {tuple(x.shape)}")
    parts = [x[i : i + chunk] for i in range(0, len(x), chunk)]
    if not all(bool(torch.isfinite(p).all()) for p in parts):
        raise ValueError("the stack contains NaN or infinite values")
    count = x.numel()
    mean = sum(float(p.to(torch.float64).sum()) for p in parts) / count
    s = math.sqrt(sum(float((p.to(torch.float64) - mean).square().sum()) for p in parts) / count)
    if not s > 0:
        raise ValueError(f"cannot standardise a stack of zero variance (constant value {mean:g})")
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for i, p in zip(range(0, len(x), chunk), parts, strict=True):
        out[i : i + len(p)] = (p.to(torch.float64) - mean) * (std / s)
    return out


def model_input(images: torch.Tensor | np.ndarray, record: InputRecord) -> torch.Tensor:
    """A stack brought to the statistics the model's network saw in training (the one preprocessing).

    Parameters
    ----------
    images : (N, D, D) images at the record's box and pixel size.
    record : the model's :class:`InputRecord`.

    Returns
    -------
    (N, D, D) float32: zero mean, standard deviation ``record.input_std``.
    """
    return standardise_stack(images, record.input_std)


def write_record(folder: str | Path, record: InputRecord) -> Path:
    """Write ``folder/training_data.json`` atomically; returns its path."""
    path = Path(folder) / TRAINING_RECORD
    text = (json.dumps(record.to_dict(), indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))
    return path


def read_record(folder: str | Path, noise_variance: float = 0.0) -> InputRecord | None:
    """The record in ``folder`` (a model folder), or ``None`` when it has none.

    Records written before ``input_std`` was recorded hold only the box and pixel size; they get
    ``noise_variance`` (the model configuration's on-the-fly σ²) and ``√(1 + σ²)``.

    Raises
    ------
    ValueError
        When the file exists but is not a valid record (names the file and what to do).
    """
    path = Path(folder) / TRAINING_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        fields = {k: data[k] for k in ("box_size", "pixel_size")}
        if "input_std" not in data:
            return InputRecord.of_training(fields["box_size"], fields["pixel_size"], noise_variance)
        fields |= {k: data[k] for k in ("noise_variance", "input_std", "n_images") if k in data}
        return InputRecord(**fields)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not a valid training record ({error!r}); it must be JSON with box_size and pixel_size. "
            f"Restore it (`cryoorient train` writes it) or retrain the model"
        ) from error
