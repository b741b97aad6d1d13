"""A render worker in its own ``spawn``ed process, driven from the master over a pipe.

The master never imports ``bpy``; the child does. Messages are JSON headers plus raw array frames
(:mod:`threedb.sim.frames`), never pickles. The child is restarted after
``settings.max_jobs_per_worker`` jobs (Blender leaks memory over many renders) and after a crash.
"""
from __future__ import annotations

import collections
import ctypes
import multiprocessing as mp
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from threedb.sim.errors import RenderError, ThreeDBError
from threedb.sim.frames import decode, encode, recv_frames, send_frames
from threedb.sim.render.outputs import RenderOutput
from threedb.sim.render.settings import RenderSettings

_SPAWN = mp.get_context("spawn")
STARTUP_TIMEOUT_S = 120.0
#: The worker trims its heap after job 1 and then every TRIM_EVERY jobs.
TRIM_EVERY = 4


def fast_scratch_dir(prefix: str = "threedb-") -> Path:
    """A new private temporary folder, in memory (/dev/shm) where available: renders pass through it."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


class JobFailed(ThreeDBError):
    """A render job raised inside the worker; the worker process is replaced for the next job."""

    def __init__(self, job_id: str, error: str, trace: str = "") -> None:
        self.job_id, self.error, self.trace = job_id, error, trace
        super().__init__(f"job {job_id}: {error}")


class WorkerCrashed(ThreeDBError):
    """The worker process died or stalled while rendering a job (it is restarted on the next job)."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return None


def _fix_mmap_threshold() -> None:
    """Keep glibc from raising its mmap threshold as per-render buffers are freed: large buffers then
    stay mmapped and go back to the OS when freed, instead of fragmenting the heap (RSS creep)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD


def _release_free_memory() -> None:
    """Return freed heap pages to the OS (~2 ms a call; benchmarks/render_overhead.py measures RSS)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _child_main(conn: Any, settings_json: str, scratch_dir: str, log_path: str) -> None:
    # Blender prints progress on stdout for every render; keep it in a log file instead.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    _fix_mmap_threshold()
    try:
        _serve(conn, settings_json, scratch_dir)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return   # orphaned: the worker that started us is gone, so there is no one to report to


def _serve(conn: Any, settings_json: str, scratch_dir: str) -> None:
    """Set up the scene, then render the jobs that arrive on ``conn`` until ``stop`` or end of file."""
    try:
        from threedb.sim.render.worker import JobRunner  # imports bpy: only ever in this process

        runner = JobRunner(RenderSettings.model_validate_json(settings_json), scratch_dir)
    except BaseException as exc:  # report set-up failures to the master instead of dying silently
        send_frames(conn, encode({"type": "error", "error": f"{type(exc).__name__}: {exc}",
                                  "trace": traceback.format_exc()}))
        return
    send_frames(conn, encode({"type": "ready", "pid": os.getpid()}))
    jobs_done = 0
    while True:
        try:
            header, _ = decode(recv_frames(conn))
        except EOFError:
            return
        if header.get("type") == "stop":
            return
        job = header["job"]
        try:
            out = runner.run(job)
        except Exception as exc:
            # A control that raised may have left the scene half changed: report, then exit so
            # that the next job gets a fresh process instead of a scene in an unknown state.
            send_frames(conn, encode({"type": "failed", "id": job.get("id"),
                                      "error": f"{type(exc).__name__}: {exc}",
                                      "trace": traceback.format_exc()}))
            return
        meta = dict(out.meta, rss_bytes=_rss_bytes())
        send_frames(conn, encode({"type": "done", "id": job.get("id"), "meta": meta}, out.arrays()))
        del out
        jobs_done += 1
        if jobs_done % TRIM_EVERY == 1:
            _release_free_memory()


class RenderProcess:
    """One render worker process; call :meth:`render` job by job, :meth:`close` at the end."""

    def __init__(self, settings: RenderSettings, scratch_dir: str | Path, *,
                 job_timeout_s: float | None = None) -> None:
        self.settings = settings
        self.scratch_dir = Path(scratch_dir)
        #: a fixed limit per render; ``None``: ``settings.job_timeout`` on the recent render times
        self.job_timeout_s = job_timeout_s
        self.recent_s: collections.deque[float] = collections.deque(maxlen=50)
        self._proc: Any = None
        self._conn: Any = None
        self.jobs_done = 0
        self.restarts = 0  #: starts after the first (crash, stall or recycling)
        self._started = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child and wait until its scene is set up."""
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        if self._started:
            self.restarts += 1
        self._started = True
        parent, child = _SPAWN.Pipe()
        log_path = str(self.scratch_dir / "blender.log")
        self._proc = _SPAWN.Process(target=_child_main, daemon=True, name="threedb-render",
                                    args=(child, self.settings.model_dump_json(), str(self.scratch_dir), log_path))
        self._proc.start()
        child.close()
        self._conn = parent
        header = self._receive(STARTUP_TIMEOUT_S, "starting")[0]
        if header["type"] != "ready":
            self.close()
            raise RenderError(f"render worker failed to start: {header.get('error')}\n{header.get('trace', '')}")
        self.jobs_done = 0

    def _receive(self, timeout: float | None, doing: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        try:
            if not self._conn.poll(timeout):
                self._kill()
                raise WorkerCrashed(f"render worker stalled for {timeout:.0f} s while {doing}")
            return decode(recv_frames(self._conn))
        except (EOFError, ConnectionError, OSError):
            if self._proc is not None:
                self._proc.join(timeout=5)  # reap it, so that its exit code is known
            code = self._proc.exitcode if self._proc is not None else None
            self._kill()
            raise WorkerCrashed(f"render worker died while {doing} (exit code {code})") from None

    def render(self, job: Mapping[str, Any]) -> RenderOutput:
        """Render ``job`` (see :mod:`threedb.sim.render.worker`); raises JobFailed or WorkerCrashed."""
        if self._proc is None or not self._proc.is_alive():
            self.start()
        elif self.jobs_done >= self.settings.max_jobs_per_worker:
            self.close()
            self.start()
        try:
            send_frames(self._conn, encode({"type": "job", "job": dict(job)}))
        except (BrokenPipeError, OSError):
            self._kill()
            raise WorkerCrashed(f"render worker died before job {job.get('id')}") from None
        limit = self.job_timeout_s if self.job_timeout_s is not None else self.settings.job_timeout.seconds(
            list(self.recent_s))
        began = time.monotonic()
        header, arrays = self._receive(limit, f"rendering job {job.get('id')} (limit {limit:.0f} s)")
        self.recent_s.append(time.monotonic() - began)
        self.jobs_done += 1
        if header["type"] == "failed":
            self._proc.join(timeout=10)  # the child exits after a failed job (see _child_main)
            self._kill()
            raise JobFailed(str(header.get("id")), header.get("error", "?"), header.get("trace", ""))
        arrays = {k: np.array(v) for k, v in arrays.items()}  # writable copies
        rgb = arrays.pop("rgb")
        return RenderOutput(rgb=rgb, passes=arrays, meta=header.get("meta", {}))

    def _kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
        if self._proc is not None:
            self._proc.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        """Ask the child to stop; kill it if it does not within a few seconds. Never hangs."""
        if self._proc is None:
            return
        try:
            if self._conn is not None:
                send_frames(self._conn, encode({"type": "stop"}))
        except (BrokenPipeError, OSError):
            pass
        self._proc.join(timeout=10)
        self._kill()

    def __enter__(self) -> "RenderProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
