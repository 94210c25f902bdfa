"""Hydra's config package. Importing it (Hydra does, to read the YAML files) registers the schema of
each root config in Hydra's ConfigStore: the root YAML files start from `<root>_schema`, so every
default comes from cofee.config and the YAML files hold only alternatives and stated deviations."""

from hydra.core.config_store import ConfigStore

from cofee.config import ROOT_SCHEMAS, on_stage_schema_change


def store_schemas() -> None:
    """Store each root schema as it stands (Hydra keeps a copy, not the class)."""
    for name, schema in ROOT_SCHEMAS.items():
        ConfigStore.instance().store(name=name, node=schema)


store_schemas()
on_stage_schema_change(store_schemas)  # a stage added at run time (add_stage_config) gets its keys
