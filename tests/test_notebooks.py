"""The notebook toolchain: pairs in sync, stored outputs, parameters and profiles."""

import jupytext
import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from cryoorient._notebooks import (
    WIDGET,
    check_parameters,
    declared_parameters,
    execute,
    notebook_sources,
    profile_parameters,
    strip_run_metadata,
)
from cryoorient.study import Study, StudyError, available_studies, load_study

SOURCES = notebook_sources()
PROFILES = available_studies()
TINY = """\
# %% tags=["parameters"]
x = 1

# %%
print(x * 2)
"""


def stem(path):
    return path.stem


def test_there_are_notebooks_and_profiles():
    assert [s.stem for s in SOURCES][:1] == ["01_data_generation"]
    assert {"default", "paper"} <= set(PROFILES)


@pytest.mark.parametrize("source", SOURCES, ids=stem)
def test_pair_in_sync(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} is missing: run `make notebooks`"
    converted = jupytext.writes(jupytext.read(paired), fmt="py:percent")
    assert converted == source.read_text(), (
        f"{paired.name} is out of sync with {source.name}: run `make notebooks`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=stem)
def test_paired_notebook_carries_a_clean_run(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not executed top to bottom"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert nb.metadata.kernelspec.name == "python3"
    assert "papermill" not in nb.metadata
    assert not any(t == "injected-parameters" for c in nb.cells for t in c.metadata.get("tags", []))
    assert "widgets" not in nb.metadata, "live widget state stored: refresh with make notebooks"
    assert not [o for c in code for o in c.outputs if WIDGET in o.get("data", {})], "a progress bar stored"


@pytest.mark.parametrize("source", SOURCES, ids=stem)
def test_parameters_and_colab_cells(source):
    nb = jupytext.read(source)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "google.colab" in code[0].source, "the first code cell installs the package in Colab only"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and code.index(tagged[0]) == 1
    assert "profile" in declared_parameters(source)


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_use_declared_parameters_only(profile):
    parameters = profile_parameters(load_study(profile), [s.stem for s in SOURCES])
    for source in SOURCES:
        check_parameters(source, parameters[source.stem])  # raises on an unknown name
        assert parameters[source.stem]["profile"] == profile


def test_unknown_parameter_is_an_error(tmp_path):
    source = tmp_path / "01_tiny.py"
    source.write_text(TINY)
    with pytest.raises(
        ValueError, match=r"01_tiny.py: unknown parameter\(s\) y; its parameters cell declares: x"
    ):
        execute(source, tmp_path / "out" / "01_tiny.ipynb", {"y": 3})
    assert not (tmp_path / "out" / "01_tiny.ipynb").exists()


def test_unknown_profile_and_notebook_names():
    with pytest.raises(StudyError, match="unknown profile 'gpu'"):
        load_study("gpu")
    fields = load_study("default").to_dict() | {"profile": "x"}
    with pytest.raises(ValueError, match="notebooks that do not exist: 99_nope"):
        profile_parameters(Study(**fields | {"notebooks": {"99_nope": {"x": 1}}}), ["01_tiny"])
    study = Study(**fields | {"notebooks": {"01_a": {"x": 1}}})
    expected = {"01_a": {"profile": "x", "x": 1}, "06_b": {"profile": "x"}}
    assert profile_parameters(study, ["01_a", "06_b"]) == expected


@pytest.mark.parametrize("source", SOURCES, ids=stem)
def test_notebooks_own_only_their_parameters(source):
    """The study's settings come from the profile: no notebook declares them (issue 30)."""
    study_fields = set(load_study("default").to_dict()) - {"profile", "notebooks"} | {"model", "noise_levels"}
    assert not study_fields & set(declared_parameters(source))


@pytest.mark.parametrize("source", SOURCES, ids=stem)
def test_notebooks_import_no_private_module(source):
    """A reader can import what a notebook imports: no ``cryoorient._*`` module."""
    code = "\n".join(c.source for c in jupytext.read(source).cells if c.cell_type == "code")
    assert "cryoorient._" not in code, f"{source.name} imports a private cryoorient module"


@pytest.mark.slow
def test_execute_injects_parameters(tmp_path):
    source = tmp_path / "01_tiny.py"
    source.write_text(TINY)
    out = execute(source, tmp_path / "out" / "01_tiny.ipynb", {"x": 21})
    nb = nbformat.read(out, as_version=4)
    assert "injected-parameters" in nb.cells[1].metadata.tags
    assert nb.cells[-1].outputs[0].text == "42\n"
    clean = strip_run_metadata(nb)
    assert "papermill" not in clean.metadata and all("papermill" not in c.metadata for c in clean.cells)


@pytest.mark.slow
def test_failed_run_leaves_output_untouched(tmp_path):
    source = tmp_path / "01_broken.py"
    source.write_text(TINY.replace("print(x * 2)", "raise RuntimeError('boom')"))
    out = tmp_path / "out" / "01_broken.ipynb"
    with pytest.raises(PapermillExecutionError):
        execute(source, out, {})
    assert not out.exists()
    assert out.with_suffix(".failed.ipynb").exists()  # kept for inspection
