"""Issue 17's dashboard items in a real headless browser (Playwright + Debian's Chromium, fixtures of
test_dashboard_browser): hostile log lines, refused files, decompression bombs, the failure-mode
ranking and its control, and texts that say what is missing. Screenshots go to test-artifacts/dashboard/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_dashboard_browser import CHROMIUM, browser, open_dashboard, page, shot  # noqa: F401  (fixtures)
from test_dashboard_hostile import BAD_VALUES, ODD, SKIPPED, append, png_bomb, write_config
from threedb.dashboard import synthetic
from threedb.dashboard.loader import Run
from threedb.dashboard.server import BackgroundServer, create_app

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")
TABS = ["failures", "objects", "environments", "surface", "compare", "explore"]


def ids_of(run_dir: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (run_dir / "details.log").read_text().splitlines()]


def visit_every_tab(page) -> None:
    """Each tab draws its content and the page shows no error."""
    for tab in TABS:
        page.click(f"button[data-tab={tab}]")
        selector = {"failures": "#failures-table tbody tr", "objects": "#objects tbody tr", "environments": "#complexity svg",
                    "surface": "#surface img, #surface p", "compare": "#compare p", "explore": "#heatmap-table td.cell"}[tab]
        page.wait_for_selector(selector)
        assert page.locator("#error").is_hidden(), page.text_content("#error")


def test_hostile_log_lines_are_counted_and_every_tab_draws(page, tmp_path):
    run_dir = synthetic.make_run(tmp_path / "run", 30)
    append(run_dir, [SKIPPED[0][0], BAD_VALUES[0]])   # at start: one line too deep, one prediction [Infinity]
    with BackgroundServer(create_app([Run(run_dir), Run(run_dir, 1)])) as url:
        open_dashboard(page, url)
        live = page.text_content("#live")
        assert "31 rows" in live and "1 corrupt line skipped (1 nested too deep)" in live
        assert "1 row with NaN/Infinity values (treated as missing)" in live
        visit_every_tab(page)
        # appended while the page is open: the view goes on, the counts follow
        append(run_dir, [line for line, _ in SKIPPED[1:]] + BAD_VALUES[1:] + ODD)
        rows = 31 + len(BAD_VALUES) - 1 + len(ODD)
        page.wait_for_selector(f"#live[data-rows='{rows}']", timeout=15000)
        assert page.get_attribute("#live", "data-skipped") == str(len(SKIPPED))
        assert page.get_attribute("#live", "data-bad-values") == str(len(BAD_VALUES))
        assert f"{len(SKIPPED)} corrupt lines skipped (" in page.text_content("#live")
        visit_every_tab(page)
        shot(page, "hostile-log")


def test_refused_images_say_why_in_the_grid(page, tmp_path):
    run_dir = synthetic.make_run(tmp_path / "run", 6)
    first, second = ids_of(run_dir)[:2]
    secret = tmp_path / "secret.png"
    secret.write_bytes((run_dir / "images" / f"{second}_rgb.png").read_bytes())
    (run_dir / "images" / f"{first}_rgb.png").unlink()
    (run_dir / "images" / f"{first}_rgb.png").symlink_to(secret)
    (run_dir / "images" / f"{second}_rgb.png").write_bytes(png_bomb(30000, 30000))
    with BackgroundServer(create_app([Run(run_dir)])) as url:
        open_dashboard(page, url)
        status = page.evaluate(f"fetch('/api/runs/0/images/{first}/rgb').then(r => r.status)")
        assert status == 403
        page.wait_for_selector(f"#grid figure[data-id='{second}'] .refused")
        assert "30000 x 30000 pixels" in page.text_content(f"#grid figure[data-id='{second}'] .refused")
        assert page.locator(f"#grid figure[data-id='{first}'] img").count() == 0   # the link is not offered
        assert "no image logged" in page.text_content(f"#grid figure[data-id='{first}'] .frame")
        page.click("button[data-tab=environments]")
        page.wait_for_selector("#complexity svg")
        hint = page.text_content("#complexity-measure")
        assert "images left out: " in hint and "1 over the size limit" in hint and "1 outside the run directory" in hint
        shot(page, "refused-images")


def test_failure_ranking_control(page, tmp_path):
    run_dir = synthetic.make_many_cells_run(tmp_path / "run")
    with BackgroundServer(create_app([Run(run_dir)])) as url:
        open_dashboard(page, url)
        page.click("button[data-tab=failures]")
        page.wait_for_selector("#failures-table[data-rank='wilson'] tbody tr")
        assert page.input_value("#rank") == "wilson"
        api = page.evaluate("fetch('/api/runs/0/failures?min_count=5&rank=wilson').then(r => r.json())")
        rows = page.eval_on_selector_all("#failures-table tbody tr", """els => els.map(e => ({n: +e.dataset.n,
            lo: +e.querySelector('td.interval').dataset.lo, hi: +e.querySelector('td.interval').dataset.hi,
            text: e.querySelector('td.interval').textContent, q: e.querySelector('td.q').textContent}))""")
        assert [(r["n"], r["lo"], r["hi"]) for r in rows] == [(m["n"], *m["interval"]) for m in api["modes"]]
        assert all(r["n"] >= 30 for r in rows)
        lo, hi = api["modes"][0]["interval"]
        assert rows[0]["text"].endswith(f"{round(lo * 1000) / 10:g}%–{round(hi * 1000) / 10:g}%")
        assert "Wilson" in page.text_content("#failures-hint")
        shot(page, "failures-wilson")
        page.select_option("#rank", "accuracy")
        page.wait_for_selector("#failures-table[data-rank='accuracy'] tbody tr")
        small = page.eval_on_selector_all("#failures-table tbody tr", "els => els.filter(e => +e.dataset.n <= 13).length")
        assert small >= 8
        page.select_option("#rank", "test")
        page.wait_for_selector("#failures-table[data-rank='test'] tbody tr")
        first = page.text_content("#failures-table tbody tr:first-child td:nth-child(3)")
        assert first.endswith("∈ fog")
        qs = page.eval_on_selector_all("#failures-table tbody td.q", "els => els.map(e => parseFloat(e.textContent))")
        assert qs == sorted(qs) and page.locator("#failures-table tbody tr.significant").count() == len(qs)
        shot(page, "failures-test")


def test_surface_and_complexity_texts_and_readable_box_plot_labels(page, tmp_path):
    run_dir = synthetic.make_run(tmp_path / "run", 12)
    for f in [*(run_dir / "images").glob("*_uv.exr"), *(run_dir / "images").glob("*_mask.png")]:
        f.unlink()
    write_config(run_dir, ["depth", "mask", "uv"], [])
    # many environments with long names, as a real asset pack has
    rows = [json.loads(line) for line in (run_dir / "details.log").read_text().splitlines()]
    lines = []
    for k in range(14):
        for j, r in enumerate(rows[:3]):
            lines.append(json.dumps({**r, "id": f"env{k}-{j}", "environment": f"studio_small_{k:02d}_with_a_long_name_4k.exr",
                                     "is_correct": (k + j) % 3 != 0}))
    append(run_dir, lines)
    with BackgroundServer(create_app([Run(run_dir)])) as url:
        open_dashboard(page, url)
        page.click("button[data-tab=surface]")
        page.wait_for_selector("#surface-missing")
        text = page.text_content("#surface-missing")
        assert "uv was rendered (render.passes) but not kept" in text and "logging.extra_passes" in text
        assert "render.passes needs uv" not in text
        page.click("button[data-tab=environments]")
        page.wait_for_selector("#complexity svg")
        measure = page.text_content("#complexity-measure")
        assert "over the whole image (no object masks logged" in measure and "outside the object mask" not in measure
        labels = page.eval_on_selector_all("#env-box text.group-label", """els => els.map(e => {
            const b = e.getBoundingClientRect(), s = e.ownerSVGElement.getBoundingClientRect();
            return {x0: b.left, x1: b.right, y0: b.top, y1: b.bottom, sx0: s.left, sx1: s.right, sy0: s.top, sy1: s.bottom,
                    title: e.querySelector('title').textContent, text: e.lastChild.textContent}; })""")
        assert len(labels) == 16
        for a, b in zip(labels, labels[1:]):
            assert a["x1"] <= b["x0"] or b["x1"] <= a["x0"] or a["y1"] <= b["y0"] or b["y1"] <= a["y0"], (a, b)
        for label in labels:
            assert label["sx0"] <= label["x0"] and label["x1"] <= label["sx1"] + 0.5
            assert label["sy0"] <= label["y0"] and label["y1"] <= label["sy1"] + 0.5
            assert label["title"].startswith(label["text"].split("…")[0].split(" (")[0])
        assert any(l["title"].startswith("studio_small_13_with_a_long_name_4k.exr (") for l in labels)
        shot(page, "environments-long-names")
