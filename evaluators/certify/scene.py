"""``threedb certify scene RUN_DIR``: certified robustness over 3D scene parameters (docs/certify_scene.md).

Reads a run made with the ``smoothing`` policy (:mod:`threedb.policies.smoothing`): every row of its
``details.log`` is one render ``theta0 + e`` whose job id names its base point and phase
(``...-b0002-est-000123``). Per (object, environment, base point) it counts the model's top-1 classes
over the ``n0`` selection and the ``n`` estimation samples and runs CERTIFY's statistics
(:func:`threedb.robustness.smoothing.certify_counts`): the candidate is the most frequent selection
class, ``pA`` the one-sided ``1 - alpha`` Clopper-Pearson lower bound of its estimation share, and
when ``pA > 1/2`` the smoothed classifier
``g(theta) = argmax_c P(f(render(T(theta + e))) = c)`` (``T``: clip / wrap into the ranges) is certified
constant on ``{theta : ||(theta - theta0) / sigma||_2 <= PhiInv(pA)}`` in normalised coordinates, with
probability at least ``1 - alpha`` over the Monte Carlo draws. Otherwise it abstains (prediction -1).

A sample whose render or evaluation failed counts in ``n`` but never for the candidate (conservative).
A base point with fewer than ``n0`` + ``n`` logged samples is ``incomplete`` (not certified yet).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from threedb.evaluators.jobs.config import config_digest
from threedb.evaluators.jobs.output import RESOLVED, JobOutput
from threedb.evaluators.jobs.plots import new_figure, save_figure
from threedb.evaluators.jobs.report import new_report, table
from threedb.policies.smoothing import SmoothingPolicy, parse_sample_id, sample_id
from threedb.robustness.smoothing import ABSTAIN, certify_counts
from threedb.robustness.smoothing.statistics import check_alpha
from threedb.sim.errors import ConfigError, ThreeDBError

JOB = "certify scene"
#: Default output folder inside the run directory.
DEFAULT_OUT = "certify_scene"


class SceneCertifyError(ThreeDBError):
    """The run directory cannot be analysed as asked; the message names the file or option."""


@dataclass(frozen=True)
class SmoothedParam:
    """One smoothed parameter: key ``control.param``, the config's range, its unit and noise."""

    key: str
    low: float
    high: float
    unit: str
    sigma: float
    wrap: bool

    @property
    def width(self) -> float:
        return self.high - self.low

    def value(self, u: float) -> float:
        """The parameter's value at normalised coordinate ``u``."""
        return self.low + u * self.width


@dataclass
class SceneRun:
    """A smoothing run directory, read: its experiment, policy settings and classes."""

    run_dir: Path
    config_file: Path
    resolved: dict[str, Any]
    experiment: Any
    policy_config: dict[str, Any]
    params: list[SmoothedParam]
    n0: int
    n: int
    alpha: float
    class_names: list[str]
    classmap: dict[str, list[int]]
    _policies: dict[str, SmoothingPolicy] = field(default_factory=dict)

    def policy(self, env: str, uid: str) -> SmoothingPolicy:
        """The policy the run built for the (environment, object) pair (base points may differ per pair)."""
        from threedb.policies.registry import make_policy
        from threedb.policies.space import SearchSpace

        pair = f"{env}/{uid}"
        if pair not in self._policies:
            self._policies[pair] = make_policy(self.experiment.policy, SearchSpace(self.experiment.controls),
                                               seed=self.experiment.seed, file=self.config_file, pair=pair)
        return self._policies[pair]

    def class_name(self, index: int) -> str:
        if index == ABSTAIN:
            return "abstain"
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)


def load_run(run_dir: str | Path) -> SceneRun:
    """Read ``run_dir``'s ``config.resolved.yaml``, check it is a smoothing run with a classifier."""
    from threedb.evaluators.base import load_evaluator
    from threedb.policies.registry import make_policy
    from threedb.policies.space import SearchSpace
    from threedb.sim.config import experiment_from_dict
    from threedb.sim.store import CLASS_MAPS, CONFIG, DETAILS

    run_dir = Path(run_dir)
    if not (run_dir / DETAILS).is_file():
        raise SceneCertifyError(f"{run_dir}: not a run directory (no {DETAILS}); give the --out of a "
                                "`threedb run` with `policy: {type: smoothing, ...}`")
    config_file = run_dir / CONFIG
    if not config_file.is_file():
        raise SceneCertifyError(f"{config_file}: missing; the run directory is incomplete")
    resolved = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    experiment = experiment_from_dict(resolved, source=config_file)
    if experiment.policy.get("type") != "smoothing":
        raise ConfigError(f"this run used policy {experiment.policy.get('type')!r}; `threedb certify scene` needs "
                          "a run made with `policy: {type: smoothing, ...}` (docs/certify_scene.md)",
                          file=config_file, key="policy.type", value=experiment.policy.get("type"),
                          expected="smoothing")
    if not experiment.evaluation or not experiment.inference:
        raise ConfigError("the run has no model (a render-only run): there are no predictions to certify",
                          file=config_file, key="inference")
    policy = make_policy(experiment.policy, SearchSpace(experiment.controls), seed=experiment.seed, file=config_file)
    assert isinstance(policy, SmoothingPolicy)
    evaluator = load_evaluator(experiment.evaluation, base_dir=config_file.parent, file=config_file)
    classmap = getattr(evaluator, "classmap", None)
    if evaluator.output_type != "classes" or "prediction" not in evaluator.output_names() or not classmap:
        raise ConfigError("certification needs a classification evaluator with a class map", file=config_file,
                          key="evaluation.type", value=experiment.evaluation.get("type"), expected="classification")
    params = []
    for key in policy.smoothed:
        dim = policy.by_key[key]
        control, pname = key.split(".", 1)
        unit = experiment.control(control).cls.param(pname).unit
        params.append(SmoothedParam(key, float(dim.domain.low), float(dim.domain.high), unit,
                                    policy.sigmas[key], key in policy.wrapped))
    class_names = json.loads((run_dir / CLASS_MAPS).read_text()) if (run_dir / CLASS_MAPS).is_file() else []
    return SceneRun(run_dir, config_file, resolved, experiment, dict(experiment.policy), params,
                    policy.config["n0"], policy.config["n"], policy.config["alpha"], list(class_names),
                    dict(classmap))


@dataclass
class Tally:
    """The counted samples of one (object, environment, base point)."""

    uid: str
    env: str
    base: int
    selection: Counter = field(default_factory=Counter)   # class -> count (ok samples)
    estimation: Counter = field(default_factory=Counter)
    selection_seen: set[int] = field(default_factory=set)
    estimation_seen: set[int] = field(default_factory=set)
    failed: int = 0                                          # failed estimation samples
    failed_selection: int = 0


def tally(run: SceneRun, rows: Iterable[Mapping[str, Any]], *, max_n: int | None = None) -> list[Tally]:
    """Count the top-1 predictions of ``rows`` per (object, environment, base point), in first-seen
    order. ``max_n`` keeps only the first ``max_n`` estimation samples of each base point."""
    groups: dict[tuple[str, str, int], Tally] = {}
    limit = run.n if max_n is None else min(max_n, run.n)
    for row in rows:
        job_id, uid = str(row.get("id")), str(row.get("object_uid"))
        parsed = parse_sample_id(job_id)
        if parsed is None:
            raise SceneCertifyError(f"{run.run_dir}/details.log: row {job_id!r} is not a smoothing sample "
                                    "(ids end in -bNNNN-sel|est-NNNNNN)")
        base, phase, k = parsed
        suffix = f"-{uid}-{sample_id(base, phase, k)}"
        if not job_id.endswith(suffix):
            raise SceneCertifyError(f"{run.run_dir}/details.log: row {job_id!r} does not end in {suffix!r}")
        env = job_id[:-len(suffix)]
        t = groups.setdefault((uid, env, base), Tally(uid, env, base))
        ok = row.get("status") == "ok" and isinstance(row.get("prediction"), list) and row["prediction"]
        if phase == "sel":
            if k >= run.n0 or k in t.selection_seen:
                continue
            t.selection_seen.add(k)
            if ok:
                t.selection[int(row["prediction"][0])] += 1
            else:
                t.failed_selection += 1
        else:
            if k >= limit or k in t.estimation_seen:
                continue
            t.estimation_seen.add(k)
            if ok:
                t.estimation[int(row["prediction"][0])] += 1
            else:
                t.failed += 1
    return list(groups.values())


def certify_tally(run: SceneRun, t: Tally, *, alpha: float, n: int) -> dict[str, Any]:
    """The examples.jsonl row of one base point: CERTIFY on its counts (or ``incomplete``)."""
    policy = run.policy(t.env, t.uid)
    if t.base >= len(policy.bases):
        raise SceneCertifyError(f"{run.run_dir}/details.log: base point {t.base} of {t.env}/{t.uid} is not in "
                                f"the run's config ({len(policy.bases)} base points)")
    point = policy.bases[t.base]
    labels = run.classmap.get(t.uid, [])
    row: dict[str, Any] = {
        "object": t.uid, "environment": t.env, "base": t.base,
        "theta0": {p.key: p.value(point[policy.index[p.key]]) for p in run.params},
        "theta0_normalised": {p.key: point[policy.index[p.key]] for p in run.params},
        "label": list(labels), "label_name": " / ".join(run.class_name(i) for i in labels),
        "n0": len(t.selection_seen), "n": len(t.estimation_seen), "failed": t.failed + t.failed_selection,
        "alpha": alpha,
        "counts": {run.class_name(c): k for c, k in sorted(t.estimation.items())},
    }
    complete = len(t.selection_seen) >= run.n0 and len(t.estimation_seen) >= n
    if not complete or not t.selection:
        row.update(status="incomplete" if not complete else "no-selection", prediction=ABSTAIN,
                   prediction_name="abstain", abstain=True, correct=False, candidate=None, count=None,
                   p_hat=None, p_lower=None, radius_std=0.0, radius=0.0,
                   radius_params={p.key: _param_radius(p, 0.0) for p in run.params})
        return row
    size = max([len(run.class_names) - 1, *t.selection, *t.estimation]) + 1
    counts0 = [t.selection.get(c, 0) for c in range(size)] + [0]
    counts = [t.estimation.get(c, 0) for c in range(size)] + [t.failed]   # failures: never the candidate
    cert = certify_counts(counts0, counts, sigma=1.0, alpha=alpha)        # radius in units of sigma
    r_std = float(cert.radius)
    sigmas = [p.sigma for p in run.params]
    row.update(status="ok", prediction=int(cert.prediction), prediction_name=run.class_name(int(cert.prediction)),
               abstain=cert.prediction == ABSTAIN, correct=cert.prediction != ABSTAIN and cert.prediction in labels,
               candidate=int(cert.candidate), candidate_name=run.class_name(int(cert.candidate)),
               count=int(cert.count), p_hat=cert.count / cert.n, p_lower=float(cert.p_lower),
               radius_std=r_std, radius=min(sigmas) * r_std,
               radius_params={p.key: _param_radius(p, r_std) for p in run.params})
    return row


def _param_radius(p: SmoothedParam, r_std: float) -> dict[str, Any]:
    """The largest move along ``p`` alone that stays certified: ``sigma_p * R`` normalised,
    ``sigma_p * R * (high - low)`` in the parameter's unit (and in degrees for radians)."""
    out: dict[str, Any] = {"normalised": p.sigma * r_std, "value": p.sigma * r_std * p.width, "unit": p.unit}
    if p.unit == "rad":
        out["degrees"] = math.degrees(out["value"])
    return out


def analyze(run: SceneRun, *, alpha: float | None = None, max_n: int | None = None) -> list[dict[str, Any]]:
    """Every base point's certificate (examples.jsonl rows), from the run's ``details.log``."""
    from threedb.sim.store import read_rows

    alpha = run.alpha if alpha is None else check_alpha(alpha)
    if max_n is not None and (isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1):
        raise SceneCertifyError(f"--max-n must be a positive integer, got {max_n!r}")
    n = run.n if max_n is None else min(max_n, run.n)
    return [certify_tally(run, t, alpha=alpha, n=n) for t in tally(run, read_rows(run.run_dir), max_n=max_n)]


# ---------------------------------------------------------------------------------------------- report

def _short(key: str) -> str:
    return key.split(".", 1)[1] if "." in key else key


def _theta_text(row: Mapping[str, Any], params: Sequence[SmoothedParam]) -> str:
    return ", ".join(f"{_short(p.key)}={row['theta0'][p.key]:.3g}{(' ' + p.unit) if p.unit else ''}" for p in params)


def radius_plot(uid: str, rows: Sequence[Mapping[str, Any]], run: SceneRun) -> Any:
    """Certified radius (units of sigma) per base point of one object: green correct, red wrong, grey
    hatched abstain (drawn at 0 with a label)."""
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    envs = sorted({r["environment"] for r in rows})
    labels, heights, colours, notes = [], [], [], []
    for r in rows:
        labels.append(f"b{r['base']}" + (f" {r['environment']}" if len(envs) > 1 else "") + "\n"
                      + "\n".join(f"{_short(p.key)}={r['theta0'][p.key]:.2f}" for p in run.params))
        heights.append(r["radius_std"])
        colours.append("#bbbbbb" if r["abstain"] else ("#55a868" if r["correct"] else "#c44e52"))
        notes.append(r["status"] if r["status"] != "ok" else
                     ("abstain" if r["abstain"] else f"{r['prediction_name']}\npA>={r['p_lower']:.3f}"))
    bars = ax.bar(range(len(rows)), heights, color=colours)
    top = max(heights + [0.5])
    for bar, note in zip(bars, notes):
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    xytext=(0, 3), textcoords="offset points", fontsize=7)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("certified radius R = PhiInv(pA) (units of sigma)")
    sig = ", ".join(f"{_short(p.key)} {p.sigma:g}" for p in run.params)
    ax.set_title(f"{uid}: certified radius per base point (sigma {sig}; alpha {rows[0]['alpha']:g})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="#55a868", label="certified, correct"), Patch(color="#c44e52", label="certified, wrong"),
                       Patch(color="#bbbbbb", label="abstain (R = 0)")], fontsize=7, loc="upper right")
    return fig


def build_report(run: SceneRun, rows: Sequence[Mapping[str, Any]], out_dir: Path, *, alpha: float,
                 max_n: int | None, seconds: float, analysis_config: Mapping[str, Any]) -> dict[str, Any]:
    """report.json (threedb-robustness-report v1) with the per-base-point table and one plot per object."""
    done = [r for r in rows if r["status"] == "ok"]
    certified = [r for r in done if not r["abstain"]]
    good = [r for r in certified if r["correct"]]
    n_done = max(len(done), 1)
    headline = {
        "base_points": len(rows), "complete": len(done), "incomplete": len(rows) - len(done),
        "certified": len(certified) / n_done, "certified_correct": len(good) / n_done,
        "abstain_rate": (len(done) - len(certified)) / n_done,
        "mean_radius_std_correct": sum(r["radius_std"] for r in good) / len(good) if good else 0.0,
        "samples": sum(r["n0"] + r["n"] for r in rows), "failed_samples": sum(r["failed"] for r in rows),
    }
    unit_cols = [f"radius {_short(p.key)} ({p.unit or 'value'})" for p in run.params]
    deg_cols = [f"radius {_short(p.key)} (deg)" for p in run.params if p.unit == "rad"]
    examples = table(
        "certificate per (object, environment, base point)",
        ["object", "environment", "base", "theta0", "label", "prediction", "correct", "count / n", "p_lower",
         "R (sigma units)", "radius (normalised L2)", *unit_cols, *deg_cols, "status"],
        [[r["object"], r["environment"], r["base"], _theta_text(r, run.params), r["label_name"],
          r["prediction_name"], r["correct"], f"{r['count']}/{r['n']}" if r["count"] is not None else f"-/{r['n']}",
          round(r["p_lower"], 4) if r["p_lower"] is not None else "", round(r["radius_std"], 4), round(r["radius"], 4),
          *[round(r["radius_params"][p.key]["value"], 4) for p in run.params],
          *[round(r["radius_params"][p.key]["degrees"], 2) for p in run.params if p.unit == "rad"],
          r["status"]] for r in rows])
    objects = list(dict.fromkeys(r["object"] for r in rows))
    per_object = table("per object", ["object", "base points", "certified correct", "certified wrong", "abstained",
                                      "incomplete", "mean R (certified correct)"],
                       [[o, len(rs := [r for r in rows if r["object"] == o]),
                         sum(1 for r in rs if r["status"] == "ok" and not r["abstain"] and r["correct"]),
                         sum(1 for r in rs if r["status"] == "ok" and not r["abstain"] and not r["correct"]),
                         sum(1 for r in rs if r["status"] == "ok" and r["abstain"]),
                         sum(1 for r in rs if r["status"] != "ok"),
                         round(_mean([r["radius_std"] for r in rs if r["status"] == "ok" and r["correct"]]), 4)]
                        for o in objects])
    params = table("smoothed parameters", ["parameter", "range", "unit", "sigma (normalised)", "sigma (unit)",
                                           "edges"],
                   [[p.key, f"[{p.low:g}, {p.high:g}]", p.unit, p.sigma, round(p.sigma * p.width, 6),
                     "wrap" if p.wrap else "clip"] for p in run.params])
    plots = [save_figure(radius_plot(o, [r for r in rows if r["object"] == o], run), out_dir,
                         f"radius_{_safe(o)}", f"{o}: certified radius per base point") for o in objects]
    n_used = run.n if max_n is None else min(run.n, max_n)
    summary = [
        f"certify scene {run.run_dir}: {len(rows)} base point(s) ({len(done)} complete), "
        f"n0={run.n0}, n={n_used}, alpha={alpha:g}, smoothing {', '.join(p.key for p in run.params)}",
        f"certified {len(certified)}/{len(done)} (correct {len(good)}), abstained {len(done) - len(certified)}",
        *[f"  {r['object']:<12} {r['environment']:<10} b{r['base']} {_theta_text(r, run.params)}: "
          + (r["status"] if r["status"] != "ok" else
             "abstain" if r["abstain"] else
             f"{r['prediction_name']} ({'correct' if r['correct'] else 'WRONG'}) R={r['radius_std']:.3f} sigma, "
             + ", ".join(f"{_short(p.key)} +-{r['radius_params'][p.key]['value']:.3g} {p.unit}".rstrip()
                         for p in run.params))
          + (f" [{r['count']}/{r['n']}, pA>={r['p_lower']:.3f}]" if r["count"] is not None else "")
          for r in rows],
    ]
    inference = run.experiment.inference or {}
    return new_report(
        job=JOB, title=f"certified robustness over {', '.join(_short(p.key) for p in run.params)} "
                       f"({run.run_dir.name}, alpha {alpha:g})",
        seed=run.experiment.seed, device="n/a (counts from the run)", config=dict(analysis_config),
        dataset={"run": str(run.run_dir), "objects": objects,
                 "environments": sorted({r["environment"] for r in rows}), "base_points": len(rows)},
        model={"source": str(inference.get("weights") or inference.get("torchscript") or inference.get("onnx")
                             or inference.get("class") or ""), "module": inference.get("module")},
        headline=headline, seconds=seconds, examples=len(rows), summary=summary,
        tables=[examples, per_object, params], plots=plots)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def certify_scene(run_dir: str | Path, *, out: str | Path | None = None, alpha: float | None = None,
                  max_n: int | None = None, overwrite: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]], Path]:
    """Analyse ``run_dir`` and write the report directory (default ``RUN_DIR/certify_scene``).

    Returns ``(report, rows, out_dir)``. An existing non-empty ``out`` is refused unless ``overwrite``
    and it holds an earlier ``certify scene`` output (it is then replaced).
    """
    start = time.monotonic()
    run = load_run(run_dir)
    if alpha is not None:
        try:
            alpha = check_alpha(alpha)
        except ValueError as exc:
            raise SceneCertifyError(f"--alpha: {exc}") from None
    used_alpha = run.alpha if alpha is None else alpha
    rows = analyze(run, alpha=used_alpha, max_n=max_n)
    out_dir = Path(out) if out is not None else run.run_dir / DEFAULT_OUT
    _prepare_out(out_dir, overwrite)
    analysis_config = {"run": str(run.run_dir.resolve()), "alpha": used_alpha, "max_n": max_n,
                       "policy": run.policy_config, "run_config": run.resolved}
    output = JobOutput.open(out_dir, analysis_config, config_digest(analysis_config), resume=False, job=JOB)
    output.append(rows)
    report = build_report(run, rows, out_dir, alpha=used_alpha, max_n=max_n, seconds=time.monotonic() - start,
                          analysis_config=analysis_config)
    output.write_report(report)
    return report, rows, out_dir


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if not out_dir.is_dir():
        raise SceneCertifyError(f"--out {out_dir}: exists and is not a directory")
    resolved = out_dir / RESOLVED
    head = resolved.read_text(encoding="utf-8").split("\n", 2)[:2] if resolved.is_file() else []
    ours = any(line.startswith(f"# threedb {JOB}:") for line in head)
    if not overwrite:
        raise SceneCertifyError(f"--out {out_dir}: not empty; pass --overwrite to replace an earlier "
                                f"`threedb {JOB}` report there, or choose another --out")
    if not ours:
        raise SceneCertifyError(f"--out {out_dir}: not empty and not a `threedb {JOB}` report; refusing to "
                                "replace it (choose another --out)")
    shutil.rmtree(out_dir)


__all__ = ["DEFAULT_OUT", "JOB", "SceneCertifyError", "SceneRun", "SmoothedParam", "Tally", "analyze",
           "build_report", "certify_scene", "certify_tally", "load_run", "tally"]
