"""`cofee-study`: the low-resource study (see conf/study.yaml); writes CSV, Markdown table and plot."""

from __future__ import annotations

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import validate_study
from cofee.utils.errors import user_errors


@hydra_command("study", "cofee-study")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-study"):
        study = validate_study(cfg)
        from cofee.experiments.study import run_and_report

        print(run_and_report(study, trainer_kwargs={"accelerator": study.trainer.accelerator, "devices": 1}))


if __name__ == "__main__":
    main()
