"""``threedb project``: the embedded default (half of the shipped sunrise renders projected onto the other half of
the held-out dataset, grouped by environment and zoom) end to end through the real CLI. The weights lie on the
simplex, the projected MMD² is at most the uniform one and equals a direct computation, the mass goes to the
sunrise groups, the resampled set reloads as an ImageDataset drawn from the weighted groups, render_more.yaml
loads with the run config loader, a killed job resumes at the next class, results are deterministic per seed,
and each bad input is one clear error with exit status 2."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from threedb.dashboard.reports import Report
from threedb.evaluators.datasets import ImageDataset
from threedb.evaluators.project.config import load_project_config
from threedb.evaluators.project.runner import run_project_job
from threedb.robustness.projection import RandomConvEncoder, mixture_mmd2_direct
from threedb.sim.cli import main
from threedb.sim.config import load_config
from threedb.sim.experiment import prepare

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "project_quickstart.yaml"
DATA = REPO / "assets" / "datasets" / "quickstart_heldout"
CARD = REPO / "assets" / "models" / "quickstart" / "card.json"
ZOOM = "CameraControl.zoom_factor"

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread (2 shared cores)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """``threedb project`` with no CONFIG: the embedded default, run end to end through the CLI."""
    out = tmp_path_factory.mktemp("project") / "out"
    torch.set_num_threads(1)
    assert main(["project", "--out", str(out), "--device", "cpu"]) == 0
    return out


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]


def stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def error_of(capsys, argv: list[str]) -> str:
    """Run the CLI expecting exit status 2 and exactly one ``error:`` line; returns it."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def write_config(tmp_path: Path, **sections) -> Path:
    """A config starting from the embedded default, writing into ``tmp_path/out``."""
    path = tmp_path / "project.yaml"
    path.write_text(yaml.safe_dump({"base_config": str(DEFAULT), "output": str(tmp_path / "out"), **sections}))
    return path


def part_of(sample_id: str) -> int:
    """The split of the default config, computed independently: a hash of ``"0/<id>"`` modulo 2."""
    return int.from_bytes(hashlib.sha256(f"0/{sample_id}".encode()).digest()[:8], "little") % 2


def test_report_weights_and_mmd(finished):
    report = report_of(finished)
    assert report["format"] == "threedb-robustness-report" and report["version"] == 1 and report["job"] == "project"
    assert report["examples"] == {"file": "examples.jsonl", "count": 11} and report["device"] == "cpu"
    assert {p["png"] for p in report["plots"]} == {"plots/weights.png", "plots/mmd.png"}
    for plot in report["plots"]:
        assert (finished / plot["png"]).stat().st_size > 1000 and (finished / plot["svg"]).is_file()
    rows = rows_of(finished)
    dataset = ImageDataset(DATA)
    assert [r["label_name"] for r in rows] == dataset.classes
    for row, cls in zip(rows, report["projection"]["classes"]):
        assert cls["weights"] == row["weights"] and cls["mmd2"] == row["mmd2"] and cls["iterations"] == row["iterations"]
        w = torch.tensor(row["weights"], dtype=torch.float64)
        assert bool((w >= 0).all()) and abs(float(w.sum()) - 1) < 1e-9
        assert row["mmd2"] <= row["mmd2_uniform"] + 1e-12 and row["converged"] and row["iterations"] >= 1
    head = report["headline"]
    assert head["mmd2"] < head["mmd2_uniform"] and head["classes_improved"] == 1.0
    # the target is sunrise renders only: the projection puts most of the mass on the sunrise groups
    assert head["mass.environment=sunrise"] > 0.8
    assert abs(head["mass.environment=sunrise"] + head["mass.environment=courtyard"] - 1) < 1e-9
    # the split is disjoint and the counts are the ones the hash gives
    target = [r for r in dataset.records if r.environment == "sunrise.exr" and part_of(r.id) == 0]
    source = [r for r in dataset.records if part_of(r.id) == 1]
    assert sum(r["n_target"] for r in rows) == len(target) == report["dataset"]["target"]["used"]
    assert report["dataset"]["source"]["used"] == len(source)
    assert {"seconds_features", "seconds_projection", "bandwidth"} <= set(head)
    assert Report(finished).problems == []            # the dashboard's Robustness tab reads it


def test_projected_mmd_equals_a_direct_computation(finished):
    """Class 'mug' recomputed from scratch: features by the seeded random encoder, groups by environment and
    the report's zoom edges, the weights of the row: the direct MMD² is the row's."""
    report, row = report_of(finished), rows_of(finished)[0]
    edges = report["projection"]["bins"][ZOOM]["edges"]
    dataset = ImageDataset(DATA)
    encoder = RandomConvEncoder(3, width=16, depth=3, out_features=64, seed=0)

    def features(records):
        x = torch.stack([dataset[dataset.records.index(r)][0] for r in records]).float() / 255
        return encoder(x).double()

    mug = [r for r in dataset.records if r.label == 0]
    target = features([r for r in mug if r.environment == "sunrise.exr" and part_of(r.id) == 0])
    source = [r for r in mug if part_of(r.id) == 1]
    zoom_bin = [min(int(sum(r.params[ZOOM] >= e for e in edges[1:-1])), len(edges) - 2) for r in source]
    keys = [(r.environment, b) for r, b in zip(source, zoom_bin)]
    order = sorted(set(keys))
    assert len(order) == len(row["groups"]) and row["group_sizes"] == [keys.count(k) for k in order]
    groups = [features([r for r, k in zip(source, keys) if k == key]) for key in order]
    direct = mixture_mmd2_direct(target, groups, torch.tensor(row["weights"]), row["bandwidth"])
    assert direct == pytest.approx(row["mmd2"], abs=1e-6)
    uniform = mixture_mmd2_direct(target, groups, torch.full((len(groups),), 1 / len(groups)), row["bandwidth"])
    assert uniform == pytest.approx(row["mmd2_uniform"], abs=1e-6)


def test_resampled_set_reloads_and_follows_the_weights(finished):
    rows = {r["label"]: r for r in rows_of(finished)}
    drawn = ImageDataset(finished / "resampled")
    source = ImageDataset(DATA)
    by_id = {r.id: r for r in source.records}
    assert drawn.classes == source.classes and len(drawn) == sum(r["n_target"] for r in rows.values())
    per_class = {c: drawn.targets.count(c) for c in set(drawn.targets)}
    assert per_class == {c: r["n_target"] for c, r in rows.items()}
    samples = [json.loads(line) for line in (finished / "resampled" / "samples.jsonl").read_text().splitlines()]
    for sample, record in zip(samples, drawn.records):
        origin = by_id[sample["source_id"]]
        assert part_of(origin.id) == 1 and origin.label == record.label    # a source sample of its own class
        assert record.file.read_bytes() == origin.file.read_bytes()
        assert record.passes["mask"].read_bytes() == origin.passes["mask"].read_bytes()
        weight = dict(zip(rows[record.label]["groups"], rows[record.label]["weights"]))[sample["group"]]
        assert weight > 0 and record.environment == origin.environment
    image, label, target = drawn[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64) and target["mask"].dtype == torch.bool
    assert len(ImageDataset(finished / "uniform")) == len(drawn)


def test_render_more_loads_with_the_run_config_loader(finished):
    info = report_of(finished)["projection"]["render_more"]
    experiment = load_config(finished / "render_more.yaml")
    prepared = prepare(experiment)
    assert [e.name for e in prepared.environments] == ["sunrise"] and len(prepared.objects) == 11
    assert experiment.policy == {"type": "random", "samples": 10, "paired": False}
    assert info["renders"] == 110 and sum(h["mass"] for h in info["heavy_groups"]) >= 0.8
    assert all("sunrise" in h["name"] for h in info["heavy_groups"])
    base = load_config(DATA / "source_config.yaml")
    assert experiment.seed == base.seed + 1
    zoom = experiment.control("camera").domains["zoom_factor"]
    assert (zoom.low, zoom.high) == (0.7, 1.4)          # both zoom bins are heavy: the whole base range


def test_resume_continues_at_the_next_class_and_refuses_others(finished, tmp_path, capsys):
    out = tmp_path / "out"
    config = load_project_config(DEFAULT)
    seen: list[int] = []

    def stop_at_four(i: int) -> None:
        seen.append(i)
        if i == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_project_job(config, out=out, device="cpu", quiet=True, on_class=stop_at_four)
    assert len(rows_of(out)) == 4 and not (out / "report.json").exists()
    with open(out / "examples.jsonl", "a") as f:
        f.write('{"index": 4, "id": "soccer')        # a kill while writing: a partial last line
    line = error_of(capsys, ["project", "--out", str(out), "--device", "cpu"])
    assert "is not empty" in line and "--resume" in line
    line = error_of(capsys, ["project", "--out", str(out), "--device", "cpu", "--resume",
                             "--set", "groups.bins.zoom_factor=3"])
    assert "different project config" in line
    seen.clear()
    report = run_project_job(load_project_config(DEFAULT), out=out, resume=True, device="cpu", quiet=True,
                             on_class=seen.append)
    assert seen == list(range(4, 11))                 # no class redone
    # deterministic per seed: the resumed job wrote what the uninterrupted one did
    assert stable(rows_of(out)) == stable(rows_of(finished))
    assert (out / "resampled" / "samples.jsonl").read_text() == (finished / "resampled" / "samples.jsonl").read_text()
    assert (out / "render_more.yaml").read_text() == (finished / "render_more.yaml").read_text()
    assert report["headline"]["mmd2"] == report_of(finished)["headline"]["mmd2"]


def test_another_seed_gives_another_encoder_and_draw(finished, tmp_path):
    assert main(["project", "--out", str(tmp_path / "s1"), "--device", "cpu", "--seed", "1"]) == 0
    assert [r["weights"] for r in rows_of(tmp_path / "s1")] != [r["weights"] for r in rows_of(finished)]
    assert (tmp_path / "s1" / "resampled" / "samples.jsonl").read_text() != \
        (finished / "resampled" / "samples.jsonl").read_text()


def test_kmeans_groups_within_each_class(tmp_path):
    config = write_config(tmp_path, groups={"type": "kmeans", "k": 2, "group_by": None, "bins": None},
                          target={"max_examples": 33}, resample={"n": 20, "uniform": False})
    assert main(["project", str(config), "--device", "cpu"]) == 0
    report = report_of(tmp_path / "out")
    names = {g["id"]: g["name"] for g in report["projection"]["groups"]}
    rows = rows_of(tmp_path / "out")
    for row in rows:
        # its own two clusters; a singleton cluster is left out of the class (the default's small: drop)
        assert sorted(row["groups"] + row["dropped"]) == [2 * row["label"], 2 * row["label"] + 1]
        assert all(n >= 2 for n in row["group_sizes"])
        assert all(names[g].startswith(row["label_name"] + " / cluster ") for g in row["groups"])
        assert row["mmd2"] <= row["mmd2_uniform"] + 1e-12
    assert sum(len(r["groups"]) == 2 for r in rows) >= 6
    assert len(ImageDataset(tmp_path / "out" / "resampled")) == 20
    assert not (tmp_path / "out" / "render_more.yaml").exists()
    assert "render groups" in report["projection"]["render_more"]["skipped"]


def test_model_penultimate_features(tmp_path):
    config = write_config(tmp_path, features={"type": "model"}, model={"card": str(CARD)},
                          target={"max_examples": 33}, source={"max_examples": 88}, render_more=None)
    assert main(["project", str(config), "--device", "cpu"]) == 0
    report = report_of(tmp_path / "out")
    assert report["model"]["type"] == "model" and report["model"]["layer"] == "model.model.head.2"
    assert all(r["mmd2"] <= r["mmd2_uniform"] + 1e-12 for r in rows_of(tmp_path / "out"))


def folder_copy(tmp_path: Path, classes: int) -> tuple[Path, Path]:
    """The first ``classes`` classes of the shipped dataset as an image-folder tree (no metadata), and a fake
    run directory whose details.log holds their render metadata."""
    dataset = ImageDataset(DATA)
    root, run = tmp_path / "folder", tmp_path / "run"
    run.mkdir()
    lines = []
    for record in dataset.records:
        if record.label < classes and part_of(record.id) == 1:
            target = root / dataset.classes[record.label] / record.file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(record.file, target)
            lines.append(json.dumps({"id": record.id, "environment": record.environment, "model": f"{record.object_uid}.obj",
                                     "render_args": dict(record.params), "output_type": "classes", "status": "ok",
                                     "object_uid": record.object_uid}))
    (run / "details.log").write_text("\n".join(lines) + "\n")
    return root, run


def test_render_groups_of_an_image_folder_read_a_runs_details_log(tmp_path, capsys):
    root, run = folder_copy(tmp_path, classes=11)
    line = error_of(capsys, ["project", str(write_config(tmp_path, source={"root": str(root), "split": None})),
                             "--device", "cpu"])
    assert "groups.type" in line and "source.details" in line and str(root) in line
    config = write_config(tmp_path, source={"root": str(root), "split": None, "details": str(run)}, render_more=None)
    assert main(["project", str(config), "--device", "cpu"]) == 0
    ours = rows_of(tmp_path / "out")
    assert [r["group_sizes"] for r in ours] == [r["group_sizes"] for r in rows_of_default()]


def rows_of_default() -> list[dict]:
    """Group sizes of the default's source, counted from samples.jsonl: per class, per (environment, zoom bin)."""
    dataset = ImageDataset(DATA)
    source = [r for r in dataset.records if part_of(r.id) == 1]
    zooms = [r.params[ZOOM] for r in source]
    lo, hi = min(zooms), max(zooms)
    out = []
    for c in range(len(dataset.classes)):
        keys = [(r.environment, min(int((r.params[ZOOM] - lo) / (hi - lo) * 2), 1)) for r in source if r.label == c]
        out.append({"group_sizes": [keys.count(k) for k in sorted(set(keys))]})
    return out


# --- bad input: one clear error each, exit status 2, nothing written ----------------------------------------

def test_target_classes_missing_from_the_sources(tmp_path, capsys):
    root, _ = folder_copy(tmp_path, classes=3)
    config = write_config(tmp_path, source={"root": str(root), "split": None},
                          groups={"type": "kmeans", "k": 2, "group_by": None, "bins": None})
    line = error_of(capsys, ["project", str(config), "--device", "cpu"])
    assert "target class(es)" in line and "'rabbit'" in line and "'mug'" not in line.split("have no")[0]
    assert "no source samples" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("bins, small, expected", [
    ([0.0, 0.5, 2.0], "error", "holds no source sample: an empty group"),
    (10, "error", "fewer than 2 samples"),
])
def test_empty_and_too_small_groups(tmp_path, capsys, bins, small, expected):
    config = write_config(tmp_path, groups={"bins": {"zoom_factor": bins}, "small": small})
    line = error_of(capsys, ["project", str(config), "--device", "cpu"])
    assert expected in line and "groups." in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-0.5"])
def test_bandwidth_must_be_positive(tmp_path, capsys, value):
    line = error_of(capsys, ["project", "--out", str(tmp_path / "out"), "--set", f"projection.bandwidth={value}"])
    assert "projection.bandwidth" in line and "> 0" in line and not (tmp_path / "out").exists()


def test_unknown_group_by_key(tmp_path, capsys):
    line = error_of(capsys, ["project", "--out", str(tmp_path / "out"), "--set", "groups.group_by=[environment, colour]"])
    assert "groups.group_by[1]" in line and "unknown group_by key 'colour'" in line and ZOOM in line
    assert not (tmp_path / "out").exists()
