"""The study specification: one typed, frozen description of the experiment, loaded from a profile.

Every notebook, benchmark and the command line's ``train`` build the experiment from the same
:class:`Study`: the map, the box, the number of projections, the distance model, the noise study's
levels, the seeds, and the paper's noisiest setting that the SNR-matched level is derived from. The
profiles are package data (``cryoorient/studies/NAME.yml``), so an installed copy (Colab, Binder)
reads the same ones as a checkout::

    study = load_study("default")
    study.box_size                      # 64
    study.matched_noise_variance        # ≈ 4.87: the paper's σ² = 16 at 116 px, in integrated SNR
    study.noise_study_levels            # (1.0, 4.0, 4.87, 16.0, 32.0)

``default.yml`` holds the whole default; another profile names a base in ``extends`` and changes
only what differs (its ``model`` mapping changes single settings of the base's model). A profile's
``notebooks`` section holds the parameters a notebook owns itself (e.g. notebook 03's grid sizes),
by notebook stem; :func:`notebook_parameters` hands them to the notebook runner.

This module reads YAML and does arithmetic only: it imports nothing heavier than
:mod:`cryoorient.snr`, so every layer of the package may depend on it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from cryoorient.snr import matched_noise_variance

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable  # Python 3.11+; only for the annotation

__all__ = [
    "CHANCE_SEED_OFFSET",
    "Study",
    "StudyError",
    "available_studies",
    "default_study",
    "load_study",
    "notebook_parameters",
]

CHANCE_SEED_OFFSET = 7
"""Added to the study's seed for the random orientations that give ``E_OR``'s chance level, so the
recovery (notebook 04) and the reconstruction from random orientations (notebook 07) use the same
draw, and that draw differs from the dataset's own orientations (drawn with the seed itself)."""


class StudyError(ValueError):
    """A profile file is missing or malformed; the message names the file, the entry and the fix."""


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType({k: _frozen(v) if isinstance(v, Mapping) else v for k, v in mapping.items()})


@dataclass(frozen=True)
class Study:
    """One experiment, as every notebook, benchmark and the CLI's ``train`` build it.

    Attributes
    ----------
    profile : the profile's name (``default``, ``long``, ``paper``), recorded with every result.
    map_name : density map: ``"5j0n"``, a PDB ID, an MRC path, or ``"pseudo[:SEED]"``.
    box_size : image size D of the datasets, pixels.
    voxel_size : Å per pixel of the datasets; ``None`` keeps the map's field of view in ``box_size``.
    n_projections : P, projections per dataset.
    seed : seed of datasets, training, random starts and random draws.
    model : the distance model, :class:`cryoorient.training.TrainingConfig` fields (read-only mapping).
    paper_method : the paper's own distance model at this study's images (its recipe, network,
        ``d_f`` (``d_q`` on the unit features), loss and optimiser),
        :class:`cryoorient.training.TrainingConfig` fields that differ from their defaults
        (read-only mapping); notebook 09 trains and evaluates it.
    second_protein : the paper's second experiment (notebook 10):
        :class:`cryoorient.dataset.SimulationParameters` fields that differ from this study's dataset
        (map, its rendering resolution, orientations; read-only mapping); see
        :meth:`second_protein_simulation`.
    noise_levels : σ² of the noise study, beside the noiseless model (per pixel, unit-variance stack).
    curriculum_epochs : epochs of each fine-tuned noise level.
    curriculum_learning_rate : peak learning rate of each fine-tuned level.
    paper_noise_variance : the paper's noisiest σ², at ``paper_box_size`` pixels.
    paper_box_size : the paper's image size D, pixels.
    notebooks : each notebook's own parameters this profile sets, by notebook stem (read-only).
    """

    profile: str
    map_name: str
    box_size: int
    voxel_size: float | None
    n_projections: int
    seed: int
    model: Mapping[str, Any]
    paper_method: Mapping[str, Any]
    second_protein: Mapping[str, Any]
    noise_levels: tuple[float, ...]
    curriculum_epochs: int
    curriculum_learning_rate: float
    paper_noise_variance: float
    paper_box_size: int
    notebooks: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name in ("box_size", "n_projections", "curriculum_epochs", "paper_box_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise StudyError(f"study {self.profile!r}: {name} must be a positive integer; got {value!r}")
        if self.voxel_size is not None and not float(self.voxel_size) > 0:
            raise StudyError(
                f"study {self.profile!r}: voxel_size must be > 0 Å or null; got {self.voxel_size!r}"
            )
        levels = tuple(float(v) for v in self.noise_levels)
        if not levels or any(not v > 0 for v in levels):
            raise StudyError(
                f"study {self.profile!r}: noise_levels must be σ² > 0 (the noiseless model always "
                f"runs); got {list(self.noise_levels)}"
            )
        for name in ("paper_noise_variance", "curriculum_learning_rate"):
            if not float(getattr(self, name)) > 0:
                raise StudyError(f"study {self.profile!r}: {name} must be > 0; got {getattr(self, name)!r}")
        object.__setattr__(self, "noise_levels", levels)
        object.__setattr__(self, "model", _frozen(self.model))
        object.__setattr__(self, "paper_method", _frozen(self.paper_method))
        object.__setattr__(self, "second_protein", _frozen(self.second_protein))
        object.__setattr__(self, "notebooks", _frozen(self.notebooks))

    @property
    def matched_noise_variance(self) -> float:
        """σ² at which ``box_size``-pixel images have the integrated SNR of the paper's noisiest setting."""
        return matched_noise_variance(self.paper_noise_variance, self.box_size, self.paper_box_size)

    @property
    def noise_study_levels(self) -> tuple[float, ...]:
        """The noise study's σ², increasing, without the noiseless level: ``noise_levels`` and the matched."""
        return tuple(sorted(set(self.noise_levels) | {self.matched_noise_variance}))

    @property
    def chance_seed(self) -> int:
        """Seed of the random orientations that give the chance level (:data:`CHANCE_SEED_OFFSET`)."""
        return self.seed + CHANCE_SEED_OFFSET

    def simulation(self, **changes: Any) -> dict[str, Any]:
        """Keyword arguments of :class:`cryoorient.dataset.SimulationParameters` for this study's dataset.

        ``changes`` adds or overrides fields, e.g. ``noise_variance=4.0`` or ``orientations="half"``.
        """
        return {
            "map": self.map_name,
            "n_projections": self.n_projections,
            "box_size": self.box_size,
            "voxel_size": self.voxel_size,
            "seed": self.seed,
        } | changes

    def second_protein_simulation(self, **changes: Any) -> dict[str, Any]:
        """:meth:`simulation` for the second protein: this study's dataset with ``second_protein``'s fields.

        ``changes`` adds or overrides fields, e.g. ``noise_variance=4.0``.
        """
        return self.simulation(**dict(self.second_protein)) | changes

    def to_dict(self) -> dict[str, Any]:
        """Plain types (JSON/YAML), e.g. to record with results."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


_STUDY_FIELDS = tuple(f.name for f in dataclasses.fields(Study) if f.name not in ("profile", "notebooks"))
"""The fields a profile's ``study`` section sets (every :class:`Study` field but its name and notebooks)."""
_MAPPING_SECTIONS = ("model", "paper_method", "second_protein")
"""Study fields that are mappings of settings: a profile that extends another changes single settings."""


def _studies_folder(folder: Path | None) -> Traversable:
    return resources.files("cryoorient") / "studies" if folder is None else Path(folder)


def available_studies(folder: Path | None = None) -> list[str]:
    """The profile names in ``folder`` (default: the package's ``cryoorient/studies/*.yml``)."""
    files = _studies_folder(folder).iterdir()
    return sorted(p.name[: -len(".yml")] for p in files if p.name.endswith(".yml"))


def _read(name: str, folder: Path | None) -> dict:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise StudyError(f"a profile is named by a word such as 'default'; got {name!r}")
    source = _studies_folder(folder) / f"{name}.yml"
    where = f"cryoorient/studies/{name}.yml" if folder is None else f"{name}.yml"
    if not source.is_file():
        raise StudyError(
            f"unknown profile {name!r}: no file {where}; "
            f"known profiles: {', '.join(available_studies(folder))}"
        )
    try:
        content = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise StudyError(f"{where}: not valid YAML ({error})") from error
    if not isinstance(content, dict):
        kind = type(content).__name__
        raise StudyError(f"{where}: expected a mapping with `study` and `notebooks`; got {kind}")
    unknown = sorted(set(content) - {"extends", "study", "notebooks"})
    if unknown:
        names = ", ".join(unknown)
        raise StudyError(f"{where}: unknown section(s) {names}; known: extends, study, notebooks")
    for section in ("study", "notebooks"):
        if not isinstance(content.get(section) or {}, dict):
            raise StudyError(f"{where}: `{section}` must be a mapping; got {content[section]!r}")
    study = content.get("study") or {}
    bad = sorted(set(study) - set(_STUDY_FIELDS))
    if bad:
        names, known = ", ".join(bad), ", ".join(_STUDY_FIELDS)
        raise StudyError(f"{where}: unknown study field(s) {names}; known: {known}")
    for name in _MAPPING_SECTIONS:
        if name in study and not isinstance(study[name], dict):
            got = study[name]
            raise StudyError(f"{where}: `study.{name}` must map settings to values; got {got!r}")
    notebooks = content.get("notebooks") or {}
    if not all(isinstance(v, dict) for v in notebooks.values()):
        raise StudyError(f"{where}: `notebooks` maps a notebook stem to its parameters, each a mapping")
    return content


def _resolved(name: str, folder: Path | None, seen: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """``(study fields, notebooks sections)`` of profile ``name``, its ``extends`` chain applied."""
    if name in seen:
        raise StudyError(f"profiles extend each other in a cycle: {' -> '.join((*seen, name))}")
    content = _read(name, folder)
    study, notebooks = dict(content.get("study") or {}), dict(content.get("notebooks") or {})
    base = content.get("extends")
    if base is None:
        return study, notebooks
    base_study, base_notebooks = _resolved(base, folder, (*seen, name))
    merged = base_study | study
    for section in _MAPPING_SECTIONS:
        merged[section] = dict(base_study.get(section) or {}) | dict(study.get(section) or {})
    sections = {stem: dict(base_notebooks.get(stem, {})) | dict(notebooks.get(stem, {}))
                for stem in base_notebooks.keys() | notebooks.keys()}  # fmt: skip
    return merged, sections


def load_study(profile: str = "default", folder: Path | None = None) -> Study:
    """The :class:`Study` of ``cryoorient/studies/PROFILE.yml`` (with what it ``extends``).

    ``folder`` reads ``PROFILE.yml`` from another folder instead (your own profiles). Raises
    :class:`StudyError` naming the file and the entry when the profile is unknown or malformed.
    """
    study, notebooks = _resolved(profile, folder)
    missing = [name for name in _STUDY_FIELDS if name not in study]
    if missing:
        raise StudyError(
            f"profile {profile!r} leaves {', '.join(missing)} unset: give them in its `study` section "
            f"or extend a profile that does (`extends: default`)"
        )
    return Study(profile=profile, notebooks=notebooks, **study)


@functools.cache
def default_study() -> Study:
    """The default profile's study, read once: the package's defaults (model, training) derive from it."""
    return load_study("default")


def notebook_parameters(study: Study, stem: str) -> dict[str, Any]:
    """The parameters notebook ``stem`` gets from ``study``'s profile: its name and the notebook's section."""
    return {"profile": study.profile} | {k: _plain(v) for k, v in study.notebooks.get(stem, {}).items()}


def _plain(value: Any) -> Any:
    """Read-only mappings and tuples as dicts and lists (YAML/JSON types)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value
