"""Model loading (every spec form, offline) and the classification/detection/segmentation evaluators."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from threedb.evaluators.base import Evaluator, OutputSpec, load_evaluator
from threedb.evaluators.classification import ClassificationEvaluator
from threedb.evaluators.detection import DetectionEvaluator, mask_box
from threedb.evaluators.models import load_model
from threedb.evaluators.preprocess import Preprocess
from threedb.evaluators.segmentation import SegmentationEvaluator
from threedb.sim.errors import ConfigError

TINY = textwrap.dedent("""
    import torch
    from torch import nn

    class TinyNet(nn.Module):
        def __init__(self, num_classes=3, width=4):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
""")
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """A tiny CNN module file (importable as tiny_models_ev), its weights and some images."""
    (tmp_path / "tiny_models_ev.py").write_text(TINY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    module = importlib.import_module("tiny_models_ev")
    torch.manual_seed(0)
    net = module.TinyNet().eval()
    torch.save(net.state_dict(), tmp_path / "tiny.pth")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 20, 24, 3), dtype=np.uint8)
    expected = net(Preprocess(tuple(NORM["mean"]), tuple(NORM["std"]), (16, 16))(images)).detach()
    (tmp_path / "labels3.json").write_text(json.dumps(["a", "b", "c"]))
    (tmp_path / "labels5.json").write_text(json.dumps(list("abcde")))
    yield module, net, images, expected
    import sys
    sys.modules.pop("tiny_models_ev", None)


def _spec(**kw):
    return {"normalization": NORM, "resolution": [16, 16], "device": "cpu", **kw}


def test_preprocess_resizes_whole_image_and_normalises():
    img = np.full((10, 30, 3), 255, dtype=np.uint8)
    x = Preprocess((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (8, 8))([img, img[:5]])
    assert x.shape == (2, 3, 8, 8) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))


def test_spec_forms_give_same_predictions(tiny, tmp_path):
    module, net, images, expected = tiny
    scripted = torch.jit.script(net)
    torch.jit.save(scripted, str(tmp_path / "tiny_ts.pt"))
    specs = [
        _spec(module="tiny_models_ev", **{"class": "TinyNet"}, weights="tiny.pth", label_map="labels3.json"),
        _spec(module="tiny_models_ev:TinyNet", weights=str(tmp_path / "tiny.pth")),
        _spec(file="tiny_models_ev.py", **{"class": "TinyNet"}, weights="tiny.pth"),
        _spec(torchscript="tiny_ts.pt", label_map="labels3.json"),
    ]
    for spec in specs:
        loaded = load_model(spec, base_dir=tmp_path)
        out = loaded.predict(images)
        assert torch.allclose(out, expected, atol=1e-5), spec
        assert loaded.device.type == "cpu"
    # checkpoint dict with DataParallel prefixes
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "ckpt.pth")
    loaded = load_model(_spec(module="tiny_models_ev", **{"class": "TinyNet"}, weights="ckpt.pth"), base_dir=tmp_path)
    assert torch.allclose(loaded.predict(images), expected, atol=1e-5)


def test_onnx_model(tiny, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    _, net, images, expected = tiny
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    inits = [numpy_helper.from_array(sd["conv.weight"], "cw"), numpy_helper.from_array(sd["conv.bias"], "cb"),
             numpy_helper.from_array(sd["fc.weight"], "fw"), numpy_helper.from_array(sd["fc.bias"], "fb")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "tiny.onnx")
    spec = _spec(onnx="tiny.onnx", label_map="labels3.json")
    del spec["resolution"]  # taken from the graph's fixed input size
    loaded = load_model(spec, base_dir=tmp_path)
    assert loaded.preprocess.resolution == (16, 16)
    assert torch.allclose(loaded.predict(images), expected, atol=1e-4)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="bad.onnx"):
        load_model(_spec(onnx="bad.onnx"), base_dir=tmp_path)


def test_torchvision_resnet18_local_weights(tmp_path):
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    (tmp_path / "labels10.json").write_text(json.dumps([str(i) for i in range(10)]))
    images = np.random.default_rng(1).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    loaded = load_model({"torchvision": "resnet18", "weights": "r18.pth", "num_classes": 10, "resolution": [32, 32],
                         "label_map": "labels10.json", "device": "cpu"}, base_dir=tmp_path)
    assert torch.allclose(loaded.predict(images), net(loaded.preprocess(images)).detach(), atol=1e-4)
    assert loaded.num_classes == 10
    # weights of 10 classes into a 1000-class architecture: shape mismatch names the keys
    with pytest.raises(ConfigError, match=r"r18\.pth.*fc\.weight"):
        load_model({"torchvision": "resnet18", "weights": "r18.pth", "device": "cpu"}, base_dir=tmp_path)


def test_original_pretrained_form_refused():
    with pytest.raises(ConfigError, match="offline") as err:
        load_model({"module": "torchvision.models", "class": "resnet18", "args": {"pretrained": True}, "device": "cpu"},
                   file="/x/exp.yaml")
    assert err.value.key == "inference.args.pretrained" and err.value.file == "/x/exp.yaml"
    with pytest.raises(ConfigError, match="local file"):
        load_model({"torchvision": "resnet18", "args": {"weights": "IMAGENET1K_V1"}})


def test_bad_inputs_give_clear_errors(tiny, tmp_path):
    cls = {"class": "TinyNet"}
    cases = [
        (_spec(module="tiny_models_ev", **cls, weights="nope.pth"), "inference.weights", "not found"),
        (_spec(torchscript="nope.pt"), "inference.torchscript", "not found"),
        (_spec(module="tiny_models_ev", **cls, weights="tiny.pth", label_map="labels5.json"),
         "inference.label_map", "outputs 3 classes.*5 names"),
        (_spec(module="tiny_models_ev", **cls, weights="tiny.pth", bogus=1), "inference.bogus", "unknown"),
        (_spec(module="tiny_models_ev"), "inference.class", "class"),
        (_spec(module="tiny_models_ev", **cls, device="tpu"), "inference.device", "device"),
        (_spec(module="tiny_models_ev", **cls, normalization={"mean": [0, 0, 0], "std": [1, 0, 1]}),
         "inference.normalization.std", "three numbers"),
    ]
    (tmp_path / "corrupt.pth").write_bytes(b"\x00garbage" * 10)
    cases.append((_spec(module="tiny_models_ev", **cls, weights="corrupt.pth"), "inference.weights", "corrupt.pth"))
    torch.save({k: v for k, v in tiny[1].state_dict().items() if k != "fc.bias"} | {"extra.w": torch.zeros(1)},
               tmp_path / "keys.pth")
    cases.append((_spec(module="tiny_models_ev", **cls, weights="keys.pth"), "inference.weights",
                  "missing keys: fc.bias.*unexpected keys: extra.w"))
    for spec, key, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            load_model(spec, base_dir=tmp_path, file=tmp_path / "exp.yaml")
        assert err.value.key == key, (spec, err.value)
        assert "exp.yaml" in str(err.value)
    # a pickled arbitrary object is never unpickled
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ConfigError, match="evil.pth"):
        load_model(_spec(module="tiny_models_ev", **cls, weights="evil.pth"), base_dir=tmp_path)


# --------------------------------------------------------------------------- evaluators

def test_classification_topk_and_acceptable_sets(tmp_path):
    (tmp_path / "map.json").write_text(json.dumps({"mug": 2, "cup": [0, 1]}))
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0], [3.0, 0.0, 1.0, 2.0], [0.0, 0.5, 1.0, 2.0]])
    meta = [{"object_uid": "mug"}, {"object_uid": "cup"}, {"model": "cup.blend"}]
    top1 = load_evaluator({"module": "threedb.evaluators.classification",
                           "args": {"classmap_path": "map.json", "topk": 1}}, base_dir=tmp_path)
    assert isinstance(top1, ClassificationEvaluator)
    assert [o.name for o in top1.declare_outputs()] == ["is_correct", "loss", "prediction"]
    rows = top1.evaluate(logits, meta)
    assert [r["is_correct"] for r in rows] == [True, True, False]
    assert [r["prediction"] for r in rows] == [[2], [0], [3]]
    lp = torch.log_softmax(logits, 1)
    assert rows[0]["loss"] == pytest.approx(float(-lp[0, 2]))
    assert rows[1]["loss"] == pytest.approx(float(-(lp[1, 0] + lp[1, 1]) / 2))
    top3 = ClassificationEvaluator(classmap={"mug": 2, "cup": [0, 1]}, topk=3)
    rows = top3.evaluate(logits, meta)
    assert [r["is_correct"] for r in rows] == [True, True, True]
    assert rows[2]["prediction"] == [3, 2, 1]
    assert top3.declare_outputs()[2] == OutputSpec("prediction", (3,), "int64")
    with pytest.raises(ConfigError, match=r"'bowl'.*map\.json") as err:
        top1.check_objects(["mug", "bowl"])
    assert "classmap_path" in err.value.key


def test_evaluator_loading_forms_and_errors(tmp_path):
    (tmp_path / "map.json").write_text(json.dumps({"mug": 2}))
    assert isinstance(load_evaluator({"type": "detection"}), DetectionEvaluator)
    (tmp_path / "my_eval.py").write_text(textwrap.dedent("""
        from threedb.evaluators.base import Evaluator, OutputSpec
        class Always(Evaluator):
            def __init__(self, value=True):
                self.value = value
            def declare_outputs(self):
                return [OutputSpec("is_correct", (), "bool")]
            def evaluate(self, batch_outputs, jobs_meta):
                return [{"is_correct": self.value} for _ in jobs_meta]
    """))
    ev = load_evaluator({"file": "my_eval.py", "args": {"value": False}}, base_dir=tmp_path)
    assert isinstance(ev, Evaluator) and ev.evaluate(None, [{}]) == [{"is_correct": False}]
    with pytest.raises(ConfigError, match="unknown evaluator type"):
        load_evaluator({"type": "nope"})
    with pytest.raises(ConfigError, match="topk") as err:
        load_evaluator({"type": "classification", "args": {"classmap_path": "map.json", "topk": 0}},
                       base_dir=tmp_path, file=tmp_path / "exp.yaml")
    assert err.value.key == "evaluation.args.topk" and "exp.yaml" in str(err.value)
    with pytest.raises(ConfigError, match="not found"):
        load_evaluator({"type": "classification", "args": {"classmap_path": "missing.json"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not accept"):
        load_evaluator({"file": "my_eval.py", "args": {"bogus": 1}}, base_dir=tmp_path)


def test_detection_boxes_at_other_resolution():
    mask = np.zeros((100, 200), dtype=bool)   # render: 100 x 200
    mask[20:60, 50:150] = True                 # box x 0.25..0.75, y 0.2..0.6
    assert mask_box(mask).tolist() == pytest.approx([0.25, 0.2, 0.75, 0.6])
    ev = DetectionEvaluator(classmap={"mug": [7]}, max_num_boxes=4)
    ev.input_size = (50, 50)                    # model sees the whole render squashed to 50 x 50
    outputs = [
        {"boxes": torch.tensor([[12.5, 10.0, 37.5, 30.0], [0.0, 0.0, 5.0, 5.0]]),
         "labels": torch.tensor([7, 3]), "scores": torch.tensor([0.9, 0.8])},
        {"boxes": torch.tensor([[12.5, 10.0, 37.5, 30.0]]), "labels": torch.tensor([3]), "scores": torch.tensor([0.9])},
        {"boxes": torch.tensor([[12.5, 10.0, 37.5, 30.0]]), "labels": torch.tensor([7]), "scores": torch.tensor([0.1])},
    ]
    rows = ev.evaluate(outputs, [{"object_uid": "mug", "mask": mask}] * 3)
    r0, r1, r2 = rows
    assert r0["is_correct"] and r0["iou"] == pytest.approx(1.0)
    assert (r0["precision"], r0["recall"], r0["precision_nolabel"], r0["recall_nolabel"]) == (0.5, 1.0, 0.5, 1.0)
    assert r0["boxes"][0] == pytest.approx([0.25, 0.2, 0.75, 0.6, 0.9, 7])
    assert r0["boxes"][1][5] == 3 and r0["boxes"][2] == [-1.0] * 6 and len(r0["boxes"]) == 4
    assert not r1["is_correct"] and r1["recall"] == 0 and r1["recall_nolabel"] == 1.0
    assert not r2["is_correct"] and r2["precision"] == 1.0 and r2["boxes"][0] == [-1.0] * 6  # below score threshold
    # per-job input size and an instance map (occluder = 2 is no target)
    instance = np.zeros((100, 200), dtype=np.uint8)
    instance[20:60, 50:150] = 1
    instance[0:10, 0:10] = 2
    row = ev.evaluate([{"boxes": torch.tensor([[50.0, 20.0, 150.0, 60.0]]), "labels": torch.tensor([7]),
                        "scores": torch.tensor([1.0])}],
                      [{"object_uid": "mug", "instance": instance, "input_size": (100, 200)}])[0]
    assert row["is_correct"] and row["iou"] == pytest.approx(1.0)
    assert [o.name for o in ev.declare_outputs()][-1] == "boxes" and ev.output_type == "bboxes"


def test_segmentation_iou():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True                       # 16 px
    logits = torch.zeros(2, 3, 4, 4)            # model at half resolution, classes bg/1/2
    logits[0, 0] = 1.0
    logits[0, 2, 1:3, 1:3] = 2.0                # exactly the object, as class 2
    logits[1, 0] = 1.0
    logits[1, 1, 1:3, 1:4] = 2.0                # object plus a column to the right, class 1
    ev = SegmentationEvaluator(classmap={"mug": 2})
    meta = [{"object_uid": "mug", "mask": mask}] * 2
    rows = ev.evaluate(logits, meta)
    # bilinear upsampling: a pixel a quarter into the object (logit 2 * 0.25 < 1) stays background
    assert rows[0]["iou"] == pytest.approx(1.0) and rows[0]["iou_class"] == pytest.approx(1.0)
    assert rows[0]["is_correct"] and rows[0]["prediction"] == [2] and rows[0]["pixel_accuracy"] == 1.0
    assert rows[1]["iou"] == pytest.approx(16 / 24) and rows[1]["iou_class"] == 0.0
    assert not rows[1]["is_correct"] and rows[1]["prediction"] == [1]
    assert rows[1]["iou_background"] == pytest.approx(40 / 48)
    binary = SegmentationEvaluator().evaluate(torch.where(torch.from_numpy(mask), 3.0, -3.0)[None], meta[:1])[0]
    assert binary["iou"] == 1.0 and binary["mean_iou"] == 1.0
