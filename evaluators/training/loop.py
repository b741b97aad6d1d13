"""The training loop of ``threedb train``: epochs of optimiser steps on an objective, checkpoints,
resume, per-epoch evaluation, and the model card at the end.

Determinism: with the same config and seed (and the same torch build and thread count), the data
order and augmentation of epoch ``e`` depend only on ``(seed, e)``, so a run resumed from the
checkpoint of epoch ``e`` continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from threedb.evaluators.models import load_model, resolve_device
from threedb.evaluators.preprocess import Preprocess
from threedb.evaluators.training.card import write_card
from threedb.evaluators.training.config import AugmentConfig, TrainConfig
from threedb.evaluators.training.objectives import make_objective
from threedb.sim.errors import ConfigError, ThreeDBError

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
LOG = "log.jsonl"


class TrainingError(ThreeDBError):
    """Training cannot start or continue (e.g. a corrupt checkpoint); the message names the file."""


class LabelledImages(Dataset):
    """``(image, label)`` pairs from a dataset reader, augmented (training only) and preprocessed.

    ``base[i]`` gives ``(image, label, ...)``: a ``uint8`` image (``3xHxW`` or ``HxWx3``) and its class
    index, as :class:`~threedb.evaluators.datasets.ImageDataset` does.
    """

    def __init__(self, base: Any, preprocess: Preprocess, augment: AugmentConfig | None) -> None:
        from torchvision.transforms import v2

        self.base, self.preprocess = base, preprocess
        self.augment: Callable[[torch.Tensor], torch.Tensor] | None = None
        if augment is not None:
            steps: list[Any] = []
            if augment.crop_scale != (1.0, 1.0):
                steps.append(_RandomResizedCropSameSize(augment.crop_scale))
            if augment.flip:
                steps.append(v2.RandomHorizontalFlip())
            if augment.color_jitter > 0:
                j = augment.color_jitter
                steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j / 10, 0.5)))
            self.augment = v2.Compose(steps) if steps else None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.base[index]
        image = torch.as_tensor(item[0])
        if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
            image = image.permute(1, 2, 0)      # CHW -> HWC
        image = image[..., :3].contiguous()
        if self.augment is not None:
            image = self.augment(image.permute(2, 0, 1)).permute(1, 2, 0)
        return self.preprocess(image[None])[0], int(item[1])


class _RandomResizedCropSameSize:
    """A random crop of ``scale`` of the area (aspect 3/4..4/3) resized back to the input size."""

    def __init__(self, scale: tuple[float, float]) -> None:
        self.scale = scale

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        return v2.RandomResizedCrop(tuple(image.shape[-2:]), scale=self.scale, antialias=True)(image)


@dataclass
class EpochResult:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float | None
    seconds: float


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device,
             num_classes: int) -> tuple[float, list[float | None], list[list[int]]]:
    """Top-1 accuracy, per-class accuracy and the confusion matrix (rows: true class) on ``loader``."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    with torch.inference_mode():
        for images, labels in loader:
            pred = model(images.to(device)).argmax(1).cpu()
            confusion += torch.bincount(labels * num_classes + pred, minlength=num_classes ** 2).view(
                num_classes, num_classes)
    total = int(confusion.sum())
    per_class = [(float(confusion[i, i]) / float(confusion[i].sum())) if confusion[i].sum() else None
                 for i in range(num_classes)]
    accuracy = float(confusion.diag().sum()) / total if total else float("nan")
    return accuracy, per_class, confusion.tolist()


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # no decay on norms and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: Any, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=1)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train` (read with ``weights_only=True``); errors name the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors...
        raise TrainingError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else 'no detail'})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "epoch"} <= set(state):
        raise TrainingError(f"{path}: not a threedb training checkpoint (expected model, optimizer, "
                            f"scheduler and epoch entries)")
    return state


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def config_digest(resolved: dict[str, Any]) -> str:
    """A hash of what determines the training result (``output``/``export`` excluded)."""
    keep = {k: v for k, v in resolved.items() if k not in ("output", "export")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def open_dataset(root: str, *, file: Any = None, key: str = "data.train") -> Any:
    """The dataset at ``root`` (exported by ``threedb dataset export``, or an image-folder tree); an
    unusable one is a ConfigError naming the config file and ``key``."""
    from threedb.evaluators.datasets import DatasetError, ImageDataset

    try:
        return ImageDataset(root, extras=False)
    except DatasetError as exc:
        raise ConfigError(str(exc), file=file, key=key, value=root) from None


def class_list(dataset: Any) -> list[dict[str, Any]]:
    """``[{index, uid, name}]`` of a dataset (uid = name for an image-folder tree)."""
    uids = getattr(dataset, "class_uids", None) or list(dataset.classes)
    return [{"index": i, "uid": uid, "name": name} for i, (uid, name) in enumerate(zip(uids, dataset.classes))]


def train(config: TrainConfig, *, resume: bool = False, device: str | None = None,
          command: Sequence[str] | None = None, stream: Any = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the model card (also written to ``output`` and ``export``)."""
    schema, cfg = config.schema, config.schema.training
    stream = stream or sys.stderr
    out = Path(schema.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(schema.seed)

    train_set = open_dataset(schema.data.train, file=config.source, key="data.train")
    test_set = open_dataset(schema.data.test, file=config.source, key="data.test") if schema.data.test else None
    classes = class_list(train_set)
    if test_set is not None and class_list(test_set) != classes:
        raise TrainingError(f"{schema.data.test}: its classes {test_set.classes} differ from the training "
                            f"set's {train_set.classes} ({schema.data.train})")
    spec = dict(schema.model)
    if "num_classes" not in spec and "num_classes" not in (spec.get("args") or {}):
        spec["num_classes"] = len(classes)
    dev = resolve_device(device or cfg.device, file=config.source, key="training.device")
    loaded = load_model(spec, base_dir=config.base_dir, file=config.source, key="model", device=dev,
                        check_output=False)
    if not isinstance(loaded.model, nn.Module):
        raise TrainingError(f"{config.source}: model: must build a torch module ({loaded.kind} files cannot be trained)")
    model, preprocess = loaded.model, loaded.preprocess
    objective = make_objective(cfg.objective, cfg.objective_args, file=config.source)

    train_data = LabelledImages(train_set, preprocess, cfg.augment)
    steps_per_epoch = (len(train_data) + cfg.batch_size - 1) // cfg.batch_size
    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    test_loader = (DataLoader(LabelledImages(test_set, preprocess, None), batch_size=256)
                   if test_set is not None else None)

    digest = config_digest(config.resolved)
    start_epoch, history, elapsed = 0, [], 0.0
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if state.get("config_digest") != digest:
            raise TrainingError(f"{ckpt_path}: written by a different training config; use another output "
                                f"folder or train without --resume")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state.get("history", []))
        elapsed = float(state.get("seconds", 0.0))
        print(f"[threedb train] resuming {ckpt_path} after epoch {start_epoch}", file=stream, flush=True)
    elif ckpt_path.exists() and not resume:
        raise TrainingError(f"{ckpt_path} exists: resume it with --resume, or choose another output folder")
    # The log holds exactly the checkpoint's epochs: a kill between an epoch's log line and its
    # checkpoint, or before the first checkpoint, must not leave lines that get repeated.
    (out / LOG).write_text("".join(json.dumps(h) + "\n" for h in history))

    print(f"[threedb train] {len(train_data)} training images, {len(classes)} classes, "
          f"{'no test set' if test_set is None else f'{len(test_set)} test images'}; "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters on {dev}",
          file=stream, flush=True)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.monotonic()
        torch.manual_seed(schema.seed * 100_003 + epoch)    # augmentation randomness of this epoch
        loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True,
                            generator=_epoch_generator(schema.seed, epoch), drop_last=False)
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=stream, leave=False,
                   disable=not getattr(stream, "isatty", lambda: False)())
        for images, labels in bar:
            images, labels = images.to(dev), labels.to(dev)
            loss, logits = objective(model, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        test_acc = evaluate(model, test_loader, dev, len(classes))[0] if test_loader is not None else None
        seconds = time.monotonic() - t0
        elapsed += seconds
        result = EpochResult(epoch + 1, total_loss / max(seen, 1), correct / max(seen, 1), test_acc, seconds)
        history.append(result.__dict__)
        with (out / LOG).open("a") as log:
            log.write(json.dumps(result.__dict__) + "\n")
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                      "seconds": elapsed, "config_digest": digest, "seed": schema.seed}, ckpt_path)
        test_text = "" if test_acc is None else f", test accuracy {test_acc:.3f}"
        print(f"[threedb train] epoch {epoch + 1}/{cfg.epochs}: loss {result.loss:.4f}, train accuracy "
              f"{result.train_accuracy:.3f}{test_text} ({seconds:.0f} s)", file=stream, flush=True)

    weights = out / WEIGHTS
    _save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
    metrics: dict[str, Any] = {"final_train_loss": history[-1]["loss"] if history else None,
                               "final_train_accuracy": history[-1]["train_accuracy"] if history else None}
    if test_loader is not None:
        accuracy, per_class, confusion = evaluate(model, test_loader, dev, len(classes))
        metrics.update(test_accuracy=accuracy, test_images=len(test_set),
                       test_per_class={c["name"]: a for c, a in zip(classes, per_class)},
                       test_confusion=confusion)
    card = write_card(out, config=config, spec=spec, classes=classes, train_set=train_set, test_set=test_set,
                      metrics=metrics, history=history, seconds=elapsed, device=str(dev),
                      command=list(command) if command is not None else None)
    if schema.export:
        export = Path(schema.export)
        export.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS, "card.json", "MODEL_CARD.md", "classes.json", "classmap.json"):
            shutil.copy2(out / name, export / name)
        print(f"[threedb train] exported the model and its card to {export}", file=stream, flush=True)
    return card
