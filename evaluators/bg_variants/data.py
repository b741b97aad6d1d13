"""The job's dataset as background-variant samples: exact masks (rendered data) or boxes (GrabCut)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from threedb.evaluators.jobs.config import JobConfig
from threedb.evaluators.jobs.data import open_dataset, stratified
from threedb.robustness.backgrounds import Sample

from .config import BgVariantsSchema


@dataclass(frozen=True)
class LoadedSamples:
    """The samples of the job and how their foregrounds are found (``mask`` or ``grabcut``)."""

    samples: list[Sample]
    method: str
    grabcut_iterations: Optional[int]
    records: dict[str, Any]        #: sample id -> the dataset record it came from


def open_job_dataset(config: JobConfig[BgVariantsSchema]) -> Any:
    """The job's dataset: the shared ``data:`` dataset, with the boxes of ``foreground.coco`` /
    ``foreground.voc`` attached when given (an image-folder tree annotated with boxes)."""
    fg = config.schema.foreground
    if fg.coco is None and fg.voc is None:
        return open_dataset(config)
    from threedb.evaluators.datasets import ImageDataset
    from threedb.evaluators.datasets.errors import DatasetError

    data = config.schema.data
    if not Path(data.root).is_dir():
        raise config.error("data.root", f"dataset folder not found: {data.root}", value=data.root)
    key = "foreground.coco" if fg.coco is not None else "foreground.voc"
    try:
        dataset = ImageDataset(data.root, coco=fg.coco, voc=fg.voc)
    except DatasetError as exc:
        raise config.error(key, str(exc), value=fg.coco or fg.voc) from None
    if data.environments is not None:
        dataset = dataset.subset(environments=data.environments)
    if len(dataset) == 0:
        raise config.error("data", f"dataset {data.root} has no examples (after the environments filter)")
    return dataset


def foreground_method(config: JobConfig[BgVariantsSchema], dataset: Any) -> str:
    """``mask`` or ``grabcut`` for ``foreground.source`` on this dataset, or a config error naming
    ``foreground.source`` (or ``data.root`` under ``auto``) when the dataset lacks what it needs."""
    source = config.schema.foreground.source
    root = config.schema.data.root
    has_masks = "mask" in dataset.passes
    has_boxes = any(r.boxes is not None for r in dataset.records)
    if source == "mask" or (source == "auto" and has_masks):
        if not has_masks:
            raise config.error("foreground.source", f"foreground.source: mask, but dataset {root} has no object "
                               f"masks (its passes: {list(dataset.passes) or 'none'})", value=source,
                               expected="boxes (a COCO/VOC annotated dataset) or auto")
        return "mask"
    if not has_boxes:
        what = "neither object masks nor boxes" if source == "auto" else "no boxes"
        raise config.error("data.root" if source == "auto" else "foreground.source",
                           f"dataset {root} has {what}: the background variants need the foreground "
                           "of every image (export a run with its mask pass, or give COCO/VOC boxes)",
                           value=root if source == "auto" else source)
    return "grabcut"


def load_samples(config: JobConfig[BgVariantsSchema], dataset: Any,
                 on_sample: Optional[Callable[[], None]] = None) -> LoadedSamples:
    """Up to ``data.max_examples`` samples (stratified over the classes) with masks or boxes, not both."""
    method = foreground_method(config, dataset)
    indices = stratified([r.label for r in dataset.records], config.schema.data.max_examples)
    samples: list[Sample] = []
    records: dict[str, Any] = {}
    for i in indices:
        image, label, target = dataset[i]
        target = dict(target)
        if method == "mask":
            target.pop("boxes", None)
        else:
            target.pop("mask", None)
            if "boxes" not in target:      # an image without annotation: "no box" (filtered with a count)
                target["boxes"] = image.new_zeros((0, 4))
        sample = Sample.from_item(image, label, target)
        samples.append(sample)
        records[sample.id] = dataset.records[i]
        if on_sample is not None:
            on_sample()
    iterations = config.schema.foreground.grabcut_iterations if method == "grabcut" else None
    return LoadedSamples(samples, method, iterations, records)


__all__ = ["LoadedSamples", "foreground_method", "load_samples", "open_job_dataset"]
