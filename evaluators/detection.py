"""Detection: does the model find the rendered object's box?

Target: one box per job, the tight box of the object's pixels in the rendered mask
(``instance == 1``; occluders and the ground are not targets), in pixel-edge coordinates
(``x2 = last column + 1``) normalised to [0, 1] by the render size. Predictions (torchvision
detection dicts ``{boxes [K,4] x1y1x2y2 pixels, labels [K], scores [K]}``, or a [K, 6] tensor
``x1,y1,x2,y2,score,label``) are in pixels of the model input and are normalised by the model
input size (``jobs_meta[i]['input_size']``, else the model's resolution from :meth:`setup`, else
the render size) — the whole render is resized to the model input, so normalised coordinates
agree across the two resolutions.

Arguments: ``classmap_path``/``classmap`` (optional ``{model_uid: int | [int]}``: acceptable
labels; without it only the label-free metrics are meaningful and ``is_correct`` ignores labels),
``iou_threshold`` (0.5), ``score_threshold`` (0.5: lower-scoring boxes are ignored),
``nms_threshold`` (None: off; torchvision detectors already apply NMS), ``max_num_boxes`` (100).

Outputs: ``is_correct`` (the target matched at IoU >= threshold, with an acceptable label when a
class map is given; with no target: no box predicted), ``iou`` (best IoU of any kept box with the
target, 0 when none), ``precision``/``recall`` (labels must match) and
``precision_nolabel``/``recall_nolabel`` (any label), greedy one-to-one matching by score
(an empty prediction set has precision 1; an empty target set recall 1), ``boxes``
(float32 [max_num_boxes, 6] = x1,y1,x2,y2 normalised, score, label; best score first; -1 padding).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

from threedb.evaluators.base import Evaluator, OutputSpec, object_uid


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Normalised [x1, y1, x2, y2] of the True pixels of an HxW mask (pixel edges), None if empty."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    h, w = mask.shape
    y1, y2 = np.argmax(rows), h - np.argmax(rows[::-1])
    x1, x2 = np.argmax(cols), w - np.argmax(cols[::-1])
    return np.array([x1 / w, y1 / h, x2 / w, y2 / h], dtype=np.float64)


def match(pred_boxes: torch.Tensor, target_boxes: torch.Tensor, threshold: float,
          compatible: torch.Tensor | None = None) -> tuple[int, torch.Tensor]:
    """Greedy one-to-one matching of score-sorted predictions to targets; (#matches, IoU matrix)."""
    if len(pred_boxes) == 0 or len(target_boxes) == 0:
        return 0, torch.zeros(len(pred_boxes), len(target_boxes))
    iou = box_iou(pred_boxes, target_boxes)
    allowed = iou >= threshold
    if compatible is not None:
        allowed &= compatible
    used = torch.zeros(len(target_boxes), dtype=torch.bool)
    matches = 0
    for p in range(len(pred_boxes)):
        candidates = torch.where(allowed[p] & ~used, iou[p], torch.full_like(iou[p], -1))
        t = int(candidates.argmax())
        if candidates[t] >= 0:
            used[t] = True
            matches += 1
    return matches, iou


class DetectionEvaluator(Evaluator):
    output_type = "bboxes"
    needs = ("mask",)

    def __init__(self, classmap_path: str | Path | None = None, *, classmap: Mapping[str, Any] | None = None,
                 iou_threshold: float = 0.5, score_threshold: float = 0.5, nms_threshold: float | None = None,
                 max_num_boxes: int = 100, base_dir: str | Path | None = None) -> None:
        for name, value in (("iou_threshold", iou_threshold), ("score_threshold", score_threshold)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                raise self.arg_error(name, f"{name} must be a number in [0, 1]", value, "0 <= x <= 1")
        if nms_threshold is not None and (not isinstance(nms_threshold, (int, float)) or not 0 < nms_threshold <= 1):
            raise self.arg_error("nms_threshold", "nms_threshold must be in (0, 1] or null", nms_threshold)
        if not isinstance(max_num_boxes, int) or isinstance(max_num_boxes, bool) or max_num_boxes < 1:
            raise self.arg_error("max_num_boxes", "max_num_boxes must be a positive integer", max_num_boxes)
        if classmap_path is not None and classmap is not None:
            raise self.arg_error("classmap_path", "give classmap_path or classmap, not both", classmap_path)
        self.iou_threshold, self.score_threshold = float(iou_threshold), float(score_threshold)
        self.nms_threshold, self.max_num_boxes = nms_threshold, max_num_boxes
        self.load_classmap(classmap_path, classmap, base_dir)
        self.input_size: tuple[int, int] | None = None

    def declare_outputs(self) -> list[OutputSpec]:
        return [OutputSpec("is_correct", (), "bool"), OutputSpec("iou", (), "float32"),
                OutputSpec("precision", (), "float32"), OutputSpec("recall", (), "float32"),
                OutputSpec("precision_nolabel", (), "float32"), OutputSpec("recall_nolabel", (), "float32"),
                OutputSpec("boxes", (self.max_num_boxes, 6), "float32")]

    def setup(self, model: Any) -> None:
        pre = getattr(model, "preprocess", None)
        if pre is not None and pre.resolution is not None:
            self.input_size = tuple(pre.resolution)


    def _predictions(self, out: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(out, Mapping):
            boxes = torch.as_tensor(out["boxes"], dtype=torch.float32).reshape(-1, 4)
            scores = torch.as_tensor(out.get("scores", torch.ones(len(boxes))), dtype=torch.float32).reshape(-1)
            labels = torch.as_tensor(out.get("labels", torch.zeros(len(boxes))), dtype=torch.int64).reshape(-1)
        else:
            t = torch.as_tensor(out, dtype=torch.float32).reshape(-1, 6)
            boxes, scores, labels = t[:, :4], t[:, 4], t[:, 5].round().to(torch.int64)
        return boxes.cpu(), scores.cpu(), labels.cpu()

    def evaluate(self, batch_outputs: Any, jobs_meta: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if len(batch_outputs) != len(jobs_meta):
            raise ValueError(f"{len(batch_outputs)} model outputs for {len(jobs_meta)} jobs")
        return [self._one(out, meta) for out, meta in zip(batch_outputs, jobs_meta)]

    def _one(self, out: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
        if meta.get("instance") is not None:
            mask = np.asarray(meta["instance"]) == 1
        elif meta.get("mask") is not None:
            mask = np.asarray(meta["mask"], dtype=bool)
        else:
            raise KeyError("detection needs the rendered 'mask' (or 'instance') pass in the job metadata")
        h_in, w_in = meta.get("input_size") or self.input_size or mask.shape[:2]
        boxes, scores, labels = self._predictions(out)
        keep = scores >= self.score_threshold
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if self.nms_threshold is not None and len(boxes):
            keep = batched_nms(boxes, scores, labels, float(self.nms_threshold))
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        order = scores.argsort(descending=True)
        boxes, scores, labels = boxes[order], scores[order], labels[order]
        boxes = (boxes / torch.tensor([w_in, h_in, w_in, h_in], dtype=torch.float32)).clamp(0, 1)

        target = mask_box(mask)
        targets = torch.empty(0, 4) if target is None else torch.as_tensor(target[None], dtype=torch.float32)
        acceptable = self.classmap.get(object_uid(meta)) if self.classmap is not None else None
        if self.classmap is not None and acceptable is None:
            raise KeyError(f"object uid {object_uid(meta)!r} is not in the class map {self.classmap_source}")
        m_any, iou = match(boxes, targets, self.iou_threshold)
        compatible = None
        if acceptable is not None:
            ok = torch.tensor([int(l) in acceptable for l in labels], dtype=torch.bool)
            compatible = ok[:, None].expand(len(labels), len(targets))
        m_lab, _ = match(boxes, targets, self.iou_threshold, compatible) if acceptable is not None else (m_any, iou)
        n_pred, n_tgt = len(boxes), len(targets)
        prec = lambda m: float(m / n_pred) if n_pred else 1.0  # noqa: E731
        rec = lambda m: float(m / n_tgt) if n_tgt else 1.0  # noqa: E731
        is_correct = (m_lab == n_tgt) if n_tgt else n_pred == 0
        padded = np.full((self.max_num_boxes, 6), -1.0, dtype=np.float32)
        k = min(n_pred, self.max_num_boxes)
        if k:
            padded[:k, :4] = boxes[:k].numpy()
            padded[:k, 4] = scores[:k].numpy()
            padded[:k, 5] = labels[:k].numpy()
        return {
            "is_correct": bool(is_correct),
            "iou": float(iou.max()) if iou.numel() else 0.0,
            "precision": prec(m_lab), "recall": rec(m_lab),
            "precision_nolabel": prec(m_any), "recall_nolabel": rec(m_any),
            "boxes": padded.tolist(),
        }
