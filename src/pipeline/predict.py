"""Tag raw text with an exported token-classification model; spans come back as character offsets.

Words are whitespace-separated chunks by default, each labelled on its first sub-token, as in
training on gold tokens; `words="chars"` takes one word per character (Chinese); `words="tokenizer"`
takes the tokenizer's own pre-tokenized words (punctuation split off), which is how transformers'
token-classification pipeline groups sub-tokens, so that mode reproduces the pipeline. Decoding is `lenient` by default: an
I- tag that follows O opens an entity, as conlleval and transformers' token-classification pipeline
do (so the two give the same spans); `strict` drops such tags, as the evaluation does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

from cofee.data.alignment import encode_pretokenized, encode_sentences
from cofee.data.tagging import parse_tag, tags_to_spans
from cofee.data_modules.batching import WindowCollator
from cofee.models.encoder import load_pretrained
from cofee.utils.errors import ConfigError, InputFileError

_WORD = re.compile(r"\S+")


@dataclass
class PredictedSpan:
    start: int
    end: int
    type: str
    text: str


def word_offsets(text: str, words: str = "whitespace") -> list[tuple[int, int]]:
    if words == "chars":
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]
    return [m.span() for m in _WORD.finditer(text)]


def repair_tags(tags: Sequence[str], scheme: str) -> list[str]:
    """Lenient reading: an inside tag that cannot continue the open entity opens a new one."""
    repaired, open_type = [], None
    for tag in tags:
        parsed = parse_tag(tag, scheme)
        prefix, kind = parsed if parsed else ("O", None)
        if prefix in ("I", "M", "E") and open_type != kind:
            tag = f"B-{kind}" if prefix != "E" or scheme != "BIOES" else f"S-{kind}"
            prefix = tag[0]
        open_type = kind if prefix in ("B", "I", "M") else None
        repaired.append(tag)
    return repaired


class Tagger:
    def __init__(self, folder: str | Path, max_length: int = 128, batch_size: int = 32, device: str = "cpu"):
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError("model", f"'{folder}' does not exist (give an exported model folder)")
        if not (folder / "config.json").is_file():
            raise ConfigError("model", f"'{folder}' is not an exported model folder (no config.json)")
        if (folder / "manifest.json").is_file():  # a stage export: an encoder, no tagging head
            raise ConfigError(
                "model",
                f"'{folder}' is a CoFEE stage export (an encoder without an NER head); fine-tune it first "
                f"(cofee-finetune init_from={folder}) and tag with its model/ folder",
            )
        self.model = load_pretrained(AutoModelForTokenClassification, folder).eval()
        self.model.to(device)
        self.tokenizer = load_pretrained(AutoTokenizer, folder)
        id2label = self.model.config.id2label
        self.labels = [id2label.get(i, "") for i in range(self.model.config.num_labels)]
        bad = [label for label in self.labels if label != "O" and parse_tag(label, "BIOES") is None]
        if "O" not in self.labels or bad:
            raise InputFileError(
                folder / "config.json",
                f"id2label {self.labels[:6]} holds no tagging labels ('O', 'B-TYPE', ...): "
                "not a model exported by cofee-finetune",
            )
        self.scheme = "BIOES" if any(label.startswith(("E-", "S-")) for label in self.labels) else "BIO"
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device

    @torch.no_grad()
    def __call__(
        self, texts: Sequence[str], words: str = "whitespace", strict: bool = False
    ) -> list[list[PredictedSpan]]:
        label2id = {label: i for i, label in enumerate(self.labels)}
        no_spans = [[] for _ in texts]
        if words == "tokenizer":
            windows = encode_sentences(
                self.tokenizer, texts, no_spans, self.scheme, label2id, self.max_length
            )
            offsets = None  # the windows carry character offsets into the text itself
        else:
            offsets = [word_offsets(t, words) for t in texts]
            tokens = [[t[s:e] for s, e in o] for t, o in zip(texts, offsets)]
            windows = encode_pretokenized(
                self.tokenizer, tokens, no_spans, self.scheme, label2id, self.max_length
            )
        collate = WindowCollator(self.tokenizer.pad_token_id)
        results: list[list[PredictedSpan]] = [[] for _ in texts]
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i : i + self.batch_size]
            batch = collate(chunk)
            logits = self.model(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            ).logits
            best = logits.argmax(-1).tolist()
            for window, row in zip(chunk, best):
                tags = [self.labels[row[p]] for p in window.word_positions]
                if not strict:
                    tags = repair_tags(tags, self.scheme)
                text = texts[window.sentence_index]
                chars = (
                    window.word_char_spans
                    if offsets is None
                    else offsets[window.sentence_index][window.word_offset :]
                )
                for s, e, kind in tags_to_spans(tags, self.scheme):
                    start, end = chars[s][0], chars[e - 1][1]
                    results[window.sentence_index].append(PredictedSpan(start, end, kind, text[start:end]))
        return results
