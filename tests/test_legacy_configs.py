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


LEGACY_HEAD = f"""base_config: {QUICKSTART}
policy: {{module: threedb.policies.random_search, samples: 2}}
"""


def legacy(tmp_path: Path, controls: str):
    from threedb.sim.config import load_config as load

    return load(write(tmp_path / "legacy.yaml", LEGACY_HEAD + "controls:\n" + controls))


def test_a_plain_list_is_a_set_of_choices_and_a_parenthesised_value_a_number(tmp_path: Path) -> None:
    from threedb.controls.params import Choices, Fixed

    exp = legacy(tmp_path, "  - module: threedb.controls.preprocessing.imagenet_c\n"
                           "    corruption_name: fog\n    severity: [1, 2, 3, 4, 5]\n"
                           "  - module: threedb.controls.blender.camera\n    zoom_factor: (0.9)\n"
                           "    view_point_x: 0\n    view_point_y: -1\n    view_point_z: 0.3\n    aperture: 8\n"
                           "    focal_length: 50\n")
    corruption, camera = exp.controls
    assert corruption.domains["severity"] == Choices((1, 2, 3, 4, 5))
    assert camera.domains["zoom_factor"] == Fixed(0.9)


def test_parameters_left_out_are_searched_over_the_original_domains(tmp_path: Path) -> None:
    from threedb.controls.params import Choices, Range

    exp = legacy(tmp_path, "  - module: threedb.controls.blender.camera\n    view_point_z: (0, 1)\n"
                           "  - module: threedb.controls.blender.mug_liquid\n"
                           "  - module: threedb.controls.blender.material\n")
    camera, liquid, material = exp.controls
    assert camera.domains["zoom_factor"] == Range(0.5, 2.0) and camera.domains["aperture"] == Range(1.0, 32.0)
    assert camera.domains["focal_length"] == Range(10.0, 400.0) and camera.domains["view_point_x"] == Range(-1, 1)
    assert liquid.domains["ratio_milk"] == Range(0.0, 1.0) and liquid.domains["ratio_coffee"] == Range(0.0, 1.0)
    assert isinstance(material.domains["material"], Choices) and "zebra" in material.domains["material"].values
    notes = "\n".join(exp.notes)
    assert "controls[0]: original control module threedb.controls.blender.camera -> camera; " \
        "searched view_point_x [-1, 1]" in notes
    assert "searched focal_length [10, 400]" in notes and "searched ratio_milk [0, 1]" in notes


def test_the_original_domains_and_names_are_accepted(tmp_path: Path) -> None:
    from threedb.controls.params import Choices, Fixed, Range

    exp = legacy(tmp_path, "  - module: threedb.controls.blender.camera\n    zoom_factor: 0.3\n"
                           "  - module: threedb.controls.blender.orientation\n    rotation_y: 3.35\n"
                           "  - module: threedb.controls.blender.material\n"
                           "    replacement_material: [keep_original, zebra.blend]\n"
                           "  - module: threedb.controls.blender.occlusion\n    zoom: (0.01, 0.4)\n    scale: 0.5\n"
                           "    occlusion_ratio: !!python/tuple [0.1, 1.0]\n    occluder: [0, 2]\n"
                           "  - module: threedb.controls.blender.position\n    offset_X: 0\n    offset_Y: (0, 0.3)\n"
                           "  - module: threedb.controls.blender.imagenet_c_corruption\n"
                           "    corruption_name: [snow, fog]\n    severity: 1\n")
    camera, orientation, material, occlusion, position, corruption = exp.controls
    assert camera.domains["zoom_factor"] == Fixed(0.3) and orientation.domains["rotation_y"] == Fixed(3.35)
    assert material.domains["material"] == Choices(("keep", "zebra"))
    # 3DB's zoom is the occluder's fraction of the way from the object to the camera: distance = 1 - zoom
    assert occlusion.domains["distance"] == Range(0.6, 0.9)   # 0.99 clamped into threedb's domain
    assert occlusion.domains["occluder_size"] == Fixed(0.5)
    assert occlusion.domains["occlusion_ratio"] == Range(0.1, 0.8)
    assert occlusion.domains["occluder"] == Choices(("box", "cylinder"))   # 3DB's occluders were indices
    assert occlusion.domains["direction"] == Choices(tuple(range(8)))
    assert position.domains["offset_x"] == Fixed(0) and position.domains["offset_y"] == Range(0, 0.3)
    assert corruption.kind == "corruption" and corruption.domains["corruption_name"] == Choices(("snow", "fog"))
    notes = "\n".join(exp.notes)
    assert "occlusion_ratio '(0.1, 1.0)' clamped to threedb's [0.01, 0.8] fraction" in notes


def test_our_own_entries_keep_their_meaning(tmp_path: Path) -> None:
    """Only entries naming an original control module get the original's semantics."""
    from threedb.controls.params import Fixed, Range

    exp = legacy(tmp_path, "  - type: camera\n    zoom_factor: [0.5, 1.5]\n")
    assert exp.controls[0].domains["zoom_factor"] == Range(0.5, 1.5)
    assert exp.controls[0].domains["aperture"] == Fixed(8.0)


def test_configs_written_by_yaml_dump_with_python_tuples_and_aliases(tmp_path: Path) -> None:
    """3DB's unit-test configs were written by ``yaml.dump``: ranges as ``!!python/tuple`` (shared through
    anchors), discrete values as plain lists."""
    from threedb.controls.params import Choices, Range

    exp = legacy(tmp_path, "- S: &unit !!python/tuple\n  - 0\n  - 1\n  V: *unit\n  dir_x: !!python/tuple [-1, 1]\n"
                           "  intensity:\n  - 1000\n  - 10000\n  module: threedb.controls.blender.pointlight\n")
    light = exp.controls[0]
    assert light.kind == "light"
    assert light.domains["S"] == light.domains["V"] == Range(0, 1) and light.domains["dir_x"] == Range(-1, 1)
    assert light.domains["intensity"] == Choices((1000.0, 10000.0))
    assert light.domains["distance"] == Range(5.0, 20.0)   # left out: searched as the original did


def test_a_grid_search_base_with_samples_serves_its_children(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", f"base_config: {QUICKSTART}\n"
          "policy: {module: threedb.policies.grid_search, samples: 5}\n")
    child = write(tmp_path / "child.yaml", "base_config: base.yaml\ncontrols:\n"
                  "  - module: threedb.controls.blender.orientation\n    rotation_X: 0\n    rotation_Y: 0\n"
                  "    rotation_Z: (-3.14, 2.35)\n")
    exp = load_config(child)
    assert exp.policy == {"type": "grid", "samples_per_dim": 5}
    assert "policy.samples 5 -> policy.samples_per_dim (grid search)" in exp.notes
