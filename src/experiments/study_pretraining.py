"""The pre-training each study row was fine-tuned from, recorded beside the results file.

A row's `settings` hash covers the study's own config (fine-tuning, data, model and the variant's
overrides), not the stage defaults its curriculum takes from conf/pretrain.yaml. Were those defaults
changed and the variant's run folder gone, the curriculum would train another encoder while the old rows
still counted as done. So `<results>.pretraining.json` keeps, under each settings hash, the inputs of
every stage of the variant's curriculum (what the curriculum itself compares before it reuses a stage),
and a study whose variant would now pre-train otherwise is refused before anything trains, naming the keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from cofee.config import RootConfig, known_stages
from cofee.pipeline.config_diff import describe_changes
from cofee.utils.errors import ConfigError, InputFileError
from cofee.utils.io import atomic_write_json, read_json

log = logging.getLogger(__name__)


def records_path(results: Path) -> Path:
    return results.with_name(f"{results.stem}.pretraining.json")


def planned_inputs(root: RootConfig) -> dict[str, dict]:
    """Each stage's inputs in a variant's curriculum, read from its config before anything trains. The
    parent is named by its stage, not by its export's hash: that hash covers training metrics and
    timings, which differ on every machine, so a committed record would never match a fresh clone's."""
    from cofee.pipeline.curriculum import stage_chain, stage_inputs

    inputs = {stage: stage_inputs(root, stage, parent) for stage, parent in stage_chain(root)}
    return json.loads(json.dumps(inputs, default=str))  # as a record reads back: lists, not tuples


def pretraining_changes(
    recorded: dict[str, dict], planned: dict[str, dict]
) -> list[tuple[str, object, object]]:
    """(key, recorded, planned) for what differs between two curricula's stage inputs; keys a later
    version added at their defaults are no change, as in the curriculum."""
    from cofee.pipeline.curriculum import input_changes

    if set(recorded) != set(planned):  # a record's stages come back sorted by name: compare as sets
        order = known_stages().index
        return [("curriculum.stages", sorted(recorded, key=order), sorted(planned, key=order))]
    changes = {}
    for stage in planned:
        for key, old, new in input_changes(stage, recorded[stage], planned[stage]):
            changes.setdefault(key, (key, old, new))  # data and seed keys are shared by the stages
    return sorted(changes.values(), key=lambda change: change[0])


def read_records(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    records = read_json(path)
    if not isinstance(records, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("stages"), dict) for r in records.values()
    ):
        raise InputFileError(path, "not a mapping of settings hashes to {variant, split, stages} records")
    return records


def check_and_record(results: Path, rows_settings: Iterable[str], planned: dict[str, dict]) -> None:
    """Refuse a variant whose rows in `results` were fine-tuned from another pre-training than the one
    it would now train; record the planned pre-training of variants without a record (or without rows).

    `planned` maps a settings hash to {"variant", "split", "stages": planned_inputs(...)}."""
    path = records_path(results)
    records = read_records(path)
    with_rows = set(rows_settings)
    updated = dict(records)
    for settings, plan in planned.items():
        recorded = records.get(settings)
        if recorded is None or settings not in with_rows:
            updated[settings] = plan
            continue
        changes = pretraining_changes(recorded["stages"], plan["stages"])
        if changes:
            raise ConfigError(
                "variants",
                f"{results}: the rows of {plan['variant']} (split {plan['split']}) were fine-tuned from an "
                f"encoder pre-trained with other settings ({describe_changes(changes)}; recorded in {path}): "
                "give the changed curriculum a variant name of its own, or move those rows away",
            )
    if updated != records:
        atomic_write_json(path, updated)
        log.info("recorded the variants' pre-training in %s", path)


def merge_records(results: Path, others: list[Path]) -> None:
    """Add the records of merged results files (of the rows they brought) that `results`' own lacks."""
    path = records_path(results)
    records = read_records(path)
    merged = dict(records)
    for other in others:
        for settings, record in read_records(records_path(other)).items():
            merged.setdefault(settings, record)
    if merged != records:
        atomic_write_json(path, merged)
