"""Split saved results of the notebook sequence before the course (issue 30) into today's notebooks.

Until the split, notebook 04 held four studies and notebook 05 the reconstructions. Saved results
of that layout (``04_orientation_recovery`` with ``gauge`` or ``common_lines`` among its values,
and ``05_reconstruction``) are rewritten as the notebooks that now own each part, keeping the
commit and package version of the run that measured them (nothing is recomputed)::

    04_orientation_recovery  exact, perturbed, learned, chance, matched (arrays: all but the gauge's)
    05_noise_study           paper_way, weighted_recovery, nonuniform (errors)
    06_gauge_fixing          gauge, and the gauge-fixed orientations (noiseK/gauge_fixed)
    07_reconstruction        05_reconstruction's values and arrays, plus nonuniform (FSC)
    08_common_lines          common_lines

Run ``python -m cryoorient._results_migration PROFILE`` on a profile whose results predate the
split (a run of ``make figures`` at an older commit); today's notebooks then read them. The old
files are removed once the new ones are written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoorient.results import Results, ResultsError, load_results, results_dir, write_record

__all__ = ["split_results"]

NOISE_STUDY_KEYS = ("paper_way", "weighted_recovery")
MOVED_KEYS = (*NOISE_STUDY_KEYS, "nonuniform", "gauge", "common_lines")
NONUNIFORM_ERRORS = ("e_or_clean", "median_clean", "e_or", "median")
NONUNIFORM_MAPS = ("fsc_true", "fsc_recovered")


def _write(notebook: str, source: Results, values: dict, arrays: dict, profile: str) -> Path:
    """Write ``values`` and ``arrays`` as ``notebook``'s results with ``source``'s stamps."""
    provenance = {k: v for k, v in source.provenance.items() if k not in ("commit", "cryoorient")}
    provenance["migrated_from"] = source.notebook
    return write_record(notebook, profile, values, arrays, commit=source.provenance["commit"],
                        version=source.provenance["cryoorient"], provenance=provenance)


def split_results(profile: str) -> list[Path]:
    """Rewrite ``profile``'s pre-split results as today's notebooks; return the files written.

    Does nothing (returns ``[]``) when the results are already split or absent.

    Raises
    ------
    ResultsError : when notebook 04's old results exist but notebook 05's reconstruction does not,
        or either cannot be read.
    """
    try:
        old = load_results("04_orientation_recovery", profile)
    except ResultsError:
        return []
    if not any(key in old.values for key in MOVED_KEYS):
        return []
    folder = results_dir(profile)
    reconstruction = load_results("05_reconstruction", profile)
    values = old.values
    common = {"map": values.get("map"), "p": values.get("p")}
    nonuniform = values.get("nonuniform", {})
    gauge_arrays = {k: v for k, v in old.arrays.items() if k.endswith("/gauge_fixed")}
    models = {
        key: values["learned"][key]["model"]
        for name in gauge_arrays
        if (key := name.removeprefix("noise").removesuffix("/gauge_fixed")) in values.get("learned", {})
    }
    # notebook 04's file last: until it is rewritten, a rerun finds the old layout and starts again
    written = [
        _write("05_noise_study", old, common | {
            "matched_noise_variance": values.get("matched_noise_variance"),
            **{k: values[k] for k in NOISE_STUDY_KEYS if k in values},
            "nonuniform": {s: {k: r[k] for k in NONUNIFORM_ERRORS if k in r} for s, r in nonuniform.items()},
        }, {}, profile),
        _write("06_gauge_fixing", old, common | {"gauge": values.get("gauge", []), "models": models},
               gauge_arrays, profile),
        _write("07_reconstruction", reconstruction, reconstruction.values | {
            "nonuniform": {s: {k: r[k] for k in NONUNIFORM_MAPS if k in r} for s, r in nonuniform.items()},
        }, reconstruction.arrays, profile),
    ]
    if "common_lines" in values:
        written.append(_write("08_common_lines", old, {"map": values.get("map"),
                                                       "common_lines": values["common_lines"]}, {}, profile))
    written.append(_write("04_orientation_recovery", old,
                          {k: v for k, v in values.items() if k not in MOVED_KEYS},
                          {k: v for k, v in old.arrays.items() if k not in gauge_arrays}, profile))
    for suffix in (".json", ".npz"):
        (folder / f"05_reconstruction{suffix}").unlink(missing_ok=True)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profiles", nargs="+", help="profiles whose results to split (e.g. long)")
    for profile in parser.parse_args(argv).profiles:
        written = split_results(profile)
        print(f"{profile}: " + (", ".join(p.name for p in written) if written else "nothing to split"))


if __name__ == "__main__":
    main()
