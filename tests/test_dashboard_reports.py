"""The dashboard's Robustness tab over real report directories (report.json written by the jobs' own
report writer, real matplotlib PNG + SVG plots): the API, refused paths (traversal, absolute, symlink
escape), malformed reports, reports re-read while serving, the CLI, and the tab in a real browser
(Playwright driving Debian's Chromium; screenshot test-artifacts/dashboard/robustness.png)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from test_dashboard_browser import until  # polls a JS expression (the page's CSP forbids wait_for_function)
from threedb.dashboard import synthetic
from threedb.dashboard.cli import open_dirs
from threedb.dashboard.loader import Run
from threedb.dashboard.reports import Report, ReportError, is_report_dir
from threedb.dashboard.server import BackgroundServer, create_app
from threedb.evaluators.jobs.plots import bar_chart, save_figure
from threedb.evaluators.jobs.report import new_report, table

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "dashboard"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_report(out: Path, *, job: str, headline: dict[str, float], title: str | None = None,
                 plots: list[dict] | None = None, images: list[dict] | None = None) -> dict:
    """A report directory as a job writes it: a bar chart (PNG + SVG), an image, report.json."""
    out.mkdir(parents=True, exist_ok=True)
    bars = {k: v for k, v in headline.items() if 0 <= v <= 1}
    if plots is None:
        plots = [save_figure(bar_chart(bars, ylabel="accuracy", title=f"{job} accuracy"), out, "accuracy",
                             f"{job}: accuracy")]
    if images is None:
        bar_chart(bars, ylabel="accuracy", title="grid").savefig(out / "grid.png", dpi=60)
        images = [{"title": "clean vs adversarial", "png": "grid.png"}]
    report = new_report(job=job, title=title or f"{job} on quickstart_heldout", seed=0, device="cpu",
                        config={"seed": 0}, dataset={"root": "assets/datasets/quickstart_heldout", "size": 40},
                        model={"source": "assets/models/quickstart"}, headline=headline, seconds=1.5, examples=40,
                        summary=[f"{job}: 40 examples", "wrote report.json"],
                        tables=[table("per attack", ["attack", "robust accuracy"], [["pgd", 0.25], ["fgsm", 0.5]])],
                        plots=plots, images=images)
    (out / "report.json").write_text(json.dumps(report))
    return report


@pytest.fixture
def two_reports(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "attack_out", tmp_path / "certify_out"
    write_report(a, job="attack", headline={"examples": 40, "clean_accuracy": 0.925, "robust_accuracy": 0.25,
                                            "mean_norm.pgd": float("nan")})
    write_report(b, job="certify", headline={"examples": 40, "clean_accuracy": 0.9, "certified_accuracy": 0.6,
                                             "radius_mean": 0.31})
    return a, b


def client(runs=(), reports=()) -> TestClient:
    app = create_app([Run(p, index=i) for i, p in enumerate(runs)],
                     reports=[Report(p, index=i) for i, p in enumerate(reports)])
    return TestClient(app, base_url="http://127.0.0.1")


def test_list_report_and_files(two_reports, tmp_path):
    run_dir = synthetic.make_run(tmp_path / "run", 12)
    c = client([run_dir], two_reports)
    listed = c.get("/api/reports").json()["reports"]
    assert [(r["index"], r["job"], r["name"], r["state"]) for r in listed] == [
        (0, "attack", "attack_out", "ready"), (1, "certify", "certify_out", "ready")]
    assert listed[1]["headline"] == {"examples": 40, "clean_accuracy": 0.9, "certified_accuracy": 0.6,
                                     "radius_mean": 0.31}
    assert listed[0]["headline"]["mean_norm.pgd"] is None          # NaN in report.json -> JSON null
    assert listed[0]["title"] == "attack on quickstart_heldout" and listed[0]["created"]
    assert c.get("/api/runs").json()["runs"][0]["rows"] == 12     # runs still served beside

    full = c.get("/api/reports/0").json()
    on_disk = json.loads((two_reports[0] / "report.json").read_text())
    assert full["tables"] == on_disk["tables"] and full["summary"] == on_disk["summary"]
    assert full["config"] == on_disk["config"] and full["problems"] == []
    assert full["plots"] == [{"title": "attack: accuracy", "png": 0, "svg": 1}]
    assert full["images"] == [{"title": "clean vs adversarial", "png": 2}]

    png = c.get("/api/reports/0/files/0")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_MAGIC)
    assert png.content == (two_reports[0] / "plots" / "accuracy.png").read_bytes()
    svg = c.get("/api/reports/0/files/1")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    assert "sandbox" in svg.headers.get_list("content-security-policy")
    assert c.get("/api/reports/0/files/2").content == (two_reports[0] / "grid.png").read_bytes()
    for url in ("/api/reports/0/files/3", "/api/reports/2", "/api/reports/5/files/0"):
        response = c.get(url)
        assert response.status_code == 404 and "error" in response.json()


def test_reports_only_dashboard(two_reports):
    c = client(reports=two_reports)
    assert c.get("/api/runs").json() == {"runs": []}
    assert len(c.get("/api/reports").json()["reports"]) == 2
    page = c.get("/")
    assert page.status_code == 200 and "tab-robustness" in page.text
    assert c.get("/static/reports.js").status_code == 200


def test_listed_files_outside_the_report_are_refused(tmp_path):
    secret = tmp_path / "secret.png"
    save_figure(bar_chart({"x": 0.5}, ylabel="y", title="secret"), tmp_path, "secret", "secret", folder=".")
    out = tmp_path / "report"
    write_report(out, job="attack", headline={"robust_accuracy": 0.5})  # makes plots/accuracy.png
    (out / "link.png").symlink_to(secret)
    (out / "plots" / "notes.txt").write_text("not an image")
    attempts = ["../secret.png", str(secret), "link.png", "plots/../../secret.png", "plots/notes.txt",
                "plots/missing.png", "..\\secret.png"]
    plots = [{"title": f"attempt {i}", "png": p, "svg": None} for i, p in enumerate(attempts)]
    plots.append({"title": "fine", "png": "plots/accuracy.png", "svg": "plots/accuracy.svg"})
    write_report(out, job="attack", headline={"robust_accuracy": 0.5}, plots=plots,
                 images=[{"title": "escape", "png": "link.png"}])
    report = Report(out)
    assert [f.listed for f in report.files] == ["plots/accuracy.png", "plots/accuracy.svg"]
    assert len(report.problems) == len(attempts) + 1
    assert all(str(out / "report.json") in p for p in report.problems)
    assert any("outside the report directory" in p for p in report.problems)
    assert any("absolute" in p for p in report.problems)

    c = client(reports=[out])
    full = c.get("/api/reports/0").json()
    assert [p["png"] for p in full["plots"]] == [None] * len(attempts) + [0]
    assert full["images"] == [{"title": "escape", "png": None}]
    secret_bytes = secret.read_bytes()
    served = [c.get(f"/api/reports/0/files/{k}") for k in range(-1, 12)]
    assert [r.status_code for r in served] == [404, 200, 200] + [404] * 10
    assert all(r.content != secret_bytes for r in served)
    # routes take integers only: a path in the URL is not even routed to a handler
    assert c.get("/api/reports/0/files/..%2F..%2Fsecret.png").status_code == 404

    # a listed file replaced by a symlink to the outside after the report was read is refused too
    (out / "plots" / "accuracy.png").unlink()
    (out / "plots" / "accuracy.png").symlink_to(secret)
    response = c.get("/api/reports/0/files/0")
    assert response.status_code == 404 and response.content != secret_bytes


@pytest.mark.parametrize("text, message", [
    ("{not json", "not readable JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"format": "something-else", "version": 1}), "format is 'something-else'"),
    (json.dumps({"format": "threedb-robustness-report", "version": 2, "job": "x", "title": "t"}), "version 2"),
    (json.dumps({"format": "threedb-robustness-report", "version": 1, "job": "x", "title": "t",
                 "headline": {"acc": "high"}}), "'headline' must map names to numbers"),
    (json.dumps({"format": "threedb-robustness-report", "version": 1, "job": "x", "title": "t",
                 "tables": [{"title": "t", "columns": ["a"]}]}), r"tables\[0\] lacks rows"),
])
def test_malformed_report_is_one_clear_error(tmp_path, text, message):
    out = tmp_path / "bad"
    out.mkdir()
    (out / "report.json").write_text(text)
    with pytest.raises(ReportError, match=message) as info:
        Report(out)
    assert str(out / "report.json") in str(info.value)


def test_cli_names_the_malformed_report(tmp_path):
    out = tmp_path / "bad"
    out.mkdir()
    (out / "report.json").write_text('{"format": "threedb-robustness-report", "version": 1, "job": 3}')
    result = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "dashboard", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert str(out / "report.json") in result.stderr and "'job' must be a string" in result.stderr
    assert "Traceback" not in result.stderr


def test_open_dirs_sorts_runs_and_reports(two_reports, tmp_path):
    run_dir = synthetic.make_run(tmp_path / "run", 5)
    pending = tmp_path / "pending"
    pending.mkdir()
    (pending / "examples.jsonl").write_text("")
    runs, reports = open_dirs([str(two_reports[0]), str(run_dir), str(pending), str(two_reports[1])])
    assert [(r.index, r.name) for r in runs] == [(0, "run")]
    assert [(r.index, r.name) for r in reports] == [(0, "attack_out"), (1, "pending"), (2, "certify_out")]
    assert not is_report_dir(run_dir) and is_report_dir(pending)


def touch_later(path: Path) -> None:
    """Move the mtime forward (file systems with coarse timestamps would hide a quick rewrite)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_reports_are_reread_while_serving(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    (out / "examples.jsonl").write_text('{"id": 0}\n')     # a job still running: no report.json yet
    c = client(reports=[out])
    first = c.get("/api/reports").json()["reports"][0]
    assert first["state"] == "running" and first["headline"] == {}
    assert c.get("/api/reports/0").json()["plots"] == []

    write_report(out, job="attack", headline={"robust_accuracy": 0.25})  # the job ends
    listed = c.get("/api/reports").json()["reports"][0]
    assert listed["state"] == "ready" and listed["headline"] == {"robust_accuracy": 0.25}
    assert listed["version"] > first["version"]
    assert c.get("/api/reports/0/files/0").content.startswith(PNG_MAGIC)

    (out / "report.json").write_text('{"format": "threedb-robustness-report", "version": 1, "job"')
    touch_later(out / "report.json")
    for url in ("/api/reports/0", "/api/reports/0/files/0"):
        response = c.get(url)
        assert response.status_code == 409 and "not readable JSON" in response.json()["error"]
    broken = c.get("/api/reports").json()["reports"][0]
    assert broken["state"] == "error" and str(out / "report.json") in broken["error"]

    write_report(out, job="attack", headline={"robust_accuracy": 0.5})   # resumed and rewritten
    touch_later(out / "report.json")
    assert c.get("/api/reports/0").json()["headline"] == {"robust_accuracy": 0.5}


# -- in a real browser ---------------------------------------------------------------------------------
@pytest.fixture
def page():
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield page
        browser.close()
        assert not errors, errors


def test_robustness_tab_shows_reports_side_by_side(page, two_reports, tmp_path):
    run_dir = synthetic.make_run(tmp_path / "run", 12)
    app = create_app([Run(run_dir)], reports=[Report(p, index=i) for i, p in enumerate(two_reports)])
    with BackgroundServer(app) as url:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.click("button[data-tab=robustness]")
        page.wait_for_selector("#reports-list tbody tr[data-report='1']")
        # the first report is shown; tick the second too
        page.wait_for_selector("#report-columns .report-col[data-report='0']")
        page.check("#reports-list input[data-report='1']")
        until(page, "document.getElementById('reports-view').dataset.shown === '0,1'")
        # headline figures: one row per name (union, first-seen order), one column per report
        names = page.eval_on_selector_all("#headline-table tbody tr", "els => els.map(e => e.dataset.name)")
        assert names == ["examples", "clean_accuracy", "robust_accuracy", "mean_norm.pgd", "certified_accuracy",
                         "radius_mean"]
        cells = page.eval_on_selector_all("#headline-table td", "els => els.map(e => [+e.dataset.report, e.dataset.name, e.textContent])")
        got = {(r, n): t for r, n, t in cells}
        assert got[(0, "clean_accuracy")] == "0.925" and got[(1, "clean_accuracy")] == "0.9"
        assert got[(0, "robust_accuracy")] == "0.25" and got[(1, "robust_accuracy")] == "–"
        assert got[(1, "certified_accuracy")] == "0.6" and got[(0, "mean_norm.pgd")] == "–"
        # each column: its table, summary, and the plot and image really loaded
        for r in (0, 1):
            col = f"#report-columns .report-col[data-report='{r}']"
            assert page.locator(f"{col} table.report-table tbody tr").count() == 2
            assert "40 examples" in page.text_content(f"{col} .summary")
            until(page, f"(() => {{ const imgs = document.querySelectorAll(\"{col} .report-figure img\"); "
                        "return imgs.length === 2 && Array.from(imgs).every(i => i.complete && i.naturalWidth > 0); })()")
        boxes = [page.locator(f"#report-columns .report-col[data-report='{r}']").bounding_box() for r in (0, 1)]
        assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"]            # side by side
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "robustness.png"), full_page=True)

        # a report rewritten while the page is open shows up without a reload (the page polls)
        write_report(two_reports[1], job="certify", headline={"examples": 40, "clean_accuracy": 0.9,
                                                               "certified_accuracy": 0.7, "radius_mean": 0.31})
        touch_later(two_reports[1] / "report.json")
        until(page, "(() => { const c = document.querySelector(\"#headline-table td[data-report='1'][data-name='certified_accuracy']\"); "
                    "return c && c.textContent === '0.7'; })()")
        page.goto("about:blank")   # stop the page's polling before the server goes away


def test_reports_only_page_opens_on_robustness(page, two_reports):
    app = create_app([], reports=[Report(p, index=i) for i, p in enumerate(two_reports)])
    with BackgroundServer(app) as url:
        page.goto(url + "/")
        page.wait_for_selector("#report-columns .report-col[data-report='0']")
        assert page.locator("#tab-robustness").is_visible()
        assert not page.locator("button[data-tab=explore]").is_visible()
        assert not page.locator("#run-label").is_visible()
        until(page, "Array.from(document.querySelectorAll('#report-columns img')).every(i => i.complete && i.naturalWidth > 0)")
        page.goto("about:blank")   # stop the page's polling before the server goes away
