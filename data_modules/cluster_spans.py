"""ClusterDataModule: the NEE windows, each entity span with a global span id (stage 3, FET).

After `setup`, every entity span of every training window (typed, unknown-type, and those the parent
head marked) has an id: 0, 1, 2, ... in window order, then span order, so ids are stable for a given
corpus, config and seed, and survive shuffling and DDP sharding. Batches carry `span_ids` (one list
per window, aligned with `spans`); the FET module looks each span's current pseudo-label up by id, so
no dataloader has to be rebuilt when the clusters change (Lightning does not restore the
`reload_dataloaders_every_n_epochs` schedule on resume). Per span id the module keeps the coarse type
and, where the labelled corpus has one, the fine type and the span's source: the reference the
clusters are scored against (`cofee.experiments.fet_eval`), never a training signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch.utils.data import DataLoader

from cofee.data.alignment import EncodedWindow
from cofee.data_modules.batching import window_loader
from cofee.data_modules.gazetteer_labelled import GazetteerDataModule


def span_records(window: EncodedWindow, records: Sequence[Sequence]) -> list[list | None]:
    """For each span of `window`, the labelled-corpus span it was encoded from, or None (a span the
    parent head marked). A corpus span maps onto the words it overlaps (`cofee.data.alignment`); the first
    one, in corpus order, that maps onto exactly a window span's words is that span's record."""
    chars = window.word_char_spans
    found: list[list | None] = []
    for span in window.spans:
        start, end = int(span[0]), int(span[1])
        first_char, last_char = chars[start][0], chars[end - 1][1]
        match = None
        for record in records:
            if record[0] >= last_char or record[1] <= first_char:
                continue
            words = [w for w, (ws, we) in enumerate(chars) if ws < record[1] and we > record[0]]
            if words and words[0] == start and words[-1] + 1 == end:
                match = list(record)
                break
        found.append(match)
    return found


class ClusterDataModule(GazetteerDataModule):
    """`GazetteerDataModule` whose training windows carry global span ids, plus a feature loader."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.span_types: list[str] | None = None  # coarse type per span id ("?": unknown)
        self.span_fine_types: list[str | None] = []  # fine type per span id (None: none known)
        self.span_sources: list[str | None] = []  # anchor | gazetteer | name_pattern | None (marked)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.span_types is None:  # idempotent, like the parent
            self.assign_span_ids()

    def assign_span_ids(self) -> None:
        """One pass over the training windows (streamed from the cache): the span ids are a running
        count (one int64 offset per window, kept by the window view), the types per span id a list."""
        records = self.record_spans["train"]
        windows = self.train_windows
        types: list[str] = []
        counts = np.zeros(len(windows), dtype=np.int64)
        for index, window in enumerate(windows):
            counts[index] = len(window.spans)
            types.extend(str(span[2]) for span in window.spans)
            for record in span_records(window, records[window.sentence_index]):
                self.span_fine_types.append(record[4] if record and len(record) > 4 else None)
                self.span_sources.append(record[3] if record else None)
        windows.span_offsets = np.cumsum(counts) - counts
        self.span_types = types

    @property
    def num_spans(self) -> int:
        return len(self.span_types or ())

    def feature_dataloader(self) -> DataLoader:
        """All training windows, unshuffled and in a fixed order (sharded across DDP ranks)."""
        return window_loader(
            self.train_windows, self.eval_batch_size, False, self.tokenizer.pad_token_id, **self._loading
        )
