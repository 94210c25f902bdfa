"""`trainer.*` as `pl.Trainer` arguments: `trainer.ddp_timeout_minutes` reaches a DDP strategy's
process group timeout, and only a DDP strategy's."""

from datetime import timedelta

import pytest
import pytorch_lightning as pl
from pytorch_lightning.strategies import DDPStrategy

from cofee.config import TrainerConfig, validate
from cofee.pipeline.trainer_kwargs import trainer_kwargs
from cofee.utils.errors import ConfigError


def _trainer(config: TrainerConfig) -> pl.Trainer:
    return pl.Trainer(**trainer_kwargs(config), logger=False, enable_checkpointing=False)


def test_the_trainer_of_trainer_ddp_has_the_configured_timeout(compose_cfg):
    cfg = validate(compose_cfg(["trainer=ddp", "trainer.accelerator=cpu", "trainer.ddp_timeout_minutes=240"]))
    strategy = _trainer(cfg.trainer).strategy
    assert isinstance(strategy, DDPStrategy)
    assert strategy._timeout == timedelta(minutes=240)  # what it hands to init_process_group
    assert strategy._start_method == "popen"  # the registered settings of `ddp` are kept


def test_a_registered_ddp_variant_keeps_its_settings_and_takes_the_timeout():
    kwargs = trainer_kwargs(TrainerConfig(strategy="ddp_find_unused_parameters_true", ddp_timeout_minutes=90))
    assert "ddp_timeout_minutes" not in kwargs
    strategy = kwargs["strategy"]
    assert isinstance(strategy, DDPStrategy) and strategy._timeout == timedelta(minutes=90)
    assert strategy._ddp_kwargs == {"find_unused_parameters": True}


def test_the_default_timeout_is_lightnings():
    strategy = trainer_kwargs(TrainerConfig(strategy="ddp"))["strategy"]
    assert strategy._timeout == DDPStrategy()._timeout == timedelta(minutes=30)


@pytest.mark.parametrize("name", ["auto", "single_device"])
def test_other_strategies_are_left_to_lightning_as_named(name):
    kwargs = trainer_kwargs(TrainerConfig(strategy=name, ddp_timeout_minutes=240))
    assert kwargs["strategy"] == name and "ddp_timeout_minutes" not in kwargs


def test_the_timeout_is_a_positive_number_of_minutes(compose_cfg):
    with pytest.raises(ConfigError, match="'trainer.ddp_timeout_minutes': must be at least 1, got 0"):
        validate(compose_cfg(["trainer=ddp", "trainer.ddp_timeout_minutes=0"]))
