"""The low-resource study on test-only variant sets (tests/fixtures/study_variants.yaml), never on the
production variants of conf/study.yaml, which test_config checks compose and validate."""

import csv
import json
import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from cofee.config import validate_study
from cofee.experiments.study import (
    markdown_table,
    paired_table,
    read_rows,
    run_study,
    update_readme,
    variant_run_name,
    write_plot,
)
from cofee.utils.errors import ConfigError
from tests.support import study_variant_overrides

REPO = Path(__file__).resolve().parents[2]  # the committed results and configs the shipped studies read


def _study(*overrides, variants="named"):
    """The study config with the test variant set `variants`, then `overrides`, validated."""
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return validate_study(_compose_study(*overrides, variants=variants))


def _compose_study(*overrides, variants="named"):
    return compose(config_name="study", overrides=[*study_variant_overrides(variants), *overrides])


def test_study_runs_variants_resumes_and_reports(tmp_path, small_dump, caplog):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- study:begin -->\nold\n<!-- study:end -->\nfooter\n", encoding="utf-8")
    assert small_dump == tmp_path / "dump.xml"  # the `trained` set's esi reads ${paths.root}/dump.xml
    study = _study(
        "model=tiny",
        f"paths.root={tmp_path}",
        f"data.split_dir={tmp_path}/gold",
        "fractions=[0.02,0.05]",
        "seeds=[1,2]",
        "finetune.max_steps=4",
        "finetune.val_every_steps=2",
        "finetune.bootstrap_samples=50",
        f"results={tmp_path}/study.csv",
        variants="trained",
    )
    assert list(study.variants) == ["baseline", "esi"] and list(study.paired_with) == ["baseline"]
    rows = run_study(study)
    assert len(rows) == 2 * 2 * 2
    assert {(r.variant, r.budget, r.seed) for r in rows} == {
        (v, b, s) for v in ("baseline", "esi") for b in (0.02, 0.05) for s in (1, 2)
    }
    assert (tmp_path / "outputs" / "study-esi" / "esi" / "encoder" / "manifest.json").is_file()
    # a variant in its own run folder whose ESI is the same copies study-esi's instead of training it
    from cofee.experiments.study import pretrain_variant
    from cofee.models.export import read_export_manifest

    study.variants["esi_again"] = ["run_name=study-esi-again", *study.variants["esi"]]
    again = pretrain_variant(study, "esi_again", study.variants["esi_again"])
    assert again == tmp_path / "outputs" / "study-esi-again" / "esi" / "encoder"
    assert read_export_manifest(again) == read_export_manifest(
        tmp_path / "outputs" / "study-esi" / "esi" / "encoder"
    )
    del study.variants["esi_again"]
    with open(tmp_path / "study.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 8

    # a rerun finds every row done and trains nothing: not even the pre-training of a variant whose rows are
    # all in (a reference merged from another study), so its run folder may be gone
    shutil.rmtree(tmp_path / "outputs" / "study-esi")
    assert read_rows(tmp_path / "study.csv") == run_study(study)
    assert not (tmp_path / "outputs" / "study-esi").exists()
    # the esi rows' pre-training is recorded beside them; had the stage's defaults changed since (the
    # record edited to stand for older ones), the variant is refused before anything trains, naming the key
    records = tmp_path / "study.pretraining.json"
    recorded = json.loads(records.read_text())
    assert [(r["variant"], sorted(r["stages"])) for r in recorded.values()] == [("esi", ["esi"])]
    record = next(iter(recorded.values()))
    record["stages"]["esi"]["stages"]["esi"]["optim"]["lr"] = 1.0
    records.write_text(json.dumps(recorded))
    with pytest.raises(ConfigError, match=r"rows of esi .*stages\.esi\.optim\.lr \(1\.0 -> "):
        run_study(study)
    assert len(read_rows(tmp_path / "study.csv")) == 8
    records.unlink()  # rows without a record (made before records were kept) record the pre-training now
    run_study(study)
    assert json.loads(records.read_text()).keys() == recorded.keys()
    # only= trains a subset of the variants (Hydra's ~ cannot delete the null-valued baseline)
    study.only, study.seeds = ["baseline"], [3]
    added = run_study(study)[len(rows) :]
    assert [(r.variant, r.seed) for r in added] == [("baseline", 3), ("baseline", 3)]

    table = markdown_table(rows)
    paired = paired_table(rows)
    assert paired.count("\n") == 2 and "| esi |" in paired and "seeds up" in paired
    by = {(r.variant, r.budget, r.seed): r.test_f1 for r in rows}
    mean_diff = sum(by[("esi", 0.02, s)] - by[("baseline", 0.02, s)] for s in (1, 2)) / 2
    assert f"| esi | {mean_diff:+.3f} ± " in paired
    assert table.count("\n") == 3 and "0.02 of train" in table and "| esi |" in table
    update_readme(readme, table, "Settings: test")
    text = readme.read_text()
    assert text.startswith("# Title\n") and text.endswith("footer\n") and "old" not in text and table in text
    # a narrower report (a run with `only=`) rewrites the block without the others, and says so
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cofee.experiments.study"):
        update_readme(readme, table, "Settings: test")
        assert not caplog.records
        update_readme(readme, markdown_table([r for r in rows if r.variant == "esi"]), "Settings: test")
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "block 'study' no longer lists baseline; their rows stay in the results file, and the study run "
        "with `report_only=true` and without `only` lists them again"
    ]
    write_plot(rows, tmp_path / "plot.png")
    write_plot([r for r in rows if r.variant == "esi"], tmp_path / "single.png")
    # with the baseline's rows, a second panel (the paired gain) sits beside the F1 panel
    paired_width, single_width = (Image.open(tmp_path / name).size[0] for name in ("plot.png", "single.png"))
    assert single_width > 300 and paired_width > 1.7 * single_width


def _baseline_study(tmp_path, *overrides):
    return _study(
        "model=tiny",
        f"paths.root={tmp_path}",
        f"data.split_dir={tmp_path}/gold",
        "only=[baseline]",
        "fractions=[0.02,0.05]",
        "finetune.max_steps=4",
        "finetune.val_every_steps=2",
        "finetune.bootstrap_samples=50",
        *overrides,
        variants="trained",
    )


def test_two_worker_processes_produce_the_rows_one_process_does(tmp_path):
    serial = run_study(_baseline_study(tmp_path, "seeds=[1,2]", f"results={tmp_path}/serial.csv"))
    parallel = run_study(
        _baseline_study(tmp_path, "seeds=[1,2]", f"results={tmp_path}/parallel.csv", "workers=2")
    )
    assert len(parallel) == 4 and read_rows(tmp_path / "parallel.csv") == parallel
    by_key = {(r.budget, r.seed): r for r in serial}
    for (
        row
    ) in parallel:  # the same seeded subsets and runs (F1 may differ in the last bits across thread counts)
        twin = by_key[(row.budget, row.seed)]
        assert (row.train_sentences, row.settings) == (twin.train_sentences, twin.settings)
        assert row.test_f1 == pytest.approx(twin.test_f1, abs=0.02)


def test_a_failing_worker_stops_new_rows_but_keeps_the_running_ones(tmp_path):
    from cofee.data_modules.gold_ner import splits_from_config
    from cofee.experiments.study import FinetuneJob, _run_jobs, variant_settings
    from cofee.utils.errors import CofeeError

    study = _baseline_study(tmp_path, "workers=2")
    splits = {0: splits_from_config(study.data, study.finetune.scheme)}  # split seed -> its gold splits
    settings = variant_settings(study, "baseline")
    good = [FinetuneJob("baseline", "fraction", 0.02, seed, None, settings) for seed in (1, 2, 3, 4, 5)]
    broken = FinetuneJob("baseline", "fraction", 0.02, 9, tmp_path / "no-such-export", settings)
    finished = []
    with pytest.raises(CofeeError, match="no-such-export"):
        for row in _run_jobs(splits, study, [good[0], broken, *good[1:]], None):
            finished.append(row.seed)
    # seed 1 was running when the broken job failed: it is kept; no job starts after the failure
    assert finished[0] == 1 and len(finished) < len(good)


def test_workers_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match="'workers'"):
        _study("workers=0")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("only=[baseline,esi_typo]", "'only'"),
        ("paired_with.baseline=[esi,esi_typo]", "'paired_with.baseline'"),
        ("+paired_with.esi_typo=[]", "'paired_with.esi_typo'"),
    ],
)
def test_naming_an_unknown_variant_is_a_config_error(override, key):
    with pytest.raises(ConfigError, match=f"{key}: no variant named esi_typo; variants: baseline, esi$"):
        _study(override, variants="trained")


def test_report_pairs_each_reference_with_its_variants_only():
    from cofee.experiments.study import StudyRow, paired_tables

    study = _study()  # paired_with: baseline with every other variant, reference with its controls only
    f1 = {"baseline": 0.2, "shared_esi_nee": 0.3, "reference": 0.4, "control": 0.38}
    rows = [
        StudyRow(v, "fraction", 0.1, seed, 19, 0.3, f + seed / 100, 0, 1, 0, 0, 0, 50, 1.0, "s")
        for v, f in f1.items()
        for seed in (1, 2)
    ]
    text = paired_tables(study, rows)
    baseline, controls = text.split("Paired with reference")
    assert (
        "Paired with baseline" in baseline
        and "| shared_esi_nee | +0.100 ± 0.000 (2/2 seeds up) |" in baseline
    )
    assert "| control | -0.020 ± 0.000 (0/2 seeds up) |" in controls
    assert "| shared_esi_nee |" not in controls and "| baseline |" not in controls  # only its controls
    assert "| control_b | – |" in controls  # configured, not run yet
    without_baseline = paired_tables(study, [r for r in rows if r.variant != "baseline"])
    assert "Paired with baseline" not in without_baseline and "Paired with reference" in without_baseline


def test_paired_tables_count_ties_apart_from_seeds_down():
    """Two encoders that fine-tune to the same test F1 on a seed are tied there, not down."""
    from cofee.experiments.study import StudyRow, paired_table

    f1 = {("baseline", 1): 0.2, ("baseline", 2): 0.3, ("same", 1): 0.2, ("same", 2): 0.31}
    rows = [
        StudyRow(v, "fraction", 0.1, seed, 19, 0.3, f, 0, 1, 0, 0, 0, 50, 1.0, "s")
        for (v, seed), f in f1.items()
    ]
    assert "| same | +0.005 ± 0.007 (1/2 seeds up, 1 tied) |" in paired_table(rows, "baseline")


def test_variant_run_name_shares_a_run_folder_when_given():
    study = _study()
    assert variant_run_name(study, "esi", ["curriculum.stages=[esi]"]) == "study-esi"
    names = {v: variant_run_name(study, v, o) for v, o in study.variants.items() if o is not None}
    # variants naming the same run share its folder (ESI trains once); the others get study-<variant>
    assert names == {
        "shared_esi": "study-shared",
        "shared_esi_nee": "study-shared",
        "reference": "study-reference",
        "control": "study-control",
        "control_b": "study-control-b",
        "indomain": "study-indomain",
    }


def test_test_variant_sets_compose_into_valid_pretrain_configs(tmp_path):
    """The test-only variants are valid curricula themselves (the production ones: test_config)."""
    from cofee.experiments.study import variant_root

    roots = {}
    for variant_set in ("trained", "named"):
        with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
            study = validate_study(_compose_study(f"paths.root={tmp_path}", variants=variant_set))
            for name, overrides in study.variants.items():
                if overrides is not None:
                    roots[name] = variant_root(study, name, overrides)
    folders = {
        "esi": "study-esi",
        "shared_esi": "study-shared",
        "shared_esi_nee": "study-shared",
        "reference": "study-reference",
        "control": "study-control",
        "control_b": "study-control-b",
        "indomain": "study-indomain",
    }
    assert {name: root.paths.output_dir for name, root in roots.items()} == {
        name: f"{tmp_path}/outputs/{folder}" for name, folder in folders.items()
    }
    assert roots["esi"].data.anchors.dump == f"{tmp_path}/dump.xml"  # ${paths.root} of the study
    assert [roots[n].stages.fet.lambda_cluster for n in ("control", "control_b")] == [0.0, 0.01]


def test_report_only_merges_parallel_results_and_skips_rows_of_other_settings(tmp_path):
    import subprocess
    import sys

    from cofee.experiments.study import StudyRow, variant_settings, write_rows

    variants = study_variant_overrides("trained")  # baseline, then esi
    study = _study(variants="trained")

    def row(variant, seed, f1, settings=None):
        settings = settings or variant_settings(study, variant)
        return StudyRow(
            variant, "fraction", 0.1, seed, 19, 0.3, f1, 0.2, 0.4, 0.5, 0.3, 0.5, 100, 60.0, settings
        )

    # two parallel studies (only=[baseline] and only=[esi]), plus a row of earlier fine-tuning settings
    # and one of a seed the report does not cover
    ours = [row("esi", 1, 0.35), row("esi", 2, 0.35), row("baseline", 3, 0.9, "old"), row("esi", 9, 0.9)]
    write_rows(tmp_path / "study.csv", ours)
    theirs = [row("baseline", 1, 0.30), row("baseline", 2, 0.30), row("esi", 1, 0.35)]
    write_rows(tmp_path / "b.csv", theirs)
    readme = tmp_path / "README.md"
    readme.write_text("<!-- study:begin -->\n<!-- study:end -->\n", encoding="utf-8")
    args = [f"results={tmp_path}/study.csv", f"readme={readme}", f"plot={tmp_path}/p.png", "report_only=true"]
    cli = [sys.executable, "-m", "cofee.cli.study", f"hydra.run.dir={tmp_path}/h", *variants]
    merge = f"merge=[{tmp_path}/b.csv]"
    done = subprocess.run([*cli, *args, merge], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(read_rows(tmp_path / "study.csv")) == 6  # the baseline rows added, the duplicate esi row not
    text = readme.read_text()
    assert "| esi | +0.050 ± 0.000 (2/2 seeds up) |" in text
    assert text.index("| baseline |") < text.index("| esi |")  # the config's order, not the merged rows'
    assert "| baseline | 0.300 ± 0.000 (median 0.300, n=2) |" in text
    assert "0.9" not in text  # neither the old-settings row nor seed 9 is averaged in
    assert (tmp_path / "p.png").is_file()
    empty = subprocess.run(
        [*cli, *args, f"results={tmp_path}/none.csv"], capture_output=True, text=True, timeout=120
    )
    assert empty.returncode != 0 and "none.csv holds no rows" in empty.stderr
    missing = subprocess.run(
        [*cli, *args, f"merge=[{tmp_path}/missing.csv]"], capture_output=True, text=True, timeout=120
    )
    assert missing.returncode != 0 and "missing.csv: no such results file" in missing.stderr
    before = (tmp_path / "study.csv").read_bytes()
    readme.write_text("no block here\n", encoding="utf-8")
    unmarked = subprocess.run([*cli, *args, merge], capture_output=True, text=True, timeout=120)
    # refused before anything is merged, trained or plotted
    assert unmarked.returncode != 0 and f"{readme}: no '<!-- study:begin -->' marker" in unmarked.stderr
    assert (tmp_path / "study.csv").read_bytes() == before


# ------------------------------------------------------------------ report blocks, k-shot plot, splits
def _row(variant, seed, f1, split=0, protocol="fraction", budget=0.1, settings="s"):
    from cofee.experiments.study import StudyRow

    return StudyRow(
        variant, protocol, budget, seed, 19, 0.3, f1, 0.2, 0.4, 0.5, 0.3, 0.5, 100, 60.0, settings, split
    )


def test_a_study_on_two_splits_keeps_its_splits_apart(tmp_path):
    """One baseline k-shot fine-tuning per split: each split in its own folder, rows carrying their
    split, a rerun training nothing, and the report in the study's own block."""
    from cofee.experiments.study import run_and_report

    study = _baseline_study(
        tmp_path, "fractions=[]", "kshots=[2]", "seeds=[1]", "split_seeds=[0,1]", f"results={tmp_path}/s.csv"
    )
    rows = run_study(study)
    assert sorted((r.split, r.protocol, r.budget) for r in rows) == [(0, "kshot", 2.0), (1, "kshot", 2.0)]
    # split 0 stays in data.split_dir; split 1 has its own folder and its own test sentences
    tests = [(tmp_path / folder / "test.conll").read_text() for folder in ("gold", "gold-seed1")]
    assert tests[0] != tests[1]
    assert len({r.settings for r in rows}) == 2  # one hash per split: the split's seed and folder
    assert read_rows(tmp_path / "s.csv") == rows and run_study(study) == rows  # a rerun trains nothing

    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- study:begin -->\nkept\n<!-- study:end -->\n<!-- quick:begin -->\n<!-- quick:end -->\n"
    )
    study.block, study.report_only, study.readme = "quick", True, str(readme)
    study.plot = str(tmp_path / "report.png")
    table = run_and_report(study)
    text = readme.read_text()
    assert "<!-- study:begin -->\nkept\n<!-- study:end -->" in text  # another study's block is left alone
    assert table in text and text.index("Split 0 (") < text.index("Split 1 (") < text.index("<!-- quick:end")
    assert "| baseline | " in table and "2-shot" in table and "seeds [0, 1]" in text
    assert (tmp_path / "report.png").is_file()


def test_the_plot_adds_kshot_panels_only_when_kshot_rows_exist(tmp_path):
    rows = [
        _row(variant, seed, f1 + seed / 100, protocol=protocol, budget=budget)
        for variant, f1 in (("baseline", 0.3), ("esi", 0.35))
        for protocol, budget in (("fraction", 0.1), ("fraction", 1.0), ("kshot", 4.0))
        for seed in (1, 2)
    ]
    fractions = [r for r in rows if r.protocol == "fraction"]
    # as before k-shot rows were plotted: F1 and the paired gain, side by side
    assert write_plot(fractions, tmp_path / "f.png") == [
        "Low-resource NER on WNUT16",
        "Paired gain over baseline",
    ]
    assert write_plot(rows, tmp_path / "k.png") == [
        "Low-resource NER on WNUT16",
        "Paired gain over baseline",
        "Low-resource NER on WNUT16, k-shot",
        "Paired gain over baseline, k-shot",
    ]
    two_splits = rows + [replace(r, split=1) for r in rows]
    assert len(write_plot(two_splits, tmp_path / "s.png")) == 4  # splits differ by line style, not panel
    # a panel for each reference with rows (a study's `paired_with`); one without rows gets none
    more = fractions + [replace(r, variant="esi_nee", test_f1=r.test_f1 + 0.02) for r in fractions]
    pairs = [("baseline", []), ("esi", ["esi_nee"]), ("absent", ["esi"])]
    assert write_plot(more, tmp_path / "r.png", pairs) == [
        "Low-resource NER on WNUT16",
        "Paired gain over baseline",
        "Paired gain over esi",
    ]
    fraction_height, kshot_height = (Image.open(tmp_path / name).size[1] for name in ("f.png", "k.png"))
    assert kshot_height > 1.7 * fraction_height


def test_a_missing_report_block_is_refused_before_any_training(tmp_path):
    from cofee.experiments.study import run_and_report
    from cofee.utils.errors import InputFileError

    readme = tmp_path / "README.md"
    readme.write_text("<!-- study:begin -->\n<!-- study:end -->\n")
    study = _baseline_study(tmp_path, "block=study-quick", f"readme={readme}", f"results={tmp_path}/s.csv")
    with pytest.raises(InputFileError, match="no '<!-- study-quick:begin -->' marker") as info:
        run_and_report(study)
    assert str(readme) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "gold").exists()  # nothing ran


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["block=a b"], "'block'"),
        (["split_seeds=[0,1,0]"], "'split_seeds'"),
        (["split_seeds=[0,1]", "data.train_file=t", "data.dev_file=d", "data.test_file=e"], "'split_seeds'"),
    ],
)
def test_a_bad_block_or_split_seeds_is_a_config_error(overrides, key):
    with pytest.raises(ConfigError, match=key):
        _study(*overrides).validate()


def test_pairs_form_within_a_split_only():
    from cofee.experiments.study import paired_differences, report_tables

    rows = [_row("baseline", 1, 0.30, split=0), _row("esi", 1, 0.50, split=1)]  # same seed, other split
    assert paired_differences(rows, "baseline") == {}
    rows += [_row("esi", 1, 0.35, split=0), _row("baseline", 1, 0.40, split=1)]
    (key, diffs), *others = paired_differences(rows, "baseline").items()
    assert key == ("esi", "fraction", 0.1) and not others and sorted(diffs) == pytest.approx([0.05, 0.10])
    table = report_tables(_study("split_seeds=[0,1]", variants="trained"), rows)
    assert "| esi | +0.050 / +0.100 (2/2 seeds up; up on 2/2 splits) |" in table
    rows.append(_row("esi", 2, 0.20, split=1))  # no baseline of seed 2 on split 1: left unpaired
    assert "| esi | +0.050 / +0.100 (2/2 seeds up; up on 2/2 splits) |" in report_tables(
        _study("split_seeds=[0,1]", variants="trained"), rows
    )


def test_a_variant_reading_the_split_moves_with_it_and_split_0_keeps_its_settings(tmp_path):
    from cofee.experiments.study import on_split, variant_root, variant_settings

    study = _study(f"paths.root={tmp_path}", "split_seeds=[0,3]")
    assert on_split(study, 0) is study  # split 0: the study as it was, so its rows keep their hash
    three = on_split(study, 3)
    assert three.data.split_dir == f"{tmp_path}/data/gold/wnut16-seed3" and three.data.split_seed == 3
    moved = {name for name in study.variants if three.variants[name] != study.variants[name]}
    assert moved == {"indomain"}  # the others' pre-training does not read the split: shared
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        root = variant_root(three, "indomain", three.variants["indomain"])
    assert root.paths.output_dir == f"{tmp_path}/outputs/study-indomain-seed3"
    assert root.data.gazetteer.raw_text == f"{tmp_path}/data/gold/wnut16-seed3/train.txt"
    assert root.data.gazetteer.labelled_dir == f"{tmp_path}/data/labelled-indomain-seed3"
    assert all(variant_settings(three, v) != variant_settings(study, v) for v in study.variants)


def test_rows_without_a_split_column_read_as_split_0_and_report_as_before(tmp_path):
    """The published rows (results/study.csv, written before `split_seeds`) keep their hash, so a resumed
    study trains none of them again, and report exactly the published study block of docs/results.md."""
    import shutil

    from cofee.experiments.study import (
        LEGACY_COLUMNS,
        current_rows,
        run_and_report,
        run_key,
        variant_settings,
        write_rows,
    )

    published = tmp_path / "study.csv"
    shutil.copy(REPO / "results" / "study.csv", published)
    if published.read_text().splitlines()[0].split(",") != LEGACY_COLUMNS:
        pytest.skip("results/study.csv has been rewritten with the split column since")
    rows = read_rows(published)
    assert rows and {r.split for r in rows} == {0}
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study"))  # the production study, as published
    assert current_rows(study, rows) == sorted(rows, key=lambda r: list(study.variants).index(r.variant))
    # the key a resumed study looks each fine-tuning up by (split 0: the study itself) finds every row
    settings = {v: variant_settings(study, v) for v in study.variants}
    done = {run_key(r.variant, r.protocol, r.budget, r.seed, r.settings, r.split) for r in rows}
    assert all(run_key(r.variant, r.protocol, r.budget, r.seed, settings[r.variant], 0) in done for r in rows)
    block = re.compile(r"<!-- study:begin -->.*<!-- study:end -->", re.S)
    readme = tmp_path / "results.md"
    readme.write_text((REPO / "docs" / "results.md").read_text(encoding="utf-8"), encoding="utf-8")
    study.readme, study.results, study.report_only = str(readme), str(published), True
    study.plot = str(tmp_path / "p.png")
    run_and_report(study)
    expected = block.search((REPO / "docs" / "results.md").read_text(encoding="utf-8")).group(0)
    ours = block.search(readme.read_text(encoding="utf-8")).group(0)
    assert ours.replace(f"Rows: `{published}`", "Rows: `results/study.csv`") == expected
    write_rows(published, rows)  # written back with the split column, the rows read the same
    assert read_rows(published) == rows and published.read_text().startswith(
        ",".join(LEGACY_COLUMNS) + ",split\n"
    )


def test_study_quick_composes_from_the_study_with_its_own_block():
    from omegaconf import OmegaConf

    from cofee.config import StudyConfig
    from cofee.utils.io import check_marked_block

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        cfg = compose(config_name="study_quick")
        full = compose(config_name="study")
    assert OmegaConf.get_type(cfg) is StudyConfig
    quick = validate_study(cfg)
    quick.validate()
    assert (quick.only, quick.fractions, quick.kshots, quick.seeds, quick.workers) == (
        ["baseline", "default"],
        [0.1],
        [4],
        [1, 2, 3, 4, 5],
        2,
    )
    assert (quick.results, quick.plot, quick.block) == (
        "results/study_quick.csv",
        "docs/study_quick.png",
        "study-quick",
    )
    study = validate_study(full)
    assert quick.variants.items() > study.variants.items() and quick.finetune == study.finetune
    check_marked_block(quick.readme, quick.block)  # docs/results.md holds its block


def test_study_quick_pretrains_the_default_curriculum_the_other_studies_their_pinned_one():
    """The quick study checks what `make pretrain-all` trains: its `default` variant is conf/pretrain.yaml
    as it is, in a run folder of its own. The other studies pre-train with conf/pretrain_studies.yaml,
    which differs from it only in the ESI epochs their committed rows were measured with."""
    from cofee.config import to_plain, validate
    from cofee.experiments.study import variant_root

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        quick = _shipped_study("study_quick")
        study = _shipped_study("study")
        default = to_plain(
            validate(compose(config_name="pretrain", overrides=[f"paths.root={quick.paths.root}"]))
        )
        checked = to_plain(variant_root(quick, "default", quick.variants["default"]))
        pinned = to_plain(variant_root(study, "esi_nee_fet", study.variants["esi_nee_fet"]))
    assert (checked["run_name"], pinned["run_name"]) == ("study-quick", "study-wiki")
    for cfg in (checked, pinned, default):
        del cfg["run_name"], cfg["paths"]
    assert checked == default
    assert (pinned["stages"]["esi"]["max_epochs"], default["stages"]["esi"]["max_epochs"]) == (1, 2)
    pinned["stages"]["esi"]["max_epochs"] = 2
    assert pinned == default


def test_study_gold_pretrains_nee_and_fet_with_the_replaced_loss_settings():
    from cofee.config import NoiseConfig, NoiseStrategy, UnknownMode
    from cofee.experiments.study import variant_root
    from cofee.utils.io import check_marked_block

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        gold = validate_study(compose(config_name="study_gold"))
        gold.validate()
        roots = {
            name: variant_root(gold, name, gold.variants[name]) for name in ("nee_no_balance", "nee_marginal")
        }
        default = variant_root(gold, "esi_nee_fet", gold.variants["esi_nee_fet"])
    for stage in ("nee", "fet"):
        assert getattr(default.stages, stage).type_balance == 0.5
        assert getattr(default.stages, stage).noise == NoiseConfig()
        for root in roots.values():
            assert getattr(root.stages, stage).type_balance == 0
            assert getattr(root.stages, stage).noise.strategy == NoiseStrategy.partial
        assert getattr(roots["nee_no_balance"].stages, stage).noise.unknown == UnknownMode.ignore
        assert getattr(roots["nee_marginal"].stages, stage).noise.unknown == UnknownMode.marginal
    # each rival pre-trains in a run folder of its own; ESI is the study's
    assert len({default.run_name, *(r.run_name for r in roots.values())}) == 3
    assert gold.paired_with["esi_nee_fet"] == ["nee_no_balance", "nee_marginal"]
    assert gold.results == "results/study_gold.csv"  # never rewrites the published results/study.csv
    check_marked_block(gold.readme, gold.block)  # docs/results.md holds its block


def test_study_stages_leaves_out_one_stage_at_a_time_with_the_others_unchanged():
    from cofee.experiments.study import variant_root
    from cofee.pipeline.curriculum import stage_plan
    from cofee.utils.io import check_marked_block

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        stages = validate_study(compose(config_name="study_stages"))
        stages.validate()
        roots = {
            name: variant_root(stages, name, stages.variants[name])
            for name in stages.paired_with["esi_nee_fet"]
        }
        whole = variant_root(stages, "esi_nee_fet", stages.variants["esi_nee_fet"])
    plans = {name: stage_plan(root) for name, root in roots.items()}
    assert plans == {
        "nee_fet": [("nee", None), ("fet", "nee")],  # NEE starts from the plain encoder
        "esi_fet": [("esi", None), ("fet", "esi")],
        "esi_nee": [("esi", None), ("nee", "esi")],
    }
    assert stage_plan(whole) == [("esi", None), ("nee", "esi"), ("fet", "nee")]
    for root in roots.values():  # what a variant keeps is trained as in the whole curriculum
        for stage in root.curriculum.stages:
            assert getattr(root.stages, stage) == getattr(whole.stages, stage)
        assert root.data == whole.data and root.model == whole.model
    # the new variants pre-train in run folders of their own, never over the study's
    assert len({whole.run_name, roots["nee_fet"].run_name, roots["esi_fet"].run_name}) == 3
    assert (stages.fractions, stages.kshots) == ([0.01], [4])
    assert stages.results == "results/study_stages.csv"
    check_marked_block(stages.readme, stages.block)


@pytest.mark.parametrize(
    "name, budgets, splits",
    [
        (
            "study_kshot",
            [("fraction", f) for f in (0.01, 0.1, 1.0)] + [("kshot", k) for k in (1.0, 4.0, 16.0)],
            [0],
        ),
        ("study_split", [("fraction", 0.01), ("fraction", 0.1)], [0, 1]),
    ],
)
def test_the_kshot_and_second_split_studies_compose(name, budgets, splits):
    """Each composes and validates, runs only its budgets and splits, and writes a results file and
    block of its own."""
    from cofee.experiments.study import on_split, split_folder, study_budgets
    from cofee.utils.io import check_marked_block

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name=name))
        study.validate()
    assert study_budgets(study) == budgets and study.split_seeds == splits
    assert study.results == f"results/{name}.csv" and study.block == name.replace("_", "-")
    for split in splits:  # the Wikipedia variants pre-train once for every split
        assert on_split(study, split).variants["esi_nee_fet"] == study.variants["esi_nee_fet"]
    assert len({split_folder(study, split) for split in splits}) == len(splits)
    check_marked_block(study.readme, study.block)


def _shipped_study(config_name: str):
    """The shipped study config `conf/<config_name>.yaml`, validated (inside an
    `initialize_config_module` block)."""
    study = validate_study(compose(config_name=config_name))
    study.validate()
    return study


def _variant_roots(study, names: list[str]) -> dict:
    """The pre-training config of each named variant of `study`."""
    from cofee.experiments.study import variant_root

    return {name: variant_root(study, name, study.variants[name]) for name in names}


SHIPPED_STUDIES = sorted(path.stem for path in REPO.glob("conf/study*.yaml"))


@pytest.mark.parametrize("config_name", SHIPPED_STUDIES)
def test_each_shipped_studys_rows_came_from_the_pretraining_it_would_now_train(config_name):
    """What `cofee-study` checks before anything trains, without writing: every variant with rows in the
    study's committed results file would pre-train exactly what its record says its rows came from. A
    changed stage default (ESI's epochs went from 1 to 2) must not silently orphan or refuse the
    published rows; conf/pretrain_studies.yaml pins what they were measured with."""
    from cofee.experiments.study import planned_pretraining, read_rows
    from cofee.experiments.study_pretraining import pretraining_changes, read_records, records_path

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = _shipped_study(config_name)
        planned = planned_pretraining(study)
    results = REPO / study.results
    records = read_records(records_path(results))
    with_rows = {row.settings for row in read_rows(results)}
    compared = {
        plan["variant"]: pretraining_changes(records[settings]["stages"], plan["stages"])
        for settings, plan in planned.items()
        if settings in with_rows
    }
    assert compared, f"{config_name}: no pre-trained variant has rows to compare"
    assert compared == {variant: [] for variant in compared}


def test_an_unknown_pretrain_config_is_a_config_error():
    from cofee.experiments.study import variant_root

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = _shipped_study("study")
        study.pretrain_config = "no_such_config"
        with pytest.raises(ConfigError, match="'pretrain_config'.*conf/no_such_config.yaml"):
            variant_root(study, "esi", study.variants["esi"])


def _lever_changes(config_name: str, reference: str, stage: str) -> tuple[dict, dict]:
    """For each variant the study pairs with `reference`: the `stages.<stage>` keys it changes against
    `reference`'s curriculum; and every config those variants (and `reference`) pre-train with."""
    from dataclasses import asdict

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = _shipped_study(config_name)
        roots = _variant_roots(study, [reference, *study.paired_with[reference]])

    def flat(tree, prefix=""):
        for key, value in tree.items():
            yield from flat(value, f"{prefix}{key}.") if isinstance(value, dict) else [(prefix + key, value)]

    base = dict(flat(asdict(getattr(roots[reference].stages, stage))))
    changed = {
        name: {k for k, v in flat(asdict(getattr(root.stages, stage))) if base[k] != v}
        for name, root in roots.items()
        if name != reference
    }
    return changed, roots


def test_study_esi_levers_each_change_one_esi_setting():
    """Each ESI lever is plain ESI (study-wiki's) with one setting changed, in a run folder of its own."""
    changed, roots = _lever_changes("study_esi", "esi", "esi")
    assert changed == {
        "esi_mlm": {"optim.mlm_weight"},
        "esi_distill": {"optim.distill_weight"},
        "esi_bioes": {"scheme"},
        "esi_short": {"max_steps"},
        "esi_long": {"max_epochs"},
        "esi_span": {"span_weight"},
        "esi_repeats": set(),  # its lever is the corpus: unlinked repeats marked, in a folder of its own
    }
    assert all(root.curriculum.stages == ["esi"] for root in roots.values())
    assert len({root.run_name for root in roots.values()}) == 8
    plain, repeats = roots["esi"].data.anchors, roots["esi_repeats"].data.anchors
    assert all(root.data == roots["esi"].data for name, root in roots.items() if name != "esi_repeats")
    assert repeats.build.mark_repeats and not plain.build.mark_repeats
    assert repeats.corpus_dir.endswith("anchors-repeats") and repeats.corpus_dir != plain.corpus_dir
    assert replace(repeats, build=plain.build, corpus_dir=plain.corpus_dir) == plain


def test_study_fet_levers_each_change_one_fet_setting_on_the_studys_esi_and_nee():
    """Each FET lever is plain FET (study-wiki's esi_nee_fet) with one FET setting changed (or one lever
    and the cluster-loss weight), in a run folder of its own, on the same ESI and NEE (so those are copied, not trained again)."""
    changed, roots = _lever_changes("study_fet", "esi_nee_fet", "fet")
    assert changed == {
        "fet_within_types": {"cluster.within_types"},
        "fet_typed_spans": {"cluster.spans"},
        "fet_prototype": {"cluster_loss"},
        "fet_cluster_lr": {"optim.cluster_head_lr"},
        "fet_k50": {"cluster.k"},
        "fet_k100": {"cluster.k"},
        "fet_refresh_steps": {"refresh_every_n_steps"},
        "fet_lambda01": {"lambda_cluster"},
        "fet_lambda1": {"lambda_cluster"},
        # two levers at once: the lever and a cluster-loss weight that matters
        "fet_prototype_lambda01": {"cluster_loss", "lambda_cluster"},
        "fet_within_lambda01": {"cluster.within_types", "lambda_cluster"},
    }
    plain = roots["esi_nee_fet"]
    for root in roots.values():
        assert root.curriculum.stages == ["esi", "nee", "fet"]
        assert (root.stages.esi, root.stages.nee, root.data) == (
            plain.stages.esi,
            plain.stages.nee,
            plain.data,
        )
    assert len({root.run_name for root in roots.values()}) == len(roots)


def test_study_esi_full_puts_the_esi_levers_under_the_default_nee_and_fet():
    """Each lever's ESI is its study_esi variant's (so it is copied, not trained again), followed by the
    default curriculum's NEE and FET; its `nee_fet` is study_stages' (whose rows it reuses)."""
    from cofee.pipeline.curriculum import stage_plan

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        full = _shipped_study("study_esi_full")
        roots = _variant_roots(full, ["esi_distill_full", "esi_long_full", "esi_nee_fet", "nee_fet"])
        alone = _variant_roots(_shipped_study("study_esi"), ["esi_distill", "esi_long"])
        stages = _variant_roots(_shipped_study("study_stages"), ["nee_fet"])
    whole = roots["esi_nee_fet"]
    for lever in ("esi_distill", "esi_long"):
        root = roots[f"{lever}_full"]
        assert stage_plan(root) == [("esi", None), ("nee", "esi"), ("fet", "nee")]
        assert root.stages.esi == alone[lever].stages.esi != whole.stages.esi
        assert (root.stages.nee, root.stages.fet, root.data) == (
            whole.stages.nee,
            whole.stages.fet,
            whole.data,
        )
        assert root.run_name not in {alone[lever].run_name, whole.run_name}
    assert roots["nee_fet"] == stages["nee_fet"]
    assert set(full.paired_with["esi_nee_fet"]) == {"esi_distill_full", "esi_long_full", "nee_fet"}
    assert (full.fractions, full.kshots, full.results) == (
        [0.01, 0.1, 1.0],
        [4],
        "results/study_esi_full.csv",
    )


def test_a_study_with_only_reports_its_own_variants_from_a_shared_results_file():
    """study_quick reads rows merged from the main study: the variants it does not train stay out of its
    tables, while the main study (no `only`) still reports every variant."""

    from cofee.experiments.study import current_rows, read_rows

    rows = read_rows(REPO / "results" / "study.csv")
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        quick = validate_study(compose(config_name="study_quick"))
        full = validate_study(compose(config_name="study"))
    assert {r.variant for r in current_rows(quick, rows)} == {"baseline"}  # the study has no `default` rows
    assert {r.variant for r in current_rows(full, rows)} == set(full.variants)
