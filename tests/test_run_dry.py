"""``threedb run CONFIG --dry-run``: every check of a run, the jobs and the search space; nothing rendered."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs" / "quickstart.yaml"


def dry_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "threedb.sim.cli", "run", *args, "--dry-run"], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_dry_run_prints_the_jobs_and_every_parameter_and_writes_nothing(tmp_path: Path) -> None:
    proc = dry_run(str(QUICKSTART), "--set", "policy.samples=3", "--set", "controls[2].severity=[1, 5]",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("264 jobs: 8 environments x 11 objects, policy random")   # 3 x 8 x 11
    assert "  camera.zoom_factor: searched  [0.5, 2]" in lines
    assert "  camera.aperture: fixed     8.0" in lines
    assert "  corruption.corruption_name: searched  {'none', 'fog'}" in lines
    assert "  corruption.severity: searched  [1, 5]" in lines
    assert lines[1] == "search space: 8 searched parameters"
    assert list(tmp_path.iterdir()) == []


def test_dry_run_refuses_what_a_run_would_refuse(tmp_path: Path) -> None:
    (tmp_path / "w.pt").write_bytes(b"not weights")
    (tmp_path / "c.yaml").write_text(f"base_config: {QUICKSTART}\ninference: {{weights: w.pt}}\n")
    proc = dry_run("c.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "c.yaml: inference.weights: weights file" in proc.stderr
    assert proc.stdout == ""
    # --no-model-check leaves the model to the evaluator machines
    assert dry_run("c.yaml", "--no-model-check", cwd=tmp_path).returncode == 0


def test_run_without_out_says_so(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "threedb.sim.cli", "run", str(QUICKSTART)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "--out RUN_DIR" in proc.stderr and "--dry-run" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_dry_run_of_an_original_3db_config_prints_its_notes_and_searched_space(tmp_path: Path) -> None:
    """The legacy mapping's notes are printed by ``threedb run`` (not only ``render``), and the parameters
    the original would search are listed as searched."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_run import write_config

    write_config(tmp_path)   # the tiny model in place of the original's downloaded ResNet-18
    sets = {"inference": f"{{file: {ROOT / 'tests' / 'tiny_net.py'}, class: TinyNet, weights: {tmp_path / 'tiny.pt'}, "
                         f"label_map: {tmp_path / 'classes.json'}, resolution: [32, 32]}}",
            "evaluation.args.classmap_path": str(tmp_path / "map.json"),
            "assets.objects": "[mug, duck]", "assets.environments": "[city]",
            "controls[1].focal_length": "(10, 400)"}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = dry_run(str(ROOT / "configs" / "legacy_3db_example.yaml"), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: original 3DB config" in proc.stderr
    assert "note: controls[1]: original control module threedb.controls.blender.camera -> camera" in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("6750 jobs: 1 environments x 2 objects, policy grid")   # 15^3 x 2
    assert "  camera.focal_length: searched  [10, 400]" in lines and "  camera.aperture: fixed     8.0" in lines
