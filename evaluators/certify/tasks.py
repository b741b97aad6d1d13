"""One example certified by each task, as its ``examples.jsonl`` row. The noise of example ``id`` comes
from a generator seeded with ``example_seed(job seed, id)`` on the model's device, so a resumed job
draws exactly the noise an uninterrupted one does."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from threedb.evaluators.certify.config import CertifySchema
from threedb.evaluators.certify.model import ModelFit
from threedb.robustness.smoothing import (certified_scores, certify, certify_equivalence, example_seed, generator,
                                          segcertify)


@dataclass
class Example:
    """One example on the device: ``x`` (CxHxW in [0, 1]), its class label, its per-pixel labels (segmentation
    models: HxW int64, or None), and the base model's clean output (``K`` or ``KxHxW`` logits)."""

    index: int            #: position in the job's example order
    dataset_index: int    #: index in the dataset (Cohen's ``idx``)
    id: str
    label: int
    label_name: str
    x: torch.Tensor
    target: Optional[torch.Tensor]
    clean: torch.Tensor


def _common(ex: Example, samples: int, seconds: float) -> dict[str, Any]:
    return {"index": ex.index, "dataset_index": ex.dataset_index, "id": ex.id, "label": ex.label,
            "label_name": ex.label_name, "samples": samples, "time": seconds}


def classification_row(model: Any, ex: Example, schema: CertifySchema) -> dict[str, Any]:
    """CERTIFY (Cohen et al.): prediction (-1 abstains), radius, correctness, the bound and the counts."""
    s = schema.smoothing
    gen = generator(ex.x.device, example_seed(schema.seed, ex.id))
    started = time.perf_counter()
    cert = certify(model, ex.x, sigma=s.sigma, n0=s.n0, n=s.n, alpha=s.alpha, batch_size=s.batch_size, gen=gen)
    seconds = time.perf_counter() - started
    clean = int(ex.clean.argmax())
    return {**_common(ex, s.n0 + s.n, seconds), "prediction": cert.prediction, "radius": cert.radius,
            "correct": cert.prediction == ex.label, "abstained": cert.abstained, "p_lower": cert.p_lower,
            "count": cert.count, "candidate": cert.candidate, "clean_prediction": clean,
            "clean_correct": clean == ex.label}


def segmentation_row(model: Any, ex: Example, schema: CertifySchema, fit: ModelFit) -> dict[str, Any]:
    """SEGCERTIFY with every configured method on the same samples, scored against the mask (abstained
    pixels wrong), beside the base model's non-certified scores."""
    s, seg = schema.smoothing, schema.seg
    assert ex.target is not None
    gen = generator(ex.x.device, example_seed(schema.seed, ex.id))
    started = time.perf_counter()
    certs = segcertify(model, ex.x, sigma=s.sigma, tau=seg.tau, n0=s.n0, n=s.n, alpha=s.alpha,
                       methods=tuple(seg.methods), k=seg.k, batch_size=s.batch_size, gen=gen)
    seconds = time.perf_counter() - started
    base = certified_scores(ex.clean.argmax(0), ex.target, fit.channels)
    methods = {name: {"radius": cert.radius, **certified_scores(cert.labels, ex.target, fit.channels)}
               for name, cert in certs.items()}
    return {**_common(ex, s.n0 + s.n, seconds),
            "base": {"pixel_accuracy": base["pixel_accuracy"], "iou": base["iou"]}, "methods": methods}


def equivalence_row(model: Any, ex: Example, schema: CertifySchema, fit: ModelFit) -> dict[str, Any]:
    """Probabilistic local equivalence without and/or with the label (the same noise for both)."""
    s, eq = schema.smoothing, schema.equiv
    seed = example_seed(schema.seed, ex.id)
    label = ex.target if fit.per_pixel else torch.tensor([ex.label], device=ex.x.device)
    modes: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for mode in eq.modes:
        cert = certify_equivalence(model, ex.x, sigma=s.sigma, n=s.n, alpha=s.alpha, t=eq.t, score=eq.score,
                                   label=label if mode == "with_labels" else None,
                                   num_classes=fit.channels, batch_size=s.batch_size,
                                   gen=generator(ex.x.device, seed))
        modes[mode] = {"radius": cert.radius, "abstained": cert.abstained, "p_lower": cert.p_lower,
                       "count": cert.count, "clean_score": cert.clean_score}
    seconds = time.perf_counter() - started
    row = {**_common(ex, s.n * len(modes), seconds), "modes": modes}
    if not fit.per_pixel:
        clean = int(ex.clean.argmax())
        row.update(clean_prediction=clean, clean_correct=clean == ex.label)
    return row


__all__ = ["Example", "classification_row", "equivalence_row", "segmentation_row"]
