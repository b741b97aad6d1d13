"""Tiny models for the end-to-end `threedb run` tests of the detection / segmentation evaluators and
of back-pressure. Their outputs are simple functions of the model input's size, so the tests can
compute every metric independently from the rendered mask."""
import time

import torch
from torch import nn


class FixedBoxDetector(nn.Module):
    """Torchvision-style detection output in model-input pixels: a centre box (score 0.9, label 0),
    the whole frame (score 0.6, label 1) and a tiny box under the default score threshold (0.1)."""

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        h, w = x.shape[-2:]
        boxes = torch.tensor([[w / 4, h / 4, 3 * w / 4, 3 * h / 4], [0, 0, w, h], [0, 0, 2, 2]],
                             dtype=torch.float32)
        out = {"boxes": boxes, "scores": torch.tensor([0.9, 0.6, 0.1]), "labels": torch.tensor([0, 1, 0])}
        return [dict(out) for _ in range(x.shape[0])]


class HalfSegmenter(nn.Module):
    """Logits [N, 3, h, w]: class 1 on the left half of the input, background (0) on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        logits = torch.zeros(n, 3, h, w)
        logits[:, 1, :, : w // 2] = 4.0
        logits[:, 0, :, w // 2:] = 4.0
        return logits


class SlowNet(nn.Module):
    """A 3-class classifier that sleeps 0.2 s per batch: an evaluator slower than the renderer."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.2)
        return self.head(x.mean(dim=(2, 3)))
