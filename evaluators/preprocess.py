"""Turning rendered images into model input batches: resize, scale, normalise, move to a device.

Conventions (as the original 3DB): the **whole** render is resized to the model resolution
``[h, w]`` (no crop, no letterbox, so the aspect ratio changes when they differ) with bilinear
interpolation and antialiasing (``torch.nn.functional.interpolate(mode="bilinear",
antialias=True, align_corners=False)``, i.e. what ``torchvision.transforms.v2.Resize`` does on
tensors). Pixel values are scaled to [0, 1] and then normalised per channel,
``(x - mean) / std``, when a ``normalization`` is given. Because the whole image is resized,
box coordinates normalised to [0, 1] mean the same thing at the render and the model resolution.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from threedb.sim.errors import ConfigError

INTERPOLATION = "bilinear"


@dataclass(frozen=True)
class Preprocess:
    """uint8 HxWx3 renders -> float32 NCHW model input. ``resolution`` is ``(h, w)`` or None (keep)."""

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resolution: tuple[int, int] | None = None

    def input_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) the model sees for a render of size ``image_hw``."""
        return self.resolution if self.resolution is not None else (int(image_hw[0]), int(image_hw[1]))

    def __call__(self, images: Any) -> torch.Tensor:
        """``images``: an NxHxWx3 array/tensor, or a sequence of HxWx3 arrays (sizes may differ).

        uint8 input is scaled by 1/255; float input is taken as already in [0, 1].
        """
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            batch = [self._one(_as_tensor(images))]
        else:
            batch = [self._one(_as_tensor(image)[None]) for image in images]
        return torch.cat(batch) if len(batch) != 1 else batch[0]

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        """NxHxWxC (uint8 or float) -> normalised float32 NxCxHxW at the model resolution."""
        if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
            raise ValueError(f"expected HxWx3 images, got a batch of shape {tuple(x.shape)}")
        x = x[..., :3] if x.shape[-1] == 4 else x  # drop alpha
        if x.shape[-1] == 1:
            x = x.expand(*x.shape[:-1], 3)
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
        x = x.permute(0, 3, 1, 2).to(torch.float32) * scale
        if self.resolution is not None and tuple(x.shape[-2:]) != tuple(self.resolution):
            x = F.interpolate(x, size=self.resolution, mode=INTERPOLATION, antialias=True,
                              align_corners=False).clamp_(0, 1)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()


def _as_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array))


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Move a CPU batch to ``device``: through pinned memory, non-blocking, on CUDA."""
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    if channels_last and batch.ndim == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def parse_preprocess(spec: Mapping[str, Any], *, file: str | Path | None = None,
                     key: str = "inference", default_resolution: tuple[int, int] | None = None) -> Preprocess:
    """The ``normalization`` and ``resolution`` keys of an ``inference`` mapping, validated."""
    mean = std = None
    norm = spec.get("normalization")
    if norm is not None:
        if not isinstance(norm, Mapping) or set(norm) != {"mean", "std"}:
            raise ConfigError("normalization must be a mapping with exactly 'mean' and 'std'",
                              file=file, key=f"{key}.normalization", value=norm,
                              expected="{mean: [r, g, b], std: [r, g, b]}")
        mean = _triple(norm["mean"], file, f"{key}.normalization.mean", positive=False)
        std = _triple(norm["std"], file, f"{key}.normalization.std", positive=True)
    resolution = spec.get("resolution", default_resolution)
    if resolution is not None:
        res = [resolution, resolution] if isinstance(resolution, int) and not isinstance(resolution, bool) else resolution
        if (not isinstance(res, (list, tuple)) or len(res) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in res)):
            raise ConfigError("resolution must be [height, width] in pixels (or one int for a square)",
                              file=file, key=f"{key}.resolution", value=resolution,
                              expected="[h, w] positive integers")
        resolution = (int(res[0]), int(res[1]))
    return Preprocess(mean, std, resolution)


def _triple(value: Any, file: Any, key: str, positive: bool) -> tuple[float, float, float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 3
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if ok and positive:
        ok = all(v > 0 for v in value)
    if not ok:
        raise ConfigError("must be three numbers, one per RGB channel" + (", all > 0" if positive else ""),
                          file=file, key=key, value=value, expected="[r, g, b]")
    return (float(value[0]), float(value[1]), float(value[2]))
