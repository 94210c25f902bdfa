"""Tagging schemes between spans and per-token tags, shared by every stage.

A span is (start, end, type) over token (word) positions with `end` exclusive. Schemes:

- ``BIO`` (IOB2): B- opens every span, I- continues it.
- ``IOB1``: I- opens a span; B- appears only on the first token of a span that directly follows
  another span of the same type (CoNLL-2003's original convention).
- ``BIOES``: B- opens, I- continues, E- closes a span of two or more tokens; S- is a one-token span.
- ``BMES``: the Chinese convention of BIOES with M (middle) in place of I.

Decoding is strict, like seqeval's strict mode: a BIO span must open with B- and continue with I- of
the same type; a BIOES/BMES span must open with B- (or be S-) and be closed by E-; anything else is not
an entity. IOB1 decoding opens a span on any I- that does not continue an open span of its type and on
any B-; `check_tags` reports the B- that IOB1 forbids (one that does not follow its own type).
"""

from __future__ import annotations

from collections.abc import Sequence

from cofee.config import SCHEMES

Span = tuple[int, int, str]

_PREFIXES = {"BIO": "BI", "IOB1": "BI", "BIOES": "BIES", "BMES": "BMES"}
# For the begin/inside/end/single schemes: the letter that marks a token inside a span.
_INSIDE = {"BIOES": "I", "BMES": "M"}


def label_names(scheme: str, types: Sequence[str]) -> list[str]:
    """Ordered label list: O first, then the scheme's prefixes for each type."""
    check_scheme(scheme)
    return ["O"] + [f"{p}-{t}" for t in types for p in _PREFIXES[scheme]]


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        from cofee.utils.errors import ConfigError

        raise ConfigError("scheme", f"unknown tagging scheme '{scheme}' (known: {', '.join(SCHEMES)})")


def spans_to_tags(spans: Sequence[Span], length: int, scheme: str) -> list[str]:
    tags = ["O"] * length
    inside = _INSIDE.get(scheme, "I")
    ends: dict[int, str] = {}
    for start, end, kind in spans:
        if not 0 <= start < end <= length:
            raise ValueError(f"span {(start, end, kind)} outside a sequence of length {length}")
        if any(tag != "O" for tag in tags[start:end]):
            raise ValueError(f"span {(start, end, kind)} overlaps another span")
        if scheme in _INSIDE and end - start == 1:
            tags[start] = f"S-{kind}"
            continue
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end):
            tags[i] = f"{inside}-{kind}"
        if scheme in _INSIDE:
            tags[end - 1] = f"E-{kind}"
        ends[end] = kind
    if scheme == "IOB1":
        # I- everywhere, B- only where a span touches a previous span of the same type.
        for start, _end, kind in spans:
            tags[start] = f"B-{kind}" if ends.get(start) == kind else f"I-{kind}"
    return tags


def tags_to_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    check_scheme(scheme)
    spans: list[Span] = []
    start, kind = None, None
    inside = _INSIDE.get(scheme)
    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if scheme == "BIO":
            if prefix == "I" and start is not None and label == kind:
                continue
            if start is not None:
                spans.append((start, i, kind))
            start, kind = (i, label) if prefix == "B" else (None, None)
        elif scheme == "IOB1":
            if prefix == "I" and start is not None and label == kind:
                continue
            if start is not None:
                spans.append((start, i, kind))
            start, kind = (i, label) if prefix in ("B", "I") else (None, None)
        else:
            if prefix == "S":
                spans.append((i, i + 1, label))
                start, kind = None, None
            elif prefix == "B":
                start, kind = i, label
            elif prefix == inside and start is not None and label == kind:
                continue
            elif prefix == "E" and start is not None and label == kind:
                spans.append((start, i + 1, kind))
                start, kind = None, None
            else:
                start, kind = None, None
    if scheme in ("BIO", "IOB1") and start is not None:
        spans.append((start, len(tags), kind))
    return spans


def parse_tag(tag: str, scheme: str) -> tuple[str, str] | None:
    """Split a tag into (prefix, type); ("O", "") for O; None when the tag is malformed for `scheme`.

    The type is everything after the first '-', so types may contain '-' ("geo-loc").
    """
    if tag == "O":
        return "O", ""
    prefix, dash, kind = tag.partition("-")
    if not dash or not kind or len(prefix) != 1 or prefix not in _PREFIXES[scheme]:
        return None
    return prefix, kind


def check_tags(tags: Sequence[str], scheme: str) -> tuple[int, str] | None:
    """First violation of `scheme` in a tag sequence as (position, message), or None if it is valid.

    Valid means every tag is well-formed and decoding loses nothing: BIO forbids I-X unless it follows
    B-X/I-X; IOB1 forbids B-X unless it follows B-X/I-X; BIOES/BMES forbid I/M/E-X outside an open
    X span, B-/S-/O while a span is open, and a span left open at the end of the sentence.
    """
    check_scheme(scheme)
    inside = _INSIDE.get(scheme)
    prev_prefix, prev_kind = "O", ""
    open_kind: str | None = None  # BIOES/BMES: type of the span opened by B- and not yet closed
    for i, tag in enumerate(tags):
        parsed = parse_tag(tag, scheme)
        if parsed is None:
            known = ", ".join(f"{p}-TYPE" for p in _PREFIXES[scheme])
            return i, f"malformed tag '{tag}' for scheme {scheme} (expected O, {known})"
        prefix, kind = parsed
        continues = prev_prefix != "O" and prev_kind == kind
        if scheme == "BIO":
            if prefix == "I" and not continues:
                after = "O" if prev_prefix == "O" else f"{prev_prefix}-{prev_kind}"
                return i, f"'{tag}' after '{after}' does not continue a span (BIO needs B-{kind} first)"
        elif scheme == "IOB1":
            if prefix == "B" and not continues:
                return i, (
                    f"'{tag}' may only follow a span of type {kind} in IOB1 "
                    "(a span starts with I-; is the file BIO?)"
                )
        else:
            if open_kind is not None:
                if prefix in (inside, "E") and kind == open_kind:
                    if prefix == "E":
                        open_kind = None
                else:
                    return (
                        i,
                        f"'{tag}' inside an open {open_kind} span (expected {inside}-{open_kind} or E-{open_kind})",
                    )
            elif prefix in (inside, "E"):
                return i, f"'{tag}' outside a span (a {scheme} span starts with B-{kind} or is S-{kind})"
            elif prefix == "B":
                open_kind = kind
        prev_prefix, prev_kind = prefix, kind
    if open_kind is not None:
        return len(
            tags
        ) - 1, f"span of type {open_kind} not closed with E-{open_kind} at the end of the sentence"
    return None
