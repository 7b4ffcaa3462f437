"""A compact ResNet (He et al. 2016) for classifying 2D images or object crops: a 3x3 stem,
stages of basic residual blocks that halve the resolution and widen, global average pooling,
dropout and one linear layer. Any input size works (the pooling is global)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (a 1x1 projection where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """``(b, channels, y, x)`` -> ``(b, n_classes)`` logits."""

    def __init__(self, channels: int = 1, n_classes: int = 2, widths: Sequence[int] = (32, 64, 128, 256),
                 blocks: Sequence[int] = (1, 1, 1, 1), dropout: float = 0.2):
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths and blocks must have one entry per stage, got {list(widths)} and {list(blocks)}")
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.stem = nn.Sequential(nn.Conv2d(channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, c_in = [], widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(c_in, width, stride=1 if i == 0 else 2)]
            stage += [BasicBlock(width, width) for _ in range(count - 1)]
            layers.append(nn.Sequential(*stage))
            c_in = width
        self.body = nn.ModuleList(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, n_classes)

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Stem, each residual stage, the head (fine-tuning freezes and schedules by stage)."""
        return [("stem", [self.stem]), *[(f"stage{i}", [s]) for i, s in enumerate(self.body)], ("head", [self.head])]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's activations (before pooling)."""
        h = self.stem(x)
        for stage in self.body:
            h = stage(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.flatten(self.pool(self.encode(x)), 1)))


def build(channels: int = 1, n_classes: int = 2, widths: Sequence[int] = (32, 64, 128, 256),
          blocks: Sequence[int] = (1, 1, 1, 1), dropout: float = 0.2) -> ResNetClassifier:
    return ResNetClassifier(channels=channels, n_classes=n_classes, widths=widths, blocks=blocks, dropout=dropout)
