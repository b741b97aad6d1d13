"""Hostile and careless configs (issue 16, "Configs"): one ``error:`` line each, no traceback, no hang,
no run directory; plus a bounded seeded fuzz of the quickstart config (tests/config_fuzz.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from threedb.sim.config import load_config
from threedb.sim.errors import ConfigError, printable
from threedb.sim.experiment import prepare
from threedb.sim.run.preflight import check_run

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
BASE = f"base_config: {QUICKSTART}\n"


def check(path: Path, *, model: bool = False) -> None:
    """What ``threedb run`` checks before it makes a run directory."""
    check_run(prepare(load_config(path)), load_model_check=model)


def refused(tmp_path: Path, text: str, *, model: bool = False, name: str = "case.yaml") -> ConfigError:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        check(path, model=model)
    message = printable(str(info.value))
    assert "\n" not in message and len(message) < 1000, message
    return info.value


# (case, config text after the quickstart base, key named, words in the message)
VALUE_CASES = [
    ("bad date", "seed: 2001-13-45\n", None, "line 2"),
    ("!!int abc", "seed: !!int abc\n", None, "as int"),
    ("!!float abc", "seed: !!float abc\n", None, "as float"),
    ("!!bool maybe", "seed: !!bool maybe\n", None, "as bool"),
    ("!!map [1,2]", "seed: !!map [1,2]\n", None, "as map"),
    ("5,000-digit seed", "seed: " + "9" * 5000 + "\n", None, "as int"),
    ("20,000-bit seed", "seed: 0b" + "1" * 20000 + "\n", "seed", "out of range"),
    ("nested 1,000 deep", "logging: " + "[" * 1000 + "]" * 1000 + "\n", None, "nested more than"),
    ("self-referencing alias", "controls: &c [*c]\n", None, "loop"),
    ("alias bomb", "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))
     + "logging: {x: *i}\n", None, "alias bomb"),
    ("NUL in a path", 'assets: {root: "/etc\\0"}\n', "assets.root", "NUL"),
    ("non-string key", "controls: [{type: orientation, 5: 1}]\n", "controls[0]", "not text"),
    ("log_images bogus", "logging: {log_images: bogus}\n", "logging.log_images", "failures"),
    ("extra_passes 5", "logging: {extra_passes: 5}\n", "logging.extra_passes", "list"),
    ("unknown pass", "logging: {extra_passes: [bogus]}\n", "logging.extra_passes[0]", "mask"),
    ("pass kept, not rendered", "render: {passes: [depth]}\nlogging: {extra_passes: [uv]}\n",
     "logging.extra_passes", "render.passes"),
    ("batch_size abc", "inference: {batch_size: abc}\n", "inference.batch_size", "whole number"),
    ("label_map 5", "inference: {label_map: 5}\n", "inference.label_map", "path"),
    ("environment_rotation .nan", "controls: [{type: orientation, rotation_x: .nan}]\n",
     "controls[0].rotation_x", "finite"),
    ("samples: true", "policy: {type: random, samples: true}\n", "policy.samples", "whole number"),
    ("control named ''", "controls: [{type: orientation, name: ''}]\n", "controls[0].name", "letters"),
    ("a date as a value", "policy: {type: random, samples: 2, seed: 2001-12-14}\n", "policy.seed", "date"),
    ("a binary value", "assets: {root: !!binary AAEC}\n", "assets.root", "binary"),
]


@pytest.mark.parametrize("text,key,words", [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES])
def test_hostile_value_is_one_clear_error(tmp_path: Path, text: str, key: str | None, words: str) -> None:
    err = refused(tmp_path, BASE + text)
    assert words in str(err)
    if key is not None:
        assert err.key == key
    assert "case.yaml" in str(err)


def test_path_that_names_no_file(tmp_path: Path) -> None:
    assert "home directory" in str(refused(tmp_path, "base_config: ~nosuchuser/x.yaml\n"))
    assert "255 bytes" in str(refused(tmp_path, "base_config: " + "a" * 300 + ".yaml\n"))
    err = refused(tmp_path, BASE + "assets: {root: /" + "b/" * 3000 + "}\n")
    assert err.key == "assets.root" and "4095 bytes" in str(err)


def test_long_base_config_chain(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"c{i}.yaml").write_text(f"base_config: c{i + 1}.yaml\n" if i < 39 else "seed: 1\n")
    with pytest.raises(ConfigError, match="longer than 32 files"):
        load_config(tmp_path / "c0.yaml")


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "deep.json"])
def test_label_and_class_maps_are_bounded_regular_files(tmp_path: Path, target: str) -> None:
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = str(tmp_path / "fifo")
    elif target == "deep.json":
        (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
        target = str(tmp_path / "deep.json")
    err = refused(tmp_path, BASE + f"inference: {{label_map: {target}}}\n")
    assert err.key == "inference.label_map"
    assert ("not a regular file" in str(err)) == (target != str(tmp_path / "deep.json"))
    err = refused(tmp_path, BASE + f"evaluation: {{args: {{classmap_path: {target}}}}}\n")
    assert err.key == "evaluation.args.classmap_path"


def test_twenty_thousand_keys_linear(tmp_path: Path) -> None:
    """29.6 s before the fix (quadratic provenance); now one parse and one clear unknown-key error."""
    keys = ", ".join(f"k{i}: {i}" for i in range(20_000))
    err = refused(tmp_path, BASE + f"policy: {{type: random, samples: 2, {keys}}}\n")
    assert err.key == "policy.k0"


def test_base_config_that_is_not_a_config_is_not_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("zyxuser:$6$saltsalt$qwerty:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    err = refused(tmp_path, f"base_config: {secret}\n")
    assert "is not a config" in str(err)
    assert "qwerty" not in str(err) and "zyxuser" not in str(err) and "daemon" not in str(err)


def test_the_model_is_checked_before_the_run(tmp_path: Path) -> None:
    err = refused(tmp_path, BASE + "inference: {args: {width: 32, num_classes: 11, pretrained: true}}\n", model=True)
    assert err.key == "inference.args.pretrained"
    (tmp_path / "w.pt").write_text("not a state dict")
    err = refused(tmp_path, BASE + "inference: {weights: w.pt}\n", model=True)
    assert err.key == "inference.weights" and "state dict" in str(err)
    err = refused(tmp_path, BASE + "evaluation: {args: {topk: 0}}\n", model=True)
    assert err.key.startswith("evaluation")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "threedb.sim.cli", "run", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_stops_with_one_line_and_no_run_directory(tmp_path: Path) -> None:
    """Through the real CLI: exit 2, one escaped ``error:`` line, no traceback and no run directory, for an
    error found by the loader, by the policy and by the model check."""
    texts = {"escape": BASE + 'controls: [{type: "orien\\x1b[2Jtation\\r"}]\n',
             "policy": BASE + "policy: {type: random, samples: true}\n",
             "model": BASE + "inference: {args: {width: 32, num_classes: 11, pretrained: true}}\n"}
    for name, text in texts.items():
        (tmp_path / f"{name}.yaml").write_text(text)
        out = tmp_path / f"out_{name}"
        proc = run_cli(f"{name}.yaml", "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert "\x1b" not in proc.stderr and "\r" not in proc.stderr and "Traceback" not in proc.stderr
        assert not out.exists(), name


def test_fuzzed_configs(tmp_path: Path) -> None:
    """300 seeded mutations: every one loads or ends in one clear error; none crashes, hangs or blows memory."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "config_fuzz.py"), "--cases", "300", "--seed", "0"],
                          capture_output=True, text=True, timeout=600)
    summary = json.loads(proc.stdout)
    assert summary["findings"] == [], json.dumps(summary["findings"], indent=1)[:4000]
    assert proc.returncode == 0
    assert summary["counts"].get("ok", 0) > 10 and summary["counts"].get("error", 0) > 100, summary["counts"]
