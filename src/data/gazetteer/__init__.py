"""Gazetteers: typed entity lists from packaged data, Wikipedia infoboxes and user files; corpus labelling.

``config`` (GazetteerBuildConfig, MatchConfig, GazetteerDataConfig), ``sources`` (where entries come
from), ``build`` (build_gazetteer, load_gazetteer), ``matcher`` (GazetteerMatcher), ``label``
(label_corpus, iter_labelled), ``report`` (markdown tables; ``cofee-report report=gazetteer``).
"""
