"""A job's output directory: ``examples.jsonl`` (appended, fsynced), ``config.resolved.yaml``, ``report.json``.

Rules (docs/robustness.md): without ``resume`` a non-empty directory is refused; with ``resume`` the
rows already in ``examples.jsonl`` are kept (a partially written last line is dropped) and a config
whose digest differs from the one recorded in ``config.resolved.yaml`` is refused.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from threedb.sim.errors import ThreeDBError

EXAMPLES = "examples.jsonl"
REPORT = "report.json"
RESOLVED = "config.resolved.yaml"
_DIGEST_PREFIX = "# config digest: "


class JobOutputError(ThreeDBError):
    """The output directory cannot be used as asked (not empty, different config, unreadable rows)."""


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file in the same folder,
    fsynced, then ``os.replace``: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a report is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def read_rows(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """``(rows, torn)``: the complete JSON lines of ``path``; ``torn`` if a partial last line was dropped.

    Only the last line may be broken (a kill while writing); a broken line before it is an error.
    """
    if not path.is_file():
        return [], False
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a line written without its newline
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            if number == len(lines) and not tail:
                return rows, True
            raise JobOutputError(f"{path}:{number}: not a JSON line; the file was edited or corrupted "
                                 "(remove the output directory and start again)") from None
    return rows, bool(tail.strip())


class JobOutput:
    """The output directory of one job run. Open with :meth:`open`; ``rows`` are the examples already done."""

    def __init__(self, root: Path, rows: list[dict[str, Any]], resumed: bool) -> None:
        self.root = root
        self.rows = rows
        self.resumed = resumed

    @property
    def examples_path(self) -> Path:
        return self.root / EXAMPLES

    @classmethod
    def open(cls, root: str | Path, resolved: Mapping[str, Any], digest: str, *, resume: bool,
             job: str) -> "JobOutput":
        """Check ``root`` for a fresh start or a resume, write ``config.resolved.yaml``, load the done rows."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise JobOutputError(f"output {root} exists and is not a directory")
        rows: list[dict[str, Any]] = []
        torn = False
        if not resume:
            if root.is_dir() and any(root.iterdir()):
                raise JobOutputError(f"output directory {root} is not empty: pass --resume to continue the job "
                                     "written there, or choose another --out")
        else:
            recorded = _recorded_digest(root / RESOLVED)
            rows, torn = read_rows(root / EXAMPLES)
            if recorded is None and (rows or (root / REPORT).exists()):
                raise JobOutputError(f"cannot resume in {root}: it has no {RESOLVED} to check the config against")
            if recorded is not None and recorded != digest:
                raise JobOutputError(f"cannot resume in {root}: it was written by a different {job} config "
                                     f"({RESOLVED} records {recorded[:19]}..., this config is {digest[:19]}...); "
                                     "use the same config and --set values, or another --out")
        root.mkdir(parents=True, exist_ok=True)
        out = cls(root, rows, resumed=bool(rows))
        if torn:
            out.keep_rows(len(rows))  # drop the partial line so appends start on a line boundary
        write_atomic(root / RESOLVED, f"{_DIGEST_PREFIX}{digest}\n# threedb {job}: the merged, path-resolved config\n"
                     + yaml.safe_dump(dict(resolved), sort_keys=False))
        return out

    def keep_rows(self, n: int) -> None:
        """Keep only the first ``n`` rows on disk and in :attr:`rows` (atomic rewrite of examples.jsonl)."""
        self.rows = self.rows[:n]
        write_atomic(self.examples_path, "".join(_line(r) for r in self.rows))

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append ``rows`` in one write, then flush and fsync (a kill loses at most the rows being written)."""
        if not rows:
            return
        with open(self.examples_path, "a", encoding="utf-8") as f:
            f.write("".join(_line(r) for r in rows))
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(dict(r) for r in rows)

    def write_report(self, report: Mapping[str, Any]) -> Path:
        """Write ``report.json`` atomically; returns its path."""
        path = self.root / REPORT
        write_json_atomic(path, dict(report))
        return path


def _line(row: Mapping[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":"), allow_nan=False) + "\n"


def _recorded_digest(path: Path) -> str | None:
    if not path.is_file():
        return None
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    return first[len(_DIGEST_PREFIX):].strip() if first.startswith(_DIGEST_PREFIX) else None


__all__ = ["EXAMPLES", "JobOutput", "JobOutputError", "REPORT", "RESOLVED", "read_rows", "write_atomic",
           "write_json_atomic"]
