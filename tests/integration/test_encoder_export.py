import json

import pytest
import torch
from transformers import AutoModel

from cofee.config import EncoderConfig
from cofee.models.encoder import load_encoder, packaged_minilm_path, resolve_model_path
from cofee.models.export import export_encoder, load_exported_encoder, read_export_manifest
from cofee.utils.errors import ConfigError, InputFileError


def test_missing_folder_is_a_one_line_error_not_a_download(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError) as info:
        load_encoder(EncoderConfig(name_or_path=str(missing)))
    message = str(info.value)
    assert "model.name_or_path" in message and str(missing) in message and "\n" not in message
    with pytest.raises(ConfigError, match="known: minilm"):
        resolve_model_path("packaged:bert-large")


def test_packaged_minilm_is_found_offline():
    path = packaged_minilm_path()
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 384


def test_export_then_automodel_gives_same_hidden_states(tmp_path, tiny_encoder, tokenizer):
    out = tmp_path / "esi" / "encoder"
    export_encoder(
        tiny_encoder, tokenizer, out, {"stage": "esi", "config_hash": "abc", "metrics": {"f1": 0.5}}
    )
    batch = tokenizer(["Paris is the capital of France."], return_tensors="pt")
    tiny_encoder.eval()
    reloaded = AutoModel.from_pretrained(str(out), local_files_only=True).eval()
    with torch.no_grad():
        expected = tiny_encoder(**batch).last_hidden_state
        got = reloaded(**batch).last_hidden_state
    torch.testing.assert_close(got, expected)
    manifest = read_export_manifest(out)
    assert manifest["stage"] == "esi" and manifest["metrics"] == {"f1": 0.5}
    model, _ = load_exported_encoder(out)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in tiny_encoder.parameters())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_failed_export_keeps_the_previous_one(tmp_path, tiny_encoder, tokenizer):
    out = tmp_path / "encoder"
    export_encoder(tiny_encoder, tokenizer, out, {"stage": "esi"})
    before = sorted(p.name for p in out.iterdir())

    class Boom(Exception):
        pass

    class BrokenTokenizer:
        def save_pretrained(self, folder):
            raise Boom()

    with pytest.raises(Boom):
        export_encoder(tiny_encoder, BrokenTokenizer(), out, {"stage": "nee"})
    assert sorted(p.name for p in out.iterdir()) == before
    assert read_export_manifest(out)["stage"] == "esi"
    assert [p.name for p in tmp_path.iterdir()] == ["encoder"]


def test_manifest_errors_name_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputFileError, match="manifest.json:1"):
        read_export_manifest(tmp_path)


def test_user_errors_survive_pickling_across_processes():
    import pickle

    error = pickle.loads(pickle.dumps(InputFileError("dump.xml", "truncated", line=7)))
    assert str(error) == "dump.xml:7: truncated" and error.line == 7
    assert str(pickle.loads(pickle.dumps(ConfigError("a.b", "bad")))) == "config key 'a.b': bad"
