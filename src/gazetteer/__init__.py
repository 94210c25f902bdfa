"""Gazetteers: typed entity lists from packaged data, Wikipedia infoboxes and user files; corpus labelling."""
