"""The model of a certify job checked against its task and dataset before any sampling: a classifier
for ``task: classification``, a per-pixel model for ``task: segmentation``, either for ``task:
equivalence`` (with a score that fits it); the output shape must fit the dataset's classes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from threedb.evaluators.certify.config import CertifySchema
from threedb.evaluators.jobs.config import JobConfig
from threedb.evaluators.jobs.data import JobModel


@dataclass(frozen=True)
class ModelFit:
    """What the job learnt about the model: classifier or per-pixel, its class/channel count, and (per-pixel
    only) how masks are labelled (``binary`` | ``per_class``)."""

    per_pixel: bool
    channels: int
    classes: Optional[str] = None


def _names(classes: list[str]) -> str:
    return ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")


def check_model(config: JobConfig[CertifySchema], job_model: JobModel, dataset: Any) -> ModelFit:
    """One clear error (naming the key to change) when the model does not fit the task or the dataset."""
    schema = config.schema
    shape, classes, root = tuple(job_model.output_shape), list(dataset.classes), schema.data.root
    source = job_model.loaded.source
    resolution = tuple(job_model.preprocess.resolution) if job_model.preprocess.resolution else None
    if len(shape) == 1:
        if schema.task == "segmentation":
            raise config.error("task", f"model {source} is a classifier (it outputs {shape[0]} class scores per "
                               "image, not per-pixel logits): certify it with task: classification",
                               value=schema.task, expected="task: classification for a classifier")
        if schema.task == "equivalence" and schema.equiv.score != "accuracy":
            raise config.error("equivalence.score", f"the score {schema.equiv.score} compares masks, but model "
                               f"{source} is a classifier (output {list(shape)})", value=schema.equiv.score,
                               expected="score: accuracy for a classifier (or a segmentation model)")
        if shape[0] != len(classes):
            raise config.error("model", f"the model outputs {shape[0]} classes, but dataset {root} has "
                               f"{len(classes)} classes ({_names(classes)}): model and dataset do not match")
        return ModelFit(False, shape[0])
    if len(shape) == 3 and (resolution is None or shape[1:] == resolution):
        if schema.task == "classification":
            raise config.error("task", f"model {source} outputs per-pixel logits {list(shape)} per image: a "
                               "segmentation model; certify it with task: segmentation (SEGCERTIFY) or task: "
                               "equivalence", value=schema.task, expected="task: segmentation for this model")
        return ModelFit(True, shape[0], _mask_classes(config, shape[0], dataset))
    what = (f"per-pixel logits at {list(shape[1:])}, not the input size {list(resolution)}"
            if len(shape) == 3 and resolution else f"output shape {list(shape)}")
    raise config.error("model", f"model {source} returns {what} per image: a classifier must return K class "
                       "scores (N x K), a segmentation model K x H x W logits at the input resolution "
                       "(N x K x H x W)", value=None)


def _mask_classes(config: JobConfig[CertifySchema], channels: int, dataset: Any) -> str:
    """``classes: auto | binary | per_class`` of the task's section, checked against the channel count and
    the dataset's masks (needed unless equivalence runs without labels)."""
    schema = config.schema
    section = "segmentation" if schema.task == "segmentation" else "equivalence"
    needs_masks = schema.task == "segmentation" or "with_labels" in schema.equiv.modes
    if needs_masks and "mask" not in dataset.passes:
        raise config.error("data.root", f"task: {schema.task} with labels needs object masks, but dataset "
                           f"{schema.data.root} has none (its passes: {list(dataset.passes) or 'none'})",
                           value=schema.data.root)
    wanted = (schema.seg if section == "segmentation" else schema.equiv).classes
    classes = wanted if wanted != "auto" else ("binary" if channels == 2 else "per_class")
    expected = 2 if classes == "binary" else len(dataset.classes) + 1
    if needs_masks and channels != expected:
        what = ("background, object" if classes == "binary"
                else f"background + the {expected - 1} classes of dataset {schema.data.root}")
        raise config.error(f"{section}.classes", f"{section}.classes: {classes} labels the masks with {expected} "
                           f"values ({what}), but the model outputs {channels} channels", value=wanted,
                           expected="binary for a 2-channel model, per_class for 1 + the class count, or auto")
    return classes


__all__ = ["ModelFit", "check_model"]
