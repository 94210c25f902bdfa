"""Data-module setup at scale: the token cache (memory-mapped Arrow) against the corpus size, and the
share of an ESI step spent waiting for data.

- Peak RSS of one rank's `WikiAnchorDataModule.setup` (the whole corpus: `max_train_sentences=None`,
  so nothing is sampled away) on a built cache, at SCALE x the sample corpus against 1x (the sample's
  sentences repeated under new page ids; the synthetic corpus and its cache are removed afterwards).
  Each setup runs in its own process (`ru_maxrss` is the peak of that process).
- Seconds of a second setup on the built cache at SCALE x (target: under 5 s).
- Data wait: the share of ESI training step time (MiniLM, batch 16) between the end of one batch and
  the start of the next (the loader's fetch and collation from the cache), target under 5%.
- FET's `ClusterDataModule` (the gazetteer-labelled sample corpus, repeated the same way): peak RSS
  of a setup on a built token cache and span-column artifact at SCALE x against 1x (target 1.5x), and
  the seconds of that second setup at SCALE x (target under 5 s). The first setup builds the cache
  and computes the span columns (one pass over the windows); a second one only opens them.
- `formats`: the library comparison in docs/scaling.md: the same windows written by `datasets`
  (Arrow) and by litdata (`optimize`), build seconds, size, open seconds, random-batch reads/s
  (litdata runs only where it is installed).

Run: python -m benchmarks.bench_data_setup [scale]   (writes benchmarks/results/data_setup_*.json)
     python -m benchmarks.bench_data_setup fet [scale]   (FET's data module only: data_setup_fet_*.json)
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import WORK, figure, write_results

SCALE = int(os.environ.get("COFEE_BENCH_DATA_SCALE", "100"))  # ~9 min on 2 shared cores; 20 for a quick look
WAIT_STEPS = 30
FET_TYPES = ["PER", "LOC", "ORG", "MISC"]


def sample_corpus() -> Path:
    from cofee.config import AnchorBuildConfig
    from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path

    corpus = WORK / "anchors"
    build_anchor_corpus(default_dump_path(), corpus, AnchorBuildConfig(), num_workers=1, progress=False)
    return corpus


def labelled_sample() -> Path:
    """The gazetteer-labelled corpus of the sample (NEE's and FET's data), built when missing."""
    from cofee.config import AnchorDataConfig, GazetteerDataConfig
    from cofee.data.gazetteer.pipeline import prepare_labelled_corpus

    anchors = AnchorDataConfig(
        corpus_dir=str(sample_corpus()), build_workers=1, cache_dir=str(WORK / "token_cache")
    )
    gazetteer = GazetteerDataConfig(
        gazetteer_dir=str(WORK / "gazetteer"), labelled_dir=str(WORK / "labelled")
    )
    prepare_labelled_corpus(anchors, gazetteer)
    return Path(gazetteer.labelled_dir)


def _corpus_lines(folder: Path, manifest: dict) -> list[str]:
    lines = []
    for shard in manifest["shards"]:
        with open(folder / shard["file"], encoding="utf-8") as handle:
            lines += [line for line in handle if line.strip()]
    return lines


def synthesize(source: Path, target: Path, factor: int) -> Path:
    """`factor` copies of a sample corpus (anchor or labelled: sharded JSONL with a manifest), each under
    new page ids, as a corpus folder of the same format."""
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    records = _corpus_lines(source, manifest)
    pages = [json.loads(r)["page_id"] for r in records]
    step = max(pages) + 1
    shards = []
    for copy in range(factor):
        name = f"shard-{copy:05d}.jsonl"
        with open(target / name, "w", encoding="utf-8") as handle:
            for line, page in zip(records, pages):
                record = json.loads(line)
                record["page_id"] = page + copy * step
                handle.write(json.dumps(record) + "\n")
        shards.append({"file": name, "sentences": len(records)})
    synthetic = {
        **manifest,
        "shards": shards,
        "synthetic": {"factor": factor, "of": manifest.get("build_hash")},
    }
    counts = dict(synthetic.get("counts") or {})
    for key, value in list(counts.items()):
        if isinstance(value, int):
            counts[key] = value * factor
    synthetic["counts"] = counts
    (target / "manifest.json").write_text(json.dumps(synthetic), encoding="utf-8")
    return target


def child_setup(corpus: str, cache: str, num_proc: str) -> None:
    """One rank's setup in a fresh process: seconds and peak RSS, as one JSON line."""
    from cofee.config import EncoderConfig
    from cofee.data.tagging import label_names
    from cofee.data_modules.wiki_anchor import WikiAnchorDataModule
    from cofee.models.encoder import load_tokenizer

    tokenizer = load_tokenizer(EncoderConfig())
    label2id = {name: i for i, name in enumerate(label_names("BIO", ["ENT"]))}
    _, _, report = _timed_setup(
        lambda: WikiAnchorDataModule(
            tokenizer, label2id, corpus, cache_dir=cache, max_train_sentences=None, num_proc=int(num_proc)
        )
    )
    print(json.dumps(report))


def _timed_setup(make_datamodule) -> tuple:
    """Build and set up a data module in this process, then read one batch (reading works): the
    module, the batch and the report every child prints (seconds, peak RSS, windows, batch shape)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    dm = make_datamodule()
    dm.setup("fit")
    seconds = time.perf_counter() - started
    batch = next(iter(dm.train_dataloader()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {
        "seconds": seconds,
        "rss_mib": peak / 1024,
        "rss_before_mib": before / 1024,
        "windows": len(dm.train_windows) + len(dm.val_windows),
        "batch": list(batch["input_ids"].shape),
    }
    return dm, batch, report


def child_fet_setup(corpus: str, cache: str, num_proc: str) -> None:
    """One rank's setup of FET's data module in a fresh process: seconds and peak RSS, as one line."""
    from cofee.config import AnchorDataConfig, EncoderConfig, GazetteerDataConfig
    from cofee.data_modules.cluster_spans import ClusterDataModule
    from cofee.models.encoder import load_tokenizer

    tokenizer = load_tokenizer(EncoderConfig())
    dm, batch, report = _timed_setup(
        lambda: ClusterDataModule(
            tokenizer,
            FET_TYPES,
            GazetteerDataConfig(labelled_dir=corpus),
            AnchorDataConfig(cache_dir=cache, num_proc=int(num_proc)),
            max_train_sentences=None,
        )
    )
    last = dm.num_spans - 1
    report |= {
        "spans": dm.num_spans,
        "last_span": [dm.span_types[last], dm.span_fine_types[last], dm.span_sources[last]],
        "span_columns_seconds": dm.span_columns.manifest["seconds"],
        "batch_span_ids": sum(len(ids) for ids in batch["span_ids"]),  # span ids included
    }
    print(json.dumps(report))


def measure_setup(corpus: Path, cache: Path, num_proc: int = 2, child: str = "child") -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench_data_setup",
            child,
            str(corpus),
            str(cache),
            str(num_proc),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def data_wait(corpus: Path, cache: Path) -> dict:
    """Share of ESI step time spent between batches (waiting for the loader), streamed from the cache."""
    import pytorch_lightning as pl
    import torch

    from cofee.config import EncoderConfig, OptimConfig
    from cofee.data_modules.wiki_anchor import WikiAnchorDataModule
    from cofee.models.encoder import load_encoder, load_tokenizer
    from cofee.stages.esi import ESIModule

    class Timer(pl.Callback):
        def __init__(self):
            self.wait, self.total, self.last, self.started = 0.0, 0.0, None, None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            now = time.perf_counter()
            if batch_idx >= 2 and self.last is not None:
                self.wait += now - self.last
            if batch_idx == 2:
                self.started = now

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.last = time.perf_counter()
            if self.started is not None:
                self.total = self.last - self.started

    torch.manual_seed(0)
    model_cfg = EncoderConfig()
    tokenizer = load_tokenizer(model_cfg)
    module = ESIModule(load_encoder(model_cfg), OptimConfig(lr=1e-5, warmup_ratio=0.0))
    dm = WikiAnchorDataModule(
        tokenizer, module.head.label2id, corpus, cache_dir=cache, max_train_sentences=None
    )
    timer = Timer()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=WAIT_STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=dm)
    return {"wait_s": timer.wait, "step_s": timer.total, "share": timer.wait / timer.total}


def compare_formats(corpus: Path, root: Path) -> dict:
    """The same windows through `datasets` (Arrow, memory-mapped) and litdata (`optimize` chunks)."""
    import random

    import pyarrow.compute as pc
    from datasets import Dataset

    from cofee.config import EncoderConfig
    from cofee.data.alignment import encode_sentences
    from cofee.data.tagging import label_names
    from cofee.data.wiki.build_anchors import iter_corpus
    from cofee.models.encoder import load_tokenizer

    tokenizer = load_tokenizer(EncoderConfig())
    label2id = {name: i for i, name in enumerate(label_names("BIO", ["ENT"]))}
    records = list(iter_corpus(corpus))
    texts = [r["text"] for r in records]
    spans = [[(s, e, "ENT") for s, e, *_ in r["spans"]] for r in records]
    started = time.perf_counter()
    windows = encode_sentences(tokenizer, texts, spans, "BIO", label2id, 128)
    encode_s = time.perf_counter() - started
    rows = [
        {"input_ids": w.input_ids, "labels": w.labels, "word_positions": w.word_positions} for w in windows
    ]
    rng = random.Random(0)
    batches = [[rng.randrange(len(rows)) for _ in range(16)] for _ in range(300)]
    out: dict = {"windows": len(rows), "encode_seconds": round(encode_s, 2)}

    def size(path: Path) -> float:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20

    # datasets / Arrow
    folder = root / "arrow"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    Dataset.from_list(rows).save_to_disk(str(folder))
    build = time.perf_counter() - started
    started = time.perf_counter()
    table = Dataset.load_from_disk(str(folder)).data.table
    lengths = pc.list_value_length(table.column("input_ids")).to_numpy()  # offsets only: for the sampler
    open_s = time.perf_counter() - started
    started = time.perf_counter()
    for batch in batches:
        table.take(batch).to_pylist()
    reads = len(batches) / (time.perf_counter() - started)
    out["datasets"] = {"build_s": round(build, 2), "mib": round(size(folder), 1), "open_s": round(open_s, 3),
                       "batches_per_s": round(reads, 1), "random_access": True, "version": _version("datasets")}  # fmt: skip
    del lengths
    # litdata
    try:
        import litdata
    except ImportError:
        out["litdata"] = {"skipped": "litdata is not installed"}
        return out
    folder = root / "litdata"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    litdata.optimize(fn=_identity, inputs=rows, output_dir=str(folder), chunk_bytes="16MB", num_workers=1)
    build = time.perf_counter() - started
    started = time.perf_counter()
    dataset = litdata.StreamingDataset(str(folder))
    open_s = time.perf_counter() - started
    started = time.perf_counter()
    for batch in batches:
        [dataset[i] for i in batch]
    reads = len(batches) / (time.perf_counter() - started)
    out["litdata"] = {"build_s": round(build, 2), "mib": round(size(folder), 1), "open_s": round(open_s, 3),
                      "batches_per_s": round(reads, 1), "random_access": True, "version": litdata.__version__}  # fmt: skip
    return out


def _identity(row):
    return row


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def run(scale: int = SCALE) -> dict:
    sample = sample_corpus()
    work = WORK / "data_setup"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        one = synthesize(sample, work / "x1", 1)
        big = synthesize(sample, work / f"x{scale}", scale)
        results = {}
        for name, corpus in (("x1", one), (f"x{scale}", big)):
            cache = work / f"cache-{name}"
            results[name] = {"build": measure_setup(corpus, cache), "reuse": measure_setup(corpus, cache)}
            print(name, results[name], flush=True)
        wait = data_wait(one, work / "cache-x1")
        formats = compare_formats(sample, work / "formats")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = results["x1"], results[f"x{scale}"]
    note = f"{large['reuse']['windows']} windows at {scale}x, {small['reuse']['windows']} at 1x"
    figures = {
        "data_setup_rss": figure(
            f"setup_peak_rss_{scale}x_vs_1x",
            large["reuse"]["rss_mib"],
            "MiB",
            small["reuse"]["rss_mib"],
            1.5,
            f"peak RSS of one rank's setup on a built cache, whole corpus; {note}",
            lower_is_better=True,
        ),
        "data_setup_seconds": figure(
            f"second_setup_seconds_{scale}x",
            large["reuse"]["seconds"],
            "s",
            5.0,
            1.0,
            f"setup on a built cache against the 5 s target; {note}; first setup (build): "
            f"{large['build']['seconds']:.1f} s",
            lower_is_better=True,
        ),
        "data_setup_wait": figure(
            "esi_data_wait_share",
            wait["share"],
            "share of step time",
            0.05,
            1.0,
            f"MiniLM, batch 16, {WAIT_STEPS} steps from the cache (1x); against the 5% target",
            lower_is_better=True,
        ),
    }
    extra = {"scale": scale, "setups": results, "data_wait": wait, "formats": formats}
    for name, fig in figures.items():
        write_results(name, [fig], **extra)
    fet = run_fet(scale)
    return {"figures": list(figures.values()) + fet["figures"], **extra, "fet": fet}


def run_fet(scale: int = SCALE) -> dict:
    """FET's data module at 1x and `scale` x the labelled sample: a first setup (token cache and span
    columns built) and a second one (both opened), each in its own process."""
    sample = labelled_sample()
    work = WORK / "data_setup_fet"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        results = {}
        for name, factor in (("x1", 1), (f"x{scale}", scale)):
            corpus = synthesize(sample, work / name, factor)
            cache = work / f"cache-{name}"
            build = measure_setup(corpus, cache, child="child-fet")
            results[name] = {"build": build, "reuse": measure_setup(corpus, cache, child="child-fet")}
            print("fet", name, results[name], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = results["x1"], results[f"x{scale}"]
    note = (
        f"{large['reuse']['spans']} spans in {large['reuse']['windows']} windows at {scale}x, "
        f"{small['reuse']['spans']} in {small['reuse']['windows']} at 1x"
    )
    figures = {
        "data_setup_fet_rss": figure(
            f"fet_setup_peak_rss_{scale}x_vs_1x",
            large["reuse"]["rss_mib"],
            "MiB",
            small["reuse"]["rss_mib"],
            1.5,
            f"peak RSS of one rank's ClusterDataModule setup on a built token cache and span-column "
            f"artifact, whole corpus; {note}",
            lower_is_better=True,
        ),
        "data_setup_fet_seconds": figure(
            f"fet_second_setup_seconds_{scale}x",
            large["reuse"]["seconds"],
            "s",
            5.0,
            1.0,
            f"ClusterDataModule setup on a built cache and span columns against the 5 s target; {note}; "
            f"first setup (cache and columns built): {large['build']['seconds']:.1f} s, of which span "
            f"columns {large['build']['span_columns_seconds']:.1f} s",
            lower_is_better=True,
        ),
    }
    extra = {"scale": scale, "setups": results}
    for name, fig in figures.items():
        write_results(name, [fig], **extra)
    return {"figures": list(figures.values()), **extra}


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "child":
        child_setup(*sys.argv[2:5])
    elif command == "child-fet":
        child_fet_setup(*sys.argv[2:5])
    elif command == "fet":
        for fig in run_fet(int(sys.argv[2]) if len(sys.argv) > 2 else SCALE)["figures"]:
            print(fig)
    else:
        for fig in run(int(command) if command else SCALE)["figures"]:
            print(fig)
