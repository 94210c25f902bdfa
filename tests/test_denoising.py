"""`make denoising-ablation`: the table over several denoising result files."""


def test_ablation_table_lists_the_gazetteer_once_then_each_setting(tmp_path):
    import json

    from cofee.denoising import main

    def result(f1):
        micro = {"precision": 0.5, "recall": 0.25, "f1": f1, "f1_ci95": [f1 - 0.02, f1 + 0.02]}
        per_type = {"PER": {"f1": 0.1}, "LOC": {"f1": 0.4}}
        gazetteer = {
            "system": "gazetteer matching",
            "strategy": None,
            "seed": None,
            "micro": micro,
            "per_type": per_type,
        }
        nee = {"system": "NEE", "strategy": "partial", "seed": 13, "micro": micro, "per_type": per_type}
        return {"rows": [gazetteer, nee]}

    for name, f1 in (("a", 0.2), ("b", 0.3)):
        (tmp_path / f"{name}.json").write_text(json.dumps(result(f1)))
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- nee-ablation:begin -->\nold\n<!-- nee-ablation:end -->\n")
    main([str(readme), f"ignore=setting=A={tmp_path}/a.json", f"B={tmp_path}/b.json"])
    text = readme.read_text()
    assert "old" not in text and text.count("gazetteer matching") == 1
    assert (
        "| ignore=setting=A | partial (seed 13) | 0.500 | 0.250 | 0.200 (0.180-0.220) | 0.100 | 0.400 | 0.000 | 0.000 |"
        in text
    )
    assert (
        "| B | partial (seed 13) | 0.500 | 0.250 | 0.300 (0.280-0.320) | 0.100 | 0.400 | 0.000 | 0.000 |"
        in text
    )
