"""`make denoising`: does NEE beat the gazetteer that labelled its training data, per noise strategy?

One ESI run, then one NEE run per (noise strategy, seed), each from that ESI export; the gazetteer
matcher (the same settings that labelled the NEE corpus) and every NEE export are scored on gold NER
sentences whose types are mapped to the coarse ones (`cofee.experiments.nee_eval`). The gold split used is
never used for training anywhere (default: the WNUT16 training split; the study's dev and test
splits stay untouched). Results: a JSON file and a table in docs/results.md.
"""

from __future__ import annotations

import copy
import logging
import statistics
from importlib import resources
from pathlib import Path

import yaml

from cofee.config import DenoisingConfig, GoldDataConfig, RootConfig
from cofee.models.metrics import interval_text
from cofee.utils.io import atomic_write_json, check_marked_block, replace_marked_block

log = logging.getLogger(__name__)


def load_mapping(path: str | None) -> dict[str, str | None]:
    if path is None:
        return yaml.safe_load(
            resources.files("cofee.conf").joinpath("mappings/wnut16_coarse.yaml").read_text()
        )
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _nee_config(root: RootConfig, strategy: str, seed: int) -> RootConfig:
    cfg = copy.deepcopy(root)
    cfg.seed = seed
    cfg.stages.nee.noise.strategy = strategy
    cfg.paths.output_dir = str(Path(root.paths.output_dir) / f"nee-{strategy}-seed{seed}")
    return cfg


def run_denoising(root: RootConfig, gold: GoldDataConfig, den: DenoisingConfig) -> list[dict]:
    from transformers import AutoTokenizer

    from cofee.data.gazetteer.build import load_gazetteer
    from cofee.data.gazetteer.matcher import GazetteerMatcher
    from cofee.data_modules.gold_ner import splits_from_config
    from cofee.experiments.nee_eval import (
        encode_gold,
        export_predictions,
        gazetteer_predictions,
        map_gold,
        score,
    )
    from cofee.pipeline.curriculum import run_stage

    if den.readme:
        check_marked_block(den.readme, "nee")  # before hours of NEE runs, not after
    esi_dir = Path(root.paths.output_dir) / "esi" / "encoder"
    run_stage(root, "esi")
    exports = {}
    for strategy in den.strategies:
        for seed in den.seeds:
            cfg = _nee_config(root, strategy, seed)
            run_stage(cfg, "nee", init_from=esi_dir)
            exports[(strategy, seed)] = Path(cfg.paths.output_dir) / "nee" / "encoder"

    types = root.data.gazetteer.types
    sentences = map_gold(
        getattr(splits_from_config(gold, "BIO"), den.eval_split), load_mapping(den.mapping), types
    )
    tokenizer = AutoTokenizer.from_pretrained(str(esi_dir), local_files_only=True)
    windows = encode_gold(tokenizer, sentences, types, root.data.anchors.max_length)
    matcher = GazetteerMatcher(load_gazetteer(root.data.gazetteer.gazetteer_dir), root.data.gazetteer.match)
    rows = [
        {
            "system": "gazetteer matching",
            "strategy": None,
            "seed": None,
            **score(gazetteer_predictions(matcher, windows, sentences), windows),
        }
    ]
    for (strategy, seed), export in exports.items():
        predicted = export_predictions(export, windows, tokenizer.pad_token_id)
        rows.append({"system": "NEE", "strategy": strategy, "seed": seed, **score(predicted, windows)})
    atomic_write_json(den.results, {"eval_split": den.eval_split, "sentences": len(sentences), "rows": rows})
    if den.readme:
        replace_marked_block(den.readme, "nee", markdown_table(rows, types, den.eval_split, len(sentences)))
    return rows


def interval(members: list[dict]) -> str:
    """The bootstrap 95% interval of a single run's F1 (over seeds, the std says the spread)."""
    if len(members) != 1:
        return ""
    return " " + interval_text(*members[0]["micro"]["f1_ci95"])


def markdown_table(rows: list[dict], types: list[str], split: str, sentences: int) -> str:
    """One line for the gazetteer, one per NEE strategy (F1 mean ± std over seeds)."""
    head = "| System | Seeds | P | R | F1 (95% CI) | " + " | ".join(f"{t} F1" for t in types) + " |"
    lines = [head, "|" + "---|" * (5 + len(types))]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["system"], row["strategy"]), []).append(row)
    for (system, strategy), members in groups.items():
        name = system if strategy is None else f"{system}, noise={strategy}"

        def cell(get, members=members) -> str:
            values = [get(m) for m in members]
            mean = statistics.fmean(values)
            return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {statistics.stdev(values):.3f}"

        per_type = [cell(lambda m, t=t: m["per_type"].get(t, {}).get("f1", 0.0)) for t in types]
        seeds = ", ".join(str(m["seed"]) for m in members) if strategy else "-"
        lines.append(
            f"| {name} | {seeds} | {cell(lambda m: m['micro']['precision'])} | "
            f"{cell(lambda m: m['micro']['recall'])} | {cell(lambda m: m['micro']['f1'])}{interval(members)} | "
            + " | ".join(per_type)
            + " |"
        )
    gold = rows[0]["gold_spans"]
    lines.append(
        f"\nScored on the gold {split} split ({sentences} sentences, {gold} typed gold spans after the "
        "type mapping of conf/mappings/wnut16_coarse.yaml); strict span match, micro over types; the interval "
        "is a bootstrap over sentences."
    )
    return "\n".join(lines)


def ablation_table(runs: list[tuple[str, dict]]) -> str:
    """One line per (settings, NEE strategy) over several `run_denoising` result files, the gazetteer
    once: which loss settings let NEE beat the gazetteer that labelled its data."""
    lines = ["| NEE loss settings | strategy | P | R | F1 (95% CI) | PER F1 | LOC F1 | ORG F1 | MISC F1 |"]
    lines.append("|" + "---|" * 9)
    seen_gazetteer = False
    for label, result in runs:
        for row in result["rows"]:
            if row["strategy"] is None:
                if seen_gazetteer:
                    continue
                seen_gazetteer, name, strategy = True, "gazetteer matching (the labels' source)", "-"
            else:
                name, strategy = label, f"{row['strategy']} (seed {row['seed']})"
            m, per = row["micro"], row["per_type"]
            lines.append(
                f"| {name} | {strategy} | {m['precision']:.3f} | {m['recall']:.3f} | "
                f"{m['f1']:.3f} {interval_text(*m['f1_ci95'])} | "
                + " | ".join(f"{per.get(t, {}).get('f1', 0.0):.3f}" for t in ("PER", "LOC", "ORG", "MISC"))
                + " |"
            )
    return "\n".join(lines)
