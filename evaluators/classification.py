"""Classification: is any of the model's top-k classes an acceptable label of the rendered object?

Arguments: ``classmap_path`` (JSON ``{model_uid: int | [int]}``, relative to the config) or
``classmap`` (the same mapping inline), ``topk`` (default 1).

Outputs per job: ``is_correct`` (bool: any top-k index in the object's acceptable set),
``loss`` (float32: cross-entropy averaged over the acceptable labels,
``mean_{l in L} -log softmax(logits)[l]``), ``prediction`` (int64 [topk]: top-k class indices,
best first).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from threedb.evaluators.base import Evaluator, OutputSpec, object_uid


class ClassificationEvaluator(Evaluator):
    output_type = "classes"

    def __init__(self, classmap_path: str | Path | None = None, topk: int = 1, *,
                 classmap: Mapping[str, Any] | None = None, base_dir: str | Path | None = None) -> None:
        if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
            raise self.arg_error("topk", "topk must be a positive integer", topk, "1, 5, ...")
        self.topk = topk
        if (classmap_path is None) == (classmap is None):
            raise self.arg_error("classmap_path", "give exactly one of classmap_path (a JSON file) or classmap",
                                 classmap_path, "{model_uid: int | [int]}")
        self.load_classmap(classmap_path, classmap, base_dir)
        self.num_classes: int | None = None

    def declare_outputs(self) -> list[OutputSpec]:
        return [OutputSpec("is_correct", (), "bool"), OutputSpec("loss", (), "float32"),
                OutputSpec("prediction", (self.topk,), "int64")]


    def setup(self, model: Any) -> None:
        n = getattr(model, "num_classes", None)
        if n is None:
            return
        self.num_classes = n
        if self.topk > n:
            raise self.arg_error("topk", f"topk {self.topk} exceeds the model's {n} classes", self.topk, f"<= {n}")
        bad = {uid: labels for uid, labels in self.classmap.items() if max(labels) >= n}
        if bad:
            uid = next(iter(bad))
            raise self.arg_error("classmap_path", f"class map {self.classmap_source}: {uid!r} -> {bad[uid]} "
                                 f"is out of range for a model with {n} classes", bad[uid], f"indices < {n}")

    def evaluate(self, batch_outputs: Any, jobs_meta: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        logits = batch_outputs[0] if isinstance(batch_outputs, (tuple, list)) else batch_outputs
        logits = torch.as_tensor(logits).detach().float().cpu()
        if logits.ndim != 2 or logits.shape[0] != len(jobs_meta):
            raise ValueError(f"expected logits of shape [{len(jobs_meta)}, classes], got {tuple(logits.shape)}")
        if self.topk > logits.shape[1]:
            raise ValueError(f"topk {self.topk} exceeds the {logits.shape[1]} model outputs")
        log_probs = torch.log_softmax(logits, dim=1)
        top = logits.topk(self.topk, dim=1).indices
        rows = []
        for i, meta in enumerate(jobs_meta):
            uid = object_uid(meta)
            if uid not in self.classmap:
                raise KeyError(f"object uid {uid!r} is not in the class map {self.classmap_source}")
            labels = self.classmap[uid]
            if max(labels) >= logits.shape[1]:
                raise ValueError(f"class map {self.classmap_source}: {uid!r} -> {labels} out of range "
                                 f"for {logits.shape[1]} model outputs")
            prediction = [int(v) for v in top[i]]
            rows.append({
                "is_correct": any(p in labels for p in prediction),
                "loss": float(-log_probs[i, labels].mean()),
                "prediction": prediction,
            })
        return rows
