"""Synthetic run directories for the dashboard's tests, benchmark and demos (written with RunStore).

Jobs: objects ``mug``/``duck``/``bunny`` x environments ``city.hdr`` (flat background) and
``forest.hdr`` (busy background), three controls: ``OrientationControl.rotation_z`` (continuous,
-3..3), ``CameraControl.zoom`` (0.8, 1.0, 1.2) and ``BlurControl.sigma`` (0..3). Correctness has
structure to find (wrong mostly at large rotation with zoom 0.8, and on the busy background, and
for one side of the object's surface) plus seeded noise. Images are real small PNGs: the object is a
disc coloured per object over a flat or noisy background; ``mask`` and ``uv`` passes go with them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from threedb.sim.store import RunStore

CLASSES = ["mug", "duck", "bunny", "teapot"]
OBJECTS = ["mug", "duck", "bunny"]
ENVIRONMENTS = ["city", "forest"]
ZOOMS = [0.8, 1.0, 1.2]
OUTPUTS = ("is_correct", "loss", "prediction")


def job(i: int, rng: np.random.Generator) -> dict[str, Any]:
    obj, env = OBJECTS[i % 3], ENVIRONMENTS[(i // 3) % 2]
    return {
        "id": f"{env}-{obj}-p{i:06d}", "seed": i,
        "object": {"uid": obj, "path": f"/assets/objects/{obj}/{obj}.glb"},
        "environment": {"name": env, "path": f"/assets/env/{env}.hdr"},
        "controls": [
            {"name": "orientation", "ref": "threedb.controls.scene.orientation:OrientationControl",
             "values": {"rotation_z": round(float(rng.uniform(-3, 3)), 4)}},
            {"name": "camera", "ref": "threedb.controls.scene.camera:CameraControl",
             "values": {"zoom": ZOOMS[int(rng.integers(3))]}},
            {"name": "blur", "ref": "threedb.controls.image.blur:BlurControl",
             "values": {"sigma": int(rng.integers(4))}},
        ],
    }


def verdict(j: dict[str, Any], rng: np.random.Generator) -> bool:
    rot = j["controls"][0]["values"]["rotation_z"]
    zoom = j["controls"][1]["values"]["zoom"]
    p_wrong = 0.1 + 0.6 * (rot > 1.5 and zoom == 0.8) + 0.2 * (j["environment"]["name"] == "forest") \
        + 0.2 * (j["object"]["uid"] == "duck" and rot < -1.5)
    return bool(rng.random() >= p_wrong)


def images(j: dict[str, Any], size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, mask, uv) of a job: a disc over a flat (city) or noisy (forest) background; the disc's
    uv covers the half of the UV square facing the camera at this rotation."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c = size / 2
    r = size * 0.3 * j["controls"][1]["values"]["zoom"]
    mask = (xx - c) ** 2 + (yy - c) ** 2 <= r * r
    if j["environment"]["name"] == "forest":
        rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        rgb = np.full((size, size, 3), 150, dtype=np.uint8)
    colour = {"mug": (220, 40, 40), "duck": (240, 220, 30), "bunny": (60, 90, 230)}[j["object"]["uid"]]
    rgb[mask] = colour
    rot = j["controls"][0]["values"]["rotation_z"]
    u = ((xx - c) / (2 * r) * 0.5 + rot / (2 * math.pi) + 0.5) % 1.0
    v = np.clip(0.5 - (yy - c) / (2 * r), 0.0, 0.999)
    uv = np.stack([u, v], axis=-1).astype(np.float32)
    uv[~mask] = np.nan
    return rgb, mask, uv


def make_run(run_dir: str | Path, n: int, *, seed: int = 0, model_seed: int | None = None,
             with_images: bool = True, size: int = 32, fast: bool = False) -> Path:
    """Write a synthetic run of ``n`` jobs to ``run_dir``; every 17th job fails (``status: "failed"``).

    ``seed`` picks the jobs (ids and parameters), ``model_seed`` (default: ``seed``) the verdicts: two runs
    with one seed and two model seeds are "two models on the same proposals". ``fast`` appends rows
    without RunStore's per-row fsync (for large benchmark runs; no images)."""
    rng = np.random.default_rng(seed)
    model_rng = np.random.default_rng(seed if model_seed is None else model_seed + 10_000)
    run_dir = Path(run_dir)
    store = RunStore(run_dir, output_keys=OUTPUTS, output_type="classes", class_names=CLASSES,
                     extra_passes=("mask", "uv"), log_images="all" if with_images else "none", seed=seed,
                     config={"seed": seed, "evaluation": {"args": {"classmap": {o: CLASSES.index(o) for o in OBJECTS}}}})
    lines = []
    with store:
        for i in range(n):
            j = job(i, rng)
            ok = verdict(j, model_rng)
            truth = CLASSES.index(j["object"]["uid"])
            wrong = (truth + 1 + int(model_rng.integers(3))) % len(CLASSES)
            outputs = {"is_correct": ok, "loss": float(model_rng.random()), "prediction": [truth if ok else wrong, wrong]}
            if i % 17 == 16:
                if fast:
                    row = store.row(j, {"is_correct": None, "loss": None, "prediction": []}, status="failed",
                                    error="synthetic failure")
                    lines.append(json.dumps(row))
                else:
                    store.write_failure(j, "synthetic failure")
                continue
            if fast:
                lines.append(json.dumps(store.row(j, outputs)))
                continue
            rgb, mask, uv = images(j, size, rng) if with_images else (None, None, None)
            passes = {"mask": mask, "uv": uv} if with_images else None
            store.write(j, outputs, rgb=rgb, passes=passes)
    if fast:
        with open(run_dir / "details.log", "a") as handle:
            handle.write("\n".join(lines) + ("\n" if lines else ""))
    return run_dir


def append_rows(run_dir: str | Path, ids: range, *, uid: str, correct: bool, seed: int = 0) -> None:
    """Append rows of object ``uid`` (all ``correct`` or all wrong) to a run made by :func:`make_run`,
    through a resumed RunStore, as a run still writing would."""
    rng = np.random.default_rng(seed)
    truth = CLASSES.index(uid)
    prediction = [truth, (truth + 1) % len(CLASSES)] if correct else [(truth + 1) % len(CLASSES), truth]
    with RunStore.open(run_dir, output_keys=OUTPUTS, output_type="classes", class_names=CLASSES,
                       extra_passes=("mask", "uv")) as store:
        for i in ids:
            j = job(i, rng)
            j["object"] = {"uid": uid, "path": f"/x/{uid}.glb"}
            store.write(j, {"is_correct": correct, "loss": 0.1 if correct else 1.0, "prediction": prediction}, rgb=None)


def make_many_cells_run(run_dir: str | Path, *, seed: int = 0, samples: int = 8) -> Path:
    """A rows-only run shaped like the quickstart's (11 objects x 8 environments x ``samples`` jobs, six
    continuous camera/orientation parameters, fog or none): hundreds of small parameter-pair cells,
    among which some are at 0 % by chance, and two real weaknesses with many rows each (fog, and a
    zoom below 0.8)."""
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    objects = [f"object{k:02d}" for k in range(11)]
    lines = []
    for e in range(8):
        for uid in objects:
            for s in range(samples):
                args = {"OrientationControl.rotation_x": float(rng.uniform(-1.5708, 1.5708)),
                        "OrientationControl.rotation_z": float(rng.uniform(-3.14159, 3.14159)),
                        "CameraControl.view_point_x": float(rng.uniform(-1, 1)),
                        "CameraControl.view_point_y": float(rng.uniform(-1, 1)),
                        "CameraControl.view_point_z": float(rng.uniform(0, 1)),
                        "CameraControl.zoom_factor": float(rng.uniform(0.5, 2.0)),
                        "CorruptionControl.corruption_name": str(rng.choice(["none", "fog"])),
                        "CorruptionControl.severity": 3}
                p = 0.2 if args["CorruptionControl.corruption_name"] == "fog" else 0.75
                if args["CameraControl.zoom_factor"] < 0.8:
                    p *= 0.3
                ok = bool(rng.random() < p)
                lines.append(json.dumps({"is_correct": ok, "prediction": [0 if ok else 1], "id": f"env{e}-{uid}-p{s:06d}",
                                         "environment": f"env{e}.exr", "model": f"{uid}.obj", "render_args": args,
                                         "output_type": "classes", "status": "ok", "error": None, "object_uid": uid}))
    (run_dir / "details.log").write_text("\n".join(lines) + "\n")
    (run_dir / "class_maps.json").write_text(json.dumps(CLASSES))
    return run_dir
