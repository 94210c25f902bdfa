"""What marking unlinked repeats (`data.anchors.build.mark_repeats`) does to ESI: every ESI export
scored on the dev pages of every anchor corpus (the pages are the same: the split is by page id).

Wikipedia links an entity at its first mention only, so the plain corpus calls later mentions O; the
corpus with repeats marks them as entities. Scoring both encoders on both dev sets separates "finds
the entities Wikipedia did not link" from "agrees with Wikipedia's linking habit".

    cofee-report report=esi_repeats   # exports and corpora: esi_exports, esi_corpora (`make esi-repeats`)
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from cofee.data.tagging import label_names
from cofee.data_modules.wiki_anchor import WikiAnchorDataModule
from cofee.experiments.nee_eval import export_predictions
from cofee.models.metrics import bootstrap_f1_interval, interval_text, span_report
from cofee.stages.esi import ENTITY_TYPE


def dev_windows(tokenizer, corpus_dir: str | Path, **split) -> list:
    """The dev windows of an anchor corpus, split and encoded as ESI's data module does (`split`:
    dev_fraction, split_seed, max_length, as in `data.anchors`; the defaults are the config's)."""
    label2id = {label: i for i, label in enumerate(label_names("BIO", [ENTITY_TYPE]))}
    data = WikiAnchorDataModule(tokenizer, label2id, corpus_dir, max_train_sentences=1, **split)
    data.setup()
    return data.val_windows


def cross_table(exports: list[tuple[str, str]], corpora: list[tuple[str, str]], **split) -> str:
    tokenizer = AutoTokenizer.from_pretrained(exports[0][1], local_files_only=True)
    lines = [
        "| ESI trained on | scored on dev of | dev spans | P | R | F1 (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    windows = {name: dev_windows(tokenizer, path, **split) for name, path in corpora}
    for trained, export in exports:
        for scored, _ in corpora:
            gold = [w.spans for w in windows[scored]]
            predicted = export_predictions(export, windows[scored], tokenizer.pad_token_id)
            micro = span_report(predicted, gold)["micro"]
            interval = interval_text(*bootstrap_f1_interval(predicted, gold, 1000))
            lines.append(
                f"| {trained} | {scored} | {sum(map(len, gold)):,} | {micro['precision']:.3f} | "
                f"{micro['recall']:.3f} | {micro['f1']:.3f} {interval} |"
            )
    return "\n".join(lines)
