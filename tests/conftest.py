import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cofee.encoder import EncoderConfig, load_encoder, load_tokenizer  # noqa: E402

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


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(TINY)


@pytest.fixture
def tiny_encoder(tokenizer):
    import torch

    torch.manual_seed(0)
    return load_encoder(TINY, vocab_size=len(tokenizer))


@pytest.fixture
def compose_cfg():
    """Compose the real `pretrain` config with overrides, as the CLI does."""

    def _compose(overrides=()):
        with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
            return compose(config_name="pretrain", overrides=list(overrides), return_hydra_config=False)

    return _compose


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
    from xml.sax.saxutils import escape

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


@pytest.fixture
def small_dump(tmp_path):
    return write_dump(tmp_path / "dump.xml")
