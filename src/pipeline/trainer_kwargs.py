"""The `pl.Trainer` keyword arguments of a `trainer.*` config.

Every key of `TrainerConfig` is a Trainer argument of the same name, except `ddp_timeout_minutes`:
Lightning takes the process-group timeout only from a strategy object, so a DDP strategy named by
`trainer.strategy` is built here, with the timeout. Any other strategy (`auto`, `fsdp`, ...) is
left to Lightning as named, and keeps Lightning's own timeout.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from typing import Any

from cofee.config import TrainerConfig

OWN_KEYS = ("ddp_timeout_minutes",)  # keys of TrainerConfig that are not Trainer arguments


def trainer_kwargs(trainer: TrainerConfig) -> dict[str, Any]:
    """Keyword arguments for `pl.Trainer`; keys left at null are left to Lightning."""
    kwargs = {k: v for k, v in asdict(trainer).items() if v is not None and k not in OWN_KEYS}
    kwargs["strategy"] = strategy(trainer.strategy, trainer.ddp_timeout_minutes)
    return kwargs


def strategy(name: str, ddp_timeout_minutes: int):
    """A `DDPStrategy` with its registered settings (start method, unused parameters) and the timeout
    when `name` is a DDP strategy of Lightning's registry; otherwise `name` unchanged."""
    from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry

    entry = StrategyRegistry[name] if name in StrategyRegistry else None  # {strategy, init_params, ...}
    if entry is None or not issubclass(entry["strategy"], DDPStrategy):
        return name
    return entry["strategy"](**entry["init_params"], timeout=timedelta(minutes=ddp_timeout_minutes))
