"""Remote workers over CURVE: `threedb keys`, a master bound to a non-loopback address, and
`threedb worker` / `threedb evaluator` processes joining it (real renders, sockets and inference)."""
from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
from pathlib import Path

from run_cli import LiveRun, start_run, threedb
from test_run import expected_ids, ids, rows, write_config


def non_loopback_host() -> tuple[str, str]:
    """(address to bind, address workers connect to): this machine's outward IPv4 address if it has
    one (a UDP 'connect' sends nothing), else all interfaces reached through the loopback."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))
            ip = s.getsockname()[0]
        if not ipaddress.ip_address(ip).is_loopback and ip != "0.0.0.0":
            return ip, ip
    except OSError:
        pass
    return "0.0.0.0", "127.0.0.1"


def keys(tmp: Path, name: str) -> tuple[Path, Path]:
    proc = threedb("keys", str(tmp / name), "--name", name)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return tmp / name / f"{name}.key", tmp / name / f"{name}.key_secret"


def join(role: str, address: str, key: Path, server_key: Path, *extra: str) -> subprocess.Popen:
    return threedb(role, "--connect", address, "--key", str(key), "--server-key", str(server_key), *extra,
                   stderr=subprocess.STDOUT)


def test_remote_curve_workers_and_an_unauthorised_one(tmp_path):
    config = write_config(tmp_path)
    server_pub, server_secret = keys(tmp_path, "server")
    worker_pub, worker_secret = keys(tmp_path, "worker")
    _, rogue_secret = keys(tmp_path, "rogue")
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    shutil.copy(worker_pub, authorized)
    bind, host = non_loopback_host()
    out = tmp_path / "run"
    run = LiveRun(start_run(config, out, "--host", bind, "--key", str(server_secret),
                            "--authorized-keys", str(authorized), "--render-workers", "0", "--evaluators", "0"))
    workers: list[subprocess.Popen] = []
    try:
        port = run.address().rsplit(":", 1)[1]
        address = f"tcp://{host}:{port}"
        # a worker whose key is not authorised: refused at the handshake, it never reaches the master
        # and gives up with one error line
        rogue = join("worker", address, rogue_secret, server_pub, "--master-timeout", "5")
        run.wait_for("refused a connection at the handshake")
        rogue_out, _ = rogue.communicate(timeout=60)
        assert rogue.returncode == 2 and rogue_out.startswith("error: could not send to master"), rogue_out
        assert not (out / "details.log").exists() or not (out / "details.log").read_text()
        # the authorised render worker and evaluator do the whole run
        workers = [join("worker", address, worker_secret, server_pub),
                   join("evaluator", address, worker_secret, server_pub, "--device", "cpu")]
        result = run.finish()
        for w in workers:
            w.wait(timeout=30)
            assert w.returncode == 0, w.stdout.read()[-2000:]
    finally:
        run.kill()
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    got = ids(out)
    assert sorted(got) == sorted(expected_ids(4)) and len(got) == len(set(got))
    assert result["failed"] == 0 and all(r["status"] == "ok" for r in rows(out))


def test_non_loopback_bind_needs_keys_or_insecure(tmp_path):
    config = write_config(tmp_path)
    bind, host = non_loopback_host()
    refused = threedb("run", str(config), "--out", str(tmp_path / "a"), "--host", bind)
    out, err = refused.communicate(timeout=120)
    assert refused.returncode == 2 and out == ""
    assert err.startswith("error: ") and "refusing to bind" in err and "insecure" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # a worker will not connect to a non-loopback address without keys either
    worker = threedb("worker", "--connect", f"tcp://{host}:9")
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 2 and err.startswith("error: ") and "refusing to connect" in err
    # --insecure binds (with a warning) and serves
    run = LiveRun(start_run(config, tmp_path / "b", "--host", bind, "--insecure",
                            "--render-workers", "0", "--evaluators", "0"))
    try:
        assert run.address().startswith("tcp://")
        assert "WITHOUT authentication" in run.stderr
    finally:
        run.kill()
