"""The dataset and model of a robustness job, in pixel space: batches of ``[0, 1]`` images at the model
resolution and a model of such images (normalisation inside, :func:`threedb.evaluators.pixel_space.pixel_model`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from threedb.evaluators.jobs.config import JobConfig, model_spec
from threedb.evaluators.models import LoadedModel, ModelError, check_outputs, load_model, resolve_device
from threedb.evaluators.pixel_space import pixel_model
from threedb.evaluators.preprocess import INTERPOLATION, Preprocess


class TensorOutput(nn.Module):
    """A model whose output is a tuple or a ``{"out": ...}`` mapping (torchvision segmentation), as a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, Mapping):
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


@dataclass
class JobModel:
    """A loaded model as a function of ``[0, 1]`` NCHW images, with what the report says about it."""

    model: nn.Module
    loaded: LoadedModel
    preprocess: Preprocess       #: resize to the model resolution and scale to [0, 1] (no normalisation)
    output_shape: tuple[int, ...]   #: per-image output shape on a blank image (``(K,)`` or ``(K, H, W)``)
    card: str | None = None         #: the model card it came from, when any

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    def describe(self) -> dict[str, Any]:
        return {"source": self.loaded.source, "kind": self.loaded.kind, "card": self.card, "classes": self.loaded.class_names,
                "resolution": list(self.preprocess.resolution) if self.preprocess.resolution else None,
                "output_shape": list(self.output_shape)}


def load_job_model(spec: Mapping[str, Any], *, base_dir: str | Path, device: torch.device,
                   file: Any = None, key: str = "model") -> JobModel:
    """Load an ``inference:`` mapping as a pixel-space model; the output is checked against the label map."""
    loaded = load_model(spec, base_dir=base_dir, file=file, key=key, device=device, check_output=False)
    # one blank image: checked against the label map / output_shape, and its output shape kept
    out = check_outputs(loaded, file=file, key=key)
    model, pre = pixel_model(loaded)
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{loaded.source}: a robustness job needs a model whose output is a tensor "
                         f"(logits), not {type(out).__name__}")
    return JobModel(TensorOutput(model).eval(), loaded, pre, tuple(out.shape[1:]))


def stratified(labels: Sequence[int], n: int | None) -> list[int]:
    """Indices of at most ``n`` examples taken round-robin over the classes (dataset order within a class),
    so every class is represented about equally and each batch mixes classes; ``None`` keeps all, in order."""
    if n is None or n >= len(labels):
        return list(range(len(labels)))
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    queues = [by_class[c] for c in sorted(by_class)]
    out: list[int] = []
    depth = 0
    while len(out) < n:
        for queue in queues:
            if depth < len(queue) and len(out) < n:
                out.append(queue[depth])
        depth += 1
    return out


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A bool ``HxW`` object mask at ``size``, resized as the image is (bilinear with antialiasing, the
    resize of :mod:`threedb.evaluators.preprocess`) and thresholded at 0.5; unchanged at its own size.

    The convention of ``threedb train``'s segmentation data
    (:class:`threedb.evaluators.training.data.SegmentedImages`), so a model is attacked against the
    masks it was trained on."""
    mask = torch.as_tensor(mask)
    if tuple(mask.shape) == tuple(size):
        return mask.bool()
    return F.interpolate(mask[None, None].float(), size=tuple(size), mode=INTERPOLATION, antialias=True,
                         align_corners=False)[0, 0] > 0.5


def label_masks(masks: torch.Tensor, labels: torch.Tensor, classes: str) -> torch.Tensor:
    """Per-pixel labels (``int64 NxHxW``) from bool object masks ``NxHxW`` and class indices ``N``:
    ``classes="binary"``: 1 on the object, 0 elsewhere; ``"per_class"``: class index + 1 on the object
    (the two ``segmentation.classes`` of ``threedb train``)."""
    if classes not in ("binary", "per_class"):
        raise ValueError(f"classes must be binary or per_class, got {classes!r}")
    value = torch.ones_like(labels) if classes == "binary" else labels.long() + 1
    return masks.long() * value.long()[:, None, None]


@dataclass
class Batch:
    """A batch of examples: ``x`` in [0, 1] at the model resolution, labels, ids, and masks when asked."""

    index: int
    start: int                   #: position of its first example in the job's example order
    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]
    masks: torch.Tensor | None = None   #: bool NxHxW object masks at the model resolution (:func:`resize_mask`)


def iterate_batches(dataset: Any, indices: Sequence[int], preprocess: Preprocess, batch_size: int,
                    device: torch.device, *, start_batch: int = 0, masks: bool = False) -> Iterator[Batch]:
    """Batches of ``dataset[indices]`` (an :class:`~threedb.evaluators.datasets.ImageDataset` with extras),
    from batch ``start_batch`` on; batch ``b`` always holds the same examples, so a resumed job sees the
    batches of an uninterrupted one."""
    for b in range(start_batch, (len(indices) + batch_size - 1) // batch_size):
        chunk = indices[b * batch_size:(b + 1) * batch_size]
        items = [dataset[i] for i in chunk]
        images = [item[0].permute(1, 2, 0) for item in items]  # 3xHxW uint8 -> HxWx3
        x = preprocess(images).to(device)
        y = torch.tensor([int(item[1]) for item in items], dtype=torch.long, device=device)
        ids = [str(item[2]["id"]) for item in items]
        mask_t = None
        if masks:
            size = tuple(x.shape[-2:])
            mask_t = torch.stack([resize_mask(item[2]["mask"], size) for item in items]).to(device)
        yield Batch(b, b * batch_size, x, y, ids, mask_t)


def open_dataset(config: JobConfig[Any]) -> Any:
    """The image-folder dataset of a job's ``data:`` section (:class:`~threedb.evaluators.jobs.config.DataConfig`),
    filtered to its ``environments``; a missing or empty dataset is a config error naming the key."""
    from threedb.evaluators.datasets import ImageDataset

    data = config.schema.data
    root = Path(data.root)
    if not root.is_dir():
        raise config.error("data.root", f"dataset folder not found: {root}", value=data.root)
    dataset = ImageDataset(root)
    if data.environments is not None:
        dataset = dataset.subset(environments=data.environments)
    if len(dataset) == 0:
        raise config.error("data", f"dataset {root} has no examples (after the environments filter)")
    return dataset


def open_job(config: JobConfig[Any], device: Optional[str] = None) -> tuple[torch.device, Any, JobModel]:
    """What every dataset job opens first, each checked with errors naming its key: the device (``--device``
    over the config's ``device:``), the dataset and the pixel-space model (with its card, when any)."""
    schema = config.schema
    dev = resolve_device(device or schema.device, file=config.file_of("device") if device is None else "--device",
                         key="device")
    dataset = open_dataset(config)
    spec, base_dir = model_spec(schema.model, config)
    job_model = load_job_model(spec, base_dir=base_dir, device=dev, file=config.file_of("model"), key="model")
    job_model.card = schema.model.get("card")
    return dev, dataset, job_model


__all__ = ["Batch", "JobModel", "TensorOutput", "iterate_batches", "label_masks", "load_job_model", "open_dataset",
           "open_job", "resize_mask", "stratified"]

