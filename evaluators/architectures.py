"""Small architectures that train on a CPU in minutes: ``SmallResNet`` (the shipped quickstart
classifier), ``UNet`` (segmentation of rendered masks), and the verifiable MNIST chains ``MnistCNN``
and ``MnistMLP`` (plain ``nn.Sequential`` of Conv2d / Linear / ReLU / Flatten, which the MILP verifier
and :mod:`threedb.robustness.relu_stability` read).

Refer to one from a config as ``module: threedb.evaluators.architectures`` + ``class: SmallResNet``
(``args: {num_classes: N, width: W}``) or ``class: UNet``, in ``inference:`` (to evaluate) and in a
training config's ``model:`` (to train).
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


class ConvBlock(nn.Sequential):
    """Two 3x3 conv-BN-ReLU layers (the UNet's unit)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small UNet for semantic segmentation: ``depth`` levels of :class:`ConvBlock` with 2x2 max-pooling
    down (``width x 2**i`` channels at level ``i``), bilinear upsampling up with skip concatenations,
    and a 1x1 convolution to ``num_classes`` logits ``NxKxHxW``.

    Any ``H, W`` works: inputs whose sides are not multiples of ``2**depth`` are padded (edge
    replication) and the logits cropped back. With ``width=16, depth=3`` it has about 0.49 M parameters
    and trains on a CPU in minutes at 64 x 64 px.
    Refer to it from a config as ``module: threedb.evaluators.architectures`` + ``class: UNet``.
    """

    def __init__(self, num_classes: int, width: int = 16, depth: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or width < 1 or depth < 1 or in_channels < 1:
            raise ValueError(f"UNet: num_classes, width, depth and in_channels must be >= 1, got "
                             f"{num_classes}, {width}, {depth}, {in_channels}")
        self.depth = depth
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([ConvBlock(in_channels, widths[0])] +
                                  [ConvBlock(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        step = 2 ** self.depth
        pad_h, pad_w = -h % step, -w % step
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for block in self.up:
            skip = skips.pop()
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)[..., :h, :w]


def _gray_average() -> nn.Conv2d:
    """A frozen 1x1 convolution averaging three channels into one. The image pipeline gives 3 x H x W
    (a grayscale PNG is read as RGB with three equal channels); the average of three channels each in
    ``[x - eps, x + eps]`` covers exactly that interval, so the L-inf threat model equals the one of the
    single gray channel, and its interval bounds are exact."""
    gray = nn.Conv2d(3, 1, 1, bias=False)
    with torch.no_grad():
        gray.weight.fill_(1.0 / 3.0)
    gray.weight.requires_grad_(False)       # not trained, not L1-penalised, not pruned
    return gray


class MnistCNN(nn.Sequential):
    """The thesis' (Wong & Kolter's) MNIST CNN as a plain chain: conv ``channels[0]`` 4x4 stride 2
    padding 1 -> ReLU -> conv ``channels[1]`` 4x4 s2 p1 -> ReLU -> flatten -> FC ``hidden`` -> ReLU ->
    FC ``num_classes``, on ``[0, 1]`` images of ``input_size`` px, no normalisation.

    ``input_channels=3`` (default, what threedb's image pipeline gives) puts :func:`_gray_average` first;
    ``input_channels=1`` is the bare network on one-channel tensors. With the defaults (16, 32, 100) it
    has 166 k parameters and 4804 ReLUs (3136 + 1568 + 100).
    """

    def __init__(self, num_classes: int = 10, channels: tuple[int, int] = (16, 32), hidden: int = 100,
                 input_channels: int = 3, input_size: int = 28) -> None:
        if input_channels not in (1, 3):
            raise ValueError(f"MnistCNN: input_channels must be 1 or 3, got {input_channels}")
        c1, c2 = (int(c) for c in channels)
        side = ((input_size + 2 - 4) // 2 + 1 + 2 - 4) // 2 + 1
        layers: list[nn.Module] = [_gray_average()] if input_channels == 3 else []
        layers += [nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 4, stride=2, padding=1),
                   nn.ReLU(), nn.Flatten(), nn.Linear(c2 * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        super().__init__(*layers)


class MnistMLP(nn.Sequential):
    """A fully connected ReLU chain on flattened ``[0, 1]`` images: ``hidden`` widths (the thesis'
    MLP_B is ``(200, 200)``), then ``num_classes``; ``input_channels=3`` averages the three equal
    channels first (as :class:`MnistCNN`)."""

    def __init__(self, num_classes: int = 10, hidden: tuple[int, ...] = (200, 200), input_channels: int = 3,
                 input_size: int = 28) -> None:
        if input_channels not in (1, 3):
            raise ValueError(f"MnistMLP: input_channels must be 1 or 3, got {input_channels}")
        layers: list[nn.Module] = [_gray_average()] if input_channels == 3 else []
        layers.append(nn.Flatten())
        width = input_size * input_size
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)
