"""Rule-based sentence splitting."""

from __future__ import annotations

from cofee.data.wiki.sentences import split_sentences


def sentences(text, spans=()):
    return [text[s:e] for s, e in split_sentences(text, spans)]


def test_basic_and_abbreviations():
    text = (
        "Dr. J. R. R. Tolkien wrote books, e.g. The Hobbit. He lived in the U.S. and England? "
        "No. 5 is a number. Pi is 3.14 roughly! It ends here.\nNew paragraph without stop\n\nLast one."
    )
    assert sentences(text) == [
        "Dr. J. R. R. Tolkien wrote books, e.g. The Hobbit.",
        "He lived in the U.S. and England?",
        "No. 5 is a number.",
        "Pi is 3.14 roughly!",
        "It ends here.",
        "New paragraph without stop",
        "Last one.",
    ]


def test_lowercase_continuation_and_quotes():
    assert sentences('He said "Stop." Then left. It was 5 p.m. at night.') == [
        'He said "Stop."',
        "Then left.",
        "It was 5 p.m. at night.",
    ]


def test_never_splits_inside_a_span():
    text = "See Yahoo! Inc. Tower. Next sentence."
    spans = [(4, 15)]  # "Yahoo! Inc."
    assert text[4:15] == "Yahoo! Inc."
    assert sentences(text, spans) == ["See Yahoo! Inc. Tower.", "Next sentence."]
    assert sentences(text) == ["See Yahoo!", "Inc. Tower.", "Next sentence."]


def test_cjk():
    assert sentences("北京是首都。长城很长！你好吗？好") == ["北京是首都。", "长城很长！", "你好吗？", "好"]


def test_ranges_are_stripped_and_empty_text():
    assert split_sentences("") == []
    assert split_sentences("   \n  ") == []
    assert split_sentences("  Hello there.  ") == [(2, 14)]
