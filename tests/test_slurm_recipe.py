"""The SLURM recipe (scripts/slurm/threedb_run.sbatch) run for real on this machine: `srun` is replaced by a
shim that starts each task as a local process, everything else (keys, the master bound beyond loopback with
CURVE, workers and an evaluator joining it, resubmission resuming the run) is the script's own."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from test_run import expected_ids, ids, rows, write_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm" / "threedb_run.sbatch"

SRUN_SHIM = """#!/bin/bash
# srun stand-in: log the step's options, start --ntasks copies of the command here, wait for them
echo "$*" >> "$SRUN_LOG"
n=1
while [ $# -gt 0 ]; do
  case "$1" in --ntasks=*) n=${1#--ntasks=} ;; -*) ;; *) break ;; esac
  shift
done
pids=()
for _ in $(seq "$n"); do "$@" & pids+=($!); done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sbatch(tmp: Path, config: Path, out: Path) -> subprocess.CompletedProcess:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "srun").write_text(SRUN_SHIM)
    (bin_dir / "threedb").write_text(f'#!/bin/bash\nexec "{sys.executable}" -m threedb.sim.cli "$@"\n')
    for name in ("srun", "threedb"):
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SRUN_LOG=str(tmp / "srun.log"),
               CONFIG=str(config), OUT=str(out), RENDER_WORKERS="2", EVALUATORS="1", EVAL_DEVICE="cpu",
               MASTER_HOST="127.0.0.1", PORT=str(free_port()), PYTHONUNBUFFERED="1")
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)


def test_the_slurm_recipe_runs_every_job_once_with_authenticated_workers_and_resumes(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    done = sbatch(tmp_path, config, out)
    assert done.returncode == 0, done.stderr[-3000:]
    got = ids(out)
    assert sorted(got) == sorted(expected_ids(4)) and len(got) == len(set(got))
    assert all(r["status"] == "ok" for r in rows(out))
    # the master bound every interface, so only CURVE keys kept strangers out: they are private to the user
    keys = tmp_path / "run.keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["worker.key"]
    assert "WITHOUT authentication" not in done.stderr
    steps = (tmp_path / "srun.log").read_text().splitlines()
    assert len(steps) == 2 and steps[0].startswith("--ntasks=2 --exact") and " worker --connect " in steps[0]
    assert steps[1].startswith("--ntasks=1 --exact --gpus-per-task=1") and "--device cpu" in steps[1]
    # a requeued or resubmitted job continues the run: nothing is rendered twice, nothing lost
    before = (out / "details.log").read_text()
    again = sbatch(tmp_path, config, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "details.log").read_text() == before
    assert json.loads(again.stdout.strip().splitlines()[-1])["done"] == len(got)
