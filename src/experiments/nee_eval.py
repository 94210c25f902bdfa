"""Is NEE better than the gazetteer that labelled its data? Both scored on human-annotated gold NER.

Gold types are mapped onto the gazetteer's coarse types by an editable table
(conf/mappings/wnut16_coarse.yaml); a gold type mapped to ``?`` is "don't care": neither a hit nor a
miss, and a prediction on it is not a false positive (`cofee.models.partial_labels.without_unknown`).
The gazetteer is run with the same matcher settings that labelled the NEE corpus; NEE predicts with
the span head saved in its export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from cofee.data.alignment import AlignmentStats, EncodedWindow, char_spans_to_word_spans, encode_pretokenized
from cofee.data.gold.readers import GoldSentence
from cofee.data.tagging import Span
from cofee.data_modules.batching import WindowCollator
from cofee.models.export import load_export_head, load_exported_encoder
from cofee.models.metrics import bootstrap_f1_interval, span_report
from cofee.models.partial_labels import UNKNOWN_TYPE, extended_labels, without_unknown
from cofee.utils.errors import InputFileError


def map_gold(
    sentences: Sequence[GoldSentence], mapping: Mapping[str, str | None], types: Sequence[str]
) -> list[GoldSentence]:
    """Gold spans in the coarse types; a gold type missing from `mapping` is an error, not a guess."""
    mapped = []
    for sentence in sentences:
        spans = []
        for start, end, kind in sentence.spans:
            if kind not in mapping:
                raise InputFileError(sentence.source or "gold", f"gold type '{kind}' has no coarse mapping")
            target = mapping[kind] or UNKNOWN_TYPE
            spans.append((start, end, target if target in types else UNKNOWN_TYPE))
        mapped.append(GoldSentence(sentence.tokens, spans, sentence.source))
    return mapped


def encode_gold(tokenizer, sentences: Sequence[GoldSentence], types: Sequence[str], max_length: int = 128):
    label2id = {label: i for i, label in enumerate(extended_labels("BIO", types))}
    return encode_pretokenized(
        tokenizer, [s.tokens for s in sentences], [s.spans for s in sentences], "BIO", label2id, max_length
    )


def gazetteer_predictions(matcher, windows: Sequence[EncodedWindow], sentences: Sequence[GoldSentence]):
    """The matcher on each sentence's tokens joined by spaces, as word spans of each window."""
    predicted = []
    for window in windows:
        text = " ".join(sentences[window.sentence_index].tokens)
        chars = [(s, e, t or UNKNOWN_TYPE) for s, e, t in matcher.match(text)]
        spans = char_spans_to_word_spans(window.word_char_spans, chars, AlignmentStats())
        predicted.append([s for s in spans if s[2] != UNKNOWN_TYPE])
    return predicted


@torch.no_grad()
def export_predictions(
    export_dir: str | Path, windows: Sequence[EncodedWindow], pad_id: int, batch_size: int = 64
):
    """Word spans predicted by an export's encoder and span head."""
    encoder, _ = load_exported_encoder(export_dir)
    head = load_export_head(export_dir, encoder.config.hidden_size)
    if head is None:
        raise InputFileError(
            Path(export_dir) / "manifest.json", "this export has no span head to predict with"
        )
    encoder.eval()
    collate = WindowCollator(pad_id)
    predicted: list[list[Span]] = []
    for start in range(0, len(windows), batch_size):
        batch = collate(windows[start : start + batch_size])
        hidden = encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        predicted += head.decode(head(hidden), batch)
    return predicted


def score(predicted: Sequence[Sequence[Span]], windows: Sequence[EncodedWindow], samples: int = 1000) -> dict:
    """Micro and per-type P/R/F1 on typed gold spans, with a bootstrap 95% interval for F1."""
    pred, gold = without_unknown(predicted, [w.spans for w in windows])
    report = span_report(pred, gold)
    report["micro"]["f1_ci95"] = list(bootstrap_f1_interval(pred, gold, samples))
    report["gold_spans"] = sum(len(g) for g in gold)
    return report
