"""``threedb certify``: randomized smoothing of real models on the shipped held-out dataset with small n.

Classification: the shipped quickstart model through the CLI; every row is what CERTIFY gives on that
example with its per-example noise seed, the report and ``certify.tsv`` are recomputed from the rows, a
killed job resumes without recomputing finished examples and ends with an uninterrupted job's rows.
Segmentation (SEGCERTIFY) and local equivalence: the tiny UNet of tests/test_attack_segmentation.py.
``threedb certify analyze`` reproduces Cohen et al.'s published certified accuracies from their logs.
Each bad input is one clear error."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from scipy import stats

from test_attack_job import error_of  # one CLI-error helper (exit 2, one error: line)
from test_attack_segmentation import unet_card  # noqa: F401  (fixture: a tiny 2-channel UNet card, 32 px)
from threedb.evaluators.certify.analyze import analyze_logs
from threedb.evaluators.certify.config import load_certify_config
from threedb.evaluators.certify.runner import run_certify_job
from threedb.evaluators.certify.tsv import format_row, read_log
from threedb.evaluators.datasets import ImageDataset
from threedb.evaluators.jobs.data import iterate_batches, label_masks, load_job_model, stratified
from threedb.robustness.metrics import symmetric_best_dice
from threedb.robustness.smoothing import (certified_accuracy, certified_scores, certify, example_seed, generator,
                                          lower_confidence_bound, segcertify)
from threedb.sim.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "certify_quickstart.yaml"
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"
CARD = REPO / "assets" / "models" / "quickstart" / "card.json"
COHEN = REPO.parent / "shared" / "data" / "cohen-smoothing"
N_EX, N0, N, SIGMA, ALPHA = 6, 20, 200, 0.12, 0.001
OVERRIDES = {"data.max_examples": N_EX, "data.batch_size": 4, "smoothing.n0": N0, "smoothing.n": N,
             "smoothing.batch_size": 110}
SMALL = [arg for key, value in OVERRIDES.items() for arg in ("--set", f"{key}={value}")] + ["--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread (2 shared cores)


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The default config, made small with --set, run end to end through the CLI."""
    out = tmp_path_factory.mktemp("certify") / "out"
    torch.set_num_threads(1)
    assert main(["certify", str(DEFAULT), "--out", str(out), *SMALL]) == 0
    return out


def examples(card: Path, n_examples: int, masks: bool = False) -> tuple:
    """The job's first ``n_examples`` (stratified), preprocessed as the job does, and the pixel-space model."""
    dataset = ImageDataset(DATA)
    spec = json.loads(card.read_text())["inference"]
    job_model = load_job_model(spec, base_dir=card.parent, device=torch.device("cpu"))
    indices = stratified([r.label for r in dataset.records], n_examples)
    batch = next(iterate_batches(dataset, indices, job_model.preprocess, len(indices), torch.device("cpu"),
                                 masks=masks))
    return job_model.model, batch, indices


def test_default_config_rows_are_certify_on_each_example(finished):
    report = json.loads((finished / "report.json").read_text())
    assert report["format"] == "threedb-robustness-report" and report["version"] == 1 and report["job"] == "certify"
    assert report["examples"] == {"file": "examples.jsonl", "count": N_EX} and report["device"] == "cpu"
    rows = rows_of(finished)
    model, batch, indices = examples(CARD, N_EX)
    assert [r["id"] for r in rows] == batch.ids and [r["dataset_index"] for r in rows] == indices
    with torch.inference_mode():
        clean = model(batch.x).argmax(1)
    for j, row in enumerate(rows):
        # the same certificate recomputed directly with the example's noise seed
        cert = certify(model, batch.x[j], sigma=SIGMA, n0=N0, n=N, alpha=ALPHA, batch_size=64,
                       gen=generator("cpu", example_seed(0, row["id"])))
        assert (row["prediction"], row["count"], row["candidate"]) == (cert.prediction, cert.count, cert.candidate)
        assert row["p_lower"] == pytest.approx(lower_confidence_bound(row["count"], N, ALPHA), abs=1e-12)
        assert row["abstained"] == (row["p_lower"] <= 0.5) == (row["prediction"] == -1)
        expected = SIGMA * stats.norm.ppf(row["p_lower"]) if not row["abstained"] else 0.0
        assert row["radius"] == pytest.approx(expected, abs=1e-12)
        assert row["correct"] == (row["prediction"] == row["label"] == int(batch.y[j]))
        assert row["clean_prediction"] == int(clean[j]) and row["samples"] == N0 + N and row["time"] > 0


def test_default_config_report_and_tsv_follow_from_the_rows(finished):
    report = json.loads((finished / "report.json").read_text())
    rows = rows_of(finished)
    radii = [SIGMA * m for m in (0, 0.5, 1, 1.5, 2)]
    acc = certified_accuracy([r["radius"] for r in rows], [r["correct"] for r in rows], radii)
    head = report["headline"]
    for r, a in zip(radii, acc):
        assert head[f"certified_accuracy.r={round(r, 6):g}"] == pytest.approx(a)
    assert head["clean_accuracy"] == pytest.approx(sum(r["clean_correct"] for r in rows) / N_EX)
    assert head["abstain_rate"] == pytest.approx(sum(r["abstained"] for r in rows) / N_EX)
    assert head["samples_per_second"] == pytest.approx(N_EX * (N0 + N) / sum(r["time"] for r in rows))
    assert report["tables"][0]["rows"][2][1] == pytest.approx(acc[2])
    for plot in report["plots"]:
        assert (finished / plot["png"]).stat().st_size > 0 and (finished / plot["svg"]).is_file()
    # certify.tsv: Cohen's header and their exact formatting of each row
    lines = (finished / "certify.tsv").read_text().splitlines(keepends=True)
    assert lines[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    assert lines[1:] == [format_row(r["dataset_index"], r["label"], r["prediction"], r["radius"], int(r["correct"]),
                                    r["time"]) for r in rows]
    assert format_row(20, 7, -1, 0.0, 0, 15.6) == "20\t7\t-1\t0.0\t0\t0:00:15.600000\n"
    assert format_row(0, 0, 394, 0.012512, 0, 152.717239) == "0\t0\t394\t0.0125\t0\t0:02:32.717239\n"
    # rounded down, never up: a radius read back from the log does not exceed the certificate
    assert format_row(1, 3, 3, 0.24996, 1, 1.0).split("\t")[3] == "0.249"
    assert all(float(format_row(0, 0, 0, r, 1, 0.0).split("\t")[3]) <= r for r in (0.1, 0.3, 0.7, 1.8649, 2.46))
    # analyze reads it back: the certified accuracy of the report (radii rounded to 3 digits in the log)
    parsed = read_log(finished / "certify.tsv")
    assert [(p.idx, p.predict, p.correct) for p in parsed] == [(r["dataset_index"], r["prediction"],
                                                               r["correct"]) for r in rows]
    ours = analyze_logs([finished / "certify.tsv"], [0.0])["logs"][0]
    assert ours["certified_accuracy"][0] == pytest.approx(head["smoothed_accuracy"])


def test_killed_job_resumes_without_recomputing_finished_examples(finished, tmp_path):
    config = load_certify_config(DEFAULT, overrides=OVERRIDES)
    out = tmp_path / "out"
    seen: list[str] = []

    def kill_after_three(ex) -> None:
        if len(seen) == 3:
            raise KeyboardInterrupt   # the job dies while certifying example 4
        seen.append(ex.id)

    with pytest.raises(KeyboardInterrupt):
        run_certify_job(config, out=out, device="cpu", on_example=kill_after_three, quiet=True)
    partial = (out / "examples.jsonl").read_text()
    assert len(partial.splitlines()) == 3 and not (out / "report.json").exists()
    resumed: list[str] = []
    run_certify_job(config, out=out, resume=True, device="cpu", on_example=lambda ex: resumed.append(ex.id),
                    quiet=True)
    rows = rows_of(out)
    assert resumed == [r["id"] for r in rows[3:]] and len(rows) == N_EX           # only the 3 left were certified
    assert (out / "examples.jsonl").read_text().startswith(partial)                 # the finished rows untouched
    assert without_time(rows) == without_time(rows_of(finished))                   # = an uninterrupted run
    assert len((out / "certify.tsv").read_text().splitlines()) == N_EX + 1
    # a resume with another config is refused
    other = load_certify_config(DEFAULT, overrides={**OVERRIDES, "smoothing.sigma": 0.5})
    with pytest.raises(Exception, match="different certify config"):
        run_certify_job(other, out=out, resume=True, device="cpu", quiet=True)


@pytest.mark.parametrize("setting, key, words", [
    ("smoothing.sigma=0", "smoothing.sigma", "positive"),
    ("smoothing.sigma=-0.25", "smoothing.sigma", "positive"),
    ("smoothing.n0=500", "smoothing.n0", "must not exceed n"),
    ("smoothing.alpha=0", "smoothing.alpha", "(0, 1)"),
    ("smoothing.alpha=1", "smoothing.alpha", "(0, 1)"),
    ("smoothing.alpha=1.5", "smoothing.alpha", "(0, 1)"),
    ("segmentation={tau: 0.75}", "segmentation", "task: segmentation only"),
    ("smoothing.n_samples=3", "smoothing.n_samples", ""),
])
def test_bad_settings_are_one_error_naming_the_key(capsys, tmp_path, setting, key, words):
    line = error_of(capsys, ["certify", str(DEFAULT), "--out", str(tmp_path / "o"), *SMALL, "--set", setting])
    assert f"{key}:" in line and words in line
    assert not (tmp_path / "o").exists()


def test_classifier_given_to_segmentation_and_back_says_which_task(capsys, tmp_path, unet_card):
    line = error_of(capsys, ["certify", str(DEFAULT), "--out", str(tmp_path / "a"), *SMALL,
                             "--set", "task=segmentation"])
    assert "task:" in line and "classifier" in line and "task: classification" in line
    line = error_of(capsys, ["certify", str(DEFAULT), "--out", str(tmp_path / "b"), *SMALL,
                             "--set", f"model.card={unet_card}"])
    assert "task:" in line and "segmentation model" in line and "task: segmentation" in line
    line = error_of(capsys, ["certify", str(DEFAULT), "--out", str(tmp_path / "c"), *SMALL,
                             "--set", "task=equivalence", "--set", "equivalence={score: sbd}"])
    assert "equivalence.score:" in line and "classifier" in line
    assert not any((tmp_path / d).exists() for d in "abc")


BAD_MODELS = '''
import torch
from torch import nn


class PerImageGrid(nn.Module):          # 11 x 4 scores per image: neither a classifier nor a segmenter
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 44)

    def forward(self, x):
        return self.lin(x.mean((2, 3))).reshape(len(x), 11, 4)


class HalfResolution(nn.Module):        # per-pixel logits at half the input size
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)
'''


@pytest.mark.parametrize("cls, task, words", [("PerImageGrid", "classification", "output shape [11, 4]"),
                                              ("HalfResolution", "segmentation", "not the input size")])
def test_model_with_the_wrong_output_shape_is_one_error_before_any_work(capsys, tmp_path, cls, task, words):
    (tmp_path / "bad.py").write_text(BAD_MODELS)
    config = {"seed": 0, "device": "cpu", "data": {"root": str(DATA), "max_examples": 2}, "task": task,
              "model": {"file": "bad.py", "class": cls, "resolution": 32}, "output": "out",
              "smoothing": {"sigma": 0.25, "n0": 5, "n": 10}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    line = error_of(capsys, ["certify", str(tmp_path / "job.yaml")])
    assert "model:" in line and words in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not COHEN.is_dir(), reason="../shared/data/cohen-smoothing is not there")
def test_analyze_reproduces_cohen_et_al_published_certified_accuracy(capsys, tmp_path):
    logs = {"cifar10_resnet110_noise_0.25_test_sigma_0.25.tsv": ([0, 0.25, 0.5, 0.75, 1.0],
                                                                [0.748, 0.600, 0.428, 0.266, 0.0]),
            "cifar10_resnet110_noise_0.50_test_sigma_0.50.tsv": ([0, 0.25, 0.5, 0.75, 1.0],
                                                                [0.652, 0.546, 0.414, 0.320, 0.234]),
            "imagenet_resnet50_noise_0.50_test_sigma_0.50.tsv": ([0, 0.5, 1.0, 1.5], [0.572, 0.458, 0.372, 0.286])}
    for name, (radii, published) in logs.items():
        got = analyze_logs([COHEN / name], radii)["logs"][0]["certified_accuracy"]
        assert [round(a, 3) for a in got] == published and got == pytest.approx(published, abs=1e-12)
    capsys.readouterr()
    paths = [str(COHEN / name) for name in logs]
    assert main(["certify", "analyze", *paths, "--radii", "0", "0.25", "0.5", "0.75", "1.0", "--json",
                 str(tmp_path / "a.json"), "--plot", str(tmp_path / "a.png")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-5:] == ["r=0", "r=0.25", "r=0.5", "r=0.75", "r=1"]
    assert table[1].split()[-5:] == ["0.748", "0.600", "0.428", "0.266", "0.000"]
    assert table[2].split()[-5:] == ["0.652", "0.546", "0.414", "0.320", "0.234"]
    data = json.loads((tmp_path / "a.json").read_text())
    assert [log["rows"] for log in data["logs"]] == [500, 500, 500]
    assert (tmp_path / "a.png").stat().st_size > 0


@pytest.mark.parametrize("text, where, words", [
    ("idx\tlabel\tpredict\tcorrect\ttime\n0\t3\t3\t1\t15.4\n", ":1:", "radius"),
    ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.378\t1\t15.4\n20\t7\t7\tabc\t1\t15.6\n", ":3:",
     "'abc'"),
    ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\tcat\t0.378\t1\t15.4\n", ":2:", "predict"),
    ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.378\t2\t15.4\n", ":2:", "0 or 1"),
    ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.378\t1\n", ":2:", "values"),
    ("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.378\t1\tyesterday\n", ":2:", "time"),
])
def test_analyze_malformed_log_is_one_error_naming_file_and_line(capsys, tmp_path, text, where, words):
    log = tmp_path / "bad.tsv"
    log.write_text(text)
    line = error_of(capsys, ["certify", "analyze", str(log)])
    assert f"{log}{where}" in line and words in line


def test_certify_help_lists_the_subcommands():
    parser = build_parser()
    certify_parser = next(a for a in parser._actions if a.dest == "command").choices["certify"]
    assert "analyze" in certify_parser.format_help() and "scene" in certify_parser.format_help()


def run_seg_job(folder: Path, card: Path, task: str, **sections) -> tuple:
    """A certify job of ``task`` on the tiny UNet (4 examples, n0 10, n 60) run through the CLI; returns its
    rows and report, and the same examples preprocessed as the job does: the pixel-space model, the batch,
    the binary target masks and the clean per-pixel predictions."""
    data = {"seed": 0, "device": "cpu", "model": {"card": str(card)},
            "data": {"root": str(DATA), "max_examples": 4, "batch_size": 4}, "task": task,
            "smoothing": {"sigma": 0.25, "n0": 10, "n": 60, "alpha": 0.001, "batch_size": 30},
            "output": "out", **sections}
    path = folder / f"{task}.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["certify", str(path)]) == 0
    out = folder / "out"
    model, batch, _ = examples(card, 4, masks=True)
    with torch.inference_mode():
        clean = model(batch.x).argmax(1)
    return (rows_of(out), json.loads((out / "report.json").read_text()), model, batch,
            label_masks(batch.masks, batch.y, "binary"), clean)


def test_segmentation_job_end_to_end(tmp_path, unet_card):
    methods = ["holm", "bonferroni", "kfwer", "pixel_bonferroni", "whole_mask"]
    rows, report, model, batch, target, clean = run_seg_job(
        tmp_path, unet_card, "segmentation", segmentation={"tau": 0.75, "methods": methods, "k": 3})
    out = tmp_path / "out"
    nominal = 0.25 * stats.norm.ppf(0.75)
    for j, row in enumerate(rows):
        certs = segcertify(model, batch.x[j], sigma=0.25, tau=0.75, n0=10, n=60, alpha=0.001,
                           methods=tuple(methods), k=3, batch_size=30, gen=generator("cpu", example_seed(0, row["id"])))
        for name in methods:
            assert row["methods"][name] == pytest.approx({"radius": certs[name].radius,
                                                          **certified_scores(certs[name].labels, target[j], 2)})
        assert row["methods"]["holm"]["radius"] in (0.0, pytest.approx(nominal))
        # Holm rejects every hypothesis Bonferroni does, k-FWER (k=3) every one Holm does
        m = row["methods"]
        assert m["holm"]["abstain_rate"] <= m["bonferroni"]["abstain_rate"]
        assert m["kfwer"]["abstain_rate"] <= m["holm"]["abstain_rate"]
        assert m["holm"]["pixel_accuracy"] <= 1 - m["holm"]["abstain_rate"] + 1e-12
        assert row["base"] == pytest.approx({k: v for k, v in certified_scores(clean[j], target[j], 2).items()
                                             if k != "abstain_rate"})
    assert any(r["methods"]["holm"]["radius"] > 0 for r in rows)      # the UNet certifies something
    assert all(r["base"]["pixel_accuracy"] > 0.5 for r in rows)
    head = report["headline"]
    for name in methods:
        assert head[f"certified_pixel_accuracy.{name}"] == pytest.approx(
            sum(r["methods"][name]["pixel_accuracy"] for r in rows) / 4)
    assert head["base_pixel_accuracy"] == pytest.approx(sum(r["base"]["pixel_accuracy"] for r in rows) / 4)
    assert [r[0] for r in report["tables"][0]["rows"]] == ["base model (not certified)", *methods]
    assert not (out / "certify.tsv").exists()


def test_equivalence_job_end_to_end(tmp_path, unet_card):
    rows, report, model, batch, target, clean = run_seg_job(
        tmp_path, unet_card, "equivalence", equivalence={"score": "sbd", "t": 0.1, "use_labels": "both"})
    for j, row in enumerate(rows):
        for mode in ("without_labels", "with_labels"):
            cert = row["modes"][mode]
            assert cert["p_lower"] == pytest.approx(lower_confidence_bound(cert["count"], 60, 0.001))
            assert cert["radius"] == pytest.approx(0.25 * stats.norm.ppf(cert["p_lower"]) if not cert["abstained"]
                                                   else 0.0)
        assert row["modes"]["without_labels"]["clean_score"] is None
        assert row["modes"]["with_labels"]["clean_score"] == pytest.approx(
            float(symmetric_best_dice(clean[j:j + 1], target[j:j + 1], 2)[0]))
    for mode in ("without_labels", "with_labels"):
        score = sum(r["modes"][mode]["radius"] for r in rows) / 4
        assert report["headline"][f"robustness_score.{mode}"] == pytest.approx(score)
        assert math.isfinite(report["headline"][f"abstain_rate.{mode}"])
    assert (tmp_path / "out" / "plots" / "equivalence_radius.png").is_file()


def test_report_is_shown_by_the_dashboard(finished):
    """The job's report directory is a Robustness-tab entry: headline, tables and the curve's PNG/SVG served."""
    from starlette.testclient import TestClient

    from threedb.dashboard.cli import open_dirs
    from threedb.dashboard.server import create_app

    runs, reports = open_dirs([str(finished)])
    assert runs == [] and [r.path for r in reports] == [finished.resolve()]
    client = TestClient(create_app(runs, reports=reports), base_url="http://127.0.0.1")
    listed = client.get("/api/reports").json()["reports"]
    assert [(r["job"], r["state"]) for r in listed] == [("certify", "ready")]
    report = json.loads((finished / "report.json").read_text())
    full = client.get("/api/reports/0").json()
    assert full["headline"] == report["headline"] and full["tables"] == report["tables"]
    assert full["plots"], "the certified-accuracy curve is listed"
    for plot in full["plots"]:
        png = client.get(f"/api/reports/0/files/{plot['png']}")
        svg = client.get(f"/api/reports/0/files/{plot['svg']}")
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert svg.status_code == 200 and b"<svg" in svg.content
