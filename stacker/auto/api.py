"""``stacker.auto(...)``: `stack auto` from Python (a notebook), the same run with the same defaults.

The package ``stacker.auto`` is itself callable (see its ``__init__``): ``stacker.auto(root=...)``
calls :func:`auto`, which builds :class:`AutoSettings` from keywords and runs
:func:`~stacker.auto.pipeline.run_auto`, as the command does from its options.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Iterator

from stacker import layout
from stacker.auto.pipeline import AutoResult, run_auto
from stacker.auto.settings import AutoSettings
from stacker.errors import OptionError
from stacker.progress import show_progress
from stacker.runtime import Stage, quiet_stage


def settings_from(time_budget: float, options: dict) -> AutoSettings:
    """AutoSettings from keywords (``metric="lwlrap", n_level2=3, ...``); an unknown keyword is an
    OptionError naming the closest setting. ``device="auto"`` resolves as in `stack auto`."""
    known = [f.name for f in fields(AutoSettings)]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise OptionError(f"stacker.auto: unknown setting `{key}`; {hint}settings: {', '.join(known)}")
    if "device" in options:
        from stacker.level2.params import resolve_device  # torch: only when a device is named

        options = {**options, "device": resolve_device(options["device"])}
    return AutoSettings(time_budget=time_budget, **options)


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial log lines off for the run (as `stack auto` has them), restored after."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(before)


def auto(root: Path | str = layout.DEFAULT_ROOT, *, time_budget: float = 480.0,
         template: Path | str | None = None, out: Path | str | None = "submission.csv",
         report: Path | str | None = "report.html", force: bool = False,
         progress: bool | Stage = True, **settings) -> AutoResult:
    """The whole second level on the layout at ``root``, as `stack auto` runs it.

    time_budget: seconds for the whole run. template: the submission's shape (default: the
    layout's test ids and classes). out, report: the submission CSV (plus ``<out>.json``) and the
    HTML report; None skips that file. force: replace an existing ``out``/``report`` that an
    earlier `stack auto` did not write. progress: True shows it as `stack auto` does (on stderr:
    live bars in a terminal or Jupyter, plain lines elsewhere; :mod:`stacker.progress`), False
    shows none, or a :data:`~stacker.runtime.Stage` of your own. settings: the other fields of
    :class:`AutoSettings` (metric, seed, n_level2, max_seeds, n_trials, device, ...).
    Returns the :class:`AutoResult`, which renders as a table in Jupyter (``to_frame()``).
    """
    run_settings = settings_from(time_budget, settings)
    stage = show_progress if progress is True else quiet_stage if progress is False else progress
    with _quiet_optuna():
        return run_auto(root, settings=run_settings, template=template, out=out, report=report,
                        force=force, stage=stage)


__all__ = ["auto", "settings_from"]
