"""Dashboard load: time to first heat map and memory, for synthetic runs of 10k and 100k rows.

For each size, a synthetic run directory is written (threedb.dashboard.synthetic, rows only), then a
fresh process measures, over real HTTP:

- *first heat map*: server start (read details.log, build the app, bind the socket) + the requests
  the page makes before it can draw (GET /api/runs, /params, /heatmap with two axes);
- a second heat map on other axes (warm), the grid's first page for one cell, and failure modes;
- *live*: seconds until 1,000 rows appended to details.log show up in /api/runs;
- resident memory (RSS) of the server process before and after loading, and its peak (before the live step).

    python benchmarks/dashboard_load.py [--sizes 10000 100000]
"""
from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any


def rss() -> int:
    """Resident memory of this process in bytes (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def get(url: str, params: Any = None) -> Any:
    """GET a JSON endpoint (real HTTP over the socket)."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(url + query, timeout=600) as response:
        return json.loads(response.read())


def measure(run_dir: str, queue: mp.Queue) -> None:
    from threedb.dashboard.loader import Run
    from threedb.dashboard.server import BackgroundServer, create_app

    rss_before = rss()
    t0 = time.perf_counter()
    run = Run(run_dir)
    load_s = time.perf_counter() - t0
    rows = len(run)
    with BackgroundServer(create_app([run])) as url:
        get(f"{url}/api/runs")
        get(f"{url}/api/runs/0/params")
        get(f"{url}/api/runs/0/heatmap", {"x": "render_args.OrientationControl.rotation_z",
                                          "y": "render_args.CameraControl.zoom"})
        first_s = time.perf_counter() - t0
        t = time.perf_counter()
        get(f"{url}/api/runs/0/heatmap", {"x": "model", "y": "render_args.BlurControl.sigma"})
        warm_s = time.perf_counter() - t
        t = time.perf_counter()
        get(f"{url}/api/runs/0/select", [("filter", "model:0"), ("filter", "render_args.BlurControl.sigma:1")])
        grid_s = time.perf_counter() - t
        t = time.perf_counter()
        get(f"{url}/api/runs/0/failures")
        failures_s = time.perf_counter() - t
        rss_loaded = rss()
        # live: append 1,000 rows (copies of existing lines with new ids) and wait for them
        peak_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        with open(Path(run_dir, "details.log")) as handle:
            lines = list(itertools.islice(handle, 1000))
        extra = []
        for k, line in enumerate(lines):
            row = json.loads(line)
            row["id"] = f"live-{k:06d}"
            extra.append(json.dumps(row))
        n0 = get(f"{url}/api/runs")["runs"][0]["rows"]
        t = time.perf_counter()
        with open(Path(run_dir, "details.log"), "a") as handle:
            handle.write("\n".join(extra) + "\n")
        while get(f"{url}/api/runs")["runs"][0]["rows"] < n0 + len(extra):
            time.sleep(0.005)
        live_s = time.perf_counter() - t
    queue.put({"rows": rows, "load_s": load_s, "first_heatmap_s": first_s, "warm_heatmap_s": warm_s,
               "grid_page_s": grid_s, "failure_modes_s": failures_s, "live_1000_rows_s": live_s,
               "rss_base_mb": rss_before / 2**20, "rss_loaded_mb": rss_loaded / 2**20,
               "peak_rss_mb": peak_loaded})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()

    from threedb.dashboard.synthetic import make_run

    ctx = mp.get_context("spawn")
    print(f"{'rows':>8} {'details.log':>12} {'load':>7} {'1st heat map':>13} {'warm heat map':>14} "
          f"{'grid page':>10} {'failures':>9} {'live +1k':>9} {'RSS base':>9} {'RSS loaded':>11} {'peak RSS':>9}")
    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="threedb-dash-bench-"))
        try:
            make_run(root / "run", n, with_images=False, fast=True)
            size_mb = (root / "run" / "details.log").stat().st_size / 2**20
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(str(root / "run"), queue))
            proc.start()
            r = queue.get(timeout=1800)
            proc.join()
            print(f"{r['rows']:>8} {size_mb:>9.1f} MB {r['load_s']:>6.2f}s {r['first_heatmap_s']:>12.2f}s "
                  f"{r['warm_heatmap_s']:>13.3f}s {r['grid_page_s']:>9.3f}s {r['failure_modes_s']:>8.2f}s "
                  f"{r['live_1000_rows_s']:>8.3f}s {r['rss_base_mb']:>6.0f} MB {r['rss_loaded_mb']:>8.0f} MB "
                  f"{r['peak_rss_mb']:>6.0f} MB", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
