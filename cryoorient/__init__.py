"""cryoorient: learning to recover orientations from projections in single-particle cryo-EM.

A rerunnable companion to Banjac, Donati & Defferrard (2021), arXiv:2104.06237.
"""

from cryoorient._version import __version__
from cryoorient.alignment import AlignmentResult, align_orientations
from cryoorient.density import (
    DensityMap,
    MapError,
    MapFallbackWarning,
    load_map,
    map_fsc,
    read_map,
    write_map,
)
from cryoorient.fsc import fourier_shell_correlation, resolution
from cryoorient.geometry import (
    canonical_quaternion,
    euler_to_matrix,
    euler_to_quaternion,
    matrix_to_euler,
    matrix_to_quaternion,
    quaternion_conjugate,
    quaternion_distance,
    quaternion_distance_matrix,
    quaternion_multiply,
    quaternion_to_euler,
    quaternion_to_matrix,
    viewing_direction,
)
from cryoorient.projection import (
    add_noise,
    apply_ctf,
    ctf_2d,
    normalize_images,
    project,
    sample_shifts,
    shift_images,
)
from cryoorient.reconstruction import ReconstructionResult, reconstruct
from cryoorient.recovery import RecoveryResult, recover_orientations, recover_orientations_sampled
from cryoorient.sampling import SAMPLING_SCHEMES, haar_distance_cdf, haar_distance_pdf, sample_orientations
from cryoorient.siamese import SiameseDistance
from cryoorient.training import TrainingConfig, train_distance

__all__ = [
    "SAMPLING_SCHEMES",
    "AlignmentResult",
    "ReconstructionResult",
    "RecoveryResult",
    "SiameseDistance",
    "TrainingConfig",
    "align_orientations",
    "fourier_shell_correlation",
    "reconstruct",
    "recover_orientations",
    "recover_orientations_sampled",
    "resolution",
    "train_distance",
    "DensityMap",
    "MapError",
    "MapFallbackWarning",
    "add_noise",
    "apply_ctf",
    "ctf_2d",
    "load_map",
    "map_fsc",
    "normalize_images",
    "project",
    "read_map",
    "sample_shifts",
    "shift_images",
    "write_map",
    "__version__",
    "canonical_quaternion",
    "euler_to_matrix",
    "euler_to_quaternion",
    "haar_distance_cdf",
    "haar_distance_pdf",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "quaternion_conjugate",
    "quaternion_distance",
    "quaternion_distance_matrix",
    "quaternion_multiply",
    "quaternion_to_euler",
    "quaternion_to_matrix",
    "sample_orientations",
    "viewing_direction",
]
