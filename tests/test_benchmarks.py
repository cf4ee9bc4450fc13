"""Fast checks of the benchmark scripts' logic (no timings asserted; the benchmarks themselves are slow)."""

import argparse
import copy
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from cryoorient.recipes import epoch_steps
from cryoorient.training import TrainingConfig, train_distance

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    """The benchmark scripts as modules (they import their sibling ``_common``)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("run_all"), importlib.import_module("training")


@pytest.fixture
def one_thread():
    """One torch thread: two threads next to another busy process can run tiny steps 40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_data(n: int = 24, size: int = 16):
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.standard_normal((n, size, size), dtype=np.float32))
    q = torch.from_numpy(rng.standard_normal((n, 4)))
    quaternions = q / q.norm(dim=1, keepdim=True)
    splits = {"train": np.arange(0, n // 2), "validation": np.arange(n // 2, n)}
    return images, quaternions, splits


def test_report_from_recorded_results(scripts):
    run_all, _ = scripts
    results = run_all.load_results()
    if set(results) != set(run_all.BENCHMARKS):
        pytest.skip("not every benchmark has recorded results")
    text = run_all.render_report(results)
    for title, _ in run_all.SECTIONS.values():
        assert f"## {title}" in text
    assert "## Machine" in text and "No results" not in text


def test_report_says_plainly_when_the_peer_did_not_run(scripts):
    run_all, _ = scripts
    results = run_all.load_results(["projection"])
    if not results:
        pytest.skip("no recorded projection results")
    projection = copy.deepcopy(results["projection"])
    projection["peer"] = {"name": "ASPIRE", "status": "not run", "reason": "no interpreter at /nowhere"}
    text = "\n".join(run_all.projection_section(projection))
    assert "was not run" in text and "/nowhere" in text and "Side by side" not in text


def test_report_only_keeps_the_run_records_of_unchanged_results(scripts, tmp_path):
    run_all, _ = scripts
    results = run_all.load_results(["training"])
    if not results:
        pytest.skip("no recorded training results")
    run = {"arguments": ["--threads", "1"], "seconds": 12.5, "returncode": 0}
    run["results_date"] = results["training"]["date"]
    report = tmp_path / "benchmarks.md"
    report.write_text(run_all.render_report(results, {"training": run}, "benchmarks/run_all.py"))
    runs, invocation = run_all.previous_runs(report, results)
    assert runs == {"training": run} and invocation == "benchmarks/run_all.py"
    newer = {"training": results["training"] | {"date": "2999-01-01T00:00:00+00:00"}}
    assert run_all.previous_runs(report, newer) == ({}, "")


def test_markdown_table_columns_line_up(scripts):
    run_all, _ = scripts
    lines = run_all.table([("name", "value"), ("a", "1.5"), ("longer", "10")])
    assert lines[-1] == "" and len({len(line) for line in lines[:-1]}) == 1
    assert lines[1].endswith(": |")  # numbers right-aligned


@pytest.mark.parametrize(
    "config",
    [
        TrainingConfig(architecture="compact", n_features=8, image_size=None, epochs=1, batch_size=4),
        TrainingConfig(
            recipe="paper",
            architecture="compact",
            n_features=8,
            image_size=None,
            epochs=1,
            batch_size=8,
            pairs_fraction=0.5,
        ),
    ],
    ids=["inbatch", "paper"],
)
def test_epoch_steps_match_a_real_epoch(config, one_thread):
    images, quaternions, splits = tiny_data()
    steps = []
    hook = register_optimizer_step_post_hook(lambda *args: steps.append(1))
    try:
        train_distance(images, quaternions, splits, config, progress=False, device="cpu")
    finally:
        hook.remove()
    assert len(steps) == epoch_steps(config, len(splits["train"]))


def test_timed_steps_count_images_through_the_network(scripts, one_thread):
    _, training = scripts
    images, quaternions, splits = tiny_data()
    config = TrainingConfig(architecture="compact", n_features=8, image_size=None, epochs=1, batch_size=4)
    timed = training.time_steps(images, quaternions, splits, config, warmup=1, steps=2, device="cpu")
    assert len(timed["step_seconds"]) == 2 and all(s > 0 for s in timed["step_seconds"])
    assert timed["images_per_step"] == [4, 4]
    assert training.pairs_per_step(config) == 6


def test_seed_spread_summarises_each_measure_over_the_seeds_that_have_it(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    seed_spread = importlib.import_module("seed_spread")
    rows = {
        "0": {"noiseless": {"e_or": 0.07}, "second_protein": {"e_or": 0.13, "resolution": 6.9}},
        "1": {"noiseless": {"e_or": 0.08}, "second_protein": {"e_or": 0.11}},
        "2": {"noiseless": {"e_or": 0.06}},
    }
    assert seed_spread.summary(rows, "noiseless", "e_or") == pytest.approx(
        {"n": 3, "mean": 0.07, "min": 0.06, "max": 0.08}
    )
    assert seed_spread.summary(rows, "second_protein", "e_or")["n"] == 2  # seed 2 has not run it
    assert seed_spread.summary(rows, "second_protein", "resolution") is None  # one seed: no spread
    assert seed_spread.summary(rows, "paper_method", "e_or") is None
    assert set(seed_spread.LEVELS) >= {"paper_method", "second_protein"}


def test_colab_like_names_the_cell_that_ran_at_the_peak(monkeypatch):
    import datetime

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    colab_like = importlib.import_module("colab_like")

    def cell(source, start, end):
        times = {"start_time": f"2026-12-07T17:00:{start:02d}.000000Z",
                 "end_time": f"2026-12-07T17:00:{end:02d}.0Z"}
        return {"cell_type": "code", "source": source, "metadata": {"papermill": times}}

    notebook = {"cells": [
        cell("import os\n", 0, 5),
        {"cell_type": "markdown", "source": "## text", "metadata": {}},
        cell("# a comment\nsubset = comparison_subset(test, 200)\n", 5, 40),
    ]}
    at = datetime.datetime(2026, 12, 7, 17, 0, 30, tzinfo=datetime.timezone.utc)
    assert colab_like.peak_cell(notebook, at) == "code cell 2: subset = comparison_subset(test, 200)"
    later = at + datetime.timedelta(minutes=5)
    assert colab_like.peak_cell(notebook, later) is None
    assert colab_like.peak_cell(None, at) is None


def test_degraded_maps_reads_training_map_resolutions_and_refuses_bad_ones(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    degraded = importlib.import_module("degraded_maps")
    assert degraded.resolution_key("none") is None and degraded.resolution_key("None") is None
    assert degraded.resolution_key("25") == 25.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"positive number of Å or 'none'; got '-5'"):
        degraded.resolution_key("-5")
    with pytest.raises(SystemExit):  # argparse turns the refusal into a usage error
        degraded.main(["--resolutions", "0"])


def test_ctf_treatments_refuses_unknown_treatments_and_levels(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    ctf = importlib.import_module("ctf_treatments")
    assert ctf.CHOICES == ("none", "raw", "phase_flip", "wiener", "two_channel")
    with pytest.raises(SystemExit):  # argparse: not one of the choices
        ctf.main(["--treatments", "flip"])
    assert "invalid choice: 'flip'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"--noise: σ² = 7 has no estimator"):
        ctf.main(["--noise", "7"])


def test_bootstrap_loop_refuses_a_bad_start_and_unknown_levels(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    loop = importlib.import_module("bootstrap_loop")
    with pytest.raises(SystemExit, match=r"--start must be a resolution in Å > 0; got -40"):
        loop.main(["--start", "-40"])
    with pytest.raises(SystemExit, match=r"--noise: σ² = 7 has no estimator"):
        loop.main(["--noise", "7"])


def test_many_proteins_refuses_counts_below_one(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    many = importlib.import_module("many_proteins")
    assert many.AUTHORS_UNSEEN == 1.33
    with pytest.raises(SystemExit, match=r"--counts must be positive numbers of maps; got \[0, 4\]"):
        many.main(["--counts", "0", "4"])
