"""Hydra's config package. Importing it (Hydra does, to read the YAML files) registers the schema of
each root config in Hydra's ConfigStore: the root YAML files start from `<root>_schema`, so every
default comes from cofee.config and the YAML files hold only alternatives and stated deviations."""

from hydra.core.config_store import ConfigStore

from cofee.config import ROOT_SCHEMAS

for _name, _schema in ROOT_SCHEMAS.items():
    ConfigStore.instance().store(name=_name, node=_schema)
