import json
import subprocess
import sys

import pytest
import torch
from transformers import pipeline

from cofee.config import FinetuneConfig, OptimConfig
from cofee.data_modules.gold_ner import GoldNERDataModule, load_gold_splits, training_subset
from cofee.pipeline.finetune import finetune, to_token_classification
from cofee.pipeline.predict import Tagger, repair_tags
from tests.support import TINY


@pytest.fixture(scope="module")
def wnut_splits(tmp_path_factory):
    return load_gold_splits(None, tmp_path_factory.mktemp("gold") / "wnut16")


def test_train_text_without_labels_is_written_beside_the_split(tmp_path):
    splits = load_gold_splits(None, tmp_path / "wnut16")
    lines = (tmp_path / "wnut16" / "train.txt").read_text(encoding="utf-8").splitlines()
    held_out = {" ".join(s.tokens) for s in splits.dev + splits.test}
    train = [" ".join(s.tokens) for s in splits.train]
    assert lines == [t for t in train if t not in held_out]  # a tweet repeated in dev/test is left out
    assert 0 < len(train) - len(lines) < 0.05 * len(train)


def test_fraction_subsets_are_nested_inside_each_other(wnut_splits):
    small = training_subset(wnut_splits.train, 0.05, seed=3)
    large = training_subset(wnut_splits.train, 0.25, seed=3)
    assert {id(s) for s in small} < {id(s) for s in large}
    assert training_subset(wnut_splits.train, 0.05, seed=3) == small


def test_datamodule_serves_one_word_per_gold_token(wnut_splits, tokenizer):
    labels = {"O": 0} | {
        f"{p}-{t}": i for i, (p, t) in enumerate(((p, t) for t in wnut_splits.types for p in "BI"), 1)
    }
    dm = GoldNERDataModule(wnut_splits, tokenizer, labels, fraction=0.01)
    dm.setup()
    assert dm.stats["val"].dropped_spans == 0 and dm.stats["val"].split_spans == 0
    assert sum(len(w.word_positions) for w in dm.windows["val"]) == sum(
        len(s.tokens) for s in wnut_splits.dev
    )
    assert sum(len(w.spans) for w in dm.windows["test"]) == sum(len(s.spans) for s in wnut_splits.test)


@pytest.fixture(scope="module")
def tiny_finetuned(wnut_splits):
    cfg = FinetuneConfig(max_steps=12, val_every_steps=6, bootstrap_samples=200, optim=OptimConfig(lr=1e-3))
    return finetune(wnut_splits, cfg, model=TINY, fraction=0.02, seed=1)


def test_finetune_selects_on_dev_and_scores_test_once(tiny_finetuned):
    result = tiny_finetuned
    assert result.best_step in (6, 12) and result.train_sentences == 38
    report = result.test
    assert set(report) == {"micro", "untyped", "per_type"}
    low, high = report["micro"]["f1_ci95"]
    assert 0.0 <= low <= report["micro"]["f1"] <= high <= 1.0
    assert sum(t["support"] for t in report["per_type"].values()) == 146  # every test entity counted


def test_export_loads_in_pipeline_with_the_same_predictions(tiny_finetuned, tmp_path, wnut_splits):
    module = tiny_finetuned.module
    torch.manual_seed(0)
    with torch.no_grad():  # spread the logits so that entities (and broken I- tags) appear
        module.head.classifier.weight.normal_(0, 2.0)
    folder = tmp_path / "model"
    to_token_classification(module).save_pretrained(folder)
    tiny_finetuned.tokenizer.save_pretrained(folder)
    texts = [" ".join(s.tokens) for s in wnut_splits.test[:40]]

    ours = Tagger(folder)(texts, words="tokenizer")
    tagger = pipeline("token-classification", model=str(folder), aggregation_strategy="first", device="cpu")
    theirs = [[(e["start"], e["end"], e["entity_group"]) for e in found] for found in tagger(texts)]
    assert sum(len(found) for found in ours) > 10
    assert [[(s.start, s.end, s.type) for s in found] for found in ours] == theirs

    out = tmp_path / "tags.jsonl"
    (tmp_path / "in.txt").write_text("\n".join(texts[:3]) + "\n", encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "cofee.cli.predict",
            str(folder),
            "--input",
            str(tmp_path / "in.txt"),
            "--output",
            str(out),
            "--words",
            "tokenizer",
        ],
        check=True,
        capture_output=True,
    )
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [[(s["start"], s["end"], s["type"]) for s in line["spans"]] for line in lines] == theirs[:3]


def test_whitespace_words_follow_the_gold_tokens(tiny_finetuned, tmp_path):
    module = tiny_finetuned.module
    torch.manual_seed(1)
    with torch.no_grad():
        module.head.classifier.weight.normal_(0, 2.0)
    folder = tmp_path / "model"
    to_token_classification(module).save_pretrained(folder)
    tiny_finetuned.tokenizer.save_pretrained(folder)
    text = "@paulwalk saw   Empire State ... #nyc in New York's Central-Park today !!"
    spans = Tagger(folder)([text])[0]
    assert spans
    for span in spans:
        # entity edges fall on whitespace boundaries only
        assert (span.start == 0 or text[span.start - 1] == " ") and (
            span.end == len(text) or text[span.end] == " "
        )
        assert span.text == text[span.start : span.end]


def test_strict_and_lenient_readings_differ_only_on_broken_tags():
    assert repair_tags(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"], "BIO") == [
        "O",
        "B-PER",
        "I-PER",
        "B-LOC",
        "B-ORG",
    ]
    assert repair_tags(["B-PER", "I-PER", "O"], "BIO") == ["B-PER", "I-PER", "O"]


def test_predict_cli_reports_a_missing_model_on_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "cofee.cli.predict", str(tmp_path / "nope"), "--text", "hi"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "nope" in run.stderr


def test_model_card_states_data_scores_and_the_crf_caveat(tiny_finetuned):
    from cofee.pipeline.model_card import model_card

    summary = {
        "run_name": "r",
        "encoder": "tiny",
        "stages": ["esi"],
        "data": "WNUT16",
        "fraction": 0.02,
        "kshot": None,
        "seed": 1,
        "scheme": "BIO",
        "crf": True,
        "dev_f1": tiny_finetuned.dev_f1,
        "best_step": tiny_finetuned.best_step,
        "train_sentences": 38,
        "test": tiny_finetuned.test,
    }
    card = model_card(summary)
    assert "stages behind it: esi" in card and "fraction 0.02 (38 sentences)" in card
    assert "emission layer only" in card and "| person |" in card
    assert "emission layer only" not in model_card({**summary, "crf": False})
