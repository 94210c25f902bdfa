"""ESI's recipe: a type-agnostic tagger on the Wikipedia anchor corpus, no callbacks of its own."""

from __future__ import annotations

from pathlib import Path

from cofee.config import RootConfig
from cofee.data.alignment import special_tokens
from cofee.data_modules.wiki_anchor import WikiAnchorDataModule
from cofee.pipeline.recipes.registry import StageParts, stage_recipe
from cofee.stages.esi import ENTITY_TYPE, ESIModule


@stage_recipe("esi", data=("anchors",))
def build_esi(cfg: RootConfig, encoder, tokenizer, init_from: Path | None) -> StageParts:
    stage = cfg.stages.esi
    module = ESIModule(
        encoder,
        stage.optim,
        scheme=stage.scheme,
        dropout=stage.dropout,
        span_weight=stage.span_weight,
        span_max_width=stage.span_max_width,
        suffix_len=len(special_tokens(tokenizer)[1]),
    )
    data = cfg.data.anchors
    datamodule = WikiAnchorDataModule(
        tokenizer=tokenizer,
        label2id=module.head.label2id,
        corpus_dir=data.corpus_dir,
        dump=data.dump,
        build=data.build,
        build_workers=data.build_workers,
        scheme=stage.scheme,
        entity_type=ENTITY_TYPE,
        span_kinds=tuple(data.span_kinds),
        max_length=data.max_length,
        batch_size=stage.batch_size,
        eval_batch_size=stage.eval_batch_size,
        dev_fraction=data.dev_fraction,
        split_seed=data.split_seed,
        max_train_sentences=data.max_train_sentences,
        seed=cfg.seed,
        bucket=data.bucket,
        num_workers=data.num_workers,
        cache_dir=data.cache_dir,
        num_proc=data.num_proc,
    )
    return module, datamodule, []
