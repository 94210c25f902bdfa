"""`cofee-study`: the low-resource study (see conf/study.yaml); writes CSV, Markdown table and plot."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import validate_study
from cofee.utils.errors import ConfigError, user_errors

log = logging.getLogger("cofee-study")


@hydra_command("study", "cofee-study")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-study"):
        study = validate_study(cfg)
        from cofee.experiments.study import (
            current_rows,
            markdown_table,
            merge_results,
            paired_tables,
            read_rows,
            run_study,
            update_readme,
            write_plot,
        )
        from cofee.utils.io import check_marked_block

        if study.readme:
            check_marked_block(study.readme, "study")  # before hours of fine-tuning, not after
        if study.merge:
            added = merge_results(Path(study.results), [Path(p) for p in study.merge])
            log.info("merged %d rows into %s", added, study.results)
        if study.report_only:  # the table and plot from the rows so far (e.g. of a study still running)
            rows = read_rows(Path(study.results))
        else:
            rows = run_study(study, trainer_kwargs={"accelerator": study.trainer.accelerator, "devices": 1})
        rows = current_rows(study, rows)
        if not rows:
            raise ConfigError(
                "results", f"{study.results} holds no rows of these variants at these settings yet"
            )
        table = markdown_table(rows) + paired_tables(study, rows)
        write_plot(rows, Path(study.plot))
        ft = study.finetune
        settings = (
            f"Settings: seeds {study.seeds}, fine-tuning {ft.max_steps} steps, batch {ft.batch_size}, "
            f"lr {ft.optim.lr:g} (head {ft.optim.head_lr:g}), warm-up {ft.optim.warmup_ratio:g}, dev-selected every "
            f"{ft.val_every_steps} steps; test F1 (seqeval strict) mean ± std over the seeds run so far (n per cell). Rows: `{study.results}`."
        )
        if study.readme:
            update_readme(Path(study.readme), table, settings)
            log.info("table updated in %s", study.readme)
        print(table)


if __name__ == "__main__":
    main()
