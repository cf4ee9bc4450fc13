import os

from cryoorient import paths


def test_checkout_folders():
    root = paths.repo_root()
    assert root is not None and (root / "pyproject.toml").is_file()


def test_environment_overrides(tmp_path, monkeypatch):
    for variable, function in [
        ("CRYOORIENT_DATA", paths.data_dir),
        ("CRYOORIENT_FIGURES", paths.figures_dir),
        ("CRYOORIENT_BUILD", paths.build_dir),
        ("CRYOORIENT_PAPER", paths.paper_dir),
    ]:
        target = tmp_path / variable.lower() / "nested"
        monkeypatch.setenv(variable, str(target))
        assert function() == target.resolve() and target.is_dir()


def test_data_dir_defaults_to_repository(monkeypatch):
    monkeypatch.delenv("CRYOORIENT_DATA", raising=False)
    assert paths.data_dir() == paths.repo_root() / "data"


def test_git_commit_is_a_string():
    assert isinstance(paths.git_commit(), str) and paths.git_commit()


def test_map_dirs_lists_existing_folders_then_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_MAPS", f"{tmp_path}{os.pathsep}{tmp_path / 'missing'}")
    monkeypatch.setenv("CRYOORIENT_DATA", str(tmp_path / "cache"))
    assert paths.map_dirs() == [tmp_path.resolve(), (tmp_path / "cache").resolve()]
