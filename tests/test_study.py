import csv

import pytest
from hydra import compose, initialize_config_module
from PIL import Image

from cofee.config import validate_study
from cofee.errors import ConfigError
from cofee.study import (
    markdown_table,
    paired_table,
    read_rows,
    run_study,
    update_readme,
    variant_run_name,
    write_plot,
)


def test_study_runs_variants_resumes_and_reports(tmp_path, small_dump):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- study:begin -->\nold\n<!-- study:end -->\nfooter\n", encoding="utf-8")
    esi = [
        "experiment=smoke",
        f"data.anchors.dump={small_dump}",
        "data.anchors.build_workers=1",
        "data.anchors.dev_fraction=0.2",
        "trainer.fast_dev_run=true",
    ]
    overrides = [
        "model=tiny",
        f"paths.root={tmp_path}",
        f"data.split_dir={tmp_path}/gold",
        "fractions=[0.02,0.05]",
        "seeds=[1,2]",
        "variants.esi=[" + ",".join(f"'{o}'" for o in esi) + "]",
        "~variants.esi_nee",
        "~variants.esi_nee_fet",
        "~variants.esi_nee_fet_indomain",
        "~variants.esi_nee_fet_nocluster",
        "~variants.esi_nee_fet_cluster10x",
        "~paired_with.esi_nee_fet",
        "finetune.max_steps=4",
        "finetune.val_every_steps=2",
        "finetune.bootstrap_samples=50",
        f"results={tmp_path}/study.csv",
    ]
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study", overrides=overrides))
    rows = run_study(study)
    assert len(rows) == 2 * 2 * 2
    assert {(r.variant, r.budget, r.seed) for r in rows} == {
        (v, b, s) for v in ("baseline", "esi") for b in (0.02, 0.05) for s in (1, 2)
    }
    assert (tmp_path / "outputs" / "study-esi" / "esi" / "encoder" / "manifest.json").is_file()
    # a variant in its own run folder whose ESI is the same copies study-esi's instead of training it
    from cofee.export import read_export_manifest
    from cofee.study import pretrain_variant

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
    args = [
        "model=tiny",
        f"paths.root={tmp_path}",
        f"data.split_dir={tmp_path}/gold",
        "only=[baseline]",
        "fractions=[0.02,0.05]",
        "finetune.max_steps=4",
        "finetune.val_every_steps=2",
        "finetune.bootstrap_samples=50",
        *overrides,
    ]
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return validate_study(compose(config_name="study", overrides=args))


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
    from cofee.errors import CofeeError
    from cofee.study import FinetuneJob, _run_jobs, variant_settings

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
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        cfg = compose(config_name="study", overrides=["workers=0"])
    with pytest.raises(ConfigError, match="'workers'"):
        validate_study(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("only=[baseline,esi_typo]", "'only'"),
        ("paired_with.baseline=[esi,esi_typo]", "'paired_with.baseline'"),
        ("+paired_with.esi_typo=[]", "'paired_with.esi_typo'"),
    ],
)
def test_naming_an_unknown_variant_is_a_config_error(override, key):
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        cfg = compose(config_name="study", overrides=[override])
    with pytest.raises(ConfigError, match=f"{key}: no variant named esi_typo"):
        validate_study(cfg)


def test_report_pairs_each_reference_with_its_variants_only():
    from cofee.study import StudyRow, paired_tables

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study"))
    f1 = {"baseline": 0.2, "esi_nee": 0.3, "esi_nee_fet": 0.4, "esi_nee_fet_nocluster": 0.38}
    rows = [
        StudyRow(v, "fraction", 0.1, seed, 19, 0.3, f + seed / 100, 0, 1, 0, 0, 0, 50, 1.0, "s")
        for v, f in f1.items()
        for seed in (1, 2)
    ]
    text = paired_tables(study, rows)
    baseline, fet = text.split("Paired with esi_nee_fet")
    assert "Paired with baseline" in baseline and "| esi_nee | +0.100 ± 0.000 (2/2 seeds up) |" in baseline
    assert "| esi_nee_fet_nocluster | -0.020 ± 0.000 (0/2 seeds up) |" in fet
    assert "| esi_nee |" not in fet and "| baseline |" not in fet  # only the FET controls
    assert "| esi_nee_fet_cluster10x | – |" in fet  # configured, not run yet
    without_baseline = paired_tables(study, [r for r in rows if r.variant != "baseline"])
    assert "Paired with baseline" not in without_baseline and "Paired with esi_nee_fet" in without_baseline


def test_variant_run_name_shares_a_run_folder_when_given():
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study"))
    assert variant_run_name(study, "esi", ["curriculum.stages=[esi]"]) == "study-esi"
    names = {v: variant_run_name(study, v, o) for v, o in study.variants.items() if o is not None}
    # ESI, ESI+NEE and the full curriculum on Wikipedia share one folder, so ESI trains once
    assert names["esi"] == names["esi_nee"] == names["esi_nee_fet"] != names["esi_nee_fet_indomain"]


def test_default_study_variants_compose_into_valid_pretrain_configs():
    """A typo in a variant's overrides must fail here, not hours into `make study`."""
    from cofee.config import validate

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study"))
        assert set(study.variants) >= {"baseline", "esi", "esi_nee", "esi_nee_fet", "esi_nee_fet_indomain"}
        for overrides in study.variants.values():
            if overrides is None:
                continue
            rest = [o for o in overrides if not o.startswith("run_name=")]
            root = validate(compose(config_name="pretrain", overrides=rest))
            assert list(root.curriculum.stages) == ["esi", "nee", "fet"][: len(root.curriculum.stages)]
    indomain = validate(
        compose_pretrain([o for o in study.variants["esi_nee_fet_indomain"] if not o.startswith("run_name=")])
    )
    assert indomain.data.gazetteer.raw_text.endswith("gold/wnut16/train.txt")
    assert not indomain.data.gazetteer.with_anchors
    assert indomain.data.gazetteer.labelled_dir != validate(compose_pretrain([])).data.gazetteer.labelled_dir
    fet_controls = ("esi_nee_fet", "esi_nee_fet_nocluster", "esi_nee_fet_cluster10x")
    weights = {
        name: validate(
            compose_pretrain([o for o in study.variants[name] if not o.startswith("run_name=")])
        ).stages.fet.lambda_cluster
        for name in fet_controls
    }
    assert weights == {"esi_nee_fet": 0.001, "esi_nee_fet_nocluster": 0.0, "esi_nee_fet_cluster10x": 0.01}
    assert (
        len({variant_run_name(study, n, study.variants[n]) for n in fet_controls}) == 3
    )  # no FET overwrites another


def compose_pretrain(overrides):
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        return compose(config_name="pretrain", overrides=overrides)


def test_report_only_merges_parallel_results_and_skips_rows_of_other_settings(tmp_path):
    import subprocess
    import sys

    from cofee.study import StudyRow, variant_settings, write_rows

    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        study = validate_study(compose(config_name="study"))

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
    cli = [sys.executable, "-m", "cofee.cli.study", f"hydra.run.dir={tmp_path}/h"]
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
