"""The README.md that travels with an exported fine-tuned model."""

from __future__ import annotations


def model_card(result: dict) -> str:
    test = result.get("test")
    if not test or not test.get("per_type") or not test.get("micro"):
        # the CLI refuses an empty test split before training (cofee.data.gold.loading); a caller that
        # did not still gets a card rather than a TypeError after the training
        test = {
            "per_type": {},
            "micro": {"f1": 0.0, "precision": 0.0, "recall": 0.0, "f1_ci95": [0.0, 0.0]},
            "untyped": {"f1": 0.0},
            **(test or {}),
        }
    rows = "\n".join(
        f"| {kind} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['support']} |"
        for kind, s in sorted(test["per_type"].items())
    )
    low, high = test["micro"]["f1_ci95"]
    stages = " -> ".join(result["stages"]) or "none (the plain encoder)"
    crf_note = (
        "\n- CRF: trained with a linear-chain CRF; this export holds the emission layer only, so the\n"
        "  pipeline and `cofee-predict` decode each word on its own, without the CRF's transitions."
        if result.get("crf")
        else ""
    )
    subset = (
        f"k={result['kshot']} mentions per type" if result.get("kshot") else f"fraction {result['fraction']}"
    )
    return f"""---
library_name: transformers
pipeline_tag: token-classification
tags: [ner, cofee]
---
# {result["run_name"]}: NER tagger fine-tuned with CoFEE

- Encoder: `{result["encoder"]}`; CoFEE pre-training stages behind it: {stages}
- Gold data: {result["data"]}; training subset: {subset} ({result["train_sentences"]} sentences), seed {result["seed"]}
- Tagging: {result["scheme"]} on first sub-tokens, labels in `config.json` (`id2label`); model selected on dev
  F1 (best step {result["best_step"]}), test scored once.{crf_note}

## Test scores (seqeval strict, exact span and type)
Micro F1 **{test["micro"]["f1"]:.3f}** (95% bootstrap interval {low:.3f}-{high:.3f}), precision
{test["micro"]["precision"]:.3f}, recall {test["micro"]["recall"]:.3f}; type-agnostic span F1 {test["untyped"]["f1"]:.3f};
dev F1 {result["dev_f1"]:.3f}.

| type | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}

## Use
```python
from transformers import pipeline
tagger = pipeline("token-classification", model="<this folder>", aggregation_strategy="first")
tagger("Empire State Building is in New York")
```
or `cofee-predict <this folder> --text "..."`.
"""
