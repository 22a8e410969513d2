"""Level-2 MLP hyper-parameters: :class:`MLPParams`, where ``--params`` finds them, and which
device trains with them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping

import torch

from stacker.errors import OptionError
from stacker.layout import reading
from stacker.layout.workspace import best_params_path


@dataclass(frozen=True)
class MLPParams:
    """Hyper-parameters of one level-2 model. ``hidden`` is the first hidden layer (the second has
    ``hidden // 2``); ``patience`` is early stopping's, ``plateau_*`` ReduceLROnPlateau's;
    ``window_crop`` is the shortest crop (fraction of the windows) and ``window_keep`` the chance
    that a window stays in a random subset, for window augmentation. ``batch_size`` is an upper
    bound: an epoch always has at least ``stacker.train.MIN_STEPS`` steps, so a few hundred rows
    still train with small batches. ``skip`` (1/0): add the inputs' mean log-odds to the output
    (see :class:`~stacker.level2.net.StackMLP`). ``inner_fraction``: the share of a fold model's
    training rows set aside to early-stop it (see :mod:`stacker.level2.inner`). ``refit`` (1/0):
    after early stopping has chosen the epoch count, a fresh net trains on *all* of the fold
    model's training rows for that many epochs, replaying the learning-rate schedule (fold ``k``
    still unseen); 0 keeps the early-stopped net, which saw ``1 - inner_fraction`` of them."""

    hidden: int = 128
    bottleneck: int = 32
    dropout: float = 0.2
    lr: float = 5e-3
    weight_decay: float = 1e-6
    batch_size: int = 256
    patience: int = 10
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    max_epochs: int = 60
    window_crop: float = 0.5
    window_keep: float = 0.75
    skip: int = 1
    inner_fraction: float = 0.2
    refit: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping, *, source: str = "params") -> "MLPParams":
        """Validated params from a mapping; missing keys take the defaults. OptionError names the
        key, the allowed range and the value."""
        known = {f.name: f for f in fields(cls)}
        unknown = [k for k in values if k not in known]
        if unknown:
            raise OptionError(f"{source}: unknown parameter '{unknown[0]}'; known: "
                              f"{', '.join(known)}")
        out = {}
        for key, value in values.items():
            kind = int if known[key].type in ("int", int) else float
            try:
                if isinstance(value, bool) or (kind is int and float(value) != int(value)):
                    raise ValueError
                out[key] = kind(value)
            except (TypeError, ValueError):
                raise OptionError(f"{source}: parameter '{key}' must be a number ({kind.__name__}), "
                                  f"got {value!r}") from None
        params = cls(**out)
        checks = [("hidden", params.hidden >= 1, ">= 1"), ("bottleneck", params.bottleneck >= 1, ">= 1"),
                  ("dropout", 0 <= params.dropout < 1, "in [0, 1)"), ("lr", params.lr > 0, "> 0"),
                  ("weight_decay", params.weight_decay >= 0, ">= 0"),
                  ("batch_size", params.batch_size >= 1, ">= 1"), ("patience", params.patience >= 1, ">= 1"),
                  ("plateau_factor", 0 < params.plateau_factor < 1, "in (0, 1)"),
                  ("plateau_patience", params.plateau_patience >= 0, ">= 0"),
                  ("max_epochs", params.max_epochs >= 1, ">= 1"),
                  ("window_crop", 0 < params.window_crop <= 1, "in (0, 1]"),
                  ("window_keep", 0 < params.window_keep <= 1, "in (0, 1]"),
                  ("skip", params.skip in (0, 1), "0 or 1"),
                  ("refit", params.refit in (0, 1), "0 or 1"),
                  ("inner_fraction", 0 < params.inner_fraction <= 0.5, "in (0, 0.5]")]
        for key, ok, allowed in checks:
            if not ok:
                raise OptionError(f"{source}: parameter '{key}' must be {allowed}, "
                                  f"got {getattr(params, key)}")
        return params


def read_params(spec: str | Path | None, root: Path | str) -> tuple[MLPParams, dict]:
    """``--params``: None -> defaults; 'best' -> ``<root>/.stack/best_params.json`` (written by
    ``stack tune``); otherwise a JSON file, either flat ``{name: value}`` or ``{"params": {...}}``.
    Returns (params, the whole JSON document or {})."""
    if spec is None:
        return MLPParams(), {}
    path = best_params_path(root) if str(spec) == "best" else Path(spec)
    if not path.exists():
        hint = "run `stack tune` first" if str(spec) == "best" else "check the path"
        raise OptionError(f"`params`: {path} does not exist; {hint}")
    try:
        document = json.loads(reading.read_text(path, what="`params` file"))
    except json.JSONDecodeError as error:
        raise OptionError(f"`params`: {path} is not valid JSON (line {error.lineno}: {error.msg})") from None
    if not isinstance(document, dict):
        raise OptionError(f"`params`: {path} must hold a JSON object of parameters")
    values = document["params"] if "params" in document else document
    if not isinstance(values, dict):
        raise OptionError(f"`params`: {path}: 'params' must be a JSON object")
    return MLPParams.from_dict(values, source=str(path)), document if "params" in document else {}


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'cuda' without a GPU is an OptionError."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("`device` cuda: no CUDA device is available here; use auto or cpu")
    if device not in ("cpu", "cuda"):
        raise OptionError(f"`device` must be auto, cpu or cuda, got '{device}'")
    return device
