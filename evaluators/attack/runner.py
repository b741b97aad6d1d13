"""Running an attack job: batches of the dataset through every attack (worst case per example), rows
appended to ``examples.jsonl`` as batches finish, then the report, plots and ``grid.png``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from threedb.evaluators.attack import grid as grid_store
from threedb.evaluators.attack.config import (SEGMENTATION_METRICS, AttackSchema, AttackSpec, SegmentationConfig,
                                              attack_specs)
from threedb.evaluators.attack.model import attacked_model
from threedb.evaluators.attack.report import build_report
from threedb.evaluators.jobs.config import JobConfig, config_digest
from threedb.evaluators.jobs.data import Batch, JobModel, iterate_batches, label_masks, open_job, stratified
from threedb.evaluators.jobs.output import JobOutput, JobOutputError
from threedb.evaluators.jobs.progress import print_summary, progress
from threedb.robustness.attacks import Classification, GradientError, Segmentation, evaluate_ensemble
from threedb.robustness.metrics import segmentation_scores
from threedb.sim.errors import ThreeDBError


class AttackJobError(ThreeDBError):
    """The attack job cannot go on (e.g. the model gives no usable gradients); says what to change."""


def batch_seed(seed: int, batch: int, attack: int) -> int:
    """The seed of attack ``attack`` on batch ``batch``: fixed by position, so a resume repeats it."""
    return (seed * 1_000_003 + batch * 1009 + attack) % (2 ** 63)


def _check_model_fits(config: JobConfig[AttackSchema], job_model: JobModel, dataset: Any) -> int:
    """The model output must fit the dataset (class count; masks for segmentation). Returns K (classes/channels)."""
    schema, root = config.schema, config.schema.data.root
    shape, classes = job_model.output_shape, list(dataset.classes)
    names = job_model.loaded.class_names
    if schema.task == "classification":
        if len(shape) != 1:
            raise config.error("task", f"model {job_model.loaded.source} outputs {list(shape)} per image, not a "
                               "class vector: a segmentation model? (set task: segmentation)", value=schema.task)
        if shape[0] != len(classes) or (names is not None and len(names) != len(classes)):
            label_map = f" and its label map lists {len(names)} names" if names is not None else ""
            raise config.error("model", f"the model outputs {shape[0]} classes{label_map}, but dataset {root} has "
                               f"{len(classes)} classes ({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''}): "
                               "model and dataset do not match")
        return shape[0]
    if "mask" not in dataset.passes:
        raise config.error("task", f"task: segmentation needs object masks, but dataset {root} has none "
                           f"(its passes: {list(dataset.passes) or 'none'})", value=schema.task)
    if len(shape) != 3 or shape[0] not in (2, len(classes) + 1):
        raise config.error("model", f"a segmentation model must output 2 channels (background, object) or "
                           f"{len(classes) + 1} (background + the {len(classes)} classes of dataset {root}) "
                           f"per pixel, this one outputs {list(shape)}", value=None)
    return shape[0]


@dataclass(frozen=True)
class SegmentationSetup:
    """How a segmentation job labels its masks and picks the worst case."""

    classes: str           #: binary | per_class (:func:`threedb.evaluators.jobs.data.label_masks`)
    channels: int          #: the model's output channels = the number of labels
    worst: str             #: the score (one of SEGMENTATION_METRICS) whose minimum is the worst case
    scores: Callable[..., dict[str, torch.Tensor]]   #: threedb.robustness.metrics.segmentation_scores


def _segmentation_setup(config: JobConfig[AttackSchema], channels: int, dataset: Any) -> SegmentationSetup:
    """``segmentation.classes`` (``auto``: binary for a 2-channel model, else per_class) checked against the
    model's channel count."""
    seg = config.schema.segmentation or SegmentationConfig()
    classes = seg.classes if seg.classes != "auto" else ("binary" if channels == 2 else "per_class")
    expected = 2 if classes == "binary" else len(dataset.classes) + 1
    if channels != expected:
        what = ("background, object" if classes == "binary"
                else f"background + the {expected - 1} classes of dataset {config.schema.data.root}")
        raise config.error("segmentation.classes", f"segmentation.classes: {classes} labels the masks with "
                           f"{expected} values ({what}), but the model outputs {channels} channels",
                           value=seg.classes,
                           expected="binary for a 2-channel model, per_class for 1 + the class count, or auto")
    return SegmentationSetup(classes, channels, seg.worst, segmentation_scores)


def run_attack_job(config: JobConfig[AttackSchema], *, out: str | Path | None = None, resume: bool = False,
                   device: Optional[str] = None, on_batch: Optional[Callable[[Batch], None]] = None,
                   quiet: bool = False) -> dict[str, Any]:
    """Run the job ``config`` describes into ``out`` (default: its ``output:``); returns the report.

    ``on_batch`` is called before each batch is attacked (tests count batches with it). Everything the
    config names is checked before the first batch.
    """
    started = time.perf_counter()
    schema = config.schema
    specs = attack_specs(config)
    dev, dataset, job_model = open_job(config, device)
    channels = _check_model_fits(config, job_model, dataset)
    model = attacked_model(config, job_model)
    segmentation = schema.task == "segmentation"
    seg = _segmentation_setup(config, channels, dataset) if segmentation else None
    task = Segmentation() if segmentation else Classification()

    indices = stratified([r.label for r in dataset.records], schema.data.max_examples)
    out_dir = Path(out) if out is not None else Path(schema.output)
    resolved = dict(config.resolved, output=str(out_dir.absolute()))
    output = JobOutput.open(out_dir, resolved, config_digest(resolved), resume=resume, job="attack")
    planned = [dataset.records[i].id for i in indices]
    done = _complete_batches(output, planned, schema.data.batch_size)
    store = grid_store.GridStore(out_dir, schema.grid.examples, keep_ids=[r["id"] for r in output.rows])

    bs = schema.data.batch_size
    bar = progress(len(indices), desc="attack", initial=done * bs if done else 0) if not quiet else None
    try:
        for batch in iterate_batches(dataset, indices, job_model.preprocess, bs, dev, start_batch=done,
                                     masks=segmentation):
            if on_batch is not None:
                on_batch(batch)
            rows = _attack_batch(batch, model, specs, schema, task, seg, store, dataset)
            store.save()          # before the rows: a resume drops grid entries of rows it lacks
            output.append(rows)
            if bar is not None:
                bar.update(len(rows))
    except GradientError as exc:
        gradient_attacks = [s.name for s in specs if s.cls.uses_gradients]
        raise AttackJobError(f"{exc}. The gradient attacks ({', '.join(gradient_attacks)}) cannot run on this model: "
                             "give its non-differentiable input transform as defense: and set bpda: true in "
                             f"{config.source}, or keep only gradient-free attacks (square). "
                             f"{len(output.rows)} examples done so far are kept in {output.examples_path}") from None
    finally:
        if bar is not None:
            bar.close()
    report = build_report(config, output, store, job_model, dataset, specs, device=str(dev),
                          seconds=time.perf_counter() - started)
    output.write_report(report)
    if not quiet:
        print_summary(report["summary"], job="attack")
    return report


def _complete_batches(output: JobOutput, planned: list[str], batch_size: int) -> int:
    """How many whole batches ``output`` already holds; rows of a partly written batch are dropped."""
    ids = [r.get("id") for r in output.rows]
    if ids != planned[:len(ids)]:
        raise JobOutputError(f"cannot resume in {output.root}: its examples.jsonl does not hold this job's examples "
                             "in order (the dataset changed?); use another --out")
    full = len(ids) if len(ids) == len(planned) else (len(ids) // batch_size) * batch_size
    if full != len(ids):
        output.keep_rows(full)
    return (full + batch_size - 1) // batch_size


def _attack_batch(batch: Batch, model: torch.nn.Module, specs: list[AttackSpec], schema: AttackSchema,
                  task: Any, seg: Optional[SegmentationSetup], store: "grid_store.GridStore",
                  dataset: Any) -> list[dict[str, Any]]:
    """Attack one batch and turn the result into one row per example."""
    y = batch.y if seg is None else label_masks(batch.masks, batch.y, seg.classes)
    attacks = {s.name: s.build(norm=schema.threat.norm, eps=schema.threat.eps, task=task,
                               seed=batch_seed(schema.seed, batch.index, s.index)) for s in specs}
    torch.manual_seed(batch_seed(schema.seed, batch.index, len(specs)))  # randomized defences under EOT
    result = evaluate_ensemble(model, batch.x, y, attacks, task=task)
    preds: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, res in result.results.items():
            preds[name] = model(res.adv).argmax(1)
    clean_pred = result.clean_output.argmax(1)
    if seg is None:
        rows = _classification_rows(batch, result, preds, clean_pred, dataset.classes)
        store.offer(batch, result, rows)
    else:
        rows = _segmentation_rows(batch, result, preds, clean_pred, y, seg, dataset.classes)
        store.offer(batch, result, rows, labels=(y, clean_pred, preds))
    return rows


def _costs(result: Any, name: str, j: int) -> dict[str, Any]:
    res = result.results[name]
    return {"norm": float(result.norms[name][j]), "queries": int(res.queries[j]), "gradients": int(res.gradients[j])}


def _classification_rows(batch: Batch, result: Any, preds: dict[str, torch.Tensor], clean_pred: torch.Tensor,
                         classes: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for j, example_id in enumerate(batch.ids):
        label = int(batch.y[j])
        row: dict[str, Any] = {"index": batch.start + j, "id": example_id, "label": label,
                               "label_name": classes[label], "clean_prediction": int(clean_pred[j]),
                               "clean_correct": bool(clean_pred[j] == label)}
        row["attacks"] = {name: {"success": bool(res.success[j]), "prediction": int(preds[name][j]),
                                 **_costs(result, name, j)} for name, res in result.results.items()}
        broken = (not row["clean_correct"]) or any(e["success"] for e in row["attacks"].values())
        row["robust"] = not broken
        row["worst_score"] = float(result.worst_score[j])
        row["worst_attack"] = None if row["robust"] else result.worst_attack[j]
        rows.append(row)
    return rows


def _segmentation_rows(batch: Batch, result: Any, preds: dict[str, torch.Tensor], clean_pred: torch.Tensor,
                       target: torch.Tensor, seg: SegmentationSetup, classes: list[str]) -> list[dict[str, Any]]:
    """Rows with the clean and per-attack scores; the worst case is the lowest ``seg.worst`` score over
    the clean input (delta = 0 lies in the ball) and every attack, the earliest on ties."""
    scores = {"clean": seg.scores(clean_pred, target, seg.channels),
              **{name: seg.scores(p, target, seg.channels) for name, p in preds.items()}}
    rows: list[dict[str, Any]] = []
    for j, example_id in enumerate(batch.ids):
        label = int(batch.y[j])
        per = {name: {m: float(scores[name][m][j]) for m in SEGMENTATION_METRICS} for name in scores}
        row: dict[str, Any] = {"index": batch.start + j, "id": example_id, "label": label,
                               "label_name": classes[label], "clean": per["clean"],
                               "clean_correct": bool(result.clean_correct[j])}
        row["attacks"] = {name: {"success": bool(res.success[j]), **per[name], **_costs(result, name, j)}
                          for name, res in result.results.items()}
        row["robust"] = row["clean_correct"] and not any(e["success"] for e in row["attacks"].values())
        worst = min(per, key=lambda name: per[name][seg.worst])   # dict order: clean first, then attacks
        row["worst_score"] = per[worst][seg.worst]
        row["worst_attack"] = worst
        row["worst"] = per[worst]
        rows.append(row)
    return rows
