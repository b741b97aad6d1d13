"""The projection job's report, computed from the per-class rows of ``examples.jsonl`` (so a resumed job
reports what an uninterrupted one does, times aside): headline, tables, the weights plot and the MMD plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from threedb.evaluators.jobs.plots import new_figure, save_figure
from threedb.evaluators.jobs.report import new_report, table
from threedb.evaluators.project.groups import Grouping
from threedb.evaluators.project.render_more import group_mass

#: The full classes x groups weight table is written up to this many groups (the plot and JSON always).
MAX_TABLE_GROUPS = 40


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def part_mass(rows: Sequence[Mapping[str, Any]], grouping: Grouping) -> dict[str, float]:
    """Render groups: the projected mass of each value of each grouping key (``environment=sunrise``)."""
    out: dict[str, float] = {}
    for gid, m in group_mass(rows).items():
        for piece in grouping.groups[gid].labels:
            out[piece] = out.get(piece, 0.0) + m
    return dict(sorted(out.items()))


def weights_figure(rows: Sequence[Mapping[str, Any]], grouping: Grouping) -> Any:
    """A classes x groups heat map of the weights (each row sums to 1), values written in the cells."""
    ids = sorted({g for r in rows for g in r["groups"]})
    col = {g: j for j, g in enumerate(ids)}
    matrix = np.full((len(rows), len(ids)), np.nan)
    for i, r in enumerate(rows):
        for g, w in zip(r["groups"], r["weights"]):
            matrix[i, col[g]] = w
    names = [grouping.name(g) for g in ids]
    width = min(24.0, 3.0 + 0.55 * len(ids) + 0.08 * max((len(n) for n in names), default=0))
    fig = new_figure(width, min(20.0, 2.2 + 0.38 * len(rows)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    if len(ids) * len(rows) <= 600:
        for i in range(len(rows)):
            for j in range(len(ids)):
                if not np.isnan(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if matrix[i, j] > 0.6 else "white")
    ax.set_xticks(range(len(ids)), names, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [r["label_name"] or "all" for r in rows], fontsize=8)
    ax.set_xlabel("source group")
    ax.set_ylabel("target class")
    ax.set_title("projection weights per class (rows sum to 1; blank: no such group for the class)")
    fig.colorbar(image, ax=ax, label="weight")
    return fig


def mmd_figure(rows: Sequence[Mapping[str, Any]]) -> Any:
    """MMD^2 per class: uniform group weights, groups by size (pooled) and the projection."""
    fig = new_figure(max(6.4, 0.5 * len(rows) + 2), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    width = 0.27
    for k, (key, label, colour) in enumerate((("mmd2_uniform", "uniform (1/k)", "#8c8c8c"),
                                              ("mmd2_pooled", "pooled (by size)", "#dd8452"),
                                              ("mmd2", "projected", "#4c72b0"))):
        ax.bar(x + (k - 1) * width, [r[key] for r in rows], width, label=label, color=colour)
    ax.axhline(0.0, color="k", linewidth=0.6)
    ax.set_xticks(x, [r["label_name"] or "all" for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("unbiased MMD²")
    ax.set_title("MMD² between the target and the source mixture, per class")
    ax.legend(fontsize=8)
    return fig


def build_report(config: Any, out_dir: Path, rows: Sequence[Mapping[str, Any]], grouping: Grouping, *,
                 bandwidth: float, bandwidth_from: str, datasets: Mapping[str, Any], features: Mapping[str, Any],
                 resampled: Mapping[str, Any], uniform: Optional[Mapping[str, Any]],
                 render_more: Mapping[str, Any], device: str, seconds: float, times: Mapping[str, float],
                 match_labels: bool) -> dict[str, Any]:
    """The report of ``rows`` (one per projected class), plots drawn into ``out_dir``."""
    schema = config.schema
    mass = group_mass(rows)
    ids = sorted(mass)
    sizes: dict[int, int] = {}
    for r in rows:
        for g, n in zip(r["groups"], r["group_sizes"]):
            sizes[g] = max(sizes.get(g, 0), n) if not match_labels else sizes.get(g, 0) + n
    uniform_mmd = _mean([r["mmd2_uniform"] for r in rows])
    projected = _mean([r["mmd2"] for r in rows])
    headline: dict[str, float] = {
        "classes": len(rows), "groups": len(ids), "bandwidth": bandwidth,
        "mmd2_uniform": uniform_mmd, "mmd2_pooled": _mean([r["mmd2_pooled"] for r in rows]), "mmd2": projected,
        "mmd2_reduction": uniform_mmd - projected,
        "classes_improved": sum(r["mmd2"] <= r["mmd2_uniform"] + 1e-12 for r in rows) / len(rows),
        "top_group_mass": max(mass.values()), "iterations_mean": _mean([r["iterations"] for r in rows]),
        "iterations_max": max(r["iterations"] for r in rows), "resampled": resampled["samples"],
        "seconds_features": times["features"], "seconds_projection": times["projection"],
    }
    if grouping.type == "render":
        headline.update({f"mass.{k}": v for k, v in part_mass(rows, grouping).items()})

    per_class = table(
        "per class: MMD² before (uniform group weights; pooled: by group size) and after the projection, "
        "solver iterations, the heaviest groups",
        ["class", "target", "source", "groups", "MMD² uniform", "MMD² pooled", "MMD² projected", "iterations",
         "converged", "seconds", "heaviest groups"],
        [[r["label_name"] or "all", r["n_target"], r["n_source"], len(r["groups"]), r["mmd2_uniform"],
          r["mmd2_pooled"], r["mmd2"], r["iterations"], r["converged"], r["seconds"],
          "; ".join(f"{grouping.name(g)} {w:.2f}" for w, g in sorted(zip(r["weights"], r["groups"]),
                                                                     key=lambda t: (-t[0], t[1]))[:3])]
         for r in rows])
    drawn = resampled.get("per_group", {})
    groups_table = table(
        "source groups: samples, projected mass (weights averaged over the classes' target shares) and "
        "samples drawn into the resampled set",
        ["group", "id", "samples", "mass", "drawn"],
        [[grouping.name(g), g, sizes.get(g, 0), mass[g], drawn.get(grouping.name(g), 0)]
         for g in sorted(ids, key=lambda g: (-mass[g], g))])
    tables = [per_class, groups_table]
    if len(ids) <= MAX_TABLE_GROUPS:
        col = {g: j for j, g in enumerate(ids)}
        matrix_rows = []
        for r in rows:
            cells: list[Any] = [""] * len(ids)
            for g, w in zip(r["groups"], r["weights"]):
                cells[col[g]] = w
            matrix_rows.append([r["label_name"] or "all", *cells])
        tables.append(table("weights: class x group (blank: the class has no such group)",
                            ["class", *[grouping.name(g) for g in ids]], matrix_rows))
    if render_more.get("heavy_groups"):
        tables.append(table(f"render_more.yaml: the heavy groups ({render_more['renders']} renders)",
                            ["group", "mass"], [[h["name"], h["mass"]] for h in render_more["heavy_groups"]]))
    plots = [save_figure(weights_figure(rows, grouping), out_dir, "weights", "projection weights per class and group"),
             save_figure(mmd_figure(rows), out_dir, "mmd", "MMD² per class: uniform, pooled and projected weights")]

    top = sorted(mass, key=lambda g: (-mass[g], g))[:3]
    summary = [
        f"projected {datasets['target']['used']} target samples ({len(rows)} "
        f"{'classes' if schema.projection.per_class else 'projection'}) onto {len(ids)} {grouping.type} groups of "
        f"{datasets['source']['used']} source samples; {schema.projection.solver}, bandwidth {bandwidth:.4g} "
        f"({bandwidth_from}); {seconds:.1f} s on {device}",
        f"MMD² (mean over classes): uniform {uniform_mmd:.4g} -> projected {projected:.4g} "
        f"(pooled {headline['mmd2_pooled']:.4g})",
        "heaviest groups: " + ", ".join(f"{grouping.name(g)} {mass[g]:.2f}" for g in top),
        f"resampled {resampled['samples']} samples into {resampled['folder']}/"
        + (f" (uniform baseline: {uniform['folder']}/)" if uniform else ""),
        (f"render_more.yaml: {render_more['renders']} renders of {len(render_more['heavy_groups'])} heavy groups"
         if render_more.get("file") else f"no render_more.yaml: {render_more.get('skipped')}"),
        f"wrote {out_dir / 'report.json'} (examples.jsonl, plots/weights.png, {resampled['folder']}/)",
    ]
    title = schema.title or (f"project: {Path(schema.target.root).name} onto {grouping.type} groups of "
                             f"{Path(schema.source.root).name}")
    report = new_report(job="project", title=title, seed=schema.seed, device=device,
                        config=dict(config.resolved, output=str(out_dir.absolute())),
                        dataset=dict(datasets), model=dict(features), headline=headline, seconds=seconds,
                        examples=len(rows), summary=summary, tables=tables, plots=plots, peers=["scikit-learn"]
                        if grouping.type == "kmeans" else ())
    report["projection"] = {
        "bandwidth": bandwidth, "bandwidth_from": bandwidth_from, "solver": schema.projection.solver,
        "per_class": schema.projection.per_class, "match_labels": match_labels, "grouping": grouping.type,
        "group_by": grouping.keys, "bins": grouping.bins,
        "groups": [{"id": g, "name": grouping.name(g), "parts": grouping.groups[g].parts, "samples": sizes.get(g, 0),
                    "mass": mass[g]} for g in ids],
        "classes": [{k: r[k] for k in ("label", "label_name", "n_target", "n_source", "groups", "group_sizes",
                                       "weights", "mmd2_uniform", "mmd2_pooled", "mmd2", "iterations", "converged",
                                       "dropped", "seconds")} for r in rows],
        "resampled": dict(resampled), "uniform": dict(uniform) if uniform else None,
        "render_more": dict(render_more), "times": dict(times),
    }
    return report


__all__ = ["MAX_TABLE_GROUPS", "build_report", "mmd_figure", "part_mass", "weights_figure"]
