"""``cryoorient/claims.yml``, the reproduction report's data: loaded, validated, and read from results.

The file lists every number the notebooks measure (where in their saved results it is, its unit
and format), every claim of the paper (its value, where the paper states it, which way is better,
what limits the comparison) and the paper's setup; :mod:`cryoorient.report` renders it. A
malformed entry raises :class:`ClaimsError` naming the file, the entry and what to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

__all__ = ["METHODS", "Claim", "Claims", "ClaimsError", "Number", "claims_path", "load_claims"]

DIRECTIONS = ("lower", "higher")
METHODS = ("ours", "paper", "beyond")
"""What a claims-table row measured: our modified method, the paper's own method at our images, or
something beyond the paper (projection matching against the map, refinement), with no verdict."""
_KEY = re.compile(r"[a-z][a-z0-9_]*")
_MACRO = re.compile(r"[A-Za-z]+")
_MATCH_TOLERANCE = 1e-9  # a {field: value} path item matches numbers this close


class ClaimsError(ValueError):
    """``claims.yml`` is missing or malformed; the message names the file, the entry and the fix."""


PathItem = str | int | Mapping[str, object]


@dataclass(frozen=True)
class Number:
    """One reported number: where it comes from and how it reads.

    Attributes
    ----------
    key : name in ``numbers.json``.
    macro : LaTeX macro name in ``numbers.tex`` (letters only).
    notebook : notebook stem that measures it; ``None`` for a paper claim no notebook measures.
    path : keys into that notebook's saved values; a mapping item picks the entry of a list whose
        fields equal it (numbers within 1e-9). Empty when ``notebook`` is ``None``.
    unit : unit as printed ("rad", "Å", "s", "" ...).
    fmt : format specification of the value.
    description : what it is, in a few words.
    scale : factor applied to the saved value (``None``: the value as saved, ints stay ints).
    seeds : ``(level, measure)`` into the seed-spread benchmark's ``spread`` (:attr:`Claims.seed_spread`),
        for a number measured again with other training seeds; empty when it was not.
    """

    key: str
    macro: str
    notebook: str | None
    path: tuple[PathItem, ...]
    unit: str
    fmt: str
    description: str
    scale: float | None = None
    seeds: tuple[str, ...] = ()

    def read(self, values: Mapping) -> float | int | None:
        """Read the number from a notebook's saved ``values`` (``KeyError`` when it is not there)."""
        value: object = values
        for item in self.path:
            value = _step(value, item)
        if value is None or self.scale is None:
            return value
        return self.scale * value


def _step(value: object, item: PathItem) -> object:
    """One step of a :attr:`Number.path`."""
    if isinstance(item, Mapping):
        if not isinstance(value, list):
            raise KeyError(f"{dict(item)} selects from a list, not a {type(value).__name__}")
        for entry in value:
            if isinstance(entry, Mapping) and all(_same(entry.get(k), v) for k, v in item.items()):
                return entry
        raise KeyError(f"no entry with {dict(item)}")
    if isinstance(value, list) and isinstance(item, int):
        return value[item]
    if not isinstance(value, Mapping):
        raise KeyError(f"{item!r}: not a mapping")
    return value[item]


def _same(a: object, b: object) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return abs(a - b) <= _MATCH_TOLERANCE
    return a == b


@dataclass(frozen=True)
class Claim:
    """A result the paper reports, and which of our numbers answers it.

    Attributes
    ----------
    key : number key in :attr:`Claims.numbers`.
    claim : the claim in a few words.
    paper : the paper's value, or its ``(low, high)`` range, in the number's unit.
    source : where the paper states it (section, figure, appendix).
    better : ``"lower"`` or ``"higher"``: which way is better.
    caveat : what makes the comparison imperfect (sizes, hardware).
    comparable : ``False`` when ours measures something else than the paper's (another SNR, other
        work timed): both are shown, with no verdict.
    method : ``"ours"`` (our modified method measured it), ``"paper"`` (the paper's own method,
        run at our images: notebook 09), which decide the verdict's words, or ``"beyond"`` (what the
        paper does not run, e.g. projection matching, refinement: always ``comparable=False``).
    seeded : whether the number comes from a trained estimator, so that its verdict needs several
        training seeds (``False`` for, e.g., recovery from perturbed exact distances).
    grid : for a resolution, the number keys of the box size (px) and the pixel size (Å) of the
        images it was measured on: a crossing within two shells of their Nyquist limit is a bound,
        not a measurement (:func:`cryoorient.report.nyquist_bound`); ``None`` otherwise.
    """

    key: str
    claim: str
    paper: float | tuple[float, float]
    source: str
    better: str
    caveat: str = ""
    comparable: bool = True
    method: str = "ours"
    seeded: bool = True
    grid: tuple[str, str] | None = None


@dataclass(frozen=True)
class Claims:
    """The content of ``claims.yml``, validated.

    Attributes
    ----------
    paper : the paper, as cited in the report.
    paper_source : where the paper's values were read (the report quotes it).
    notebooks : notebook stems whose saved results are read, in order.
    profile_order : the order of profile columns (profiles not listed follow, sorted).
    always : profiles shown even without results ("not run").
    numbers : every reported number, in the report's order.
    claims : the claims table's rows, in order.
    setup : ``(number key, the paper's value)`` pairs of the Setup table.
    seed_spread : ``(results file relative to the repository, profile it measured)`` of the
        benchmark that retrains the estimators with other seeds; ``None`` when there is none.
    """

    paper: str
    paper_source: str
    notebooks: tuple[str, ...]
    profile_order: tuple[str, ...]
    always: tuple[str, ...]
    numbers: tuple[Number, ...]
    claims: tuple[Claim, ...]
    setup: tuple[tuple[str, float | int | str], ...]
    seed_spread: tuple[str, str] | None = None

    def number(self, key: str) -> Number:
        """The number named ``key`` (``KeyError`` when there is none)."""
        for n in self.numbers:
            if n.key == key:
                return n
        raise KeyError(key)

    def claim(self, key: str) -> Claim:
        """The claims-table row whose number is ``key`` (``KeyError`` when there is none)."""
        for c in self.claims:
            if c.key == key:
                return c
        raise KeyError(key)

    def columns(self, profiles: Sequence[str]) -> list[str]:
        """The profile columns: ``profiles`` (those with results) and :attr:`always`, in order."""
        shown = set(profiles) | set(self.always)
        ordered = [p for p in self.profile_order if p in shown]
        return ordered + sorted(shown - set(ordered))


def claims_path() -> Path:
    """``cryoorient/claims.yml``: package data, so an installed copy (Colab) has the paper's values."""
    return Path(str(resources.files("cryoorient") / "claims.yml"))


def load_claims(path: Path | None = None) -> Claims:
    """Read and validate ``claims.yml`` (default :func:`claims_path`).

    Raises
    ------
    ClaimsError
        The file is missing or not YAML, or an entry lacks a field, has one of the wrong type,
        repeats a key or macro, names an unknown number or notebook, or has a bad format.
    """
    path = Path(path) if path is not None else claims_path()
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ClaimsError(
            f"{path}: cannot read the claims file ({error}); the package carries it as "
            "cryoorient/claims.yml: reinstall the package (pip install -e . in a checkout)"
        ) from error
    except yaml.YAMLError as error:
        raise ClaimsError(f"{path}: not valid YAML ({error})") from error
    return _parse_claims(content, str(path))


def _field(entry: Mapping, name: str, kinds: type | tuple[type, ...], where: str, default: object = ...):
    if name not in entry:
        if default is not ...:
            return default
        raise ClaimsError(f"{where}: missing field {name!r}")
    value = entry[name]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in _tuple(kinds):
        names = " or ".join(k.__name__ for k in _tuple(kinds))
        raise ClaimsError(f"{where}: {name} must be {names}; got {value!r}")
    return value


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ClaimsError(f"{where} must be a list of names; got {value!r}")
    return tuple(value)


def _parse_number(entry: object, where: str, notebooks: tuple[str, ...]) -> Number:
    if not isinstance(entry, Mapping):
        raise ClaimsError(f"{where}: expected a mapping of fields; got {entry!r}")
    key = _field(entry, "key", str, where)
    where = f"{where} (key {key!r})"
    if not _KEY.fullmatch(key):
        raise ClaimsError(f"{where}: key must be lower_snake_case")
    macro = _field(entry, "macro", str, where)
    if not _MACRO.fullmatch(macro):
        raise ClaimsError(f"{where}: macro {macro!r} must be letters only (a LaTeX command name)")
    notebook = _field(entry, "notebook", (str, type(None)), where)
    if notebook is not None and notebook not in notebooks:
        raise ClaimsError(f"{where}: notebook {notebook!r} is not one of `notebooks` {list(notebooks)}")
    path = _field(entry, "path", (list, type(None)), where)
    if notebook is not None and not path:
        raise ClaimsError(f"{where}: a measured number needs a path into {notebook}'s saved values")
    if notebook is None and path:
        raise ClaimsError(f"{where}: path without a notebook; set notebook or remove path")
    for item in path or []:
        if isinstance(item, bool) or not isinstance(item, str | int | Mapping) or item == {}:
            raise ClaimsError(f"{where}: path items are keys, list indices or {{field: value}}; got {item!r}")
    scale = _field(entry, "scale", (int, float, type(None)), where, None)
    if scale is not None and not math.isfinite(scale):
        raise ClaimsError(f"{where}: scale must be a finite number; got {scale!r}")
    unit = _field(entry, "unit", str, where)
    fmt = _field(entry, "format", str, where)
    try:
        format(1234, fmt)
    except ValueError as error:
        raise ClaimsError(f"{where}: format {fmt!r} is not a format specification ({error})") from error
    description = _field(entry, "description", str, where)
    seeds = _field(entry, "seeds", list, where, [])
    if seeds and (len(seeds) != 2 or not all(isinstance(v, str) and v for v in seeds)):
        raise ClaimsError(f"{where}: seeds must be [level, measure] of the seed-spread results; got {seeds}")
    return Number(key, macro, notebook, tuple(path or ()), unit, fmt, description, scale, tuple(seeds))


def _paper_value(value: object, where: str) -> float | tuple[float, float]:
    if isinstance(value, list):
        if len(value) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise ClaimsError(f"{where}: paper must be a number or a [low, high] range; got {value!r}")
        if value[0] > value[1]:
            raise ClaimsError(f"{where}: paper range {value!r} has low > high")
        return (value[0], value[1])
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ClaimsError(f"{where}: paper must be a number or a [low, high] range; got {value!r}")
    return value


def _parse_claim(entry: object, where: str, keys: set[str]) -> Claim:
    if not isinstance(entry, Mapping):
        raise ClaimsError(f"{where}: expected a mapping of fields; got {entry!r}")
    key = _field(entry, "key", str, where)
    where = f"{where} (key {key!r})"
    if key not in keys:
        raise ClaimsError(f"{where}: no number {key!r} under `numbers`; add it there first")
    better = _field(entry, "better", str, where)
    if better not in DIRECTIONS:
        raise ClaimsError(f"{where}: better must be 'lower' or 'higher'; got {better!r}")
    method = _field(entry, "method", str, where, "ours")
    if method not in METHODS:
        raise ClaimsError(f"{where}: method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "beyond" and _field(entry, "comparable", bool, where, True):
        raise ClaimsError(f"{where}: a row beyond the paper gets no verdict against it: comparable: false")
    grid = _field(entry, "grid", list, where, None)
    if grid is not None:
        if len(grid) != 2 or not all(isinstance(g, str) for g in grid):
            raise ClaimsError(f"{where}: grid must be [box size key, pixel size key]; got {grid!r}")
        unknown = [g for g in grid if g not in keys]
        if unknown:
            raise ClaimsError(f"{where}: grid names {', '.join(unknown)}, not numbers under `numbers`")
        grid = (grid[0], grid[1])
    return Claim(
        key,
        _field(entry, "claim", str, where),
        _paper_value(_field(entry, "paper", (int, float, list), where), where),
        _field(entry, "source", str, where),
        better,
        _field(entry, "caveat", str, where, ""),
        _field(entry, "comparable", bool, where, True),
        method,
        _field(entry, "seeded", bool, where, True),
        grid,
    )


def _parse_claims(content: object, name: str) -> Claims:
    if not isinstance(content, Mapping):
        kind = type(content).__name__
        raise ClaimsError(f"{name}: expected a mapping with `numbers` and `claims`; got {kind}")
    notebooks = _strings(content.get("notebooks"), f"{name}: notebooks")
    profiles = content.get("profiles")
    if not isinstance(profiles, Mapping):
        raise ClaimsError(f"{name}: profiles must be a mapping with `order` and `always`; got {profiles!r}")
    order = _strings(profiles.get("order"), f"{name}: profiles.order")
    always = _strings(profiles.get("always"), f"{name}: profiles.always")
    numbers = content.get("numbers")
    if not isinstance(numbers, list) or not numbers:
        raise ClaimsError(f"{name}: numbers must be a non-empty list")
    parsed = tuple(_parse_number(e, f"{name}: numbers[{i}]", notebooks) for i, e in enumerate(numbers))
    for attribute in ("key", "macro"):
        seen: set[str] = set()
        for i, n in enumerate(parsed):
            if getattr(n, attribute) in seen:
                raise ClaimsError(f"{name}: numbers[{i}]: {attribute} {getattr(n, attribute)!r} repeats")
            seen.add(getattr(n, attribute))
    keys = {n.key for n in parsed}
    claims = content.get("claims")
    if not isinstance(claims, list):
        raise ClaimsError(f"{name}: claims must be a list")
    setup = content.get("setup") or []
    if not isinstance(setup, list):
        raise ClaimsError(f"{name}: setup must be a list of {{key, paper}}")
    setup_pairs = []
    for i, entry in enumerate(setup):
        where = f"{name}: setup[{i}]"
        if not isinstance(entry, Mapping):
            raise ClaimsError(f"{where}: expected {{key, paper}}; got {entry!r}")
        key = _field(entry, "key", str, where)
        if key not in keys:
            raise ClaimsError(f"{where}: no number {key!r} under `numbers`")
        setup_pairs.append((key, _field(entry, "paper", (int, float, str), where)))
    spread = content.get("seed_spread")
    if spread is not None:
        where = f"{name}: seed_spread"
        if not isinstance(spread, Mapping):
            raise ClaimsError(f"{where}: expected {{file, profile}}; got {spread!r}")
        spread = (_field(spread, "file", str, where), _field(spread, "profile", str, where))
    elif any(n.seeds for n in parsed):
        raise ClaimsError(f"{name}: numbers name seeds but there is no `seed_spread` {{file, profile}}")
    return Claims(
        paper=_field(content, "paper", str, name),
        paper_source=_field(content, "paper_source", str, name),
        notebooks=notebooks,
        profile_order=order,
        always=always,
        numbers=parsed,
        claims=tuple(_parse_claim(e, f"{name}: claims[{i}]", keys) for i, e in enumerate(claims)),
        setup=tuple(setup_pairs),
        seed_spread=spread,
    )
