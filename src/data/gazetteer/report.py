"""Markdown tables of a built gazetteer and its labelled corpus, for the console and docs/results.md
(`cofee-report report=gazetteer` rewrites the block between the gazetteer markers)."""

from __future__ import annotations

from pathlib import Path

from cofee.data.gazetteer.build import SOURCES, load_gazetteer_manifest
from cofee.data.gazetteer.label import SPAN_SOURCES, UNKNOWN, load_labelled_manifest

__all__ = ["gazetteer_table", "labelled_table", "gazetteer_tables"]


def _n(value) -> str:
    return f"{int(value):,}"


def gazetteer_table(manifest: dict) -> str:
    counts = manifest["counts"]
    rows = counts["types"]
    sources = [s for s in SOURCES if any(s in r["sources"] for r in rows.values())]
    lines = [
        "| type | entries | ambiguous | " + " | ".join(sources) + " |",
        "|---|---|---|" + "---|" * len(sources),
    ]
    for kind, row in rows.items():
        cells = [_n(row["sources"].get(s, 0)) for s in sources]
        lines.append(
            f"| {kind} | {_n(row['entries'])} | {_n(row['ambiguous'])} | " + " | ".join(cells) + " |"
        )
    total = sum(r["entries"] for r in rows.values())
    lines.append(
        f"| all | {_n(total)} | {_n(sum(r['ambiguous'] for r in rows.values()))} | "
        + " | ".join(_n(sum(r["sources"].get(s, 0) for r in rows.values())) for s in sources)
        + " |"
    )
    notes = [
        f"{_n(counts['surfaces'])} distinct surfaces, {_n(counts['ambiguous_surfaces'])} of them under two or "
        "more types (each such entry counts as ambiguous); an entry found in several sources counts once "
        "per source."
    ]
    names = counts.get("name_pattern", {})
    if names.get("first_names"):
        notes.append(
            f"Name pattern (PER): {_n(names['first_names'])} first and {_n(names['last_names'])} last names "
            f"from names-dataset (top {names['top_n']} per country)."
        )
    wiki = counts.get("wikipedia")
    if wiki:
        notes.append(
            f"Wikipedia: {_n(wiki['pages'])} pages, {_n(wiki['pages_with_infobox'])} with an infobox, "
            f"{_n(wiki['typed_pages'])} typed, {_n(wiki['redirect_aliases'])} redirect aliases."
        )
    seconds = manifest.get("seconds", {})
    if "total" in seconds:
        notes.append(f"Built in {seconds['total']:.1f} s.")
    return "\n".join(lines) + "\n\n" + " ".join(notes)


def labelled_table(manifest: dict) -> str:
    counts = manifest["counts"]
    by = counts["spans_by_source_and_type"]
    types = sorted({t for table in by.values() for t in table}, key=lambda t: (t == UNKNOWN, t))
    lines = [
        "| source | " + " | ".join(types) + " | all |",
        "|---|" + "---|" * (len(types) + 1),
    ]
    for source in SPAN_SOURCES:
        table = by.get(source, {})
        lines.append(
            f"| {source} | "
            + " | ".join(_n(table.get(t, 0)) for t in types)
            + f" | {_n(sum(table.values()))} |"
        )
    lines.append(
        "| all | "
        + " | ".join(_n(counts["spans_by_type"].get(t, 0)) for t in types)
        + f" | {_n(counts['spans'])} |"
    )
    kind = " + ".join(manifest["input"])  # anchors, raw_text or both
    notes = (
        f"{_n(counts['sentences'])} sentences ({kind.replace('_', ' ')}), "
        f"{_n(counts['sentences_with_typed_spans'])} with a typed span. Anchors typed by their target page: "
        f"{_n(counts['anchors_typed_by_target'])}, by their exact surface: {_n(counts['anchors_typed_by_surface'])}, "
        f"by a case variant: {_n(counts.get('anchors_typed_by_gazetteer_match', 0))}, "
        f"by the name pattern: {_n(counts.get('anchors_typed_by_name_pattern', 0))}, "
        f"of unknown type: {_n(counts['anchors_unknown_type'])}. Matches dropped for overlapping an anchor: "
        f"{_n(counts['gazetteer_matches_overlapping_anchors'] + counts['name_pattern_matches_overlapping_anchors'])}."
    )
    return "\n".join(lines) + "\n\n" + notes


def gazetteer_tables(gazetteer_dir: str | Path, labelled_dir: str | Path | None = None) -> str:
    """Both tables as one markdown block (the labelled one only when that corpus exists)."""
    parts = [
        "Gazetteer entries per type and source:",
        "",
        gazetteer_table(load_gazetteer_manifest(gazetteer_dir)),
    ]
    if labelled_dir is not None and (Path(labelled_dir) / "manifest.json").is_file():
        parts += [
            "",
            "Labelled corpus spans per source and type:",
            "",
            labelled_table(load_labelled_manifest(labelled_dir)),
        ]
    return "\n".join(parts)
