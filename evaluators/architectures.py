"""Small classifier architectures that train on a CPU in minutes (the shipped quickstart model's).

Refer to one from a config as ``module: threedb.evaluators.architectures`` + ``class: SmallResNet``
(``args: {num_classes: N, width: W}``), in ``inference:`` (to evaluate) and in a training config's
``model:`` (to train).
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (nn.Identity() if c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A four-stage residual CNN: a stride-2 stem, then stages of ``width x (1, 2, 4, 8)`` channels
    separated by 2x2 max-pooling, global average pooling, dropout and a linear head.

    With ``width=32`` it has about 1.2 M parameters (4.7 MB as float32) and costs about 60 M
    multiply-adds on a 64 x 64 input. Any input size >= 32 px works (the pooling is global).
    """

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.2) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            if i:
                stages.append(nn.MaxPool2d(2))
            stages.append(ResidualBlock(c_in, c_out))
            c_in = c_out
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(self.stem(x)))
