"""Configs written as for the original 3DB keep their original meaning (issue 17, "Original 3DB configs")."""
from __future__ import annotations

from pathlib import Path

from threedb.sim.config import load_config

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_child_that_changes_its_policy_replaces_the_block(tmp_path: Path) -> None:
    """3DB's inheritance replaced top-level sections; a child's grid_search on a base's random policy
    must not inherit ``samples`` (it failed with "grid has no option samples" / "type or module")."""
    write(tmp_path / "base.yaml", f"base_config: {QUICKSTART}\npolicy: {{type: random, samples: 8}}\n")
    child = write(tmp_path / "child.yaml", "base_config: base.yaml\n"
                  "policy: {module: threedb.policies.grid_search, samples_per_dim: 3}\n")
    assert load_config(child).policy == {"type": "grid", "samples_per_dim": 3}
    # the other way round, and through --set: the policy starts afresh
    exp = load_config(QUICKSTART, overrides={"policy.type": "grid", "policy.samples_per_dim": 2})
    assert exp.policy == {"type": "grid", "samples_per_dim": 2}
    exp = load_config(QUICKSTART, overrides={"policy": {"type": "sobol", "samples": 4}})
    assert exp.policy == {"type": "sobol", "samples": 4}
    # the same plugin refines: keys merge as before
    assert load_config(QUICKSTART, overrides={"policy.samples": 3}).policy == {"type": "random", "samples": 3,
                                                                               "paired": False}


def test_inference_and_evaluation_blocks_replace_when_their_plugin_changes(tmp_path: Path) -> None:
    child = write(tmp_path / "c.yaml", f"base_config: {QUICKSTART}\n"
                  "inference: {torchvision: resnet18, resolution: 64, label_map: classes.json}\n"
                  "evaluation: {module: threedb.evaluators.classification, args: {topk: 5}}\n")
    exp = load_config(child)
    assert exp.inference is not None and "weights" not in exp.inference and "class" not in exp.inference
    assert exp.inference["torchvision"] == "resnet18" and "args" not in exp.inference
    assert exp.evaluation == {"module": "threedb.evaluators.classification", "args": {"topk": 5}}
    # a new class in the same module keeps the module, drops the old class's arguments
    exp = load_config(QUICKSTART, overrides={"inference": {"class": "TinyResNet", "resolution": 32}})
    assert exp.inference == {"module": "threedb.evaluators.architectures", "class": "TinyResNet",
                             "resolution": 32}


def test_render_args_of_a_base_are_refined_by_a_child(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", f"base_config: {QUICKSTART}\nrender_args: {{resolution: 256, samples: 16}}\n")
    child = write(tmp_path / "child.yaml", "base_config: base.yaml\nrender_args: {samples: 4}\n")
    exp = load_config(child)
    assert exp.render.resolution == (256, 256) and exp.render.samples == 4
