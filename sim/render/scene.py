"""The Blender scene of a render worker: object, HDRI world, camera, optional ground; renders passes.

Imports ``bpy``: only render worker processes import this module. One :class:`RenderScene` lives for
the life of a worker process; objects and environments are swapped only when a job asks for a
different one, so consecutive jobs on the same scene re-render without re-syncing (persistent data).
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import bpy
import numpy as np
import OpenEXR
from mathutils import Matrix, Vector

from threedb.sim.errors import AssetError, RenderError
from threedb.sim.render.outputs import (OBJECT_INSTANCE_ID, RenderOutput, composite_over_environment,
                                        intrinsics, linear_to_srgb_uint8, planar_to_euclidean_depth)
from threedb.sim.render.settings import RenderSettings

ROOT_NAME = "threedb_object"
#: Default view direction (from the object towards the camera) when no camera control is used.
DEFAULT_VIEW = (0.0, -1.0, 0.35)
#: Extra room around the object's bounding sphere when framing it.
FRAME_MARGIN = 1.05
#: Distinct noise patterns: job seeds are mapped to frames 1..SEED_FRAMES (Blender's maximum frame is 1048574).
SEED_FRAMES = 1_000_000


def _matrix_to_list(m: Matrix) -> list[list[float]]:
    return [list(row) for row in m]


class RenderScene:
    """One reusable Blender scene; see the module docstring.

    Controls use: ``scene`` (``bpy.types.Scene``), ``root`` (the object's root empty; transforms of the
    object go on it), ``camera``, ``world_mapping`` / ``world_background`` (HDRI rotation and strength
    nodes), ``frame_object()``, ``object_radius``, ``settings`` and ``report`` (measurements to return).
    """

    def __init__(self, settings: RenderSettings, scratch_dir: str | Path) -> None:
        self.settings = settings
        self.scratch_dir = Path(scratch_dir)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.exr_path = str(self.scratch_dir / f"render_{os.getpid()}.exr")
        bpy.ops.wm.read_factory_settings(use_empty=True)
        self.scene = bpy.context.scene
        self.root: bpy.types.Object | None = None
        self.object_key: str | None = None
        self.object_radius = 0.5
        self.environment_key: str | None = None
        #: What controls measured while applying (e.g. an achieved occlusion ratio), keyed by the
        #: control's instance name; reset for every job and returned as meta["controls_report"].
        self.report: dict[str, Any] = {}
        self._configure_render()
        self._make_camera()
        self._make_world()
        self.ground = self._make_ground() if settings.ground else None

    # ----------------------------------------------------------------- setup
    def _configure_render(self) -> None:
        s, sc = self.settings, self.scene
        sc.render.engine = "CYCLES"
        sc.render.resolution_x, sc.render.resolution_y = s.resolution
        sc.render.resolution_percentage = 100
        sc.render.use_persistent_data = s.persistent_data
        sc.render.film_transparent = True  # composited over the environment pass ourselves (see outputs)
        if s.threads:
            sc.render.threads_mode, sc.render.threads = "FIXED", s.threads
        else:
            sc.render.threads_mode = "AUTO"
        cy = sc.cycles
        cy.samples = s.samples
        cy.use_adaptive_sampling = s.adaptive_sampling
        cy.adaptive_threshold = s.adaptive_threshold
        cy.use_denoising = s.denoise
        cy.use_animated_seed = True
        cy.seed = 0
        cy.device = self._select_device()
        sc.view_settings.view_transform = "Standard"
        sc.view_settings.look = "None"
        sc.view_settings.exposure = 0.0
        sc.view_settings.gamma = 1.0
        layer = sc.view_layers[0]
        layer.use_pass_z = s.wants("depth")
        layer.use_pass_uv = s.wants("uv")
        layer.use_pass_object_index = True
        layer.use_pass_environment = True
        img = sc.render.image_settings
        img.media_type = "MULTI_LAYER_IMAGE"
        img.file_format = "OPEN_EXR_MULTILAYER"
        img.color_depth = "32"
        img.exr_codec = "NONE"
        sc.render.filepath = self.exr_path

    def _select_device(self) -> str:
        if self.settings.device == "cpu":
            return "CPU"
        prefs = bpy.context.preferences.addons["cycles"].preferences
        backends = [self.settings.gpu_backend] if self.settings.gpu_backend != "auto" \
            else ["OPTIX", "CUDA", "HIP", "ONEAPI", "METAL"]
        for backend in backends:
            try:
                prefs.compute_device_type = backend
            except TypeError:  # backend not compiled into this Blender
                continue
            prefs.get_devices()
            gpus = [d for d in prefs.devices if d.type == backend]
            if gpus:
                for d in prefs.devices:
                    d.use = d.type == backend
                return "GPU"
        if self.settings.device == "gpu":
            raise RenderError(f"render.device is 'gpu' but Cycles found no {'/'.join(backends)} device")
        return "CPU"

    def _make_camera(self) -> None:
        data = bpy.data.cameras.new("threedb_camera")
        data.lens = 50.0
        data.clip_start, data.clip_end = 0.01, 1000.0
        self.camera = bpy.data.objects.new("threedb_camera", data)
        self.scene.collection.objects.link(self.camera)
        self.scene.camera = self.camera

    def _make_world(self) -> None:
        world = bpy.data.worlds.new("threedb_world")
        self.scene.world = self.hdri_world = world
        self.blend_environment = None
        world.use_nodes = True
        nodes, links = world.node_tree.nodes, world.node_tree.links
        nodes.clear()
        coords = nodes.new("ShaderNodeTexCoord")
        self.world_mapping = nodes.new("ShaderNodeMapping")
        self.world_texture = nodes.new("ShaderNodeTexEnvironment")
        self.world_background = nodes.new("ShaderNodeBackground")
        output = nodes.new("ShaderNodeOutputWorld")
        links.new(coords.outputs["Generated"], self.world_mapping.inputs["Vector"])
        links.new(self.world_mapping.outputs["Vector"], self.world_texture.inputs["Vector"])
        links.new(self.world_texture.outputs["Color"], self.world_background.inputs["Color"])
        links.new(self.world_background.outputs["Background"], output.inputs["Surface"])
        self.world_background.inputs["Strength"].default_value = self.settings.environment_strength
        self.world_mapping.inputs["Rotation"].default_value[2] = self.settings.environment_rotation

    def _make_ground(self) -> bpy.types.Object:
        mesh = bpy.data.meshes.new("threedb_ground")
        size = 50.0
        mesh.from_pydata([(-size, -size, 0), (size, -size, 0), (size, size, 0), (-size, size, 0)], [],
                         [(0, 1, 2, 3)])
        ground = bpy.data.objects.new("threedb_ground", mesh)
        ground.is_shadow_catcher = True
        ground.pass_index = 0
        self.scene.collection.objects.link(ground)
        return ground

    # ----------------------------------------------------------------- assets
    def set_environment(self, env: Mapping[str, Any]) -> None:
        """Show environment ``env`` ({name, path, kind}); a no-op if it is already loaded.

        ``kind='hdri'``: the image lights the scene and is seen behind the object. ``kind='blend'``:
        every object of the .blend file except cameras is appended (instance id 0: scenery, not the
        object) and its world, if it has one, replaces the HDRI world (a plain grey world otherwise);
        the ``environment`` and ``background`` controls act on the HDRI world only.
        """
        key = str(env["path"])
        if key == self.environment_key:
            return
        self._remove_blend_environment()
        if env.get("kind", "hdri") == "blend":
            self._load_blend_environment(key)
        else:
            self.scene.world = self.hdri_world
            old = self.world_texture.image
            try:
                self.world_texture.image = bpy.data.images.load(key, check_existing=True)
            except RuntimeError as exc:
                raise AssetError(key, f"Blender cannot load this environment image: {exc}") from None
            if old is not None and old != self.world_texture.image:
                bpy.data.images.remove(old)
        self.environment_key = key

    def _load_blend_environment(self, path: str) -> None:
        try:
            with bpy.data.libraries.load(path, link=False) as (src, dst):
                dst.objects = list(src.objects)
                dst.worlds = list(src.worlds[:1])
        except (OSError, RuntimeError) as exc:
            raise AssetError(path, f"Blender cannot load this environment: {exc}") from None
        collection = bpy.data.collections.new("threedb_environment")
        self.scene.collection.children.link(collection)
        for obj in dst.objects:
            if obj is None:
                continue
            if obj.type == "CAMERA":
                bpy.data.objects.remove(obj, do_unlink=True)
                continue
            obj.pass_index = 0
            collection.objects.link(obj)
        if dst.worlds and dst.worlds[0] is not None:
            self.scene.world = dst.worlds[0]
        else:
            world = bpy.data.worlds.new("threedb_plain_world")  # node-based in Blender 5.0
            world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.05, 0.05, 0.05, 1.0)
            self.scene.world = world
        self.blend_environment = collection

    def _remove_blend_environment(self) -> None:
        collection = getattr(self, "blend_environment", None)
        if collection is None:
            return
        for obj in list(collection.all_objects):
            bpy.data.objects.remove(obj, do_unlink=True)
        bpy.data.collections.remove(collection)
        if self.scene.world is not self.hdri_world:
            bpy.data.worlds.remove(self.scene.world)
        self.scene.world = self.hdri_world
        bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)
        self.blend_environment = None

    def set_object(self, spec: Mapping[str, Any]) -> None:
        """Load object ``spec`` ({uid, path, format, up_axis, axis_scale, normalization, normalize,
        object_size}); see :class:`threedb.sim.assets.MeshNormalization` for the mapping."""
        key = f"{spec['path']}|{spec.get('normalize', True)}|{spec.get('object_size', 1.0)}"
        if key == self.object_key:
            return
        self._remove_object()
        imported = self._import(spec)
        meshes = [o for o in imported if o.type == "MESH"]
        if not meshes:
            raise AssetError(spec["path"], "the file holds no mesh object")
        root = bpy.data.objects.new(ROOT_NAME, None)
        self.scene.collection.objects.link(root)
        axis_scale = Matrix.Diagonal((*spec.get("axis_scale", (1.0, 1.0, 1.0)), 1.0))
        for obj in imported:  # per-axis pre-scale first, so that .blend normalisation sees it
            if obj.parent is None or obj.parent not in imported:
                obj.matrix_world = axis_scale @ obj.matrix_world
        center, scale = self._normalization(spec, meshes)
        offset = Matrix.Translation(-Vector(center))
        for obj in imported:
            if obj.parent is None or obj.parent not in imported:
                world = obj.matrix_world.copy()
                obj.parent = root
                obj.matrix_parent_inverse = offset @ world @ obj.matrix_basis.inverted()
        for obj in meshes:
            obj.pass_index = OBJECT_INSTANCE_ID
            if not obj.data.uv_layers:
                _add_spherical_uv(obj.data)
        root.scale = (scale, scale, scale)
        self.root = root
        bpy.context.view_layer.update()
        corners = [obj.matrix_world @ Vector(c) for obj in meshes for c in obj.bound_box]
        self.object_radius = max((c - root.matrix_world.translation).length for c in corners)
        if self.ground is not None:
            self.ground.location.z = min(c.z for c in corners)
        self.object_key = key

    def _import(self, spec: Mapping[str, Any]) -> list[bpy.types.Object]:
        path, fmt = str(spec["path"]), str(spec["format"]).lower()
        if not Path(path).is_file():
            raise AssetError(path, "mesh file does not exist")
        before = set(bpy.data.objects)
        axes = {"forward_axis": "Y", "up_axis": "Z"} if spec.get("up_axis", "Z") == "Z" \
            else {"forward_axis": "NEGATIVE_Z", "up_axis": "Y"}
        try:
            if fmt == "obj":
                bpy.ops.wm.obj_import(filepath=path, **axes)
            elif fmt == "ply":
                bpy.ops.wm.ply_import(filepath=path, **axes)
            elif fmt == "stl":
                bpy.ops.wm.stl_import(filepath=path, **axes)
            elif fmt in ("glb", "gltf"):
                if "io_scene_gltf2" not in bpy.context.preferences.addons:
                    bpy.ops.preferences.addon_enable(module="io_scene_gltf2")
                bpy.ops.import_scene.gltf(filepath=path)
            elif fmt == "blend":
                self._append_blend(path, str(spec["uid"]))
            else:
                raise AssetError(path, f"unsupported mesh format {fmt!r}")
        except RuntimeError as exc:
            raise AssetError(path, f"Blender could not import this file: {exc}") from None
        imported = [o for o in bpy.data.objects if o not in before]
        for obj in imported:
            if obj.name not in self.scene.collection.all_objects:
                self.scene.collection.objects.link(obj)
        return imported

    def _append_blend(self, path: str, uid: str) -> None:
        with bpy.data.libraries.load(path, link=False) as (src, dst):
            # 3DB convention: file X.blend holds object X; otherwise take every object in the file.
            dst.objects = [uid] if uid in src.objects else list(src.objects)

    def _normalization(self, spec: Mapping[str, Any], meshes: list[bpy.types.Object]) -> tuple[Any, float]:
        if not spec.get("normalize", True):
            return (0.0, 0.0, 0.0), 1.0
        norm = spec.get("normalization")
        if norm:
            return tuple(norm["center"]), float(norm["scale"])
        # .blend objects: trimesh cannot read them, so normalise from Blender's bounding boxes.
        bpy.context.view_layer.update()
        corners = np.array([list(o.matrix_world @ Vector(c)) for o in meshes for c in o.bound_box])
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        extent = float((hi - lo).max())
        if extent <= 0:
            raise AssetError(spec["path"], "the object has zero size")
        return tuple((lo + hi) / 2.0), float(spec.get("object_size", 1.0)) / extent

    def _remove_object(self) -> None:
        if self.root is None:
            return
        doomed = [self.root, *self.root.children_recursive]
        for obj in doomed:
            bpy.data.objects.remove(obj, do_unlink=True)
        bpy.data.orphans_purge(do_local_ids=True, do_linked_ids=True, do_recursive=True)
        self.root, self.object_key = None, None

    # ----------------------------------------------------------------- camera
    def frame_object(self, direction: tuple[float, float, float] = DEFAULT_VIEW, zoom: float = 1.0) -> None:
        """Point the camera at the object from ``direction``, at the distance where its bounding
        sphere just fits the frame, divided by ``zoom`` (> 1 comes closer)."""
        bpy.context.view_layer.update()  # matrix_world of a just-moved root is stale until an update
        d = Vector(direction)
        if d.length < 1e-9:
            d = Vector(DEFAULT_VIEW)
        d.normalize()
        target = self.root.matrix_world.translation if self.root else Vector((0, 0, 0))
        half_fov = min(self.camera.data.angle_x, self.camera.data.angle_y) / 2.0
        distance = self.object_radius * FRAME_MARGIN / math.sin(half_fov) / zoom
        self.camera.location = target + d * distance
        self.camera.rotation_euler = (-d).to_track_quat("-Z", "Y").to_euler()

    # ----------------------------------------------------------------- render
    def render(self, seed: int) -> RenderOutput:
        """Render the current scene with Cycles seed ``seed``; read back the passes."""
        # Under persistent data Cycles does not re-sync a changed `cycles.seed`, but it does sync
        # frame changes: the animated seed (a hash of seed and frame) carries the job seed instead.
        self.scene.frame_current = 1 + seed % SEED_FRAMES
        started = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        render_s = time.perf_counter() - started
        channels = _read_exr(self.exr_path)
        output = self._convert(channels)
        output.meta["render_seconds"] = render_s
        return output

    def _convert(self, ch: dict[str, np.ndarray]) -> RenderOutput:
        w, h = self.settings.resolution
        cam = self.camera.data
        K = intrinsics(w, h, cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit,
                       cam.shift_x, cam.shift_y)
        combined = _channel(ch, "Combined")
        env = _channel(ch, "Environment", required=False)
        rgb = linear_to_srgb_uint8(composite_over_environment(combined, env))
        instance = np.rint(_channel(ch, "Object Index.X")).astype(np.uint8)
        passes: dict[str, np.ndarray] = {"alpha": np.ascontiguousarray(combined[..., 3]),
                                         "instance": instance}
        if self.settings.wants("mask"):
            passes["mask"] = instance == OBJECT_INSTANCE_ID
        if self.settings.wants("depth"):
            z = _channel(ch, "Depth.Z")
            depth = planar_to_euclidean_depth(z, K)
            depth[z >= 1e9] = np.inf  # Cycles writes 1e10 where rays escape to the environment
            passes["depth"] = depth
        if self.settings.wants("uv"):
            uv = np.stack([_channel(ch, "UV.U"), _channel(ch, "UV.V")], axis=-1).astype(np.float32)
            uv[instance != OBJECT_INSTANCE_ID] = np.nan
            passes["uv"] = uv
        meta = {"K": K.tolist(), "camera_to_world": _matrix_to_list(self.camera.matrix_world),
                "object_to_world": _matrix_to_list(self.root.matrix_world) if self.root else None}
        return RenderOutput(rgb=rgb, passes=passes, meta=meta)


def _read_exr(path: str) -> dict[str, np.ndarray]:
    with OpenEXR.File(path) as f:
        return {name: np.array(ch.pixels) for part in f.parts for name, ch in part.channels.items()}


def _channel(ch: Mapping[str, np.ndarray], suffix: str, required: bool = True) -> np.ndarray | None:
    # Channel names carry the view layer's name ("ViewLayer.Depth.Z"); match on the pass part.
    for name, pixels in ch.items():
        if name.endswith("." + suffix) or name == suffix:
            return pixels
    if required:
        raise RenderError(f"render output lacks the {suffix!r} pass (has {sorted(ch)})")
    return None


def _add_spherical_uv(mesh: bpy.types.Mesh) -> None:
    """Give a mesh without UVs spherical (longitude, latitude) coordinates about its bbox centre."""
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    co -= (co.min(axis=0) + co.max(axis=0)) / 2.0
    radius = np.linalg.norm(co, axis=1) + 1e-12
    u = (np.arctan2(co[:, 1], co[:, 0]) / (2 * np.pi)) + 0.5
    v = np.arccos(np.clip(co[:, 2] / radius, -1.0, 1.0)) / np.pi
    loop_vertex = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", loop_vertex)
    uv_layer = mesh.uv_layers.new(name="threedb_uv")
    uv_layer.data.foreach_set("uv", np.stack([u, 1.0 - v], axis=1)[loop_vertex].astype(np.float32).ravel())
