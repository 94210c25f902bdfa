"""Gazetteer matching throughput on one core with the full default gazetteer, against a naive matcher
run in the same process, and the time to build that gazetteer.

Corpus: every sentence of the anchor corpus of the gensim sample (built into benchmarks/work/anchors
when missing). Tokens are counted as words and punctuation marks (``\\w+|[^\\w\\s]``, CoNLL style).
Baseline: the usual hand-written matcher: tokenise with that regex, then at each token try every
n-gram from the longest entry length down to 1 in a dict of entries (longest match wins, token
boundaries for free), case-sensitive; ours runs with the default ``smart`` case and the name pattern.

Run: python -m benchmarks.bench_gazetteer   (writes benchmarks/results/gazetteer.json)
"""

from __future__ import annotations

import re
import statistics
import time

from benchmarks.common import WORK, figure, write_results
from cofee.config import AnchorBuildConfig, GazetteerBuildConfig, MatchConfig
from cofee.data.gazetteer.build import build_gazetteer, load_gazetteer
from cofee.data.gazetteer.matcher import GazetteerMatcher
from cofee.data.wiki.build_anchors import build_anchor_corpus, default_dump_path, iter_corpus

ROUNDS = 5  # trials alternate between the two matchers, so load changes on a shared machine hit both
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
TARGET_TOKENS_PER_S = 1_000_000


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


def run() -> dict:
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


if __name__ == "__main__":
    for fig in run()["figures"]:
        print(fig)
