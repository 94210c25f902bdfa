"""Tagging schemes (BIO, BIOES) between spans and per-token tags, shared by every stage.

A span is (start, end, type) over token (word) positions with `end` exclusive. Decoding is strict,
like seqeval's strict mode: a span must open with B- (or S-) and continue with I- (E-) of the same type;
anything else is not an entity.
"""

from __future__ import annotations

from collections.abc import Sequence

Span = tuple[int, int, str]
SCHEMES = ("BIO", "BIOES")


def label_names(scheme: str, types: Sequence[str]) -> list[str]:
    """Ordered label list: O first, then the scheme's prefixes for each type."""
    check_scheme(scheme)
    prefixes = "BI" if scheme == "BIO" else "BIES"
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        from .errors import ConfigError

        raise ConfigError("scheme", f"unknown tagging scheme '{scheme}' (known: {', '.join(SCHEMES)})")


def spans_to_tags(spans: Sequence[Span], length: int, scheme: str) -> list[str]:
    tags = ["O"] * length
    for start, end, kind in spans:
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(start, end, kind)} outside a sequence of length {length}")
        if any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"span {(start, end, kind)} overlaps another span")
        if scheme == "BIOES" and end - start == 1:
            tags[start] = f"S-{kind}"
            continue
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"I-{kind}"
        if scheme == "BIOES":
            tags[end - 1] = f"E-{kind}"
    return tags


def tags_to_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    check_scheme(scheme)
    spans: list[Span] = []
    start, kind = None, None
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if scheme == "BIO":
            if prefix == "I" and start is not None and label == kind:
                continue
            if start is not None:
                spans.append((start, i, kind))
            start, kind = (i, label) if prefix == "B" else (None, None)
        else:
            if prefix == "S":
                spans.append((i, i + 1, label))
                start, kind = None, None
            elif prefix == "B":
                start, kind = i, label
            elif prefix == "I" and start is not None and label == kind:
                continue
            elif prefix == "E" and start is not None and label == kind:
                spans.append((start, i + 1, kind))
                start, kind = None, None
            else:
                start, kind = None, None
    if scheme == "BIO" and start is not None:
        spans.append((start, len(tags), kind))
    return spans
