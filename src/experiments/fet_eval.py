"""Do the clusters of stage 3 capture fine types? NMI and purity against the corpus's fine types.

The reference: every entity span whose labelled-corpus record has a fine type (`fine_type`, the 5th
field: the infobox type of a Wikipedia page such as "philosopher" or "spaceflight", or the packaged
lists' kind: "city", "country", "language", ...), in the FET training sample and on the dev pages.
Three sets are scored: all of them, those on dev pages only (never trained on by any stage), and the
anchor spans (Wikipedia links) only. For each encoder (the starting one, and the ESI, NEE and FET
exports of a run) the spans' vectors are pooled as FET pools them (`stages.fet.pooling` from
`stages.fet.feature_layer`) and clustered with FET's k-means settings (same k, same seed); the
random-assignment baseline uses the same k. The clustering figures of the FET run (k, NMI between
refreshes, time per refresh and its share of the epoch) come from the FET export's manifest.

Run: `cofee-report report=fet [pretrain overrides, e.g. run_name=...]` (`make fet-report`). Writes
results/fet_quality.json and the block between the fet markers of docs/results.md.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cofee.clustering import (
    ClusterConfig,
    TooFewSpansError,
    cluster_features,
    cluster_quality,
    extract_span_features,
)
from cofee.data.alignment import EncodedWindow, special_tokens
from cofee.data_modules.batching import window_loader
from cofee.data_modules.cluster_spans import ClusterDataModule, span_records
from cofee.utils.io import atomic_write_json, check_marked_block, replace_marked_block

log = logging.getLogger(__name__)
ENCODERS = ("base", "esi", "nee", "fet")


@dataclasses.dataclass
class FineTypedSpans:
    windows: list[EncodedWindow]  # copies holding only the fine-typed spans, with ids 0..n-1
    fine_types: np.ndarray  # [n] str
    sources: np.ndarray  # [n] str: anchor | gazetteer | name_pattern
    dev: np.ndarray  # [n] bool: on a dev page

    def __len__(self) -> int:
        return int(self.fine_types.shape[0])

    def subsets(self) -> dict[str, np.ndarray]:
        everything = np.ones(len(self), dtype=bool)
        return {"all": everything, "dev": self.dev, "anchors": self.sources == "anchor"}


def _fine_types_and_sources(
    datamodule: ClusterDataModule, window: EncodedWindow, records
) -> tuple[list, list]:
    """Each span's fine type and source (None: none): a training window's from the data module's
    columns, by span id; a dev window's matched against its sentence's corpus spans."""
    if window.span_ids is not None:
        return (
            [datamodule.span_fine_types[i] for i in window.span_ids],
            [datamodule.span_sources[i] for i in window.span_ids],
        )
    found = span_records(window, records[window.sentence_index])
    return [r[4] if r and len(r) > 4 else None for r in found], [r[3] if r else None for r in found]


def fine_typed_spans(datamodule: ClusterDataModule) -> FineTypedSpans:
    """The spans with a fine type of the train and dev windows (after `setup`)."""
    windows, fine, sources, dev = [], [], [], []
    for split, split_windows in (("train", datamodule.train_windows), ("val", datamodule.val_windows)):
        records = datamodule.record_spans[split]
        for window in split_windows:
            fine_types, span_sources = _fine_types_and_sources(datamodule, window, records)
            kept = [t for t in zip(window.spans, fine_types, span_sources) if t[1] is not None]
            if not kept:
                continue
            first = len(fine)
            windows.append(
                dataclasses.replace(
                    window, spans=[s for s, _, _ in kept], span_ids=list(range(first, first + len(kept)))
                )
            )
            fine += [f for _, f, _ in kept]
            sources += [s for _, _, s in kept]
            dev += [split == "val"] * len(kept)
    return FineTypedSpans(
        windows, np.asarray(fine, dtype=str), np.asarray(sources, dtype=str), np.asarray(dev)
    )


def score_encoder(
    encoder,
    spans: FineTypedSpans,
    cluster: ClusterConfig,
    pooling: str,
    layer: int,
    pad_id: int,
    suffix_len: int,
    batch_size: int = 64,
    n_seeds: int = 5,
) -> dict:
    """NMI / purity (and the random baseline) of k-means over one encoder's vectors, per subset:
    the mean and standard deviation over `n_seeds` k-means seeds (seed, seed + 1, ...)."""
    started = time.perf_counter()
    loader = window_loader(spans.windows, batch_size, False, pad_id)
    features = extract_span_features(encoder, loader, pooling, layer, progress=False, suffix_len=suffix_len)
    order = np.argsort(features.span_ids)
    x, ids = np.asarray(features.features)[order], features.span_ids[order]
    scores = {"extract_seconds": round(time.perf_counter() - started, 2)}
    for name, mask in spans.subsets().items():
        rows = np.nonzero(mask[ids])[0]
        runs = []
        try:
            for seed in range(cluster.seed, cluster.seed + n_seeds):
                result = cluster_features(x[rows], dataclasses.replace(cluster, seed=seed), epoch=0)
                runs.append(cluster_quality(result.assignments, spans.fine_types[ids[rows]], cluster.k, seed))
        except TooFewSpansError as exc:
            log.warning("fet report: %s spans: %s", name, exc)
            scores[name] = None
            continue
        scores[name] = {}
        for key in runs[0]:
            values = np.array([run[key] for run in runs])
            scores[name][key] = round(float(values.mean()), 4)
            scores[name][f"{key}_std"] = round(float(values.std()), 4)
    return scores


def clustering_summary(fet_manifest: dict | None) -> dict | None:
    """The FET run's clustering figures from its export manifest."""
    if not fet_manifest or "clustering" not in fet_manifest:
        return None
    clustering = fet_manifest["clustering"]
    history = clustering["history"]
    refreshes = [h for h in history if h["kind"] == "refresh"]
    initial = next((h for h in history if h["kind"] == "initial"), None)
    return {
        "k": clustering["k"],
        "spans": history[0]["spans"] if history else None,
        "features": clustering.get("features"),
        "initial_seconds": initial["seconds"] if initial else None,
        "initial_extract_seconds": initial.get("extract_seconds") if initial else None,
        "nmi_between_refreshes": [h["nmi_prev"] for h in refreshes],
        "seconds_per_refresh": [h["seconds"] for h in refreshes],
        "refresh_share_of_epoch": [h["share"] for h in refreshes],
        "fine_nmi_of_pseudo_labels": [h.get("fine_nmi") for h in history],
        "epochs": (fet_manifest.get("config", {}).get("stage") or {}).get("max_epochs"),
    }


def _fmt(values: Sequence, pattern: str = "{:.3f}") -> str:
    return ", ".join(pattern.format(v) for v in values if v is not None) or "-"


def _pm(scores: dict, key: str) -> str:
    return f"{scores[key]:.3f} ± {scores[key + '_std']:.3f}"


def readme_block(report: dict) -> str:
    lines = []
    c = report.get("clustering")
    if c:
        shares = [s for s in c["refresh_share_of_epoch"] if s is not None]
        lines += [
            f"Stage 3 (run `{report['run_name']}`, {c['epochs']} epochs, default settings): k-means with "
            f"k={c['k']} over the {c['spans']} entity spans of the training windows; the first labels come "
            f"from an extraction pass at train start, each refresh (after every epoch but the last) "
            f"clusters {'the vectors the epoch recorded' if c['features'] == 'recorded' else 'an extraction pass'} "
            f"(`refresh_features: {c['features']}`).",
            "",
            "| clustering | value |",
            "|---|---|",
            f"| k | {c['k']} |",
            f"| initial clustering (extraction pass + k-means) | {c['initial_seconds']:.1f} s "
            f"({c['initial_extract_seconds']:.1f} s extraction) |",
            f"| NMI with the previous assignment, per refresh | {_fmt(c['nmi_between_refreshes'])} |",
            f"| seconds per refresh | {_fmt(c['seconds_per_refresh'], '{:.2f}')} |",
            f"| refresh share of the epoch | {_fmt([100 * s for s in shares], '{:.2f}%')} |",
            f"| pseudo-labels vs fine types (NMI), initial then per refresh | "
            f"{_fmt(c['fine_nmi_of_pseudo_labels'])} |",
            "",
        ]
    q = report["quality"]
    counts = report["spans"]
    common = sorted(counts["by_fine_type"].items(), key=lambda kv: -kv[1])[:6]
    lines += [
        f"Fine-typing quality: the spans whose corpus record has a fine type ({counts['fine_types']} types: "
        f"Wikipedia infobox types such as philosopher or deity, and the packaged lists' kinds; most "
        f"frequent: {', '.join(f'{name} {n}' for name, n in common)}), clustered with FET's k-means "
        f"(k={report['k']}, {report['pooling']} pooling of layer {report['layer']}) and scored against "
        f"those types; mean ± sd over {report['n_seeds']} k-means seeds. Encoders: `base` the starting "
        "MiniLM, then the run's exports; before stage 3 is `nee`, after it `fet`. Random: the same spans "
        "assigned uniformly at random to k clusters.",
        "",
        "| spans | n | encoder | NMI | purity | random NMI | random purity |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {"all": "train sample + dev", "dev": "dev pages only", "anchors": "Wikipedia anchors only"}
    for subset, label in labels.items():
        for encoder in report["encoders"]:
            s = q[encoder][subset]
            if s is None:
                lines.append(f"| {label} | {counts[subset]} | {encoder} | too few spans for k | | | |")
                continue
            lines.append(
                f"| {label} | {counts[subset]} | {encoder} | {_pm(s, 'nmi')} | {_pm(s, 'purity')} | "
                f"{s['random_nmi']:.3f} | {s['random_purity']:.3f} |"
            )
    return "\n".join(lines)


def run_exports(output_dir: Path) -> dict[str, Path]:
    """The run's ESI, NEE and FET exports; a stage missing from the run folder is found through the
    `parent_path` of the stage after it (a FET run started from another run's NEE export)."""
    from cofee.models.export import MANIFEST, parent_export, read_export_manifest

    exports = {
        n: output_dir / n / "encoder"
        for n in ENCODERS[1:]
        if (output_dir / n / "encoder" / MANIFEST).is_file()
    }
    latest = next((n for n in reversed(ENCODERS[1:]) if n in exports), None)
    parent = parent_export(exports[latest], read_export_manifest(exports[latest])) if latest else None
    while parent:
        manifest = read_export_manifest(parent)
        exports.setdefault(manifest.get("stage"), parent)
        parent = parent_export(parent, manifest)
    return {n: exports[n] for n in ENCODERS[1:] if n in exports}


def run(
    cfg,
    results: str | Path = "results/fet_quality.json",
    readme: str | Path | None = "docs/results.md",
    n_seeds: int = 5,
) -> dict:
    """Score every encoder of the run that exists; write the JSON and the Markdown block (`readme`)."""
    from cofee.models.encoder import load_encoder, load_tokenizer
    from cofee.models.export import load_exported_encoder, read_export_manifest
    from cofee.pipeline.recipes.gazetteer import gazetteer_data_module

    if readme is not None:
        check_marked_block(readme, "fet")  # before the scoring passes, not after
    stage = cfg.stages.fet
    tokenizer = load_tokenizer(cfg.model)
    datamodule = gazetteer_data_module(ClusterDataModule, cfg, stage, tokenizer, None)
    datamodule.setup("fit")
    spans = fine_typed_spans(datamodule)
    cluster = ClusterConfig.from_stage(stage.cluster, cfg.seed)
    out = Path(cfg.paths.output_dir)
    exports = run_exports(out)
    report = {
        "run_name": cfg.run_name,
        "k": cluster.k,
        "seed": cluster.seed,
        "pooling": stage.pooling,
        "layer": stage.feature_layer,
        "n_seeds": n_seeds,
        "spans": {
            **{name: int(mask.sum()) for name, mask in spans.subsets().items()},
            "fine_types": int(np.unique(spans.fine_types).size),
            "by_fine_type": dict(zip(*(x.tolist() for x in np.unique(spans.fine_types, return_counts=True)))),
        },
        "encoders": [],
        "quality": {},
        "exports": {name: str(path) for name, path in exports.items()},
    }
    suffix = len(special_tokens(tokenizer)[1])
    for name in ENCODERS:
        if name == "base":
            encoder = load_encoder(cfg.model, vocab_size=len(tokenizer))
        elif name in exports:
            encoder, _ = load_exported_encoder(exports[name])
        else:
            continue
        log.info("fet report: scoring the %s encoder on %d spans", name, len(spans))
        report["quality"][name] = score_encoder(
            encoder,
            spans,
            cluster,
            stage.pooling,
            stage.feature_layer,
            tokenizer.pad_token_id,
            suffix,
            n_seeds=n_seeds,
        )
        report["encoders"].append(name)
    fet_manifest = read_export_manifest(exports["fet"]) if "fet" in exports else None
    report["clustering"] = clustering_summary(fet_manifest)
    atomic_write_json(Path(results), report)
    if readme is not None:
        replace_marked_block(readme, "fet", readme_block(report))
    return report
