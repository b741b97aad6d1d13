"""Live, incremental reading of one run directory for the dashboard.

A :class:`Run` tails ``details.log``: each :meth:`Run.refresh` reads only the bytes appended since
the last call, keeps a last line that has no newline yet for later (a run still writing it), and
skips a corrupt line with a warning. It keeps, per row, only what the aggregations need (columns
of plain values) plus the line's byte offset: a grid page re-reads its few lines for predictions
and boxes, so memory stays small for 100k-row runs.

Reads both our run directories and the original 3DB's logs (no ``status``/``object_uid`` keys,
``is_correct`` possibly the strings ``"True"``/``"False"``, ``model`` like ``mug.blend``).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from array import array
from pathlib import Path
from typing import Any, Iterable

import yaml

from threedb.sim.store import CLASS_MAPS, CONFIG, DETAILS, IMAGES, ResultsError

log = logging.getLogger(__name__)

#: Image passes the dashboard serves, by name -> file suffix. Nothing else is ever joined into a path.
PASSES = {"rgb": "_rgb.png", "mask": "_mask.png", "uv": "_uv.exr"}
CHUNK = 4 << 20  # bytes of details.log read at a time
#: Row keys offered as parameters besides ``render_args.*`` (as in threedboard).
META_PARAMS = ("model", "environment")


def _correct(value: Any) -> bool | None:
    """``is_correct`` as a bool (3DB wrote JSON booleans or the strings "True"/"False"); else None."""
    if isinstance(value, bool):
        return value
    if value in ("True", "true"):
        return True
    if value in ("False", "false"):
        return False
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    return None


def _scalar(value: Any) -> Any:
    """A render argument as a hashable plain value (lists/dicts become their JSON text)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def _top1(prediction: Any) -> int | None:
    if isinstance(prediction, list):
        prediction = prediction[0] if prediction else None
    if isinstance(prediction, bool) or not isinstance(prediction, (int, float)):
        return None
    return int(prediction)


class Run:
    """One run directory, read incrementally (thread-safe)."""

    def __init__(self, path: str | Path, index: int = 0) -> None:
        self.path = Path(path).resolve()
        self.index = index
        self.details = self.path / DETAILS
        if not self.path.is_dir():
            raise ResultsError(f"{self.path}: not a directory (expected a run directory with {DETAILS})")
        if not self.details.is_file():
            raise ResultsError(f"{self.details}: not found; is {self.path} a threedb or 3DB run directory?")
        self.name = self.path.name
        self.class_names = self._read_class_maps()
        self.classmap = self._read_classmap()
        self._lock = threading.RLock()
        self._inode: int | None = None
        self.version = 0                      # bumped whenever rows are added
        self.output_type: str | None = None
        self._reset()
        self.refresh()

    # -- side files ------------------------------------------------------------------------------
    def _read_class_maps(self) -> list[str]:
        path = self.path / CLASS_MAPS
        if not path.is_file():
            log.warning("%s: not found; predictions are shown as class indices", path)
            return []
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ResultsError(f"{path}: not readable JSON ({exc})") from None
        if isinstance(data, dict):  # tolerate {"0": "name", ...}
            data = [data[k] for k in sorted(data, key=lambda k: int(k))]
        if not isinstance(data, list):
            raise ResultsError(f"{path}: expected a JSON list of class names")
        return [str(x) for x in data]

    def _read_classmap(self) -> dict[str, list[int]]:
        """The evaluator's {object uid: acceptable class indices}, when the resolved config names one
        that can still be read (best effort: it only labels the "true" class in the grid)."""
        path = self.path / CONFIG
        try:
            config = yaml.safe_load(path.read_text()) if path.is_file() else None
            args = ((config or {}).get("evaluation") or {}).get("args") or {}
            data = args.get("classmap")
            if data is None and args.get("classmap_path"):
                source = Path(str(args["classmap_path"]))
                if source.is_absolute() and source.is_file():
                    data = json.loads(source.read_text())
        except (OSError, ValueError, yaml.YAMLError, AttributeError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): ([int(v)] if isinstance(v, int) else [int(x) for x in v if isinstance(x, int)])
                for k, v in data.items() if isinstance(v, (int, list))}

    # -- tailing -----------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Read lines appended since the last call; returns how many rows were added."""
        with self._lock:
            try:
                stat = os.stat(self.details)
            except OSError:
                return 0
            if self._inode is not None and (stat.st_ino != self._inode or stat.st_size < self._offset):
                log.warning("%s was replaced or truncated; reading it again", self.details)
                self._reset()
            self._inode = stat.st_ino
            if stat.st_size <= self._offset:
                return 0
            added = 0
            with open(self.details, "rb") as handle:
                handle.seek(self._offset)
                pending = b""
                while self._offset + len(pending) < stat.st_size:  # in chunks: memory stays small
                    chunk = handle.read(min(CHUNK, stat.st_size - self._offset - len(pending)))
                    if not chunk:
                        break
                    data = pending + chunk
                    start = 0
                    while (end := data.find(b"\n", start)) >= 0:
                        if data[start:end].strip():
                            added += self._add(data[start:end], self._offset + start)
                        start = end + 1
                    self._offset += start
                    pending = data[start:]  # an incomplete last line: the writer is still at it
            if added:
                self.version += 1
            return added

    def _reset(self) -> None:
        """Empty columns (at start, or when details.log was replaced)."""
        self._offset = 0          # bytes of details.log consumed (complete lines only)
        self.skipped = 0          # corrupt lines skipped
        self.version += 1
        self.ids: list[str] = []
        self.id_index: dict[str, int] = {}
        self.offsets = array("q")  # byte offset of each row's line
        self.correct: list[bool | None] = []   # None: failed job or no verdict
        self.failed: list[bool] = []
        self.models: list[str] = []
        self.environments: list[str] = []
        self.uids: list[str] = []
        self.top1: list[int | None] = []
        self.params: dict[str, list[Any]] = {}  # "render_args.X.p" / "model" / "environment" -> values
        self._keys: dict[str, str] = {}         # row key -> column name
        self._intern: dict[str, str] = {}

    def _add(self, line: bytes, offset: int) -> int:
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "id" not in row:
                raise ValueError("not a row object with an id")
            job_id = str(row["id"])
            render = row.get("render_args") or {}
            if not isinstance(render, dict):
                raise ValueError("render_args is not an object")
        except ValueError as exc:
            self.skipped += 1
            log.warning("%s: skipping a corrupt line at byte %d (%s)", self.details, offset, exc)
            return 0
        if job_id in self.id_index:
            log.warning("%s: job %s appears twice; keeping the first", self.details, job_id)
            return 0
        n = len(self.ids)
        self.ids.append(job_id)
        self.id_index[job_id] = n
        self.offsets.append(offset)
        failed = row.get("status", "ok") != "ok"
        self.failed.append(failed)
        self.correct.append(None if failed else _correct(row.get("is_correct")))
        intern = self._intern  # one string object per distinct model/environment/value name
        model = intern.setdefault(str(row.get("model")), str(row.get("model")))
        env = intern.setdefault(str(row.get("environment")), str(row.get("environment")))
        self.models.append(model)
        self.environments.append(env)
        uid = row.get("object_uid")
        uid = str(uid) if uid is not None else Path(model).stem
        self.uids.append(intern.setdefault(uid, uid))
        self.top1.append(_top1(row.get("prediction")))
        if self.output_type is None and row.get("output_type"):
            self.output_type = str(row["output_type"])
        params = self.params
        for key, v in (("model", model), ("environment", env), *render.items()):
            name = self._keys.get(key)
            if name is None:
                name = self._keys[key] = key if key in META_PARAMS else "render_args." + key
            v = _scalar(v)
            if isinstance(v, str):
                v = intern.setdefault(v, v)
            column = params.get(name)
            if column is None:
                column = params[name] = [None] * n  # a key first seen now: earlier rows lack it
            column.append(v)
        if len(render) + 2 != len(params):  # some columns did not get a value from this row
            for column in params.values():
                if len(column) == n:
                    column.append(None)
        return 1

    # -- queries -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int) -> dict[str, Any]:
        """The full ``details.log`` row number ``i`` (re-read from the file)."""
        with open(self.details, "rb") as handle:
            handle.seek(self.offsets[i])
            return json.loads(handle.readline())

    def rows(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        out = []
        with open(self.details, "rb") as handle:
            for i in indices:
                handle.seek(self.offsets[i])
                out.append(json.loads(handle.readline()))
        return out

    def index_of(self, job_id: str) -> int | None:
        """Row number of a known job id, else None (ids are only ever looked up, never trusted)."""
        with self._lock:
            return self.id_index.get(job_id)

    def pass_path(self, job_id: str, name: str) -> Path | None:
        """The file of pass ``name`` (one of :data:`PASSES`) of a known job, or None when either is unknown
        or the file was not logged. The id comes from this run's rows, never from the request."""
        i = self.index_of(job_id)
        if i is None or name not in PASSES:
            return None
        path = self.path / IMAGES / (self.ids[i] + PASSES[name])
        return path if path.is_file() else None

    def class_name(self, index: int | None) -> str | None:
        if index is None:
            return None
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)

    def true_labels(self, uid: str) -> list[str]:
        """Names of the acceptable classes of an object (from the run's class map), else []."""
        return [n for n in (self.class_name(i) for i in self.classmap.get(uid, [])) if n is not None]
