"""threedb.evaluators.jobs: the pieces every robustness job shares (config, output directory with resume,
report, plots, stratified data batches in pixel space) on the shipped quickstart model and dataset."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import pytest
import torch
import yaml
from pydantic import BaseModel, ConfigDict

from threedb.evaluators.datasets import ImageDataset
from threedb.evaluators.jobs import (REPORT_FORMAT, JobOutput, JobOutputError, binomial_se, config_digest,
                                     load_job_config, model_spec, new_report, table)
from threedb.evaluators.jobs.config import MODEL_PATH_KEYS
from threedb.evaluators.jobs.data import iterate_batches, load_job_model, stratified
from threedb.evaluators.jobs.output import read_rows, write_json_atomic
from threedb.evaluators.jobs.plots import bar_chart, histograms, save_figure
from threedb.sim.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"
CARD = REPO / "assets" / "models" / "quickstart" / "card.json"


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    model: dict
    data: dict
    output: str
    limit: Optional[int] = None


def write_config(path: Path, **extra) -> Path:
    data = {"model": {"card": "../models/card.json"}, "data": {"root": "data"}, "output": "out", **extra}
    path.write_text(yaml.safe_dump(data))
    return path


# -- config ---------------------------------------------------------------------------------------
def test_job_config_resolves_paths_and_names_file_and_key(tmp_path):
    (tmp_path / "cfg").mkdir()
    path = write_config(tmp_path / "cfg" / "job.yaml")
    cfg = load_job_config(path, Schema, path_keys=(("output",), *MODEL_PATH_KEYS), overrides={"seed": 3})
    assert cfg.schema.seed == 3 and cfg.file_of("seed") == "<command line>"
    assert cfg.schema.output == str((tmp_path / "cfg" / "out").resolve())
    assert cfg.schema.model["card"] == str((tmp_path / "models" / "card.json").resolve())
    with pytest.raises(ConfigError) as info:
        load_job_config(write_config(tmp_path / "cfg" / "bad.yaml", limt=3), Schema)
    assert "bad.yaml" in str(info.value) and info.value.key == "limt" and "limit" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_job_config(path, Schema, overrides={"limit": "many"})
    assert info.value.key == "limit" and info.value.file == "<command line>"


def test_model_spec_from_card_and_inline(tmp_path):
    path = write_config(tmp_path / "job.yaml")
    cfg = load_job_config(path, Schema, overrides={"model": {"card": str(CARD), "device": "cpu"}})
    spec, base = model_spec(cfg.schema.model, cfg)
    card = json.loads(CARD.read_text())["inference"]
    assert base == CARD.parent and spec == {**card, "device": "cpu"}
    inline = load_job_config(path, Schema, overrides={"model": {"card": None, "torchvision": "resnet18"}})
    spec, base = model_spec({"torchvision": "resnet18"}, inline)
    assert spec == {"torchvision": "resnet18"} and base == tmp_path
    with pytest.raises(ConfigError) as info:
        model_spec({"card": str(tmp_path / "nope.json")}, cfg)
    assert info.value.key == "model.card" and "not found" in str(info.value)


def test_config_digest_ignores_only_the_output():
    a = {"seed": 0, "threat": {"eps": 0.1}, "output": "/x"}
    assert config_digest(a) == config_digest({**a, "output": "/y"})
    assert config_digest(a) != config_digest({**a, "threat": {"eps": 0.2}})
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", config_digest(a))


# -- output directory -----------------------------------------------------------------------------
def test_output_directory_fresh_append_resume_and_refusals(tmp_path):
    out = tmp_path / "out"
    cfg = {"seed": 0, "output": str(out)}
    digest = config_digest(cfg)
    job = JobOutput.open(out, cfg, digest, resume=False, job="attack")
    assert job.rows == [] and not job.resumed
    assert (out / "config.resolved.yaml").read_text().startswith(f"# config digest: {digest}\n")
    assert yaml.safe_load((out / "config.resolved.yaml").read_text()) == cfg
    job.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    job.append([{"id": "c", "v": 3}])
    assert [r["id"] for r in read_rows(out / "examples.jsonl")[0]] == ["a", "b", "c"]

    with pytest.raises(JobOutputError, match="not empty: pass --resume"):
        JobOutput.open(out, cfg, digest, resume=False, job="attack")
    with pytest.raises(JobOutputError, match="different attack config"):
        JobOutput.open(out, {**cfg, "seed": 1}, config_digest({**cfg, "seed": 1}), resume=True, job="attack")

    with open(out / "examples.jsonl", "a") as f:
        f.write('{"id": "d", "v"')               # a kill in the middle of a line
    again = JobOutput.open(out, cfg, digest, resume=True, job="attack")
    assert [r["id"] for r in again.rows] == ["a", "b", "c"] and again.resumed
    assert (out / "examples.jsonl").read_text().endswith('"v":3}\n')   # the torn line is gone from disk
    again.append([{"id": "d", "v": 4}])
    again.keep_rows(2)
    assert [r["id"] for r in read_rows(out / "examples.jsonl")[0]] == ["a", "b"]


def test_read_rows_refuses_a_broken_line_before_the_last(tmp_path):
    path = tmp_path / "examples.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(JobOutputError, match=r"examples.jsonl:2"):
        read_rows(path)
    path.write_text('{"id": 1}\n{"id": 2')
    assert read_rows(path) == ([{"id": 1}], True)


def test_resume_without_recorded_config_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "examples.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(JobOutputError, match="no config.resolved.yaml"):
        JobOutput.open(out, {}, config_digest({}), resume=True, job="attack")


def test_atomic_json_and_report_keys(tmp_path):
    report = new_report(job="attack", title="t", seed=0, device="cpu", config={"seed": 0}, dataset={"root": "d"},
                        model={"source": "m"}, headline={"clean_accuracy": 0.5}, seconds=1.23456, examples=4,
                        summary=["line"], tables=[table("x", ["a", "b"], [[1, float("nan")], [True, None]])])
    documented = ["format", "version", "job", "title", "created", "seconds", "seed", "device", "versions", "config",
                  "dataset", "model", "headline", "tables", "plots", "images", "examples", "summary"]
    assert list(report) == documented and report["format"] == REPORT_FORMAT and report["version"] == 1
    assert report["tables"][0]["rows"] == [[1, "nan"], ["true", ""]]
    assert set(report["versions"]) >= {"threedb", "torch", "python"}
    write_json_atomic(tmp_path / "report.json", report)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]          # no temporary file left behind
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644


def test_binomial_standard_error():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(1.0, 10) == 0.0 and binomial_se(0.3, 0) == 0.0


def test_plots_png_and_svg(tmp_path):
    entry = save_figure(bar_chart({"clean": 0.9, "pgd": 0.4}, errors={"clean": 0.03}, ylabel="accuracy",
                                  title="t"), tmp_path, "bars", "bars")
    assert entry == {"title": "bars", "png": "plots/bars.png", "svg": "plots/bars.svg"}
    assert (tmp_path / entry["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / entry["svg"]).read_text()
    assert svg.lstrip().startswith("<?xml") and "<dc:date>" not in svg
    save_figure(histograms({"pgd": [0.1, 0.2, 0.2], "none": []}, xlabel="norm", title="h", marker=0.25),
                tmp_path, "hist", "hist")
    assert (tmp_path / "plots" / "hist.svg").is_file()


# -- data -----------------------------------------------------------------------------------------
def test_stratified_selection_is_balanced_and_mixed():
    labels = [0] * 5 + [1] * 3 + [2] * 6
    picked = stratified(labels, 7)
    assert picked == [0, 5, 8, 1, 6, 9, 2]
    assert stratified(labels, None) == list(range(14)) and stratified(labels, 99) == list(range(14))
    shipped = ImageDataset(DATA)
    chosen = stratified([r.label for r in shipped.records], 33)
    counts = [sum(shipped.records[i].label == c for i in chosen) for c in range(11)]
    assert counts == [3] * 11 and len(set(chosen)) == 33


def test_batches_are_pixel_space_at_model_resolution_and_fixed_by_position():
    spec = json.loads(CARD.read_text())["inference"]
    job_model = load_job_model(spec, base_dir=CARD.parent, device=torch.device("cpu"))
    assert job_model.output_shape == (11,) and job_model.preprocess.mean is None
    dataset = ImageDataset(DATA)
    indices = stratified([r.label for r in dataset.records], 12)
    batches = list(iterate_batches(dataset, indices, job_model.preprocess, 5, torch.device("cpu"), masks=True))
    assert [len(b.ids) for b in batches] == [5, 5, 2] and [b.start for b in batches] == [0, 5, 10]
    x = batches[0].x
    assert x.shape == (5, 3, 64, 64) and x.dtype == torch.float32 and 0 <= float(x.min()) < float(x.max()) <= 1
    assert batches[0].masks.shape == (5, 64, 64) and batches[0].masks.dtype == torch.bool
    assert 0 < float(batches[0].masks.float().mean()) < 1
    later = next(iterate_batches(dataset, indices, job_model.preprocess, 5, torch.device("cpu"), start_batch=2))
    assert later.ids == batches[2].ids and torch.equal(later.x, batches[2].x)
    # the pixel model with normalisation inside agrees with the loaded model's own preprocessing
    with torch.no_grad():
        direct = job_model.loaded.predict(torch.stack([dataset[i][0] for i in indices[:5]]).permute(0, 2, 3, 1))
        assert torch.allclose(job_model.model(x), direct, atol=1e-4)
    assert batches[0].y.tolist() == [dataset.records[i].label for i in indices[:5]]
