"""The attack job's report, computed from the rows of ``examples.jsonl`` alone (so a resumed job reports
exactly what an uninterrupted one does): headline, per-attack and per-class tables, plots, grid."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from threedb.evaluators.attack.config import SEGMENTATION_METRICS, SegmentationConfig
from threedb.evaluators.attack.grid import GridStore, draw_grid
from threedb.evaluators.jobs.output import JobOutput
from threedb.evaluators.jobs.plots import bar_chart, histograms, new_figure, save_figure
from threedb.evaluators.jobs.report import binomial_se, new_report, table


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def format_eps(eps: float) -> str:
    """``0.00784`` -> ``"0.00784 (2/255)"`` when eps is a whole number of 1/255 steps."""
    steps = Fraction(eps).limit_denominator(255) * 255
    exact = steps.denominator == 1 and abs(float(steps) / 255 - eps) < 1e-9
    return f"{eps:.5g}" + (f" ({steps.numerator}/255)" if exact and steps.numerator else "")


def attack_figures(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per attack: robust accuracy (clean-correct and not broken by it), success rate (over clean-correct),
    norms of its successful perturbations, mean queries/gradients, how often it gave the worst case."""
    n = len(rows)
    correct = [r for r in rows if r["clean_correct"]]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        held = sum(1 for r in correct if not r["attacks"][name]["success"])
        broken = [r["attacks"][name] for r in correct if r["attacks"][name]["success"]]
        acc = held / n if n else 0.0
        out[name] = {
            "robust_accuracy": acc, "robust_accuracy_se": binomial_se(acc, n),
            "success_rate": len(broken) / len(correct) if correct else None,
            "norms": [e["norm"] for e in broken],
            "mean_norm": _mean([e["norm"] for e in broken]),
            "max_norm": max((e["norm"] for e in broken), default=None),
            "mean_queries": _mean([r["attacks"][name]["queries"] for r in rows]),
            "mean_gradients": _mean([r["attacks"][name]["gradients"] for r in rows]),
            "worst": sum(1 for r in rows if r["worst_attack"] == name),
        }
    return out


def build_report(config: Any, output: JobOutput, store: GridStore, job_model: Any, dataset: Any,
                 specs: Sequence[Any], *, device: str, seconds: float) -> dict[str, Any]:
    """The report of the rows in ``output`` (see docs/attacks.md), with plots and grid.png drawn into it."""
    schema = config.schema
    rows = output.rows
    names = [s.name for s in specs]
    n = len(rows)
    clean = sum(r["clean_correct"] for r in rows) / n if n else 0.0
    robust = sum(r["robust"] for r in rows) / n if n else 0.0
    figures = attack_figures(rows, names)
    headline: dict[str, float] = {"examples": n, "clean_accuracy": clean, "clean_accuracy_se": binomial_se(clean, n),
                                  "robust_accuracy": robust, "robust_accuracy_se": binomial_se(robust, n)}
    for name, f in figures.items():
        for key in ("robust_accuracy", "success_rate", "mean_norm", "mean_queries", "mean_gradients"):
            if f[key] is not None:
                headline[f"{key}.{name}"] = f[key]
    norm, eps = schema.threat.norm, schema.threat.eps
    out_dir = output.root
    root = Path(schema.data.root)
    if schema.task == "segmentation":
        metric = (schema.segmentation or SegmentationConfig()).worst
        seg = segmentation_figures(rows, names)
        for key, value in seg.items():
            headline[key] = value
        tables, plots, summary_lines = _segmentation_sections(rows, specs, figures, seg, dataset, metric,
                                                              out_dir, norm, eps)
        grid = draw_grid(store, {r["id"]: r for r in rows}, dataset.classes, out_dir, eps=eps,
                         segmentation=True, metric=metric)
    else:
        tables, plots, summary_lines = _classification_sections(rows, specs, figures, dataset, out_dir, norm, eps,
                                                                clean, robust)
        grid = draw_grid(store, {r["id"]: r for r in rows}, dataset.classes, out_dir, eps=eps)
    images = [grid] if grid is not None else []

    summary = [
        f"{n} examples of {root.name}, model {job_model.loaded.source}, {norm} eps {format_eps(eps)}, "
        f"{len(specs)} attacks, {seconds:.1f} s on {device}",
        *summary_lines,
        f"wrote {out_dir / 'report.json'} (examples.jsonl, plots/, grid.png)",
    ]
    title = schema.title or (f"attack{' (segmentation)' if schema.task == 'segmentation' else ''}: "
                             f"{', '.join(names)} at {norm} eps {format_eps(eps)} on "
                             f"{Path(job_model.loaded.source).name} / {root.name}")
    return new_report(job="attack", title=title, seed=schema.seed, device=device, config=dict(config.resolved,
                      output=str(out_dir.absolute())),
                      dataset={"root": str(root), "size": len(dataset), "evaluated": n,
                               "classes": list(dataset.classes), "max_examples": schema.data.max_examples,
                               "environments": schema.data.environments},
                      model=job_model.describe(), headline=headline, seconds=seconds, examples=n, summary=summary,
                      tables=tables, plots=plots, images=images)


def _classification_sections(rows: Sequence[Mapping[str, Any]], specs: Sequence[Any],
                             figures: Mapping[str, Mapping[str, Any]], dataset: Any, out_dir: Path, norm: str,
                             eps: float, clean: float, robust: float) -> tuple[list, list, list[str]]:
    """Tables, plots and summary lines of a classification job."""
    n, names = len(rows), [s.name for s in specs]
    per_attack = table(
        f"attacks ({norm}, eps {format_eps(eps)}): robust accuracy over all {n} examples, success rate over "
        "the clean-correct ones, norms of successful perturbations",
        ["attack", "settings", "robust accuracy", "± se", "success rate", "mean norm", "max norm",
         "mean queries", "mean gradients", "worst case for"],
        [[s.name, _settings(s), figures[s.name]["robust_accuracy"], figures[s.name]["robust_accuracy_se"],
          _opt(figures[s.name]["success_rate"]), _opt(figures[s.name]["mean_norm"]), _opt(figures[s.name]["max_norm"]),
          _opt(figures[s.name]["mean_queries"]), _opt(figures[s.name]["mean_gradients"]), figures[s.name]["worst"]]
         for s in specs]
        + [["worst case", "every attack", robust, binomial_se(robust, n), "", "", "", "", "", ""]])
    per_class_rows = []
    for label, class_name in enumerate(dataset.classes):
        mine = [r for r in rows if r["label"] == label]
        if not mine:
            continue
        k = len(mine)
        per_class_rows.append([class_name, k, sum(r["clean_correct"] for r in mine) / k,
                               sum(r["robust"] for r in mine) / k]
                              + [sum(r["clean_correct"] and not r["attacks"][a]["success"] for r in mine) / k
                                 for a in names])
    per_class = table("per class: clean, worst-case and per-attack robust accuracy",
                      ["class", "examples", "clean", "worst case", *names], per_class_rows)

    bars = {"clean": clean, **{a: figures[a]["robust_accuracy"] for a in names}, "worst case": robust}
    errors = {"clean": binomial_se(clean, n), **{a: figures[a]["robust_accuracy_se"] for a in names},
              "worst case": binomial_se(robust, n)}
    plots = [save_figure(bar_chart(bars, errors=errors, ylabel="accuracy",
                                   title=f"robust accuracy per attack ({norm}, eps {format_eps(eps)}, n={n})"),
                         out_dir, "robust_accuracy", "robust accuracy per attack (± binomial standard error)"),
             save_figure(histograms({a: figures[a]["norms"] for a in names}, xlabel=f"{norm} norm of the perturbation",
                                    title="perturbation norms of successful attacks", marker=eps,
                                    marker_label="eps"),
                         out_dir, "perturbation_norms", "perturbation-norm histogram (successful attacks)")]
    summary = [
        f"clean accuracy {100 * clean:.1f}% ± {100 * binomial_se(clean, n):.1f}; worst-case robust accuracy "
        f"{100 * robust:.1f}% ± {100 * binomial_se(robust, n):.1f}",
        "per attack: " + ", ".join(f"{a} {100 * figures[a]['robust_accuracy']:.1f}%" for a in names),
    ]
    return [per_attack, per_class], plots, summary


def mean_se(values: Sequence[float]) -> float:
    """Standard error of the mean of ``values``: sample standard deviation / sqrt(n) (0 for fewer than 2)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def segmentation_figures(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, float]:
    """The segmentation headline: per score, ``clean_S``, ``adversarial_S`` (the per-example worst case) with
    their standard errors ``_se``, and ``S.NAME`` per attack (means over the examples)."""
    out: dict[str, float] = {}
    for metric in SEGMENTATION_METRICS:
        clean = [r["clean"][metric] for r in rows]
        worst = [r["worst"][metric] for r in rows]
        out[f"clean_{metric}"], out[f"clean_{metric}_se"] = _mean(clean) or 0.0, mean_se(clean)
        out[f"adversarial_{metric}"], out[f"adversarial_{metric}_se"] = _mean(worst) or 0.0, mean_se(worst)
        for name in names:
            out[f"{metric}.{name}"] = _mean([r["attacks"][name][metric] for r in rows]) or 0.0
    return out


#: Column labels of the segmentation scores.
_LABELS = {"pixel_accuracy": "pixel accuracy", "iou": "IoU", "sbd": "SBD", "f_measure": "F-measure"}


def _segmentation_sections(rows: Sequence[Mapping[str, Any]], specs: Sequence[Any],
                           figures: Mapping[str, Mapping[str, Any]], seg: Mapping[str, float], dataset: Any,
                           metric: str, out_dir: Path, norm: str, eps: float) -> tuple[list, list, list[str]]:
    """Tables, plots and summary lines of a segmentation job (scores as means ± standard errors)."""
    n, names = len(rows), [s.name for s in specs]

    def cells(values: Callable[[Mapping[str, Any]], Mapping[str, float]]) -> list[float]:
        out: list[float] = []
        for m in SEGMENTATION_METRICS:
            v = [values(r)[m] for r in rows]
            out += [_mean(v) or 0.0, mean_se(v)]
        return out

    score_columns = [c for m in SEGMENTATION_METRICS for c in (_LABELS[m], "± se")]
    worst_counts = {a: sum(1 for r in rows if r["worst_attack"] == a) for a in ["clean", *names]}
    scores_table = table(
        f"segmentation scores ({norm}, eps {format_eps(eps)}), means ± standard errors over {n} examples; "
        f"worst case: per example the lowest {_LABELS[metric]} over clean and every attack",
        ["input", "settings", *score_columns, "mean norm", "mean queries", "mean gradients", "worst case for"],
        [["clean", "", *cells(lambda r: r["clean"]), "", "", "", worst_counts["clean"]]]
        + [[s.name, _settings(s), *cells(lambda r, a=s.name: r["attacks"][a]),
            _opt(_mean([r["attacks"][s.name]["norm"] for r in rows])), _opt(figures[s.name]["mean_queries"]),
            _opt(figures[s.name]["mean_gradients"]), worst_counts[s.name]] for s in specs]
        + [["worst case", f"lowest {_LABELS[metric]}", *cells(lambda r: r["worst"]), "", "", "", ""]])
    per_class_rows = []
    for label, class_name in enumerate(dataset.classes):
        mine = [r for r in rows if r["label"] == label]
        if mine:
            per_class_rows.append([class_name, len(mine), _mean([r["clean"][metric] for r in mine]),
                                   _mean([r["worst"][metric] for r in mine])]
                                  + [_mean([r["attacks"][a][metric] for r in mine]) for a in names])
    per_class = table(f"per class: mean clean, worst-case and per-attack {_LABELS[metric]}",
                      ["class", "examples", "clean", "worst case", *names], per_class_rows)

    worst_values = [r["worst"][metric] for r in rows]
    bars = {"clean": seg[f"clean_{metric}"], **{a: seg[f"{metric}.{a}"] for a in names},
            "worst case": seg[f"adversarial_{metric}"]}
    errors = {"clean": seg[f"clean_{metric}_se"],
              **{a: mean_se([r["attacks"][a][metric] for r in rows]) for a in names},
              "worst case": mean_se(worst_values)}
    plots = [save_figure(grouped_bars(seg), out_dir, "segmentation_scores",
                         "clean vs worst-case adversarial segmentation scores (± standard error)"),
             save_figure(bar_chart(bars, errors=errors, ylabel=f"mean {_LABELS[metric]}",
                                   title=f"{_LABELS[metric]} per attack ({norm}, eps {format_eps(eps)}, n={n})"),
                         out_dir, f"{metric}_per_attack", f"mean {_LABELS[metric]} per attack (± standard error)"),
             save_figure(histograms({a: [r["attacks"][a]["norm"] for r in rows] for a in names},
                                    xlabel=f"{norm} norm of the perturbation", title="perturbation norms",
                                    marker=eps, marker_label="eps"),
                         out_dir, "perturbation_norms", "perturbation-norm histogram (every example)")]

    def line(prefix: str) -> str:
        return ", ".join(f"{_LABELS[m]} {seg[f'{prefix}_{m}']:.3f} ± {seg[f'{prefix}_{m}_se']:.3f}"
                         for m in SEGMENTATION_METRICS)

    summary = [f"clean: {line('clean')}",
               f"worst case (lowest {_LABELS[metric]} per example): {line('adversarial')}",
               f"per attack {_LABELS[metric]}: " + ", ".join(f"{a} {seg[f'{metric}.{a}']:.3f}" for a in names)]
    return [scores_table, per_class], plots, summary


def grouped_bars(seg: Mapping[str, float]) -> Any:
    """Clean and worst-case adversarial mean of each segmentation score side by side, with error bars."""
    fig = new_figure()
    ax = fig.add_subplot()
    width = 0.38
    for k, (prefix, colour) in enumerate((("clean", "#4c72b0"), ("adversarial", "#c44e52"))):
        xs = [i + (k - 0.5) * width for i in range(len(SEGMENTATION_METRICS))]
        heights = [seg[f"{prefix}_{m}"] for m in SEGMENTATION_METRICS]
        errs = [seg[f"{prefix}_{m}_se"] for m in SEGMENTATION_METRICS]
        bars = ax.bar(xs, heights, width, yerr=errs, capsize=3, color=colour,
                      label="clean" if prefix == "clean" else "worst-case adversarial")
        for bar, h, e in zip(bars, heights, errs):
            ax.annotate(f"{h:.2f}", (bar.get_x() + bar.get_width() / 2, h + e), ha="center", va="bottom",
                        xytext=(0, 2), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(len(SEGMENTATION_METRICS)), [_LABELS[m] for m in SEGMENTATION_METRICS])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("mean over examples")
    ax.set_title("segmentation scores: clean vs worst-case adversarial")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _settings(spec: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.args.items()) or "defaults"


def _opt(value: float | None) -> Any:
    return "" if value is None else value
