"""GazetteerDataModule: gazetteer-labelled text as typed (and unknown-type) entity spans for NEE.

`prepare_data` builds what is missing or stale (the anchor corpus, the gazetteer, the labelled
corpus; each is skipped when its inputs are unchanged). `setup` holds out whole pages for dev with the
same rule and seed as ESI (so no dev page of either stage is trained on), encodes typed spans with
their type and every other entity span (an anchor no list types, a type outside `types`) with the
unknown type ``?``; with `esi_export` it also runs the parent's ESI head over the training windows
and marks the spans it finds on O-labelled words as unknown-type entities.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from tqdm.auto import tqdm
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.config import GazetteerDataConfig
from cofee.data.alignment import AlignmentStats, EncodedWindow, encode_sentences
from cofee.data.gazetteer.label import iter_labelled, load_labelled_manifest
from cofee.data.gazetteer.pipeline import prepare_labelled_corpus
from cofee.data.tagging import spans_to_tags
from cofee.data_modules.batching import TrainValWindowLoaders, WindowCollator
from cofee.data_modules.wiki_anchor import is_dev_page
from cofee.models.partial_labels import UNKNOWN_TYPE, extended_labels

log = logging.getLogger(__name__)


class GazetteerDataModule(TrainValWindowLoaders, pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        types: list[str],
        gazetteer: GazetteerDataConfig,
        anchors,
        scheme: str = "BIO",
        esi_export: str | Path | None = None,
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int = 64,
        dev_fraction: float = 0.1,
        split_seed: int = 0,
        max_train_sentences: int | None = None,
        seed: int = 0,
        bucket: bool = True,
        num_workers: int = 0,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.types = list(types)
        self.gazetteer = gazetteer
        self.anchors = anchors  # the `data.anchors` config (corpus folder, dump, build options)
        self.scheme = scheme
        self.esi_export = Path(esi_export) if esi_export else None
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.dev_fraction = dev_fraction
        self.split_seed = split_seed
        self.max_train_sentences = max_train_sentences
        self.seed = seed
        self.bucket = bucket
        self.num_workers = num_workers
        self.label2id = {label: i for i, label in enumerate(extended_labels(scheme, self.types))}
        self.train_windows: list[EncodedWindow] | None = None
        self.val_windows: list[EncodedWindow] | None = None
        self.stats: dict[str, AlignmentStats] = {}
        # per split, each sentence's labelled spans as the corpus has them ([start, end, type, source,
        # fine_type], characters); a window's `sentence_index` indexes its split's list
        self.record_spans: dict[str, list[list[list]]] = {}
        self.esi_marked_spans = 0

    @property
    def labelled_dir(self) -> Path:
        return Path(self.gazetteer.labelled_dir)

    def prepare_data(self) -> None:
        prepare_labelled_corpus(self.anchors, self.gazetteer)

    @property
    def manifest(self) -> dict:
        return load_labelled_manifest(self.labelled_dir)

    def _entity_spans(self, record: dict) -> list[tuple[int, int, str]]:
        return [(s, e, t if t in self.types else UNKNOWN_TYPE) for s, e, t, *_ in record["spans"]]

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return  # idempotent: Lightning may call setup more than once
        # per split: texts, spans as encoded, spans as the corpus has them
        split: dict[str, tuple[list, list, list]] = {"train": ([], [], []), "val": ([], [], [])}
        for line, record in enumerate(iter_labelled(self.labelled_dir)):
            page = record["page_id"] if record.get("page_id") is not None else line  # raw text: per line
            name = "val" if is_dev_page(page, self.dev_fraction, self.split_seed) else "train"
            split[name][0].append(record["text"])
            split[name][1].append(self._entity_spans(record))
            split[name][2].append(record["spans"])
        texts, spans, raw = split["train"]
        if self.max_train_sentences is not None and len(texts) > self.max_train_sentences:
            keep = np.sort(
                np.random.default_rng(self.seed).permutation(len(texts))[: self.max_train_sentences]
            )
            split["train"] = ([texts[i] for i in keep], [spans[i] for i in keep], [raw[i] for i in keep])
        encoded = {}
        for name, (texts, spans, raw) in split.items():
            self.record_spans[name] = raw
            self.stats[name] = AlignmentStats()
            encoded[name] = encode_sentences(
                self.tokenizer, texts, spans, self.scheme, self.label2id, self.max_length, self.stats[name]
            )
            log.info("labelled corpus %s: %s", name, asdict(self.stats[name]))
        self.train_windows, self.val_windows = encoded["train"], encoded["val"]
        if not self.train_windows or not self.val_windows:
            raise ValueError(
                f"{self.labelled_dir}: the split gave {len(self.train_windows)} train and "
                f"{len(self.val_windows)} dev windows; adjust data.anchors.dev_fraction"
            )
        if self.esi_export is not None:
            self.esi_marked_spans = self.mark_esi_spans(self.train_windows)

    def mark_esi_spans(self, windows: list[EncodedWindow]) -> int:
        """Spans the parent's ESI head finds on words labelled O become unknown-type entities."""
        from cofee.models.export import load_export_head, load_exported_encoder

        encoder, _ = load_exported_encoder(self.esi_export)
        head = load_export_head(self.esi_export, encoder.config.hidden_size)
        if head is None:
            log.warning("%s has no span head: only untyped anchors count as unknown-type", self.esi_export)
            return 0
        encoder.eval()
        collate = WindowCollator(self.tokenizer.pad_token_id)
        outside = self.label2id["O"]
        marked = 0
        with torch.no_grad():
            for start in tqdm(range(0, len(windows), self.eval_batch_size), desc="ESI spans", leave=False):
                chunk = windows[start : start + self.eval_batch_size]
                batch = collate(chunk)
                hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                predicted = head.decode(head(hidden.last_hidden_state), batch)
                for window, spans in zip(chunk, predicted):
                    marked += self._mark(window, spans, outside)
        log.info("ESI marked %d spans on O words as unknown-type entities", marked)
        return marked

    def _mark(self, window: EncodedWindow, spans: list, outside: int) -> int:
        free = [
            (s, e)
            for s, e, _ in spans
            if all(window.labels[window.word_positions[w]] == outside for w in range(s, e))
        ]
        if not free:
            return 0
        tags = spans_to_tags([(s, e, UNKNOWN_TYPE) for s, e in free], len(window.word_positions), self.scheme)
        for word, tag in enumerate(tags):
            if tag != "O":
                window.labels[window.word_positions[word]] = self.label2id[tag]
        window.spans = sorted(window.spans + [(s, e, UNKNOWN_TYPE) for s, e in free])
        return len(free)
