"""Segmentation: intersection over union of the predicted object pixels with the rendered mask.

Model output per batch: logits ``[N, C, h, w]`` (C > 1: per-pixel argmax; class
``background_class`` is background) or ``[N, 1, h, w]`` / ``[N, h, w]`` binary logits
(foreground where > ``logit_threshold``); a torchvision segmentation dict's ``out`` is used.
Logits are resized bilinearly to the render size before the per-pixel decision (the whole render
was resized to the model input, so the maps align).

Target: the rendered mask (``instance == 1``); object pixels carry the object's class from
``classmap_path``/``classmap`` (``{model_uid: int | [int]}``, first entry; optional) or 1.

Outputs: ``iou`` (binary: any non-background prediction vs the mask), ``iou_class`` (prediction
== the object's class vs the mask; equals ``iou`` for a binary model or without a class map),
``iou_background``, ``mean_iou`` (mean of ``iou_class`` and ``iou_background``),
``pixel_accuracy``, ``is_correct`` (``iou_class >= iou_threshold``, default 0.5), ``prediction``
([1]: the most frequent predicted class on the object's pixels, -1 with an empty mask).
An IoU whose union is empty is 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from threedb.evaluators.base import Evaluator, OutputSpec, object_uid


def iou(pred: np.ndarray, target: np.ndarray) -> float:
    """IoU of two boolean maps (1.0 when both are empty)."""
    union = np.logical_or(pred, target).sum()
    return float(np.logical_and(pred, target).sum() / union) if union else 1.0


class SegmentationEvaluator(Evaluator):
    output_type = "classes"
    needs = ("mask",)

    def __init__(self, classmap_path: str | Path | None = None, *, classmap: Mapping[str, Any] | None = None,
                 background_class: int = 0, iou_threshold: float = 0.5, logit_threshold: float = 0.0,
                 base_dir: str | Path | None = None) -> None:
        if not isinstance(iou_threshold, (int, float)) or isinstance(iou_threshold, bool) or not 0 <= iou_threshold <= 1:
            raise self.arg_error("iou_threshold", "iou_threshold must be in [0, 1]", iou_threshold)
        if not isinstance(background_class, int) or isinstance(background_class, bool):
            raise self.arg_error("background_class", "background_class must be a class index", background_class)
        self.background_class, self.iou_threshold = background_class, float(iou_threshold)
        self.logit_threshold = float(logit_threshold)
        self.load_classmap(classmap_path, classmap, base_dir)

    def declare_outputs(self) -> list[OutputSpec]:
        names = ("iou", "iou_class", "iou_background", "mean_iou", "pixel_accuracy")
        return ([OutputSpec("is_correct", (), "bool")] + [OutputSpec(n, (), "float32") for n in names]
                + [OutputSpec("prediction", (1,), "int64")])


    def evaluate(self, batch_outputs: Any, jobs_meta: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = batch_outputs["out"] if isinstance(batch_outputs, Mapping) else batch_outputs
        logits = torch.as_tensor(out).detach().float().cpu()
        if logits.ndim == 3:
            logits = logits[:, None]
        if logits.ndim != 4 or logits.shape[0] != len(jobs_meta):
            raise ValueError(f"expected logits [{len(jobs_meta)}, C, h, w], got {tuple(logits.shape)}")
        return [self._one(logits[i:i + 1], meta) for i, meta in enumerate(jobs_meta)]

    def _one(self, logits: torch.Tensor, meta: Mapping[str, Any]) -> dict[str, Any]:
        if meta.get("instance") is not None:
            mask = np.asarray(meta["instance"]) == 1
        elif meta.get("mask") is not None:
            mask = np.asarray(meta["mask"], dtype=bool)
        else:
            raise KeyError("segmentation needs the rendered 'mask' (or 'instance') pass in the job metadata")
        if tuple(logits.shape[-2:]) != mask.shape:
            logits = F.interpolate(logits, size=mask.shape, mode="bilinear", align_corners=False)
        binary = logits.shape[1] == 1
        if binary:
            classes = (logits[0, 0] > self.logit_threshold).numpy().astype(np.int64)
            background, object_class = 0, 1
        else:
            classes = logits[0].argmax(0).numpy()
            background = self.background_class
            object_class = 1
            if self.classmap is not None:
                uid = object_uid(meta)
                if uid not in self.classmap:
                    raise KeyError(f"object uid {uid!r} is not in the class map {self.classmap_source}")
                object_class = self.classmap[uid][0]
        foreground = classes != background
        target = np.where(mask, object_class, background)
        iou_fg = iou(foreground, mask)
        iou_cls = iou(classes == object_class, mask)
        iou_bg = iou(classes == background, ~mask)
        values, counts = np.unique(classes[mask], return_counts=True)
        return {
            "is_correct": bool(iou_cls >= self.iou_threshold),
            "iou": iou_fg, "iou_class": iou_cls, "iou_background": iou_bg,
            "mean_iou": (iou_cls + iou_bg) / 2,
            "pixel_accuracy": float((classes == target).mean()),
            "prediction": [int(values[counts.argmax()]) if len(values) else -1],
        }
