"""``threedb verify``: the three modes through the real CLI.

NET SPEC: the VNN-COMP 2021 sanity instances (``../shared/data/vnncomp2021/test/``) give their known
verdicts; the sat answer's result file holds a counterexample that a fresh onnxruntime session on the
original file confirms. ``--instances``: the same folder in VNN-COMP's results format, the other tools'
verdicts matched, ``--resume`` skipping what is done, a broken instance answered ``error`` while the run
goes on. CONFIG: a tiny MLP trained here on a tiny image folder; its verdicts are cross-checked against
the minimum distortions of a separate MILP (verified iff the minimum exceeds eps), every adversarial
example is re-checked with the torch model, and a killed job resumes without redoing examples. Each bad
input is exit status 2 with one message naming the file."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper

from run_cli import threedb
from test_attack_job import error_of  # one CLI-error helper (exit 2, one error: line)
from threedb.evaluators.verify.config import load_verify_config
from threedb.evaluators.verify.instance import read_result
from threedb.evaluators.verify.runner import run_verify_job
from threedb.sim.cli import main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TEST = DATA / "vnncomp2021" / "test"
RESULTS = DATA / "vnncomp2021" / "results"
#: the known verdicts of the sanity benchmark (its README; every sound tool of VNN-COMP 2021 agrees)
KNOWN = {("test_nano.onnx", "test_nano.vnnlib"): "unsat", ("test_tiny.onnx", "test_tiny.vnnlib"): "unsat",
         ("test_small.onnx", "test_small.vnnlib"): "unsat", ("test_sat.onnx", "test_prop.vnnlib"): "sat",
         ("test_unsat.onnx", "test_prop.vnnlib"): "unsat"}
VNNCOMP = {"holds": "unsat", "violated": "sat", "unsat": "unsat", "sat": "sat"}

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread (2 shared cores)
needs_test_data = pytest.mark.skipif(not TEST.is_dir(), reason=f"VNN-COMP sanity instances not found in {TEST}")


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """A fresh onnxruntime session on ``path``: float32 outputs of ``x`` reshaped to the input shape."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in first.shape]
    return session.run(None, {first.name: x.astype(np.float32).reshape(shape)})[0].reshape(-1).astype(np.float64)


def assert_counterexample(text: str, onnx_path: Path, vnnlib_path: Path) -> None:
    """``text`` is a sat result file whose X lies in a box of the spec and whose Y (what onnxruntime
    gives for X) meets that box's output condition."""
    from threedb.robustness.verification.vnnlib import parse_vnnlib

    status, x, y = read_result(text)
    assert status == "sat" and x is not None and y is not None
    y_ort = onnx_outputs(onnx_path, x)
    np.testing.assert_allclose(y, y_ort, rtol=1e-6, atol=1e-6)
    specs = parse_vnnlib(vnnlib_path)
    assert any(s.contains(x) and s.violated_by(y_ort) for s in specs)


# --------------------------------------------------------------------------- NET SPEC

@needs_test_data
def test_sat_instance_prints_sat_and_writes_a_confirmed_counterexample(tmp_path):
    result = tmp_path / "result.txt"
    proc = threedb("verify", str(TEST / "test_sat.onnx"), str(TEST / "test_prop.vnnlib"), "--timeout", "60",
                   "--out", str(result))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert out == "sat\n"
    summary = [line for line in err.splitlines() if line.startswith("[threedb verify] ")]
    assert len(summary) == 1 and summary[0].startswith("[threedb verify] sat in ") and "test_sat.onnx" in summary[0]
    text = result.read_text()
    assert text.startswith("sat\n((X_0 ") and text.rstrip().endswith(")")
    assert_counterexample(text, TEST / "test_sat.onnx", TEST / "test_prop.vnnlib")


@needs_test_data
@pytest.mark.parametrize("net, spec", [(n, s) for (n, s), v in KNOWN.items() if v == "unsat"])
def test_unsat_instances(tmp_path, capsys, net, spec):
    result = tmp_path / "result.txt"
    capsys.readouterr()
    assert main(["verify", str(TEST / net), str(TEST / spec), "--timeout", "60", "--out", str(result)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "unsat\n"
    assert result.read_text() == "unsat\n"
    assert "[threedb verify] unsat in " in captured.err


# --------------------------------------------------------------------------- bad input

def write_onnx(path: Path, nodes: list, inputs: int = 2, outputs: int = 2, initializers: list = ()) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, inputs])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, outputs])],
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def linear_onnx(path: Path, inputs: int = 2, outputs: int = 2) -> Path:
    w = helper.make_tensor("W", TensorProto.FLOAT, [inputs, outputs], np.ones(inputs * outputs).tolist())
    return write_onnx(path, [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
                             helper.make_node("Relu", ["h"], ["y"], name="relu")], inputs, outputs, [w])


def write_vnnlib(path: Path, body: str, inputs: int = 2, outputs: int = 2) -> Path:
    decls = [f"(declare-const X_{i} Real)" for i in range(inputs)] + [f"(declare-const Y_{j} Real)"
                                                                      for j in range(outputs)]
    path.write_text("\n".join(decls) + "\n" + body)
    return path


BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"


def instance_error(capsys, net: Path, spec: Path) -> tuple[str, str]:
    """Run NET SPEC expecting exit 2: ``(stdout, the one error: line)``."""
    capsys.readouterr()
    assert main(["verify", str(net), str(spec), "--out", str(net.parent / "result.txt")]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, captured.err
    assert (net.parent / "result.txt").read_text() == "error\n"
    return captured.out, lines[0]


def test_unsupported_operator_names_file_node_and_op(tmp_path, capsys):
    net = write_onnx(tmp_path / "sigmoid.onnx", [helper.make_node("Sigmoid", ["x"], ["y"], name="squash")])
    out, line = instance_error(capsys, net, write_vnnlib(tmp_path / "p.vnnlib", BOX + "(assert (<= Y_0 Y_1))\n"))
    assert out == "error\n"
    assert "sigmoid.onnx" in line and "Sigmoid" in line and "squash" in line


def test_undeclared_variable_names_file_and_line(tmp_path, capsys):
    spec = write_vnnlib(tmp_path / "undeclared.vnnlib", BOX + "(assert (<= Y_0 Y_7))\n")
    _, line = instance_error(capsys, linear_onnx(tmp_path / "net.onnx"), spec)
    assert "undeclared.vnnlib" in line and "Y_7" in line and ":9" in line


def test_lower_above_upper_names_file_and_input(tmp_path, capsys):
    spec = write_vnnlib(tmp_path / "inverted.vnnlib", "(assert (>= X_0 1))\n(assert (<= X_0 0))\n"
                        "(assert (>= X_1 0))\n(assert (<= X_1 1))\n(assert (<= Y_0 Y_1))\n")
    _, line = instance_error(capsys, linear_onnx(tmp_path / "net.onnx"), spec)
    assert "inverted.vnnlib" in line and "X_0" in line


def test_size_mismatch_names_both_files(tmp_path, capsys):
    spec = write_vnnlib(tmp_path / "three.vnnlib", BOX + "(assert (>= X_2 0))\n(assert (<= X_2 1))\n"
                        "(assert (<= Y_0 Y_1))\n", inputs=3)
    _, line = instance_error(capsys, linear_onnx(tmp_path / "two.onnx"), spec)
    assert "three.vnnlib" in line and "3" in line and "2" in line


def test_missing_file_is_named(tmp_path, capsys):
    _, line = instance_error(capsys, linear_onnx(tmp_path / "net.onnx"), tmp_path / "absent.vnnlib")
    assert "absent.vnnlib" in line and "not found" in line


def test_modes_do_not_mix(tmp_path, capsys):
    net, spec = linear_onnx(tmp_path / "net.onnx"), write_vnnlib(tmp_path / "p.vnnlib", BOX + "(assert (<= Y_0 Y_1))\n")
    assert "--set" in error_of(capsys, ["verify", str(net), str(spec), "--set", "seed=1"])
    assert "specification" in error_of(capsys, ["verify", str(net)])
    assert "--instances" in error_of(capsys, ["verify", "--instances", "x.csv", str(net)])


# --------------------------------------------------------------------------- --instances

@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    if not TEST.is_dir():
        pytest.skip(f"VNN-COMP sanity instances not found in {TEST}")
    out = tmp_path_factory.mktemp("bench") / "out"
    torch.set_num_threads(1)
    proc = threedb("verify", "--instances", str(TEST / "test_instances.csv"), "--out", str(out), "--timeout", "60")
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    (out.parent / "stdout.txt").write_text(stdout)
    return out


def results_rows(out: Path) -> list[list[str]]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.reader(f))


def test_instances_give_every_known_verdict_in_vnncomp_format(benchmark):
    rows = results_rows(benchmark)
    assert [(r[1], r[2]) for r in rows] == list(KNOWN)     # the csv's order
    for benchmark_name, net, spec, prepare, result, run in rows:
        assert benchmark_name == "test" and result == KNOWN[(net, spec)]
        assert float(prepare) >= 0 and float(run) >= 0
    # the same verdicts as the tools of VNN-COMP 2021 that decided them (the shipped results files)
    theirs = {}
    for path in RESULTS.glob("*.csv"):
        for r in csv.reader(path.read_text().splitlines()):
            if len(r) == 6 and r[0] == "test" and r[4] in VNNCOMP and path.stem != "RPM":   # RPM: known invalid
                theirs.setdefault((Path(r[1]).name, Path(r[2]).name), set()).add(VNNCOMP[r[4]])
    for r in rows:
        assert theirs[(r[1], r[2])] == {r[4]}
    summary = json.loads((benchmark / "summary.json").read_text())
    assert summary["counts"] == {"sat": 1, "unsat": 4, "timeout": 0, "unknown": 0, "error": 0}
    assert summary["solved"] == 5 and summary["instances"] == summary["done"] == 5 and summary["errors"] == []
    assert summary["median_time_solved"] == pytest.approx(float(np.median([float(r[5]) for r in rows])))
    sat = sorted((benchmark / "counterexamples").iterdir())
    assert [p.name for p in sat] == ["test_sat__test_prop.counterexample"]
    assert_counterexample(sat[0].read_text(), TEST / "test_sat.onnx", TEST / "test_prop.vnnlib")
    table = (benchmark.parent / "stdout.txt").read_text()
    assert all(f"{net}  {spec}" in table for net, spec in KNOWN) and "solved 5" in table


def test_instances_resume_skips_what_is_done(benchmark, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(benchmark, out)
    before = (out / "results.csv").read_text()
    capsys.readouterr()
    assert main(["verify", "--instances", str(TEST / "test_instances.csv"), "--out", str(out), "--resume"]) == 0
    assert "5 of 5 instances already" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == before
    # killed while writing the last row: the torn line is dropped and only that instance is redone
    lines = before.splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:3]) + lines[3][:12])
    assert main(["verify", "--instances", str(TEST / "test_instances.csv"), "--out", str(out), "--resume",
                 "--timeout", "60"]) == 0
    err = capsys.readouterr().err
    assert "3 of 5 instances already" in err and "4/5 test_sat.onnx test_prop.vnnlib: sat" in err
    rows = results_rows(out)
    assert [(r[1], r[2], r[4]) for r in rows] == [(n, s, v) for (n, s), v in KNOWN.items()]
    assert len((out / "instances.jsonl").read_text().splitlines()) == 5
    # a fresh run into a directory with results is refused
    assert "--resume" in error_of(capsys, ["verify", "--instances", str(TEST / "test_instances.csv"),
                                           "--out", str(out)])


def test_a_broken_instance_is_error_and_the_run_goes_on(tmp_path, capsys):
    linear_onnx(tmp_path / "net.onnx")
    write_vnnlib(tmp_path / "ok.vnnlib", BOX + "(assert (<= Y_0 -1))\n")   # relu >= 0 > -1: unsat
    write_onnx(tmp_path / "sigmoid.onnx", [helper.make_node("Sigmoid", ["x"], ["y"], name="squash")])
    (tmp_path / "instances.csv").write_text("sigmoid.onnx,ok.vnnlib,10\nmissing.onnx,ok.vnnlib,10\n"
                                            "net.onnx,ok.vnnlib,10\n")
    out = tmp_path / "out"
    assert main(["verify", "--instances", str(tmp_path / "instances.csv"), "--out", str(out)]) == 0
    assert [r[4] for r in results_rows(out)] == ["error", "error", "unsat"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["error"] == 2 and summary["solved"] == 1
    messages = [e["message"] for e in summary["errors"]]
    assert "Sigmoid" in messages[0] and "squash" in messages[0] and "missing.onnx" in messages[1]


def test_malformed_instances_csv_names_file_and_line(tmp_path, capsys):
    (tmp_path / "instances.csv").write_text("a.onnx,b.vnnlib,10\na.onnx,b.vnnlib\n")
    line = error_of(capsys, ["verify", "--instances", str(tmp_path / "instances.csv"), "--out", str(tmp_path / "o")])
    assert "instances.csv:2" in line and "2 columns" in line


# --------------------------------------------------------------------------- CONFIG (the dataset job)

TINY_NET = '''from torch import nn


def make(inputs=48, hidden=10, classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


def tanh(inputs=48, classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes), nn.Tanh())
'''
SIZE, CLASSES, PER_CLASS = 4, 3, 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 3-class 4 x 4 RGB image folder (class c: channel c bright, plus noise; one image of class 0 filed
    under class 1: misclassified), a 48-10-10-3 ReLU MLP trained on it here, and a job config."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for c in range(CLASSES):
        for i in range(PER_CLASS):
            base = np.zeros((SIZE, SIZE, 3))
            base[..., c] = 0.6
            image = (np.clip(base + rng.normal(0, 0.2, base.shape), 0, 1) * 255).round().astype(np.uint8)
            filed = 1 if (c, i) == (0, 0) else c
            path = root / "data" / f"c{filed}" / f"{c}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
            xs.append(torch.tensor(image).permute(2, 0, 1).float() / 255)
            ys.append(c)
    (root / "tiny_net.py").write_text(TINY_NET)
    namespace: dict = {}
    exec(TINY_NET, namespace)
    torch.manual_seed(0)
    model = namespace["make"]()
    x, y = torch.stack(xs), torch.tensor(ys)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), root / "w.pt")
    config = {"seed": 0, "device": "cpu", "data": {"root": "data", "batch_size": 4},
              "model": {"file": "tiny_net.py", "class": "make", "weights": "w.pt", "resolution": SIZE},
              "verification": {"eps": 0.0, "timeout": 120, "distortion": "linf", "max_eps": 0.4},
              "output": "out"}
    (root / "job.yaml").write_text(yaml.safe_dump(config))
    return root


@pytest.fixture(scope="module")
def minima(tiny) -> list[dict]:
    """Rows of the job at eps 0 with the minimum L-inf distortion (searched within 0.4) of every example."""
    torch.set_num_threads(1)
    assert main(["verify", str(tiny / "job.yaml"), "--out", str(tiny / "minima")]) == 0
    return [json.loads(line) for line in (tiny / "minima" / "examples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def at_median(tiny, minima) -> tuple[Path, float]:
    """The job at eps = the median exact minimum distortion, without the distortion step."""
    exact = sorted(r["distortion"]["distortion"] for r in minima if r["status"] != "misclassified")
    eps = float(np.median(exact))
    out = tiny / "median"
    torch.set_num_threads(1)
    assert main(["verify", str(tiny / "job.yaml"), "--out", str(out), "--set", f"verification.eps={eps!r}",
                 "--set", "verification.distortion=none", "--set", "verification.max_eps=null"]) == 0
    return out, eps


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]


def test_minimum_distortions_are_exact_and_the_clean_predictions_direct(tiny, minima):
    assert len(minima) == CLASSES * PER_CLASS
    mis = [r for r in minima if r["status"] == "misclassified"]
    assert [r["id"] for r in mis] == ["c1/0_0"] and mis[0]["clean_prediction"] == 0 and "distortion" not in mis[0]
    for r in minima:
        if r["status"] != "misclassified":
            assert r["status"] == "verified" and r["verdict"] == "unsat"   # eps 0: nothing to change
            d = r["distortion"]
            # the minimum lies on the decision boundary: another class ties with the label there
            assert d["status"] == "optimal" and d["gap"] <= 1e-4 and d["margin"] >= -1e-4
            assert 0 < d["lower_bound"] <= d["distortion"] <= 0.4


def test_bisection_finds_the_same_minima(tiny, minima):
    out = tiny / "bisect"
    assert main(["verify", str(tiny / "job.yaml"), "--out", str(out), "--set", "data.max_examples=4",
                 "--set", "verification.distortion_method=bisect"]) == 0
    exact = {r["id"]: r["distortion"] for r in minima if r.get("distortion")}
    rows = [r for r in rows_of(out) if r.get("distortion")]
    assert len(rows) >= 3
    for r in rows:
        d, m = r["distortion"], exact[r["id"]]
        assert d["status"] == "optimal" and d["lower_bound"] <= m["distortion"] + 1e-6 <= d["distortion"] + 2e-6
        assert d["distortion"] - d["lower_bound"] <= 1e-4 + 1e-9


def test_verdicts_match_the_minimum_distortions(tiny, minima, at_median):
    """verified iff the exact minimum distortion (a separate MILP) exceeds eps; adversarial examples
    are confirmed again here with the torch model and lie in the ball."""
    out, eps = at_median
    rows = rows_of(out)
    assert [r["id"] for r in rows] == [r["id"] for r in minima]
    job = load_verify_config(tiny / "job.yaml")
    from threedb.evaluators.jobs.config import model_spec
    from threedb.evaluators.jobs.data import iterate_batches, load_job_model, open_dataset

    spec, base = model_spec(job.schema.model, job)
    job_model = load_job_model(spec, base_dir=base, device=torch.device("cpu"))
    model = job_model.model
    images = next(iterate_batches(open_dataset(job), [r["dataset_index"] for r in rows], job_model.preprocess,
                                  len(rows), torch.device("cpu"))).x
    seen = set()
    for r, m, x in zip(rows, minima, images):
        seen.add(r["status"])
        if r["status"] == "misclassified":
            continue
        minimum = m["distortion"]["distortion"]
        if minimum > eps + 1e-4:
            assert r["status"] == "verified", (r, minimum)
        elif minimum < eps - 1e-4:
            assert r["status"] == "adversarial", (r, minimum)
        if r["status"] == "adversarial":
            adv = np.load(out / r["adversarial"]["file"])
            assert adv.shape == (3, SIZE, SIZE) and adv.min() >= 0 and adv.max() <= 1
            assert np.abs(adv - x.double().numpy()).max() <= eps + 1e-9
            logits = model(torch.tensor(adv, dtype=torch.float32)[None])[0]
            others = [j for j in range(CLASSES) if j != r["label"]]
            assert logits[others].max() >= logits[r["label"]]
            assert minimum <= r["adversarial"]["linf"] + 1e-6
    assert {"verified", "adversarial", "misclassified"} <= seen


def test_report_counts_add_up(at_median):
    out, eps = at_median
    rows = rows_of(out)
    report = json.loads((out / "report.json").read_text())
    assert report["format"] == "threedb-robustness-report" and report["job"] == "verify"
    head, n = report["headline"], len(rows)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("verified", "adversarial", "misclassified",
                                                                "timeout", "unknown", "error")}
    assert sum(head[f"count.{s}"] for s in counts) == n == head["examples"]
    assert all(head[f"count.{s}"] == k for s, k in counts.items())
    assert head["verified_accuracy"] == counts["verified"] / n
    assert head["adversarial_error_lower"] == (counts["adversarial"] + counts["misclassified"]) / n
    assert head["adversarial_error_upper"] == 1 - head["verified_accuracy"]
    pgd = sum(r["status"] == "misclassified" or r["pgd_adversarial"] for r in rows) / n
    assert head["pgd_error"] == pgd <= head["adversarial_error_lower"]
    assert head["clean_accuracy"] == (n - counts["misclassified"]) / n
    unstable = report["tables"][2]
    assert [row[1] for row in unstable["rows"]] == [10, 10]
    for row in unstable["rows"]:
        assert row[2] >= row[3] >= 0        # symbolic bounds never leave more unstable ReLUs than intervals
    for entry in report["plots"]:
        assert (out / entry["png"]).stat().st_size > 1000
    # the dashboard's Robustness tab lists it like the attack and certify reports
    from threedb.dashboard.reports import Report

    shown = Report(out)
    shown.refresh()
    assert shown.info()["state"] == "ready" and shown.info()["job"] == "verify"


def test_resume_after_a_kill_redoes_nothing(at_median, tmp_path):
    out, eps = at_median
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    (resumed / "report.json").unlink()
    lines = (out / "examples.jsonl").read_text().splitlines(keepends=True)
    (resumed / "examples.jsonl").write_text("".join(lines[:6]) + lines[6][:30])   # killed while writing row 6
    config = load_verify_config(Path(out.parent / "job.yaml"), overrides={
        "verification.eps": eps, "verification.distortion": "none", "verification.max_eps": None})
    seen: list[int] = []
    run_verify_job(config, out=resumed, resume=True, on_example=lambda ex: seen.append(ex["index"]), quiet=True)
    assert seen == list(range(6, len(lines)))

    def stable(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("time", "seconds", "steps")} for r in rows]

    assert stable(rows_of(resumed)) == stable(rows_of(out))
    a, b = (json.loads((d / "report.json").read_text())["headline"] for d in (out, resumed))
    assert {k: v for k, v in a.items() if "seconds" not in k} == {k: v for k, v in b.items() if "seconds" not in k}


def test_a_model_that_is_not_a_chain_is_one_error_naming_the_layer(tiny, capsys):
    line = error_of(capsys, ["verify", str(tiny / "job.yaml"), "--out", str(tiny / "tanh"),
                             "--set", "model.class=tanh", "--set", "model.weights=null"])
    assert "job.yaml: model:" in line and "Tanh" in line and "cannot be verified" in line
    assert not (tiny / "tanh").exists()


@pytest.mark.parametrize("overrides, key", [
    (["verification.eps=2"], "verification.eps"),
    (["verification.distortion=l1", "verification.distortion_method=bisect"], "verification.distortion_method"),
    (["verification.distortion=none"], "verification.max_eps"),
    (["verification.tighten=exact"], "verification.tighten"),
    (["verification.targets=[7]"], "verification.targets")])
def test_bad_config_is_one_error_naming_file_and_key(tiny, capsys, overrides, key):
    sets = [arg for o in overrides for arg in ("--set", o)]
    line = error_of(capsys, ["verify", str(tiny / "job.yaml"), "--out", str(tiny / "bad"), *sets])
    assert f"{key}" in line and not (tiny / "bad").exists()


def test_help_lists_verify(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "verify" in capsys.readouterr().out
