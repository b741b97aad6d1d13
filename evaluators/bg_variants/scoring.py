"""Scoring models on the variant sets: predictions per variant, per-image rows, categories, adversarial
backgrounds (the algorithms are :mod:`threedb.robustness.backgrounds.evaluation`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from threedb.evaluators.jobs.data import JobModel
from threedb.robustness.backgrounds import (MIXED_RAND, ONLY_BG_T, ORIGINAL, AdversarialBackgrounds, VariantSet,
                                            accuracies, adversarial_backgrounds, bg_gap, image_categories)


def job_predictor(job_model: JobModel) -> Callable[[np.ndarray], np.ndarray]:
    """``predict(NxHxWx3 uint8) -> N classes`` through the job model's preprocessing (resize, [0, 1])."""

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = job_model.preprocess(torch.from_numpy(np.ascontiguousarray(batch))).to(job_model.device)
            return job_model.model(x).argmax(1).cpu().numpy()

    return predict


def predict_variants(vset: VariantSet, predict: Callable[[np.ndarray], np.ndarray], batch_size: int,
                     on_batch: Optional[Callable[[int], None]] = None) -> dict[str, dict[str, int]]:
    """``{variant: {source_id: predicted class}}`` for every variant of ``vset``."""
    out: dict[str, dict[str, int]] = {}
    for variant in vset.variants:
        rows = vset.variant(variant)
        preds: dict[str, int] = {}
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = np.stack([vset.image(row) for row in chunk])
            for row, p in zip(chunk, predict(batch)):
                preds[row.source_id] = int(p)
            if on_batch is not None:
                on_batch(len(chunk))
        out[variant] = preds
    return out


def has_categories(variants: tuple[str, ...]) -> bool:
    """Whether the per-image categories can be computed (ORIGINAL, MIXED-RAND and ONLY-BG-T made)."""
    return all(v in variants for v in (ORIGINAL, MIXED_RAND, ONLY_BG_T))


def example_rows(model: str, predictions: dict[str, dict[str, int]], labels: dict[str, int],
                 classes: list[str], categories: Optional[dict[str, str]]) -> list[dict[str, Any]]:
    """One row per source image for ``model``: its predictions and correctness per variant, its category."""
    ids = list(dict.fromkeys(i for preds in predictions.values() for i in preds))
    rows = []
    for i in ids:
        label = labels[i]
        preds = {v: p[i] for v, p in predictions.items() if i in p}
        rows.append({"model": model, "id": i, "label": label, "label_name": classes[label], "predictions": preds,
                     "correct": {v: p == label for v, p in preds.items()},
                     "category": categories.get(i) if categories is not None else None})
    return rows


def predictions_from_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{variant: {id: predicted}}`` back from one model's rows (a resumed job re-reads them)."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        for variant, p in row["predictions"].items():
            out.setdefault(variant, {})[row["id"]] = int(p)
    return out


@dataclass
class ModelScores:
    """One model's scores on the variants."""

    name: str
    predictions: dict[str, dict[str, int]]
    accuracy: dict[str, float]
    bg_gap: Optional[float]
    categories: Optional[dict[str, str]]
    adversarial: Optional[AdversarialBackgrounds]


def score(name: str, predictions: dict[str, dict[str, int]], labels: dict[str, int]) -> ModelScores:
    """Accuracies, BG-GAP (when MIXED-SAME and MIXED-RAND were made) and categories of one model."""
    acc = accuracies(predictions, labels)
    try:
        gap: Optional[float] = bg_gap(acc)
    except ValueError:
        gap = None
    cats = image_categories(predictions, labels) if has_categories(tuple(predictions)) else None
    return ModelScores(name, predictions, acc, gap, cats, None)


def adversarial(vset: VariantSet, predict: Callable[[np.ndarray], np.ndarray], *, budget: Optional[int],
                seed: int, batch_size: int) -> Optional[AdversarialBackgrounds]:
    """Adversarial backgrounds of ``vset``'s foregrounds (None when it has no foreground or background set)."""
    foregrounds, backgrounds = vset.foreground_samples(), vset.background_samples()
    if not foregrounds or not backgrounds or vset.num_classes < 2:
        return None
    return adversarial_backgrounds(predict, foregrounds, backgrounds, budget=budget, seed=seed,
                                   batch_size=batch_size)


__all__ = ["ModelScores", "adversarial", "example_rows", "has_categories", "job_predictor", "predict_variants",
           "predictions_from_rows", "score"]
