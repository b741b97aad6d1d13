"""The dashboard in a real headless browser (Playwright driving Debian's Chromium) over real run
directories: heat-map cells against details.log, cell -> grid, sliders, live rows, every tab, the
phone page. Screenshots go to test-artifacts/dashboard/."""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from threedb.dashboard import synthetic
from threedb.dashboard.loader import Run
from threedb.dashboard.server import BackgroundServer, create_app
from threedb.sim.store import RunStore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
ROT = "render_args.OrientationControl.rotation_z"
ZOOM = "render_args.CameraControl.zoom"
BLUR = "render_args.BlurControl.sigma"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    page.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dashboard")
    return (synthetic.make_run(root / "model_a", 80, seed=7, model_seed=1),
            synthetic.make_run(root / "model_b", 80, seed=7, model_seed=2))


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "details.log").read_text().splitlines()]


def ref_bins(values: list) -> callable:
    distinct = sorted(set(values))
    if len(distinct) <= 10:
        return distinct.index
    lo, hi = distinct[0], distinct[-1]
    return lambda v: min(int((v - lo) / (hi - lo) * 10), 9)


def until(page, js: str, timeout: float = 15.0) -> None:
    """Poll a JS expression until truthy (page.wait_for_function evals, which the page's CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {js}")
        time.sleep(0.05)


def open_dashboard(page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("body[data-ready='1']")


def set_mode(page, param: str, mode: str) -> None:
    page.locator(f"input[name='mode-{param}'][value='{mode}']").check()


def grid_ids(page) -> list[str]:
    """Every id in the grid, paging through with the next button."""
    ids = []
    while True:
        until(page, "document.getElementById('grid').dataset.total !== undefined")
        ids += page.eval_on_selector_all("#grid figure", "els => els.map(e => e.dataset.id)")
        if page.locator("#next-page").is_disabled():
            return ids
        first = ids[-1]
        page.click("#next-page")
        until(page, f"document.querySelector('#grid figure') && "
                               f"!Array.from(document.querySelectorAll('#grid figure')).some(e => e.dataset.id === {json.dumps(first)})")


def test_heatmap_cells_slider_and_cell_grid(page, runs):
    run_dir = runs[0]
    rows = rows_of(run_dir)
    xbin = ref_bins([r["render_args"]["OrientationControl.rotation_z"] for r in rows])
    ybin = ref_bins([r["render_args"]["CameraControl.zoom"] for r in rows])
    with BackgroundServer(create_app([Run(run_dir)])) as url:
        open_dashboard(page, url)
        set_mode(page, ROT, "x")
        set_mode(page, ZOOM, "y")
        until(page, "document.querySelectorAll('#heatmap-table td.cell').length === 30")
        cells = page.eval_on_selector_all("#heatmap-table td.cell", """els => els.map(e => ({
            xi: +e.dataset.xi, yi: +e.dataset.yi, n: +e.dataset.n, text: e.firstChild.textContent}))""")
        assert len(cells) == 30
        for c in cells:
            sel = [r for r in rows if r["status"] == "ok" and xbin(r["render_args"]["OrientationControl.rotation_z"]) == c["xi"]
                   and ybin(r["render_args"]["CameraControl.zoom"]) == c["yi"]]
            assert c["n"] == len(sel)
            if sel:
                acc = sum(r["is_correct"] for r in sel) / len(sel)
                assert c["text"] == f"{round(acc * 1000) / 10:g}%", (c, acc)
            else:
                assert c["text"] == "–"
        shot(page, "heatmap")

        # click the fullest cell: the grid shows exactly its renders (all pages), with verdict borders
        target = max(cells, key=lambda c: c["n"])
        page.click(f"#heatmap-table td.cell[data-xi='{target['xi']}'][data-yi='{target['yi']}']")
        page.wait_for_selector("#heatmap-table td.cell.selected")
        want = {r["id"]: r for r in rows if xbin(r["render_args"]["OrientationControl.rotation_z"]) == target["xi"]
                and ybin(r["render_args"]["CameraControl.zoom"]) == target["yi"]}
        until(page, f"+document.getElementById('grid').dataset.total === {len(want)}")
        shot(page, "grid")
        got = grid_ids(page)
        assert sorted(got) == sorted(want)
        page.click("#prev-page") if not page.locator("#prev-page").is_disabled() else None
        figures = page.eval_on_selector_all("#grid figure", """els => els.map(e => ({id: e.dataset.id,
            cls: e.className, pred: e.querySelector('.pred').textContent, truth: e.querySelector('.true').textContent}))""")
        for f in figures:
            r = want[f["id"]]
            expected = "failed" if r["status"] != "ok" else "correct" if r["is_correct"] else "wrong"
            assert expected in f["cls"].split()
            assert f["truth"] == f"true: {r['object_uid']}"
            if r["status"] == "ok":
                assert f["pred"].startswith("pred: " + synthetic.CLASSES[r["prediction"][0]])

        # masks on demand
        page.check("#show-masks")
        page.wait_for_selector("#grid img.mask")

        # a slider fixes one blur value; the heat map pools only those rows
        set_mode(page, BLUR, "slider")
        slider = page.locator(f"input[type=range][data-param='{BLUR}']")
        slider.fill("2")
        slider.dispatch_event("change")
        until(page, "document.getElementById('heatmap-summary').textContent.includes('BlurControl.sigma:2')")
        cells = page.eval_on_selector_all("#heatmap-table td.cell", "els => els.map(e => ({xi: +e.dataset.xi, yi: +e.dataset.yi, n: +e.dataset.n}))")
        for c in cells:
            assert c["n"] == sum(1 for r in rows if r["status"] == "ok" and r["render_args"]["BlurControl.sigma"] == 2
                                 and xbin(r["render_args"]["OrientationControl.rotation_z"]) == c["xi"]
                                 and ybin(r["render_args"]["CameraControl.zoom"]) == c["yi"])
        shot(page, "slider")


def test_live_rows_show_up_without_reload(page, tmp_path):
    run_dir = synthetic.make_run(tmp_path / "live", 12)
    with BackgroundServer(create_app([Run(run_dir)])) as url:
        open_dashboard(page, url)
        set_mode(page, "model", "x")
        set_mode(page, "environment", "aggregate")
        until(page, "document.querySelectorAll('#heatmap-table td.cell').length === 3")
        mug = page.eval_on_selector_all("#heatmap-table thead th", "els => els.map(e => e.textContent)").index("mug.glb") - 1
        before = int(page.get_attribute(f"#heatmap-table td.cell[data-xi='{mug}']", "data-n"))
        synthetic.append_rows(run_dir, range(500, 505), uid="mug", correct=True, seed=9)
        page.wait_for_selector("#live[data-rows='17']", timeout=15000)
        until(page, f"+document.querySelector(\"#heatmap-table td.cell[data-xi='{mug}']\").dataset.n === {before + 5}")
        shot(page, "live")


def test_tabs_failures_objects_environments_surface_compare(page, runs):
    rows = rows_of(runs[0])
    with BackgroundServer(create_app([Run(runs[0], 0), Run(runs[1], 1)])) as url:
        open_dashboard(page, url)
        page.click("button[data-tab=failures]")
        page.wait_for_selector("#failures-table tbody tr")
        uppers = page.eval_on_selector_all("#failures-table tbody td.interval", "els => els.map(e => +e.dataset.hi)")
        assert uppers == sorted(uppers) and len(uppers) == 10   # ranked by the upper end of the Wilson interval
        until(page, "Array.from(document.querySelectorAll('#failures .thumbs img')).every(i => i.complete && i.naturalWidth > 0)")
        shot(page, "failures")

        page.click("button[data-tab=objects]")
        page.wait_for_selector("#objects td[data-model='duck.glb'][data-run='1']")
        ok = [r for r in rows if r["status"] == "ok" and r["model"] == "duck.glb"]
        text = page.text_content("#objects td[data-model='duck.glb'][data-run='0']")
        assert text.endswith(f"({sum(r['is_correct'] for r in ok)}/{len(ok)})")
        assert page.locator("#curves svg").count() == 4 and page.locator("#confusion-table tbody tr").count() == 3
        shot(page, "objects")

        page.click("button[data-tab=environments]")
        page.wait_for_selector("#env-box rect.box")
        page.wait_for_selector("#complexity svg rect")
        shot(page, "environments")

        page.click("button[data-tab=surface]")
        until(page, "(() => { const i = document.querySelector('#surface img'); return i && i.complete && i.naturalWidth === 256; })()")
        shot(page, "surface")

        page.click("button[data-tab=compare]")
        page.select_option("#cmp-param", "model")
        page.wait_for_selector("#compare-table tbody tr")
        assert page.locator("#compare-table tbody tr").count() == 3
        disagree = page.eval_on_selector_all("#disagree figure", "els => els.map(e => e.dataset.id)")
        a = {r["id"]: r for r in rows}
        b = {r["id"]: r for r in rows_of(runs[1])}
        assert disagree and all(a[i]["is_correct"] != b[i]["is_correct"] for i in disagree)
        shot(page, "compare")


def test_detection_boxes_are_drawn(page, tmp_path):
    run_dir = tmp_path / "det"
    rng = np.random.default_rng(0)
    with RunStore(run_dir, output_keys=("is_correct", "iou", "boxes"), output_type="bboxes",
                  class_names=synthetic.CLASSES) as store:
        for i in range(4):
            boxes = np.full((5, 6), -1.0)
            boxes[0] = [0.2, 0.25, 0.7, 0.8, 0.9, 0]
            store.write(synthetic.job(i, rng), {"is_correct": i % 2 == 0, "iou": 0.7, "boxes": boxes},
                        rgb=np.full((32, 32, 3), 90, np.uint8))
    with BackgroundServer(create_app([Run(run_dir)])) as url:
        open_dashboard(page, url)
        page.wait_for_selector("#grid figure svg rect")
        rects = page.eval_on_selector_all("#grid figure:first-child svg rect", "els => els.map(e => [e.getAttribute('x'), e.getAttribute('width')])")
        assert len(rects) == 1 and math.isclose(float(rects[0][0]), 0.2) and math.isclose(float(rects[0][1]), 0.5)
        assert page.text_content("#grid figure:first-child svg title").startswith("mug 0.90")
        shot(page, "detection")


def test_phone_page_without_export_and_unknown_id(page, runs):
    job = rows_of(runs[0])[0]["id"]
    with BackgroundServer(create_app([Run(runs[0])])) as url:
        page.goto(f"{url}/m/0/{job}")
        page.wait_for_selector("body[data-state='missing']")
        assert "no companion export" in page.text_content("#message")
        assert page.locator("#export").is_visible()
        until(page, "document.getElementById('render').naturalWidth > 0")  # the logged render meanwhile
        shot(page, "phone-missing")
        page.goto(f"{url}/m/0/not-a-job")
        page.wait_for_selector("body[data-state='unknown']")
        assert "unknown id" in page.text_content("#message")
