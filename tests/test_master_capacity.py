"""The master-capacity benchmark's synthetic workers against a real master, at tiny scale: every job recorded
exactly once. No timing is asserted here (benchmarks/master_capacity.py measures, docs/scaling.md reports)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from run_cli import LiveRun, start_run

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import master_capacity  # noqa: E402  (benchmarks/master_capacity.py)

pytestmark = pytest.mark.timeout(180)

JOBS = 20   # 2 objects x 10 random proposals


def expected_ids() -> set[str]:
    return {f"city-{obj}-p{i:06d}" for obj in ("mug", "duck") for i in range(JOBS // 2)}


def logged(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "details.log").read_text().splitlines()]


def synthetic(role: str, address: str, keys: list[str], report: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(BENCH / "synthetic_workers.py"), role, "--connect", address,
                             *keys, "--report", str(report), "--master-timeout", "60", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_synthetic_workers_join_threedb_run_and_every_job_is_recorded_once(tmp_path):
    """`threedb run --render-workers 0 --evaluators 0` (per-run CURVE keys on loopback) served by two synthetic
    render workers (224 px rgb plus the mask pass the run keeps) and one synthetic evaluator joining with the
    run's keys, as external workers do."""
    config = master_capacity.write_config(tmp_path / "cfg", resolution=224, jobs=JOBS, batch_size=4,
                                          policy="random", passes=("mask",))
    out = tmp_path / "run"
    run = LiveRun(start_run(config, out, "--render-workers", "0", "--evaluators", "0"))
    workers: list[subprocess.Popen] = []
    try:
        address, keys = run.address(), run.worker_keys()
        assert keys[0] == "--key" and keys[2] == "--server-key"
        workers = [synthetic("render", address, keys, tmp_path / "render.json", "--count", "2"),
                   synthetic("evaluator", address, keys, tmp_path / "eval.json")]
        result = run.finish(timeout=150)
    except BaseException:
        run.kill()
        raise
    finally:
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert all(p.returncode == 0 for p in workers), [p.stdout.read()[-2000:] for p in workers]
    assert result["done"] == JOBS and result["failed"] == 0
    assert result["dropped"] == result["rejected"] == result["throttled"] == 0
    rows = logged(out)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == JOBS and set(ids) == expected_ids()
    assert all(r["status"] == "ok" and isinstance(r["is_correct"], bool) and len(r["prediction"]) == 1
               for r in rows)
    for job_id in ids:   # the frames the master relayed reached the store: rgb and the kept pass
        assert (out / "images" / f"{job_id}_rgb.png").is_file()
        assert (out / "images" / f"{job_id}_mask.png").is_file()
    render = json.loads((tmp_path / "render.json").read_text())
    evaluator = json.loads((tmp_path / "eval.json").read_text())
    assert len(render) == 2 and not any(r["error"] for r in render + evaluator)
    assert sum(r["jobs"] for r in render) == JOBS                # each job rendered once
    assert evaluator[0]["jobs"] == JOBS and evaluator[0]["bad_frames"] == 0


def test_benchmark_harness_runs_to_completion(tmp_path):
    """The benchmark's own harness (an in-process Master in its measuring host, the start barrier, /proc CPU
    sampling) on a run small enough to finish before its window closes: every job once."""
    config = master_capacity.write_config(tmp_path / "cfg", resolution=8, jobs=JOBS, batch_size=4, policy="random")
    point = master_capacity.pipeline_point(tmp_path, config, 3, seconds=30, warmup=0.0, procs=2, batch_size=4,
                                           run_root=tmp_path / "runs", label="smoke", timeout=150)
    assert not point["aborted"] and point["result"]["done"] == JOBS and point["result"]["failed"] == 0
    assert point["logged"] == JOBS and point["duplicates"] == 0 and not point["worker_errors"]
    assert {r["id"] for r in logged(Path(point["run_dir"]))} == expected_ids()
    assert point["window"]["jobs"] >= 1 and point["throttled"] == point["dropped"] == 0
