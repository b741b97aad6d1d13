"""The input of the background-variant pipeline: one labelled image with an exact mask or boxes."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from .errors import BackgroundsError
from .foreground import _check_image, pixel_box


@dataclass(frozen=True)
class Sample:
    """One labelled image for the background variants.

    ``image``: ``HxWx3`` uint8 (RGB); ``label``: class index; ``id``: unique name (the manifest's source id);
    ``mask``: exact ``HxW`` bool foreground (rendered data), used instead of boxes and GrabCut when given;
    ``boxes``: ``Nx4`` continuous ``x0, y0, x1, y1`` pixel boxes (COCO/VOC/``ImageDataset`` style), of which
    the thesis keeps only images with exactly one. An empty ``boxes`` means "annotated, no box" (filtered
    with a count); neither a mask nor boxes is an error.
    """

    image: np.ndarray
    label: int
    id: str
    mask: Optional[np.ndarray] = None
    boxes: Optional[np.ndarray] = None

    @classmethod
    def from_item(cls, image: Any, label: Any, target: Mapping[str, Any], *,
                  channels_first: Optional[bool] = None) -> "Sample":
        """A sample from an ``ImageDataset`` item ``(image, label, target)`` (no ``transform``: the image is a
        ``3xHxW`` uint8 tensor; ``target`` has ``id`` and, when the dataset has them, ``mask`` and ``boxes``).

        ``channels_first``: whether ``image`` is ``3xHxW``; by default tensors (anything with ``permute``) are
        and numpy arrays are not.
        """
        if "id" not in target:
            raise BackgroundsError("the item's target has no 'id' (use ImageDataset with extras=True)")
        if channels_first is None:
            channels_first = hasattr(image, "permute")
        array = _numpy(image)
        if channels_first:
            if array.ndim != 3:
                raise BackgroundsError(f"sample {target['id']!r}: image must be 3xHxW, got shape {array.shape}")
            array = np.moveaxis(array, 0, -1)
        mask = target.get("mask")
        boxes = target.get("boxes")
        return cls(image=np.ascontiguousarray(array), label=int(_numpy(label)), id=str(target["id"]),
                   mask=None if mask is None else _numpy(mask).astype(bool),
                   boxes=None if boxes is None else _numpy(boxes).astype(np.float64).reshape(-1, 4))

    def resized(self, height: int, width: int) -> "Sample":
        """The sample at ``height x width``: the image by area (shrinking) or bilinear (enlarging)
        interpolation, the mask by nearest neighbour, the boxes scaled."""
        h, w = self.image.shape[:2]
        shrink = height * width < h * w
        image = cv2.resize(self.image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        mask = None
        if self.mask is not None:
            mask = cv2.resize(self.mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        boxes = None
        if self.boxes is not None:
            scale = np.array([width / w, height / h, width / w, height / h])
            boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4) * scale
        return replace(self, image=image, mask=mask, boxes=boxes)


def check_sample(sample: Sample, num_classes: int) -> Sample:
    """``sample`` with a bool mask and ``Nx4`` float boxes, or :class:`BackgroundsError` naming its id."""
    where = f"sample {sample.id!r}"
    _check_image(sample.image, f"{where}: image")
    height, width = sample.image.shape[:2]
    label = sample.label
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < num_classes:
        raise BackgroundsError(f"{where}: label {label!r} is not a class index in 0..{num_classes - 1}")
    if sample.mask is None and sample.boxes is None:
        raise BackgroundsError(f"{where} has neither a mask nor a box: the variants need one of them")
    mask = None
    if sample.mask is not None:
        mask = np.asarray(sample.mask)
        if mask.shape != (height, width):
            raise BackgroundsError(f"{where}: mask is {mask.shape}, its image {(height, width)} (HxW)")
        mask = mask.astype(bool, copy=False)
    boxes = None
    if sample.boxes is not None:
        boxes = np.asarray(sample.boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise BackgroundsError(f"{where}: boxes must be Nx4 (x0, y0, x1, y1), got shape {boxes.shape}")
        for j, box in enumerate(boxes):
            pixel_box(box, height, width, where=f"{where} box {j}")
    return replace(sample, label=int(label), mask=mask, boxes=boxes)


def check_ids(samples: Sequence[Sample]) -> None:
    """Every sample id is unique (the manifest names outputs by it)."""
    seen: set[str] = set()
    for sample in samples:
        if sample.id in seen:
            raise BackgroundsError(f"sample id {sample.id!r} appears more than once")
        seen.add(sample.id)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)
