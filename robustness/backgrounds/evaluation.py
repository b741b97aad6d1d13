"""Scoring a model on the background variants (thesis ch. 2, app. A): accuracies, BG-GAP, per-image
categories, adversarial backgrounds, and the train-variant x test-variant accuracy matrix.

Predictions are ``{variant: {source_id: predicted class}}`` and labels ``{source_id: class}`` (the source's
class, which is the foreground's: a MIXED-NEXT image of a dog is labelled dog), as
:attr:`.pipeline.VariantSet.labels` gives them; ids from :meth:`.pipeline.VariantSet.batch`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np

from .errors import BackgroundsError
from .variants import MIXED_RAND, MIXED_SAME, ONLY_BG_T, ORIGINAL, VARIANTS, fit_background

Predictions = Mapping[str, Mapping[str, int]]
Predict = Callable[[np.ndarray], Any]

BG_REQUIRED = "BG Required"
BG_FOOLS = "BG Fools"
BG_FG_REQUIRED = "BG+FG Required"
BG_FG_FOOLS = "BG+FG Fools"
BG_IRRELEVANT = "BG Irrelevant"
CATEGORIES: tuple[str, ...] = (BG_REQUIRED, BG_FOOLS, BG_FG_REQUIRED, BG_FG_FOOLS, BG_IRRELEVANT)


# --------------------------------------------------------------------------- accuracies

def accuracy(predictions: Mapping[str, int], labels: Mapping[str, int], *, where: str = "predictions") -> float:
    """Fraction of ``{source_id: predicted}`` equal to the labels; every id needs a label."""
    if not predictions:
        raise BackgroundsError(f"{where}: no predictions")
    missing = [i for i in predictions if i not in labels]
    if missing:
        raise BackgroundsError(f"{where}: no label for {len(missing)} ids, e.g. {missing[:3]}")
    return sum(int(p) == int(labels[i]) for i, p in predictions.items()) / len(predictions)


def accuracies(predictions: Predictions, labels: Mapping[str, int]) -> dict[str, float]:
    """``{variant: accuracy}``."""
    return {v: accuracy(p, labels, where=f"variant {v!r}") for v, p in predictions.items()}


def bg_gap(accuracy_by_variant: Mapping[str, float]) -> float:
    """BG-GAP = acc(MIXED-SAME) - acc(MIXED-RAND): the accuracy lost when the background stops matching."""
    missing = [v for v in (MIXED_SAME, MIXED_RAND) if v not in accuracy_by_variant]
    if missing:
        raise BackgroundsError(f"BG-GAP needs the accuracies of MIXED-SAME and MIXED-RAND; missing {missing}")
    return float(accuracy_by_variant[MIXED_SAME]) - float(accuracy_by_variant[MIXED_RAND])


# --------------------------------------------------------------------------- per-image categories

def category(full: bool, foreground: bool, background: bool) -> str:
    """Thesis Table 2.3 from three correctness bits: the full image (ORIGINAL), the foreground (MIXED-RAND),
    the background (ONLY-BG-T). Full and foreground agreeing is BG Irrelevant, whatever the background."""
    if bool(full) == bool(foreground):
        return BG_IRRELEVANT
    if full:                                  # right with the background, wrong without it
        return BG_REQUIRED if background else BG_FG_REQUIRED
    return BG_FG_FOOLS if background else BG_FOOLS


def image_categories(predictions: Predictions, labels: Mapping[str, int]) -> dict[str, str]:
    """``{source_id: category}`` for every id predicted on all of ORIGINAL, MIXED-RAND and ONLY-BG-T."""
    missing = [v for v in (ORIGINAL, MIXED_RAND, ONLY_BG_T) if v not in predictions]
    if missing:
        raise BackgroundsError(f"the categories need predictions on ORIGINAL, MIXED-RAND and ONLY-BG-T; "
                               f"missing {missing}")
    full, fg, bg = predictions[ORIGINAL], predictions[MIXED_RAND], predictions[ONLY_BG_T]
    ids = [i for i in full if i in fg and i in bg]
    if not ids:
        raise BackgroundsError("no source id is predicted on all of ORIGINAL, MIXED-RAND and ONLY-BG-T "
                               "(make the variants with paired=True)")
    missing_labels = [i for i in ids if i not in labels]
    if missing_labels:
        raise BackgroundsError(f"no label for {len(missing_labels)} ids, e.g. {missing_labels[:3]}")
    return {i: category(int(full[i]) == labels[i], int(fg[i]) == labels[i], int(bg[i]) == labels[i])
            for i in ids}


def category_counts(categories: Mapping[str, str] | Iterable[str]) -> dict[str, int]:
    """How many images fall in each of :data:`CATEGORIES` (every category present, 0 when empty)."""
    values = categories.values() if isinstance(categories, Mapping) else categories
    counts = {c: 0 for c in CATEGORIES}
    for value in values:
        if value not in counts:
            raise BackgroundsError(f"unknown category {value!r}; the categories are {list(CATEGORIES)}")
        counts[value] += 1
    return counts


# --------------------------------------------------------------------------- accuracy matrix

@dataclass(frozen=True)
class AccuracyMatrix:
    """Accuracy of a model trained on ``train[i]`` tested on ``test[j]`` (thesis Table A.2); ``nan`` where
    that pair was not evaluated."""

    train: list[str]
    test: list[str]
    values: np.ndarray

    def get(self, train: str, test: str) -> float:
        """One cell."""
        return float(self.values[self.train.index(train), self.test.index(test)])

    def table(self, title: str = "accuracy (%): trained on (rows) x tested on (columns)") -> dict:
        """The matrix as a ``report.json`` table (percentages rounded to 2 places, ``""`` where missing)."""
        rows = [[name] + ["" if math.isnan(v) else round(100.0 * v, 2) for v in row]
                for name, row in zip(self.train, self.values)]
        return {"title": title, "columns": ["trained on"] + list(self.test), "rows": rows}


def accuracy_matrix(predictions: Mapping[str, Predictions], labels: Mapping[str, int], *,
                    test_order: Optional[Sequence[str]] = None) -> AccuracyMatrix:
    """The train-variant x test-variant matrix from ``{train name: {test variant: {source_id: predicted}}}``.

    Rows keep the order of ``predictions``; columns follow ``test_order`` (default: the variants in
    :data:`~.variants.VARIANTS` order, then any other test set in first-seen order).
    """
    if not predictions:
        raise BackgroundsError("no predictions for the accuracy matrix")
    seen = list(dict.fromkeys(t for per_test in predictions.values() for t in per_test))
    if test_order is None:
        test = [v for v in VARIANTS if v in seen] + [t for t in seen if t not in VARIANTS]
    else:
        test = list(test_order)
    values = np.full((len(predictions), len(test)), np.nan)
    for r, (train, per_test) in enumerate(predictions.items()):
        for c, name in enumerate(test):
            if name in per_test:
                values[r, c] = accuracy(per_test[name], labels, where=f"trained on {train!r}, tested on {name!r}")
    return AccuracyMatrix(train=list(predictions), test=test, values=values)


# --------------------------------------------------------------------------- adversarial backgrounds

@dataclass(frozen=True)
class ForegroundSample:
    """A foreground to attack: its image (``HxWx3`` uint8), exact or GrabCut mask (``HxW`` bool), class."""

    id: str
    label: int
    image: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class BackgroundSample:
    """A candidate background (an ONLY-BG-T image, ``HxWx3`` uint8) and the class it came from."""

    id: str
    label: int
    image: np.ndarray


@dataclass(frozen=True)
class AdversarialBackgrounds:
    """Result of :func:`adversarial_backgrounds`.

    ``flips[i, j]``: 1 if background ``j`` made the model predict its own class on foreground ``i``, 0 if
    not, -1 if not tried (same class, or outside the sampled budget). ``fooled_fraction``: share of the
    foregrounds that some tried background flips (the thesis's 88%); ``success_rate[j]``: share of the
    foregrounds background ``j`` was tried on that it flips (its ASR, ``nan`` if never tried);
    ``fooled_by_class[c]``: share of the other-class foregrounds tried against class ``c`` that some
    background of ``c`` flips (Figure 2-4's "total portion fooled"); ``evaluations``: composites classified.
    """

    foreground_ids: list[str]
    background_ids: list[str]
    foreground_labels: np.ndarray
    background_labels: np.ndarray
    flips: np.ndarray
    fooled_fraction: float
    success_rate: np.ndarray
    fooled_by_class: dict[int, float]
    evaluations: int

    @property
    def fooled(self) -> dict[str, bool]:
        """``{foreground id: some background flips it}``."""
        return dict(zip(self.foreground_ids, (self.flips == 1).any(axis=1).tolist()))

    def most_adversarial(self, k: int = 5, label: Optional[int] = None) -> list[tuple[str, float]]:
        """The ``k`` backgrounds (of class ``label``, or of any class) with the highest ASR, as ``(id, ASR)``;
        ties go to the background flipping more foregrounds, then to the smaller id."""
        flipped = (self.flips == 1).sum(axis=0)
        order = sorted((j for j in range(len(self.background_ids))
                        if not math.isnan(self.success_rate[j])
                        and (label is None or int(self.background_labels[j]) == label)),
                       key=lambda j: (-self.success_rate[j], -flipped[j], self.background_ids[j]))
        return [(self.background_ids[j], float(self.success_rate[j])) for j in order[:k]]


def adversarial_backgrounds(predict: Predict, foregrounds: Sequence[ForegroundSample],
                            backgrounds: Sequence[BackgroundSample], *, budget: Optional[int] = None,
                            seed: int = 0, batch_size: int = 64) -> AdversarialBackgrounds:
    """Try backgrounds of the other classes behind every foreground (thesis §2.3, app. A.7).

    Each foreground is pasted unchanged onto every background whose class differs from its own (or, with
    ``budget``, onto ``budget`` of them drawn without replacement by a numpy ``Generator`` seeded with
    ``seed``); a background of another size is resized to the foreground's. ``predict`` gets batches
    ``NxHxWx3`` uint8 (at most ``batch_size``, one image size per batch) and returns ``N`` class indices
    (numpy, list or torch tensor; :func:`torch_predictor` wraps a model).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BackgroundsError(f"batch_size must be a positive integer, got {batch_size!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise BackgroundsError(f"budget must be a positive integer or None, got {budget!r}")
    if not foregrounds or not backgrounds:
        raise BackgroundsError(f"need foregrounds and backgrounds, got {len(foregrounds)} and {len(backgrounds)}")
    for fg in foregrounds:
        _check_foreground(fg)
    for bg in backgrounds:
        if not isinstance(bg.image, np.ndarray) or bg.image.ndim != 3 or bg.image.shape[2] != 3 \
                or bg.image.dtype != np.uint8:
            raise BackgroundsError(f"background {bg.id!r}: image must be HxWx3 uint8, got "
                                   f"shape {getattr(bg.image, 'shape', None)}")
    fg_labels = np.array([int(f.label) for f in foregrounds], dtype=np.int64)
    bg_labels = np.array([int(b.label) for b in backgrounds], dtype=np.int64)
    flips = np.full((len(foregrounds), len(backgrounds)), -1, dtype=np.int8)
    rng = np.random.default_rng(seed)
    batch = _Batcher(predict, batch_size, flips, bg_labels)
    fitted: dict[int, np.ndarray] = {}
    for i, fg in enumerate(foregrounds):
        candidates = np.flatnonzero(bg_labels != fg_labels[i])
        if budget is not None and budget < len(candidates):
            candidates = np.sort(rng.choice(candidates, size=budget, replace=False))
        shape = fg.image.shape
        if batch.shape != shape:
            batch.flush()
            batch.shape, fitted = shape, {}
        pixels = np.flatnonzero(fg.mask.reshape(-1))
        values = fg.image.reshape(-1, 3)[pixels]
        for j in candidates:
            j = int(j)
            background = fitted.get(j)
            if background is None:
                background = fitted[j] = fit_background(backgrounds[j].image, shape[0], shape[1])
            slot = batch.slot(i, j)
            slot[...] = background
            slot.reshape(-1, 3)[pixels] = values
    batch.flush()

    tried = flips >= 0
    flipped = flips == 1
    tried_fg = tried.any(axis=1)
    fooled_fraction = float(flipped.any(axis=1)[tried_fg].mean()) if tried_fg.any() else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        success = flipped.sum(axis=0) / tried.sum(axis=0)
    by_class: dict[int, float] = {}
    for c in sorted(set(bg_labels.tolist())):
        cols = bg_labels == c
        against = tried[:, cols].any(axis=1)
        if against.any():
            by_class[c] = float(flipped[:, cols].any(axis=1)[against].mean())
    return AdversarialBackgrounds(foreground_ids=[f.id for f in foregrounds],
                                  background_ids=[b.id for b in backgrounds],
                                  foreground_labels=fg_labels, background_labels=bg_labels, flips=flips,
                                  fooled_fraction=fooled_fraction, success_rate=success.astype(np.float64),
                                  fooled_by_class=by_class, evaluations=int(tried.sum()))


class _Batcher:
    """Collects composites of one image size into a preallocated batch; classifies it when full."""

    def __init__(self, predict: Predict, size: int, flips: np.ndarray, bg_labels: np.ndarray) -> None:
        self.predict, self.size, self.flips, self.bg_labels = predict, size, flips, bg_labels
        self.shape: Optional[tuple[int, ...]] = None
        self.buffer: Optional[np.ndarray] = None
        self.pairs: list[tuple[int, int]] = []

    def slot(self, i: int, j: int) -> np.ndarray:
        if len(self.pairs) == self.size:
            self.flush()
        if self.buffer is None or self.buffer.shape[1:] != self.shape:
            self.buffer = np.empty((self.size,) + tuple(self.shape), dtype=np.uint8)
        self.pairs.append((i, j))
        return self.buffer[len(self.pairs) - 1]

    def flush(self) -> None:
        if not self.pairs:
            return
        n = len(self.pairs)
        predicted = _as_labels(self.predict(self.buffer[:n]), n)
        rows, cols = np.array(self.pairs).T
        self.flips[rows, cols] = (predicted == self.bg_labels[cols]).astype(np.int8)
        self.pairs = []


def _as_labels(output: Any, n: int) -> np.ndarray:
    if hasattr(output, "detach"):
        output = output.detach().cpu().numpy()
    labels = np.asarray(output)
    if labels.shape != (n,):
        raise BackgroundsError(f"predict returned shape {labels.shape} for a batch of {n}: expected {n} class indices")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
            raise BackgroundsError(f"predict must return class indices, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _check_foreground(fg: ForegroundSample) -> None:
    image, mask = fg.image, np.asarray(fg.mask)
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BackgroundsError(f"foreground {fg.id!r}: image must be HxWx3 uint8, got shape "
                               f"{getattr(image, 'shape', None)}")
    if mask.shape != image.shape[:2] or mask.dtype != bool:
        raise BackgroundsError(f"foreground {fg.id!r}: mask must be HxW bool like its image {image.shape[:2]}, "
                               f"got shape {mask.shape} dtype {mask.dtype}")


def torch_predictor(model: Any, *, device: Any = None) -> Callable[[np.ndarray], np.ndarray]:
    """``predict`` for a torch classifier taking ``NxCxHxW`` float images in ``[0, 1]`` (normalisation inside
    the model, as in :mod:`threedb.robustness`): converts the uint8 batch, runs it in eval mode under
    ``torch.inference_mode`` on ``device`` (default: the model's), returns the argmax classes."""
    import torch

    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                out = model(x).argmax(dim=1)
        finally:
            model.train(training)
        return out.cpu().numpy()

    return predict
