"""stack: stacking ensembles from K-fold out-of-fold predictions."""

from stacker.layout.collect import Collection, collect
from stacker.errors import LayoutError, OptionError, OutputExistsError, StackError
from stacker.metrics import METRICS, get_metric, lwlrap, per_class_lwlrap
from stacker.search.engine import SearchResult, search_subsets

__all__ = ["Collection", "collect", "LayoutError", "OptionError", "OutputExistsError", "StackError",
           "METRICS", "get_metric", "lwlrap", "per_class_lwlrap", "SearchResult", "search_subsets"]
