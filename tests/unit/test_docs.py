"""The generated tables live where their writers put them by default: each marker pair once."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from cofee.config import DenoisingConfig, StudyConfig

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = {
    "docs/results.md": ["esi-repeats", "gazetteer", "nee", "nee-ablation", "fet", "study"],
    "benchmarks/README.md": ["bench"],
}


@pytest.mark.parametrize("path, name", [(p, n) for p, names in BLOCKS.items() for n in names])
def test_each_block_is_marked_once_in_its_file(path, name):
    text = (ROOT / path).read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1
    assert text.index(begin) < text.index(end)


def test_the_readme_holds_no_generated_block():
    assert ":begin -->" not in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_writers_default_to_docs_results():
    assert DenoisingConfig().readme == StudyConfig().readme == "docs/results.md"
    with initialize_config_module(config_module="cofee.conf", version_base="1.3"):
        assert compose(config_name="denoising").denoising.readme == "docs/results.md"
        assert compose(config_name="study").readme == "docs/results.md"
