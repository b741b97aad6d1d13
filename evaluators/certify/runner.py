"""Running a certify job: every example of the (stratified) subset certified one at a time, its row
appended (and fsynced) to ``examples.jsonl`` as soon as it is done, the Cohen-format ``certify.tsv``
kept in step (classification), then the report and plots.

``--resume`` continues after the rows already written: finished examples are not recomputed, and the
per-example noise seeds make the continued job's rows those of an uninterrupted one."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from threedb.evaluators.certify import tsv
from threedb.evaluators.certify.config import CertifySchema
from threedb.evaluators.certify.model import ModelFit, check_model
from threedb.evaluators.certify.report import build_report
from threedb.evaluators.certify.tasks import Example, classification_row, equivalence_row, segmentation_row
from threedb.evaluators.jobs.config import JobConfig, config_digest
from threedb.evaluators.jobs.data import iterate_batches, label_masks, open_job, stratified
from threedb.evaluators.jobs.output import JobOutput, JobOutputError, write_atomic
from threedb.evaluators.jobs.progress import print_summary, progress
from threedb.robustness.smoothing import SmoothingError
from threedb.sim.errors import ThreeDBError

TSV = "certify.tsv"


class CertifyJobError(ThreeDBError):
    """The certify job cannot go on (the model misbehaves under noise); says what happened and what is kept."""


def run_certify_job(config: JobConfig[CertifySchema], *, out: str | Path | None = None, resume: bool = False,
                    device: Optional[str] = None, on_example: Optional[Callable[[Example], None]] = None,
                    quiet: bool = False) -> dict[str, Any]:
    """Run the job ``config`` describes into ``out`` (default: its ``output:``); returns the report.

    ``on_example`` is called before each example is certified (tests count them). The config, dataset
    and model are all checked before the first sample is drawn.
    """
    started = time.perf_counter()
    schema = config.schema
    dev, dataset, job_model = open_job(config, device)
    fit = check_model(config, job_model, dataset)
    needs_masks = fit.per_pixel and (schema.task == "segmentation" or "with_labels" in schema.equiv.modes)

    indices = stratified([r.label for r in dataset.records], schema.data.max_examples)
    out_dir = Path(out) if out is not None else Path(schema.output)
    resolved = dict(config.resolved, output=str(out_dir.absolute()))
    output = JobOutput.open(out_dir, resolved, config_digest(resolved), resume=resume, job="certify")
    planned = [dataset.records[i].id for i in indices]
    done_ids = [r.get("id") for r in output.rows]
    if done_ids != planned[:len(done_ids)]:
        raise JobOutputError(f"cannot resume in {out_dir}: its examples.jsonl does not hold this job's examples "
                             "in order (the dataset changed?); use another --out")
    done = len(done_ids)
    log = out_dir / TSV if schema.task == "classification" else None
    if log is not None:   # the log of the rows kept so far; then one line per example as it finishes
        write_atomic(log, tsv.header_line() + tsv.rows_text(output.rows))

    model = job_model.model
    bar = progress(len(indices), desc=f"certify ({schema.task})", initial=done) if not quiet else None
    try:
        for batch in iterate_batches(dataset, indices[done:], job_model.preprocess, schema.data.batch_size, dev,
                                     masks=needs_masks):
            with torch.inference_mode():
                clean = model(batch.x)
            targets = label_masks(batch.masks, batch.y, fit.classes) if batch.masks is not None else None
            for j, example_id in enumerate(batch.ids):
                position = done + batch.start + j
                label = int(batch.y[j])
                ex = Example(position, indices[position], example_id, label, dataset.classes[label], batch.x[j],
                             targets[j] if targets is not None else None, clean[j])
                if on_example is not None:
                    on_example(ex)
                row = _certify(model, ex, schema, fit)
                output.append([row])
                if log is not None:
                    _append_line(log, tsv.rows_text([row]))
                if bar is not None:
                    bar.update(1)
    except SmoothingError as exc:
        raise CertifyJobError(f"{exc} (model {job_model.loaded.source}); {len(output.rows)} examples done so far "
                              f"are kept in {output.examples_path}") from None
    finally:
        if bar is not None:
            bar.close()
    report = build_report(config, output, job_model, dataset, fit, device=str(dev),
                          seconds=time.perf_counter() - started)
    output.write_report(report)
    if not quiet:
        print_summary(report["summary"], job="certify")
    return report


def _certify(model: Any, ex: Example, schema: CertifySchema, fit: ModelFit) -> dict[str, Any]:
    if schema.task == "classification":
        return classification_row(model, ex, schema)
    if schema.task == "segmentation":
        return segmentation_row(model, ex, schema, fit)
    return equivalence_row(model, ex, schema, fit)


def _append_line(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


__all__ = ["CertifyJobError", "TSV", "run_certify_job"]
