"""Running a background-variant job: samples -> balanced variant sets (before anything is written, so a
bad dataset loses nothing) -> one ``ImageDataset`` per variant -> every model on every variant (rows
appended to ``examples.jsonl`` per model; a resumed job keeps the models already scored) -> adversarial
backgrounds -> ``report.json``, plots and grids."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from threedb.evaluators.jobs.config import JobConfig, config_digest, model_spec
from threedb.evaluators.jobs.data import JobModel, load_job_model
from threedb.evaluators.jobs.output import JobOutput, write_atomic
from threedb.evaluators.models import resolve_device
from threedb.evaluators.jobs.progress import print_summary, progress
from threedb.robustness.backgrounds import BackgroundsError, CropSpec, VariantSet, make_variants
from threedb.sim.errors import ThreeDBError

from .config import BgVariantsSchema, model_entries
from .data import LoadedSamples, foreground_method, load_samples, open_job_dataset
from .report import build_report
from .scoring import (ModelScores, adversarial, example_rows, job_predictor, predict_variants,
                      predictions_from_rows, score)
from .writer import write_variant

MANIFEST = "manifest.jsonl"


class BgVariantsJobError(ThreeDBError):
    """The variants cannot be made from this dataset as configured (e.g. a class with too few usable
    images to balance); the message names the config file, the key and the counts."""


def load_models(config: JobConfig[BgVariantsSchema], main: JobModel, dev: Any,
                classes: list[str]) -> list[tuple[str, JobModel]]:
    """Every model of the config (the main one already loaded), each checked against the dataset's classes."""
    out: list[tuple[str, JobModel]] = []
    for name, key, spec in model_entries(config):
        if key == "model":
            job_model = main
        else:
            inference, base = model_spec(spec, config, key=key)
            job_model = load_job_model(inference, base_dir=base, device=dev, file=config.file_of(key), key=key)
            job_model.card = spec.get("card")
        shape = job_model.output_shape
        if len(shape) != 1 or shape[0] != len(classes):
            raise config.error(key, f"model {job_model.loaded.source} outputs {list(shape)} per image, but dataset "
                               f"{config.schema.data.root} has {len(classes)} classes: the variants need a "
                               "classifier of the dataset's classes", value=spec.get("card") or spec.get("kind"))
        out.append((name, job_model))
    return out


def build_variants(config: JobConfig[BgVariantsSchema], loaded: LoadedSamples, classes: list[str],
                   quiet: bool) -> VariantSet:
    """The balanced variant sets, or :class:`BgVariantsJobError` naming the config and the data key."""
    schema = config.schema
    crop = None if schema.crop is None else CropSpec(resize=schema.crop.resize, size=schema.crop.size)
    bar = None if quiet else progress(len(loaded.samples), desc="foregrounds")
    try:
        return make_variants(loaded.samples, num_classes=len(classes), variants=schema.variants, seed=schema.seed,
                             grabcut_iterations=schema.foreground.grabcut_iterations, crop=crop,
                             paired=schema.paired, mixed_rand_own_class=schema.mixed_rand_own_class,
                             class_names=classes, progress=(lambda done, total: bar.update(1)) if bar else None)
    except BackgroundsError as exc:
        raise BgVariantsJobError(f"{config.file_of('data') or config.source}: data ({schema.data.root}): {exc}. "
                                 "Nothing was written; raise data.max_examples, drop variants, or loosen "
                                 "crop:") from None
    finally:
        if bar is not None:
            bar.close()


def run_bg_variants_job(config: JobConfig[BgVariantsSchema], *, out: str | Path | None = None,
                        resume: bool = False, device: Optional[str] = None, quiet: bool = False) -> dict[str, Any]:
    """Run the job ``config`` describes into ``out`` (default: its ``output:``); returns the report."""
    started = time.perf_counter()
    schema = config.schema
    dev = resolve_device(device or schema.device, file=config.file_of("device") if device is None else "--device",
                         key="device")
    dataset = open_job_dataset(config)
    spec, base_dir = model_spec(schema.model, config)
    main = load_job_model({k: v for k, v in spec.items() if k != "name"}, base_dir=base_dir, device=dev,
                          file=config.file_of("model"), key="model")
    main.card = schema.model.get("card")
    classes = list(dataset.classes)
    models = load_models(config, main, dev, classes)
    foreground_method(config, dataset)          # a dataset without masks or boxes fails before any work
    bar = None if quiet else progress(min(len(dataset), schema.data.max_examples or len(dataset)), desc="load")
    loaded = load_samples(config, dataset, on_sample=bar.update if bar else None)
    if bar is not None:
        bar.close()
    vset = build_variants(config, loaded, classes, quiet)

    out_dir = Path(out) if out is not None else Path(schema.output)
    resolved = dict(config.resolved, output=str(out_dir.absolute()))
    output = JobOutput.open(out_dir, resolved, config_digest(resolved), resume=resume, job="bg-variants")
    note = {"dataset": str(dataset.root), "foreground_method": loaded.method,
            "grabcut_iterations": loaded.grabcut_iterations, "seed": schema.seed}
    bar = None if quiet else progress(len(vset.rows), desc="variants")
    manifest: list[dict[str, Any]] = []
    for variant in vset.variants:
        _, rows, written = write_variant(out_dir, vset, variant, dataset, note=note,
                                         on_image=bar.update if bar else None)
        manifest += [{**r, "file": f"variants/{variant}/{r['file']}"} for r in rows]
        if bar is not None and not written:
            bar.update(len(rows))          # a variant kept from before (resume)
    if bar is not None:
        bar.close()
    write_atomic(out_dir / MANIFEST, "".join(json.dumps(r, allow_nan=False) + "\n" for r in manifest))

    labels = vset.labels
    done = {}
    for row in output.rows:
        done.setdefault(row["model"], []).append(row)
    scores: list[ModelScores] = []
    for name, job_model in models:
        predict = job_predictor(job_model)
        if name in done and len(done[name]) == len(labels):
            predictions = predictions_from_rows(done[name])
        else:
            if name in done:        # a partial model (cannot happen with one append per model): redo it
                output.keep_rows(len([r for r in output.rows if r["model"] != name]))
            bar = None if quiet else progress(len(vset.rows), desc=f"score {name}")
            predictions = predict_variants(vset, predict, schema.data.batch_size,
                                           on_batch=bar.update if bar else None)
            if bar is not None:
                bar.close()
        s = score(name, predictions, labels)
        if name not in done or len(done[name]) != len(labels):
            output.append(example_rows(name, predictions, labels, classes, s.categories))
        if schema.adversarial.enabled:
            s.adversarial = adversarial(vset, predict, budget=schema.adversarial.budget, seed=schema.seed,
                                        batch_size=schema.data.batch_size)
        scores.append(s)

    report = build_report(out_dir=out_dir, title=schema.title or "background variants", seed=schema.seed,
                          device=str(dev), config=resolved,
                          dataset={"root": str(dataset.root), "classes": classes, "images": len(loaded.samples)},
                          models={name: m.describe() for name, m in models}, vset=vset, method=loaded.method,
                          grabcut_iterations=loaded.grabcut_iterations, scores=scores, classes=classes,
                          seconds=time.perf_counter() - started, examples=len(output.rows),
                          grid_examples=schema.grid.examples, top_k=schema.adversarial.top_k)
    output.write_report(report)
    if not quiet:
        print_summary(report["summary"], job="bg-variants")
    return report


__all__ = ["BgVariantsJobError", "MANIFEST", "build_variants", "load_models", "run_bg_variants_job"]
