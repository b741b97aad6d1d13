"""Running a projection job: open both datasets and group the source (every problem reported before any
work), extract features, project class by class (one row per class appended to ``examples.jsonl``, so a
killed job resumes at the next class), then resample, emit ``render_more.yaml`` and write the report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from threedb.evaluators.jobs.config import JobConfig, config_digest
from threedb.evaluators.jobs.output import JobOutput, JobOutputError
from threedb.evaluators.jobs.progress import print_summary
from threedb.evaluators.models import resolve_device
from threedb.evaluators.project import render_more as loop
from threedb.evaluators.project.config import ProjectSchema, match_labels
from threedb.evaluators.project.data import Side, describe, open_side, source_labels_in_target
from threedb.evaluators.project.errors import ProjectJobError
from threedb.evaluators.project.features import feature_space, side_features
from threedb.evaluators.project.groups import Grouping, make_groups, small_groups
from threedb.evaluators.project.report import build_report
from threedb.evaluators.project.resampled import class_entries, group_counts, write_resampled
from threedb.robustness.projection import (ClassProjection, ProjectionError, ProjectionResult, SolverResult,
                                           bandwidth_from_scale, median_bandwidth, project_dataset, resample)

Pools = dict[Optional[int], torch.Tensor]


def sub_seed(seed: int, purpose: int) -> int:
    """A seed for one use of the job's randomness (1: resampling, 2: the uniform baseline)."""
    return (seed * 1_000_003 + purpose) % (2 ** 63)


def _names(classes: Sequence[str], labels: Sequence[int]) -> list[str]:
    return [classes[int(c)] for c in labels]


def _plan(config: JobConfig[ProjectSchema], target: Side, source: Side, slabels: torch.Tensor) -> list[Optional[int]]:
    """The projections to run (target classes, ascending, or ``[None]``), after the checks that need only labels."""
    schema = config.schema
    tlabels = torch.tensor(target.labels)
    values, counts = torch.unique(tlabels, return_counts=True)
    few = [target.classes[int(c)] for c, n in zip(values, counts) if n < 2]
    if schema.projection.per_class and few:
        raise ProjectJobError(f"target class(es) {few} of {target.dataset.root} have fewer than 2 samples after "
                              "the target: filters; the unbiased MMD needs 2 per class (or set projection.per_class: false)")
    if len(target) < 2:
        raise ProjectJobError(f"the target has {len(target)} sample(s); the unbiased MMD needs at least 2")
    if not schema.projection.per_class:
        if not bool((slabels >= 0).any()):
            raise ProjectJobError(f"no source class of {source.dataset.root} ({', '.join(source.classes[:8])}) is a "
                                  f"class of the target {target.dataset.root}: the resampled set could not be labelled")
        return [None]
    classes = [int(c) for c in values]
    if match_labels(schema):
        missing = [target.classes[c] for c in classes if not bool((slabels == c).any())]
        if missing:
            raise ProjectJobError(f"target class(es) {missing} have no source samples in {source.dataset.root} "
                                  f"(its classes after the source: filters: "
                                  f"{sorted(set(_names(source.classes, source.labels)))}); classes are matched by name "
                                  "(or set projection.match_labels: false to project every class onto all sources)")
    if schema.groups.type == "kmeans":
        k = int(schema.groups.k or 0)
        pool_sizes = ({c: int((slabels == c).sum()) for c in classes} if match_labels(schema)
                      else {None: len(source)})
        short = {c: n for c, n in pool_sizes.items() if n < k}
        if short:
            c, n = next(iter(short.items()))
            where = "" if c is None else f" of class {target.classes[c]!r}"
            raise config.error("groups.k", f"{k} clusters asked for, but the {n} source samples{where} cannot fill "
                               "them", value=k)
    return classes


def _pools(plan: Sequence[Optional[int]], ids: torch.Tensor, slabels: torch.Tensor, *, per_class: bool,
           match: bool) -> Pools:
    """The source positions each projection may draw on."""
    grouped = ids >= 0
    if not per_class:
        return {None: (grouped & (slabels >= 0)).nonzero().flatten()}
    if match:
        return {c: (grouped & (slabels == c)).nonzero().flatten() for c in plan}
    every = grouped.nonzero().flatten()
    return {c: every for c in plan}


def _drop_small(config: JobConfig[ProjectSchema], pools: Pools, grouping: Grouping,
                target_classes: Sequence[str]) -> tuple[Pools, dict[Optional[int], list[int]]]:
    """Groups with fewer than 2 samples in a pool: one error naming them (``groups.small: error``), or left
    out of that pool (``drop``)."""
    few = small_groups(grouping.ids, pools)
    if not few:
        return pools, {}
    if config.schema.groups.small == "error":
        label, groups = next(iter(few.items()))
        where = "" if label is None else f" among the sources of class {target_classes[label]!r}"
        shown = "; ".join(f"{grouping.name(g)!r} ({n} sample)" for g, n in groups[:4])
        total = sum(len(v) for v in few.values())
        raise config.error("groups", f"{total} source group(s) have fewer than 2 samples, e.g.{where}: {shown}; "
                           "the unbiased MMD needs 2 per group: use fewer bins or clusters, or groups.small: drop",
                           value=config.schema.groups.type)
    dropped: dict[Optional[int], list[int]] = {}
    out: Pools = {}
    for label, pool in pools.items():
        bad = [g for g, _ in few.get(label, [])]
        keep = pool[~torch.isin(grouping.ids[pool], torch.tensor(bad, dtype=torch.long))] if bad else pool
        if len(keep) == 0:
            raise config.error("groups.small", f"class {target_classes[label] if label is not None else 'all'!r} has "
                               "no source group with 2 or more samples left", value="drop")
        out[label], dropped[label] = keep, bad
    return out, dropped


def _check_rows(output: JobOutput, planned: list[str]) -> None:
    ids = [r.get("id") for r in output.rows]
    if ids != planned[:len(ids)]:
        raise JobOutputError(f"cannot resume in {output.root}: its examples.jsonl does not hold this job's classes "
                             "in order (the datasets changed?); use another --out")


def _bandwidth(config: JobConfig[ProjectSchema], target_f: torch.Tensor, source_f: torch.Tensor,
               pools: Pools) -> tuple[float, str]:
    p = config.schema.projection
    if p.bandwidth is not None:
        return float(p.bandwidth), "projection.bandwidth"
    if p.scale is not None:
        return bandwidth_from_scale(p.scale), f"projection.scale a = {p.scale:g}"
    used = torch.unique(torch.cat(list(pools.values())))
    return median_bandwidth(target_f, source_f[used], seed=config.schema.seed), "median heuristic"


def _project_one(config: JobConfig[ProjectSchema], index: int, label: Optional[int], target: Side,
                 target_f: torch.Tensor, source_f: torch.Tensor, pool: torch.Tensor, grouping: Grouping,
                 sigma: float, dropped: list[int], device: torch.device) -> dict[str, Any]:
    """Project one class (``label``; ``None``: the whole target) and describe it as a row."""
    p = config.schema.projection
    tlabels = torch.tensor(target.labels)
    rows = torch.arange(len(target)) if label is None else (tlabels == label).nonzero().flatten()
    started = time.perf_counter()
    result = project_dataset(target_f[rows], None, source_f[pool], grouping.ids[pool], per_class=False,
                             bandwidth=sigma, solver=p.solver, step_size=p.step_size, gradient=p.gradient, tol=p.tol,
                             max_iter=p.max_iter, solver_options=p.solver_options, seed=config.schema.seed,
                             device=device)
    proj = result.projections[0]
    return {"index": index, "id": "all" if label is None else target.classes[label], "label": label,
            "label_name": None if label is None else target.classes[label], "n_target": proj.n_target,
            "n_source": len(pool), "groups": proj.group_ids.tolist(),
            "group_names": [grouping.name(int(g)) for g in proj.group_ids], "group_sizes": proj.group_sizes.tolist(),
            "weights": proj.weights.tolist(), "mmd2_uniform": proj.mmd2_uniform, "mmd2_pooled": proj.mmd2_pooled,
            "mmd2": proj.mmd2, "iterations": proj.solver.iterations, "converged": proj.solver.converged,
            "bandwidth": sigma, "dropped": dropped, "seconds": round(time.perf_counter() - started, 4)}


def result_from_rows(rows: Sequence[dict[str, Any]], pools: Pools, grouping: Grouping, *, sigma: float, solver: str,
                     per_class: bool, uniform: bool = False) -> ProjectionResult:
    """The :class:`ProjectionResult` the rows record (``uniform``: with uniform weights instead), over the
    source positions of ``pools``, for :func:`resample`."""
    projections = []
    for r in rows:
        pool = pools[r["label"]]
        gids = torch.tensor(r["groups"], dtype=torch.long)
        members = grouping.ids[pool]
        if not torch.equal(torch.unique(members), gids):
            raise JobOutputError(f"examples.jsonl row {r['id']!r} lists groups {r['groups'][:6]} that differ from the "
                                 "source's (the datasets changed since?); use another --out")
        weights = torch.tensor(r["weights"], dtype=torch.float64)
        if uniform:
            weights = torch.full_like(weights, 1.0 / len(weights))
        projections.append(ClassProjection(
            label=r["label"], group_ids=gids, weights=weights, group_sizes=torch.tensor(r["group_sizes"]),
            n_target=r["n_target"], mmd2_uniform=r["mmd2_uniform"], mmd2_pooled=r["mmd2_pooled"], mmd2=r["mmd2"],
            solver=SolverResult(weights, (r["mmd2"],), r["iterations"], r["converged"]), source_index=pool,
            source_group=torch.searchsorted(gids, members)))
    return ProjectionResult(tuple(projections), sigma, solver, per_class)


def _write_draws(config: JobConfig[ProjectSchema], folder: Path, result: ProjectionResult, seed: int, target: Side,
                 source: Side, slabels: torch.Tensor, grouping: Grouping, kind: str) -> dict[str, Any]:
    r = config.schema.resample
    n = r.n if r.n is not None else len(target)
    try:
        drawn = resample(result, n, seed, replacement=r.replacement)
    except ProjectionError as exc:
        raise config.error("resample", str(exc), value=config.resolved.get("resample")) from None
    labels = drawn.labels if drawn.labels is not None else slabels[drawn.indices]
    header = write_resampled(folder, target, source, drawn.indices.tolist(), labels.tolist(), drawn.groups.tolist(),
                             grouping, note={"drawn_by": kind, "seed": seed, "replacement": r.replacement})
    return {"folder": folder.name, "samples": len(drawn.indices), "per_class": header["counts"]["per_class"],
            "per_group": group_counts(drawn.groups.tolist(), grouping), "seed": seed, "drawn_by": kind}


def run_project_job(config: JobConfig[ProjectSchema], *, out: str | Path | None = None, resume: bool = False,
                    device: Optional[str] = None, quiet: bool = False,
                    on_class: Optional[Callable[[int], None]] = None) -> dict[str, Any]:
    """Run the job ``config`` describes into ``out`` (default: its ``output:``); returns the report.

    ``on_class(i)`` is called before class ``i`` is projected (tests interrupt the job with it)."""
    started = time.perf_counter()
    schema = config.schema
    dev = resolve_device(device or schema.device, file=config.file_of("device") if device is None else "--device",
                         key="device")
    target, source = open_side(config, "target"), open_side(config, "source")
    slabels = torch.tensor(source_labels_in_target(target, source), dtype=torch.long)
    per_class, match = schema.projection.per_class, match_labels(schema)
    plan = _plan(config, target, source, slabels)
    base, skipped = loop.render_base(config, source)
    space = feature_space(config, dev)

    def group(features: Optional[torch.Tensor]) -> tuple[Grouping, Pools, dict[Optional[int], list[int]]]:
        grouping = make_groups(config, source, features, slabels.tolist(), target.classes,
                               within_class=per_class and match)
        pools = _pools(plan, grouping.ids, slabels, per_class=per_class, match=match)
        return (grouping, *_drop_small(config, pools, grouping, target.classes))

    # every grouping problem that needs no features before the output directory is touched
    grouped = group(None) if schema.groups.type != "kmeans" else None

    out_dir = Path(out) if out is not None else Path(schema.output)
    resolved = dict(config.resolved, output=str(out_dir.absolute()))
    output = JobOutput.open(out_dir, resolved, config_digest(resolved), resume=resume, job="project")
    planned = ["all" if c is None else target.classes[c] for c in plan]
    _check_rows(output, planned)

    t0 = time.perf_counter()
    batch = schema.features.batch_size
    target_f = side_features(space, target, dev, batch, quiet=quiet)
    source_f = side_features(space, source, dev, batch, quiet=quiet)
    seconds_features = time.perf_counter() - t0
    grouping, pools, dropped = grouped if grouped is not None else group(source_f)
    try:
        sigma, sigma_from = _bandwidth(config, target_f, source_f, pools)
        for i in range(len(output.rows), len(plan)):
            if on_class is not None:
                on_class(i)
            label = plan[i]
            output.append([_project_one(config, i, label, target, target_f, source_f, pools[label], grouping, sigma,
                                        dropped.get(label, []), dev)])
    except ProjectionError as exc:
        raise ProjectJobError(f"{exc} ({len(output.rows)} classes done so far are kept in {output.examples_path})") from None
    rows = output.rows

    t1 = time.perf_counter()
    solver = schema.projection.solver
    result = result_from_rows(rows, pools, grouping, sigma=sigma, solver=solver, per_class=per_class)
    resampled = _write_draws(config, out_dir / "resampled", result, sub_seed(schema.seed, 1), target, source, slabels,
                             grouping, "projection weights")
    uniform = None
    if schema.resample.uniform:
        baseline = result_from_rows(rows, pools, grouping, sigma=sigma, solver=solver, per_class=per_class, uniform=True)
        uniform = _write_draws(config, out_dir / "uniform", baseline, sub_seed(schema.seed, 2), target, source,
                               slabels, grouping, "uniform group weights")
    if base is not None:
        uids = sorted({m.object_uid for m, c in zip(source.meta or [], slabels.tolist()) if c >= 0 and m.object_uid}) \
            or [c["uid"] for c in class_entries(target)]
        render_more = loop.emit(config, base, rows, grouping, source, uids, out_dir)
    else:
        render_more = {"file": None, "skipped": skipped}
    times = {"features": round(seconds_features, 4), "projection": round(sum(r["seconds"] for r in rows), 4),
             "outputs": round(time.perf_counter() - t1, 4)}
    report = build_report(config, out_dir, rows, grouping, bandwidth=sigma, bandwidth_from=sigma_from,
                          datasets={"target": describe(target), "source": describe(source)},
                          features=space.describe(), resampled=resampled, uniform=uniform, render_more=render_more,
                          device=str(dev), seconds=time.perf_counter() - started, times=times, match_labels=match)
    output.write_report(report)
    if not quiet:
        print_summary(report["summary"], job="project")
    return report


__all__ = ["result_from_rows", "run_project_job", "sub_seed"]
