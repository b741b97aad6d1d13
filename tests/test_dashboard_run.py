"""The dashboard on a real `threedb run` (Blender renders, ZeroMQ workers, a tiny CNN), opened while the
run is still writing, then the phone page exporting a render through `threedb companion` (Blender re-render)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from threedb.dashboard.loader import Run
from threedb.dashboard.server import BackgroundServer, create_app

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dashboard_browser import CHROMIUM, browser, page, shot, until  # noqa: E402,F401  (fixtures)
from test_run import finish, start, wait_for_lines, write_config  # noqa: E402

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")


def test_live_real_run_heatmap_surface_and_companion_export(tmp_path, page):
    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["render"]["passes"] = ["mask", "uv"]
    data["logging"] = {"extra_passes": ["mask", "uv"]}
    data["policy"]["samples_per_dim"] = 3
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    proc = start(config, out)
    wait_for_lines(out, 1, proc)
    with BackgroundServer(create_app([Run(out)])) as url:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        finish(proc)
        page.wait_for_selector("#live[data-rows='6']", timeout=30000)  # rows arrive without a reload
        rows = [json.loads(line) for line in (out / "details.log").read_text().splitlines()]
        assert len(rows) == 6

        # model x rotation_z heat map against details.log
        page.locator("input[name='mode-model'][value='x']").check()
        page.locator("input[name='mode-render_args.OrientationControl.rotation_z'][value='y']").check()
        until(page, "document.querySelectorAll('#heatmap-table td.cell').length === 6")
        labels = page.eval_on_selector_all("#heatmap-table thead th", "els => els.slice(1).map(e => e.textContent)")
        rots = sorted({r["render_args"]["OrientationControl.rotation_z"] for r in rows})
        cells = page.eval_on_selector_all("#heatmap-table td.cell", "els => els.map(e => [+e.dataset.xi, +e.dataset.yi, +e.dataset.n, +e.dataset.correct])")
        for xi, yi, n, correct in cells:
            sel = [r for r in rows if r["model"] == labels[xi] and r["render_args"]["OrientationControl.rotation_z"] == rots[yi]]
            assert (n, correct) == (len(sel), sum(r["is_correct"] for r in sel))
        # true labels come from the run's class map (classes.json names)
        page.wait_for_selector("#grid figure")
        truths = page.eval_on_selector_all("#grid figure .true", "els => els.map(e => e.textContent)")
        assert set(truths) == {"true: mug", "true: duck"}
        shot(page, "real-run")
        # curves only over parameters that vary (rotation_x/y are fixed in this config)
        curves = page.request.get(url + "/api/runs/0/objects").json()["curves"]
        assert set(curves) == {"render_args.OrientationControl.rotation_z"}

        page.click("button[data-tab=surface]")
        until(page, "(() => { const i = document.querySelector('#surface img'); return i && i.complete && i.naturalWidth === 256; })()")
        shot(page, "real-run-surface")

        # the phone page: no export yet -> export from the page -> render, overlay, pose and USDZ served
        job = rows[0]["id"]
        page.goto(f"{url}/m/0/{job}")
        page.wait_for_selector("body[data-state='missing']")
        page.click("#export")
        page.wait_for_selector("body[data-state='exported']", timeout=120000)
        until(page, "document.getElementById('overlay').naturalWidth === 32 && document.getElementById('render').naturalWidth === 32")
        pose = page.request.get(url + page.get_attribute("#pose-link", "href"))
        assert pose.ok and "K" in json.dumps(pose.json())
        usdz = page.request.get(url + page.get_attribute("#usdz-link", "href"))
        assert usdz.ok and usdz.headers["content-type"] == "model/vnd.usdz+zip" and usdz.body()[:2] == b"PK"
        shot(page, "phone-exported")
