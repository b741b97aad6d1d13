"""Model wrappers for robustness work: normalisation inside the model, so inputs stay in [0, 1]."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalized(nn.Module):
    """``model((x - mean) / std)``: lets attacks and certificates work in pixel space ``[0, 1]``.

    ``model`` is kept as the ``model`` attribute; its ``state_dict`` is the one to save (the wrapper
    adds only two buffers).
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        self.model = model
        self.enabled = mean is not None
        self.register_buffer("mean", torch.tensor(mean if mean is not None else [0.0, 0.0, 0.0],
                                                  dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std if std is not None else [1.0, 1.0, 1.0],
                                                 dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std) if self.enabled else self.model(x)
