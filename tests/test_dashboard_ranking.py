"""Failure modes ranked with their uncertainty (issue 17): on a quickstart-shaped run (hundreds of small
cells, some at 0 % by chance) the default ranking no longer puts small cells first; every region's
Wilson interval, p-value and Benjamini-Hochberg q-value match a direct computation with scipy."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from starlette.testclient import TestClient

from threedb.dashboard.loader import Run
from threedb.dashboard.server import create_app
from threedb.dashboard.synthetic import make_many_cells_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_many_cells_run(tmp_path_factory.mktemp("ranking") / "run", seed=0)


def reference_regions(run_dir: Path, min_count: int = 5) -> tuple[float, dict]:
    """Every region (one bin, or bins of two parameters) with >= min_count rows, from details.log directly:
    {(params, bins): (n, correct)}, and the overall accuracy."""
    rows = [json.loads(line) for line in (run_dir / "details.log").read_text().splitlines()]
    columns = {"model": [r["model"] for r in rows], "environment": [r["environment"] for r in rows]}
    for key in rows[0]["render_args"]:
        columns["render_args." + key] = [r["render_args"][key] for r in rows]
    codes = {}
    for name, values in columns.items():
        distinct = sorted(set(values))
        if len(distinct) < 2:
            continue
        if isinstance(distinct[0], str) or len(distinct) <= 10:
            codes[name] = [distinct.index(v) for v in values]
        else:
            lo, hi = distinct[0], distinct[-1]
            codes[name] = [min(int((v - lo) / (hi - lo) * 10), 9) for v in values]
    ok = [bool(r["is_correct"]) for r in rows]
    regions: dict = {}
    groups = [(p,) for p in codes] + list(itertools.combinations(codes, 2))
    for params in groups:
        cells: dict = {}
        for k, correct in enumerate(ok):
            key = tuple(codes[p][k] for p in params)
            n, c = cells.get(key, (0, 0))
            cells[key] = (n + 1, c + correct)
        for key, (n, c) in cells.items():
            if n >= min_count:
                regions[(params, key)] = (n, c)
    return sum(ok) / len(ok), regions


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p)
    m = len(p)
    q = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        q[i] = running
    return q


def client(run_dir: Path) -> TestClient:
    return TestClient(create_app([Run(run_dir)]), base_url="http://127.0.0.1")


def test_small_zero_cells_no_longer_crowd_out_the_top(run_dir):
    c = client(run_dir)
    by_accuracy = c.get("/api/runs/0/failures", params={"rank": "accuracy", "top": 10}).json()["modes"]
    # the issue, reproduced with the old ranking: most of the top ten are tiny cells at 0 %
    small = [m for m in by_accuracy if m["n"] <= 13 and m["accuracy"] == 0]
    assert len(small) >= 8
    default = c.get("/api/runs/0/failures", params={"top": 10}).json()
    assert default["rank"] == "wilson"
    modes = default["modes"]
    assert all(m["n"] >= 30 for m in modes), [m["n"] for m in modes]
    # the real weaknesses lead: fog, a zoom below 0.8, or both
    assert all("fog" in m["labels"] or any(p.endswith("zoom_factor") for p in m["params"]) for m in modes)
    uppers = [m["interval"][1] for m in modes]
    assert uppers == sorted(uppers)
    # every small 0 % cell's upper bound is above the tenth region's: none was dropped unfairly
    worst_small = min(m["interval"][1] for m in by_accuracy if m["n"] <= 13)
    assert worst_small > uppers[-1]


@pytest.mark.parametrize("rank", ["wilson", "test"])
def test_intervals_p_and_q_values_match_scipy(run_dir, rank):
    overall, regions = reference_regions(run_dir)
    keys = list(regions)
    n = np.array([regions[k][0] for k in keys])
    c = np.array([regions[k][1] for k in keys])
    p = np.array([stats.binomtest(int(ci), int(ni), overall, alternative="less").pvalue for ni, ci in zip(n, c)])
    q = benjamini_hochberg(p)
    wilson = [stats.binomtest(int(ci), int(ni)).proportion_ci(0.95, method="wilson") for ni, ci in zip(n, c)]
    upper = np.array([w.high for w in wilson])
    data = client(run_dir).get("/api/runs/0/failures", params={"rank": rank, "top": 25}).json()
    assert data["regions"] == len(keys)
    assert data["overall"]["accuracy"] == pytest.approx(overall)
    primary = upper if rank == "wilson" else q
    accuracy = c / n
    expected = sorted(zip(primary, accuracy, -n))[:25]
    got = []
    index = {k: i for i, k in enumerate(keys)}
    for m in data["modes"]:
        i = index[(tuple(m["params"]), tuple(m["bins"]))]
        assert (m["n"], m["correct"]) == (n[i], c[i])
        assert m["interval"] == pytest.approx([wilson[i].low, wilson[i].high], abs=1e-9)
        assert m["p_value"] == pytest.approx(p[i], rel=1e-6, abs=1e-300)
        assert m["q_value"] == pytest.approx(q[i], rel=1e-6, abs=1e-300)
        assert m["significant"] == (q[i] <= 0.05)
        got.append((primary[i], accuracy[i], -n[i]))
    assert np.allclose(np.array(got), np.array(expected))
    if rank == "test":
        assert data["modes"][0]["labels"] == ["fog"]   # the largest real deficit is the surest
