"""The anchor build's redirect map: kept on disk (``RedirectStore``), resolved as a dict would be."""

from __future__ import annotations

import sqlite3

import pytest

from cofee.config import AnchorBuildConfig
from cofee.data import ordered_pool
from cofee.data.wiki import build_anchors as ba
from cofee.data.wiki import redirect_pass
from cofee.data.wiki.build_anchors import build_anchor_corpus, iter_corpus
from cofee.data.wiki.redirect_store import RedirectStore
from tests.support import write_tiny_dump

# redirect title -> target: a chain, a cycle of 2, a chain longer than the hop limit, a last-wins duplicate
REDIRECTS = [
    ("Lisboa", "Lisbon city"),
    ("Lisbon city", "Lisbon"),
    ("Ping", "Pong"),
    ("Pong", "Ping"),
    *[(f"Step {i}", f"Step {i + 1}") for i in range(12)],
    ("Rome", "Roma"),
    ("Rome", "Eternal City"),
]


def _store(folder, pairs=REDIRECTS) -> RedirectStore:
    store = RedirectStore(folder / "redirects.sqlite")
    store.add(pairs[: len(pairs) // 2])
    store.add(pairs[len(pairs) // 2 :])  # several batches, as the chunks of a dump bring them
    return store


@pytest.mark.parametrize(
    "title, expected",
    [
        ("Lisboa", "Lisbon"),  # a chain of two redirects
        ("Lisbon", "Lisbon"),  # not a redirect
        ("Ping", "Ping"),  # a cycle: 8 hops, back where it started
        ("Pong", "Pong"),
        ("Step 0", "Step 8"),  # a chain longer than the hop limit stops after 8 hops
        ("Step 10", "Step 12"),
        ("Rome", "Eternal City"),  # the later of two redirects of one title wins, as in dict.update
        ("Nowhere", "Nowhere"),
    ],
)
def test_resolve_through_the_store_is_resolve_through_a_dict(tmp_path, title, expected):
    with _store(tmp_path) as store:
        assert redirect_pass.follow(title, store) == redirect_pass.follow(title, dict(REDIRECTS)) == expected


def test_final_targets_hop_by_hop_are_follow_title_by_title(tmp_path):
    """Following every title one hop at a time (a few queries a hop) ends where ``follow`` does,
    chains, cycles and the hop limit included."""
    titles = {title for pair in REDIRECTS for title in pair} | {"Nowhere"}
    with _store(tmp_path) as store:
        assert redirect_pass.final_targets(titles, store) == {
            title: redirect_pass.follow(title, dict(REDIRECTS)) for title in titles
        }


def test_the_store_answers_as_the_dict(tmp_path):
    mapping = dict(REDIRECTS)
    odd = {"\ud800 lone surrogate": "Surrogate", "Café": "Coffee house", "東京": "Tokyo"}
    many = {f"Title {i}": f"Target {i}" for i in range(1200)}  # more than one lookup query's worth
    with _store(tmp_path, REDIRECTS + list(odd.items()) + list(many.items())) as store:
        assert store
        for title, target in {**mapping, **odd}.items():
            assert store.get(title) == target
        assert store.get("Lisbon") is None
        asked = ["Lisbon", "Nowhere", *mapping, *odd, *many, "Title 1200"]
        assert store.targets_of(asked) == {**mapping, **odd, **many}
        assert store.targets_of([]) == {}


def test_an_ordered_store_lists_its_pairs_in_a_dicts_order(tmp_path):
    mapping: dict[str, str] = {}
    with RedirectStore(tmp_path / "ordered.sqlite", ordered=True) as store:
        for part in (REDIRECTS[:5], REDIRECTS[5:], [("Lisboa", "Lisbon"), ("New", "Newer")]):
            store.update(dict(part))
            mapping.update(dict(part))
        assert list(store.items()) == list(mapping.items())  # first place, last target
        assert store.get("Lisboa") == "Lisbon" and store.targets_of(["Rome", "New"]) == {
            "Rome": "Eternal City",
            "New": "Newer",
        }
    with RedirectStore(tmp_path / "keyed.sqlite") as keyed, pytest.raises(TypeError, match="ordered"):
        list(keyed.items())


def test_the_store_is_a_file_removed_on_close(tmp_path):
    store = _store(tmp_path)
    assert store.path.is_file() and store.path.parent == tmp_path
    assert store.get("Lisboa") == "Lisbon city"
    store.close()
    assert not store.path.exists()
    with pytest.raises(RuntimeError), RedirectStore(tmp_path / "other.sqlite") as empty:
        assert not empty
        raise RuntimeError("a failed build")
    assert list(tmp_path.iterdir()) == []


LINKS = "[[Lisboa]], [[Ping]], [[Step 0]], [[Rome]] and [[Lisbon]]"


def _dump(path):
    pages = [(title, target, f"#REDIRECT [[{target}]]") for title, target in REDIRECTS]
    pages += [
        (f"Travel {i}", None, f"Travel {i} is a trip that goes through {LINKS} in that order.\n")
        for i in range(7)
    ]
    return write_tiny_dump(path, pages)


def test_pass_two_resolves_every_block_alike(tmp_path, monkeypatch):
    """Lookups by block, and a cache of known targets cleared when full, change nothing."""
    dump = _dump(tmp_path / "dump.xml")
    config = AnchorBuildConfig(shard_size=3)
    build_anchor_corpus(dump, tmp_path / "one", config, progress=False)
    monkeypatch.setattr(redirect_pass, "LINES_PER_TASK", 2)
    monkeypatch.setattr(redirect_pass, "TARGET_CACHE", 1)
    manifest = build_anchor_corpus(dump, tmp_path / "small", config, progress=False)
    targets = [[span[2] for span in record["spans"]] for record in iter_corpus(tmp_path / "small")]
    assert targets == [["Lisbon", "Ping", "Step 8", "Eternal City", "Lisbon"]] * 7
    assert manifest["counts"]["anchor_targets_resolved_via_redirect"] == 7 * 3  # Ping resolves to itself
    for shard in manifest["shards"]:
        name = shard["file"]
        assert (tmp_path / "small" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pass_two_in_workers_writes_the_same_shards(tmp_path, monkeypatch, method):
    """Blocks resolved in 2 worker processes, each with its own read-only connection to the store,
    give byte-identical shards and counts; blocks of 2 lines spread every shard over both workers."""
    monkeypatch.setattr(ordered_pool, "FORCED_START_METHOD", method)
    monkeypatch.setattr(redirect_pass, "LINES_PER_TASK", 2)
    dump = _dump(tmp_path / "dump.xml")
    config = AnchorBuildConfig(shard_size=3)
    one = build_anchor_corpus(dump, tmp_path / "one", config, num_workers=1, progress=False)
    two = build_anchor_corpus(dump, tmp_path / "two", config, num_workers=2, progress=False)
    assert two["counts"] == one["counts"] and two["counts"]["anchor_targets_resolved_via_redirect"] == 21
    assert two["shards"] == one["shards"] and len(one["shards"]) == 3
    for shard in one["shards"]:
        assert (tmp_path / "two" / shard["file"]).read_bytes() == (
            tmp_path / "one" / shard["file"]
        ).read_bytes()


def test_both_passes_share_one_pool_forked_at_the_first_chunk(tmp_path, monkeypatch):
    """Pass 2 reuses pass 1's workers: forked once, while the main process is small, never again."""
    started = []
    start = ba._start_pool

    def counted(*args):
        started.append(args)
        return start(*args)

    def second_pool(*args):
        raise AssertionError("pass 2 started a pool of its own")

    monkeypatch.setattr(ba, "_start_pool", counted)
    monkeypatch.setattr(redirect_pass, "start_pool", second_pool)
    monkeypatch.setattr(redirect_pass, "LINES_PER_TASK", 2)
    manifest = build_anchor_corpus(
        _dump(tmp_path / "dump.xml"),
        tmp_path / "two",
        AnchorBuildConfig(shard_size=3),
        num_workers=2,
        progress=False,
    )
    assert len(started) == 1 and manifest["counts"]["anchor_targets_resolved_via_redirect"] == 21


def test_a_read_only_connection_sees_committed_pairs_and_leaves_the_file(tmp_path):
    with _store(tmp_path) as store:
        store.commit()
        reader = RedirectStore.read_only(store.path)
        assert reader.get("Lisboa") == "Lisbon city" and reader.targets_of(["Rome", "Nowhere"]) == {
            "Rome": "Eternal City"
        }
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.add([("New", "Pair")])
        reader.close()
        assert store.path.is_file() and store.get("Ping") == "Pong"
    assert not store.path.exists()


def test_the_store_lives_in_the_build_temp_folder_and_is_gone_after(tmp_path, monkeypatch):
    seen = []
    resolve_redirects = ba._resolve_redirects

    def spy(folder, shards, redirects, *pool):
        seen.append((folder, redirects.path, redirects.path.is_file()))
        return resolve_redirects(folder, shards, redirects, *pool)

    monkeypatch.setattr(ba, "_resolve_redirects", spy)
    out = tmp_path / "corpus"
    build_anchor_corpus(_dump(tmp_path / "dump.xml"), out, progress=False)
    [(folder, store_path, existed)] = seen
    assert existed and store_path.parent == folder and folder != out and folder.parent == tmp_path
    assert not store_path.exists()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "dump.xml"]
