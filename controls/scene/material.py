"""Material: replaces the object's materials (texture-shape cue conflicts, paper section 3.3.2).

Every material slot of every mesh of the object gets one new material:

* a **procedural animal skin or pattern** built from Blender shader nodes (``zebra``, ``tiger``,
  ``leopard``, ``giraffe``, ``cow``, ``crocodile``, ``checker``, ``wood``, ``marble``, ``brick``);
  patterns are solid (3D) textures in the mesh's own coordinates, normalised so that the pattern
  density is the same for every object size (``texture_scale`` multiplies it), and need no UVs;
* a **plain colour** (``red``, ``green``, ``blue``, ``yellow``, ``orange``, ``purple``, ``white``,
  ``gray``, ``black``);
* an **image texture** ``image:<name>``: with ``texture_dir`` empty, ``<name>`` is one of the
  default pack's images (``assets/materials/textures.yaml``: pybullet_data's checker_blue, duck,
  tray, checker_grid, uvmap, tex256); with ``texture_dir`` set, ``<name>`` is the stem of an image
  file (.png, .jpg, .jpeg, .tif, .tiff, .bmp, .exr, .hdr) in that folder (the path is used as given;
  relative paths are relative to the render worker's working directory). Images are mapped by box
  (tri-planar) projection in the same normalised object coordinates (``image_mapping: box``,
  seamless on any mesh) or by the mesh's UV map (``image_mapping: uv``).

``keep`` (the default) changes nothing; ``keep_original`` (the original 3DB's name) is accepted too.
Undo puts the original materials back into their slots (slots added to meshes that had none are
removed) and deletes the created materials and the images it loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from threedb.controls.base import SceneControl
from threedb.controls.params import Param, closest_name
from threedb.controls.scene._mask import matrix_np, object_meshes

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene

KEEP = ("keep", "keep_original")
PROCEDURAL = ("zebra", "tiger", "leopard", "giraffe", "cow", "crocodile", "checker", "wood", "marble", "brick")
#: Plain colours, sRGB hex.
COLOURS = {"red": "B3201E", "green": "2E8B3A", "blue": "1F4FB3", "yellow": "E8C521", "orange": "E0761F",
           "purple": "6A2C91", "white": "EDEDED", "gray": "808080", "black": "141414"}
IMAGE_PREFIX = "image:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr", ".hdr")
TEXTURE_INDEX = "materials/textures.yaml"
BUILTIN_CHOICES = (*KEEP[:1], *PROCEDURAL, *COLOURS)
MATERIAL_PREFIX = "threedb_material"


@dataclass(frozen=True)
class _MaterialParam(Param):
    """The ``material`` choice: a built-in name, or ``image:<name>`` (checked when applied, since
    the images depend on ``texture_dir``)."""

    def describe_domain(self) -> str:
        return super().describe_domain() + ", or image:<name> (an image of texture_dir / the default pack)"

    def check_value(self, value: Any) -> Any:
        if value == "keep_original":
            return "keep"
        if isinstance(value, str) and value.startswith(IMAGE_PREFIX) and len(value) > len(IMAGE_PREFIX):
            return value
        return super().check_value(value)


def default_textures() -> dict[str, Path]:
    """The default pack's image textures: name -> file (pybullet_data)."""
    import pybullet_data
    import yaml

    from threedb.assets import ASSETS_DIR

    index = yaml.safe_load((ASSETS_DIR / TEXTURE_INDEX).read_text())
    base = Path(pybullet_data.getDataPath())
    return {name: base / rel for name, rel in index["textures"].items()}


def folder_textures(folder: str | Path) -> dict[str, Path]:
    """Image files of ``folder``: stem -> file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"material texture_dir {str(folder)!r} is not a folder")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def available_textures(texture_dir: str = "") -> dict[str, Path]:
    return folder_textures(texture_dir) if texture_dir else default_textures()


def _linear(hex_rgb: str) -> tuple[float, float, float, float]:
    """An sRGB hex colour as a scene-linear RGBA tuple (what shader node colours hold)."""
    c = np.array([int(hex_rgb[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return (*map(float, lin), 1.0)


class MaterialControl(SceneControl):
    """Replaces the material of every slot of the object's meshes (texture-shape cue conflicts):
    procedural animal skins and patterns, plain colours, or image textures (image:<name>, from
    texture_dir or the default pack's images); keep leaves the object as it is."""

    name = "material"
    params = (
        _MaterialParam("material", "choice", "keep",
                       "replacement material: keep, a procedural texture, a plain colour or image:<name>",
                       choices=BUILTIN_CHOICES),
        Param("texture_dir", "choice", "",
              "folder of image textures for image:<name> (empty: the default pack's images)"),
        Param("texture_scale", "float", 1.0, "pattern repeats: > 1 gives a finer texture", low=0.25, high=4.0,
              unit="x"),
        Param("image_mapping", "choice", "box", "how image textures are mapped", choices=("box", "uv")),
    )

    def __init__(self, instance_name: str | None = None) -> None:
        super().__init__(instance_name)
        self._slots: list[tuple[Any, int, Any]] = []
        self._added: list[Any] = []
        self._materials: list[Any] = []
        self._images: list[Any] = []

    # ----------------------------------------------------------------- apply / undo
    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        v = {**self.defaults(), **values}
        choice = self.param("material").check_value(v["material"])
        self._slots, self._added, self._materials, self._images = [], [], [], []
        if choice == "keep":
            return
        image_path = self._image_path(choice, str(v["texture_dir"] or "")) if choice.startswith(IMAGE_PREFIX) \
            else None
        if image_path is None and choice not in PROCEDURAL and choice not in COLOURS:
            raise ValueError(f"unknown material {choice!r}{closest_name(choice, BUILTIN_CHOICES)}")
        meshes = object_meshes(scene)
        if not meshes:
            return
        bpy.context.view_layer.update()
        mappings = _normalising_maps(scene, meshes)
        images_before = set(bpy.data.images)
        try:
            for obj in meshes:
                mat = self._build(choice, image_path, mappings[obj.name], float(v["texture_scale"]),
                                  str(v["image_mapping"]))
                if len(obj.material_slots) == 0:
                    if obj.data not in self._added:
                        obj.data.materials.append(mat)
                        self._added.append(obj.data)
                    continue
                for i, slot in enumerate(obj.material_slots):
                    self._slots.append((obj, i, slot.material))
                    slot.material = mat
        except BaseException:
            self._images = [img for img in bpy.data.images if img not in images_before]
            self.undo(scene)
            raise
        self._images = [img for img in bpy.data.images if img not in images_before]

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        for obj, i, material in reversed(self._slots):
            obj.material_slots[i].material = material
        for mesh in self._added:
            mesh.materials.clear()  # had none; pop() would leave the objects' slot counts stale
        for mat in self._materials:
            bpy.data.materials.remove(mat)
        for img in self._images:
            bpy.data.images.remove(img)
        self._slots, self._added, self._materials, self._images = [], [], [], []

    # ----------------------------------------------------------------- materials
    @staticmethod
    def _image_path(choice: str, texture_dir: str) -> Path:
        name = choice[len(IMAGE_PREFIX):]
        textures = available_textures(texture_dir)
        if name not in textures:
            where = texture_dir or "the default pack"
            raise ValueError(f"no image texture {name!r} in {where}{closest_name(name, list(textures))};"
                             f" available: {', '.join(textures) or 'none'}")
        return textures[name]

    def _build(self, choice: str, image_path: Path | None, mapping: tuple[np.ndarray, float],
               texture_scale: float, image_mapping: str) -> Any:
        import bpy

        label = choice.replace(":", "_")
        mat = bpy.data.materials.new(f"{MATERIAL_PREFIX}_{self.instance_name}_{label}")
        self._materials.append(mat)  # removed by undo, even if building it fails below
        tree = mat.node_tree
        nodes, links = tree.nodes, tree.links
        nodes.clear()
        out = nodes.new("ShaderNodeOutputMaterial")
        bsdf = nodes.new("ShaderNodeBsdfPrincipled")
        links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
        bsdf.inputs["Roughness"].default_value = 0.55
        if choice in COLOURS:
            bsdf.inputs["Base Color"].default_value = _linear(COLOURS[choice])
            bsdf.inputs["Roughness"].default_value = 0.45
            return mat
        centre, scale = mapping
        coords = nodes.new("ShaderNodeTexCoord")
        mapper = nodes.new("ShaderNodeMapping")
        mapper.vector_type = "POINT"
        k = scale * texture_scale
        mapper.inputs["Scale"].default_value = (k, k, k)
        mapper.inputs["Location"].default_value = tuple(float(x) for x in -centre * k)
        links.new(coords.outputs["Object"], mapper.inputs["Vector"])
        vec = mapper.outputs["Vector"]
        if image_path is not None:
            tex = nodes.new("ShaderNodeTexImage")
            try:
                tex.image = bpy.data.images.load(str(image_path), check_existing=True)
            except RuntimeError as exc:
                raise ValueError(f"Blender cannot load texture image {image_path}: {exc}") from None
            tex.extension = "REPEAT"
            if image_mapping == "box":
                tex.projection, tex.projection_blend = "BOX", 0.3
                links.new(vec, tex.inputs["Vector"])
            else:
                links.new(coords.outputs["UV"], tex.inputs["Vector"])
            links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
            return mat
        colour, roughness = _PATTERNS[choice](nodes, links, vec)
        links.new(colour, bsdf.inputs["Base Color"])
        bsdf.inputs["Roughness"].default_value = roughness
        return mat


def _normalising_maps(scene: "RenderScene", meshes: list[Any]) -> dict[str, tuple[np.ndarray, float]]:
    """For each mesh: (centre of the whole object in the mesh's local coordinates, factor) such that
    ``(local - centre) * factor`` spans about one unit over the object's largest extent."""
    root_inv = np.linalg.inv(matrix_np(scene.root.matrix_world))
    corners = []
    for obj in meshes:
        m = root_inv @ matrix_np(obj.matrix_world)
        box = np.array([list(c) for c in obj.bound_box])
        corners.append(box @ m[:3, :3].T + m[:3, 3])
    pts = np.concatenate(corners)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre_root = (lo + hi) / 2.0
    extent_root = max(float((hi - lo).max()), 1e-9)
    maps = {}
    for obj in meshes:
        m = root_inv @ matrix_np(obj.matrix_world)  # mesh-local -> root-local
        local_centre = np.linalg.solve(m[:3, :3], centre_root - m[:3, 3]) if abs(np.linalg.det(m[:3, :3])) > 1e-18 \
            else np.zeros(3)
        unit = float(np.cbrt(abs(np.linalg.det(m[:3, :3])))) or 1.0  # root units per local unit
        maps[obj.name] = (local_centre, unit / extent_root)
    return maps


# ----------------------------------------------------------------- procedural patterns
def _ramp(nodes: Any, links: Any, fac: Any, stops: list[tuple[float, str]], constant: bool = False) -> Any:
    """A colour ramp of ``fac`` through (position, sRGB hex) stops; returns its Color output."""
    ramp = nodes.new("ShaderNodeValToRGB")
    cr = ramp.color_ramp
    cr.interpolation = "CONSTANT" if constant else "LINEAR"
    while len(cr.elements) > 1:
        cr.elements.remove(cr.elements[-1])
    cr.elements[0].position, cr.elements[0].color = stops[0][0], _linear(stops[0][1])
    for pos, colour in stops[1:]:
        cr.elements.new(pos).color = _linear(colour)
    links.new(fac, ramp.inputs["Fac"])
    return ramp.outputs["Color"]


def _wave(nodes: Any, vec: Any, links: Any, kind: str, scale: float, distortion: float, detail: float,
          direction: str = "Z") -> Any:
    wave = nodes.new("ShaderNodeTexWave")
    wave.wave_type = kind
    if kind == "BANDS":
        wave.bands_direction = direction
    else:
        wave.rings_direction = direction
    wave.inputs["Scale"].default_value = scale
    wave.inputs["Distortion"].default_value = distortion
    wave.inputs["Detail"].default_value = detail
    wave.inputs["Detail Scale"].default_value = 1.5
    links.new(vec, wave.inputs["Vector"])
    return wave


def _warped(nodes: Any, links: Any, vec: Any, amount: float, scale: float = 3.0) -> Any:
    """``vec`` displaced by noise (irregular organic cells)."""
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = scale
    noise.inputs["Detail"].default_value = 2.0
    links.new(vec, noise.inputs["Vector"])
    centred = nodes.new("ShaderNodeVectorMath")
    centred.operation = "SUBTRACT"
    centred.inputs[1].default_value = (0.5, 0.5, 0.5)
    links.new(noise.outputs["Color"], centred.inputs[0])
    add = nodes.new("ShaderNodeVectorMath")
    add.operation = "MULTIPLY_ADD"
    add.inputs[1].default_value = (amount, amount, amount)
    links.new(centred.outputs["Vector"], add.inputs[0])
    links.new(vec, add.inputs[2])
    return add.outputs["Vector"]


def _zebra(nodes, links, vec):
    wave = _wave(nodes, vec, links, "BANDS", 4.0, 6.0, 2.0)
    return _ramp(nodes, links, wave.outputs["Factor"], [(0.0, "F0EFEA"), (0.5, "151515")], constant=True), 0.6


def _tiger(nodes, links, vec):
    wave = _wave(nodes, vec, links, "BANDS", 4.0, 8.0, 3.0)
    return _ramp(nodes, links, wave.outputs["Factor"],
                 [(0.0, "E07A1F"), (0.62, "C9651A"), (0.72, "120D08")], constant=True), 0.6


def _voronoi(nodes, links, vec, scale, feature="F1"):
    vor = nodes.new("ShaderNodeTexVoronoi")
    vor.feature = feature
    vor.inputs["Scale"].default_value = scale
    links.new(vec, vor.inputs["Vector"])
    return vor


def _leopard(nodes, links, vec):
    vor = _voronoi(nodes, links, _warped(nodes, links, vec, 0.06, 6.0), 9.0)
    return _ramp(nodes, links, vor.outputs["Distance"],
                 [(0.0, "9A6322"), (0.2, "1C130A"), (0.36, "D9A441")], constant=True), 0.7


def _giraffe(nodes, links, vec):
    vor = _voronoi(nodes, links, _warped(nodes, links, vec, 0.05, 5.0), 6.0, "DISTANCE_TO_EDGE")
    return _ramp(nodes, links, vor.outputs["Distance"], [(0.0, "EFE3C6"), (0.07, "8B4A1C")], constant=True), 0.7


def _cow(nodes, links, vec):
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 2.2
    noise.inputs["Detail"].default_value = 3.0
    noise.inputs["Roughness"].default_value = 0.45
    links.new(vec, noise.inputs["Vector"])
    return _ramp(nodes, links, noise.outputs["Factor"], [(0.0, "F2F2F0"), (0.55, "121212")], constant=True), 0.7


def _crocodile(nodes, links, vec):
    vor = _voronoi(nodes, links, _warped(nodes, links, vec, 0.03, 8.0), 16.0, "DISTANCE_TO_EDGE")
    return _ramp(nodes, links, vor.outputs["Distance"],
                 [(0.0, "1B2010"), (0.04, "4E5B2A"), (0.25, "6F7B3C")]), 0.35


def _checker(nodes, links, vec):
    tex = nodes.new("ShaderNodeTexChecker")
    tex.inputs["Scale"].default_value = 6.0
    tex.inputs["Color1"].default_value = _linear("F0F0F0")
    tex.inputs["Color2"].default_value = _linear("151515")
    links.new(vec, tex.inputs["Vector"])
    return tex.outputs["Color"], 0.5


def _wood(nodes, links, vec):
    wave = _wave(nodes, vec, links, "RINGS", 6.0, 3.0, 3.0)
    return _ramp(nodes, links, wave.outputs["Factor"], [(0.0, "7A4A24"), (0.6, "C8945A"), (1.0, "B07A45")]), 0.45


def _marble(nodes, links, vec):
    wave = _wave(nodes, vec, links, "BANDS", 2.5, 12.0, 6.0, direction="DIAGONAL")
    wave.wave_profile = "SIN"
    return _ramp(nodes, links, wave.outputs["Factor"],
                 [(0.0, "4A4F57"), (0.1, "B9BBBD"), (0.3, "F1F0EB")]), 0.15


def _brick(nodes, links, vec):
    tex = nodes.new("ShaderNodeTexBrick")
    tex.inputs["Scale"].default_value = 6.0
    tex.inputs["Color1"].default_value = _linear("9C3B24")
    tex.inputs["Color2"].default_value = _linear("6E2A1A")
    tex.inputs["Mortar"].default_value = _linear("D0CCC4")
    tex.inputs["Mortar Size"].default_value = 0.025
    links.new(vec, tex.inputs["Vector"])
    return tex.outputs["Color"], 0.85


_PATTERNS = {"zebra": _zebra, "tiger": _tiger, "leopard": _leopard, "giraffe": _giraffe, "cow": _cow,
             "crocodile": _crocodile, "checker": _checker, "wood": _wood, "marble": _marble, "brick": _brick}
assert set(_PATTERNS) == set(PROCEDURAL)
