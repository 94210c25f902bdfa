"""The low-resource study on test-only variant sets (tests/fixtures/study_variants.yaml), never on the
production variants of conf/study.yaml, which test_config checks compose and validate."""

import csv

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


def _study(*overrides, variants="named"):
    """The study config with the test variant set `variants`, then `overrides`, validated."""
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return validate_study(_compose_study(*overrides, variants=variants))


def _compose_study(*overrides, variants="named"):
    return compose(config_name="study", overrides=[*study_variant_overrides(variants), *overrides])


def test_study_runs_variants_resumes_and_reports(tmp_path, small_dump):
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

    # a rerun finds every row done and trains nothing
    assert read_rows(tmp_path / "study.csv") == run_study(study)
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
    splits = splits_from_config(study.data, study.finetune.scheme)
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
