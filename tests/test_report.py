import copy
import json
import re

import pytest
import yaml

from cryoorient import report
from cryoorient.report import ClaimsError, claims_path, load_claims, update_readme, verdict
from cryoorient.results import save_results


@pytest.fixture(scope="module")
def raw_claims() -> dict:
    """The committed cryoorient/claims.yml, parsed but not validated (tests mutate copies)."""
    return yaml.safe_load(claims_path().read_text(encoding="utf-8"))


def write_claims(tmp_path, content) -> object:
    path = tmp_path / "claims.yml"
    path.write_text(yaml.safe_dump(content, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("paper", "ours", "better", "expected"),
    [
        ((0.16, 0.20), 0.18, "lower", "on par"),
        ((0.16, 0.20), 0.16, "lower", "on par"),
        ((0.16, 0.20), 0.07, "lower", "better"),
        ((0.16, 0.20), 1.2, "lower", "worse"),
        (12.2, 13.0, "lower", "on par"),  # within 10 %
        (12.2, 8.6, "lower", "better"),
        (12.2, 33.9, "lower", "worse"),
        (0.9, 0.5, "higher", "worse"),
        (0.9, 0.99, "higher", "on par"),
        (0.9, 1.2, "higher", "better"),
        (0.2, None, "lower", "not run"),
    ],
)
def test_verdict(paper, ours, better, expected):
    assert verdict(paper, ours, better) == expected


@pytest.mark.parametrize(
    ("paper", "ours", "spread", "expected"),
    [
        (0.25, 0.146, (0.14, 0.16), "better"),  # every seed below the paper
        (0.25, 0.146, (0.14, 0.24), "on par"),  # one seed within 10 % of it
        ((0.16, 0.20), 0.15, (0.12, 0.17), "on par"),  # the ranges meet
        (0.25, 0.30, (0.29, 0.35), "worse"),
        (0.25, 0.146, (0.15, 0.16), "better"),  # ours outside the seeds' range still counts
    ],
)
def test_verdict_over_the_seed_spread_needs_every_seed_on_one_side(paper, ours, spread, expected):
    assert verdict(paper, ours, "lower", spread=spread) == expected


@pytest.mark.parametrize(
    ("ours", "spread", "seeds", "expected"),
    [
        (0.18, None, None, "reproduced"),  # no training involved: no seeds asked for
        (0.07, None, None, "not reproduced"),  # far better than the paper is not a reproduction either
        (0.5, (0.45, 0.55), 3, "not reproduced"),
        (0.25, (0.19, 0.3), 3, "reproduced"),  # a seed's value meets the paper's range
        (0.18, None, 1, "one seed"),
        (0.18, (0.17, 0.19), 2, "2 seeds"),
        (None, None, 1, "not run"),
    ],
)
def test_the_paper_method_is_reproduced_or_not_and_needs_three_seeds(ours, spread, seeds, expected):
    """Rows of the paper's own method (notebook 09) say reproduced or not; trained numbers need 3 seeds."""
    assert verdict((0.16, 0.20), ours, "lower", spread=spread, method="paper", seeds=seeds) == expected


def test_our_method_needs_three_seeds_for_a_verdict():
    assert verdict(0.25, 0.146, "lower", seeds=1) == "one seed"
    assert verdict(0.25, 0.146, "lower", spread=(0.14, 0.16), seeds=3) == "better"
    with pytest.raises(ValueError, match="method"):
        verdict(0.25, 0.146, "lower", method="theirs")


def test_a_resolution_within_two_shells_of_nyquist_is_a_bound():
    limit = report.nyquist_bound(64, 4.3)  # shell 30 of 64: 64 · 4.3 / 30 Å
    assert limit == pytest.approx(64 * 4.3 / 30) and 2 * 4.3 < limit
    assert verdict(15.2, limit, "lower", bound=limit) == "bound"
    assert verdict(15.2, 9.0, "lower", seeds=1, bound=limit) == "bound"  # the grid stopped it, seeds or not
    assert verdict(15.2, 9.5, "lower", bound=limit) == "better"
    assert verdict(8.0, None, "lower", bound=limit) == "not run"
    with pytest.raises(ValueError, match="box_size"):
        report.nyquist_bound(4, 1.0)


def test_claims_with_a_grid_name_measured_numbers_and_get_bound_verdicts():
    claims = load_claims()
    gridded = {c.key: c.grid for c in claims.claims if c.grid is not None}
    assert {"res_clean", "res_matched", "res_5a1a_clean"} <= set(gridded)
    keys = {n.key for n in claims.numbers}
    assert all(set(grid) <= keys for grid in gridded.values())
    numbers = {"box_size": 64, "pixel_size": 4.3}
    res = next(c for c in claims.claims if c.key == "res_matched")
    assert report._bound(res, numbers) == pytest.approx(report.nyquist_bound(64, 4.3))
    assert report._bound(res, {"box_size": 64}) is None  # the pixel size was not measured


def test_a_malformed_grid_is_refused(tmp_path):
    content = yaml.safe_load(claims_path().read_text())
    content["claims"][0]["grid"] = ["box_size"]
    path = tmp_path / "claims.yml"
    path.write_text(yaml.safe_dump(content, allow_unicode=True))
    with pytest.raises(ClaimsError, match="grid must be"):
        load_claims(path)
    content["claims"][0]["grid"] = ["box_size", "no_such_number"]
    path.write_text(yaml.safe_dump(content, allow_unicode=True))
    with pytest.raises(ClaimsError, match="no_such_number"):
        load_claims(path)


def test_verdict_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="better"):
        verdict(1.0, 1.0, "smaller")


def test_every_claim_names_a_number_and_macros_are_letters_only():
    claims = load_claims()
    keys = {n.key for n in claims.numbers}
    assert claims.claims and all(c.key in keys for c in claims.claims)
    assert all(c.source for c in claims.claims), "every paper value says where the paper states it"
    assert all(c.caveat for c in claims.claims), "every row says how ours and the paper's were measured"
    macros = [n.macro for n in claims.numbers]
    assert len(set(macros)) == len(macros)
    assert all(re.fullmatch(r"[A-Za-z]+", m) for m in macros)
    assert {k for k, _ in claims.setup} <= keys


def test_loading_is_a_faithful_reading_of_the_file(raw_claims, tmp_path):
    claims = load_claims(write_claims(tmp_path, raw_claims))
    assert [n.key for n in claims.numbers] == [e["key"] for e in raw_claims["numbers"]]
    assert [c.claim for c in claims.claims] == [e["claim"] for e in raw_claims["claims"]]
    assert claims == load_claims()  # a YAML round trip of the committed file changes nothing
    first = raw_claims["claims"][0]
    assert claims.claim(first["key"]).paper == first["paper"]
    with pytest.raises(KeyError):
        claims.claim("no such number")


def mutate(raw, section, index, **fields):
    content = copy.deepcopy(raw)
    entry = content[section][index]
    for name, value in fields.items():
        if value is DELETE:
            del entry[name]
        else:
            entry[name] = value
    return content


DELETE = object()


@pytest.mark.parametrize(
    ("section", "fields", "message"),
    [
        ("numbers", {"macro": DELETE}, r"numbers\[1\] \(key 'box_size'\): missing field 'macro'"),
        ("numbers", {"macro": "Box2"}, r"numbers\[1\] \(key 'box_size'\): macro 'Box2' must be letters"),
        ("numbers", {"macro": "NProjections"}, r"numbers\[1\]: macro 'NProjections' repeats"),
        ("numbers", {"key": "n_projections"}, r"numbers\[1\]: key 'n_projections' repeats"),
        ("numbers", {"notebook": "07_more"}, r"key 'box_size'\): notebook '07_more' is not one of"),
        ("numbers", {"path": None}, r"key 'box_size'\): a measured number needs a path"),
        ("numbers", {"path": [True]}, r"key 'box_size'\): path items are"),
        ("numbers", {"format": ".3q"}, r"key 'box_size'\): format '.3q' is not a format"),
        ("numbers", {"unit": 3}, r"key 'box_size'\): unit must be str"),
        ("numbers", {"scale": float("nan")}, r"key 'box_size'\): scale must be a finite"),
        ("numbers", {"seeds": ["noiseless"]}, r"key 'box_size'\): seeds must be \[level, measure\]"),
        ("claims", {"key": "nope"}, r"claims\[1\] \(key 'nope'\): no number 'nope' under `numbers`"),
        ("claims", {"better": "smaller"}, r"claims\[1\] \(key '\w+'\): better must be 'lower' or 'higher'"),
        (
            "claims",
            {"paper": [0.4, 0.2]},
            r"claims\[1\] \(key '\w+'\): paper range \[0.4, 0.2\] has low > high",
        ),
        ("claims", {"paper": "0.2"}, r"claims\[1\] \(key '\w+'\): paper must be"),
        ("claims", {"source": DELETE}, r"claims\[1\] \(key '\w+'\): missing field 'source'"),
        ("claims", {"method": "theirs"}, r"\(key '\w+'\): method must be one of ours, paper, beyond"),
        ("claims", {"method": "beyond", "comparable": True}, r"\(key '\w+'\): a row beyond the paper"),
        ("setup", {"key": "nope"}, r"setup\[1\]: no number 'nope'"),
    ],
)
def test_a_bad_entry_is_refused_with_its_name(raw_claims, tmp_path, section, fields, message):
    path = write_claims(tmp_path, mutate(raw_claims, section, 1, **fields))
    with pytest.raises(ClaimsError, match=message) as caught:
        load_claims(path)
    assert str(path) in str(caught.value)


def test_a_missing_or_broken_file_names_itself(tmp_path):
    with pytest.raises(ClaimsError, match=r"absent\.yml: cannot read the claims file"):
        load_claims(tmp_path / "absent.yml")
    (tmp_path / "bad.yml").write_text("numbers: [\n")
    with pytest.raises(ClaimsError, match=r"bad\.yml: not valid YAML"):
        load_claims(tmp_path / "bad.yml")


def test_paths_pick_keys_list_items_and_matching_entries():
    number = report.Number("x", "X", "04_x", ("sweep", {"variance": 0.8}, "e_or"), "rad", ".3f", "x")
    values = {"sweep": [{"variance": 0.0, "e_or": 0.0}, {"variance": 0.8 + 1e-12, "e_or": 0.07}]}
    assert number.read(values) == 0.07
    with pytest.raises(KeyError):
        number.read({"sweep": [{"variance": 0.5, "e_or": 0.1}]})
    scaled = report.Number("f", "F", "03_x", ("fraction", 1), "%", ".2f", "f", scale=100)
    assert scaled.read({"fraction": [0.5, 0.25]}) == 25.0


def test_update_readme_replaces_only_the_marked_part():
    text = "intro\n<!-- results:begin -->\nold\n<!-- results:end -->\noutro\n"
    assert update_readme(text, "new") == "intro\n<!-- results:begin -->\nnew\n<!-- results:end -->\noutro\n"
    with pytest.raises(ValueError, match="results:begin"):
        update_readme("no markers", "new")


def test_report_from_saved_results(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    monkeypatch.setattr(report, "seed_spreads", lambda profile, claims=None: {})  # the checkout's benchmark
    save_results(
        "04_orientation_recovery",
        {
            "map": "5j0n",
            "exact": {"e_or": 1e-15, "recovery_seconds": 1.0, "alignment_seconds": 0.2},
            "perturbed": [{"variance": 0.0, "e_or": 0.0}, {"variance": 0.8, "e_or": 0.065}],
            "learned": {"0": {"e_or": 0.073}, "16": {"e_or": 1.18}},
            "matched": {"noise_variance": 4.87, "e_or": 0.4, "median": 0.3},
        },
        profile="default",
    )
    document = report.numbers_document()
    numbers = document["profiles"]["default"]["numbers"]
    assert numbers["eor_perturbed"] == 0.065 and numbers["eor_learned_noisy"] == 1.18
    assert "02_distance_learning" in document["profiles"]["default"]["missing"]
    claims = {c["key"]: c for c in document["claims"]}
    assert claims["eor_learned_clean"]["verdict"] == {"default": "one seed", "paper": "not run"}  # no spread
    assert claims["eor_learned_matched"]["verdict"]["default"] == "one seed"
    assert claims["eor_learned_clean"]["method"] == "ours"
    assert claims["eor_paper_method_clean"]["method"] == "paper"
    assert claims["eor_learned_noisy"]["verdict"]["default"] == "not comparable"  # another SNR
    assert claims["res_clean"]["verdict"]["default"] == "not run"  # notebook 07 did not run
    text = report.render_report(document)
    row = ("| E_OR from learned distances, 5j0n at our σ² = 16 (a harder task than the paper's) "
           "| ours (modified) | 0.25 rad | ")
    assert row + "1.180 rad | not comparable | not run |" in text
    assert "3.75 h" in text  # the paper's recovery time, in a unit a reader expects
    tex = report.render_tex(document)
    assert "\\newcommand{\\EorLearnedNoisy}{1.180}" in tex
    assert "\\newcommand{\\ResClean}{n/a}" in tex and "\\newcommand{\\PaperResClean}{12.2}" in tex
    written = report.write_report()
    assert [p.name for p in written] == ["numbers.json", "README.md", "numbers.tex"]


def save_recovery(profile: str, e_or_matched: float) -> None:
    save_results(
        "04_orientation_recovery",
        {
            "map": "5j0n",
            "exact": {"e_or": 1e-15},
            "learned": {"0": {"e_or": 0.1}, "16": {"e_or": 2 * e_or_matched}},
            "matched": {"noise_variance": 4.87, "e_or": e_or_matched, "median": e_or_matched},
        },
        profile=profile,
    )


def test_every_profile_with_results_gets_a_column_in_order(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path))
    monkeypatch.setattr(report, "seed_spreads", lambda profile, claims=None: {})  # the checkout's benchmark
    save_recovery("default", 1.2)
    save_recovery("long", 0.26)
    save_recovery("gpu", 0.2)  # not in claims.yml's order: after the ordered ones
    document = report.numbers_document()
    assert list(document["claims"][0]["ours"]) == ["default", "long", "paper", "gpu"]
    claim = {c["key"]: c for c in document["claims"]}["eor_learned_matched"]
    assert claim["ours"] == {"default": 1.2, "long": 0.26, "paper": None, "gpu": 0.2}
    one = "one seed"
    assert claim["verdict"] == {"default": one, "long": one, "paper": "not run", "gpu": one}
    header = report.readme_table(document).splitlines()[0]
    assert header.startswith(
        "| claim | method | paper | ours, default profile | verdict, default | ours, long profile |"
    )
    assert "| ours, paper profile | verdict, paper | ours, gpu profile |" in header
    text = report.render_report(document)
    assert "- **paper**: not run." in text and "- **long**: notebooks 04_orientation_recovery;" in text


def test_a_claim_row_is_one_entry_in_the_file(raw_claims, tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path / "paper"))
    save_recovery("default", 1.2)
    content = copy.deepcopy(raw_claims)
    content["claims"].append(
        {"key": "eor_exact", "claim": "exact distances recover exactly", "paper": 1e-6, "source": "Fig. 4",
         "better": "lower", "caveat": "a test row", "seeded": False}
    )
    claims = load_claims(write_claims(tmp_path, content))
    document = report.numbers_document(claims=claims)
    rows = report.claims_rows(document, claims)
    assert len(rows) == len(raw_claims["claims"]) + 1
    expected = ["exact distances recover exactly", "ours (modified)", "0.00 rad", "1.0e-15 rad", "better"]
    assert rows[-1][:5] == expected
    assert "- *exact distances recover exactly*: a test row." in report.render_report(document, claims)


def test_check_names_stale_files_and_out_writes_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path / "paper"))
    save_recovery("default", 1.2)
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:begin -->\n<!-- results:end -->\n")
    assert report.main(["--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "README.md",
        "numbers.json",
        "numbers.tex",
    ]
    assert not (tmp_path / "paper" / "numbers.json").exists()
    assert report.main(["--check", "--readme", str(readme), "--out", str(tmp_path / "out")]) == 1
    assert report.main(["--out", str(tmp_path / "out"), "--readme", str(readme)]) == 0
    assert report.main(["--check", "--readme", str(readme), "--out", str(tmp_path / "out")]) == 0
    (tmp_path / "out" / "numbers.tex").write_text("% hand edit\n")
    assert report.check(readme, tmp_path / "out") == [
        f"{tmp_path / 'out' / 'numbers.tex'}: differs from what the saved results give"
    ]


def test_common_lines_section_says_who_wins_where_from_the_numbers():
    from cryoorient.report import common_lines_section

    def row(e_reg, seconds=10.0):
        return {"e_or": e_reg - 0.01, "e_or_median": e_reg / 2, "e_reg": e_reg, "e_reg_median": e_reg / 2,
                "seconds": seconds, "n": 200}

    comparison = {
        "p": 200, "box_size": 32, "aspire": "0.14.3", "training_minutes": {"0": 20.0, "16": 55.0},
        "levels": {
            "0": {"learned": row(0.08), "common_lines": row(0.006)},
            "16": {"learned": row(0.45), "common_lines": row(1.8), "class_averages": row(1.5)},
        },
    }
    text = "\n".join(common_lines_section(comparison, "default"))
    assert "| 16 | common lines on class averages (ASPIRE) | 1.490 (0.750) | 1.500 (0.750) |" in text
    verdict = text[text.index("**Verdict"):]
    assert "common lines (ASPIRE) on the projections is best at σ² = 0 (0.006 rad against 0.080)" in verdict
    assert "learned distances, recovery, gauge is best at σ² = 16 (0.450 rad against 1.500)" in verdict
    assert "At σ² = 16 common lines on the projections fail" in verdict and "55 min" in verdict
    # no failure claimed where common lines did not fail
    comparison["levels"]["16"]["common_lines"] = row(0.5)
    assert "fail" not in "\n".join(common_lines_section(comparison, "default"))


def test_numbers_retrained_with_other_seeds_show_their_range_and_widen_the_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("CRYOORIENT_PAPER", str(tmp_path / "paper"))
    spread_file = tmp_path / "benchmarks" / "results" / "seed_spread.json"
    spread_file.parent.mkdir(parents=True)
    spread = {
        "noiseless": {"e_or": {"n": 3, "mean": 0.07, "min": 0.068, "max": 0.075}},
        "matched": {"e_or": {"n": 3, "mean": 0.16, "min": 0.146, "max": 0.24}, "rmse": None},
    }
    spread_file.write_text(json.dumps({"spread": spread}))
    monkeypatch.setattr(report, "repo_root", lambda: tmp_path)
    claims = load_claims()
    assert claims.seed_spread == ("benchmarks/results/seed_spread.json", "default")
    assert report.seed_spreads("paper", claims) == {}  # measured at the default profile only
    spreads = report.seed_spreads("default", claims)
    assert spreads["eor_learned_clean"]["max"] == 0.075 and spreads["eor_learned_matched"]["n"] == 3
    save_recovery("default", 0.146)
    document = report.numbers_document(["default"], claims)
    rows = {c["key"]: c for c in document["claims"]}
    assert rows["eor_learned_matched"]["verdict"]["default"] == "on par"  # a seed at 0.24 rad
    assert rows["eor_learned_matched"]["seeds"]["default"]["min"] == 0.146
    table = report.readme_table(document, claims)
    assert "0.146 rad (3 seeds: 0.146–0.240) | on par |" in table
    # a notebook's findings say it in words, in the number's format and unit
    assert report.seed_note("eor_learned_matched", "default", claims) == "3 training seeds: 0.146–0.240 rad"
    assert report.seed_note("eor_learned_matched", "paper", claims) == "one training seed"
    assert report.seed_note("eor_5a1a_clean", "default", claims) == "one training seed"  # not measured
    spread_file.write_text("{not json")
    with pytest.raises(ClaimsError, match="seed_spread.json: unreadable"):
        report.seed_spreads("default", claims)


def test_seeds_without_a_seed_spread_file_are_refused(raw_claims, tmp_path):
    content = copy.deepcopy(raw_claims)
    del content["seed_spread"]
    with pytest.raises(ClaimsError, match="numbers name seeds but there is no `seed_spread`"):
        load_claims(write_claims(tmp_path, content))


def test_contest_section_renders_the_full_study_and_its_generated_verdict():
    from cryoorient.report import contest_section

    def row(e: float) -> dict:
        return {"e_or": e, "e_or_median": e / 2, "e_reg": e, "e_reg_median": e / 2, "within_5": 0.5,
                "within_10": 0.75, "resolution": 12.3, "seconds": 61.0}

    contest = {
        "full": {"levels": {"16": {"matching": row(0.05)},
                            "0": {"matching": row(0.004), "learned": row(0.07)}},
                 "parameters": {"images": 400, "rounds": 8}, "commit": "0123456789abcdef"},
        "labels": {"matching": "projection matching (true map)"},
        "verdict": ["Learned distances, unrefined, lose to projection matching."],
    }
    text = "\n".join(contest_section(contest, "default"))
    assert "at 0123456" in text and "the same 400 test projections" in text
    table = [line for line in text.splitlines() if line.startswith("| 0 ") or line.startswith("| 16 ")]
    assert [line.split(" | ")[0] for line in table] == ["| 0", "| 0", "| 16"]  # numeric σ² order
    assert "| projection matching (true map) | 0.004 (0.002) |" in text and "| learned |" in text
    assert "| 50 % / 75 % | 12.3 Å | 61 s |" in text
    assert "- Learned distances, unrefined, lose to projection matching." in text
    assert contest_section({"full": None, "verdict": []}, "default") == []  # not run: no section
