"""The embedded pseudo-protein: a procedurally generated, protein-like atomic model.

It stands in for a real protein wherever none can be downloaded (:func:`cryoorient.density.load_map`
renders it with :func:`cryoorient.density.atoms_to_map`), and its D2 assembly stands in for the
D2-symmetric β-galactosidase (PDB 5a1a). Coordinates ``(x, y, z)`` in Å, as in atomic models.
A change here changes every pseudo map and so the datasets made from them: the fingerprints in
``tests/test_density.py`` say when.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

__all__ = ["pseudo_protein"]


_CA_STEP = 3.8  # Å between consecutive Cα
_HELIX_RISE, _HELIX_RADIUS, _HELIX_TWIST = 1.5, 2.3, math.radians(100.0)
_STRAND_RISE = 3.3
_STRAND_ZIGZAG = math.sqrt(_CA_STEP**2 - _STRAND_RISE**2) / 2
_MIN_BOND_ANGLE_COS = math.cos(math.radians(100.0))  # consecutive steps turn by at most 100°
_CLASH = 4.0  # Å, closest approach of non-neighbouring Cα
_DOMAIN_SCALE = 29.0  # Å, longest semi-axis of the largest domain
_RESIDUE_VOLUME = 140.0  # Å³ of domain per residue (proteins: ~135)
_BACKBONE_WEIGHT = 27.0  # N + Cα + C + O
_SIDE_CHAIN_WEIGHT = 18.0  # each of up to two side-chain pseudo-atoms
_CANDIDATES = 96


def _helix(n: int) -> np.ndarray:
    k = np.arange(n)
    xyz = np.stack(
        [_HELIX_RADIUS * np.cos(k * _HELIX_TWIST), _HELIX_RADIUS * np.sin(k * _HELIX_TWIST), _HELIX_RISE * k],
        -1,
    )
    return xyz - xyz[0]


def _strand(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.stack([_STRAND_ZIGZAG * ((-1.0) ** k - 1.0), np.zeros(n), _STRAND_RISE * k], -1)


def _loop(n: int, rng: np.random.Generator) -> np.ndarray:
    direction, points = np.array([0.0, 0.0, 1.0]), [np.zeros(3)]
    for _ in range(n - 1):
        while True:
            step = direction + 0.9 * rng.standard_normal(3)
            step /= np.linalg.norm(step)
            if step @ direction >= _MIN_BOND_ANGLE_COS:
                break
        points.append(points[-1] + _CA_STEP * step)
        direction = step
    return np.asarray(points)


def _domains(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Three ellipsoidal domains (centre, semi-axes, rotation) of decreasing size, off a common line."""
    sizes = (1.0, 0.78, 0.6)
    rotations = Rotation.random(3, random_state=rng).as_matrix()
    first = rng.standard_normal(3)
    first /= np.linalg.norm(first)
    second = rng.standard_normal(3)
    second /= np.linalg.norm(second)
    second -= 0.6 * (second @ first) * first  # away from the first direction: no straight line
    second /= np.linalg.norm(second)
    centres = [np.zeros(3)] + [
        u * 0.72 * _DOMAIN_SCALE * (sizes[0] + s) for u, s in zip((first, second), sizes[1:], strict=True)
    ]
    base = np.array([1.0, 0.82, 0.68]) * _DOMAIN_SCALE
    return [(centres[i], base * sizes[i] * rng.uniform(0.9, 1.1, 3), rotations[i]) for i in range(3)]


def _ca_trace(rng: np.random.Generator) -> np.ndarray:
    """Cα trace: helices, strands and loops placed one by one, each the best of random candidates."""
    domains = _domains(rng)
    counts = np.cumsum([int(4 / 3 * math.pi * np.prod(axes) / _RESIDUE_VOLUME) for _, axes, _ in domains])
    trace = [domains[0][0] + rng.uniform(-3.0, 3.0, 3)]
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    for (centre, axes, rotation), count in zip(domains, counts, strict=True):
        while len(trace) < count:
            kind = rng.choice(3, p=(0.45, 0.2, 0.35))
            if kind == 0:
                segment = _helix(int(rng.integers(8, 19)))
            elif kind == 1:
                segment = _strand(int(rng.integers(4, 9)))
            else:
                segment = _loop(int(rng.integers(2, 6)), rng)
            points = np.asarray(trace)
            turns = Rotation.random(_CANDIDATES, random_state=rng).as_matrix()  # (K, 3, 3)
            steps = direction + 0.9 * rng.standard_normal((_CANDIDATES, 3))
            steps /= np.linalg.norm(steps, axis=1, keepdims=True)  # (K, 3)
            candidates = points[-1] + _CA_STEP * steps[:, None, :] + np.einsum("kij,nj->kni", turns, segment)
            valid = steps @ direction >= _MIN_BOND_ANGLE_COS  # bond angle at the last Cα
            if len(segment) > 1:  # bond angle at the segment's first Cα
                first = (candidates[:, 1] - candidates[:, 0]) / _CA_STEP
                valid &= np.einsum("ki,ki->k", first, steps) >= _MIN_BOND_ANGLE_COS
            # leaving the domain costs in proportion to how far; each clash costs 20
            depth = np.linalg.norm(((candidates - centre) @ rotation) / axes, axis=-1)  # (K, n)
            penalty = 10.0 * np.clip(depth - 1.0, 0.0, None).sum(axis=1)
            if len(points) > 1:
                dist, _ = cKDTree(points[:-1]).query(candidates.reshape(-1, 3), distance_upper_bound=_CLASH)
                penalty += 20.0 * np.isfinite(dist).reshape(_CANDIDATES, -1).sum(axis=1)
            penalty += 20.0 * (np.linalg.norm(candidates[:, 1:] - points[-1], axis=-1) < _CLASH).sum(axis=1)
            penalty[~valid] = np.inf
            best = candidates[int(np.argmin(penalty))]
            trace.extend(best)
            direction = (best[-1] - best[-2]) / _CA_STEP if len(best) > 1 else steps[int(np.argmin(penalty))]
    return np.asarray(trace)


def _side_chains(trace: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0-2 side-chain pseudo-atoms per residue, pointing away from the chain (Cβ-like direction)."""
    before = np.vstack([trace[1:2], trace[:-1]])  # the neighbours, mirrored at the ends
    after = np.vstack([trace[1:], trace[-2:-1]])
    outward = 2 * trace - before - after
    outward /= np.maximum(np.linalg.norm(outward, axis=1, keepdims=True), 1e-9)
    count = rng.choice(3, size=len(trace), p=(0.1, 0.5, 0.4))
    first = trace + 2.4 * outward + 0.3 * rng.standard_normal(trace.shape)
    bent = outward + 0.35 * rng.standard_normal(trace.shape)
    second = first + 1.8 * bent / np.linalg.norm(bent, axis=1, keepdims=True)
    return np.concatenate([first[count >= 1], second[count >= 2]])


@lru_cache(maxsize=8)
def _asymmetric_unit(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0x5EED])
    trace = _ca_trace(rng)
    side = _side_chains(trace, rng)
    positions = np.concatenate([trace, side])
    positions -= positions.mean(axis=0)
    weights = np.concatenate([np.full(len(trace), _BACKBONE_WEIGHT), np.full(len(side), _SIDE_CHAIN_WEIGHT)])
    positions.flags.writeable = False
    weights.flags.writeable = False
    return positions, weights


_D2_OPERATORS = np.array(
    [np.diag(d) for d in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1))], dtype=float
)
# Candidate directions of the asymmetric unit's offset from the origin, all off the symmetry axes.
_D2_DIRECTIONS = np.array([(a, b, c) for a in (1.0, 2.0) for b in (1.0, 2.0) for c in (1.0, 2.0)])
_D2_DIRECTIONS = _D2_DIRECTIONS[1:-1] / np.linalg.norm(_D2_DIRECTIONS[1:-1], axis=1, keepdims=True)
_D2_MAX_CONTACT = 0.01  # fraction of the unit's Cα within _CLASH of another copy


def _d2_contact(trace: np.ndarray, offset: np.ndarray) -> float:
    placed = trace + offset
    others = np.concatenate([placed @ op.T for op in _D2_OPERATORS[1:]])
    close, _ = cKDTree(others).query(placed, distance_upper_bound=_CLASH)
    return float(np.isfinite(close).mean())


def _d2_assembly(unit: np.ndarray, trace: np.ndarray) -> np.ndarray:
    """The four D2 copies of ``unit``, offset so the tetramer is compact yet its copies barely touch.

    For each candidate direction the smallest offset (bisection, 0.5 Å) at which fewer than 1 %
    of the Cα ``trace`` come within 4 Å of another copy; the direction with the smallest offset
    wins, which also minimises the tetramer's radius of gyration ``√(Rg_unit² + offset²)``.
    """
    best = None
    for direction in _D2_DIRECTIONS:
        low, high = 0.0, 2.0 * np.linalg.norm(trace, axis=1).max() + _CLASH
        while high - low > 0.5:
            middle = 0.5 * (low + high)
            if _d2_contact(trace, middle * direction) <= _D2_MAX_CONTACT:
                high = middle
            else:
                low = middle
        if best is None or high < np.linalg.norm(best):
            best = high * direction
    return np.concatenate([(unit + best) @ op.T for op in _D2_OPERATORS])


def pseudo_protein(seed: int = 0, symmetry: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An embedded, procedurally generated pseudo-protein (no network needed).

    A single chain of Cα-like pseudo-atoms, 3.8 Å apart, folded into three ellipsoidal domains of
    decreasing size (so the molecule is clearly asymmetric): α-helices (rise 1.5 Å and 100° per
    residue, radius 2.3 Å) and β-strands (3.3 Å per residue, zigzag) joined by loops, each segment
    placed as the best of random candidates that stays inside its domain and avoids clashes
    (non-neighbouring Cα closer than 4 Å; a few remain). Residues then get zero to two side-chain
    pseudo-atoms pointing away from the chain, which gives the map texture at 5-10 Å.

    Over seeds 0-29: 590-790 residues (65-85 kDa of protein), 1,350-1,850 pseudo-atoms, a
    radius of gyration of 26-31 Å (the typical ``2.2 N^0.38`` Å of a globular protein of ``N``
    residues is 25-28 Å) and a largest extent of 75-110 Å; generated in ~0.05 s. The same seed
    always gives the same protein; different seeds give different ones.

    Parameters
    ----------
    seed : non-negative integer.
    symmetry : ``None``, or ``"D2"`` for four copies of the seed's protein related by 180°
        rotations about x, y and z, placed off-axis so that they barely touch (a stand-in for
        the D2-symmetric β-galactosidase, PDB 5a1a): radius of gyration 44-60 Å, largest extent
        115-175 Å.

    Returns
    -------
    positions : (n, 3) coordinates ``(x, y, z)`` in Å, centroid at the origin. Rows are the Cα
        trace in chain order, then the side-chain pseudo-atoms; with ``"D2"``, the asymmetric
        unit's rows transformed by the identity and the 180° rotations about x, y and z, in
        that order (the symmetry axes are the coordinate axes).
    weights : (n,) weights on the atomic-number scale: 27 per Cα (the backbone's N, Cα, C, O),
        18 per side-chain pseudo-atom.
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    if symmetry not in (None, "D2"):
        raise ValueError(f'symmetry must be None or "D2"; got {symmetry!r}')
    positions, weights = _asymmetric_unit(int(seed))
    if symmetry == "D2":
        trace = positions[weights == _BACKBONE_WEIGHT]
        return _d2_assembly(positions, trace), np.tile(weights, 4)
    return positions.copy(), weights.copy()
