"""The import contracts of `make lint` (pyproject.toml, [tool.importlinter]) hold, and catch breaches.

Each breach is written into a copy of the package, and `lint-imports` is run on the copy with the
repository's configuration; the unmodified copy must pass, so a failure is the breach's alone.
"""

import os
import shutil
import subprocess
import sys

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

from cryoorient.paths import repo_root

ROOT = repo_root()
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
LAYERS = next(c["name"] for c in CONTRACTS if c["type"] == "layers")
ORACLES = next(c["name"] for c in CONTRACTS if "cryoorient._reference" in c.get("forbidden_modules", ()))
LINT = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def lint_copy(tmp_path, edits: dict[str, str] | None = None) -> tuple[int, str]:
    """``lint-imports`` on a copy of the package with ``edits`` (module file -> line appended)."""
    package = tmp_path / "cryoorient"
    shutil.copytree(ROOT / "cryoorient", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for name, line in (edits or {}).items():
        with open(package / name, "a") as f:
            f.write(f"\n{line}\n")
    # the copy, not the installed package, is the one found: first on the path, and the working
    # directory (which lint-imports puts first as well)
    env = os.environ | {"PYTHONPATH": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", LINT, "--config", str(tmp_path / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    return done.returncode, " ".join((done.stdout + done.stderr).split())  # rich wraps long lines


def test_the_package_keeps_its_contracts(tmp_path):
    code, out = lint_copy(tmp_path)
    assert code == 0, out
    assert f"{LAYERS} KEPT" in out and f"{ORACLES} KEPT" in out
    assert "Contracts: 2 kept, 0 broken." in out


@pytest.mark.parametrize(
    ("module", "line", "importer", "imported"),
    [
        # the numerical core takes arrays, not the I/O modules' types
        ("reconstruction.py", "from cryoorient.relion import ParticleStack", "reconstruction", "relion"),
        ("fsc.py", "from cryoorient.density import DensityMap", "fsc", "density"),
        # the presentation layer renders saved results and runs no study
        ("report.py", "import cryoorient.baseline_comparison", "report", "baseline_comparison"),
    ],
)
def test_an_import_against_the_layers_breaks_the_layers_contract(tmp_path, module, line, importer, imported):
    code, out = lint_copy(tmp_path, {module: line})
    assert code == 1, out
    assert f"{LAYERS} BROKEN" in out and f"{ORACLES} KEPT" in out
    assert "Contracts: 1 kept, 1 broken." in out
    assert f"cryoorient.{importer} is not allowed to import cryoorient.{imported}" in out


@pytest.mark.parametrize("module", ["pipeline.py", "__init__.py"])
def test_the_package_may_not_use_its_test_oracles(tmp_path, module):
    code, out = lint_copy(tmp_path, {module: "from cryoorient._reference import project_real_space"})
    assert code == 1, out
    assert f"{ORACLES} BROKEN" in out and f"{LAYERS} KEPT" in out
    importer = "cryoorient" if module == "__init__.py" else "cryoorient.pipeline"
    assert f"{importer} is not allowed to import cryoorient._reference" in out


def test_a_new_module_must_be_placed_in_a_layer(tmp_path):
    code, out = lint_copy(tmp_path, {"unplaced.py": '"""A module no layer lists."""'})
    assert code == 1, out
    assert f"{LAYERS} BROKEN" in out
    assert "cryoorient.unplaced" in out
