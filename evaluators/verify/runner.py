"""Running a verify job: every example of the (stratified) subset answered one at a time, its row appended
(and fsynced) to ``examples.jsonl`` as soon as it is done, then the report and plots.

Per example: the clean prediction of the original model (wrong: ``misclassified``, nothing verified);
otherwise the L-inf ball of radius ``eps`` around the image (within [0, 1]) is verified with
:func:`~threedb.robustness.verification.verifier.verify`: ``verified`` (unsat: no input of the ball makes
another class score at least the label), ``adversarial`` (sat: a counterexample the original torch model
confirms), ``timeout`` or ``unknown``; then, when asked, the minimum adversarial distortion with its
proven lower bound. ``--resume`` continues after the rows already written (a killed job loses only the
example it was on); each example's attack seed comes from ``example_seed(seed, id)``, so a resumed
job's rows are those of an uninterrupted one up to times."""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from threedb.evaluators.jobs.config import JobConfig, config_digest
from threedb.evaluators.jobs.data import iterate_batches, open_job, stratified
from threedb.evaluators.jobs.output import JobOutput, JobOutputError, write_atomic
from threedb.evaluators.jobs.progress import print_summary, progress
from threedb.evaluators.verify.config import VerifySchema
from threedb.evaluators.verify.model import torch_check, verifiable_network
from threedb.evaluators.verify.report import build_report
from threedb.robustness.smoothing import example_seed

#: Folder of the adversarial examples found (``<index>.npy``: C x H x W float64 in [0, 1]).
COUNTEREXAMPLES = "counterexamples"
#: verify()'s answer -> the example's outcome.
OUTCOMES = {"unsat": "verified", "sat": "adversarial", "timeout": "timeout", "unknown": "unknown", "error": "error"}


def _check_model_fits(config: JobConfig[VerifySchema], job_model: Any, dataset: Any) -> int:
    """A classifier whose class count is the dataset's; targets are classes of it. Returns K."""
    shape, classes = job_model.output_shape, list(dataset.classes)
    source, root = job_model.loaded.source, config.schema.data.root
    if len(shape) != 1:
        raise config.error("model", f"model {source} outputs {list(shape)} per image, not a class vector: "
                           "threedb verify checks classifiers", value=None)
    if shape[0] != len(classes):
        raise config.error("model", f"the model outputs {shape[0]} classes, but dataset {root} has {len(classes)} "
                           "classes: model and dataset do not match", value=None)
    targets = config.schema.verification.targets
    if targets is not None and max(targets) >= shape[0]:
        raise config.error("verification.targets", f"class {max(targets)} is not one of the model's {shape[0]} "
                           "classes", value=targets, expected=f"class indices 0..{shape[0] - 1}")
    return shape[0]


def unstable_counts_of(network: Any, x: np.ndarray, eps: float, stats: dict[str, Any]) -> dict[str, Any]:
    """Unstable ReLUs per ReLU layer on the ball: by intervals, by symbolic bounds (from the verifier's stats
    when it computed them, else here: an attack-decided example has none) and ``final``: in the bounds the
    MILP was given, after tightening (``None`` when the attack decided before any bound)."""
    from threedb.robustness.verification.bounds import interval_bounds, symbolic_bounds, unstable_counts

    interval, symbolic = stats.get("unstable_interval"), stats.get("unstable_symbolic")
    if interval is None or symbolic is None:
        lower, upper = np.clip(x - eps, 0.0, 1.0), np.clip(x + eps, 0.0, 1.0)
        bounds = interval_bounds(network, lower, upper)
        interval = unstable_counts(network, bounds)
        symbolic = unstable_counts(network, symbolic_bounds(network, lower, upper, known=bounds))
    return {"interval": list(interval), "symbolic": list(symbolic),
            "final": list(stats["unstable"]) if "unstable" in stats else None}


def verify_example(network: Any, check: Callable[[np.ndarray], np.ndarray], x: np.ndarray, label: int,
                   n_classes: int, schema: VerifySchema, seed: int) -> tuple[dict[str, Any], Optional[np.ndarray]]:
    """The verification part of one correctly classified example's row (see docs/verify.md) and its
    confirmed counterexample (flat, in the ball) when adversarial."""
    from threedb.robustness.verification.distortion import bisect_distortion, minimum_distortion
    from threedb.robustness.verification.spec import local_robustness
    from threedb.robustness.verification.verifier import verify

    v = schema.verification
    spec = local_robustness(x, label, v.eps, n_classes, targets=v.targets)
    result = verify(network, spec, v.options(seed=seed), check=check)
    outcome = OUTCOMES[result.status]
    part: dict[str, Any] = {"status": outcome, "verdict": result.status, "method": result.method,
                            "seconds": result.seconds, "message": result.message,
                            "pgd_adversarial": outcome == "adversarial" and result.method == "attack"}
    part["unstable"] = unstable_counts_of(network, x, v.eps, result.stats)
    part["steps"] = {k: val for k, val in result.stats.items() if k.endswith("_seconds") or k == "tighten_solves"}
    if outcome == "adversarial":
        y = np.asarray(result.output, dtype=np.float64)
        others = [j for j in (v.targets or range(n_classes)) if j != label]
        part["adversarial"] = {"prediction": int(y.argmax()), "linf": float(np.abs(result.counterexample - x).max()),
                               "margin": float(y[others].max() - y[label]), "found_by": result.method}
    if v.distortion != "none":
        radius = v.search_radius
        if outcome == "verified" and radius <= v.eps:
            # the ball of radius eps >= max_eps is proven free of adversarial examples: nothing to search
            part["distortion"] = {"status": "robust", "norm": v.distortion, "distortion": None,
                                  "lower_bound": float(radius), "gap": None, "seconds": 0.0, "predicted": None,
                                  "margin": None}
        else:
            options = v.options(seed=seed, timeout=v.distortion_seconds)
            if v.distortion_method == "bisect":
                found = bisect_distortion(network, x, label, max_eps=radius, targets=v.targets, options=options,
                                          check=check)
            else:
                found = minimum_distortion(network, x, label, norm=v.distortion, max_eps=radius,
                                           targets=v.targets, options=options, check=check)
            s = found.summary()
            part["distortion"] = {k: s[k] for k in ("status", "norm", "distortion", "lower_bound", "gap", "seconds",
                                                    "predicted", "margin")}
    return part, (result.counterexample if outcome == "adversarial" else None)


def run_verify_job(config: JobConfig[VerifySchema], *, out: str | Path | None = None, resume: bool = False,
                   device: Optional[str] = None, on_example: Optional[Callable[[dict[str, Any]], None]] = None,
                   quiet: bool = False) -> dict[str, Any]:
    """Run the job ``config`` describes into ``out`` (default: its ``output:``); returns the report.

    ``on_example`` is called with each example's ``{index, id}`` before it is verified (tests count them).
    The config, dataset and model (a supported chain computing what the model computes) are all checked
    before the first example."""
    started = time.perf_counter()
    schema = config.schema
    dev, dataset, job_model = open_job(config, device)
    n_classes = _check_model_fits(config, job_model, dataset)

    indices = stratified([r.label for r in dataset.records], schema.data.max_examples)
    first = next(iterate_batches(dataset, indices, job_model.preprocess, min(schema.data.batch_size, 4), dev))
    input_shape = tuple(int(d) for d in first.x.shape[1:])
    network = verifiable_network(config, job_model, input_shape, first.x)

    out_dir = Path(out) if out is not None else Path(schema.output)
    resolved = dict(config.resolved, output=str(out_dir.absolute()))
    output = JobOutput.open(out_dir, resolved, config_digest(resolved), resume=resume, job="verify")
    planned = [dataset.records[i].id for i in indices]
    done_ids = [r.get("id") for r in output.rows]
    if done_ids != planned[:len(done_ids)]:
        raise JobOutputError(f"cannot resume in {out_dir}: its examples.jsonl does not hold this job's examples "
                             "in order (the dataset changed?); use another --out")
    done = len(done_ids)
    model = job_model.model
    check = torch_check(model, input_shape, dev)
    bar = progress(len(indices), desc="verify", initial=done) if not quiet else None
    try:
        for batch in iterate_batches(dataset, indices[done:], job_model.preprocess, schema.data.batch_size, dev):
            with torch.no_grad():
                clean = model(batch.x).argmax(1).tolist()
            for j, example_id in enumerate(batch.ids):
                position = done + batch.start + j
                label = int(batch.y[j])
                if on_example is not None:
                    on_example({"index": position, "id": example_id})
                began = time.perf_counter()
                row: dict[str, Any] = {"index": position, "dataset_index": indices[position], "id": example_id,
                                       "label": label, "label_name": dataset.classes[label],
                                       "clean_prediction": int(clean[j]), "clean_correct": clean[j] == label}
                if clean[j] != label:
                    row.update(status="misclassified", verdict=None, method="clean", seconds=0.0, message="",
                               pgd_adversarial=False, unstable=None, steps={})
                else:
                    x = batch.x[j].detach().cpu().double().reshape(-1).numpy()
                    seed = example_seed(schema.seed, example_id) % (2 ** 31)
                    part, counterexample = verify_example(network, check, x, label, n_classes, schema, seed)
                    if counterexample is not None:   # written before its row: a row never names a missing file
                        name = f"{COUNTEREXAMPLES}/{position:05d}.npy"
                        write_atomic(out_dir / name, _npy(counterexample.reshape(input_shape)))
                        part["adversarial"]["file"] = name
                    row.update(part)
                row["time"] = time.perf_counter() - began
                output.append([row])
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    report = build_report(config, output, job_model, dataset, network, device=str(dev),
                          seconds=time.perf_counter() - started)
    output.write_report(report)
    if not quiet:
        print_summary(report["summary"], job="verify")
    return report


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float64))
    return buffer.getvalue()


__all__ = ["COUNTEREXAMPLES", "OUTCOMES", "run_verify_job", "unstable_counts_of", "verify_example"]
