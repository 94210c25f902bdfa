"""Build-anchors throughput on gensim's English sample dump, against WikiExtractor.

Figures (MB = 10^6 bytes of decompressed XML of the dump, so all rates share one denominator):

* ``clean_mb_per_s_1proc``: our per-page work (wikitext cleaning + anchor extraction + sentence
  splitting) over the page texts, in this process; baseline: WikiExtractor's ``clean_text``
  (templates dropped, not expanded; its own paragraph compaction) over the same texts.
  Target ratio >= 1.0.
* ``build_mb_per_s_1proc``: the whole ``build_anchor_corpus`` with one process (decompress, parse,
  clean, split, write JSONL, resolve redirects); baseline: decompress + parse + WikiExtractor
  ``clean_text`` of the same dump in one process. Target ratio >= 1.0.
* ``build_speedup_2proc``: ``build_anchor_corpus`` with 2 worker processes over 1 process, on the
  6 MB sample. Target >= 1.7 (the issue's), though its fixed costs (starting the pool, the serial
  redirect pass) are not amortised on so small a dump.
* ``build_speedup_2proc_50mb``: the same on a larger dump made from the sample: its pages repeated
  ``large_copies`` times (8: ~49 MB of XML) with distinct page ids and titles, written once to
  ``benchmarks/work/build_anchors/`` (bz2, keyed by the sample's hash and the number of copies).
  Real dumps are GBs, so this is the throughput figure that matters: target >= 1.7 too. The
  main process still decompresses the dump, and a 2-core machine runs 3 processes.

Both speed-up notes carry the 2-process ceiling on pure CPU work measured in the same run
(``two_process_ceiling_pure_cpu`` in details): on a busy machine it drops below 2 and so do they.
Each timing is the best of ``repeats`` runs (``large_repeats`` on the large dump). ``wikiextractor`` (pip) is used when installed; without it
the clean baseline falls back to a compact re-implementation of its clean steps.
"""

from __future__ import annotations

import bz2
import json
import os
import re
import tempfile
import time
from pathlib import Path

from benchmarks.common import WORK, figure, write_results
from cofee.config import AnchorBuildConfig
from cofee.data.wiki import build_anchors
from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path
from cofee.data.wiki.dump import DumpReader
from cofee.data.wiki.sentences import split_sentences
from cofee.data.wiki.wikitext import WikitextCleaner
from cofee.utils.io import sha256_file


def _xml_megabytes(dump: Path) -> float:
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
    """Speed-up of 2 processes over 1 on pure CPU work: what this machine allows right now."""
    import multiprocessing

    started = time.perf_counter()
    _burn(n)
    _burn(n)
    serial = time.perf_counter() - started
    with multiprocessing.get_context(build_anchors._start_method()).Pool(2) as pool:
        pool.map(_burn, [1000, 1000])  # start-up not counted
        started = time.perf_counter()
        pool.map(_burn, [n, n], chunksize=1)
        parallel = time.perf_counter() - started
    return serial / parallel


_LARGE_RECIPE = 1  # bump when _large_dump writes something else, so the cached file is remade
_TITLE = re.compile(rb"<title>([^<]*)</title>")
_PAGE_ID = re.compile(rb"(</ns>\s*<id>)(\d+)(</id>)")


def _large_dump(dump: Path, copies: int) -> Path:
    """``dump``'s pages ``copies`` times (copy k > 0: titles "<title> (copy k)", page ids + k * 10^9),
    as bz2 in the work folder; made once, then found by the sample's hash and ``copies``."""
    digest = sha256_file(dump)[:16]
    path = WORK / "build_anchors" / f"sample-x{copies}-{digest}-r{_LARGE_RECIPE}.xml.bz2"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with bz2.open(dump, "rb") as handle:
        data = handle.read()
    start = data.index(b"<page>")
    end = data.rindex(b"</page>") + len(b"</page>")
    pages = data[start:end]
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with bz2.open(tmp, "wb") as out:
        out.write(data[:start])
        for k in range(copies):
            if k == 0:
                out.write(pages)
                continue
            copy = _TITLE.sub(rb"<title>\1 (copy %d)</title>" % k, pages)
            offset = k * 10**9
            out.write(_PAGE_ID.sub(lambda m, offset=offset: m[1] + b"%d" % (int(m[2]) + offset) + m[3], copy))
        out.write(data[end:])
    os.replace(tmp, path)
    return path


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def run(repeats: int = 3, large_copies: int = 8, large_repeats: int = 2) -> dict:
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
    large = _large_dump(dump, large_copies)
    large_megabytes = _xml_megabytes(large)
    with tempfile.TemporaryDirectory() as tmp:

        def build(source, workers):
            return lambda: build_anchor_corpus(
                source,
                Path(tmp) / f"{source.name}-w{workers}",
                AnchorBuildConfig(),
                num_workers=workers,
                progress=False,
                force=True,
            )

        t_build_1 = _best(build(dump, 1), repeats)
        t_build_2 = _best(build(dump, 2), repeats)
        counts = json.loads((Path(tmp) / f"{dump.name}-w1" / "manifest.json").read_text())["counts"]
        t_large_1 = _best(build(large, 1), large_repeats)
        t_large_2 = _best(build(large, 2), large_repeats)
        large_counts = json.loads((Path(tmp) / f"{large.name}-w1" / "manifest.json").read_text())["counts"]

    ceiling = _parallel_ceiling()
    method = build_anchors._start_method()
    both = (
        f"start method {method}; {os.cpu_count()} CPU cores, measured 2-process ceiling on pure CPU "
        f"work in this run: {ceiling:.2f}x"
    )
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
            note=f"2 worker processes vs 1 process on the {megabytes:.1f} MB gensim sample (pool start-up not amortised); {both}",
        ),
        figure(
            "build_speedup_2proc_50mb",
            t_large_1 / t_large_2,
            "x",
            1.0,
            1.7,
            note=(
                f"2 worker processes vs 1 process on the sample x{large_copies} "
                f"({large_megabytes:.1f} MB of XML, distinct page ids and titles); {both}"
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
            "large_build_1proc": round(t_large_1, 3),
            "large_build_2proc": round(t_large_2, 3),
        },
        "counts": counts,
        "large_dump": {
            "file": large.name,
            "copies": large_copies,
            "xml_megabytes": round(large_megabytes, 3),
            "build_mb_per_s_1proc": round(large_megabytes / t_large_1, 3),
            "build_mb_per_s_2proc": round(large_megabytes / t_large_2, 3),
            "counts": large_counts,
            "repeats": large_repeats,
        },
        "start_method": method,
        "two_process_ceiling_pure_cpu": round(ceiling, 3),
        "baseline": baseline_name,
        "repeats": repeats,
    }
    path = write_results("build_anchors", figures, details=details)
    return {"path": str(path), "figures": figures}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
