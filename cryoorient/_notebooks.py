"""Run the numbered notebooks with papermill (used by ``make figures`` and ``make notebooks``).

``python -m cryoorient._notebooks run --profile NAME``
    Executes ``notebooks/NN_*.py`` in order at the profile ``NAME`` (``cryoorient/studies/NAME.yml``:
    the study every notebook loads, and each notebook's own parameters) and stores the executed
    notebooks under ``build/notebooks/NAME/``. The ``.py`` file is the
    source: it is converted afresh, so a stale paired ``.ipynb`` is never what runs.
``python -m cryoorient._notebooks refresh``
    Re-executes every notebook at its own defaults and writes the outputs into the paired
    ``.ipynb`` (no injected-parameters cell), so GitHub, Binder and Colab readers see results.

Each notebook gets ``profile`` (it loads the study itself, :mod:`cryoorient.study`) and the
parameters its section of the profile's ``notebooks`` mapping sets. A name the notebook's
``parameters`` cell does not declare is an error, never a silent no-op (papermill alone would only
warn).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import papermill

from cryoorient.paths import atomic_path, build_dir, repo_root
from cryoorient.study import Study, load_study, notebook_parameters

KERNEL = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (this tool only works in a checkout)."""
    root = repo_root()
    if root is None:
        raise RuntimeError("the notebook runner needs a checkout of the cryoorient repository")
    return root / "notebooks"


def notebook_sources(folder: Path | None = None) -> list[Path]:
    """The numbered notebook sources ``NN_name.py`` in execution order."""
    return sorted((folder or notebooks_dir()).glob("[0-9][0-9]_*.py"))


def profile_parameters(study: Study, stems: list[str]) -> dict[str, dict]:
    """Parameters for each notebook stem: the profile's name and the notebook's own section.

    The study itself (map, box, model, noise levels, seeds) is not injected: every notebook loads
    it with :func:`cryoorient.study.load_study` from the ``profile`` it is given. A section for a
    notebook that does not exist is an error.
    """
    unknown = set(study.notebooks) - set(stems)
    if unknown:
        raise ValueError(
            f"profile {study.profile!r} has parameters for notebooks that do not exist: "
            f"{', '.join(sorted(unknown))}; notebooks: {', '.join(stems)}"
        )
    return {stem: notebook_parameters(study, stem) for stem in stems}


def to_notebook(source: Path) -> nbformat.NotebookNode:
    """Read a py:percent source as a notebook with the kernel papermill needs."""
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = dict(KERNEL)
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def declared_parameters(source: Path) -> dict:
    """The parameters a py:percent notebook declares in its ``parameters`` cell (papermill's view)."""
    with tempfile.TemporaryDirectory() as tmp:
        notebook = Path(tmp) / f"{source.stem}.ipynb"
        nbformat.write(to_notebook(source), notebook)
        return papermill.inspect_notebook(str(notebook))


def default_profile(source: Path) -> str | None:
    """The ``profile`` a notebook runs at when given no parameters (``None`` if it declares none)."""
    declared = declared_parameters(source).get("profile")
    return None if declared is None else ast.literal_eval(declared["default"])


def check_parameters(source: Path, parameters: dict) -> None:
    """Raise ``ValueError`` when ``parameters`` has a name the notebook does not declare."""
    declared = declared_parameters(source)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(
            f"{source.name}: unknown parameter(s) {', '.join(unknown)}; "
            f"its parameters cell declares: {', '.join(sorted(declared))}"
        )


def execute(source: Path, output: Path, parameters: dict) -> Path:
    """Execute ``source`` (py:percent) with ``parameters`` into ``output`` (atomically).

    On failure the partly executed notebook is kept as ``*.failed.ipynb`` beside ``output``
    for inspection, and ``output`` is left untouched.
    """
    check_parameters(source, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".run-") as tmp:
        notebook = Path(tmp) / f"{source.stem}.ipynb"
        nbformat.write(to_notebook(source), notebook)
        executed = Path(tmp) / "executed.ipynb"
        try:
            papermill.execute_notebook(
                str(notebook),
                str(executed),
                parameters=parameters or None,
                kernel_name=KERNEL["name"],
                language="python",
                cwd=str(source.parent),
                progress_bar=False,
            )
        except Exception:
            if executed.exists():
                os.replace(executed, output.with_suffix(".failed.ipynb"))
            raise
        output.with_suffix(".failed.ipynb").unlink(missing_ok=True)
        os.replace(executed, output)
    return output


WIDGET = "application/vnd.jupyter.widget-view+json"


def strip_run_metadata(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop papermill's timings, status and empty tags, and live widgets (tqdm's progress bars).

    The stored notebook then changes only with its content. A progress bar is a widget whose state
    only a live kernel has; stored, it is a frozen "0 %" line, and a page rendered from it (the
    book) would need require.js and the widget manager from a CDN.
    """
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
    return nb


def refresh(source: Path) -> Path:
    """Re-execute ``source`` at its defaults and store the outputs in its paired ``.ipynb``."""
    run = execute(source, build_dir() / "notebooks" / "refresh" / f"{source.stem}.ipynb", {})
    return store_paired(source, run)


def store_paired(source: Path, run: Path) -> Path:
    """Store ``run``, an execution of ``source`` at its defaults (no parameters), in the paired ``.ipynb``."""
    paired = source.with_suffix(".ipynb")
    nb = strip_run_metadata(nbformat.read(run, as_version=4))
    with atomic_path(paired) as tmp:  # the umask's mode, not mkstemp's 0600
        nbformat.write(nb, str(tmp))
    if jupytext.writes(jupytext.read(paired), fmt="py:percent") != source.read_text():
        raise RuntimeError(
            f"{paired.name} does not convert back to {source.name}: check the jupytext settings"
        )
    return paired


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m cryoorient._notebooks", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="execute the notebooks at a profile into build/notebooks/PROFILE")
    run_parser.add_argument("--profile", default="default", help="profile name (cryoorient/studies/NAME.yml)")
    run_parser.add_argument("notebooks", nargs="*", help="notebook stems to run (default: all, in order)")
    refresh_parser = sub.add_parser(
        "refresh", help="re-execute notebooks at their defaults into the paired .ipynb"
    )
    refresh_parser.add_argument("notebooks", nargs="*", help="notebook stems to refresh (default: all)")
    args = parser.parse_args(argv)

    sources = notebook_sources()
    if args.notebooks:
        by_stem = {s.stem: s for s in sources}
        missing = [n for n in args.notebooks if n not in by_stem]
        if missing:
            parser.error(f"no such notebook: {', '.join(missing)}; known: {', '.join(by_stem)}")
        sources = [by_stem[n] for n in args.notebooks]

    if args.command == "run":
        every = notebook_sources()
        parameters = profile_parameters(load_study(args.profile), [s.stem for s in every])
        for source in sources:  # a misspelt name in any notebook fails before the first one runs
            check_parameters(source, parameters[source.stem])
        for source in sources:
            out = build_dir() / "notebooks" / args.profile / f"{source.stem}.ipynb"
            print(f"[{args.profile}] {source.name} -> {out}", flush=True)
            if parameters[source.stem] == {"profile": default_profile(source)}:
                # the notebook's own defaults: run as they are, and its paired .ipynb stores this run
                # too, so that the report, the figures and the stored notebooks come from one run
                store_paired(source, execute(source, out, {}))
            else:
                execute(source, out, parameters[source.stem])
    else:
        for source in sources:
            print(f"[refresh] {source.name} -> {source.with_suffix('.ipynb').name}", flush=True)
            refresh(source)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
