"""GazetteerMatcher: token boundaries, longest match, case rules, non-ASCII text, ambiguity, names."""

import pytest

from cofee.config import MatchConfig
from cofee.data.gazetteer.build import Gazetteer
from cofee.data.gazetteer.matcher import GazetteerMatcher, boundary_map
from cofee.utils.errors import ConfigError


def spans(matcher, text):
    return [(text[s:e], t) for s, e, t in matcher.match(text)]


def make(entries, **match):
    return GazetteerMatcher(Gazetteer(entries), MatchConfig(**match))


def test_matches_only_on_token_boundaries():
    m = make([("Paris", "LOC"), ("York", "LOC")])
    assert spans(m, "Parisian food and Yorkshire tea") == []
    text = "(Paris), Paris. York-based Paris"
    assert m.match(text) == [(1, 6, "LOC"), (9, 14, "LOC"), (16, 20, "LOC"), (27, 32, "LOC")]
    assert spans(m, "Paris") == [("Paris", "LOC")]  # at both ends of the text
    assert spans(m, "xParis Parisx 1Paris Paris_") == []  # letters, digits and '_' are word characters


def test_longest_match_wins_and_nested_entries_are_not_double_counted():
    m = make([("New York", "LOC"), ("New York City", "LOC"), ("York", "LOC"), ("City Hall", "ORG")])
    assert spans(m, "New York City Hall and New York and York") == [
        ("New York City", "LOC"),
        ("New York", "LOC"),
        ("York", "LOC"),
    ]
    # Overlapping entries of the same length: the leftmost one; the longer one always first.
    m = make([("Bank of", "ORG"), ("of England", "LOC"), ("Bank of England", "ORG")])
    assert spans(m, "the Bank of England") == [("Bank of England", "ORG")]
    m = make([("Alpha Beta", "ORG"), ("Beta Gamma", "LOC"), ("Beta Gamma Delta", "MISC")])
    assert spans(m, "Alpha Beta Gamma Delta") == [("Beta Gamma Delta", "MISC")]
    assert spans(m, "Alpha Beta Gamma") == [("Alpha Beta", "ORG")]
    result = m.match("Alpha Beta Gamma Delta, Alpha Beta and Beta Gamma")
    assert result == sorted(result) and all(a[1] <= b[0] for a, b in zip(result, result[1:]))


def test_case_rules():
    entries = [("Nice", "LOC"), ("ebay", "ORG"), ("NASA", "ORG")]
    text = "Nice is nice; NICE. ebay, Ebay, EBAY, eBay; NASA nasa Nasa"
    sensitive = spans(make(entries, case="sensitive"), text)
    assert sensitive == [("Nice", "LOC"), ("ebay", "ORG"), ("NASA", "ORG")]
    insensitive = spans(make(entries, case="insensitive"), text)
    assert [s for s, _ in insensitive] == [
        "Nice",
        "nice",
        "NICE",
        "ebay",
        "Ebay",
        "EBAY",
        "eBay",
        "NASA",
        "nasa",
        "Nasa",
    ]
    smart = spans(make(entries, case="smart"), text)
    # own spelling or ALL CAPS; an all-lower-case entry also Capitalised; never a lower-case word
    assert [s for s, _ in smart] == ["Nice", "NICE", "ebay", "Ebay", "EBAY", "NASA"]
    assert spans(make([("new york", "LOC")], case="smart"), "New York, new york, New york") == [
        ("New York", "LOC"),
        ("new york", "LOC"),
        ("New york", "LOC"),
    ]


def test_non_ascii_entries_and_offsets():
    m = make(
        [("São Paulo", "LOC"), ("Zürich", "LOC"), ("İstanbul", "LOC"), ("北京", "LOC")], case="insensitive"
    )
    text = "From SÃO PAULO to Zürich, not Zürichsee; İSTANBUL and istanbul; 北京大学"
    found = m.match(text)
    assert [text[s:e] for s, e, _ in found] == ["SÃO PAULO", "Zürich", "İSTANBUL", "北京"]
    sensitive = make([("São Paulo", "LOC"), ("Zürich", "LOC")], case="sensitive")
    assert spans(sensitive, "São Paulo, Sao Paulo, Zurich, Zürich") == [
        ("São Paulo", "LOC"),
        ("Zürich", "LOC"),
    ]
    # 'İ'.lower() is two characters: the per-character fallback keeps offsets aligned
    assert len(boundary_map("İstanbul!", lower=True)) == len("İstanbul!")
    assert boundary_map("a-b, c_d é") == "a b  c_d é"


def test_punctuation_inside_entries():
    m = make([("U.S.", "LOC"), ("AT&T", "ORG"), ("Guinea-Bissau", "LOC"), ("O'Brien", "PER")])
    text = "The U.S. and AT&T, Guinea-Bissau, O'Brien's"
    assert spans(m, text) == [("U.S.", "LOC"), ("AT&T", "ORG"), ("Guinea-Bissau", "LOC"), ("O'Brien", "PER")]


def test_ambiguity_rules():
    entries = [("Jordan", "LOC"), ("Jordan", "PER"), ("Apple", "ORG"), ("Apple", "MISC")]
    by_priority = make(entries, ambiguity="priority", priority=["PER", "ORG", "LOC", "MISC"])
    assert spans(by_priority, "Jordan sold Apple") == [("Jordan", "PER"), ("Apple", "ORG")]
    other_order = make(entries, ambiguity="priority", priority=["MISC", "LOC"])
    assert spans(other_order, "Jordan sold Apple") == [("Jordan", "LOC"), ("Apple", "MISC")]
    unknown = make(entries, ambiguity="unknown")
    assert spans(unknown, "Jordan sold Apple") == [("Jordan", None), ("Apple", None)]
    # types not in the priority list rank after it, alphabetically
    custom = make([("Lux", "ZETA"), ("Lux", "BETA")], ambiguity="priority", priority=["PER"])
    assert spans(custom, "Lux") == [("Lux", "BETA")]


def test_fine_type_and_source_are_reported():
    m = make([("Ada Lovelace", "PER", "person", ("wikipedia",))])
    (hit,) = m.match_spans("Ada Lovelace wrote notes.")
    assert (hit.start, hit.end, hit.type, hit.source, hit.fine_type) == (0, 12, "PER", "gazetteer", "person")


def test_name_pattern():
    gazetteer = Gazetteer(
        [("Paris", "LOC"), ("George Washington University", "ORG"), ("Grace Hopper", "PER", "scientist")],
        first_names=["John", "Grace", "Paris", "Vincent", "George"],
        last_names=["Kennedy", "Hopper", "Hilton", "Gogh", "Washington", "Smith"],
    )
    m = GazetteerMatcher(gazetteer, MatchConfig())
    text = (
        "John F. Kennedy met Grace Hopper in Paris; Paris Hilton, Vincent van Gogh, "
        "George Washington University, John Smith's car and JOHN SMITH."
    )
    found = {text[h.start : h.end]: (h.type, h.source) for h in m.match_spans(text)}
    assert found == {
        "John F. Kennedy": ("PER", "name_pattern"),
        "Grace Hopper": ("PER", "gazetteer"),  # a tie goes to the gazetteer entry
        "Paris": ("LOC", "gazetteer"),
        "Paris Hilton": ("PER", "name_pattern"),  # longer than the entry "Paris"
        "Vincent van Gogh": ("PER", "name_pattern"),
        "George Washington University": ("ORG", "gazetteer"),  # longer than the name pattern
        "John Smith": ("PER", "name_pattern"),
    }
    # a first name alone, or a last name first, is not a person
    assert m.match("John went home. Smith John left.") == []
    off = GazetteerMatcher(gazetteer, MatchConfig(name_pattern=False))
    assert [text[s:e] for s, e, _ in off.match("John F. Kennedy")] == []


def test_empty_gazetteer_and_bad_config():
    assert make([]).match("Paris") == []
    with pytest.raises(ConfigError, match="data.gazetteer.match.case"):
        make([("Paris", "LOC")], case="upper")
    with pytest.raises(ConfigError, match="data.gazetteer.match.ambiguity"):
        make([("Paris", "LOC")], ambiguity="first")
