"""Model cards: ``card.json`` (machine-readable) and ``MODEL_CARD.md`` (for people), written beside the
weights, plus the label files a run config needs (``classes.json``, ``classmap.json``).

``card.json`` holds the weights' SHA-256, so :func:`verify_card` can tell whether a weights file is
the one the card describes.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
from pathlib import Path
from typing import Any, Sequence

from threedb.sim.errors import ThreeDBError

CARD_FORMAT = "threedb-model-card"
CARD_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _shown(path: str | os.PathLike[str] | None) -> str | None:
    """A path relative to the working directory when it lies below it (no machine paths on the card)."""
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(p)


def _data_summary(dataset: Any) -> dict[str, Any]:
    header = getattr(dataset, "header", None) or {}
    return {"path": _shown(getattr(dataset, "root", None)), "images": len(dataset),
            "environments": list(getattr(dataset, "environments", [])),
            "format": header.get("format", "image-folder"), "source": header.get("source")}


def write_card(out: Path, *, config: Any, spec: dict[str, Any], classes: list[dict[str, Any]], train_set: Any,
               test_set: Any, metrics: dict[str, Any], history: list[dict[str, Any]], seconds: float,
               device: str, command: Sequence[str] | None,
               robustness: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``card.json``, ``MODEL_CARD.md``, ``classes.json`` and ``classmap.json`` into ``out``.

    ``robustness``: the objective's settings, the robust check (and early stop) and the final robust
    evaluation (see :mod:`threedb.evaluators.training.robust`), recorded under ``"robustness"``.
    """
    import torch

    schema = config.schema
    weights = out / "model.pt"
    state = torch.load(weights, map_location="cpu", weights_only=True)
    inference = {k: v for k, v in spec.items() if k not in ("weights", "label_map", "device")}
    inference.update(weights="model.pt", label_map="classes.json")
    train_cmd = shlex.join(command) if command else f"threedb train {_shown(config.source)}"
    card = {
        "format": CARD_FORMAT, "version": CARD_VERSION,
        "name": schema.card.name or out.name, "description": schema.card.description,
        "weights": {"file": "model.pt", "sha256": sha256_file(weights), "bytes": weights.stat().st_size,
                    "parameters": int(sum(v.numel() for k, v in state.items() if not k.endswith(
                        ("running_mean", "running_var", "num_batches_tracked"))))},
        "inference": inference,
        "classes": classes,
        "preprocessing": {"resolution": spec.get("resolution"), "normalization": spec.get("normalization"),
                          "resize": "whole image, bilinear with antialiasing (threedb.evaluators.preprocess)"},
        "data": {"train": _data_summary(train_set),
                 "test": _data_summary(test_set) if test_set is not None else None},
        "task": schema.task,
        "training": {**schema.training.model_dump(mode="json"), "seed": schema.seed, "device": device,
                     "seconds": round(seconds, 1), "torch": torch.__version__,
                     "threads": torch.get_num_threads(), "machine": platform.machine(),
                     "config": _shown(config.source)},
        "metrics": metrics,
        "robustness": robustness or {},
        "history": history,
        "reproduce": [*schema.card.data_commands, train_cmd],
    }
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "classes.json").write_text(json.dumps([c["name"] for c in classes]) + "\n")
    (out / "classmap.json").write_text(json.dumps({c["uid"]: c["index"] for c in classes}, indent=1) + "\n")
    (out / "MODEL_CARD.md").write_text(render_markdown(card))
    return card


def render_markdown(card: dict[str, Any]) -> str:
    """The human-readable model card."""
    m, t, d = card["metrics"], card["training"], card["data"]
    lines = [f"# Model card: {card['name']}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    acc = m.get("test_accuracy")
    lines += ["## Summary", "",
              f"- Architecture: `{card['inference'].get('module') or card['inference'].get('torchvision') or card['inference'].get('file')}"
              f"{':' + card['inference']['class'] if card['inference'].get('class') else ''}` "
              f"with args `{json.dumps(card['inference'].get('args', {}))}`, "
              f"{card['weights']['parameters'] / 1e6:.2f} M parameters, "
              f"{card['weights']['bytes'] / 2**20:.1f} MiB (`model.pt`, sha256 `{card['weights']['sha256'][:16]}...`).",
              f"- Input: {card['preprocessing']['resolution']} px RGB, {card['preprocessing']['resize']}; "
              f"normalisation `{json.dumps(card['preprocessing']['normalization'])}`.",
              f"- Classes ({len(card['classes'])}): " + ", ".join(f"{c['index']} {c['name']}" for c in card["classes"]) + ".",
              ]
    if acc is not None and card.get("task") == "segmentation":
        s = m.get("test_scores", {})
        lines.append(f"- Held-out segmentation on {m['test_images']} images "
                     f"({', '.join(d['test']['environments']) or d['test']['path']}): pixel accuracy "
                     f"**{100 * acc:.1f}%**, IoU {s.get('iou', float('nan')):.3f}, SBD {s.get('sbd', float('nan')):.3f}, "
                     f"F-measure {s.get('f_measure', float('nan')):.3f}.")
    elif acc is not None:
        lines.append(f"- Held-out accuracy: **{100 * acc:.1f}%** on {m['test_images']} images "
                     f"({', '.join(d['test']['environments']) or d['test']['path']}).")
    lines += _robustness_lines(card.get("robustness") or {})
    lines += ["", "## Data", "",
              f"- Training: {d['train']['images']} images from `{d['train']['path']}`"
              + (f", environments {', '.join(d['train']['environments'])}" if d["train"]["environments"] else "") + "."]
    if d.get("test"):
        lines.append(f"- Test: {d['test']['images']} images from `{d['test']['path']}`"
                     + (f", environments {', '.join(d['test']['environments'])}" if d["test"]["environments"] else "") + ".")
    lines += ["", "## Training", "",
              f"- {t['epochs']} epochs, batch {t['batch_size']}, {t['optimizer']} lr {t['lr']} "
              f"(weight decay {t['weight_decay']}, {t['schedule']} schedule), objective `{t['objective']}` "
              f"`{json.dumps(t['objective_args'])}`, augmentation `{json.dumps(t['augment'])}`.",
              f"- Seed {t['seed']}; trained on {t['device']} ({t['threads']} threads, torch {t['torch']}) "
              f"in {t['seconds'] / 60:.1f} min.", ""]
    if m.get("test_per_class"):
        lines += ["## Held-out accuracy per class", "", "| class | accuracy |", "| --- | --- |"]
        lines += [f"| {name} | {'n/a' if a is None else f'{100 * a:.1f}%'} |" for name, a in m["test_per_class"].items()]
        lines.append("")
    lines += ["## Per-epoch history", "", "| epoch | loss | train acc. | test acc. | PGD check |",
              "| --- | --- | --- | --- | --- |"]
    for h in card["history"]:
        ta = "" if h.get("test_accuracy") is None else f"{100 * h['test_accuracy']:.1f}%"
        ra = "" if h.get("robust_accuracy") is None else f"{100 * h['robust_accuracy']:.1f}%"
        lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {100 * h['train_accuracy']:.1f}% | {ta} | {ra} |")
    lines += ["", "## Reproduce", "", "```sh", *card["reproduce"], "```", "",
              "Use it in a run config as the `inference:` mapping of `card.json` (paths relative to this "
              "folder)" + (", with `evaluation: {type: classification, args: {classmap_path: classmap.json}}`."
                           if card.get("task", "classification") == "classification" else "."), ""]
    return "\n".join(lines)


def _robustness_lines(r: dict[str, Any]) -> list[str]:
    """The summary lines on the objective, the PGD check / early stop and the robust evaluation."""
    lines: list[str] = []
    objective = r.get("objective") or {}
    if "eps" in objective:
        lines.append(f"- Adversarial training: `{objective.get('name')}` "
                     f"`{json.dumps({k: v for k, v in objective.items() if k != 'name'})}`.")
    elif "sigma" in objective:
        lines.append(f"- Gaussian noise augmentation (a base model for randomized smoothing): `{objective.get('name')}` "
                     f"sigma {objective['sigma']:g} (pixel units, no clamping).")
    check = r.get("robust_check")
    if check:
        stop = check.get("early_stopped")
        lines.append(f"- PGD check ({check['steps']} steps, eps {check['eps']:g}, {check['images']} {check['from']} "
                     f"images) after every epoch: best {100 * (check.get('best_robust_accuracy') or 0):.1f}% "
                     f"at epoch {check.get('best_epoch')}"
                     + (f"; **early stop** after epoch {stop['epoch']} ({100 * stop['robust_accuracy']:.1f}%), "
                        f"weights of epoch {stop['best_epoch']} kept." if stop else "; no early stop."))
    lines += _stability_lines(r)
    ev = r.get("evaluation")
    if ev and "error" in ev:
        lines.append(f"- Robustness at eps {ev['eps']:g}: not measured ({ev['error']}).")
    elif ev:
        unit = "accuracy" if ev["score"] == "accuracy" else "pixel accuracy"
        lines.append(f"- Robustness ({ev['norm']} eps {ev['eps']:g}, {ev['examples']} test images): clean {unit} "
                     f"{100 * ev['clean']:.1f}%, PGD-{ev['pgd']['steps']} x {ev['pgd']['restarts']} restarts "
                     f"**{100 * ev['pgd_score']:.1f}%**, worst case over {', '.join(ev['attacks'])} "
                     f"**{100 * ev['worst']:.1f}%**.")
        if ev.get("worst_scores"):
            c, w = ev["clean_scores"], ev["worst_scores"]
            lines.append("- Segmentation clean / worst-case adversarial: " + ", ".join(
                f"{name} {c[name]:.3f} / {w[name]:.3f}" for name in ("pixel_accuracy", "iou", "sbd", "f_measure")) + ".")
    return lines


def _stability_lines(r: dict[str, Any]) -> list[str]:
    """Pruning and the unstable-ReLU counts (``robustness.pruning``, ``robustness.relu_stability``)."""
    lines: list[str] = []
    pruning = r.get("pruning")
    if pruning:
        parts = []
        if pruning.get("weights"):
            w = pruning["weights"]
            parts.append(f"{w['zeroed']} of {w['weights']} weights with |w| < {pruning['weights_threshold']:g} "
                         f"set to 0 ({w['already_zero']} were 0)")
        if pruning.get("relus"):
            layers = pruning["relus"]["layers"]
            parts.append(f"ReLUs active on < {100 * pruning['relus_min_active']:g}% of {pruning['relus']['examples']} "
                         "training images removed: " + ", ".join(
                             f"{name} {v['forced_off'] + v['outgoing_zeroed']} of {v['rarely_active']}"
                             for name, v in layers.items())
                         + " (a convolution's single positions cannot be removed; rarely inactive ReLUs are not "
                           "replaced by the identity)")
        lines.append("- Pruning after training: " + "; ".join(parts) + ".")
    st = r.get("relu_stability")
    if st:
        def per_layer(mode: str) -> str:
            return ", ".join(f"{name} {v:.1f}" for name, v in zip(st["layers"], st[mode]["per_layer"]))
        lines.append(f"- Unstable ReLUs (L-inf eps {st['eps']:g}, mean per example over {st['examples']} {st['from']} "
                     f"images, of {sum(st['neurons'])} ReLUs): naive interval bounds **{st['naive']['total']:.1f}** "
                     f"({per_layer('naive')}); improved **{st['improved']['total']:.1f}** ({per_layer('improved')}).")
    return lines


class CardError(ThreeDBError):
    """A model card does not match its weights file (or cannot be read); the message names the file."""


def verify_card(folder: str | Path) -> dict[str, Any]:
    """Read ``folder/card.json`` and check the weights file's size and SHA-256 against it."""
    folder = Path(folder)
    path = folder / "card.json"
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CardError(f"{path}: cannot read the model card ({exc})") from None
    if card.get("format") != CARD_FORMAT or card.get("version") != CARD_VERSION:
        raise CardError(f"{path}: not a {CARD_FORMAT} version {CARD_VERSION} card")
    weights = folder / card["weights"]["file"]
    if not weights.is_file():
        raise CardError(f"{weights}: the weights file of {path} is missing")
    digest = sha256_file(weights)
    if digest != card["weights"]["sha256"]:
        raise CardError(f"{weights}: sha256 {digest[:16]}... does not match {path} "
                        f"({card['weights']['sha256'][:16]}...)")
    return card
