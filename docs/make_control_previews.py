"""Regenerate the preview images of docs/controls.md with `threedb render`.

Each image shows the same scene without (left) and with (right) one built-in control at the
setting listed in CONTROLS. Run from the repository root:

    .venv/bin/python docs/make_control_previews.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images" / "controls"

#: control name -> (object, control entries) rendered for its preview.
CONTROLS: dict[str, tuple[str, list[dict]]] = {
    "orientation": ("duck", [{"type": "orientation", "rotation_z": 1.6}]),
    "camera": ("duck", [{"type": "camera", "view_point_z": 1.0, "zoom_factor": 1.6, "aperture": 1.0}]),
    "position": ("duck", [{"type": "position", "offset_x": 0.4, "offset_z": 0.2}]),
    "pin_to_ground": ("duck", [{"type": "orientation", "rotation_x": 1.2}, {"type": "pin_to_ground", "z_ground": 0.3}]),
    "obj_loc_in_frame": ("duck", [{"type": "scale", "factor": 0.5}, {"type": "obj_loc_in_frame", "x_shift": -0.6,
                                                                      "y_shift": 0.5}]),
    "scale": ("duck", [{"type": "scale", "factor": 0.5}]),
    "light": ("duck", [{"type": "light", "kind": "point", "H": 0.6, "S": 0.8, "V": 1.0, "intensity": 3000}]),
    "environment": ("duck", [{"type": "environment", "hdri": "sunset", "rotation": 1.0}]),
    "background": ("duck", [{"type": "background", "H": 0.55, "S": 0.5, "V": 0.8}]),
    "denoiser": ("duck", [{"type": "denoiser", "enabled": True}]),
    "material": ("duck", [{"type": "material", "material": "zebra"}]),
    "occlusion": ("duck", [{"type": "occlusion", "occlusion_ratio": 0.4}]),
    "liquid": ("mug", [{"type": "camera", "view_point_z": 1.5}, {"type": "liquid", "ratio_coffee": 0.8,
                                                                  "ratio_milk": 0.2, "fill_level": 0.8}]),
    "corruption": ("duck", [{"type": "corruption", "corruption_name": "frost", "severity": 3}]),
    "depth_fog": ("duck", [{"type": "depth_fog", "density": 0.4, "start": 3.0}]),
    "depth_defocus": ("duck", [{"type": "depth_defocus", "focus_distance": 3.25, "strength": 3.0}]),
}


def render(obj: str, controls: list[dict], work: Path, name: str) -> np.ndarray:
    config = {"seed": 0, "assets": {"objects": [obj], "environments": ["courtyard"]},
              "render": {"resolution": 128, "samples": 16, "passes": ["depth", "mask"]}, "controls": controls}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = work / name
    subprocess.run([sys.executable, "-m", "threedb.sim.cli", "render", str(path), "--out", str(out), "-n", "1"],
                   check=True)
    return cv2.imread(str(out / "preview-0000_rgb.png"))


def main(names: list[str]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baselines: dict[str, np.ndarray] = {}
        for name in names or CONTROLS:
            obj, controls = CONTROLS[name]
            if obj not in baselines:
                camera = [c for c in controls if c["type"] == "camera" and name != "camera"]
                baselines[obj] = render(obj, camera, work, f"base_{obj}")
            image = render(obj, controls, work, name)
            gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
            cv2.imwrite(str(OUT / f"{name}.png"), np.concatenate([baselines[obj], gap, image], axis=1))
            print(f"wrote {OUT / name}.png")


if __name__ == "__main__":
    main(sys.argv[1:])
