"""`cofee-report report=<name>`: one entry for the tables the experiments write into docs/results.md.

Each report reads what earlier commands left (exports, corpora, result files), checks that the target
file has its block's markers before any slow scoring, then replaces the block atomically.
"""

from __future__ import annotations

import json
import logging

from cofee.config import Report, ReportConfig
from cofee.utils.io import check_marked_block, read_json, replace_marked_block

log = logging.getLogger(__name__)
BLOCKS = {Report.fet: "fet", Report.esi_repeats: "esi-repeats", Report.nee_ablation: "nee-ablation"}
BLOCKS[Report.gazetteer] = "gazetteer"
BLOCKS[Report.encoder_drift] = "encoder-drift"


def report_table(cfg: ReportConfig) -> str:
    """The Markdown of `cfg.report` (the FET report also writes results/fet_quality.json)."""
    if cfg.report == Report.fet:
        from cofee.experiments.fet_eval import readme_block, run

        report = run(cfg, readme=None)
        log.info("%s", json.dumps({k: report[k] for k in ("spans", "quality", "clustering")}, indent=1))
        return readme_block(report)
    if cfg.report == Report.esi_repeats:
        from cofee.experiments.esi_eval import cross_table

        return cross_table(list(cfg.esi_exports.items()), list(cfg.esi_corpora.items()))
    if cfg.report == Report.nee_ablation:
        from cofee.experiments.denoising import ablation_table

        return ablation_table([(label, read_json(path)) for label, path in cfg.ablation_runs.items()])
    if cfg.report == Report.encoder_drift:
        from cofee.experiments.encoder_drift import drift_table

        return drift_table(cfg.drift_start, cfg.drift_exports)
    from cofee.data.gazetteer.report import gazetteer_tables

    return gazetteer_tables(cfg.data.gazetteer.gazetteer_dir, cfg.data.gazetteer.labelled_dir)


def write_report(cfg: ReportConfig) -> str:
    """Build `cfg.report`'s table and put it between its markers in `cfg.readme` (null: print only)."""
    block = BLOCKS[cfg.report]
    if cfg.readme is not None:
        check_marked_block(cfg.readme, block)  # before the scoring, not after
    table = report_table(cfg)
    if cfg.readme is not None:
        replace_marked_block(cfg.readme, block, table)
        log.info("wrote the %s table into %s", block, cfg.readme)
    return table
