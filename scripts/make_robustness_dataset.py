"""Make the small held-out dataset shipped for the robustness commands: assets/datasets/quickstart_heldout/.

Renders configs/quickstart_robustness_data.yaml (440 renders at 96 px with masks, the quickstart model's
two held-out HDRIs), exports it with `threedb dataset export`, and stores images and masks at the
model's 64 px: images resized exactly as threedb.evaluators.preprocess does (bilinear, antialiased) and
rounded to uint8, masks by the same resize thresholded at 0.5. The format and labels are unchanged.

    .venv/bin/python scripts/make_robustness_dataset.py [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart_robustness_data.yaml"
OUT = REPO / "assets" / "datasets" / "quickstart_heldout"
SIZE = 64
CLASSES = "mug,duck,teddy,bunny,soccer_ball,lego,jenga,domino,tray,torus,sphere"


def resize(array: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.array(array, dtype=np.float32))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    y = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False)[0]
    return y.permute(1, 2, 0).numpy() if array.ndim == 3 else y[0].numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="threedb-rds-"))
    threedb = [sys.executable, "-m", "threedb.sim.cli"]
    run, data = work / "run", work / "data"
    if not (run / "details.log").exists():
        subprocess.run([*threedb, "run", str(CONFIG), "--out", str(run), "--render-workers", "2"], check=True)
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([*threedb, "dataset", "export", str(run), "--out", str(data), "--classes", CLASSES], check=True)
    for png in sorted((data / "images").rglob("*.png")):
        rgb = np.asarray(Image.open(png).convert("RGB"))
        Image.fromarray(np.clip(np.round(resize(rgb)), 0, 255).astype(np.uint8)).save(png, optimize=True)
    for png in sorted((data / "masks").rglob("*.png")):
        mask = (np.asarray(Image.open(png)) > 0).astype(np.float32)
        mask = mask.max(axis=-1) if mask.ndim == 3 else mask
        Image.fromarray(((resize(mask) >= 0.5) * 255).astype(np.uint8)).save(png, optimize=True)
    header = json.loads((data / "dataset.json").read_text())
    header["note"] = (f"images and masks stored at {SIZE} px by scripts/make_robustness_dataset.py "
                      f"(rendered at 96 px by {CONFIG.relative_to(REPO)})")
    header.get("source", {}).pop("run_dir", None)
    (data / "dataset.json").write_text(json.dumps(header, indent=2) + "\n")
    shutil.rmtree(OUT, ignore_errors=True)
    shutil.copytree(data, OUT)
    print(f"wrote {OUT}: {header['counts']['samples']} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
