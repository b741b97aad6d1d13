"""The original 3DB's three loggers, for real (issue 17, "Loggers"): json (details.log), images (with the
passes the config renders) and TensorBoard; unknown loggers refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from run_cli import start_run
from test_run import finish, rows, write_config

from threedb.sim.config import load_config
from threedb.sim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def legacy_logging(tmp_path: Path, modules: str, render_args: str = "{with_uv: true, with_segmentation: true}"):
    path = tmp_path / "c.yaml"
    path.write_text(f"base_config: {QUICKSTART}\nrender_args: {render_args}\nlogging: {{logger_modules: {modules}}}\n")
    return load_config(path)


def test_unknown_logger_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        legacy_logging(tmp_path, "[threedb.result_logging.json_logger, no.such.logger]")
    assert info.value.key == "logging.logger_modules[1]" and "tb_logger" in str(info.value)
    with pytest.raises(ConfigError, match="tensorboard"):
        load_config(QUICKSTART, overrides={"logging.loggers": ["json", "tensorbord"]})


def test_the_image_logger_keeps_what_is_rendered_and_without_it_no_images(tmp_path: Path) -> None:
    exp = legacy_logging(tmp_path, "[threedb.result_logging.image_logger, threedb.result_logging.json_logger]")
    assert exp.logging == {"log_images": "all", "extra_passes": ["mask", "uv"], "loggers": ["json", "images"]}
    exp = legacy_logging(tmp_path, "[threedb.result_logging.json_logger]")
    assert exp.logging["log_images"] == "none" and exp.logging["extra_passes"] == []
    # a key written in the config wins over the logger's default
    exp = load_config(QUICKSTART, overrides={"logging": {"loggers": ["images"], "extra_passes": ["mask"]}})
    assert exp.logging == {"log_images": "all", "extra_passes": ["mask"], "loggers": ["json", "images"]}


def test_a_run_with_the_tensorboard_logger_writes_what_tensorboard_reads(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["logging"] = {"loggers": ["json", "images", "tensorboard"]}
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    result = finish(start_run(config, out, "--render-workers", "1", "--evaluators", "1"))
    got = rows(out)
    assert result["done"] == len(got) == 8
    assert sorted(p.name for p in (out / "images").iterdir() if p.name.endswith("_mask.png")) == \
        sorted(f"{r['id']}_mask.png" for r in got)   # the images logger kept the rendered mask pass
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    running = events.Scalars("accuracy/running")
    accuracy = sum(bool(r["is_correct"]) for r in got) / len(got)
    assert running[-1].step == 8 and running[-1].value == pytest.approx(accuracy)
    wrong = {r["id"] for r in got if not r["is_correct"]}
    assert {t.split("/", 1)[1] for t in tags["images"]} == wrong
    assert "accuracy_by_parameter/OrientationControl.rotation_z" in tags["scalars"]
    assert {f"accuracy_by_object/{uid}" for uid in ("mug", "duck")} <= set(tags["scalars"])
