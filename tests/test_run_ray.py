"""``threedb run --cluster ray``: workers placed and supervised by a real two-node Ray cluster on loopback
(a head and a second node started here), frames over the usual authenticated ZeroMQ; killing the second
node mid-run still logs every job exactly once, with the rows of a local run."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from run_cli import finish, start_run
from test_run import expected_ids, ids, wait_for_lines, write_config

pytest.importorskip("ray")

RAY = str(Path(sys.executable).with_name("ray"))
#: a dead node is noticed within a few seconds, not the default half minute
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
               "RAY_health_check_timeout_ms": "1000", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start(*args: str) -> None:
    env = dict(os.environ, **FAST_HEALTH)
    done = subprocess.run([RAY, "start", "--num-cpus", "2", "--object-store-memory", "100000000",
                           "--disable-usage-stats", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def processes_of_node(node_manager_port: int) -> dict[int, str]:
    """The raylet serving ``node_manager_port`` and every process below it (its Ray workers and theirs),
    with their command lines."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    raylet = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cmdlines[int(entry.name)] = cmdline
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "raylet" in cmdline and f"--node_manager_port={node_manager_port}" in cmdline:
            raylet = int(entry.name)
    assert raylet is not None, "the second node's raylet was not found"
    tree, frontier = [raylet], [raylet]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return {pid: cmdlines[pid] for pid in tree}


@pytest.fixture(scope="module")
def cluster():
    port, second_node_port = free_port(), free_port()
    ray_start("--head", "--port", str(port), "--include-dashboard", "false")
    ray_start("--address", f"127.0.0.1:{port}", "--node-manager-port", str(second_node_port))
    try:
        yield f"ray:127.0.0.1:{port}", second_node_port
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    config = write_config(tmp)
    finish(start_run(config, tmp / "run", "--render-workers", "1", "--evaluators", "1",
                     "--set", "policy.samples_per_dim=6"))
    return sorted((tmp / "run" / "details.log").read_text().splitlines())


def ray_run(tmp: Path, address: str) -> subprocess.Popen:
    config = write_config(tmp)
    return start_run(config, tmp / "run", "--cluster", address, "--render-workers", "2", "--evaluators", "1",
                     "--device", "cpu", "--set", "policy.samples_per_dim=6")


def test_a_ray_run_logs_every_job_once_with_a_local_runs_rows(tmp_path, cluster, local_rows):
    result = finish(ray_run(tmp_path, cluster[0]), timeout=240)
    got = ids(tmp_path / "run")
    assert sorted(got) == sorted(expected_ids(6)) and len(got) == len(set(got)) and result["failed"] == 0
    assert sorted((tmp_path / "run" / "details.log").read_text().splitlines()) == local_rows


def test_a_node_lost_mid_run_still_logs_every_job_exactly_once(tmp_path, cluster, local_rows):
    address, second_node_port = cluster
    proc = ray_run(tmp_path, address)
    try:
        wait_for_lines(tmp_path / "run", 2, proc, timeout=180)
        node = processes_of_node(second_node_port)
        # SPREAD placed a render worker there (the evaluator prefers the master's node)
        assert any("threedb.sim.run.render_worker" in cmd for cmd in node.values()), node
        for pid in node:   # the node goes down with everything on it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        result = finish(proc, timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    got = ids(tmp_path / "run")
    assert sorted(got) == sorted(expected_ids(6)) and len(got) == len(set(got)) and result["failed"] == 0
    assert sorted((tmp_path / "run" / "details.log").read_text().splitlines()) == local_rows
