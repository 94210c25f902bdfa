"""`make denoising-ablation`: the table over several denoising result files."""


def test_ablation_table_lists_the_gazetteer_once_then_each_setting(tmp_path):
    import json

    from cofee.config import Report, ReportConfig
    from cofee.experiments.reports import write_report

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
    runs = {"ignore=setting=A": f"{tmp_path}/a.json", "B": f"{tmp_path}/b.json"}
    write_report(ReportConfig(report=Report.nee_ablation, readme=str(readme), ablation_runs=runs))
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


def test_denoising_table_shows_an_interval_for_one_seed_and_a_spread_for_several():
    from cofee.experiments.denoising import markdown_table

    def row(strategy, seed, f1):
        micro = {"precision": 0.4, "recall": 0.3, "f1": f1, "f1_ci95": [f1 - 0.03, f1 + 0.03]}
        return {
            "system": "NEE" if strategy else "gazetteer matching",
            "strategy": strategy,
            "seed": seed,
            "micro": micro,
            "per_type": {"PER": {"f1": 0.5}},
            "gold_spans": 975,
        }

    rows = [row(None, None, 0.2), row("partial", 13, 0.3), row("partial", 14, 0.4), row("none", 13, 0.1)]
    table = markdown_table(rows, ["PER", "LOC"], "train", 1915)
    assert "| gazetteer matching | - | 0.400 | 0.300 | 0.200 (0.170-0.230) | 0.500 | 0.000 |" in table
    assert (
        "| NEE, noise=partial | 13, 14 | 0.400 ± 0.000 | 0.300 ± 0.000 | 0.350 ± 0.071 | 0.500 ± 0.000 |"
        in table
    )
    assert "| NEE, noise=none | 13 | 0.400 | 0.300 | 0.100 (0.070-0.130) |" in table
    assert "975 typed gold spans" in table
