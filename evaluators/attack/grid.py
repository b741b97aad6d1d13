"""``grid.png``: clean vs adversarial examples with the true label and both predictions, and the
perturbation amplified to be visible; for segmentation: image, true mask, clean and adversarial predictions.

The examples shown are the first ``grid.examples`` that an attack broke (clean-correct, then fooled; for
segmentation: an attack lowered the worst-case score), topped up with the first others. Their images
(and label maps) are kept in ``OUT/grid.npz`` as batches finish, so a resumed job draws the grid of an
uninterrupted one.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from threedb.evaluators.jobs.output import write_atomic
from threedb.evaluators.jobs.plots import new_figure

STORE = "grid.npz"
#: The segmentation label maps kept per example (uint8 HxW): true mask, clean and adversarial predictions.
_LABEL_KEYS = ("mask", "clean_pred", "adv_pred")


class GridStore:
    """Up to ``k`` broken and ``k`` other examples (id, clean image, worst-case adversarial image; for
    segmentation also the label maps: true mask, clean and adversarial predictions)."""

    def __init__(self, out_dir: Path, k: int, *, keep_ids: Iterable[str] = ()) -> None:
        self.path, self.k, self.dirty = Path(out_dir) / STORE, k, False
        self.entries: dict[str, list[dict[str, Any]]] = {"broken": [], "other": []}
        keep = set(keep_ids)
        if self.path.is_file() and k:
            with np.load(self.path, allow_pickle=False) as data:
                for i, example_id in enumerate(data["ids"].tolist()):
                    if example_id in keep:  # entries of rows a resume dropped are redone
                        entry = {"id": example_id, "index": int(data["index"][i]),
                                 "clean": data["clean"][i], "adv": data["adv"][i]}
                        entry.update({key: data[key][i] for key in _LABEL_KEYS if key in data.files})
                        self.entries[str(data["kinds"][i])].append(entry)

    def offer(self, batch: Any, result: Any, rows: Sequence[Mapping[str, Any]],
              labels: tuple[Any, Any, Mapping[str, Any]] | None = None) -> None:
        """Keep the batch's examples that the grid still has room for. ``labels``: for segmentation, the
        ``(true masks, clean predictions, {attack: predictions})`` label maps ``NxHxW`` of the batch."""
        for j, row in enumerate(rows):
            if labels is None:
                kind = "broken" if row["clean_correct"] and not row["robust"] else "other"
            else:
                kind = "broken" if row["worst_attack"] != "clean" else "other"
            if len(self.entries[kind]) < self.k:
                name = shown_attack(row)
                adv = result.results[name].adv[j]
                entry = {"id": row["id"], "index": row["index"],
                         "clean": batch.x[j].detach().cpu().numpy().astype(np.float16),
                         "adv": adv.detach().cpu().numpy().astype(np.float16)}
                if labels is not None:
                    target, clean_pred, preds = labels
                    for key, value in zip(_LABEL_KEYS, (target[j], clean_pred[j], preds[name][j])):
                        entry[key] = value.detach().cpu().numpy().astype(np.uint8)
                self.entries[kind].append(entry)
                self.dirty = True

    def save(self) -> None:
        """Rewrite ``grid.npz`` atomically when it changed."""
        if not self.dirty:
            return
        chosen = [(kind, e) for kind in ("broken", "other") for e in self.entries[kind]]
        buffer = io.BytesIO()
        np.savez(buffer, ids=np.array([e["id"] for _, e in chosen], dtype=str),
                 kinds=np.array([kind for kind, _ in chosen], dtype=str),
                 index=np.array([e["index"] for _, e in chosen], dtype=np.int64),
                 clean=np.stack([e["clean"] for _, e in chosen]) if chosen else np.zeros((0,)),
                 adv=np.stack([e["adv"] for _, e in chosen]) if chosen else np.zeros((0,)),
                 **{key: np.stack([e[key] for _, e in chosen]) for key in _LABEL_KEYS
                    if chosen and all(key in e for _, e in chosen)})
        write_atomic(self.path, buffer.getvalue())
        self.dirty = False

    def shown(self) -> list[dict[str, Any]]:
        """The examples to draw: broken first, then others, ``k`` at most, each group in example order."""
        broken = sorted(self.entries["broken"], key=lambda e: e["index"])
        other = sorted(self.entries["other"], key=lambda e: e["index"])
        return (broken + other)[:self.k]


def _image(chw: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(chw, dtype=np.float32).transpose(1, 2, 0), 0, 1)


def draw_grid(store: GridStore, rows_by_id: Mapping[str, Mapping[str, Any]], classes: Sequence[str],
              out_dir: Path, *, eps: float, segmentation: bool = False,
              metric: str = "f_measure") -> dict[str, str] | None:
    """Draw ``grid.png``: per example, clean | adversarial | perturbation (scaled so eps is full range)."""
    shown = store.shown()
    if not shown:
        return None
    if segmentation:
        return _draw_segmentation_grid(shown, rows_by_id, out_dir, metric)
    per_row = 2  # examples per grid row, each taking three panels
    nrows = (len(shown) + per_row - 1) // per_row
    fig = new_figure(width=3 * per_row * 1.6, height=nrows * 1.95)
    gs = fig.add_gridspec(nrows, 3 * per_row)
    for n, entry in enumerate(shown):
        row = rows_by_id[entry["id"]]
        r, c = divmod(n, per_row)
        clean, adv = _image(entry["clean"]), _image(entry["adv"])
        delta = adv - clean
        panels = [(clean, _clean_caption(row, classes)),
                  (adv, _adv_caption(row, classes)),
                  (np.clip(0.5 + delta / (2 * eps if eps > 0 else 1.0), 0, 1), f"delta x{0.5 / eps:.0f}"
                   if eps > 0 else "delta")]
        for p, (img, caption) in enumerate(panels):
            ax = fig.add_subplot(gs[r, 3 * c + p])
            ax.imshow(img, interpolation="nearest")
            ax.set_title(caption, fontsize=6.5, color="firebrick" if p == 1 and not row["robust"] else "black")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("clean | worst-case adversarial | perturbation (0.5 + delta / 2 eps)", fontsize=8)
    _save_grid(fig, out_dir)
    return {"title": "clean vs worst-case adversarial examples (true label, predictions, amplified perturbation)",
            "png": "grid.png"}


def _draw_segmentation_grid(shown: Sequence[Mapping[str, Any]], rows_by_id: Mapping[str, Mapping[str, Any]],
                            out_dir: Path, metric: str) -> dict[str, str]:
    """Per example: image | true mask | clean prediction | worst-case adversarial prediction (labels coloured,
    background black), captioned with the worst-case score."""
    from matplotlib.colors import ListedColormap

    top = max(int(max(e[k].max() for k in _LABEL_KEYS)) for e in shown)
    colours = ListedColormap(["black", "#f2c14e", "#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974",
                              "#64b5cd", "#dd8452", "#937860", "#da8bc3", "#8c8c8c"][:max(top, 1) + 1])
    per_row = 2
    nrows = (len(shown) + per_row - 1) // per_row
    fig = new_figure(width=4 * per_row * 1.5, height=nrows * 1.85)
    gs = fig.add_gridspec(nrows, 4 * per_row)
    for n, entry in enumerate(shown):
        row = rows_by_id[entry["id"]]
        r, c = divmod(n, per_row)
        name = shown_attack(row)
        panels = [(_image(entry["clean"]), f"{row['label_name']}"),
                  (entry["mask"], "true mask"),
                  (entry["clean_pred"], f"clean: {_short(metric)} {row['clean'][metric]:.2f}"),
                  (entry["adv_pred"], f"{name}: {_short(metric)} {row['attacks'][name][metric]:.2f}")]
        for p, (img, caption) in enumerate(panels):
            ax = fig.add_subplot(gs[r, 4 * c + p])
            if p == 0:
                ax.imshow(img, interpolation="nearest")
            else:
                ax.imshow(img, cmap=colours, vmin=0, vmax=max(top, 1), interpolation="nearest")
            ax.set_title(caption, fontsize=6.5, color="firebrick" if p == 3 and row["worst_attack"] != "clean"
                         else "black")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("image | true mask | clean prediction | worst-case adversarial prediction", fontsize=8)
    _save_grid(fig, out_dir)
    return {"title": "segmentation: image, true mask, clean and worst-case adversarial predictions",
            "png": "grid.png"}


def _short(metric: str) -> str:
    return {"pixel_accuracy": "acc", "iou": "IoU", "sbd": "SBD", "f_measure": "F"}.get(metric, metric)


def _save_grid(fig: Any, out_dir: Path) -> None:
    """``OUT/grid.png``, written atomically (a dashboard may be reading it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    write_atomic(Path(out_dir) / "grid.png", buffer.getvalue())


def _clean_caption(row: Mapping[str, Any], classes: Sequence[str]) -> str:
    return f"{row['label_name']}\nclean: {classes[row['clean_prediction']]}"


def shown_attack(row: Mapping[str, Any]) -> str:
    """The attack whose output the grid shows: the worst-case one, or the first when none broke the example."""
    name = row["worst_attack"]
    return next(iter(row["attacks"])) if name in (None, "clean") else name


def _adv_caption(row: Mapping[str, Any], classes: Sequence[str]) -> str:
    name = shown_attack(row)
    attack = row["attacks"][name]
    return f"{name}: {classes[attack['prediction']]}\nnorm {attack['norm']:.4f}"


__all__ = ["GridStore", "draw_grid", "shown_attack"]
