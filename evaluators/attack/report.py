"""The attack job's report, computed from the rows of ``examples.jsonl`` alone (so a resumed job reports
exactly what an uninterrupted one does): headline, per-attack and per-class tables, plots, grid."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Sequence

from threedb.evaluators.attack.grid import GridStore, draw_grid
from threedb.evaluators.jobs.output import JobOutput
from threedb.evaluators.jobs.plots import bar_chart, histograms, save_figure
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
    segmentation = schema.task == "segmentation"
    if segmentation:
        for metric in ("pixel_accuracy", "iou", "sbd", "f_measure"):
            headline[f"clean_{metric}"] = _mean([r["clean"][metric] for r in rows]) or 0.0
            for name in names:
                headline[f"{metric}.{name}"] = _mean([r["attacks"][name][metric] for r in rows]) or 0.0

    norm, eps = schema.threat.norm, schema.threat.eps
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

    out_dir = output.root
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
    images = []
    grid = draw_grid(store, {r["id"]: r for r in rows}, dataset.classes, out_dir, eps=eps,
                     segmentation=segmentation)
    if grid is not None:
        images.append(grid)

    root = Path(schema.data.root)
    summary = [
        f"{n} examples of {root.name}, model {job_model.loaded.source}, {norm} eps {format_eps(eps)}, "
        f"{len(specs)} attacks, {seconds:.1f} s on {device}",
        f"clean accuracy {100 * clean:.1f}% ± {100 * binomial_se(clean, n):.1f}; worst-case robust accuracy "
        f"{100 * robust:.1f}% ± {100 * binomial_se(robust, n):.1f}",
        "per attack: " + ", ".join(f"{a} {100 * figures[a]['robust_accuracy']:.1f}%" for a in names),
        f"wrote {out_dir / 'report.json'} (examples.jsonl, plots/, grid.png)",
    ]
    title = schema.title or (f"attack: {', '.join(names)} at {norm} eps {format_eps(eps)} on "
                             f"{Path(job_model.loaded.source).name} / {root.name}")
    return new_report(job="attack", title=title, seed=schema.seed, device=device, config=dict(config.resolved,
                      output=str(out_dir.absolute())),
                      dataset={"root": str(root), "size": len(dataset), "evaluated": n,
                               "classes": list(dataset.classes), "max_examples": schema.data.max_examples,
                               "environments": schema.data.environments},
                      model=job_model.describe(), headline=headline, seconds=seconds, examples=n, summary=summary,
                      tables=[per_attack, per_class], plots=plots, images=images)


def _settings(spec: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.args.items()) or "defaults"


def _opt(value: float | None) -> Any:
    return "" if value is None else value
