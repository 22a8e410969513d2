"""Which experiments to blend, with what weights, scored with nested CV.

``engine`` runs a search and its nested repeats; ``methods`` holds the search algorithms;
``scoring`` the exact incremental scoring they share; ``subsets`` the ``--subset`` grammar and
``subsets.json``.
"""

from stacker.search.engine import METHODS, SearchResult, search_subsets

__all__ = ["METHODS", "SearchResult", "search_subsets"]
