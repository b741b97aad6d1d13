"""Training data of ``threedb train``: images in ``[0, 1]`` at the model resolution, with class labels
(classification) or label masks (segmentation), augmented for training.

Normalisation is **not** applied here: the loop wraps the model in
:class:`threedb.robustness.models.Normalized`, so objectives and attacks see pixel-space images and
budgets are in pixel units.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from threedb.evaluators.jobs.data import label_masks, resize_mask
from threedb.evaluators.preprocess import Preprocess
from threedb.evaluators.training.config import AugmentConfig


def _augmentation(augment: AugmentConfig | None) -> Callable[..., Any] | None:
    from torchvision.transforms import v2

    if augment is None:
        return None
    steps: list[Any] = []
    if augment.crop_scale != (1.0, 1.0):
        steps.append(_RandomResizedCropSameSize(augment.crop_scale))
    if augment.flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter > 0:
        j = augment.color_jitter
        steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 10, 0.5)))
    return v2.Compose(steps) if steps else None


class _RandomResizedCropSameSize:
    """A random crop of ``scale`` of the area (aspect 3/4..4/3) resized back to the input size; applied
    jointly to every input given (an image, and a ``tv_tensors.Mask`` with nearest interpolation)."""

    def __init__(self, scale: tuple[float, float]) -> None:
        self.scale = scale

    def __call__(self, *inputs: Any) -> Any:
        from torchvision.transforms import v2

        return v2.RandomResizedCrop(tuple(inputs[0].shape[-2:]), scale=self.scale, antialias=True)(*inputs)


def _hwc(image: Any) -> torch.Tensor:
    image = torch.as_tensor(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = image.permute(1, 2, 0)      # CHW -> HWC
    return image[..., :3].contiguous()


class _Cached:
    """``base[i]`` remembered after its first read (``cache=True``: small datasets read once per run)."""

    def __init__(self, base: Any, cache: bool) -> None:
        self.base, self.cache = base, cache
        self.items: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        if not self.cache:
            return self.base[index]
        if index not in self.items:
            self.items[index] = self.base[index]
        return self.items[index]


class LabelledImages(Dataset):
    """``(image, label)`` pairs from a dataset reader, augmented (training only) and preprocessed.

    ``base[i]`` gives ``(image, label, ...)``: a ``uint8`` image (``3xHxW`` or ``HxWx3``) and its class
    index, as :class:`~threedb.evaluators.datasets.ImageDataset` does. Augmentation runs on the uint8
    image, before ``preprocess``. ``cache``: keep the decoded items in memory.
    """

    def __init__(self, base: Any, preprocess: Preprocess, augment: AugmentConfig | None,
                 cache: bool = False) -> None:
        self.base, self.preprocess = _Cached(base, cache), preprocess
        self.augment = _augmentation(augment)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.base[index]
        image = _hwc(item[0])
        if self.augment is not None:
            image = self.augment(image.permute(2, 0, 1)).permute(1, 2, 0)
        return self.preprocess(image[None])[0], int(item[1])


class SegmentedImages(Dataset):
    """``(image, label mask)`` pairs for semantic segmentation from a dataset with object masks.

    ``base[i]`` is ``(uint8 image, class index, {"mask": bool HxW, ...})``. The label mask (``int64``
    ``HxW`` at the model resolution) is 1 on the object, 0 elsewhere (``classes="binary"``), or
    ``class index + 1`` on the object (``"per_class"``). Crop and flip transform the image and its mask
    together (the mask with nearest interpolation); colour jitter touches the image only. The mask is
    resized to the model resolution as the image is (bilinear, antialiased) and thresholded at 0.5.
    """

    def __init__(self, base: Any, preprocess: Preprocess, augment: AugmentConfig | None,
                 classes: str = "binary", cache: bool = False) -> None:
        self.base, self.preprocess, self.classes = _Cached(base, cache), preprocess, classes
        self.augment = _augmentation(augment)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        image, label, target = self.base[index][:3]
        chw = _hwc(image).permute(2, 0, 1)
        mask = torch.as_tensor(target["mask"]).to(torch.uint8)
        if self.augment is not None:
            chw, mask = self.augment(chw, tv_tensors.Mask(mask[None]))
            mask = mask.as_subclass(torch.Tensor)[0]
        x = self.preprocess(chw.permute(1, 2, 0)[None])[0]
        mask = resize_mask(mask, x.shape[-2:])
        return x, label_masks(mask[None], torch.tensor([int(label)]), self.classes)[0]
