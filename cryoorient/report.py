"""The reproduction report: the paper's claims beside our numbers, generated from saved results.

What to report lives in a data file, ``cryoorient/claims.yml``, which :mod:`cryoorient.claims` loads
and validates: every number the notebooks measure (where in their saved results it is, its unit
and format), every claim of the paper (its value, where the paper states it, which way is better,
what limits the comparison) and the paper's setup. This module renders it with what notebooks
01–05 saved (:mod:`cryoorient.results`) for every profile that has results, into
:func:`cryoorient.paths.paper_dir`:

- ``numbers.json``: every number we reproduce, per profile, with map, commit and the claims table;
- ``README.md``: the report, claim by claim: the paper's value, ours per profile, a plain verdict;
- ``numbers.tex``: one LaTeX macro per number, for ``main.tex``.

``python -m cryoorient.report`` does that and refreshes the results table of the repository's
README between its ``<!-- results:begin -->`` and ``<!-- results:end -->`` markers;
``--check`` only reports (exit 1) whether README and ``paper/`` are out of date.

Verdicts compare numbers and say nothing the numbers do not: "reproduced" (within the paper's
range, or within 10 % of its single value), "better", "worse", or "not run". Where the estimators
were trained again with other seeds (``benchmarks/seed_spread.py``, named by ``seed_spread`` in
``claims.yml``), a number is shown with the range over the seeds, and the verdict is given to the
whole range: "better" or "worse" only when every seed is.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from cryoorient.claims import METHODS, Claim, Claims, ClaimsError, Number, claims_path, load_claims
from cryoorient.paths import atomic_write, paper_dir, repo_root
from cryoorient.provenance import portable
from cryoorient.results import COMPARISON_METHODS, Results, ResultsError, available_profiles, load_results

__all__ = [
    "Claim",
    "Claims",
    "ClaimsError",
    "Number",
    "claims_path",
    "claims_rows",
    "collect",
    "load_claims",
    "numbers_document",
    "nyquist_bound",
    "readme_table",
    "render_report",
    "render_tex",
    "seed_note",
    "seed_spreads",
    "update_readme",
    "verdict",
    "write_report",
]

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


METHOD_LABELS = {
    "ours": "ours (modified)",
    "paper": "the paper's, at our images",
    "beyond": "beyond the paper",
}
"""What each claims-table row measured, as its ``method`` column says."""
MIN_SEEDS = 3
"""Training seeds a number of a trained estimator needs before it gets a verdict."""
BOUND_SHELLS = 2
"""An FSC crossing this many Fourier shells or fewer from Nyquist is a bound on the resolution."""


def nyquist_bound(box_size: int, pixel_size: float, shells: int = BOUND_SHELLS) -> float:
    """The resolution (Å) ``shells`` Fourier shells inside Nyquist, for ``box_size``-pixel images.

    Shell ``k`` of a ``D``-pixel box is at frequency ``k / (D · pixel)``; Nyquist is ``k = D / 2``
    (resolution ``2 · pixel``). A crossing at or beyond ``D / 2 − shells`` says the map is as good
    as the grid allows, not how good the orientations are.
    """
    if box_size / 2 <= shells or pixel_size <= 0:
        raise ValueError(f"need box_size > 2 · shells and pixel_size > 0; got {box_size}, {pixel_size}")
    return box_size * pixel_size / (box_size / 2 - shells)


def verdict(
    paper: float | tuple[float, float],
    ours: float | None,
    better: str,
    tolerance: float = 0.1,
    spread: tuple[float, float] | None = None,
    *,
    method: str = "ours",
    seeds: int | None = None,
    bound: float | None = None,
) -> str:
    """The verdict of one number against the paper's, by the method measured.

    ``method="paper"`` (the paper's own method at our scale): ``"reproduced"`` when ours is within
    the paper's range (inclusive) or within ``tolerance`` (relative) of its single value, else
    ``"not reproduced"``. ``method="ours"`` (our modified method): ``"on par"`` there, else
    ``"better"`` or ``"worse"`` as ``better`` (``"lower"``/``"higher"``) says. ``"not run"`` when
    ``ours`` is ``None``.

    ``spread``, the ``(min, max)`` of the same number over training seeds, widens ours to a range:
    within when it meets the paper's, outside only when all of it is on one side. ``seeds``: how many
    training seeds measured it; below :data:`MIN_SEEDS` the verdict is ``"one seed"`` (or ``"N
    seeds"``). ``None``: the number involves no training (no seeds to ask for).

    ``bound``: for a resolution (Å, lower is better), the value at or below which the measurement
    is limited by the images' grid (:func:`nyquist_bound`): the verdict is then ``"bound"``.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher'; got {better!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if ours is None:
        return "not run"
    if bound is not None and ours <= bound:
        return "bound"
    if seeds is not None and seeds < MIN_SEEDS:
        return "one seed" if seeds <= 1 else f"{seeds} seeds"
    low, high = paper if isinstance(paper, tuple) else (paper * (1 - tolerance), paper * (1 + tolerance))
    ours_low, ours_high = (ours, ours) if spread is None else (min(ours, spread[0]), max(ours, spread[1]))
    if ours_low <= high and low <= ours_high:
        return "reproduced" if method == "paper" else "on par"
    if method == "paper":
        return "not reproduced"
    below = ours_high < low
    return "better" if below == (better == "lower") else "worse"


def _bound(claim: Claim, numbers: dict) -> float | None:
    """The resolution that is a bound for ``claim`` (:func:`nyquist_bound`), when its grid was measured."""
    if claim.grid is None or any(numbers.get(key) is None for key in claim.grid):
        return None
    return nyquist_bound(int(numbers[claim.grid[0]]), float(numbers[claim.grid[1]]))


def seed_spreads(profile: str, claims: Claims | None = None) -> dict[str, dict]:
    """``{number key: {"n", "mean", "min", "max"}}`` over training seeds, for ``profile``.

    Read from the seed-spread benchmark's results (:attr:`Claims.seed_spread`) when they are in the
    checkout and measured ``profile``; numbers measured with fewer than two seeds are left out.
    """
    claims = claims or load_claims()
    root = repo_root()
    if claims.seed_spread is None or root is None or profile != claims.seed_spread[1]:
        return {}
    path = root / claims.seed_spread[0]
    if not path.is_file():
        return {}
    try:
        spread = json.loads(path.read_text())["spread"]
    except (OSError, ValueError, KeyError) as error:
        raise ClaimsError(
            f"{claims.seed_spread[0]}: unreadable seed-spread results ({error}); "
            "rerun benchmarks/seed_spread.py"
        ) from error
    out = {}
    for number in claims.numbers:
        if number.seeds:
            level, measure = number.seeds
            entry = (spread.get(level) or {}).get(measure)
            if entry is not None and entry["n"] >= 2:
                out[number.key] = {k: entry[k] for k in ("n", "mean", "min", "max")}
    return out


def seed_note(key: str, profile: str, claims: Claims | None = None) -> str:
    """How many training seeds measured number ``key`` at ``profile``, in words, for a notebook's findings.

    E.g. ``"3 training seeds: 1.689–1.724 rad"`` from the seed-spread benchmark
    (:func:`seed_spreads`), in the number's own format and unit, or ``"one training seed"`` when the
    benchmark has not measured it (or is not in the checkout, as in an installed copy).
    """
    claims = claims or load_claims()
    spread = seed_spreads(profile, claims).get(key)
    if spread is None:
        return "one training seed"
    number = claims.number(key)
    low, high = (format(spread[k], number.fmt) for k in ("min", "max"))
    return f"{spread['n']} training seeds: {low}–{high}{' ' + number.unit if number.unit else ''}"


def collect(profile: str, claims: Claims | None = None) -> dict:
    """The numbers of ``profile`` from the saved results: ``{"numbers", "runs", "missing"}``.

    ``runs`` gives each notebook's map and commit (and the map's source where recorded, without
    machine paths: a file outside the repository by its name, and SHA-256 where recorded);
    ``missing`` lists notebooks without results. A number whose notebook ran but did not record
    it (another grid, say) is left out.
    """
    claims = claims or load_claims()
    loaded: dict[str, Results] = {}
    missing = []
    for notebook in claims.notebooks:
        try:
            loaded[notebook] = load_results(notebook, profile)
        except ResultsError:
            missing.append(notebook)
    numbers = {}
    for number in claims.numbers:
        if number.notebook in loaded:
            try:
                value = number.read(loaded[number.notebook].values)
            except (KeyError, IndexError, TypeError):
                continue
            if value is not None:
                numbers[number.key] = value
    runs = {
        name: {"map": portable(r.values.get("map")), "commit": r.provenance.get("commit")}
        for name, r in loaded.items()
    }
    for name, r in loaded.items():  # where the map came from (a file, a download, the embedded default)
        if "map_source" in r.provenance:  # results saved before paths were made portable may hold one
            runs[name]["map_source"] = portable(r.provenance["map_source"])
    collected = {"numbers": numbers, "runs": runs, "missing": missing}
    spreads = seed_spreads(profile, claims)
    if spreads:
        collected["spreads"] = spreads
    contest = loaded.get("11_projection_matching")
    if contest is not None and contest.values.get("full"):
        collected["contest"] = portable(contest.values)
    baseline = loaded.get("08_common_lines")
    if baseline is not None and "common_lines" in baseline.values:
        collected["common_lines"] = portable(baseline.values["common_lines"])
    return collected


def common_lines_section(comparison: dict, profile: str) -> list[str]:
    """``## Against common lines``: notebook 08's table and, in words, which method wins where."""
    saved = comparison["levels"]  # results are saved with sorted keys: σ² in numeric order, methods ours
    names = COMPARISON_METHODS
    levels = {
        level: {m: saved[level][m] for m in (*names, *sorted(set(saved[level]) - set(names)))
                if m in saved[level]}
        for level in sorted(saved, key=float)
    }
    lines = [
        f"Notebook 08 ({profile} profile): the same {comparison['p']} test projections "
        f"(the same noise draw) for learned distances and for ASPIRE's common lines (`CLSyncVoting`, "
        f"images downsampled to {comparison['box_size']} px; ASPIRE {comparison['aspire']}); class "
        "averages are made from the whole test split and as many of them are oriented, each scored "
        "against its reference image. The paper ran no such baseline, so there is no paper column. "
        "Errors in rad, mean (median); times on the machine that ran the notebook, the learned "
        "method's without training its estimators.",
        "",
    ]
    rows = []
    for level, methods in levels.items():
        for method, row in methods.items():
            o4, reg = (f"{row[k]:.3f} ({row[k + '_median']:.3f})" for k in ("e_or", "e_reg"))
            rows.append([level, names.get(method, method), o4, reg, _duration(row["seconds"])])
    header = ["σ²", "method", "E_OR (O(4), the paper's)", "E_OR,reg (rotation + mirror)", "time"]
    lines += [_markdown_table(header, rows), ""]
    wins: dict[str, list[str]] = {}
    for level, methods in levels.items():
        ranked = sorted(methods, key=lambda m: methods[m]["e_reg"])
        best, runner = ranked[0], ranked[1] if len(ranked) > 1 else None
        gap = f" ({methods[best]['e_reg']:.3f} rad against {methods[runner]['e_reg']:.3f})" if runner else ""
        wins.setdefault(best, []).append(f"σ² = {level}{gap}")
    verdict_text = "; ".join(f"{names.get(m, m)} is best at {', '.join(w)}" for m, w in wins.items())
    failed = [lv for lv, m in levels.items() if m["common_lines"]["e_reg"] > 1.0 > m["learned"]["e_reg"]]
    if failed:
        top = max(levels, key=float)
        verdict_text += (
            f". At σ² = {', '.join(failed)} common lines on the projections fail (E_OR,reg above 1 rad) "
            "where the learned estimator does not, at the price of training it once "
            f"({comparison['training_minutes'][top]:.0f} min for the noise curriculum up to σ² = {top} on "
            "the machine that trained it)"
        )
    lines.append(f"**Verdict, by E_OR,reg (what a user without the truth gets):** {verdict_text}.")
    return lines + [""]


def contest_section(contest: dict, profile: str) -> list[str]:
    """``## With the map: who wins where``: notebook 11's full study, its table and its verdict.

    ``contest`` is that notebook's saved ``values``: ``full`` (the committed run of
    ``benchmarks/who_wins.py``: ``levels``, ``parameters``, ``commit``), ``labels`` and ``verdict``
    (sentences the notebook generated from the numbers). Nothing when the full study has not run.
    """
    full = contest.get("full")
    if not full:
        return []
    labels = contest.get("labels", {})
    parameters = full["parameters"]
    lines = [
        f"Notebook 11 ({profile} profile), from the run of `benchmarks/who_wins.py` at {full['commit'][:7]}: "
        f"the same {parameters['images']} test projections for every method at each noise level; "
        "projection matching against the true map, learned distances (recovery and the gauge fixed from "
        "the images), common lines (ASPIRE) on the projections and on class averages, and the same "
        f"refinement against half maps from the images (at most {parameters['rounds']} rounds, no truth) "
        "from the learned, the common-lines and random orientations. The paper ran none of these, so there "
        "is no paper column. Errors in rad, mean (median); FSC 0.5 against the true map of the map the "
        "images give with those orientations (true orientations: the ceiling); times on the machine that "
        "ran it, without training the estimators.",
        "",
    ]
    rows = []
    for level in sorted(full["levels"], key=float):
        for name, row in sorted(full["levels"][level].items(), key=lambda item: item[1]["e_reg"]):
            o4, reg = (f"{row[k]:.3f} ({row[k + '_median']:.3f})" for k in ("e_or", "e_reg"))
            within = f"{100 * row['within_5']:.0f} % / {100 * row['within_10']:.0f} %"
            rows.append([level, labels.get(name, name), o4, reg, within, f"{row['resolution']:.1f} Å",
                         _duration(row["seconds"])])
    header = ["σ²", "method", "E_OR (O(4))", "E_OR,reg", "within 5° / 10°", "FSC 0.5", "time"]
    lines += [_markdown_table(header, rows), ""]
    lines += ["**Verdict, by E_OR,reg (generated from the numbers):**", ""]
    lines += [f"- {sentence}" for sentence in contest.get("verdict", [])]
    return lines + [""]


def numbers_document(profiles: list[str] | None = None, claims: Claims | None = None) -> dict:
    """The content of ``numbers.json`` for ``profiles`` (default: every profile with results).

    The claims list ours and a verdict for each column of :meth:`Claims.columns` (``default``,
    ``paper`` and any other profile run); a profile without results has ``None`` and "not run".
    """
    claims = claims or load_claims()
    profiles = available_profiles() if profiles is None else profiles
    by_profile = {p: collect(p, claims) for p in profiles}
    shown = claims.columns(profiles)
    rows = []
    for c in claims.claims:
        ours = {p: by_profile[p]["numbers"].get(c.key) if p in by_profile else None for p in shown}
        spread = {p: by_profile.get(p, {}).get("spreads", {}).get(c.key) for p in shown}
        rows.append(
            {
                "key": c.key,
                "claim": c.claim,
                "unit": claims.number(c.key).unit,
                "paper": list(c.paper) if isinstance(c.paper, tuple) else c.paper,
                "better": c.better,
                "caveat": c.caveat,
                "ours": ours,
                "seeds": {p: s for p, s in spread.items() if s is not None},
                "method": c.method,
                "verdict": {
                    p: verdict(c.paper, v, c.better, spread=_range(spread[p]), method=c.method,
                               seeds=(spread[p] or {}).get("n", 1) if c.seeded else None,
                               bound=_bound(c, by_profile.get(p, {}).get("numbers", {})))
                    if c.comparable or v is None
                    else "not comparable"
                    for p, v in ours.items()
                },
            }
        )
    return {
        "paper": claims.paper,
        "units": {n.key: n.unit for n in claims.numbers},
        "descriptions": {n.key: n.description for n in claims.numbers},
        "setup_paper": dict(claims.setup),
        "profiles": by_profile,
        "claims": rows,
    }


def _range(spread: dict | None) -> tuple[float, float] | None:
    return None if spread is None else (spread["min"], spread["max"])


def _duration(seconds: float) -> str:
    """A duration in the unit a reader expects (s, min or h)."""
    if seconds < 120:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _show(number: Number, value: float | str | tuple[float, float] | None, quoted: bool = False) -> str:
    """A number (or range) with its unit, as the report prints it; ``quoted``: a paper value, as quoted."""
    if value is None:
        return "not run"
    if isinstance(value, str):
        return value
    if number.unit in ("s", "min"):
        scale = 60 if number.unit == "min" else 1
        if isinstance(value, tuple):
            return "–".join(_duration(v * scale) for v in value)
        return _duration(value * scale)
    if quoted and number.unit == "rad":  # as the paper quotes it: to 0.01 rad, or 0.001 where it gives that
        values = value if isinstance(value, tuple) else (value,)
        fmt = ".3f" if any(round(v, 3) != round(v, 2) for v in values) else ".2f"
    else:
        fmt = number.fmt
    text = "–".join(format(v, fmt) for v in value) if isinstance(value, tuple) else format(value, fmt)
    return f"{text} {number.unit}".strip()


def claims_rows(document: dict, claims: Claims | None = None) -> list[list[str]]:
    """Rows of the claims table: claim, paper, then ours and the verdict for each profile."""
    claims = claims or load_claims()
    rows = []
    for entry in document["claims"]:
        number = claims.number(entry["key"])
        paper = tuple(entry["paper"]) if isinstance(entry["paper"], list) else entry["paper"]
        row = [entry["claim"], METHOD_LABELS[entry.get("method", "ours")], _show(number, paper, quoted=True)]
        for profile, value in entry["ours"].items():
            shown = _show(number, value)
            spread = entry.get("seeds", {}).get(profile)
            if spread is not None and value is not None:
                low, high = (format(spread[k], number.fmt) for k in ("min", "max"))
                shown += f" ({spread['n']} seeds: {low}–{high})"
            row += [shown, entry["verdict"][profile]]
        rows.append(row)
    return rows


def _claims_header(profiles: list[str]) -> list[str]:
    columns = [h for p in profiles for h in (f"ours, {p} profile", f"verdict, {p}")]
    return ["claim", "method", "paper", *columns]


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _profiles_shown(document: dict) -> list[str]:
    """The profiles the claims list (the columns of :meth:`Claims.columns`), in order."""
    return list(document["claims"][0]["ours"]) if document["claims"] else []


def readme_table(document: dict, claims: Claims | None = None) -> str:
    """The results table of the repository's README (generated; between the markers)."""
    profiles = _profiles_shown(document)
    header = _claims_header(profiles)
    note = (
        "Generated by `python -m cryoorient.report` from `paper/numbers.json` (run by `make figures`); "
        "details, caveats and the setup of each profile in [`paper/README.md`](paper/README.md)."
    )
    return f"{_markdown_table(header, claims_rows(document, claims))}\n\n{note}"


def render_report(document: dict, claims: Claims | None = None) -> str:
    """``paper/README.md``: the claim-by-claim reproduction report."""
    claims = claims or load_claims()
    profiles = _profiles_shown(document)
    full = {
        p: document["profiles"].get(p, {"numbers": {}, "runs": {}, "missing": list(claims.notebooks)})
        for p in profiles
    }
    parts = [
        "# Reproduction report",
        "",
        "<!-- generated by `python -m cryoorient.report` from the notebooks' saved results; do not edit -->",
        "",
        f"The claims of {document['paper']} beside the numbers this repository's notebooks measured. "
        "Every number below comes from a run recorded in `paper/results/PROFILE/` (and `numbers.json`); "
        f"none is typed by hand. The paper's values: {claims.paper_source}. "
        "Each row says which method it measured: *ours (modified)*, the estimator and recovery of "
        "notebooks 02-08, which differ from the paper's in several ways (notebook 09's ladder "
        "measures each), or *the paper's, at our images*, the paper's own recipe, network, loss and "
        "recovery (notebook 09), or *beyond the paper*, what the paper does not run (projection "
        "matching against the map, refinement: notebook 11), shown beside its value with no verdict. "
        "Verdicts: for the paper's method *reproduced* when ours is inside "
        "the paper's range or within 10 % of its single value, else *not reproduced*; for ours *on "
        "par* there, else *better* or *worse*. A number from a trained estimator gets a verdict only "
        f"when at least {MIN_SEEDS} training seeds measured it (`benchmarks/seed_spread.py`; ours is "
        "then followed by the range over the seeds, and a verdict other than *reproduced* or *on par* "
        "needs every seed on the same side of the paper); with fewer it says *one seed*. A resolution "
        f"within {BOUND_SHELLS} Fourier shells of the images' Nyquist limit is a *bound*: the grid, not "
        "the orientations, stopped it. *Not run* "
        "when no run of that profile exists; *not comparable* when ours measures something else (the "
        "caveat says what), shown for reference.",
        "",
        "## Claims",
        "",
    ]
    header = _claims_header(profiles)
    parts += [_markdown_table(header, claims_rows(document, claims)), "", "What limits each comparison:", ""]
    parts += [f"- *{c.claim}*: {c.caveat}." for c in claims.claims if c.caveat]
    for p in profiles:
        if "common_lines" in full[p]:
            parts += ["", "## Against common lines", ""] + common_lines_section(full[p]["common_lines"], p)
            break  # one profile's comparison (the first that ran it)
    for p in profiles:
        if "contest" in full[p]:
            parts += ["", "## With the map: who wins where", ""] + contest_section(full[p]["contest"], p)
            break
    parts += ["", "## Setup", ""]
    setup_rows = []
    for key, paper_value in claims.setup:
        number = claims.number(key)
        row = [number.description, _show(number, paper_value, quoted=True)]
        row += [_show(number, full[p]["numbers"].get(key)) for p in profiles]
        setup_rows.append(row)
    parts += [_markdown_table(["", "paper"] + [f"ours, {p}" for p in profiles], setup_rows), ""]
    parts += ["## Every number we measured", ""]
    setup_keys = {key for key, _ in claims.setup}
    rows = [
        [n.description, *(_show(n, full[p]["numbers"].get(n.key)) for p in profiles)]
        for n in claims.numbers
        if n.key not in setup_keys
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
        parts.append(
            f"- **{p}**: notebooks {', '.join(sorted(runs))}; map {' '.join(maps)}; "
            f"commit {', '.join(commits)}{missing}."
        )
    return "\n".join(parts) + "\n"


def render_tex(document: dict, profile: str = "default", claims: Claims | None = None) -> str:
    r"""``numbers.tex``: ``\newcommand`` per number of ``profile``, and ``\PaperNAME`` per paper value.

    Paper durations stay in our number's unit (training minutes, seconds) for the text to convert.
    """
    claims = claims or load_claims()
    numbers = document["profiles"].get(profile, {"numbers": {}})["numbers"]
    lines = [
        f"% generated by `python -m cryoorient.report` from numbers.json (profile {profile}); do not edit"
    ]
    for n in claims.numbers:
        value = numbers.get(n.key)
        text = "n/a" if value is None else format(value, n.fmt).replace(",", "{,}")
        lines.append(f"\\newcommand{{\\{n.macro}}}{{{text}}}")
    paper = [(c.key, c.paper) for c in claims.claims]
    paper += [(k, v) for k, v in claims.setup if not isinstance(v, str)]
    for key, value in paper:
        n = claims.number(key)
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


def report_files(document: dict, claims: Claims | None = None) -> dict[str, str]:
    """The text of ``numbers.json``, ``README.md`` and ``numbers.tex`` for ``document``, by file name."""
    claims = claims or load_claims()
    return {
        "numbers.json": json.dumps(document, indent=1, ensure_ascii=False) + "\n",  # order: the columns'
        "README.md": render_report(document, claims),
        "numbers.tex": render_tex(document, claims=claims),
    }


def write_report(folder: Path | None = None) -> list[Path]:
    """Write ``numbers.json``, ``README.md`` and ``numbers.tex`` into ``folder`` (default ``paper/``)."""
    folder = folder or paper_dir()
    document = numbers_document()
    document["generated"] = date.today().isoformat()
    return [_write_text(folder / name, text) for name, text in report_files(document).items()]


def check(readme: Path | None, folder: Path | None = None) -> list[str]:
    """Which generated files are out of date; one line per stale file, empty if none.

    Compares the files of ``folder`` (default ``paper/``) with a fresh render from the saved
    results, and the results table of ``readme`` with the table of that render.
    ``numbers.json``'s ``generated`` date is not compared (a rerun on another day changes only it).
    """
    folder = folder or paper_dir()
    claims = load_claims()
    document = numbers_document(claims=claims)
    stale = []
    try:
        document["generated"] = json.loads((folder / "numbers.json").read_text()).get("generated")
    except (OSError, ValueError):
        pass
    for name, text in report_files(document, claims).items():
        path = folder / name
        if not path.is_file() or path.read_text() != text:
            stale.append(f"{path}: differs from what the saved results give")
    if readme is not None:
        current = readme.read_text()
        if update_readme(current, readme_table(document, claims)) != current:
            stale.append(f"{readme}: results table out of date")
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m cryoorient.report", description=__doc__.split("\n")[0])
    root = repo_root()
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="README whose results table to refresh (default: the repository's, unless --out)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write numbers.json, README.md and numbers.tex here instead of paper/ (the README is "
        "then left alone unless --readme is given)",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that paper/ and the README table are up to date"
    )
    args = parser.parse_args(argv)
    readme = args.readme
    if readme is None and args.out is None and root is not None:
        readme = root / "README.md"
    if args.check:
        stale = check(readme, args.out)
        for line in stale:
            print(f"{line}; run `python -m cryoorient.report`", file=sys.stderr)
        return 1 if stale else 0
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in write_report(args.out):
        print(f"wrote {path}")
    if readme is not None:
        document = json.loads(((args.out or paper_dir()) / "numbers.json").read_text())
        _write_text(readme, update_readme(readme.read_text(), readme_table(document)))
        print(f"updated the results table of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
