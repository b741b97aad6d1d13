"""Pin to ground: rests the object's lowest point at a given height."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from threedb.controls.base import SceneControl
from threedb.controls.params import Param

if TYPE_CHECKING:
    from threedb.sim.render.scene import RenderScene


def lowest_world_z(scene: "RenderScene") -> float:
    """The smallest world-space z over the evaluated vertices of the object's meshes (current pose)."""
    import bpy

    bpy.context.view_layer.update()  # transforms set by earlier controls reach matrix_world
    depsgraph = bpy.context.evaluated_depsgraph_get()
    lowest = np.inf
    for obj in scene.root.children_recursive:
        if obj.type != "MESH":
            continue
        evaluated = obj.evaluated_get(depsgraph)  # modifiers applied
        mesh = evaluated.data
        if not len(mesh.vertices):
            continue
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", co)
        row = np.array(evaluated.matrix_world)[2]
        lowest = min(lowest, float((co.reshape(-1, 3) @ row[:3]).min() + row[3]))
    if not np.isfinite(lowest):
        raise ValueError("pin_to_ground: the object has no mesh vertices")
    return lowest


class PinToGroundControl(SceneControl):
    """Moves the object vertically so that its lowest vertex (in its current pose) sits at height
    ``z_ground``.

    The lowest point is measured on the evaluated meshes in world space, after the controls listed
    before this one (e.g. orientation, scale). With ``render.ground: true`` the shadow-catcher ground
    plane is moved to ``z_ground`` too, so the object rests on it. The camera is not moved: list a
    ``camera`` control after this one to re-frame the object.
    """

    name = "pin_to_ground"
    params = (Param("z_ground", "float", 0.0, "height of the object's lowest point", low=0.0, high=1.0,
                    unit="scene units"),)

    def apply(self, scene: "RenderScene", values: Mapping[str, Any]) -> None:
        import bpy

        z_ground = float(values.get("z_ground", 0.0))
        root, ground = scene.root, getattr(scene, "ground", None)
        self._saved = (tuple(root.location), tuple(ground.location) if ground is not None else None)
        root.location.z += z_ground - lowest_world_z(scene)
        if ground is not None:
            ground.location.z = z_ground
        bpy.context.view_layer.update()

    def undo(self, scene: "RenderScene") -> None:
        import bpy

        root_location, ground_location = self._saved
        scene.root.location = root_location
        if ground_location is not None:
            scene.ground.location = ground_location
        bpy.context.view_layer.update()
