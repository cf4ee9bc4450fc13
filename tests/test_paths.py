import os
import subprocess

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


def test_git_commit_ignores_generated_outputs(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)  # fmt: skip

    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.json").write_text("1")
    (tmp_path / "code.py").write_text("1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "x")
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path)
    clean = paths.git_commit()
    assert len(clean) == 12 and not clean.endswith("-dirty")
    (tmp_path / "figures" / "a.json").write_text("2")  # a figure rewritten by make figures
    (tmp_path / "new.txt").write_text("untracked")
    assert paths.git_commit() == clean
    (tmp_path / "code.py").write_text("2")
    assert paths.git_commit() == f"{clean}-dirty"
