"""Background: a solid colour behind the object, while the HDRI still lights it."""
from __future__ import annotations

import colorsys
from typing import TYPE_CHECKING, Any, Mapping

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


def srgb_to_linear(c: float) -> float:
    """Inverse of the sRGB transfer function (IEC 61966-2-1), for one channel in [0, 1]."""
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


class BackgroundControl(SceneControl):
    """Shows a solid colour (H, S, V) behind the object instead of the HDRI, which still lights the
    object (reflections and refractions included).

    The colour is a display colour: background pixels of the rgb output come out as
    ``hsv_to_rgb(H, S, V)`` in sRGB (V = 1, S = 0 is white). It is done in the world shader: a
    Light Path "Is Camera Ray" factor mixes the HDRI background with a solid one, so only rays from
    the camera see the colour; the environment pass, which threedb composites behind the object's
    alpha, shows it. Unlike the original 3DB's image-space background, anti-aliased edges and
    transparent parts of the object blend with the colour correctly. Undo removes the added nodes and
    re-links the world exactly as before.
    """

    name = "background"
    params = (
        Param("H", "float", 0.0, "hue of the background colour", low=0.0, high=1.0),
        Param("S", "float", 0.0, "saturation of the background colour", low=0.0, high=1.0),
        Param("V", "float", 1.0, "value (brightness) of the background colour", low=0.0, high=1.0),
    )

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        v = {**self.defaults(), **values}
        tree = scene.scene.world.node_tree
        outputs = [n for n in tree.nodes if n.bl_idname == "ShaderNodeOutputWorld"]
        output = next((n for n in outputs if n.is_active_output), outputs[0])
        surface = output.inputs["Surface"]
        self._tree, self._output = tree, output
        self._old = surface.links[0].from_socket if surface.is_linked else None
        self._added = []
        try:
            path, solid, mix = (self._node("ShaderNodeLightPath", "light_path"),
                                self._node("ShaderNodeBackground", "solid"), self._node("ShaderNodeMixShader", "mix"))
            rgb = colorsys.hsv_to_rgb(v["H"], v["S"], v["V"])
            solid.inputs["Color"].default_value = (*(srgb_to_linear(c) for c in rgb), 1.0)
            solid.inputs["Strength"].default_value = 1.0
            tree.links.new(path.outputs["Is Camera Ray"], mix.inputs["Fac"])
            if self._old is not None:  # Fac 0 (not a camera ray): what the world showed before
                tree.links.new(self._old, mix.inputs[1])
            tree.links.new(solid.outputs["Background"], mix.inputs[2])  # Fac 1: camera rays
            tree.links.new(mix.outputs["Shader"], surface)
        except BaseException:  # the worker only undoes controls whose apply succeeded
            self.undo(scene)
            raise

    def _node(self, kind: str, role: str) -> Any:
        node = self._tree.nodes.new(kind)
        self._added.append(node)
        node.name = node.label = f"threedb_{self.instance_name}_{role}"
        return node

    def undo(self, scene: "RenderScene") -> None:
        tree = self._tree
        for node in self._added:  # removing a node removes its links
            tree.nodes.remove(node)
        if self._old is not None:
            tree.links.new(self._old, self._output.inputs["Surface"])
        self._added, self._tree, self._output, self._old = [], None, None, None
