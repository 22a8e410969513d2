"""Which experiments to blend, with what weights, scored with nested CV.

``engine`` runs a search (``search_subsets``, ``search_arrays``); ``config`` its one
``SearchConfig``; ``problem`` the checked arrays every method works on; ``methods`` one selector
per method; ``result`` the ``SearchResult`` and its one builder; ``scoring``, ``kernel``,
``torch_scoring`` and ``backends`` the exact incremental scoring they share; ``subsets`` the
``--subset`` grammar and ``subsets.json``.
"""

from stacker.search.config import METHODS, SearchConfig
from stacker.search.engine import search_subsets
from stacker.search.result import SearchResult

__all__ = ["METHODS", "SearchConfig", "SearchResult", "search_subsets"]
