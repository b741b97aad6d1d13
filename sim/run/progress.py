"""Progress of a run (renders/s, done/total, ETA, failures) and its final accuracy summary."""
from __future__ import annotations

import collections
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from threedb.sim.store import read_rows


class Progress:
    """A progress line on ``stream`` every ``every_s`` seconds (and at the end)."""

    def __init__(self, total: int | None, *, already: int = 0, stream: TextIO | None = None,
                 every_s: float = 5.0) -> None:
        self.total, self.already = total, already
        self.ok = self.failed = self.renders = 0
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.start = time.monotonic()
        self._last = 0.0

    def rendered(self) -> None:
        self.renders += 1

    def update(self, *, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        done = self.already + self.ok + self.failed
        rate = (self.ok + self.failed) / elapsed
        total = "?" if self.total is None else str(self.total)
        eta = "?"
        if self.total is not None and rate > 0:
            eta = f"{max(self.total - done, 0) / rate:.0f} s"
        return (f"[threedb run] {done}/{total} jobs, {self.renders / elapsed:.2f} renders/s, "
                f"ETA {eta}, {self.failed} failed, {elapsed:.0f} s elapsed")

    def tick(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            print(self.line(), file=self.stream, flush=True)


def summarize(run_dir: str | Path) -> dict[str, Any]:
    """Accuracy overall, per object and per environment, from ``details.log`` (failed jobs counted apart)."""
    counts: dict[str, collections.Counter] = {"overall": collections.Counter()}
    per_obj: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    per_env: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in read_rows(run_dir):
        key = "failed" if row.get("status") != "ok" else ("correct" if row.get("is_correct") else "wrong")
        for c in (counts["overall"], per_obj[str(row.get("object_uid"))], per_env[str(row.get("environment"))]):
            c[key] += 1

    def acc(c: collections.Counter) -> dict[str, Any]:
        n = c["correct"] + c["wrong"]
        return {"jobs": n + c["failed"], "failed": c["failed"],
                "accuracy": (c["correct"] / n) if n else None}

    return {"overall": acc(counts["overall"]), "objects": {k: acc(v) for k, v in sorted(per_obj.items())},
            "environments": {k: acc(v) for k, v in sorted(per_env.items())}}


def format_summary(summary: dict[str, Any]) -> str:
    def fmt(name: str, s: dict[str, Any]) -> str:
        a = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
        return f"  {name:<24} accuracy {a:>7}  ({s['jobs']} jobs, {s['failed']} failed)"

    lines = ["summary:", fmt("overall", summary["overall"]), " per object:"]
    lines += [fmt(k, v) for k, v in summary["objects"].items()]
    lines += [" per environment:"] + [fmt(k, v) for k, v in summary["environments"].items()]
    return "\n".join(lines)
