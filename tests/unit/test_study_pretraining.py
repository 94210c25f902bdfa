"""The record of each study variant's pre-training (src/experiments/study_pretraining.py): what counts as a
change, how records of merged results files join, and a malformed record file."""

import json

import pytest

from cofee.experiments.study_pretraining import (
    check_and_record,
    merge_records,
    pretraining_changes,
    read_records,
    records_path,
)
from cofee.utils.errors import ConfigError, InputFileError


def _stages(lr=1e-5, extra=None):
    fet = {"optim": {"lr": lr}, **(extra or {})}
    return {
        "esi": {
            "model": {"name_or_path": "packaged:minilm"},
            "stages": {"esi": {}},
            "seed": 13,
            "parent": None,
        },
        "fet": {"model": None, "stages": {"fet": fet}, "seed": 13, "parent": "esi"},
    }


def test_a_changed_key_is_named_once_and_a_dropped_stage_names_the_curriculum():
    assert pretraining_changes(_stages(), _stages()) == []
    assert pretraining_changes(_stages(), _stages(lr=2e-5)) == [("stages.fet.optim.lr", 1e-5, 2e-5)]
    shared_seed = {stage: {**inputs, "seed": 1} for stage, inputs in _stages().items()}
    assert pretraining_changes(_stages(), shared_seed) == [("seed", 13, 1)]
    without_esi = {"fet": {**_stages()["fet"], "parent": None}}
    assert pretraining_changes(_stages(), without_esi) == [("curriculum.stages", ["esi", "fet"], ["fet"])]


def test_a_key_added_at_its_default_is_no_change():
    # refresh_every_n_epochs is a FET key with a code default of 1: a record written before it existed
    # still matches a planned pre-training that sets it to 1, and not one that sets it to 2
    assert pretraining_changes(_stages(), _stages(extra={"refresh_every_n_epochs": 1})) == []
    assert pretraining_changes(_stages(), _stages(extra={"refresh_every_n_epochs": 2}))


def test_records_refuse_only_variants_with_rows(tmp_path):
    results = tmp_path / "study.csv"
    plan = {"variant": "v", "split": 0, "stages": _stages()}
    check_and_record(results, [], {"h1": plan})
    assert read_records(records_path(results)) == {"h1": plan}
    changed = {"variant": "v", "split": 0, "stages": _stages(lr=2e-5)}
    with pytest.raises(ConfigError, match=r"rows of v \(split 0\).*stages\.fet\.optim\.lr"):
        check_and_record(results, ["h1"], {"h1": changed})
    assert read_records(records_path(results)) == {"h1": plan}  # refused: the record stays as it was
    check_and_record(results, [], {"h1": changed})  # no rows of h1 yet: the new plan replaces the record
    assert read_records(records_path(results)) == {"h1": changed}


def test_merged_results_bring_their_records_without_replacing_own(tmp_path):
    own, other = tmp_path / "own.csv", tmp_path / "other.csv"
    records_path(own).write_text(json.dumps({"h1": {"variant": "a", "split": 0, "stages": _stages()}}))
    theirs = {"variant": "b", "split": 0, "stages": _stages(lr=3e-5)}
    records_path(other).write_text(json.dumps({"h1": {**theirs, "variant": "x"}, "h2": theirs}))
    merge_records(own, [other, tmp_path / "none.csv"])  # a merged file without records adds none
    assert {k: r["variant"] for k, r in read_records(records_path(own)).items()} == {"h1": "a", "h2": "b"}


@pytest.mark.parametrize("text", ["[1, 2]", '{"h1": {"variant": "a"}}', '{"h1": '])
def test_a_malformed_record_file_names_itself(tmp_path, text):
    path = records_path(tmp_path / "study.csv")
    path.write_text(text)
    with pytest.raises(InputFileError, match="study.pretraining.json"):
        read_records(path)
