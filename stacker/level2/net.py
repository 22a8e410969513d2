"""The level-2 network: a per-feature gate, two hidden layers, one logit per class. No I/O.

Input: the chosen experiments' probabilities concatenated over classes, shape
(batch, n_models * n_classes). The gate (squeeze-and-excitation style) squeezes the whole input
through a bottleneck and gives every input feature its own weight in (0, 1), so the network can
turn down an unhelpful (model, class) column row by row before the dense layers see it. This is the
FAT2019 winners' stacking net (argus-freesound ``StackingModel``) with the sizes as parameters.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureGate(nn.Module):
    """x -> x * sigmoid(W2 relu(W1 x)): one weight per input feature, computed from the whole row.

    x: (batch, n_features) -> (batch, n_features).
    """

    def __init__(self, n_features: int, bottleneck: int):
        super().__init__()
        self.squeeze = nn.Linear(n_features, bottleneck)
        self.excite = nn.Linear(bottleneck, n_features)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values, shape (batch, n_features), each in (0, 1)."""
        return torch.sigmoid(self.excite(torch.relu(self.squeeze(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class StackMLP(nn.Module):
    """Scale -> Gate -> Linear(hidden) -> PReLU -> Dropout -> Linear(hidden // 2) -> PReLU ->
    Dropout -> Linear(n_classes). Returns logits of shape (batch, n_classes); the caller applies
    the sigmoid (multi-label) or the softmax (single-label).

    Scale: ``(x - input_mean) / input_std``, buffers saved with the weights and set from the
    training rows by :meth:`set_input_scale`. Raw probabilities are mostly near 0; unscaled, the
    net sits on the class prior for many epochs before it uses its inputs, and early stopping can
    end training there on small data.

    skip: ``"none"``; ``"logit"`` (multi-label) adds to each class's logit the mean over the input
    models of that class's log-odds; ``"log"`` (single-label) adds the mean log-probability. The
    network then learns a correction to the average of its inputs instead of the whole mapping.
    Without it, on a few hundred rows (the MULAN sets) the net overfits within a few epochs and
    scores below its own best input; with it the head starts at zero, so training starts from
    that average.
    """

    SKIPS = ("none", "logit", "log")
    SKIP_CLIP = 1e-4   # random forests say exactly 0 and 1; keep their log-odds finite

    def __init__(self, n_features: int, n_classes: int, *, hidden: int = 256, bottleneck: int = 32,
                 dropout: float = 0.2, skip: str = "none"):
        super().__init__()
        if skip not in self.SKIPS:
            raise ValueError(f"skip must be one of {self.SKIPS}, got {skip!r}")
        if n_features % n_classes:
            raise ValueError(f"n_features {n_features} is not n_models x n_classes {n_classes}")
        second = max(1, hidden // 2)
        self.config = {"n_features": int(n_features), "n_classes": int(n_classes),
                       "hidden": int(hidden), "bottleneck": int(bottleneck),
                       "dropout": float(dropout), "skip": skip}
        self.register_buffer("input_mean", torch.zeros(n_features))
        self.register_buffer("input_std", torch.ones(n_features))
        self.gate = FeatureGate(n_features, bottleneck)
        self.body = nn.Sequential(
            nn.Linear(n_features, hidden), nn.PReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, second), nn.PReLU(), nn.Dropout(dropout),
        )
        self.head = nn.Linear(second, n_classes)
        if skip != "none":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def set_input_scale(self, x: torch.Tensor, *, floor: float = 1e-3) -> None:
        """Divide every input by one number, the std of all of ``x`` (n_rows, n_features), the
        training rows. One global scale rather than a z-score per feature: it keeps the natural
        contrast between confident and unconfident columns (per-feature z-scores made faint noise
        columns as loud as the signal and scored lower on simulated and small data)."""
        with torch.no_grad():
            self.input_mean.zero_()
            self.input_std.fill_(max(float(x.std(unbiased=False)), floor))

    def skip_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The skip path: (batch, n_models * n_classes) probabilities -> (batch, n_classes)."""
        p = x.reshape(len(x), -1, self.config["n_classes"]).clamp(self.SKIP_CLIP, 1 - self.SKIP_CLIP)
        if self.config["skip"] == "logit":
            return (torch.log(p) - torch.log1p(-p)).mean(1)
        return torch.log(p).mean(1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x: (batch, n_features) -> logits (batch, n_classes). ``skip``: precomputed
        ``skip_logits(x)`` (the trainer computes it once for all rows instead of every batch)."""
        out = self.head(self.body(self.gate((x - self.input_mean) / self.input_std)))
        if self.config["skip"] != "none":
            out = out + (self.skip_logits(x) if skip is None else skip)
        return out

    @classmethod
    def from_config(cls, config: dict) -> "StackMLP":
        """Rebuild from ``model.config`` (saved next to the weights)."""
        return cls(config["n_features"], config["n_classes"], hidden=config["hidden"],
                   bottleneck=config["bottleneck"], dropout=config["dropout"],
                   skip=config.get("skip", "none"))
