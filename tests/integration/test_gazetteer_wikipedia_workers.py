"""The gazetteer's pass over the dump in worker processes: the same typer state and the same gazetteer
files as one process, for multistream and plain dumps; errors and progress as in the anchor build."""

from __future__ import annotations

import bz2
import json
import multiprocessing
import os
import random
import subprocess
import sys

import pytest

from cofee.config import GazetteerBuildConfig, GazetteerDataConfig
from cofee.data import ordered_pool
from cofee.data.gazetteer import pipeline, sources
from cofee.data.gazetteer.build import FILES, build_gazetteer
from cofee.data.gazetteer.sources import WikipediaTyper, load_infobox_mapping
from cofee.data.wiki import build_anchors
from cofee.data.wiki.dump import DumpReader
from cofee.utils.errors import CofeeError, ConfigError, InputFileError
from tests.support import OFF, PAGES, write_multistream_dump, write_tiny_dump

# The tiny dump, plus what only shows when parts are merged in order: a title typed twice (first place,
# last value), unmapped infoboxes whose counts tie (their first-seen order), counted words in prose.
MORE_PAGES = PAGES + [
    ("Zebra box", None, "{{Infobox zebra}} Most zebras live in most of Africa."),
    ("Ada Lovelace", None, "{{Infobox writer}} Ada Lovelace wrote most notes; Most is a town."),
    ("Yak box", None, "{{Infobox yak}} A yak."),
    ("Zebra", "Zebra box", "#REDIRECT [[Zebra box]]"),
    ("Zebra two", None, "{{Infobox zebra}} Another zebra, as most are."),
    ("Countess of Lovelace", "Ada Lovelace", "#REDIRECT [[Ada Lovelace]]"),
]
WORDS = {"Most", "most", "Zebra", "zebra"}


def mapping():
    return {**load_infobox_mapping()[0], "writer": "PER"}


def state(typer: WikipediaTyper):
    """Everything the build reads from a typer, in its order (counts first: ``entries`` adds to them)."""
    counts = list(typer.counts.items())
    return (
        counts,
        list(typer.typed.items()),
        list(typer.redirects.items()),
        list(typer.unmapped.items()),
        list(typer.word_counts.items()),
        list(typer.entries()),
        list(typer.titles().items()),
    )


def page_by_page(dump) -> WikipediaTyper:
    """The reference: every page added in this process, one after the other."""
    typer = WikipediaTyper(mapping(), count_words=WORDS)
    reader = DumpReader(dump, index=None)
    for page in reader:
        typer.namespaces = typer.namespaces or dict(reader.namespaces)
        typer.add_page(page.title, page.redirect, page.text)
    return typer


@pytest.fixture
def pools_started(monkeypatch):
    """The worker counts of the pools the pass started (none for one process)."""
    started = []
    start_pool = sources._start_pool

    def recording(workers, parser, typer):
        started.append(workers)
        return start_pool(workers, parser, typer)

    monkeypatch.setattr(sources, "_start_pool", recording)
    return started


@pytest.mark.parametrize(("pages_per_stream", "method"), [(1, "fork"), (4, "fork"), (1, "spawn")])
def test_worker_pass_is_the_page_by_page_pass(tmp_path, monkeypatch, pools_started, pages_per_stream, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    plain = write_tiny_dump(tmp_path / "tiny.xml", MORE_PAGES)
    reference = state(page_by_page(plain))
    dump = write_multistream_dump(plain.read_bytes(), tmp_path, pages_per_stream=pages_per_stream)
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 1)  # one task per stream: many in flight
    monkeypatch.setattr(ordered_pool, "FORCED_START_METHOD", method)
    for source in (dump, plain):  # multistream: Streams; plain XML: the anchor build's page chunks
        for workers in (1, 2):
            typer = WikipediaTyper(mapping(), count_words=WORDS)
            typer.read_dump(source, workers=workers)
            assert state(typer) == reference, (source.name, workers)
    assert pools_started == [2, 2]
    assert sources._WORKER_STATE is None  # the parent keeps no worker state
    counts, typed, _, unmapped, words, _, _ = reference
    assert ("Ada Lovelace", ("PER", "writer")) in typed and unmapped == [
        ("gadget", 1),
        ("zebra", 2),
        ("yak", 1),
    ]
    assert dict(words) == {"most": 7, "Most": 2, "zebra": 1} and dict(counts)["redirects"] == 7


@pytest.mark.parametrize("workers", [1, 2])
def test_redirects_on_disk_are_the_redirects_in_memory(tmp_path, workers):
    """A typer keeping its redirects in an ordered on-disk store reads, resolves and lists them as the
    dict does: a source redirected twice keeps its first place and its last target; chains resolve."""
    pages = MORE_PAGES + [
        ("Zebra", "Zebra two", "#REDIRECT [[Zebra two]]"),  # again: the last target wins, first place stays
        ("Lady Lovelace", "Countess of Lovelace", "#REDIRECT [[Countess of Lovelace]]"),  # a chain of two
    ]
    plain = write_tiny_dump(tmp_path / "tiny.xml", pages)
    reference = state(page_by_page(plain))
    store = tmp_path / "redirects.sqlite"
    typer = WikipediaTyper(mapping(), count_words=WORDS, redirect_store=store)
    typer.read_dump(plain, workers=workers)
    assert store.is_file() and state(typer) == reference
    redirects = dict(reference[2])
    assert redirects["Zebra"] == "Zebra two" and [t for t, _ in reference[2]].count("Zebra") == 1
    assert ("Lady Lovelace", ("PER", "writer", True)) in reference[6]
    typer.close()
    assert not store.exists() and typer.redirects == {}


def test_gensim_sample_as_multistream_with_two_workers(tmp_path, pools_started):
    try:
        sample = build_anchors.default_dump_path()
    except CofeeError:
        pytest.skip("gensim not installed")
    reference = state(page_by_page(sample))
    dump = write_multistream_dump(bz2.decompress(sample.read_bytes()), tmp_path, pages_per_stream=20)
    typer = WikipediaTyper(mapping(), count_words=WORDS)
    typer.read_dump(dump, workers=2)
    assert state(typer) == reference and pools_started == [2]
    assert typer.counts["typed_pages"] >= 30 and typer.counts["redirects"] >= 50


def test_gazetteer_files_are_the_same_for_any_worker_count(tmp_path, monkeypatch, pools_started):
    plain = write_tiny_dump(tmp_path / "tiny.xml", MORE_PAGES)
    dump = write_multistream_dump(plain.read_bytes(), tmp_path, pages_per_stream=2)
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 1)
    cfg = GazetteerBuildConfig(names_dataset=False)  # packaged places on: the common-word counts matter
    one = build_gazetteer(
        cfg, tmp_path / "one", dump_path=dump, progress=False, types=["PER", "LOC", "ORG", "MISC"]
    )
    two = build_gazetteer(
        cfg, tmp_path / "two", dump_path=dump, progress=False, types=["PER", "LOC", "ORG", "MISC"], workers=2
    )
    assert pools_started == [2]
    assert "Most" in one["counts"]["common_words_dropped"]  # "most" in the prose drops the town
    assert one["build_hash"] == two["build_hash"]  # the worker count is not an input
    assert {k: v for k, v in one.items() if k != "seconds"} == {
        k: v for k, v in two.items() if k != "seconds"
    }
    for name in FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert not (tmp_path / "one" / "redirects.sqlite").exists()  # the scratch store is gone with the build
    titles = {
        r["title"]: r for r in map(json.loads, (tmp_path / "two" / "titles.jsonl").open(encoding="utf-8"))
    }
    assert titles["Ada Lovelace"]["fine_type"] == "writer"  # the later page of the same title wins
    assert titles["Countess of Lovelace"]["redirect"] and "Zebra" not in titles  # "zebra" is unmapped


def test_a_malformed_stream_is_one_line_naming_the_dump(tmp_path):
    xml = write_tiny_dump(tmp_path / "tiny.xml").read_bytes()
    bad = xml.replace(b"<title>Widget</title>", b"<title>Widget</titel>")
    dump = write_multistream_dump(bad, tmp_path, stem="bad", pages_per_stream=1)
    for workers in (1, 2):
        out = tmp_path / f"g{workers}"
        with pytest.raises(InputFileError) as info:
            build_gazetteer(GazetteerBuildConfig(**OFF), out, dump_path=dump, progress=False, workers=workers)
        error = str(info.value)
        assert info.value.path == str(dump) and "\n" not in error
        assert "malformed XML" in error and "bz2 stream at byte" in error
        assert not out.exists()


def test_the_command_reports_a_malformed_stream_in_one_line(tmp_path):
    xml = write_tiny_dump(tmp_path / "tiny.xml").read_bytes()
    dump = write_multistream_dump(xml.replace(b"</title>", b"</titel>", 1), tmp_path, pages_per_stream=1)
    raw = tmp_path / "raw.txt"
    raw.write_text("Ada Lovelace lived in London.\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cofee.cli.build_gazetteer",
            f"paths.root={tmp_path}",
            f"data.anchors.dump={dump}",
        ]
        + ["data.gazetteer.with_anchors=false", f"data.gazetteer.raw_text={raw}", "data.gazetteer.workers=2"]
        + [f"data.gazetteer.build.{key}=false" for key in (*OFF, "languages")],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("cofee-build-gazetteer: error:")]
    assert str(dump) in error and "malformed XML" in error and "bz2 stream at byte" in error
    assert not (tmp_path / "data" / "gazetteer").exists()


def test_the_first_error_in_dump_order_wins(tmp_path, monkeypatch):
    """A worker's XML error in an early chunk, then a truncated file the main process meets: as in a
    one-process read, the XML error (with its line in the whole file) is reported."""
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 1)  # one chunk a page
    text = write_tiny_dump(tmp_path / "tiny.xml").read_text(encoding="utf-8")
    text = text.replace("<title>Nothing</title>", "<title>Nothing</titel>")  # the last page: in flight
    line = text[: text.index("</titel>")].count("\n") + 1
    filler = "<!-- " + random.Random(0).randbytes(1 << 20).hex() + " -->\n</mediawiki>"  # 3 bz2 blocks
    packed = bz2.compress(text.replace("</mediawiki>", filler).encode("utf-8"))
    dump = tmp_path / "cut.xml.bz2"
    dump.write_bytes(packed[: len(packed) * 3 // 4])
    for workers in (1, 2):
        typer = WikipediaTyper(mapping())
        with pytest.raises(InputFileError) as info:
            typer.read_dump(dump, workers=workers)
        assert "malformed XML" in str(info.value) and info.value.path == str(dump)
        assert info.value.line == line


class FakeBar:
    def __init__(self, path, desc):
        self.desc, self.total, self.n, self.steps, self.closed = desc, path.stat().st_size, 0, [], False

    def update(self, step):
        self.steps.append(step)
        self.n += step

    def set_postfix(self, refresh=True, **postfix):
        self.postfix = postfix

    def close(self):
        self.closed = True


def test_progress_is_the_dump_bytes_as_in_the_anchor_build(tmp_path, monkeypatch, capsys):
    from cofee.data.wiki import dump as dump_module

    plain = write_tiny_dump(tmp_path / "tiny.xml", MORE_PAGES)
    dump = write_multistream_dump(plain.read_bytes(), tmp_path, pages_per_stream=1)
    monkeypatch.setattr(sources, "_CHUNK_BYTES", 1)
    WikipediaTyper(mapping()).read_dump(dump, progress=True, workers=2)
    err = capsys.readouterr().err
    assert "gazetteer: wikipedia" in err and "100%" in err
    bars = []
    monkeypatch.setattr(
        dump_module, "dump_progress_bar", lambda path, desc: bars.append(FakeBar(path, desc)) or bars[-1]
    )
    typer = WikipediaTyper(mapping())
    typer.read_dump(dump, progress=True, workers=2)
    (bar,) = bars
    assert bar.desc == "gazetteer: wikipedia" and bar.closed and bar.n == bar.total
    assert len(bar.steps) > 5 and all(step >= 0 for step in bar.steps)  # a step per range of streams
    assert set(bar.postfix) == {"pages", "typed"} and bar.postfix["pages"] <= typer.counts["pages"]


def test_the_workers_key_reaches_the_pass(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "build_gazetteer", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(pipeline, "label_corpus", lambda *args, **kwargs: {})
    raw = tmp_path / "raw.txt"
    raw.write_text("Paris.\n", encoding="utf-8")
    data = GazetteerDataConfig(with_anchors=False, raw_text=str(raw), workers=3)
    anchors = type("Anchors", (), {"dump": str(tmp_path / "dump.xml"), "corpus_dir": str(tmp_path / "a")})
    pipeline.prepare_labelled_corpus(anchors, data, progress=False)
    assert seen["workers"] == 3
    with pytest.raises(ConfigError, match="data.gazetteer.workers"):
        build_gazetteer(GazetteerBuildConfig(**OFF), tmp_path / "g", dump_path=raw, progress=False, workers=0)
