"""`cofee-report report=encoder_drift`: L2 distances between encoder exports, through the real CLI."""

import copy
from dataclasses import replace

import pytest
import torch

from cofee.models.encoder import load_encoder
from tests.support import TINY, run_cli

BLOCK = "intro\n<!-- encoder-drift:begin -->\nold\n<!-- encoder-drift:end -->\nrest\n"


def _saved(model, folder, shifts=()):
    """Save a copy of `model` with `value` added to every entry of each named parameter."""
    model = copy.deepcopy(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in shifts:
            params[name].add_(value)
    model.save_pretrained(folder / "fet" / "encoder")
    return folder / "fet" / "encoder"


@pytest.fixture
def exports(tiny_encoder, tmp_path):
    """The start and two exports of it with every entry of one bias (n entries) shifted, by 3 and by 7:
    a shift of a is a distance of a * sqrt(n)."""
    bias = next(name for name, p in tiny_encoder.named_parameters() if name.endswith("bias"))
    n = dict(tiny_encoder.named_parameters())[bias].numel()
    start = _saved(tiny_encoder, tmp_path / "start")
    ref = _saved(tiny_encoder, tmp_path / "ref", [(bias, 3.0)])
    other = _saved(tiny_encoder, tmp_path / "other", [(bias, 7.0)])
    return start, ref, other, n


def _args(start, exports, readme):
    given = ",".join(f"'{folder}'" for folder in exports)
    return ["report=encoder_drift", f"drift_start={start}", f"drift_exports=[{given}]", f"readme={readme}"]


def test_the_table_gives_each_exports_distance_from_the_start_and_the_reference(exports, tmp_path):
    start, ref, other, n = exports
    readme = tmp_path / "results.md"
    readme.write_text(BLOCK, encoding="utf-8")
    result = run_cli("report", *_args(start, [ref, other], readme), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = readme.read_text(encoding="utf-8")
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    # shifts of 3 and 7 on n entries: 3 sqrt(n) and 7 sqrt(n) from the start, 4 sqrt(n) apart
    assert "Start: `start/fet`" in text
    assert f"| ref/fet | {3 * n**0.5:.3f} | - |" == rows["ref/fet"]
    assert f"| other/fet | {7 * n**0.5:.3f} | {4 * n**0.5:.3f} |" == rows["other/fet"]


def test_a_missing_or_foreign_export_is_named_on_one_line_and_nothing_is_written(
    exports, tmp_path, tiny_encoder
):
    start, ref, _, _ = exports
    readme = tmp_path / "results.md"
    readme.write_text(BLOCK, encoding="utf-8")
    missing = tmp_path / "gone"
    result = run_cli("report", *_args(start, [ref, missing], readme), cwd=tmp_path)
    assert result.returncode == 2
    assert (
        f"{missing}: no such export folder" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    )

    narrower = load_encoder(replace(TINY, tiny={**TINY.tiny, "hidden_size": 16}), vocab_size=100)
    foreign = _saved(narrower, tmp_path / "foreign")
    result = run_cli("report", *_args(start, [ref, foreign], readme), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{foreign}: another encoder" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert readme.read_text(encoding="utf-8") == BLOCK
