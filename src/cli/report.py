"""`cofee-report report=<fet|esi_repeats|nee_ablation|gazetteer|encoder_drift>`: a result table into docs/results.md.

cofee-report report=gazetteer                     # the built gazetteer and labelled corpus
cofee-report report=fet run_name=default          # FET's clusters against fine types
cofee-report report=nee_ablation readme=null      # print only
cofee-report report=encoder_drift                 # how far FET's variants moved the encoder
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from cofee.cli.entry import hydra_command
from cofee.config import ReportConfig, validate
from cofee.utils.errors import user_errors


@hydra_command("report", "cofee-report")
def main(cfg: DictConfig) -> None:
    with user_errors("cofee-report"):
        root: ReportConfig = validate(cfg, ReportConfig)
        from cofee.experiments.reports import write_report  # heavy imports after the config is good

        print(write_report(root))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
