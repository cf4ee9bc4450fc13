"""Install files agree with each other: pyproject, environment.yml (Binder) and the Makefile."""

import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

import yaml
from packaging.requirements import Requirement

from cryoorient.paths import repo_root

ROOT = repo_root()
CONDA_NAMES = {"torch": "pytorch-cpu"}  # conda-forge's CPU build of PyTorch


def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return conda, pip


def test_environment_yml_lists_every_dependency():
    conda, pip = environment()
    names = {re.split(r"[<>=! ]", d)[0] for d in conda} | {
        Requirement(d).name for d in pip if not d.startswith("-")
    }
    project = pyproject()["project"]
    wanted = list(project["dependencies"]) + project["optional-dependencies"]["notebooks"]
    missing = [r for r in wanted if CONDA_NAMES.get(Requirement(r).name, Requirement(r).name) not in names]
    assert not missing, f"environment.yml lacks {missing}"
    assert "-e ." in pip, "Binder must install the package itself"


def test_starfile_new_enough_everywhere():
    # conda-forge's newest starfile (0.5.2) fails to write with pandas 3, and `-e .` does not
    # upgrade what satisfies the requirement: both files ask for 0.5.10, Binder gets it from pip
    project = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    assert str(next(r for r in project if r.name == "starfile").specifier) == ">=0.5.10"
    conda, pip = environment()
    assert "starfile>=0.5.10" in pip and not any(d.startswith("starfile") for d in conda)


def test_makefile_pins_a_cpu_pytorch():
    # PyPI's Linux torch is the CUDA build (~4 GB); PyTorch's CPU index must be offered beside it
    torch = re.search(r"^TORCH\s*\?=\s*(.*)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert re.fullmatch(r"torch==\d+\.\d+\.\d+", torch[0]), torch
    assert torch[1:] == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"], torch


def test_python_versions_allow_colab():
    project = pyproject()["project"]
    assert project["requires-python"] == ">=3.10"  # Colab runs 3.12/3.13
    versions = {c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if c.count("::") == 2 and "3." in c}
    assert versions == {"3.10", "3.11", "3.12", "3.13"}


def test_wheel_carries_the_study_profiles_and_the_claims(tmp_path):
    """Colab installs a wheel built from git, not the checkout: profiles and claims are package data."""
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("cryoorient-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"cryoorient/studies/{p.name}" for p in (ROOT / "cryoorient" / "studies").glob("*.yml")}
    assert {"cryoorient/studies/default.yml"} <= shipped <= names
    assert "cryoorient/claims.yml" in names
