"""One writer per run directory: a second `threedb run` (fresh or --resume) on a directory in use gets one
clear error naming the holder, and a killed run leaves no stale lock (issue 16's concurrency cases)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from run_cli import finish, start_run
from test_run import REPO, expected_ids, ids, wait_for_lines, write_config

from threedb.sim.store import ResultsError, RunStore

STORE = dict(output_keys=("prediction", "is_correct"), output_type="classes", class_names=["a", "b"])


def test_a_second_store_on_a_directory_in_use_is_refused_until_the_first_closes(tmp_path):
    first = RunStore(tmp_path / "run", **STORE)
    with pytest.raises(ResultsError, match=rf"in use by another run \(pid {os.getpid()} on "):
        RunStore.open(tmp_path / "run", **STORE)
    first.close()
    RunStore.open(tmp_path / "run", **STORE).close()


def test_the_lock_dies_with_a_killed_process(tmp_path):
    code = ("import sys, time; from threedb.sim.store import RunStore; "
            f"RunStore(sys.argv[1], **{STORE!r}); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ResultsError, match=rf"pid {holder.pid} "):
            RunStore.open(tmp_path / "run", **STORE)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunStore.open(tmp_path / "run", **STORE).close()   # no stale lock


def refused(err: str) -> bool:
    """Whether a run's stderr is one error line saying its directory is in use, naming the holder's pid and
    command (and no traceback)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    return (len(lines) == 1 and "Traceback" not in err
            and re.search(r"in use by another run \(pid \d+ on .*: .*run .*config\.yaml", lines[0]) is not None)


def one_wins(procs: list[subprocess.Popen]) -> None:
    """Exactly one of the runs completes; every other is refused because the directory is in use."""
    errors = [proc.communicate(timeout=240)[1] for proc in procs]
    winners = [err for proc, err in zip(procs, errors) if proc.returncode == 0]
    assert len(winners) == 1, errors
    assert all(refused(err) for proc, err in zip(procs, errors) if proc.returncode != 0), errors


def slow_config(tmp_path, per_object: int):
    """The end-to-end tests' config with ``per_object`` jobs per object, each render 0.2 s longer (time for
    the other runs to start)."""
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["policy"]["samples_per_dim"] = per_object
    data["controls"].append({"file": str(REPO / "tests" / "plugins" / "slow_control.py"), "seconds": 0.2})
    config.write_text(yaml.safe_dump(data))
    return config


def test_two_runs_started_together_and_a_resume_while_running(tmp_path):
    config = slow_config(tmp_path, 20)
    out = tmp_path / "run"
    args = ("--render-workers", "1", "--evaluators", "1")
    first = start_run(config, out, *args)
    time.sleep(0.3)
    one_wins([first, start_run(config, out, *args)])
    assert sorted(ids(out)) == sorted(expected_ids(20)) and len(ids(out)) == 40

    again = tmp_path / "again"
    running = start_run(config, again, *args)
    wait_for_lines(again, 1, running)
    resumed = start_run(config, again, *args, "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode != 0 and refused(err), err[-2000:]
    finish(running)
    assert len(ids(again)) == len(set(ids(again))) == 40


def test_two_resumes_of_a_killed_run(tmp_path):
    config = slow_config(tmp_path, 10)
    out = tmp_path / "run"
    args = ("--render-workers", "1", "--evaluators", "1")
    proc = start_run(config, out, *args)
    wait_for_lines(out, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = start_run(config, out, *args, "--resume")
    time.sleep(0.3)
    one_wins([first, start_run(config, out, *args, "--resume")])
    done = ids(out)
    assert sorted(done) == sorted(expected_ids(10)) and len(done) == len(set(done))
