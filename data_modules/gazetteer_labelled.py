"""GazetteerDataModule: gazetteer-labelled text as typed (and unknown-type) entity spans for NEE.

`prepare_data` builds what is missing or stale (the anchor corpus, the gazetteer, the labelled
corpus; each is skipped when its inputs are unchanged). `setup` holds out whole pages for dev with the
same rule and seed as ESI (so no dev page of either stage is trained on), encodes typed spans with
their type and every other entity span (an anchor no list types, a type outside `types`) with the
unknown type ``?``; with `esi_export` it also runs the parent's ESI head over the training windows
and marks the spans it finds on O-labelled words as unknown-type entities.

The windows come from the token cache (`cofee.data_modules.token_cache`, built once, memory-mapped).
The parent-head pass is a built artifact too: `<cache>/parent_spans/<key>/` (the labels and spans of
the windows it changed, in parts of a fixed number of batches, each written whole as it is done, and
a manifest, written last, with the parts, the parent export's manifest hash and the cache key;
`cofee.data_modules.parent_spans`), computed once per parent export and training sample (sharded
across DDP ranks: each rank computes its parts, rank 0 writes the manifest after a barrier), reused
on resume, and finished rather than restarted after a killed build (the whole parts are kept).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from pathlib import Path

import pytorch_lightning as pl
import torch
from filelock import FileLock
from tqdm.auto import tqdm
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from cofee.config import GazetteerDataConfig
from cofee.data.alignment import AlignmentStats, EncodedWindow
from cofee.data.gazetteer.label import _check_record as check_labelled_record
from cofee.data.gazetteer.label import load_labelled_manifest
from cofee.data.gazetteer.pipeline import prepare_labelled_corpus
from cofee.data.tagging import spans_to_tags
from cofee.data_modules.batching import TrainValWindowLoaders, WindowCollator, _world
from cofee.data_modules.parent_spans import (
    PARENT_SCHEMA,
    complete,
    finish,
    missing_parts,
    open_parent_spans,
    plan_parts,
    write_part,
)
from cofee.data_modules.token_cache import (
    CachedWindows,
    SentenceSpans,
    ensure_token_cache,
    load_cache_manifest,
    windowing_settings,
)
from cofee.data_modules.wiki_anchor import data_manifest_entry, open_splits
from cofee.models.partial_labels import UNKNOWN_TYPE, extended_labels
from cofee.utils.io import read_json, stable_hash

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
        sample_key: str = "max_train_sentences",
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
        self.sample_key = sample_key
        self.train_windows: CachedWindows | None = None
        self.val_windows: CachedWindows | None = None
        self.stats: dict[str, AlignmentStats] = {}
        # per split, each sentence's labelled spans as the corpus has them ([start, end, type, source,
        # fine_type], characters); a window's `sentence_index` indexes its split's sequence
        self.record_spans: dict[str, SentenceSpans] = {}
        self.esi_marked_spans = 0
        self.cache: Path | None = None  # the token cache folder, after `setup`
        self.sampling: dict | None = None
        self.parent_spans: dict | None = None  # the parent-span artifact's manifest, when one is used

    @property
    def labelled_dir(self) -> Path:
        return Path(self.gazetteer.labelled_dir)

    def prepare_data(self) -> None:
        prepare_labelled_corpus(self.anchors, self.gazetteer)
        self.ensure_cache()

    @property
    def manifest(self) -> dict:
        return load_labelled_manifest(self.labelled_dir)

    @property
    def cache_dir(self) -> Path:
        found = getattr(self.anchors, "cache_dir", None)
        return Path(found) if found else self.labelled_dir.parent / "token_cache"

    def cache_settings(self) -> dict:
        return {
            **windowing_settings(self),
            "mapping": {"kind": "labelled", "types": list(self.types), "unknown": UNKNOWN_TYPE},
            "keep_raw": True,
        }

    cache_progress = False  # progress bars while the token cache builds: cofee-build-cache turns them on

    def ensure_cache(self) -> Path:
        """The token cache of this corpus, tokenizer and windowing (built by the first process to ask)."""
        return ensure_token_cache(
            self.cache_dir,
            self.labelled_dir,
            self.manifest,
            check_labelled_record,
            self.tokenizer,
            self.cache_settings(),
            int(getattr(self.anchors, "num_proc", 1)),
            progress=self.cache_progress,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return  # idempotent: Lightning may call setup more than once
        self.cache = self.ensure_cache()
        train, val, self.sampling = open_splits(
            self.cache, self.max_train_sentences, self.seed, self.sample_key
        )
        for name, windows in (("train", train), ("val", val)):
            self.record_spans[name] = SentenceSpans(self.cache / f"{name}-sentences")
            self.stats[name] = windows.stats()
            log.info("labelled corpus %s: %s", name, asdict(self.stats[name]))
        if not len(train) or not len(val):
            raise ValueError(
                f"{self.labelled_dir}: the split gave {len(train)} train and "
                f"{len(val)} dev windows; adjust data.anchors.dev_fraction"
            )
        if self.esi_export is not None:
            self.esi_marked_spans = self.attach_parent_spans(train)
        self.train_windows, self.val_windows = train, val

    def manifest_entry(self) -> dict:
        """What the stage manifest records of this data: the sample, the token cache, parent spans."""
        entry = data_manifest_entry(self.cache, self.sampling)
        if self.parent_spans is not None:
            entry["parent_spans"] = self.parent_spans
        return entry

    # -- the parent-head pass, a built artifact ---------------------------------------------------
    def attach_parent_spans(self, windows: CachedWindows) -> int:
        """Marks the parent head's spans on O words (`mark_esi_spans`), from the artifact of this
        parent export, cache and sample: built first when missing (each rank its share of the
        batches), then read by every rank. Returns the number of spans marked."""
        from cofee.models.export import manifest_hash, read_export_manifest

        rows = windows.rows
        inputs = {
            "parent": manifest_hash(read_export_manifest(self.esi_export)),
            "parent_path": str(self.esi_export),
            "cache": load_cache_manifest(self.cache)["key"],
            "rows": "all" if rows is None else hashlib.sha256(rows.tobytes()).hexdigest()[:16],
            "batch_size": self.eval_batch_size,  # the batches the head saw
        }
        key = stable_hash({k: v for k, v in inputs.items() if k != "parent_path"})
        root = self.cache / "parent_spans"
        folder = root / key
        if not complete(folder):
            rank, world = _world()
            if world > 1:
                self._build_parent_spans(windows, folder, inputs, rank, world)
            else:
                root.mkdir(parents=True, exist_ok=True)
                with FileLock(str(root / f".{key}.lock")):
                    if not complete(folder):
                        self._build_parent_spans(windows, folder, inputs, 0, 1)
        manifest = read_json(folder / "manifest.json")
        if manifest.get("marked") is None:
            log.warning("%s has no span head: only untyped anchors count as unknown-type", self.esi_export)
            return 0
        windows.parent = open_parent_spans(folder)
        self.parent_spans = {"key": key, "parent": inputs["parent"], "marked": manifest["marked"]}
        log.info("ESI marked %d spans on O words as unknown-type entities (%s)", manifest["marked"], folder)
        return int(manifest["marked"])

    def _build_parent_spans(
        self, windows: CachedWindows, folder: Path, inputs: dict, rank: int, world: int
    ) -> None:
        """Each rank computes its parts (part j: rank j % world) that a killed build did not leave
        whole, writing each as it is done; rank 0 writes the manifest once every rank is through."""
        barrier = torch.distributed.barrier if world > 1 else (lambda: None)
        if rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
        barrier()
        parts = plan_parts(len(windows), self.eval_batch_size)
        mine = missing_parts(folder, parts[rank::world])
        has_head = self.mark_esi_spans(windows, mine, folder)
        barrier()
        if rank == 0:
            finish(folder, parts, {**inputs, "ranks": world}, has_head)
        barrier()

    def mark_esi_spans(self, windows, parts: list[tuple[int, int]], folder: Path) -> bool:
        """Runs the parent's head over the windows of `parts` (batches of `eval_batch_size` windows
        from each part's first, so the batches are those of one process) and writes each part
        (`write_part`): for each window where the head found spans on words labelled O, the row,
        new labels and spans (`marked`: how many spans it added). False: the export has no span
        head (nothing written)."""
        from cofee.models.export import load_export_head, load_exported_encoder

        encoder, _ = load_exported_encoder(self.esi_export)
        head = load_export_head(self.esi_export, encoder.config.hidden_size)
        if head is None:
            return False
        encoder.eval()
        collate = WindowCollator(self.tokenizer.pad_token_id)
        outside = self.label2id["O"]
        with torch.no_grad():
            for first, stop in tqdm(parts, desc="ESI spans", leave=False):
                out: dict[str, list] = {k: [] for k in PARENT_SCHEMA.names}
                for start in range(first, stop, self.eval_batch_size):
                    indices = list(range(start, min(start + self.eval_batch_size, stop)))
                    chunk = [_plain(w) for w in windows.__getitems__(indices)]
                    batch = collate(chunk)
                    hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                    predicted = head.decode(head(hidden.last_hidden_state), batch)
                    for index, window, spans in zip(indices, chunk, predicted):
                        marked = self._mark(window, spans, outside)
                        if not marked:
                            continue
                        out["row"].append(windows.row(index) if hasattr(windows, "row") else index)
                        out["labels"].append(list(window.labels))
                        out["span_starts"].append([int(s[0]) for s in window.spans])
                        out["span_ends"].append([int(s[1]) for s in window.spans])
                        out["span_types"].append([str(s[2]) for s in window.spans])
                        out["marked"].append(marked)
                write_part(folder, (first, stop), out)
        return True

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


def _plain(window: EncodedWindow) -> EncodedWindow:
    """A copy that writes nowhere (a cached window records assignments in its view's overlay)."""
    return EncodedWindow(
        input_ids=list(window.input_ids),
        labels=list(window.labels),
        word_positions=list(window.word_positions),
        word_char_spans=list(window.word_char_spans),
        spans=list(window.spans),
        sentence_index=window.sentence_index,
        word_offset=window.word_offset,
    )
