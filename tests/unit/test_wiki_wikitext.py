"""Wikitext cleaning: plain text and exact anchor offsets."""

from __future__ import annotations

import pytest

from cofee.data.wiki.wikitext import WikitextCleaner, clean_wikitext, normalize_title


def anchors(wikitext: str) -> tuple[str, list[tuple[str, str]]]:
    text, spans = clean_wikitext(wikitext)
    for start, end, _target in spans:
        assert 0 <= start < end <= len(text)
        assert text[start:end] == text[start:end].strip()
    return text, [(text[s:e], t) for s, e, t in spans]


@pytest.mark.parametrize(
    ("wikitext", "plain", "expected"),
    [
        ("A [[Target]] b.", "A Target b.", [("Target", "Target")]),
        ("A [[target page|surface]] b.", "A surface b.", [("surface", "Target page")]),
        ("Two [[bus]]es here.", "Two buses here.", [("buses", "Bus")]),
        ("The [[Jesuit|Jesuit]]s came.", "The Jesuits came.", [("Jesuits", "Jesuit")]),
        ("No trail [[Foo]]'s x.", "No trail Foo's x.", [("Foo", "Foo")]),
        ("Sec [[Paris#History|history of Paris]].", "Sec history of Paris.", [("history of Paris", "Paris")]),
        (
            "Pipe [[Foo (band)|]] and [[Paris, Texas|]].",
            "Pipe Foo and Paris.",
            [("Foo", "Foo (band)"), ("Paris", "Paris, Texas")],
        ),
        ("U [[New_York_City|NYC]].", "U NYC.", [("NYC", "New York City")]),
        ("Own [[#Early life|section]] link.", "Own section link.", []),
        ("Wikt [[wikt:foo|foo]] and [[:Category:Cities|cities]].", "Wikt foo and cities.", []),
        (
            "A [[São Paulo]] and [[Zürich|Zürcher]].",
            "A São Paulo and Zürcher.",
            [("São Paulo", "São Paulo"), ("Zürcher", "Zürich")],
        ),
        ("[[北京]]市是[[首都]]。", "北京市是首都。", [("北京", "北京"), ("首都", "首都")]),
        ("Bold '''[[Foo|''italic'' x]]''' y.", "Bold italic x y.", [("italic x", "Foo")]),
        ("E [[AT&amp;T]] and [[Foo|a&nbsp;b]].", "E AT&T and a b.", [("AT&T", "AT&T"), ("a b", "Foo")]),
    ],
)
def test_links(wikitext, plain, expected):
    text, found = anchors(wikitext)
    assert text == plain
    assert found == expected


def test_templates_tables_refs_comments_and_files_are_dropped():
    wikitext = (
        "{{Infobox|a={{nested|{{deeper}}}}|b=[[Inside template]]}}"
        "X {{cite|x}}is<ref name=a>{{cite web|url=u}} [[Ref link]]</ref> a [[Y]].<ref name=a/> "
        'Z<ref name="b" /> <!-- [[Hidden]] --> w.\n'
        "{| class=wikitable\n|-\n| [[Cell]] || {{x}}\n|}\n"
        "[[File:A.jpg|thumb|Caption with [[Nested link]] and [[Other|more]].]]\n"
        "[[Image:B.png|left]] After [[Category:Things]][[de:Ding]]<math>x^2 [[M]]</math> end."
    )
    text, found = anchors(wikitext)
    assert text == "X is a Y. Z w.\nAfter end."
    assert found == [("Y", "Y")]


def test_headings_lists_external_links_and_html():
    wikitext = (
        "== Heading [[H]] ==\n* Item [[One]]\n# Second\n: indented\n----\n"
        "See [http://example.org the site] and [http://bare.org].\n"
        '<b>Bold</b> <span style="x">[[Span link|span]]</span> a<br/>b &lt;tag&gt;'
    )
    text, found = anchors(wikitext)
    assert text == "Item One\nSecond\nindented\nSee the site and.\nBold span a b <tag>"
    assert found == [("One", "One"), ("span", "Span link")]


def test_unbalanced_markup_does_not_crash_and_offsets_hold():
    for wikitext in [
        "[[Open only",
        "x ]] y [[A]]",
        "{{open [[B]] text",
        "[[A|b [[C]] d]] e",
        "[[x\ny]] [[Z]]",
    ]:
        text, found = anchors(wikitext)
        assert isinstance(text, str)
    assert anchors("{{open [[B]] text")[1] == [("B", "B")]
    assert anchors("[[A|b [[C]] d]] e")[1] == [("C", "C")]


def test_marker_characters_in_input_cannot_forge_spans():
    # The marker pair is removed; a lone plane-15 character is ordinary text.
    text, spans = clean_wikitext("a\ue000\U000f0001 [[B]] \ue001c")
    assert text == "a\U000f0001 B c"
    assert [(text[s:e], t) for s, e, t in spans] == [("B", "B")]


def test_namespaces_from_siteinfo():
    cleaner = WikitextCleaner({6: "Datei", 14: "Kategorie", 4: "Wikipedia"})
    text, spans = cleaner.clean(
        "A [[Datei:X.jpg|mini|[[Bild]]]] B [[Kategorie:Y]] [[Wikipedia:Hilfe|Hilfe]] [[Z]]."
    )
    assert text == "A B Hilfe Z."
    assert [(text[s:e], t) for s, e, t in spans] == [("Z", "Z")]


def test_normalize_title():
    assert normalize_title("  new_york  city ") == "New york city"
    assert normalize_title("ßtraße") == "ßtraße"
    assert normalize_title("AT&amp;T") == "AT&T"
    assert normalize_title("") == ""
