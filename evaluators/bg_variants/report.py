"""The report of a background-variant job: ``report.json`` (the robustness report format), plots (PNG and
SVG) and image grids (examples per category, the most adversarial backgrounds)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from threedb.evaluators.jobs.plots import bar_chart, new_figure, save_figure
from threedb.evaluators.jobs.report import binomial_se, new_report, table
from threedb.robustness.backgrounds import CATEGORIES, FILTERS, ORIGINAL, VariantSet, category_counts

from .scoring import ModelScores


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "model"


def category_grid(out_dir: Path, scores: ModelScores, vset: VariantSet, classes: Sequence[str],
                  examples: int) -> dict[str, str] | None:
    """``plots/categories_<model>``: per category up to ``examples`` ORIGINAL images, each titled with its
    class and the ORIGINAL / MIXED-RAND / ONLY-BG-T predictions."""
    if scores.categories is None or examples == 0:
        return None
    by_cat = {c: [i for i, k in scores.categories.items() if k == c][:examples] for c in CATEGORIES}
    fig = new_figure(1.3 * examples + 1.5, 1.5 * len(CATEGORIES))
    axes = fig.subplots(len(CATEGORIES), examples, squeeze=False)
    for r, cat in enumerate(CATEGORIES):
        for c in range(examples):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{cat}\n({len([1 for k in scores.categories.values() if k == cat])})", fontsize=7)
            if c >= len(by_cat[cat]):
                ax.set_frame_on(False)
                continue
            i = by_cat[cat][c]
            ax.imshow(vset.samples[i].image)
            p = scores.predictions
            ax.set_title(f"{classes[vset.samples[i].label]}\n{classes[p[ORIGINAL][i]]}/"
                         f"{classes[p['MIXED-RAND'][i]]}/{classes[p['ONLY-BG-T'][i]]}", fontsize=5)
    fig.suptitle(f"{scores.name}: examples per category (label; ORIGINAL/MIXED-RAND/ONLY-BG-T predictions)",
                 fontsize=8)
    return save_figure(fig, out_dir, f"categories_{_slug(scores.name)}", f"{scores.name}: examples per category")


def adversarial_grid(out_dir: Path, scores: ModelScores, vset: VariantSet, classes: Sequence[str],
                     top_k: int) -> dict[str, str] | None:
    """``plots/adversarial_<model>``: the ``top_k`` backgrounds with the highest attack success rate."""
    adv = scores.adversarial
    if adv is None:
        return None
    top = adv.most_adversarial(top_k)
    if not top:
        return None
    fig = new_figure(1.5 * len(top) + 0.5, 2.2)
    axes = fig.subplots(1, len(top), squeeze=False)[0]
    for ax, (bg_id, asr) in zip(axes, top):
        ax.imshow(vset.background(bg_id))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{classes[vset.samples[bg_id].label]}\nASR {asr:.2f}", fontsize=7)
    fig.suptitle(f"{scores.name}: most adversarial backgrounds (ONLY-BG-T)", fontsize=8)
    return save_figure(fig, out_dir, f"adversarial_{_slug(scores.name)}", f"{scores.name}: most adversarial backgrounds")


def build_report(*, out_dir: Path, title: str, seed: int, device: str, config: Mapping[str, Any],
                 dataset: Mapping[str, Any], models: Mapping[str, Any], vset: VariantSet, method: str,
                 grabcut_iterations: int | None, scores: Sequence[ModelScores], classes: Sequence[str],
                 seconds: float, examples: int, grid_examples: int, top_k: int) -> dict[str, Any]:
    """``report.json`` (returned) with its plots written under ``out_dir/plots``."""
    first = scores[0]
    n = {v: len(vset.variant(v)) for v in vset.variants}
    headline: dict[str, float] = {f"accuracy {v}": a for v, a in first.accuracy.items()}
    if first.bg_gap is not None:
        headline["BG-GAP"] = first.bg_gap
    if first.adversarial is not None:
        headline["adversarial fooled fraction"] = first.adversarial.fooled_fraction
    tables = [
        table("accuracy per variant (± binomial SE)", ["model", *vset.variants, "BG-GAP"],
              [[s.name, *(f"{s.accuracy[v]:.3f} ± {binomial_se(s.accuracy[v], n[v]):.3f}" for v in vset.variants),
                "" if s.bg_gap is None else round(s.bg_gap, 4)] for s in scores]),
        table("variant sets", ["variant", "images", "per class"],
              [[v, n[v], vset.per_class if vset.per_class is not None else ""] for v in vset.variants]),
        table("filters (images removed)", ["filter", "count"],
              [[k, vset.counts[k]] for k in ("input", *FILTERS, "usable", "balanced_out", "kept")]),
    ]
    counts = {s.name: category_counts(s.categories) for s in scores if s.categories is not None}
    if counts:
        tables.append(table("per-image categories", ["model", *CATEGORIES],
                            [[name, *(c.get(k, 0) for k in CATEGORIES)] for name, c in counts.items()]))
    adv_rows = []
    for s in scores:
        if s.adversarial is not None:
            a = s.adversarial
            adv_rows.append([s.name, len(a.foreground_ids), len(a.background_ids), a.evaluations,
                             round(a.fooled_fraction, 4), ", ".join(f"{i} ({r:.2f})" for i, r in a.most_adversarial(3))])
    if adv_rows:
        tables.append(table("adversarial backgrounds", ["model", "foregrounds", "backgrounds", "composites",
                                                        "fooled fraction", "top backgrounds (ASR)"], adv_rows))
    plots = []
    for s in scores:
        fig = bar_chart(s.accuracy, errors={v: binomial_se(s.accuracy[v], n[v]) for v in vset.variants},
                        ylabel="accuracy", title=f"{s.name}: accuracy per variant"
                        + ("" if s.bg_gap is None else f" (BG-GAP {s.bg_gap:+.3f})"))
        plots.append(save_figure(fig, out_dir, f"accuracy_{_slug(s.name)}", f"{s.name}: accuracy per variant"))
        if s.name in counts:
            fig = bar_chart({k: float(counts[s.name].get(k, 0)) for k in CATEGORIES}, ylabel="images",
                            title=f"{s.name}: per-image categories", ylim=None)
            plots.append(save_figure(fig, out_dir, f"category_counts_{_slug(s.name)}", f"{s.name}: categories"))
        if s.adversarial is not None:
            fig = new_figure()
            ax = fig.add_subplot()
            rates = s.adversarial.success_rate[~np.isnan(s.adversarial.success_rate)]
            ax.hist(rates, bins=20, range=(0, 1), color="#c44e52")
            ax.set_xlabel("attack success rate of a background")
            ax.set_ylabel("backgrounds")
            ax.set_title(f"{s.name}: adversarial backgrounds (fooled {s.adversarial.fooled_fraction:.2f})")
            plots.append(save_figure(fig, out_dir, f"adversarial_rates_{_slug(s.name)}",
                                     f"{s.name}: background success rates"))
    images = [g for s in scores for g in (category_grid(out_dir, s, vset, classes, grid_examples),
                                          adversarial_grid(out_dir, s, vset, classes, top_k)) if g is not None]
    summary = [f"{len(vset.rows)} variant images ({', '.join(f'{v}: {n[v]}' for v in vset.variants)}) from "
               f"{vset.counts['input']} images; foregrounds by {method}"
               + (f" ({grabcut_iterations} GrabCut iterations)" if grabcut_iterations else "")]
    for s in scores:
        line = f"{s.name}: " + ", ".join(f"{v} {a:.3f}" for v, a in s.accuracy.items())
        if s.bg_gap is not None:
            line += f"; BG-GAP {s.bg_gap:+.3f}"
        if s.adversarial is not None:
            line += f"; adversarial backgrounds fool {s.adversarial.fooled_fraction:.3f} of the foregrounds"
        summary.append(line)
    summary.append(f"report: {out_dir / 'report.json'}; datasets: {out_dir / 'variants'}")
    report = new_report(job="bg-variants", title=title, seed=seed, device=device, config=config, dataset=dataset,
                        model=models, headline=headline, seconds=seconds, examples=examples, summary=summary,
                        tables=tables, plots=plots, images=images, peers=("opencv-python-headless",))
    report["variants"] = {
        "foreground_method": method, "grabcut_iterations": grabcut_iterations, "per_class": vset.per_class,
        "counts": dict(vset.counts), "sizes": n, "datasets": {v: f"variants/{v}" for v in vset.variants},
        "manifest": "manifest.jsonl"}
    report["models"] = {s.name: {
        "accuracy": s.accuracy, "bg_gap": s.bg_gap,
        "categories": category_counts(s.categories) if s.categories is not None else None,
        "adversarial": None if s.adversarial is None else {
            "fooled_fraction": s.adversarial.fooled_fraction, "evaluations": s.adversarial.evaluations,
            "foregrounds": len(s.adversarial.foreground_ids), "backgrounds": len(s.adversarial.background_ids),
            "fooled_by_class": {classes[c]: f for c, f in s.adversarial.fooled_by_class.items()},
            "most_adversarial": [{"id": i, "label": vset.samples[i].label, "success_rate": r}
                                 for i, r in s.adversarial.most_adversarial(top_k)],
            "success_rate": {i: (None if np.isnan(r) else float(r))
                             for i, r in zip(s.adversarial.background_ids, s.adversarial.success_rate)}}}
        for s in scores}
    return report


__all__ = ["adversarial_grid", "build_report", "category_grid"]
