"""Live, incremental reading of one run directory for the dashboard.

A :class:`Run` tails ``details.log``: each :meth:`Run.refresh` reads only the bytes appended since
the last call, keeps a last line that has no newline yet for later (a run still writing it), and
skips a corrupt line with a warning. It keeps, per row, only what the aggregations need (columns
of plain values) plus the line's byte offset: a grid page re-reads its few lines for predictions
and boxes, so memory stays small for 100k-row runs.

Reads both our run directories and the original 3DB's logs (no ``status``/``object_uid`` keys,
``is_correct`` possibly the strings ``"True"``/``"False"``, ``model`` like ``mug.blend``).

No content of a log may take a view down: a line that is not a JSON row object with an id (or is
nested too deep to parse) is skipped and counted by reason (:attr:`Run.skipped_reasons`); a row
is taken whole or not at all, so a bad value can never leave the columns misaligned; a non-finite
number (``NaN``, ``Infinity``, ``1e400``) where a number is aggregated (a render argument, the top-1
prediction, the verdict) is treated as missing and the row counted in :attr:`Run.bad_values`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
from array import array
from pathlib import Path
from typing import Any, Iterable

import yaml

from threedb.dashboard.files import Refused, resolve_inside
from threedb.sim.store import CLASS_MAPS, CONFIG, DETAILS, IMAGES, ResultsError

log = logging.getLogger(__name__)

#: Image passes the dashboard serves, by name -> file suffix. Nothing else is ever joined into a path.
PASSES = {"rgb": "_rgb.png", "mask": "_mask.png", "uv": "_uv.exr"}
CHUNK = 4 << 20  # bytes of details.log read at a time
#: Row keys offered as parameters besides ``render_args.*`` (as in threedboard).
META_PARAMS = ("model", "environment")


MAX_FLOAT = 1.7976931348623157e308


class BadRow(ValueError):
    """A details.log line that cannot be a row; the message is the reason it is counted under."""


def _finite(value: Any) -> bool:
    """Whether a JSON number is usable as a float64 (ints beyond the float range are not)."""
    return math.isfinite(value) if isinstance(value, float) else -MAX_FLOAT <= value <= MAX_FLOAT


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


def class_index(value: Any) -> int | None:
    """A class index given as a JSON number (a finite int or float), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        return None
    return int(value)


def _top1(prediction: Any) -> tuple[int | None, bool]:
    """The top-1 class of a ``prediction`` (a list or one number) and whether it was a bad number."""
    if isinstance(prediction, list):
        prediction = prediction[0] if prediction else None
    top = class_index(prediction)
    return top, top is None and isinstance(prediction, (int, float)) and not isinstance(prediction, bool)


def parse_row(line: bytes) -> dict[str, Any]:
    """One details.log line as a row object with an id; :class:`BadRow` (its reason) otherwise."""
    try:
        row = json.loads(line)
    except RecursionError:
        raise BadRow("nested too deep") from None
    except ValueError:   # UnicodeDecodeError included
        raise BadRow("not JSON") from None
    if not isinstance(row, dict):
        raise BadRow("not a JSON object")
    job_id = row.get("id")
    if isinstance(job_id, bool) or not isinstance(job_id, (str, int)):
        raise BadRow("without an id")
    if not isinstance(row.get("render_args") or {}, dict):
        raise BadRow("render_args is not an object")
    return row


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
        self.config = self._read_config()
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
            if isinstance(data, dict):  # tolerate {"0": "name", ...}
                data = [data[k] for k in sorted(data, key=lambda k: int(k))]
            if not isinstance(data, list):
                raise ValueError("expected a JSON list of class names")
            return [x if isinstance(x, str) else json.dumps(x) for x in data]
        except (OSError, ValueError, RecursionError) as exc:
            raise ResultsError(f"{path}: not a readable JSON list of class names ({exc})") from None

    def _read_config(self) -> dict[str, Any]:
        """The run's ``config.resolved.yaml`` as a mapping (best effort: {} when missing or unreadable)."""
        path = self.path / CONFIG
        try:
            config = yaml.safe_load(path.read_text()) if path.is_file() else None
        except (OSError, ValueError, RecursionError, yaml.YAMLError):
            return {}
        return config if isinstance(config, dict) else {}

    def _read_classmap(self) -> dict[str, list[int]]:
        """The evaluator's {object uid: acceptable class indices}, when the resolved config names one
        that can still be read (best effort: it only labels the "true" class in the grid)."""
        try:
            args = (self.config.get("evaluation") or {}).get("args") or {}
            data = args.get("classmap")
            if data is None and args.get("classmap_path"):
                source = Path(str(args["classmap_path"]))
                if source.is_absolute() and source.is_file():
                    data = json.loads(source.read_text())
        except (OSError, ValueError, RecursionError, AttributeError, TypeError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): ([v] if isinstance(v, int) else [x for x in v if isinstance(x, int)])
                for k, v in data.items() if isinstance(v, (int, list)) and not isinstance(v, bool)}

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
        self.skipped = 0          # lines skipped
        self.skipped_reasons: dict[str, int] = {}   # why, e.g. {"not JSON": 2}
        self.bad_values = 0       # rows kept with non-finite numbers treated as missing
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

    def _skip(self, reason: str, offset: int) -> int:
        self.skipped += 1
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + 1
        log.warning("%s: skipping a corrupt line at byte %d (%s)", self.details, offset, reason)
        return 0

    def _add(self, line: bytes, offset: int) -> int:
        # Everything the columns get is computed first, then appended: a row is taken whole or not at all.
        try:
            row = parse_row(line)
            job_id = str(row["id"])
            if job_id in self.id_index:
                log.warning("%s: job %s appears twice; keeping the first", self.details, job_id)
                return 0
            intern = self._intern  # one string object per distinct model/environment/value name
            model, env = str(row.get("model")), str(row.get("environment"))
            model, env = intern.setdefault(model, model), intern.setdefault(env, env)
            uid = row.get("object_uid")
            uid = str(uid) if uid is not None else Path(model).stem
            failed = row.get("status", "ok") != "ok"
            verdict = row.get("is_correct")
            bad = isinstance(verdict, float) and not math.isfinite(verdict)
            top1, bad_top = _top1(row.get("prediction"))
            values: dict[str, Any] = {"model": model, "environment": env}
            keys = self._keys
            for key, v in (row.get("render_args") or {}).items():
                name = keys.get(key)
                if name is None:
                    name = keys[key] = "render_args." + key
                t = type(v)   # json.loads gives exact types; the common cases first (this loop is the load time)
                if t is float:
                    if v - v != 0.0:      # NaN or +-Infinity
                        v, bad = None, True
                elif t is str:
                    v = intern.setdefault(v, v)
                elif t is int:
                    if not -MAX_FLOAT <= v <= MAX_FLOAT:
                        v, bad = None, True
                elif v is not None and t is not bool:
                    v = json.dumps(v, sort_keys=True)   # a list or object: its JSON text
                    v = intern.setdefault(v, v)
                values[name] = v
            output_type = row.get("output_type")
        except BadRow as exc:
            return self._skip(str(exc), offset)
        except RecursionError:   # a render argument or a name nested too deep to print
            return self._skip("nested too deep", offset)
        except (ValueError, TypeError, OverflowError) as exc:
            return self._skip(f"unusable row ({type(exc).__name__})", offset)
        n = len(self.ids)
        self.ids.append(job_id)
        self.id_index[job_id] = n
        self.offsets.append(offset)
        self.failed.append(failed)
        self.correct.append(None if failed else _correct(verdict))
        self.models.append(model)
        self.environments.append(env)
        self.uids.append(intern.setdefault(uid, uid))
        self.top1.append(top1)
        if bad or bad_top:
            self.bad_values += 1
        if self.output_type is None and isinstance(output_type, str) and output_type:
            self.output_type = output_type
        params = self.params
        for name, v in values.items():
            column = params.get(name)
            if column is None:
                column = params[name] = [None] * n  # a key first seen now: earlier rows lack it
            column.append(v)
        if len(values) != len(params):  # some columns did not get a value from this row
            for column in params.values():
                if len(column) == n:
                    column.append(None)
        return 1

    # -- queries -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int) -> dict[str, Any]:
        """The full ``details.log`` row number ``i`` (re-read from the file)."""
        return self.rows([i])[0]

    def rows(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        """Full rows, re-read from their lines; ``{}`` for a line that no longer parses (the file changed)."""
        out = []
        with open(self.details, "rb") as handle:
            for i in indices:
                handle.seek(self.offsets[i])
                try:
                    out.append(parse_row(handle.readline()))
                except (BadRow, RecursionError):
                    out.append({})
        return out

    def index_of(self, job_id: str) -> int | None:
        """Row number of a known job id, else None (ids are only ever looked up, never trusted)."""
        with self._lock:
            return self.id_index.get(job_id)

    def pass_file(self, job_id: str, name: str) -> Path | None:
        """The file of pass ``name`` (one of :data:`PASSES`) of a known job, resolved; None when either is
        unknown or nothing was logged; :class:`~threedb.dashboard.files.Refused` when the file is not a
        regular file inside the run directory (a symlink leading out, a device, ...). The id comes from
        this run's rows, never from the request, and the result is checked whatever the id holds."""
        i = self.index_of(job_id)
        if i is None or name not in PASSES:
            return None
        return resolve_inside(self.path, self.path / IMAGES / (self.ids[i] + PASSES[name]))

    def pass_path(self, job_id: str, name: str) -> Path | None:
        """:meth:`pass_file`, with a refused file as None (for listings and analyses)."""
        try:
            return self.pass_file(job_id, name)
        except Refused:
            return None

    def class_name(self, index: int | None) -> str | None:
        if index is None:
            return None
        return self.class_names[index] if 0 <= index < len(self.class_names) else str(index)

    def true_labels(self, uid: str) -> list[str]:
        """Names of the acceptable classes of an object (from the run's class map), else []."""
        return [n for n in (self.class_name(i) for i in self.classmap.get(uid, [])) if n is not None]
