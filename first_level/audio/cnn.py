"""The audio CNN, in the FAT2019 winners' family (argus-freesound "skip attention" nets).

Input: log-mel crops of shape (batch, n_mels, n_frames). A stack of convolutional blocks (two 3x3
convolutions with batch norm and a 1x1 skip connection, then 2x2 average pooling) turns them into
(batch, channels, n_mels / 2^b, n_frames / 2^b); the frequency axis is averaged away and attention
pooling over time weighs each remaining frame's class scores by a softmax over time. Output: logits
of shape (batch, n_classes), for a sigmoid (multi-label) or a softmax (single-label).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class ConvBlock(nn.Module):
    """(B, c_in, F, T) -> (B, c_out, F // 2, T // 2): conv-BN-ReLU, conv-BN, + skip, ReLU, pool."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # a 1x1 projection so the skip path matches the block's width
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.pool = nn.AvgPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.pool(torch.relu(h + self.skip(x)))


class AttentionPool(nn.Module):
    """(B, C, T) -> (B, n_classes): per-frame class scores averaged with softmax-over-time weights."""

    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.attention = nn.Conv1d(channels, n_classes, 1)
        self.scores = nn.Conv1d(channels, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.attention(x), dim=-1)
        return (weights * self.scores(x)).sum(dim=-1)


class AudioCNN(nn.Module):
    """Log-mel (B, n_mels, T) -> logits (B, n_classes). ``channels``: one conv block per entry."""

    def __init__(self, n_classes: int, channels: Sequence[int] = (32, 64, 128, 256),
                 dropout: float = 0.2):
        super().__init__()
        if not channels:
            raise ValueError("channels must name at least one conv block width")
        widths = [1, *channels]
        self.blocks = nn.Sequential(*[ConvBlock(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.hidden = nn.Sequential(nn.Dropout(dropout), nn.Conv1d(channels[-1], channels[-1], 1),
                                    nn.ReLU(), nn.Dropout(dropout))
        self.pool = AttentionPool(channels[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x.unsqueeze(1))          # (B, C, F', T')
        h = h.mean(dim=2)                        # frequency averaged away: (B, C, T')
        return self.pool(self.hidden(h))
