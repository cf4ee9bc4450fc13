"""Orientation geometry: unit quaternions, rotation matrices and RELION Euler angles.

Conventions (the README's "Conventions" section):

* Quaternions are scalar first, ``(w, x, y, z)``, unit norm, as in the paper. ``q`` and ``-q``
  are the same orientation; functions that return quaternions put them in the hemisphere
  ``w >= 0``. (SciPy and roma store quaternions scalar *last*: convert with
  ``q[..., [1, 2, 3, 0]]``, or use SciPy's ``scalar_first=True``.)
* Rotation matrices act on column vectors. The matrix of an orientation is RELION's
  ``A(rot, tilt, psi) = Rz(psi) @ Ry(tilt) @ Rz(rot)`` written with *passive* elementary
  rotations, i.e. ``A = (Rz(rot) Ry(tilt) Rz(psi))^T`` with active ones. It maps volume
  coordinates to image coordinates: a projection is ``p(x, y) = ∫ V(A^T (x, y, z)^T) dz``.
  Equivalently ``A = scipy.spatial.transform.Rotation.from_euler("ZYZ", [rot, tilt, psi]).inv()``.
* Euler angles are RELION's ZYZ ``(rot, tilt, psi)``, in radians inside the package
  (degrees only at the file boundary).

Every function takes tensors (or anything :func:`torch.as_tensor` accepts), broadcasts over
leading ``...`` dimensions and returns tensors on the input's device and dtype.
"""

from __future__ import annotations

import torch

__all__ = [
    "canonical_quaternion",
    "euler_to_matrix",
    "euler_to_quaternion",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "quaternion_conjugate",
    "quaternion_distance",
    "quaternion_distance_matrix",
    "quaternion_multiply",
    "quaternion_to_euler",
    "quaternion_to_matrix",
    "rotate_in_plane",
    "viewing_direction",
]

# Below this |sin(tilt)| the rot and psi axes coincide (gimbal lock); RELION uses 16 * FLT_EPSILON.
_GIMBAL_EPS = 16 * 1.1920929e-07


def _as_float_tensor(x: torch.Tensor | object, name: str, last: tuple[int, ...]) -> torch.Tensor:
    """Convert ``x`` to a floating tensor and check its trailing shape."""
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if tuple(t.shape[t.ndim - len(last) :]) != last or t.ndim < len(last):
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, last))}); got {tuple(t.shape)}")
    return t


def canonical_quaternion(q: torch.Tensor) -> torch.Tensor:
    """Choose the representative with non-negative scalar part.

    Parameters
    ----------
    q : (..., 4) unit quaternions, scalar first.

    Returns
    -------
    (..., 4) the same orientations with ``w >= 0``.
    """
    q = _as_float_tensor(q, "q", (4,))
    sign = torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)
    return q * sign


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` (rotation ``b`` then ``a``).

    Parameters
    ----------
    a, b : (..., 4) quaternions, scalar first; leading dimensions broadcast.

    Returns
    -------
    (..., 4) the product, not canonicalised (its sign follows the algebra).
    """
    a = _as_float_tensor(a, "a", (4,))
    b = _as_float_tensor(b, "b", (4,))
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        (
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ),
        dim=-1,
    )


def quaternion_conjugate(q: torch.Tensor) -> torch.Tensor:
    """Conjugate ``(w, -x, -y, -z)``: the inverse rotation of a unit quaternion.

    Parameters
    ----------
    q : (..., 4) quaternions, scalar first.
    """
    q = _as_float_tensor(q, "q", (4,))
    return q * q.new_tensor([1.0, -1.0, -1.0, -1.0])


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a unit quaternion.

    Parameters
    ----------
    q : (..., 4) unit quaternions, scalar first. They are normalised first, so a slightly
        off-norm input (e.g. from an optimiser) still gives an orthogonal matrix.

    Returns
    -------
    (..., 3, 3) rotation matrices acting on column vectors.
    """
    q = _as_float_tensor(q, "q", (4,))
    w, x, y, z = (q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)).unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Unit quaternion of a rotation matrix, with ``w >= 0``.

    Uses the largest of ``|w|, |x|, |y|, |z|`` to divide by (Shepperd's method), so it is
    accurate for every rotation, including half turns.

    Parameters
    ----------
    matrix : (..., 3, 3) rotation matrices.

    Returns
    -------
    (..., 4) unit quaternions, scalar first, ``w >= 0``.
    """
    m = _as_float_tensor(matrix, "matrix", (3, 3))
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4w², 4x², 4y², 4z² from the diagonal
    squares = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22),
        dim=-1,
    )  # (..., 4)
    # Row k is 4·q_k·q: each candidate is exact where q_k is not small.
    candidates = torch.stack(
        (
            torch.stack((squares[..., 0], m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, squares[..., 1], m01 + m10, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m01 + m10, squares[..., 2], m12 + m21), dim=-1),
            torch.stack((m10 - m01, m02 + m20, m12 + m21, squares[..., 3]), dim=-1),
        ),
        dim=-2,
    )  # (..., 4, 4)
    best = squares.argmax(dim=-1, keepdim=True)  # (..., 1)
    q = torch.take_along_dim(candidates, best[..., None], dim=-2).squeeze(-2)  # (..., 4)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return canonical_quaternion(q)


def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """RELION's rotation matrix ``A(rot, tilt, psi)``.

    Parameters
    ----------
    angles : (..., 3) Euler angles ``(rot, tilt, psi)`` in radians, RELION's ZYZ convention.

    Returns
    -------
    (..., 3, 3) matrices mapping volume coordinates to image coordinates.
    """
    angles = _as_float_tensor(angles, "angles", (3,))
    ca, cb, cg = torch.cos(angles).unbind(-1)
    sa, sb, sg = torch.sin(angles).unbind(-1)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = (
        (cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb),
        (-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb),
        (sc, ss, cb),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_euler(matrix: torch.Tensor) -> torch.Tensor:
    """RELION Euler angles of a rotation matrix (inverse of :func:`euler_to_matrix`).

    Parameters
    ----------
    matrix : (..., 3, 3) rotation matrices.

    Returns
    -------
    (..., 3) ``(rot, tilt, psi)`` in radians with ``tilt`` in ``[0, π]`` and ``rot``, ``psi`` in
    ``(-π, π]``. At gimbal lock (``tilt`` = 0 or π) only ``rot ± psi`` is defined; as RELION
    does, ``rot`` is set to 0 and the whole in-plane rotation goes to ``psi``.
    """
    m = _as_float_tensor(matrix, "matrix", (3, 3))
    sin_tilt = torch.hypot(m[..., 0, 2], m[..., 1, 2])
    tilt = torch.atan2(sin_tilt, m[..., 2, 2])
    locked = sin_tilt <= _GIMBAL_EPS
    rot = torch.where(locked, torch.zeros_like(tilt), torch.atan2(m[..., 2, 1], m[..., 2, 0]))
    psi_free = torch.atan2(m[..., 1, 2], -m[..., 0, 2])
    # tilt = 0: A = Rz(-(rot + psi)); tilt = π: A = Rz(-psi) diag(-1, 1, -1) Rz(-rot)
    psi_locked = torch.where(
        m[..., 2, 2] > 0,
        torch.atan2(-m[..., 1, 0], m[..., 0, 0]),
        torch.atan2(m[..., 1, 0], -m[..., 0, 0]),
    )
    psi = torch.where(locked, psi_locked, psi_free)
    return torch.stack((rot, tilt, psi), dim=-1)


def euler_to_quaternion(angles: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (``w >= 0``) of RELION Euler angles.

    Parameters
    ----------
    angles : (..., 3) ``(rot, tilt, psi)`` in radians.

    Returns
    -------
    (..., 4) quaternions of the matrices :func:`euler_to_matrix` returns.
    """
    return matrix_to_quaternion(euler_to_matrix(angles))


def quaternion_to_euler(q: torch.Tensor) -> torch.Tensor:
    """RELION Euler angles ``(rot, tilt, psi)`` in radians of unit quaternions.

    Parameters
    ----------
    q : (..., 4) unit quaternions, scalar first.

    Returns
    -------
    (..., 3) angles as :func:`matrix_to_euler` returns them.
    """
    return matrix_to_euler(quaternion_to_matrix(q))


def rotate_in_plane(q: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Orientations turned in the image plane: ``psi → psi + δ`` in RELION's Euler angles.

    ``q' = r_z(δ)⁻¹ q`` with ``r_z(δ) = (cos δ/2, 0, 0, sin δ/2)``; the projection at ``q'`` is the
    projection at ``q`` rotated by ``δ`` about the image centre
    (:func:`cryoorient.projection.rotate_images`), and ``d_q(q, q') = |δ|`` (mod 2π, folded to [0, π]).

    Parameters
    ----------
    q : (..., 4) unit quaternions.
    angles : (...) in-plane angles ``δ``, radians (broadcast against ``q[..., 0]``).

    Returns
    -------
    (..., 4) unit quaternions, the dtype of ``q``.
    """
    q = _as_float_tensor(q, "q", (4,))
    half = -torch.as_tensor(angles, dtype=q.dtype, device=q.device) / 2
    zero = torch.zeros_like(half)
    return quaternion_multiply(torch.stack((torch.cos(half), zero, zero, torch.sin(half)), dim=-1), q)


def viewing_direction(q: torch.Tensor) -> torch.Tensor:
    """Projection direction in the volume frame, ``A^T e_z`` (the third row of ``A``).

    Parameters
    ----------
    q : (..., 4) unit quaternions, scalar first.

    Returns
    -------
    (..., 3) unit vectors ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``.
    """
    return quaternion_to_matrix(q)[..., 2, :]


def quaternion_distance(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Geodesic distance between orientations, ``d_q = 2 arccos |<q1, q2>|``.

    Computed as ``4 atan2(|q1 - s q2|, |q1 + s q2|)`` with ``s = sign <q1, q2>``, which equals the
    arccos form for unit quaternions but stays accurate for nearby orientations and has finite
    gradients everywhere (zero at ``d = 0``, a valid subgradient at ``d = π``).

    Parameters
    ----------
    q1, q2 : (..., 4) unit quaternions, scalar first; leading dimensions broadcast.

    Returns
    -------
    (...) distances in radians, in ``[0, π]``.
    """
    q1 = _as_float_tensor(q1, "q1", (4,))
    q2 = _as_float_tensor(q2, "q2", (4,))
    dot = (q1 * q2).sum(-1, keepdim=True)
    q2 = torch.where(dot < 0, -q2, q2)
    diff = torch.linalg.vector_norm(q1 - q2, dim=-1)
    total = torch.linalg.vector_norm(q1 + q2, dim=-1)
    return 4 * torch.atan2(diff, total)


def quaternion_distance_matrix(q1: torch.Tensor, q2: torch.Tensor | None = None) -> torch.Tensor:
    """All pairwise geodesic distances ``D[i, j] = d_q(q1[i], q2[j])``.

    Parameters
    ----------
    q1 : (N, 4) unit quaternions, scalar first.
    q2 : (M, 4) unit quaternions; ``q1`` when omitted.

    Returns
    -------
    (N, M) distances in radians. Memory is ``O(N M)``; for very large sets use
    :func:`quaternion_distance` on sampled pairs instead.
    """
    q1 = _as_float_tensor(q1, "q1", (4,))
    q2 = q1 if q2 is None else _as_float_tensor(q2, "q2", (4,))
    if q1.ndim != 2 or q2.ndim != 2:
        raise ValueError(f"expected (N, 4) and (M, 4) quaternions; got {tuple(q1.shape)}, {tuple(q2.shape)}")
    return quaternion_distance(q1[:, None, :], q2[None, :, :])
