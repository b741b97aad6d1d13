"""The render worker process: failures are reported per job, crashes restart it, it is recycled."""
from __future__ import annotations

import textwrap

import pytest

from conftest import SMALL
from threedb.controls.registry import resolve_control
from threedb.sim.frames import FrameError, decode, encode
from threedb.sim.render.process import JobFailed, RenderProcess, WorkerCrashed, fast_scratch_dir

PLUGIN = textwrap.dedent('''
    import os
    from threedb.controls import Param, SceneControl

    class Faulty(SceneControl):
        """Raises or kills its process on request (for fault tests)."""
        name = "faulty"
        params = (Param("mode", "choice", "ok", "what to do", choices=("ok", "raise", "exit")),)

        def apply(self, scene, values):
            if values["mode"] == "raise":
                raise ValueError("this control always fails")
            if values["mode"] == "exit":
                os._exit(3)

        def undo(self, scene):
            pass
''')


@pytest.fixture()
def faulty(tmp_path):
    path = tmp_path / "faulty.py"
    path.write_text(PLUGIN)
    return resolve_control({"file": str(path)}, key="controls[0]", file=None, base_dir=tmp_path)


def test_failing_job_is_reported_and_the_worker_goes_on(job_for, faulty):
    with RenderProcess(SMALL, fast_scratch_dir()) as proc:
        proc.start()
        pid = proc.pid
        with pytest.raises(JobFailed, match="this control always fails") as info:
            proc.render(job_for("mug", "city", [(faulty, {"mode": "raise"})], job_id="bad"))
        assert info.value.job_id == "bad" and "Traceback" in info.value.trace
        # The scene may be half changed after a failure: the next job runs in a fresh process.
        out = proc.render(job_for("mug", "city", [(faulty, {"mode": "ok"})]))
        assert out.passes["mask"].any() and proc.pid != pid and proc.restarts == 1


def test_crashing_job_restarts_the_worker(job_for, faulty):
    with RenderProcess(SMALL, fast_scratch_dir()) as proc:
        proc.start()
        first = proc.pid
        with pytest.raises(WorkerCrashed, match="exit code 3"):
            proc.render(job_for("mug", "city", [(faulty, {"mode": "exit"})]))
        out = proc.render(job_for("mug", "city"))
        assert out.passes["mask"].any()
        assert proc.pid != first and proc.restarts == 1


def test_worker_is_recycled_after_max_jobs(job_for):
    settings = SMALL.model_copy(update={"max_jobs_per_worker": 2})
    with RenderProcess(settings, fast_scratch_dir()) as proc:
        pids = []
        for i in range(3):
            proc.render(job_for("mug", "city", job_id=str(i)))
            pids.append(proc.pid)
        assert pids[0] == pids[1] != pids[2]


def test_worker_start_failure_is_reported(tmp_path):
    settings = SMALL.model_copy(update={"device": "gpu", "gpu_backend": "CUDA"})
    with pytest.raises(Exception, match="no CUDA device|render worker failed to start"):
        RenderProcess(settings, tmp_path).start()


def test_frames_round_trip_and_reject_malformed_messages():
    import numpy as np

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "m": np.eye(2, dtype=bool)}
    header, back = decode(encode({"type": "x", "n": 1}, arrays))
    assert header["type"] == "x" and all(np.array_equal(arrays[k], back[k]) for k in arrays)
    with pytest.raises(FrameError):
        decode([b"\x80\x04not json"])
    with pytest.raises(FrameError):
        decode([b'{"v": 1, "arrays": [{"name": "a", "dtype": "object", "shape": [1]}]}', b"x" * 8])
    with pytest.raises(FrameError):
        decode([b'{"v": 1, "arrays": [{"name": "a", "dtype": "float32", "shape": [4]}]}', b"x" * 3])


ORPHAN = """
import os, sys
sys.path.insert(0, sys.argv[1])
from conftest import SMALL
from threedb.sim.frames import encode, send_frames
from threedb.sim.render import process

parent, child = process._SPAWN.Pipe()
proc = process._SPAWN.Process(target=process._child_main, args=(child, SMALL.model_dump_json(), sys.argv[2],
                                                                 sys.argv[2] + "/blender.log"))
proc.start()
child.close()
if sys.argv[3] == "job":   # a job in flight: the child's answer finds no one
    assert parent.poll(120)
    parent.recv_bytes()
    send_frames(parent, encode({"type": "job", "job": {"id": "x"}}))
print(proc.pid, flush=True)
os._exit(0)   # the worker dies without a word: its Blender child is orphaned
"""


@pytest.mark.parametrize("when", ["starting", "job"])
def test_an_orphaned_render_child_exits_quietly(tmp_path, when):
    import subprocess
    import sys
    import time
    from pathlib import Path

    tests = str(Path(__file__).resolve().parent)
    run = subprocess.run([sys.executable, "-c", ORPHAN, tests, str(tmp_path), when], capture_output=True, text=True,
                         timeout=240)   # returns once the child, which holds the same stderr, has exited too
    pid = int(run.stdout.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert "Traceback" not in run.stderr and "BrokenPipeError" not in run.stderr, run.stderr[-3000:]
