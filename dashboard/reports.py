"""Robustness reports for the dashboard's **Robustness** tab: a job's output directory holding
``report.json`` (format ``threedb-robustness-report``, version 1; docs/robustness.md).

A :class:`Report` re-reads ``report.json`` whenever its modification time, size or inode changes, so a
job finishing (or resumed) while the dashboard runs shows up. The files a report lists in ``plots`` and
``images`` become a numbered list built here: the server serves file ``k`` of that list only, and only
if it is a ``.png``/``.svg`` that resolves (symlinks followed) inside the report directory. Nothing
from a URL is ever joined into a path.
"""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from threedb.sim.errors import ThreeDBError

REPORT_FILE = "report.json"
REPORT_FORMAT = "threedb-robustness-report"
REPORT_VERSION = 1
#: A job output directory still running has this but no report.json yet (run directories never do).
JOB_MARKER = "examples.jsonl"
MEDIA = {"png": "image/png", "svg": "image/svg+xml"}


class ReportError(ThreeDBError):
    """A ``report.json`` that is not a readable version-1 robustness report; the message names the file."""


@dataclass(frozen=True)
class ReportFile:
    """One servable file of a report: its kind (``png``/``svg``), the path the report gave, where it is."""

    kind: str
    listed: str
    path: Path


def is_report_dir(path: str | Path) -> bool:
    """A robustness job's output directory: it holds ``report.json``, or (a job still running) its
    ``examples.jsonl`` without a run's ``details.log``."""
    p = Path(path)
    if (p / REPORT_FILE).is_file():
        return True
    return not (p / "details.log").exists() and (p / JOB_MARKER).is_file()


def _finite(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``None`` (browsers' JSON.parse rejects NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Report:
    """One report directory, re-read when its ``report.json`` changes (thread-safe)."""

    def __init__(self, path: str | Path, index: int = 0) -> None:
        self.path = Path(path).resolve()
        self.index = index
        self.file = self.path / REPORT_FILE
        if not self.path.is_dir():
            raise ReportError(f"{self.path}: not a directory (expected a robustness job's output with {REPORT_FILE})")
        self.name = self.path.name
        self.version = 0            # bumped whenever the report is (re-)read
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self.data: dict[str, Any] | None = None   # None: no report.json yet (the job is running)
        self.files: list[ReportFile] = []
        self.problems: list[str] = []
        self.refresh()

    # -- reading -------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read ``report.json`` if it changed; :class:`ReportError` if it is malformed now."""
        with self._lock:
            try:
                st = os.stat(self.file)
            except FileNotFoundError:
                stamp = None
            except OSError as exc:
                raise ReportError(f"{self.file}: cannot read ({exc.strerror})") from None
            else:
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp and (stamp is None or self.data is not None):
                return
            if stamp is None:
                self.data, self.files, self.problems = None, [], []
            else:
                try:
                    text = self.file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as exc:
                    raise ReportError(f"{self.file}: cannot read ({exc})") from None
                data = self._validate(text)
                self.files, self.problems = [], []
                self.data = self._resolve_files(data)
            self._stamp = stamp
            self.version += 1

    def _validate(self, text: str) -> dict[str, Any]:
        where = str(self.file)
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReportError(f"{where}: not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ReportError(f"{where}: expected a JSON object (a {REPORT_FORMAT})")
        if data.get("format") != REPORT_FORMAT:
            raise ReportError(f"{where}: format is {data.get('format')!r}, expected {REPORT_FORMAT!r}")
        if data.get("version") != REPORT_VERSION:
            raise ReportError(f"{where}: report version {data.get('version')!r} is not supported "
                              f"(this dashboard reads version {REPORT_VERSION})")
        for key in ("job", "title"):
            if not isinstance(data.get(key), str):
                raise ReportError(f"{where}: {key!r} must be a string")
        headline = data.get("headline", {})
        if not isinstance(headline, dict) or not all(_number(v) or v is None for v in headline.values()):
            raise ReportError(f"{where}: 'headline' must map names to numbers")
        for key, item_keys in (("tables", ("title", "columns", "rows")), ("plots", ("title",)),
                               ("images", ("title",))):
            items = data.get(key, [])
            if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
                raise ReportError(f"{where}: {key!r} must be a list of objects")
            for i, item in enumerate(items):
                missing = [k for k in item_keys if k not in item]
                if missing:
                    raise ReportError(f"{where}: {key}[{i}] lacks {', '.join(missing)}")
        for i, t in enumerate(data.get("tables", [])):
            if not isinstance(t["columns"], list) or not isinstance(t["rows"], list) or \
                    not all(isinstance(r, list) for r in t["rows"]):
                raise ReportError(f"{where}: tables[{i}] needs 'columns' (a list) and 'rows' (a list of lists)")
        summary = data.get("summary", [])
        if not isinstance(summary, list) or not all(isinstance(s, str) for s in summary):
            raise ReportError(f"{where}: 'summary' must be a list of strings")
        return data

    def _resolve_files(self, data: dict[str, Any]) -> dict[str, Any]:
        """The report with each listed plot/image file replaced by its index in :attr:`files` (or None
        when refused, with the reason in :attr:`problems`)."""
        out = _finite(data)
        for key, kinds in (("plots", ("png", "svg")), ("images", ("png",))):
            entries = []
            for i, item in enumerate(out.get(key, [])):
                entry: dict[str, Any] = {"title": str(item.get("title", ""))}
                for kind in kinds:
                    listed = item.get(kind)
                    entry[kind] = None if listed in (None, "") else self._add_file(f"{key}[{i}].{kind}", kind, listed)
                entries.append(entry)
            out[key] = entries
        return out

    def _add_file(self, where: str, kind: str, listed: Any) -> int | None:
        path = self.check_path(kind, listed)
        if isinstance(path, str):
            self.problems.append(f"{self.file}: {where} {listed!r}: {path}")
            return None
        self.files.append(ReportFile(kind, str(listed), path))
        return len(self.files) - 1

    def check_path(self, kind: str, listed: Any) -> Path | str:
        """Where a listed file is, or why it is refused: it must be a relative path without ``..``,
        end in ``.<kind>``, and resolve (symlinks followed) to a file inside the report directory."""
        if not isinstance(listed, str):
            return "not a path"
        rel = PurePosixPath(listed)
        if rel.is_absolute() or listed.startswith(("/", "\\")) or (len(listed) > 1 and listed[1] == ":"):
            return "absolute paths are refused (paths are relative to the report directory)"
        if ".." in rel.parts or "\\" in listed:
            return "'..' and backslashes are refused"
        if rel.suffix.lower() != f".{kind}":
            return f"not a .{kind} file"
        try:
            path = (self.path / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            return "no such file"
        if not path.is_relative_to(self.path):
            return "resolves outside the report directory (a symlink?)"
        if not path.is_file():
            return "not a file"
        return path

    # -- queries -------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The list entry: index, job, title, directory name, headline, created, state, version."""
        self.refresh()
        d = self.data or {}
        return {"index": self.index, "name": self.name, "path": str(self.path), "version": self.version,
                "state": "ready" if self.data is not None else "running",
                "job": d.get("job"), "title": d.get("title") or f"{self.name} (no {REPORT_FILE} yet: running)",
                "created": d.get("created"), "headline": d.get("headline", {}), "problems": list(self.problems)}

    def full(self) -> dict[str, Any]:
        """The whole report (as in report.json, with plot/image paths replaced by file indices)."""
        self.refresh()
        out = dict(self.data or {"headline": {}, "tables": [], "plots": [], "images": [], "summary": []})
        out.update(self.info())
        return out

    def file_at(self, k: int) -> ReportFile | None:
        """File ``k`` of the list built when the report was read, re-checked now (it may have been
        replaced by a symlink since); None if unknown or no longer inside the directory."""
        self.refresh()
        if not 0 <= k < len(self.files):
            return None
        f = self.files[k]
        path = self.check_path(f.kind, f.listed)
        return ReportFile(f.kind, f.listed, path) if isinstance(path, Path) else None
