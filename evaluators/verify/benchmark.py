"""``threedb verify --instances instances.csv``: a VNN-COMP benchmark folder verified instance by instance.

``instances.csv`` has rows ``onnx,vnnlib,timeout`` (paths relative to the csv, timeout in seconds; no
header), as VNN-COMP ships them. The output directory::

    results.csv          benchmark,onnx,vnnlib,prepare_time,result,run_time (VNN-COMP's results format,
                         no header), one row appended and fsynced as each instance finishes
    instances.jsonl      the same per instance plus the deciding step, the message and the verifier's stats
    counterexamples/     one result file per sat instance (``sat`` + the counterexample, VNN-COMP 2022)
    summary.json         counts per result, solved, median times, every error's message

An instance whose files are broken is answered ``error`` (its message kept) and the run goes on.
``--resume`` skips the instances already in ``results.csv``; without it a directory holding results is
refused. ``--timeout S`` caps every instance's timeout (quick runs)."""
from __future__ import annotations

import csv
import io
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from threedb.evaluators.jobs.output import write_atomic, write_json_atomic
from threedb.evaluators.verify.instance import RESULTS, InstanceError, load_instance, result_text, verify_instance
from threedb.sim.errors import ThreeDBError

RESULTS_CSV = "results.csv"
DETAILS = "instances.jsonl"
SUMMARY = "summary.json"
COUNTEREXAMPLES = "counterexamples"


class BenchmarkError(ThreeDBError, ValueError):
    """The benchmark cannot be run as asked (unreadable instances.csv, output directory in use)."""


@dataclass(frozen=True)
class Task:
    """One row of instances.csv: the paths as written, where they resolve, and the timeout."""

    line: int
    onnx: str
    vnnlib: str
    timeout: float
    root: Path

    @property
    def key(self) -> tuple[str, str]:
        return self.onnx, self.vnnlib

    @property
    def onnx_path(self) -> Path:
        return self.root / self.onnx

    @property
    def vnnlib_path(self) -> Path:
        return self.root / self.vnnlib


def read_instances(path: str | Path) -> list[Task]:
    """The rows of ``instances.csv``; a malformed row is one error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: instances file not found")
    tasks = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if len(cells) != 3:
                raise BenchmarkError(f"{path}:{line}: expected onnx,vnnlib,timeout, got {len(cells)} columns")
            try:
                timeout = float(cells[2])
            except ValueError:
                raise BenchmarkError(f"{path}:{line}: timeout {cells[2]!r} is not a number of seconds") from None
            if not timeout > 0:
                raise BenchmarkError(f"{path}:{line}: timeout must be > 0 seconds, got {cells[2]}")
            tasks.append(Task(line, cells[0], cells[1], timeout, path.parent))
    if not tasks:
        raise BenchmarkError(f"{path}: no instances (expected rows onnx,vnnlib,timeout)")
    return tasks


def counterexample_names(tasks: Sequence[Task]) -> dict[int, str]:
    """``line -> file name`` of each instance's counterexample: ``<onnx>__<vnnlib>.counterexample`` (stems),
    with the csv line added where two instances would share a name."""
    base = {t.line: f"{Path(t.onnx).stem}__{Path(t.vnnlib).stem}" for t in tasks}
    seen = Counter(base.values())
    return {line: (f"{name}__line{line}" if seen[name] > 1 else name) + ".counterexample"
            for line, name in base.items()}


def _parse_results(path: Path) -> list[list[str]]:
    """The complete rows of ``results.csv`` (a torn last line, from a kill, is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    for number, row in enumerate(rows, 1):
        if len(row) != 6 or row[4] not in RESULTS:
            raise BenchmarkError(f"{path}:{number}: not a results row (benchmark,onnx,vnnlib,prepare_time,result,"
                                 "run_time); remove the output directory and start again")
    return rows


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from threedb.evaluators.jobs.output import read_rows

    return read_rows(path)[0]


class BenchmarkOutput:
    """The output directory: the rows done so far (``results.csv`` decides) and appending new ones."""

    def __init__(self, root: Path, tasks: Sequence[Task], *, resume: bool) -> None:
        self.root = root
        if root.exists() and not root.is_dir():
            raise BenchmarkError(f"output {root} exists and is not a directory")
        if not resume and root.is_dir() and any(root.iterdir()):
            raise BenchmarkError(f"output directory {root} is not empty: pass --resume to continue the benchmark "
                                 "written there, or choose another --out")
        rows = _parse_results(root / RESULTS_CSV)
        known = Counter(t.key for t in tasks)
        done = Counter((r[1], r[2]) for r in rows)
        stray = [key for key, n in done.items() if n > known.get(key, 0)]
        if stray:
            raise BenchmarkError(f"cannot resume in {root}: its {RESULTS_CSV} holds {stray[0][0]},{stray[0][1]}, "
                                 "which this instances.csv does not list; use another --out")
        details = _read_jsonl(root / DETAILS)
        # keep one detail row per results row (a kill between the two appends leaves a detail row too many)
        want, kept = Counter(done), []
        for d in details:
            key = (d.get("onnx"), d.get("vnnlib"))
            if want[key] > 0:
                kept.append(d)
                want[key] -= 1
        root.mkdir(parents=True, exist_ok=True)
        write_atomic(root / RESULTS_CSV, "".join(_csv_line(r) for r in rows))
        write_atomic(root / DETAILS, "".join(_json_line(d) for d in kept))
        self.rows, self.details, self.done = rows, kept, done

    def pending(self, tasks: Sequence[Task]) -> list[Task]:
        """The tasks not yet in ``results.csv`` (a key listed twice counts twice)."""
        left, out = Counter(self.done), []
        for task in tasks:
            if left[task.key] > 0:
                left[task.key] -= 1
            else:
                out.append(task)
        return out

    def append(self, row: list[str], detail: dict[str, Any]) -> None:
        _append(self.root / DETAILS, _json_line(detail))
        _append(self.root / RESULTS_CSV, _csv_line(row))
        self.rows.append(row)
        self.details.append(detail)


def _csv_line(row: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(row)
    return buffer.getvalue()


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n"


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def run_task(task: Task, timeout: float, options_args: dict[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
    """Verify one instance: ``(detail row, result-file text when sat)``; broken files give ``error``."""
    from threedb.robustness.verification.verifier import VerifierOptions

    detail: dict[str, Any] = {"line": task.line, "onnx": task.onnx, "vnnlib": task.vnnlib, "timeout": timeout,
                              "prepare_time": 0.0, "result": "error", "run_time": 0.0, "method": "", "message": ""}
    start = time.perf_counter()
    try:
        instance = load_instance(task.onnx_path, task.vnnlib_path)
    except InstanceError as exc:
        detail.update(prepare_time=time.perf_counter() - start, message=str(exc))
        return detail, None
    detail["prepare_time"] = instance.prepare_seconds
    start = time.perf_counter()
    try:
        result = verify_instance(instance, VerifierOptions(timeout=timeout, **options_args))
    except InstanceError as exc:
        detail.update(run_time=time.perf_counter() - start, message=str(exc))
        return detail, None
    except Exception as exc:  # noqa: BLE001 - one failing instance must not end the benchmark; kept verbatim
        detail.update(run_time=time.perf_counter() - start, message=f"internal error: {type(exc).__name__}: {exc}")
        return detail, None
    detail.update(result=result.status, run_time=result.seconds, method=result.method, message=result.message,
                  stats=result.summary())
    text = result_text("sat", result.counterexample, result.output) if result.status == "sat" else None
    return detail, text


def summarize(benchmark: str, csv_path: Path, tasks: Sequence[Task], out: BenchmarkOutput,
              timeout_cap: Optional[float]) -> dict[str, Any]:
    """summary.json: counts per result, solved (sat + unsat), median run time (solved; all), errors."""
    results = [r[4] for r in out.rows]
    counts = {name: results.count(name) for name in RESULTS}
    times = [float(r[5]) for r in out.rows]
    solved = [float(r[5]) for r in out.rows if r[4] in ("sat", "unsat")]
    return {
        "benchmark": benchmark, "instances_csv": str(csv_path), "instances": len(tasks), "done": len(out.rows),
        "counts": counts, "solved": counts["sat"] + counts["unsat"],
        "median_time_solved": statistics.median(solved) if solved else None,
        "median_time": statistics.median(times) if times else None,
        "total_time": sum(times) + sum(float(r[3]) for r in out.rows),
        "timeout_cap": timeout_cap,
        "errors": [{"onnx": d["onnx"], "vnnlib": d["vnnlib"], "message": d["message"]}
                   for d in out.details if d.get("result") == "error"],
        "undecided": [{"onnx": d["onnx"], "vnnlib": d["vnnlib"], "result": d["result"], "message": d["message"]}
                      for d in out.details if d.get("result") in ("timeout", "unknown")],
    }


def table(out: BenchmarkOutput, summary: dict[str, Any]) -> str:
    """The printed table: one line per instance, then the totals."""
    methods = [d.get("method", "") for d in out.details]
    width = max([len(f"{r[1]}  {r[2]}") for r in out.rows] + [8])
    lines = [f"{'instance':<{width}}  {'result':<8} {'time (s)':>9}  method"]
    for i, r in enumerate(out.rows):
        method = methods[i] if i < len(methods) else ""
        lines.append(f"{r[1] + '  ' + r[2]:<{width}}  {r[4]:<8} {float(r[5]):>9.3f}  {method}")
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
    median = summary["median_time_solved"]
    lines.append(f"{summary['done']} of {summary['instances']} instances: {counts}; solved {summary['solved']}"
                 + (f", median time {median:.3f} s (solved)" if median is not None else ""))
    return "\n".join(lines)


def run_benchmark(csv_path: str | Path, out_dir: Optional[str | Path] = None, *, timeout: Optional[float] = None,
                  resume: bool = False, quiet: bool = False, options: Optional[dict[str, Any]] = None
                  ) -> dict[str, Any]:
    """Verify every instance of ``csv_path`` into ``out_dir`` (default ``runs/verify_<benchmark>``);
    returns summary.json's content. ``options``: further :class:`VerifierOptions` fields."""
    csv_path = Path(csv_path)
    tasks = read_instances(csv_path)
    benchmark = csv_path.resolve().parent.name
    root = Path(out_dir) if out_dir is not None else Path("runs") / f"verify_{benchmark}"
    if timeout is not None and not timeout > 0:
        raise BenchmarkError(f"--timeout must be > 0 seconds, got {timeout:g}")
    out = BenchmarkOutput(root, tasks, resume=resume)
    names = counterexample_names(tasks)
    todo = out.pending(tasks)
    if not quiet and len(todo) < len(tasks):
        _say(f"{len(tasks) - len(todo)} of {len(tasks)} instances already in {root / RESULTS_CSV}: skipped")
    for task in todo:
        limit = min(task.timeout, timeout) if timeout is not None else task.timeout
        detail, text = run_task(task, limit, options or {})
        if text is not None:
            write_atomic(root / COUNTEREXAMPLES / names[task.line], text)
            detail["counterexample"] = f"{COUNTEREXAMPLES}/{names[task.line]}"
        row = [benchmark, task.onnx, task.vnnlib, f"{detail['prepare_time']:.6f}", detail["result"],
               f"{detail['run_time']:.6f}"]
        out.append(row, detail)
        if not quiet:
            note = f" ({detail['method']})" if detail["method"] else ""
            why = f": {detail['message']}" if detail["result"] in ("error", "unknown") and detail["message"] else ""
            _say(f"{len(out.rows)}/{len(tasks)} {task.onnx} {task.vnnlib}: {detail['result']} in "
                 f"{detail['run_time']:.2f} s{note}{why}")
    summary = summarize(benchmark, csv_path, tasks, out, timeout)
    write_json_atomic(root / SUMMARY, summary)
    if not quiet:
        print(table(out, summary))
        _say(f"wrote {root / RESULTS_CSV}, {root / SUMMARY}")
    return summary


def _say(line: str) -> None:
    print(f"[threedb verify] {line}", file=sys.stderr)


__all__ = ["BenchmarkError", "BenchmarkOutput", "COUNTEREXAMPLES", "DETAILS", "RESULTS_CSV", "SUMMARY", "Task",
           "counterexample_names", "read_instances", "run_benchmark", "run_task", "summarize", "table"]
