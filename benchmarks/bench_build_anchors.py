"""Build-anchors throughput on gensim's English sample dump, against WikiExtractor.

Figures (MB = 10^6 bytes of decompressed XML of the dump, so all rates share one denominator):

* ``clean_mb_per_s_1proc``: our per-page work (wikitext cleaning + anchor extraction + sentence
  splitting) over the page texts, in this process; baseline: WikiExtractor's ``clean_text``
  (templates dropped, not expanded; its own paragraph compaction) over the same texts.
  Target ratio >= 1.0.
* ``build_mb_per_s_1proc``: the whole ``build_anchor_corpus`` with one process (decompress, parse,
  clean, split, write JSONL, resolve redirects); baseline: decompress + parse + WikiExtractor
  ``clean_text`` of the same dump in one process. Target ratio >= 1.0.
* ``build_speedup_2proc``: ``build_anchor_corpus`` with 2 worker processes over 1 process.
  Target >= 1.7. The main process still decompresses and parses the dump, and the test machine has
  2 cores shared by 3 processes, so this target is hard to meet there.

Each timing is the best of ``repeats`` runs. ``wikiextractor`` (pip) is used when installed; without it
the clean baseline falls back to a compact re-implementation of its clean steps.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

from benchmarks.common import figure, write_results
from cofee.wiki.build_anchors import AnchorBuildConfig, build_anchor_corpus, default_dump_path
from cofee.wiki.dump import DumpReader
from cofee.wiki.sentences import split_sentences
from cofee.wiki.wikitext import WikitextCleaner


def _xml_megabytes(dump: Path) -> float:
    import bz2

    with bz2.open(dump, "rb") as handle:
        size = 0
        while chunk := handle.read(1 << 20):
            size += len(chunk)
    return size / 1e6


def _wikiextractor_cleaner():
    """Return (name, clean(title, wikitext) -> str)."""
    try:
        from wikiextractor.extract import Extractor
    except ImportError:
        return "wikiextractor-style regex cleaner (fallback)", _fallback_clean

    def clean(title: str, text: str) -> str:
        extractor = Extractor(0, 0, "", title, [text])
        return "\n".join(extractor.clean_text(text, expand_templates=False))

    return "wikiextractor.extract.Extractor.clean_text", clean


_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
_NESTED = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|.*?\|\}", re.S)
_FILE = re.compile(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", re.I)
_LINK = re.compile(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]")
_EXT = re.compile(r"\[https?://[^\s\]]*\s*([^\]]*)\]")
_TAG = re.compile(r"<[^>]+>")
_QUOTE = re.compile(r"'{2,}")
_HEAD = re.compile(r"^=+.*?=+$", re.M)


def _fallback_clean(title: str, text: str) -> str:
    import html

    text = _REF.sub("", _COMMENT.sub("", text))
    previous = None
    while previous != text:
        previous, text = text, _NESTED.sub("", text)
    for pattern, repl in ((_TABLE, ""), (_FILE, ""), (_LINK, r"\1"), (_EXT, r"\1"), (_TAG, "")):
        text = pattern.sub(repl, text)
    text = html.unescape(_HEAD.sub("", _QUOTE.sub("", text)))
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def _parallel_ceiling(n: int = 5_000_000) -> float:
    """Speed-up of 2 spawn processes over 1 on pure CPU work: what this machine allows right now."""
    import multiprocessing

    started = time.perf_counter()
    _burn(n)
    _burn(n)
    serial = time.perf_counter() - started
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [1000, 1000])  # start-up not counted
        started = time.perf_counter()
        pool.map(_burn, [n, n], chunksize=1)
        parallel = time.perf_counter() - started
    return serial / parallel


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(repeats: int = 3) -> dict:
    dump = default_dump_path()
    megabytes = _xml_megabytes(dump)
    reader = DumpReader(dump)
    pages = [(p.title, p.text) for p in reader if p.redirect is None]
    cleaner = WikitextCleaner(reader.namespaces)
    baseline_name, baseline_clean = _wikiextractor_cleaner()

    def ours_clean():
        for _title, text in pages:
            plain, spans = cleaner.clean(text)
            split_sentences(plain, spans)

    def theirs_clean():
        for title, text in pages:
            baseline_clean(title, text)

    def theirs_build():
        for page in DumpReader(dump):
            if page.redirect is None:
                baseline_clean(page.title, page.text)

    t_ours_clean = _best(ours_clean, repeats)
    t_theirs_clean = _best(theirs_clean, repeats)
    t_theirs_build = _best(theirs_build, repeats)
    with tempfile.TemporaryDirectory() as tmp:

        def build(workers):
            return lambda: build_anchor_corpus(
                dump,
                Path(tmp) / f"w{workers}",
                AnchorBuildConfig(),
                num_workers=workers,
                progress=False,
                force=True,
            )

        t_build_1 = _best(build(1), repeats)
        t_build_2 = _best(build(2), repeats)
        counts = json.loads((Path(tmp) / "w1" / "manifest.json").read_text())["counts"]

    import os

    ceiling = _parallel_ceiling()
    figures = [
        figure(
            "clean_mb_per_s_1proc",
            megabytes / t_ours_clean,
            "MB/s",
            megabytes / t_theirs_clean,
            1.0,
            note=f"clean+anchors+sentences vs {baseline_name}, same page texts, one process",
        ),
        figure(
            "build_mb_per_s_1proc",
            megabytes / t_build_1,
            "MB/s",
            megabytes / t_theirs_build,
            1.0,
            note=f"whole build (decompress, parse, clean, split, write, redirects) vs decompress+parse+{baseline_name}",
        ),
        figure(
            "build_speedup_2proc",
            t_build_1 / t_build_2,
            "x",
            1.0,
            1.7,
            note=(
                f"2 worker processes vs 1 process; {os.cpu_count()} CPU cores, measured 2-process ceiling "
                f"on pure CPU work in this run: {ceiling:.2f}x"
            ),
        ),
    ]
    details = {
        "dump": dump.name,
        "xml_megabytes": round(megabytes, 3),
        "pages": len(pages),
        "seconds": {
            "ours_clean": round(t_ours_clean, 3),
            "baseline_clean": round(t_theirs_clean, 3),
            "baseline_parse_and_clean": round(t_theirs_build, 3),
            "build_1proc": round(t_build_1, 3),
            "build_2proc": round(t_build_2, 3),
        },
        "counts": counts,
        "two_process_ceiling_pure_cpu": round(ceiling, 3),
        "baseline": baseline_name,
        "repeats": repeats,
    }
    path = write_results("build_anchors", figures, details=details)
    return {"path": str(path), "figures": figures}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
