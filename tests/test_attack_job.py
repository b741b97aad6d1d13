"""``threedb attack``: the shipped quickstart model on 16 examples of the shipped held-out dataset, five real
attacks with few steps. The report holds real numbers (clean accuracy = a direct evaluation, worst case <=
every attack <= clean), a killed job resumes without redoing examples and reports what an uninterrupted
run does, and each bad input is one clear error with exit status 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from threedb.evaluators.attack.config import load_attack_config
from threedb.evaluators.attack.runner import run_attack_job
from threedb.evaluators.datasets import ImageDataset
from threedb.evaluators.jobs.data import load_job_model, stratified
from threedb.sim.cli import main

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "attack_quickstart.yaml"
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"
CARD = REPO / "assets" / "models" / "quickstart" / "card.json"
ATTACKS = ("[{type: fgsm}, {type: pgd, steps: 3}, {type: apgd, steps: 3}, "
           "{type: apgdt, steps: 3, target_classes: 2}, {type: square, queries: 20}]")
SMALL = ["--set", "data.max_examples=16", "--set", "data.batch_size=8", "--set", f"attacks={ATTACKS}",
         "--set", "grid.examples=4", "--device", "cpu"]
NAMES = ["fgsm", "pgd", "apgd-ce", "apgd-t", "square"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread (2 shared cores)


def small_overrides() -> dict:
    """The ``--set`` values of SMALL, as the CLI parses them."""
    return {"data.max_examples": 16, "data.batch_size": 8, "attacks": yaml.safe_load(ATTACKS), "grid.examples": 4}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The default config, made small with --set, run end to end through the CLI."""
    out = tmp_path_factory.mktemp("attack") / "out"
    torch.set_num_threads(1)
    assert main(["attack", str(DEFAULT), "--out", str(out), *SMALL]) == 0
    return out


def error_of(capsys, argv: list[str]) -> str:
    """Run the CLI expecting exit status 2 and exactly one ``error:`` line; returns it."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]


def comparable(report: dict) -> dict:
    """The report without what legitimately differs between two runs: times and the output folder."""
    return {k: v for k, v in report.items() if k not in ("created", "seconds", "summary", "config")} | {
        "summary": report["summary"][1:-1]}


def test_default_config_report_holds_real_numbers(finished):
    report = json.loads((finished / "report.json").read_text())
    assert report["format"] == "threedb-robustness-report" and report["version"] == 1 and report["job"] == "attack"
    assert report["examples"] == {"file": "examples.jsonl", "count": 16} and report["device"] == "cpu"
    rows = rows_of(finished)
    assert [r["index"] for r in rows] == list(range(16))

    # clean accuracy: the same 16 examples evaluated directly through the loaded model
    dataset = ImageDataset(DATA)
    chosen = stratified([r.label for r in dataset.records], 16)
    assert [r["id"] for r in rows] == [dataset.records[i].id for i in chosen]
    spec = json.loads(CARD.read_text())["inference"]
    loaded = load_job_model(spec, base_dir=CARD.parent, device=torch.device("cpu")).loaded
    images = torch.stack([dataset[i][0] for i in chosen]).permute(0, 2, 3, 1)
    preds = loaded.predict(images).argmax(1)
    labels = torch.tensor([dataset.records[i].label for i in chosen])
    head = report["headline"]
    assert head["clean_accuracy"] == pytest.approx(float((preds == labels).float().mean()))
    assert [r["clean_prediction"] for r in rows] == preds.tolist()

    # worst case <= each attack <= clean, and the worst case is the per-example AND over attacks
    assert 0 < head["clean_accuracy"] and head["robust_accuracy"] < head["clean_accuracy"]
    for name in NAMES:
        assert head["robust_accuracy"] <= head[f"robust_accuracy.{name}"] <= head["clean_accuracy"]
    assert head["robust_accuracy"] == sum(r["robust"] for r in rows) / 16
    for r in rows:
        assert r["robust"] == (r["clean_correct"] and not any(a["success"] for a in r["attacks"].values()))
        for name, a in r["attacks"].items():
            assert a["success"] == (a["prediction"] != r["label"])
            assert a["norm"] <= 2 / 255 + 1e-6
        assert r["attacks"]["square"]["gradients"] == 0 and r["attacks"]["pgd"]["gradients"] == 3
    assert head["robust_accuracy_se"] == pytest.approx((head["robust_accuracy"] * (1 - head["robust_accuracy"]) / 16) ** 0.5)
    assert head["mean_queries.square"] <= 20 + 1 and head["mean_gradients.fgsm"] == 1

    per_attack, per_class = report["tables"]
    assert [row[0] for row in per_attack["rows"]] == [*NAMES, "worst case"]
    assert sum(row[1] for row in per_class["rows"]) == 16
    for entry in report["plots"]:
        assert (finished / entry["png"]).stat().st_size > 1000 and (finished / entry["svg"]).is_file()
    assert [i["png"] for i in report["images"]] == ["grid.png"] and (finished / "grid.png").stat().st_size > 1000
    assert report["config"]["threat"]["eps"] == pytest.approx(2 / 255)
    assert yaml.safe_load((finished / "config.resolved.yaml").read_text())["data"]["max_examples"] == 16


def test_resume_after_a_kill_redoes_nothing_and_reports_the_same(finished, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(finished, resumed)
    for name in ("report.json", "grid.png"):
        (resumed / name).unlink()
    lines = (finished / "examples.jsonl").read_text().splitlines(keepends=True)
    # killed while writing the second batch: 3 of its rows complete, the 4th torn mid-line
    (resumed / "examples.jsonl").write_text("".join(lines[:11]) + lines[11][:40])
    seen: list[list[str]] = []
    config = load_attack_config(DEFAULT, overrides=small_overrides())
    report = run_attack_job(config, out=resumed, resume=True, device="cpu", quiet=True,
                            on_batch=lambda b: seen.append(b.ids))
    assert len(seen) == 1 and seen[0] == [json.loads(line)["id"] for line in lines[8:16]]   # batch 2 only
    assert (resumed / "examples.jsonl").read_text() == (finished / "examples.jsonl").read_text()
    assert comparable(report) == comparable(json.loads((finished / "report.json").read_text()))

    # a finished job resumed again does nothing but rewrite its report
    seen.clear()
    again = run_attack_job(config, out=resumed, resume=True, device="cpu", quiet=True,
                           on_batch=lambda b: seen.append(b.ids))
    assert seen == [] and comparable(again) == comparable(report)


def test_resume_with_another_config_and_reuse_without_resume_are_refused(finished, capsys):
    line = error_of(capsys, ["attack", str(DEFAULT), "--out", str(finished), *SMALL])
    assert "not empty" in line and "--resume" in line
    line = error_of(capsys, ["attack", str(DEFAULT), "--out", str(finished), *SMALL, "--resume",
                             "--set", "threat.eps=1/255"])
    assert "different attack config" in line


def test_set_threat_eps_zero_leaves_every_example_as_it_was(tmp_path):
    out = tmp_path / "out"
    assert main(["attack", str(DEFAULT), "--out", str(out), *SMALL, "--set", "threat.eps=0",
                 "--set", "data.max_examples=8", "--set", "attacks=[{type: fgsm}, {type: pgd, steps: 2}]"]) == 0
    report = json.loads((out / "report.json").read_text())
    head = report["headline"]
    assert report["config"]["threat"]["eps"] == 0
    assert head["robust_accuracy"] == head["clean_accuracy"] == head["robust_accuracy.pgd"]
    assert all(a["norm"] == 0 for r in rows_of(out) for a in r["attacks"].values())


def write_config(tmp_path: Path, **changes) -> Path:
    data = {"base_config": str(DEFAULT), "data": {"max_examples": 8, "batch_size": 8},
            "attacks": [{"type": "fgsm"}, {"type": "pgd", "steps": 2}], "output": "out", **changes}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("changes, key, words", [
    ({"threat": {"eps": 8}}, "threat.eps", "outside [0, 1]"),
    ({"threat": {"eps": "8/0"}}, "threat.eps", "fraction"),
    ({"attacks": [{"type": "fgsm"}, {"type": "pgd"}, {"type": "square", "steps": 3}]}, "attacks[2].steps",
     "unknown argument 'steps' for square"),
    ({"attacks": [{"type": "fgsm"}, {"type": "cw"}]}, "attacks[1].type", "unknown attack type 'cw'"),
    ({"attacks": [{"type": "pgd", "eps": 0.1}]}, "attacks[0].eps", "set by the job"),
    ({"threat": {"norm": "l2", "eps": 0.5}, "attacks": [{"type": "square"}]}, "attacks[0].type", "L-inf only"),
    ({"bpda": True}, "bpda", "defense"),
])
def test_bad_config_is_one_error_naming_file_and_key(tmp_path, capsys, changes, key, words):
    line = error_of(capsys, ["attack", str(write_config(tmp_path, **changes))])
    assert f"job.yaml: {key}:" in line and words in line
    assert not (tmp_path / "out").exists()


def small_dataset(tmp_path: Path, classes: int, masks: bool) -> Path:
    """An image-folder tree of a few shipped renders (``classes`` classes), with or without masks."""
    dataset = ImageDataset(DATA)
    root = tmp_path / "folder"
    taken: dict[int, int] = {}
    for record in dataset.records:
        if record.label < classes and taken.get(record.label, 0) < 4:
            taken[record.label] = taken.get(record.label, 0) + 1
            target = root / dataset.classes[record.label] / record.file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(record.file, target)
            if masks:
                mask = root / "masks" / dataset.classes[record.label] / record.file.name
                mask.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(record.passes["mask"], mask)
    return root


def test_model_and_dataset_class_counts_must_match(tmp_path, capsys):
    root = small_dataset(tmp_path, classes=3, masks=False)
    line = error_of(capsys, ["attack", str(write_config(tmp_path, data={"root": str(root)}))])
    assert "attack_quickstart.yaml: model:" in line and "outputs 11 classes" in line and "has 3 classes" in line
    assert str(root) in line


def test_segmentation_on_a_dataset_without_masks(tmp_path, capsys):
    root = small_dataset(tmp_path, classes=11, masks=False)
    line = error_of(capsys, ["attack", str(write_config(tmp_path, task="segmentation",
                                                        data={"root": str(root)}))])
    assert "task:" in line and "needs object masks" in line and str(root) in line


QUANTIZE = '''
import torch
from torch import nn

class Quantize(nn.Module):
    """Bit-depth reduction: a non-differentiable input defence (zero gradient almost everywhere)."""

    def __init__(self, levels: int = 32):
        super().__init__()
        self.levels = levels

    def forward(self, x):
        return torch.round(x * (self.levels - 1)) / (self.levels - 1)
'''


def test_non_differentiable_defence_needs_bpda(tmp_path, capsys):
    (tmp_path / "quantize.py").write_text(QUANTIZE)
    defense = {"file": "quantize.py", "class": "Quantize", "args": {"levels": 32}}
    config = write_config(tmp_path, defense=defense)
    line = error_of(capsys, ["attack", str(config)])
    assert "bpda: true" in line and "not differentiable" in line and "0 examples done so far" in line
    shutil.rmtree(tmp_path / "out")
    # with BPDA (straight-through gradients) the same gradient attacks run and use their gradients
    assert main(["attack", str(write_config(tmp_path, defense=defense, bpda=True)), "--device", "cpu"]) == 0
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 8 and all(r["attacks"]["pgd"]["gradients"] == 2 for r in rows)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["headline"]["robust_accuracy"] <= report["headline"]["clean_accuracy"]
