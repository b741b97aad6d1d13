"""Local workers that die are started again (issue 16): a SIGKILLed sole evaluator or sole render worker
no longer aborts the run, and a worker that keeps dying at start-up stops it with one clear error."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from run_cli import finish, start_run
from test_run import expected_ids, ids, wait_for_lines, write_config

from threedb.sim.run.supervisor import MAX_QUICK_DEATHS, Supervisor


@pytest.mark.parametrize("module", ["evaluator_worker", "render_worker"])
def test_a_killed_sole_worker_is_respawned_and_the_run_completes(tmp_path, module):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    proc = start_run(config, out, "--render-workers", "1", "--evaluators", "1")
    wait_for_lines(out, 1, proc)
    pids = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), f"threedb.sim.run.{module}"],
                          capture_output=True, text=True).stdout.split()
    assert len(pids) == 1
    os.kill(int(pids[0]), signal.SIGKILL)
    result = finish(proc, timeout=240)
    got = ids(out)
    assert sorted(got) == sorted(expected_ids(4)) and len(got) == len(set(got))
    assert result["worker_restarts"] >= 1 and result["failed"] == 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def wait_all(supervisor: Supervisor) -> None:
    for proc in supervisor.processes():
        proc.wait(timeout=30)


def test_a_worker_dying_at_start_up_is_retried_with_back_off_then_given_up():
    clock = Clock()
    supervisor = Supervisor(clock)
    supervisor.add("evaluator", lambda: subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
    supervisor.add("render", lambda: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
    reasons = []
    for _ in range(40):
        for p in supervisor.processes():
            if p.args[-1].startswith("raise"):   # the render worker stays up
                p.wait(timeout=30)
        clock.now += 1.0
        reasons.append(supervisor.check(("render", "evaluator")))
        if reasons[-1]:
            break
    try:
        assert reasons[-1] and "every local evaluator worker keeps exiting at start-up" in reasons[-1]
        assert "exit codes 3" in reasons[-1]
        evaluator = supervisor.slots[0]
        assert evaluator.history == [3] * MAX_QUICK_DEATHS and evaluator.restarts == MAX_QUICK_DEATHS - 1
        assert reasons.index(reasons[-1]) >= 1 + 2   # the back-off waited between the starts (1 s, then 2 s)
    finally:
        for proc in supervisor.processes():
            proc.kill()
            proc.wait()


def test_a_worker_that_ran_a_while_is_always_restarted():
    clock = Clock()
    supervisor = Supervisor(clock)
    supervisor.add("evaluator", lambda: subprocess.Popen([sys.executable, "-c", "raise SystemExit(9)"]))
    for _ in range(MAX_QUICK_DEATHS * 6):
        wait_all(supervisor)
        clock.now += 60.0   # each one lived longer than a start-up
        assert supervisor.check(("evaluator",)) is None
    assert supervisor.restarts >= MAX_QUICK_DEATHS * 2 and not supervisor.slots[0].given_up
    wait_all(supervisor)


def test_a_hung_render_is_killed_at_a_limit_from_measured_render_times_and_reissued(tmp_path):
    """SIGSTOP of the Blender child (its worker keeps heartbeating): the render is killed once it takes
    ``factor`` times the slowest measured render (here the 12 s floor), not after 600 s, and the job is
    done again; meanwhile the progress line says a render is overdue (from half the kill time on)."""
    import time

    import yaml
    from test_run import _descendants, rows

    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["render"]["job_timeout"] = {"factor": 3, "floor_s": 12, "ceiling_s": 600}
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    proc = start_run(config, out, "--render-workers", "1", "--evaluators", "1", "--lease-timeout", "30")
    # (progress lines come every 5 s: at least one falls between 6 s, "overdue", and the kill at 12 s)
    wait_for_lines(out, 2, proc)
    blender = [pid for pid in _descendants(proc.pid)
               if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(blender) == 1
    os.kill(blender[0], signal.SIGSTOP)
    stopped = time.monotonic()
    out_text, err_text = proc.communicate(timeout=240)
    assert proc.returncode == 0, err_text[-3000:]
    result = json.loads(out_text.strip().splitlines()[-1])
    assert time.monotonic() - stopped < 120   # far below the 600 s ceiling
    got = ids(out)
    assert sorted(got) == sorted(expected_ids(4)) and len(got) == len(set(got))
    assert result["failed"] == 0 and all(r["status"] == "ok" for r in rows(out))
    assert re.search(r"1 render overdue \(\d+ s\)", err_text), err_text[-2000:]
