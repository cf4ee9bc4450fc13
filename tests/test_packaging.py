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


def test_environment_yml_lists_every_dependency():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {re.split(r"[<>=! ]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    project = pyproject()["project"]
    wanted = list(project["dependencies"]) + project["optional-dependencies"]["notebooks"]
    missing = [r for r in wanted if CONDA_NAMES.get(Requirement(r).name, Requirement(r).name) not in conda]
    assert not missing, f"environment.yml lacks {missing}"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip, "Binder must install the package itself"


def test_makefile_pins_pytorch():
    assert re.search(r"^TORCH\s*\?=\s*torch==\d+\.\d+\.\d+\s*$", (ROOT / "Makefile").read_text(), re.M)


def test_python_versions_allow_colab():
    assert pyproject()["project"]["requires-python"] == ">=3.10"  # Colab runs 3.13
