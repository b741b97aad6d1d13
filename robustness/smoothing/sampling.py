"""SAMPLE: batched Monte Carlo of a base model under Gaussian noise.

Every sampler here draws ``x + e`` with ``e ~ N(0, sigma^2 I)`` in chunks of at most ``batch_size``
noisy copies (so memory is bounded whatever ``n`` is), runs the model in ``eval()`` mode under
``torch.inference_mode``, and reduces each chunk to counts on the model's device at once: nothing of
size ``n`` is kept.

Conventions (as in :mod:`threedb.robustness.attacks.base`): images are ``CxHxW`` floats in ``[0, 1]``
pixel space, normalisation lives inside the model, and the noisy images are **not** clamped to
``[0, 1]`` (as in Cohen et al.; clamping would change the smoothed classifier the certificate is
about).

Randomness: the noise is drawn **on the input's device** from a ``torch.Generator`` of that device
(:func:`generator`), seeded per example from the job seed (:func:`example_seed`), so a run is
reproducible and one example's draws do not depend on which examples ran before it (a resumed job
draws the same noise). CPU and CUDA generators produce different streams: certificates computed on
the two devices are each valid but not bit-identical.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterator, Optional

import torch

from ..attacks.base import eval_mode
from .statistics import SmoothingError, check_sigma

Model = Callable[[torch.Tensor], torch.Tensor]


def example_seed(seed: int, key: object) -> int:
    """A 63-bit seed for one example from the job seed and the example's key (index or id).

    Stable across processes and Python versions (a hash of the text, not Python's salted ``hash``).
    """
    digest = hashlib.blake2b(f"{int(seed)}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def check_image(x: torch.Tensor) -> torch.Tensor:
    """``x`` as one ``CxHxW`` floating-point image (a leading batch dimension of 1 is dropped)."""
    if not isinstance(x, torch.Tensor):
        raise SmoothingError(f"the input must be a torch.Tensor image CxHxW, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or not x.is_floating_point():
        raise SmoothingError(f"the input must be one floating-point image CxHxW, got shape {tuple(x.shape)} "
                             f"and dtype {x.dtype}")
    return x


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SmoothingError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def noisy_outputs(model: Model, x: torch.Tensor, *, sigma: float, num: int, batch_size: int,
                  gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Model outputs on ``num`` noisy copies of ``x``, one tensor per chunk of at most ``batch_size``.

    The chunk buffer is allocated once and refilled in place, so the cost above plain batched
    inference is one ``randn`` and one fused multiply-add per chunk.
    """
    x = check_image(x)
    sigma = check_sigma(sigma)
    batch_size = _check_batch_size(batch_size)
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise SmoothingError(f"the number of samples must be a non-negative integer, got {num!r}")
    buffer = torch.empty((min(batch_size, max(num, 1)),) + tuple(x.shape), dtype=x.dtype, device=x.device)
    with eval_mode(model), torch.inference_mode():
        done = 0
        while done < num:
            size = min(batch_size, num - done)
            chunk = buffer[:size]
            torch.randn(chunk.shape, generator=gen, dtype=x.dtype, device=x.device, out=chunk)
            chunk.mul_(sigma).add_(x)
            yield model(chunk)
            done += size


def _class_predictions(output: torch.Tensor, size: int) -> torch.Tensor:
    if output.dim() != 2 or output.shape[0] != size:
        hint = (" (that looks like a segmentation model: use the segmentation certification)"
                if output.dim() == 4 else "")
        raise SmoothingError(f"a classifier must return logits NxK; for a batch of {size} the model returned "
                             f"shape {tuple(output.shape)}{hint}")
    return output.argmax(1)


def _pixel_predictions(output: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    if output.dim() != 4 or output.shape[0] != size or tuple(output.shape[2:]) != (height, width):
        hint = (" (that looks like a classifier: use the classification certification)"
                if output.dim() == 2 else "")
        raise SmoothingError(f"a segmentation model must return logits NxKxHxW with H, W = {height}, {width}; "
                             f"for a batch of {size} the model returned shape {tuple(output.shape)}{hint}")
    # max(1).indices rather than argmax(1): the same labels (the first maximum on ties) but on the CPU the
    # reduction over the strided class dimension of NCHW logits is ~15x faster (torch 2.14: 3 vs 46 ms for
    # 100x2x64x64), lifting pixel_counts from ~0.86x to ~0.97x of plain inference (smoothing_throughput.py)
    return output.max(1).indices


def _num_classes(output: torch.Tensor, expected: Optional[int]) -> int:
    k = int(output.shape[1])
    if expected is not None and k != int(expected):
        raise SmoothingError(f"the model returned {k} class scores per output, expected {expected}")
    return k


def class_counts(model: Model, x: torch.Tensor, *, sigma: float, num: int, batch_size: int,
                 gen: torch.Generator, num_classes: Optional[int] = None) -> torch.Tensor:
    """How often each class is the base classifier's top-1 over ``num`` noisy copies (``K`` int64, CPU).

    ``num_classes`` is taken from the logits when not given; a model returning anything but ``NxK``
    logits is refused with :class:`SmoothingError`.
    """
    counts: Optional[torch.Tensor] = None
    for output in noisy_outputs(model, x, sigma=sigma, num=num, batch_size=batch_size, gen=gen):
        pred = _class_predictions(output, output.shape[0] if output.dim() else 0)
        k = _num_classes(output, num_classes)
        if counts is None:
            counts = torch.zeros(k, dtype=torch.int64, device=pred.device)
        counts += torch.bincount(pred, minlength=k)
    if counts is None:
        if num_classes is None:
            raise SmoothingError("with no samples the number of classes must be given")
        return torch.zeros(int(num_classes), dtype=torch.int64)
    return counts.cpu()


def pixel_counts(model: Model, x: torch.Tensor, *, sigma: float, num: int, batch_size: int,
                 gen: torch.Generator, num_classes: Optional[int] = None,
                 keep_masks: bool = False, reference: Optional[torch.Tensor] = None,
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor], int]:
    """Per-pixel class counts of a segmentation model over ``num`` noisy copies.

    Returns ``(counts, masks, matches)``: ``counts`` is ``KxHxW`` int64 on the CPU; ``masks`` the
    ``num`` predicted masks (``num x H x W``, only when ``keep_masks``, for the whole-mask baseline);
    ``matches`` how many predicted masks equal ``reference`` exactly (0 when no reference is given).
    """
    x = check_image(x)
    height, width = int(x.shape[-2]), int(x.shape[-1])
    counts: Optional[torch.Tensor] = None
    masks: list[torch.Tensor] = []
    matches = 0
    ref = reference.to(x.device).reshape(1, height * width) if reference is not None else None
    for output in noisy_outputs(model, x, sigma=sigma, num=num, batch_size=batch_size, gen=gen):
        size = output.shape[0] if output.dim() else 0
        pred = _pixel_predictions(output, size, height, width).reshape(size, height * width)
        k = _num_classes(output, num_classes)
        if counts is None:
            counts = torch.zeros((k, height * width), dtype=torch.int64, device=pred.device)
        counts.scatter_add_(0, pred, torch.ones_like(pred))
        if keep_masks:
            masks.append(pred.to(torch.int16 if k < 2 ** 15 else torch.int64).cpu())
        if ref is not None:
            matches += int((pred == ref).all(1).sum())
    if counts is None:
        if num_classes is None:
            raise SmoothingError("with no samples the number of classes must be given")
        counts = torch.zeros((int(num_classes), height * width), dtype=torch.int64)
    kept = torch.cat(masks).reshape(-1, height, width) if keep_masks and masks else None
    return counts.reshape(-1, height, width).cpu(), kept, matches


__all__ = ["Model", "check_image", "class_counts", "example_seed", "generator", "noisy_outputs",
           "pixel_counts"]
