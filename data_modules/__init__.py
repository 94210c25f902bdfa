"""LightningDataModules, one per data source."""
