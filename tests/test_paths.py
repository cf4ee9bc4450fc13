import importlib.metadata
import os
import stat
import subprocess

import pytest

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
                       capture_output=True)

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


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_atomic_writes_respect_the_umask(tmp_path, umask):
    # mkstemp/mkdtemp make 0600/0700 entries; renamed into a shared folder they must get the modes
    # an ordinary open()/mkdir() would, or colleagues cannot read a dataset made there
    written = paths.atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
    with paths.atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"y")
    with paths.atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("z")
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o777 & ~umask
    assert (tmp_path / "folder" / "inside.txt").read_text() == "z"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "folder"]  # no temporaries


def test_atomic_writes_leave_nothing_on_failure(tmp_path):
    (tmp_path / "keep.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), paths.atomic_path(tmp_path / "keep.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError), paths.atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]
    assert (tmp_path / "keep.bin").read_bytes() == b"old"


def test_installed_commit_from_pips_direct_url(monkeypatch):
    # in Colab the package is pip-installed from git: no checkout, but pip records the commit
    record = '{"url": "https://github.com/x/y", "vcs_info": {"vcs": "git", "commit_id": "0123456789abcdef0"}}'

    class Distribution:
        def read_text(self, name):
            return record if name == "direct_url.json" else None

    monkeypatch.setattr(paths, "repo_root", lambda: None)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Distribution())
    assert paths.git_commit() == "0123456789ab"
    record = '{"url": "file:///somewhere", "dir_info": {"editable": true}}'
    assert paths.git_commit() == "unknown"
