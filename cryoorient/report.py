"""The reproduction report: the paper's claims beside our numbers, generated from saved results.

Reads what notebooks 01–05 saved (:mod:`cryoorient.results`) for every profile that has results
and writes, into :func:`cryoorient.paths.paper_dir`:

- ``numbers.json``: every number we reproduce, per profile, with map, commit and the claims table;
- ``README.md``: the report, claim by claim: the paper's value, ours per profile, a plain verdict;
- ``numbers.tex``: one LaTeX macro per number, for ``main.tex``.

``python -m cryoorient.report`` does that and refreshes the results table of the repository's
README between its ``<!-- results:begin -->`` and ``<!-- results:end -->`` markers;
``--check`` only reports (exit 1) whether README and ``paper/`` are out of date.

The paper's values, and the section or figure that states them, were read from the paper's
LaTeX source (github.com/mdeff/paper-cryoem-orientation-recovery, the NeurIPS 2021 submission
build, commit ed73f3d, whose abstract is arXiv:2104.06237's); see :data:`SOURCE`. Verdicts
compare numbers and say nothing the numbers do not: "reproduced" (within the paper's range, or
within 10 % of its single value), "better", "worse", or "not run".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cryoorient.paths import atomic_write, paper_dir, repo_root
from cryoorient.results import Results, ResultsError, available_profiles, load_results

__all__ = [
    "CLAIMS",
    "NUMBERS",
    "Claim",
    "Number",
    "claims_rows",
    "collect",
    "numbers_document",
    "readme_table",
    "render_report",
    "render_tex",
    "update_readme",
    "verdict",
    "write_report",
]

NOTEBOOKS = (
    "01_data_generation",
    "02_distance_learning",
    "03_distance_accuracy",
    "04_orientation_recovery",
    "05_reconstruction",
)
NOISY = "16"  # the noisy experiment's σ², as notebook 04 keys it
SOURCE = (
    "from the paper's LaTeX source (github.com/mdeff/paper-cryoem-orientation-recovery, NeurIPS 2021 "
    "submission build ed73f3d, whose abstract is arXiv:2104.06237's; section and figure numbers are "
    "that build's and may differ by one or two in the arXiv PDF)"
)
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Number:
    """One reported number: where it comes from and how it reads.

    Attributes
    ----------
    key : name in ``numbers.json``.
    macro : LaTeX macro name in ``numbers.tex`` (letters only).
    notebook : notebook stem that measures it; ``None`` for a paper claim no notebook measures.
    get : reads the number from that notebook's saved values (KeyError when absent).
    unit : unit as printed ("rad", "Å", "s", "" ...).
    fmt : format specification of the value.
    description : what it is, in a few words.
    """

    key: str
    macro: str
    notebook: str | None
    get: Callable[[dict], float | int]
    unit: str
    fmt: str
    description: str


def _perturbed_at(variance: float) -> Callable[[dict], float]:
    def get(values: dict) -> float:
        for entry in values["perturbed"]:
            if abs(entry["variance"] - variance) < 1e-9:
                return entry["e_or"]
        raise KeyError(f"variance {variance}")

    return get


NUMBERS: tuple[Number, ...] = (
    Number(
        "n_projections",
        "NProjections",
        NOTEBOOKS[0],
        lambda v: v["n_projections"],
        "",
        ",d",
        "projections in the dataset (P)",
    ),
    Number("box_size", "BoxSize", NOTEBOOKS[0], lambda v: v["box_size"], "px", "d", "projection size"),
    Number("pixel_size", "PixelSize", NOTEBOOKS[0], lambda v: v["pixel_size"], "Å", ".2f", "pixel size"),
    Number(
        "n_train", "NTrain", NOTEBOOKS[0], lambda v: v["splits"]["train"], "", ",d", "training projections"
    ),
    Number(
        "n_validation",
        "NValidation",
        NOTEBOOKS[0],
        lambda v: v["splits"]["validation"],
        "",
        ",d",
        "validation projections",
    ),
    Number("n_test", "NTest", NOTEBOOKS[0], lambda v: v["splits"]["test"], "", ",d", "test projections"),
    Number(
        "training_epochs",
        "TrainingEpochs",
        NOTEBOOKS[1],
        lambda v: v["epochs"],
        "",
        "d",
        "epochs of the distance estimator",
    ),
    Number(
        "training_minutes",
        "TrainingMinutes",
        NOTEBOOKS[1],
        lambda v: v["training_minutes"],
        "min",
        ".1f",
        "training time of the distance estimator (noiseless)",
    ),
    Number(
        "n_parameters",
        "NParameters",
        NOTEBOOKS[1],
        lambda v: v["n_parameters"],
        "",
        ",d",
        "parameters of the distance network",
    ),
    Number(
        "de_rmse",
        "DeRmse",
        NOTEBOOKS[1],
        lambda v: v["test_uniform"]["rmse"],
        "rad",
        ".3f",
        "test RMSE of the learned distance, pairs with uniform d_q",
    ),
    Number(
        "de_pearson",
        "DePearson",
        NOTEBOOKS[1],
        lambda v: v["test_uniform"]["pearson"],
        "",
        ".3f",
        "test Pearson r of the learned distance",
    ),
    Number(
        "de_rmse_far",
        "DeRmseFar",
        NOTEBOOKS[1],
        lambda v: v["test_uniform"]["rmse_above_2"],
        "rad",
        ".3f",
        "test RMSE of the learned distance where d_q > 2 rad",
    ),
    Number(
        "de_loss",
        "DeLoss",
        NOTEBOOKS[1],
        lambda v: v["test_uniform"]["loss"],
        "rad²",
        ".4f",
        "test L_DE, pairs with uniform d_q",
    ),
    Number(
        "de_rmse_random",
        "DeRmseRandom",
        NOTEBOOKS[1],
        lambda v: v["test_random"]["rmse"],
        "rad",
        ".3f",
        "test RMSE of the learned distance, random pairs",
    ),
    Number(
        "euclidean_rmse",
        "EuclideanRmse",
        NOTEBOOKS[2],
        lambda v: v["euclidean"]["rmse"],
        "rad",
        ".3f",
        "test RMSE of the Euclidean baseline ‖p_i − p_j‖ (affinely fitted)",
    ),
    Number(
        "euclidean_pearson",
        "EuclideanPearson",
        NOTEBOOKS[2],
        lambda v: v["euclidean"]["pearson"],
        "",
        ".3f",
        "test Pearson r of the Euclidean baseline",
    ),
    Number(
        "bound_cosine",
        "BoundCosine",
        NOTEBOOKS[2],
        lambda v: v["embedding_bound_rmse"]["cosine"],
        "rad",
        ".3f",
        "free-embedding floor of the cosine d_f (RMSE)",
    ),
    Number(
        "bound_orientation",
        "BoundOrientation",
        NOTEBOOKS[2],
        lambda v: v["embedding_bound_rmse"]["orientation"],
        "rad",
        ".3f",
        "free-embedding floor of the orientation d_f (RMSE)",
    ),
    Number(
        "d2_lookalikes_full",
        "DTwoLookalikesFull",
        NOTEBOOKS[2],
        lambda v: 100 * v["d2_lookalike_fraction"]["uniform"],
        "%",
        ".2f",
        "D2 look-alike pairs, full coverage",
    ),
    Number(
        "d2_lookalikes_quarter",
        "DTwoLookalikesQuarter",
        NOTEBOOKS[2],
        lambda v: 100 * v["d2_lookalike_fraction"]["quarter"],
        "%",
        ".2f",
        "D2 look-alike pairs, quarter coverage",
    ),
    Number(
        "recipe_paper_loss",
        "RecipePaperLoss",
        NOTEBOOKS[2],
        lambda v: v["grid"]["recipe = paper"]["loss"],
        "rad²",
        ".3f",
        "grid test L_DE, the paper's training recipe",
    ),
    Number(
        "recipe_inbatch_loss",
        "RecipeInbatchLoss",
        NOTEBOOKS[2],
        lambda v: v["grid"]["recipe = inbatch"]["loss"],
        "rad²",
        ".3f",
        "grid test L_DE, in-batch recipe",
    ),
    Number(
        "eor_exact",
        "EorExact",
        NOTEBOOKS[3],
        lambda v: v["exact"]["e_or"],
        "rad",
        ".1e",
        "E_OR from exact distances",
    ),
    Number(
        "recovery_seconds",
        "RecoverySeconds",
        NOTEBOOKS[3],
        lambda v: v["exact"]["recovery_seconds"],
        "s",
        ".1f",
        "time to recover the test orientations from exact distances",
    ),
    Number(
        "alignment_seconds",
        "AlignmentSeconds",
        NOTEBOOKS[3],
        lambda v: v["exact"]["alignment_seconds"],
        "s",
        ".2f",
        "time of the O(4) alignment",
    ),
    Number(
        "eor_perturbed",
        "EorPerturbed",
        NOTEBOOKS[3],
        _perturbed_at(0.8),
        "rad",
        ".3f",
        "E_OR from distances with errors of variance 0.8",
    ),
    Number(
        "eor_learned_clean",
        "EorLearnedClean",
        NOTEBOOKS[3],
        lambda v: v["learned"]["0"]["e_or"],
        "rad",
        ".3f",
        "E_OR from learned distances, noiseless",
    ),
    Number(
        "eor_learned_noisy",
        "EorLearnedNoisy",
        NOTEBOOKS[3],
        lambda v: v["learned"][NOISY]["e_or"],
        "rad",
        ".3f",
        "E_OR from learned distances, σ² = 16",
    ),
    Number(
        "res_true",
        "ResTrue",
        NOTEBOOKS[4],
        lambda v: v["resolution_05"]["true"],
        "Å",
        ".1f",
        "FSC-0.5 resolution, true orientations",
    ),
    Number(
        "res_random",
        "ResRandom",
        NOTEBOOKS[4],
        lambda v: v["resolution_05"]["random"],
        "Å",
        ".1f",
        "FSC-0.5 resolution, random orientations",
    ),
    Number(
        "res_clean",
        "ResClean",
        NOTEBOOKS[4],
        lambda v: v["resolution_05"]["recovered, σ² = 0"],
        "Å",
        ".1f",
        "FSC-0.5 resolution, orientations recovered noiseless",
    ),
    Number(
        "res_noisy",
        "ResNoisy",
        NOTEBOOKS[4],
        lambda v: v["resolution_05"][f"recovered, σ² = {NOISY}"],
        "Å",
        ".1f",
        "FSC-0.5 resolution, orientations recovered at σ² = 16",
    ),
    Number(
        "res_noisy_0143",
        "ResNoisyGold",
        NOTEBOOKS[4],
        lambda v: v["resolution_0143"][f"recovered, σ² = {NOISY}"],
        "Å",
        ".1f",
        "FSC-0.143 resolution, orientations recovered at σ² = 16",
    ),
    Number("nyquist", "Nyquist", NOTEBOOKS[4], lambda v: v["nyquist"], "Å", ".2f", "Nyquist resolution"),
    Number(
        "eor_5a1a_clean",
        "EorFiveAOneAClean",
        None,
        lambda v: v["5a1a"],
        "rad",
        ".3f",
        "E_OR from learned distances, noiseless 5a1a (not measured by any notebook)",
    ),  # fmt: skip
    Number(
        "res_5a1a_clean",
        "ResFiveAOneAClean",
        None,
        lambda v: v["5a1a"],
        "Å",
        ".1f",
        "FSC-0.5 resolution, 5a1a recovered noiseless (not measured by any notebook)",
    ),  # fmt: skip
    Number(
        "reconstruction_seconds",
        "ReconstructionSeconds",
        NOTEBOOKS[4],
        lambda v: v["seconds"]["true"],
        "s",
        ".1f",
        "time of one reconstruction (true orientations)",
    ),
)


@dataclass(frozen=True)
class Claim:
    """A result the paper reports, and which of our numbers answers it.

    Attributes
    ----------
    key : number key in :data:`NUMBERS`.
    claim : the claim in a few words.
    paper : the paper's value, or its ``(low, high)`` range.
    better : ``"lower"`` or ``"higher"``: which way is better.
    caveat : what makes the comparison imperfect (sizes, hardware).
    """

    key: str
    claim: str
    paper: float | tuple[float, float]
    better: str
    caveat: str = ""


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "training_minutes",
        "training the distance estimator takes",
        3.3 * 60,
        "lower",
        "paper (App. C): 150 epochs at 116 px on one Tesla T4 (8.75 h on a K40c); "
        "ours: the profile's epochs and sizes on the CPU that ran it",
    ),
    Claim(
        "recovery_seconds",
        "recovering the test orientations from exact distances takes",
        3.75 * 3600,
        "lower",
        "paper (App. C): Adam on a K40c GPU until convergence; ours: spectral start + L-BFGS on a CPU",
    ),
    Claim(
        "alignment_seconds",
        "aligning recovered and true orientations (O(4)) takes",
        50 * 60,
        "lower",
        "paper (App. C): FTRL, best of 6 runs of 300 steps, on a CPU",
    ),
    Claim(
        "eor_perturbed",
        "E_OR from exact distances plus errors of variance 0.8 (5j0n)",
        0.2,
        "lower",
        "paper (Fig. 5): E_OR grows to ≈ 0.2 rad (≈ 11.5°) at variance 0.8, read off the figure",
    ),
    Claim(
        "eor_learned_clean",
        "E_OR from learned distances, noiseless 5j0n",
        (0.16, 0.20),
        "lower",
        "paper: ≈ 0.16 rad in the noise study (Fig. 7, half coverage), ≈ 0.20 rad for the full pipeline "
        "(§ 3.5); ours: full coverage, 64 px images, orientation d_f, in-batch recipe",
    ),
    Claim(
        "eor_learned_noisy",
        "E_OR from learned distances, 5j0n at σ² = 16",
        (0.25, 0.42),
        "lower",
        "paper: ≈ 0.42 rad in the noise study (Fig. 7), ≈ 0.25 rad for the full pipeline (§ 3.5); "
        "ours: 64 px images, so less signal per image at the same σ²",
    ),
    Claim(
        "res_clean",
        "resolution (FSC 0.5) from orientations recovered noiseless (5j0n)",
        12.2,
        "lower",
        "paper (§ 3.5, Fig. 9): ASTRA's CGLS at 116 px; ours cannot go below the profile's Nyquist "
        "limit (see the Nyquist row)",
    ),
    Claim(
        "res_noisy",
        "resolution (FSC 0.5) from orientations recovered at σ² = 16 (5j0n)",
        15.2,
        "lower",
        "both reconstructed from the noiseless projections, as in the paper (§ 3.5)",
    ),
    Claim(
        "eor_5a1a_clean",
        "E_OR from learned distances, noiseless 5a1a (D2, quarter coverage)",
        0.13,
        "lower",
        "not run here: the 5a1a model (β-galactosidase) comes from RCSB, which the machine that ran this "
        "could not reach; notebook 03 shows the D2-symmetry effect with an embedded D2 pseudo-protein",
    ),
    Claim(
        "res_5a1a_clean",
        "resolution (FSC 0.5) from orientations recovered noiseless (5a1a)",
        8.0,
        "lower",
        "not run here (see the row above)",
    ),
)

SETUP: tuple[tuple[str, float | str], ...] = (  # the paper's § 3.1 and Table 1
    ("n_projections", 5000),
    ("box_size", 116),
    ("pixel_size", "not stated (map: 3.67 Å voxels)"),
    ("n_train", 2512),
    ("n_validation", 838),
    ("n_test", 1650),
    ("training_epochs", 150),
)
NUMBER_BY_KEY = {n.key: n for n in NUMBERS}


def verdict(
    paper: float | tuple[float, float], ours: float | None, better: str, tolerance: float = 0.1
) -> str:
    """``"reproduced"``, ``"better"``, ``"worse"`` or ``"not run"`` (``ours`` is ``None``).

    Within a range (inclusive), or within ``tolerance`` (relative) of a single value, is
    "reproduced"; otherwise the side that ``better`` (``"lower"``/``"higher"``) names decides.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher'; got {better!r}")
    if ours is None:
        return "not run"
    low, high = paper if isinstance(paper, tuple) else (paper * (1 - tolerance), paper * (1 + tolerance))
    if low <= ours <= high:
        return "reproduced"
    below = ours < low
    return "better" if below == (better == "lower") else "worse"


def collect(profile: str) -> dict:
    """The numbers of ``profile`` from the saved results: ``{"numbers", "runs", "missing"}``.

    ``runs`` gives each notebook's map and commit (and the map's source where recorded);
    ``missing`` lists notebooks without results. A number whose notebook ran but did not record
    it (another grid, say) is left out.
    """
    loaded: dict[str, Results] = {}
    missing = []
    for notebook in NOTEBOOKS:
        try:
            loaded[notebook] = load_results(notebook, profile)
        except ResultsError:
            missing.append(notebook)
    numbers = {}
    for number in NUMBERS:
        if number.notebook in loaded:
            try:
                value = number.get(loaded[number.notebook].values)
            except (KeyError, TypeError):
                continue
            if value is not None:
                numbers[number.key] = value
    runs = {
        name: {"map": r.values.get("map"), "commit": r.provenance.get("commit")} for name, r in loaded.items()
    }
    for name, r in loaded.items():  # where the map came from (a file, a download, the embedded default)
        if "map_source" in r.provenance:
            runs[name]["map_source"] = r.provenance["map_source"]
    return {"numbers": numbers, "runs": runs, "missing": missing}


def numbers_document(profiles: list[str] | None = None) -> dict:
    """The content of ``numbers.json`` for ``profiles`` (default: every profile with results).

    The claims list ours and a verdict for ``default``, ``paper`` and any other profile run; a
    profile without results has ``None`` and "not run".
    """
    profiles = available_profiles() if profiles is None else profiles
    by_profile = {p: collect(p) for p in profiles}
    shown = ["default", "paper"] + sorted(set(profiles) - {"default", "paper"})
    claims = []
    for c in CLAIMS:
        ours = {p: by_profile[p]["numbers"].get(c.key) if p in by_profile else None for p in shown}
        claims.append(
            {
                "key": c.key,
                "claim": c.claim,
                "unit": NUMBER_BY_KEY[c.key].unit,
                "paper": list(c.paper) if isinstance(c.paper, tuple) else c.paper,
                "better": c.better,
                "caveat": c.caveat,
                "ours": ours,
                "verdict": {p: verdict(c.paper, v, c.better) for p, v in ours.items()},
            }
        )
    return {
        "paper": "Banjac, Donati & Defferrard (2021), arXiv:2104.06237",
        "units": {n.key: n.unit for n in NUMBERS},
        "descriptions": {n.key: n.description for n in NUMBERS},
        "setup_paper": dict(SETUP),
        "profiles": by_profile,
        "claims": claims,
    }


def _duration(seconds: float) -> str:
    """A duration in the unit a reader expects (s, min or h)."""
    if seconds < 120:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _show(key: str, value: float | str | tuple[float, float] | None, quoted: bool = False) -> str:
    """A number (or range) with its unit, as the report prints it; ``quoted``: a paper value, as quoted."""
    number = NUMBER_BY_KEY[key]
    if value is None:
        return "not run"
    if isinstance(value, str):
        return value
    if number.unit in ("s", "min"):
        scale = 60 if number.unit == "min" else 1
        if isinstance(value, tuple):
            return "–".join(_duration(v * scale) for v in value)
        return _duration(value * scale)
    fmt = ".2f" if quoted and number.unit == "rad" else number.fmt  # the paper quotes radians to 0.01
    text = "–".join(format(v, fmt) for v in value) if isinstance(value, tuple) else format(value, fmt)
    return f"{text} {number.unit}".strip()


def claims_rows(document: dict) -> list[list[str]]:
    """Rows of the claims table: claim, paper, then ours and the verdict for each profile."""
    rows = []
    for entry in document["claims"]:
        paper = tuple(entry["paper"]) if isinstance(entry["paper"], list) else entry["paper"]
        row = [entry["claim"], _show(entry["key"], paper, quoted=True)]
        for profile, value in entry["ours"].items():
            row += [_show(entry["key"], value), entry["verdict"][profile]]
        rows.append(row)
    return rows


def _claims_header(profiles: list[str]) -> list[str]:
    return ["claim", "paper"] + [h for p in profiles for h in (f"ours, {p} profile", f"verdict, {p}")]


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _profiles_shown(document: dict) -> list[str]:
    """The profiles the claims list: ``default``, ``paper``, then any other run."""
    return list(document["claims"][0]["ours"]) if document["claims"] else []


def readme_table(document: dict) -> str:
    """The results table of the repository's README (generated; between the markers)."""
    profiles = _profiles_shown(document)
    header = _claims_header(profiles)
    note = (
        "Generated by `python -m cryoorient.report` from `paper/numbers.json` (run by `make figures`); "
        "details, caveats and the setup of each profile in [`paper/README.md`](paper/README.md)."
    )
    return f"{_markdown_table(header, claims_rows(document))}\n\n{note}"


def render_report(document: dict) -> str:
    """``paper/README.md``: the claim-by-claim reproduction report."""
    profiles = _profiles_shown(document)
    full = {
        p: document["profiles"].get(p, {"numbers": {}, "runs": {}, "missing": list(NOTEBOOKS)})
        for p in profiles
    }
    parts = [
        "# Reproduction report",
        "",
        "<!-- generated by `python -m cryoorient.report` from the notebooks' saved results; do not edit -->",
        "",
        f"The claims of {document['paper']} beside the numbers this repository's notebooks measured. "
        "Every number below comes from a run recorded in `paper/results/PROFILE/` (and `numbers.json`); "
        f"none is typed by hand. The paper's values: {SOURCE}. "
        "Verdict: *reproduced* when ours is inside the paper's range or within 10 % of its single "
        "value, otherwise *better* or *worse*; *not run* when no run of that profile exists.",
        "",
        "## Claims",
        "",
    ]
    header = _claims_header(profiles)
    parts += [_markdown_table(header, claims_rows(document)), "", "What limits each comparison:", ""]
    parts += [f"- *{c.claim}*: {c.caveat}." for c in CLAIMS if c.caveat]
    parts += ["", "## Setup", ""]
    setup_rows = []
    for key, paper_value in SETUP:
        row = [NUMBER_BY_KEY[key].description, _show(key, paper_value, quoted=True)]
        row += [_show(key, full[p]["numbers"].get(key)) for p in profiles]
        setup_rows.append(row)
    parts += [_markdown_table(["", "paper"] + [f"ours, {p}" for p in profiles], setup_rows), ""]
    parts += ["## Every number we measured", ""]
    rows = [
        [n.description, *(_show(n.key, full[p]["numbers"].get(n.key)) for p in profiles)]
        for n in NUMBERS
        if n.key not in dict(SETUP)
    ]
    parts += [_markdown_table(["number"] + profiles, rows), "", "## Runs", ""]
    for p in profiles:
        runs = full[p]["runs"]
        if not runs:
            parts.append(f"- **{p}**: not run.")
            continue
        maps = sorted({str(r["map"]) for r in runs.values()})
        sources = sorted({str(r["map_source"]) for r in runs.values() if "map_source" in r})
        maps += [f"(read from {', '.join(sources)})"] if sources else []
        commits = sorted({str(r["commit"]) for r in runs.values()})
        missing = f"; missing: {', '.join(full[p]['missing'])}" if full[p]["missing"] else ""
        parts.append(f"- **{p}**: notebooks {', '.join(sorted(runs))}; map {' '.join(maps)}; "
                     f"commit {', '.join(commits)}{missing}.")  # fmt: skip
    return "\n".join(parts) + "\n"


def render_tex(document: dict, profile: str = "default") -> str:
    r"""``numbers.tex``: ``\newcommand`` per number of ``profile``, and ``\PaperNAME`` per paper value.

    Paper durations stay in our number's unit (training minutes, seconds) for the text to convert.
    """
    numbers = document["profiles"].get(profile, {"numbers": {}})["numbers"]
    lines = [
        f"% generated by `python -m cryoorient.report` from numbers.json (profile {profile}); do not edit"
    ]
    for n in NUMBERS:
        value = numbers.get(n.key)
        text = "n/a" if value is None else format(value, n.fmt).replace(",", "{,}")
        lines.append(f"\\newcommand{{\\{n.macro}}}{{{text}}}")
    paper = [(c.key, c.paper) for c in CLAIMS] + [(k, v) for k, v in SETUP if not isinstance(v, str)]
    for key, value in paper:
        n = NUMBER_BY_KEY[key]
        fmt = ".2f" if n.unit == "rad" else "g" if n.unit in ("s", "min") else n.fmt
        text = "--".join(format(v, fmt) for v in value) if isinstance(value, tuple) else format(value, fmt)
        lines.append(f"\\newcommand{{\\Paper{n.macro}}}{{{text.replace(',', '{,}')}}}")
    lines.append(f"\\newcommand{{\\Profile}}{{{profile}}}")
    return "\n".join(lines) + "\n"


def update_readme(text: str, table: str) -> str:
    """``text`` with the part between the results markers replaced by ``table``."""
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the README has no {BEGIN} ... {END} section for the results table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def _write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_report(folder: Path | None = None) -> list[Path]:
    """Write ``numbers.json``, ``README.md`` and ``numbers.tex`` into ``folder`` (default ``paper/``)."""
    folder = folder or paper_dir()
    document = numbers_document()
    document["generated"] = date.today().isoformat()
    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"  # order kept: it is the columns' order
    return [
        _write_text(folder / "numbers.json", text),
        _write_text(folder / "README.md", render_report(document)),
        _write_text(folder / "numbers.tex", render_tex(document)),
    ]


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m cryoorient.report", description=__doc__.split("\n")[0])
    root = repo_root()
    parser.add_argument("--readme", type=Path, default=root / "README.md" if root else None,
                        help="README whose results table to refresh (default: the repository's)")  # fmt: skip
    parser.add_argument("--check", action="store_true", help="only check that the README table is up to date")
    args = parser.parse_args(argv)
    if args.check:
        document = json.loads((paper_dir() / "numbers.json").read_text())
        expected = update_readme(args.readme.read_text(), readme_table(document))
        if expected != args.readme.read_text():
            print(
                f"{args.readme}: results table out of date; run `python -m cryoorient.report`",
                file=sys.stderr,
            )
            return 1
        return 0
    for path in write_report():
        print(f"wrote {path}")
    if args.readme is not None:
        document = json.loads((paper_dir() / "numbers.json").read_text())
        _write_text(args.readme, update_readme(args.readme.read_text(), readme_table(document)))
        print(f"updated the results table of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
