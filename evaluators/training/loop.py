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
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from threedb.evaluators.models import load_model, resolve_device
from threedb.evaluators.pixel_space import pixel_model
from threedb.evaluators.training.card import write_card
from threedb.evaluators.training.config import TrainConfig
from threedb.evaluators.training.data import LabelledImages, SegmentedImages
from threedb.evaluators.training.objectives import make_objective
from threedb.robustness.attacks import GradientError
from threedb.sim.errors import ConfigError, ThreeDBError

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.pt"
LOG = "log.jsonl"


class TrainingError(ThreeDBError):
    """Training cannot start or continue (e.g. a corrupt checkpoint); the message names the file."""


@dataclass
class EpochResult:
    epoch: int
    loss: float
    train_accuracy: float                   #: pixel accuracy for segmentation
    test_accuracy: float | None             #: pixel accuracy for segmentation
    seconds: float
    robust_accuracy: float | None = None    #: the robust check's PGD score, when configured


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


def evaluate_segmentation(model: nn.Module, loader: DataLoader, device: torch.device,
                          num_classes: int) -> dict[str, float]:
    """Mean pixel accuracy, IoU, SBD and F-measure (:func:`threedb.robustness.metrics.segmentation_scores`)."""
    from threedb.robustness.metrics import segmentation_scores

    model.eval()
    sums: dict[str, float] = {}
    total = 0
    with torch.inference_mode():
        for images, masks in loader:
            pred = model(images.to(device)).argmax(1).cpu()
            for name, values in segmentation_scores(pred, masks, num_classes).items():
                sums[name] = sums.get(name, 0.0) + float(values.sum())
            total += len(masks)
    return {name: value / total for name, value in sums.items()} if total else {}


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
    if cfg.schedule == "cyclic":
        # Wong et al.'s triangular cycle: 0 -> lr linearly over the first half of training, back to 0
        up = max(1, steps // 2)
        return torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.0, max_lr=cfg.lr, step_size_up=up,
                                                 step_size_down=max(1, steps - up), cycle_momentum=False)
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


def open_dataset(root: str, *, file: Any = None, key: str = "data.train", masks: bool = False,
                 environments: Sequence[str] | None = None) -> Any:
    """The dataset at ``root`` (exported by ``threedb dataset export``, or an image-folder tree); an
    unusable one is a ConfigError naming the config file and ``key``.

    ``masks``: items carry their object mask (segmentation); a dataset without masks is refused.
    ``environments``: keep only the samples of these environments.
    """
    from threedb.evaluators.datasets import DatasetError, ImageDataset

    try:
        if not masks:
            dataset = ImageDataset(root, extras=False)
        else:
            dataset = ImageDataset(root, extras=True)
            if "mask" not in dataset.passes:
                raise ConfigError(f"dataset {dataset.root} has no object masks, which segmentation training "
                                  f"needs (task: segmentation); export a run that logged the mask pass, or "
                                  f"train with task: classification", file=file, key="task", value="segmentation")
            if tuple(dataset.passes) != ("mask",):   # load no other pass (depth, uv...) per item
                dataset = ImageDataset(root, extras=True, passes=["mask"])
        if environments is not None:
            dataset = dataset.subset(environments=environments)
            if not len(dataset):
                raise DatasetError(dataset.root, f"no sample of the environments {list(environments)}")
    except DatasetError as exc:
        raise ConfigError(str(exc), file=file, key=key, value=root) from None
    return dataset


def class_list(dataset: Any) -> list[dict[str, Any]]:
    """``[{index, uid, name}]`` of a dataset (uid = name for an image-folder tree)."""
    uids = getattr(dataset, "class_uids", None) or list(dataset.classes)
    return [{"index": i, "uid": uid, "name": name} for i, (uid, name) in enumerate(zip(uids, dataset.classes))]


def _classes(train_set: Any, schema: Any) -> tuple[list[dict[str, Any]], int]:
    """The card's class list and the model's number of outputs for the config's task."""
    classes = class_list(train_set)
    if schema.task == "classification":
        return classes, len(classes)
    if schema.segmentation.classes == "binary":
        return [{"index": 0, "uid": "background", "name": "background"},
                {"index": 1, "uid": "object", "name": "object"}], 2
    return ([{"index": 0, "uid": "background", "name": "background"}]
            + [{**c, "index": c["index"] + 1} for c in classes]), len(classes) + 1


def _objective_eps(objective: Any, given: float | None, what: str, file: Any) -> float:
    eps = given if given is not None else getattr(objective, "eps", None)
    if eps is None:
        raise ConfigError(f"{what} needs an eps: the objective has none", file=file, key=f"{what}.eps",
                          expected="a budget in pixel units, e.g. 0.0314 (8/255)")
    return float(eps)


def _seed_objective(objective: Any, seed: int, epoch: int) -> None:
    if hasattr(objective, "reseed"):
        objective.reseed(seed * 100_003 + epoch + 7_919)   # not the data-order stream


def train(config: TrainConfig, *, resume: bool = False, device: str | None = None,
          command: Sequence[str] | None = None, stream: Any = None) -> dict[str, Any]:
    """Train as ``config`` says; returns the model card (also written to ``output`` and ``export``).

    Objectives and evaluations see images in ``[0, 1]`` and call the model wrapped in
    :class:`~threedb.robustness.models.Normalized`; checkpoints and ``model.pt`` hold the inner model's
    state dict, which the card's ``inference:`` mapping (with its ``normalization``) loads.
    """
    from threedb.evaluators.training import stability
    from threedb.evaluators.training.robust import (make_task, pgd_score, robust_evaluation, spaced_indices,
                                                    stack)

    schema, cfg = config.schema, config.schema.training
    stream = stream or sys.stderr
    out = Path(schema.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(schema.seed)
    segmentation = schema.task == "segmentation"

    train_set = open_dataset(schema.data.train, file=config.source, key="data.train", masks=segmentation,
                             environments=schema.data.train_environments)
    test_set = (open_dataset(schema.data.test, file=config.source, key="data.test", masks=segmentation,
                             environments=schema.data.test_environments) if schema.data.test else None)
    if test_set is not None and class_list(test_set) != class_list(train_set):
        raise TrainingError(f"{schema.data.test}: its classes {test_set.classes} differ from the training "
                            f"set's {train_set.classes} ({schema.data.train})")
    classes, num_outputs = _classes(train_set, schema)
    spec = dict(schema.model)
    if "num_classes" not in spec and "num_classes" not in (spec.get("args") or {}):
        spec["num_classes"] = num_outputs
    dev = resolve_device(device or cfg.device, file=config.source, key="training.device")
    loaded = load_model(spec, base_dir=config.base_dir, file=config.source, key="model", device=dev,
                        check_output=False)
    if not isinstance(loaded.model, nn.Module):
        raise TrainingError(f"{config.source}: model: must build a torch module ({loaded.kind} files cannot be trained)")
    inner = loaded.model
    model, pixels = pixel_model(loaded)          # a model of [0, 1] images, and the resize to its input
    objective = make_objective(cfg.objective, cfg.objective_args, file=config.source)
    if cfg.objective == "relu_stability" or cfg.prune is not None or stability.wanted(schema):
        key = ("training.objective" if cfg.objective == "relu_stability" else
               "training.prune" if cfg.prune is not None else "card.relu_stability")
        stability.check_chain(model, file=config.source, key=key)   # before any training time is spent
    st_eps = (_objective_eps(objective, schema.card.relu_stability.eps, "card.relu_stability", config.source)
              if stability.wanted(schema) else None)

    def dataset(base: Any, augment: Any) -> Dataset:
        if segmentation:
            return SegmentedImages(base, pixels, augment, schema.segmentation.classes, cache=schema.data.cache)
        return LabelledImages(base, pixels, augment, cache=schema.data.cache)

    train_data = dataset(train_set, cfg.augment)
    steps_per_epoch = (len(train_data) + cfg.batch_size - 1) // cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    optimizer = _optimizer(inner, cfg)
    scheduler = _scheduler(optimizer, cfg, total_steps)
    test_data = dataset(test_set, None) if test_set is not None else None
    test_loader = DataLoader(test_data, batch_size=256) if test_data is not None else None

    check = cfg.robust_check
    if check is not None:
        check_eps = _objective_eps(objective, check.eps, "training.robust_check", config.source)
        check_source = test_data if test_data is not None else dataset(train_set, None)
        check_x, check_y = stack(check_source, spaced_indices(len(check_source), check.images))
        check_x, check_y = check_x.to(dev), check_y.to(dev)

    digest = config_digest(config.resolved)
    start_epoch, history, elapsed = 0, [], 0.0
    best: dict[str, Any] | None = None          # robust check: best epoch, its score and weights
    stopped: dict[str, Any] | None = None       # early stop record
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if state.get("config_digest") != digest:
            raise TrainingError(f"{ckpt_path}: written by a different training config; use another output "
                                f"folder or train without --resume")
        inner.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = int(state["epoch"]), list(state.get("history", []))
        elapsed = float(state.get("seconds", 0.0))
        best, stopped = state.get("best"), state.get("stopped")
        print(f"[threedb train] resuming {ckpt_path} after epoch {start_epoch}", file=stream, flush=True)
    elif ckpt_path.exists() and not resume:
        raise TrainingError(f"{ckpt_path} exists: resume it with --resume, or choose another output folder")
    # The log holds exactly the checkpoint's epochs: a kill between an epoch's log line and its
    # checkpoint, or before the first checkpoint, must not leave lines that get repeated.
    (out / LOG).write_text("".join(json.dumps(h) + "\n" for h in history))

    what = f"{len(classes)} classes" if not segmentation else f"segmentation into {len(classes)} labels"
    print(f"[threedb train] {len(train_data)} training images, {what}, "
          f"{'no test set' if test_set is None else f'{len(test_set)} test images'}; "
          f"{sum(p.numel() for p in inner.parameters()) / 1e6:.2f} M parameters on {dev}; "
          f"objective {cfg.objective}", file=stream, flush=True)
    for epoch in range(start_epoch, cfg.epochs if stopped is None else start_epoch):
        t0 = time.monotonic()
        torch.manual_seed(schema.seed * 100_003 + epoch)    # augmentation randomness of this epoch
        _seed_objective(objective, schema.seed, epoch)     # the inner attacks' randomness of this epoch
        loader = DataLoader(train_data, batch_size=cfg.batch_size, shuffle=True,
                            generator=_epoch_generator(schema.seed, epoch), drop_last=False)
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=stream, leave=False,
                   disable=not getattr(stream, "isatty", lambda: False)())
        for step, (images, labels) in enumerate(bar):
            images, labels = images.to(dev), labels.to(dev)
            if hasattr(objective, "set_progress"):
                objective.set_progress((epoch * steps_per_epoch + step) / max(total_steps, 1))
            loss, logits = objective(model, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += labels.numel()
            bar.set_postfix(loss=f"{total_loss / max(len(train_data), 1):.3f}", acc=f"{correct / seen:.3f}")
        if test_loader is None:
            test_acc = None
        elif segmentation:
            test_acc = evaluate_segmentation(model, test_loader, dev, num_outputs).get("pixel_accuracy")
        else:
            test_acc = evaluate(model, test_loader, dev, num_outputs)[0]
        robust_acc = None
        if check is not None:
            try:
                robust_acc = float(pgd_score(model, check_x, check_y, make_task(schema.task), eps=check_eps,
                                             norm=check.norm, steps=check.steps, step_size=check.step_size,
                                             seed=schema.seed)[1].mean())
            except GradientError as exc:   # e.g. every ReLU dead: no score this epoch, said in the log
                print(f"[threedb train] epoch {epoch + 1}: PGD check impossible ({exc})", file=stream, flush=True)
        if robust_acc is not None:
            if best is None or robust_acc > best["robust_accuracy"]:
                best = {"epoch": epoch + 1, "robust_accuracy": robust_acc,
                        "model": {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()}}
            elif check.early_stop and robust_acc < best["robust_accuracy"] - check.tolerance:
                stopped = {"epoch": epoch + 1, "robust_accuracy": robust_acc, "best_epoch": best["epoch"],
                           "best_robust_accuracy": best["robust_accuracy"], "tolerance": check.tolerance}
        seconds = time.monotonic() - t0
        elapsed += seconds
        result = EpochResult(epoch + 1, total_loss / max(len(train_data), 1), correct / max(seen, 1), test_acc,
                             seconds, robust_acc)
        # objective figures of the epoch (relu_stability: mean RS loss and unstable ReLUs of its batches)
        entry = {**result.__dict__, **(objective.epoch_summary() if hasattr(objective, "epoch_summary") else {})}
        history.append(entry)
        with (out / LOG).open("a") as log:
            log.write(json.dumps(entry) + "\n")
            if stopped is not None:
                log.write(json.dumps({"early_stop": stopped}) + "\n")
        if stopped is not None:
            inner.load_state_dict(best["model"])           # catastrophic overfitting: back to the best epoch
        _save_atomic({"model": inner.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                      "seconds": elapsed, "config_digest": digest, "seed": schema.seed,
                      "best": best, "stopped": stopped}, ckpt_path)
        test_text = "" if test_acc is None else f", test accuracy {test_acc:.3f}"
        robust_text = "" if robust_acc is None else f", PGD accuracy {robust_acc:.3f}"
        if "train_unstable" in entry:
            robust_text += f", RS loss {entry['rs_loss']:.1f}, unstable ReLUs {entry['train_unstable']:.1f}"
        print(f"[threedb train] epoch {epoch + 1}/{cfg.epochs}: loss {result.loss:.4f}, train accuracy "
              f"{result.train_accuracy:.3f}{test_text}{robust_text} ({seconds:.0f} s)", file=stream, flush=True)
        if stopped is not None:
            print(f"[threedb train] early stop after epoch {epoch + 1}: PGD accuracy {robust_acc:.3f} fell more "
                  f"than {check.tolerance} below the best {best['robust_accuracy']:.3f} (epoch {best['epoch']}); "
                  f"restored epoch {best['epoch']}'s weights", file=stream, flush=True)
            break
    # the log keeps the epoch lines; a resumed, already stopped run re-adds its early-stop line
    if stopped is not None and start_epoch >= stopped["epoch"]:
        with (out / LOG).open("a") as log:
            log.write(json.dumps({"early_stop": stopped}) + "\n")

    pruning = None
    if cfg.prune is not None:
        # after training (the checkpoint keeps the unpruned weights), before evaluation and export
        pruning = stability.prune(model, dataset(train_set, None), cfg.prune, dev)
        print(f"[threedb train] pruned: {json.dumps(pruning)}", file=stream, flush=True)
    weights = out / WEIGHTS
    _save_atomic({k: v.detach().cpu() for k, v in inner.state_dict().items()}, weights)
    metrics: dict[str, Any] = {"final_train_loss": history[-1]["loss"] if history else None,
                               "final_train_accuracy": history[-1]["train_accuracy"] if history else None}
    if test_loader is not None and segmentation:
        scores = evaluate_segmentation(model, test_loader, dev, num_outputs)
        metrics.update(test_accuracy=scores.get("pixel_accuracy"), test_images=len(test_set),
                       test_scores=scores)
    elif test_loader is not None:
        accuracy, per_class, confusion = evaluate(model, test_loader, dev, num_outputs)
        metrics.update(test_accuracy=accuracy, test_images=len(test_set),
                       test_per_class={c["name"]: a for c, a in zip(classes, per_class)},
                       test_confusion=confusion)
    robustness: dict[str, Any] = {"objective": (objective.describe() if hasattr(objective, "describe")
                                                else {"name": cfg.objective, **cfg.objective_args})}
    if check is not None:
        robustness["robust_check"] = {**check.model_dump(mode="json"), "eps": check_eps,
                                      "images": int(check_x.shape[0]),
                                      "from": "test" if test_data is not None else "train",
                                      "best_epoch": best["epoch"] if best else None,
                                      "best_robust_accuracy": best["robust_accuracy"] if best else None,
                                      "early_stopped": stopped}
    evaluation = schema.card.robust_eval
    adversarial = hasattr(objective, "eps")
    robust = None
    if test_data is not None and (evaluation.enabled or (evaluation.enabled is None and adversarial)):
        eps = _objective_eps(objective, evaluation.eps, "card.robust_eval", config.source)
        print(f"[threedb train] robust evaluation at eps {eps:g} ({evaluation.norm}) ...", file=stream, flush=True)
        x, y = stack(test_data, spaced_indices(len(test_data), evaluation.max_examples))
        try:
            robust = robust_evaluation(model, x.to(dev), y.to(dev), task_kind=schema.task,
                                       num_classes=num_outputs, cfg=evaluation, eps=eps)
        except GradientError as exc:
            # e.g. a collapsed network (all ReLUs dead): say so on the card rather than lose the run
            robust = None
            robustness["evaluation"] = {"eps": eps, "error": str(exc)}
            print(f"[threedb train] robust evaluation impossible: {exc}", file=stream, flush=True)
    if pruning is not None:
        robustness["pruning"] = pruning
    if st_eps is not None:
        rs = stability.measure(model, test_data if test_data is not None else dataset(train_set, None),
                               schema.card.relu_stability, eps=st_eps, device=dev,
                               source="test" if test_data is not None else "train", stream=stream)
        robustness["relu_stability"] = rs
        metrics["unstable_relus"] = {"eps": st_eps, "naive": rs["naive"]["total"], "improved": rs["improved"]["total"]}
    if robust is not None:
        robustness["evaluation"] = robust
        metrics.update(clean_accuracy=robust["clean"], robust_accuracy=robust["pgd_score"],
                       worst_case_accuracy=robust["worst"], robust_eps=eps)
        if segmentation:
            metrics.update(clean_scores=robust["clean_scores"], adversarial_scores=robust["worst_scores"])
        print(f"[threedb train] robust evaluation on {robust['examples']} images: clean {robust['clean']:.3f}, "
              f"PGD {robust['pgd_score']:.3f}, worst case {robust['worst']:.3f}", file=stream, flush=True)
    card = write_card(out, config=config, spec=spec, classes=classes, train_set=train_set, test_set=test_set,
                      metrics=metrics, history=history, seconds=elapsed, device=str(dev),
                      command=list(command) if command is not None else None, robustness=robustness)
    if schema.export:
        export = Path(schema.export)
        export.mkdir(parents=True, exist_ok=True)
        for name in (WEIGHTS, "card.json", "MODEL_CARD.md", "classes.json", "classmap.json"):
            shutil.copy2(out / name, export / name)
        print(f"[threedb train] exported the model and its card to {export}", file=stream, flush=True)
    return card
