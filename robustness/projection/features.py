"""Feature spaces for dataset projection: the thesis measures MMD in a neural feature space (C.2.5), for
vision a *randomly initialised* encoder (Rabanser et al. 2019 found it as effective as pretrained ones).

* :class:`RandomConvEncoder`: a fixed convolutional encoder whose weights come from a seeded generator only
  (the same seed gives the same weights whatever the global RNG state);
* :func:`extract_features`: batched features of images ``NxCxHxW`` in ``[0, 1]`` under any module;
* :func:`penultimate_features`: a given model's activations at a named submodule, via a forward hook.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import ProjectionError


class RandomConvEncoder(nn.Module):
    """A fixed random encoder: ``depth`` blocks of 3x3 convolution (stride 2) + ReLU, doubling the width from
    ``width``, then a 2x2 adaptive average pool and a linear map to ``out_features``. Kaiming-normal weights
    drawn from ``torch.Generator().manual_seed(seed)``, zero biases, no gradients, eval mode."""

    def __init__(self, in_channels: int = 3, *, width: int = 16, depth: int = 3, out_features: int = 64,
                 seed: int = 0) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("depth", depth),
                            ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProjectionError(f"{name} must be a positive integer, got {value!r}")
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(depth):
            out = width * 2 ** i
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(channels * 4, out_features)
        gen = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nonlinearity = "relu" if isinstance(module, nn.Conv2d) else "linear"
                nn.init.kaiming_normal_(module.weight, nonlinearity=nonlinearity, generator=gen)
                nn.init.zeros_(module.bias)
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``N x out_features`` features of ``images`` (``N x C x H x W``)."""
        return self.head(self.features(images))


def check_images(images: torch.Tensor, channels: int | None = None) -> torch.Tensor:
    """``images`` as a floating ``NxCxHxW`` tensor with finite values in ``[0, 1]``, or :class:`ProjectionError`."""
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise ProjectionError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise ProjectionError(f"images have {images.shape[1]} channels, the encoder expects {channels}")
    if not images.is_floating_point():
        raise ProjectionError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if images.numel() and (not bool(torch.isfinite(images).all()) or float(images.min()) < 0
                           or float(images.max()) > 1):
        raise ProjectionError("images must have finite values in [0, 1] (pixel space)")
    return images


def _device_of(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def extract_features(encoder: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """``encoder(images)`` in batches under ``torch.inference_mode`` in eval mode (the encoder's mode is
    restored), flattened to ``N x D`` on the CPU; images move to the encoder's device."""
    images = check_images(images, getattr(encoder, "in_channels", None))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ProjectionError(f"batch_size must be a positive integer, got {batch_size!r}")
    device, was_training = _device_of(encoder), encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            out = [encoder(images[i:i + batch_size].to(device)).flatten(1).cpu()
                   for i in range(0, len(images), batch_size)]
    finally:
        encoder.train(was_training)
    if not out:
        raise ProjectionError("no images given")
    return torch.cat(out)


def penultimate_features(model: nn.Module, images: torch.Tensor, layer: str, *,
                         batch_size: int = 256) -> torch.Tensor:
    """The output of ``model``'s submodule named ``layer`` (as in ``model.named_modules()``, e.g. ``"pool"``
    or ``"backbone.layer4"``) for ``images``, captured by a forward hook while the whole model runs in eval
    mode; flattened to ``N x D`` on the CPU."""
    names = dict(model.named_modules())
    if layer not in names or layer == "":
        available = [n for n in names if n][:20]
        raise ProjectionError(f"model has no submodule named {layer!r}; available: {available}")
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor):
            raise ProjectionError(f"submodule {layer!r} does not output a tensor")
        captured.append(output.flatten(1).cpu())

    handle = names[layer].register_forward_hook(hook)
    try:
        count = len(check_images(images))
        extract_features(model, images, batch_size=batch_size)
    finally:
        handle.remove()
    features = torch.cat(captured) if captured else torch.empty(0)
    if len(features) != count:
        raise ProjectionError(f"submodule {layer!r} ran {len(captured)} times for {count} images; "
                              "hook a module that runs once per forward pass")
    return features
