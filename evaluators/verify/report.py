"""The verify job's report, computed from the rows of ``examples.jsonl`` alone (a resumed job reports what
an uninterrupted one does): counts, verified accuracy, the adversarial error bracket beside PGD alone,
times, unstable ReLUs per layer and the minimum distortions (docs/verify.md)."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from threedb.evaluators.jobs.output import JobOutput
from threedb.evaluators.jobs.plots import histograms, new_figure, save_figure
from threedb.evaluators.jobs.report import binomial_se, new_report, table

#: Every outcome of an example, in report order.
STATUSES = ("verified", "adversarial", "misclassified", "timeout", "unknown", "error")
COLORS = {"verified": "#55a868", "adversarial": "#c44e52", "misclassified": "#8172b2", "timeout": "#dd8452",
          "unknown": "#937860", "error": "#333333"}


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _blank(value: Optional[float]) -> Any:
    return "" if value is None else value


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Examples per outcome (every status, zeros included)."""
    return {s: sum(1 for r in rows if r["status"] == s) for s in STATUSES}


def error_bracket(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Shares of all examples: verified accuracy; adversarial error between ``lower`` (an adversarial
    example found, or misclassified) and ``upper`` (not verified); ``pgd`` what the PGD step alone found."""
    n = max(len(rows), 1)
    c = counts(rows)
    pgd = sum(1 for r in rows if r["status"] == "misclassified" or r.get("pgd_adversarial"))
    return {"verified_accuracy": c["verified"] / n, "adversarial_error_lower": (c["adversarial"] + c["misclassified"]) / n,
            "adversarial_error_upper": (len(rows) - c["verified"]) / n, "pgd_error": pgd / n}


def unstable_means(rows: Sequence[Mapping[str, Any]]) -> dict[str, Optional[list[float]]]:
    """Mean unstable ReLUs per ReLU layer over the verified-at-all examples, per bound kind."""
    out: dict[str, Optional[list[float]]] = {}
    for kind in ("interval", "symbolic", "final"):
        lists = [r["unstable"][kind] for r in rows if r.get("unstable") and r["unstable"].get(kind) is not None]
        out[kind] = [float(v) for v in np.mean(np.asarray(lists, dtype=float), axis=0)] if lists else None
    return out


def distortion_stats(rows: Sequence[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
    """Over the examples with a distortion entry: per status counts, the exact minima (``optimal``), the
    mean lower bound and the mean gap of the examples stopped early."""
    entries = [r["distortion"] for r in rows if r.get("distortion")]
    if not entries:
        return None
    optimal = [e["distortion"] for e in entries if e["status"] == "optimal"]
    stopped = [e for e in entries if e["status"] == "timeout"]
    gaps = [e["gap"] for e in stopped if e["gap"] is not None]
    return {"examples": len(entries), "norm": entries[0]["norm"],
            "counts": {s: sum(1 for e in entries if e["status"] == s) for s in ("optimal", "robust", "timeout")},
            "optimal": optimal, "mean": _mean(optimal) if optimal else None,
            "median": float(statistics.median(optimal)) if optimal else None,
            "mean_lower_bound": _mean([e["lower_bound"] for e in entries]),
            "mean_gap_stopped": _mean(gaps) if gaps else None,
            "open_lower_bounds": [e["lower_bound"] for e in entries if e["status"] != "optimal"]}


def time_plot(rows: Sequence[Mapping[str, Any]], out_dir: Path, timeout: float) -> dict[str, str]:
    """Seconds per example (the verification of its ball) in job order, coloured by outcome."""
    fig = new_figure()
    ax = fig.add_subplot()
    for status in STATUSES:
        mine = [r for r in rows if r["status"] == status and status != "misclassified"]
        if mine:
            ax.scatter([r["index"] for r in mine], [max(float(r["seconds"]), 1e-4) for r in mine], s=14,
                       color=COLORS[status], label=f"{status} ({len(mine)})")
    ax.axhline(timeout, color="k", linestyle="--", linewidth=1, label=f"timeout {timeout:g} s")
    ax.set_yscale("log")
    ax.set_xlabel("example (job order)")
    ax.set_ylabel("seconds to an answer")
    ax.set_title("verification time per example")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir, "time_per_example", "verification time per example, by outcome")


def build_report(config: Any, output: JobOutput, job_model: Any, dataset: Any, network: Any, *, device: str,
                 seconds: float) -> dict[str, Any]:
    """The report of the rows in ``output`` (see docs/verify.md), with its plots drawn into it."""
    schema = config.schema
    v = schema.verification
    rows, root = output.rows, Path(schema.data.root)
    n = len(rows)
    c = counts(rows)
    bracket = error_bracket(rows)
    answered = [r for r in rows if r["status"] != "misclassified"]
    times = [float(r["seconds"]) for r in answered]
    clean = c["verified"] + c["adversarial"] + c["timeout"] + c["unknown"] + c["error"]
    headline: dict[str, float] = {"examples": n, "clean_accuracy": clean / n if n else 0.0,
                                  **bracket, "verified_accuracy_se": binomial_se(bracket["verified_accuracy"], n),
                                  **{f"count.{s}": c[s] for s in STATUSES},
                                  "mean_seconds": _mean(times),
                                  "median_seconds": float(statistics.median(times)) if times else 0.0}
    if not v.attack:
        headline.pop("pgd_error")
    relus = [network.layers[k].out_size for k in network.relu_layers()]
    unstable = unstable_means(rows)
    for kind, means in unstable.items():
        if means is not None:
            headline[f"unstable_relus.{kind}"] = float(sum(means))
    tables = [
        table(f"outcomes of {n} examples at L-inf eps {v.eps:g} (timeout {v.timeout:g} s per example)",
              ["outcome", "examples", "share"], [[s, c[s], c[s] / n if n else 0.0] for s in STATUSES]),
        table("adversarial error (share of all examples): PGD alone finds the lower end at most; the exact "
              "figure lies in the bracket (equal to both ends when nothing times out)",
              ["estimate", "error", "meaning"],
              ([["PGD only", bracket["pgd_error"], "misclassified + found by the verifier's PGD step"]]
               if v.attack else [])
              + [["lower bound", bracket["adversarial_error_lower"], "misclassified + a confirmed adversarial example"],
                 ["upper bound", bracket["adversarial_error_upper"], "everything not verified"]]),
        table("unstable ReLUs per layer on the eps-ball (mean over the examples verified; final: the bounds "
              "the MILP used, after tightening)",
              ["ReLU layer", "ReLUs", "interval", "symbolic", "final"],
              [[i, size, *[(unstable[k][i] if unstable[k] is not None else "") for k in ("interval", "symbolic",
                                                                                       "final")]]
               for i, size in enumerate(relus)]),
    ]
    per_class = []
    for label, name in enumerate(dataset.classes):
        mine = [r for r in rows if r["label"] == label]
        if mine:
            cc = counts(mine)
            per_class.append([name, len(mine), cc["verified"], cc["adversarial"], cc["misclassified"],
                              cc["timeout"] + cc["unknown"] + cc["error"]])
    tables.append(table("per class", ["class", "examples", "verified", "adversarial", "misclassified", "undecided"],
                        per_class))
    plots = [time_plot(rows, output.root, v.timeout)] if answered else []
    lines = [f"{n} examples of {root.name}, model {job_model.loaded.source} ({sum(relus)} ReLUs in {len(relus)} "
             f"layers), L-inf eps {v.eps:g}, {seconds:.1f} s on {device}",
             "verified {verified}, adversarial {adversarial}, misclassified {misclassified}, timeout {timeout}, "
             "unknown {unknown}".format(**c) + (f", error {c['error']}" if c["error"] else ""),
             f"verified accuracy {100 * bracket['verified_accuracy']:.1f}%; adversarial error in "
             f"[{100 * bracket['adversarial_error_lower']:.1f}%, {100 * bracket['adversarial_error_upper']:.1f}%]"
             + (f" (PGD alone: {100 * bracket['pgd_error']:.1f}%)" if v.attack else "")
             + (f"; {_mean(times):.2f} s mean, {headline['median_seconds']:.2f} s median per example" if times else "")]
    dist = distortion_stats(rows)
    if dist is not None:
        headline.update({f"distortion.{s}": k for s, k in dist["counts"].items()})
        headline["distortion.mean_lower_bound"] = dist["mean_lower_bound"]
        for key in ("mean", "median", "mean_gap_stopped"):
            if dist[key] is not None:
                headline[f"distortion.{key}"] = dist[key]
        tables.append(table(f"minimum adversarial distortion ({dist['norm']}, searched within {v.search_radius:g}): "
                            "optimal = exact minimum; robust = none within the radius; timeout = stopped early, "
                            "the minimum lies between the lower bound and the best example found",
                            ["examples", "optimal", "robust", "timeout", "mean (optimal)", "median (optimal)",
                             "mean lower bound", "mean gap (timeout)"],
                            [[dist["examples"], *dist["counts"].values(), *[_blank(dist[k]) for k in ("mean", "median")],
                              dist["mean_lower_bound"], _blank(dist["mean_gap_stopped"])]]))
        series = {"exact minimum": dist["optimal"],
                  "proven lower bound (robust, timeout)": dist["open_lower_bounds"]}
        plots.append(save_figure(histograms(series, xlabel=f"{dist['norm']} distortion ([0, 1] pixel units)",
                                            title=f"minimum adversarial distortion ({dist['norm']})", marker=v.eps,
                                            marker_label=f"eps {v.eps:g}"),
                                 output.root, "distortion", "minimum adversarial distortion (exact minima; lower bounds where none was found)"))
        lines.append(f"minimum {dist['norm']} distortion: " + ", ".join(f"{s} {k}" for s, k in dist["counts"].items())
                     + (f"; exact minima mean {dist['mean']:.4f}, median {dist['median']:.4f}" if dist["optimal"] else ""))
    lines.append(f"wrote {output.root / 'report.json'} (examples.jsonl, plots/)")
    title = schema.title or (f"verify: L-inf eps {v.eps:g}, {v.timeout:g} s per example on "
                             f"{Path(job_model.loaded.source).name} / {root.name}")
    return new_report(job="verify", title=title, seed=schema.seed, device=device,
                      config=dict(config.resolved, output=str(output.root.absolute())),
                      dataset={"root": str(root), "size": len(dataset), "evaluated": n,
                               "classes": list(dataset.classes), "max_examples": schema.data.max_examples,
                               "environments": schema.data.environments},
                      model={**job_model.describe(), "network": network.describe()}, headline=headline,
                      seconds=seconds, examples=n, summary=lines, tables=tables, plots=plots,
                      peers=("highspy", "onnx", "onnxruntime"))


__all__ = ["STATUSES", "build_report", "counts", "distortion_stats", "error_bracket", "unstable_means"]
