"""Tests of threedb.sim.config: loading, base_config merging with provenance, legacy 3DB configs,
validation messages, overrides and the resolved dict. Fast; no Blender."""
from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path

import pytest
import yaml

from threedb.controls.params import Choices, Fixed, Range
from threedb.sim.config import (
    AssetsConfig, ConfigError, Experiment, experiment_from_dict, is_legacy, load_config, parse_override,
)
from threedb.sim.render.settings import RenderSettings

REPO = Path(__file__).resolve().parents[1]
SCENE_CONTROLS = REPO / "controls" / "scene"
HAVE_BUILTINS = (SCENE_CONTROLS / "orientation.py").is_file() and (SCENE_CONTROLS / "camera.py").is_file()
needs_builtins = pytest.mark.skipif(not HAVE_BUILTINS, reason="built-in orientation/camera controls not written yet")

TOY_CONTROL = '''
from threedb.controls.base import SceneControl
from threedb.controls.params import Param


class Control(SceneControl):
    """A test control."""

    name = "toy"
    params = (
        Param("zoom_factor", "float", 1.0, "zoom", low=0.5, high=2.0),
        Param("distance", "float", 5.0, "distance", low=0.0, high=10.0, unit="m"),
        Param("count", "int", 1, "count", low=1, high=8),
        Param("mode", "choice", "a", "mode", choices=("a", "b", "c")),
    )
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A plugin control file in tmp_path."""
    return write(tmp_path / "toy.py", TOY_CONTROL)


def error_of(path: Path, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- basics

def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    exp = load_config(write(tmp_path / "x.yaml", "seed: 7\n"))
    assert isinstance(exp, Experiment)
    assert exp.seed == 7
    assert exp.render == RenderSettings()
    assert exp.assets == AssetsConfig()
    assert exp.controls == []
    assert exp.policy == {"type": "random", "samples": 10}
    assert exp.inference is None and exp.evaluation is None and exp.logging is None
    assert exp.notes == []
    assert exp.source == tmp_path / "x.yaml"
    assert exp.files == [tmp_path / "x.yaml"]


def test_empty_file_is_all_defaults(tmp_path: Path) -> None:
    exp = load_config(write(tmp_path / "x.yaml", "# nothing\n"))
    assert exp.seed == 0 and exp.render == RenderSettings()


def test_missing_file(tmp_path: Path) -> None:
    err = error_of(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err) and "does not exist" in str(err)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", """
        seed: 1
        render:
          samples: [1, 2
        policy: {type: random}
    """)
    err = error_of(path)
    assert err.file is not None and err.file.endswith("bad.yaml")
    assert "invalid YAML" in str(err)
    assert "line 4" in str(err)


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.yaml", """
        render:
          samples: 4
          samples: 8
    """)
    err = error_of(path)
    assert "duplicate key 'samples'" in str(err) and "line 3" in str(err)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "list.yaml", "- a\n- b\n"))
    assert "list.yaml" in str(err) and "mapping" in str(err)


# --------------------------------------------------------------------------- base_config

def test_three_level_chain_deep_merge(tmp_path: Path) -> None:
    root = write(tmp_path / "common" / "root.yaml", """
        seed: 1
        assets: {objects: [mug, duck], object_size: 2.0}
        render: {resolution: 64, samples: 8, passes: [depth, mask, uv]}
        policy: {type: grid, samples_per_dim: 3}
        inference: {module: torchvision.models, args: {pretrained: false, num_classes: 10}}
    """)
    mid = write(tmp_path / "mid" / "mid.yaml", """
        base_config: ../common/root.yaml
        render: {samples: 4}
        inference: {args: {num_classes: 5}}
    """)
    top = write(tmp_path / "top.yaml", """
        base_config: mid/mid.yaml
        seed: 3
        render: {passes: [uv]}
        assets: {objects: [teddy]}
    """)
    exp = load_config(top)
    assert exp.files == [root, mid, top]
    assert exp.seed == 3
    assert exp.render.resolution == (64, 64)        # from root
    assert exp.render.samples == 4                  # mid overrides root
    assert exp.render.passes == ("uv",)             # lists replace, not append
    assert exp.assets.objects == ("teddy",)
    assert exp.assets.object_size == 2.0            # sibling key of a merged mapping survives
    assert exp.policy == {"type": "grid", "samples_per_dim": 3}
    assert exp.inference == {"module": "torchvision.models", "args": {"pretrained": False, "num_classes": 5}}
    assert "base_config" not in exp.resolved


def test_error_names_the_file_that_wrote_the_value(tmp_path: Path) -> None:
    write(tmp_path / "root.yaml", "render: {samples: 0, resolution: 64}\nseed: 1\n")
    write(tmp_path / "mid.yaml", "base_config: root.yaml\nassets: {object_size: -1}\n")
    top = write(tmp_path / "top.yaml", "base_config: mid.yaml\nseed: 2\n")
    # object_size is written in mid.yaml (validated before render, as assets comes first)
    err = error_of(top)
    assert err.file is not None and err.file.endswith("mid.yaml"), str(err)
    assert err.key == "assets.object_size"
    assert "must be > 0, got -1" in str(err)

    write(tmp_path / "mid.yaml", "base_config: root.yaml\n")
    err = error_of(top)
    assert err.file is not None and err.file.endswith("root.yaml"), str(err)
    assert str(err).endswith("root.yaml: render.samples: must be >= 1, got 0")

    # a child fixing the base's bad value makes the chain valid
    write(tmp_path / "mid.yaml", "base_config: root.yaml\nrender: {samples: 2}\n")
    assert load_config(top).render.samples == 2


def test_relative_paths_resolve_against_the_file_that_wrote_them(tmp_path: Path) -> None:
    write(tmp_path / "shared" / "plugins" / "toy.py", TOY_CONTROL)
    (tmp_path / "shared" / "data").mkdir()
    write(tmp_path / "shared" / "base.yaml", """
        assets: {root: data}
        controls:
          - file: plugins/toy.py
            zoom_factor: [0.8, 1.2]
        inference: {label_map: maps/labels.json}
    """)
    top = write(tmp_path / "exp" / "top.yaml", "base_config: ../shared/base.yaml\nseed: 1\n")
    exp = load_config(top)
    assert exp.assets.root == (tmp_path / "shared" / "data").resolve()
    assert exp.controls[0].kind == "toy"
    assert exp.controls[0].domains["zoom_factor"] == Range(0.8, 1.2)
    assert exp.resolved["controls"][0]["file"] == str((tmp_path / "shared" / "plugins" / "toy.py").resolve())
    assert exp.inference == {"label_map": str((tmp_path / "shared" / "maps" / "labels.json").resolve())}
    assert exp.resolved["assets"]["root"] == str((tmp_path / "shared" / "data").resolve())


def test_assets_root_must_exist(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "assets: {root: no_such_folder}\n"))
    assert err.key == "assets.root" and "folder does not exist" in str(err)
    assert "no_such_folder" in str(err)


def test_base_config_cycle(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "base_config: b.yaml\nseed: 1\n")
    write(tmp_path / "b.yaml", "base_config: c.yaml\n")
    write(tmp_path / "c.yaml", "base_config: a.yaml\n")
    err = error_of(tmp_path / "a.yaml")
    assert "cycle" in str(err)
    assert "a.yaml -> " in str(err) and "b.yaml" in str(err) and "c.yaml" in str(err)
    assert err.key == "base_config"


def test_self_include_is_a_cycle(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "a.yaml", "base_config: ./a.yaml\n"))
    assert "cycle" in str(err)


def test_missing_base_config(tmp_path: Path) -> None:
    top = write(tmp_path / "top.yaml", "base_config: missing/base.yaml\n")
    err = error_of(top)
    assert err.file is not None and err.file.endswith("top.yaml")
    assert err.key == "base_config"
    assert "base.yaml" in str(err) and "does not exist" in str(err)


def test_base_config_must_be_a_path(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "top.yaml", "base_config: [a.yaml]\n"))
    assert err.key == "base_config" and "path" in str(err)


# --------------------------------------------------------------------------- validation messages

def test_unknown_top_level_key_suggests(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "rendr: {samples: 4}\n"))
    assert err.key == "rendr"
    assert "unknown key 'rendr' (did you mean 'render'?)" in str(err)
    assert "https://" not in str(err) and "type=" not in str(err)


def test_unknown_render_key_suggests(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "render: {sampels: 4}\n"))
    assert str(err).startswith(str(tmp_path / "x.yaml") + ": render.sampels: unknown key 'sampels'")
    assert "did you mean 'samples'?" in str(err)


def test_unknown_assets_key(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "assets: {object: [mug]}\n"))
    assert err.key == "assets.object" and "did you mean 'objects'?" in str(err)


@pytest.mark.parametrize("text, key, fragment", [
    ("seed: abc", "seed", "must be a whole number, got 'abc'"),
    ("seed: -1", "seed", "must be >= 0, got -1"),
    ("seed: 1.5", "seed", "must be a whole number, got 1.5"),
    ("render: {samples: many}", "render.samples", "must be a whole number, got 'many'"),
    ("render: {denoise: maybe}", "render.denoise", "must be true or false, got 'maybe'"),
    ("render: {passes: [dpeth]}", "render.passes[0]", "did you mean 'depth'?"),
    ("render: {resolution: 4}", "render.resolution", "between 8 and 16384"),
    ("render: [1, 2]", "render", "must be a mapping, got [1, 2]"),
    ("assets: {objects: mug}", "assets.objects", "write [mug] for just one"),
    ("assets: {objects: []}", "assets.objects", "at least one"),
    ("assets: {normalize: 1}", "assets.normalize", "must be true or false, got 1"),
    ("policy: {samples: 5}", "policy.type", "is required"),
    ("policy: {type: 3}", "policy.type", "must be a policy name"),
    ("inference: [resnet]", "inference", "must be a mapping"),
    ("controls: {type: toy}", "controls", "must be a list"),
])
def test_bad_values(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    err = error_of(write(tmp_path / "x.yaml", text + "\n"))
    assert err.key == key, str(err)
    assert fragment in str(err), str(err)
    assert "pydantic" not in str(err) and "type=" not in str(err)


def test_exact_message_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "configs" / "x.yaml", "render: {samples: 0}\n")
    err = error_of(Path("configs/x.yaml"))
    assert str(err) == "configs/x.yaml: render.samples: must be >= 1, got 0"
    assert err.value == 0


def test_several_errors_are_counted(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "seed: -1\nrender: {samples: 0, threads: -2}\n"))
    assert "(and 2 more)" in str(err)


# --------------------------------------------------------------------------- controls

def test_control_file_and_paren_ranges(tmp_path: Path, toy: Path) -> None:
    exp = load_config(write(tmp_path / "x.yaml", """
        controls:
          - file: toy.py
            zoom_factor: "(0.7, 1.3)"
            distance: (1, 4)
            count: 3
            mode: [a, c]
    """))
    (spec,) = exp.controls
    assert spec.name == "toy"
    assert spec.domains["zoom_factor"] == Range(0.7, 1.3)
    assert spec.domains["distance"] == Range(1.0, 4.0)
    assert spec.domains["count"] == Fixed(3)
    assert spec.domains["mode"] == Choices(("a", "c"))


def test_empty_range_message(tmp_path: Path, toy: Path) -> None:
    path = write(tmp_path / "x.yaml", """
        controls:
          - {file: toy.py, name: first}
          - {file: toy.py, name: second}
          - file: toy.py
            distance: [3.0, 1.0]
    """)
    err = error_of(path)
    assert err.key == "controls[2].distance"
    assert "controls[2].distance: range [3.0, 1.0] is empty; expected [0.0, 10.0]" in str(err)
    assert err.file is not None and err.file.endswith("x.yaml")


def test_control_error_in_base_names_base(tmp_path: Path, toy: Path) -> None:
    write(tmp_path / "base.yaml", "controls:\n  - file: toy.py\n    distance: (3, 1)\n")
    err = error_of(write(tmp_path / "top.yaml", "base_config: base.yaml\n"))
    assert err.file is not None and err.file.endswith("base.yaml")
    assert "controls[0].distance: range [3.0, 1.0] is empty" in str(err)


def test_unknown_control_type_suggests(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "controls:\n  - type: orientatoin\n"))
    assert err.key == "controls[0].type"
    assert "unknown control 'orientatoin'" in str(err) and "did you mean 'orientation'?" in str(err)


def test_unknown_control_param_suggests(tmp_path: Path, toy: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "controls:\n  - file: toy.py\n    zoom_factr: 1.1\n"))
    assert err.key == "controls[0].zoom_factr"
    assert "did you mean 'zoom_factor'?" in str(err)


def test_missing_control_file(tmp_path: Path) -> None:
    err = error_of(write(tmp_path / "x.yaml", "controls:\n  - file: nowhere.py\n"))
    assert err.key == "controls[0].file" and "does not exist" in str(err)


def test_duplicate_control_names(tmp_path: Path, toy: Path) -> None:
    path = write(tmp_path / "x.yaml", """
        controls:
          - file: toy.py
          - file: toy.py
            zoom_factor: 1.5
    """)
    err = error_of(path)
    assert err.key == "controls[1]"
    assert "'toy'" in str(err) and "name:" in str(err)
    write(tmp_path / "x.yaml", """
        controls:
          - file: toy.py
          - file: toy.py
            name: toy_zoomed
            zoom_factor: 1.5
    """)
    exp = load_config(path)
    assert [c.name for c in exp.controls] == ["toy", "toy_zoomed"]
    assert exp.control("toy_zoomed").domains["zoom_factor"] == Fixed(1.5)


# --------------------------------------------------------------------------- overrides

def test_overrides(tmp_path: Path, toy: Path) -> None:
    path = write(tmp_path / "x.yaml", """
        seed: 1
        render: {samples: 16, resolution: 64}
        controls:
          - file: toy.py
            zoom_factor: [0.5, 2.0]
    """)
    exp = load_config(path, overrides={"render.samples": 4, "seed": 3, "controls[0].zoom_factor": [0.6, 0.9],
                                       "policy": {"samples": 2}, "assets.objects": ["mug"]})
    assert exp.seed == 3
    assert exp.render.samples == 4 and exp.render.resolution == (64, 64)
    assert exp.controls[0].domains["zoom_factor"] == Range(0.6, 0.9)
    assert exp.policy == {"type": "random", "samples": 2}   # merged into the default policy
    assert exp.assets.objects == ("mug",)


def test_bad_override_names_command_line(tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "seed: 1\n")
    err = error_of(path, overrides={"render.samples": 0})
    assert str(err) == "<command line>: render.samples: must be >= 1, got 0"
    err = error_of(path, overrides={"render.smaples": 4})
    assert "did you mean 'samples'?" in str(err)
    err = error_of(path, overrides={"seed.x": 4})
    assert "not a mapping" in str(err)
    err = error_of(path, overrides={"controls[3].zoom_factor": 1.0})
    assert "controls" in str(err)
    err = error_of(path, overrides={"render..samples": 1})
    assert "malformed" in str(err)


def test_parse_override() -> None:
    assert parse_override("render.samples=4") == ("render.samples", 4)
    assert parse_override("assets.objects=[mug, duck]") == ("assets.objects", ["mug", "duck"])
    assert parse_override("controls[0].zoom_factor=(0.5, 1)") == ("controls[0].zoom_factor", "(0.5, 1)")
    assert parse_override("assets.root=default") == ("assets.root", "default")
    with pytest.raises(ConfigError):
        parse_override("samples")


def test_override_paths_resolve_against_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwd" / "data").mkdir(parents=True)
    path = write(tmp_path / "cfg" / "x.yaml", "seed: 1\n")
    monkeypatch.chdir(tmp_path / "cwd")
    exp = load_config(path, overrides={"assets.root": "data"})
    assert exp.assets.root == (tmp_path / "cwd" / "data").resolve()


# --------------------------------------------------------------------------- resolved dict

def _same_experiment(a: Experiment, b: Experiment) -> None:
    for field in ("seed", "assets", "render", "controls", "policy", "inference", "evaluation", "logging",
                  "resolved"):
        assert getattr(a, field) == getattr(b, field), field


def test_resolved_round_trip(tmp_path: Path, toy: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "base.yaml", """
        assets: {root: data, objects: [mug]}
        render: {resolution: [96, 64], passes: [uv]}
    """)
    path = write(tmp_path / "x.yaml", """
        base_config: base.yaml
        seed: 5
        controls:
          - file: toy.py
            zoom_factor: "(0.7, 1.3)"
            mode: [a, b]
        policy: {type: grid, samples_per_dim: 4}
        evaluation: {metric: top1}
    """)
    exp = load_config(path, overrides={"render.samples": 3})
    (tmp_path / "elsewhere").mkdir()
    saved = exp.save(tmp_path / "elsewhere" / "resolved.yaml")
    again = load_config(saved)
    _same_experiment(exp, again)
    assert again.files == [saved]
    # the resolved dict is plain data: JSON round trip too
    _same_experiment(exp, experiment_from_dict(json.loads(json.dumps(exp.resolved))))


def test_resolved_is_explicit(tmp_path: Path) -> None:
    exp = load_config(write(tmp_path / "x.yaml", "render: {samples: 2}\n"))
    assert exp.resolved["render"]["samples"] == 2
    assert exp.resolved["render"]["resolution"] == [128, 128]      # defaults written out
    assert exp.resolved["policy"] == {"type": "random", "samples": 10}
    assert yaml.safe_load(exp.to_yaml()) == exp.resolved


def test_frozen(tmp_path: Path) -> None:
    exp = load_config(write(tmp_path / "x.yaml", "seed: 1\n"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.seed = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- legacy 3DB configs

LEGACY_WITH_TOY = """
    inference:
      module: torchvision.models
      class: resnet18
      args: {pretrained: true}
      normalization: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
      resolution: [224, 224]
      label_map: ./resources/imagenet_mapping.json
    evaluation:
      module: threedb.evaluators.classification
      args: {classmap_path: ./resources/ycb_to_IN.json, topk: 1}
    render_args: {engine: threedb.rendering.render_blender, resolution: 256, samples: 16, with_uv: true,
                  with_segmentation: true, with_depth: false, max_depth: 10}
    policy: {module: threedb.policies.grid_search, samples_per_dim: 15}
    controls:
      - file: toy.py
        zoom_factor: (0.7, 1.3)
        distance: 8
    logging:
      logger_modules: [threedb.result_logging.image_logger, threedb.result_logging.json_logger]
"""


def test_legacy_config_maps(tmp_path: Path, toy: Path) -> None:
    exp = load_config(write(tmp_path / "legacy.yaml", LEGACY_WITH_TOY))
    assert exp.render.resolution == (256, 256)
    assert exp.render.samples == 16
    assert exp.render.passes == ("mask", "uv")
    assert exp.policy == {"type": "grid", "samples_per_dim": 15}
    assert exp.controls[0].domains["zoom_factor"] == Range(0.7, 1.3)
    assert exp.inference is not None and exp.inference["class"] == "resnet18"
    assert exp.inference["label_map"] == str((tmp_path / "resources" / "imagenet_mapping.json").resolve())
    assert exp.evaluation is not None and exp.evaluation["module"] == "threedb.evaluators.classification"
    assert exp.evaluation["args"]["classmap_path"] == str((tmp_path / "resources" / "ycb_to_IN.json").resolve())
    # 3DB's image logger kept every rendered channel: with_uv and with_segmentation are kept
    assert exp.logging == {"log_images": "all", "extra_passes": ["mask", "uv"], "loggers": ["json", "images"]}
    notes = "\n".join(exp.notes)
    assert "original 3DB config" in notes
    assert "max_depth" in notes and "engine" in notes
    assert "grid_search -> policy.type grid" in notes
    assert "render.passes" in notes
    assert "render_args" not in exp.resolved and exp.resolved["policy"]["type"] == "grid"
    _same_experiment(exp, experiment_from_dict(exp.resolved))   # mapping is idempotent


def test_legacy_random_search_and_devices(tmp_path: Path) -> None:
    exp = load_config(write(tmp_path / "legacy.yaml", """
        render_args: {resolution: 64, samples: 4, with_depth: true, gpu_id: -1, cpu_cores: 2, tile_size: 32}
        policy: {module: threedb.policies.random_search, samples: 30, seed: 4}
    """))
    assert exp.policy == {"type": "random", "samples": 30, "seed": 4}
    assert exp.render.passes == ("depth",)
    assert exp.render.device == "cpu" and exp.render.threads == 2
    assert any("tile_size" in n for n in exp.notes)


def test_legacy_errors_name_render_args(tmp_path: Path) -> None:
    path = write(tmp_path / "base.yaml", "render_args: {resolution: 256, samples: 0}\n")
    err = error_of(write(tmp_path / "top.yaml", "base_config: base.yaml\n"))
    assert err.file is not None and err.file.endswith("base.yaml")
    assert "render.samples: must be >= 1, got 0" in str(err)
    write(path, "render_args: {resolution: 256, with_uvs: true}\n")
    err = error_of(tmp_path / "top.yaml")
    assert err.key == "render_args.with_uvs" and "did you mean 'with_uv'?" in str(err)
    write(path, "policy: {module: threedb.policies.grid_serch}\n")
    err = error_of(tmp_path / "top.yaml")
    assert err.key == "policy.module" and "grid_search" in str(err)


def test_legacy_override_uses_our_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "legacy.yaml", "render_args: {resolution: 256, samples: 16}\n")
    exp = load_config(path, overrides={"render.samples": 2})
    assert exp.render.samples == 2 and exp.render.resolution == (256, 256)


@needs_builtins
def test_legacy_builtin_modules(tmp_path: Path) -> None:
    exp = load_config(write(tmp_path / "legacy.yaml", """
        render_args: {engine: threedb.rendering.render_blender, resolution: 256, samples: 16}
        policy: {module: threedb.policies.grid_search, samples_per_dim: 15}
        controls:
          - module: threedb.controls.blender.orientation
            rotation_z: (-3.14, 2.93)
          - module: threedb.controls.blender.camera
            view_point_z: (0, 1)
            zoom_factor: (0.7, 1.3)
            aperture: 8
    """))
    assert [c.kind for c in exp.controls] == ["orientation", "camera"]
    assert exp.control("orientation").domains["rotation_z"] == Range(-3.14, 2.93)
    cam = exp.control("camera")
    assert cam.domains["zoom_factor"] == Range(0.7, 1.3) and cam.domains["aperture"] == Fixed(8.0)
    assert [e["type"] for e in exp.resolved["controls"]] == ["orientation", "camera"]
    assert any("threedb.controls.blender.orientation" in n for n in exp.notes)


#: The example config of ../shared/spec/3db-reference.md (the original 3DB's format).
REFERENCE_CONFIG = """
inference:
  module: torchvision.models
  class: resnet18
  args: {pretrained: true}
  normalization: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
  resolution: [224, 224]
  label_map: ./resources/imagenet_mapping.json   # list of class names
evaluation:
  module: threedb.evaluators.classification
  args: {classmap_path: ./resources/ycb_to_IN.json, topk: 1}   # {model_uid: int | [int]}
render_args: {engine: threedb.rendering.render_blender, resolution: 256, samples: 16, with_uv: true, with_segmentation: true, with_depth: false, max_depth: 10}
policy: {module: threedb.policies.grid_search, samples_per_dim: 15}    # or random_search: {samples: N, seed: S}
controls:
  - module: threedb.controls.blender.orientation
    rotation_z: (-3.14, 2.93)       # range; a scalar fixes it; a list is discrete
  - module: threedb.controls.blender.camera
    view_point_z: (0, 2)
    zoom_factor: (0.7, 1.3)
    aperture: 8
logging:
  logger_modules: [threedb.result_logging.image_logger, threedb.result_logging.json_logger]
"""


@needs_builtins
def test_reference_example(tmp_path: Path) -> None:
    text = REFERENCE_CONFIG
    # The paper's example loads as written (view_point_z up to 2) and maps; beyond threedb's domain an
    # original entry's range is clamped into it, with a note.
    wide = load_config(write(tmp_path / "wide.yaml", text.replace("view_point_z: (0, 2)", "view_point_z: (0, 3)")))
    assert wide.control("camera").domains["view_point_z"] == Range(0.0, 2.0)
    assert any("view_point_z '(0, 3)' clamped to threedb's [-2.0, 2.0]" in n for n in wide.notes)
    exp = load_config(write(tmp_path / "ref.yaml", text))
    assert exp.render.resolution == (256, 256) and exp.render.samples == 16
    assert exp.render.passes == ("mask", "uv")
    assert exp.policy == {"type": "grid", "samples_per_dim": 15}
    assert [c.kind for c in exp.controls] == ["orientation", "camera"]
    assert exp.control("orientation").domains["rotation_z"] == Range(-3.14, 2.93)
    assert exp.control("camera").domains["zoom_factor"] == Range(0.7, 1.3)
    assert exp.control("camera").domains["aperture"] == Fixed(8.0)
    assert any("max_depth" in n for n in exp.notes) and any("engine" in n for n in exp.notes)


# --------------------------------------------------------------------------- shipped examples

@needs_builtins
@pytest.mark.parametrize("name", ["preview.yaml", "legacy_3db_example.yaml"])
def test_example_configs_load(name: str) -> None:
    exp = load_config(REPO / "configs" / name)
    assert {c.kind for c in exp.controls} == {"orientation", "camera"}
    again = experiment_from_dict(exp.resolved)
    _same_experiment(exp, again)


@needs_builtins
def test_preview_config_contents() -> None:
    exp = load_config(REPO / "configs" / "preview.yaml")
    assert exp.assets.root == "default"
    assert exp.assets.objects == ("mug", "duck", "teddy")
    assert exp.assets.environments == ("city", "forest", "studio")
    assert exp.render.resolution == (128, 128) and exp.render.samples == 16
    assert exp.render.passes == ("depth", "mask", "uv")
    assert exp.policy["type"] == "random"
    rot = exp.control("orientation").domains["rotation_z"]
    assert isinstance(rot, Range) and rot.low < 0 < rot.high and rot.high <= math.pi
    assert exp.notes == []


@needs_builtins
def test_legacy_example_contents() -> None:
    exp = load_config(REPO / "configs" / "legacy_3db_example.yaml")
    assert exp.render.resolution == (256, 256) and exp.render.passes == ("mask", "uv")
    assert exp.policy == {"type": "grid", "samples_per_dim": 15}
    assert exp.notes and "original 3DB config" in exp.notes[0]


def test_example_configs_are_valid_yaml() -> None:
    for name in ("preview.yaml", "legacy_3db_example.yaml"):
        data = yaml.safe_load((REPO / "configs" / name).read_text())
        assert isinstance(data, dict)
    assert is_legacy(yaml.safe_load((REPO / "configs" / "legacy_3db_example.yaml").read_text()))
    assert not is_legacy(yaml.safe_load((REPO / "configs" / "preview.yaml").read_text()))


def test_legacy_render_args_beside_render(tmp_path: Path) -> None:
    write(tmp_path / "base.yaml", "render_args: {resolution: 256, samples: 16, with_depth: true}\n")
    exp = load_config(write(tmp_path / "top.yaml", "base_config: base.yaml\nrender: {samples: 2}\n"))
    assert exp.render.samples == 2 and exp.render.resolution == (256, 256) and exp.render.passes == ("depth",)
    # each file is mapped before merging: the base's render_args become its render, which the child refines
    assert any(n.startswith("base.yaml: original 3DB it has render_args") for n in exp.notes)
    assert any("render_args.samples 16 -> render.samples 16" in n for n in exp.notes)
