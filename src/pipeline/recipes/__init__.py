"""The recipe of each pre-training stage: how its LightningModule, data module and callbacks are built
from the config, one module a stage (`registry.py` holds the registry). Importing this package imports
every module in it, so each recipe registers its stage without a list to keep up to date."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
