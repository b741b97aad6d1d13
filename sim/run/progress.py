"""Progress of a run (renders/s, done/total, ETA, failures) and its final accuracy summary.

* :class:`Progress` draws a tqdm bar when its stream is a terminal, and otherwise (a log file, a
  pipe, CI) prints a plain line every few seconds, so logs do not fill with carriage returns.
* :func:`summarize` reads ``details.log`` into JSON-able data: accuracy overall, per object,
  environment and model file, per bin of every control parameter, and the worst parameter regions.
  :func:`format_summary` renders it as text.

Binning of control parameters (the ``render_args`` keys), by :mod:`threedb.sim.binning` (the
dashboard's rule with ``bins`` in place of its 10): a numeric parameter with more than
``bins`` (5) distinct values is cut into ``bins`` equal-width bins over its observed [min, max]
(``[lo, hi)``, the last one ``[lo, hi]``); a parameter with at most ``bins`` distinct values, and
every non-numeric one (booleans, strings, lists), has one bin per value. A bin's accuracy counts
evaluated rows only (failed renders are counted apart, rows without ``is_correct`` are "unscored").
The worst regions are the bins with at least ``min_count`` (5) evaluated rows of parameters that
vary (two bins or more: a fixed parameter's single bin is the whole run), by ascending accuracy
(ties: more rows first, then parameter name and bin order), the first ``top`` (5) overall.
"""
from __future__ import annotations

import collections
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

from threedb.sim.binning import bin_values
from threedb.sim.store import read_rows

#: Defaults of :func:`summarize`.
BINS = 5
MIN_COUNT = 5
TOP = 5


class Progress:
    """Progress of a run on ``stream``: a tqdm bar on a terminal, else a line every ``every_s`` seconds.

    :meth:`rendered` counts a render, :meth:`update` a recorded job, :meth:`tick` refreshes the
    display (the master calls it often), ``tick(force=True)`` draws the final state and ends the bar.
    ``held()``, when given, returns how many renders await evaluation (shown as well); ``overdue()``
    returns ``(jobs, longest seconds)`` of renders running far longer than recent ones (shown when any).
    """

    def __init__(self, total: int | None, *, already: int = 0, stream: TextIO | None = None,
                 every_s: float = 5.0, bar: bool | None = None, held: Callable[[], int] | None = None,
                 overdue: Callable[[], tuple[int, float]] | None = None) -> None:
        self.held = held
        self.overdue = overdue
        self.total, self.already = total, already
        self.ok = self.failed = self.renders = 0
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.start = time.monotonic()
        self._last = -math.inf     # the first tick always draws (monotonic time may start near 0)
        if bar is None:
            isatty = getattr(self.stream, "isatty", None)
            bar = bool(isatty and isatty())
        self.use_bar = bar
        self._bar: Any = None       # created on first use, so a Progress made and replaced draws nothing
        self._closed = False

    def rendered(self) -> None:
        self.renders += 1

    def update(self, *, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.use_bar and not self._closed:
            self._get_bar().update(1)

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.start, 1e-6)

    def line(self) -> str:
        """The plain progress line: jobs done/total, renders/s, ETA, failures, elapsed time."""
        elapsed = self.elapsed
        done = self.already + self.ok + self.failed
        rate = (self.ok + self.failed) / elapsed
        total = "?" if self.total is None else str(self.total)
        eta = "?"
        if self.total is not None and rate > 0:
            eta = f"{max(self.total - done, 0) / rate:.0f} s"
        return (f"[threedb run] {done}/{total} jobs, {self.renders / elapsed:.2f} renders/s, "
                f"ETA {eta}, {self.failed} failed{self._held_text()}, {elapsed:.0f} s elapsed")

    def _held_text(self) -> str:
        text = "" if self.held is None else f", {self.held()} awaiting evaluation"
        if self.overdue is not None:
            late, longest = self.overdue()
            if late:
                text += f", {late} render{'s' if late > 1 else ''} overdue ({longest:.0f} s)"
        return text

    def _get_bar(self) -> Any:
        if self._bar is None:
            from tqdm import tqdm

            try:   # a terminal reporting 0 columns (a bare pty) would get an empty bar: fixed width then
                sized = os.get_terminal_size(self.stream.fileno()).columns > 0
            except (AttributeError, OSError, ValueError):
                sized = False
            self._bar = tqdm(total=self.total, initial=self.already, file=self.stream, unit="job",
                             desc="threedb run", dynamic_ncols=sized, ncols=None if sized else 100,
                             nrows=None if sized else 24, leave=True, mininterval=0.5)
        return self._bar

    def tick(self, *, force: bool = False) -> None:
        """Refresh the display; ``force`` draws the final state now (and closes the bar)."""
        if self.use_bar:
            if self._closed:
                return
            bar = self._get_bar()
            bar.set_postfix_str(f"{self.renders / self.elapsed:.2f} renders/s, {self.failed} failed"
                                f"{self._held_text()}", refresh=False)
            if force:
                bar.refresh()
                bar.close()
                self._closed = True
            else:
                now = time.monotonic()
                if now - self._last >= 0.5:
                    self._last = now
                    bar.refresh()
            return
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            print(self.line(), file=self.stream, flush=True)


# ------------------------------------------------------------------------------------ summary

def _outcome(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return "failed"
    value = row.get("is_correct")
    if value is None:
        return "unscored"   # render-only runs, or an evaluator without is_correct
    return "correct" if value else "wrong"


def _accuracy(c: collections.Counter) -> dict[str, Any]:
    n = c["correct"] + c["wrong"]
    return {"jobs": n + c["failed"] + c["unscored"], "failed": c["failed"],
            "accuracy": (c["correct"] / n) if n else None}


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def bin_parameter(values: list[Any], outcomes: list[str], bins: int = BINS) -> list[dict[str, Any]]:
    """The bins of one parameter (:func:`threedb.sim.binning.bin_values` with ``bins``), each with
    its counts and accuracy.

    Every bin is ``{"bin": label, "low", "high" (numeric bins, else None), "value" (one-value
    bins, else None), "jobs", "evaluated", "correct", "failed", "accuracy"}``, in value order.
    """
    binned = bin_values("", values, max_distinct=bins)
    counters = [collections.Counter() for _ in binned.labels]
    for code, outcome in zip(binned.codes.tolist(), outcomes):
        if code >= 0:
            counters[code][outcome] += 1
    out = []
    for i, c in enumerate(counters):
        if binned.edges is not None:
            label, low, high, value = binned.labels[i], binned.edges[i], binned.edges[i + 1], None
        else:
            value = binned.values[i]
            label, low, high = _label(value), None, None
        evaluated = c["correct"] + c["wrong"]
        out.append({"bin": label, "low": low, "high": high, "value": value,
                    "jobs": sum(c.values()), "evaluated": evaluated, "correct": c["correct"],
                    "failed": c["failed"], "accuracy": (c["correct"] / evaluated) if evaluated else None})
    return out


def worst_regions(parameters: dict[str, list[dict[str, Any]]], *, min_count: int = MIN_COUNT,
                  top: int = TOP) -> list[dict[str, Any]]:
    """The ``top`` lowest-accuracy bins with at least ``min_count`` evaluated rows, over all varying parameters."""
    candidates = []
    for name, bins in parameters.items():
        if len(bins) < 2:
            continue
        for index, b in enumerate(bins):
            if b["accuracy"] is not None and b["evaluated"] >= min_count:
                candidates.append((b["accuracy"], -b["evaluated"], name, index, {"parameter": name, **b}))
    candidates.sort(key=lambda t: t[:4])
    return [c[-1] for c in candidates[:top]]


def summarize(run_dir: str | Path, *, bins: int = BINS, min_count: int = MIN_COUNT,
              top: int = TOP) -> dict[str, Any]:
    """Accuracy from ``RUN_DIR/details.log`` as JSON-able data (failed jobs counted apart).

    Keys: ``overall``, ``objects`` (by ``object_uid``), ``environments``, ``models`` (by the
    ``model`` file name) — each ``{"jobs", "failed", "accuracy"}`` —, ``parameters`` (the bins of
    every control parameter, :func:`bin_parameter`) and ``worst_regions`` (:func:`worst_regions`),
    plus ``binning`` (the settings used).
    """
    return summarize_rows(read_rows(run_dir), bins=bins, min_count=min_count, top=top)


def summarize_rows(rows: Iterable[dict[str, Any]], *, bins: int = BINS, min_count: int = MIN_COUNT,
                   top: int = TOP) -> dict[str, Any]:
    """:func:`summarize` on rows already read."""
    overall: collections.Counter = collections.Counter()
    groups: dict[str, dict[str, collections.Counter]] = {
        name: collections.defaultdict(collections.Counter) for name in ("objects", "environments", "models")}
    columns: dict[str, tuple[list[Any], list[str]]] = {}
    object_models: set[tuple[str, str]] = set()
    for row in rows:
        outcome = _outcome(row)
        overall[outcome] += 1
        groups["objects"][str(row.get("object_uid"))][outcome] += 1
        groups["environments"][str(row.get("environment"))][outcome] += 1
        groups["models"][str(row.get("model"))][outcome] += 1
        object_models.add((str(row.get("object_uid")), str(row.get("model"))))
        for key, value in (row.get("render_args") or {}).items():
            values, outcomes = columns.setdefault(key, ([], []))
            values.append(value)
            outcomes.append(outcome)
    parameters = {k: bin_parameter(v, o, bins) for k, (v, o) in sorted(columns.items())}
    summary: dict[str, Any] = {"overall": _accuracy(overall)}
    for name, counters in groups.items():
        summary[name] = {k: _accuracy(v) for k, v in sorted(counters.items())}
    summary["one_model_per_object"] = len(object_models) == len(groups["objects"]) == len(groups["models"])
    summary["parameters"] = parameters
    summary["worst_regions"] = worst_regions(parameters, min_count=min_count, top=top)
    summary["binning"] = {"bins": bins, "min_count": min_count, "top": top}
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as human-readable text (what ``threedb run`` prints to stderr)."""
    def pct(a: float | None) -> str:
        return "n/a" if a is None else f"{100 * a:.1f}%"

    def fmt(name: str, s: dict[str, Any]) -> str:
        return f"  {name:<24} accuracy {pct(s['accuracy']):>7}  ({s['jobs']} jobs, {s['failed']} failed)"

    lines = ["summary:", fmt("overall", summary["overall"])]
    for title, key in (("per object", "objects"), ("per environment", "environments"), ("per model", "models")):
        if key == "models" and summary.get("one_model_per_object"):
            continue   # the same lines as "per object" under the files' names
        lines.append(f" {title}:")
        lines += [fmt(k, v) for k, v in summary.get(key, {}).items()]
    worst = summary.get("worst_regions") or []
    binning = summary.get("binning", {})
    lines.append(f" worst parameter regions (at least {binning.get('min_count', MIN_COUNT)} evaluated jobs per bin):")
    if not worst:
        lines.append("  (none: no bin has enough evaluated jobs)")
    for rank, r in enumerate(worst, 1):
        lines.append(f"  {rank}. {r['parameter']} {'in' if r['low'] is not None else '='} {r['bin']}: "
                     f"accuracy {pct(r['accuracy'])} ({r['correct']}/{r['evaluated']} correct"
                     + (f", {r['failed']} failed" if r["failed"] else "") + ")")
    return "\n".join(lines)
