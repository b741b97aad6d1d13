"""``threedb worker --connect tcp://HOST:PORT``: a render worker of a ``threedb run`` master.

It says hello (the master answers with the render settings and which passes to send back), then
loops: ask for a job, render it with a :class:`~threedb.sim.render.process.RenderProcess` (Blender in
a child process, restarted after a crash) while a heartbeat goes to the master every second, and
send the frames (``rgb`` plus the passes the master asked for) back with the next request. A job
that raises is reported as ``failed`` (the master retries it once elsewhere, then records it).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

from threedb.sim.render.process import JobFailed, RenderProcess, WorkerCrashed, fast_scratch_dir
from threedb.sim.render.settings import RenderSettings
from threedb.sim.run.common import Connection, MasterGone, add_connect_args, worker_main

log = logging.getLogger(__name__)


def serve(args: argparse.Namespace) -> int:
    conn = Connection(args, "render")
    proc: RenderProcess | None = None
    try:
        welcome, _ = conn.request({"type": "hello"}, expect=("welcome",))
        settings = RenderSettings.model_validate(welcome["render"])
        send_passes = list(welcome.get("send_passes", []))
        proc = RenderProcess(settings, fast_scratch_dir("threedb-worker-"))   # limits: settings.job_timeout
        proc.start()  # Blender starts before the first job is leased
        message: dict[str, Any] = {"type": "ready"}
        arrays: dict[str, Any] | None = None
        while True:
            reply, _ = conn.request(message, arrays, expect=("job", "wait"))
            if reply["type"] == "wait":
                message, arrays = {"type": "ready"}, None
                import time
                time.sleep(float(reply.get("retry_s", 0.2)))
                continue
            job = reply["job"]
            try:
                out = conn.busy(lambda: proc.render(job), job_id=job["id"])
            except (JobFailed, WorkerCrashed) as exc:
                message = {"type": "failed", "job_id": job["id"],
                           "error": exc.error if isinstance(exc, JobFailed) else str(exc),
                           "crashed": isinstance(exc, WorkerCrashed)}
                arrays = None
                continue
            arrays = {"rgb": out.rgb}
            arrays.update({k: v for k, v in out.passes.items() if k in send_passes})
            message = {"type": "result", "job_id": job["id"], "meta": out.meta}
    except MasterGone as exc:
        log.info("render worker %s stops: %s", conn.wid, exc)
        return 0
    finally:
        if proc is not None:
            proc.close()
        conn.close()


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="threedb worker", description=__doc__.splitlines()[0])
    add_connect_args(parser)
    parser.set_defaults(func=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return worker_main(build_parser, argv)


if __name__ == "__main__":
    sys.exit(main())
