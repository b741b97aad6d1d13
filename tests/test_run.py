"""End-to-end runs: real Blender renders (32 px, 1 sample), real sockets, a tiny CNN on the CPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from run_cli import finish, start_run

REPO = Path(__file__).resolve().parents[1]


def write_config(tmp: Path, *, fail_control: bool = False) -> Path:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_net import TinyNet

    torch.manual_seed(0)
    torch.save(TinyNet().state_dict(), tmp / "tiny.pt")
    (tmp / "classes.json").write_text(json.dumps(["mug", "duck", "other"]))
    (tmp / "map.json").write_text(json.dumps({"mug": 0, "duck": 1}))
    controls: list = [{"type": "orientation", "rotation_z": [-3.0, 3.0]}]
    if fail_control:
        controls.append({"file": str(REPO / "tests" / "plugins" / "always_fails.py"), "fail": [0, 1]})
    config = {
        "seed": 0,
        "assets": {"root": "default", "objects": ["mug", "duck"], "environments": ["city"]},
        "render": {"resolution": 32, "samples": 1, "passes": ["mask"], "threads": 1},
        "controls": controls,
        "policy": {"type": "grid", "samples_per_dim": 2 if fail_control else 4},
        "inference": {"file": str(REPO / "tests" / "tiny_net.py"), "class": "TinyNet", "weights": "tiny.pt",
                      "resolution": [32, 32], "label_map": "classes.json", "device": "cpu",
                      "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        "evaluation": {"type": "classification", "args": {"classmap_path": "map.json"}},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


start = start_run   # ``threedb run CONFIG --out OUT --lease-timeout 3 EXTRA...`` (tests/run_cli.py)


def ids(run_dir: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (run_dir / "details.log").read_text().splitlines()]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "details.log").read_text().splitlines()]


def expected_ids(n: int) -> set[str]:
    return {f"city-{obj}-p{i:06d}" for obj in ("mug", "duck") for i in range(n)}


def wait_for_lines(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    path = run_dir / "details.log"
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    pytest.fail("no progress")


def test_run_two_workers_rejects_pickle(tmp_path):
    import pickle

    import zmq

    config = write_config(tmp_path)
    out = tmp_path / "run"
    proc = start(config, out, "--render-workers", "2", "--evaluators", "1", "--no-local-auth")
    # find the master's port in its first stderr line, then throw a pickle at it (no keys: the
    # transport's own checks, which stand behind the authentication, refuse it)
    line = proc.stderr.readline()
    address = line.split("master at ")[1].split(";")[0]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    sock.send(pickle.dumps({"type": "hello", "wid": "evil", "role": "render"}))
    result = finish(proc)
    sock.close()
    ctx.term()
    got = ids(out)
    assert sorted(got) == sorted(expected_ids(4)) and len(got) == len(set(got)) == 8
    assert result["rejected"] >= 1 and result["failed"] == 0
    assert all(r["status"] == "ok" and r["prediction"] for r in rows(out))
    assert len(list((out / "images").glob("*_rgb.png"))) == 8
    assert result["summary"]["overall"]["jobs"] == 8


def test_killed_render_worker_jobs_reissued(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    proc = start(config, out, "--render-workers", "2", "--evaluators", "1")
    wait_for_lines(out, 1, proc)
    workers = subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "threedb.sim.run.render_worker"],
                             capture_output=True, text=True).stdout.split()
    assert workers
    os.kill(int(workers[0]), signal.SIGKILL)
    finish(proc)
    got = ids(out)
    assert sorted(got) == sorted(expected_ids(4)) and len(got) == len(set(got))


def fail_value(row: dict) -> int:
    return row["render_args"]["AlwaysFails.fail"]  # a file plugin's parameters are keyed by its class too


def test_failing_control_recorded(tmp_path):
    config = write_config(tmp_path, fail_control=True)
    out = tmp_path / "run"
    result = finish(start(config, out, "--render-workers", "1", "--evaluators", "1"))
    by_id = {r["id"]: r for r in rows(out)}
    assert set(by_id) == expected_ids(4)
    failed = {i for i, r in by_id.items() if r["status"] == "failed"}
    assert failed == {i for i, r in by_id.items() if fail_value(r) == 1}
    assert len(failed) == 4 == result["failed"]
    assert all("fail=1" in by_id[i]["error"] for i in failed)


def test_resume_after_killing_the_run(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "run"
    proc = start(config, out, "--render-workers", "1", "--evaluators", "1")
    wait_for_lines(out, 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = ids(out)
    assert 3 <= len(before) < 8
    result = finish(start(config, out, "--render-workers", "1", "--evaluators", "1", "--resume"))
    after = ids(out)
    assert after[:len(before)] == before
    assert sorted(after) == sorted(expected_ids(4)) and len(after) == len(set(after))
    assert result["replayed"] == len(before)


def test_render_only_run_logs_every_job(tmp_path):
    """Without inference:/evaluation: a run only renders and logs (how training sets are made)."""
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    del data["inference"], data["evaluation"]
    data["logging"] = {"extra_passes": ["mask"]}
    config.write_text(yaml.safe_dump(data))
    result = finish(start(config, tmp_path / "run"))
    assert result["done"] == 8 and result["failed"] == 0
    logged = rows(tmp_path / "run")
    assert sorted(r["id"] for r in logged) == sorted(expected_ids(4))
    assert all("is_correct" not in r and r["status"] == "ok" for r in logged)
    assert json.loads((tmp_path / "run" / "class_maps.json").read_text()) == ["mug", "duck"]
    for r in logged:
        assert (tmp_path / "run" / "images" / f"{r['id']}_rgb.png").is_file()
        assert (tmp_path / "run" / "images" / f"{r['id']}_mask.png").is_file()
    # a fresh run into that directory is refused with one error naming the CLI's --resume; nothing is lost
    proc = start(config, tmp_path / "run")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err
    assert err.count("error:") == 1 and "--resume" in err
    assert rows(tmp_path / "run") == logged


def test_inference_without_evaluation_is_a_config_error(tmp_path):
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    del data["evaluation"]
    config.write_text(yaml.safe_dump(data))
    proc = start(config, tmp_path / "run")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "evaluation" in err and "inference" in err and "Traceback" not in err


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_the_run_like_ctrl_c(tmp_path, signum):
    """Signalled alone (not its process group), the master stops its workers and exits; --resume completes."""
    config = write_config(tmp_path)
    out = tmp_path / "run"
    proc = start(config, out, "--render-workers", "1", "--evaluators", "1")
    wait_for_lines(out, 2, proc)
    workers = _descendants(proc.pid)
    assert workers, "the master has worker processes"
    os.kill(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the run did not stop on {signal.Signals(signum).name}: {proc.communicate()[1][-2000:]}")
    assert proc.returncode == 128 + signum and "Traceback" not in err
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "workers outlived the master"
    before = ids(out)
    finish(start(config, out, "--render-workers", "1", "--evaluators", "1", "--resume"))
    after = ids(out)
    assert after[:len(before)] == before and sorted(after) == sorted(expected_ids(4))
