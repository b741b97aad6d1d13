"""The certify job's report, computed from the rows of ``examples.jsonl`` alone (a resumed job reports
what an uninterrupted one does): headline, tables and plots per task (docs/certify.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from threedb.evaluators.attack.report import mean_se
from threedb.evaluators.jobs.output import JobOutput
from threedb.evaluators.jobs.plots import bar_chart, new_figure, save_figure
from threedb.evaluators.jobs.report import binomial_se, new_report, table
from threedb.robustness.smoothing import certified_accuracy, radius, robustness_score

#: Labels of the equivalence modes.
MODE_LABELS = {"without_labels": "without labels (vs the clean output)", "with_labels": "with labels"}


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def radius_key(r: float) -> str:
    """``0.25`` -> ``"r=0.25"`` (headline and column names)."""
    return f"r={r:g}"


def certified_curve(series: Mapping[str, tuple[Sequence[float], Sequence[bool]]], *, marks: Sequence[float],
                    title: str, ylabel: str = "certified accuracy", xlabel: str = "L2 radius ([0, 1] pixel units)"
                    ) -> Figure:
    """One step curve per entry ``name: (radii, correct)``: the share of **all** rows that are correct with
    radius >= r, over r from 0 past the largest radius; the values at ``marks`` drawn as dots."""
    fig = new_figure()
    ax = fig.add_subplot()
    top = max([max(r, default=0.0) for r, _ in series.values()] + list(marks) + [1e-3])
    grid = np.linspace(0.0, top * 1.05, 400)
    for name, (radii, correct) in series.items():
        line, = ax.plot(grid, certified_accuracy(radii, correct, grid), drawstyle="steps-post",
                        label=f"{name} (n={len(radii)})")
        ax.plot(list(marks), certified_accuracy(radii, correct, marks), "o", color=line.get_color(), markersize=4)
    ax.set_xlim(0, top * 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return fig


def throughput(rows: Sequence[Mapping[str, Any]]) -> float:
    """Noisy samples per second over the examples' certification time (model passes and statistics)."""
    seconds = sum(float(r["time"]) for r in rows)
    return sum(int(r["samples"]) for r in rows) / seconds if seconds > 0 else 0.0


def build_report(config: Any, output: JobOutput, job_model: Any, dataset: Any, fit: Any, *, device: str,
                 seconds: float) -> dict[str, Any]:
    """The report of the rows in ``output`` (see docs/certify.md), with its plots drawn into it."""
    schema = config.schema
    rows, s = output.rows, schema.smoothing
    root = Path(schema.data.root)
    n = len(rows)
    sections = {"classification": _classification, "segmentation": _segmentation,
                "equivalence": _equivalence}[schema.task]
    headline, tables, plots, lines = sections(rows, schema, dataset, output.root)
    headline = {"examples": n, **headline, "samples_per_second": throughput(rows)}
    what = {"classification": "CERTIFY", "segmentation": "SEGCERTIFY",
            "equivalence": f"local equivalence ({schema.equiv.score}, t={schema.equiv.t:g})"}[schema.task]
    settings = f"sigma {s.sigma:g}, n0 {s.n0}, n {s.n}, alpha {s.alpha:g}"
    if schema.task == "equivalence":
        settings = f"sigma {s.sigma:g}, n {s.n}, alpha {s.alpha:g}"
    summary = [f"{n} examples of {root.name}, model {job_model.loaded.source}, {what}, {settings}, "
               f"{seconds:.1f} s on {device}, {headline['samples_per_second']:.0f} samples/s",
               *lines,
               f"wrote {output.root / 'report.json'} (examples.jsonl, plots/"
               + (", certify.tsv)" if schema.task == "classification" else ")")]
    title = schema.title or (f"certify ({schema.task}): {what}, {settings} on "
                             f"{Path(job_model.loaded.source).name} / {root.name}")
    return new_report(job="certify", title=title, seed=schema.seed, device=device,
                      config=dict(config.resolved, output=str(output.root.absolute())),
                      dataset={"root": str(root), "size": len(dataset), "evaluated": n,
                               "classes": list(dataset.classes), "max_examples": schema.data.max_examples,
                               "environments": schema.data.environments},
                      model=job_model.describe(), headline=headline, seconds=seconds, examples=n, summary=summary,
                      tables=tables, plots=plots, peers=("scipy", "statsmodels"))


def _classification(rows: Sequence[Mapping[str, Any]], schema: Any, dataset: Any, out_dir: Path
                    ) -> tuple[dict[str, float], list, list, list[str]]:
    n, radii = len(rows), schema.report_radii
    r_all = [float(r["radius"]) for r in rows]
    ok = [bool(r["correct"]) for r in rows]
    acc = certified_accuracy(r_all, ok, radii)
    clean = _mean([float(r["clean_correct"]) for r in rows])
    abstain = _mean([float(r["abstained"]) for r in rows])
    acr = _mean([rad if c else 0.0 for rad, c in zip(r_all, ok)])
    headline: dict[str, float] = {"clean_accuracy": clean, "clean_accuracy_se": binomial_se(clean, n),
                                  "smoothed_accuracy": float(certified_accuracy(r_all, ok, [0.0])[0]),
                                  "abstain_rate": abstain, "average_certified_radius": acr}
    for r, a in zip(radii, acc):
        headline[f"certified_accuracy.{radius_key(r)}"] = float(a)
    curve = table(f"certified accuracy at radius r: the share of all {n} examples predicted correctly by the "
                  f"smoothed model with certified L2 radius >= r (confidence 1 - alpha = {1 - schema.smoothing.alpha:g})",
                  ["radius", "certified accuracy", "± se", "examples"],
                  [[r, float(a), binomial_se(float(a), n), int(round(float(a) * n))] for r, a in zip(radii, acc)])
    per_class = []
    for label, name in enumerate(dataset.classes):
        mine = [r for r in rows if r["label"] == label]
        if mine:
            a = certified_accuracy([m["radius"] for m in mine], [m["correct"] for m in mine], radii)
            per_class.append([name, len(mine), _mean([float(m["clean_correct"]) for m in mine]),
                              _mean([float(m["abstained"]) for m in mine]), *[float(v) for v in a]])
    per_class_table = table("per class: clean accuracy of the base model, abstention rate and certified accuracy",
                            ["class", "examples", "clean accuracy", "abstain rate",
                             *[f"certified {radius_key(r)}" for r in radii]], per_class)
    s = schema.smoothing
    plot = save_figure(certified_curve({f"sigma={s.sigma:g}": (r_all, ok)}, marks=radii,
                                       title=f"certified accuracy (sigma {s.sigma:g}, n {s.n}, alpha {s.alpha:g})"),
                       out_dir, "certified_accuracy", "certified accuracy over the L2 radius")
    lines = [f"clean accuracy of the base model {100 * clean:.1f}%; smoothed: abstains on {100 * abstain:.1f}%, "
             f"average certified radius {acr:.3f}",
             "certified accuracy: " + ", ".join(f"{radius_key(r)} {float(a):.3f}" for r, a in zip(radii, acc))]
    return headline, [curve, per_class_table], [plot], lines


def _segmentation(rows: Sequence[Mapping[str, Any]], schema: Any, dataset: Any, out_dir: Path
                  ) -> tuple[dict[str, float], list, list, list[str]]:
    s, seg = schema.smoothing, schema.seg
    n = len(rows)
    base_acc = [r["base"]["pixel_accuracy"] for r in rows]
    base_iou = [r["base"]["iou"] for r in rows]
    headline: dict[str, float] = {"base_pixel_accuracy": _mean(base_acc), "base_miou": _mean(base_iou)}
    nominal = radius(seg.tau, s.sigma)
    table_rows: list[list[Any]] = [["base model (not certified)", "", "", _mean(base_acc), mean_se(base_acc),
                                    _mean(base_iou), mean_se(base_iou), 0.0, ""]]
    bars, errors = {"base": _mean(base_acc)}, {"base": mean_se(base_acc)}
    for method in seg.methods:
        m = [r["methods"][method] for r in rows]
        acc, iou = [e["pixel_accuracy"] for e in m], [e["iou"] for e in m]
        abstain, radii = [e["abstain_rate"] for e in m], [e["radius"] for e in m]
        headline.update({f"certified_pixel_accuracy.{method}": _mean(acc), f"miou.{method}": _mean(iou),
                         f"abstain_rate.{method}": _mean(abstain), f"radius.{method}": _mean(radii)})
        fixed = f"{nominal:.4g}" if method in ("holm", "bonferroni", "kfwer") else "per image"
        table_rows.append([method, fixed, _mean(radii), _mean(acc), mean_se(acc), _mean(iou), mean_se(iou),
                           _mean(abstain), sum(1 for v in radii if v > 0)])
        bars[method], errors[method] = _mean(acc), mean_se(acc)
    scores = table(f"certified segmentation, means ± standard errors over {n} images (abstained pixels count as "
                   f"wrong); tau {seg.tau:g}, sigma {s.sigma:g}, n0 {s.n0}, n {s.n}, alpha {s.alpha:g}",
                   ["method", "radius (fixed)", "mean radius", "certified pixel accuracy", "± se", "mIoU", "± se",
                    "abstain rate", "images with radius > 0"], table_rows)
    plots = [save_figure(bar_chart(bars, errors=errors, ylabel="pixel accuracy",
                                   title=f"certified pixel accuracy per method (n={n})"),
                         out_dir, "certified_pixel_accuracy", "certified pixel accuracy per method (± standard error)"),
             save_figure(bar_chart({mth: headline[f"abstain_rate.{mth}"] for mth in seg.methods},
                                   ylabel="share of pixels", title="abstain rate per method"),
                         out_dir, "abstain_rate", "abstain rate per method")]
    lines = [f"base model: pixel accuracy {headline['base_pixel_accuracy']:.3f}, mIoU {headline['base_miou']:.3f}",
             *[f"{m}: radius {headline[f'radius.{m}']:.3f}, certified pixel accuracy "
               f"{headline[f'certified_pixel_accuracy.{m}']:.3f}, mIoU {headline[f'miou.{m}']:.3f}, "
               f"abstain {headline[f'abstain_rate.{m}']:.3f}" for m in seg.methods]]
    return headline, [scores], plots, lines


def _equivalence(rows: Sequence[Mapping[str, Any]], schema: Any, dataset: Any, out_dir: Path
                 ) -> tuple[dict[str, float], list, list, list[str]]:
    eq, s = schema.equiv, schema.smoothing
    n = len(rows)
    headline: dict[str, float] = {}
    table_rows, series, lines = [], {}, []
    for mode in eq.modes:
        radii = [float(r["modes"][mode]["radius"]) for r in rows]
        held = [not r["modes"][mode]["abstained"] for r in rows]
        score = robustness_score(radii) if rows else 0.0
        abstain = _mean([0.0 if h else 1.0 for h in held])
        clean = [r["modes"][mode]["clean_score"] for r in rows if r["modes"][mode]["clean_score"] is not None]
        headline.update({f"robustness_score.{mode}": score, f"abstain_rate.{mode}": abstain})
        if clean:
            headline[f"clean_score.{mode}"] = _mean(clean)
        certified = [v for v, h in zip(radii, held) if h]
        table_rows.append([MODE_LABELS[mode], score, mean_se(radii), abstain, _mean(certified),
                           _mean(clean) if clean else ""])
        series[MODE_LABELS[mode]] = (radii, held)
        lines.append(f"{MODE_LABELS[mode]}: robustness score {score:.4f} (mean radius, abstain 0), "
                     f"abstains on {100 * abstain:.1f}%")
    tab = table(f"probabilistic local equivalence (score {eq.score}, t {eq.t:g}, sigma {s.sigma:g}, n {s.n}, "
                f"alpha {s.alpha:g}) over {n} examples; robustness score = mean radius, abstentions counting 0",
                ["mode", "robustness score", "± se", "abstain rate", "mean radius (certified only)",
                 f"mean clean {eq.score}"], table_rows)
    plot = save_figure(certified_curve(series, marks=schema.report_radii, ylabel="share of examples equivalent",
                                       title=f"local equivalence ({eq.score}, t={eq.t:g}): radius >= r"),
                       out_dir, "equivalence_radius", "share of examples locally equivalent at radius >= r")
    return headline, [tab], [plot], lines


__all__ = ["MODE_LABELS", "build_report", "certified_curve", "radius_key", "throughput"]
