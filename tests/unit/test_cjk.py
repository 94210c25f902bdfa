"""The Chinese pieces one by one: sentence splitting, link offsets, gazetteer matching without word
boundaries (and English matching with them), Chinese user lists and infobox names, alignment of
character spans to a character-level tokenizer."""

import json

import pytest

from cofee.config import AnchorBuildConfig, GazetteerBuildConfig, MatchConfig
from cofee.data.alignment import AlignmentStats, encode_pretokenized, encode_sentences
from cofee.data.gazetteer.build import Gazetteer, build_gazetteer, load_gazetteer
from cofee.data.gazetteer.matcher import GazetteerMatcher
from cofee.data.gazetteer.sources import WikipediaTyper
from cofee.data.wiki.build_anchors import process_page
from cofee.data.wiki.sentences import split_sentences
from cofee.data.wiki.wikitext import WikitextCleaner, clean_wikitext
from tests.support import OFF, chinese_user_lists, cjk_tokenizer


def _sentences(text, spans=()):
    return [text[s:e] for s, e in split_sentences(text, spans)]


def test_chinese_sentences_end_at_full_stops_with_their_closing_quotes():
    text = "他说：“北京很大。”然后走了！你去过Paris吗？去过。"
    assert _sentences(text) == ["他说：“北京很大。”", "然后走了！", "你去过Paris吗？", "去过。"]
    assert _sentences("第一句。。。第二句") == ["第一句。。。", "第二句"]


def test_a_chinese_full_stop_inside_an_entity_span_is_not_a_boundary():
    text = "他读了《你好。世界》这本书。很好。"
    title = (text.index("《"), text.index("》") + 1)
    assert _sentences(text, [title]) == ["他读了《你好。世界》这本书。", "很好。"]
    assert _sentences(text) == ["他读了《你好。", "世界》这本书。", "很好。"]


@pytest.mark.parametrize(
    ("wikitext", "plain", "anchors"),
    [
        ("[[北京市|北京]]是中国的首都。", "北京是中国的首都。", [("北京", "北京市")]),
        ("位于[[北京]]市的[[长城]]很长。", "位于北京市的长城很长。", [("北京", "北京"), ("长城", "长城")]),
        (
            "他在[[Python]]课上学习[[张伟 (学者)|]]的书。",
            "他在Python课上学习张伟的书。",
            [("Python", "Python"), ("张伟", "张伟 (学者)")],
        ),
        ("[[分类:城市]][[File:a.jpg|缩略图|[[上海]]]]{{模板|x}}上海<ref>来源</ref>很大。", "上海很大。", []),
    ],
)
def test_chinese_links_give_exact_character_offsets(wikitext, plain, anchors):
    text, spans = clean_wikitext(wikitext)
    assert text == plain
    assert [(text[s:e], target) for s, e, target in spans] == anchors


@pytest.mark.parametrize(
    ("wikitext", "plain"),
    [
        ("他用-{zh-hans:计算机;zh-hant:電腦;}-工作。", "他用计算机工作。"),  # the first variant, unconverted
        ("-{R|北京}-和-{zh;zh-hans;zh-hant|維基百科}-", "北京和維基百科"),
        ("-{H|zh-cn:软件;zh-tw:軟體}-上海很大。", "上海很大。"),  # a page-wide rule shows nothing
    ],
)
def test_language_conversion_markup_shows_its_text(wikitext, plain):
    assert clean_wikitext(wikitext) == (plain, [])


def test_a_link_inside_conversion_markup_keeps_its_offsets():
    text, spans = clean_wikitext("位于-{[[北京市|北京]]}-的长城。")
    assert text == "位于北京的长城。" and spans == [(2, 4, "北京市")]


def test_a_page_becomes_sentences_with_anchor_offsets_into_each_sentence():
    wikitext = "'''北京'''是[[中华人民共和国]]的首都，位于[[华北平原]]北部。[[长城]]横跨北京北部的山区！北京有许多大学。"
    lines, counts = process_page(
        1, "北京", wikitext, WikitextCleaner(), AnchorBuildConfig(min_sentence_chars=5)
    )
    records = [json.loads(line) for line in lines]
    assert [r["text"] for r in records] == [
        "北京是中华人民共和国的首都，位于华北平原北部。",
        "长城横跨北京北部的山区！",
    ]
    assert [[r["text"][s:e] for s, e, _, _ in r["spans"]] for r in records] == [
        ["中华人民共和国", "华北平原"],
        ["长城"],
    ]
    assert counts["sentences"] == 2 and counts["anchors"] == 3  # the last sentence has no link


@pytest.fixture(scope="module")
def matcher():
    entries = [
        ("张伟", "PER"),
        ("北京", "LOC"),
        ("北京大学", "ORG"),
        ("Paris", "LOC"),
        ("York", "LOC"),
        ("A股", "MISC"),
    ]
    return GazetteerMatcher(Gazetteer(entries, first_names=["John"], last_names=["Smith"]))


def _found(matcher, text):
    return [(text[s:e], kind) for s, e, kind in matcher.match(text)]


def test_chinese_entries_match_inside_runs_of_cjk_characters(matcher):
    assert _found(matcher, "张伟在北京工作") == [("张伟", "PER"), ("北京", "LOC")]
    assert _found(matcher, "他考上了北京大学") == [("北京大学", "ORG")]  # the longest hit wins
    assert _found(matcher, "老张伟大") == [("张伟", "PER")]  # no word boundaries in CJK: a known price


def test_english_entries_keep_word_boundaries_also_beside_cjk_text(matcher):
    assert _found(matcher, "Yorkshire and Parisian") == []
    assert _found(matcher, "York, Paris.") == [("York", "LOC"), ("Paris", "LOC")]
    # a CJK character is a boundary for an entry in another script, a Latin letter is not
    assert _found(matcher, "他在Paris和York工作") == [("Paris", "LOC"), ("York", "LOC")]
    assert _found(matcher, "他在Yorkshire工作") == []
    assert _found(matcher, "买A股，不买ZA股") == [("A股", "MISC")]
    assert _found(matcher, "的John Smith说") == [("John Smith", "PER")]  # the name pattern too


@pytest.mark.parametrize("case", ["smart", "insensitive", "sensitive"])
def test_offsets_stay_those_of_the_text_after_many_cjk_edges(case):
    matcher = GazetteerMatcher(Gazetteer([("Paris", "LOC"), ("上海", "LOC")]), MatchConfig(case=case))
    text = "1在a2在Paris与上海和Paris3在上海b"
    # "Paris3": a digit after it is no boundary; 上海 before "b" needs none
    assert [(s, e) for s, e, _ in matcher.match(text)] == [(5, 10), (11, 13), (21, 23)]


def test_chinese_user_lists_make_the_gazetteer(tmp_path):
    lists = chinese_user_lists(tmp_path / "lists")
    config = GazetteerBuildConfig(**OFF, languages=False, wikipedia=False)
    build_gazetteer(config, tmp_path / "gaz", user_lists_dir=lists, types=["PER", "LOC"], progress=False)
    gazetteer = load_gazetteer(tmp_path / "gaz")
    assert {(e.surface, e.type) for e in gazetteer.entries if e.type == "PER"} == {
        ("张伟", "PER"),
        ("李娜", "PER"),
        ("王芳", "PER"),
    }
    assert _found(GazetteerMatcher(gazetteer), "据李娜介绍，张伟去了Paris和杭州。") == [
        ("李娜", "PER"),
        ("张伟", "PER"),
        ("Paris", "LOC"),
        ("杭州", "LOC"),
    ]


def test_an_infobox_named_in_chinese_is_found_when_the_mapping_lists_it():
    typer = WikipediaTyper({"person": "PER", "人物信息框": "PER"})
    assert typer.infobox_of("{{人物信息框\n|姓名=张伟}}'''张伟'''是学者。") == "人物信息框"
    assert typer.infobox_of("{{Infobox person|name=张伟}}") == "person"
    assert WikipediaTyper({"person": "PER"}).infobox_of("{{人物信息框|姓名=张伟}}") is None


@pytest.fixture(scope="module")
def char_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = cjk_tokenizer(tmp_path_factory.mktemp("tok"), ["张伟在北京大学的课程中描述年"])
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


LABELS = {"O": 0, "B-PER": 1, "I-PER": 2, "B-ORG": 3, "I-ORG": 4, "B-MISC": 5, "I-MISC": 6}


def test_character_spans_map_to_one_token_per_cjk_character(char_tokenizer):
    text = "张伟在北京大学的Python 3课程中描述！2010年"
    stats = AlignmentStats()
    spans = [(0, 2, "PER"), (3, 7, "ORG"), (8, 14, "MISC")]
    (window,) = encode_sentences(char_tokenizer, [text], [spans], "BIO", LABELS, 64, stats)
    words = [text[s:e] for s, e in window.word_char_spans]
    assert words == list("张伟在北京大学的") + ["Python", "3"] + list("课程中描述！") + ["2010", "年"]
    assert window.spans == [(0, 2, "PER"), (3, 7, "ORG"), (8, 9, "MISC")]
    assert stats.dropped_spans == 0
    tokens = char_tokenizer.convert_ids_to_tokens(window.input_ids)
    assert "[UNK]" not in tokens
    assert [window.labels[p] for p in window.word_positions] == [1, 2, 0, 3, 4, 4, 4, 0, 5] + [0] * 9


def test_gold_characters_are_one_word_each(char_tokenizer):
    (window,) = encode_pretokenized(
        char_tokenizer, [list("张伟在北京")], [[(0, 2, "PER"), (3, 5, "ORG")]], "BIO", LABELS, 64
    )
    assert char_tokenizer.convert_ids_to_tokens(window.input_ids) == ["[CLS]", *"张伟在北京", "[SEP]"]
    assert window.labels == [-100, 1, 2, 0, 3, 4, -100]
