"""stack: stacking ensembles from K-fold out-of-fold predictions.

The public Python API, re-exported lazily: ``import stacker`` loads none of torch, scipy, optuna,
matplotlib or scikit-learn; each name imports its module on first use.

    from stacker import collect, search_subsets, lwlrap
    collection = collect("predictions")                 # validate + align every experiment
    result = search_subsets(collection, metric="lwlrap") # best blend, with its nested CV

From a notebook: ``stacker.import_predictions(name, oof=..., test=...)`` (arrays or DataFrames in
memory, checked as `stack import` checks files) and ``stacker.auto(root=..., time_budget=...)``
(the package ``stacker.auto``, callable: the same run as `stack auto`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    # the layout (predictions/README.md)
    "collect": "stacker.layout", "Collection": "stacker.layout",
    "read_folds": "stacker.layout", "write_folds": "stacker.layout",
    "write_fold_predictions": "stacker.layout", "write_meta": "stacker.layout",
    # metrics
    "METRICS": "stacker.metrics", "get_metric": "stacker.metrics", "lwlrap": "stacker.metrics",
    "per_class_lwlrap": "stacker.metrics", "fold_scores": "stacker.metrics",
    # blends and search
    "blend_arrays": "stacker.blend", "oof_blend": "stacker.blend", "test_blend": "stacker.blend",
    "search_subsets": "stacker.search", "SearchResult": "stacker.search",
    # level 2
    "MLPParams": "stacker.level2.params", "train_level2": "stacker.level2.fit",
    "write_level2": "stacker.level2.store", "tune": "stacker.level2.tune",
    # the submission
    "make_submission": "stacker.submission",
    # the notebook API: stack import from memory, stack auto (stacker.auto is a callable package)
    "import_predictions": "stacker.notebook", "ImportResult": "stacker.notebook",
    "auto": None, "run_auto": "stacker.auto", "AutoResult": "stacker.auto",
    "AutoSettings": "stacker.auto",
    # errors
    "StackError": "stacker.errors", "LayoutError": "stacker.errors", "OptionError": "stacker.errors",
    "OutputExistsError": "stacker.errors",
}

__all__ = ["AutoResult", "AutoSettings", "Collection", "ImportResult", "LayoutError", "METRICS",
           "MLPParams", "OptionError", "OutputExistsError", "SearchResult", "StackError", "auto",
           "blend_arrays", "collect", "fold_scores", "get_metric", "import_predictions", "lwlrap",
           "make_submission", "oof_blend", "per_class_lwlrap", "read_folds", "run_auto",
           "search_subsets", "test_blend", "train_level2", "tune", "write_fold_predictions",
           "write_folds", "write_level2", "write_meta"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stacker' has no attribute '{name}'")
    module = _EXPORTS[name]
    # None: the name is a subpackage, itself the API (stacker.auto, callable)
    value = importlib.import_module(f"stacker.{name}") if module is None else getattr(
        importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
