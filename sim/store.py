"""The results store of a run directory: what a run leaves on disk, readable by threedboard.

Layout of ``RUN_DIR`` (see ``docs/results.md``)::

    details.log            JSON Lines, one line per finished (or failed) job, same keys in the same order
    class_maps.json        JSON list of class names (index -> name)
    images/<id>_rgb.png    the rendered (and image-controlled) RGB frame
    images/<id>_<pass>.png|.exr   optional lossless extra passes (uint8/bool -> PNG, else float32 EXR)
    config.resolved.yaml   the resolved configuration
    manifest.json          versions, seed, machine, start time, command line (and resumes)
    summary.json           written at the end of each (resumed) run: counts and the accuracy summary
    .lock                  held (flock) by the run writing the directory; names it (pid, host, command)

Durability: a line is appended with one ``write`` then ``fsync``; images are written under a temporary
name and ``os.replace``d into place before their line is appended, so a killed process loses at most
the job in flight, and a logged row always has its image. :meth:`RunStore.open` resumes a run
directory: it drops (with a warning) a last line cut short by a crash and returns the ids already done.
Memory stays bounded: the store keeps only the set of done ids, never the rows.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import platform
import socket
import sys
import threading
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np

from threedb.sim.errors import ThreeDBError

log = logging.getLogger(__name__)

DETAILS = "details.log"
CLASS_MAPS = "class_maps.json"
IMAGES = "images"
CONFIG = "config.resolved.yaml"
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
LOCK = ".lock"

#: Keys every row carries between the evaluator outputs and our extra keys, in this order (threedboard's).
JOB_KEYS = ("id", "environment", "model", "render_args", "output_type")
#: Our keys after threedboard's, in this order; present (possibly null) on every row.
EXTRA_KEYS = ("status", "error", "seed", "object_uid", "controls_report")
#: Outputs threedboard's UI indexes into (``prediction[0]``, iterating ``boxes``): a failed row gets ``[]``.
LIST_OUTPUTS = frozenset({"prediction", "boxes"})
OUTPUT_TYPES = ("classes", "bboxes")
LogImages = Literal["all", "failures", "none"]


class ResultsError(ThreeDBError):
    """A run directory cannot be written or resumed as asked; the message names the file."""


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON: numpy/torch scalars and arrays become Python values, tuples lists,
    and non-finite floats ``null`` (browsers' ``JSON.parse`` rejects ``NaN``/``Infinity``)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return _jsonable(value.tolist())
    if hasattr(value, "detach") and hasattr(value, "tolist"):  # torch tensor, without importing torch
        return _jsonable(value.detach().cpu().tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot store a {type(value).__name__} in details.log: {value!r}")


def control_class_name(control: Mapping[str, Any]) -> str:
    """The class name of a job's control entry: its ``class``, else from its ``ref`` (``"module:Class"``);
    a ref naming only a module falls back to the instance name."""
    if control.get("class"):
        return str(control["class"])
    ref = str(control.get("ref") or "")
    cls = ref.rpartition(":")[2] if ":" in ref else ""
    return cls or str(control["name"])


def render_args(controls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"ClassName.param": value}`` for every control of a job (fixed parameters included).

    When two instances of one class are in the experiment, each of them is keyed
    ``"ClassName[instance].param"`` (instance = the control's unique name in the config).
    """
    names = [control_class_name(c) for c in controls]
    out: dict[str, Any] = {}
    for control, cls in zip(controls, names):
        prefix = f"{cls}[{control['name']}]" if names.count(cls) > 1 else cls
        for param, value in control.get("values", {}).items():
            out[f"{prefix}.{param}"] = _jsonable(value)
    return out


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def manifest(seed: int | None, command: Sequence[str] | None = None) -> dict[str, Any]:
    """Versions (read from package metadata: nothing is imported), seed, machine and command line."""
    return {
        "versions": {"python": platform.python_version(), "threedb": _version("threedb"),
                     "bpy": _version("bpy"), "torch": _version("torch"),
                     "torchvision": _version("torchvision"), "numpy": _version("numpy")},
        "seed": seed,
        "machine": {"hostname": socket.gethostname(), "platform": platform.platform(),
                    "machine": platform.machine(), "cpu_count": os.cpu_count()},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv if command is None else command),
        "resumes": [],
    }


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(run_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write ``RUN_DIR/summary.json`` (replaced atomically): what ``threedb run`` printed at its end."""
    path = Path(run_dir) / SUMMARY
    try:
        _atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    except OSError as exc:
        raise ResultsError(f"cannot write the summary: {describe_os_error(exc, path)}") from None
    return path


def describe_os_error(exc: OSError, default: Path | str) -> str:
    """``PATH: cause (ERRNO)`` for a failed file operation, e.g. ``.../images/x.png: No space left on device
    (ENOSPC)``."""
    name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
    cause = exc.strerror or str(exc)
    return f"{exc.filename or default}: {cause}" + (f" ({name})" if name else "")


def _replace_from(tmp: Path, target: Path, write: Any) -> None:
    """``write()`` the file at ``tmp``, then move it onto ``target``; a failed write leaves no ``tmp`` behind."""
    try:
        write()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _lock_holder(fd: int) -> str:
    """Who holds a run directory's lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (f"pid {int(info['pid'])} on {str(info['host'])[:64]}, started {str(info['started'])[:32]}: "
                f"{str(info['command'])[:200]}")
    except (ValueError, KeyError, TypeError, OSError):
        return "a process that has not written its name yet"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_id(job_id: Any) -> str:
    text = str(job_id)
    if not text or "/" in text or "\\" in text or text.startswith(".") or "\n" in text:
        raise ValueError(f"job id {job_id!r} cannot name an image file")
    return text


class RunStore:
    """Append-only results of one run directory (thread-safe; one writer process per directory).

    Create a fresh run directory with the constructor (it refuses one that already has results) or
    resume one with :meth:`open`. ``output_keys`` are the evaluator's output names, written first on
    every row, in that order; ``output_type`` is ``"classes"`` or ``"bboxes"``. ``log_images`` picks
    which rows get images: ``"all"``, ``"failures"`` (rows whose ``is_correct`` is false, and failed
    jobs) or ``"none"``. ``extra_passes`` names the passes (e.g. ``depth``, ``mask``, ``uv``) kept
    beside the RGB image.
    """

    def __init__(self, run_dir: str | Path, *, output_keys: Sequence[str], output_type: str,
                 class_names: Sequence[str], log_images: LogImages = "all",
                 extra_passes: Sequence[str] = (), config: Mapping[str, Any] | None = None,
                 seed: int | None = None, command: Sequence[str] | None = None,
                 _resume: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.output_keys = tuple(output_keys)
        self.output_type = output_type
        self.class_names = list(class_names)
        self.log_images = log_images
        self.extra_passes = tuple(extra_passes)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, not {output_type!r}")
        if log_images not in ("all", "failures", "none"):
            raise ValueError(f"log_images must be 'all', 'failures' or 'none', not {log_images!r}")
        clash = set(self.output_keys) & set(JOB_KEYS + EXTRA_KEYS)
        if clash or len(set(self.output_keys)) != len(self.output_keys):
            raise ValueError(f"evaluator output names clash or repeat: {sorted(clash) or self.output_keys}")

        self.details_path = self.run_dir / DETAILS
        self.images_dir = self.run_dir / IMAGES
        self._done: set[str] = set()
        self._failed: set[str] = set()
        self._keys: tuple[str, ...] | None = None   # full key list of a row (render_args keys included)
        self._lock = threading.Lock()
        self._fd: int | None = None

        self._lock_fd: int | None = None
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._take_directory_lock(command)
        except OSError as exc:
            raise ResultsError(f"cannot use the run directory: {describe_os_error(exc, self.run_dir)}") from None
        try:
            try:
                self._prepare(_resume, config, seed, command)
            except OSError as exc:
                raise ResultsError(f"cannot set up the run directory: {describe_os_error(exc, self.run_dir)}") \
                    from None
        except BaseException:
            self._release_directory_lock()   # a refused or broken directory stays free for the next try
            raise

    def _prepare(self, resume: bool, config: Mapping[str, Any] | None, seed: int | None,
                 command: Sequence[str] | None) -> None:
        if not resume and self.details_path.exists() and self.details_path.stat().st_size:
            raise ResultsError(f"{self.details_path}: already holds results; continue that run with "
                              "`threedb run CONFIG --out DIR --resume` (RunStore.open from Python), or choose "
                              "another --out")
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._write_class_maps()
        if config is not None:
            self._write_config(config)
        manifest_path = self.run_dir / MANIFEST
        if resume and manifest_path.exists():
            data = json.loads(manifest_path.read_text())
            data.setdefault("resumes", []).append(
                {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "command": list(sys.argv if command is None else command)})
            _atomic_write_text(manifest_path, json.dumps(data, indent=2) + "\n")
        else:
            _atomic_write_text(manifest_path, json.dumps(manifest(seed, command), indent=2) + "\n")
        if resume:
            self._load()
        created = not self.details_path.exists()
        self._fd = os.open(self.details_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_dir(self.run_dir)

    # -- construction -------------------------------------------------------------------------
    def _take_directory_lock(self, command: Sequence[str] | None) -> None:
        """One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock``, held while the store
        is open. The OS drops it when the process dies, so a crashed run never leaves a stale lock."""
        import fcntl

        path = self.run_dir / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise ResultsError(f"{self.run_dir}: in use by another run ({holder}); wait for it to finish or "
                               "choose another --out") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join(sys.argv if command is None else command)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._lock_fd = fd

    def _release_directory_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # closing the descriptor releases the flock
            self._lock_fd = None

    @classmethod
    def open(cls, run_dir: str | Path, **kwargs: Any) -> "RunStore":
        """Resume ``run_dir`` (or start it if it has no results yet), with the constructor's arguments.

        Reads ``details.log`` line by line keeping only the ids: a last line cut short by a crash is
        cut off the file with a warning (threedboard cannot parse a broken line); a broken line
        elsewhere, rows whose keys differ, or a different ``class_maps.json``/config raise
        :class:`ResultsError`.
        """
        return cls(run_dir, _resume=True, **kwargs)

    def _write_class_maps(self) -> None:
        path = self.run_dir / CLASS_MAPS
        if path.exists():
            try:
                existing = json.loads(path.read_text())
            except ValueError as exc:
                raise ResultsError(f"{path}: not JSON ({exc})") from None
            if existing != self.class_names:
                raise ResultsError(f"{path}: holds {len(existing)} other class names than this run's "
                                   f"{len(self.class_names)}; use a new run directory")
            return
        _atomic_write_text(path, json.dumps(self.class_names) + "\n")

    def _write_config(self, config: Mapping[str, Any]) -> None:
        import yaml

        path = self.run_dir / CONFIG
        text = yaml.safe_dump(_jsonable(dict(config)), sort_keys=False)
        if path.exists():
            if yaml.safe_load(path.read_text()) != yaml.safe_load(text):
                raise ResultsError(f"{path}: this run directory was made with another configuration; "
                                   "use a new run directory")
            return
        _atomic_write_text(path, text)

    def _load(self) -> None:
        if not self.details_path.exists():
            return
        good_end = 0           # byte offset just past the last complete, parsable line
        repair_newline = False
        with open(self.details_path, "rb") as handle:
            lineno = 0
            for raw in handle:
                lineno += 1
                complete = raw.endswith(b"\n")
                try:
                    row = json.loads(raw)
                    if not isinstance(row, dict) or "id" not in row:
                        raise ValueError("not a row object")
                except ValueError as exc:
                    if handle.read(1):  # not the last line: real corruption, not a crash mid-write
                        raise ResultsError(f"{self.details_path}:{lineno}: unreadable row ({exc})") from None
                    log.warning("%s:%d: dropping a row cut short by a crash (%d bytes: %r...)",
                                self.details_path, lineno, len(raw), raw[:60])
                    break
                keys = tuple(row) + tuple(f"render_args.{k}" for k in row.get("render_args") or {})
                if self._keys is None:
                    self._keys = keys
                    self._check_schema(row)
                elif keys != self._keys:
                    raise ResultsError(f"{self.details_path}:{lineno}: keys differ from the first row's")
                self._done.add(str(row["id"]))
                if row.get("status") == "failed":
                    self._failed.add(str(row["id"]))
                good_end += len(raw)
                if not complete:
                    repair_newline = True
        size = self.details_path.stat().st_size
        if good_end < size:
            with open(self.details_path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        if repair_newline:
            with open(self.details_path, "ab") as handle:
                handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())

    def _check_schema(self, row: Mapping[str, Any]) -> None:
        expected = self.output_keys + JOB_KEYS + EXTRA_KEYS
        if tuple(row) != expected:
            raise ResultsError(f"{self.details_path}: rows have keys {list(row)}, this run writes "
                               f"{list(expected)}; use a new run directory")
        if row.get("output_type") != self.output_type:
            raise ResultsError(f"{self.details_path}: rows are {row.get('output_type')!r}, "
                               f"this run writes {self.output_type!r}")

    # -- queries -------------------------------------------------------------------------------
    def done_ids(self) -> set[str]:
        """Ids of every job recorded (succeeded or failed): a resumed run skips them."""
        with self._lock:
            return set(self._done)

    def failed_ids(self) -> set[str]:
        """Ids of the jobs recorded as failed."""
        with self._lock:
            return set(self._failed)

    def __len__(self) -> int:
        return len(self._done)

    # -- writing -------------------------------------------------------------------------------
    def row(self, job: Mapping[str, Any], outputs: Mapping[str, Any], *, status: str = "ok",
            error: str | None = None, controls_report: Any = None) -> dict[str, Any]:
        """The ``details.log`` row of ``job`` (ordered: outputs, threedboard's keys, ours)."""
        missing = [k for k in self.output_keys if k not in outputs]
        if missing:
            raise ValueError(f"job {job['id']}: evaluator outputs lack {missing}")
        row: dict[str, Any] = {k: _jsonable(outputs[k]) for k in self.output_keys}
        if "is_correct" in row and row["is_correct"] is not None:
            row["is_correct"] = bool(row["is_correct"])
        obj, env = job["object"], job["environment"]
        row.update({
            "id": str(job["id"]),
            "environment": Path(env["path"]).name if env.get("path") else env.get("name"),
            "model": Path(obj["path"]).name if obj.get("path") else obj.get("uid"),
            "render_args": render_args(job.get("controls", ())),
            "output_type": self.output_type,
            "status": status,
            "error": error,
            "seed": _jsonable(job.get("seed")),
            "object_uid": obj.get("uid"),
            "controls_report": _jsonable(controls_report),
        })
        return row

    def write(self, job: Mapping[str, Any], outputs: Mapping[str, Any], *, rgb: np.ndarray | None,
              passes: Mapping[str, np.ndarray] | None = None, status: str = "ok",
              error: str | None = None, controls_report: Any = None) -> bool:
        """Record a finished job: its images (per ``log_images``), then one ``details.log`` line.

        Returns False (and writes nothing) when the job id is already recorded. Raises ValueError
        when the row's keys differ from the rows already written (threedboard needs them identical).
        """
        job_id = _check_id(job["id"])
        row = self.row(job, outputs, status=status, error=error, controls_report=controls_report)
        keys = tuple(row) + tuple(f"render_args.{k}" for k in row["render_args"])
        line = (json.dumps(row, allow_nan=False, separators=(", ", ": ")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise ResultsError(f"{self.details_path}: the store is closed")
            if job_id in self._done:
                log.warning("job %s is already recorded in %s; dropping the duplicate", job_id, self.details_path)
                return False
            if self._keys is None:
                self._keys = keys
            elif keys != self._keys:
                extra = sorted(set(keys) ^ set(self._keys))
                raise ValueError(f"job {job_id}: row keys differ from the run's (differences: {extra})")
            try:
                if self._wants_images(row):
                    if rgb is not None:
                        self._write_image(f"{job_id}_rgb.png", rgb)
                    for name, array in (passes or {}).items():
                        if name in self.extra_passes:
                            self._write_pass(job_id, name, array)
                self._append(line)
            except OSError as exc:
                raise ResultsError(f"cannot record job {job_id}: {describe_os_error(exc, self.details_path)}; "
                                   "the rows written so far are kept (continue with --resume)") from None
            self._done.add(job_id)
            if status == "failed":
                self._failed.add(job_id)
            return True

    def _append(self, line: bytes) -> None:
        """One row at the end of ``details.log``; on a short write (full disk) the partial line is cut off
        again, so the file stays whole rows only."""
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass   # resuming drops a torn last line anyway
            raise

    def write_failure(self, job: Mapping[str, Any], error: str, *, rgb: np.ndarray | None = None,
                      controls_report: Any = None) -> bool:
        """Record a job that failed (render or evaluation): the same keys as every row, with
        ``status: "failed"``, the error message, ``[]`` for ``prediction``/``boxes`` (the dashboard
        indexes them) and ``null`` for the other outputs."""
        return self.write(job, self.failure_outputs(), rgb=rgb, status="failed", error=str(error),
                          controls_report=controls_report)

    def failure_outputs(self) -> dict[str, Any]:
        """The evaluator outputs of a failed job's row."""
        return {k: ([] if k in LIST_OUTPUTS else None) for k in self.output_keys}

    def _wants_images(self, row: Mapping[str, Any]) -> bool:
        if self.log_images == "all":
            return True
        if self.log_images == "none":
            return False
        return row["status"] != "ok" or ("is_correct" in row and not row["is_correct"])

    def _write_image(self, name: str, image: np.ndarray) -> None:
        from threedb.sim.render.files import write_png

        target = self.images_dir / name
        tmp = self.images_dir / f".tmp-{os.getpid()}-{threading.get_ident()}-{name}"  # keeps the extension
        _replace_from(tmp, target, lambda: write_png(tmp, np.asarray(image)))

    def _write_pass(self, job_id: str, name: str, array: np.ndarray) -> None:
        data = np.asarray(array)
        if data.dtype == np.bool_:
            data = data.astype(np.uint8) * 255
        if data.dtype == np.uint8:
            self._write_image(f"{job_id}_{name}.png", data)
            return
        from threedb.sim.render.files import write_exr

        channels: str | tuple[str, ...] = "Y"
        if data.ndim == 3 and data.shape[-1] > 1:
            channels = {2: ("U", "V"), 3: ("R", "G", "B"), 4: ("R", "G", "B", "A")}.get(
                data.shape[-1], tuple(f"C{i}" for i in range(data.shape[-1])))
        target = self.images_dir / f"{job_id}_{name}.exr"
        tmp = self.images_dir / f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}"
        _replace_from(tmp, target, lambda: write_exr(tmp, data, channels))

    def close(self) -> None:
        """Close ``details.log`` and release the run directory (idempotent)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._release_directory_lock()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_rows(run_dir: str | Path) -> Iterable[dict[str, Any]]:
    """Iterate the rows of ``run_dir/details.log`` (a last line cut short is skipped)."""
    with open(Path(run_dir) / DETAILS, "rb") as handle:
        for raw in handle:
            try:
                yield json.loads(raw)
            except ValueError:
                if handle.read(1):
                    raise
                return
