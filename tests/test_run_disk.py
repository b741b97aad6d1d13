"""A full disk or a read-only run directory ends `threedb run` with one `error:` line naming the path and
the cause (exit status 2), and what was recorded survives: `--resume` completes the run (issue 16)."""
from __future__ import annotations

import errno
import os
import subprocess
import uuid

import numpy as np
import pytest
from run_cli import finish, start_run
from test_run import expected_ids, ids, write_config

from threedb.sim.store import ResultsError, RunStore

STORE = dict(output_keys=("prediction", "is_correct"), output_type="classes", class_names=["a", "b"])
JOB = {"id": "j0", "environment": {"name": "city", "file": "city.exr"}, "object": {"uid": "mug", "file": "mug.obj"},
       "controls": [], "seed": 0}


def test_a_failed_write_is_one_clear_error_and_leaves_whole_rows(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "run", **STORE)
    store.write(dict(JOB), {"prediction": [0], "is_correct": True}, rgb=np.zeros((4, 4, 3), np.uint8))
    real_write = os.write

    def full(fd, data):   # half the line goes out, then the disk is full
        real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(ResultsError, match=r"cannot record job j1: .*details.log: No space left on device \(ENOSPC\)"):
        store.write(dict(JOB, id="j1"), {"prediction": [1], "is_correct": False}, rgb=None)
    monkeypatch.setattr(os, "write", real_write)
    store.close()
    lines = (tmp_path / "run" / "details.log").read_text().splitlines()
    assert len(lines) == 1 and '"id": "j0"' in lines[0]
    assert not list((tmp_path / "run" / "images").glob(".tmp-*"))


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs at ``tmp_path/fs`` (needs mount rights: root here; skipped elsewhere)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", f"threedb-{uuid.uuid4().hex[:8]}", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def run_error(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=240)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_a_full_disk_then_resume(tmp_path, small_fs):
    config = write_config(tmp_path)
    out = small_fs / "run"
    filler = small_fs / "filler"
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    filler.write_bytes(b"\0" * (free - 32 * 1024))   # room (4 KiB pages) for the set-up and a few rows and images
    line = run_error(start_run(config, out, "--render-workers", "1", "--evaluators", "1"))
    assert "No space left on device (ENOSPC)" in line and str(small_fs) in line
    before = ids(out) if (out / "details.log").exists() else []
    assert 1 <= len(before) < 8, line   # it failed recording rows, not setting up
    filler.unlink()
    finish(start_run(config, out, "--render-workers", "1", "--evaluators", "1", "--resume"))
    after = ids(out)
    assert after[:len(before)] == before
    assert sorted(after) == sorted(expected_ids(4)) and len(after) == len(set(after))


def test_a_read_only_run_directory(tmp_path, small_fs):
    config = write_config(tmp_path)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    line = run_error(start_run(config, small_fs / "run", "--render-workers", "1", "--evaluators", "1"))
    assert "Read-only file system (EROFS)" in line and str(small_fs) in line
