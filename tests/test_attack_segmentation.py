"""``threedb attack`` with ``task: segmentation``: a real UNet trained here for a few seconds on the shipped
dataset's object masks (binary, 32 px), attacked by FGSM, PGD, APGD-CE and Square (ce). The rows and the
report hold the metrics of ``threedb.robustness.metrics.segmentation_scores`` recomputed here on the same
clean and adversarial images, the masks follow ``threedb train``'s convention, a killed job resumes to the
same report, and each bad input is one clear error."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from test_attack_job import error_of  # one CLI-error helper (exit 2, one error: line)
from threedb.evaluators.architectures import UNet
from threedb.evaluators.attack.config import attack_specs, load_attack_config
from threedb.evaluators.attack.runner import batch_seed, run_attack_job
from threedb.evaluators.datasets import ImageDataset
from threedb.evaluators.jobs.data import load_job_model, stratified
from threedb.evaluators.preprocess import Preprocess
from threedb.evaluators.training.data import SegmentedImages
from threedb.robustness.attacks import PGD, Segmentation
from threedb.robustness.metrics import segmentation_scores
from threedb.robustness.models import Normalized
from threedb.sim.cli import main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"
EXAMPLE = REPO / "configs" / "attack_segmentation.yaml"
RES = 32
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
EPS = 8 / 255
ATTACKS = [{"type": "fgsm"}, {"type": "pgd", "steps": 5}, {"type": "apgd", "steps": 5},
           {"type": "square", "queries": 30, "loss": "ce"}]
NAMES = ["fgsm", "pgd", "apgd-ce", "square"]
METRICS = ("pixel_accuracy", "iou", "sbd", "f_measure")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread (2 shared cores)


@pytest.fixture(scope="module")
def unet_card(tmp_path_factory) -> Path:
    """A UNet (2 channels: background, object) trained with Adam for 150 steps on 200 shipped renders
    and their binary masks at 32 px, saved as weights + label map + card.json's inference mapping."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dataset = ImageDataset(DATA)
    data = SegmentedImages(dataset, Preprocess(None, None, (RES, RES)), None, "binary")
    pairs = [data[i] for i in range(0, 400, 2)]
    x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    net = UNet(2, width=8, depth=3)
    model = Normalized(net, MEAN, STD)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(150):
        batch = torch.randint(0, len(x), (32,), generator=order)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("unet")
    torch.save(net.state_dict(), folder / "model.pt")
    (folder / "classes.json").write_text(json.dumps(["background", "object"]))
    inference = {"module": "threedb.evaluators.architectures", "class": "UNet", "args": {"width": 8},
                 "num_classes": 2, "resolution": RES, "normalization": {"mean": MEAN, "std": STD},
                 "weights": "model.pt", "label_map": "classes.json"}
    (folder / "card.json").write_text(json.dumps({"task": "segmentation", "inference": inference}))
    return folder / "card.json"


def write_config(folder: Path, card: Path, **changes) -> Path:
    data = {"seed": 0, "device": "cpu", "model": {"card": str(card)},
            "data": {"root": str(DATA), "max_examples": 16, "batch_size": 8}, "task": "segmentation",
            "segmentation": {"worst": "f_measure"}, "threat": {"norm": "linf", "eps": "8/255"},
            "attacks": ATTACKS, "grid": {"examples": 4}, "output": "out", **changes}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def finished(unet_card, tmp_path_factory) -> Path:
    """The segmentation job run end to end through the CLI."""
    folder = tmp_path_factory.mktemp("segattack")
    torch.set_num_threads(1)
    assert main(["attack", str(write_config(folder, unet_card)), "--out", str(folder / "out")]) == 0
    return folder / "out"


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]


def mean_se(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def test_rows_and_report_match_a_direct_computation(unet_card, finished):
    report = json.loads((finished / "report.json").read_text())
    rows = rows_of(finished)
    assert report["examples"]["count"] == 16 and [r["index"] for r in rows] == list(range(16))
    dataset = ImageDataset(DATA)
    chosen = stratified([r.label for r in dataset.records], 16)
    assert [r["id"] for r in rows] == [dataset.records[i].id for i in chosen]

    # clean: the job's model on threedb train's images and binary masks (masks resized 64 -> 32 px as there)
    job_model = load_job_model(json.loads(unet_card.read_text())["inference"], base_dir=unet_card.parent,
                               device=torch.device("cpu"))
    assert job_model.output_shape == (2, RES, RES)
    data = SegmentedImages(dataset, job_model.preprocess, None, "binary")
    x = torch.stack([data[i][0] for i in chosen])
    target = torch.stack([data[i][1] for i in chosen])
    with torch.no_grad():
        clean = segmentation_scores(job_model.model(x).argmax(1), target, 2)
    head = report["headline"]
    for m in METRICS:
        assert [r["clean"][m] for r in rows] == pytest.approx(clean[m].tolist(), abs=1e-9)
        assert head[f"clean_{m}"] == pytest.approx(float(clean[m].mean()))
        assert head[f"clean_{m}_se"] == pytest.approx(mean_se(clean[m].tolist()))
        worst = [r["worst"][m] for r in rows]
        assert head[f"adversarial_{m}"] == pytest.approx(float(np.mean(worst)))
        assert head[f"adversarial_{m}_se"] == pytest.approx(mean_se(worst))
        for name in NAMES:
            assert head[f"{m}.{name}"] == pytest.approx(float(np.mean([r["attacks"][name][m] for r in rows])))
    assert head["clean_f_measure"] > 0.6      # the tiny UNet did learn the masks

    # adversarial: PGD rerun here with the job's seed on batch 0 gives the rows' scores
    pgd = PGD(eps=EPS, norm="linf", steps=5, task=Segmentation(), seed=batch_seed(0, 0, 1))
    adv = pgd(job_model.model, x[:8], target[:8]).adv
    assert float((adv - x[:8]).abs().max()) <= EPS + 1e-6
    with torch.no_grad():
        attacked = segmentation_scores(job_model.model(adv).argmax(1), target[:8], 2)
    for m in METRICS:
        assert [r["attacks"]["pgd"][m] for r in rows[:8]] == pytest.approx(attacked[m].tolist(), abs=1e-9)

    # worst case: per example the lowest F-measure over clean and the attacks; it hurts on average
    for r in rows:
        candidates = {"clean": r["clean"], **r["attacks"]}
        assert r["worst_score"] == min(c["f_measure"] for c in candidates.values())
        assert r["worst"] == {m: candidates[r["worst_attack"]][m] for m in METRICS}
        assert r["worst"]["f_measure"] <= r["clean"]["f_measure"]
        assert all(a["norm"] <= EPS + 1e-6 for a in r["attacks"].values())
        assert r["attacks"]["square"]["gradients"] == 0 and r["attacks"]["pgd"]["gradients"] == 5
    assert head["adversarial_f_measure"] < head["clean_f_measure"] - 0.1
    assert head["adversarial_iou"] < head["clean_iou"] and head["adversarial_sbd"] < head["clean_sbd"]
    for name in NAMES:
        assert head["adversarial_f_measure"] <= head[f"f_measure.{name}"]

    scores, per_class = report["tables"]
    assert [row[0] for row in scores["rows"]] == ["clean", *NAMES, "worst case"]
    assert scores["rows"][-1][8] == pytest.approx(head["adversarial_f_measure"])
    assert sum(row[1] for row in per_class["rows"]) == 16
    assert {p["png"] for p in report["plots"]} == {"plots/segmentation_scores.png", "plots/f_measure_per_attack.png",
                                                   "plots/perturbation_norms.png"}
    for entry in report["plots"]:
        assert (finished / entry["png"]).stat().st_size > 1000
    assert (finished / "grid.png").stat().st_size > 1000
    # the grid shows the true mask and the clean and worst-case predictions of its examples
    with np.load(finished / "grid.npz") as grid:
        assert grid["mask"].shape == (4, RES, RES) and grid["adv_pred"].shape == (4, RES, RES)
        for k, example_id in enumerate(grid["ids"].tolist()):
            j = [r["id"] for r in rows].index(example_id)
            assert np.array_equal(grid["mask"][k], target[j].numpy())
            with torch.no_grad():
                assert np.array_equal(grid["clean_pred"][k], job_model.model(x[j:j + 1]).argmax(1)[0].numpy())


def test_resume_after_a_kill_reports_the_same(unet_card, finished, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(finished, resumed)
    for name in ("report.json", "grid.png"):
        (resumed / name).unlink()
    lines = (finished / "examples.jsonl").read_text().splitlines(keepends=True)
    (resumed / "examples.jsonl").write_text("".join(lines[:10]) + lines[10][:30])   # torn in batch 2
    seen: list[list[str]] = []
    config = load_attack_config(write_config(finished.parent, unet_card))
    report = run_attack_job(config, out=resumed, resume=True, device="cpu", quiet=True,
                            on_batch=lambda b: seen.append(b.ids))
    assert seen == [[json.loads(line)["id"] for line in lines[8:16]]]
    assert (resumed / "examples.jsonl").read_text() == (finished / "examples.jsonl").read_text()
    before = json.loads((finished / "report.json").read_text())
    assert report["headline"] == before["headline"] and report["tables"] == before["tables"]
    with np.load(resumed / "grid.npz") as a, np.load(finished / "grid.npz") as b:
        assert a["ids"].tolist() == b["ids"].tolist() and np.array_equal(a["adv_pred"], b["adv_pred"])


@pytest.mark.parametrize("changes, key, words", [
    ({"attacks": [{"type": "fgsm"}, {"type": "apgd", "loss": "dlr"}]}, "attacks[1].loss", "classification only"),
    ({"attacks": [{"type": "pgd"}, {"type": "apgdt", "steps": 5}]}, "attacks[1].type", "APGD-T"),
    ({"attacks": [{"type": "square", "loss": "margin"}]}, "attacks[0].loss", "classification only"),
    ({"segmentation": {"worst": "dice"}}, "segmentation.worst", "f_measure"),
])
def test_attacks_segmentation_cannot_run_are_one_error(unet_card, tmp_path, capsys, changes, key, words):
    line = error_of(capsys, ["attack", str(write_config(tmp_path, unet_card, **changes))])
    assert f"job.yaml: {key}:" in line and words in line
    assert not (tmp_path / "out").exists()


def test_segmentation_key_needs_task_segmentation(unet_card, tmp_path, capsys):
    line = error_of(capsys, ["attack", str(write_config(tmp_path, unet_card, task="classification"))])
    assert "job.yaml: segmentation:" in line and "task: segmentation" in line


def test_dataset_without_masks_is_refused(unet_card, tmp_path, capsys):
    dataset = ImageDataset(DATA)
    root = tmp_path / "folder"
    for record in dataset.records[::40]:
        target = root / dataset.classes[record.label] / record.file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(record.file, target)
    line = error_of(capsys, ["attack", str(write_config(tmp_path, unet_card, data={"root": str(root)}))])
    assert "job.yaml: task:" in line and "needs object masks" in line and str(root) in line


def test_model_channels_must_match_label_map_and_classes(unet_card, tmp_path, capsys):
    card = json.loads(unet_card.read_text())
    (tmp_path / "three.json").write_text(json.dumps(["background", "object", "shadow"]))
    card["inference"].update(weights=str(unet_card.parent / "model.pt"), label_map=str(tmp_path / "three.json"))
    (tmp_path / "card.json").write_text(json.dumps(card))
    line = error_of(capsys, ["attack", str(write_config(tmp_path, tmp_path / "card.json"))])
    assert "outputs 2 classes" in line and "lists 3 names" in line
    # a 2-channel (binary) model cannot be attacked against per-class masks (1 + 11 labels)
    line = error_of(capsys, ["attack", str(write_config(tmp_path, unet_card,
                                                        segmentation={"classes": "per_class"}))])
    assert "job.yaml: segmentation.classes:" in line and "12 values" in line and "outputs 2 channels" in line


def test_example_config_points_at_the_trained_segmentation_model():
    config = load_attack_config(EXAMPLE)
    assert config.schema.task == "segmentation"
    assert Path(config.schema.model["card"]).resolve() == (REPO / "runs" / "qs-seg-fbf-trades" / "card.json").resolve()
    assert [a["type"] for a in config.schema.attacks] == ["fgsm", "pgd", "apgd", "square", "pgd"]
    assert [s.name for s in attack_specs(config)] == ["fgsm", "pgd", "apgd-ce", "square", "pgd-removal"]


def test_per_class_masks_label_the_object_with_its_class(tmp_path):
    """A 12-channel UNet (background + the 11 classes, untrained) gets per-class masks under classes: auto."""
    torch.manual_seed(0)
    torch.save(UNet(12, width=4, depth=2).state_dict(), tmp_path / "model.pt")
    (tmp_path / "classes.json").write_text(json.dumps(["background", *ImageDataset(DATA).classes]))
    inference = {"module": "threedb.evaluators.architectures", "class": "UNet", "args": {"width": 4, "depth": 2},
                 "num_classes": 12, "resolution": RES, "weights": "model.pt", "label_map": "classes.json"}
    (tmp_path / "card.json").write_text(json.dumps({"inference": inference}))
    config = write_config(tmp_path, tmp_path / "card.json", data={"root": str(DATA), "max_examples": 4},
                          attacks=[{"type": "fgsm"}], segmentation={"worst": "iou"})
    assert main(["attack", str(config), "--out", str(tmp_path / "out")]) == 0
    rows = rows_of(tmp_path / "out")
    with np.load(tmp_path / "out" / "grid.npz") as grid:
        for k, example_id in enumerate(grid["ids"].tolist()):
            label = next(r["label"] for r in rows if r["id"] == example_id)
            assert set(np.unique(grid["mask"][k]).tolist()) == {0, label + 1}
    for r in rows:
        assert r["worst_score"] == min(r["clean"]["iou"], r["attacks"]["fgsm"]["iou"])


def test_object_removal_entry_joins_the_worst_case(unet_card, finished, tmp_path):
    """``target: background`` runs PGD towards the all-background mask (object removal) for the untargeted
    goal: it is one more attack in the worst case, whose F-measure can only go down with it."""
    removal = {"type": "pgd", "steps": 5, "step_size": EPS / 2, "schedule": "cosine", "target": "background"}
    config = load_attack_config(write_config(tmp_path, unet_card, attacks=[*ATTACKS, removal]))
    assert [s.name for s in attack_specs(config)] == [*NAMES, "pgd-removal"]
    report = run_attack_job(config, out=tmp_path / "out", device="cpu", quiet=True)
    rows, before = rows_of(tmp_path / "out"), rows_of(finished)
    head, head_before = report["headline"], json.loads((finished / "report.json").read_text())["headline"]
    for r, b in zip(rows, before):
        assert r["id"] == b["id"] and r["attacks"]["pgd"] == b["attacks"]["pgd"]   # same seeds for the others
        gone = r["attacks"]["pgd-removal"]
        assert gone["gradients"] == 5 and gone["queries"] == 7 and gone["norm"] <= EPS + 1e-6
        assert set(METRICS) <= set(gone)
        assert r["worst_score"] <= b["worst_score"] + 1e-12
    print(f"\nF: clean {head['clean_f_measure']:.3f}, "
          f"worst without removal {head_before['adversarial_f_measure']:.3f}, "
          f"removal {head['f_measure.pgd-removal']:.3f}, worst with it {head['adversarial_f_measure']:.3f}")
    assert head["adversarial_f_measure"] <= head_before["adversarial_f_measure"]
    assert any(r["worst_attack"] == "pgd-removal" for r in rows)
    names = [row[0] for row in report["tables"][0]["rows"]]
    assert names == ["clean", *NAMES, "pgd-removal", "worst case"]
    assert "target=background" in report["tables"][0]["rows"][5][1]


@pytest.mark.parametrize("task, entry, words", [
    ("classification", {"type": "pgd", "target": "background"}, "task: segmentation only"),
    ("segmentation", {"type": "square", "target": "background"}, "cannot run towards a target"),
    ("segmentation", {"type": "pgd", "target": "object"}, "unknown target"),
])
def test_a_bad_target_is_one_error_naming_it(unet_card, tmp_path, capsys, task, entry, words):
    changes = {"task": task, "attacks": [{"type": "fgsm"}, entry]}
    if task == "classification":
        changes["segmentation"] = None
    line = error_of(capsys, ["attack", str(write_config(tmp_path, unet_card, **changes))])
    assert "job.yaml: attacks[1].target:" in line and words in line
