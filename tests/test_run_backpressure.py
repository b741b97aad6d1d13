"""Back-pressure under load: two render workers and no evaluator until the master holds its limit
of renders awaiting evaluation, then a slow evaluator (run_task_models.SlowNet) joins. The master's
own high-water mark (``max_held`` in the result) must equal the limit, never more, and the run
must complete with every job once (real renders, sockets and inference)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from run_cli import LiveRun, start_run, threedb
from test_run import ids, write_config

REPO = Path(__file__).resolve().parents[1]
BATCH = 2
LIMIT = max(4 * BATCH, 32)     # sim.run.master: renders held for evaluation at most
JOBS_PER_OBJECT = 20


def test_renders_held_never_exceed_the_limit(tmp_path):
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["policy"]["samples_per_dim"] = JOBS_PER_OBJECT
    data["inference"].update({"file": str(REPO / "tests" / "run_task_models.py"), "class": "SlowNet",
                              "batch_size": BATCH})
    del data["inference"]["weights"]
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    run = LiveRun(start_run(config, out, "--render-workers", "2", "--evaluators", "0"))
    evaluator = None
    try:
        address = run.address()
        # the progress line (every 5 s) reports the renders awaiting evaluation; with no evaluator
        # they pile up to the limit, where both render workers are told to wait
        run.wait_for(f"{LIMIT} awaiting evaluation")
        assert not (out / "details.log").exists() or not (out / "details.log").read_text()
        evaluator = threedb("evaluator", "--connect", address, *run.worker_keys(), "--device", "cpu",
                            stderr=subprocess.STDOUT)
        result = run.finish()
        evaluator.wait(timeout=30)
    finally:
        run.kill()
        if evaluator is not None and evaluator.poll() is None:
            evaluator.kill()
            evaluator.wait()
    assert result["max_held"] == LIMIT
    got = ids(out)
    expected = {f"city-{o}-p{i:06d}" for o in ("mug", "duck") for i in range(JOBS_PER_OBJECT)}
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))
    assert result["failed"] == 0 and result["done"] == 2 * JOBS_PER_OBJECT
